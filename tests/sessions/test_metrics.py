"""Memory's Prometheus metrics, read from prometheus_client's real default registry (the one
LiveKit's metrics endpoint serves) before and after real work: real `AgentSession` turns on a
real SQLite store, with only the LLM (and, where a test needs one, the store's failure) faked.

Each expectation is tied to a count kept independently of the metrics (the capture writer's
own counters, the spool on disk), and every test reads deltas: the registry is process-wide.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from prometheus_client import REGISTRY

from caller_memory import (
    CallerMemory,
    MemoryAgent,
    MemorySettings,
    memory_manager,
    session_user,
)
from caller_memory.admin import delete_caller
from caller_memory.capture.llm_extractor import LLMFactExtractor
from caller_memory.embeddings.onnx import OnnxEmbedder
from caller_memory.spool import spool_depth
from caller_memory.stores.errors import StorageUnavailableError
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeLLM,
    FakeScriptedLLM,
    FakeStoreOutage,
    eventually,
    start_caller,
    text_session,
)
from caller_memory.types import WriteOutcome
from tests.support import MORE_IMPORTANT_FACTS, capture_writer

ALICE = "alice@example.com"
BOB = "bob@example.com"


def sample(name: str, **labels: str) -> float:
    """The current value of one series of the default registry (0 before it exists)."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Deltas:
    """How much series moved since this object was made."""

    def __init__(self, *series: tuple[str, dict[str, str]]) -> None:
        self._before = {self._key(n, lb): sample(n, **lb) for n, lb in series}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> str:
        return name + json.dumps(labels, sort_keys=True)

    def __call__(self, name: str, labels: dict[str, str] | None = None) -> float:
        labels = labels or {}
        return sample(name, **labels) - self._before[self._key(name, labels)]


def recalls(outcome: str) -> tuple[str, dict[str, str]]:
    return "caller_memory_recalls_total", {"outcome": outcome}


def writes(result: str) -> tuple[str, dict[str, str]]:
    return "caller_memory_writes_total", {"result": result}


OUTCOMES = ("hit", "empty", "budget_exceeded", "store_error")


class QuietAgent(MemoryAgent):
    def __init__(self) -> None:
        super().__init__(instructions="You are terse.")


def memory_on(store: Any, **settings: Any) -> CallerMemory:
    """A memory on `store` with the test's settings (`settings` override fields by name)."""
    return CallerMemory(store=store, settings=MemorySettings.load(**settings))


async def remember(identity: str, category: str, key: str, value: str) -> None:
    with session_user(identity):
        await memory_manager.astore(category, key, value)


# -- recall --------------------------------------------------------------------------------------


async def test_turns_count_recall_hits_and_empties_and_the_memories_they_add(
    memory: CallerMemory,
) -> None:
    # more important facts fill what a session knows at the start, so only recall brings
    # the trip into a reply
    for (category, key), value in MORE_IMPORTANT_FACTS.items():
        await remember(ALICE, category, key, value)
    await remember(ALICE, "PLAN", "trip", "visit Lisbon in May")
    series = [recalls(o) for o in OUTCOMES] + [
        ("caller_memory_memories_injected_count", {}),
        ("caller_memory_memories_injected_sum", {}),
        ("caller_memory_recall_duration_seconds_count", {}),
        writes("stored"),
    ]
    moved = Deltas(*series)
    session = text_session(FakeScriptedLLM())
    call = await start_caller(memory, session, ALICE, QuietAgent)
    try:
        await session.run(user_input="Where was I going in May?")
        await session.run(user_input="What do you know about xylophones?")  # nothing
        assert moved(*recalls("hit")) == 1
        assert moved(*recalls("empty")) == 1
        assert moved(*recalls("budget_exceeded")) == 0
        assert moved(*recalls("store_error")) == 0
        assert moved("caller_memory_recall_duration_seconds_count") == 2
        # one LLM request per reply: one with the trip added, one with nothing
        assert moved("caller_memory_memories_injected_count") == 2
        assert moved("caller_memory_memories_injected_sum") == call.turns_with_memories == 1
        await session.run(user_input="My brother Tom is a firefighter")  # two questions; now news
    finally:
        assert await call.aclose()
        await session.aclose()
    # what the caller said was written, and counted as the writer counted it
    assert call.writer.stored_count > 0
    assert moved(*writes("stored")) == call.writer.stored_count


