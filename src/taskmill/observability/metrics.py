"""Every Prometheus metric taskmill exports, defined here and only here.

Two kinds:

* **Process metrics** (counters, histograms and gauges the executor and the API update
  as things happen) live on prometheus-client's default registry, as module globals.
  That is how the library is meant to be used; creating them does no I/O, and a
  user's own metrics on the same registry show up in taskmill's ``/metrics`` too.
* **Store gauges** (jobs by state, queue depth, oldest due job, workers and their
  heartbeats) are read from the database at scrape time. This layer may not import the
  store, so the API queries it and hands the numbers in as a :class:`StoreSnapshot`;
  :func:`exposition` turns both into one Prometheus text page.

Label values are task types, queue names, worker ids, merchant ids (capped),
HTTP methods, route templates and status codes: never payloads, keys or raw paths.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from taskmill.core.jobs import Job
from taskmill.core.retention import PRUNED_TABLES, PruneCounts
from taskmill.core.table_health import TableStats

# The classic text format: every Prometheus 2.x and 3.x server reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

OTHER = "other"
MAX_MERCHANT_LABELS = 100
MAX_QUEUE_LABELS = 50

# Start lag spans "the poll interval" (ms) to "the executor was down" (an hour).
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class LabelCap:
    """Keeps one label's distinct values bounded (each value is a time series forever).

    The first ``limit`` distinct values seen keep their own name; later ones are folded
    into ``"other"``. Thread-safe: sync handlers finish on worker threads.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


merchant_label = LabelCap(MAX_MERCHANT_LABELS)

JOBS_STARTED = Counter(
    "taskmill_jobs_started",
    "Job attempts started by this process's executor.",
    ["task_type", "merchant"],
)
JOBS_SUCCEEDED = Counter(
    "taskmill_jobs_succeeded",
    "Job attempts that succeeded in this process's executor.",
    ["task_type", "merchant"],
)
JOBS_FAILED = Counter(
    "taskmill_jobs_failed",
    "Job attempts after which the job ended failed (no attempt left, or Fail raised).",
    ["task_type", "merchant"],
)
JOBS_RETRIED = Counter(
    "taskmill_jobs_retried",
    "Job attempts that failed and were scheduled to run again (backoff or Retry).",
    ["task_type", "merchant"],
)
EVENT_HANDLER_FAILURES = Counter(
    "taskmill_event_handler_failures",
    "Events an application event handler (@app.on_event) failed on every try, passed over.",
    ["handler"],
)
START_LAG = Histogram(
    "taskmill_job_start_lag_seconds",
    "From the time a job was due (run_at) to the time an executor started it.",
    ["task_type"],
    buckets=LAG_BUCKETS,
)
RUN_DURATION = Histogram(
    "taskmill_job_run_duration_seconds",
    "How long one attempt ran, by how it ended (succeeded, failed, timed_out).",
    ["task_type", "outcome"],
    buckets=DURATION_BUCKETS,
)
EXECUTOR_BUSY_SLOTS = Gauge(
    "taskmill_executor_busy_slots", "Jobs this process's executor is running now."
)
EXECUTOR_SLOTS = Gauge(
    "taskmill_executor_slots", "How many jobs this process's executor may run at once."
)
HTTP_REQUEST_DURATION = Histogram(
    "taskmill_http_request_duration_seconds",
    "API request latency by route template (never the raw path), method and status.",
    ["method", "route", "status"],
)

PRUNED_ROWS = Counter(
    "taskmill_pruned_rows",
    "Rows the retention pruner (or `taskmill prune`) in this process deleted, by table.",
    ["table"],
)
for _table in PRUNED_TABLES:
    PRUNED_ROWS.labels(_table)  # every table's series from the start, at 0

MAINTENANCE_VACUUMS = Counter(
    "taskmill_maintenance_vacuums",
    "VACUUM (ANALYZE) runs of a hot table by this process's table maintenance, by how "
    "it ended: done, failed, or skipped (another process was vacuuming it).",
    ["table", "outcome"],
)


# -- what the executor and the API call ---------------------------------------------


def job_started(job: Job) -> None:
    """Count a claimed attempt, its start lag, and the slot it takes."""
    JOBS_STARTED.labels(job.task_type, merchant_label(job.merchant_id)).inc()
    if job.started_at is not None:
        # run_at is on the app clock, started_at on the database's: never below zero.
        lag = (job.started_at - job.run_at).total_seconds()
        START_LAG.labels(job.task_type).observe(max(0.0, lag))
    EXECUTOR_BUSY_SLOTS.inc()


def job_succeeded(job: Job, duration_seconds: float) -> None:
    """Count a successful attempt and its duration."""
    JOBS_SUCCEEDED.labels(job.task_type, merchant_label(job.merchant_id)).inc()
    RUN_DURATION.labels(job.task_type, "succeeded").observe(duration_seconds)


def job_failed(job: Job, outcome: str, duration_seconds: float, *, retrying: bool) -> None:
    """Count a failed attempt: ``retrying`` if another attempt is scheduled."""
    counter = JOBS_RETRIED if retrying else JOBS_FAILED
    counter.labels(job.task_type, merchant_label(job.merchant_id)).inc()
    RUN_DURATION.labels(job.task_type, outcome).observe(duration_seconds)


def slot_freed() -> None:
    """A running job's task ended (whatever the outcome)."""
    EXECUTOR_BUSY_SLOTS.dec()


def request_observed(method: str, route: str, status: int, seconds: float) -> None:
    """One API request, labelled by its route template (``/jobs/{job_id}``)."""
    HTTP_REQUEST_DURATION.labels(method, route, str(status)).observe(seconds)


