"""Training end to end on generated data: the encoders learn planted interests far better than
popularity, exports reproduce the run's best-epoch metrics, checkpoints resume, early stopping stops."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from interest.config import VALID_SEED
from interest.data.files import TrainingInputError, load_rows
from interest.evaluation.breakdown import REVISITS, SESSION_SEGMENTS
from interest.evaluation.evaluate import evaluate_models
from interest.layout import Layout
from interest.models.encoders import ENCODERS
from interest.models.export import load_model, resolve_model_dir
from interest.scoring.offline import evaluate_split
from interest.training.loop import WorkerInfo
from interest.training.run import checkpoint_dir, train_and_export

from conftest import DATE, PLANTED, make_config


def cfg_for(root: Path, *extra: str):
    return make_config(root, *PLANTED, *extra)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_encoder_learns_planted_interests_and_export_reproduces_its_metrics(planted, kind):
    cfg = cfg_for(planted, f"model.encoder={kind}")
    out = train_and_export(cfg, DATE)
    test, pop = out.metrics["test"], out.metrics["popularity"]["test"]
    assert test["full_ndcg@10"] > 2.0 * pop["full_ndcg@10"], (test, pop)
    assert test["full_hr@10"] > 1.5 * pop["full_hr@10"]
    assert test["sampled_hr@10"] > pop["sampled_hr@10"] + 0.1
    assert len(out.metrics["history"]) == out.metrics["epochs_run"] >= 1
    assert resolve_model_dir(cfg.paths.resolve("models"), kind) == out.model_dir
    files = sorted(p.name for p in Path(out.model_dir).iterdir())
    assert files == ["config.json", "encoder.json", "encoder.weights.h5", "metrics.json", "vocab.parquet"]
    # The export holds the best epoch's weights: reloaded, it reproduces the run's test metrics
    # and the best epoch's validation metrics (a last-epoch export would miss the latter).
    loaded = load_model(out.model_dir)
    from interest.data.files import training_data

    data = training_data(cfg, Layout.of(cfg, DATE))
    e = cfg.eval
    again = evaluate_split(loaded.encoder, data.eval_rows, "test", e.k, e.sampled_negatives, tuple(e.seeds))
    assert again == pytest.approx(test, abs=1e-6)
    valid = evaluate_split(loaded.encoder, data.eval_rows, "valid", e.k, e.sampled_negatives, (VALID_SEED,))
    assert {f"valid_{k}": v for k, v in valid.items() if k != "users"} == pytest.approx(out.metrics["valid"], abs=1e-6)
    best = out.metrics["history"][out.metrics["best_epoch"] - 1]
    assert best["valid_full_ndcg@10"] == pytest.approx(valid["full_ndcg@10"], abs=1e-6)
    stored = json.loads((Path(out.model_dir) / "metrics.json").read_text())
    assert stored["test"]["full_ndcg@10"] == pytest.approx(test["full_ndcg@10"])
    assert not Path(checkpoint_dir(cfg, Layout.of(cfg, DATE))).exists()
    board = Path(cfg.paths.reports, "tensorboard", kind, f"dt={DATE}")
    assert list(board.glob("events.out.tfevents.*"))  # TensorBoard scalars were written


@pytest.mark.slow
def test_bfloat16_and_xla_training_learns_and_its_float32_export_reproduces_its_metrics(planted):
    """The speed levers change how the step computes, not what it learns: with bfloat16 compute
    and the XLA-compiled step (dense loss), self-attention still beats popularity, and the metrics
    recorded are those of the float32 model that is exported and served."""
    cfg = cfg_for(
        planted,
        "train.precision=mixed_bfloat16",
        "train.jit_compile=true",
        "paths.models='{root}/models_levers'",
        "paths.checkpoints='{root}/ckpt_levers'",
    )
    out = train_and_export(cfg, DATE)
    test, pop = out.metrics["test"], out.metrics["popularity"]["test"]
    assert test["full_ndcg@10"] > 2.0 * pop["full_ndcg@10"], (test, pop)
    assert out.metrics["objective"] == "full_softmax"  # auto, on a 300-item catalogue
    assert out.metrics["precision"] == "mixed_bfloat16"  # as asked, even where it is emulated
    from interest.data.files import training_data

    data = training_data(cfg, Layout.of(cfg, DATE))
    loaded = load_model(out.model_dir)
    assert {v.dtype for v in loaded.encoder.trainable_variables} == {"float32"}
    again = evaluate_split(loaded.encoder, data.eval_rows, "test", 10, 100, tuple(cfg.eval.seeds))
    assert again == pytest.approx(test, abs=1e-6)


@pytest.mark.slow
def test_failure_resumes_from_the_last_checkpoint(planted, log_lines, fault_matrix, monkeypatch, tmp_path):
    monkeypatch.setenv("INTEREST_FAULTS", f"raise@train_step_7:{tmp_path / 'failed'}")  # once: the rerun goes on
    sets = [
        "model.encoder=memory",
        "train.epochs=2",
        "paths.models='{root}/models_resume'",
        "paths.checkpoints='{root}/ckpt_resume'",
    ]
    with pytest.raises(RuntimeError, match="injected fault at train_step_7"):
        train_and_export(cfg_for(planted, *sets), DATE)
    lines = log_lines
    # a progress line after every step inside an epoch (a setting the checkpoints do not depend on)
    cfg = cfg_for(planted, *sets, "train.progress_every_s=0")
    out = train_and_export(cfg, DATE, worker=WorkerInfo(attempt=1))
    assert out.metrics["resumed_from_step"] == 5
    assert any("resumed from checkpoint at step 5" in line for line in lines)
    per_epoch = int(np.ceil(out.metrics["train_rows"] / 64))
    assert out.metrics["steps"] == 2 * per_epoch
    # the resumed epoch reports from step 6 on, the next from step 1, never at an epoch's end
    steps = [
        re.search(r"epoch +(\d)/2  step +(\d+)/(\d+)  loss \d+\.\d+  [\d.]+ steps/s  epoch ETA \d+s", ln)
        for ln in lines
        if " steps/s " in ln
    ]
    assert [(int(m[1]), int(m[2])) for m in steps] == [(1, s) for s in range(6, per_epoch)] + [
        (2, s) for s in range(1, per_epoch)
    ]
    assert np.isfinite(out.metrics["test"]["full_ndcg@10"])


@pytest.mark.slow
def test_a_sigkilled_training_process_resumes_with_the_checkpoints_exact_state(planted, tmp_path, fault_matrix):
    """SIGKILL ``jobs/train.py`` once it has checkpointed; a new trainer restores exactly the
    checkpoint's state (weights, the optimizer's moments and step, the early-stopping counters):
    written back out, it reads the same, tensor for tensor. The restarted job then finishes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import tensorflow as tf

    from interest.data.files import training_data
    from interest.training.loop import Trainer, TrainResult

    from conftest import ROOT

    sets = [
        *PLANTED,
        f"paths.root={planted}",
        "model.encoder=self_attention",
        "train.epochs=6",  # long enough after step 8 for the kill to land mid-run
        "train.checkpoint_every_steps=4",
        f"paths.models={tmp_path / 'models'}",
        f"paths.checkpoints={tmp_path / 'ckpt'}",
    ]
    cmd = [sys.executable, "jobs/train.py", "--date", DATE, *[a for s in sets for a in ("--set", s)]]
    cfg = make_config(planted, *sets)  # what the job loads: conf/local.yaml with the same overrides
    folder = checkpoint_dir(cfg, Layout.of(cfg, DATE))
    log = tmp_path / "train.log"
    with open(log, "w") as sink:
        job = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600

    def saved_step() -> int:
        found = [int(p.stem.rsplit("-", 1)[1]) for p in (tmp_path / "ckpt").rglob("ckpt-*.index")]
        return max(found, default=0)

    while saved_step() < 8:  # killed after its second checkpoint, mid-run
        assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL
    latest = tf.train.latest_checkpoint(folder)
    trainer = Trainer(cfg, training_data(cfg, Layout.of(cfg, DATE)))
    manager, _ = trainer._checkpoints(folder)
    trainer._resume(manager, folder, TrainResult(trainer.encoder))
    assert int(trainer.step.numpy()) == int(latest.rsplit("-", 1)[1])
    written = manager.checkpoint.write(str(tmp_path / "restored" / "state"))
    saved, restored = tf.train.load_checkpoint(latest), tf.train.load_checkpoint(written)
    keys = [k for k in saved.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k]
    assert any("optimizer" in k for k in keys) and len(keys) > 20
    assert set(keys) == {k for k in restored.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k}
    for key in keys:
        np.testing.assert_array_equal(restored.get_tensor(key), saved.get_tensor(key), err_msg=key)
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from checkpoint at step {trainer.step.numpy()}" in rerun.stdout + rerun.stderr
    fault_matrix("a training process killed (SIGKILL) between checkpoints", runs=1)


