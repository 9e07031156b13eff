"""Settings: ``config/{environment}.toml`` plus environment variables (seed 002).

Precedence, highest first: arguments to :func:`load_settings`, ``TASKMILL_*`` variables
(nested with ``__``, e.g. ``TASKMILL_WORKER__CONCURRENCY``), ``DATABASE_URL`` /
``REDIS_URL`` (seed 000), the TOML file, defaults. Every key is in docs/configuration.md.
Read only above ``services``: services take their own small config objects.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from taskmill.core.errors import ConfigError
from taskmill.core.errors import ValidationError as InputError
from taskmill.core.jobs import MAX_RETRIES, MAX_TIMEOUT_SECONDS
from taskmill.core.retention import Retention, parse_age
from taskmill.core.table_health import VacuumMode

if TYPE_CHECKING:
    from taskmill.executors.http_builtin import HttpExecutorConfig
    from taskmill.executors.process import ProcessExecutorConfig

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_toml_file: ContextVar[Path | None] = ContextVar("taskmill_toml_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = "sqlite:///taskmill.db"
    pool_size: int = Field(default=10, gt=0, le=1000)
    migrate_on_start: bool = True
    connect_timeout_seconds: float = Field(default=60.0, ge=0, le=3600)
    """How long a process keeps retrying its first connection (with backoff, logging each
    try) before it gives up: services started before the database, or during its restart,
    wait for it instead of exiting. 0: give up at the first failure."""
    transaction_pooler: bool = False
    """``url`` reaches PostgreSQL through PgBouncer (or another pooler) in transaction
    pooling mode: no prepared statement outlives its transaction, and the wake-up
    listener connects to ``listen_url``, since a pooler cannot keep a ``LISTEN``."""
    listen_url: str | None = None
    """A direct URL to PostgreSQL for the wake-up listener (``LISTEN``). Unset: ``url``,
    or, with ``transaction_pooler``, no listener: processes then see work queued by
    other processes at their next poll."""

    @field_validator("listen_url")
    @classmethod
    def _listen_on_postgresql(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (the listener is PostgreSQL's)")
        return value

    @property
    def listener_url(self) -> str | None:
        """Where the wake-up listener connects; ``None``: nowhere (poll instead)."""
        if self.listen_url is not None:
            return self.listen_url
        return None if self.transaction_pooler else self.url


class BrokerSettings(_Section):
    url: str | None = None
    """``None``: the database is the broker (embedded default); ``redis://…`` for Redis,
    ``amqp://…`` / ``amqps://…`` for RabbitMQ."""
    prefix: str = Field(default="taskmill", min_length=1, max_length=100)
    """Redis key prefix / RabbitMQ queue-name prefix, so several deployments can share one
    broker."""
    reclaim_idle_seconds: float = Field(default=30.0, gt=0, le=86_400)
    """A hint a worker took but neither acked nor returned for this long is handed to
    another worker (the first one died between taking and claiming)."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    """RabbitMQ: how long connecting, declaring a queue or publishing (until every publisher
    confirm is in) may take, also while reconnecting, before the call fails."""


class WorkerSettings(_Section):
    enabled: bool = True
    """Whether ``taskmill run`` (and ``Taskmill.run``) runs the executor."""
    concurrency: int = Field(default=10, gt=0, le=10_000)
    queues: tuple[str, ...] = ("default",)
    lease_seconds: float = Field(default=30.0, gt=0, le=86_400)
    heartbeat_seconds: float = Field(default=10.0, gt=0, le=3600)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=86_400)
    worker_id: str | None = None
    max_result_bytes: int = Field(default=1_048_576, ge=1024, le=67_108_864)
    """A handler's result larger than this (as JSON) fails its attempt instead of being
    stored: it would be copied into the job's row, its ``job.succeeded`` event and every
    read of either (listings, the UI, the steps that depend on it)."""

    @field_validator("heartbeat_seconds")
    @classmethod
    def _heartbeat_within_lease(cls, value: float, info: ValidationInfo) -> float:
        lease = info.data.get("lease_seconds")
        if lease is not None and value >= lease:
            raise ValueError(f"must be smaller than lease_seconds ({lease})")
        return value

    @field_validator("queues")
    @classmethod
    def _some_queue(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not q.strip() for q in value):
            raise ValueError("must name at least one queue, none of them empty")
        return value


class SchedulerSettings(_Section):
    enabled: bool = True
    """Whether ``taskmill run`` runs the queue populator, failure watcher, recurrence
    manager and pruner."""
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    batch_size: int = Field(default=500, gt=0, le=100_000)
    watcher_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    worker_dead_after_seconds: float = Field(default=25.0, gt=0, le=86_400)
    """A worker silent this long is marked dead and its jobs rescued at once (2.5 missed
    heartbeats by default: sooner than the 30 s lease)."""
    requeue_after_seconds: float = Field(default=30.0, gt=0, le=86_400)
    """A job ``queued`` this long without being claimed is published again (its hint
    was lost: a broker flush or restart)."""
    wait_poll_seconds: float = Field(default=1.0, ge=0.1, le=60)
    """How often a process with callers waiting for jobs to finish (``app.wait``,
    ``GET /jobs/{id}?wait=``) reads which finished, without a wake-up: one query for all
    of them (PostgreSQL's ``taskmill_finished`` notification and this process's worker
    wake it sooner)."""
    misfire_grace_seconds: float = Field(default=60.0, ge=0, le=86400)
    max_catchup: int = Field(default=10, ge=1, le=1000)
    lookahead_seconds: float = Field(default=2.5, ge=0, le=60)
    """The recurrence manager creates a template's instances this long before their
    tick, as ``scheduled`` jobs that start at it (not for overlap policy ``skip``);
    0: at the tick (docs/adr/0015-create-ahead-lookahead.md)."""
    max_running_per_merchant: int | None = Field(default=None, gt=0, le=1_000_000)
    """At most this many jobs of one merchant run at once, across all workers, so one
    tenant's backlog cannot starve the others; unset: no cap."""
    min_interval_seconds: float = Field(default=1.0, ge=0.001, le=86_400)
    """The shortest ``interval_seconds`` a template may have (shorter ones are refused
    with 422 when created or updated), so no schedule can flood the scheduler."""
    max_templates_per_merchant: int = Field(default=1000, ge=1, le=1_000_000)
    """Templates one merchant may have (active or not); one more is refused with 429."""
    max_pending_jobs_per_merchant: int | None = Field(default=None, ge=1, le=100_000_000)
    """Jobs of one merchant that may wait to start (``scheduled`` or ``queued``); a new
    job over it is refused with 429 and a template's tick over it is skipped; unset:
    no cap."""


