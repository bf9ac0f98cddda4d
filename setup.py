"""interest: user interest embeddings from clickstream logs with attention encoders, on Spark."""
from setuptools import find_packages, setup

# The stack is pinned as a whole: Petastorm 0.13.1 still uses pyarrow's legacy dataset API
# (import fails on pyarrow>=16, reads fail on 15) and numpy<2 aliases (np.unicode_), and
# Spark 4.1's Arrow features need pyarrow>=15. See DESIGN notes in the README.
INSTALL_REQUIRES = [
    "pyspark>=3.5.3,<3.6",
    # Delta Lake tables (embed.table_format: delta); its jars come through spark.jars.packages at
    # the same version (interest.spark), and delta-spark 3.3 is the line built for Spark 3.5.
    "delta-spark==3.3.2",
    "pyarrow==14.0.2",
    "numpy>=1.26,<1.27",
    "pandas>=2.2,<2.3",
    "petastorm==0.13.1",
    "setuptools<70",  # petastorm imports pkg_resources
    "tensorflow-cpu>=2.21,<2.22",
    "tensorboard>=2.20",  # not pulled in by tensorflow-cpu; the loop writes scalars
    "PyYAML>=6.0",
    "dacite>=1.8,<2",
    "matplotlib>=3.8,<4",
    "fsspec>=2024.2",  # the one filesystem API for models, reports and checkpoints (hdfs via WebHDFS)
    "requests>=2.31",  # fsspec's WebHDFS client
]

setup(
    name="interest",
    version="0.1.0",
    description="User interest embeddings from clickstream logs with attention encoders on Spark",
    packages=find_packages(include=["interest", "interest.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8", "chispa>=0.10", "jinja2>=3.1", "psutil>=5.9", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29"],
        "s3": ["s3fs>=2024.2"],  # s3a:// roots for the storage layer (Spark needs hadoop-aws too)
        # A GPU install replaces tensorflow-cpu with the CUDA build of the same version.
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
)
