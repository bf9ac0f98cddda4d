"""One raw log, three readers: the nightly's rows, ``Recommender.recommend`` and the SavedModel give
every user the same embedding, explanation and recommendations, on all three encoders.

The logs are generated (Hypothesis) to mix what the row rules decide: case and spaces in ids and
event types, times as epoch seconds, milliseconds and ISO-8601 text, blanks and unparseable
times, unknown items and items newer than the model, users without events or without a valid
one, exact duplicates, ties, rows out of order and more events than ``max_len``. A rule changed
in one path only makes some user's answer differ.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from interest.etl import sequences, sessionize
from interest.etl.ingest import CANONICAL, CORRUPT, INGEST_ORDER
from interest.layout import serving_dir
from interest.models.encoders import build_encoder
from interest.models.export import load_model, save_model
from interest.models.savedmodel import SIGNATURE, export_serving
from interest.schema import N_GAP_BUCKETS
from interest.serving import inference
from interest.serving.embed import build_item_index, catalogue, serving_rules
from interest.serving.recommend import Recommender

from conftest import DATE, make_config

pytestmark = pytest.mark.slow

# name -> (encoder, extra arguments): BSARec's filter beside attention is one more graph to agree
# on; "memory+whole" reads every stored window (embed.whole_history) of histories up to 17 steps
ENCODERS = {
    "self_attention": ("self_attention", {}),
    "self_attention+filter": ("self_attention", {"filter_mix": 0.5}),
    "hierarchical": ("hierarchical", {}),
    "memory": ("memory", {}),
    "memory+whole": ("memory", {}),
}
WINDOWS = 3  # sessionize.max_windows: up to 2 older windows of 6 steps, ending 3 apart
TYPES = ["view", "click", "cart", "purchase"]  # the profile's sessionize.event_types
MAX_LEN = 6
MODEL_ITEMS = 6  # a .. f: the model's; g and h came after it (the night's vocabulary only)
VOCAB = pd.DataFrame(
    {
        "item_id": list("abcdefgh"),
        "item_idx": np.arange(2, 10, dtype=np.int32),
        "count": np.array([50, 40, 35, 20, 10, 5, 3, 2], np.int64),
        "category": ["x", "x", "y", "y", "z", "z", "x", "y"],
    }
)
BASE = dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.timezone.utc)  # the night's window, before its end


def _time_text(offset_s: int, ms: int, form: int) -> str:
    """One instant written as a log might write it."""
    at = BASE + dt.timedelta(seconds=offset_s, milliseconds=ms)
    secs = int(at.timestamp())
    return [
        f"{secs}.{ms:03d}" if ms else str(secs),  # epoch seconds
        str(secs * 1000 + ms),  # epoch milliseconds
        at.strftime("%Y-%m-%d %H:%M:%S") + (f".{ms:03d}" if ms else ""),  # ISO, naive: UTC
        at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        (at + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f+01:00"),
        f" {secs} ",
    ][form]


event = st.tuples(
    st.sampled_from(["a", " a", "b ", "\tb", "c", "d", "e", "f", "g", "h", "A", "zz", "", "  "]),  # item
    st.sampled_from(["view", " View", "CLICK ", "\tview", "cart", "Purchase", "like", ""]),  # type
    st.one_of(
        st.builds(
            _time_text,
            st.sampled_from([0, 600, 1200, 2400, 4800, 9000, 90000]),
            st.sampled_from([0, 0, 7, 500]),
            st.integers(0, 5),
        ),
        st.sampled_from(["", "not a time", "-5"]),
    ),
)
log = st.lists(st.lists(event, max_size=14), min_size=1, max_size=4).map(
    lambda users: [u + u[: len(u) // 4] for u in users]  # exact copies of some rows, arriving later
)


@pytest.fixture(scope="module")
def readers(spark, tmp_path_factory):
    """Per encoder: the nightly's batch function, the Recommender and the SavedModel of one night."""
    root = tmp_path_factory.mktemp("parity")
    cfg = make_config(
        root,
        f"sessionize.max_len={MAX_LEN}",
        "embed.top_n_recommendations=4",
        "embed.top_items=3",
        "embed.cold_start_min_steps=3",
        "sessionize.bot_max_events_per_day=10",  # a user with 11 or more valid events on a day is a bot
        f"sessionize.max_windows={WINDOWS}",  # the latest window, which the others read, is the same
    )
    whole = dataclasses.replace(cfg, embed=dataclasses.replace(cfg.embed, whole_history=True))
    out = {}
    for n, (name, (kind, extra)) in enumerate(ENCODERS.items()):
        night = whole if name.endswith("+whole") else cfg
        tf.keras.utils.set_random_seed(n)
        encoder = build_encoder(
            kind,
            vocab_size=2 + MODEL_ITEMS,
            max_len=MAX_LEN,
            dim=8,
            heads=2,
            blocks=1,
            memory_slots=3,
            n_event_types=len(TYPES),
            n_gap_buckets=N_GAP_BUCKETS,
            **extra,
        )
        # a stamp of its own: each version gets its own TensorFlow Serving folder (layout.serving_number)
        version = f"{DATE}_20261127T0000{n:02d}000000_{name[:6]}"
        path = save_model(encoder, VOCAB.iloc[:MODEL_ITEMS], {"date": DATE}, {}, str(root / "models"), version)
        model = load_model(path)
        table = inference.scoring_table(model, VOCAB)  # [V, D]: g and h at their category's mean
        index = build_item_index(model, VOCAB, table, DATE)
        folder = serving_dir(model.path, DATE)
        exported = export_serving(
            model.encoder, catalogue(model, VOCAB, table, night), serving_rules(night), model.version, folder
        )
        assert exported, f"{name}: {folder} holds another version's export"
        e = cfg.embed
        embedder = inference.Embedder(
            model=model,
            item_ids=inference.item_ids_by_index(model, VOCAB),
            categories=None,
            top_k=e.top_items,
            top_n=e.top_n_recommendations,
            cold_min_steps=e.cold_start_min_steps,
            version=model.version,
            table=table,
            windows=inference.history_windows(night),
        )
        signature = tf.saved_model.load(folder).signatures[SIGNATURE]
        out[name] = (model, embedder, Recommender(night, model, VOCAB, index), signature)
    return cfg, out


