"""Job dependencies as records: what a job waits on, and what waits on it.

A job names its upstream jobs (``depends_on``) when it is created, and only jobs that
already exist, of the same merchant. No edge is ever added to an existing job, so the
dependency graph is acyclic by construction: every edge points from a newer job to an
older one. See ``docs/howto/dependencies.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import DependencyFailurePolicy, JobStatus

CASCADE_ACTOR = "dependency-checker"
"""The actor of the ``job.cancelled`` events that failure propagation writes."""


@dataclass(frozen=True, slots=True)
class JobLink:
    """One job at the other end of a dependency."""

    id: str
    status: JobStatus
    task_type: str


@dataclass(frozen=True, slots=True)
class JobDependencies:
    """A job's upstream jobs (it waits on them) and downstream jobs (they wait on it)."""

    job_id: str
    on_dependency_failure: DependencyFailurePolicy
    upstream: list[JobLink]
    downstream: list[JobLink]


def cascade_reason(upstream_id: str, root_id: str, root_status: JobStatus) -> str:
    """The ``cancel_reason`` of a job cancelled because ``upstream_id`` ended.

    ``root_id`` is the job whose failure or cancellation started the cascade (the
    upstream itself, or a job further up the chain).
    """
    if upstream_id == root_id:
        return f"dependency {upstream_id} {root_status.value}"
    return f"dependency {upstream_id} cancelled: upstream {root_id} {root_status.value}"


def parse_policy(value: DependencyFailurePolicy | str) -> DependencyFailurePolicy:
    """``value`` as a policy, or ``ValidationError`` naming ``on_dependency_failure``."""
    try:
        return DependencyFailurePolicy(value)
    except ValueError:
        choices = ", ".join(repr(p.value) for p in DependencyFailurePolicy)
        raise ValidationError("on_dependency_failure", f"must be one of {choices}") from None
