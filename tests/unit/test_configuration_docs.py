"""docs/configuration.md documents every setting, with its environment variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from taskmill.config import Settings

DOCS = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()


def _keys() -> list[tuple[str, str]]:
    keys = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys += [(section, name) for name in model.model_fields]
    return keys


def test_every_setting_and_its_variable_is_documented() -> None:
    missing = [
        f"{section}.{name}"
        for section, name in _keys()
        if f"`TASKMILL_{section.upper()}__{name.upper()}`" not in DOCS
    ]
    assert missing == [], f"not in docs/configuration.md: {missing}"


def test_there_are_settings_to_check() -> None:
    assert len(_keys()) > 30
