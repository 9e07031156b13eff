"""A small real HTTP/1.1 server for the ``http`` task's tests (asyncio streams, no
framework), which records what it saw: requests, bytes sent, connections closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

CHUNK = b"x" * 65_536
HUGE_BYTES = 256 * 1024 * 1024


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    """Routes: ``/ok``, ``/echo``, ``/status/<code>``, ``/huge``, ``/slow``,
    ``/redirect?to=<url>``. ``/slow`` never answers; it waits for the client to close."""

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    connections: int = 0
    huge_bytes_sent: int = 0
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        try:
            request = await _read_request(reader)
            self.requests.append(request)
            route = _ROUTES.get(request.path.split("?")[0].rstrip("/"))
            if route is None and request.path.startswith("/status/"):
                route = _status
            await (route or _not_found)(self, request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.client_closed.set()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> SeenRequest:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *lines = head.split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return SeenRequest(method, path, headers, body)


def _response(status: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


Route = Callable[
    [LocalServer, SeenRequest, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]


async def _ok(
    server: LocalServer, req: SeenRequest, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    body = json.dumps({"hello": "world"}).encode()
    w.write(_response("200 OK", body, {"Content-Type": "application/json", "X-Test": "yes"}))
    await w.drain()


async def _echo(
    server: LocalServer, req: SeenRequest, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    body = json.dumps({"method": req.method, "body": req.body.decode()}).encode()
    w.write(_response("200 OK", body, {"Content-Type": "application/json; charset=utf-8"}))
    await w.drain()


async def _status(
    server: LocalServer, req: SeenRequest, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    code = req.path.removeprefix("/status/")
    w.write(_response(f"{code} Whatever", b"boom: the database is on fire " + b"!" * 5000))
    await w.drain()


async def _huge(
    server: LocalServer, req: SeenRequest, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    w.write(f"HTTP/1.1 200 OK\r\nContent-Length: {HUGE_BYTES}\r\n\r\n".encode())
    while server.huge_bytes_sent < HUGE_BYTES:
        w.write(CHUNK)
        await w.drain()  # raises ConnectionError once the client has gone
        server.huge_bytes_sent += len(CHUNK)


async def _slow(
    server: LocalServer, req: SeenRequest, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    server.slow_started.set()
    # The client sends nothing after its request: EOF here means it closed the connection.
    await r.read(1)
    server.client_closed.set()


async def _redirect(
    server: LocalServer, req: SeenRequest, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    [target] = parse_qs(urlsplit(req.path).query)["to"]
    w.write(_response("302 Found", b"", {"Location": target}))
    await w.drain()


async def _not_found(
    server: LocalServer, req: SeenRequest, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    w.write(_response("404 Not Found", b"no such route"))
    await w.drain()


_ROUTES: dict[str, Route] = {
    "/ok": _ok,
    "/echo": _echo,
    "/huge": _huge,
    "/slow": _slow,
    "/redirect": _redirect,
}


@contextlib.asynccontextmanager
async def serving(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[LocalServer]:
    """A :class:`LocalServer` listening on ``host`` and ``port`` (0: a free one)."""
    server = LocalServer(host=host)
    listener = await asyncio.start_server(server.handle, host, port)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        try:
            yield server
        finally:
            listener.close()
            for task in server.handlers:  # Python 3.11 leaves handlers running at close
                task.cancel()
            await asyncio.gather(*server.handlers, return_exceptions=True)
