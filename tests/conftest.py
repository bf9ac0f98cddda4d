"""Shared fixtures: one SparkSession for the whole run (Hive-enabled, metastore in a temp dir)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from interest.config import Config, GeneratorConfig, load_config, load_generator_config

ROOT = Path(__file__).resolve().parents[1]
ML100K = Path(os.environ.get("ML100K_DIR", ROOT.parent / "shared" / "data" / "ml-100k"))
BEAUTY = Path(os.environ.get("BEAUTY_PATH", ROOT.parent / "shared" / "data" / "amazon-beauty" / "Beauty.txt"))


def make_config(root: Path, *overrides: str) -> Config:
    """The local profile pointed at ``root``, with test-sized Spark settings."""
    return load_config(
        ROOT / "conf" / "local.yaml",
        [
            f"paths.root={root}",
            "spark.conf={spark.sql.shuffle.partitions: '4', spark.ui.enabled: 'false', "
            "spark.driver.memory: '2g', spark.default.parallelism: '4'}",
            *overrides,
        ],
    )


def make_generator(*overrides: str) -> GeneratorConfig:
    """The local profile's sample generator with the ``generator.*`` ones among ``overrides``."""
    return load_generator_config(ROOT / "conf" / "local.yaml", list(overrides))


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


DATE = "2026-11-26"
# A small clickstream whose users have clear planted interests (no drift, little noise).
PLANTED = [
    "generator.users=700",
    "generator.items=300",
    "generator.categories=10",
    "generator.days=6",
    "generator.interest_noise=0.05",
    "generator.drift_per_day=0.0",
    "generator.bot_share=0.0",
    "sessionize.max_len=30",
    "sessionize.min_row_groups=4",
    "model.dim=32",
    "model.heads=2",
    "model.dropout=0.1",
    "train.batch_size=64",
    "train.epochs=10",
    "train.learning_rate=0.003",
    "train.warmup_steps=10",
    "train.patience=10",
    "train.checkpoint_every_steps=5",
    "eval.seeds=[1, 2]",
]


@pytest.fixture(scope="session")
def planted(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated and sessionized once per session; tests write models under their own folders."""
    from interest.etl.sessionize import run_sessionize
    from interest.synth import generate

    root = tmp_path_factory.mktemp("planted")
    cfg = make_config(root, *PLANTED)
    generate(make_generator(*PLANTED), cfg.paths.raw_events, cfg.paths.truth, progress=False)
    run_sessionize(spark, cfg, DATE)
    return root


@pytest.fixture(scope="session")
def planted_model(planted: Path) -> Path:
    """A self-attention model trained briefly on the planted data (for jobs that need a model)."""
    from interest.training.run import train_and_export

    cfg = make_config(
        planted,
        *PLANTED,
        "train.epochs=2",
        "paths.models='{root}/models_shared'",
        "paths.checkpoints='{root}/ckpt_shared'",
    )
    return Path(train_and_export(cfg, DATE).model_dir)


def run_logs(root: Path | str, stage: str = "") -> str:
    """Every run log file a job wrote under ``root/_logs`` (for ``stage``), oldest first: where the
    JVM's, Spark's and the workers' own lines go when a job's output is not a terminal."""
    files = sorted(Path(root, "_logs", stage).rglob("*.log"), key=lambda p: p.stat().st_mtime)
    return "\n".join(p.read_text(errors="replace") for p in files)


def copy_planted(planted: Path, model: Path | None, dest: Path) -> Path:
    """A fresh data root holding the planted sequences and vocabulary (and a copy of ``model``),
    for jobs run as separate processes with their own metastore."""
    import shutil

    for name in ("raw", "sequences", "vocab"):
        shutil.copytree(planted / name, dest / name)
    if model is not None:
        target = dest / "models" / "self_attention" / model.name
        shutil.copytree(model, target)
        (target.parent / "LATEST").write_text(model.name + "\n")
    return dest


def embed_frame(pdf, embedder):
    """The embed job's per-batch code (``embed_batch``, what every executor runs) on a pandas frame
    of inference rows; nested columns come back in pyarrow's pandas form (lists as arrays, structs
    as dicts)."""
    import pyarrow as pa

    from interest.schema import SEQUENCE_FEATURES
    from interest.serving.inference import embed_batch

    columns = [c for c in ["user_id", *SEQUENCE_FEATURES, "n_events", "n_steps", "history_idx"] if c in pdf]
    return embed_batch(pa.RecordBatch.from_pandas(pdf[columns], preserve_index=False), embedder).to_pandas()


def top_weighted_items(items, weights, k: int) -> list[tuple[int, float]]:
    """One user's history positions -> [(item_idx, summed weight)] of the k heaviest items, by the
    embed job's batch rule (``top_weighted_batch``). items, weights: [L]."""
    import numpy as np

    from interest.scoring.topn import top_weighted_batch

    item, weight, _ = top_weighted_batch(np.asarray(items)[None], np.asarray(weights)[None], k)
    return list(zip(item.tolist(), weight.tolist()))


