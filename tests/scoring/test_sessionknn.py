"""Session-kNN with reminders and the session-aware segments, on small inline data whose answers
are computed by hand."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interest.data.files import training_sequences
from interest.evaluation.breakdown import REVISITS, SESSION_SEGMENTS, segments_of
from interest.scoring import metrics as M
from interest.scoring.segments import repeats, session_segment
from interest.scoring.sessionknn import SessionKNNScorer, fit_on_validation, split_sessions
from interest.scoring.tasks import leave_one_out, rank_task

from conftest import rows_of

# user a: sessions {2, 3, 4} then {5, 6}; user b: {2, 3} then {6, 7, 8}
ITEMS = [np.array([2, 3, 4, 5, 6]), np.array([2, 3, 6, 7, 8])]
SESSIONS = [np.array([1, 1, 1, 2, 2]), np.array([1, 1, 2, 2, 2])]
R2, R3 = 1 / np.sqrt(2), 1 / np.sqrt(3)


def scorer(**kw) -> SessionKNNScorer:
    return SessionKNNScorer.fit(ITEMS, SESSIONS, 10, **kw)


def query(items: list[int], sessions: list[int]) -> dict[str, np.ndarray]:
    return {"item_idx": np.array([items]), "session_idx": np.array([sessions])}


def test_sessions_are_cut_where_the_session_changes():
    got = split_sessions(np.array([4, 5, 5, 6, 7]), np.array([1, 1, 2, 2, 4]))
    assert [s.tolist() for s in got] == [[4, 5], [5, 6], [7]]
    assert split_sessions(np.array([], np.int64), np.array([], np.int64)) == []


def test_neighbour_sessions_vote_with_their_similarity():
    # the current session is [2]: {2, 3} is most similar (1/sqrt 2), then {2, 3, 4} (1/sqrt 3)
    one = scorer(neighbours=1).scores(query([0, 5, 2], [0, 1, 2]))[0]
    assert one[2] == pytest.approx(1.0, abs=1e-5) and one[3] == pytest.approx(1.0, abs=1e-5)
    assert one[4] < 1e-5 and one[5] < 1e-5  # {2, 3, 4} is not among 1 neighbour; 5 is only a past item
    two = scorer(neighbours=2).scores(query([0, 5, 2], [0, 1, 2]))[0]
    assert two[4] == pytest.approx(R3 / (R3 + R2), abs=1e-5)
    assert np.isneginf(two[:2]).all()


def test_only_the_current_session_queries_unless_extended():
    history = query([6, 7, 2], [1, 1, 2])  # an earlier session {6, 7}, now [2]
    plain = scorer(neighbours=4).scores(history)[0]
    assert plain[8] < 1e-5  # 8 is only in {6, 7, 8}, which shares nothing with [2]
    extended = scorer(neighbours=4, extend=0.5).scores(history)[0]
    # the query is now 2 (weight 1) + 6 and 7 (0.5 each): {6, 7, 8} scores (0.5 + 0.5) / sqrt 3
    top = R3 + R2  # item 2: {2, 3, 4} and {2, 3}
    assert extended[8] == pytest.approx(R3 / top, abs=1e-5)
    assert extended[5] == pytest.approx((0.5 * R2) / top, abs=1e-5)  # {5, 6} through item 6


def test_reminders_bring_back_the_users_own_earlier_items():
    history = query([9, 5, 2], [1, 2, 3])  # 9 three sessions ago is in no training session
    without = scorer(neighbours=4).scores(history)[0]
    assert without[9] < 1e-5
    got = scorer(neighbours=4, reminders=2.0).scores(history)[0]
    # reminder scores 1/age: 5 (age 1) -> 1, 9 (age 2) -> 1/2, both scaled to a maximum of 1
    assert got[5] == pytest.approx(2.0 * 1.0, abs=1e-5) and got[9] == pytest.approx(2.0 * 0.5, abs=1e-5)
    assert got[2] == pytest.approx(1.0, abs=1e-5)  # the neighbours' votes are unchanged


def test_validation_picks_reminders_when_users_come_back_to_their_items():
    # every user's test target is the item of their previous session: only a reminder finds it
    rows = rows_of([[5, 9, 4, 9]] * 6, [4] * 6, list("abcdef"))
    rows["session_idx"] = np.array([[1, 2, 3, 3]] * 6, np.int32)

    def validate(sc):
        return M.summarize(rank_task(sc, leave_one_out(rows, "test"), 10, negatives=0), 1)["full_hr@1"]

    best, tried = fit_on_validation(
        ITEMS, SESSIONS, 10, validate, {"neighbours": (4,), "extend": (0.0,), "reminders": (0.0, 2.0)}
    )
    assert [s for s, _ in tried] == [
        {"neighbours": 4, "extend": 0.0, "reminders": 0.0},
        {"neighbours": 4, "extend": 0.0, "reminders": 2.0},
    ]
    # without reminders 2 and 3 (the neighbours' items) come first; with them 9 scores 2 against 1
    assert [score for _, score in tried] == [0.0, 1.0] and best.settings["reminders"] == 2.0


def test_training_sessions_are_read_aligned_with_the_items(tmp_path):
    table = pa.table(
        {
            "user_id": ["a", "b"],
            "item_idx": [[0, 2, 3, 4, 5, 6], [0, 0, 0, 4, 3, 2]],
            "session_idx": [[0, 1, 1, 2, 3, 3], [0, 0, 0, 1, 1, 2]],
        }
    )
    pq.write_table(table, tmp_path / "part-0.parquet")
    assert [s.tolist() for s in training_sequences(str(tmp_path))] == [[2, 3, 4], [4]]
    assert [s.tolist() for s in training_sequences(str(tmp_path), "session_idx")] == [[1, 1, 2], [1]]


def test_session_segments_need_three_sessions_and_split_within_from_opening():
    history = np.array([[0, 1, 2], [1, 1, 1], [2, 3, 3], [3, 3, 4]])
    got = session_segment(history, np.array([3, 1, 3, 5]))
    assert got.tolist() == ["opens", "", "within", "opens"]
    assert repeats(np.array([[0, 4, 5], [0, 4, 5]]), np.array([5, 6])).tolist() == [True, False]
    # the test task carries each target's session; the segments follow it
    windows = [[2, 3, 4, 5], [0, 2, 3, 4], [6, 7, 8, 9], [6, 7, 8, 7], [6, 7, 8, 8]]
    rows = rows_of(windows, [4, 3, 4, 4, 4], list("abcde"))
    rows["session_idx"] = np.array([[1, 2, 3, 3], [0, 1, 1, 2], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 3]], np.int32)
    names = {s.name: s.mask.tolist() for s in segments_of({"test": leave_one_out(rows, "test")}, None)}
    within, opening = SESSION_SEGMENTS
    # a re-visit (d, e) is in no session segment: the protocol makes it easy for reminders
    assert names[within] == [True, False, False, False, False]
    assert names[opening] == [False, False, True, False, False]
    assert names[REVISITS] == [False, False, False, True, True]
