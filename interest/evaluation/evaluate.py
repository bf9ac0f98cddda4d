"""The evaluation stage: exported models beside popularity and item co-occurrence on one date.

What it measures, all on the date's leave-one-out test targets (``interest.scoring``):

- the headline metrics, with targets outside the vocabulary left out (the published protocol as
  this project has always reported it) and counted as misses;
- every scorer per segment (history length, drifting users, cold-start replays), each with a 95 %
  bootstrap interval over users (``interest.evaluation.breakdown``);
- with a later date's sequences (``after``), a temporal split: the first new item after the cut
  and the new items of the following days, and how new items rank with their cold-start vectors;
- beyond accuracy of the lists the embed job would publish (coverage, diversity, novelty) and
  the memory encoder's slot purity (``interest.scoring.beyond``);
- faithfulness of the explanations: deletion and sufficiency against random and most-recent
  steps (``interest.evaluation.faithfulness``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interest import storage
from interest.config import VALID_SEED, Config
from interest.data.files import item_counts_from_vocab, load_rows, read_vocab, training_columns
from interest.errors import UserError
from interest.evaluation.breakdown import Breakdown, build_breakdown
from interest.layout import Layout
from interest.models.cold import cold_item_rows
from interest.models.export import LoadedModel, load_model, model_as_of
from interest.models.retrieval import Retrieval
from interest.schema import FIRST_ITEM, SEQUENCE_FEATURES, SHIFT, UNKNOWN
from interest.scoring import beyond, sessionknn
from interest.scoring.cooccurrence import fit_on_validation
from interest.scoring.metrics import summarize
from interest.scoring.segments import category_sets, estimate, paired_difference
from interest.scoring.tasks import (
    EncoderScorer,
    InterestsScorer,
    PopularityScorer,
    Scorer,
    Task,
    cold_replay,
    leave_one_out,
    rank_task,
    temporal,
)

log = logging.getLogger(__name__)

COLD_STEPS = (1, 2, 3)  # cold-start replays: the history cut to the first 1, 2, 3 steps
DELETION_KS = (1, 3, 5)


class EvaluationInputError(UserError, ValueError):
    """A model and the date's data that do not fit together (the user's to fix: exit 2)."""


@dataclass
class EvalData:
    """What evaluating one date reads: its test users' rows, vocabulary, categories and counts."""

    date: str
    rows: dict[str, np.ndarray]  # latest windows of the evaluated users
    vocab: pd.DataFrame
    vocab_size: int
    categories: list[frozenset[str]] | None  # per item index (None: the data has no categories)
    counts: np.ndarray  # [V] training step counts (popularity)
    train_path: str
    tasks: dict[str, Task]
    catalogue: int = 0  # item rows the scorers cover: vocab_size, or a later date's (add_temporal)

    def __post_init__(self) -> None:
        self.catalogue = max(self.catalogue, self.vocab_size)


def categories_by_index(vocab: pd.DataFrame, size: int) -> list[frozenset[str]] | None:
    if "category" not in vocab or not vocab["category"].notna().any():
        return None
    labels: list[str | None] = [None] * size
    for i, c in zip(vocab["item_idx"].to_numpy(), vocab["category"].to_numpy()):
        if i < size:
            labels[int(i)] = c
    return category_sets(labels)


def load_eval_data(cfg: Config, layout: Layout, users: int | None = None) -> EvalData:
    """The layout date's test users (at most ``users``, default ``eval.users``, a fixed
    sample) with the leave-one-out tasks and the cold-start replays."""
    paths, date = layout.sessionized, layout.date
    for name, path in (("sequences", paths.train), ("vocabulary", paths.vocab)):
        if not storage.exists(path):
            raise EvaluationInputError(f"no {name} for {date} at {path}: run jobs/sessionize.py --date {date} first")
    vocab = read_vocab(paths.vocab)
    size = int(vocab["item_idx"].max()) + 1 if len(vocab) else FIRST_ITEM
    rows = load_rows(paths.train, limit=users or cfg.eval.users or None, seed=cfg.train.seed)
    earliest = load_rows(paths.train, window="earliest")
    pick = np.searchsorted(earliest["user_id"], rows["user_id"])  # both sorted by user
    earliest = {k: v[pick] for k, v in earliest.items()}
    test = leave_one_out(rows, "test")
    tasks = {"valid": leave_one_out(rows, "valid"), "test": test}
    tasks.update({f"cold_{c}": cold_replay(test, earliest, c) for c in COLD_STEPS})
    return EvalData(
        date,
        rows,
        vocab,
        size,
        categories_by_index(vocab, size),
        item_counts_from_vocab(vocab, size),
        paths.train,
        tasks,
    )