TABLES = ("user_interest_embeddings", "item_embeddings", "user_recommendations")


def delta_digests(spark, warehouse: str, date: str, drop: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """Per published table, (rows, digest of their exact contents) of ``date``, read from the Delta
    logs under ``warehouse`` (a local folder or an ``hdfs://`` URL); ``drop`` leaves columns out
    (``model_version`` names a run, not its content)."""
    import hashlib

    out = {}
    for table in TABLES:
        rows = spark.read.format("delta").load(f"{warehouse}/default.db/{table}")
        rows = rows.where(f"dt = '{date}'").drop("dt", *drop).collect()
        out[table] = (len(rows), hashlib.sha1(repr(sorted(repr(r) for r in rows)).encode()).hexdigest())
    return out


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(
            f"MovieLens 100K not found at {ML100K} (set ML100K_DIR); it cannot be "
            "redistributed, so it is not part of the repository"
        )
    return ML100K


@pytest.fixture(scope="session")
def beauty() -> Path:
    if not BEAUTY.is_file():
        pytest.skip(
            f"Amazon Beauty not found at {BEAUTY} (set BEAUTY_PATH); it cannot be "
            "redistributed, so it is not part of the repository"
        )
    return BEAUTY


def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def standalone(tmp_path_factory: pytest.TempPathFactory):
    """A real standalone cluster (master + 2 workers of 1 core) on 127.0.0.1 for the session."""
    from standalone import StandaloneCluster

    with StandaloneCluster(tmp_path_factory.mktemp("standalone"), workers=2, cores=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def hdfs(tmp_path_factory: pytest.TempPathFactory):
    """A real single-node HDFS (MiniDFSCluster) on 127.0.0.1 for the session; see minihdfs.py."""
    from minihdfs import MiniHdfs

    with MiniHdfs(tmp_path_factory.mktemp("hdfs")) as cluster:
        yield cluster


@pytest.fixture()
def log_lines():
    """The messages logged under ``interest`` while the test runs (INFO and above)."""
    import logging

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("interest"), Keep(logging.INFO)
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


FAULT_RUNS: list[tuple[str, int, int]] = []  # (fault, injected runs, rows compared with a clean run)


@pytest.fixture()
def fault_matrix():
    """Record one row of the fault matrix: the fault, the real runs of a job or stage it was
    injected into (not direct calls of a helper), and the rows whose content was afterwards compared
    with a clean run or the planted truth (rows only counted do not count). The totals are printed
    at the end of the test session."""

    def record(fault: str, runs: int = 1, rows_checked: int = 0) -> None:
        FAULT_RUNS.append((fault, runs, rows_checked))

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if FAULT_RUNS:
        faults = {f for f, _, _ in FAULT_RUNS}
        runs = sum(r for _, r, _ in FAULT_RUNS)
        rows = sum(n for _, _, n in FAULT_RUNS)
        terminalreporter.write_line(
            f"fault matrix: {len(faults)} faults injected into {runs} runs; "
            f"{rows:,} rows checked after them against a clean run or the planted truth"
        )


def rows_of(windows: list[list[int]], n_steps: list[int], users: list[str]) -> dict[str, np.ndarray]:
    items = np.array(windows, dtype=np.int32)
    hist = np.empty(len(items), dtype=object)
    hist[:] = [np.unique(w[w > 0]) for w in items]
    return {
        "user_id": np.array(users, dtype=object),
        "item_idx": items,
        "event_type_idx": (items > 0).astype(np.int32),
        "time_gap_bucket": (items > 0).astype(np.int32),
        "session_idx": (items > 0).astype(np.int32),
        "n_steps": np.array(n_steps),
        "history_idx": hist,
    }
