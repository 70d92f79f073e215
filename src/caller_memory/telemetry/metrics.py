"""The Prometheus instruments of caller memory, and the one function that moves each.

They are registered on prometheus_client's default registry at import, exactly as LiveKit
registers its own (`livekit.agents.telemetry.metrics`), so whatever serves LiveKit's metrics
serves these: the worker's endpoint (`prometheus_port`), which in multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, or `prometheus_multiproc_dir=`) collects what every job process
recorded. prometheus_client picks its multiprocess storage when it is first imported, so the
directory must be set before the job processes start (LiveKit's worker does that).

Labels only ever hold values from the small fixed sets below: never an identity, a uuid or
what a caller said. A gauge says how it combines across job processes (`multiprocess_mode`):
the capture queues of live processes add up (`livesum`); the spool directory is shared by the
processes of a machine, each of which measures all of it, so the largest live reading is the
spool (`livemax`).

Every instrument is a few dictionary lookups and a lock per update: cheap enough for every
turn. The helpers below are the only places that move them.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

from caller_memory.types import WriteOutcome

RecallOutcome = Literal["hit", "empty", "budget_exceeded", "store_error"]
DropReason = Literal["queue_full", "erased"]
WriteResult = Literal["stored", "spooled", "replayed", "refused_after_erasure", "stale", "lost"]
ErasureSource = Literal["caller", "operator"]
ExtractionResult = Literal["answered", "failed"]
EmbeddingKind = Literal["query", "memory"]

RECALL_OUTCOMES: tuple[RecallOutcome, ...] = ("hit", "empty", "budget_exceeded", "store_error")
DROP_REASONS: tuple[DropReason, ...] = ("queue_full", "erased")
WRITE_RESULTS: tuple[WriteResult, ...] = (
    "stored",
    "spooled",
    "replayed",
    "refused_after_erasure",
    "stale",
    "lost",
)
ERASURE_SOURCES: tuple[ErasureSource, ...] = ("caller", "operator")
EXTRACTION_RESULTS: tuple[ExtractionResult, ...] = ("answered", "failed")
EMBEDDING_KINDS: tuple[EmbeddingKind, ...] = ("query", "memory")
TOKEN_DIRECTIONS = ("input", "output")
BACKENDS = frozenset({"sqlite", "postgres", "supabase"})
STORE_ERROR_KINDS = ("unavailable", "schema", "config", "other")

# Recall has a budget of 10-200 ms (MEMORY_RECALL_BUDGET_MS, default 50): fine buckets there.
RECALL_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
# A local query embedding takes milliseconds; a remote one (OpenAI) or a batch, more.
EMBEDDING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Recall returns at most RECALL_LIMIT (5) memories per request.
INJECTED_BUCKETS = (0, 1, 2, 3, 4, 5, 8)

RECALL_DURATION = Histogram(
    "caller_memory_recall_duration_seconds",
    "Time from the start of a recall to its result (or to the end of its budget)",
    buckets=RECALL_BUCKETS,
)
RECALLS = Counter(
    "caller_memory_recalls",
    "Recalls by outcome: hit (memories found), empty, budget_exceeded, store_error",
    ["outcome"],
)
MEMORIES_INJECTED = Histogram(
    "caller_memory_memories_injected",
    "Memories put into one LLM request of a reply (0 when recall found none to add)",
    buckets=INJECTED_BUCKETS,
)
CAPTURE_QUEUE_DEPTH = Gauge(
    "caller_memory_capture_queue_depth",
    "Captured memories waiting in the sessions' capture queues for the store",
    multiprocess_mode="livesum",
)
CAPTURE_DROPPED = Counter(
    "caller_memory_capture_dropped",
    "Captured memories dropped before reaching the store: queue_full (the capture queue was "
    "at MEMORY_CAPTURE_QUEUE_MAX), erased (queued when the caller was erased)",
    ["reason"],
)
WRITES = Counter(
    "caller_memory_writes",
    "Memory writes by result: stored, spooled (the store failed; kept on disk), replayed "
    "(from the spool into the store), refused_after_erasure, stale (a later capture of the "
    "key is stored), lost (neither the store nor the spool could keep it)",
    ["result"],
)
SPOOL_RECORDS = Gauge(
    "caller_memory_spool_records",
    "Records waiting in the spool directory for the store to come back",
    multiprocess_mode="livemax",
)
SPOOL_BYTES = Gauge(
    "caller_memory_spool_bytes",
    "Bytes of the spool files waiting for the store to come back",
    multiprocess_mode="livemax",
)
STORE_ERRORS = Counter(
    "caller_memory_store_errors",
    "Store operations that failed, by backend, operation and kind of error",
    ["backend", "operation", "error"],
)
ERASURES = Counter(
    "caller_memory_erasures",
    "Callers erased (profile and every memory deleted): by the caller's own request in a "
    "call, or by an operator (caller-memory admin delete)",
    ["source"],
)
EXTRACTION_REQUESTS = Counter(
    "caller_memory_extraction_requests",
    "LLM fact extraction requests by result (failed: no usable answer in time)",
    ["result"],
)
EXTRACTION_TOKENS = Counter(
    "caller_memory_extraction_tokens",
    "Tokens of LLM fact extraction requests, as the LLM's usage reports them",
    ["direction"],
)
EMBEDDING_DURATION = Histogram(
    "caller_memory_embedding_duration_seconds",
    "Time to embed a caller's query or a memory being written",
    ["kind"],
    buckets=EMBEDDING_BUCKETS,
)

# Every series of a fixed set exists from the start (at 0), so a rate over it is defined
# before the first event, and an alert can tell "none happened" from "not exported".
for _outcome in RECALL_OUTCOMES:
    RECALLS.labels(outcome=_outcome)
for _reason in DROP_REASONS:
    CAPTURE_DROPPED.labels(reason=_reason)
for _result in WRITE_RESULTS:
    WRITES.labels(result=_result)
for _source in ERASURE_SOURCES:
    ERASURES.labels(source=_source)
for _extraction in EXTRACTION_RESULTS:
    EXTRACTION_REQUESTS.labels(result=_extraction)
for _direction in TOKEN_DIRECTIONS:
    EXTRACTION_TOKENS.labels(direction=_direction)
for _kind in EMBEDDING_KINDS:
    EMBEDDING_DURATION.labels(kind=_kind)

_REPLAYING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "caller_memory_replaying", default=False
)


# -- recall ----------------------------------------------------------------------------------


def recall_finished(outcome: RecallOutcome, seconds: float) -> None:
    RECALLS.labels(outcome=outcome).inc()
    RECALL_DURATION.observe(seconds)


def memories_injected(count: int) -> None:
    MEMORIES_INJECTED.observe(count)


# -- capture ---------------------------------------------------------------------------------


def capture_queued(count: int) -> None:
    CAPTURE_QUEUE_DEPTH.inc(count)


def capture_dequeued(count: int = 1) -> None:
    CAPTURE_QUEUE_DEPTH.dec(count)


def capture_dropped(reason: DropReason, count: int) -> None:
    if count > 0:
        CAPTURE_DROPPED.labels(reason=reason).inc(count)


# -- writes and the spool --------------------------------------------------------------------


@contextlib.contextmanager
def replaying() -> Iterator[None]:
    """Writes inside are spool replays: a stored one counts as `replayed`."""
    token = _REPLAYING.set(True)
    try:
        yield
    finally:
        _REPLAYING.reset(token)


_OUTCOME_RESULTS: dict[WriteOutcome, WriteResult] = {
    WriteOutcome.STORED: "stored",
    WriteOutcome.STALE: "stale",
    WriteOutcome.ERASED: "refused_after_erasure",
}


def write_answered(outcome: WriteOutcome) -> None:
    """The store answered a write with `outcome`."""
    result = _OUTCOME_RESULTS[WriteOutcome(outcome)]
    if result == "stored" and _REPLAYING.get():
        result = "replayed"
    WRITES.labels(result=result).inc()


def writes_spooled(kept: int, lost: int) -> None:
    """Writes the store failed: `kept` went to the spool, `lost` could not."""
    if kept > 0:
        WRITES.labels(result="spooled").inc(kept)
    if lost > 0:
        WRITES.labels(result="lost").inc(lost)


def spool_grew(records: int, size: int) -> None:
    """This process appended `records` (`size` bytes) to the spool."""
    SPOOL_RECORDS.inc(records)
    SPOOL_BYTES.inc(size)


def spool_measured(records: int, size: int) -> None:
    """The spool directory holds `records` waiting records in `size` bytes (a full reading)."""
    SPOOL_RECORDS.set(records)
    SPOOL_BYTES.set(size)


# -- the store -------------------------------------------------------------------------------


def store_failed(backend: str, operation: str, error: str) -> None:
    """A store operation failed. `backend` outside the known three is counted as `other`
    (a wrapper or a third-party store: its name is not a fixed set)."""
    STORE_ERRORS.labels(
        backend=backend if backend in BACKENDS else "other",
        operation=operation,
        error=error if error in STORE_ERROR_KINDS else "other",
    ).inc()


def erased(source: ErasureSource) -> None:
    ERASURES.labels(source=source).inc()


# -- LLM extraction and embeddings -----------------------------------------------------------


def extraction_requested(result: ExtractionResult) -> None:
    EXTRACTION_REQUESTS.labels(result=result).inc()


def extraction_tokens(input_tokens: int, output_tokens: int) -> None:
    if input_tokens > 0:
        EXTRACTION_TOKENS.labels(direction="input").inc(input_tokens)
    if output_tokens > 0:
        EXTRACTION_TOKENS.labels(direction="output").inc(output_tokens)


def embedding_timed(kind: EmbeddingKind, seconds: float) -> None:
    EMBEDDING_DURATION.labels(kind=kind).observe(seconds)
