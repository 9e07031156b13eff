"""The ``process`` task type (seed 004): run an allow-listed program from an argument list.

The security model, in one place:

- ``argv`` is a list, never a shell string. ``argv[0]`` is resolved to an absolute path
  with every symlink and ``..`` removed, and that path must be on the allow-list, so
  ``../../bin/sh`` or a lookup on ``PATH`` cannot reach another program. A program the
  configuration marks operands-only is run as ``program -- args…``, so an argument such
  as ``-rf`` or ``--help`` is an operand, never an option.
- The child's environment is the payload's ``env`` over a minimal base (``PATH`` from the
  configuration, ``LANG``): the worker's own environment (``DATABASE_URL``, secrets) is
  never passed on. Only the names on ``allowed_env`` (empty by default) may be set: too
  many variables run code inside an allow-listed program (``BASH_FUNC_*%%``,
  ``BASH_ENV``, ``PYTHONWARNINGS`` with ``BROWSER``, ``PERL5OPT``, ``NODE_OPTIONS``,
  ``GCONV_PATH``, ``LD_PRELOAD`` …) for a deny-list ever to be complete. Loader variables
  (``LD_*``, ``DYLD_*``) are refused even if listed.
- The child leads its own session and process group. A timeout, a cancel, a lost lease
  or a shutdown kills the whole group (SIGTERM, a grace, then SIGKILL) and reaps it; so
  does a normal exit for anything the program left running in its group.
- A worker killed outright (SIGKILL, OOM) cannot kill anything. So each running group is
  recorded in a file in ``run_dir`` (:class:`GroupRecords`), and every worker on the
  machine kills the groups recorded by workers that are no longer alive: when it starts
  (an executor restart in particular) and before it starts a program.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
from dataclasses import dataclass
from typing import Any

from taskmill.core.errors import TimedOut, ValidationError
from taskmill.executors.context import TaskContext
from taskmill.executors.process_groups import (
    GroupRecords,
    become_subreaper,
    group_exists,
    reap_group,
    signal_group,
)
from taskmill.executors.python import TaskDefinition

log = logging.getLogger(__name__)

TASK_NAME = "process"
PAYLOAD_KEYS = ("argv", "env", "cwd", "timeout_seconds")
_CHUNK = 65536
_LOADER_PREFIXES = ("LD_", "DYLD_")
_ERROR_EXCERPT = 1000  # characters of stderr in an error message (it lands in last_error)
# The job-level timeout is a backstop beyond the process's own timeout and kill grace, so
# the process's own timeout (which reports output) is the one that normally fires.
_BACKSTOP_SECONDS = 5.0
# After SIGKILL, how long to wait for the group to disappear (only a process stuck in the
# kernel survives SIGKILL for long; past this the event loop still reaps the leader).
_KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.01
_SWEEP_EVERY_SECONDS = 1.0  # at most this often before starting a program


@dataclass(frozen=True, slots=True)
class ProcessExecutorConfig:
    """What the ``process`` task may run, and its limits (from the ``[process]`` settings).

    Attributes:
        allowed_programs: absolute paths of the programs a payload may name.
        operands_only_programs: those of ``allowed_programs`` started with ``--`` before
            the payload's arguments (programs that honour ``--``).
        allowed_cwds: directories a payload's ``cwd`` must be in; empty: any directory.
        allowed_env: names of the variables a payload's ``env`` may set; empty: none.
        path: ``PATH`` of the child, also used to find a bare program name.
        max_output_bytes: bytes kept of each of stdout and stderr (first and last half).
        max_timeout_seconds: the longest a payload may ask for, and the default.
        kill_grace_seconds: between SIGTERM and SIGKILL when the group is stopped.
        reap_orphans: make the worker a child subreaper (Linux), so that processes
            orphaned by killing a group are reaped here, not left to PID 1.
        max_attempts: attempts per job unless the request says otherwise.
        run_dir: where running process groups are recorded, so that the groups of a
            worker that was killed outright are killed by the next worker to start on
            this machine; ``None``: ``taskmill-process-<uid>`` in the temporary directory.
            Must be local to the machine (process ids mean nothing elsewhere).
    """

    allowed_programs: tuple[str, ...]
    operands_only_programs: tuple[str, ...] = ()
    allowed_cwds: tuple[str, ...] = ()
    allowed_env: tuple[str, ...] = ()
    path: str = "/usr/local/bin:/usr/bin:/bin"
    max_output_bytes: int = 65536
    max_timeout_seconds: float = 300.0
    kill_grace_seconds: float = 2.0
    reap_orphans: bool = True
    max_attempts: int = 1
    run_dir: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """A checked payload: what exactly will be started."""

    program: str  # absolute, symlink-free, on the allow-list
    args: tuple[str, ...]  # as passed: starting with "--" for an operands-only program
    env: dict[str, str]
    cwd: str
    timeout_seconds: float


class ProcessFailed(Exception):
    """The program exited with a nonzero code or was killed by a signal."""

    def __init__(self, exit_code: int, stderr: str) -> None:
        if exit_code < 0:
            what = f"killed by signal {_signal_name(-exit_code)}"
        else:
            what = f"exit code {exit_code}"
        super().__init__(f"{what}; stderr: {stderr[-_ERROR_EXCERPT:]}")
        self.exit_code = exit_code


class ProcessTimedOut(TimedOut):
    """The program ran past its ``timeout_seconds``; its process group was killed."""

    def __init__(self, seconds: float, stderr: str) -> None:
        excerpt = stderr[-_ERROR_EXCERPT:]
        super().__init__(f"timed out after {seconds:g}s, process group killed; stderr: {excerpt}")


def process_task(config: ProcessExecutorConfig) -> TaskDefinition:
    """The built-in ``process`` task type for ``config``."""
    checker = PayloadChecker(config)
    records = GroupRecords.open(config.run_dir)

    async def run_process(ctx: TaskContext, payload: Any) -> dict[str, Any]:
        # Checked again here: the worker's configuration is the one that decides what
        # runs on its machine, whatever the API process accepted.
        spec = checker.check(payload)
        ctx.logger.info("starting %s (%d arguments)", spec.program, len(spec.args))
        return await run_spec(spec, config, records)

    def validate(payload: Any) -> None:
        checker.check(payload)

    return TaskDefinition(
        name=TASK_NAME,
        handler=run_process,
        validator=validate,
        builtin=True,
        # What a worker killed outright left running: killed when a worker (re)starts.
        on_worker_start=records.sweep if records is not None else None,
        max_attempts=config.max_attempts,
        timeout_seconds=config.max_timeout_seconds + config.kill_grace_seconds + _BACKSTOP_SECONDS,
    )


# -- checking the payload ------------------------------------------------------


class PayloadChecker:
    """Turns a payload into a :class:`ProcessSpec`, or raises ``ValidationError`` naming
    the field (``payload.argv``, ``payload.env``, ``payload.cwd``,
    ``payload.timeout_seconds``)."""

    def __init__(self, config: ProcessExecutorConfig) -> None:
        self.config = config
        self._programs = frozenset(os.path.realpath(p) for p in config.allowed_programs)
        # Resolved like the allow-list, so the marking follows the file that really runs.
        self._operands_only = frozenset(os.path.realpath(p) for p in config.operands_only_programs)
        self._cwds = tuple(os.path.realpath(c) for c in config.allowed_cwds)
        self._env_names = frozenset(config.allowed_env)

    def check(self, payload: Any) -> ProcessSpec:
        if not isinstance(payload, dict):
            raise ValidationError("payload", "must be an object with argv (a list of strings)")
        unknown = sorted(str(key) for key in payload if key not in PAYLOAD_KEYS)
        if unknown:
            allowed = ", ".join(PAYLOAD_KEYS)
            raise ValidationError(f"payload.{unknown[0]}", f"unknown field (allowed: {allowed})")
        argv = _argv(payload.get("argv"))
        program = self._program(argv[0])
        end_of_options = ("--",) if program in self._operands_only else ()
        return ProcessSpec(
            program=program,
            args=(*end_of_options, *argv[1:]),
            env=_env(payload.get("env"), self.config.path, self._env_names),
            cwd=self._cwd(payload.get("cwd")),
            timeout_seconds=self._timeout(payload.get("timeout_seconds")),
        )

    def _program(self, name: str) -> str:
        resolved = self._resolve(name)
        if resolved is None or resolved not in self._programs:
            raise ValidationError(
                "payload.argv", f"program {name!r} is not allowed (process.allowed_programs)"
            )
        if not (os.path.isfile(resolved) and os.access(resolved, os.X_OK)):
            raise ValidationError("payload.argv", f"program {name!r} is not an executable file")
        return resolved

    def _resolve(self, name: str) -> str | None:
        """The absolute, symlink-free path of ``name``; ``None`` if not found on ``path``."""
        if os.path.isabs(name):
            return os.path.realpath(name)
        if "/" in name:
            # Relative to which directory? Ambiguous, and the classic way around a list.
            raise ValidationError(
                "payload.argv", f"program {name!r} must be an absolute path or a bare name"
            )
        found = shutil.which(name, path=self.config.path)
        return os.path.realpath(found) if found else None

    def _cwd(self, value: Any) -> str:
        if value is None:
            # Not the worker's own directory: by default it holds taskmill.db and the
            # API key secret file.
            return self._cwds[0] if self._cwds else "/"
        if not isinstance(value, str) or "\x00" in value or not os.path.isabs(value):
            raise ValidationError("payload.cwd", "must be an absolute path")
        resolved = os.path.realpath(value)
        if not os.path.isdir(resolved):
            raise ValidationError("payload.cwd", f"{value!r} is not an existing directory")
        if self._cwds and not any(_within(resolved, root) for root in self._cwds):
            raise ValidationError(
                "payload.cwd", f"{value!r} is not in an allowed directory (process.allowed_cwds)"
            )
        return resolved

    def _timeout(self, value: Any) -> float:
        cap = self.config.max_timeout_seconds
        if value is None:
            return cap
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("payload.timeout_seconds", "must be a number of seconds")
        if not (math.isfinite(value) and 0 < value <= cap):
            raise ValidationError(
                "payload.timeout_seconds",
                f"must be greater than 0 and at most {cap:g} (process.max_timeout_seconds)",
            )
        return float(value)


def _argv(value: Any) -> list[str]:
    field = "payload.argv"
    if value is None:
        raise ValidationError(field, "required: a list of strings, the program first")
    if not isinstance(value, list | tuple):
        raise ValidationError(
            field, "must be a list of strings (the program, then its arguments), not a string"
        )
    if not value:
        raise ValidationError(field, "must not be empty: the program comes first")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ValidationError(field, f"item {index} must be a string")
        if "\x00" in item:
            raise ValidationError(field, f"item {index} contains a NUL byte")
    if not value[0]:
        raise ValidationError(field, "item 0 (the program) must not be empty")
    return list(value)


def _env(value: Any, path: str, allowed: frozenset[str]) -> dict[str, str]:
    field = "payload.env"
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValidationError(field, "must be an object of names to string values")
    env = {"PATH": path, "LANG": "C.UTF-8"}
    for name, text in value.items():
        if not isinstance(name, str) or not name or "=" in name or "\x00" in name:
            raise ValidationError(field, f"{name!r} is not a valid variable name")
        if name.startswith(_LOADER_PREFIXES):
            raise ValidationError(field, f"{name} is refused: loader variables are not passed")
        if name not in allowed:
            raise ValidationError(
                field, f"{name} is not an allowed variable name (process.allowed_env)"
            )
        if not isinstance(text, str) or "\x00" in text:
            raise ValidationError(field, f"{name}: the value must be a string without NUL bytes")
        env[name] = text
    return env


def _within(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


# -- running -------------------------------------------------------------------


async def run_spec(
    spec: ProcessSpec, config: ProcessExecutorConfig, records: GroupRecords | None = None
) -> dict[str, Any]:
    """Run ``spec`` to completion; its result, or :class:`ProcessFailed` /
    :class:`ProcessTimedOut`. On cancellation the whole group is killed and reaped before
    ``CancelledError`` propagates. The group is in ``records`` while it exists."""
    if config.reap_orphans:
        become_subreaper()
    if records is not None:
        records.sweep(at_most_every=_SWEEP_EVERY_SECONDS)
    child = await _Child.start(spec)
    if records is not None:
        records.add(child.pgid)
    try:
        return await _supervise(child, spec, config)
    finally:
        if records is not None and not group_exists(child.pgid):
            records.remove(child.pgid)  # kept while it lingers: a later sweep retries


async def _supervise(
    child: _Child, spec: ProcessSpec, config: ProcessExecutorConfig
) -> dict[str, Any]:
    out, err = Capture(config.max_output_bytes), Capture(config.max_output_bytes)
    stdout, stderr = child.protocol.stdout, child.protocol.stderr
    assert stdout is not None and stderr is not None  # both are pipes
    # Both pipes are drained while waiting: a child blocked on a full pipe never exits.
    pumps = [asyncio.create_task(_pump(stdout, out)), asyncio.create_task(_pump(stderr, err))]
    try:
        async with asyncio.timeout(spec.timeout_seconds):
            await child.protocol.exited
    except TimeoutError:
        await child.stop(pumps, config)
        raise ProcessTimedOut(spec.timeout_seconds, err.text()) from None
    except BaseException:  # cancelled: job cancelled or timed out, lease lost, shutdown
        await child.stop(pumps, config)
        raise
    await child.stop(pumps, config)  # whatever it left running in its group
    code = child.returncode
    assert code is not None
    if code != 0:
        raise ProcessFailed(code, err.text())
    return {
        "exit_code": code,
        "stdout": out.text(),
        "stderr": err.text(),
        "truncated_stdout": out.truncated,
        "truncated_stderr": err.truncated,
    }


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol of ``create_subprocess_exec``, plus a future set when the
    program exits: ``Process.wait()`` also waits for the pipes to close, which a leftover
    background process may keep open for as long as it lives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


@dataclass(slots=True)
class _Child:
    transport: asyncio.SubprocessTransport
    protocol: _Protocol

    @classmethod
    async def start(cls, spec: ProcessSpec) -> _Child:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(loop),
            spec.program,
            *spec.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=spec.env,
            cwd=spec.cwd,
            start_new_session=True,  # its own session and process group, to kill as one
        )
        return cls(transport, protocol)

    @property
    def pgid(self) -> int:
        return self.transport.get_pid()  # it leads its group: start_new_session

    @property
    def returncode(self) -> int | None:
        """Set once the event loop has reaped the program (not its group)."""
        return self.transport.get_returncode()

    async def stop(self, pumps: list[asyncio.Task[None]], config: ProcessExecutorConfig) -> None:
        """Kill what is left of the group (SIGTERM, grace, SIGKILL), reap it, end the pumps."""
        reap = config.reap_orphans
        gone = await self._wait_gone(0, reap)
        try:
            if not gone:
                signal_group(self.pgid, signal.SIGTERM)
                gone = await self._wait_gone(config.kill_grace_seconds, reap)
        finally:
            # Also when cancelled again during the grace: nothing may outlive the job.
            if not gone:
                signal_group(self.pgid, signal.SIGKILL)
        if not gone:
            await self._wait_gone(_KILL_WAIT_SECONDS, reap)
        # Every writer is dead, so the pipes are at EOF; a process that left the group
        # (setsid) could still hold them, hence the bound.
        _, pending = await asyncio.wait(pumps, timeout=max(config.kill_grace_seconds, 1.0))
        for pump in pending:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        self.transport.close()

    async def _wait_gone(self, seconds: float, reap: bool) -> bool:
        """Wait up to ``seconds`` until the program is reaped and its group is empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            # Only once the event loop has reaped the program (returncode set): reaping
            # the group before that could take the program's exit status from asyncio.
            if self.returncode is not None:
                if reap:
                    reap_group(self.pgid)
                if not group_exists(self.pgid):
                    return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)


class Capture:
    """Keeps the first and last ``limit // 2`` bytes of a stream, counting the rest."""

    def __init__(self, limit: int) -> None:
        self._tail_limit = limit // 2
        self._head_limit = limit - self._tail_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self._tail_limit:
            self.tail += chunk
            excess = len(self.tail) - self._tail_limit
            if excess > 0:
                del self.tail[:excess]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return _decode(self.head + self.tail)
        omitted = self.total - len(self.head) - len(self.tail)
        return f"{_decode(self.head)}\n[... {omitted} bytes omitted ...]\n{_decode(self.tail)}"


def _decode(data: bytes | bytearray) -> str:
    # NUL cannot be stored in PostgreSQL text or jsonb: replace it like invalid UTF-8.
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


async def _pump(stream: asyncio.StreamReader, capture: Capture) -> None:
    while chunk := await stream.read(_CHUNK):
        capture.feed(chunk)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
