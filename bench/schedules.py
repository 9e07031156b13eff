"""Schedule figures: fire lag of one-time jobs and templates, and the scheduler at scale.

Run from the project root::

    .venv/bin/python -m bench.schedules [--jobs 1000000] [--templates 100000]

On SQLite and on PostgreSQL (a scratch database per run, dropped at the end), it prints:

(a) one-time fire lag: 1,000 one-time jobs due over 10 s, run by an in-process
    ``Taskmill`` (``await app.start()``): ``job_runs.started_at - run_at``;
(b) template fire lag: 200 templates on ``* * * * * *`` for 30 s:
    ``job_runs.started_at - scheduled_for``, instances per template, duplicate and
    missing ticks;
(c) scale: with 100,000 active templates and 1,000,000 scheduled jobs seeded by bulk
    SQL, one queue-populator and one recurrence-manager ``run_once()`` when 100 jobs and
    10 templates are due, and the query plans of the due-jobs and due-templates queries;
(d) burst: 2,000 templates due at the same second (a daily interval starting at that
    second): when each instance was created, queued and started, from the tick.

``--lookahead`` sets ``scheduler.lookahead_seconds`` (0: instances made at their tick);
``--broker-url`` a Redis or RabbitMQ broker (default: the database).

It prints figures and never asserts on them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select

from bench.noop_app import TASK, build_app
from bench.support import (
    BACKENDS,
    POSTGRES_ADMIN_URL,
    BenchError,
    Spread,
    StatementLog,
    analyze,
    explain,
    machine,
    progress,
    revision,
    scratch_database,
    scratch_name,
    seed_jobs,
    seed_templates,
    template_row,
)
from taskmill import Taskmill
from taskmill.config import Settings, load_settings
from taskmill.core.jobs import Job, JobStatus, ScheduleType
from taskmill.core.templates import Template
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import jobs as job_store
from taskmill.store.schema import job_runs, jobs, templates

POLL_SECONDS = 0.5
BURST_LEAD_SECONDS = 6.0  # (d): more than the lookahead, and the bulk insert
WARMUP_JOBS = 20
LOG_SAMPLES = 5
JOBS_INDEX = "idx_jobs_status_run_at"
TEMPLATES_INDEX = "idx_templates_active_next_run_at"
UNFINISHED = (JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING)
# How (c) recognises the statements it explains among those run_once sent.
DUE_JOBS_SQL = ("FROM jobs", "jobs.run_at <=")
NEXT_JOB_SQL = ("SELECT jobs.run_at", "ORDER BY jobs.run_at")
# On PostgreSQL the populator's round is one statement (claims._enqueue_due_statement).
ROUND_SQL = ("WITH picked AS", "jobs.run_at <=", "ORDER BY jobs.run_at")
DUE_SQL = ("FROM templates", "templates.next_run_at <=")
NEXT_TEMPLATE_SQL = ("FROM templates", "templates.next_run_at IS NOT NULL")


@dataclass(frozen=True, slots=True)
class Options:
    backends: tuple[str, ...]
    phases: str
    fire_jobs: int
    fire_spread: float
    live_templates: int
    template_seconds: int
    jobs: int
    templates: int
    due_jobs: int
    due_templates: int
    concurrency: int
    poll_interval: float | None
    postgres_url: str
    timeout: float
    burst_templates: int = 2_000
    lookahead: float | None = None
    broker_url: str | None = None


@dataclass(frozen=True, slots=True)
class FireLag:
    jobs: int
    spread: float
    lead: float
    late_inserts: int
    retried: int
    not_succeeded: int
    start: Spread
    queued: Spread


@dataclass(frozen=True, slots=True)
class TemplateLag:
    templates: int
    seconds: int
    lead: float
    late_creates: int
    per_template: Counter[int]  # instances -> how many templates had that many
    duplicates: int
    missing: int
    unexpected: int
    retried: int
    not_succeeded: int
    start: Spread
    queued: Spread
    created: Spread
    ticks: TickTrace


@dataclass(frozen=True, slots=True)
class TickTrace:
    """Where the time of one tick goes: medians over the ticks of (b), in ms after it."""

    rounds: float  # populator rounds that queued the tick's instances (distinct queued_at)
    first_queued: float
    last_queued: float
    first_start: float
    last_start: float

    @classmethod
    def of(cls, rows: Sequence[Any]) -> TickTrace:
        by_tick: dict[datetime, list[Any]] = {}
        for r in rows:
            if r.scheduled_for is not None and r.queued_at is not None:
                by_tick.setdefault(r.scheduled_for, []).append(r)
        per_tick: list[tuple[float, ...]] = []
        for tick, group in by_tick.items():
            queued = [millis(r.queued_at, tick) or 0.0 for r in group]
            starts = [millis(r.started_at, tick) or 0.0 for r in group if r.started_at]
            if not starts:
                continue
            rounds = len({r.queued_at for r in group})
            per_tick.append((rounds, min(queued), max(queued), min(starts), max(starts)))
        if not per_tick:
            return cls(0, 0, 0, 0, 0)
        return cls(*(statistics.median(column) for column in zip(*per_tick, strict=True)))


@dataclass(frozen=True, slots=True)
class Burst:
    templates: int
    lead: float
    late_creates: int
    instances: int
    not_succeeded: int
    first_start_ms: float
    start: Spread
    queued: Spread
    created: Spread


@dataclass(frozen=True, slots=True)
class Timed:
    label: str
    seconds: float
    handled: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    label: str
    sql: str
    index: str
    lines: list[str]

    @property
    def uses_index(self) -> bool:
        return any(self.index in line for line in self.lines)


@dataclass(frozen=True, slots=True)
class Scale:
    jobs: int
    templates: int
    due_jobs: int
    due_templates: int
    seed_jobs_seconds: float
    seed_templates_seconds: float
    timings: list[Timed]
    plans: list[Plan]


class LogCounter(logging.Handler):
    """Counts taskmill's WARNING and ERROR records (and keeps the first few)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1
        if len(self.samples) < LOG_SAMPLES:
            self.samples.append(f"{record.levelname} {record.name}: {record.getMessage()}")


