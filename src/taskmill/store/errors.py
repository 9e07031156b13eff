"""Driver errors become taskmill errors here, and nowhere else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from taskmill.core.errors import Conflict, StorageFull, StoreError, StoreUnavailable

_FULL_MARKERS = ("database or disk is full", "disk full", "no space left", "diskfull")


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise SQLAlchemy/driver errors as :mod:`taskmill.core.errors` types."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise Conflict(_message(exc)) from exc
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
