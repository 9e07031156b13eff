"""The recurrence manager (seed 000): active templates -> one job instance per tick.

A shared service: nothing one tenant stores may stop it. A template whose schedule
cannot be evaluated (whatever it raises) is switched off with the reason as its
``last_error`` and a ``template.error`` event, logged with its id and merchant, and the
round goes on with the other templates (docs/adr/0006-isolating-bad-templates.md).

With ``lookahead_seconds``, the ticks of the next few seconds are created ahead, as
``scheduled`` jobs whose ``run_at`` is the tick, so that only the queue populator's
timer stands between a tick and its start (docs/adr/0015-create-ahead-lookahead.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from taskmill.core.clock import Clock
from taskmill.core.errors import TaskmillError
from taskmill.core.templates import OverlapPolicy, Template, plan_fires
from taskmill.store.protocol import Broken, Fire, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecurrenceConfig:
    batch_size: int = 100
    max_catchup: int = 10
    misfire_grace_seconds: float = 60.0
    actor: str = "recurrence-manager"
    max_pending_per_merchant: int | None = None
    lookahead_seconds: float = 0.0
    """Create instances this early (0: at their tick). Not for overlap policy ``skip``,
    whose "previous instance unfinished" is judged at the tick."""


class RecurrenceManager:
    """Fires due templates; safe with replicas (unique ``(template_id, scheduled_for)``)."""

    name = "recurrence-manager"

    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: RecurrenceConfig,
        on_created: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.on_created = on_created

    async def run_once(self) -> int:
        """Fire every due template once; return how many templates were handled."""
        now = self.clock.now()
        ahead = self._ahead_until(now)
        done = await self.store.fire_due_templates(
            now=now,
            limit=self.config.batch_size,
            planner=lambda template: self._plan(template, now, ahead),
            actor=self.config.actor,
            max_pending_per_merchant=self.config.max_pending_per_merchant,
            ahead_until=ahead,
        )
        for broken in done.broken:
            log.error(
                "template %s of merchant %s switched off: %s",
                broken.template_id,
                broken.merchant_id,
                broken.reason,
                extra={"template_id": broken.template_id, "merchant_id": broken.merchant_id},
            )
        if done.created:
            log.info("created %d job instances from templates", done.created)
            self.on_created()
        return done.taken

    def _ahead_until(self, now: datetime) -> datetime | None:
        if self.config.lookahead_seconds <= 0:
            return None
        return now + timedelta(seconds=self.config.lookahead_seconds)

    def _plan(self, template: Template, now: datetime, ahead: datetime | None) -> Fire | Broken:
        assert template.next_run_at is not None  # fire_due takes due templates only
        if template.overlap_policy is OverlapPolicy.SKIP:
            ahead = None  # fire_due took it because it is due now: no tick ahead
        try:
            plan = plan_fires(
                template.schedule(),
                template.next_run_at,
                now,
                template.misfire_policy,
                max_catchup=self.config.max_catchup,
                grace_seconds=self.config.misfire_grace_seconds,
                until=ahead,
            )
        except Exception as exc:  # one template's failure must stay its own
            return self._broken(template, exc)
        if plan.dropped:
            log.warning(
                "template %s: %d missed ticks not run (misfire policy %s)",
                template.id,
                plan.dropped,
                template.misfire_policy.value,
            )
        return Fire(template, plan.fire_at, plan.next_run_at)

    def _broken(self, template: Template, exc: Exception) -> Broken:
        if isinstance(exc, TaskmillError):
            reason = f"its schedule cannot be evaluated: {exc}"
        else:  # a bug's text is for the log, not for the tenant
            reason = f"its schedule cannot be evaluated ({type(exc).__name__})"
            log.exception(
                "template %s of merchant %s: evaluating its schedule failed",
                template.id,
                template.merchant_id,
                exc_info=exc,
            )
        return Broken(template.id, template.merchant_id, template.next_run_at, reason)

    async def next_wake_at(self) -> datetime | None:
        return await self.store.next_template_due_at(self.config.lookahead_seconds)