# -- the in-process scheduler ---------------------------------------------------------------


def bench_settings(database_url: str, opts: Options) -> Settings:
    """config/ENV.toml and the environment, with the settings this bench measures."""
    broker: dict[str, str] = {}
    if opts.broker_url is not None:
        broker = {"url": opts.broker_url, "prefix": scratch_name()}
    return load_settings(
        None,
        None,
        database={"url": database_url},
        broker=broker,
        worker={"concurrency": opts.concurrency},
        scheduler={
            **({} if opts.poll_interval is None else {"poll_interval_seconds": opts.poll_interval}),
            "max_templates_per_merchant": 1_000_000,  # (d) and (b) are one merchant's
            # Not given: the setting's default (and a commit before the setting runs).
            **({} if opts.lookahead is None else {"lookahead_seconds": opts.lookahead}),
        },
    )


async def enqueue(app: Taskmill, run_at: datetime | None = None) -> Job:
    job = await app.schedule(TASK, None, run_at=run_at)
    if not isinstance(job, Job):
        raise BenchError(f"schedule returned {type(job).__name__}, expected a Job")
    return job


async def unfinished(app: Taskmill) -> int:
    counts = await job_store.count_by_status(app.runtime.db, ALL_MERCHANTS)
    return sum(counts[s] for s in UNFINISHED)


async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], timeout: float, poll: float = POLL_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(poll)


async def wait_settled(app: Taskmill, timeout: float) -> None:
    """Until no job is scheduled, queued or running."""

    async def settled() -> bool:
        return await unfinished(app) == 0

    await wait_for("every job to finish", settled, timeout)


