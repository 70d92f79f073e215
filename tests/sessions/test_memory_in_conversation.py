"""Memory in the conversation, through livekit-agents' real `AgentSession`.

Sessions are started as the worker's entrypoint starts them (`memory.attach`, then
`session.start` with the worker's `Companion`), each in a task of its own. Only the LLM, the
STT and the microphone are fakes; most turns that need recall are spoken (audio -> STT ->
final transcript, where recall starts -> the reply's `llm_node`, where its memories join the
request). What is asserted is what the LLM was sent: every chat context the scripted LLM
received.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from livekit.agents import AgentSession, llm

from caller_memory import (
    CallerSession,
    default_memory,
    livekit_identity_to_uuid,
    memory_manager,
    session_user,
)
from caller_memory.recall.block import BLOCK_END, BLOCK_PREAMBLE, BLOCK_START
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeAudioInput,
    FakeScriptedLLM,
    FakeStoreOutage,
    FakeSTT,
    chat_texts,
)
from caller_memory.types import Candidate
from caller_memory.voice.agent import KNOWN_HEADING
from caller_memory.voice.greeting import GREET_BY_NAME, RETURNING_GREETING
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
QUESTION = "what's my favourite colour?"
REPLY_TIMEOUT = 10.0
RECALLED = f"{BLOCK_START}\n{BLOCK_PREAMBLE}\n"  # how a block recall added in the turn starts
KNOWN = f"{BLOCK_START}\n{KNOWN_HEADING}\n"  # the block the session starts with


# -- helpers ---------------------------------------------------------------------------------


async def close(call: CallerSession) -> None:
    audio = call.session.input.audio
    if isinstance(audio, FakeAudioInput):
        audio.close()
    assert await call.aclose() is True
    await call.session.aclose()


async def say(session: AgentSession[Any], fake_stt: FakeSTT, text: str) -> llm.ChatMessage:
    """The caller says `text`; returns the agent's reply once it is in the conversation."""
    replied = reply_arrived(session, f"reply: {text}")
    fake_stt.say(text)
    return await asyncio.wait_for(replied, REPLY_TIMEOUT)


def request_for(fake_llm: FakeScriptedLLM, user_text: str) -> llm.ChatContext:
    """The chat context the LLM was given to answer `user_text`."""
    found = [r for r in fake_llm.requests if chat_texts(r, "user")[-1:] == [user_text]]
    assert len(found) == 1, f"expected one request answering {user_text!r}, got {len(found)}"
    return found[0]


def blocks(chat_ctx: llm.ChatContext, start: str) -> list[str]:
    # the known memories are part of the agent's context (an assistant message); recall's
    # block is added to one request only, as a system message before the caller's message
    role = "system" if start == RECALLED else "assistant"
    return [t for t in chat_texts(chat_ctx, role) if t.startswith(start)]


def user_message(chat_ctx: llm.ChatContext, text: str) -> llm.ChatMessage:
    [message] = [
        m
        for m in chat_ctx.items
        if isinstance(m, llm.ChatMessage) and m.role == "user" and m.text_content == text
    ]
    return message


Entry = tuple[str, str, str | None, str | None]


def entry(item: llm.ChatItem) -> Entry:
    """An item as the model reads it (the framework may add cache markers to the request)."""
    if isinstance(item, llm.ChatMessage):
        return (item.id, item.type, item.role, item.text_content)
    return (item.id, item.type, None, None)


async def remember_earlier(identity: str, facts: dict[tuple[str, str], str]) -> None:
    """What the caller told the companion in an earlier call (profile greeted already)."""
    with session_user(identity) as user_id:
        for (category, key), value in facts.items():
            await memory_manager.astore(category, key, value)
        await default_memory().store.complete_first_login(user_id)


async def spool_settled() -> None:
    """Wait until this process's spool wrote what it holds (a session start replays it, and
    captures queue behind a replay so that an older value never overwrites a newer one)."""
    spool = default_memory().spool
    spool.schedule_replay(first_delay=0.01)
    await eventually(lambda: not spool.has_pending, "the spool to be replayed")


def recall_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "caller_memory.recall"]


# -- a fact said in one call is in the next call of the same caller, and only there ---------


