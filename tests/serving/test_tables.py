"""Publishing to Delta and Parquet tables: one commit per date, gates first, retention, rollback,
and tables that are not what we write are refused in one line and left as they are."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from interest.serving.publish import Gates, PublishGateError, Table, TableFilesMissingError, TableFormatError

DDL = "user_id STRING, embedding ARRAY<FLOAT>"
UNIT = Gates(vector_columns=["embedding"], unit_norm_column="embedding")


def rows(spark, *pairs: tuple[str, list[float]]):
    return spark.createDataFrame(list(pairs), schema=DDL)


def read(spark, db: str, date: str):
    return spark.table(f"`{db}`.`t`").where(F.col("dt") == date).drop("dt").orderBy("user_id")


@pytest.fixture()
def table(spark, tmp_path, request):
    """An empty dt-partitioned table in a database of its own."""
    db = f"tables_{request.node.name.split('[')[0][5:40]}".replace("-", "_")
    fmt = getattr(request, "param", "delta")
    t = Table(spark, db, "t", str(tmp_path / "t"), fmt)
    t.ensure(DDL)
    yield t
    spark.sql(f"DROP DATABASE IF EXISTS `{db}` CASCADE")


@pytest.mark.parametrize("table", ["delta", "parquet"], indirect=True)
def test_a_date_is_replaced_exactly_and_other_dates_are_untouched(spark, table):
    t, db, fmt = table, table.database, table.table_format
    t.publish("2026-11-25", rows(spark, ("a", [1.0, 0.0])), UNIT)
    t.publish("2026-11-26", rows(spark, ("a", [0.0, 1.0]), ("b", [1.0, 0.0])), UNIT)
    report = t.publish("2026-11-26", rows(spark, ("c", [0.6, 0.8])), UNIT)
    assert report.gates["unit_norm"].ok and report.rows == 1
    assert t.dates() == ["2026-11-25", "2026-11-26"]
    assert_df_equality(read(spark, db, "2026-11-26"), rows(spark, ("c", [0.6, 0.8])), ignore_nullable=True)
    assert_df_equality(read(spark, db, "2026-11-25"), rows(spark, ("a", [1.0, 0.0])), ignore_nullable=True)
    if fmt == "delta":  # one commit per publish, the replacement by replaceWhere on dt
        commits = t.history()
        assert [c["operation"] for c in commits] == ["WRITE", "WRITE", "WRITE", "CREATE TABLE"]
        assert commits[0]["operationParameters"]["predicate"] == "dt = '2026-11-26'"
        assert (report.previous_version, report.version) == (2, 3)
    else:
        assert sorted(t.partitions()) == ["2026-11-25", "2026-11-26"]


@pytest.mark.parametrize("table", ["delta", "parquet"], indirect=True)
def test_a_failed_gate_commits_nothing(spark, table):
    t, db, fmt = table, table.database, table.table_format
    t.publish("2026-11-26", rows(spark, ("a", [1.0, 0.0])), UNIT)
    before = t.history() if fmt == "delta" else t.partitions()
    with pytest.raises(
        PublishGateError,
        match=r"not publishing tables_\w+\.t dt=2026-11-26: unit_norm: "
        r"max \|norm - 1\| = 1\.00e\+00",
    ):
        t.publish("2026-11-26", rows(spark, ("a", [2.0, 0.0])), UNIT)
    assert (t.history() if fmt == "delta" else t.partitions()) == before
    assert_df_equality(read(spark, db, "2026-11-26"), rows(spark, ("a", [1.0, 0.0])), ignore_nullable=True)


def test_delta_retention_deletes_and_vacuums_and_rollback_restores_the_night_before(spark, table):
    t, db = table, table.database
    for day, vec in (("2026-11-24", [1.0, 0.0]), ("2026-11-25", [0.0, 1.0])):
        t.publish(day, rows(spark, ("a", vec)), UNIT)
    good = t.version()
    # a bad night: dt=26 published and, with retention 2, dt=24 deleted and vacuumed
    t.publish("2026-11-26", rows(spark, ("z", [0.6, 0.8])), UNIT)
    assert t.apply_retention(2, vacuum_retain_hours=168) == ["2026-11-24"]
    assert t.dates() == ["2026-11-25", "2026-11-26"]
    ops = [c["operation"] for c in t.history()]
    assert ops[:4] == ["VACUUM END", "VACUUM START", "DELETE", "WRITE"]
    assert t.apply_retention(2) == []  # nothing more to drop: no new commit
    assert [c["operation"] for c in t.history()][:1] == ["VACUUM END"]
    # roll back the last publish: dt=26 disappears and dt=24 is back, as readers saw it before
    current = t.version()
    assert t.rollback() == (current, good)
    assert t.dates() == ["2026-11-24", "2026-11-25"]
    assert_df_equality(read(spark, db, "2026-11-24"), rows(spark, ("a", [1.0, 0.0])), ignore_nullable=True)
    assert t.history()[0]["operation"] == "RESTORE"
    with pytest.raises(TableFormatError, match=r"is at version \d+: cannot roll back to 99"):
        t.rollback(99)


def test_a_night_committed_twice_is_rolled_back_as_one(spark, table):
    """A run killed just after its commit and run again commits the same night twice: rollback
    gives back what readers saw before that night, not the night's first commit."""
    t, db = table, table.database
    t.publish("2026-11-25", rows(spark, ("a", [1.0, 0.0])), UNIT, "dt=2026-11-25 model=m1")
    good = t.version()
    for _ in range(2):
        t.publish("2026-11-26", rows(spark, ("z", [0.6, 0.8])), UNIT, "dt=2026-11-26 model=m2")
    assert [c["userMetadata"] for c in t.history()][:3] == [
        "dt=2026-11-26 model=m2",
        "dt=2026-11-26 model=m2",
        "dt=2026-11-25 model=m1",
    ]
    assert t.rollback() == (good + 2, good)
    assert t.dates() == ["2026-11-25"]
    # without names, each commit is its own night: the latest one is undone
    t.publish("2026-11-26", rows(spark, ("y", [0.0, 1.0])), UNIT)
    t.publish("2026-11-26", rows(spark, ("z", [0.6, 0.8])), UNIT)
    assert t.rollback() == (good + 5, good + 4)
    assert_df_equality(read(spark, db, "2026-11-26"), rows(spark, ("y", [0.0, 1.0])), ignore_nullable=True)


