"""The one composition root: builds everything from settings, closes it in reverse."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from taskmill.brokers.base import Broker
from taskmill.brokers.database import DatabaseBroker
from taskmill.config import ApiSettings, Settings
from taskmill.core.clock import Clock, SystemClock
from taskmill.core.errors import ConfigError, StoreUnavailable
from taskmill.core.events import EventType
from taskmill.core.retry import BackoffPolicy
from taskmill.core.table_health import VacuumMode
from taskmill.executors.http_builtin import http_task
from taskmill.executors.process import process_task
from taskmill.executors.python import PythonExecutor, TaskDefinition, TaskRegistry
from taskmill.services.api_keys import ApiKeys
from taskmill.services.event_handlers import BATCH as EVENT_BATCH
from taskmill.services.event_handlers import EventDispatcher, Subscription
from taskmill.services.failure_watcher import FailureWatcher, FailureWatcherConfig
from taskmill.services.jobs import Jobs
from taskmill.services.loop import PeriodicService, Waker, run_periodically, unless_stopped
from taskmill.services.pruner import Pruner, PrunerConfig
from taskmill.services.queue_populator import QueuePopulator, QueuePopulatorConfig
from taskmill.services.recurrence_manager import RecurrenceConfig, RecurrenceManager
from taskmill.services.runner import ServiceMain, run_services
from taskmill.services.scheduling import Defaults, Scheduler
from taskmill.services.table_maintenance import MaintenanceConfig, TableMaintenance
from taskmill.services.templates import MerchantLimits, Templates
from taskmill.services.waiting import JobWaiters, Listen
from taskmill.services.worker import Worker, WorkerConfig
from taskmill.store import migrate, notify
from taskmill.store.database import Database
from taskmill.store.drivers import store_for

log = logging.getLogger(__name__)

# The built-in event handler that switches a template off when one of its jobs fails
# for good (``on_job_failure: disable``); runs where the recurrence manager runs.
TEMPLATE_ON_JOB_FAILURE = "taskmill.template-on-job-failure"

# The first connection's backoff: 0.5, 1, 2, 4, 5, 5 ... seconds between tries.
FIRST_CONNECT_DELAY, MAX_CONNECT_DELAY = 0.5, 5.0


def build_broker(settings: Settings, consumer: str) -> Broker:
    """The broker named by ``broker.url``; the database when unset."""
    url = settings.broker.url
    if url is None or url == "database":
        return DatabaseBroker()
    scheme = url.split(":", 1)[0]
    if scheme in ("redis", "rediss"):
        try:
            from taskmill.brokers.redis import RedisBroker
        except ImportError as exc:
            raise ConfigError("broker.url: Redis needs `pip install taskmill[redis]`") from exc
        return RedisBroker(
            url,
            prefix=settings.broker.prefix,
            consumer=consumer,
            reclaim_idle_seconds=settings.broker.reclaim_idle_seconds,
        )
    if scheme in ("amqp", "amqps"):
        try:
            from taskmill.brokers.rabbitmq import RabbitMQBroker
        except ImportError as exc:
            raise ConfigError(
                "broker.url: RabbitMQ needs `pip install taskmill[rabbitmq]`"
            ) from exc
        return RabbitMQBroker(
            url, prefix=settings.broker.prefix, timeout_seconds=settings.broker.timeout_seconds
        )
    raise ConfigError(
        f"broker.url: {scheme!r} brokers are not available in this version "
        "(use redis://…, amqp://…, or leave it unset to use the database)"
    )


def builtin_tasks(settings: Settings) -> list[TaskDefinition]:
    """Task types taskmill itself provides (seed 004's executors), as configured."""
    tasks: list[TaskDefinition] = []
    if settings.http.enabled:
        tasks.append(http_task(settings.http.executor_config(settings.tasks.max_retries)))
    if settings.process.enabled:  # off by default: it runs programs on the worker's machine
        tasks.append(process_task(settings.process.executor_config(settings.tasks.max_retries)))
    return tasks


def load_hmac_secret(api: ApiSettings) -> bytes:
    """``api.secret_key``, or the key in ``api.secret_key_file`` (created, mode 0600, on
    first use so that an embedded install works without set-up)."""
    if api.secret_key:
        return api.secret_key.encode()
    path = Path(api.secret_key_file)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        log.info("created API key secret %s (keep it with the database)", path)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ConfigError(f"api.secret_key_file: {path} holds fewer than 32 characters")
    return secret.encode()


def merchant_limits(settings: Settings) -> MerchantLimits:
    """The ``[scheduler]`` quotas every producer enforces on a merchant's requests."""
    sched = settings.scheduler
    return MerchantLimits(
        min_interval_seconds=sched.min_interval_seconds,
        max_templates_per_merchant=sched.max_templates_per_merchant,
        max_pending_jobs_per_merchant=sched.max_pending_jobs_per_merchant,
    )


@dataclass(slots=True)
class Wakers:
    populator: Waker
    watcher: Waker
    recurrence: Waker
    pruner: Waker


class Runtime:
    """Database, broker, executor and services for one process."""

    def __init__(
        self, settings: Settings, registry: TaskRegistry, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        for definition in builtin_tasks(settings):
            registry.add(definition)
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.db = Database.from_url(
            settings.database.url,
            pool_size=settings.database.pool_size,
            transaction_pooler=settings.database.transaction_pooler,
        )
        self.store = store_for(self.db)
        worker_config = self._worker_config()
        self.broker = build_broker(settings, worker_config.worker_id)
        self.wakers = Wakers(Waker(), Waker(), Waker(), Waker())
        self.scheduler = Scheduler(
            self.store,
            registry,
            self.clock,
            Defaults(settings.tasks.max_retries, settings.tasks.timeout_seconds),
            self.broker,
            merchant_limits(settings),
        )
        self.templates = Templates(self.store, self.clock, merchant_limits(settings))
        sched = settings.scheduler
        self.populator = QueuePopulator(
            self.store,
            self.broker,
            self.clock,
            QueuePopulatorConfig(
                batch_size=sched.batch_size,
                merchants_in_turn=sched.max_running_per_merchant is not None,
            ),
        )
        self.watcher = FailureWatcher(
            self.store,
            self.broker,
            FailureWatcherConfig(
                batch_size=sched.batch_size,
                worker_dead_after_seconds=sched.worker_dead_after_seconds,
                requeue_after_seconds=sched.requeue_after_seconds,
            ),
            on_rescued=self.wakers.populator.wake,
        )
        self.recurrence = RecurrenceManager(
            self.store,
            self.clock,
            RecurrenceConfig(
                batch_size=sched.batch_size,
                max_catchup=sched.max_catchup,
                misfire_grace_seconds=sched.misfire_grace_seconds,
                max_pending_per_merchant=sched.max_pending_jobs_per_merchant,
                lookahead_seconds=sched.lookahead_seconds,
            ),
            on_created=self.wakers.populator.wake,
        )
        retention = settings.retention
        self.pruner = Pruner(
            self.store,
            self.clock,
            PrunerConfig(
                retention=retention.retention(),
                batch_size=retention.batch_size,
                pause_seconds=retention.pause_seconds,
            ),
        )
        self.maintenance = TableMaintenance(self.store, self._maintenance_config())
        self.worker = Worker(
            self.store,
            self.broker,
            PythonExecutor(registry, max_threads=settings.worker.concurrency),
            self.clock,
            worker_config,
        )
        # Every door (the library, the API, the CLI) goes through this one service.
        self.jobs = Jobs(self.store, self.clock, self.scheduler, self.templates, self)
        # Callers waiting for jobs to finish, woken by this process's worker and, on
        # PostgreSQL, by the taskmill_finished notification.
        self.waiters = JobWaiters(
            self.store, poll_seconds=sched.wait_poll_seconds, listen=self._finish_listener()
        )
        self.worker.on_outcome = self.waiters.wake
        # The application's event handlers (``Taskmill.on_event``), run in every process.
        self.subscriptions: list[Subscription] = []

    def _maintenance_config(self) -> MaintenanceConfig:
        m = self.settings.maintenance
        mode = m.vacuum
        if mode is VacuumMode.AUTO and self.settings.database.transaction_pooler:
            # VACUUM needs its session (the advisory lock, the timeouts): a transaction
            # pooler may hand each statement to another server connection.
            log.warning(
                "maintenance.vacuum = auto acts as warn behind a transaction pooler "
                "(database.transaction_pooler): vacuum the hot tables from a direct connection"
            )
            mode = VacuumMode.WARN
        return MaintenanceConfig(
            mode=mode,
            interval_seconds=m.interval_seconds,
            dead_rows_threshold=m.dead_tuples_threshold,
            vacuum_timeout_seconds=m.vacuum_timeout_seconds,
            vacuum_cost_delay_ms=m.vacuum_cost_delay_ms,
        )

    def _worker_config(self) -> WorkerConfig:
        w, r = self.settings.worker, self.settings.retry
        hostname = socket.gethostname()
        return WorkerConfig(
            worker_id=w.worker_id or f"{hostname}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            queues=w.queues,
            concurrency=w.concurrency,
            lease_seconds=w.lease_seconds,
            heartbeat_seconds=w.heartbeat_seconds,
            poll_interval=self.settings.scheduler.poll_interval_seconds,
            shutdown_grace_seconds=w.shutdown_grace_seconds,
            max_result_bytes=w.max_result_bytes,
            backoff=BackoffPolicy(r.base_seconds, r.factor, r.cap_seconds, r.jitter),
            hostname=hostname,
            pid=os.getpid(),
            max_running_per_merchant=self.settings.scheduler.max_running_per_merchant,
        )

    @functools.cached_property
    def api_keys(self) -> ApiKeys:
        """API key issuing and checking (built on first use: it may create the secret file)."""
        return ApiKeys(self.store, self.clock, load_hmac_secret(self.settings.api))

    async def open(self) -> None:
        """Connect and, unless disabled, migrate the schema to the newest revision. An
        unreachable database is retried with backoff for ``database.connect_timeout_seconds``
        (each try logged), then the last error is raised."""
        timeout = self.settings.database.connect_timeout_seconds
        deadline = time.monotonic() + timeout
        delay, tries = FIRST_CONNECT_DELAY, 1
        while True:
            try:
                if self.settings.database.migrate_on_start:
                    await migrate.upgrade(self.db)
                else:
                    await migrate.current_revision(self.db)  # the connection alone
                return
            except StoreUnavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("database unreachable, %d tries in %.0f s: %s", tries, timeout, exc)
                    raise
                wait = min(delay, left)
                log.warning(
                    "database unreachable (try %d): %s; next try in %.1f s, giving up in %.0f s",
                    tries,
                    exc,
                    wait,
                    left,
                )
                await asyncio.sleep(wait)
                delay, tries = min(delay * 2, MAX_CONNECT_DELAY), tries + 1

    async def schema_is_current(self) -> bool:
        """Whether the database is migrated to this version's newest revision."""
        return await migrate.is_current(self.db)

    async def close(self) -> None:
        await self.waiters.close()
        await self.scheduler.drain()
        await self.broker.close()
        await self.store.close()

    def _periodic(self, service: PeriodicService, waker: Waker, interval: float) -> ServiceMain:
        async def main(stop: asyncio.Event) -> None:
            log.info("%s started", service.name)
            await run_periodically(
                service,
                clock=self.clock,
                stop=stop,
                waker=waker,
                poll_interval=interval,
                batch_size=self.settings.scheduler.batch_size,
            )
            log.info("%s stopped", service.name)

        return main

    def _pruning(self) -> ServiceMain:
        """The pruner, and beside it the table maintenance: both keep the tables in
        shape, neither is on a job's path (docs/adr/0012-table-health.md)."""
        retention = self.settings.retention

        async def main(stop: asyncio.Event) -> None:
            log.info("pruner started")
            pruning = run_periodically(
                self.pruner,
                clock=self.clock,
                stop=stop,
                waker=self.wakers.pruner,
                poll_interval=retention.interval_seconds,
                # A batch that deleted anything is followed by another (after the pause):
                # a short one may have emptied one status while the next has work.
                batch_size=1,
                busy_pause=retention.pause_seconds,
            )
            async with asyncio.TaskGroup() as both:  # one failing ends the other
                both.create_task(pruning)
                both.create_task(self._maintaining(stop))
            log.info("pruner stopped")

        return main

    async def _maintaining(self, stop: asyncio.Event) -> None:
        if self.maintenance.config.mode is VacuumMode.OFF:
            return  # (on SQLite each round returns at once: no statistics to read)
        rounds = run_periodically(
            self.maintenance,
            clock=self.clock,
            stop=stop,
            waker=Waker(),
            poll_interval=self.maintenance.config.interval_seconds,
            batch_size=len(self.maintenance.config.tables) + 1,  # never "busy": wait
        )
        # A VACUUM may take minutes: at stop it is cancelled (asyncpg cancels the
        # statement on the server), not waited for.
        await unless_stopped(rounds, stop)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == notify.DUE:
            self.wakers.populator.wake()
        elif channel == notify.TEMPLATES:
            self.wakers.recurrence.wake()
        elif channel == notify.QUEUED and isinstance(self.broker, DatabaseBroker):
            self.broker.wake()
        elif channel == notify.CANCELLED and payload:
            self.job_cancelled(payload, "cancelled")

    # -- the jobs service's wake-ups (services.jobs.Wakeups) -----------------------------

    def jobs_due(self) -> None:
        self.wakers.populator.wake()

    def templates_changed(self) -> None:
        self.wakers.recurrence.wake()

    def job_cancelled(self, job_id: str, reason: str) -> None:
        """Stop this process's run of ``job_id``, if it has one (other processes hear of
        it through the cancel's PostgreSQL notification)."""
        self.worker.notify_lost(job_id, f"cancelled: {reason}")
        self.waiters.wake()

    def _finish_listener(self) -> Listen | None:
        """Other processes' ``taskmill_finished`` wake-ups for the waiters, where they
        reach this process."""
        wakeups = self.store.wakeup_listener(self.settings.database.listener_url)
        if wakeups is None:
            return None

        async def listen(on_finished: Callable[[], None], stop: asyncio.Event) -> None:
            await wakeups([notify.FINISHED], lambda _c, _p: on_finished(), stop)

        return listen

    def _listener(self) -> ServiceMain | None:
        """Other processes' wake-ups for this process's services: PostgreSQL's
        notifications, SQLite's datagrams (``store/sqlite/wakeups.py``)."""
        wakeups = self.store.wakeup_listener(self.settings.database.listener_url)
        if wakeups is None:
            return None

        async def main(stop: asyncio.Event) -> None:
            log.info("listening for other processes' wake-ups")
            await wakeups(notify.CHANNELS, self._on_notify, stop)

        return main

    def _event_handlers(self, subscriptions: list[Subscription]) -> ServiceMain:
        holder = self.worker.config.worker_id
        dispatcher = EventDispatcher(self.store, self.clock, subscriptions, holder)

        async def main(stop: asyncio.Event) -> None:
            log.info("event handlers started: %s", ", ".join(s.name for s in subscriptions))
            try:
                await run_periodically(
                    dispatcher,
                    clock=self.clock,
                    stop=stop,
                    waker=Waker(),
                    poll_interval=self.settings.scheduler.poll_interval_seconds,
                    batch_size=EVENT_BATCH,
                )
            finally:
                await dispatcher.close()

        return main

    def services(self, only: Collection[str] | None = None) -> dict[str, ServiceMain]:
        """Every service (``taskmill run``), or those named in ``only`` (one per process:
        ``taskmill executor`` and the like). On PostgreSQL a notification listener joins
        them (on SQLite, a listener for the datagrams other processes send after their
        commits), so work queued by other processes is seen at once (not behind a
        transaction pooler without ``database.listen_url``: polls only). Without ``only``,
        ``worker.enabled`` and ``scheduler.enabled`` say which services run."""
        if only is None:
            only = self._enabled_services()
        chosen = {k: v for k, v in self._all_services().items() if k in only}
        handlers = list(self.subscriptions)
        if "recurrence-manager" in chosen:  # templates' on_job_failure, beside their firing
            handlers.append(
                Subscription(
                    TEMPLATE_ON_JOB_FAILURE, (EventType.JOB_FAILED,), self.jobs.template_job_failed
                )
            )
        if handlers:
            chosen["event-handlers"] = self._event_handlers(handlers)
        wakeups = self._listener()
        if wakeups is not None and set(chosen) - {"failure-watcher", "pruner"}:
            chosen["pg-listener" if self.store.notifies else "sqlite-wakeups"] = wakeups
        return chosen

    def _enabled_services(self) -> set[str]:
        enabled = set()
        if self.settings.worker.enabled:
            enabled.add("executor")
        if self.settings.scheduler.enabled:
            enabled |= {"queue-populator", "failure-watcher", "recurrence-manager", "pruner"}
        return enabled

    def _all_services(self) -> dict[str, ServiceMain]:
        sched = self.settings.scheduler
        return {
            "queue-populator": self._periodic(
                self.populator, self.wakers.populator, sched.poll_interval_seconds
            ),
            "failure-watcher": self._periodic(
                self.watcher, self.wakers.watcher, sched.watcher_interval_seconds
            ),
            "recurrence-manager": self._periodic(
                self.recurrence, self.wakers.recurrence, sched.poll_interval_seconds
            ),
            "pruner": self._pruning(),
            "executor": self.worker.run,
        }

    async def run(
        self, stop: asyncio.Event, services: dict[str, ServiceMain] | None = None
    ) -> None:
        """Run ``services`` (default: all of them) until ``stop``."""
        await run_services(self.services() if services is None else services, stop)
