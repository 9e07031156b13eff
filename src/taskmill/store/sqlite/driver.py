"""The SQLite driver: the shared statements, written through ``SQLiteDatabase`` (one
writer lock; the hot writes whole on the writer thread, ``writer.py``), and wake-ups
between processes as datagrams (``wakeups.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from taskmill.store import notify
from taskmill.store.driver import SqlStore
from taskmill.store.protocol import WakeupListener
from taskmill.store.sqlite import wakeups
from taskmill.store.sqlite.database import SQLiteDatabase


class SQLiteStore(SqlStore):
    def __init__(self, db: SQLiteDatabase) -> None:
        super().__init__(db)
        self.lite = db

    def wakeup_listener(self, listen_url: str | None) -> WakeupListener | None:
        sender = self.lite.wakeups
        if sender is None:  # in memory: no other process shares it
            return None
        return functools.partial(wakeups.listen, sender.directory)

    def after_commit(self, connection: object, callback: Callable[[], None]) -> None:
        """The caller's transaction created jobs (``scheduled``): after its commit, this
        process's ``callback`` and the other processes' populators are woken."""
        sender = self.lite.wakeups

        def committed() -> None:
            callback()
            if sender is not None:
                sender.send([(notify.DUE, "")])

        super().after_commit(connection, committed)
