"""Wake-ups between processes on one SQLite file: what PostgreSQL's ``NOTIFY`` gives its
processes, for a database that has none. Without them a worker in another process than
the producer finds a new job only at its next poll (0.5 s by default).

Each listening process binds a Unix datagram socket in a directory of its own user's,
named after the database file's resolved path (``<tmp>/taskmill-<uid>/<hash>/``: a path
beside the file could exceed the 107 bytes a socket's name may have). After a write
transaction commits, the writer sends one datagram per channel it notified (``store/
notify.py``) to every socket in that directory: a ``listdir`` and a ``sendto`` each,
microseconds, never blocking (a full receive buffer means that process is already
woken). A socket nobody is bound to any more (its process was killed) refuses the
datagram and is removed. A lost wake-up costs a poll interval, never a job: the pollers
stay the safety net, as they are for PostgreSQL's notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import stat
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

Wakeup = tuple[str, str]  # channel, payload


def directory_for(database: str | None) -> Path | None:
    """The socket directory of the SQLite file ``database`` (``None`` in memory: no
    other process can open it)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = hashlib.sha256(str(Path(database).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"taskmill-{os.getuid()}" / key


def _private(directory: Path) -> bool:
    """Create ``directory`` (and its parent) for this user only; ``False`` when it
    exists but is someone else's or open to others (then nobody listens through it)."""
    try:
        for path in (directory.parent, directory):
            path.mkdir(mode=0o700, exist_ok=True)
            info = path.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                return False
            if info.st_mode & 0o077:
                return False
    except OSError:
        return False
    return True


class WakeupSender:
    """Sends committed transactions' wake-ups to every listening process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._socket: socket.socket | None = None  # opened at the first send

    def _opened(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
            # A database handle dropped without close() must not leave it to the
            # garbage collector's ResourceWarning.
            weakref.finalize(self, self._socket.close)
        return self._socket

    def send(self, wakeups: Iterable[Wakeup]) -> None:
        messages = [f"{channel}\n{payload}".encode() for channel, payload in wakeups]
        if not messages:
            return
        try:
            names = os.listdir(self.directory)
        except OSError:  # nobody has listened yet
            return
        for name in names:
            if name.endswith(".sock"):
                self._send_to(str(self.directory / name), messages)

    def _send_to(self, path: str, messages: list[bytes]) -> None:
        sock = self._opened()
        for message in messages:
            try:
                sock.sendto(message, path)
            except BlockingIOError:  # its buffer is full: it has plenty to wake it
                return
            except (ConnectionRefusedError, FileNotFoundError):  # its process is gone
                with contextlib.suppress(OSError):
                    os.unlink(path)
                return
            except OSError as exc:
                log.debug("wake-up to %s not sent: %s", path, exc)
                return

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()


async def listen(
    directory: Path,
    channels: Sequence[str],
    on_notify: Callable[[str, str], None],
    stop: asyncio.Event,
) -> None:
    """Call ``on_notify(channel, payload)`` for each wake-up on ``channels`` until
    ``stop``; signal every channel once at the start (as PostgreSQL's listener does
    after each connect: what was sent before this process listened is looked for)."""
    if not _private(directory):
        log.warning(
            "no wake-ups from other processes: %s is not a private directory of this "
            "user; polling instead",
            directory,
        )
        await stop.wait()
        return
    path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
    wanted = frozenset(channels)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        sock.bind(str(path))
        loop.add_reader(sock.fileno(), _drain, sock, wanted, on_notify)
        for channel in channels:
            on_notify(channel, "")
        await stop.wait()
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(sock.fileno())
        sock.close()
        path.unlink(missing_ok=True)


def _drain(
    sock: socket.socket, wanted: frozenset[str], on_notify: Callable[[str, str], None]
) -> None:
    """Read every datagram waiting (one wake-up each; repeats are cheap to act on)."""
    while True:
        try:
            data = sock.recv(1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("wake-up socket read failed: %s", exc)
            return
        channel, _, payload = data.decode(errors="replace").partition("\n")
        if channel in wanted:
            try:
                on_notify(channel, payload)
            except Exception:  # one bad wake-up must not stop the others
                log.exception("wake-up on %s failed", channel)
