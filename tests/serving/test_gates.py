"""The publish gates on small inline frames: every gate passes on good rows and fails, with its
reason, on exactly the rows that break it (no table, no files: ``check_gates`` is a DataFrame check)."""

from __future__ import annotations

import math

import pytest

from interest.serving.publish import GateResult, Gates, PublishGateError, check_gates

SCHEMA = "user_id STRING, embedding ARRAY<FLOAT>, interests ARRAY<ARRAY<FLOAT>>, n_events BIGINT"
USERS = Gates(
    vector_columns=["embedding", "interests"],
    unit_norm_column="embedding",
    norm_tolerance=1e-3,
    expected_rows=4,
    coverage_filter="n_events > 0",
    min_coverage=0.5,
    max_row_change=0.5,
)
GOOD = [
    ("a", [1.0, 0.0], [[1.0, 0.0]], 3),
    ("b", [0.6, 0.8], [[0.6, 0.8], [0.0, 1.0]], 1),
    ("c", [0.0, 1.0], [[0.0, 1.0]], 2),
    ("d", [0.8, 0.6], [[0.8, 0.6]], 0),
]


def gates_of(spark, rows, gates=USERS, previous_rows=None):
    return check_gates(spark.createDataFrame(rows, SCHEMA), gates, previous_rows)


def test_good_rows_pass_every_gate(spark):
    report = gates_of(spark, GOOD, previous_rows=4)
    assert report.ok and report.rows == 4
    assert set(report.gates) == {"finite_embedding", "finite_interests", "unit_norm", "coverage", "row_change"}
    assert report.gates["coverage"] == GateResult(True, "75.0% of 4 active users (minimum 50%)")
    assert report.gates["row_change"] == GateResult(True, "4 rows vs 4 in the previous partition (0%, limit 50%)")


@pytest.mark.parametrize(
    "broken,failed",
    [
        (
            ("e", [math.nan, 1.0], [[0.0, 1.0]], 1),
            {"finite_embedding": "1 row(s)", "unit_norm": "max |norm - 1| = nan"},
        ),
        (
            ("e", [math.inf, 0.0], [[0.0, 1.0]], 1),
            {"finite_embedding": "1 row(s)", "unit_norm": "max |norm - 1| = inf"},
        ),
        (("e", None, [[0.0, 1.0]], 1), {"finite_embedding": "1 row(s)", "unit_norm": "max |norm - 1| = nan"}),
        (("e", [0.0, 1.0], [[0.0, None]], 1), {"finite_interests": "1 row(s) with NaN, inf or missing values"}),
        (("e", [0.0, 2.0], [[0.0, 1.0]], 1), {"unit_norm": "max |norm - 1| = 1.00e+00 (tolerance 0.001)"}),
    ],
)
def test_one_broken_row_fails_its_gates_only(spark, broken, failed):
    """A broken vector fails the finite gate and, having no unit norm, the norm gate; nothing else."""
    report = gates_of(spark, [*GOOD, broken])
    assert not report.ok and set(report.failed) == set(failed), report.failed
    for gate, detail in failed.items():
        assert report.failed[gate].detail.startswith(detail), report.failed[gate]


def test_coverage_row_change_and_empty(spark):
    idle = [(u, e, i, 0) for u, e, i, _ in GOOD]  # nobody had events
    assert report_failed(gates_of(spark, idle)) == {"coverage": "0.0% of 4 active users (minimum 50%)"}
    grown = gates_of(spark, GOOD, previous_rows=2)
    assert report_failed(grown) == {"row_change": "4 rows vs 2 in the previous partition (100%, limit 50%)"}
    empty = gates_of(spark, [], Gates())
    assert empty.rows == 0 and report_failed(empty) == {"not_empty": "no rows"}


def test_the_gate_error_names_every_failed_gate(spark):
    report = gates_of(spark, [*GOOD, ("e", [0.0, 2.0], [[0.0, math.nan]], 1)])
    error = PublishGateError("db.users", "2026-11-26", report)
    assert str(error).startswith("not publishing db.users dt=2026-11-26: finite_interests: 1 row(s)")
    assert "unit_norm: max |norm - 1|" in str(error) and error.report is report


def report_failed(report) -> dict[str, str]:
    return {name: g.detail for name, g in report.failed.items()}
