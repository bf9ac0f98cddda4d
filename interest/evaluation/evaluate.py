"""The evaluation stage: exported models and popularity on one date's test targets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from interest.config import Config
from interest.data.reader import local_path
from interest.models.export import load_model, resolve_model_dir
from interest.training.loop import evaluate_popularity, evaluate_split
from interest.training.run import training_data


def evaluate_models(cfg: Config, date: str, model_dirs: list[str]) -> dict[str, Any]:
    """Evaluate each model (and popularity) on the test split; write the report. Returns paths+rows."""
    data, _ = training_data(cfg, date)
    e = cfg.eval
    seeds = tuple(e.seeds)
    results, histories = [], {}
    for model_dir in model_dirs:
        model = load_model(model_dir)
        if model.encoder.args["vocab_size"] != data.spec.vocab_size:
            raise ValueError(
                f"model {model.path} was trained with {model.encoder.args['vocab_size']} item rows "
                f"but the sequences of {date} index {data.spec.vocab_size}: evaluate it on its own date")
        test = evaluate_split(model.encoder, data.eval_rows, "test", e.k, e.sampled_negatives, seeds)
        kind = model.encoder.kind
        results.append({"model": kind, "version": model.version, "best_epoch": model.metrics.get("best_epoch"),
                        "train_s": model.metrics.get("train_seconds"), "workers": model.metrics.get("workers"),
                        "test": test})
        histories[kind] = model.metrics.get("history", [])
    pop = evaluate_popularity(data.eval_rows, data.item_counts, "test", e.k, e.sampled_negatives, seeds)
    results.append({"model": "popularity", "version": "–", "best_epoch": None, "train_s": None,
                    "test": pop})
    from interest.evaluation.report import write_report

    out = Path(local_path(cfg.paths.resolve("reports"))) / "evaluation" / f"dt={date}"
    paths = write_report(out, date, results, histories, e.k, e.sampled_negatives,
                         int(len(data.eval_rows["item_idx"])))
    return {"results": results, "paths": {k: str(v) for k, v in paths.items()}}


def latest_models(cfg: Config, encoders: list[str]) -> list[str]:
    return [resolve_model_dir(cfg.paths.resolve("models"), name) for name in encoders]
