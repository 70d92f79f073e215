"""Callers through livekit-agents' real `AgentSession`, started the way the worker starts them.

Every session here is started as the worker's entrypoint starts it (`memory.attach`, then
`session.start` with the worker's `Companion` agent), each in its own task (as each job
entrypoint is). Only the LLM, the STT and the microphone are fakes (`caller_memory.testing`);
the turns, the chat context, the hooks, the capture and the SQLite store are the real ones.
Every outcome is read back from the store file row by row, after the caller's pending writes
were flushed.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import random
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import AgentSession, llm, room_io
from livekit.agents.voice.run_result import ChatMessageEvent, RunResult

from agent import Companion
from caller_memory import (
    CallerSession,
    MemoryKind,
    default_memory,
    get_session_user_uuid,
    livekit_identity_to_uuid,
    memory_manager,
    session_user,
)
from caller_memory.capture.rule_based import extract_memories
from caller_memory.recall.block import BLOCK_PREAMBLE, BLOCK_START
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeAudioInput,
    FakeScriptedLLM,
    FakeStoreOutage,
    FakeSTT,
    chat_texts,
)
from caller_memory.voice.greeting import FIRST_CALL_GREETING, GREET_BY_NAME, RETURNING_GREETING
from tests.session_harness import (
    eventually,
    reply_arrived,
    spoken_session,
    start_in_own_task,
    text_session,
)
from tests.support import MORE_IMPORTANT_FACTS, install_memory, outage_errors, sqlite_rows

ALICE = "alice@example.com"
BOB = "bob@example.com"
REPLY_TIMEOUT = 10.0


# -- helpers ---------------------------------------------------------------------------------


def assistant_replies(result: RunResult[Any]) -> list[str]:
    return [
        event.item.text_content or ""
        for event in result.events
        if isinstance(event, ChatMessageEvent) and event.item.role == "assistant"
    ]


def utterances_of(messages: list[str]) -> list[str]:
    return [
        m.value for t in messages for m in extract_memories(t) if m.kind == MemoryKind.UTTERANCE
    ]


def facts_of(messages: list[str]) -> dict[tuple[str, str], str]:
    facts: dict[tuple[str, str], str] = {}
    for text in messages:
        for m in extract_memories(text):
            if m.kind != MemoryKind.UTTERANCE:
                facts[(m.category.value, m.key)] = m.value
    return facts


def memory_count(messages: list[str]) -> int:
    return sum(len(extract_memories(t)) for t in messages)


def assert_store_holds_exactly(
    path: Path,
    said: dict[str, list[str]],
    earlier: dict[str, dict[tuple[str, str], str]] | None = None,
) -> None:
    """Each caller's rows are exactly what that caller said (plus what was stored for them
    before the call), every utterance exactly once; nobody else has any row."""
    earlier = earlier or {}
    _, memories = sqlite_rows(path)
    users = {livekit_identity_to_uuid(i): i for i in said}
    assert {m["user_id"] for m in memories} <= set(users)
    for user_id, identity in users.items():
        rows = [m for m in memories if m["user_id"] == user_id]
        utterances = sorted(m["value"] for m in rows if m["kind"] == MemoryKind.UTTERANCE)
        assert utterances == sorted(utterances_of(said[identity])), identity
        facts = {
            (m["category"], m["key"]): m["value"] for m in rows if m["kind"] != MemoryKind.UTTERANCE
        }
        assert facts == {**earlier.get(identity, {}), **facts_of(said[identity])}, identity


async def remember_earlier(identity: str, facts: dict[tuple[str, str], str]) -> None:
    """What the caller told the companion in an earlier call."""
    with session_user(identity):
        for (category, key), value in facts.items():
            await memory_manager.astore(category, key, value)


def writes(call: CallerSession) -> int:
    """Memories this session's capture wrote: to the store, or to the spool when it had to
    queue them (while the spool replays, which every session start triggers, new writes
    queue behind it in the spool so that an older value never overwrites a newer one)."""
    return call.writer.stored_count + call.writer.spooled_count


async def spool_settled() -> None:
    """Wait until this process's spool has written everything it holds to the store.

    A record spooled while the replayer is finishing its last pass is not replayed until
    something schedules a replay again (in production: the next capture that is spooled, or
    the next session start); the spool's owner knows. Nudge it the same way here.
    """
    spool = default_memory().spool
    spool.schedule_replay(first_delay=0.01)
    await eventually(lambda: not spool.has_pending, "the spool to be replayed")


def switches(trace: list[str]) -> int:
    return sum(1 for a, b in itertools.pairwise(trace) if a != b)


async def start_in_this_task(session: AgentSession[Any], identity: str) -> CallerSession:
    """Start a caller of the reference worker in the current task, as its entrypoint does
    (the caller is set in this task's context)."""
    caller = await default_memory().attach(session, identity=identity)
    await session.start(agent=Companion(), **caller.start_options)
    return caller


# -- (a) two callers at once, several turns each ---------------------------------------------


async def test_two_concurrent_callers_each_turn_lands_under_its_caller(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    said = {
        ALICE: [
            "I love sailing on the lake",
            "My sister Ana lives in Lisbon",
            "I prefer tea over coffee",
            "Tomorrow I will visit the lighthouse",
        ],
        BOB: [
            "I love climbing in the Alps",
            "My brother Tom lives in Oslo",
            "I prefer coffee over tea",
            "Tomorrow I will fix the bicycle",
        ],
    }
    earlier = {
        ALICE: {("PRESENTATION", "name"): "Marisol"},
        BOB: {("PRESENTATION", "name"): "Thaddeus"},
    }
    for identity, facts in earlier.items():
        await remember_earlier(identity, facts)

    both_started = asyncio.Barrier(2)
    trace: list[str] = []

    async def caller(identity: str, offset: float) -> tuple[CallerSession, FakeScriptedLLM, bool]:
        fake_llm = FakeScriptedLLM()
        session = text_session(fake_llm)
        started = await start_in_this_task(session, identity)
        await both_started.wait()
        rng = random.Random(identity)
        try:
            await asyncio.sleep(offset)
            for text in said[identity]:
                result: RunResult[Any] = await session.run(user_input=text)
                assert assistant_replies(result) == [f"reply: {text}"]
                assert get_session_user_uuid() == started.user_uuid
                trace.append(identity)
                await asyncio.sleep(0.008 + rng.random() * 0.004)
        finally:
            flushed = await started.aclose()
            await session.aclose()
        return started, fake_llm, flushed

    results = await asyncio.gather(
        asyncio.create_task(caller(ALICE, 0.0)), asyncio.create_task(caller(BOB, 0.004))
    )

    assert get_session_user_uuid() is None  # neither caller leaked into the test's context
    assert sorted(trace) == sorted([ALICE] * 4 + [BOB] * 4)
    assert switches(trace) >= 2  # the two callers' turns interleaved
    for (started, fake_llm, flushed), identity in zip(results, said, strict=True):
        other = BOB if identity == ALICE else ALICE
        assert flushed is True
        assert started.user_uuid == livekit_identity_to_uuid(identity)
        # what this caller's LLM saw: its own words and memories, never the other caller's
        seen = "\n".join(t for request in fake_llm.requests for t in chat_texts(request))
        assert earlier[identity][("PRESENTATION", "name")] in seen
        assert earlier[other][("PRESENTATION", "name")] not in seen
        assert not [t for t in said[other] if t in seen]
        asked = [chat_texts(r, "user")[-1] for r in fake_llm.requests if chat_texts(r, "user")]
        assert asked == said[identity]
        assert writes(started) == memory_count(said[identity])
    await spool_settled()
    assert_store_holds_exactly(installed_sqlite_store.path, said, earlier)


# -- (b) typed chat from the room, delivered by a task with no session user ------------------


async def deliver_typed_text(session: AgentSession[Any], text: str) -> None:
    """What room_io does with a chat text stream: its reader task (started by the room's own
    listener, before any session user was known) calls the text input callback; this calls
    livekit's default one (interrupt, then generate_reply(user_input=text))."""
    assert get_session_user_uuid() is None
    callback = room_io.TextInputOptions().text_input_cb
    result = callback(session, room_io.TextInputEvent(text=text))
    if asyncio.iscoroutine(result):
        await result


async def test_typed_room_chat_from_a_contextless_task_lands_under_its_caller(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    typed = {
        ALICE: ["I collect old maps of Porto", "My favourite band is Low", "I love sailing at dawn"]
    }
    spoken_by_bob = ["I collect vintage radios", "I prefer black coffee at night"]
    alice_llm, bob_llm = FakeScriptedLLM(), FakeScriptedLLM()
    alice_session, bob_session = text_session(alice_llm), text_session(bob_llm)
    alice = await start_in_own_task(alice_session, ALICE)
    bob = await start_in_own_task(bob_session, BOB)
    assert get_session_user_uuid() is None
    trace: list[str] = []

    async def bob_turns() -> None:
        for text in spoken_by_bob:
            result: RunResult[Any] = await bob_session.run(user_input=text)
            assert assistant_replies(result) == [f"reply: {text}"]
            trace.append(BOB)
            await asyncio.sleep(0.01)

    async def alice_types() -> None:
        loop = asyncio.get_running_loop()
        for text in typed[ALICE]:
            replied = reply_arrived(alice_session, f"reply: {text}")
            room_task = loop.create_task(
                deliver_typed_text(alice_session, text), context=contextvars.Context()
            )
            await room_task  # surfaces the callback's own assertion, if it failed
            await asyncio.wait_for(replied, REPLY_TIMEOUT)
            trace.append(ALICE)
            await asyncio.sleep(0.007)

    await asyncio.gather(asyncio.create_task(bob_turns()), asyncio.create_task(alice_types()))
    assert switches(trace) >= 2
    assert await alice.aclose() is True
    assert await bob.aclose() is True
    await alice_session.aclose()
    await bob_session.aclose()

    assert writes(alice) == memory_count(typed[ALICE])
    assert writes(bob) == memory_count(spoken_by_bob)
    await spool_settled()
    assert_store_holds_exactly(
        installed_sqlite_store.path, {ALICE: typed[ALICE], BOB: spoken_by_bob}
    )
    # Each typed message reached the LLM once, in order. (The greeting's request has no user
    # message; it may not be sent at all when the first typed message interrupts it first.)
    asked = [texts[-1] for r in alice_llm.requests if (texts := chat_texts(r, "user"))]
    assert asked == typed[ALICE]


# -- (c) spoken turns: audio -> STT -> on_user_turn_completed -> reply -----------------------


async def test_spoken_turns_go_through_the_hook_and_are_stored_once(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    # Recall has a real budget in production (50 ms); this test is about who, not how fast.
    install_memory(installed_sqlite_store, recall_budget_ms=2000)
    spoken = {
        ALICE: ["Tell me about my dog", "I collect old maps of Porto"],
        BOB: ["Tell me about my cat", "I collect vintage radios"],
    }
    earlier = {
        ALICE: {("RELATIONSHIP", "dog_name"): "Biscuit"},
        BOB: {("RELATIONSHIP", "cat_name"): "Pickles"},
    }
    for identity, facts in earlier.items():
        # with more important facts than a session starts knowing, the pet is left to recall
        await remember_earlier(identity, {**facts, **MORE_IMPORTANT_FACTS})
    assert all(utterances_of(texts) for texts in spoken.values())  # something to store

    both_started = asyncio.Barrier(2)
    trace: list[str] = []

    async def caller(identity: str, offset: float) -> dict[str, Any]:
        fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
        session = spoken_session(fake_llm, fake_stt)
        started = await start_in_this_task(session, identity)
        hook_calls: list[tuple[str | None, str | None]] = []
        agent = session.current_agent
        real_hook = agent.on_user_turn_completed

        async def spy(turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
            hook_calls.append((new_message.text_content, get_session_user_uuid()))
            await real_hook(turn_ctx, new_message)

        agent.on_user_turn_completed = spy  # type: ignore[method-assign]
        await both_started.wait()
        await asyncio.sleep(offset)
        try:
            for text in spoken[identity]:
                replied = reply_arrived(session, f"reply: {text}")
                fake_stt.say(text)
                await asyncio.wait_for(replied, REPLY_TIMEOUT)
                trace.append(identity)
                await asyncio.sleep(0.01)
        finally:
            assert isinstance(session.input.audio, FakeAudioInput)
            session.input.audio.close()
            flushed = await started.aclose()
            await session.aclose()
        return {
            "caller": started,
            "llm": fake_llm,
            "stt": fake_stt,
            "hook_calls": hook_calls,
            "flushed": flushed,
        }

    results = await asyncio.gather(
        asyncio.create_task(caller(ALICE, 0.0)), asyncio.create_task(caller(BOB, 0.005))
    )
    assert switches(trace) >= 1
    for result, identity in zip(results, spoken, strict=True):
        other = BOB if identity == ALICE else ALICE
        started: CallerSession = result["caller"]
        assert result["flushed"] is True
        assert result["stt"].transcripts_sent == spoken[identity]  # the words came from audio
        assert result["stt"].frames_received > 0
        # the real audio-recognition path called the hook, once per turn, as this caller
        assert result["hook_calls"] == [(t, started.user_uuid) for t in spoken[identity]]
        # the hook captured each turn and the conversation listener saw the same message:
        # one write per memory, not two
        assert writes(started) == memory_count(spoken[identity])
        # recall put this caller's earlier memory into the reply's request (recall's block,
        # not the known-memories block the session starts with)
        requests = result["llm"].requests
        mine = next(iter(earlier[identity].values()))
        theirs = next(iter(earlier[other].values()))
        recalled = [
            t
            for r in requests
            for t in chat_texts(r, "system")
            if t.startswith(f"{BLOCK_START}\n{BLOCK_PREAMBLE}\n")
        ]
        assert recalled
        assert all(mine in block for block in recalled)
        assert theirs not in "\n".join(t for r in requests for t in chat_texts(r))
    await spool_settled()
    assert_store_holds_exactly(
        installed_sqlite_store.path,
        spoken,
        {who: {**facts, **MORE_IMPORTANT_FACTS} for who, facts in earlier.items()},
    )


# -- (d) first call vs returning caller ------------------------------------------------------


async def greeting_instructions(fake_llm: FakeScriptedLLM) -> list[str]:
    await eventually(lambda: len(fake_llm.requests) >= 1, "the greeting request")
    return chat_texts(fake_llm.requests[0], "system")


async def test_first_call_greeting_differs_from_returning_callers(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    erin, frank = "erin@example.com", "frank@example.com"
    first_llm = FakeScriptedLLM()
    first_session = text_session(first_llm)
    first = await start_in_own_task(first_session, erin)
    assert first.profile.is_first_login is True

    system = await greeting_instructions(first_llm)
    assert FIRST_CALL_GREETING in system
    assert not [t for t in system if RETURNING_GREETING in t]

    async def first_login_done() -> bool:
        profile = await installed_sqlite_store.get_profile(first.user_uuid)
        return profile is not None and profile.is_first_login is False

    await eventually(first_login_done, "the first greeting to be recorded")
    result: RunResult[Any] = await first_session.run(user_input="I collect old maps of Porto")
    assert assistant_replies(result) == ["reply: I collect old maps of Porto"]
    assert await first.aclose() is True
    await first_session.aclose()
    await spool_settled()

    await remember_earlier(erin, {("PRESENTATION", "name"): "Erin"})

    # Erin calls again while Frank calls for the first time
    again_llm, frank_llm = FakeScriptedLLM(), FakeScriptedLLM()
    again_session, frank_session = text_session(again_llm), text_session(frank_llm)
    again, frank_call = await asyncio.gather(
        start_in_own_task(again_session, erin), start_in_own_task(frank_session, frank)
    )
    assert again.profile.is_first_login is False
    assert frank_call.profile.is_first_login is True

    again_system = await greeting_instructions(again_llm)
    by_name = GREET_BY_NAME.format(name='"Erin"')
    assert f"{RETURNING_GREETING} {by_name}" in again_system
    assert FIRST_CALL_GREETING not in again_system
    # and the returning greeting has what Erin said last time in its context
    assert "old maps of Porto" in "\n".join(chat_texts(again_llm.requests[0]))

    frank_system = await greeting_instructions(frank_llm)
    assert FIRST_CALL_GREETING in frank_system
    assert not [t for t in frank_system if RETURNING_GREETING in t]
    assert "Porto" not in "\n".join(chat_texts(frank_llm.requests[0]))

    async def frank_greeted() -> bool:
        profile = await installed_sqlite_store.get_profile(frank_call.user_uuid)
        return profile is not None and profile.is_first_login is False

    # (a caller who hangs up before the first greeting is over is greeted as new next time)
    await eventually(frank_greeted, "Frank's first greeting to be recorded")

    for call, session in ((again, again_session), (frank_call, frank_session)):
        assert await call.aclose() is True
        await session.aclose()
    profiles, _ = sqlite_rows(installed_sqlite_store.path)
    assert sorted((p["original_identity"], p["is_first_login"]) for p in profiles) == [
        (erin, 0),
        (frank, 0),
    ]


# -- (e) the store fails during capture: the reply still comes -------------------------------


async def test_storage_failure_during_capture_costs_no_reply(
    installed_sqlite_store: SQLiteMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = FakeStoreOutage(installed_sqlite_store, failing=frozenset({"upsert_memory"}))
    install_memory(outage)  # type: ignore[arg-type]  # a fresh outage log: logged as new
    said = {"gwen@example.com": ["I love sailing at dawn", "I collect vintage radios"]}

    fake_llm = FakeScriptedLLM()
    session = text_session(fake_llm)
    with caplog.at_level(logging.INFO):
        call = await start_in_own_task(session, "gwen@example.com")
        for text in said["gwen@example.com"]:
            result: RunResult[Any] = await session.run(user_input=text)
            assert assistant_replies(result) == [f"reply: {text}"]
        assert await call.aclose() is True  # every memory is in the store or the spool

        await eventually(lambda: bool(outage_errors(caplog)), "the outage to be logged")
        errors = outage_errors(caplog)
        assert len(errors) == 1  # said once, not once a turn
        assert "fake outage: upsert_memory refused" in errors[0].getMessage()
        assert set(outage.refused) == {"upsert_memory"}
        assert call.writer.stored_count == 0
        assert call.writer.spooled_count == memory_count(said["gwen@example.com"])
        assert sqlite_rows(installed_sqlite_store.path)[1] == []

        # the store comes back: the spooled memories are written as the right caller
        outage.down = False

        def all_written() -> bool:
            _, memories = sqlite_rows(installed_sqlite_store.path)
            return len(memories) == memory_count(said["gwen@example.com"])

        await eventually(all_written, "the spool to be replayed", timeout=15)
    await session.aclose()
    assert_store_holds_exactly(installed_sqlite_store.path, said)


async def test_store_down_during_a_spoken_turn_costs_no_reply(
    installed_sqlite_store: SQLiteMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Recall and capture both fail inside `on_user_turn_completed`: the turn still gets
    its reply (an exception there would cost it)."""
    outage = FakeStoreOutage(
        installed_sqlite_store, failing=frozenset({"upsert_memory", "search_candidates"})
    )
    install_memory(outage)  # type: ignore[arg-type]  # a fresh outage log: logged as new
    text = "I collect old maps of Porto"
    fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
    session = spoken_session(fake_llm, fake_stt)
    with caplog.at_level(logging.INFO):
        call = await start_in_own_task(session, ALICE)
        refused_at_start = len(outage.refused)  # loading known memories failed already
        replied = reply_arrived(session, f"reply: {text}")
        fake_stt.say(text)
        await asyncio.wait_for(replied, REPLY_TIMEOUT)
        assert await call.aclose() is True
        # recall in the hook was tried and failed, then the capture's write failed
        assert outage.refused[refused_at_start] == "search_candidates"
        await eventually(lambda: "upsert_memory" in outage.refused, "the write to be tried")
        await eventually(lambda: bool(outage_errors(caplog)), "the outage to be logged")
        assert set(outage.refused) == {"search_candidates", "upsert_memory"}
        assert call.writer.spooled_count == memory_count([text])
        outage.down = False

        def all_written() -> bool:
            return len(sqlite_rows(installed_sqlite_store.path)[1]) == memory_count([text])

        await eventually(all_written, "the spool to be replayed", timeout=15)
    assert isinstance(session.input.audio, FakeAudioInput)
    session.input.audio.close()
    await session.aclose()
    assert_store_holds_exactly(installed_sqlite_store.path, {ALICE: [text]})
