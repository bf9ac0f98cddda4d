"""The generator: deterministic, the planted structure is really there, dirt is counted exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interest.config import GeneratorConfig
from interest.synth import build_world, expected_events_per_user_day, generate, sized_for_events, users_for_events


def small(**kw) -> GeneratorConfig:
    base = dict(users=400, items=300, categories=10, days=5, bot_share=0.01)
    return GeneratorConfig(**{**base, **kw})


def read_all(path):
    return (
        pd.read_parquet(path)
        .sort_values(["dt", "user_id", "ts", "item_id", "event_type"], na_position="first")
        .reset_index(drop=True)
    )


def test_same_seed_same_events_other_seed_different(tmp_path):
    a = generate(small(), str(tmp_path / "a"), str(tmp_path / "ta"), progress=False)
    b = generate(small(), str(tmp_path / "b"), str(tmp_path / "tb"), progress=False)
    c = generate(small(seed=8), str(tmp_path / "c"), str(tmp_path / "tc"), progress=False)
    assert a.events == b.events and a.counts == b.counts
    pd.testing.assert_frame_equal(read_all(tmp_path / "a"), read_all(tmp_path / "b"))
    assert a.events != c.events
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"dt=2026-11-{d}" for d in range(22, 27)]


def test_planted_counts_match_the_data(tmp_path):
    s = generate(
        small(bad_row_rate=0.02, duplicate_rate=0.02), str(tmp_path / "e"), str(tmp_path / "t"), progress=False
    )
    df = pd.read_parquet(tmp_path / "e")
    assert len(df) == s.events
    assert df.user_id.isna().sum() == s.counts["null_user_id"]
    assert df.item_id.isna().sum() == s.counts["null_item_id"]
    assert (df.ts == "not-a-timestamp").sum() == s.counts["unparseable_ts"]
    assert (df.event_type == "hover").sum() == s.counts["unknown_event_type"]
    assert (df.ts < "1970").sum() == s.counts["negative_ts"]
    assert ((df.ts > "2026-11-27") & (df.ts != "not-a-timestamp")).sum() == s.counts["future_ts"]
    # broken rows can coincide (two unparseable times of one user and item); the planted
    # duplicates are the repeats among rows that are otherwise valid
    valid = df.user_id.notna() & df.item_id.notna() & df.ts.between("1970", "2026-11-27") & (df.event_type != "hover")
    assert df[valid].duplicated(["user_id", "item_id", "event_type", "ts"]).sum() == s.counts["duplicates"]


def test_sessions_follow_planted_interests(tmp_path):
    cfg = small(interest_noise=0.0, bot_share=0.0, drift_per_day=0.0, bad_row_rate=0.0)
    generate(cfg, str(tmp_path / "e"), str(tmp_path / "t"), progress=False)
    df = pd.read_parquet(tmp_path / "e")
    truth = pd.read_parquet(tmp_path / "t" / "users.parquet").set_index("user_id")
    allowed = df.user_id.map(truth.interests_last.map(set))
    inside = [c in a for c, a in zip(df.category, allowed)]
    assert np.mean(inside) == 1.0  # no noise, no drift: every event is in a planted interest


def test_interests_drift_and_funnel_and_popularity():
    cfg = small(days=30, drift_per_day=0.05, users=2000)
    world = build_world(cfg)
    changed = (world.interests[0] != world.interests[-1]).any(axis=1).mean()
    assert 0.3 < changed < 0.99  # drift happens, but not to everyone
    pop = np.diff(np.r_[0, world.global_cum])
    assert np.sort(pop)[::-1][:30].sum() > 0.2  # a popularity skew a baseline can use
    assert users_for_events(cfg, 1_000_000) == pytest.approx(
        1_000_000 / (30 * (expected_events_per_user_day(cfg) + cfg.bot_share * cfg.bot_events_per_day)), rel=0.01
    )


def test_more_items_than_categories_required():
    with pytest.raises(ValueError, match="at least generator.categories"):
        build_world(small(items=5, categories=10))


def test_sized_for_events_reaches_about_that_many_events(tmp_path):
    """``jobs/generate.py --events N`` sizes a copy of the (frozen) config, not the config itself."""
    base = small()
    sized = sized_for_events(base, 20_000)
    assert base.users == 400 and sized.users == users_for_events(base, 20_000) and sized.items >= base.items
    made = generate(sized, str(tmp_path / "e"), str(tmp_path / "t"), progress=False)
    assert 0.8 * 20_000 <= made.events <= 1.2 * 20_000, made.events
