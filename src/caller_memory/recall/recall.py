"""Recall inside the voice turn: what the caller said before that bears on what they say now.

Recall runs once per caller message, started as soon as its text is known (the final
transcript, or typed text on arrival) and awaited by the LLM step of the reply
(`MemoryAgent.llm_node`), so it has a hard time budget (`MEMORY_RECALL_BUDGET_MS`, default
50 ms). When the budget runs out or the store fails, the reply goes ahead without memories
and the miss is logged. Memories are handed to the LLM as a delimited block of quoted,
caller-provided data, never as instructions. Each recall is timed and counted by outcome
(hit, empty, budget exceeded, store error: `caller_memory.telemetry.metrics`) and traced as a
`caller_memory.recall` span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Protocol

from opentelemetry import context as otel_context

from caller_memory.stores.errors import StorageError
from caller_memory.stores.outage import OutageLog
from caller_memory.telemetry import metrics
from caller_memory.telemetry.tracing import memory_span, set_attributes
from caller_memory.types import Memory

logger = logging.getLogger("caller_memory.recall")

RECALL_LIMIT = 5


class Searcher(Protocol):
    """What recall searches with: a `MemoryManager` (the caller is read from the context)."""

    async def asearch(self, query: str, limit: int = ...) -> list[Memory]: ...


def normal_text(text: str) -> str:
    return " ".join(text.lower().split())


async def recall(
    message: str,
    *,
    manager: Searcher,
    budget_s: float,
    outage: OutageLog,
    exclude: Iterable[str] = (),
    limit: int = RECALL_LIMIT,
    trace_context: otel_context.Context | None = None,
    backend: str | None = None,
) -> list[Memory]:
    """The caller's memories relevant to `message`, within `budget_s` seconds; [] on a miss
    (the budget ran out, or the store failed: reported to `outage`).

    `exclude` holds texts already in the conversation: a memory that only repeats one of them
    adds nothing, and leaving the context untouched keeps a preemptive generation valid.
    `trace_context`: the trace context the recall was asked for in (its span nests there;
    default: the current one); `backend`: the store's name, for the span.
    """
    budget = budget_s
    started = time.perf_counter()
    with memory_span(
        "recall",
        context=trace_context,
        budget_ms=round(budget * 1000),
        limit=limit,
        backend=backend,
    ) as span:
        outcome: metrics.RecallOutcome
        try:
            found = await asyncio.wait_for(manager.asearch(message, limit=limit), budget)
        except TimeoutError:
            logger.warning("recall skipped: the %.0f ms budget ran out", budget * 1000)
            found, outcome = [], "budget_exceeded"
        except StorageError as exc:
            outage.failed("recall", exc, reading=True)
            found, outcome = [], "store_error"
        else:
            outage.succeeded(reading=True)
            found = without_repeats(found, exclude)
            outcome = "hit" if found else "empty"
        seconds = time.perf_counter() - started
        metrics.recall_finished(outcome, seconds)
        set_attributes(
            span, outcome=outcome, memories=len(found), duration_ms=round(seconds * 1000, 3)
        )
    return found


def without_repeats(memories: Iterable[Memory], exclude: Iterable[str]) -> list[Memory]:
    """`memories` minus those that only repeat a text of `exclude` (already in the chat)."""
    seen = {normal_text(text) for text in exclude}
    return [m for m in memories if normal_text(m.value) not in seen]