def _nightly_rows(spark, cfg, users: list[list[tuple[str, str, str]]]) -> pa.RecordBatch | None:
    """The inference rows the sessionize stage makes of the log (its own transforms), with each
    user's older windows as the embed stage joins them (``older``, read with embed.whole_history)."""
    rows = [
        (f"u{u}", item, kind, ts, None, DATE, None, ("log", 0, i))
        for u, events in enumerate(users)
        for i, (item, kind, ts) in enumerate(events)
    ]
    schema = ", ".join(
        f"{c} {'struct<file:string,block:bigint,row:bigint>' if c == INGEST_ORDER else 'string'}" for c in CANONICAL
    )
    raw = spark.createDataFrame(rows, schema)
    assert CORRUPT in raw.columns
    items = spark.createDataFrame(VOCAB[["item_id", "item_idx"]])
    steps = sessionize.steps_of(sessionize.clean(raw, cfg, DATE, partitioned=True))
    windows = sessionize.windows_of(steps, items, cfg.sessionize)
    infer = sequences.with_older_windows(sequences.inference_rows(windows), windows, cfg.sessionize.max_windows)
    columns = ["user_id", "item_idx", "event_type_idx", "time_gap_bucket", "session_idx", "n_events", "n_steps"]
    table = infer.select(*columns, "history_idx", "older")._collect_as_arrow()
    return pa.Table.from_batches(table).combine_chunks().to_batches()[0] if table else None


def _answers_of_nightly(spark, batch, model, embedder, users: list[str]) -> dict[str, tuple]:
    """user -> (embedding, explanation, recommendations) as the embed stage publishes them: the
    batch function for users with rows, the fallback for the others (listed users)."""
    out = {}
    if batch is not None:
        for r in inference.embed_batch(batch, embedder).to_pylist():
            out[r["user_id"]] = (
                r["embedding"],
                [(t["item_id"], t["weight"]) for t in r["top_items"]],
                [(t["item_id"], t["score"]) for t in r["recommendations"]],
                [(t["item_id"], t["interest"], list(t["because"])) for t in r["reasons"]],
            )
    listed = spark.createDataFrame([(u,) for u in users], "user_id string")
    embedded = spark.createDataFrame([(u,) for u in out] or [("",)], "user_id string")
    prior = inference.popularity_prior(model, VOCAB)
    recs = inference.popular_items(model, VOCAB, embedder.top_n)
    for r in inference.fallback_users(spark, listed, embedded, prior, model.version, recs).collect():
        out[r["user_id"]] = (r["embedding"], [], [(t["item_id"], t["score"]) for t in r["recommendations"]], [])
    return out