def test_early_stopping_when_validation_stops_improving(planted, log_lines):
    cfg = cfg_for(
        planted,
        "train.learning_rate=0.0",
        "train.patience=1",
        "train.epochs=6",
        "paths.models='{root}/models_es'",
        "paths.checkpoints='{root}/ckpt_es'",
    )
    lines = log_lines
    out = train_and_export(cfg, DATE)
    assert out.metrics["stopped_early"] and out.metrics["epochs_run"] == 2
    assert any(line.startswith("epoch   1/6  loss") and "seq/s" in line and "valid NDCG@10" in line for line in lines)
    assert any("early stop" in line for line in lines)


def test_missing_sequences_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingInputError, match="run jobs/sessionize.py --date 2026-11-26 first"):
        train_and_export(make_config(tmp_path), DATE)


@pytest.mark.slow
def test_evaluation_report_has_table_segments_and_pictures(planted):
    cfg = cfg_for(planted, "train.epochs=3", "paths.models='{root}/models_eval'")
    dirs = [
        train_and_export(
            make_config(planted, *PLANTED, "train.epochs=3", f"model.encoder={k}", "paths.models='{root}/models_eval'"),
            DATE,
        ).model_dir
        for k in ("self_attention", "memory")
    ]
    out = evaluate_models(cfg, DATE, dirs)
    report = Path(out["paths"]["report"]).read_text()
    scorers = ["self_attention", "memory", "memory (best interest)", "popularity", "co-occurrence", "session-kNN"]
    for name in scorers:
        assert f"| {name} |" in report
    assert [r["model"] for r in out["results"]] == scorers
    assert "![validation_curves](validation_curves.png)" in report
    image = plt.imread(out["paths"]["validation_curves"])
    assert image.shape[:2] == (400, 1000) and image[..., :3].std() > 0.01
    for kind in ("self_attention", "memory"):
        assert f"![attention_{kind}](attention_{kind}.png)" in report
        heatmap = plt.imread(out["paths"][f"attention_{kind}"])
        assert heatmap.shape[:2] == (400, 1200) and heatmap[..., :3].std() > 0.01
    # the segments: every row's users add up, cold-start replays cover every test user with enough steps
    breakdown = out["breakdown"]
    rows = {r["segment"]: r for r in breakdown.rows("sampled_hr")}
    bins = [r["users"] for name, r in rows.items() if name.startswith("history ")]
    assert sum(bins) == rows["all users"]["users"] == out["results"][0]["test"]["users"]
    assert rows["drifting interests"]["users"] + rows["steady interests"]["users"] <= rows["all users"]["users"]
    # planted sessions: most targets continue one; the session rows and re-visits never overlap
    within, opening = SESSION_SEGMENTS
    parts = rows[within]["users"] + rows[opening]["users"] + rows[REVISITS]["users"]
    assert rows[within]["users"] > rows[opening]["users"] > 0 and parts <= rows["all users"]["users"]
    # a cold-start replay needs the user's first steps: stored for histories that fit one window
    n_steps = load_rows(str(planted / "sequences" / f"dt={DATE}" / "train"), ["n_steps"])["n_steps"]
    assert rows["cold start: first 1 step(s)"]["users"] == int((n_steps <= 30).sum()) > 100
    for scorer in ("self_attention", "memory", "co-occurrence"):
        e = rows["all users"][scorer]
        assert e["lo"] <= e["mean"] <= e["hi"] and e["hi"] - e["lo"] < 0.2
    assert "## HR@10 (100 neg) per segment" in report and "![segments_sampled_hr](segments_sampled_hr.png)" in report
    chart = plt.imread(out["paths"]["segments_sampled_hr"])
    assert chart.shape[:2] == (500, 1200) and chart[..., :3].std() > 0.01
    assert "## Beyond accuracy" in report and "Memory slots: purity" in report
    assert "## Are the explanations faithful?" in report
    metrics = json.loads(Path(out["paths"]["metrics"]).read_text())
    assert set(metrics["faithfulness"]) == {"self_attention", "memory"}
    # the figures themselves: the planted interests are learned, above the popularity baseline,
    # and the table, the segments and metrics.json give the same numbers
    results = {r["model"]: r["test_counted"] for r in metrics["results"]}
    for name in ("self_attention", "memory"):
        assert results[name]["full_hr@10"] > 1.5 * results["popularity"]["full_hr@10"], results
        line = next(x for x in report.splitlines() if x.startswith(f"| {name} |"))  # the headline table's row
        assert line.split(" | ")[3] == f"{results[name]['full_hr@10']:.4f}", line
    beyond = metrics["beyond"]
    assert beyond["popularity"]["coverage@10"] < beyond["self_attention"]["coverage@10"] <= 1  # one list for all


def test_a_hung_step_ends_the_process_with_a_message():
    import subprocess
    import sys

    code = (
        "import time\nfrom interest.training.loop import StepWatchdog\n"
        "with StepWatchdog(2.0, lambda: 'at step 7, worker 0'):\n    time.sleep(30)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 75  # worth a retry: it resumes from the last checkpoint
    assert "no training step finished in 2s (at step 7, worker 0)" in run.stderr


def test_one_tensorflow_op_at_a_time_by_default():
    import os

    import interest  # noqa: F401  (sets the default before TensorFlow starts)

    assert os.environ["TF_NUM_INTEROP_THREADS"] == "1"
