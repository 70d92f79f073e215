"""Memory's OpenTelemetry spans inside LiveKit's own turn traces, read from an in-memory span
exporter on the tracer provider LiveKit is given (`livekit.agents.telemetry.
set_tracer_provider`): a real spoken `AgentSession` turn (fake voice, STT and LLM), a real
SQLite store and the real test embedding model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit.agents import telemetry
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from caller_memory import (
    CallerMemory,
    MemoryAgent,
    MemorySettings,
    livekit_identity_to_uuid,
    session_user,
)
from caller_memory.embeddings.onnx import OnnxEmbedder
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeAudioInput,
    FakeScriptedLLM,
    FakeTimedLLM,
    FakeVAD,
    FakeVoice,
    FakeVoiceSTT,
    reply_arrived,
    start_caller,
    text_session,
    voice_session,
)
from tests.support import MORE_IMPORTANT_FACTS

ALICE = "alice.traced@example.com"
TRIP = "visit Lisbon in May"
QUESTION = "Where was I going in May?"
STATEMENT = "My brother Tom is a firefighter in Porto"
MEMORY_SPANS = {
    "caller_memory.recall",
    "caller_memory.capture",
    "caller_memory.embedding",
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span LiveKit's tracer makes, kept in memory; LiveKit's tracer is given back the
    global provider afterwards (what it had before anyone set one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        telemetry.tracer.set_provider(trace.get_tracer_provider())
        provider.shutdown()


class QuietAgent(MemoryAgent):
    def __init__(self) -> None:
        super().__init__(instructions="You are terse.")


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names: list[str] = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        above = by_id[parent.span_id]
        names.append(above.name)
        parent = above.parent
    return names


async def test_memory_spans_nest_in_livekits_turn_and_carry_no_identity_or_text(
    spans: InMemorySpanExporter, sqlite_store: SQLiteMemoryStore, e5_model_dir: Path
) -> None:
    embedder = OnnxEmbedder(e5_model_dir)
    memory = CallerMemory(store=sqlite_store, settings=MemorySettings.load(), embedder=embedder)
    with session_user(ALICE, namespace=memory.settings.identity_namespace):
        for (category, key), value in {**MORE_IMPORTANT_FACTS, ("PLAN", "trip"): TRIP}.items():
            await memory.manager.astore(category, key, value)
    spans.clear()
    voice = FakeVoice()
    fake_llm = FakeTimedLLM(ttft=0.05)
    session = voice_session(fake_llm, FakeVoiceSTT(voice), FakeVAD(voice))
    call = await start_caller(memory, session, ALICE, QuietAgent)
    try:
        for number, said in enumerate((QUESTION, STATEMENT), start=1):
            replied = reply_arrived(session, f"reply #{number}: {said}")
            voice.say(said)
            await asyncio.wait_for(replied, 10.0)
        assert call.turns_with_memories >= 1  # the trip was recalled into the first reply
    finally:
        audio = session.input.audio
        assert isinstance(audio, FakeAudioInput)
        audio.close()
        assert await call.aclose()
        await session.aclose()
        await memory.aclose()

    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    ours = [s for s in finished if s.name.startswith("caller_memory.")]
    assert MEMORY_SPANS <= {s.name for s in ours}

    recalls = [s for s in ours if s.name == "caller_memory.recall"]
    assert len(recalls) == 2  # one per caller message, drafts and final reply sharing it
    outcomes = sorted(str((s.attributes or {})["caller_memory.outcome"]) for s in recalls)
    assert "hit" in outcomes
    for span in recalls:
        # started at the final transcript, which LiveKit reports outside its user_turn span:
        # in the session's trace, under its agent_session span
        assert "agent_session" in ancestors(span, by_id), ancestors(span, by_id)
        assert (span.attributes or {})["caller_memory.backend"] == "sqlite"
    kinds = {
        (s.attributes or {})["caller_memory.kind"]
        for s in ours
        if s.name == "caller_memory.embedding"
    }
    assert kinds == {"query", "memory"}

    secrets = [
        ALICE,
        livekit_identity_to_uuid(ALICE),
        TRIP,
        QUESTION,
        STATEMENT,
        "Tom",
        "firefighter",
        "Porto",
        *MORE_IMPORTANT_FACTS.values(),
    ]
    for span in ours:
        for attribute, attribute_value in (span.attributes or {}).items():
            shown = str(attribute_value)
            assert not any(secret in shown for secret in secrets if len(secret) > 2), (
                span.name,
                attribute,
            )
        assert span.status.description in (None, "", "CancelledError"), span.status


async def test_recall_for_a_typed_turn_nests_in_livekits_llm_node_of_that_turn(
    spans: InMemorySpanExporter, memory: CallerMemory
) -> None:
    with session_user(ALICE, namespace=memory.settings.identity_namespace):
        for (category, key), value in {**MORE_IMPORTANT_FACTS, ("PLAN", "trip"): TRIP}.items():
            await memory.manager.astore(category, key, value)
    session = text_session(FakeScriptedLLM())
    call = await start_caller(memory, session, ALICE, QuietAgent)
    try:
        await session.run(user_input=QUESTION)
    finally:
        assert await call.aclose()
        await session.aclose()
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    [recall] = [s for s in finished if s.name == "caller_memory.recall"]
    assert ancestors(recall, by_id)[:2] == ["llm_node", "agent_turn"]
    assert (recall.attributes or {})["caller_memory.outcome"] == "hit"
    assert (recall.attributes or {})["caller_memory.memories"] == 1
