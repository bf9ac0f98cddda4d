"""The evaluation stage: exported models and popularity on one date's test targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interest import storage
from interest.config import Config
from interest.data.files import SessionizePaths, read_vocab, training_data
from interest.models.export import load_model, resolve_model_dir
from interest.schema import SEQUENCE_FEATURES, SHIFT
from interest.scoring.offline import evaluate_popularity, evaluate_split


def evaluate_models(cfg: Config, date: str, model_dirs: list[str]) -> dict[str, Any]:
    """Evaluate each model (and popularity) on the test split; write the report. Returns paths+rows."""
    data, _ = training_data(cfg, date)
    target = storage.join(storage.normalize(cfg.paths.resolve("reports")), "evaluation", f"dt={date}")
    with storage.local_output(target) as local:  # matplotlib writes local files
        return _evaluate(cfg, date, model_dirs, data, Path(local), target)


def _evaluate(cfg: Config, date: str, model_dirs: list[str], data, out: Path, target: str) -> dict[str, Any]:
    e = cfg.eval
    seeds = tuple(e.seeds)
    results, histories, figures = [], {}, {}
    vocab = {int(i): (str(c) if c is not None else str(item)) for i, item, c in data_vocab_labels(cfg, date)}
    for model_dir in model_dirs:
        model = load_model(model_dir)
        if model.encoder.args["vocab_size"] != data.spec.vocab_size:
            raise ValueError(
                f"model {model.path} was trained with {model.encoder.args['vocab_size']} item rows "
                f"but the sequences of {date} index {data.spec.vocab_size}: evaluate it on its own date"
            )
        test = evaluate_split(model.encoder, data.eval_rows, "test", e.k, e.sampled_negatives, seeds)
        kind = model.encoder.kind
        results.append(
            {
                "model": kind,
                "version": model.version,
                "best_epoch": model.metrics.get("best_epoch"),
                "train_s": model.metrics.get("train_seconds"),
                "workers": model.metrics.get("workers"),
                "test": test,
            }
        )
        histories[kind] = model.metrics.get("history", [])
        figures[f"attention_{kind}"] = attention_figure(
            model.encoder, data.eval_rows, vocab, out / f"attention_{kind}.png"
        )
    pop = evaluate_popularity(data.eval_rows, data.item_counts, "test", e.k, e.sampled_negatives, seeds)
    results.append({"model": "popularity", "version": "–", "best_epoch": None, "train_s": None, "test": pop})
    from interest.evaluation.report import write_report

    paths = write_report(
        out,
        date,
        results,
        histories,
        e.k,
        e.sampled_negatives,
        int(len(data.eval_rows["item_idx"])),
        extra_figures=figures,
    )
    return {"results": results, "paths": {k: storage.join(target, Path(v).name) for k, v in paths.items()}}


def data_vocab_labels(cfg: Config, date: str) -> list[tuple[int, str, str | None]]:
    """(item_idx, item_id, category) of the date's vocabulary, for labelling pictures."""
    vocab = read_vocab(SessionizePaths.for_date(cfg, date).vocab)
    cats = vocab["category"] if "category" in vocab else [None] * len(vocab)
    return list(zip(vocab["item_idx"], vocab["item_id"], cats))


def attention_figure(encoder, rows: dict, labels: dict[int, str], path: Path, users: int = 3) -> Path:
    """Heatmaps of the test-time attention of the ``users`` longest histories in ``rows``."""
    from interest.data.reader import shift_right
    from interest.evaluation.explain import attention_matrices, plot_attention

    longest = np.argsort(-rows["n_steps"], kind="stable")[:users]
    picked = {k: v[longest] for k, v in rows.items() if k in SEQUENCE_FEATURES}
    matrices = attention_matrices(encoder, picked, "test")
    items = np.asarray(shift_right(picked["item_idx"], SHIFT["test"]))
    names = [[labels.get(int(i), "?") for i in row] for row in items]
    titles = [f"{encoder.kind}: user {rows['user_id'][i]}" for i in longest]
    return plot_attention(list(matrices), list(items), names, titles, path)


def latest_models(cfg: Config, encoders: list[str]) -> list[str]:
    return [resolve_model_dir(cfg.paths.resolve("models"), name) for name in encoders]
