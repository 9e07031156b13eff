"""Failpoints: named places where a test can make the process die (a test facility).

``TASKMILL_FAILPOINTS`` holds comma-separated ``name=action[@probability]`` entries, read
once at import; the only action is ``kill`` (``os._exit(137)``, as a SIGKILL would end
the process: no ``finally`` blocks, no flushing, no goodbyes to the database or broker).
Without a probability the failpoint always fires. With one, it fires for that fraction
of calls: decided by a stable hash of ``key`` when the caller passes one (so the same
``job_id:attempt`` is hit in every process and every run), at random otherwise.

Unset (production), :func:`failpoint` is one dictionary lookup on an empty dict.

The points taskmill has:

- ``populator.after_commit``: due jobs are ``queued`` and committed, not yet published.
- ``populator.after_publish``: the hints are published (the populator commits *before*
  it publishes, so there is no ``populator.after_publish_before_commit``: a hint is never
  published for a job that is not queued in the database).
- ``executor.after_handler_before_outcome_commit`` (key ``job_id:attempt``): the handler
  returned; its outcome is not written yet.
"""

from __future__ import annotations

import os
import random
import zlib

ENV = "TASKMILL_FAILPOINTS"
KILL = "kill"
EXIT_CODE = 137  # what a shell reports for a SIGKILLed process


def parse(spec: str) -> dict[str, float]:
    """``"a=kill,b=kill@0.1"`` -> ``{"a": 1.0, "b": 0.1}``; a malformed entry is an error
    (a test that means to inject a fault must not silently inject nothing)."""
    points: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, action = entry.partition("=")
        action, _, probability = action.partition("@")
        if not sep or not name or action != KILL:
            raise ValueError(f"{ENV}: {entry!r} is not name=kill[@probability]")
        chance = float(probability) if probability else 1.0
        if not 0.0 <= chance <= 1.0:
            raise ValueError(f"{ENV}: {entry!r}: probability must be within 0..1")
        points[name] = chance
    return points


_ACTIVE = parse(os.environ.get(ENV, ""))


def hits(name: str, key: str | None = None, points: dict[str, float] | None = None) -> bool:
    """Whether failpoint ``name`` fires for this call (without firing it)."""
    chance = (_ACTIVE if points is None else points).get(name)
    if chance is None:
        return False
    if chance >= 1.0:
        return True
    if key is None:
        return random.random() < chance  # fault injection, not security
    return zlib.crc32(f"{name}:{key}".encode()) / 2**32 < chance


def failpoint(name: str, key: str | None = None) -> None:
    """Die here (``os._exit(137)``) if ``TASKMILL_FAILPOINTS`` arms ``name`` for ``key``."""
    if _ACTIVE and hits(name, key):
        os.write(2, f"failpoint {name} ({key or '-'}): kill\n".encode())
        os._exit(EXIT_CODE)
