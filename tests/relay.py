"""A loopback TCP relay to PostgreSQL, for tests of a database that goes away or comes
late."""

from __future__ import annotations

import asyncio
import contextlib


class PostgresRelay:
    """A loopback TCP relay to PostgreSQL that can be cut: the database becomes
    unreachable for everything that connects through it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        """Listen on ``port`` (any free one by default); the port listened on."""
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", port)
        listening: int = self.server.sockets[0].getsockname()[1]
        return listening

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()
