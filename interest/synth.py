"""A synthetic clickstream with planted, drifting user interests.

The model it plants (so tests can check that encoders recover it):
- items belong to categories; within a category item popularity is Zipf-like, and categories
  themselves are unequally popular (a popularity skew a baseline can exploit);
- each user holds 1-3 interests (categories) with weights; every day each interest is replaced
  by another category with probability ``drift_per_day`` (interest drift);
- a user has 0..n sessions a day (Poisson, scaled by a per-user activity level); a session
  follows one of the user's interests, with ``interest_noise`` of its views drawn from global
  popularity; views are seconds apart, sessions hours apart;
- a funnel: a view may lead to a click, then a cart, then a purchase of the same item;
- bots: a small share of users with thousands of random views a day;
- dirt: exact duplicate rows (collector retries) and bad rows of every rejection reason.

Generation is vectorised with numpy per (day, chunk of users) and seeded by
``(seed, day, chunk)``, so the same config writes the same events, and 50M events fit in memory
a chunk at a time. Every broken row is broken in exactly one way and the counts are kept, so a
test can check that each row lands where it should.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interest.config import GeneratorConfig
from interest.layout import partition

log = logging.getLogger(__name__)

FUNNEL = ("view", "click", "cart", "purchase")
FUNNEL_P = (0.25, 0.3, 0.5)  # P(click | view), P(cart | click), P(purchase | cart)
BAD_KINDS = ("null_user_id", "null_item_id", "unparseable_ts", "negative_ts", "future_ts", "unknown_event_type")
MALFORMED = "malformed_line"


def expected_events_per_user_day(cfg: GeneratorConfig) -> float:
    funnel = 1 + FUNNEL_P[0] * (1 + FUNNEL_P[1] * (1 + FUNNEL_P[2]))
    return cfg.sessions_per_day * cfg.mean_session_views * funnel


def users_for_events(cfg: GeneratorConfig, events: int) -> int:
    """How many users give about ``events`` events over ``cfg.days`` (bots included)."""
    per_user = cfg.days * expected_events_per_user_day(cfg)
    per_user += cfg.bot_share * cfg.days * cfg.bot_events_per_day
    return max(10, int(round(events / per_user)))


def sized_for_events(cfg: GeneratorConfig, events: int) -> GeneratorConfig:
    """``cfg`` with as many users as give about ``events`` events, and items to match (a fifth of
    the users, at most 100k, never fewer than configured)."""
    users = users_for_events(cfg, events)
    return replace(cfg, users=users, items=max(cfg.items, min(100_000, users // 5)))


@dataclass
class World:
    """The static part of the planted structure: items, categories, users, interest paths."""

    item_category: np.ndarray  # [I] category of each item
    category_cum: np.ndarray  # [I] cumulative within-category popularity, offset by category
    category_order: np.ndarray  # [I] item indices sorted by category (matches category_cum)
    global_cum: np.ndarray  # [I] cumulative global popularity
    activity: np.ndarray  # [U]
    is_bot: np.ndarray  # [U] bool
    interests: np.ndarray  # [days, U, 3] category per slot, -1 = no slot
    weights: np.ndarray  # [U, 3] slot weights (0 where no slot)


def build_world(cfg: GeneratorConfig) -> World:
    rng = np.random.default_rng([cfg.seed, 0])
    n_items, n_cat, n_users = cfg.items, cfg.categories, cfg.users
    if n_items < n_cat:
        raise ValueError(f"generator.items ({n_items}) must be at least generator.categories ({n_cat})")
    item_category = rng.permutation(np.arange(n_items) % n_cat)
    # Zipf popularity inside each category, random rank order.
    within = np.empty(n_items)
    for c in range(n_cat):
        members = np.flatnonzero(item_category == c)
        ranks = rng.permutation(len(members)) + 1
        within[members] = ranks**-cfg.popularity_exponent
    order = np.argsort(item_category, kind="stable")
    cum = np.empty(n_items)
    for c in range(n_cat):
        members = order[item_category[order] == c]
        w = within[members]
        cum[item_category[order] == c] = c + np.cumsum(w) / w.sum()
    cat_pop = (rng.permutation(n_cat) + 1.0) ** -0.8
    cat_pop /= cat_pop.sum()
    glob = within * cat_pop[item_category]
    global_cum = np.cumsum(glob) / glob.sum()

    n_slots = rng.choice([1, 2, 3], size=n_users, p=[0.4, 0.35, 0.25])
    slots = np.full((n_users, 3), -1, dtype=np.int32)
    for k in range(3):
        has = n_slots > k
        slots[has, k] = rng.choice(n_cat, size=int(has.sum()), p=cat_pop)
    weights = rng.dirichlet([2.0, 2.0, 2.0], size=n_users) * (slots >= 0)
    weights /= weights.sum(axis=1, keepdims=True)
    interests = np.empty((cfg.days, n_users, 3), dtype=np.int32)
    interests[0] = slots
    for d in range(1, cfg.days):
        prev = interests[d - 1]
        switch = (rng.random((n_users, 3)) < cfg.drift_per_day) & (prev >= 0)
        new = rng.choice(n_cat, size=(n_users, 3), p=cat_pop)
        interests[d] = np.where(switch, new, prev)
    activity = rng.lognormal(0.0, 0.7, size=n_users)
    activity /= activity.mean()
    is_bot = rng.random(n_users) < cfg.bot_share
    return World(item_category, cum, order, global_cum, activity, is_bot, interests, weights)


def _day_events(
    cfg: GeneratorConfig, world: World, day: int, users: np.ndarray, day_start: float
) -> dict[str, np.ndarray]:
    """Events of one day for a chunk of users, as column arrays (ts in epoch seconds)."""
    rng = np.random.default_rng([cfg.seed, 2, day, int(users[0]) if len(users) else 0])
    humans = users[~world.is_bot[users]]
    bots = users[world.is_bot[users]]
    # Sessions: Poisson per user, each in its own slot of the day so sessions rarely overlap.
    n_sess = rng.poisson(cfg.sessions_per_day * world.activity[humans])
    s_user = np.repeat(humans, n_sess)
    s_rank = np.concatenate([np.arange(n) for n in n_sess]) if len(n_sess) else np.zeros(0, int)
    s_count = np.repeat(n_sess, n_sess)
    slot = 86400.0 / np.maximum(s_count, 1)
    s_start = day_start + s_rank * slot + rng.random(len(s_user)) * slot * 0.8
    w = world.weights[s_user]
    choice = (rng.random(len(s_user))[:, None] > np.cumsum(w, axis=1)).sum(axis=1)
    choice = np.minimum(choice, 2)
    s_cat = world.interests[day][s_user, choice]
    # Views inside each session.
    n_views = rng.geometric(1.0 / cfg.mean_session_views, size=len(s_user))
    v_sess = np.repeat(np.arange(len(s_user)), n_views)
    gaps = rng.exponential(45.0, size=len(v_sess))
    first = np.r_[0, np.cumsum(n_views)[:-1]] if len(n_views) else np.zeros(0, int)
    gaps[first] = 0.0
    offs = np.cumsum(gaps)
    offs -= np.repeat(offs[first], n_views) if len(first) else 0.0
    v_ts = s_start[v_sess] + offs
    u = rng.random(len(v_sess))
    v_item = world.category_order[
        np.minimum(np.searchsorted(world.category_cum, s_cat[v_sess] + u), len(world.category_cum) - 1)
    ]
    noisy = rng.random(len(v_sess)) < cfg.interest_noise
    v_item[noisy] = np.searchsorted(world.global_cum, rng.random(int(noisy.sum())))
    v_item = np.minimum(v_item, len(world.item_category) - 1)
    cols_user = [s_user[v_sess]]
    cols_item = [v_item]
    cols_type = [np.zeros(len(v_sess), dtype=np.int8)]
    cols_ts = [v_ts]
    # Funnel: each stage follows the previous one a few seconds later.
    stage_ts, alive = v_ts, np.ones(len(v_sess), dtype=bool)
    for k, p in enumerate(FUNNEL_P, start=1):
        alive = alive & (rng.random(len(v_sess)) < p)
        stage_ts = stage_ts + rng.uniform(1.0, 8.0, size=len(v_sess))
        cols_user.append(s_user[v_sess][alive])
        cols_item.append(v_item[alive])
        cols_type.append(np.full(int(alive.sum()), k, dtype=np.int8))
        cols_ts.append(stage_ts[alive])
    # Bots: thousands of uniformly random views spread over the day.
    if len(bots):
        n_bot = rng.integers(int(cfg.bot_events_per_day * 0.8), int(cfg.bot_events_per_day * 1.2) + 1, size=len(bots))
        cols_user.append(np.repeat(bots, n_bot))
        cols_item.append(rng.integers(0, len(world.item_category), size=int(n_bot.sum())))
        cols_type.append(np.zeros(int(n_bot.sum()), dtype=np.int8))
        cols_ts.append(day_start + rng.random(int(n_bot.sum())) * 86400.0)
    return {
        "user": np.concatenate(cols_user),
        "item": np.concatenate(cols_item),
        "type": np.concatenate(cols_type),
        "ts": np.concatenate(cols_ts),
    }


def _iso(ts: np.ndarray) -> np.ndarray:
    """Epoch seconds -> ISO-8601 strings with milliseconds and a Z, as collectors write them."""
    ms = np.round(ts * 1000).astype("int64")
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    return np.char.add(text.astype(str), "Z")


def _to_table(
    cfg: GeneratorConfig, world: World, ev: dict[str, np.ndarray], rng: np.random.Generator, counts: dict[str, int]
) -> tuple[pa.Table, np.ndarray]:
    """Column arrays -> raw string columns with duplicates and bad rows, and a mask of the rows
    left intact (neither broken nor duplicated), the only ones a text writer may tear."""
    _separate_collisions(ev)
    n = len(ev["ts"])
    n_dup = rng.binomial(n, cfg.duplicate_rate) if n else 0
    dup = rng.choice(n, size=n_dup, replace=False) if n_dup else np.zeros(0, int)
    idx = np.r_[np.arange(n), dup]
    user = np.char.add("u", world_ids(ev["user"][idx], 7))
    item = np.char.add("i", world_ids(ev["item"][idx], 6))
    cat = np.char.add("c", world_ids(world.item_category[ev["item"][idx]], 3))
    etype = np.asarray(FUNNEL, dtype=object)[ev["type"][idx]]
    ts = _iso(ev["ts"][idx]).astype(object)
    user, item = user.astype(object), item.astype(object)
    counts["duplicates"] += int(n_dup)
    # Bad rows: a row is broken in exactly one way, so its reject reason is known.
    m = len(idx)
    n_bad = rng.binomial(m, cfg.bad_row_rate) if m else 0
    bad = rng.choice(m, size=n_bad, replace=False) if n_bad else np.zeros(0, int)
    # Never break a row that has a copy: the pair would no longer be a duplicate.
    bad = bad[(bad < n) & ~np.isin(bad, dup)]
    kinds = rng.integers(0, len(BAD_KINDS), size=len(bad))
    for k, name in enumerate(BAD_KINDS):
        rows = bad[kinds == k]
        counts[name] += len(rows)
        if name == "null_user_id":
            user[rows] = None
        elif name == "null_item_id":
            item[rows] = None
        elif name == "unparseable_ts":
            ts[rows] = "not-a-timestamp"
        elif name == "negative_ts":
            ts[rows] = "1969-12-31T23:59:00.000Z"
        elif name == "future_ts":
            ts[rows] = _iso(ev["ts"][idx][rows] + (cfg.days + 30) * 86400).astype(object)
        elif name == "unknown_event_type":
            etype[rows] = "hover"
    intact = np.ones(m, dtype=bool)
    intact[bad] = False
    intact[n:] = False
    intact[dup] = False
    return pa.table(
        {
            "user_id": pa.array(user, pa.string()),
            "item_id": pa.array(item, pa.string()),
            "event_type": pa.array(etype, pa.string()),
            "ts": pa.array(ts, pa.string()),
            "category": pa.array(cat.astype(object), pa.string()),
        }
    ), intact


def _separate_collisions(ev: dict[str, np.ndarray]) -> None:
    """Nudge events that coincide by chance (same user, item, type and millisecond) 1 ms apart,
    so that the only exact duplicates are the planted ones and their count is exact."""
    ms = np.round(ev["ts"] * 1000).astype("int64")
    while len(ms):
        order = np.lexsort((ms, ev["type"], ev["item"], ev["user"]))
        same = np.flatnonzero(
            (np.diff(ms[order]) == 0)
            & (np.diff(ev["type"][order]) == 0)
            & (np.diff(ev["item"][order]) == 0)
            & (np.diff(ev["user"][order]) == 0)
        )
        if not len(same):
            break
        ms[order[same + 1]] += 1
    ev["ts"] = ms / 1000.0


def world_ids(values: np.ndarray, width: int) -> np.ndarray:
    return np.char.zfill(values.astype(str), width)


def _write(
    table: pa.Table,
    intact: np.ndarray,
    path: Path,
    fmt: str,
    rng: np.random.Generator,
    malformed_rate: float,
    counts: dict[str, int],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path.with_suffix(".parquet"), row_group_size=500_000)
        return
    frame = table.to_pandas()
    if fmt == "json":
        lines = frame.to_json(orient="records", lines=True).splitlines()
    else:
        lines = frame.to_csv(index=False, header=False, lineterminator="\n").splitlines()
    candidates = np.flatnonzero(intact)
    n_bad = min(rng.binomial(len(lines), malformed_rate), len(candidates)) if lines else 0
    for i in rng.choice(candidates, size=n_bad, replace=False) if n_bad else []:
        # A line cut off mid-record, as a crashed writer or a torn upload leaves it.
        lines[i] = lines[i][: max(1, len(lines[i]) // 3)] + ('"' if fmt == "csv" else "")
    counts[MALFORMED] += int(n_bad)
    header = ",".join(table.column_names) + "\n" if fmt == "csv" else ""
    path.with_suffix("." + fmt).write_text(header + "\n".join(lines) + "\n")


@dataclass
class GenerationSummary:
    events: int = 0
    users: int = 0
    items: int = 0
    days: int = 0
    bots: int = 0
    files: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    dates: list[str] = field(default_factory=list)


def dates_ending(end_date: str, days: int) -> list[str]:
    end = dt.date.fromisoformat(end_date)
    return [(end - dt.timedelta(days=days - 1 - d)).isoformat() for d in range(days)]


def generate(cfg: GeneratorConfig, out_dir: str, truth_dir: str, progress: bool = True) -> GenerationSummary:
    """Write the clickstream as ``out_dir/dt=YYYY-MM-DD/part-NNNNN.<fmt>`` plus ground truth.

    Local paths only: the generator is for tests, demos and benchmarks; a cluster reads real logs.
    """
    out, truth = Path(out_dir.replace("file://", "")), Path(truth_dir.replace("file://", ""))
    for folder in (out, truth):
        if folder.exists():
            shutil.rmtree(folder)  # regenerate from scratch: same config, same bytes
    world = build_world(cfg)
    dates = dates_ending(cfg.end_date, cfg.days)
    counts = {name: 0 for name in (*BAD_KINDS, MALFORMED, "duplicates")}
    summary = GenerationSummary(
        users=cfg.users, items=cfg.items, days=cfg.days, bots=int(world.is_bot.sum()), dates=dates
    )
    chunks = [np.arange(s, min(s + cfg.users_per_file, cfg.users)) for s in range(0, cfg.users, cfg.users_per_file)]
    for d, date in enumerate(dates):
        day_start = dt.datetime.fromisoformat(date).replace(tzinfo=dt.timezone.utc).timestamp()
        day_events = 0
        for c, users in enumerate(chunks):
            ev = _day_events(cfg, world, d, users, day_start)
            rng = np.random.default_rng([cfg.seed, 3, d, c])
            table, intact = _to_table(cfg, world, ev, rng, counts)
            _write(table, intact, out / partition(date) / f"part-{c:05d}", cfg.format, rng, cfg.bad_row_rate, counts)
            day_events += table.num_rows
            summary.files += 1
        summary.events += day_events
        if progress:
            log.info(f"{date}: {day_events:,} events")
    summary.counts = counts
    _write_truth(world, truth, dates)
    (truth / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary


def _write_truth(world: World, truth: Path, dates: list[str]) -> None:
    """The planted structure, for tests and the notebook: never an input to the pipeline."""
    truth.mkdir(parents=True, exist_ok=True)
    n_users = len(world.activity)
    last = world.interests[-1]
    strongest = np.argmax(world.weights, axis=1)
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(np.char.add("u", world_ids(np.arange(n_users), 7)).astype(object)),
                "is_bot": pa.array(world.is_bot),
                "interests_first": pa.array([[f"c{c:03d}" for c in row if c >= 0] for row in world.interests[0]]),
                "interests_last": pa.array([[f"c{c:03d}" for c in row if c >= 0] for row in last]),
                "weights": pa.array(
                    [[float(x) for x, c in zip(w, row) if c >= 0] for w, row in zip(world.weights, last)]
                ),
                "dominant_last": pa.array([f"c{last[u, strongest[u]]:03d}" for u in range(n_users)]),
            }
        ),
        truth / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array(np.char.add("i", world_ids(np.arange(len(world.item_category)), 6)).astype(object)),
                "category": pa.array(np.char.add("c", world_ids(world.item_category, 3)).astype(object)),
            }
        ),
        truth / "items.parquet",
    )