def test_rollback_restores_the_last_version_another_model_wrote(spark, table):
    """A bad model's night killed after its commit, re-run, and the next night run on the same
    model before anyone looked: rollback returns to the good model's version, compared by
    content, with the retention DELETE in between undone."""
    t, db = table, table.database
    t.publish("2026-11-24", rows(spark, ("a", [1.0, 0.0])), UNIT, "dt=2026-11-24 model=m1")
    t.publish("2026-11-25", rows(spark, ("b", [0.0, 1.0])), UNIT, "dt=2026-11-25 model=m1")
    good, seen = t.version(), {d: read(spark, db, d).collect() for d in ("2026-11-24", "2026-11-25")}
    t.publish("2026-11-26", rows(spark, ("z", [0.6, 0.8])), UNIT, "dt=2026-11-26 model=m2")  # killed here
    t.publish("2026-11-26", rows(spark, ("z", [0.6, 0.8])), UNIT, "dt=2026-11-26 model=m2")  # re-run
    assert t.apply_retention(2) == ["2026-11-24"]
    t.publish("2026-11-27", rows(spark, ("y", [0.8, 0.6])), UNIT, "dt=2026-11-27 model=m2")
    current = t.version()
    assert t.rollback() == (current, good)
    assert t.dates() == ["2026-11-24", "2026-11-25"]
    assert {d: read(spark, db, d).collect() for d in seen} == seen
    # m1 wrote everything the table now holds: a second rollback has nothing to go back to
    with pytest.raises(TableFormatError, match=r"has no publish by another model to roll back to"):
        t.rollback()
    # the bad night published once more: the commits the first rollback undid are not counted
    # again (they would take the table to version 2), only the new one
    t.publish("2026-11-26", rows(spark, ("z", [0.6, 0.8])), UNIT, "dt=2026-11-26 model=m2")
    assert t.rollback() == (current + 2, current + 1)  # the first RESTORE: the good content
    assert {d: read(spark, db, d).collect() for d in seen} == seen


