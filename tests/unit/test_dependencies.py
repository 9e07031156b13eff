"""Dependency records: the failure policy and the reasons a cascade writes."""

from __future__ import annotations

import pytest

from taskmill.core.dependencies import cascade_reason, parse_policy
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import DependencyFailurePolicy, JobStatus


def test_parse_policy_accepts_names_and_members() -> None:
    assert parse_policy("run") is DependencyFailurePolicy.RUN
    assert parse_policy(DependencyFailurePolicy.CANCEL) is DependencyFailurePolicy.CANCEL


def test_parse_policy_unknown_names_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        parse_policy("ignore")
    assert err.value.field == "on_dependency_failure"
    assert "'cancel'" in err.value.reason and "'run'" in err.value.reason


def test_cascade_reason_direct_and_transitive() -> None:
    assert cascade_reason("a", "a", JobStatus.FAILED) == "dependency a failed"
    assert cascade_reason("a", "a", JobStatus.CANCELLED) == "dependency a cancelled"
    assert cascade_reason("b", "a", JobStatus.FAILED) == "dependency b cancelled: upstream a failed"