class FakeSlowSearchStore:
    """A fake: the real store, except that searches for a caller's words take `delay`
    seconds (an overloaded store); everything else goes straight through."""

    def __init__(self, inner: SQLiteMemoryStore, delay: float) -> None:
        self.inner, self.delay, self.name = inner, delay, "slow-search"

    async def search_candidates(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await self.inner.search_candidates(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_recall_that_runs_out_of_budget_counts_one_budget_exceeded(
    sqlite_store: SQLiteMemoryStore, tmp_path: Path
) -> None:
    slow = FakeSlowSearchStore(sqlite_store, delay=1.0)
    memory = memory_on(slow, recall_budget_ms=20.0)
    moved = Deltas(*[recalls(o) for o in OUTCOMES])
    session = text_session(FakeScriptedLLM())
    call = await start_caller(memory, session, ALICE, QuietAgent)
    try:
        await session.run(user_input="Do you remember my sister's name?")
    finally:
        await call.aclose()
        await session.aclose()
    assert [moved(*recalls(o)) for o in OUTCOMES] == [0, 0, 1, 0]


# -- writes, the spool, store errors -------------------------------------------------------------


async def test_a_write_the_store_refuses_is_spooled_counted_and_replayed_later(
    sqlite_store: SQLiteMemoryStore, tmp_path: Path
) -> None:
    outage = FakeStoreOutage(sqlite_store, failing=frozenset({"upsert_memory"}))
    memory = memory_on(outage)
    failed = ("caller_memory_store_errors_total", {
        "backend": "other", "operation": "upsert_memory", "error": "unavailable"
    })  # fmt: skip
    moved = Deltas(writes("spooled"), writes("replayed"), writes("stored"), failed)
    session = text_session(FakeScriptedLLM())
    call = await start_caller(memory, session, ALICE, QuietAgent)
    try:
        await session.run(user_input="My favourite colour is blue")
        await eventually(lambda: call.writer.spooled_count > 0, "the write to be spooled")
        await call.writer.flush()
    finally:
        assert await call.aclose()
        await session.aclose()
    spooled = call.writer.spooled_count
    assert moved(*writes("spooled")) == spooled
    assert moved(*writes("stored")) == 0
    # each refusal is one store error: the writes', and those of replays tried meanwhile
    assert moved(*failed) == outage.refused.count("upsert_memory") >= spooled
    on_disk = await asyncio.to_thread(spool_depth, memory.spool.directory)
    assert on_disk.records == spooled
    assert sample("caller_memory_spool_records") == on_disk.records
    assert sample("caller_memory_spool_bytes") == on_disk.size_bytes

    outage.down = False
    await eventually(
        lambda: moved(*writes("replayed")) == spooled, "the spooled writes to be replayed"
    )
    assert moved(*writes("stored")) == 0  # a replayed write is counted once, as replayed
    await eventually(lambda: sample("caller_memory_spool_records") == 0, "the spool gauge")
    assert sample("caller_memory_spool_bytes") == 0
    await memory.aclose()


@pytest.mark.parametrize("operation", ["get_memory", "search_candidates"])
async def test_a_failing_operation_of_a_real_backend_is_counted_once_by_backend_and_operation(
    tmp_path: Path, operation: str
) -> None:
    """`search_candidates` is the shared hybrid-search rule every store inherits: counted as
    each store's own operations are."""
    store = SQLiteMemoryStore(tmp_path / "closed.sqlite3")
    await store.aclose()
    labels = {"backend": "sqlite", "operation": operation, "error": "unavailable"}
    moved = Deltas(("caller_memory_store_errors_total", labels))
    user = "6f840c3a-5446-51bc-99b0-e0d11d172cef"
    with pytest.raises(StorageUnavailableError):
        if operation == "get_memory":
            await store.get_memory(user, "FACT", "job")
        else:
            await store.search_candidates(user, "job", 5)
    assert moved("caller_memory_store_errors_total", labels) == 1


async def test_a_write_of_an_erased_caller_counts_as_refused_after_erasure(
    memory: CallerMemory,
) -> None:
    refused = writes("refused_after_erasure")
    operator = ("caller_memory_erasures_total", {"source": "operator"})
    moved = Deltas(refused, operator, writes("stored"))
    said_at = time.time() - 60  # heard a minute ago, by a session that began then
    await remember(BOB, "FACT", "job", "nurse")
    done = await delete_caller(memory, BOB)
    assert done.memories == 1
    with session_user(BOB):
        outcome = await memory_manager.astore(
            "FACT", "job", "nurse", captured_at=said_at, session_started_at=said_at
        )
    assert outcome == WriteOutcome.ERASED
    assert moved(*refused) == 1
    assert moved(*operator) == 1
    assert moved(*writes("stored")) == 1  # the write before the erasure


# -- capture -----------------------------------------------------------------------------------


async def test_captures_beyond_the_queue_bound_count_as_drops_and_the_queue_drains_to_zero(
    sqlite_store: SQLiteMemoryStore, tmp_path: Path
) -> None:
    memory = memory_on(sqlite_store, capture_queue_max=1)
    full = ("caller_memory_capture_dropped_total", {"reason": "queue_full"})
    moved = Deltas(full)
    session = text_session(FakeScriptedLLM())
    call = await start_caller(memory, session, ALICE, QuietAgent)
    try:
        # a fact and the caller's words: two memories, more than the queue holds
        await session.run(user_input="My favourite colour is blue")
    finally:
        assert not await call.aclose()  # the drop is reported by the writer too
        await session.aclose()
    assert call.writer.dropped_count > 0
    assert moved(*full) == call.writer.dropped_count
    assert sample("caller_memory_capture_queue_depth") == 0


async def test_the_callers_own_erasure_counts_one_caller_erasure(memory: CallerMemory) -> None:
    mine = ("caller_memory_erasures_total", {"source": "caller"})
    theirs = ("caller_memory_erasures_total", {"source": "operator"})
    moved = Deltas(mine, theirs)
    session = text_session(FakeScriptedLLM())
    call = await start_caller(memory, session, ALICE, QuietAgent)
    try:
        await session.run(user_input="My favourite colour is blue")
        await call.forget_everything(confirmed=False)  # asked: not deleted yet
        await session.run(user_input="Yes, delete everything you know about me")
        assert "Deleted" in await call.forget_everything(confirmed=True)
    finally:
        await call.aclose()
        await session.aclose()
    assert moved(*mine) == 1
    assert moved(*theirs) == 0


# -- LLM extraction ------------------------------------------------------------------------------


class FakeUsageLLM(FakeLLM):
    """A test fake of an LLM that answers every extraction with no changes and then reports
    its usage in a last chunk, as OpenAI-compatible streams do."""

    model_name = "fake-usage"

    def __init__(self, prompt_tokens: int, completion_tokens: int) -> None:
        super().__init__()
        self.usage = llm.CompletionUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.requests.append(chat_ctx.copy())
        return _UsageStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _UsageStream(llm.LLMStream):
    async def _run(self) -> None:
        fake = self._llm
        assert isinstance(fake, FakeUsageLLM)
        call = llm.FunctionToolCall(
            name="record_changes", arguments=json.dumps({"changes": []}), call_id="c1"
        )
        delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
        self._event_ch.send_nowait(llm.ChatChunk(id="fake", delta=delta))
        self._event_ch.send_nowait(llm.ChatChunk(id="fake", usage=fake.usage))


async def test_extraction_requests_and_the_tokens_their_llm_reports_are_counted(
    memory: CallerMemory,
) -> None:
    answered = ("caller_memory_extraction_requests_total", {"result": "answered"})
    failed = ("caller_memory_extraction_requests_total", {"result": "failed"})
    tokens_in = ("caller_memory_extraction_tokens_total", {"direction": "input"})
    tokens_out = ("caller_memory_extraction_tokens_total", {"direction": "output"})
    moved = Deltas(answered, failed, tokens_in, tokens_out)
    model = FakeUsageLLM(prompt_tokens=321, completion_tokens=12)
    writer = capture_writer(memory, ALICE, fact_extractor=LLMFactExtractor(model))
    writer.capture("I started a new job at the bakery on Monday")
    assert await writer.aclose(timeout=5)
    assert writer.facts is not None and writer.facts.requests == len(model.requests) == 1
    assert moved(*answered) == 1
    assert moved(*failed) == 0
    assert moved(*tokens_in) == 321
    assert moved(*tokens_out) == 12


async def test_a_failed_extraction_request_counts_as_failed_and_no_tokens(
    memory: CallerMemory,
) -> None:
    answered = ("caller_memory_extraction_requests_total", {"result": "answered"})
    failed = ("caller_memory_extraction_requests_total", {"result": "failed"})
    tokens_in = ("caller_memory_extraction_tokens_total", {"direction": "input"})
    moved = Deltas(answered, failed, tokens_in)
    # the scripted LLM answers in words, without the record_changes call it was asked for
    writer = capture_writer(memory, ALICE, fact_extractor=LLMFactExtractor(FakeScriptedLLM()))
    writer.capture("I started a new job at the bakery on Monday")
    await writer.aclose(timeout=5)
    # read once more with the next batch (the last, at the close): two requests, both failed
    assert writer.facts is not None and writer.facts.failed_requests == 2
    assert (moved(*answered), moved(*failed), moved(*tokens_in)) == (0, 2, 0)


# -- embeddings ----------------------------------------------------------------------------------


async def test_embeddings_are_timed_by_kind(
    sqlite_store: SQLiteMemoryStore, tmp_path: Path, e5_model_dir: Path
) -> None:
    embedder = OnnxEmbedder(e5_model_dir)
    memory = CallerMemory(
        store=sqlite_store,
        settings=MemorySettings.model_construct(spool_dir=tmp_path / "spool"),
        embedder=embedder,
    )
    query = ("caller_memory_embedding_duration_seconds_count", {"kind": "query"})
    written = ("caller_memory_embedding_duration_seconds_count", {"kind": "memory"})
    moved = Deltas(query, written)
    try:
        with session_user(ALICE, namespace=memory.settings.identity_namespace):
            await memory.manager.astore("FACT", "job", "nurse")
            await memory.manager.astore("FACT", "home_town", "Leeds")
            [found, *_] = await memory.manager.asearch("what do I do for a living?")
        assert found.value == "nurse"
    finally:
        await embedder.aclose()
    assert (moved(*query), moved(*written)) == (1, 2)
