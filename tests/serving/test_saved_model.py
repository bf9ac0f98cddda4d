"""The exported graph builds a user's sequence from raw events exactly as the nightly does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from interest.etl.sessions import CleanRules, StepRules
from interest.layout import serving_number
from interest.models.encoders import build_encoder
from interest.models.savedmodel import Catalogue, ServingModule, ServingRules
from interest.schema import MIN_TRAIN_STEPS, SEQUENCE_FEATURES, TIME_GAP_EDGES_S
from interest.serving.recommend import user_steps, windows_of_steps

TYPES = ["view", "click", "cart"]
# short cuts, so that sessions end on time, on count and on the total span within a few events
RULES = ServingRules(
    tuple(TYPES), 30.0, 6, 20.0, TIME_GAP_EDGES_S, 3, 2, 3, bot_max_events_per_day=12, bot_policy="cap"
)  # a day's events past the 12th are a bot's (most users here pass it)
STEP_RULES = StepRules(30.0, 6, 20.0, True, TIME_GAP_EDGES_S, MIN_TRAIN_STEPS)
CLEAN_RULES = CleanRules(12, "cap")
LOOKUP = {item: 2 + i for i, item in enumerate("abcde")}  # "f" and "zz" are unknown


def _events(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Events with repeats of an item, exact duplicates, ties in time and rows out of time order."""
    gaps = rng.choice([0, 0, 5, 30, 200, 400, 700, 1790, 1810, 5000, 100_000], size=n)
    ts = pd.Timestamp("2026-11-20", tz="UTC") + pd.to_timedelta(np.cumsum(gaps) + rng.integers(0, 999, n) / 1e3, "s")
    events = pd.DataFrame(
        {"item_id": rng.choice(list("aabbcdef") + ["zz"], size=n), "event_type": rng.choice(TYPES, size=n), "ts": ts}
    )
    events = pd.concat([events, events.sample(n // 5, random_state=int(rng.integers(1000)))])  # exact duplicates
    swap = rng.permutation(len(events))[: len(events) // 4]
    order = np.arange(len(events))
    order[np.sort(swap)] = swap  # a quarter of the rows arrive out of order
    return events.iloc[order].reset_index(drop=True)


@pytest.mark.parametrize("seed,windows", [(1, 1), (2, 1), (3, 1), (1, 3), (4, 4)])
def test_in_graph_steps_equal_the_nightlys_step_builder(seed, windows):
    """The latest window, and with ``windows`` > 1 the older ones as the nightly stores them
    (``etl.sequences``: 8 steps ending 5 apart), from histories of up to 40 events."""
    rng = np.random.default_rng(seed)
    users = [_events(rng, int(n)) for n in rng.integers(1, 40, size=7)]
    encoder = build_encoder("memory", vocab_size=7, max_len=8, dim=8, heads=2, blocks=1, memory_slots=2)
    ids = np.array(["<pad>", "<unknown>", *"abcde"], dtype=object)
    catalogue = Catalogue(ids, np.asarray(encoder.item_table), np.ones(8, np.float32) / 8**0.5, [("a", 1.0)])
    module = ServingModule(encoder, catalogue, dataclasses.replace(RULES, windows=windows), "v")
    width = max(len(u) for u in users) + 2
    item_id = np.full((len(users), width), "", dtype=object)
    event_type = np.full((len(users), width), "", dtype=object)
    ts = np.full((len(users), width), "", dtype=object)
    for row, e in enumerate(users):
        item_id[row, : len(e)], event_type[row, : len(e)] = e.item_id, e.event_type
        ts[row, : len(e)] = e.ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event_type[0, len(users[0])] = "refund"  # an unknown event type: left out, as the nightly rejects it
    item_id[0, len(users[0])] = "a"
    built = module.steps(*(tf.constant(x.astype(str)) for x in (item_id, event_type, ts)))
    capped, older = 0, 0
    for row, e in enumerate(users):
        steps, bots = user_steps(f"u{row}", e, TYPES, STEP_RULES, CLEAN_RULES)
        capped += bots.get("bot_cap", 0)
        stored, idx = windows_of_steps(f"u{row}", steps, LOOKUP, 8, windows)
        back = np.asarray(stored.column("window"))  # 0: the latest
        older += int((back > 0).sum())
        for name in SEQUENCE_FEATURES:
            want = np.zeros((windows, 8), np.int64)
            want[windows - 1 - back] = np.stack(stored.column(name).to_numpy(zero_copy_only=False))
            got = built["features"][name][row].numpy().reshape(windows, 8)
            np.testing.assert_array_equal(got, want, err_msg=f"{name}, user {row}")
        assert built["n_steps"][row] == len(steps) and built["n_events"][row] == steps["n_events"].sum()
        seen = built["seen"][row].numpy()
        assert sorted(set(seen[seen > 0])) == sorted(set(idx))
    assert capped > 0  # the bot rule was exercised
    assert older > 0 or windows == 1  # older windows were laid out


def test_serving_versions_grow_with_the_data_date_then_the_making_time():
    made = ["2026-11-25_20261202T001433123456_abcdef", "2026-11-24_20261203T000000000000_abcdef"]
    first, backfill = serving_number(made[0], "2026-11-25"), serving_number(made[1], "2026-11-24")
    again = serving_number("2026-11-25_20261202T001433223456_abcdef", "2026-11-25")
    assert backfill < first < again < 2**63
    assert first < serving_number("bad-night", "2026-11-25") < serving_number("x", "2026-11-26")  # named otherwise


def test_the_linear_step_helpers_equal_their_pairwise_definitions():
    """The graph's helpers avoid [B, E, E] tensors (a request's memory grows with its events, not
    their square); on random rows with many ties they answer as the pairwise rules do."""
    from interest.models.savedmodel import _exact_repeats, _last_flag_index, _per_segment_max

    rng = np.random.default_rng(5)
    b, e = 4, 40
    micros = rng.integers(0, 4, (b, e)).astype(np.int64)  # many ties in time
    items = rng.choice(["a", "b", "c"], (b, e))
    rank = rng.integers(0, 2, (b, e)).astype(np.int32)
    valid = rng.random((b, e)) > 0.2
    flags = rng.random((b, e)) > 0.7
    step = np.sort(rng.integers(-1, 6, (b, e)), axis=1)
    j = np.arange(e)
    earlier = j[None, :] < j[:, None]  # [E(i), E(j)]
    same = (micros[:, :, None] == micros[:, None, :]) & (items[:, :, None] == items[:, None, :])
    same &= rank[:, :, None] == rank[:, None, :]
    want_repeat = (same & earlier[None] & valid[:, None, :]).any(2) & valid
    got = _exact_repeats(tf.constant(micros), tf.constant(items), tf.constant(rank), tf.constant(valid))
    np.testing.assert_array_equal(got.numpy() & valid, want_repeat)
    want_last = np.where(flags[:, None, :] & (j[None, :] <= j[:, None])[None], j[None, None, :], 0).max(2)
    np.testing.assert_array_equal(_last_flag_index(tf.constant(flags)).numpy(), want_last)
    in_step = (step[:, :, None] == step[:, None, :]) & valid[:, None, :]
    want_stage = np.where(in_step, rank[:, None, :], -1).max(2)
    got_stage = _per_segment_max(tf.constant(rank), tf.constant(step, tf.int32), tf.constant(valid)).numpy()
    np.testing.assert_array_equal(got_stage[step >= 0], want_stage[step >= 0])


def test_the_graphs_explanation_picks_as_the_nightly_without_pairwise_tensors():
    """``heaviest`` (the graph's explanation and each interest's "because" items) sums an item's
    weight over its positions and picks the k heaviest, ties to the lower index, never padding or
    the unknown item: as ``scoring.topn.top_weighted_batch`` does, on windows with many repeats
    and ties, and on a long whole-history window."""
    from interest.models.savedmodel import heaviest
    from interest.scoring.topn import top_weighted_batch

    rng = np.random.default_rng(9)
    for rows, width, k in ((6, 12, 3), (3, 1600, 5)):
        window = rng.integers(0, 9, (rows, width)).astype(np.int64)  # 0 pads, 1 is the unknown item
        weight = np.round(rng.random((rows, width)), 1)  # ties on purpose
        weight[window == 0] = 0.0
        order, named, total = (t.numpy() for t in heaviest(tf.constant(window), tf.constant(weight), k))
        items, sums, offsets = top_weighted_batch(window, weight, k)
        for r in range(rows):
            want = list(zip(items[offsets[r] : offsets[r + 1]].tolist(), sums[offsets[r] : offsets[r + 1]]))
            got = [(int(window[r, p]), total[r, p]) for p, ok in zip(order[r], named[r]) if ok]
            assert [i for i, _ in got] == [i for i, _ in want], r
            np.testing.assert_allclose([w for _, w in got], [w for _, w in want], rtol=1e-12)
