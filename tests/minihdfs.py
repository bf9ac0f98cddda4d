"""A real HDFS for the tests: Hadoop's MiniDFSCluster (one namenode, one datanode) on 127.0.0.1.

Hadoop's test cluster comes from ``org.apache.hadoop:hadoop-client-minicluster`` at the Hadoop
version pyspark ships (3.3.4 for Spark 3.5), fetched once from Maven Central into ``.jars/`` (pinned
by SHA-1), and is started by the single-file Java program ``MiniHdfs.java`` beside this file with
pyspark's own Hadoop client jars on the class path. WebHDFS is on, so Python reaches it as our
storage layer does on a real cluster.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
JAR_DIR = HERE.parent / ".jars"
MAVEN = "https://repo1.maven.org/maven2"
JARS = {  # path on Maven Central -> SHA-1
    "org/apache/hadoop/hadoop-client-minicluster/3.3.4/hadoop-client-minicluster-3.3.4.jar": (
        "85a4188e940bfe5e2661363f998fe1f37ec07831"
    ),
    "junit/junit/4.13.2/junit-4.13.2.jar": "8ac9e16d933b6fb43bc7f576336b8f4d7eb5ba12",
}


def fetch_jars() -> list[Path]:
    """The pinned jars, downloaded once and checked."""
    JAR_DIR.mkdir(exist_ok=True)
    out = []
    for path, sha1 in JARS.items():
        target = JAR_DIR / path.rsplit("/", 1)[-1]
        if not target.is_file() or hashlib.sha1(target.read_bytes()).hexdigest() != sha1:
            tmp = target.with_suffix(".part")
            with urllib.request.urlopen(f"{MAVEN}/{path}", timeout=300) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f)
            got = hashlib.sha1(tmp.read_bytes()).hexdigest()
            if got != sha1:
                tmp.unlink()
                raise RuntimeError(f"{path}: SHA-1 {got} is not the pinned {sha1}")
            tmp.replace(target)
        out.append(target)
    return out


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the loopback servers of the tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MiniHdfs:
    """``with MiniHdfs(base) as hdfs: hdfs.url``; stops the cluster and removes its data on exit."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.rpc_port, self.http_port = free_port(), free_port()
        self.url = f"hdfs://127.0.0.1:{self.rpc_port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> MiniHdfs:
        import pyspark

        spark_jars = Path(pyspark.__file__).parent / "jars"
        classpath = os.pathsep.join([*map(str, fetch_jars()), f"{spark_jars}/*"])
        self.log = open(self.base / "minihdfs.log", "w")
        self.proc = subprocess.Popen(
            [
                "java",
                "--add-opens=java.base/java.lang=ALL-UNNAMED",
                "-Xmx512m",
                "-cp",
                classpath,
                str(HERE / "MiniHdfs.java"),
                str(self.base / "dfs"),
                str(self.rpc_port),
                str(self.http_port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return self
            if not line and self.proc.poll() is not None:
                break
        self.__exit__()
        raise RuntimeError(f"MiniDFSCluster did not start; see {self.base / 'minihdfs.log'}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