MINUTE_IN_DAYS = 1 / 1440


class RetentionSettings(_Section):
    """How long finished jobs are kept before the pruner deletes them with their runs,
    events and dependency rows (docs/howto/retention.md). Ages are days (a number) or an
    age such as ``"10m"``, ``"12h"``, ``"7d"``, measured from ``finished_at``; 0 keeps
    forever; otherwise 1 minute to 3650 days (a queue of millions of jobs a day keeps
    minutes, as Oban's pruner does by default)."""

    succeeded_after_days: float = 7.0
    failed_after_days: float = 30.0
    cancelled_after_days: float = 30.0
    deleted_templates_after_days: float = 30.0
    """A deleted template's own events (created, updated, deleted...) are kept this long
    after its deletion; a template's events stay as long as it exists."""
    batch_size: int = Field(default=1000, ge=1, le=1000)
    """Jobs deleted per transaction (with their runs, events and dependency rows)."""
    interval_seconds: float = Field(default=30.0, ge=1, le=86_400)
    """How often the pruner looks for jobs old enough to go, once it found none (as
    Oban's pruner: 30 s). Each pass deletes what aged meanwhile: a longer interval
    makes rarer, longer passes (at 500 jobs/s, 300 s left 150 batches to delete at
    once); a look that finds nothing is one indexed read."""
    pause_seconds: float = Field(default=0.1, ge=0, le=60)
    """The pause between two batches, so the pruner never holds the database's writers
    back for long (SQLite has one)."""

    @field_validator(
        "succeeded_after_days",
        "failed_after_days",
        "cancelled_after_days",
        "deleted_templates_after_days",
    )
    @classmethod
    def _age(cls, value: float) -> float:
        if value != 0 and not MINUTE_IN_DAYS <= value <= 3650:
            raise ValueError(
                "must be 0 (keep forever), or from 1 minute (0.000695) to 3650 days, "
                "or an age such as 10m, 12h, 7d"
            )
        return value

    @field_validator(
        "succeeded_after_days",
        "failed_after_days",
        "cancelled_after_days",
        "deleted_templates_after_days",
        mode="before",
    )
    @classmethod
    def _age_text(cls, value: object) -> object:
        """``"10m"``/``"12h"``/``"7d"`` as days; a plain number (also from the
        environment, where every value is text) is days as before."""
        if isinstance(value, str) and value.strip()[-1:] in ("m", "h", "d"):
            try:
                return parse_age(value, "age") / timedelta(days=1)
            except InputError as error:
                raise ValueError(error.reason) from None
        return value

    def retention(self) -> Retention:
        """The ages as the pruner takes them (``None``: kept forever)."""

        def age(days: float) -> timedelta | None:
            return None if days == 0 else timedelta(days=days)

        return Retention(
            succeeded=age(self.succeeded_after_days),
            failed=age(self.failed_after_days),
            cancelled=age(self.cancelled_after_days),
            deleted_templates=age(self.deleted_templates_after_days),
        )