def millis(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds() * 1000


def spread_of(values: Sequence[float | None]) -> Spread:
    return Spread.of([v for v in values if v is not None])


async def fire_lag(app: Taskmill, opts: Options) -> FireLag:
    """(a) One-time jobs due evenly over ``fire_spread`` seconds, inserted beforehand."""
    n = opts.fire_jobs
    started = time.monotonic()
    for _ in range(WARMUP_JOBS):  # warm-up, and the enqueue rate that sets the lead time
        await enqueue(app)
    rate = WARMUP_JOBS / (time.monotonic() - started)
    await wait_settled(app, opts.timeout)
    lead = 1.0 + 1.5 * n / rate
    first_due = datetime.now(UTC) + timedelta(seconds=lead)
    step = timedelta(seconds=opts.fire_spread / n)
    late = 0
    for i in range(n):
        job = await enqueue(app, first_due + step * i)
        late += datetime.now(UTC) > job.run_at
    progress(f"scheduled {n} one-time jobs over {opts.fire_spread:g} s, first due in {lead:.1f} s")
    await wait_settled(app, lead + opts.fire_spread + opts.timeout)
    stmt = (
        select(
            jobs.c.run_at, jobs.c.queued_at, jobs.c.status, jobs.c.attempt, job_runs.c.started_at
        )
        .select_from(
            jobs.outerjoin(job_runs, and_(job_runs.c.job_id == jobs.c.id, job_runs.c.attempt == 1))
        )
        .where(jobs.c.schedule_type == ScheduleType.ONE_TIME)
    )
    async with app.runtime.db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return FireLag(
        jobs=len(rows),
        spread=opts.fire_spread,
        lead=lead,
        late_inserts=late,
        retried=sum(r.attempt > 1 for r in rows),
        not_succeeded=sum(r.status != JobStatus.SUCCEEDED for r in rows),
        start=spread_of([millis(r.started_at, r.run_at) for r in rows]),
        queued=spread_of([millis(r.queued_at, r.run_at) for r in rows]),
    )


async def template_lag(app: Taskmill, opts: Options) -> TemplateLag:
    """(b) Templates firing every second for ``template_seconds``, all from one instant."""
    n, seconds = opts.live_templates, opts.template_seconds
    lead = 3.0 + 0.02 * n
    start = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    end = start + timedelta(seconds=seconds - 0.5)  # ticks start, start + 1 s, ... : `seconds`
    late = 0
    for i in range(n):
        template = await app.schedule(
            TASK, None, cron="* * * * * *", name=f"every-second-{i}", start_at=start, end_at=end
        )
        if not isinstance(template, Template):
            raise BenchError(f"schedule returned {type(template).__name__}, expected a Template")
        late += datetime.now(UTC) > start
    progress(f"created {n} per-second templates, first tick in {lead:.1f} s, for {seconds} s")
    await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))

    async def done() -> bool:
        pending = select(func.count()).where(templates.c.next_run_at.is_not(None))
        async with app.runtime.db.read() as conn:
            waiting = (await conn.execute(pending)).scalar_one()
        return waiting == 0 and await unfinished(app) == 0

    await wait_for("the templates' last ticks to finish", done, opts.timeout)
    stmt = (
        select(
            jobs.c.template_id,
            jobs.c.scheduled_for,
            jobs.c.created_at,
            jobs.c.queued_at,
            jobs.c.status,
            jobs.c.attempt,
            job_runs.c.started_at,
        )
        .select_from(
            jobs.outerjoin(job_runs, and_(job_runs.c.job_id == jobs.c.id, job_runs.c.attempt == 1))
        )
        .where(jobs.c.template_id.is_not(None))
    )
    async with app.runtime.db.read() as conn:
        rows = (await conn.execute(stmt)).all()
        ids = list((await conn.execute(select(templates.c.id))).scalars())
    ticks = {start + timedelta(seconds=k) for k in range(seconds)}
    pairs = Counter((r.template_id, r.scheduled_for) for r in rows)
    per_template = Counter(r.template_id for r in rows)
    expected = {(t, tick) for t in ids for tick in ticks}
    return TemplateLag(
        templates=n,
        seconds=seconds,
        lead=lead,
        late_creates=late,
        per_template=Counter(per_template[t] for t in ids),
        duplicates=sum(c - 1 for c in pairs.values() if c > 1),
        missing=len(expected - pairs.keys()),
        unexpected=len(pairs.keys() - expected),
        retried=sum(r.attempt > 1 for r in rows),
        not_succeeded=sum(r.status != JobStatus.SUCCEEDED for r in rows),
        start=spread_of([millis(r.started_at, r.scheduled_for) for r in rows]),
        queued=spread_of([millis(r.queued_at, r.scheduled_for) for r in rows]),
        created=spread_of([millis(r.created_at, r.scheduled_for) for r in rows]),
        ticks=TickTrace.of(rows),
    )


