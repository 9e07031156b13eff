"""Parsing rate limits: the forms accepted, and every bound with the field it names."""

from __future__ import annotations

import pytest

from taskmill import Taskmill
from taskmill.core.errors import ValidationError
from taskmill.core.rate_limits import MAX_BURST, parse_rate_limit


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("10/s", 10.0), ("30/m", 0.5), ("36/h", 0.01), (" 5 / s ", 5.0), ("10000/s", 10_000.0)],
)
def test_rate_limit_forms(text: str, per_second: float) -> None:
    limit = parse_rate_limit(text)
    assert limit.per_second == pytest.approx(per_second)
    assert limit.burst == 1


@pytest.mark.parametrize(
    ("text", "burst", "field", "words"),
    [
        ("10", None, "rate_limit", "<count>/<s|m|h>"),
        ("10/d", None, "rate_limit", "<count>/<s|m|h>"),
        ("-1/s", None, "rate_limit", "<count>/<s|m|h>"),
        ("1.5/s", None, "rate_limit", "<count>/<s|m|h>"),
        ("0/s", None, "rate_limit", "between 1 and"),
        ("1000001/h", None, "rate_limit", "between 1 and"),
        ("10001/s", None, "rate_limit", "at most 10,000 a second"),
        ("10/s", 0, "rate_burst", "between 1 and"),
        ("10/s", MAX_BURST + 1, "rate_burst", "between 1 and"),
        ("10/s", True, "rate_burst", "integer"),
    ],
)
def test_rate_limit_refuses_bad_input_naming_the_field(
    text: str, burst: int | None, field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rate_limit(text, burst)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_rate_limit_refuses_a_non_string() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rate_limit(10)  # type: ignore[arg-type]
    assert caught.value.field == "rate_limit"


def test_task_rate_limit_is_parsed_at_registration() -> None:
    app = Taskmill("sqlite:///:memory:")

    @app.task("charge", rate_limit="10/s", rate_burst=5)
    async def charge(ctx: object, payload: object) -> None:
        return None

    limit = app.registry.get("charge").rate_limit
    assert limit is not None and (limit.per_second, limit.burst) == (10.0, 5)
    with pytest.raises(ValidationError) as caught:
        app.task("refund", rate_burst=5)
    assert caught.value.field == "rate_burst"
    with pytest.raises(ValidationError) as caught:
        app.task("refund", rate_limit="ten a second")
    assert caught.value.field == "rate_limit"
    assert app.registry.names() == ["charge"]  # nothing registered by the refusals
