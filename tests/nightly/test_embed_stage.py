"""The embed stage: gates before publishing, cold-start users, inputs that do not fit the model, clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from embed_runs import (
    FAST,
    cfg_for,
    database_sets,
    embed_job,
    finish,
    table_rows,
)

from interest.models.encoders import build_encoder
from interest.models.export import (
    load_model,
    save_model,
)
from interest.nightly import run_nightly
from interest.serving.embed import EmbedInputError, RetentionError, run_embed
from interest.serving.index import IndexNotFoundError
from interest.serving.publish import PublishGateError, Table
from interest.serving.recommend import Recommender, RecommendInputError

from conftest import DATE, make_config


@pytest.fixture(scope="module")
def embedded(spark, planted):
    """A published dt=DATE partition (database 'embed_gates') and the model behind it."""
    cfg = cfg_for(planted, "embed_gates", "embed.cold_start_min_steps=8")
    report = run_nightly(spark, cfg, DATE)
    return cfg, report


@pytest.mark.slow
def test_a_nan_blocks_the_publish_and_says_why(spark, embedded, tmp_path, fault_matrix):
    cfg, report = embedded
    before = Table(spark, cfg.embed.database, cfg.embed.table).version()
    rows_before = table_rows(spark, cfg, DATE)
    model = load_model(report.model.path)
    weights = model.encoder.get_weights()
    table_index = next(i for i, w in enumerate(model.encoder.weights) if "items" in w.path)
    weights[table_index][2:6] = np.nan  # the most popular items: many users have them
    model.encoder.set_weights(weights)
    broken = save_model(model.encoder, model.vocab, model.config, model.metrics, str(tmp_path), "broken")
    with pytest.raises(
        PublishGateError,
        match=r"user_interest_embeddings dt=2026-11-26: "
        r"finite_embedding: \d+ row\(s\) with NaN",
    ) as info:
        run_embed(spark, cfg, DATE, broken)
    assert info.value.report.gates["finite_embedding"].ok is False
    assert Table(spark, cfg.embed.database, cfg.embed.table).version() == before  # no commit
    pd.testing.assert_frame_equal(table_rows(spark, cfg, DATE), rows_before)
    staged = Path(cfg.paths.warehouse) / f"{cfg.embed.database}.db" / cfg.embed.table / "_staging"
    assert not list(staged.rglob("*.parquet"))  # the rejected run left nothing staged
    fault_matrix("a model that writes NaN", runs=1)


@pytest.mark.slow
def test_cold_start_users_and_fallback_for_known_users_without_events(spark, embedded, tmp_path):
    cfg, report = embedded
    known = tmp_path / "users"
    infer = pd.read_parquet(f"{cfg.paths.sequences}/dt={DATE}/infer")
    extra = ["never-seen-1", "never-seen-2"]
    pd.DataFrame({"user_id": [*infer.user_id[:5], *extra]}).to_parquet(known.with_suffix(".parquet"))
    out = run_embed(
        spark,
        make_config(
            cfg.paths.root,
            *FAST,
            f"embed.database={cfg.embed.database}",
            f"embed.users_table={known.with_suffix('.parquet')}",
            "embed.cold_start_min_steps=8",
        ),
        DATE,
        report.model.path,
    )
    assert out.fallback == 2 and out.rows == len(infer) + 2
    rows = table_rows(spark, cfg, DATE).set_index("user_id")
    for user in extra:
        assert rows.is_cold_start[user] and rows.n_events[user] == 0 and len(rows.top_items[user]) == 0
        assert np.linalg.norm(rows.embedding[user]) == pytest.approx(1.0, abs=1e-5)
    few = infer[infer.n_steps < 8].user_id
    assert len(few) and rows.is_cold_start[few].all()  # short histories: embedded, and flagged
    assert not rows.is_cold_start[infer[infer.n_steps >= 8].user_id].any()
    recs = table_rows(spark, cfg, DATE, cfg.embed.recommendations_table).set_index("user_id")
    popular = pd.read_parquet(f"{cfg.paths.vocab}/dt={DATE}").nlargest(3, "count").item_id.tolist()
    assert [r["item_id"] for r in recs.recommendations["never-seen-1"][:3]] == popular
    user = infer.user_id.iloc[0]
    hist_vocab = pd.read_parquet(f"{cfg.paths.vocab}/dt={DATE}").set_index("item_idx").item_id
    seen = set(hist_vocab.reindex(infer.set_index("user_id").history_idx[user]).dropna())
    assert not seen & {r["item_id"] for r in recs.recommendations[user]}  # only new items


def _tables_of(spark, cfg, date: str) -> dict[str, pd.DataFrame]:
    """The three published tables' rows of ``date``, exactly."""
    e = cfg.embed
    return {t: table_rows(spark, cfg, date, t) for t in (e.table, e.item_table, e.recommendations_table)}


