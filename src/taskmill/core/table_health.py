"""Table health: the dead row versions a job queue leaves in its tables, and when they
call for a vacuum (docs/adr/0012-table-health.md).

Every transition of a job writes a new version of its row; on PostgreSQL the old one
stays until VACUUM reclaims it, and the claim reads through them all. This module only
judges: the store reads the statistics, ``services/table_maintenance.py`` acts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

#: The tables a queue churns: updated on every transition or run (jobs, job_runs), a
#: few rows updated over and over (workers, job_progress, event_cursors), and the
#: event log (inserted, then deleted by the pruner).
HOT_TABLES = ("jobs", "job_runs", "events", "workers", "job_progress", "event_cursors")


class VacuumMode(enum.StrEnum):
    """``maintenance.vacuum``: what taskmill does about a table whose dead row versions
    pile up (autovacuum off, or not keeping up)."""

    AUTO = "auto"  # warn, and run VACUUM (ANALYZE) on it
    WARN = "warn"  # warn only (the operator vacuums)
    OFF = "off"  # neither: do not even look


@dataclass(frozen=True, slots=True)
class TableStats:
    """One table as the database's statistics describe it now."""

    table: str
    live_rows: int
    dead_rows: int
    size_bytes: int
    last_vacuum: datetime | None
    last_autovacuum: datetime | None
    autovacuum: bool
    """Whether autovacuum may run on it (the server's setting, and the table's own)."""
    vacuuming: bool
    """Whether a VACUUM (auto or manual, any process) is working on it right now."""

    def behind(self, threshold: int) -> bool:
        """Whether its dead row versions reached ``threshold`` (vacuum is off or lags)."""
        return self.dead_rows >= threshold

    def warning(self) -> str:
        """What an operator is told about it (the log and ``/readyz``: no figures that
        would mean anything to a stranger beyond the table's name)."""
        why = "autovacuum is off" if not self.autovacuum else "autovacuum is not keeping up"
        return f"{self.table}: dead row versions pile up ({why})"