def rows_pruned(counts: PruneCounts) -> None:
    """Count one prune batch's deleted rows per table."""
    for table, rows in counts.by_table().items():
        if rows:
            PRUNED_ROWS.labels(table).inc(rows)


def table_vacuumed(table: str, outcome: str) -> None:
    """Count one vacuum of ``table`` by the table maintenance (done, failed, skipped)."""
    MAINTENANCE_VACUUMS.labels(table, outcome).inc()


# -- store gauges, read at scrape time --------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    """Jobs due and waiting (queued, or scheduled with ``run_at`` passed) in one queue."""

    queue: str
    depth: int
    oldest_due_age_seconds: float


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    """A live worker and how long ago it last heartbeat (database clock)."""

    worker_id: str
    age_seconds: float


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What the database said at scrape time; ``up`` is ``False`` if it did not answer."""

    up: bool = True
    jobs_by_state: Mapping[str, int] = field(default_factory=dict)
    backlog: Sequence[QueueBacklog] = ()
    workers_by_status: Mapping[str, int] = field(default_factory=dict)
    heartbeats: Sequence[WorkerHeartbeat] = ()
    unserved: Mapping[str, int] = field(default_factory=dict)
    tables: Sequence[TableStats] = ()
    """The hot tables' statistics (PostgreSQL; empty on SQLite)."""


def _folded_backlog(backlog: Sequence[QueueBacklog]) -> list[QueueBacklog]:
    """The deepest queues by name, the rest summed into ``other`` (tenants name queues)."""
    ranked = sorted(backlog, key=lambda b: b.depth, reverse=True)
    kept, rest = ranked[:MAX_QUEUE_LABELS], ranked[MAX_QUEUE_LABELS:]
    if rest:
        kept.append(
            QueueBacklog(
                OTHER,
                sum(b.depth for b in rest),
                max(b.oldest_due_age_seconds for b in rest),
            )
        )
    return kept


def store_families(snapshot: StoreSnapshot) -> list[Metric]:
    """The scrape-time gauges for ``snapshot``."""
    up = GaugeMetricFamily(
        "taskmill_store_up", "1 if the database answered this scrape's queries, else 0."
    )
    up.add_metric([], 1.0 if snapshot.up else 0.0)
    if not snapshot.up:
        return [up]
    jobs = GaugeMetricFamily(
        "taskmill_jobs",
        "Unfinished jobs by state, all tenants (finished ones: the *_total counters).",
        labels=["state"],
    )
    for state, count in sorted(snapshot.jobs_by_state.items()):
        jobs.add_metric([state], count)
    depth = GaugeMetricFamily(
        "taskmill_queue_depth",
        "Jobs due and not yet running (queued, or scheduled with run_at passed), by queue.",
        labels=["queue"],
    )
    age = GaugeMetricFamily(
        "taskmill_queue_oldest_due_job_age_seconds",
        "How long the longest-waiting due job has been due, by queue.",
        labels=["queue"],
    )
    for backlog in _folded_backlog(snapshot.backlog):
        depth.add_metric([backlog.queue], backlog.depth)
        age.add_metric([backlog.queue], backlog.oldest_due_age_seconds)
    workers = GaugeMetricFamily(
        "taskmill_workers", "Registered workers by status.", labels=["status"]
    )
    for status, count in sorted(snapshot.workers_by_status.items()):
        workers.add_metric([status], count)
    beats = GaugeMetricFamily(
        "taskmill_worker_heartbeat_age_seconds",
        "Seconds since each live worker's last heartbeat (database clock).",
        labels=["worker_id"],
    )
    for beat in snapshot.heartbeats:
        beats.add_metric([beat.worker_id], beat.age_seconds)
    unserved = GaugeMetricFamily(
        "taskmill_queued_jobs_without_worker",
        "Queued jobs whose task type no live worker runs (they wait until one does), by "
        f"task type (the {MAX_QUEUE_LABELS} largest; the rest summed as {OTHER!r}).",
        labels=["task_type"],
    )
    ranked = sorted(snapshot.unserved.items(), key=lambda item: (-item[1], item[0]))
    for task_type, count in ranked[:MAX_QUEUE_LABELS]:
        unserved.add_metric([task_type], count)
    if rest := ranked[MAX_QUEUE_LABELS:]:
        unserved.add_metric([OTHER], sum(count for _, count in rest))
    return [up, jobs, depth, age, workers, beats, unserved, *_table_families(snapshot.tables)]


def _table_families(tables: Sequence[TableStats]) -> list[Metric]:
    if not tables:
        return []
    dead = GaugeMetricFamily(
        "taskmill_table_dead_tuples",
        "Dead row versions of each hot table (PostgreSQL's statistics): what VACUUM has "
        "yet to reclaim; see maintenance.dead_tuples_threshold.",
        labels=["table"],
    )
    size = GaugeMetricFamily(
        "taskmill_table_size_bytes",
        "Size of each hot table with its indexes and TOAST (PostgreSQL).",
        labels=["table"],
    )
    for table in tables:
        dead.add_metric([table.table], table.dead_rows)
        size.add_metric([table.table], table.size_bytes)
    return [dead, size]


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(snapshot: StoreSnapshot, registry: CollectorRegistry = REGISTRY) -> bytes:
    """The ``/metrics`` page: ``registry``'s metrics, then the store gauges."""
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(_Families(store_families(snapshot)))
    return generate_latest(registry) + generate_latest(scraped)


def serve_process_metrics(host: str, port: int) -> None:
    """Serve this process's own counters and histograms on ``host:port`` (a thread).

    For the separate service processes (``taskmill executor`` and the like), whose
    counters the API's ``/metrics`` cannot see; the database-wide gauges stay on the API.
    """
    from prometheus_client import start_http_server

    start_http_server(port, addr=host)