def add_temporal(layout: Layout, data: EvalData, after: str, week: str | None = None) -> EvalData:
    """Add the temporal tasks: ``data``'s date (the layout's) is the cut T; the sequences of
    ``after`` (sessionized with T's vocabulary as the base, as the nightly job does) give each
    user's first new item after T, and those of ``week`` (default ``after``) every new item up to it.
    Items first seen after T get indices past T's vocabulary: the scorers' catalogue, the
    categories and the counts grow to cover them, and only the temporal tasks rank them (the
    leave-one-out tasks keep T's catalogue, so their figures do not depend on ``after``)."""
    later = {}
    grown = data.vocab
    for name, date in (("temporal_first", after), ("temporal_week", week or after)):
        later_vocab, later[name] = _later_rows(layout, data, date)
        if later_vocab["item_idx"].max() > grown["item_idx"].max():
            grown = later_vocab
    size = int(grown["item_idx"].max()) + 1
    before = load_rows(layout.sessionized.infer)
    tasks = dict(data.tasks)
    for name, rows in later.items():
        tasks[name] = replace(temporal(before, rows, first_only=name == "temporal_first"), catalogue=size)
    cats, counts = categories_by_index(grown, size), np.pad(data.counts, (0, size - len(data.counts)))
    return replace(data, vocab=grown, catalogue=size, categories=cats, counts=counts, tasks=tasks)


