"""A URL whose driver is an extra that is not installed is one line naming the extra to
install (a ``ConfigError``, which the CLI prints without a traceback)."""

from __future__ import annotations

import sys

import pytest

from taskmill.config import load_settings
from taskmill.core.errors import ConfigError
from taskmill.runtime import build_broker
from taskmill.store.engine import create_engine


def _uninstalled(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import module`` fail as it does when the package is not installed."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(f"{m}.") for m in modules):
            monkeypatch.delitem(sys.modules, name)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_postgresql_without_asyncpg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _uninstalled(monkeypatch, "asyncpg")
    with pytest.raises(ConfigError, match=r"pip install 'taskmill\[postgres\]'"):
        create_engine("postgresql://app@127.0.0.1:5432/scheduler")


@pytest.mark.parametrize(
    ("url", "modules", "extra"),
    [
        ("redis://127.0.0.1:6379", ("redis", "taskmill.brokers.redis"), "redis"),
        ("amqp://guest:guest@127.0.0.1/", ("aio_pika", "taskmill.brokers.rabbitmq"), "rabbitmq"),
    ],
)
def test_broker_without_its_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, modules: tuple[str, ...], extra: str
) -> None:
    _uninstalled(monkeypatch, *modules[:1])
    monkeypatch.delitem(sys.modules, modules[1], raising=False)
    settings = load_settings(broker={"url": url})
    with pytest.raises(ConfigError, match=rf"taskmill\[{extra}\]"):
        build_broker(settings, "consumer")
