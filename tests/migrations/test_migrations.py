"""Migrations are product: they must produce exactly ``schema.py`` and reverse cleanly."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text

from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.store import migrate
from taskmill.store.database import Database
from taskmill.store.schema import jobs, merchants, metadata
from tests import backends


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_migrations_upgrade_matches_schema(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        assert await migrate.current_revision(db) is None
        await migrate.upgrade(db)
        assert await migrate.is_current(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            default = (await conn.execute(select(merchants.c.name))).scalars().all()
        assert default == ["default"]
    finally:
        await db.close()


async def test_migrations_downgrade_then_upgrade_again(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        await migrate.upgrade(db)
        await migrate.downgrade(db, "base")
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"alembic_version"}
        await migrate.upgrade(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            ids = (await conn.execute(select(merchants.c.id))).scalars().all()
        assert ids == [DEFAULT_MERCHANT_ID]
    finally:
        await db.close()


async def test_migrations_upgrade_is_idempotent(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        await migrate.upgrade(db)
        await migrate.upgrade(db)  # every start runs it
        assert await migrate.current_revision(db) == migrate.head_revision()
    finally:
        await db.close()


async def test_migrations_0003_gives_existing_jobs_the_cancel_policy(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        await migrate.upgrade(db, "0002")
        async with db.transaction() as conn:  # a job written before the column existed
            await conn.execute(
                text(
                    "INSERT INTO jobs (id, merchant_id, task_type, queue, priority, status,"
                    " schedule_type, run_at, attempt, max_attempts, created_at, updated_at)"
                    " VALUES ('j1', :m, 't', 'default', 0, 'scheduled', 'immediate',"
                    " '2026-11-23 12:00:00', 0, 1, '2026-11-23 12:00:00', '2026-11-23 12:00:00')"
                ),
                {"m": DEFAULT_MERCHANT_ID},
            )
        await migrate.upgrade(db)
        async with db.read() as conn:
            policy = (await conn.execute(select(jobs.c.on_dependency_failure))).scalar_one()
        assert policy == "cancel"
        await migrate.downgrade(db, "0002")
        async with db.engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("jobs")}
            )
        assert "on_dependency_failure" not in columns
    finally:
        await db.close()


RACE_ROUNDS, RACE_PROCESSES = 10, 8

# What every service does at start (Runtime.open), for each database in turn, from the
# same instant on in every process.
_MIGRATE_EACH = """
import asyncio, sys, time
from taskmill.store import migrate
from taskmill.store.database import Database

async def main(start: float, urls: list[str]) -> None:
    await asyncio.sleep(max(0.0, start - time.time()))
    for url in urls:
        db = Database.from_url(url, pool_size=1)
        try:
            await migrate.upgrade(db)
        finally:
            await db.close()

asyncio.run(main(float(sys.argv[1]), sys.argv[2:]))
"""


async def test_migrations_many_processes_at_once_on_empty_databases(
    postgres_template: str | None,
) -> None:
    """Every service migrates at start, so a deployment's services started together on an
    empty database all migrate it at once: none may fail (they did: 1-4 of 5 crashed in 6
    of 8 tries on ``pg_type_typname_nsp_index``; without the lock 6-7 of 8 processes
    fail here). 8 processes migrate 10 empty databases, each in turn, from one instant."""
    if postgres_template is not None:
        backends.unavailable(postgres_template)
    made = [await backends.empty_postgres() for _ in range(RACE_ROUNDS)]
    try:
        start = time.time() + 3.0  # after every process has imported taskmill
        urls = [url for _, url in made]
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _MIGRATE_EACH,
                str(start),
                *urls,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(RACE_PROCESSES)
        ]
        outputs = await asyncio.gather(*(p.communicate() for p in procs))
        failed = [
            (p.returncode, err.decode(errors="replace")[-400:])
            for p, (_, err) in zip(procs, outputs, strict=True)
            if p.returncode != 0
        ]
        assert failed == []
        for url in urls:
            db = Database.from_url(url, pool_size=1)
            try:
                assert await migrate.is_current(db)
            finally:
                await db.close()
    finally:
        for name, _ in made:
            await backends.drop_postgres(name)


async def test_the_schema_check_agrees_with_alembic(tmp_path: Path) -> None:
    """The start-up check reads the head from the file names and the revision with one
    query (no Alembic import); both must be what Alembic itself says, at every step."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert migrate.head_revision() == script.get_current_head()
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        for step in reversed(list(script.walk_revisions())):
            await migrate.upgrade(db, step.revision)
            async with db.engine.connect() as conn:
                theirs = await conn.run_sync(
                    lambda c: MigrationContext.configure(c).get_current_revision()
                )
            assert await migrate.current_revision(db) == theirs == step.revision
    finally:
        await db.close()


def test_a_current_schema_is_checked_without_importing_alembic(tmp_path: Path) -> None:
    """A process whose database is migrated (every executor's start, every replica's)
    does not load Alembic and Mako: 11.5 MB of its memory."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    asyncio.run(_upgraded(url))
    code = (
        "import asyncio, sys\n"
        "from taskmill.store import migrate\n"
        "from taskmill.store.database import Database\n"
        f"db = Database.from_url({url!r})\n"
        "asyncio.run(migrate.upgrade(db))\n"
        "assert asyncio.run(migrate.is_current(db))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


async def _upgraded(url: str) -> None:
    db = Database.from_url(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.close()