def _same_tables(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    for name, frame in want.items():
        pd.testing.assert_frame_equal(got[name], frame, obj=name)


def test_a_backfill_older_than_retention_is_refused_before_anything_is_written(spark, embedded, fault_matrix):
    """With retention keeping one date, dt=26 is kept: a run for dt=20 would publish it and then
    delete it in its own retention, reporting success. It is refused first, by the embed stage
    and by the nightly, and the tables are as they were."""
    cfg, report = embedded
    table = Table(spark, cfg.embed.database, cfg.embed.table)
    before, version, dates = _tables_of(spark, cfg, DATE), table.version(), table.dates()
    short = make_config(cfg.paths.root, *FAST, f"embed.database={cfg.embed.database}", "embed.retention_days=1")
    message = r"dt=2026-11-20 is older than the 1 newest date\(s\) user_interest_embeddings keeps .* dt=2026-11-26"
    with pytest.raises(RetentionError, match=message):
        run_embed(spark, short, "2026-11-20", report.model.path)
    with pytest.raises(RetentionError, match=message):
        run_nightly(spark, short, "2026-11-20")
    assert table.version() == version and table.dates() == dates
    _same_tables(_tables_of(spark, cfg, DATE), before)
    fault_matrix("a backfill older than retention", runs=2, rows_checked=sum(map(len, before.values())))


@pytest.mark.slow
def test_a_models_folder_that_cannot_be_written_stops_the_night_before_it_publishes(
    spark, embedded, tmp_path, fault_matrix
):
    """The SavedModel and the index are written before the tables are published: where the
    models folder cannot take them, the night stops with nothing published; once it can, the
    same night publishes the rows a clean run published."""
    import shutil

    cfg, report = embedded
    table = Table(spark, cfg.embed.database, cfg.embed.table)
    before, version = _tables_of(spark, cfg, DATE), table.version()
    encoder_dir = tmp_path / "models" / "self_attention"
    model_dir = shutil.copytree(report.model.path, encoder_dir / Path(report.model.path).name)
    (encoder_dir / "_serving").write_text("a file where the exports' folder should be\n")
    with pytest.raises(Exception, match="_serving"):
        run_embed(spark, cfg, DATE, str(model_dir))
    assert table.version() == version  # nothing committed
    _same_tables(_tables_of(spark, cfg, DATE), before)
    assert not (encoder_dir / "_index" / Path(model_dir).name / f"dt={DATE}").exists()  # no index in place
    (encoder_dir / "_serving").unlink()
    again = run_embed(spark, cfg, DATE, str(model_dir))
    assert Path(again.saved_model, "saved_model.pb").is_file() and Path(again.index, "index.json").is_file()
    after = _tables_of(spark, cfg, DATE)
    run_embed(spark, cfg, DATE, report.model.path)  # a clean run of the same model (its folder's name)
    _same_tables(after, _tables_of(spark, cfg, DATE))
    fault_matrix("a models folder that cannot be written", runs=2, rows_checked=2 * sum(map(len, before.values())))


def test_sequences_indexed_with_another_vocabulary_are_refused(spark, embedded, tmp_path, fault_matrix):
    cfg, report = embedded
    model = load_model(report.model.path)
    shuffled = model.vocab.copy()
    shuffled["item_id"] = shuffled["item_id"].iloc[::-1].to_numpy()
    other = save_model(model.encoder, shuffled, model.config, model.metrics, str(tmp_path), "other")
    with pytest.raises(EmbedInputError, match="index items differently .* --base-vocab"):
        run_embed(spark, cfg, DATE, other)
    with pytest.raises(EmbedInputError, match="no inference rows for 2020-01-01"):
        run_embed(spark, cfg, "2020-01-01", report.model.path)
    vocab = Path(cfg.paths.vocab) / f"dt={DATE}"
    vocab.rename(vocab.with_name("moved"))
    try:
        with pytest.raises(EmbedInputError, match=f"no vocabulary for {DATE} at .*dt={DATE}: run jobs/sessionize.py"):
            run_embed(spark, cfg, DATE, report.model.path)
    finally:
        vocab.with_name("moved").rename(vocab)
    args = {**model.encoder.args, "max_len": model.encoder.args["max_len"] + 5}
    longer = save_model(
        build_encoder(model.encoder.kind, **args), model.vocab, model.config, model.metrics, str(tmp_path), "longer"
    )
    with pytest.raises(
        EmbedInputError,
        match=r"hold 30 steps per row but model .*longer was trained with "
        r"max_len 35: sessionize 2026-11-26 with --set sessionize.max_len=35",
    ):
        run_embed(spark, cfg, DATE, longer)
    assert model.encoder.args["n_event_types"] > 2  # the planted funnel has more event types
    fewer = save_model(
        build_encoder(model.encoder.kind, **{**model.encoder.args, "n_event_types": 2}),
        model.vocab,
        model.config,
        model.metrics,
        str(tmp_path),
        "fewer",
    )
    with pytest.raises(
        EmbedInputError, match=r"use event_type_idx up to \d+ but model .*fewer knows 2: sessionize.event_types"
    ):
        run_embed(spark, cfg, DATE, fewer)
    fault_matrix("a model and the data that disagree", runs=5)


def test_the_model_is_loaded_once_per_python_process(planted_model, monkeypatch):
    import interest.models.export as export
    from interest.serving import inference

    calls: list[str] = []
    real = export.load_model
    monkeypatch.setattr(export, "load_model", lambda path: calls.append(path) or real(path))
    monkeypatch.setattr(inference, "_MODELS", {})
    first = inference._model(str(planted_model))
    for _ in range(5):  # every later Arrow batch in this executor process
        assert inference._model(str(planted_model)) is first
    assert calls == [str(planted_model)]


def test_an_unreachable_namenode_or_unwritable_root_is_one_clear_line(spark, tmp_path, fault_matrix):
    import socket

    from interest import storage
    from interest.errors import RetryableError
    from interest.storage import StorageError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = f"hdfs://127.0.0.1:{port}/interest"
    storage.configure(port)
    try:
        with pytest.raises(StorageError, match=rf"^{root} is not writable: .*unreachable") as err:
            run_nightly(spark, make_config(tmp_path, f"paths.root={root}"), DATE)
        assert "\n" not in str(err.value)
        assert isinstance(err.value, RetryableError)  # jobs exit 75: a scheduler may retry it
    finally:
        storage.configure(9870)
    with pytest.raises(StorageError, match=r"^/proc/interest-root is not writable") as err:
        run_nightly(spark, make_config(tmp_path, "paths.root=/proc/interest-root"), DATE)
    assert not isinstance(err.value, RetryableError)  # exit 2: it needs a person
    fault_matrix("storage unreachable or not writable", runs=2)


def test_a_request_with_the_nights_events_gives_the_nights_rows_and_says_what_is_wrong(spark, embedded, planted):
    """A user's raw events encoded at request time, by the model, rules and index of the night:
    the embedding, explanation and cold-start flag of the user's row, and the recommendations
    table's items and scores. No events: the fallback's popular items. Bad requests: one line."""
    cfg, _ = embedded
    recommender = Recommender.load(cfg, DATE)
    raw, users, recs, clean = _requests(spark, cfg, planted)
    sample = clean[:6] + [u for u in clean if users.is_cold_start[u]][:2]
    assert len(sample) == 8, len(clean)
    for user in sample:
        got = recommender.recommend(user, raw[raw.user_id == user], cfg.embed.top_n_recommendations)
        np.testing.assert_allclose(got.embedding, users.embedding[user], rtol=1e-5, atol=1e-5)
        assert got.is_cold_start == users.is_cold_start[user] and got.model_version == users.model_version[user]
        assert [i for i, _ in got.explanation] == [t["item_id"] for t in users.top_items[user]], user
        weights = [t["weight"] for t in users.top_items[user]]
        np.testing.assert_allclose([w for _, w in got.explanation], weights, atol=1e-5)
        want = recs.recommendations[user]
        assert [i for i, _ in got.items] == [r["item_id"] for r in want], user
        np.testing.assert_allclose([s for _, s in got.items], [r["score"] for r in want], rtol=1e-5, atol=1e-5)
    none = recommender.recommend("new-user", raw.iloc[:0], 3)
    vocab = pd.read_parquet(f"{cfg.paths.vocab}/dt={DATE}")
    assert none.is_cold_start and [i for i, _ in none.items] == vocab.nlargest(3, "count").item_id.tolist()
    fresh = recommender.recommend("u", pd.DataFrame({"item_id": ["not-an-item"], "event_type": ["view"], "ts": [DATE]}))
    assert fresh.unknown_items == ["not-an-item"] and len(fresh.items) == 10
    liked = recommender.recommend("u", pd.DataFrame({"item_id": ["a"], "event_type": ["like"], "ts": [DATE]}), 3)
    assert liked.rejected == {"unknown_event_type": 1} and liked.items == none.items  # the nightly quarantines it
    with pytest.raises(RecommendInputError, match=r"missing \['ts'\]"):
        recommender.recommend("u", pd.DataFrame({"item_id": ["a"], "event_type": ["view"]}))
    with pytest.raises(IndexNotFoundError, match="no item index at"):
        Recommender.load(cfg, "2026-11-27")  # the model of the 26th, which no night of the 27th indexed


@pytest.mark.slow
def test_above_the_threshold_the_nights_top_n_comes_through_its_quantised_index(
    spark, embedded, planted, tmp_path, monkeypatch
):
    """With the catalogue above ``EXACT_MAX_ITEMS`` the embed stage builds the quantised index
    first and the executors rank through it (broadcast as faiss bytes): here its candidates cover
    the planted catalogue, so every user's list and scores are the exact night's, seen items left
    out; the saved index is the quantised one, with the model's version."""
    import shutil

    from interest.serving import index as item_index

    cfg, report = embedded
    model_dir = shutil.copytree(
        report.model.path, tmp_path / "models" / "self_attention" / Path(report.model.path).name
    )
    pq_cfg = make_config(cfg.paths.root, *FAST, *database_sets(planted, "embed_pq"), "embed.cold_start_min_steps=8")
    monkeypatch.setattr(item_index, "EXACT_MAX_ITEMS", 50)
    out = run_embed(spark, pq_cfg, DATE, str(model_dir))
    assert out.index_kind == "pq" and out.rows == report.embed.rows
    saved = item_index.ItemIndex.load(out.index)
    assert saved.meta.kind == "pq" and saved.meta.model_version == out.model_version == report.model.version
    # the night's exact lists (other tests of this module may add fallback users to that table)
    exact = table_rows(spark, cfg, DATE, cfg.embed.recommendations_table).set_index("user_id")
    quantised = table_rows(spark, pq_cfg, DATE, cfg.embed.recommendations_table)
    assert len(quantised) == report.embed.rows and set(quantised.user_id) <= set(exact.index)
    for got, want in zip(quantised.recommendations, exact.recommendations[quantised.user_id]):
        assert [r["item_id"] for r in got] == [r["item_id"] for r in want]
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_whole_history_publishes_what_memory_reads_from_every_stored_window(spark, planted, tmp_path):
    """embed.whole_history: the stage joins each user's older stored windows to the inference rows
    and the memory encoder reads them all. Every published embedding and explanation equals
    ``read_windows`` over the windows as evaluation reads them (``data.files.stored_windows``),
    and users longer than the window get another embedding than the latest window alone gives."""
    from interest.data.files import load_rows, read_vocab, stored_windows
    from interest.etl.sessionize import run_sessionize
    from interest.evaluation.evaluate import published_lists
    from interest.models.retrieval import Retrieval
    from interest.scoring.interests import l2_normalize
    from interest.scoring.topn import top_weighted_batch

    sets = [*database_sets(planted, "embed_whole"), "embed.table_format=parquet", "sessionize.max_windows=3"]
    cfg = make_config(tmp_path, *FAST, *sets, "model.encoder=memory", "embed.whole_history=true")
    run_sessionize(spark, cfg, DATE)
    vocab = read_vocab(f"{cfg.paths.vocab}/dt={DATE}")
    encoder = build_encoder("memory", vocab_size=int(vocab.item_idx.max()) + 1, max_len=30, dim=16, memory_slots=3)
    model_dir = save_model(encoder, vocab, {"date": DATE}, {}, str(tmp_path / "models"), f"{DATE}_whole")
    out = run_embed(spark, cfg, DATE, model_dir)
    rows = table_rows(spark, cfg, DATE).set_index("user_id")
    assert out.rows == len(rows) > 0
    users = np.array(sorted(rows.index))
    users = users[np.isin(users, pd.read_parquet(f"{cfg.paths.sequences}/dt={DATE}/train").user_id)]
    assert len(users) > 0.9 * len(rows)  # the users with a training row (3 steps or more)
    windows, fresh = stored_windows(f"{cfg.paths.sequences}/dt={DATE}/train", users)  # [N, C, L]
    long = (windows["item_idx"][:, :-1] > 0).any(axis=(1, 2))  # [N] users with an older window
    assert windows["item_idx"].shape[1] == 3 and long.sum() >= 10, long.sum()
    want = encoder.read_windows(windows, fresh)
    np.testing.assert_allclose(np.stack(rows.embedding[users]), l2_normalize(np.asarray(want["user"])), atol=1e-5)
    items, weights, offsets = top_weighted_batch(
        windows["item_idx"].reshape(len(users), -1), np.asarray(want["attention"]), cfg.embed.top_items
    )
    by_idx = vocab.set_index("item_idx").item_id
    for n, user in enumerate(users):
        published = rows.top_items[user]
        assert [t["item_id"] for t in published] == list(by_idx[items[offsets[n] : offsets[n + 1]]]), user
    latest = encoder({f: windows[f][:, -1] for f in windows}, training=False, last_only=True)  # the latest window alone
    moved = np.abs(l2_normalize(np.asarray(latest["user"])) - np.stack(rows.embedding[users])).max(axis=1)
    assert (moved[long] > 1e-3).all() and (moved[~long] < 1e-5).all()
    # the recommendations, as the multi-target benchmark scores them (evaluation's own reader)
    infer = load_rows(f"{cfg.paths.sequences}/dt={DATE}/infer")
    picked = np.isin(infer["user_id"], users)
    lists, _ = published_lists(
        encoder,
        np.asarray(encoder.item_table),
        {k: v[picked] for k, v in infer.items()},
        cfg.embed.top_n_recommendations,
        Retrieval.of(cfg.embed),
        windows=(windows, fresh),
    )
    recs = table_rows(spark, cfg, DATE, cfg.embed.recommendations_table).set_index("user_id")
    for n, user in enumerate(users):
        assert [r["item_id"] for r in recs.recommendations[user]] == list(by_idx[lists[n]]), user


def _requests(spark, cfg, planted: Path):
    """The raw log, the night's user rows and recommendations, and the users whose every raw row
    the night kept (no duplicate, malformed or late row to reject)."""
    raw = pd.read_parquet(planted / "raw" / "events", columns=["user_id", "item_id", "event_type", "ts"])
    users = table_rows(spark, cfg, DATE).set_index("user_id")
    recs = table_rows(spark, cfg, DATE, cfg.embed.recommendations_table).set_index("user_id")
    counts = raw.groupby("user_id").size()
    return raw, users, recs, [u for u in users.index if counts.get(u) == users.n_events[u]]


@pytest.mark.slow
def test_the_recommend_job_prints_the_nights_items_and_fails_in_one_line(spark, embedded, planted, tmp_path):
    """jobs/recommend.py reads the user's events from the log as the night kept them: its items are
    the night's recommendations; with a file of later events it answers from them too; a date
    without an index is one line and exit 2."""
    cfg, _ = embedded
    _, users, recs, clean = _requests(spark, cfg, planted)
    user = clean[0]
    sets, root = [*database_sets(planted, "embed_gates"), "embed.cold_start_min_steps=8"], cfg.paths.root
    out = finish(embed_job(["jobs/recommend.py", "--date", DATE, "--user", user, "-k", "5"], root, *sets))
    night = _printed(out)
    assert night[0::2] == [r["item_id"] for r in recs.recommendations[user][:5]], out[-2000:]
    assert f"user {user}: {users.n_events[user]} event(s) in the log, 0 more given" in out
    steps = int(re.search(r"; (\d+) step\(s\)", out).group(1))
    # today's two events, once in ISO text and once as the log's other forms: epoch seconds,
    # an event type in capitals with spaces, an id with spaces (the nightly reads them alike)
    forms = {
        "iso": {
            "item_id": ["i000001", "i000002"],
            "event_type": "view",
            "ts": ["2026-11-27 09:00:00", "2026-11-27 09:05:00"],
        },
        "raw": {"item_id": [" i000001", "i000002 "], "event_type": " View", "ts": [1795770000, 1795770300]},
    }
    answers = {}
    for name, today in forms.items():
        later = tmp_path / f"today-{name}.csv"
        pd.DataFrame(today).to_csv(later, index=False)
        job = ["jobs/recommend.py", "--date", DATE, "--user", user, "-k", "5", "--events", str(later)]
        out = finish(embed_job(job, root, *sets))
        assert "2 more given" in out and f"; {steps + 2} step(s)" in out, out[-2000:]  # both read as the latest steps
        answers[name] = _printed(out)
    assert answers["raw"] == answers["iso"]
    assert answers["iso"] != night and not {"i000001", "i000002"} & set(answers["iso"][0::2])  # seen now
    out = finish(embed_job(["jobs/recommend.py", "--date", "2026-11-27", "--user", user], root, *sets), code=2)
    assert "error [recommend dt=2026-11-27]: no item index at" in out, out[-2000:]


def _printed(out: str) -> list[str]:
    """The recommend job's printed items and scores, in order."""
    return out.split("recommended (item, score):")[1].split("because of")[0].split()


SERVE = """
import json, sys
import numpy as np
import tensorflow as tf

signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
request = np.load(sys.argv[2])
out = signature(**{name: tf.constant(request[name]) for name in ("item_id", "event_type", "ts")})
loaded = sorted(m for m in sys.modules if m == "interest" or m.startswith("interest."))
decoded = {k: v.numpy().astype(bytes).astype(str) if v.dtype == tf.string else v.numpy() for k, v in out.items()}
print(json.dumps({"loaded": loaded, **{k: v.tolist() for k, v in decoded.items()}}))
"""


@pytest.mark.slow
def test_the_saved_model_answers_as_the_published_tables_in_a_process_without_interest(
    spark, embedded, planted, tmp_path
):
    """The night's SavedModel, in the layout TensorFlow Serving loads, fed the raw events of users
    whose log the night kept whole, in a process that imports TensorFlow and not ``interest``:
    its embeddings, explanations (items and weights), recommendations (items and scores), counts
    and cold-start flags are the published rows. An unknown item id is a step the model reads as
    the unknown item and never names; ``saved_model_cli`` lists the signature."""
    cfg, report = embedded
    raw, users, recs, clean = _requests(spark, cfg, planted)
    folder = Path(report.embed.saved_model)
    assert folder.parent == Path(cfg.paths.resolve("models"), "self_attention", "_serving") and folder.name.isdigit()
    assert (folder / "saved_model.pb").is_file()
    assert (folder / "assets.extra" / "model_version").read_text().strip() == report.model.version
    picked = clean[:12]
    assert users.is_cold_start[picked].any() and not users.is_cold_start[picked].all()
    events = [raw[raw.user_id == u] for u in picked]
    # one more request: the last user's events and an item no vocabulary has, at the end
    later = pd.to_datetime(events[-1].ts, utc=True, format="mixed").max() + pd.Timedelta(hours=1)
    odd = events[-1].iloc[-1:].assign(item_id="never-seen-item", ts=later.isoformat())
    events.append(pd.concat([events[-1], odd]))
    width = max(len(e) for e in events)
    item_id = np.full((len(events), width), "", dtype=object)
    event_type = np.full((len(events), width), "", dtype=object)
    ts = np.full((len(events), width), "", dtype=object)
    for row, e in enumerate(events):  # the log's own text, times included
        item_id[row, : len(e)], event_type[row, : len(e)], ts[row, : len(e)] = e.item_id, e.event_type, e.ts.astype(str)
    request = tmp_path / "request.npz"
    np.savez(request, item_id=item_id.astype(str), event_type=event_type.astype(str), ts=ts.astype(str))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(folder), str(request)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    for row, user in enumerate(picked):
        np.testing.assert_allclose(out["embedding"][row], users.embedding[user], atol=1e-5)
        published = [(t["item_id"], t["weight"]) for t in users.top_items[user]]
        got = [(i, w) for i, w in zip(out["top_items"][row], out["top_weights"][row]) if i]
        assert [i for i, _ in got] == [i for i, _ in published], user
        np.testing.assert_allclose([w for _, w in got], [w for _, w in published], atol=1e-5)
        items = [(r["item_id"], r["score"]) for r in recs.recommendations[user]]
        assert out["item_ids"][row] == [i for i, _ in items], user
        np.testing.assert_allclose(out["scores"][row], [s for _, s in items], atol=1e-5)
        assert out["is_cold_start"][row] == users.is_cold_start[user] and out["n_events"][row] == users.n_events[user]
        assert out["model_version"][row] == report.model.version
    assert out["n_steps"][-1] == out["n_steps"][-2] + 1 and "never-seen-item" not in out["top_items"][-1]
    cli = subprocess.run(
        [
            str(Path(sys.executable).parent / "saved_model_cli"),
            "show",
            "--dir",
            str(folder),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    for name in (
        "inputs['item_id']",
        "inputs['event_type']",
        "inputs['ts']",
        "outputs['embedding']",
        "outputs['item_ids']",
        "outputs['scores']",
        "outputs['top_items']",
        "outputs['top_weights']",
    ):
        assert name in cli.stdout, cli.stdout
