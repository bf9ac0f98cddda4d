"""Explanations against planted truth, paired per user, over two training seeds.

- Plausible: the items the attention picks are the user's planted interests more often than the
  items uninformed attention would pick: uniform weights (which favour the user's most frequent
  items) and the model's own weights shuffled over the history (averaged over several shuffles).
- Faithful: on data where most views are noise (60 %), so the latest steps are mostly noise too,
  removing the items the table publishes as the explanation (every step of each) lowers the
  model's probability of its own top recommendation more than removing random items and more than
  removing the most recent ones; the same test run on shuffled attention does not pass. The memory
  encoder's published explanation does not pass it (marked, strictly, as expected to fail).
  Self-attention's rollout gives its latest step its residual share, so its top step is the latest
  one and it is no better than recency there (BENCHMARKS.md): it is held to beating random items,
  on the 30 % noise data.

Each claim is a per-user paired difference whose 95 % bootstrap interval must lie above 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interest.data.files import load_rows
from interest.etl.sessionize import run_sessionize
from interest.evaluation.explain import interest_shares
from interest.evaluation.faithfulness import measure
from interest.models.encoders import ENCODERS
from interest.models.export import load_model
from interest.schema import SEQUENCE_FEATURES
from interest.scoring.segments import paired_difference
from interest.scoring.tasks import leave_one_out
from interest.serving.inference import Embedder
from interest.synth import generate
from interest.training.run import train_and_export

from conftest import DATE, PLANTED, embed_frame, make_config, make_generator, top_weighted_items

# 30% of views are off-interest noise, so a history is ~75% in-interest; 60% for the deletion test.
# Random batches, as the faithfulness figures in BENCHMARKS.md were measured: trained on batches by
# length (the default under the full softmax), self-attention's lead over random deletion at k=1
# was within noise in one run (lower bound -4e-5), an effect of 0.0006 either way
RANDOM_BATCHES = "train.batch_by_length=false"
NOISY = [*PLANTED, "generator.interest_noise=0.3", "train.epochs=10", RANDOM_BATCHES]
NOISIER = [*PLANTED, "generator.interest_noise=0.6", "train.epochs=10", RANDOM_BATCHES]
DELETION_KS = (1, 3, 5)
SEEDS = (1, 2)
SHUFFLES = 5
MIN_PRECISION = 0.78  # share of explanation items in the user's planted interests


def planted_data(spark, root, overrides: list[str]):
    cfg = make_config(root, *overrides)
    generate(make_generator(*overrides), cfg.paths.raw_events, cfg.paths.truth, progress=False)
    run_sessionize(spark, cfg, DATE)
    return root


def train_seeds(root, overrides: list[str]) -> dict[str, list]:
    """Per encoder, one model per training seed."""
    return {
        kind: [
            load_model(
                train_and_export(
                    make_config(root, *overrides, f"model.encoder={kind}", f"train.seed={seed}"), DATE
                ).model_dir
            )
            for seed in SEEDS
        ]
        for kind in sorted(ENCODERS)
    }


@pytest.fixture(scope="module")
def noisy(spark, tmp_path_factory):
    return planted_data(spark, tmp_path_factory.mktemp("noisy"), NOISY)


@pytest.fixture(scope="module")
def trained(noisy):
    return train_seeds(noisy, NOISY)


@pytest.fixture(scope="module")
def noisier(spark, tmp_path_factory):
    root = planted_data(spark, tmp_path_factory.mktemp("noisier"), NOISIER)
    return root, train_seeds(root, NOISIER)


def control_tops(items: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator | None) -> list[int]:
    """Top-k items of one user under control attention: uniform over the real steps, or (with
    ``rng``) the given weights permuted over the real steps. items, weights: [L]."""
    real = items > 0
    w = np.zeros(len(items))
    w[real] = rng.permutation(weights[real]) if rng is not None else 1.0 / real.sum()
    return [i for i, _ in top_weighted_items(items, w, k)]


def plausibility(model, noisy) -> dict[str, np.ndarray]:
    """Per user: the explanation's share of planted-interest items, and each control's."""
    truth = pd.read_parquet(noisy / "raw" / "truth" / "users.parquet").set_index("user_id")
    category = pd.read_parquet(noisy / "raw" / "truth" / "items.parquet").set_index("item_id").category.to_dict()
    infer = pd.read_parquet(noisy / "sequences" / f"dt={DATE}" / "infer").sort_values("user_id")
    vocab = pd.read_parquet(noisy / "vocab" / f"dt={DATE}").sort_values("item_idx")
    ids = np.array(["<pad>", "<unknown>", *vocab.item_id], dtype=object)
    embedder = Embedder(model=model, item_ids=ids, categories=None, top_k=5, top_n=10, cold_min_steps=3, version="test")
    rows = embed_frame(infer, embedder)  # the embed job's per-batch code: what is published
    wanted = [set(truth.interests_last[u]) for u in rows.user_id]
    out = {"explained": interest_shares([[t["item_id"] for t in tops] for tops in rows.top_items], wanted, category)}
    by_user = infer.set_index("user_id").loc[rows.user_id]
    feats = {f: np.stack(by_user[f].to_numpy()).astype(np.int32) for f in SEQUENCE_FEATURES}  # [N, L]
    attention = model.encoder.infer(feats)["attention"]  # [N, L]

    def shares(lists):
        return interest_shares([[ids[i] for i in tops] for tops in lists], wanted, category)

    out["uniform"] = shares([control_tops(it, w, 5, None) for it, w in zip(feats["item_idx"], attention)])
    rng = np.random.default_rng(0)
    out["shuffled"] = np.mean(
        [shares([control_tops(it, w, 5, rng) for it, w in zip(feats["item_idx"], attention)]) for _ in range(SHUFFLES)],
        axis=0,
    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_explanations_point_at_planted_interests(noisy, trained, kind):
    runs = [plausibility(model, noisy) for model in trained[kind]]
    mean = {name: np.mean([r[name] for r in runs], axis=0) for name in runs[0]}  # per user, over seeds
    ok = np.isfinite(mean["explained"]) & np.isfinite(mean["uniform"]) & np.isfinite(mean["shuffled"])
    assert np.nanmean(mean["explained"]) >= MIN_PRECISION
    for control in ("uniform", "shuffled"):
        diff = paired_difference(mean["explained"][ok], mean[control][ok])
        assert diff["lo"] > 0, (control, diff)


def deletion(root, models, ks):
    """Deletion per rule and k, per user the mean over the models (training seeds)."""
    test = leave_one_out(load_rows(str(root / "sequences" / f"dt={DATE}" / "train")), "test")
    runs = [measure(m.encoder, test.inputs, test.seen, test.user, ks=ks) for m in models]
    result = runs[0]
    for rule in ("attention", "shuffled", "random", "recent"):
        result.deletion[rule] = {k: np.mean([r.deletion[rule][k] for r in runs], 0) for k in ks}
    return result


# Deleting what the table publishes (every step of the top items by summed weight), the memory
# encoder's explanation lowers the top recommendation less than random items at k = 1 and 3, and
# less than the most recent item at k = 1 (BENCHMARKS.md, "Explanations").
# Strict: the day it passes, this marker must go.
MEMORY_NOT_FAITHFUL = pytest.mark.xfail(
    reason="memory's published explanation does not beat random item deletion", strict=True
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hierarchical", pytest.param("memory", marks=MEMORY_NOT_FAITHFUL)])
def test_removing_the_most_attended_steps_costs_more_than_removing_random_or_recent_ones(noisier, kind):
    root, trained = noisier
    result = deletion(root, trained[kind], DELETION_KS)
    assert result.passes("attention"), result.compare("attention")["deletion"]
    assert not result.passes("shuffled"), result.compare("shuffled")["deletion"]  # the control must not pass
    # and the weights themselves carry it: the same weights shuffled over the history remove less
    # (an explanation replaced by shuffled weights fails here)
    for k in DELETION_KS:
        margin = paired_difference(result.deletion["attention"][k], result.deletion["shuffled"][k])
        assert margin["lo"] > 0, (k, margin)


@pytest.mark.slow
def test_self_attention_rollout_beats_random_steps_and_starts_at_the_latest(noisy, trained):
    result = deletion(noisy, trained["self_attention"], (1,))
    vs = result.compare("attention")["deletion"]
    assert vs["random"][1]["lo"] > 0, vs
    assert not result.compare("shuffled")["deletion"]["random"][1]["lo"] > 0
    test = leave_one_out(load_rows(str(noisy / "sequences" / f"dt={DATE}" / "train")), "test")
    for model in trained["self_attention"]:  # the residual path: the latest step weighs most, mostly
        weights = model.encoder.infer(test.inputs)["attention"]  # [N, L]
        assert (weights.argmax(1) == weights.shape[1] - 1).mean() > 0.8
