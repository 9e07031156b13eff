"""One trace from the API request that creates a job to the attempt that runs it."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import Api, api

__all__ = ["api"]

_exporter = InMemorySpanExporter()


def _install_provider() -> None:
    # The global provider can be set once per process; every test shares it.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)


async def test_tracing_integration_job_run_joins_the_request_trace(api: Api) -> None:
    _install_provider()
    _exporter.clear()
    created = await api.job(api.a, payload="traced")
    await run_until_idle(api.app)
    finished = _exporter.get_finished_spans()
    parents = {s.context.span_id: s.parent for s in finished if s.context}
    names = {s.context.span_id: s.name for s in finished if s.context}
    [run] = [s for s in finished if s.name == "run echo"]
    # Walk up from the run: it descends from the request span (FastAPI adds its own
    # spans in between), and the walk ends at the request, the root of the trace.
    chain = []
    parent = run.parent
    while parent is not None:
        chain.append(names[parent.span_id])
        parent = parents[parent.span_id]
    assert chain and chain[-1] == "POST /jobs"
    assert run.attributes is not None and run.attributes["taskmill.job_id"] == created["id"]


async def test_tracing_integration_no_active_span_stores_nothing(api: Api) -> None:
    job = await api.app.schedule("echo", "untraced")  # library call, no request span
    got = await api.app.get(job.id)
    assert getattr(got, "trace_context", "missing") is None
