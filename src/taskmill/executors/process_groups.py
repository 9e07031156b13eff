"""Process groups of the ``process`` task type: signalling, reaping, and the records that
let a worker kill the groups a worker killed outright left running (see process.py)."""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already gone (the race between checking and signalling)
    except PermissionError:
        pass  # a member changed user (a setuid program); nothing more this worker can do


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_group(pgid: int) -> None:
    """Reap members of the group that were reparented to this process and have exited."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return  # none of our children is in the group
        if pid == 0:
            return  # some are, still running


@functools.cache
def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux only).

    When a group is killed its grandchildren are orphaned; without a subreaper they go to
    PID 1, which in a container without an init (and in some sandboxes) never reaps them:
    zombies. As a subreaper they come here, and :func:`reap_group` reaps them.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


# -- groups left by a worker killed outright -------------------------------------


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22),
    which tells a process from a later one that reuses its pid; ``None`` if there is no
    such process or no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, ticks: int | None) -> bool:
    """Whether the process ``pid`` that started at ``ticks`` still exists."""
    if ticks is not None or sys.platform.startswith("linux"):
        return ticks is not None and _start_ticks(pid) == ticks
    try:  # no /proc: a pid that exists is taken to be the same process
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GroupRecords:
    """One file per running program in ``directory``, named after its process group and
    holding ``"<worker pid> <worker start> <leader start>"``.

    A worker writes the file once the program has started and removes it once the group
    is gone. :meth:`sweep` SIGKILLs the groups whose recording worker no longer exists
    (its pid is gone or belongs to a later process) and removes their files. A group is
    killed only while its leader is the process recorded, or gone (a group outlives its
    leader, and its id cannot be reused while it has members). Left open: a worker killed
    between starting a program and writing its file (a few milliseconds) leaves that
    group unrecorded.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._me = f"{os.getpid()} {_start_ticks(os.getpid())}"
        self._last_sweep = -math.inf

    @classmethod
    def open(cls, run_dir: str | None) -> GroupRecords | None:
        """The records in ``run_dir`` (created mode 0700), or ``None`` (logged) if that
        directory is not one only this user can write to: a stranger's file there could
        name any group of ours to kill."""
        directory = Path(run_dir or Path(tempfile.gettempdir()) / f"taskmill-process-{os.getuid()}")
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = directory.lstat()
        except OSError as exc:
            log.error(
                "process.run_dir %s is unusable (%s): groups are not recorded", directory, exc
            )
            return None
        if (
            not os.path.isdir(directory)
            or os.path.islink(directory)
            or (info.st_uid != os.getuid() or info.st_mode & 0o022)
        ):
            log.error(
                "process.run_dir %s is not a directory owned by this user and writable by "
                "it alone: groups are not recorded",
                directory,
            )
            return None
        return cls(directory)

    def add(self, pgid: int) -> None:
        path = self.directory / str(pgid)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(f"{self._me} {_start_ticks(pgid)}\n")
        temporary.replace(path)  # whole or absent, for a sweep reading it now

    def remove(self, pgid: int) -> None:
        (self.directory / str(pgid)).unlink(missing_ok=True)

    def sweep(self, at_most_every: float = 0.0) -> list[int]:
        """Kill the groups of workers that are no longer alive; return their ids."""
        now = time.monotonic()
        if now - self._last_sweep < at_most_every:
            return []
        self._last_sweep = now
        killed: list[int] = []
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return []
        for path in entries:
            if not path.name.isdigit():
                continue
            if self._sweep_one(path, int(path.name)):
                killed.append(int(path.name))
        if killed:
            log.warning(
                "killed %d process group(s) left running by a worker that died: %s",
                len(killed),
                ", ".join(map(str, killed)),
                extra={"event": "orphan_groups_killed"},
            )
        return killed

    def _sweep_one(self, path: Path, pgid: int) -> bool:
        try:
            fields = path.read_text().split()
            owner, owner_ticks, leader_ticks = int(fields[0]), _ticks(fields[1]), _ticks(fields[2])
        except (OSError, ValueError, IndexError):
            return False  # half written by a live worker, or removed meanwhile
        if _alive(owner, owner_ticks):
            return False
        leader = _start_ticks(pgid)
        same = leader is None or leader_ticks is None or leader == leader_ticks
        kill = same and group_exists(pgid)
        if kill:
            signal_group(pgid, signal.SIGKILL)
        path.unlink(missing_ok=True)
        return kill


def _ticks(text: str) -> int | None:
    return None if text == "None" else int(text)
