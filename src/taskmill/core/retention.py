"""Retention: how long finished jobs and deleted templates' events are kept
(docs/adr/0009-retention.md).

A job's age is measured from ``finished_at`` (and, for a job cancelled before it was
due, from ``run_at`` too: the later of the two). A deleted template's own events are
aged from its ``template.deleted`` event. A stopped or dead worker's row is aged from
its last heartbeat and kept as long as the longest job age (the jobs it ran name it).
``None`` keeps forever.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import JobStatus

#: The tables a prune deletes from (a batch deletes the jobs last: foreign keys).
PRUNED_TABLES = ("jobs", "job_runs", "events", "job_dependencies", "workers")

#: Bounds of an age given on the command line (``taskmill prune --older-than``).
MIN_AGE = timedelta(minutes=1)
MAX_AGE = timedelta(days=3650)

_AGE = re.compile(r"([0-9]{1,7})([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str, field: str = "--older-than") -> timedelta:
    """``30m``, ``12h`` or ``7d`` as a ``timedelta`` between :data:`MIN_AGE` and
    :data:`MAX_AGE`; anything else raises :class:`ValidationError` naming ``field``."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise ValidationError(
            field, f"{text!r} is not an age: a whole number and m, h or d (30m, 12h, 7d)"
        )
    age = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if not MIN_AGE <= age <= MAX_AGE:
        raise ValidationError(field, f"{text!r} must be between 1m and 3650d")
    return age


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind of finished thing is kept; ``None``: forever."""

    succeeded: timedelta | None
    failed: timedelta | None
    cancelled: timedelta | None
    deleted_templates: timedelta | None

    @classmethod
    def everything_older_than(cls, age: timedelta) -> Retention:
        """One age for all (``taskmill prune --older-than``)."""
        return cls(age, age, age, age)

    def cutoffs(self, now: datetime) -> Cutoffs:
        """What is old enough to go at ``now``."""
        ages = (
            (JobStatus.SUCCEEDED, self.succeeded),
            (JobStatus.FAILED, self.failed),
            (JobStatus.CANCELLED, self.cancelled),
        )
        kept = [age for _, age in ages if age is not None]
        return Cutoffs(
            finished_before=tuple((status, now - age) for status, age in ages if age is not None),
            templates_deleted_before=(
                None if self.deleted_templates is None else now - self.deleted_templates
            ),
            # Every job age configured (one kept forever keeps every worker row, too):
            # a worker row goes no sooner than the last job that may name it.
            workers_gone_before=now - max(kept) if len(kept) == len(ages) else None,
        )


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Instants: a job in ``status`` that finished (and was due) before its instant goes
    with its runs, events and dependency rows; the events of a template deleted before
    ``templates_deleted_before`` go too (``None``: they stay)."""

    finished_before: tuple[tuple[JobStatus, datetime], ...]
    templates_deleted_before: datetime | None
    workers_gone_before: datetime | None = None
    """Stopped or dead workers whose last heartbeat is older go (``None``: they stay).
    Every process that runs a worker adds a row: a deployment restarted daily for a
    year would list hundreds of long-gone workers."""


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """Rows deleted (or, for a dry run, that would be) per table."""

    jobs: int = 0
    job_runs: int = 0
    events: int = 0
    job_dependencies: int = 0
    workers: int = 0

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.jobs + other.jobs,
            self.job_runs + other.job_runs,
            self.events + other.events,
            self.job_dependencies + other.job_dependencies,
            self.workers + other.workers,
        )

    @property
    def total(self) -> int:
        return sum(self.by_table().values())

    def by_table(self) -> dict[str, int]:
        """``{table: rows}`` in :data:`PRUNED_TABLES` order."""
        return {table: getattr(self, table) for table in PRUNED_TABLES}
