"""docs/api/openapi.json is the document the API serves; CI fails when it is stale."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest
from typer.testing import CliRunner

from taskmill.api.app import openapi_document, openapi_json
from taskmill.api.schemas import MIN_INTERVAL_FLOOR
from taskmill.cli.main import cli
from taskmill.config import SchedulerSettings

COMMITTED = Path(__file__).parents[2] / "docs" / "api" / "openapi.json"
REGENERATE = "taskmill openapi --output docs/api/openapi.json"


def test_committed_openapi_document_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == openapi_json(), (
        f"docs/api/openapi.json is stale: run `{REGENERATE}`"
    )


def test_export_is_deterministic() -> None:
    assert openapi_json() == openapi_json()
    assert json.loads(openapi_json()) == openapi_document()


def test_openapi_check_fails_on_a_stale_file_and_passes_on_a_fresh_one(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["openapi", "--output", str(target)]).exit_code == 0
    assert runner.invoke(cli, ["openapi", "--check", "--output", str(target)]).exit_code == 0
    target.write_text(target.read_text().replace('"taskmill"', '"old"', 1))
    stale = runner.invoke(cli, ["openapi", "--check", "--output", str(target)])
    assert stale.exit_code == 1
    assert "taskmill openapi --output" in stale.output


# Every operation names each status it can answer (issue 18 item 9), not just 200/201/422.
@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/jobs", "post", {"200", "201", "400", "401", "403", "409", "413", "415", "422", "429"}),
        ("/jobs/{job_id}", "get", {"200", "401", "403", "404", "422", "429", "503"}),
        ("/jobs/{job_id}/cancel", "post", {"404", "409", "413", "507"}),
        ("/templates/{template_id}", "delete", {"204", "404", "401", "403", "429"}),
        ("/metrics", "get", {"200", "401", "403", "429"}),
        ("/readyz", "get", {"200", "503"}),
    ],
)
def test_operations_declare_their_error_statuses(
    path: str, method: str, statuses: set[str]
) -> None:
    responses = openapi_document()["paths"][path][method]["responses"]
    assert statuses <= set(responses)


def test_error_statuses_carry_the_error_body_and_429_its_retry_after() -> None:
    document = openapi_document()
    responses = document["paths"]["/jobs"]["get"]["responses"]
    assert responses["404" if "404" in responses else "401"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "Retry-After" in responses["429"]["headers"]
    for item in document["paths"].values():
        for operation in item.values():
            declared = set(operation["responses"])
            assert declared - {"200", "201", "204"}, operation["operationId"]


def _body_rule(model: str, keyword: str) -> dict[str, object]:
    schema = openapi_document()["components"]["schemas"][model]
    return {keyword: schema[keyword]}


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"task_type": "t"}, True),
        ({"task_type": "t", "cron": "@daily", "run_at": None, "delay_seconds": None}, True),
        ({"task_type": "t", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 1}, False),
        ({"task_type": "t", "cron": "@daily", "interval_seconds": 5}, False),
        ({"task_type": "t", "delay_seconds": 0, "cron": "@daily"}, False),
    ],
)
def test_job_create_schema_says_at_most_one_schedule_kind(
    body: dict[str, object], valid: bool
) -> None:
    """Found by schemathesis: the rule was only in a validator, so the document allowed
    bodies the API refuses (and generated clients could not know)."""
    assert jsonschema_rs.is_valid(_body_rule("JobCreate", "not"), body) is valid


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"cron": "@daily"}, True),
        ({"interval_seconds": 5, "cron": None}, True),
        ({"interval_seconds": 5, "cron": "@daily"}, False),
        ({"interval_seconds": None}, False),
        ({}, False),
    ],
)
def test_template_create_schema_says_exactly_one_schedule_kind(
    body: dict[str, object], valid: bool
) -> None:
    assert jsonschema_rs.is_valid(_body_rule("TemplateCreate", "oneOf"), body) is valid


def test_interval_floor_is_the_lowest_min_interval_setting() -> None:
    """The document's floor is what the most permissive deployment accepts."""
    field = SchedulerSettings.model_fields["min_interval_seconds"]
    floor = next(m.ge for m in field.metadata if getattr(m, "ge", None) is not None)
    assert floor == MIN_INTERVAL_FLOOR
