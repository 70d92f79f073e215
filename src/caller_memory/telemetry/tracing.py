"""OpenTelemetry spans of memory work, inside LiveKit's own turn traces.

Spans are made with LiveKit's tracer (`livekit.agents.telemetry.tracer`), not a tracer of
the global provider: LiveKit sends its spans to the provider given to
`livekit.agents.telemetry.set_tracer_provider` (or the one it sets up for LiveKit Cloud),
which need not be the global one, and memory spans belong in the same trace store. A span
started while one of LiveKit's is current (`on_user_turn_completed`, `llm_node`, both inside
the turn's span) is its child; work that runs in a task of its own (recall started at the
final transcript) is given the context it was started from (`current_context()`).

The names are `caller_memory.recall`, `caller_memory.capture`, `caller_memory.extraction`
and `caller_memory.embedding`; attributes are `caller_memory.*` counts, durations, outcomes
and backend names only. An exception leaving a span marks it failed with the exception's
type, never its message (a message may quote what the caller said).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from livekit.agents.telemetry import tracer
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

SpanName = Literal["recall", "capture", "extraction", "embedding"]
ATTRIBUTE_PREFIX = "caller_memory."


def current_context() -> otel_context.Context:
    """The trace context now: give it to work started in another task, to nest there."""
    return otel_context.get_current()


def attributes(**values: AttributeValue | None) -> dict[str, AttributeValue]:
    """`values` as span attributes, named `caller_memory.<name>` (None values left out)."""
    return {ATTRIBUTE_PREFIX + name: value for name, value in values.items() if value is not None}


def set_attributes(span: trace.Span, **values: AttributeValue | None) -> None:
    if span.is_recording():
        span.set_attributes(attributes(**values))


@contextlib.contextmanager
def memory_span(
    name: SpanName,
    *,
    context: otel_context.Context | None = None,
    **values: AttributeValue | None,
) -> Iterator[trace.Span]:
    """A current span `caller_memory.<name>` with `values` as attributes; its parent is
    the current span, or the one current in `context`."""
    with tracer.start_as_current_span(
        ATTRIBUTE_PREFIX + name,
        context=context,
        attributes=attributes(**values),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            if span.is_recording():
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
            raise
