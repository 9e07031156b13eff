"""The ``http`` task's payload validation (executors/http.py), without any network."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskmill.config import load_settings
from taskmill.core.errors import ConfigError, ValidationError
from taskmill.executors.http import parse_payload
from taskmill.executors.http_builtin import HttpExecutorConfig, http_task
from taskmill.runtime import builtin_tasks

CONFIG = HttpExecutorConfig(max_timeout_seconds=60.0)


def test_parse_payload_full_request() -> None:
    request = parse_payload(
        {
            "method": "post",
            "url": "https://api.example.com/hooks?x=1",
            "headers": {"X-Token": "abc"},
            "body": {"a": [1, 2]},
            "timeout_seconds": 5,
        },
        CONFIG,
    )
    assert request.method == "POST"
    assert request.url.host == "api.example.com"
    assert request.headers == {"X-Token": "abc"}
    assert request.body == {"a": [1, 2]} and request.has_body
    assert request.timeout_seconds == 5.0


def test_parse_payload_defaults() -> None:
    request = parse_payload({"url": "http://example.com/"}, CONFIG)
    assert request.method == "GET" and request.headers == {} and not request.has_body
    assert request.timeout_seconds == CONFIG.default_timeout_seconds


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ("http://example.com", "payload", "must be an object"),
        ({}, "payload.url", "required"),
        ({"url": 5}, "payload.url", "must be a string"),
        ({"url": "ftp://example.com/"}, "payload.url", "scheme must be http or https"),
        ({"url": "file:///etc/passwd"}, "payload.url", "scheme must be http or https"),
        ({"url": "http://"}, "payload.url", "no host"),
        ({"url": "http://[::1/"}, "payload.url", "not a valid URL"),
        ({"url": "http://127.0.0.1/"}, "payload.url", "loopback"),
        ({"url": "http://2130706433/"}, "payload.url", "loopback"),
        ({"url": "http://0x7f.1/"}, "payload.url", "loopback"),
        ({"url": "http://[::ffff:127.0.0.1]/"}, "payload.url", "loopback"),
        ({"url": "http://[::ffff:7f00:1]:8080/"}, "payload.url", "loopback"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "payload.url", "link-local"),
        ({"url": "http://10.0.0.1/"}, "payload.url", "private"),
        ({"url": "http://[fd00::1]/"}, "payload.url", "private"),
        ({"url": "http://100.64.0.1/"}, "payload.url", "carrier-grade NAT"),
        ({"url": "http://[2002:7f00:1::]/"}, "payload.url", "loopback"),
        ({"url": "http://0.0.0.0:8000/"}, "payload.url", "unspecified"),
        ({"url": "http://x/", "method": "TRACE"}, "payload.method", "must be one of"),
        ({"url": "http://x/", "method": 1}, "payload.method", "must be one of"),
        ({"url": "http://x/", "headers": ["a"]}, "payload.headers", "string to string"),
        ({"url": "http://x/", "headers": {"X-A": 1}}, "payload.headers.X-A", "must be a string"),
        ({"url": "http://x/", "headers": {"X-A": "a\r\nB: c"}}, "payload.headers.X-A", "CR"),
        ({"url": "http://x/", "headers": {"bad name": "v"}}, "payload.headers", "header name"),
        ({"url": "http://x/", "timeout_seconds": 0}, "payload.timeout_seconds", "greater than 0"),
        ({"url": "http://x/", "timeout_seconds": 61}, "payload.timeout_seconds", "at most 60"),
        ({"url": "http://x/", "timeout_seconds": "5"}, "payload.timeout_seconds", "a number"),
        ({"url": "http://x/", "timeout_seconds": True}, "payload.timeout_seconds", "a number"),
        ({"url": "http://x/", "data": "x"}, "payload.data", "unknown field"),
    ],
)
def test_validate_payload_refused(payload: Any, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        http_task(CONFIG).validate(payload)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_validate_payload_allowed_networks_admit_loopback() -> None:
    config = HttpExecutorConfig(allowed_networks=("127.0.0.0/8",))
    http_task(config).validate({"url": "http://127.0.0.1:8080/"})
    http_task(config).validate({"url": "http://2130706433/"})
    with pytest.raises(ValidationError, match="private"):
        http_task(config).validate({"url": "http://10.0.0.1/"})


def test_validate_payload_names_are_checked_on_connect_only() -> None:
    # Resolving at creation proves nothing about run time (DNS rebinding).
    http_task(HttpExecutorConfig()).validate({"url": "http://localhost:8080/"})


def test_builtin_tasks_http_enabled_by_config() -> None:
    settings = load_settings("test", None, tasks={"max_retries": 2})
    [task] = [t for t in builtin_tasks(settings) if t.name == "http"]
    assert task.builtin and task.is_async and task.max_attempts == 3
    off = load_settings("test", None, http={"enabled": False})
    assert all(t.name != "http" for t in builtin_tasks(off))


def test_load_settings_http_section_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMILL_HTTP__ALLOWED_NETWORKS", '["127.0.0.1/32", "fd00::/8"]')
    monkeypatch.setenv("TASKMILL_HTTP__FOLLOW_REDIRECTS", "true")
    settings = load_settings("test", None)
    assert settings.http.allowed_networks == ("127.0.0.1/32", "fd00::/8")
    config = settings.http.executor_config(max_retries=0)
    assert config.follow_redirects and config.max_attempts == 1
    assert config.policy().refusal(ipaddress.ip_address("127.0.0.1")) is None


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ({"allowed_networks": ["10.0.0.0/33"]}, "http.allowed_networks"),
        ({"default_timeout_seconds": 60, "max_timeout_seconds": 10}, "max_timeout_seconds"),
        ({"max_response_bytes": 0}, "http.max_response_bytes"),
        ({"allow_privat_networks": True}, "http.allow_privat_networks"),
    ],
)
def test_load_settings_http_section_errors_name_the_key(http: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings("test", None, http=http)


def test_the_http_client_is_loaded_at_the_first_http_job_not_at_start(tmp_path: Path) -> None:
    """Every process registers the built-in ``http`` task; only one that checks or runs
    an ``http`` job loads httpx, httpcore and the SSRF guard (7 MB of memory)."""
    code = (
        "import sys\n"
        "from taskmill.config import load_settings\n"
        "from taskmill.executors.python import TaskRegistry\n"
        "from taskmill.runtime import Runtime, builtin_tasks\n"
        f"settings = load_settings(database={{'url': 'sqlite:///{tmp_path / 'h.db'}'}})\n"
        "(http,) = [t for t in builtin_tasks(settings) if t.name == 'http']\n"
        "Runtime(settings, TaskRegistry())\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore'))\n"
        "http.validate({'url': 'https://example.com/'})\n"
        "print(before, 'httpx' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[] True"