async def burst(app: Taskmill, opts: Options) -> Burst:
    """(d) ``burst_templates`` daily templates whose first tick is the same second."""
    n = opts.burst_templates
    lead = BURST_LEAD_SECONDS
    now = datetime.now(UTC)
    tick = (now + timedelta(seconds=lead)).replace(microsecond=0)
    # Inserted in bulk (as phase (c) seeds): app.schedule would take ~30 ms a template on
    # a loaded machine, and only the firing is measured here.
    new_templates = [
        template_row(i, n, now, due=False)
        | {
            "name": f"daily-{i}",
            "interval_seconds": 86_400.0,
            "start_at": tick,
            "next_run_at": tick,
            "max_attempts": 1,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]
    async with app.runtime.db.transaction() as conn:
        await conn.execute(templates.insert(), new_templates)
    app.runtime.wakers.recurrence.wake()
    late = n if datetime.now(UTC) > tick else 0
    progress(f"inserted {n} daily templates, all due at {tick:%H:%M:%S} (in {lead:.1f} s)")
    await asyncio.sleep(max(0.0, (tick - datetime.now(UTC)).total_seconds()))

    async def done() -> bool:
        stmt = select(func.count()).where(jobs.c.scheduled_for == tick)
        async with app.runtime.db.read() as conn:
            made = (await conn.execute(stmt)).scalar_one()
        return made >= n and await unfinished(app) == 0

    await wait_for("the burst's instances to finish", done, opts.timeout)
    stmt = (
        select(jobs.c.created_at, jobs.c.queued_at, jobs.c.status, job_runs.c.started_at)
        .select_from(
            jobs.outerjoin(job_runs, and_(job_runs.c.job_id == jobs.c.id, job_runs.c.attempt == 1))
        )
        .where(jobs.c.scheduled_for == tick)
    )
    async with app.runtime.db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    starts = [millis(r.started_at, tick) for r in rows]
    return Burst(
        templates=n,
        lead=lead,
        late_creates=late,
        instances=len(rows),
        not_succeeded=sum(r.status != JobStatus.SUCCEEDED for r in rows),
        first_start_ms=min((s for s in starts if s is not None), default=float("nan")),
        start=spread_of(starts),
        queued=spread_of([millis(r.queued_at, tick) for r in rows]),
        created=spread_of([millis(r.created_at, tick) for r in rows]),
    )


async def live(backend: str, database_url: str, opts: Options) -> None:
    """(a) and (b) on one database, with every service running in this process."""
    app = build_app(settings=bench_settings(database_url, opts))
    await app.start()
    try:
        if "a" in opts.phases:
            progress(f"{backend}: (a) one-time fire lag")
            report_fire(await fire_lag(app, opts))
        if "b" in opts.phases:
            progress(f"{backend}: (b) template fire lag")
            report_template(await template_lag(app, opts))
        if "d" in opts.phases:
            progress(f"{backend}: (d) {opts.burst_templates} templates due at one second")
            report_burst(await burst(app, opts))
    finally:
        await app.stop()


# -- scale ----------------------------------------------------------------------------------


async def timed(label: str, call: Callable[[], Awaitable[object]]) -> Timed:
    """One call, timed; ``handled`` is its result when that is a count."""
    started = time.perf_counter()
    value = await call()
    handled = value if isinstance(value, int) else None
    return Timed(label, time.perf_counter() - started, handled)


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def rounds_until_none(label: str, call: Callable[[], Awaitable[int]]) -> list[Timed]:
    """``run_once`` until a round handles nothing: the first three rounds, the rest
    summed (with the mean per round), and the empty round."""
    rounds: list[Timed] = []
    while True:
        one = await timed(f"{label} run_once #{len(rounds) + 1}", call)
        rounds.append(one)
        if not one.handled:
            break
    busy, empty = rounds[:-1], rounds[-1]
    shown = busy[:3]
    if len(busy) > 3:
        rest = busy[3:]
        seconds = sum(t.seconds for t in rest)
        handled = sum(t.handled or 0 for t in rest)
        label_rest = f"{label} rounds #4-#{len(busy)} (mean {seconds / len(rest) * 1000:.0f} ms)"
        shown.append(Timed(label_rest, seconds, handled))
    return [*shown, Timed(f"{label} run_once (none due)", empty.seconds, 0)]


async def scale(backend: str, database_url: str, opts: Options) -> Scale:
    """(c) One run_once of the populator and the recurrence manager on big tables."""
    app = build_app(settings=bench_settings(database_url, opts))
    runtime = await app.open()  # migrated; no service runs
    try:
        db = runtime.db
        progress(f"{backend}: (c) seeding {opts.jobs:,} jobs")
        job_seconds = await seed_jobs(db, opts.jobs, due=opts.due_jobs, now=datetime.now(UTC))
        progress(f"{backend}: (c) seeding {opts.templates:,} templates")
        template_seconds = await seed_templates(
            db, opts.templates, due=opts.due_templates, now=datetime.now(UTC)
        )
        await analyze(db)
        populator, recurrence = runtime.populator, runtime.recurrence
        rss_before = peak_rss_mb()
        with StatementLog(db) as populator_sql:
            timings = await rounds_until_none("queue populator", populator.run_once)
            timings.append(await timed("queue populator next_wake_at", populator.next_wake_at))
        with StatementLog(db) as recurrence_sql:
            timings += await rounds_until_none("recurrence manager", recurrence.run_once)
            timings.append(await timed("recurrence manager next_wake_at", recurrence.next_wake_at))
        progress(f"peak RSS {rss_before:.0f} MB before the rounds, {peak_rss_mb():.0f} MB after")
        if db.dialect.name == "postgresql":
            round_label = (
                "due jobs and the next due time, one statement (claims._enqueue_due_statement)"
            )
            wanted: list[tuple[str, str, StatementLog, tuple[str, ...]]] = [
                (round_label, JOBS_INDEX, populator_sql, ROUND_SQL)
            ]
        else:
            wanted = [
                ("due jobs (claims.enqueue_due)", JOBS_INDEX, populator_sql, DUE_JOBS_SQL),
                ("next due job (claims.next_due_at)", JOBS_INDEX, populator_sql, NEXT_JOB_SQL),
            ]
        wanted += [
            ("due templates (templates.due_templates)", TEMPLATES_INDEX, recurrence_sql, DUE_SQL),
            (
                "next template (templates.next_template_due_at)",
                TEMPLATES_INDEX,
                recurrence_sql,
                NEXT_TEMPLATE_SQL,
            ),
        ]
        plans = []
        for label, index, log, fragments in wanted:
            stmt = log.first_query(*fragments)
            if stmt is None:
                raise BenchError(f"no statement for {label} was captured")
            plans.append(Plan(label, " ".join(stmt.sql.split()), index, await explain(db, stmt)))
        return Scale(
            jobs=opts.jobs,
            templates=opts.templates,
            due_jobs=opts.due_jobs,
            due_templates=opts.due_templates,
            seed_jobs_seconds=job_seconds,
            seed_templates_seconds=template_seconds,
            timings=timings,
            plans=plans,
        )
    finally:
        await app.stop()


async def run_backend(backend: str, opts: Options, workdir: Path) -> None:
    """Every phase asked for on ``backend``, each reported as soon as it is measured."""
    counter = LogCounter()
    logger = logging.getLogger("taskmill")
    logger.addHandler(counter)
    try:
        report_header(backend, bench_settings("(scratch)", opts))
        if set("abd") & set(opts.phases):
            async with scratch_database(backend, workdir, opts.postgres_url) as url:
                await live(backend, url, opts)
        if "c" in opts.phases:
            async with scratch_database(backend, workdir, opts.postgres_url) as url:
                report_scale(await scale(backend, url, opts))
    finally:
        logger.removeHandler(counter)
        report_log(counter)


# -- reporting ------------------------------------------------------------------------------


def spread_line(label: str, s: Spread) -> str:
    return f"  {label:<36} {s.p50:>9.1f} {s.p99:>9.1f} {s.max:>9.1f}   (n={s.count})"


def report_header(backend: str, st: Settings) -> None:
    print(f"\n== {backend} (python {sys.version.split()[0]})")
    print(
        f"  worker.concurrency={st.worker.concurrency} "
        f"scheduler.poll_interval_seconds={st.scheduler.poll_interval_seconds} "
        f"scheduler.batch_size={st.scheduler.batch_size} "
        f"scheduler.misfire_grace_seconds={st.scheduler.misfire_grace_seconds} "
        f"scheduler.lookahead_seconds={getattr(st.scheduler, 'lookahead_seconds', 'n/a')} "
        f"broker={st.broker.url or 'database'} "
        f"database.pool_size={st.database.pool_size}",
        flush=True,
    )


def report_log(counter: LogCounter) -> None:
    counts = counter.counts
    print(f"\n  taskmill log: {counts['WARNING']} warning and {counts['ERROR']} error records")
    for line in counter.samples:
        print(f"    | {line}")
    sys.stdout.flush()


def report_fire(f: FireLag) -> None:
    print(f"\n(a) one-time fire lag, {f.jobs} jobs due over {f.spread:g} s (lead {f.lead:.1f} s)")
    print(f"  {'ms':<36} {'p50':>9} {'p99':>9} {'max':>9}")
    print(spread_line("started_at - run_at", f.start))
    print(spread_line("  of which queued_at - run_at", f.queued))
    notes = {"inserted after their run_at": f.late_inserts, "retried": f.retried}
    notes["not succeeded"] = f.not_succeeded
    for what, count in notes.items():
        if count:
            print(f"  note: {count} jobs {what}")
    sys.stdout.flush()


def report_template(t: TemplateLag) -> None:
    print(f"\n(b) template fire lag, {t.templates} templates on '* * * * * *' for {t.seconds} s")
    print(f"  {'ms':<36} {'p50':>9} {'p99':>9} {'max':>9}")
    print(spread_line("started_at - scheduled_for", t.start))
    print(spread_line("  of which queued_at - scheduled_for", t.queued))
    print(spread_line("  of which created_at - scheduled_for", t.created))
    k = t.ticks
    print(
        f"  one tick (medians over ticks, ms after it): {k.rounds:g} populator rounds, "
        f"queued {k.first_queued:.1f} .. {k.last_queued:.1f}, "
        f"started {k.first_start:.1f} .. {k.last_start:.1f}"
    )
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(t.per_template.items()))
    print(f"  instances per template (instances: templates): {counts}")
    print(
        f"  duplicates (same template_id, scheduled_for): {t.duplicates}; "
        f"missing ticks: {t.missing}; unexpected ticks: {t.unexpected}"
    )
    notes = {"templates created after the first tick": t.late_creates}
    notes["instances retried"] = t.retried
    notes["instances not succeeded"] = t.not_succeeded
    for what, count in notes.items():
        if count:
            print(f"  note: {count} {what}")
    if t.missing:
        print(
            "  note: a missing tick is one the recurrence manager reached more than "
            "scheduler.misfire_grace_seconds late (see (b)'s created_at lag); the templates' "
            "misfire policy, run_once, drops it while a later tick is on time"
        )
    sys.stdout.flush()