def _graph_answer(served: dict[str, np.ndarray], row: int) -> tuple:
    """Row ``row`` of the SavedModel's outputs in the form of ``_answers_of_nightly``."""
    return (
        served["embedding"][row],
        [(i.decode(), float(w)) for i, w in zip(served["top_items"][row], served["top_weights"][row]) if i],
        [(i.decode(), float(s)) for i, s in zip(served["item_ids"][row], served["scores"][row]) if i],
        [
            (i.decode(), int(k), [x.decode() for x in why if x])
            for i, k, why in zip(served["item_ids"][row], served["interest"][row], served["because"][row])
            if k >= 0
        ],
    )


def _same(got: tuple, want: tuple, what: str) -> None:
    np.testing.assert_allclose(got[0], want[0], atol=2e-5, err_msg=f"{what}: embedding")
    for part, name in ((1, "explanation"), (2, "recommendations")):
        assert [i for i, _ in got[part]] == [i for i, _ in want[part]], f"{what}: {name}"
        np.testing.assert_allclose([w for _, w in got[part]], [w for _, w in want[part]], atol=2e-5, err_msg=what)
    assert got[3] == want[3], f"{what}: reasons"  # each item's interest and the history behind it


@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking re-runs Spark for minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(users=log)
def test_the_nightly_the_recommender_and_the_saved_model_agree_on_any_log(spark, readers, users):
    cfg, by_encoder = readers
    names = [f"u{u}" for u in range(len(users))]
    batch = _nightly_rows(spark, cfg, users)
    width = max(1, max(len(u) for u in users))
    request = {k: np.full((len(users), width), "", dtype=object) for k in ("item_id", "event_type", "ts")}
    for row, events in enumerate(users):
        for col, (item, kind, ts) in enumerate(events):
            request["item_id"][row, col], request["event_type"][row, col], request["ts"][row, col] = item, kind, ts
    for kind, (model, embedder, recommender, signature) in by_encoder.items():
        nightly = _answers_of_nightly(spark, batch, model, embedder, names)
        served = signature(**{k: tf.constant(v.astype(str)) for k, v in request.items()})
        served = {k: v.numpy() for k, v in served.items()}
        for row, (user, events) in enumerate(zip(names, users)):
            frame = pd.DataFrame(events, columns=["item_id", "event_type", "ts"])
            rec = recommender.recommend(user, frame, embedder.top_n)
            answer = (rec.embedding, rec.explanation, rec.items, rec.reasons)
            _same(answer, nightly[user], f"{kind}, {user}: the Recommender against the nightly")
            _same(_graph_answer(served, row), nightly[user], f"{kind}, {user}: the SavedModel against the nightly")
            assert bool(served["is_cold_start"][row]) == rec.is_cold_start, user
            assert int(served["n_steps"][row]) == rec.steps, user


