"""Typed configuration: profiles load, and a wrong key, type or value names the key."""

from __future__ import annotations

import re

import pytest

from interest.config import ConfigError, load_config, parse_override
from interest.java import JavaNotFoundError, require_java
from interest.layout import Layout, SessionizePaths

from conftest import ROOT


@pytest.mark.parametrize("profile", ["local.yaml", "cluster.yaml", "ml100k.yaml", "beauty.yaml"])
def test_profiles_load(profile):
    cfg = load_config(ROOT / "conf" / profile)
    assert cfg.sessionize.max_len >= 4 and cfg.model.dim % cfg.model.heads == 0


def test_defaults_and_overrides_with_types():
    cfg = load_config(
        None,
        [
            "model.dim=32",
            "sessionize.session_gap_minutes=15",
            "sessionize.event_types=[a, b]",
            "embed.users_table=null",
            "ingest.columns={ts: event_time, category: null}",
            "model.features=[time_gap]",
            "nightly.train=reuse",
        ],
    )
    assert cfg.ingest.columns == {
        "user_id": "user_id",
        "item_id": "item_id",
        "ts": "event_time",
        "event_type": "event_type",
        "category": None,
    }
    assert (cfg.model.use_event_type, cfg.model.use_time_gap) == (False, True)
    assert (cfg.nightly.retrain, cfg.nightly.warm_start) == (False, False)
    assert cfg.model.dim == 32 and cfg.sessionize.session_gap_minutes == 15.0
    assert cfg.sessionize.event_types == ["a", "b"] and cfg.embed.users_table is None
    assert parse_override("a.b=1.5") == ("a.b", 1.5)


def test_a_mapping_override_adds_to_the_profiles_mapping():
    """``--set spark.conf={...}`` keeps the profile's other Spark settings (its shuffle partitions
    above all); a key given again takes the new value."""
    profile = load_config(ROOT / "conf" / "local.yaml").spark.conf
    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        ["spark.conf={spark.ui.enabled: 'true', spark.executor.memory: 8g}", "spark.conf={spark.task.cpus: '2'}"],
    )
    assert profile["spark.sql.shuffle.partitions"] == "8"
    assert cfg.spark.conf == {
        **profile,
        "spark.ui.enabled": "true",
        "spark.executor.memory": "8g",
        "spark.task.cpus": "2",
    }
    assert load_config(ROOT / "conf" / "local.yaml", ["spark.master=local[1]"]).spark.conf == profile


def test_row_groups_are_sized_in_bytes_of_sequence_columns():
    """Four int32 sequence columns of max_len values per row: 16 MiB is 20,971 rows at 50 and
    5,242 at 200, so a row group costs the reader the same at any length."""
    rows = [load_config(None, [f"sessionize.max_len={n}"]).sessionize.rows_per_row_group for n in (50, 200)]
    assert rows == [20971, 5242]
    assert load_config(None, ["sessionize.row_group_mib=0.0001"]).sessionize.rows_per_row_group == 1  # never 0


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.dimm=3", "unknown configuration key 'model.dimm'"),
        ("ingest.columns.userid=x", "unknown configuration key 'ingest.columns.userid'"),
        ("modle.dim=3", "unknown configuration key 'modle'"),
        ("model.dim=abc", "'model.dim' has the wrong type"),
        ("train.epochs=2.5", "'train.epochs' has the wrong type"),
        ("model.encoder=lstm", "'model.encoder' must be one of ['self_attention', 'hierarchical', 'memory']"),
        ("model=3", "'model' must be a section"),
        ("model.heads=3", "model.dim must be divisible by model.heads"),
        ("nodot", "must look like section.key=value"),
        ("eval.seeds=[0, 1]", "must leave out 0, the validation draw"),
        ("sessionize.row_group_mib=0", "sessionize.row_group_mib and min_row_groups must be positive"),
        ("ingest.columns.ts=null", "ingest.columns.ts must name a source column"),
        ("model.features=[gap]", "'model.features' has the wrong type"),
        ("nightly.train=sometimes", "'nightly.train' must be one of ['warm', 'fresh', 'reuse']"),
        (
            "train.batch_by_length=sometimes",
            "'train.batch_by_length' has the wrong type: expected bool or one of ['auto'], got 'sometimes'",
        ),
        ("embed.table=mine", "unknown configuration key 'embed.table'"),
        ("model.filter_mix=1.5", "model.filter_mix must be within [0, 1]"),
        ("train.contrastive_weight=-0.1", "train.contrastive_weight must be 0 or more"),
        ("train.contrastive_temperature=0.0", "train.contrastive_temperature must be positive"),
        ("train.contrastive_views=shuffle", "'train.contrastive_views' must be one of ['dropout', 'augment']"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "conf" / "local.yaml", [override])


def test_the_filter_is_refused_where_no_block_would_use_it():
    """filter_mix lives in self-attention's blocks: on another encoder it would be silently ignored."""
    load_config(ROOT / "conf" / "local.yaml", ["model.filter_mix=0.5"])  # self_attention: accepted
    with pytest.raises(ConfigError, match=re.escape("model.filter_mix applies to the self_attention encoder only")):
        load_config(ROOT / "conf" / "local.yaml", ["model.encoder=memory", "model.filter_mix=0.5"])


