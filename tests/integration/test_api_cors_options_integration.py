"""``OPTIONS`` answers ``Allow``; CORS follows ``api.cors_origins`` and is off by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.api_fixtures import Api, api, serve_api

__all__ = ["api"]

ORIGIN = "https://ops.example.com"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/jobs", "GET, OPTIONS, POST"),
        ("/jobs/some-id/cancel", "OPTIONS, POST"),
        ("/templates/some-id", "DELETE, GET, OPTIONS, PATCH"),
        ("/healthz", "GET, OPTIONS"),
    ],
)
async def test_options_lists_the_methods_of_the_path(api: Api, path: str, allow: str) -> None:
    response = await api.client.options(path)
    assert response.status_code == 204
    assert response.headers["allow"] == allow


async def test_options_on_an_unknown_path_is_404(api: Api) -> None:
    response = await api.client.options("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


async def test_undeclared_method_is_405_with_allow(api: Api) -> None:
    response = await api.client.put("/jobs", headers=api.a)
    assert response.status_code == 405
    assert response.headers["allow"]


async def test_cors_is_off_by_default(api: Api) -> None:
    preflight = await api.client.options("/jobs", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    plain = await api.client.get("/jobs", headers={**api.a, "Origin": ORIGIN})
    assert plain.status_code == 200
    assert "access-control-allow-origin" not in plain.headers


async def test_cors_preflight_and_response_with_configured_origins(tmp_path: Path) -> None:
    async with serve_api(
        f"sqlite:///{tmp_path / 'cors.db'}", tmp_path, api={"cors_origins": [ORIGIN]}
    ) as served:
        preflight = await served.client.options(
            "/jobs", headers={**PREFLIGHT, "Access-Control-Request-Headers": "x-api-key"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        plain = await served.client.get("/jobs", headers={**served.a, "Origin": ORIGIN})
        assert plain.headers["access-control-allow-origin"] == ORIGIN
        # An origin not listed gets no grant.
        other = await served.client.options(
            "/jobs", headers={**PREFLIGHT, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        # Answers of the request limits (here 415) carry the grant too.
        refused = await served.client.post(
            "/jobs",
            content=b"x",
            headers={**served.a, "Origin": ORIGIN, "content-type": "text/plain"},
        )
        assert refused.status_code == 415
        assert refused.headers["access-control-allow-origin"] == ORIGIN