class MaintenanceSettings(_Section):
    """Table health on PostgreSQL (docs/howto/operating.md#table-health): the pruner's
    service watches the dead row versions of the hot tables and, when autovacuum is off
    or behind, warns and (``auto``) runs ``VACUUM (ANALYZE)`` on them. No effect on SQLite."""

    vacuum: VacuumMode = VacuumMode.AUTO
    """``auto``: warn and vacuum; ``warn``: warn only (log, ``/readyz``, the UI);
    ``off``: do not look."""
    interval_seconds: float = Field(default=60.0, ge=5, le=86_400)
    """How often the tables' statistics are read."""
    dead_tuples_threshold: int = Field(default=10_000, ge=100, le=1_000_000_000)
    """A table with this many dead row versions is behind: warned about, vacuumed."""
    vacuum_timeout_seconds: float = Field(default=600.0, ge=1, le=86_400)
    """One VACUUM, waiting for its lock included, is stopped (and logged) after this long."""
    vacuum_cost_delay_ms: float = Field(default=2.0, ge=0, le=100)
    """How long the VACUUMs taskmill runs sleep each time they have done the server's
    ``vacuum_cost_limit`` of work (PostgreSQL's ``vacuum_cost_delay``; 2 ms is
    autovacuum's default): a throttled VACUUM takes longer but leaves the claims their
    share of the CPU. 0 runs it flat out, as a manual ``VACUUM`` does."""


class RetrySettings(_Section):
    base_seconds: float = Field(default=60.0, ge=0, le=86_400)
    factor: float = Field(default=2.0, ge=1, le=100)
    cap_seconds: float = Field(default=3600.0, ge=0, le=2_592_000)
    jitter: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _cap_above_base(self) -> RetrySettings:
        if self.cap_seconds < self.base_seconds:
            raise ValueError("cap_seconds must be >= base_seconds")
        return self


class TaskDefaults(_Section):
    max_retries: int = Field(default=3, ge=0, le=MAX_RETRIES)
    timeout_seconds: float | None = Field(default=300.0, gt=0, le=MAX_TIMEOUT_SECONDS)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    serve_in_run: bool = True
    """Whether ``taskmill run`` also serves the API (and UI)."""
    secret_key: str | None = Field(default=None, min_length=32)
    """HMAC key for API key hashes; unset: read or create ``secret_key_file``."""
    secret_key_file: str = "taskmill.secret"
    max_body_bytes: int = Field(default=1_048_576, gt=0, le=67_108_864)
    max_json_depth: int = Field(default=32, gt=0, le=1000)
    auth_failures_per_minute: int = Field(default=20, gt=0, le=1_000_000)
    requests_per_second_per_merchant: float | None = Field(default=None, gt=0, le=1_000_000)
    """Each merchant's request rate limit in this API process (a token bucket); unset: off."""
    request_burst_per_merchant: int | None = Field(default=None, ge=1, le=10_000_000)
    """Requests a merchant may send at once above the rate; unset: one second's worth."""
    request_read_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)
    """A request's headers and body must arrive within this long of its first byte
    (and a new connection must start one), or the connection is closed (slowloris)."""
    cors_origins: tuple[str, ...] = Field(default=(), max_length=100)
    """Origins (``https://app.example.com``) browsers may call the API from; ``["*"]``:
    any; empty: CORS off (no CORS header is sent)."""

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin (scheme://host[:port], no path) or '*'"
                )
        return value

    trusted_proxies: tuple[str, ...] = Field(default=(), max_length=100)
    """Addresses or networks (CIDR) of the reverse proxies whose ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed; empty: forwarded headers are ignored."""

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Normalised (10.1.2.3/8 -> 10.0.0.0/8): uvicorn would silently treat a network
        # with host bits as a literal that matches nothing.
        normalised = []
        for entry in value:
            try:
                normalised.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or a network in CIDR") from exc
        return tuple(normalised)