def _later_rows(layout: Layout, data: EvalData, date: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A later date's vocabulary and inference rows, checked to extend ``data``'s vocabulary."""
    paths, base = layout.at(date).sessionized, layout.sessionized.vocab
    if date <= data.date or not storage.exists(paths.infer):
        raise EvaluationInputError(
            f"no sequences for a date after {data.date} at {paths.infer}: run jobs/sessionize.py --date "
            f"{date} --base-vocab {base} first"
        )
    later_vocab = read_vocab(paths.vocab)
    merged = data.vocab.merge(later_vocab, on="item_id", suffixes=("", "_later"))
    if len(merged) < len(data.vocab) or (merged["item_idx"] != merged["item_idx_later"]).any():
        raise EvaluationInputError(
            f"the vocabulary of {date} does not extend that of {data.date} (item indices differ): "
            f"sessionize {date} with --base-vocab {base}"
        )
    return later_vocab, load_rows(paths.infer)


def baselines(data: EvalData, negatives: int, valid_seed: int) -> Mapping[str, Sequence[Scorer]]:
    """Popularity, item co-occurrence and session-kNN with reminders, settings picked on validation."""
    valid = data.tasks["valid"]

    def validate(scorer: Scorer) -> float:
        ranks = rank_task(scorer, valid, data.vocab_size, negatives, (valid_seed,))
        return float(summarize(ranks, 10)["sampled_hr@10"])

    read = training_columns(data.train_path, ("item_idx", "session_idx"))
    items = read["item_idx"]
    cooc, _ = fit_on_validation(items, data.catalogue, validate)
    log.info(f"co-occurrence: {cooc.settings} (picked on validation)")
    sknn, _ = sessionknn.fit_on_validation(items, read["session_idx"], data.catalogue, validate)
    log.info(f"session-kNN: {sknn.settings} (picked on validation)")
    return {"popularity": [PopularityScorer(data.counts)], "co-occurrence": [cooc], "session-kNN": [sknn]}


MULTI_INTEREST = " (best interest)"  # the suffix of a multi-interest encoder's second scorer


def encoder_scorers(models: Mapping[str, Sequence[LoadedModel]], data: EvalData) -> dict[str, list[EncoderScorer]]:
    """One scorer per model; items newer than a model score with their cold-start vectors. An
    encoder with several interests is scored twice: by its user vector, and by the best of its
    interest vectors (multi-interest retrieval)."""
    out: dict[str, list[EncoderScorer]] = {}
    for name, group in models.items():
        for model in group:
            trained = np.asarray(model.encoder.item_table)
            table = np.concatenate([trained, cold_item_rows(trained, data.vocab, data.catalogue)])
            out.setdefault(name, []).append(EncoderScorer(name, model.encoder, table))
            if model.encoder.kind == "memory" and model.encoder.args["memory_slots"] > 1:
                out.setdefault(name + MULTI_INTEREST, []).append(InterestsScorer(name, model.encoder, table))
    return out


def headline(
    scorers: Mapping[str, Sequence[Scorer]],
    models: Mapping[str, Sequence[LoadedModel]],
    data: EvalData,
    k: int,
    negatives: int,
    seeds,
) -> list[dict[str, Any]]:
    """Per scorer, the test metrics with unknown targets left out (``test``) and counted as misses
    (``test_counted``), each the mean over the scorer's models (training seeds)."""
    out: list[dict[str, Any]] = []
    for name, group in scorers.items():
        runs = [rank_task(s, data.tasks["test"], data.vocab_size, negatives, tuple(seeds)) for s in group]
        row: dict[str, Any] = {"model": name}
        trained = models.get(name, [])
        if trained:
            row["version"] = ", ".join(m.version for m in trained)
            row["best_epoch"] = trained[0].metrics.get("best_epoch") if len(trained) == 1 else None
            row["train_s"] = float(np.mean([m.metrics.get("train_seconds") or 0.0 for m in trained]))
        for key, counted in (("test", False), ("test_counted", True)):
            each = [summarize(r, k, counted=counted) for r in runs]
            row[key] = {m: float(np.mean([e[m] for e in each])) for m in each[0] if m != "sampled_note"}
            if len(each) > 1:
                row[key]["training_seeds"] = len(each)
            if len(each) > 1 and f"sampled_hr@{k}" in each[0]:
                row[key][f"sampled_hr@{k}_seed_std"] = float(np.std([e[f"sampled_hr@{k}"] for e in each]))
        out.append(row)
    return out


def new_item_table(
    models: Mapping[str, Sequence[LoadedModel]], data: EvalData, k: int, negatives: int, seeds, seed: int = 0
) -> list[dict[str, Any]]:
    """On the temporal tasks: how targets that are items first seen after the cut rank with the
    cold-start vectors (their category's mean), against random vectors of the same scale, and the
    figures with those targets left out."""
    out = []
    for task_name in ("temporal_first", "temporal_week"):
        task = data.tasks.get(task_name)
        if task is None or not len(task):
            continue
        for name, group in models.items():
            row: dict[str, Any] = {"task": task_name, "model": name}
            for mode in ("cold", "random", "left out"):
                hits, new_hits = [], []
                for model in group:
                    trained = np.asarray(model.encoder.item_table)
                    is_new = task.targets >= len(trained)
                    if mode == "cold":
                        table = np.concatenate([trained, cold_item_rows(trained, data.vocab, data.catalogue)])
                    elif mode == "random":  # the trained vectors' scale, no information
                        shape = (data.catalogue - len(trained), trained.shape[1])
                        rng = np.random.default_rng(seed)
                        table = np.concatenate([trained, rng.normal(0.0, trained[FIRST_ITEM:].std(0), shape)])
                    else:  # new items are no candidates (they score lowest) and no targets
                        table = trained
                    scorer = EncoderScorer(name, model.encoder, table.astype(np.float32))
                    keep = ~is_new if mode == "left out" else np.ones(len(task), bool)
                    ranks = rank_task(scorer, task.take(keep), data.catalogue, negatives, tuple(seeds))
                    v = ranks.values(k, counted=True)
                    hits.append(v["full_hr"])
                    if mode != "left out":
                        new_hits.append(v["full_hr"][is_new])
                row[f"{mode}: HR@{k} (full)"] = estimate(np.mean(hits, 0))
                if new_hits:
                    row[f"{mode}: new items only"] = estimate(np.mean(new_hits, 0))
            row["new item targets"] = int((task.targets >= len(np.asarray(group[0].encoder.item_table))).sum())
            row["targets"] = len(task)
            out.append(row)
    return out


def recommended_lists(scorer: Scorer, data: EvalData, k: int) -> np.ndarray:
    """[N, k] the lists the embed job would publish for the evaluated users: their best real items
    of the date's vocabulary never interacted with, from the whole stored window."""
    from interest.scoring.topn import top_n_unseen

    inputs = {f: data.rows[f] for f in SEQUENCE_FEATURES}
    seen = data.rows.get("history_idx", data.rows["item_idx"])
    if type(scorer) is EncoderScorer:  # the embed job's own code path
        return top_n_unseen(scorer.users(inputs), np.asarray(scorer.table)[: data.vocab_size], seen, k)[0]
    lists = []
    for start in range(0, len(seen), 512):
        scores = scorer.scores({f: v[start : start + 512] for f, v in inputs.items()})
        scores = np.array(scores[:, : data.vocab_size], dtype=np.float64)
        for row, hist in zip(scores, seen[start : start + 512]):
            row[np.asarray(hist, dtype=np.int64)] = -np.inf
            row[:FIRST_ITEM] = -np.inf
        lists.append(np.argsort(-scores, axis=1, kind="stable")[:, :k])
    return np.concatenate(lists)


def published_lists(
    encoder: Any,
    table: np.ndarray,
    rows: Mapping[str, np.ndarray],
    n: int,
    rules: Retrieval,
    categories: np.ndarray | None = None,
    batch: int = 512,
    windows: tuple[dict[str, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """[N, n] the lists the embed stage publishes for ``rows`` (each kept interest retrieving
    where ``rules`` say so, the input's items never recommended), and [N] how many interests
    retrieved for each user. table [V, D]: the scoring table; categories [V] item labels (the
    diversity merge). ``windows`` (``data.files.stored_windows`` of the same users): the memory
    encoder reads each user's whole stored history instead of the latest window."""
    from interest.scoring.interests import kept_interests, l2_normalize, retrieve

    size = encoder.args["vocab_size"]
    seen = rows.get("history_idx", rows["item_idx"])
    lists, counts = [], []
    for start in range(0, len(rows["item_idx"]), batch):
        part = slice(start, start + batch)
        source = rows if windows is None else windows[0]
        feats = {f: source[f][part] for f in SEQUENCE_FEATURES}  # [B, L] each, or [B, C, L]
        window = feats["item_idx"].reshape(len(feats["item_idx"]), -1)  # [B, L] or [B, C * L]
        feats["item_idx"] = np.where(feats["item_idx"] >= size, UNKNOWN, feats["item_idx"]).astype(np.int32)
        out = encoder.infer(feats)  # several windows: each step written once (data.files.stored_windows)
        user, interests = l2_normalize(out["user"]), l2_normalize(out["interests"])  # [B, D], [B, K, D]
        items, _, _, multi = retrieve(
            user, interests, out["interest_weight"], window, list(seen[part]), table, n, rules,
            categories,
        )  # fmt: skip
        lists.append(items)
        keep = kept_interests(interests, out["interest_weight"], window, rules.min_weight, rules.max_cosine)
        counts.append(keep.sum(1) if multi else np.ones(len(window), np.int64))
    return np.concatenate(lists), np.concatenate(counts)


def beyond_accuracy(scorers: Mapping[str, Sequence[Scorer]], data: EvalData, k: int) -> dict[str, Any]:
    """Coverage@k, intra-list category diversity and novelty of each scorer's lists (mean over its
    models; diversity and novelty per user with a bootstrap interval)."""
    out: dict[str, Any] = {}
    for name, group in scorers.items():
        lists = [recommended_lists(s, data, k) for s in group]
        row: dict[str, Any] = {f"coverage@{k}": float(np.mean([beyond.coverage(x, data.vocab_size) for x in lists]))}
        row["novelty"] = estimate(np.mean([beyond.novelty(x, data.counts) for x in lists], 0))
        if data.categories is not None:
            div = np.mean([beyond.intra_list_diversity(x, data.categories) for x in lists], 0)
            row["diversity"] = estimate(div[np.isfinite(div)])
        out[name] = row
    return out


def slot_purity(models: Sequence[LoadedModel], data: EvalData, seed: int = 0) -> dict[str, Any] | None:
    """Do the memory encoder's slots separate categories? Each history item goes to the slot its
    vector matches best; purity against the same assignment shuffled over the user's items."""
    if data.categories is None:
        return None
    inputs = {f: data.rows[f] for f in SEQUENCE_FEATURES}
    rng = np.random.default_rng(seed)
    real, shuffled = [], []
    for model in models:
        slots = []
        for start in range(0, len(inputs["item_idx"]), 512):
            slots.append(model.encoder.infer({f: v[start : start + 512] for f, v in inputs.items()})["interests"])
        interests = np.concatenate(slots)  # [N, K, D]
        table = np.asarray(model.encoder.item_table)
        items = [row[row >= FIRST_ITEM] for row in inputs["item_idx"]]
        assign = [np.argmax(table[it] @ s.T, axis=1) if len(it) else it for it, s in zip(items, interests)]
        real.append(beyond.slot_purity(assign, items, data.categories))
        shuffled.append(beyond.slot_purity([rng.permutation(a) for a in assign], items, data.categories))
    a, b = np.mean(real, 0), np.mean(shuffled, 0)
    ok = np.isfinite(a) & np.isfinite(b)
    return {"purity": estimate(a[ok]), "shuffled": estimate(b[ok]), "difference": paired_difference(a[ok], b[ok])}


def faithfulness(models: Sequence[LoadedModel], data: EvalData, ks=DELETION_KS, seed: int = 0) -> dict[str, Any]:
    """Deletion and sufficiency of one encoder's explanations on the test histories: per k, the
    paired difference against random and most-recent steps (mean over the models)."""
    from interest.evaluation.faithfulness import CONTROLS, measure

    test = data.tasks["test"]
    runs = [measure(m.encoder, test.inputs, test.seen, test.user, ks, seed=seed) for m in models]
    out: dict[str, Any] = {"users": len(runs[0].users)}
    for kind in ("deletion", "sufficiency"):
        out[kind] = {}
        for control in CONTROLS:
            for k in ks:
                rule = np.mean([getattr(r, kind)["attention"][k] for r in runs], 0)
                other = np.mean([getattr(r, kind)[control][k] for r in runs], 0)
                diff = paired_difference(rule, other) if kind == "deletion" else paired_difference(other, rule)
                out[kind][f"{control} k={k}"] = diff
    return out


def evaluate_models(cfg: Config, date: str, model_dirs: list[str], after: str | None = None) -> dict[str, Any]:
    """Evaluate each model, popularity and co-occurrence on ``date``; write the report."""
    models = [load_model(d) for d in model_dirs]
    refuse_later_models(models, date)
    layout = Layout.of(cfg, date)
    data = load_eval_data(cfg, layout)
    for model in models:
        check_fits(model, data)
    if after:
        data = add_temporal(layout, data, after)
    grouped: dict[str, list[LoadedModel]] = {}
    for model in models:
        grouped.setdefault(model.encoder.kind, []).append(model)
    target = layout.report("evaluation")
    with storage.local_output(target) as local:  # matplotlib writes local files
        return _evaluate(cfg, data, grouped, Path(local), target)


def refuse_later_models(models: Sequence[LoadedModel], date: str) -> None:
    """A model trained on data after ``date`` has seen the date's test targets: refuse it by name."""
    for model in models:
        trained_on = model.config.get("date")
        if trained_on and trained_on > date:
            raise EvaluationInputError(
                f"model {model.path} was trained on data of {trained_on}, after {date}: it has seen "
                f"{date}'s test targets; evaluate {date} with a model trained on data up to it"
            )


def check_fits(model: LoadedModel, data: EvalData) -> None:
    size, max_len = model.encoder.args["vocab_size"], model.encoder.args["max_len"]
    if size != data.vocab_size:
        raise EvaluationInputError(
            f"model {model.path} was trained with {size} item rows but the sequences of {data.date} "
            f"index {data.vocab_size}: evaluate it on the date it was trained on"
        )
    if max_len != data.rows["item_idx"].shape[1]:
        raise EvaluationInputError(
            f"model {model.path} reads {max_len} steps but the sequences of {data.date} hold "
            f"{data.rows['item_idx'].shape[1]}: evaluate it on sequences built with its sessionize.max_len"
        )


def _evaluate(cfg: Config, data: EvalData, models: dict[str, list[LoadedModel]], out: Path, target: str):
    from interest.evaluation.report import write_report

    e = cfg.eval
    seeds = tuple(e.seeds)
    scorers: dict[str, Sequence[Scorer]] = {**encoder_scorers(models, data)}
    scorers.update(baselines(data, e.sampled_negatives, VALID_SEED))
    tasks = {name: task for name, task in data.tasks.items() if name != "valid"}
    breakdown = build_breakdown(
        scorers, tasks, data.vocab_size, data.categories, e.k, e.sampled_negatives, seeds, progress=log.info
    )
    results = headline(scorers, models, data, e.k, e.sampled_negatives, seeds)
    sections: dict[str, Any] = {
        "beyond": beyond_accuracy(scorers, data, e.k),
        "faithfulness": {name: faithfulness(group, data) for name, group in models.items()},
        "new_items": new_item_table(models, data, e.k, e.sampled_negatives, seeds) if "temporal_first" in tasks else [],
    }
    if "memory" in models:
        sections["slot_purity"] = slot_purity(models["memory"], data)
    figures = {}
    for name, group in models.items():
        figures[f"attention_{name}"] = attention_figure(
            group[0].encoder, data.rows, labels_by_index(data.vocab), out / f"attention_{name}.png"
        )
    histories = {name: group[0].metrics.get("history", []) for name, group in models.items()}
    versions = {name: [m.version for m in group] for name, group in models.items()}
    paths = write_report(
        out, data.date, results, breakdown, sections, histories, versions, e.k, e.sampled_negatives, figures
    )
    return {
        "results": results,
        "breakdown": breakdown,
        "sections": sections,
        "paths": {k: storage.join(target, Path(v).name) for k, v in paths.items()},
    }


def labels_by_index(vocab: pd.DataFrame) -> dict[int, str]:
    """item index -> its category (or its id where it has none), for labelling pictures."""
    cats = vocab["category"] if "category" in vocab else [None] * len(vocab)
    return {
        int(i): (str(c) if c is not None else str(item))
        for i, item, c in zip(vocab["item_idx"], vocab["item_id"], cats)
    }


def attention_figure(encoder, rows: dict, labels: dict[int, str], path: Path, users: int = 3) -> Path:
    """Heatmaps of the test-time attention of the ``users`` longest histories in ``rows``."""
    from interest.evaluation.explain import attention_matrices, plot_attention
    from interest.scoring.tasks import shift_right

    longest = np.argsort(-rows["n_steps"], kind="stable")[:users]
    picked = {k: v[longest] for k, v in rows.items() if k in SEQUENCE_FEATURES}
    matrices = attention_matrices(encoder, picked, "test")
    items = shift_right(picked["item_idx"], SHIFT["test"])
    names = [[labels.get(int(i), "?") for i in row] for row in items]
    titles = [f"{encoder.kind}: user {rows['user_id'][i]}" for i in longest]
    return plot_attention(list(matrices), list(items), names, titles, path)


def models_as_of(cfg: Config, date: str, encoders: list[str]) -> list[str]:
    """The model of each encoder that serves ``date``: trained on its data, else the newest before."""
    models = Layout.of(cfg, date).paths.models
    return [model_as_of(models, name, date) for name in encoders]


__all__ = ["Breakdown", "evaluate_models", "models_as_of"]
