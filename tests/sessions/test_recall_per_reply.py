"""Recall for every reply, in the LLM step: typed turns too, nothing left in the history.

Recall runs where every reply passes, `MemoryAgent.llm_node`: the memory block goes into the
request for that reply only, just before the caller's message, never into the agent's
context or the stored chat history. These tests drive livekit-agents' real `AgentSession`
with the fakes of `caller_memory.testing` and read what each LLM request held: typed turns
(`session.run`, a room's `lk.chat` message), a handoff to a second agent, two callers at once,
and a turn whose reply runs the LLM twice (a tool call).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession, RunContext, function_tool, llm

from agent import Companion
from caller_memory import (
    CallerMemory,
    CallerSession,
    MemoryAgent,
    MemoryKind,
    caller_of,
    livekit_identity_to_uuid,
    memory_manager,
    session_user,
)
from caller_memory.recall.block import BLOCK_PREAMBLE, BLOCK_START
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeAudioInput,
    FakeLLM,
    FakeScriptedLLM,
    FakeSTT,
    FakeTimedLLM,
    FakeVAD,
    FakeVoice,
    FakeVoiceSTT,
    chat_texts,
    reply_arrived,
    start_caller,
    text_session,
    voice_session,
)
from tests.fake_room import FakeRoom
from tests.support import MORE_IMPORTANT_FACTS, sqlite_rows

ALICE = "alice@example.com"
BOB = "bob@example.com"
RECALLED = f"{BLOCK_START}\n{BLOCK_PREAMBLE}\n"
QUESTION = "Do you remember my sister?"
STATEMENT = "My sister is visiting next week"  # a statement: captured, and it bears on her
REPLY_TIMEOUT = 10.0
SISTERS = {ALICE: "Ana", BOB: "Beatriz"}


async def remember(identity: str, facts: dict[tuple[str, str], str]) -> None:
    with session_user(identity):
        for (category, key), value in facts.items():
            await memory_manager.astore(category, key, value)


async def a_caller_with_a_sister(identity: str) -> None:
    """A caller whose sister is not among what a session starts knowing (more important
    facts fill that), so only recall can bring her into a reply."""
    await remember(
        identity, {**MORE_IMPORTANT_FACTS, ("RELATIONSHIP", "sister_name"): SISTERS[identity]}
    )


def recall_blocks(chat_ctx: llm.ChatContext) -> list[str]:
    return [t for t in chat_texts(chat_ctx) if t.startswith(RECALLED)]


def request_answering(fake_llm: FakeLLM, text: str) -> llm.ChatContext:
    """The one request whose last caller message is `text` and that is not a tool's
    follow-up."""
    found = [
        r
        for r in fake_llm.requests
        if (users := chat_texts(r, "user")) and users[-1] == text and not _after_a_tool(r)
    ]
    assert len(found) == 1, f"expected one request answering {text!r}, got {len(found)}"
    return found[0]


def _after_a_tool(chat_ctx: llm.ChatContext) -> bool:
    return bool(chat_ctx.items) and isinstance(chat_ctx.items[-1], llm.FunctionCallOutput)


def assert_recalled_for_this_reply_only(
    request: llm.ChatContext, question: str, sister: str
) -> None:
    """The request holds one recall block with the sister, as a system message just before
    the caller's message."""
    [block] = recall_blocks(request)
    assert f'sister_name: "{sister}"' in block
    position = next(
        i
        for i, item in enumerate(request.items)
        if isinstance(item, llm.ChatMessage) and item.text_content == question
    )
    before = request.items[position - 1]
    assert isinstance(before, llm.ChatMessage) and before.role == "system"
    assert before.text_content == block


def assert_no_block_kept(session: AgentSession[Any]) -> None:
    """Neither the agent's context nor the session's history holds a recall block."""
    assert recall_blocks(session.current_agent.chat_ctx) == []
    assert recall_blocks(session.history) == []


# -- typed turns -------------------------------------------------------------------------------