def report_burst(b: Burst) -> None:
    print(f"\n(d) burst, {b.templates} templates due at the same second (lead {b.lead:.1f} s)")
    print(f"  {'ms after the tick':<36} {'p50':>9} {'p99':>9} {'max':>9}")
    print(spread_line("started_at - tick", b.start))
    print(spread_line("  of which queued_at - tick", b.queued))
    print(spread_line("  of which created_at - tick", b.created))
    print(f"  first start: {b.first_start_ms:.1f} ms after the tick; instances: {b.instances}")
    notes = {"templates created after the tick": b.late_creates}
    notes["instances not succeeded"] = b.not_succeeded
    for what, count in notes.items():
        if count:
            print(f"  note: {count} {what}")
    sys.stdout.flush()


def report_scale(s: Scale) -> None:
    print(
        f"\n(c) scale: {s.jobs:,} scheduled jobs ({s.due_jobs} due), "
        f"{s.templates:,} active templates ({s.due_templates} due)"
    )
    print(
        f"  seeding (bulk insert, batches of 10,000): jobs {s.seed_jobs_seconds:.1f} s "
        f"({s.jobs / s.seed_jobs_seconds:,.0f} rows/s), templates "
        f"{s.seed_templates_seconds:.1f} s"
    )
    print(f"  {'call':<60} {'ms':>9} {'handled':>8}")
    for t in s.timings:
        handled = "" if t.handled is None else str(t.handled)
        print(f"  {t.label:<60} {t.seconds * 1000:>9.1f} {handled:>8}")
    for plan in s.plans:
        verdict = "uses" if plan.uses_index else "does NOT use"
        print(f"\n  plan, {plan.label}: {verdict} {plan.index}")
        print(f"    sql: {plan.sql}")
        for line in plan.lines:
            print(f"    {line}")
    sys.stdout.flush()


