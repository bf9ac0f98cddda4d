"""``pip install .`` from a clean copy gives the whole package, and a job runs on that install
alone: spark-submit ships it with ``--py-files`` and its output equals the in-tree run's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chispa import assert_df_equality

from conftest import DATE, PLANTED, ROOT
from standalone import SPARK_HOME, install_package, package_zip

SOURCES = {p.relative_to(ROOT).as_posix() for p in (ROOT / "interest").rglob("*.py")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_package(tmp_path_factory.mktemp("install"))


def test_pip_install_from_a_clean_copy_installs_every_module(installed):
    got = {p.relative_to(installed).as_posix() for p in (installed / "interest").rglob("*.py")}
    assert got == SOURCES  # a package left out of pyproject's find would be missing here
    assert list(installed.glob("interest-*.dist-info"))  # installed as a distribution, not copied


@pytest.mark.slow
def test_sessionize_submitted_with_the_installed_package_equals_the_in_tree_run(spark, planted, installed, tmp_path):
    """From outside the repository, with only the install on the path: the driver imports it,
    the executors get it through ``--py-files``, and the sequences and vocabulary equal those of
    the in-tree run of the same raw rows (the planted fixture)."""
    root = tmp_path / "root"
    shutil.copytree(planted / "raw", root / "raw")
    env = {**os.environ, "PYTHONPATH": str(installed), "SPARK_HOME": str(SPARK_HOME)}
    where = subprocess.run(
        [sys.executable, "-c", "import interest; print(interest.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where == str(installed / "interest" / "__init__.py")
    sets = [f"paths.root={root}", "spark.conf={spark.ui.enabled: 'false', spark.sql.shuffle.partitions: '4'}"]
    sets.append("embed.table_format=parquet")  # sessionize publishes no table: no Delta jars to submit
    sets += [s for s in PLANTED if s.startswith("sessionize.")]
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", "local[2]"]
    cmd += ["--conf", f"spark.pyspark.python={sys.executable}", "--py-files", str(package_zip(tmp_path, installed))]
    cmd += [str(ROOT / "jobs" / "sessionize.py"), "--conf", str(ROOT / "conf" / "local.yaml"), "--date", DATE]
    cmd += [a for s in sets for a in ("--set", s)]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    assert f"sessionize {DATE}" in done.stdout and "all rows accounted for: True" in done.stdout
    for part in ("sequences/dt={d}/infer", "sequences/dt={d}/train", "vocab/dt={d}"):
        ours, theirs = (spark.read.parquet(str(r / part.format(d=DATE))) for r in (root, planted))
        key = ours.columns[0]
        assert_df_equality(ours.orderBy(key), theirs.orderBy(key), ignore_nullable=True)
