"""Shared fixtures: one SparkSession for the whole run (Hive-enabled, metastore in a temp dir)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from interest.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
ML100K = Path(os.environ.get("ML100K_DIR", ROOT.parent / "shared" / "data" / "ml-100k"))


def make_config(root: Path, *overrides: str) -> Config:
    """The local profile pointed at ``root``, with test-sized Spark settings."""
    return load_config(ROOT / "conf" / "local.yaml", [
        f"paths.root={root}",
        "spark.conf={spark.sql.shuffle.partitions: '4', spark.ui.enabled: 'false', "
        "spark.driver.memory: '2g', spark.default.parallelism: '4'}",
        *overrides,
    ])


@pytest.fixture(scope="session")
def spark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark")


@pytest.fixture(scope="session")
def spark(spark_root: Path):
    from interest.spark import get_spark

    session = get_spark(make_config(spark_root), app_name="interest-tests")
    yield session
    session.stop()


@pytest.fixture()
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K} (set ML100K_DIR); it cannot be "
                    "redistributed, so it is not part of the repository")
    return ML100K


def python() -> str:
    return sys.executable