def test_whole_history_reads_the_steps_before_the_latest_window(spark, readers):
    """A user with 14 steps over two days (the latest window holds 6) and one with 4: with embed.whole_history
    the memory encoder's answer for the first changes, since 8 older steps write its slots, and
    the nightly, the Recommender and the SavedModel still agree; the short user's is unchanged."""
    cfg, by_encoder = readers
    model, embedder, recommender, signature = by_encoder["memory+whole"]
    users = [
        [(item, "view", _time_text(7200 * n, 0, 0)) for n, item in enumerate("efefefefabcdab")],
        [(item, "click", _time_text(4800 * n, 0, 3)) for n, item in enumerate("abca")],
    ]
    names = ["u0", "u1"]
    batch = _nightly_rows(spark, cfg, users)
    assert batch.column("older").to_pylist()[1] is None and len(batch.column("older")[0]) == 2  # windows 1 and 2
    whole = _answers_of_nightly(spark, batch, model, embedder, names)
    latest = _answers_of_nightly(spark, batch, model, dataclasses.replace(embedder, windows=1), names)
    assert np.abs(np.asarray(whole["u0"][0]) - np.asarray(latest["u0"][0])).max() > 1e-3
    _same(whole["u1"], latest["u1"], "a history inside the window")
    request = {k: np.full((2, 14), "", dtype=object) for k in ("item_id", "event_type", "ts")}
    for row, events in enumerate(users):
        for col, event in enumerate(events):
            for key, value in zip(("item_id", "event_type", "ts"), event):
                request[key][row, col] = value
    served = {k: v.numpy() for k, v in signature(**{k: tf.constant(v.astype(str)) for k, v in request.items()}).items()}
    for row, (user, events) in enumerate(zip(names, users)):
        rec = recommender.recommend(user, pd.DataFrame(events, columns=["item_id", "event_type", "ts"]), 4)
        _same((rec.embedding, rec.explanation, rec.items, rec.reasons), whole[user], f"{user}: Recommender")
        _same(_graph_answer(served, row), whole[user], f"{user}: SavedModel")


@pytest.mark.parametrize("policy", ["exclude", "cap"])
def test_a_bot_is_dropped_at_request_time_as_the_nightly_drops_it(spark, readers, tmp_path, policy):
    """sessionize.bot_max_events_per_day at request time: a user with 12 events on one day and 2 on
    the next, against a limit of 5. ``exclude``: the nightly rejects all 14 and the user gets the
    fallback; ``cap``: it keeps each day's first 5. The Recommender (which counts the rejects) and
    the SavedModel answer as the nightly's rows, and a user under the limit is untouched."""
    base, by_encoder = readers
    cfg = dataclasses.replace(
        base, sessionize=dataclasses.replace(base.sessionize, bot_max_events_per_day=5, bot_policy=policy)
    )
    model, embedder, served_before, _ = by_encoder["self_attention"]
    bot = [("abcdef"[n % 6], "view", _time_text(60 * n, 0, 0)) for n in range(12)]
    bot += [("a", "click", _time_text(90000, 0, 0)), ("c", "view", _time_text(90060, 0, 1))]
    users = [bot, [("b", "view", _time_text(0, 0, 0)), ("c", "cart", _time_text(120, 0, 3))]]
    names = ["u0", "u1"]
    nightly = _answers_of_nightly(spark, _nightly_rows(spark, cfg, users), model, embedder, names)
    table = inference.scoring_table(model, VOCAB)
    folder = str(tmp_path / "serving" / "1")
    assert export_serving(model.encoder, catalogue(model, VOCAB, table, cfg), serving_rules(cfg), model.version, folder)
    signature = tf.saved_model.load(folder).signatures[SIGNATURE]
    recommender = Recommender(cfg, model, VOCAB, served_before.index)
    request = {k: np.full((2, len(bot)), "", dtype=object) for k in ("item_id", "event_type", "ts")}
    for row, events in enumerate(users):
        for col, event in enumerate(events):
            for key, value in zip(("item_id", "event_type", "ts"), event):
                request[key][row, col] = value
    served = {k: v.numpy() for k, v in signature(**{k: tf.constant(v.astype(str)) for k, v in request.items()}).items()}
    steps = {"exclude": 0, "cap": 7}[policy]  # 5 + 2 steps (no item repeats in a row)
    for row, (user, events) in enumerate(zip(names, users)):
        rec = recommender.recommend(user, pd.DataFrame(events, columns=["item_id", "event_type", "ts"]), 4)
        _same((rec.embedding, rec.explanation, rec.items, rec.reasons), nightly[user], f"{policy}, {user}: Recommender")
        _same(_graph_answer(served, row), nightly[user], f"{policy}, {user}: SavedModel")
        assert int(served["n_steps"][row]) == rec.steps == (steps if user == "u0" else 2)
    bot_rec = recommender.recommend("u0", pd.DataFrame(bot, columns=["item_id", "event_type", "ts"]), 4)
    assert bot_rec.rejected == ({"bot_user": 14} if policy == "exclude" else {"bot_cap": 7})
    assert (
        recommender.recommend("u1", pd.DataFrame(users[1], columns=["item_id", "event_type", "ts"]), 4).rejected == {}
    )
