"""load_settings (config.py): defaults, the TOML file, environment variables, errors."""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel

from taskmill.config import Settings, config_file, load_settings
from taskmill.core.errors import ConfigError

SEED_URL_VARS = ("DATABASE_URL", "REDIS_URL", "AMQP_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited TASKMILL_* / seed URL variables, and no ./config from the caller's cwd."""
    for name in list(os.environ):
        if name.startswith("TASKMILL_") or name in SEED_URL_VARS:
            monkeypatch.delenv(name)
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    return directory


def _write(config_dir: Path, body: str, environment: str = "test") -> Path:
    path = config_dir / f"{environment}.toml"
    path.write_text(body, encoding="utf-8")
    return path


TEST_TOML = """
[database]
url = "sqlite:///from-toml.db"
pool_size = 3

[worker]
concurrency = 7
queues = ["emails", "reports"]
lease_seconds = 40
heartbeat_seconds = 5

[retry]
base_seconds = 2
jitter = 0

[logging]
level = "DEBUG"
format = "json"
"""


def test_load_settings_defaults(config_dir: Path) -> None:
    settings = load_settings(config_dir=config_dir)
    assert isinstance(settings, Settings)
    assert settings.environment == "development"
    assert settings.database.url == "sqlite:///taskmill.db"
    assert settings.database.pool_size == 10
    assert settings.database.migrate_on_start is True
    assert settings.broker.url is None
    assert settings.worker.concurrency == 10
    assert settings.worker.queues == ("default",)
    assert settings.worker.lease_seconds == 30.0
    assert settings.worker.heartbeat_seconds == 10.0
    assert settings.scheduler.max_catchup == 10
    assert settings.scheduler.misfire_grace_seconds == 60.0
    assert settings.scheduler.lookahead_seconds == 2.5
    assert settings.retry.base_seconds == 60.0
    assert settings.retry.factor == 2.0
    assert settings.retry.cap_seconds == 3600.0
    assert settings.retry.jitter == 0.1
    assert settings.tasks.max_retries == 3
    assert settings.tasks.timeout_seconds == 300.0
    assert settings.logging.level == "INFO"
    assert settings.logging.format == "text"


def test_load_settings_reads_toml(config_dir: Path) -> None:
    _write(config_dir, TEST_TOML)
    settings = load_settings(environment="test", config_dir=config_dir)
    assert settings.environment == "test"
    assert settings.database.url == "sqlite:///from-toml.db"
    assert settings.database.pool_size == 3
    assert settings.worker.concurrency == 7
    assert settings.worker.queues == ("emails", "reports")
    assert settings.worker.lease_seconds == 40.0
    assert settings.worker.heartbeat_seconds == 5.0
    assert settings.retry.base_seconds == 2.0
    assert settings.retry.jitter == 0.0
    assert settings.logging.level == "DEBUG"
    assert settings.logging.format == "json"
    # Keys the file leaves out keep their defaults.
    assert settings.worker.shutdown_grace_seconds == 10.0
    assert settings.retry.cap_seconds == 3600.0


def test_load_settings_environment_from_taskmill_env(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    _write(config_dir, TEST_TOML)
    monkeypatch.setenv("TASKMILL_ENV", "test")
    settings = load_settings(config_dir=config_dir)
    assert settings.environment == "test"
    assert settings.worker.concurrency == 7


def test_load_settings_config_dir_from_env(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    _write(config_dir, TEST_TOML, environment="development")
    monkeypatch.setenv("TASKMILL_CONFIG_DIR", str(config_dir))
    assert config_file("development") == config_dir / "development.toml"
    assert load_settings().worker.concurrency == 7


def test_load_settings_env_var_overrides_toml(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    _write(config_dir, TEST_TOML)
    monkeypatch.setenv("TASKMILL_WORKER__CONCURRENCY", "21")
    settings = load_settings(environment="test", config_dir=config_dir)
    assert settings.worker.concurrency == 21
    # The rest of the [worker] table still comes from the file.
    assert settings.worker.queues == ("emails", "reports")
    assert settings.worker.lease_seconds == 40.0


def test_load_settings_overrides_beat_env_and_toml(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    _write(config_dir, TEST_TOML)
    monkeypatch.setenv("TASKMILL_WORKER__CONCURRENCY", "21")
    settings = load_settings(environment="test", config_dir=config_dir, worker={"concurrency": 3})
    assert settings.worker.concurrency == 3
    assert settings.worker.lease_seconds == 40.0


def test_load_settings_database_url_honoured(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    _write(config_dir, TEST_TOML)
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://db.example/taskmill")
    settings = load_settings(environment="test", config_dir=config_dir)
    assert settings.database.url == "postgresql+asyncpg://db.example/taskmill"
    assert settings.database.pool_size == 3  # still from the file


def test_load_settings_redis_url_honoured(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.example:6379/0")
    settings = load_settings(config_dir=config_dir)
    assert settings.broker.url == "redis://cache.example:6379/0"


def test_load_settings_taskmill_names_beat_seed_urls(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://seed/db")
    monkeypatch.setenv("REDIS_URL", "redis://seed")
    monkeypatch.setenv("TASKMILL_DATABASE__URL", "sqlite:///winner.db")
    monkeypatch.setenv("TASKMILL_BROKER__URL", "redis://winner")
    settings = load_settings(config_dir=config_dir)
    assert settings.database.url == "sqlite:///winner.db"
    assert settings.broker.url == "redis://winner"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[worker]\nconcurrency = 0\n", "worker.concurrency"),
        ("[worker]\nconcurrency = 10001\n", "worker.concurrency"),
        ('[worker]\nconcurrency = "many"\n', "worker.concurrency"),
        ("[database]\npool_size = -1\n", "database.pool_size"),
        ("[database]\npool_size = 1001\n", "database.pool_size"),
        ("[database]\nconnect_timeout_seconds = 3601\n", "database.connect_timeout_seconds"),
        ("[database]\nconnect_timeout_seconds = -1\n", "database.connect_timeout_seconds"),
        ("[scheduler]\nmax_catchup = 0\n", "scheduler.max_catchup"),
        ("[scheduler]\npoll_interval_seconds = 0\n", "scheduler.poll_interval_seconds"),
        ("[scheduler]\nlookahead_seconds = -1\n", "scheduler.lookahead_seconds"),
        ("[scheduler]\nlookahead_seconds = 61\n", "scheduler.lookahead_seconds"),
        ("[retry]\njitter = 1.5\n", "retry.jitter"),
        ("[retry]\nfactor = 0.5\n", "retry.factor"),
        ('[logging]\nlevel = "LOUD"\n', "logging.level"),
        ("[tasks]\ntimeout_seconds = 0\n", "tasks.timeout_seconds"),
        ('[maintenance]\nvacuum = "sometimes"\n', "maintenance.vacuum"),
        ("[maintenance]\ninterval_seconds = 4\n", "maintenance.interval_seconds"),
        ("[maintenance]\ninterval_seconds = 86401\n", "maintenance.interval_seconds"),
        ("[maintenance]\ndead_tuples_threshold = 99\n", "maintenance.dead_tuples_threshold"),
        (
            "[maintenance]\ndead_tuples_threshold = 1000000001\n",
            "maintenance.dead_tuples_threshold",
        ),
        ("[maintenance]\nvacuum_timeout_seconds = 0.5\n", "maintenance.vacuum_timeout_seconds"),
        (
            "[maintenance]\nvacuum_timeout_seconds = 86401\n",
            "maintenance.vacuum_timeout_seconds",
        ),
    ],
)
def test_load_settings_invalid_toml_value_names_key(config_dir: Path, toml: str, key: str) -> None:
    _write(config_dir, toml)
    with pytest.raises(ConfigError, match=rf"{key}: "):
        load_settings(environment="test", config_dir=config_dir)


@pytest.mark.parametrize("value", ["0", "-3", "abc", "1.5"])
def test_load_settings_invalid_env_value_names_key(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path, value: str
) -> None:
    monkeypatch.setenv("TASKMILL_WORKER__CONCURRENCY", value)
    with pytest.raises(ConfigError, match=r"worker\.concurrency: "):
        load_settings(config_dir=config_dir)


def test_load_settings_error_mentions_file(config_dir: Path) -> None:
    path = _write(config_dir, "[worker]\nconcurrency = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environment="test", config_dir=config_dir)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("heartbeat", "lease"), [(30, 30), (31, 30), (10, 5)])
def test_load_settings_heartbeat_not_below_lease_rejected(
    config_dir: Path, heartbeat: int, lease: int
) -> None:
    _write(config_dir, f"[worker]\nheartbeat_seconds = {heartbeat}\nlease_seconds = {lease}\n")
    with pytest.raises(ConfigError, match=r"worker.heartbeat_seconds: .*lease_seconds"):
        load_settings(environment="test", config_dir=config_dir)


def test_load_settings_heartbeat_via_env_rejected(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    monkeypatch.setenv("TASKMILL_WORKER__HEARTBEAT_SECONDS", "45")
    with pytest.raises(ConfigError, match="heartbeat_seconds"):
        load_settings(config_dir=config_dir)


def test_load_settings_empty_queues_rejected(config_dir: Path) -> None:
    _write(config_dir, "[worker]\nqueues = []\n")
    with pytest.raises(ConfigError, match="queues"):
        load_settings(environment="test", config_dir=config_dir)


def test_load_settings_retry_cap_below_base_rejected(config_dir: Path) -> None:
    _write(config_dir, "[retry]\nbase_seconds = 100\ncap_seconds = 50\n")
    with pytest.raises(ConfigError, match=r"retry: .*cap_seconds"):
        load_settings(environment="test", config_dir=config_dir)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[worker]\nconcurency = 5\n", "worker.concurency"),
        ("bogus = 1\n", "bogus"),
        ("[nonsense]\nvalue = 1\n", "nonsense"),
        ('[database]\nurl = "sqlite://"\npassword = "x"\n', "database.password"),
    ],
)
def test_load_settings_unknown_toml_key_rejected(config_dir: Path, toml: str, key: str) -> None:
    _write(config_dir, toml)
    with pytest.raises(ConfigError, match=rf"(^|[ ;]){key}: Extra inputs"):
        load_settings(environment="test", config_dir=config_dir)


def test_load_settings_missing_explicit_file_rejected(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match="environment"):
        load_settings(environment="staging", config_dir=config_dir)


def test_load_settings_missing_explicit_file_rejected_without_config_dir(
    monkeypatch: pytest.MonkeyPatch, config_dir: Path
) -> None:
    monkeypatch.setenv("TASKMILL_CONFIG_DIR", str(config_dir))
    with pytest.raises(ConfigError, match="environment"):
        load_settings(environment="staging")


def test_load_settings_named_environment_without_its_file_names_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``TASKMILL_ENV=production`` in a folder whose ``config/`` has no production.toml
    (the file beside the app, say) is an error naming the path, not development's
    settings in production."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKMILL_CONFIG_DIR", raising=False)
    (tmp_path / "production.toml").write_text("[worker]\nconcurrency = 3\n")
    monkeypatch.setenv("TASKMILL_ENV", "production")
    expected = str(tmp_path / "config" / "production.toml")
    with pytest.raises(ConfigError, match="'production' was named") as err:
        load_settings()
    assert expected in str(err.value)


def test_load_settings_default_environment_needs_no_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKMILL_ENV", raising=False)
    monkeypatch.delenv("TASKMILL_CONFIG_DIR", raising=False)
    assert load_settings().environment == "development"


def test_load_settings_malformed_toml_raises_config_error(config_dir: Path) -> None:
    _write(config_dir, "[worker\nconcurrency = 5\n")
    with pytest.raises(ConfigError):
        load_settings(environment="test", config_dir=config_dir)


def test_settings_are_frozen(config_dir: Path) -> None:
    settings = load_settings(config_dir=config_dir)
    with pytest.raises(ValueError, match="frozen"):
        settings.worker.concurrency = 99  # type: ignore[misc]


def test_load_settings_unparsable_list_variable_is_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKMILL_WORKER__QUEUES", "a,b")
    with pytest.raises(ConfigError, match="environment"):
        load_settings()


def test_listener_connects_to_listen_url_or_url_unless_behind_a_transaction_pooler() -> None:
    direct = "postgresql://db:5432/app"
    pooled = "postgresql://pgbouncer:6432/app"
    assert load_settings(database={"url": direct}).database.listener_url == direct
    behind = {"url": pooled, "transaction_pooler": True}
    assert load_settings(database=behind).database.listener_url is None
    with_listen = load_settings(database=behind | {"listen_url": direct}).database
    assert with_listen.listener_url == direct


def test_listen_url_must_be_postgresql() -> None:
    with pytest.raises(ConfigError, match="listen_url") as raised:
        load_settings(database={"listen_url": "redis://localhost:6379"})
    assert "postgresql://" in str(raised.value)


def test_load_settings_maintenance_bounds_accepted(config_dir: Path) -> None:
    _write(
        config_dir,
        '[maintenance]\nvacuum = "warn"\ninterval_seconds = 5\n'
        "dead_tuples_threshold = 100\nvacuum_timeout_seconds = 86400\n",
    )
    maintenance = load_settings(environment="test", config_dir=config_dir).maintenance
    assert (maintenance.vacuum, maintenance.interval_seconds) == ("warn", 5)
    assert (maintenance.dead_tuples_threshold, maintenance.vacuum_timeout_seconds) == (100, 86400)


# Numbers bounded by their own validator instead of Field(le=...): retention ages.
OWN_BOUNDS = {
    "retention.succeeded_after_days",
    "retention.failed_after_days",
    "retention.cancelled_after_days",
    "retention.deleted_templates_after_days",
}


def _numeric_settings() -> list[tuple[str, Any]]:
    found = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, info in model.model_fields.items():
            kinds = set(typing.get_args(info.annotation)) or {info.annotation}
            if kinds & {int, float} and bool not in kinds:
                found.append((f"{section}.{name}", info))
    return found


def test_every_numeric_setting_has_a_minimum_and_a_maximum() -> None:
    """A number an operator gives is bounded both ways (a lease of 1e300 seconds, a
    burst of 10**18): refused when the settings load, naming the key, never found later
    as an overflow in a timer or a query."""
    unbounded = []
    for key, info in _numeric_settings():
        bounds = {type(m) for m in info.metadata}
        low = bounds & {annotated_types.Ge, annotated_types.Gt}
        high = bounds & {annotated_types.Le, annotated_types.Lt}
        if key not in OWN_BOUNDS and not (low and high):
            unbounded.append(key)
    assert len(_numeric_settings()) > 40
    assert unbounded == []


@pytest.mark.parametrize("key", [k for k, _ in _numeric_settings() if k not in OWN_BOUNDS])
def test_an_oversized_number_is_refused_naming_its_key(config_dir: Path, key: str) -> None:
    section, name = key.split(".")
    annotation = dict(_numeric_settings())[key].annotation
    huge = "1e300" if float in (typing.get_args(annotation) or (annotation,)) else str(10**18)
    _write(config_dir, f"[{section}]\n{name} = {huge}\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: .*less than"):
        load_settings(environment="test", config_dir=config_dir)
