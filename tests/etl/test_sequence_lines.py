"""Order-only public datasets as an input (``ingest.format: sequence_lines``) and the profile that
reads Amazon Beauty with it: each user's order kept, event k on day k, bad lines quarantined."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from interest.config import Config, ConfigError, load_config
from interest.etl.lookback import read_canonical
from interest.etl.sessionize import run_sessionize
from interest.layout import Layout

from conftest import ROOT

DATE = "2000-01-01"
DAY = 86400
SMALL_SPARK = "spark.conf={spark.sql.shuffle.partitions: '4', spark.ui.enabled: 'false', spark.driver.memory: '2g'}"


def beauty_config(root: Path, source: Path, *overrides: str) -> Config:
    """``conf/beauty.yaml`` pointed at another file of the same form, as a user would."""
    return load_config(
        ROOT / "conf" / "beauty.yaml", [f"paths.root={root}", f"ingest.path={source}", SMALL_SPARK, *overrides]
    )


@pytest.fixture()
def mixed_source(tmp_path: Path) -> Path:
    """Both forms in one folder: one user per line, and one pair per line (a user's pairs apart)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a_users.txt").write_text("u1 i9 i3 i7\nu2 i3\n\nu3\n  u4\ti5   i6  \n")
    (src / "b_pairs.txt").write_text("p1 i7\np1 i3\np2 i9\np1 i5\n")
    return src


def test_both_forms_become_events_in_file_order_with_synthetic_days(spark, tmp_path, mixed_source):
    cfg = beauty_config(tmp_path / "data", mixed_source)
    rows = read_canonical(spark, cfg, Layout.of(cfg, DATE)).rows
    got = rows.select("user_id", "item_id", "event_type", "ts_raw", "_corrupt_record").orderBy(
        "user_id", F.col("ts_raw").cast("long")
    )
    day = [str(k * DAY) for k in range(3)]
    expected = spark.createDataFrame(
        [
            ("p1", "i7", "interact", day[0], None),
            ("p1", "i3", "interact", day[1], None),
            ("p1", "i5", "interact", day[2], None),
            ("p2", "i9", "interact", day[0], None),
            ("u1", "i9", "interact", day[0], None),
            ("u1", "i3", "interact", day[1], None),
            ("u1", "i7", "interact", day[2], None),
            ("u2", "i3", "interact", day[0], None),
            ("u3", None, "interact", None, "u3"),  # a user without items: malformed, kept whole
            ("u4", "i5", "interact", day[0], None),
            ("u4", "i6", "interact", day[1], None),
        ],
        "user_id string, item_id string, event_type string, ts_raw string, _corrupt_record string",
    )
    assert_df_equality(got, expected, ignore_nullable=True)


def test_the_profile_sessionizes_a_file_of_the_same_form(spark, tmp_path, mixed_source):
    cfg = beauty_config(tmp_path / "data", mixed_source)
    summary = run_sessionize(spark, cfg, DATE)
    assert (summary.rows_in, summary.rejected, summary.events_kept) == (11, {"malformed_line": 1}, 10)
    assert summary.accounted
    rejects = pd.read_parquet(summary.outputs.rejects)
    assert rejects[["user_id", "reject_reason", "raw_line"]].values.tolist() == [["u3", "malformed_line", "u3"]]
    vocab = pd.read_parquet(summary.outputs.vocab)
    ids = dict(zip(vocab.item_idx, vocab.item_id))
    seqs = pd.read_parquet(summary.outputs.train).set_index("user_id")
    # every event is its own step, in the file's order (never the ids' order)
    for user, items in {"u1": ["i9", "i3", "i7"], "p1": ["i7", "i3", "i5"]}.items():
        row = np.asarray(seqs.loc[user, "item_idx"])
        assert [ids[i] for i in row[row > 0]] == items
        assert int(seqs.loc[user, "n_steps"]) == 3


def test_sequence_lines_take_no_time_format():
    with pytest.raises(ConfigError, match="ts_format 'yyyy-MM-dd' does not apply to ingest.format sequence_lines"):
        load_config(ROOT / "conf" / "beauty.yaml", ["ingest.ts_format=yyyy-MM-dd"])


def ring_file(path: Path, users: int = 400, items: int = 40, seed: int = 0) -> Path:
    """Each user walks a ring of items one step at a time from a random start: the next item is
    always the one after the last, which a sequence model learns and popularity cannot."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(users):
        start, length = rng.integers(items), rng.integers(5, 12)
        lines.append(" ".join([f"u{u}", *[f"i{(start + k) % items}" for k in range(length)]]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_the_profile_runs_both_jobs_and_learns_the_planted_order(tmp_path):
    source = ring_file(tmp_path / "ring.txt")
    sets = [
        f"paths.root={tmp_path / 'data'}",
        f"ingest.path={source}",
        SMALL_SPARK,
        "train.epochs=12",
        "train.batch_size=32",
        "train.eval_every=4",
    ]
    args = [a for s in sets for a in ("--set", s)]
    for job in ("sessionize", "train"):
        run = subprocess.run(
            [sys.executable, f"jobs/{job}.py", "--conf", "conf/beauty.yaml", "--date", DATE, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    cfg = beauty_config(tmp_path / "data", source)
    models = Path(Layout.of(cfg, DATE).paths.models) / "self_attention"
    metrics = json.loads((models / (models / "LATEST").read_text().strip() / "metrics.json").read_text())
    counted, pop = metrics["test_counted"], metrics["popularity"]["test_counted"]
    assert metrics["eval_users"] == 400  # eval.users: 0 in the profile: every user
    assert set(counted) >= {"full_hr@10", "full_ndcg@10", "full_hr@20", "full_ndcg@20", "excluded_targets"}
    assert counted["full_hr@10"] > 0.9 and pop["full_hr@10"] < 0.5, (counted, pop)