def test_a_table_with_another_schema_or_format_is_refused_and_left_as_it_is(spark, tmp_path):
    db = "tables_mismatch"
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    spark.sql(
        f"CREATE TABLE {db}.d (user_id STRING, embedding ARRAY<DOUBLE>, dt STRING) USING DELTA "
        f"PARTITIONED BY (dt) LOCATION '{tmp_path / 'd'}'"
    )
    spark.sql(f"INSERT INTO {db}.d VALUES ('x', array(1.0D), '2026-11-25')")
    with pytest.raises(
        TableFormatError,
        match=rf"table {db}\.d has another schema than this job writes "
        r"\(embedding: table has array<double>, we write array<float>\)",
    ):
        Table(spark, db, "d", str(tmp_path / "d"), "delta").ensure(DDL)
    assert Table(spark, db, "d").version() == 1 and spark.table(f"{db}.d").count() == 1
    with pytest.raises(
        TableFormatError,
        match=rf"table {db}\.d is a delta table but embed.table_format "
        r"is parquet: set embed.table_format: delta",
    ):
        Table(spark, db, "d", str(tmp_path / "d"), "parquet").ensure(DDL)
    with pytest.raises(TableFormatError, match="is not a Delta table: rollback needs"):
        spark.sql(
            f"CREATE TABLE {db}.p ({DDL}, dt STRING) USING PARQUET PARTITIONED BY (dt) LOCATION '{tmp_path / 'p'}'"
        )
        Table(spark, db, "p").rollback()
    # a Delta log at the location from another metastore, with another schema
    spark.sql(f"DROP TABLE {db}.d")  # external: the files and the log stay
    with pytest.raises(TableFormatError, match=r"has another schema .*embedding: table has array<double>"):
        Table(spark, db, "d", str(tmp_path / "d"), "delta").ensure(DDL)
    assert spark.read.format("delta").load(str(tmp_path / "d")).count() == 1
    spark.sql(f"DROP DATABASE {db} CASCADE")


@pytest.mark.parametrize("table", ["delta", "parquet"], indirect=True)
def test_a_table_whose_folder_was_deleted_is_refused_in_one_line_and_restoring_it_publishes(spark, table, tmp_path):
    """Spark's own error (DELTA_PATH_DOES_NOT_EXIST, or a Parquet read of nothing) names neither
    the table nor what to do; ours names both, and the metastore entry is left as it is."""
    import shutil

    t = table
    t.publish("2026-11-25", rows(spark, ("a", [1.0, 0.0])), UNIT)
    folder, kept = tmp_path / "t", tmp_path / "kept"
    shutil.move(str(folder), str(kept))
    refusal = rf"table {t.database}\.t is registered at file:{folder}/?, but nothing is there .*DROP TABLE"
    with pytest.raises(TableFilesMissingError, match=refusal):
        t.ensure(DDL)
    with pytest.raises(TableFilesMissingError, match=refusal):
        t.dates()
    assert spark.catalog.tableExists(f"{t.database}.t")
    shutil.move(str(kept), str(folder))  # restored: the table publishes again, its old date kept
    t.ensure(DDL)
    t.publish("2026-11-26", rows(spark, ("b", [0.0, 1.0])), UNIT)
    assert t.dates() == ["2026-11-25", "2026-11-26"]


@pytest.mark.parametrize("table", ["delta", "parquet"], indirect=True)
def test_a_column_added_by_a_newer_release_is_added_to_the_table_and_old_dates_read_null(spark, table):
    t, db = table, table.database
    t.publish("2026-11-25", rows(spark, ("a", [1.0])), UNIT)
    newer = f"{DDL}, is_cold_start BOOLEAN"
    t.ensure(newer)
    frame = spark.createDataFrame([("b", [1.0], True)], schema=newer)
    t.publish("2026-11-26", frame, UNIT)
    got = {r.user_id: (r.dt, r.is_cold_start) for r in spark.table(f"`{db}`.`t`").collect()}
    assert got == {"a": ("2026-11-25", None), "b": ("2026-11-26", True)}
