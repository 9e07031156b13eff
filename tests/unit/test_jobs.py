"""The job state machine (core/jobs.py): every ordered pair of statuses."""

from __future__ import annotations

import itertools

import pytest

from taskmill.core.errors import Conflict, InvalidTransition
from taskmill.core.jobs import JobStatus, can_transition, check_transition

S = JobStatus

# Written out by hand from DESIGN.md §3, not derived from ALLOWED_TRANSITIONS.
LEGAL: frozenset[tuple[JobStatus, JobStatus]] = frozenset(
    {
        (S.SCHEDULED, S.QUEUED),
        (S.SCHEDULED, S.CANCELLED),
        (S.QUEUED, S.RUNNING),
        (S.QUEUED, S.CANCELLED),
        (S.RUNNING, S.SUCCEEDED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.SCHEDULED),
        (S.RUNNING, S.CANCELLED),
        (S.FAILED, S.SCHEDULED),
    }
)
ALL_PAIRS = list(itertools.product(JobStatus, repeat=2))
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in LEGAL]


def _pair_id(pair: tuple[JobStatus, JobStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_can_transition_table_covers_36_pairs() -> None:
    assert len(JobStatus) == 6
    assert len(ALL_PAIRS) == 36
    assert len(LEGAL) == 9
    assert len(ILLEGAL) == 27


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_can_transition_matches_expected_table(pair: tuple[JobStatus, JobStatus]) -> None:
    from_status, to_status = pair
    assert can_transition(from_status, to_status) is (pair in LEGAL)


@pytest.mark.parametrize("pair", sorted(LEGAL), ids=_pair_id)
def test_check_transition_allows_legal_pair(pair: tuple[JobStatus, JobStatus]) -> None:
    check_transition(*pair)  # raises if the pair were illegal


@pytest.mark.parametrize("pair", ILLEGAL, ids=_pair_id)
def test_check_transition_rejects_illegal_pair(pair: tuple[JobStatus, JobStatus]) -> None:
    from_status, to_status = pair
    with pytest.raises(InvalidTransition) as info:
        check_transition(from_status, to_status)
    assert info.value.from_status == from_status.value
    assert info.value.to_status == to_status.value
    assert isinstance(info.value, Conflict)
    assert from_status.value in str(info.value)
    assert to_status.value in str(info.value)


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_check_transition_rejects_self_transition(status: JobStatus) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(status, status)


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (S.SCHEDULED, False),
        (S.QUEUED, False),
        (S.RUNNING, False),
        (S.SUCCEEDED, True),
        (S.FAILED, True),
        (S.CANCELLED, True),
    ],
    ids=str,
)
def test_is_terminal_marks_finished_statuses(status: JobStatus, terminal: bool) -> None:
    assert status.is_terminal is terminal


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.CANCELLED], ids=str)
def test_can_transition_terminal_without_exit_has_no_successor(status: JobStatus) -> None:
    assert not any(can_transition(status, target) for target in JobStatus)


def test_can_transition_failed_only_leaves_to_scheduled() -> None:
    assert [t for t in JobStatus if can_transition(S.FAILED, t)] == [S.SCHEDULED]
