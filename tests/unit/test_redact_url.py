"""URLs in log lines: passwords never shown (S34)."""

from __future__ import annotations

import pytest

from taskmill.observability.logs import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cr%40t@db:5432/taskmill", "postgresql://app:***@db:5432/taskmill"),
        (
            "redis://:pw@127.0.0.1:6379/0?client_name=x",
            "redis://:***@127.0.0.1:6379/0?client_name=x",
        ),
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("postgresql://app@db/taskmill", "postgresql://app@db/taskmill"),
        ("sqlite:///taskmill.db", "sqlite:///taskmill.db"),
    ],
)
def test_redact_url_hides_the_password_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_shows_nothing_of_an_unparsable_url() -> None:
    assert redact_url("postgresql://app:pw@[::1:5432/x") == "<unparsable URL>"
