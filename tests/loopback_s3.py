"""A real S3 API on 127.0.0.1 for the tests: moto's server mode, started in the test process.

moto rather than S3Proxy: it is a PyPI package like every other test dependency (no second JVM
to fetch and start), and the test can stop it and start it again on the same port, its buckets
kept, to play a storage outage in the middle of a job. Spark reaches it through Hadoop's S3A
connector (hadoop-aws at pyspark's Hadoop version, from Maven Central through
``spark.jars.packages``), the storage layer through s3fs; both read the same ``fs.s3a.*``
settings (``LoopbackS3.spark_conf``).
"""

from __future__ import annotations

import logging

from minihdfs import free_port

KEY = "interest-test"  # any key pair: moto checks none


class LoopbackS3:
    """``with LoopbackS3() as s3: s3.spark_conf``; ``stop()`` and ``start()`` keep the buckets."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackS3:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def create_bucket(self, name: str) -> None:
        """A bucket in the server's default region (us-east-1 takes no location constraint)."""
        import boto3

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=KEY
        )
        client.create_bucket(Bucket=name)

    def __enter__(self) -> LoopbackS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spark_conf(self) -> dict[str, str]:
        """Spark's S3A settings for this server, which the storage layer reads too. A server that
        is gone fails a request at once instead of after minutes of the SDK's retries."""
        s3a = "spark.hadoop.fs.s3a."
        return {
            f"{s3a}endpoint": self.endpoint,
            f"{s3a}endpoint.region": "us-east-1",
            f"{s3a}path.style.access": "true",
            f"{s3a}connection.ssl.enabled": "false",
            f"{s3a}access.key": KEY,
            f"{s3a}secret.key": KEY,
            f"{s3a}aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
            f"{s3a}attempts.maximum": "1",
            f"{s3a}retry.limit": "1",
            f"{s3a}retry.interval": "100ms",
            f"{s3a}connection.establish.timeout": "2000",
        }