async def test_a_typed_turn_reaches_the_llm_with_the_memory_it_bears_on(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await a_caller_with_a_sister(ALICE)
    fake_llm = FakeScriptedLLM()
    session = text_session(fake_llm)
    call = await start_caller(memory_of(), session, ALICE, Companion)
    try:
        assert SISTERS[ALICE] not in [m.value for m in call.known_memories]
        result = await session.run(user_input=QUESTION)
        assert [e.item.text_content for e in result.events if e.type == "message"][-1] == (
            f"reply: {QUESTION}"
        )
        assert_recalled_for_this_reply_only(
            request_answering(fake_llm, QUESTION), QUESTION, SISTERS[ALICE]
        )
        # a later turn does not carry the earlier turn's block
        await session.run(user_input="thanks, that's all")
        assert recall_blocks(request_answering(fake_llm, "thanks, that's all")) == []
        assert_no_block_kept(session)
    finally:
        assert await call.aclose()
        await session.aclose()


# -- spoken turns: LiveKit's early reply kept ---------------------------------------------------


class QuietMemoryAgent(MemoryAgent):
    """A memory agent that does not greet, so every LLM request answers the caller."""

    def __init__(self) -> None:
        super().__init__(instructions="You are terse.")


async def test_a_spoken_turn_with_a_relevant_memory_makes_one_request_and_speaks_the_draft(
    installed_sqlite_store: SQLiteMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Preemptive generation at its default (on), a VAD and a streaming STT whose final
    transcript comes before the end of the turn: LiveKit starts its draft at the transcript.
    Recall for the draft happens in the LLM step, so the hook leaves the context as the draft
    saw it: LiveKit keeps the draft, the turn makes exactly one LLM request, the reply heard
    is the draft's, and that request holds the recalled memory."""
    caplog.set_level(logging.DEBUG, logger="livekit.agents")
    await a_caller_with_a_sister(ALICE)
    voice = FakeVoice()
    fake_llm = FakeTimedLLM(ttft=0.05)
    session = voice_session(fake_llm, FakeVoiceSTT(voice), FakeVAD(voice))
    call = await start_caller(memory_of(), session, ALICE, QuietMemoryAgent)
    try:
        assert SISTERS[ALICE] not in [m.value for m in call.known_memories]
        replied = reply_arrived(session, f"reply #1: {QUESTION}")
        voice.say(QUESTION)
        await asyncio.wait_for(replied, REPLY_TIMEOUT)
        [request] = fake_llm.timed_requests  # the draft, and nothing after it
        assert not request.cancelled
        assert_recalled_for_this_reply_only(request.chat_ctx, QUESTION, SISTERS[ALICE])
        assert_no_block_kept(session)
    finally:
        audio = session.input.audio
        assert isinstance(audio, FakeAudioInput)
        audio.close()
        assert await call.aclose()
        await session.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name == "livekit.agents"]
    assert sum("using preemptive generation" in line for line in lines) == 1
    assert not any("preemptive generation invalidated" in line for line in lines)


def memory_of() -> CallerMemory:
    from caller_memory import default_memory

    return default_memory()


async def test_a_room_chat_message_reaches_the_llm_with_the_memory_it_bears_on(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await a_caller_with_a_sister(ALICE)
    room = FakeRoom()
    room.join(ALICE)
    fake_llm = FakeScriptedLLM()
    session: AgentSession[Any] = AgentSession(
        llm=fake_llm, stt=FakeSTT(), vad=None, turn_handling={"turn_detection": "stt"}
    )
    session.output.set_audio_enabled(False)  # no TTS can run here
    call = await start_caller(memory_of(), session, ALICE, Companion, room=room)
    try:
        await asyncio.wait_for(session.room_io.wait_for_ready(), REPLY_TIMEOUT)
        replied = reply_arrived(session, f"reply: {QUESTION}")
        room.deliver_text_stream(ALICE, "lk.chat", QUESTION)
        await asyncio.wait_for(replied, REPLY_TIMEOUT)
        assert_recalled_for_this_reply_only(
            request_answering(fake_llm, QUESTION), QUESTION, SISTERS[ALICE]
        )
        assert_no_block_kept(session)
    finally:
        assert await call.aclose()
        await session.aclose()


# -- two callers at once ---------------------------------------------------------------------


async def test_two_concurrent_callers_requests_each_hold_only_their_own_memories(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    for identity in SISTERS:
        await a_caller_with_a_sister(identity)

    async def caller(identity: str) -> FakeScriptedLLM:
        fake_llm = FakeScriptedLLM()
        session = text_session(fake_llm)
        call = await start_caller(memory_of(), session, identity, Companion)
        try:
            for turn in range(3):
                await session.run(user_input=f"{QUESTION} ({turn})")
                await asyncio.sleep(0.003)
        finally:
            assert await call.aclose()
            await session.aclose()
        return fake_llm

    alice_llm, bob_llm = await asyncio.gather(caller(ALICE), caller(BOB))
    for fake_llm, mine, theirs in (
        (alice_llm, SISTERS[ALICE], SISTERS[BOB]),
        (bob_llm, SISTERS[BOB], SISTERS[ALICE]),
    ):
        for turn in range(3):
            [block] = recall_blocks(request_answering(fake_llm, f"{QUESTION} ({turn})"))
            assert f'sister_name: "{mine}"' in block
        sent = "\n".join(t for r in fake_llm.requests for t in chat_texts(r))
        assert theirs not in sent


# -- a handoff to another agent ----------------------------------------------------------------


class Receptionist(MemoryAgent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the receptionist.")

    @function_tool
    async def transfer_to_specialist(self, context: RunContext) -> tuple[Agent, str]:
        """Hand the caller over to the specialist."""
        return Specialist(), "Transferring you now."


class Specialist(MemoryAgent):
    def __init__(self) -> None:
        super().__init__(instructions="You are the specialist.")


class FakeHandoffLLM(FakeLLM):
    """Calls `transfer_to_specialist` when asked to transfer; else quotes the caller."""

    model_name = "fake-handoff"

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        last = chat_ctx.items[-1] if chat_ctx.items else None
        if isinstance(last, llm.ChatMessage) and last.text_content == "please transfer me":
            call = llm.FunctionToolCall(
                name="transfer_to_specialist", arguments=json.dumps({}), call_id="handoff-1"
            )
            return [llm.ChoiceDelta(role="assistant", tool_calls=[call])]
        return FakeScriptedLLM.respond(self, chat_ctx)  # type: ignore[arg-type]

    reply_for = staticmethod(FakeScriptedLLM.reply_for)


async def test_after_a_handoff_the_second_agent_recalls_the_same_callers_memories(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await a_caller_with_a_sister(ALICE)
    fake_llm = FakeHandoffLLM()
    session = text_session(fake_llm)
    call = await start_caller(memory_of(), session, ALICE, Receptionist)
    try:
        await session.run(user_input="please transfer me")
        assert isinstance(session.current_agent, Specialist)
        assert caller_of(session) is call  # the same caller, whichever agent is active
        await session.run(user_input=QUESTION)
        asked = request_answering(fake_llm, QUESTION)
        assert "You are the specialist." in "\n".join(chat_texts(asked, "system"))
        assert_recalled_for_this_reply_only(asked, QUESTION, SISTERS[ALICE])
        await session.run(user_input=STATEMENT)
        assert_recalled_for_this_reply_only(
            request_answering(fake_llm, STATEMENT), STATEMENT, SISTERS[ALICE]
        )
        assert_no_block_kept(session)
    finally:
        assert await call.aclose()
        await session.aclose()
    # what the caller stated after the handoff was captured, once, for the same caller
    said = [
        m["value"]
        for m in sqlite_rows(installed_sqlite_store.path)[1]
        if m["kind"] == MemoryKind.UTTERANCE and m["user_id"] == livekit_identity_to_uuid(ALICE)
    ]
    assert said.count(STATEMENT) == 1


# -- a reply that runs the LLM twice: one capture, one recall --------------------------------


class FakeReadBackLLM(FakeLLM):
    """Calls `what_do_you_know_about_me` for what the caller says about their sister, then
    answers with the tool's output: the reply runs the LLM twice for one caller message."""

    model_name = "fake-read-back"

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        last = chat_ctx.items[-1] if chat_ctx.items else None
        if isinstance(last, llm.FunctionCallOutput):
            return [llm.ChoiceDelta(role="assistant", content="here is what I know")]
        if isinstance(last, llm.ChatMessage) and last.text_content == STATEMENT:
            call = llm.FunctionToolCall(
                name="what_do_you_know_about_me", arguments="{}", call_id="read-1"
            )
            return [llm.ChoiceDelta(role="assistant", tool_calls=[call])]
        return [llm.ChoiceDelta(role="assistant", content="ok")]


async def test_a_reply_with_a_tool_call_recalls_once_and_captures_once(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await a_caller_with_a_sister(ALICE)
    searches: list[str] = []
    real_search = installed_sqlite_store.search_candidates

    async def counting_search(user_id: str, query: str, limit: int, **kw: Any) -> list[Any]:
        searches.append(query)
        return await real_search(user_id, query, limit, **kw)

    installed_sqlite_store.search_candidates = counting_search  # type: ignore[method-assign]
    fake_llm = FakeReadBackLLM()
    session = text_session(fake_llm)
    call: CallerSession = await start_caller(memory_of(), session, ALICE, Companion)
    try:
        searches.clear()  # what attach read at the start is not this turn's
        await session.run(user_input=STATEMENT)
    finally:
        assert await call.aclose()
        await session.aclose()
    answering = [r for r in fake_llm.requests if STATEMENT in chat_texts(r, "user")]
    assert len(answering) == 2  # the tool call, and the answer after it
    for request in answering:
        [block] = recall_blocks(request)
        assert f'sister_name: "{SISTERS[ALICE]}"' in block
    # one recall search for the message (the tool's own read-back is a listing, not a query)
    recall_searches = [q for q in searches if "sister" in q]
    assert len(recall_searches) == 1, searches
    said = [
        m["value"]
        for m in sqlite_rows(installed_sqlite_store.path)[1]
        if m["kind"] == MemoryKind.UTTERANCE
    ]
    assert said.count(STATEMENT) == 1