_ORIGIN = re.compile(r"https?://[^/\s:]+(:[0-9]{1,5})?")


class MetricsSettings(_Section):
    port: int | None = Field(default=None, ge=1, le=65535)
    """Where a separate service process (``taskmill executor`` …) serves its own
    Prometheus counters; unset: not served (the API's ``/metrics`` covers ``taskmill run``)."""
    host: str = "127.0.0.1"


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class HttpSettings(_Section):
    """The built-in ``http`` task type (docs/howto/http-and-process-jobs.md)."""

    enabled: bool = True
    allowed_networks: tuple[str, ...] = ()
    """CIDRs jobs may reach although private, loopback or link-local (``127.0.0.1/32``)."""
    allow_private_networks: bool = False
    """Allow private (RFC 1918, fc00::/7), shared (100.64/10) and loopback addresses."""
    follow_redirects: bool = False
    max_redirects: int = Field(default=5, ge=0, le=50)
    max_response_bytes: int = Field(default=65_536, gt=0, le=16_777_216)
    """Most of a response body kept in the job's result (and ever read)."""
    default_timeout_seconds: float = Field(default=30.0, gt=0, le=86_400)
    max_timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)
    user_agent: str = Field(default="taskmill", min_length=1)
    response_headers: tuple[str, ...] = ()
    """Response headers kept in the result; empty: all of them."""

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a network in CIDR notation") from exc
        return value

    @model_validator(mode="after")
    def _default_within_max(self) -> HttpSettings:
        if self.default_timeout_seconds > self.max_timeout_seconds:
            raise ValueError("default_timeout_seconds must be <= max_timeout_seconds")
        return self

    def executor_config(self, max_retries: int) -> HttpExecutorConfig:
        """The executor's own config (it never sees the settings); ``max_retries`` is the
        ``tasks.max_retries`` default."""
        from taskmill.executors.http_builtin import HttpExecutorConfig

        return HttpExecutorConfig(
            allowed_networks=self.allowed_networks,
            allow_private_networks=self.allow_private_networks,
            follow_redirects=self.follow_redirects,
            max_redirects=self.max_redirects,
            max_response_bytes=self.max_response_bytes,
            default_timeout_seconds=self.default_timeout_seconds,
            max_timeout_seconds=self.max_timeout_seconds,
            user_agent=self.user_agent,
            response_headers=self.response_headers,
            max_attempts=max_retries + 1,
        )


