"""Tracing (the ``otel`` extra): one trace from the API request that creates a job to the
attempts that run it. The W3C trace context travels in the job row (``trace_context``).

Without OpenTelemetry installed, or without an active span, every function here is a
no-op: taskmill never requires a tracer.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import propagate, trace

    _tracer: Any = trace.get_tracer("taskmill")
except ImportError:  # the otel extra is not installed
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]
    _tracer = None


def current_context() -> str | None:
    """The active trace context as a small JSON carrier, or ``None`` if none is active."""
    if propagate is None or trace is None:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier) if carrier else None


@contextlib.contextmanager
def span(
    name: str, parent: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """A span named ``name``, child of the carrier ``parent`` when given (else of the
    active span)."""
    if _tracer is None or propagate is None:
        yield
        return
    context = None
    if parent:
        try:
            context = propagate.extract(json.loads(parent))
        except (ValueError, TypeError):
            context = None  # a damaged carrier starts a new trace; it never fails the job
    with _tracer.start_as_current_span(name, context=context, attributes=dict(attributes or {})):
        yield