async def test_a_fact_from_one_call_reaches_the_next_call_of_that_caller_only(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    # this test is about whose memories reach the LLM; the budget has its own test below
    install_memory(installed_sqlite_store, recall_budget_ms=2000)
    first_call = {
        ALICE: ["My name is Marisol", "my favourite colour is teal"],
        BOB: ["My name is Thaddeus", "my favourite colour is orange"],
    }

    async def call_one(identity: str) -> None:
        session = text_session(FakeScriptedLLM())
        call = await start_in_own_task(session, identity)
        for text in first_call[identity]:
            await session.run(user_input=text)
        await close(call)  # the caller hangs up: their memories are flushed

    await asyncio.gather(*(asyncio.create_task(call_one(i)) for i in first_call))
    await spool_settled()

    def greeted_once() -> bool:  # recorded in the background once the greeting was given
        profiles = sqlite_rows(installed_sqlite_store.path)[0]
        return sorted((p["original_identity"], p["is_first_login"]) for p in profiles) == [
            (ALICE, 0),
            (BOB, 0),
        ]

    await eventually(greeted_once, "both first greetings to be recorded")
    values = {
        (m["user_id"], m["key"]): m["value"] for m in sqlite_rows(installed_sqlite_store.path)[1]
    }
    assert values[(livekit_identity_to_uuid(ALICE), "favorite_color")] == "teal"
    assert values[(livekit_identity_to_uuid(BOB), "favorite_color")] == "orange"

    # both call again, at the same time, and both ask the same question out loud
    async def call_two(identity: str) -> FakeScriptedLLM:
        fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
        call = await start_in_own_task(spoken_session(fake_llm, fake_stt), identity)
        try:
            await eventually(lambda: len(fake_llm.requests) >= 1, "the greeting")
            await say(call.session, fake_stt, QUESTION)
            await say(call.session, fake_stt, "hello there")
        finally:
            await close(call)
        return fake_llm

    alice_llm, bob_llm = await asyncio.gather(
        asyncio.create_task(call_two(ALICE)), asyncio.create_task(call_two(BOB))
    )

    for fake_llm, mine, name, theirs in (
        (alice_llm, "teal", "Marisol", ("orange", "Thaddeus")),
        (bob_llm, "orange", "Thaddeus", ("teal", "Marisol")),
    ):
        # the first request (the greeting) starts with what the caller said last time,
        # and greets them by the name they gave
        greeting = fake_llm.requests[0]
        [known] = blocks(greeting, KNOWN)
        assert f'"{mine}"' in known and f'"{name}"' in known
        assert known.endswith(BLOCK_END)
        by_name = GREET_BY_NAME.format(name=f'"{name}"')
        assert f"{RETURNING_GREETING} {by_name}" in chat_texts(greeting, "system")

        # the spoken question: the caller's own answer is in that reply's context, once: in
        # the block of what was known at the start, which per-turn recall does not repeat
        asked = request_for(fake_llm, QUESTION)
        [known_then] = blocks(asked, KNOWN)
        assert f'favorite_color: "{mine}"' in known_then
        assert blocks(asked, RECALLED) == []
        assert "\n".join(chat_texts(asked)).count(f'"{mine}"') == 1

        # and nothing of the other caller, anywhere in anything this caller's LLM was sent
        everything = "\n".join(t for request in fake_llm.requests for t in chat_texts(request))
        for word in theirs:
            assert word not in everything


# -- the budget: a slow or failing store costs no reply --------------------------------------

SLOW_SEARCH_S = 2.0


class FakeSlowSearch:
    """A store wrapper whose memory search takes `SLOW_SEARCH_S` once `slow` is set."""

    def __init__(self, inner: SQLiteMemoryStore) -> None:
        self.inner = inner
        self.name = f"slow-search({inner.name})"
        self.slow = False
        self.searches_started = 0
        self.searches_cancelled = 0

    async def search_candidates(
        self, user_id: str, query: str, limit: int, **by_meaning: Any
    ) -> list[Candidate]:
        if self.slow:
            self.searches_started += 1
            try:
                await asyncio.sleep(SLOW_SEARCH_S)
            except asyncio.CancelledError:
                self.searches_cancelled += 1
                raise
        return await self.inner.search_candidates(user_id, query, limit, **by_meaning)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_slow_store_does_not_delay_the_reply(
    installed_sqlite_store: SQLiteMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = FakeSlowSearch(installed_sqlite_store)
    install_memory(slow, recall_budget_ms=30)  # type: ignore[arg-type]
    await remember_earlier(ALICE, {("PREFERENCE", "favorite_color"): "teal"})
    fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
    call = await start_in_own_task(spoken_session(fake_llm, fake_stt), ALICE)
    try:
        await eventually(lambda: len(fake_llm.requests) >= 1, "the greeting")
        assert blocks(fake_llm.requests[0], KNOWN)  # loaded at start, before the store slowed
        slow.slow = True
        with caplog.at_level(logging.INFO):
            reply = await say(call.session, fake_stt, QUESTION)
    finally:
        await close(call)

    assert reply.text_content == f"reply: {QUESTION}"
    asked = request_for(fake_llm, QUESTION)
    assert blocks(asked, RECALLED) == []  # recall was skipped, not waited for
    assert slow.searches_started == 1 and slow.searches_cancelled == 1
    # the hook (recall + capture) took the budget, not the store's time
    delay = user_message(asked, QUESTION).metrics["on_user_turn_completed_delay"]
    assert delay < SLOW_SEARCH_S
    [skipped] = [r for r in recall_log(caplog) if "recall skipped" in r.getMessage()]
    assert skipped.levelno == logging.WARNING
    assert "30 ms budget ran out" in skipped.getMessage()


async def test_a_failing_store_costs_no_reply_and_is_logged_once(
    installed_sqlite_store: SQLiteMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the store's searches fail from the first question on (the call starts with it up)
    outage = FakeStoreOutage(installed_sqlite_store, failing=frozenset({"search_candidates"}))
    outage.down = False
    install_memory(outage, recall_budget_ms=2000)  # type: ignore[arg-type]  # a fresh outage
    await remember_earlier(ALICE, {("PREFERENCE", "favorite_color"): "teal"})
    fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
    call = await start_in_own_task(spoken_session(fake_llm, fake_stt), ALICE)
    questions = [QUESTION, "what's my favourite colour again?"]
    try:
        await eventually(lambda: len(fake_llm.requests) >= 1, "the greeting")
        outage.down = True
        with caplog.at_level(logging.INFO):
            replies = [await say(call.session, fake_stt, q) for q in questions]
    finally:
        await close(call)

    assert [r.text_content for r in replies] == [f"reply: {q}" for q in questions]
    for question in questions:
        assert blocks(request_for(fake_llm, question), RECALLED) == []
    assert outage.refused == ["search_candidates", "search_candidates"]
    errors = outage_errors(caplog)
    assert len(errors) == 1  # once for the outage, not once a turn
    assert "recall" in errors[0].getMessage()
    assert "fake outage: search_candidates refused" in errors[0].getMessage()
    # the hook handled it: livekit never saw an exception from on_user_turn_completed
    assert not [r for r in caplog.records if "on_user_turn_completed" in r.getMessage()]


# -- nothing relevant: the context is left as it is ------------------------------------------


async def test_a_turn_with_nothing_relevant_leaves_the_context_unchanged(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    watched = FakeStoreOutage(installed_sqlite_store)  # fails nothing; records every call
    install_memory(watched, recall_budget_ms=2000)  # type: ignore[arg-type]
    # More than the session starts knowing (its 8 most important memories): the favourite
    # colour is not among those, so only recall can bring it into the conversation.
    await remember_earlier(
        ALICE,
        {
            ("PREFERENCE", "favorite_color"): "teal",
            ("PRESENTATION", "name"): "Marisol",
            **MORE_IMPORTANT_FACTS,
        },
    )
    fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
    call = await start_in_own_task(spoken_session(fake_llm, fake_stt), ALICE)
    assert "teal" not in [m.value for m in call.known_memories]

    # what the hook was given, as it was before and after the hook ran
    seen: dict[str, tuple[list[Entry], list[Entry]]] = {}
    agent = call.session.current_agent
    real_hook = agent.on_user_turn_completed

    def snapshot(chat_ctx: llm.ChatContext) -> list[Entry]:
        return [entry(item) for item in chat_ctx.items]

    async def spy(turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        before = snapshot(turn_ctx)
        await real_hook(turn_ctx, new_message)
        seen[new_message.text_content or ""] = (before, snapshot(turn_ctx))

    agent.on_user_turn_completed = spy  # type: ignore[method-assign]
    unrelated = ["hello there", "what do you think about quantum physics?"]
    try:
        await eventually(lambda: len(fake_llm.requests) >= 1, "the greeting")
        searches_before = watched.calls.count("search_candidates")
        for text in [*unrelated, QUESTION]:
            await say(call.session, fake_stt, text)
    finally:
        await close(call)

    # recall did search the store for the topic (a greeting has nothing to search for)
    assert watched.calls.count("search_candidates") - searches_before == 2
    for text in unrelated:
        before, after = seen[text]
        assert after == before  # the hook added nothing
        asked = request_for(fake_llm, text)
        # what the LLM got is exactly the conversation so far and the caller's message
        message = user_message(asked, text)
        assert [entry(i) for i in asked.items if i.id != message.id] == before
        assert blocks(asked, RECALLED) == []
    # the same session, asked something it does know: the hook still adds nothing (a
    # preemptive draft stays valid); the block is in that turn's request only, just before
    # the caller's message, and not in the agent's context the next turns start from
    before, after = seen[QUESTION]
    assert after == before
    asked = request_for(fake_llm, QUESTION)
    message = user_message(asked, QUESTION)
    position = [i.id for i in asked.items].index(message.id)
    block = asked.items[position - 1]
    assert isinstance(block, llm.ChatMessage) and block.role == "system"
    assert (block.text_content or "").startswith(RECALLED)
    assert [entry(i) for i in asked.items if i.id not in {message.id, block.id}] == before
    assert not [t for t in chat_texts(agent.chat_ctx) if t.startswith(RECALLED)]