class ProcessSettings(_Section):
    """The built-in ``process`` task type: off unless enabled and allow-listed."""

    enabled: bool = False
    allowed_programs: tuple[str, ...] = Field(default=(), validate_default=True)
    """Absolute paths of the programs jobs may run (symlinks are resolved on both sides)."""
    operands_only_programs: tuple[str, ...] = ()
    """Programs of ``allowed_programs`` run as ``program -- args…``: every payload
    argument is an operand, never an option. Only for programs that honour ``--``."""
    allowed_cwds: tuple[str, ...] = ()
    """Directories a job's ``cwd`` must be in; empty: any existing directory."""
    allowed_env: tuple[str, ...] = ()
    """Names of the environment variables a job's ``env`` may set; empty: none. Every
    other name is refused (many run code in the program: ``BASH_ENV``, ``PYTHON*``…)."""
    path: str = Field(default="/usr/local/bin:/usr/bin:/bin", min_length=1)
    """``PATH`` of the child, and where a bare program name is looked up."""
    max_output_bytes: int = Field(default=65_536, gt=0, le=16_777_216)
    """Bytes kept of each of stdout and stderr (the first and the last half)."""
    max_timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)
    kill_grace_seconds: float = Field(default=2.0, ge=0, le=60)
    reap_orphans: bool = True
    """Linux: the worker becomes a child subreaper and reaps what a killed group orphans."""
    run_dir: str | None = None
    """Where running process groups are recorded so that the groups of a worker killed
    outright are killed when a worker next starts; unset: ``taskmill-process-<uid>`` in
    the temporary directory."""

    @field_validator("allowed_programs")
    @classmethod
    def _programs(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.data.get("enabled") and not value:
            raise ValueError("must list at least one program when process.enabled is true")
        return _absolute_paths(value)

    @field_validator("operands_only_programs")
    @classmethod
    def _operands_only(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # An entry not on the allow-list is a slip (a typo, another path to the file)
        # that would leave the listed program unprotected: refuse it.
        allowed = info.data.get("allowed_programs")
        for path in _absolute_paths(value):
            if allowed is not None and path not in allowed:  # None: itself invalid
                raise ValueError(f"{path!r} is not in process.allowed_programs (spelled the same)")
        return value

    @field_validator("allowed_cwds")
    @classmethod
    def _cwds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _absolute_paths(value)

    @field_validator("allowed_env")
    @classmethod
    def _env_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
            if name.startswith(("LD_", "DYLD_")):
                raise ValueError(f"{name!r}: loader variables are never passed to a program")
        return value

    @field_validator("run_dir")
    @classmethod
    def _run_dir(cls, value: str | None) -> str | None:
        return value if value is None else _absolute_paths((value,))[0]

    def executor_config(self, max_retries: int) -> ProcessExecutorConfig:
        """The executor's own config; ``max_retries`` is the ``tasks.max_retries`` default."""
        from taskmill.executors.process import ProcessExecutorConfig

        return ProcessExecutorConfig(
            allowed_programs=self.allowed_programs,
            operands_only_programs=self.operands_only_programs,
            allowed_cwds=self.allowed_cwds,
            allowed_env=self.allowed_env,
            path=self.path,
            max_output_bytes=self.max_output_bytes,
            max_timeout_seconds=self.max_timeout_seconds,
            kill_grace_seconds=self.kill_grace_seconds,
            reap_orphans=self.reap_orphans,
            max_attempts=max_retries + 1,
            run_dir=self.run_dir,
        )


def _absolute_paths(value: tuple[str, ...]) -> tuple[str, ...]:
    for path in value:
        if not os.path.isabs(path):
            raise ValueError(f"{path!r} is not an absolute path")
    return value


class Settings(BaseSettings):
    """Everything taskmill can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="TASKMILL_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    environment: str = "development"
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    worker: WorkerSettings = WorkerSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    retry: RetrySettings = RetrySettings()
    retention: RetentionSettings = RetentionSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    tasks: TaskDefaults = TaskDefaults()
    api: ApiSettings = ApiSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    http: HttpSettings = HttpSettings()
    process: ProcessSettings = ProcessSettings()

    @model_validator(mode="before")
    @classmethod
    def _seed_002_names(cls, data: Any) -> Any:
        return seed_002_aliases(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _dead_after_beats(self) -> Settings:
        # A live worker must get a heartbeat in before it is judged dead, or its jobs
        # would be rescued (and run twice) while it is healthy.
        if self.scheduler.worker_dead_after_seconds <= self.worker.heartbeat_seconds:
            raise ValueError(
                "scheduler.worker_dead_after_seconds must be greater than worker.heartbeat_seconds"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _SeedUrls(settings_cls),
        ]
        toml = _toml_file.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


# Seed 002's section and key names (its example config/development.toml), accepted as
# aliases of taskmill's own (docs/configuration.md). Taskmill's own name wins when a file
# or the environment gives both.
SECTION_ALIASES = {"message_queue": "broker", "dispatcher": "scheduler", "server": "api"}
KEY_ALIASES: dict[str, dict[str, str]] = {
    "database": {"max_connections": "pool_size"},
    "broker": {"task_queue": "prefix"},
    "scheduler": {
        "schedule_interval_seconds": "poll_interval_seconds",
        "max_concurrent_dispatches": "batch_size",
    },
    "worker": {
        "max_concurrent_tasks": "concurrency",
        "heartbeat_interval_seconds": "heartbeat_seconds",
    },
}
# Seed 002's ``status_queue``: taskmill's workers write outcomes to the database, so no
# status queue exists; the key is accepted (a string) and has no effect.


def seed_002_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with seed 002's names rewritten to taskmill's (a new dict)."""
    result = dict(data)
    for alias, own in SECTION_ALIASES.items():
        if isinstance(result.get(alias), dict):
            aliased = result.pop(alias)
            own_section = result.get(own)
            if own_section is None or isinstance(own_section, dict):
                result[own] = {**aliased, **(own_section or {})}
    for section, value in list(result.items()):
        if isinstance(value, dict):
            result[section] = _section_aliases(section, value)
    worker = result.get("worker")
    if isinstance(worker, dict) and "heartbeat_interval_seconds" in data.get("worker", {}):
        _fit_to_heartbeat(result, worker)
    return result


def _fit_to_heartbeat(result: dict[str, Any], worker: dict[str, Any]) -> None:
    """Seed 002 sets only a heartbeat (30 s in its example): keep taskmill's default ratios
    to it (lease 3 beats, dead after 2.5) for the keys not set, so the file loads."""
    try:
        beat = float(worker["heartbeat_seconds"])
    except (TypeError, ValueError):
        return  # the field's own validation names it
    worker.setdefault("lease_seconds", 3 * beat)
    scheduler = result.setdefault("scheduler", {})
    if isinstance(scheduler, dict):
        scheduler.setdefault("worker_dead_after_seconds", 2.5 * beat)


def _section_aliases(section: str, values: dict[str, Any]) -> dict[str, Any]:
    aliases = KEY_ALIASES.get(section, {}).keys() | _SPECIAL.get(section, set())
    renamed = {k: v for k, v in values.items() if k not in aliases}
    for key, value in values.items():
        if key in aliases:
            for own, own_value in _translate(section, key, value):
                renamed.setdefault(own, own_value)  # taskmill's own name wins
    return renamed


_SPECIAL = {"api": {"bind_address", "cors_enabled"}, "broker": {"status_queue"}}


def _translate(section: str, key: str, value: Any) -> list[tuple[str, Any]]:
    own = KEY_ALIASES.get(section, {}).get(key)
    if own is not None:
        return [(own, value)]
    if key == "bind_address":
        host, port = _bind_address(value)
        return [("host", host), ("port", port)]
    if key == "cors_enabled":
        if not isinstance(value, bool):
            raise ValueError("api.cors_enabled: must be true or false")
        return [("cors_origins", ("*",) if value else ())]
    # status_queue: no effect (see _NO_EFFECT above), but it must be what seed 002 says.
    if not isinstance(value, str):
        raise ValueError(f"{section}.{key}: must be a string")
    return []


def _bind_address(value: Any) -> tuple[str, str]:
    """Seed 002's ``bind_address = "host:port"`` (``[::1]:8080`` for IPv6)."""
    host, sep, port = str(value).rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"api.bind_address: {value!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), port


class _SeedUrls(PydanticBaseSettingsSource):
    """Seed 000's ``DATABASE_URL`` and ``REDIS_URL`` (the ``TASKMILL_`` names win)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if url := os.environ.get("DATABASE_URL"):
            values["database"] = {"url": url}
        broker = os.environ.get("REDIS_URL") or os.environ.get("AMQP_URL")
        if broker:
            values["broker"] = {"url": broker}
        return values


def config_file(environment: str, config_dir: Path | str | None = None) -> Path:
    """``{config_dir}/{environment}.toml``; the directory defaults to ``TASKMILL_CONFIG_DIR``
    or ``./config``."""
    base = Path(config_dir or os.environ.get("TASKMILL_CONFIG_DIR", "config"))
    return base / f"{environment}.toml"


def load_settings(
    environment: str | None = None, config_dir: Path | str | None = None, **overrides: Any
) -> Settings:
    """Load settings, or raise :class:`ConfigError` naming the first bad key.

    ``environment`` (or ``TASKMILL_ENV``, default ``development``) picks the TOML file.
    Without a named environment a missing file is fine (defaults and environment
    variables apply); a named environment's file must exist: its absence is an error
    naming where it was looked for (a production file silently ignored would run
    production on development settings).
    """
    explicit = environment or os.environ.get("TASKMILL_ENV")
    env_name = explicit or "development"
    path = config_file(env_name, config_dir)
    if explicit and not path.is_file():
        raise ConfigError(
            f"environment: {env_name!r} was named but {path.absolute()} does not exist "
            "(config files are read from ./config, or the folder --config-dir or "
            "TASKMILL_CONFIG_DIR names)"
        )
    token = _toml_file.set(path if path.is_file() else None)
    try:
        return Settings(environment=env_name, **overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    except SettingsError as exc:  # e.g. a list variable that is not JSON
        raise ConfigError(f"invalid configuration in the environment: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    finally:
        _toml_file.reset(token)


def _describe(exc: ValidationError, path: Path) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        lines.append(f"{key}: {error['msg']}")
    return f"invalid configuration ({path} and environment): " + "; ".join(lines)