def test_whole_histories_are_refused_where_nothing_would_read_them():
    """Only memory reads several windows, and only windows sessionize stored: elsewhere the setting
    would be silently ignored."""
    memory = ["model.encoder=memory", "sessionize.max_windows=4", "embed.whole_history=true"]
    assert load_config(ROOT / "conf" / "local.yaml", memory).embed.whole_history
    with pytest.raises(ConfigError, match="embed.whole_history applies to the memory encoder only"):
        load_config(ROOT / "conf" / "local.yaml", [*memory, "model.encoder=self_attention"])
    with pytest.raises(ConfigError, match="set sessionize.max_windows above 1"):
        load_config(ROOT / "conf" / "local.yaml", [*memory, "sessionize.max_windows=1"])


def test_missing_file_and_bad_top_level(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_paths_resolve_root_and_keep_urls(tmp_path):
    cfg = load_config(None, [f"paths.root={tmp_path}", "paths.models=s3a://bucket/models"])
    assert cfg.paths.sequences == f"{tmp_path}/sequences"
    assert cfg.paths.resolve("models") == "s3a://bucket/models"


def test_the_layout_of_a_date_names_every_place_once(tmp_path, monkeypatch):
    """Relative roots become absolute, URLs stay, and each date's folders are its own."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["paths.root=rel", "paths.models=hdfs://nn:8020/m", "embed.database=emb"])
    layout = Layout.of(cfg, "2026-11-26")
    root = f"{tmp_path}/rel"
    assert layout.source == f"{root}/raw/events" and layout.paths.models == "hdfs://nn:8020/m"
    assert layout.sessionized == SessionizePaths(
        train=f"{root}/sequences/dt=2026-11-26/train",
        infer=f"{root}/sequences/dt=2026-11-26/infer",
        vocab=f"{root}/vocab/dt=2026-11-26",
        rejects=f"{root}/events_rejected/dt=2026-11-26",
        sessions=f"{root}/sessions/dt=2026-11-26",
        day=f"{root}/sequences/dt=2026-11-26/day",
        summary=f"{root}/reports/sessionize/dt=2026-11-26/summary.json",
    )
    assert layout.at("2026-11-25").sessionized.infer == f"{root}/sequences/dt=2026-11-25/infer"
    assert layout.report("tensorboard", "memory") == f"{root}/reports/tensorboard/memory/dt=2026-11-26"
    assert layout.table("daily_quality") == f"{root}/warehouse/emb.db/daily_quality"
    on = Layout.of(load_config(None, ["paths.root=file:///r", "ingest.path=/in/events.csv"]), "2026-11-26")
    assert on.source == "/in/events.csv" and on.report("nightly") == "/r/reports/nightly/dt=2026-11-26"


def test_missing_java_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(JavaNotFoundError, match="Java 17"):
        require_java()


def test_every_job_applies_the_storage_settings_without_a_spark_session(tmp_path):
    """Jobs that build no SparkSession (evaluate, single-process train) reach storage too: the
    job's config sets the WebHDFS host, port and user before anything is read."""
    from interest import storage
    from interest.cli import job_parser, load_job_config

    args = job_parser("test").parse_args(
        [
            "--set",
            f"paths.root={tmp_path}",
            "--set",
            "storage.webhdfs_host=namenode.example",
            "--set",
            "storage.webhdfs_port=50070",
        ]
    )
    before = storage.settings()
    try:
        load_job_config(args, "evaluate", "2026-11-26")
        now = storage.settings()
        assert (now.webhdfs_host, now.webhdfs_port) == ("namenode.example", 50070)
    finally:
        storage.configure(before.webhdfs_port, before.webhdfs_host)


def test_every_key_is_documented_in_the_generated_reference():
    """docs/configuration.md is what ``make docs`` writes now: every leaf key, its default and a
    description (a key added without a comment beside it fails here)."""
    from interest.config import GENERATOR, GeneratorConfig, reference, reference_rows

    rows = [*reference_rows(), *reference_rows(GeneratorConfig, f"{GENERATOR}.")]
    undocumented = [key for key, _, note in rows if not note]
    assert not undocumented, f"describe these beside their fields in interest/config/sections.py: {undocumented}"
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == reference(), "docs/configuration.md is stale: run make docs"
    assert all(f"| `{key}` |" in written for key, _, _ in rows)
    with pytest.raises(ConfigError, match="unknown configuration key 'train.fail_at'"):
        load_config(None, ["train.fail_at=3"])


def test_the_generator_section_is_checked_but_not_carried_by_a_run():
    """A profile's ``generator`` section is the sample generator's: a run checks it (a typo still
    stops the job) but does not carry it, so it never reaches a model's config.json."""
    from interest.config import load_generator_config

    sets = ["generator.users=123", "generator.format=json", "model.dim=32"]
    cfg = load_config(ROOT / "conf" / "local.yaml", sets)
    assert "generator" not in cfg.to_dict() and cfg.model.dim == 32
    gen = load_generator_config(ROOT / "conf" / "local.yaml", sets)
    assert (gen.users, gen.format, gen.items) == (123, "json", 1000)  # items: the profile's
    with pytest.raises(ConfigError, match="unknown configuration key 'generator.user'"):
        load_config(ROOT / "conf" / "local.yaml", ["generator.user=5"])
    with pytest.raises(ConfigError, match="'generator.days' has the wrong type"):
        load_config(None, ["generator.days=many"])
