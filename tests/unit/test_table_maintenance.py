"""Table health's judgement, and the mode a transaction pooler forces (no database)."""

from __future__ import annotations

from pathlib import Path

from taskmill.config import load_settings
from taskmill.core.table_health import TableStats, VacuumMode
from taskmill.executors.python import TaskRegistry
from taskmill.runtime import Runtime


def stats(dead: int, *, autovacuum: bool) -> TableStats:
    return TableStats("jobs", 100, dead, 8192, None, None, autovacuum, False)


def test_table_is_behind_from_the_threshold_on() -> None:
    assert not stats(9_999, autovacuum=False).behind(10_000)
    assert stats(10_000, autovacuum=False).behind(10_000)


def test_table_warning_says_whether_autovacuum_is_off() -> None:
    assert stats(1, autovacuum=False).warning() == (
        "jobs: dead row versions pile up (autovacuum is off)"
    )
    assert "not keeping up" in stats(1, autovacuum=True).warning()


def _runtime(tmp_path: Path, vacuum: str, pooler: bool) -> Runtime:
    settings = load_settings(
        database={"url": "postgresql://u@127.0.0.1:1/x", "transaction_pooler": pooler},
        maintenance={"vacuum": vacuum},
        api={"secret_key_file": str(tmp_path / "secret")},
    )
    return Runtime(settings, TaskRegistry())


def test_auto_acts_as_warn_behind_a_transaction_pooler(tmp_path: Path) -> None:
    assert _runtime(tmp_path, "auto", pooler=True).maintenance.config.mode is VacuumMode.WARN
    assert _runtime(tmp_path, "auto", pooler=False).maintenance.config.mode is VacuumMode.AUTO
    assert _runtime(tmp_path, "off", pooler=True).maintenance.config.mode is VacuumMode.OFF
