"""The recurrence manager (seed 000): active templates -> one job instance per tick."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from taskmill.core.clock import Clock
from taskmill.core.errors import TaskmillError
from taskmill.core.templates import Template, plan_fires
from taskmill.store import templates
from taskmill.store.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecurrenceConfig:
    batch_size: int = 100
    max_catchup: int = 10
    misfire_grace_seconds: float = 60.0
    actor: str = "recurrence-manager"


class RecurrenceManager:
    """Fires due templates; safe with replicas (unique ``(template_id, scheduled_for)``)."""

    name = "recurrence-manager"

    def __init__(
        self,
        db: Database,
        clock: Clock,
        config: RecurrenceConfig,
        on_created: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.on_created = on_created

    async def run_once(self) -> int:
        """Fire every due template once; return how many templates were handled."""
        now = self.clock.now()
        handled, created = await templates.fire_due(
            self.db,
            now,
            self.config.batch_size,
            lambda template: self._plan(template, now),
            actor=self.config.actor,
        )
        if created:
            log.info("created %d job instances from templates", created)
            self.on_created()
        return handled

    def _plan(self, template: Template, now: datetime) -> templates.Fire | None:
        assert template.next_run_at is not None  # fire_due takes due templates only
        try:
            plan = plan_fires(
                template.schedule(),
                template.next_run_at,
                now,
                template.misfire_policy,
                max_catchup=self.config.max_catchup,
                grace_seconds=self.config.misfire_grace_seconds,
            )
        except TaskmillError as exc:  # a template that can no longer be evaluated
            log.error("template %s cannot be scheduled: %s", template.id, exc)
            return None
        if plan.dropped:
            log.warning(
                "template %s: %d missed ticks not run (misfire policy %s)",
                template.id,
                plan.dropped,
                template.misfire_policy.value,
            )
        return templates.Fire(template, plan.fire_at, plan.next_run_at)

    async def next_wake_at(self) -> datetime | None:
        return await templates.next_template_due_at(self.db)
