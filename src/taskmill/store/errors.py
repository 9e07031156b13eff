"""Driver errors become taskmill errors here, and nowhere else.

A unique or foreign-key violation becomes a :class:`Conflict` whose message says nothing
of the database (its text names constraints and columns, and a ``Conflict`` message
reaches API clients); the driver's error stays the ``__cause__``, for the logs. The
messages of the other store errors can carry hosts and ports: the API never shows them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from taskmill.core.errors import Conflict, StorageFull, StoreError, StoreUnavailable, TaskmillError

_FULL_MARKERS = ("database or disk is full", "disk full", "no space left", "diskfull")
_DISK_FULL = "53100"
INTEGRITY_CONFLICT = "conflicts with existing data"  # PostgreSQL's disk_full SQLSTATE


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise SQLAlchemy/driver errors as :mod:`taskmill.core.errors` types."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise Conflict(INTEGRITY_CONFLICT) from exc
    except sa_exc.OperationalError as exc:
        text = _message(exc).lower()
        if any(marker in text for marker in _FULL_MARKERS):
            raise StorageFull(_message(exc)) from exc
        raise StoreUnavailable(_message(exc)) from exc
    except (sa_exc.InterfaceError, sa_exc.DisconnectionError, ConnectionError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(_message(exc)) from exc
        raise StoreError(_message(exc)) from exc


def _message(exc: sa_exc.DBAPIError) -> str:
    return str(exc.orig) if exc.orig is not None else str(exc)


def from_asyncpg(exc: Exception, *, closed: bool) -> TaskmillError | None:
    """The taskmill error for an error asyncpg raised on a connection ``store/postgres/direct.py``
    drives itself (no SQLAlchemy wrapper around it); ``None``: not the driver's, re-raise.
    ``closed``: the connection is gone, whatever the error says."""
    import asyncpg  # the postgresql extra: only loaded when PostgreSQL is in use

    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return Conflict(INTEGRITY_CONFLICT)
    if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate == _DISK_FULL:
        return StorageFull(str(exc))
    if closed or isinstance(exc, asyncpg.InterfaceError | ConnectionError | OSError):
        return StoreUnavailable(str(exc) or type(exc).__name__)
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(str(exc))
    return None
