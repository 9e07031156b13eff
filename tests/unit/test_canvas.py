"""Flattening chains and groups into jobs and the earlier jobs each waits on."""

from __future__ import annotations

import pytest

from taskmill import Chain, Group, Signature, UpstreamResults, ValidationError
from taskmill.core.canvas import UpstreamResult, plan
from taskmill.core.jobs import JobStatus


def _s(name: str) -> Signature:
    return Signature(name)


def test_canvas_chain_links_each_step_to_the_one_before() -> None:
    flat = plan(Chain(_s("a"), _s("b"), _s("c")))
    assert [s.task for s in flat.signatures] == ["a", "b", "c"]
    assert flat.links == [[], [0], [1]]


def test_canvas_group_in_a_chain_waits_on_every_member() -> None:
    """a, then b1 b2 b3 side by side, then d once all three are done (a chord)."""
    flat = plan(Chain(_s("a"), Group(_s("b1"), _s("b2"), _s("b3")), _s("d")))
    assert [s.task for s in flat.signatures] == ["a", "b1", "b2", "b3", "d"]
    assert flat.links == [[], [0], [0], [0], [1, 2, 3]]


def test_canvas_group_of_chains_ends_with_each_chain_tail() -> None:
    flat = plan(Chain(Group(Chain(_s("a1"), _s("a2")), _s("b")), _s("c")))
    assert [s.task for s in flat.signatures] == ["a1", "a2", "b", "c"]
    assert flat.links == [[], [0], [], [1, 2]]


@pytest.mark.parametrize(
    ("canvas", "where", "kind"),
    [
        (Chain(), "jobs", "chain"),
        (Group(), "jobs", "group"),
        (Chain(_s("a"), Group(), _s("b")), "jobs[1]", "group"),
        (Group(_s("a"), Chain()), "jobs[1]", "chain"),
    ],
)
def test_canvas_empty_chain_or_group_is_refused(
    canvas: Chain | Group, where: str, kind: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        plan(canvas)
    assert caught.value.field == where
    assert caught.value.reason == f"an empty {kind}: it needs at least one task"


def test_canvas_over_the_limit_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        plan(Group(*[_s("a")] * 11), limit=10)
    assert caught.value.field == "jobs" and "at most 10" in caught.value.reason
    assert len(plan(Group(*[_s("a")] * 10), limit=10).signatures) == 10


def test_canvas_refuses_what_is_not_a_signature_naming_where() -> None:
    with pytest.raises(ValidationError) as caught:
        plan(Chain(_s("a"), Group(_s("b"), "c")))  # type: ignore[arg-type]
    assert caught.value.field == "jobs[1][1]" and "not str" in caught.value.reason


def test_upstream_results_map_ids_to_results_in_order() -> None:
    results = UpstreamResults(
        [
            UpstreamResult("j2", "t", JobStatus.SUCCEEDED, {"n": 2}),
            UpstreamResult("j1", "t", JobStatus.FAILED, None),
        ]
    )
    assert list(results) == ["j2", "j1"] and results["j2"] == {"n": 2}
    assert results.results == [{"n": 2}, None] and len(results) == 2
    assert [j.status for j in results.jobs] == [JobStatus.SUCCEEDED, JobStatus.FAILED]
