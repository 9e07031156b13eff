"""Table maintenance: watches the dead row versions of the hot tables and, when
autovacuum is off or not keeping up, says so and (``maintenance.vacuum = "auto"``) runs
``VACUUM (ANALYZE)`` on them itself (docs/adr/0012-table-health.md). It runs beside the
pruner, in the same service.

On PostgreSQL each transition of a job leaves a dead version of its row; past a few
hundred thousand of them the claim reads through them all and the system decays
(issue 25: start latency from 5 ms to 200 s on a server with autovacuum off).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from taskmill.core.errors import StoreError
from taskmill.core.table_health import HOT_TABLES, TableStats, VacuumMode
from taskmill.observability import metrics
from taskmill.store.protocol import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    mode: VacuumMode = VacuumMode.AUTO
    interval_seconds: float = 60.0
    dead_rows_threshold: int = 10_000
    """A table with this many dead row versions is behind (autovacuum off or lagging)."""
    vacuum_timeout_seconds: float = 600.0
    """One VACUUM, waiting for its lock included, is stopped after this long."""
    vacuum_cost_delay_ms: float = 2.0
    """The VACUUM's sleep per ``vacuum_cost_limit`` of work (autovacuum's default)."""
    tables: tuple[str, ...] = HOT_TABLES


class TableMaintenance:
    """``run_once()`` reads the hot tables' statistics, warns about those behind and, in
    ``auto`` mode, vacuums them one at a time, each table's failure logged and counted
    without stopping the others."""

    name = "table-maintenance"

    def __init__(self, store: Store, config: MaintenanceConfig) -> None:
        self.store = store
        self.config = config
        self._told_autovacuum_off = False

    async def stats(self) -> list[TableStats] | None:
        """The hot tables' statistics now; ``None``: nothing to watch (SQLite)."""
        return await self.store.table_stats(self.config.tables)

    async def warnings(self) -> list[str]:
        """One line per table behind (``/readyz``), none when the mode is ``off``."""
        if self.config.mode is VacuumMode.OFF:
            return []
        behind = self._behind(await self.stats() or [])
        return [table.warning() for table in behind]

    async def run_once(self) -> int:
        """One round; return how many tables it vacuumed."""
        if self.config.mode is VacuumMode.OFF:
            return 0
        stats = await self.stats()
        if not stats:
            return 0
        self._tell_autovacuum_off(stats)
        vacuumed = 0
        for table in self._behind(stats):
            if table.vacuuming:
                log.info("%s: %d dead row versions, a VACUUM is under way", *_counts(table))
            elif self.config.mode is VacuumMode.WARN:
                log.warning(
                    "%s: %d dead row versions (%s); vacuum it (maintenance.vacuum is warn)",
                    table.table,
                    table.dead_rows,
                    table.warning(),
                )
            elif await self._vacuum(table):
                vacuumed += 1
        return vacuumed

    def _behind(self, stats: list[TableStats]) -> list[TableStats]:
        return [table for table in stats if table.behind(self.config.dead_rows_threshold)]

    async def _vacuum(self, table: TableStats) -> bool:
        log.warning("%s: %d dead row versions; running VACUUM (ANALYZE)", *_counts(table))
        try:
            done = await self.store.vacuum_table(
                table.table,
                timeout_seconds=self.config.vacuum_timeout_seconds,
                cost_delay_ms=self.config.vacuum_cost_delay_ms,
            )
        except StoreError as exc:
            # One table's failure (a timeout, a lock it waited for) leaves the others.
            log.error("%s: VACUUM failed: %s", table.table, exc)
            metrics.table_vacuumed(table.table, "failed")
            return False
        if not done:
            log.info("%s: another process is vacuuming it", table.table)
            metrics.table_vacuumed(table.table, "skipped")
            return False
        log.info("%s: vacuumed", table.table)
        metrics.table_vacuumed(table.table, "done")
        return True

    def _tell_autovacuum_off(self, stats: list[TableStats]) -> None:
        off = [table.table for table in stats if not table.autovacuum]
        if off and not self._told_autovacuum_off:
            action = "vacuums them" if self.config.mode is VacuumMode.AUTO else "warns"
            log.warning(
                "autovacuum is off for %s: taskmill %s when %d dead row versions pile up "
                "(maintenance.dead_tuples_threshold)",
                ", ".join(off),
                action,
                self.config.dead_rows_threshold,
            )
        self._told_autovacuum_off = bool(off)

    async def next_wake_at(self) -> datetime | None:
        return None  # dead rows accumulate continuously: look again every interval


def _counts(table: TableStats) -> tuple[str, int]:
    return table.table, table.dead_rows
