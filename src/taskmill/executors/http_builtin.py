"""The built-in ``http`` task as every process registers it: its settings, and its
definition, which imports the HTTP client (httpx, httpcore and the SSRF guard: 7 MB of
a process's memory) at its first job or first payload check, not at start. Executors
that never run an ``http`` job, and the other services, stay without it
(``executors/http.py`` does the work)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskmill.executors.context import TaskContext
from taskmill.executors.python import TaskDefinition

if TYPE_CHECKING:
    import httpcore

    from taskmill.executors.ssrf import AddressPolicy, Resolver

TASK_NAME = "http"


@dataclass(frozen=True, slots=True)
class HttpExecutorConfig:
    """What the ``http`` task may do (built from the ``[http]`` settings section)."""

    allowed_networks: tuple[str, ...] = ()
    allow_private_networks: bool = False
    follow_redirects: bool = False
    max_redirects: int = 5
    max_response_bytes: int = 65_536
    default_timeout_seconds: float = 30.0
    max_timeout_seconds: float = 300.0
    user_agent: str = "taskmill"
    response_headers: tuple[str, ...] = ()  # names to keep in the result; empty: all
    max_attempts: int = 4
    # Below the guard, for tests and embedders (never from settings): what opens sockets
    # (default: httpcore's anyio backend) and what resolves names (default: the system
    # resolver). The guard checks every address either returns before connecting.
    network_backend: httpcore.AsyncNetworkBackend | None = None
    resolver: Resolver | None = None

    def policy(self) -> AddressPolicy:
        from taskmill.executors.ssrf import AddressPolicy

        return AddressPolicy.from_strings(self.allowed_networks, self.allow_private_networks)


def http_task(config: HttpExecutorConfig) -> TaskDefinition:
    """The ``http`` task type, with a validator that checks payloads at job creation;
    both import the client (``executors/http.py``) at their first call."""

    async def handle(ctx: TaskContext, payload: Any) -> dict[str, Any]:
        from taskmill.executors import http

        return await http.handle(ctx, payload, config)

    def validate(payload: Any) -> None:
        from taskmill.executors import http

        http.parse_payload(payload, config)

    return TaskDefinition(
        name=TASK_NAME,
        handler=handle,
        max_attempts=config.max_attempts,
        validator=validate,
        builtin=True,
    )