# -- entry point ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__)
    add = parser.add_argument
    add("--backend", action="append", choices=BACKENDS, help="repeatable [default: both]")
    add("--phases", default="abc", help="which of a, b, c, d to run [default: abc]")
    add("--fire-jobs", type=int, default=1_000, help="(a) one-time jobs")
    add("--fire-spread", type=float, default=10.0, help="(a) seconds they are due over")
    add("--live-templates", type=int, default=200, help="(b) per-second templates")
    add("--template-seconds", type=int, default=30, help="(b) seconds they fire for")
    add("--jobs", type=int, default=1_000_000, help="(c) scheduled jobs seeded")
    add("--templates", type=int, default=100_000, help="(c) active templates seeded")
    add("--due-jobs", type=int, default=100, help="(c) of those jobs, how many are due")
    add("--due-templates", type=int, default=10, help="(c) of those templates, how many due")
    add("--burst-templates", type=int, default=2_000, help="(d) templates due at one second")
    add(
        "--lookahead",
        type=float,
        default=None,
        help="scheduler.lookahead_seconds [default: its default]",
    )
    add("--broker-url", default=None, help="broker.url, e.g. redis://127.0.0.1:6379/0")
    add("--concurrency", type=int, default=50, help="worker.concurrency")
    add(
        "--poll-interval",
        type=float,
        default=None,
        help="scheduler.poll_interval_seconds [default: the setting's, 1 s: the timers, not "
        "the poll, bring a tick; before 2026-12-07 the bench used 0.05]",
    )
    add("--postgres-url", default=POSTGRES_ADMIN_URL, help="where to create scratch databases")
    add("--timeout", type=float, default=300.0, help="give up waiting after this many seconds")
    ns = parser.parse_args(argv)
    phases = "".join(p for p in "abcd" if p in ns.phases)
    if not phases or set(ns.phases) - set("abcd"):
        parser.error("--phases takes letters among a, b, c, d")
    if ns.burst_templates < 1 or (ns.lookahead is not None and not 0 <= ns.lookahead <= 60):
        parser.error("--burst-templates must be >= 1 and --lookahead between 0 and 60")
    counts = (ns.fire_jobs, ns.live_templates, ns.template_seconds, ns.jobs, ns.templates)
    if min(counts) < 1 or ns.fire_spread <= 0:
        parser.error("counts must be >= 1 and --fire-spread > 0")
    if not 0 <= ns.due_jobs <= ns.jobs or not 0 <= ns.due_templates <= ns.templates:
        parser.error("--due-jobs and --due-templates must be between 0 and the counts")
    return Options(
        backends=tuple(ns.backend or BACKENDS),
        phases=phases,
        fire_jobs=ns.fire_jobs,
        fire_spread=ns.fire_spread,
        live_templates=ns.live_templates,
        template_seconds=ns.template_seconds,
        jobs=ns.jobs,
        templates=ns.templates,
        due_jobs=ns.due_jobs,
        due_templates=ns.due_templates,
        concurrency=ns.concurrency,
        poll_interval=ns.poll_interval,
        postgres_url=ns.postgres_url,
        timeout=ns.timeout,
        burst_templates=ns.burst_templates,
        lookahead=ns.lookahead,
        broker_url=ns.broker_url,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    print(f"commit {revision()}; machine at start: {machine()}")
    with tempfile.TemporaryDirectory(prefix="taskmill-bench-") as tmp:
        for backend in opts.backends:
            try:
                asyncio.run(run_backend(backend, opts, Path(tmp)))
            except BenchError as exc:
                print(f"bench failed on {backend}: {exc}", file=sys.stderr)
                return 1
    print(f"\nwhole run: {time.monotonic() - started:.0f} s; machine at end: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
