"""``--app`` loading: the command line's environment wins over the module's import-time one."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmill.cli.common import load_app
from taskmill.core.errors import ConfigError

pytestmark = pytest.mark.parallel  # no timing bounds: runs in the parallel step


def test_load_app_applies_env_and_config_dir(tmp_path: Path) -> None:
    (tmp_path / "staging.toml").write_text("[worker]\nconcurrency = 7\n")
    app = load_app("tests.fixtures.apps:app", "staging", tmp_path)
    assert app.settings.environment == "staging"
    assert app.settings.worker.concurrency == 7
    assert "sleepy" in app.registry.names()


@pytest.mark.parametrize("spec", ["nocolon", "tests.fixtures.apps:missing", "no_such_mod:app"])
def test_load_app_bad_spec_names_the_option(spec: str) -> None:
    with pytest.raises(ConfigError, match="--app"):
        load_app(spec, None, None)
