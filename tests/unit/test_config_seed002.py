"""Seed 002's example configuration loads: its section and key names are aliases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskmill.config import Settings, load_settings
from taskmill.core.errors import ConfigError
from taskmill.executors.python import TaskRegistry
from taskmill.runtime import Runtime

SEED_002 = Path(__file__).parents[1] / "fixtures" / "older_names"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TASKMILL_") or name in {"DATABASE_URL", "REDIS_URL", "AMQP_URL"}:
            monkeypatch.delenv(name)


def test_seed_002_example_configuration_loads_with_its_values() -> None:
    settings = load_settings("development", SEED_002)
    assert settings.database.url == "postgresql://localhost/scheduler_dev"
    assert settings.database.pool_size == 10
    assert settings.broker.url == "amqp://localhost:5672"
    assert settings.broker.prefix == "tasks"
    assert settings.scheduler.enabled is True
    assert settings.scheduler.poll_interval_seconds == 10
    assert settings.scheduler.batch_size == 100
    assert settings.worker.enabled is False
    assert settings.worker.worker_id == "dev-worker-001"
    assert settings.worker.concurrency == 5
    assert settings.worker.heartbeat_seconds == 30
    # Only a heartbeat given: the lease and the dead-worker limit keep their ratios to it.
    assert settings.worker.lease_seconds == 90
    assert settings.scheduler.worker_dead_after_seconds == 75
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 8080)
    assert settings.api.cors_origins == ("*",)


def _load(tmp_path: Path, body: str) -> Settings:
    (tmp_path / "t.toml").write_text(body)
    return load_settings("t", tmp_path)


def test_server_section_is_api_and_taskmill_names_win(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        '[server]\nbind_address = "[::1]:9000"\ncors_enabled = false\n'
        "[api]\nport = 7000\n[worker]\nmax_concurrent_tasks = 3\nconcurrency = 4\n",
    )
    assert settings.api.host == "::1"
    assert settings.api.port == 7000
    assert settings.api.cors_origins == ()
    assert settings.worker.concurrency == 4


def test_environment_wins_over_an_aliased_file_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKMILL_WORKER__CONCURRENCY", "7")
    settings = _load(tmp_path, "[worker]\nmax_concurrent_tasks = 3\n")
    assert settings.worker.concurrency == 7


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('[api]\nbind_address = "localhost"\n', "api.bind_address"),
        ('[api]\ncors_enabled = "yes"\n', "api.cors_enabled"),
        ("[message_queue]\nstatus_queue = 3\n", "broker.status_queue"),
        ("[dispatcher]\nmax_concurrent_dispatches = 0\n", "scheduler.batch_size"),
        ('[api]\ncors_origins = ["https://a.example/path"]\n', "api.cors_origins"),
        ("[worker]\nmax_concurent_tasks = 3\n", "worker.max_concurent_tasks"),
    ],
)
def test_bad_aliased_values_name_the_key(tmp_path: Path, body: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        _load(tmp_path, body)


def test_cors_is_off_by_default() -> None:
    assert load_settings().api.cors_origins == ()


def test_enabled_keys_choose_what_taskmill_run_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    worker_off = load_settings(database={"url": url}, worker={"enabled": False})
    assert set(Runtime(worker_off, TaskRegistry()).services()) == {
        "queue-populator",
        "failure-watcher",
        "recurrence-manager",
        "pruner",
        # Beside the recurrence manager: templates' on_job_failure (an event handler).
        "event-handlers",
        # Other processes' wake-ups on the same file (store/sqlite/wakeups.py).
        "sqlite-wakeups",
    }
    scheduler_off = load_settings(database={"url": url}, scheduler={"enabled": False})
    assert set(Runtime(scheduler_off, TaskRegistry()).services()) == {
        "executor",
        "sqlite-wakeups",
    }
    # A service named on its own (``taskmill executor``) runs whatever the keys say.
    assert set(Runtime(worker_off, TaskRegistry()).services(only={"executor"})) == {
        "executor",
        "sqlite-wakeups",
    }
