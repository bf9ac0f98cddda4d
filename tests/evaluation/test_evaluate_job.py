"""``jobs/evaluate.py`` as a user runs it: the model as of the date, never a later one, and a model
that does not fit the date's data is the user's to fix (exit 2, one line)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import DATE, PLANTED, ROOT, copy_planted

LATER = "2026-11-27"


def evaluate(root: Path, *args: str) -> subprocess.CompletedProcess:
    sets = [f"paths.root={root}", *PLANTED]
    cmd = [sys.executable, "jobs/evaluate.py", "--date", DATE, *args, *[a for s in sets for a in ("--set", s)]]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_models(planted, planted_model, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A data root with the planted model of DATE and a model recorded as trained on the next day's
    data (LATEST points at it, as after the next night): the same architecture with fresh weights,
    so that its figures differ from ours."""
    from interest.models.encoders import build_encoder
    from interest.models.export import load_model

    root = copy_planted(planted, planted_model, tmp_path_factory.mktemp("evaluate"))
    base = root / "models" / "self_attention"
    ours = base / planted_model.name
    later = base / f"{LATER}_later"
    shutil.copytree(ours, later)
    trained = load_model(str(ours)).encoder
    build_encoder(trained.kind, **trained.args).save_weights(str(later / "encoder.weights.h5"))
    config = json.loads((later / "config.json").read_text())
    (later / "config.json").write_text(json.dumps({**config, "date": LATER}))
    (base / "LATEST").write_text(later.name + "\n")
    return root, ours, later


@pytest.mark.slow
def test_evaluate_uses_the_model_as_of_the_date_and_refuses_a_later_one(two_models):
    root, ours, later = two_models
    run = evaluate(root, "--encoders", "self_attention")
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((root / "reports" / "evaluation" / f"dt={DATE}" / "metrics.json").read_text())
    assert metrics["versions"] == {"self_attention": [ours.name]}  # not LATEST, trained on later data
    # the figures are those of our model on the date's test users: what training measured on them
    got = next(r["test_counted"] for r in metrics["results"] if r["model"] == "self_attention")
    want = json.loads((ours / "metrics.json").read_text())["test_counted"]
    for key in ("full_hr@10", "full_ndcg@10", "full_hr@20"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    popularity = next(r["test_counted"] for r in metrics["results"] if r["model"] == "popularity")
    assert got["full_hr@10"] > popularity["full_hr@10"]  # the planted model, not the fresh weights
    refused = evaluate(root, "--models", str(later))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) <= 3 and f"was trained on data of {LATER}, after {DATE}" in lines[-1] and str(later) in lines[-1]


@pytest.mark.slow
def test_a_model_that_does_not_fit_the_dates_data_is_exit_2(two_models, tmp_path):
    root, ours, _ = two_models
    other = tmp_path / "other"
    shutil.copytree(root, other, ignore=shutil.ignore_patterns("reports", "_logs"))
    vocab_dir = other / "vocab" / f"dt={DATE}"
    vocab = pd.concat([pd.read_parquet(f) for f in sorted(vocab_dir.glob("*.parquet"))])
    extra = pd.DataFrame({"item_idx": [vocab.item_idx.max() + 1], "item_id": ["new"], "category": [None], "count": [1]})
    for f in vocab_dir.glob("*.parquet"):
        f.unlink()
    pd.concat([vocab, extra.astype(vocab.dtypes.to_dict())]).to_parquet(vocab_dir / "part-0.parquet", index=False)
    run = evaluate(other, "--models", str(other / "models" / "self_attention" / ours.name))
    assert run.returncode == 2, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert "item rows but the sequences of 2026-11-26 index" in last and "evaluate it on the date" in last
