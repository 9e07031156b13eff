"""The process executor's payload checks, output capture and settings (no processes run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from taskmill.config import ProcessSettings, load_settings
from taskmill.core.errors import ConfigError, ValidationError
from taskmill.executors.process import (
    Capture,
    PayloadChecker,
    ProcessExecutorConfig,
    ProcessFailed,
    process_task,
)

SH = "/bin/sh"
CONFIG = ProcessExecutorConfig(
    allowed_programs=(SH, "/usr/bin/env"), allowed_env=("A", "LANG", "X"), max_timeout_seconds=60
)


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (None, "payload", "must be an object"),
        ("/bin/sh -c 'rm -rf /'", "payload", "must be an object"),
        ({}, "payload.argv", "required"),
        ({"argv": "/bin/sh -c true"}, "payload.argv", "not a string"),
        ({"argv": []}, "payload.argv", "must not be empty"),
        ({"argv": [SH, 1]}, "payload.argv", "item 1 must be a string"),
        ({"argv": [SH, "-c", "true\x00rm"]}, "payload.argv", "item 2 contains a NUL byte"),
        ({"argv": [""]}, "payload.argv", "must not be empty"),
        ({"argv": ["/bin/bash"]}, "payload.argv", "not allowed"),
        ({"argv": ["/usr/bin/python3"]}, "payload.argv", "not allowed"),
        ({"argv": ["../../bin/sh"]}, "payload.argv", "absolute path or a bare name"),
        ({"argv": ["bin/sh"]}, "payload.argv", "absolute path or a bare name"),
        ({"argv": ["bash"]}, "payload.argv", "not allowed"),
        ({"argv": ["no-such-program-anywhere"]}, "payload.argv", "not allowed"),
        ({"argv": [SH], "shell": True}, "payload.shell", "unknown field"),
        ({"argv": [SH], "env": ["A=1"]}, "payload.env", "must be an object"),
        ({"argv": [SH], "env": {"A": 1}}, "payload.env", "must be a string"),
        ({"argv": [SH], "env": {"A": "x\x00y"}}, "payload.env", "without NUL"),
        ({"argv": [SH], "env": {"A=B": "x"}}, "payload.env", "not a valid variable name"),
        ({"argv": [SH], "env": {"": "x"}}, "payload.env", "not a valid variable name"),
        ({"argv": [SH], "env": {"LD_PRELOAD": "/tmp/x.so"}}, "payload.env", "loader"),
        ({"argv": [SH], "env": {"DYLD_INSERT_LIBRARIES": "x"}}, "payload.env", "loader"),
        ({"argv": [SH], "cwd": "tmp"}, "payload.cwd", "absolute path"),
        ({"argv": [SH], "cwd": 5}, "payload.cwd", "absolute path"),
        ({"argv": [SH], "cwd": "/no/such/dir"}, "payload.cwd", "not an existing directory"),
        ({"argv": [SH], "cwd": SH}, "payload.cwd", "not an existing directory"),
        ({"argv": [SH], "timeout_seconds": 0}, "payload.timeout_seconds", "greater than 0"),
        ({"argv": [SH], "timeout_seconds": -1}, "payload.timeout_seconds", "greater than 0"),
        ({"argv": [SH], "timeout_seconds": 61}, "payload.timeout_seconds", "at most 60"),
        ({"argv": [SH], "timeout_seconds": float("nan")}, "payload.timeout_seconds", "at most"),
        ({"argv": [SH], "timeout_seconds": "5"}, "payload.timeout_seconds", "a number"),
        ({"argv": [SH], "timeout_seconds": True}, "payload.timeout_seconds", "a number"),
    ],
)
def test_process_payload_invalid_named(payload: Any, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        process_task(CONFIG).validate(payload)
    assert err.value.field == field
    assert reason in err.value.reason


def test_process_payload_program_resolved_through_symlinks_and_path() -> None:
    checker = PayloadChecker(CONFIG)
    real = os.path.realpath(SH)
    assert checker.check({"argv": ["/bin/../bin/sh"]}).program == real
    assert checker.check({"argv": ["sh"]}).program == real  # found on process.path
    assert checker.check({"argv": [real]}).program == real  # the same program, by its name


def test_process_payload_defaults() -> None:
    spec = PayloadChecker(CONFIG).check({"argv": [SH, "-c", "true"]})
    assert spec.args == ("-c", "true")
    assert spec.env == {"PATH": CONFIG.path, "LANG": "C.UTF-8"}
    assert spec.cwd == "/"  # never the worker's directory (taskmill.db, the secret file)
    assert spec.timeout_seconds == 60


PRINTF = "/usr/bin/printf"


def test_process_payload_operands_only_program_gets_end_of_options(tmp_path: Path) -> None:
    """An operands-only program's arguments follow ``--``, whatever they look like; other
    programs' arguments are passed as they are. The marking follows the real file: it
    is listed by a symlink here and named by its own path in the payload."""
    link = tmp_path / "printf"
    link.symlink_to(PRINTF)
    config = ProcessExecutorConfig(
        allowed_programs=(SH, str(link)), operands_only_programs=(str(link),)
    )
    checker = PayloadChecker(config)
    spec = checker.check({"argv": [PRINTF, "-rf", "--help", "--"]})
    assert spec.program == os.path.realpath(PRINTF)
    assert spec.args == ("--", "-rf", "--help", "--")
    assert checker.check({"argv": [PRINTF]}).args == ("--",)
    assert checker.check({"argv": [SH, "-c", "true"]}).args == ("-c", "true")


@pytest.mark.parametrize(
    "name",
    [
        "BASH_FUNC_date%%",
        "BASH_ENV",
        "ENV",
        "PYTHONSTARTUP",
        "PYTHONWARNINGS",
        "BROWSER",
        "PERL5OPT",
        "NODE_OPTIONS",
        "GCONV_PATH",
        "a",  # names are exact: case matters
    ],
)
def test_process_payload_env_outside_allow_list_refused(name: str) -> None:
    """Only the names in ``allowed_env`` may be set: the error names the variable."""
    with pytest.raises(ValidationError) as err:
        PayloadChecker(CONFIG).check({"argv": [SH], "env": {"X": "1", name: "x"}})
    assert err.value.field == "payload.env"
    assert name in err.value.reason and "process.allowed_env" in err.value.reason


def test_process_payload_env_refused_by_default() -> None:
    """With no ``allowed_env`` (the default) a payload sets no variable at all."""
    config = ProcessExecutorConfig(allowed_programs=(SH,))
    with pytest.raises(ValidationError, match="GREETING is not an allowed variable"):
        PayloadChecker(config).check({"argv": [SH], "env": {"GREETING": "hi"}})
    assert PayloadChecker(config).check({"argv": [SH], "env": {}}).env["LANG"] == "C.UTF-8"


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (["BASH_FUNC_date%%"], "is not a variable name"),
        (["A=B"], "is not a variable name"),
        (["LD_PRELOAD"], "loader variables"),
        (["DYLD_INSERT_LIBRARIES"], "loader variables"),
    ],
)
def test_process_settings_allowed_env_checked(names: list[str], reason: str) -> None:
    with pytest.raises(ConfigError, match=rf"process\.allowed_env.*{reason}"):
        load_settings("test", None, process={"allowed_env": names})


def test_process_settings_allowed_env_reaches_the_executor() -> None:
    settings = load_settings("test", None, process={"allowed_env": ["REPORT_BUCKET"]})
    assert settings.process.executor_config(0).allowed_env == ("REPORT_BUCKET",)


def test_process_payload_env_over_base() -> None:
    spec = PayloadChecker(CONFIG).check({"argv": [SH], "env": {"LANG": "C", "X": "1"}})
    assert spec.env == {"PATH": CONFIG.path, "LANG": "C", "X": "1"}


def test_process_payload_cwd_allow_list(tmp_path: Path) -> None:
    inside = tmp_path / "jobs" / "a"
    inside.mkdir(parents=True)
    outside = tmp_path / "other"
    outside.mkdir()
    config = ProcessExecutorConfig(allowed_programs=(SH,), allowed_cwds=(str(tmp_path / "jobs"),))
    checker = PayloadChecker(config)
    assert checker.check({"argv": [SH], "cwd": str(inside)}).cwd == str(inside.resolve())
    assert checker.check({"argv": [SH]}).cwd == str((tmp_path / "jobs").resolve())
    for escape in (str(outside), str(inside / ".." / ".." / "other")):
        with pytest.raises(ValidationError) as err:
            checker.check({"argv": [SH], "cwd": escape})
        assert err.value.field == "payload.cwd" and "allowed directory" in err.value.reason
    link = tmp_path / "jobs" / "link"
    link.symlink_to(outside)
    with pytest.raises(ValidationError):
        checker.check({"argv": [SH], "cwd": str(link)})


def test_process_payload_allow_listed_but_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ValidationError) as err:
        PayloadChecker(ProcessExecutorConfig(allowed_programs=(str(script),))).check(
            {"argv": [str(script)]}
        )
    assert "not an executable file" in err.value.reason


def test_process_capture_keeps_head_and_tail_only() -> None:
    capture = Capture(10)
    for i in range(1000):
        capture.feed(bytes([65 + i % 26]) * 100)
    assert capture.total == 100_000 and capture.truncated
    assert len(capture.head) == 5 and len(capture.tail) == 5
    assert capture.text() == "AAAAA\n[... 99990 bytes omitted ...]\nLLLLL"


def test_process_capture_short_output_whole() -> None:
    capture = Capture(16)
    capture.feed(b"abc\x00")
    capture.feed(b"\xffdefghi")
    assert not capture.truncated
    assert capture.text() == "abc\ufffd\ufffddefghi"  # NUL and bad UTF-8 replaced


def test_process_failed_message_names_code_and_signal() -> None:
    assert str(ProcessFailed(3, "x" * 5000 + "boom")).startswith("exit code 3; stderr: x")
    assert str(ProcessFailed(3, "boom")).endswith("boom")
    assert len(str(ProcessFailed(3, "x" * 5000))) < 1100
    assert str(ProcessFailed(-9, "")).startswith("killed by signal SIGKILL")


def test_process_definition_is_builtin_async_with_backstop_timeout() -> None:
    definition = process_task(CONFIG)
    assert definition.name == "process" and definition.builtin and definition.is_async
    assert definition.timeout_seconds is not None and definition.timeout_seconds > 60


def test_process_settings_disabled_by_default() -> None:
    assert not load_settings("test", None).process.enabled


def test_process_settings_enabled_needs_allow_list() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings("test", None, process={"enabled": True})
    assert "process.allowed_programs" in str(err.value)


def test_process_settings_paths_absolute() -> None:
    for key in ("allowed_programs", "operands_only_programs", "allowed_cwds"):
        with pytest.raises(ConfigError) as err:
            load_settings("test", None, process={key: ["bin/sh"]})
        assert f"process.{key}" in str(err.value) and "absolute" in str(err.value)


def test_process_settings_to_executor_config() -> None:
    settings = load_settings("test", None, process={"enabled": True, "allowed_programs": [SH]})
    config = settings.process.executor_config(max_retries=2)
    assert config.allowed_programs == (SH,) and config.max_attempts == 3
    assert config.operands_only_programs == ()


def test_process_settings_operands_only_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMILL_PROCESS__ALLOWED_PROGRAMS", f'["{SH}", "{PRINTF}"]')
    monkeypatch.setenv("TASKMILL_PROCESS__OPERANDS_ONLY_PROGRAMS", f'["{PRINTF}"]')
    config = load_settings("test", None).process.executor_config(max_retries=0)
    assert config.operands_only_programs == (PRINTF,)


@pytest.mark.parametrize(
    ("operands_only", "reason"),
    [
        ([PRINTF], f"'{PRINTF}' is not in process.allowed_programs"),
        (["/bin/../bin/sh"], "'/bin/../bin/sh' is not in process.allowed_programs"),
        ("/bin/sh", "valid tuple"),  # a string, not a list
    ],
)
def test_process_settings_operands_only_must_be_allow_listed(
    operands_only: Any, reason: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            "test",
            None,
            process={"allowed_programs": [SH], "operands_only_programs": operands_only},
        )
    assert "process.operands_only_programs" in str(err.value) and reason in str(err.value)


def test_process_settings_operands_only_after_an_invalid_allow_list() -> None:
    """Only the allow-list's own error is reported, not one per operands-only entry."""
    with pytest.raises(ConfigError) as err:
        load_settings(
            "test",
            None,
            process={"allowed_programs": ["bin/sh"], "operands_only_programs": ["/bin/sh"]},
        )
    assert "process.allowed_programs" in str(err.value)
    assert "process.operands_only_programs" not in str(err.value)


def test_process_settings_every_key_documented() -> None:
    docs = Path(__file__).parents[2] / "docs" / "configuration.md"
    section = docs.read_text().split("### `[process]`")[1].split("\n## ")[0]
    for key in ProcessSettings.model_fields:
        assert f"| `{key}` |" in section and f"TASKMILL_PROCESS__{key.upper()}" in section
