"""Chains and groups of tasks (Celery's canvas, Dramatiq's pipelines), built on
``depends_on``: a chain's step waits on the step before it, the jobs after a group wait
on every member. Pure data here; ``Taskmill.chain``/``Taskmill.group`` schedule one in a
single transaction (``docs/howto/chains-and-rate-limits.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import DependencyFailurePolicy, JobStatus

MAX_CANVAS_JOBS = 1_000
"""The most jobs one chain or group creates (nested ones counted)."""


@dataclass(frozen=True, slots=True)
class Signature:
    """One task to schedule: its type, payload and options, as ``Taskmill.schedule``
    takes them. ``on_dependency_failure`` applies to the steps it waits on in a chain
    (``"cancel"``: the chain stops at a failure; ``"run"``: this step runs anyway);
    ``depends_on`` adds existing jobs to wait on."""

    task: str
    payload: Any = None
    run_at: datetime | None = None
    queue: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    timeout: float | None = None
    depends_on: Sequence[str] = ()
    on_dependency_failure: DependencyFailurePolicy | str = DependencyFailurePolicy.CANCEL


@dataclass(frozen=True, slots=True, init=False)
class Chain:
    """Steps run one after another: each waits on the whole step before it."""

    steps: tuple[Canvas, ...]

    def __init__(self, *steps: Canvas) -> None:
        object.__setattr__(self, "steps", tuple(steps))


@dataclass(frozen=True, slots=True, init=False)
class Group:
    """Members run side by side; what follows a group waits on every member."""

    members: tuple[Canvas, ...]

    def __init__(self, *members: Canvas) -> None:
        object.__setattr__(self, "members", tuple(members))


Canvas = Signature | Chain | Group


@dataclass(slots=True)
class Plan:
    """A canvas flattened: the signatures in creation order, and for each the indices of
    the earlier ones it waits on."""

    signatures: list[Signature] = field(default_factory=list)
    links: list[list[int]] = field(default_factory=list)


def plan(canvas: Canvas, *, limit: int = MAX_CANVAS_JOBS) -> Plan:
    """Flatten ``canvas``; ``ValidationError`` when it creates more than ``limit`` jobs
    (naming ``jobs``), or holds an empty chain or group or something that is not a
    signature, chain or group (naming where: ``jobs[1][0]`` is the first member of the
    second step)."""
    flat = Plan()
    _add(canvas, [], flat, limit, "jobs")
    return flat


def _add(node: object, after: list[int], flat: Plan, limit: int, where: str) -> list[int]:
    """Append ``node``'s jobs, each first one waiting on ``after``; return the jobs that
    end it (what the next step must wait on)."""
    if isinstance(node, Signature):
        if len(flat.signatures) >= limit:
            raise ValidationError("jobs", f"a chain or group creates at most {limit} jobs")
        flat.signatures.append(node)
        flat.links.append(list(after))
        return [len(flat.signatures) - 1]
    if isinstance(node, Chain | Group) and not (
        node.steps if isinstance(node, Chain) else node.members
    ):
        kind = "chain" if isinstance(node, Chain) else "group"
        raise ValidationError(where, f"an empty {kind}: it needs at least one task")
    if isinstance(node, Chain):
        for i, step in enumerate(node.steps):
            after = _add(step, after, flat, limit, f"{where}[{i}]")
        return after
    if isinstance(node, Group):
        ends: list[int] = []
        for i, member in enumerate(node.members):
            ends += _add(member, after, flat, limit, f"{where}[{i}]")
        return ends
    raise ValidationError(where, f"expected a Signature, Chain or Group, not {type(node).__name__}")


@dataclass(frozen=True, slots=True)
class UpstreamResult:
    """One job a job depends on: its status and, if it succeeded, its result."""

    job_id: str
    task_type: str
    status: JobStatus
    result: Any


class UpstreamResults(Mapping[str, Any]):
    """What ``await ctx.upstream_results()`` gives a handler: upstream job id -> result
    (``None`` for one that did not succeed: a ``run`` policy lets a job start after a
    failure), in creation order; :attr:`results` as a list in that order (a group's
    members in the order given), :attr:`jobs` with each status."""

    def __init__(self, upstream: Sequence[UpstreamResult]) -> None:
        self.jobs = list(upstream)
        self._by_id = {u.job_id: u.result for u in self.jobs}

    @property
    def results(self) -> list[Any]:
        return [u.result for u in self.jobs]

    def __getitem__(self, job_id: str) -> Any:
        return self._by_id[job_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)
