"""The deployment files say what the code does (no Docker engine here: `docker compose
config` runs in CI only where the client exists; these checks always run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskmill.brokers.rabbitmq import RabbitMQBroker
from taskmill.config import load_settings
from taskmill.runtime import build_broker

pytestmark = pytest.mark.parallel  # no timing bounds: runs in the parallel step

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"api", "executor", "queue-populator", "failure-watcher", "recurrence-manager"}


def _compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def test_compose_dev_has_postgres_and_redis() -> None:
    assert set(_compose("docker-compose.dev.yml")["services"]) == {"postgres", "redis", "rabbitmq"}


def test_compose_dev_starts_rabbitmq_only_with_its_profile() -> None:
    """Seed 004's dev environment has RabbitMQ: ``--profile rabbitmq`` starts it on the
    ports the broker URL in docs/deployment/README.md names; a plain ``up`` does not."""
    services = _compose("docker-compose.dev.yml")["services"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert "5672:5672" in services["rabbitmq"]["ports"]
    assert all("profiles" not in services[name] for name in ("postgres", "redis"))


def test_compose_runs_every_service_with_real_commands() -> None:
    services = _compose("docker-compose.yml")["services"]
    assert set(services) == SERVICES | {"postgres", "redis"}
    help_text = subprocess.run(
        [sys.executable, "-c", "from taskmill.cli.main import main; main()", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    ).stdout
    for name in SERVICES:
        command = " ".join(services[name]["command"])
        assert f"taskmill {name} " in command
        assert name in help_text


def test_env_example_names_the_seed_urls() -> None:
    keys = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {"DATABASE_URL", "REDIS_URL"} <= keys


def test_compose_rabbitmq_override_points_every_service_at_rabbitmq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    override = _compose("docker-compose.rabbitmq.yml")["services"]
    assert set(override) == SERVICES | {"rabbitmq"}
    assert "rabbitmq" in (ROOT / "Dockerfile").read_text()  # the image has the extra
    for name in SERVICES:
        env = override[name]["environment"]
        assert "rabbitmq" in override[name]["depends_on"]
        monkeypatch.setenv("TASKMILL_BROKER__URL", env["TASKMILL_BROKER__URL"])
        monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")  # from .env: must not win
        settings = load_settings("production", ROOT / "config")
        assert isinstance(build_broker(settings, "consumer"), RabbitMQBroker)


def test_kubernetes_manifests_run_every_service_with_probes() -> None:
    """One Deployment per service, each running a real command of the image's
    ``taskmill``; the API probed on /healthz and /readyz, the others on their metrics
    port, which the shared Secret sets."""
    documents = list(
        yaml.safe_load_all((ROOT / "docs/deployment/kubernetes/taskmill.yaml").read_text())
    )
    secret = next(d for d in documents if d["kind"] == "Secret")["stringData"]
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert set(deployments) == {f"taskmill-{name}" for name in SERVICES}
    for name in SERVICES:
        [container] = deployments[f"taskmill-{name}"]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["taskmill"]
        assert container["args"][:3] == [name, "--app", "mymodule:app"]
        probe = container["livenessProbe"]["httpGet"]
        if name == "api":
            assert probe["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        else:
            assert probe == {"path": "/metrics", "port": int(secret["TASKMILL_METRICS__PORT"])}
    settings = load_settings("production", ROOT / "config")  # the Secret's env must load
    assert settings.environment == secret["TASKMILL_ENV"]


def test_systemd_unit_runs_a_real_command_and_restarts() -> None:
    unit = (ROOT / "docs/deployment/systemd/taskmill@.service").read_text()
    assert "ExecStart=/srv/app/.venv/bin/taskmill %i --app mymodule:app" in unit
    assert "Restart=always" in unit
    for name in SERVICES:  # %i is one of these
        done = subprocess.run(
            [sys.executable, "-c", "from taskmill.cli.main import main; main()", name, "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
