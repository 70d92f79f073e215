"""The caller's control over their memory, by voice: the agent's function tools.

The tools (`caller_memory.voice.tools`) are called as livekit calls them, with the `RunContext`
of a real `AgentSession` that the caller was attached to (`memory.attach`, in a task of its own
as the job entrypoint attaches them), against the real SQLite store, and every call is made
from a task with an EMPTY context, as tool calls reached from room callbacks can be: the tools
must find the caller through the session and do their memory work in its own context. Two
tests drive the tools through a running `AgentSession` with an LLM that emits the tool calls.
The outcome is always read back from the store file row by row.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from livekit.agents import RunContext, ToolError, llm
from livekit.agents.voice.speech_handle import SpeechHandle

import caller_memory.voice.forget
from caller_memory import (
    CallerSession,
    WriteOutcome,
    caller_of,
    default_memory,
    livekit_identity_to_uuid,
    memory_manager,
    session_user,
)
from caller_memory.capture.rule_based import extract_memories
from caller_memory.recall.recall import recall
from caller_memory.spool import read_spool_records
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeLLM, FakeScriptedLLM, FakeStoreOutage
from caller_memory.voice.caller import STORE_DOWN_MESSAGE
from caller_memory.voice.tools import (
    forget_everything_about_me,
    forget_memory,
    remember_this,
    what_do_you_know_about_me,
)
from tests.session_harness import eventually, start_in_own_task, text_session
from tests.support import install_memory, sqlite_rows

T = TypeVar("T")

ALICE = "alice@example.com"
BOB = "bob@example.com"
ALL_OPERATIONS = frozenset(
    {
        "ensure_profile",
        "get_profile",
        "complete_first_login",
        "upsert_memory",
        "get_memory",
        "search_memories",
        "search_candidates",
        "set_embedding",
        "unembedded",
        "list_memories",
        "delete_memory",
        "delete_user",
    }
)


# -- helpers ---------------------------------------------------------------------------------


async def tool_context_for(identity: str) -> RunContext:
    """What livekit hands a tool the model calls in `identity`'s session: the `RunContext` of
    a real `AgentSession` the caller was attached to, in a task of its own as the job
    entrypoint attaches them (the tools need the attached session, not a running one)."""

    async def attach() -> RunContext:
        session = text_session(FakeScriptedLLM())
        await default_memory().attach(session, identity=identity)
        return RunContext(
            session=session,
            speech_handle=SpeechHandle.create(),
            function_call=llm.FunctionCall(call_id="call-1", name="tool", arguments="{}"),
        )

    return await asyncio.create_task(attach())


def caller(context: RunContext) -> CallerSession:
    """The caller attached to the tool context's session."""
    attached = caller_of(context.session)
    assert attached is not None
    return attached


async def background_replays_done() -> None:
    """Wait for the spool replays running in the background (every `attach` starts one; on an
    empty spool it ends after one pass), so that a test that watches the spool knows nobody
    else is replaying it; the next spooled capture starts a new one, after its own delay."""
    replays = [task for task in asyncio.all_tasks() if task.get_name() == "memory-spool-replay"]
    await asyncio.gather(*replays)


async def from_empty_context(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` in a task whose context has no session user at all."""
    return await asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


async def remember_earlier(identity: str, facts: dict[tuple[str, str], str]) -> None:
    with session_user(identity):
        for (category, key), value in facts.items():
            await memory_manager.astore(category, key, value)


class Rows(dict[tuple[str, str], str]):
    """One caller's memory rows as stored, (category, key) -> value; `utterances` holds the
    keys of the rows of kind utterance (the caller's own words)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(((m["category"], m["key"]), m["value"]) for m in rows)
        self.utterances = {(m["category"], m["key"]) for m in rows if m["kind"] == "utterance"}


def rows_of(path: Path, identity: str) -> Rows:
    user_id = livekit_identity_to_uuid(identity)
    return Rows([m for m in sqlite_rows(path)[1] if m["user_id"] == user_id])


def facts(rows: Rows) -> dict[tuple[str, str], str]:
    return {k: v for k, v in rows.items() if k not in rows.utterances}


def utterances(rows: Rows) -> list[str]:
    return sorted(v for k, v in rows.items() if k in rows.utterances)


def mentions(rows: dict[tuple[str, str], str], word: str) -> bool:
    return any(word in value for value in rows.values())


def spooled_user_ids() -> list[str]:
    directory = default_memory().settings.spool_dir
    if not directory.is_dir():
        return []
    return [
        record.user_id
        for path in sorted(directory.glob("*.jsonl"))
        for record in read_spool_records(path)
    ]


_turns = itertools.count(1)


def caller_confirms(context: RunContext, text: str = "yes") -> None:
    """The caller's next message reaches the session (as `attach` reports every one)."""
    caller(context).caller_said(text, message_id=f"caller-turn-{next(_turns)}")


BOB_FACTS = {
    ("PREFERENCE", "favorite_color"): "orange",
    ("RELATIONSHIP", "sister_name"): "Bea",
    ("PRESENTATION", "name"): "Thaddeus",
}


# -- remember_this ---------------------------------------------------------------------------


async def test_remember_this_stores_under_the_caller_even_from_an_empty_context(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    alice, bob = await tool_context_for(ALICE), await tool_context_for(BOB)

    said = await from_empty_context(remember_this(alice, "my favourite colour is teal"))
    assert "Saved" in said
    await from_empty_context(remember_this(bob, "my sister's name is Bea"))

    path = installed_sqlite_store.path
    assert facts(rows_of(path, ALICE)) == {("PREFERENCE", "favorite_color"): "teal"}
    assert utterances(rows_of(path, ALICE)) == ["my favourite colour is teal"]
    assert facts(rows_of(path, BOB)) == {("RELATIONSHIP", "sister_name"): "Bea"}
    assert utterances(rows_of(path, BOB)) == ["my sister's name is Bea"]
    users = {m["user_id"] for m in sqlite_rows(path)[1]}
    assert users == {livekit_identity_to_uuid(ALICE), livekit_identity_to_uuid(BOB)}

    # saying it again replaces the fact, it does not pile up a second answer
    await from_empty_context(remember_this(alice, "my favourite colour is red"))
    assert facts(rows_of(path, ALICE)) == {("PREFERENCE", "favorite_color"): "red"}


async def test_remember_this_with_nothing_to_keep_asks_what_to_keep(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    alice = await tool_context_for(ALICE)
    with pytest.raises(ToolError, match="ask what exactly to keep"):
        await from_empty_context(remember_this(alice, "ok thanks"))
    assert sqlite_rows(installed_sqlite_store.path)[1] == []


# -- what_do_you_know_about_me ---------------------------------------------------------------


async def test_what_do_you_know_reads_back_the_callers_facts_only(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await remember_earlier(
        ALICE,
        {
            ("PREFERENCE", "favorite_color"): "teal",
            ("PRESENTATION", "name"): "Marisol",
            ("RELATIONSHIP", "dog_name"): "Biscuit",
        },
    )
    await remember_earlier(BOB, BOB_FACTS)
    alice, carol = await tool_context_for(ALICE), await tool_context_for("carol@example.com")

    known = await from_empty_context(what_do_you_know_about_me(alice))
    for value in ("teal", "Marisol", "Biscuit"):
        assert f'"{value}"' in known
    for key in ("favorite_color", "name", "dog_name"):  # keys, to forget an item later
        assert f"/ {key}:" in known
    for value in BOB_FACTS.values():
        assert value not in known
    assert "<caller_memories>" in known and "</caller_memories>" in known

    nothing = await from_empty_context(what_do_you_know_about_me(carol))
    assert "do not remember anything" in nothing
    assert "<caller_memories>" not in nothing


# -- forget_memory ---------------------------------------------------------------------------


async def test_forget_memory_by_key_forgets_that_fact_for_this_caller_only(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    alice, bob = await tool_context_for(ALICE), await tool_context_for(BOB)
    await from_empty_context(remember_this(alice, "my favourite colour is teal"))
    await from_empty_context(remember_this(alice, "my sister's name is Ana"))
    await from_empty_context(remember_this(bob, "my favourite colour is orange"))
    path = installed_sqlite_store.path
    bob_before = rows_of(path, BOB)

    result = await from_empty_context(forget_memory(alice, "favorite_color"))
    assert "favorite_color (teal)" in result

    assert facts(rows_of(path, ALICE)) == {("RELATIONSHIP", "sister_name"): "Ana"}
    # nor is it kept in the caller's own words: asked again, nothing says teal
    assert not mentions(rows_of(path, ALICE), "teal")
    memory = default_memory()
    with session_user(ALICE):
        found = await recall(
            "what's my favourite colour?",
            manager=memory.manager,
            budget_s=2.0,
            outage=memory.outage,
        )
        assert found == []
    assert rows_of(path, BOB) == bob_before


async def test_forget_memory_by_description(installed_sqlite_store: SQLiteMemoryStore) -> None:
    alice, bob = await tool_context_for(ALICE), await tool_context_for(BOB)
    await remember_earlier(
        ALICE,
        {
            ("PREFERENCE", "favorite_color"): "teal",
            ("RELATIONSHIP", "sister_name"): "Ana",
            ("RELATIONSHIP", "dog_name"): "Biscuit",
        },
    )
    await remember_earlier(BOB, BOB_FACTS)
    await from_empty_context(remember_this(alice, "my favourite colour is teal"))
    path = installed_sqlite_store.path

    result = await from_empty_context(forget_memory(alice, "my sister"))
    assert "sister_name (Ana)" in result
    assert ("RELATIONSHIP", "sister_name") not in rows_of(path, ALICE)

    result = await from_empty_context(forget_memory(alice, "my favourite colour"))
    assert "teal" in result
    assert facts(rows_of(path, ALICE)) == {("RELATIONSHIP", "dog_name"): "Biscuit"}
    assert not mentions(rows_of(path, ALICE), "teal")
    assert facts(rows_of(path, BOB)) == BOB_FACTS  # the same keys of another caller stay
    # forgetting is per caller even when both callers use the same words
    bob_said = await from_empty_context(what_do_you_know_about_me(bob))
    assert '"orange"' in bob_said and '"Bea"' in bob_said


async def test_forget_memory_that_matches_nothing_says_what_to_do(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await remember_earlier(BOB, BOB_FACTS)
    alice = await tool_context_for(ALICE)
    await remember_earlier(ALICE, {("PREFERENCE", "favorite_color"): "teal"})
    for what in ("my sister", "quantum physics"):  # bob's key, and a topic never mentioned
        with pytest.raises(ToolError) as raised:
            await from_empty_context(forget_memory(alice, what))
        message = str(raised.value)
        assert "Nothing matched" in message
        assert "what_do_you_know_about_me" in message  # the next step, spelled out
    assert facts(rows_of(installed_sqlite_store.path, ALICE)) == {
        ("PREFERENCE", "favorite_color"): "teal"
    }
    assert facts(rows_of(installed_sqlite_store.path, BOB)) == BOB_FACTS


# -- the store is down -----------------------------------------------------------------------


async def test_every_tool_says_the_store_is_down_in_words_the_agent_can_act_on(
    installed_sqlite_store: SQLiteMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = FakeStoreOutage(installed_sqlite_store, failing=ALL_OPERATIONS)
    outage.down = False  # up while the caller's earlier call and this one's start happen
    install_memory(outage)  # type: ignore[arg-type]  # a fresh outage log: logged as new
    await remember_earlier(ALICE, {("PREFERENCE", "favorite_color"): "teal"})
    alice = await tool_context_for(ALICE)
    outage.down = True

    calls: list[Coroutine[Any, Any, str]] = [
        remember_this(alice, "my sister's name is Ana"),
        what_do_you_know_about_me(alice),
        forget_memory(alice, "favorite_color"),
    ]
    with caplog.at_level(logging.WARNING, logger="caller_memory.voice"):
        for call in calls:
            with pytest.raises(ToolError) as raised:
                await from_empty_context(call)
            assert str(raised.value) == STORE_DOWN_MESSAGE
            assert "offer to try again later" in str(raised.value)
        asked = await from_empty_context(forget_everything_about_me(alice, False))
        assert "Not deleted yet" in asked
        caller_confirms(alice)
        with pytest.raises(ToolError, match="unavailable"):
            await from_empty_context(forget_everything_about_me(alice, True))
    assert {"upsert_memory", "search_candidates", "delete_user"} <= set(outage.refused)
    # the store error is logged for the operator, not handed to the caller
    assert any("fake outage" in r.getMessage() for r in caplog.records)

    outage.down = False
    assert rows_of(installed_sqlite_store.path, ALICE) == {("PREFERENCE", "favorite_color"): "teal"}


# -- forget_everything_about_me --------------------------------------------------------------


async def test_forget_everything_asks_first_then_removes_everything_of_this_caller_only(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    outage = FakeStoreOutage(installed_sqlite_store, failing=frozenset({"upsert_memory"}))
    outage.down = False  # up for the callers' earlier calls and the start of these
    install_memory(outage)  # type: ignore[arg-type]  # a fresh outage log: logged as new
    path = installed_sqlite_store.path
    await remember_earlier(
        ALICE, {("PREFERENCE", "favorite_color"): "teal", ("PRESENTATION", "name"): "Marisol"}
    )
    await remember_earlier(BOB, BOB_FACTS)
    alice, bob = await tool_context_for(ALICE), await tool_context_for(BOB)
    await background_replays_done()

    # while the store refused writes, both callers said things: they wait in the spool, and
    # the replayer has already claimed them once (and failed) before the caller asks
    outage.down = True
    caller(alice).writer.capture("I collect old maps of Porto")
    caller(bob).writer.capture("I collect vintage radios")
    assert await caller(alice).writer.flush() and await caller(bob).writer.flush()
    spool = default_memory().spool
    assert await spool.replay() == 0
    assert sorted(set(spooled_user_ids())) == sorted(
        {livekit_identity_to_uuid(ALICE), livekit_identity_to_uuid(BOB)}
    )
    outage.down = False
    bob_before = rows_of(path, BOB)

    # the first call only asks the caller to confirm; nothing is deleted, even when the
    # model passes confirmed=true before having asked
    asked = await from_empty_context(forget_everything_about_me(alice, False))
    assert "Not deleted yet" in asked and "confirm" in asked
    asked = await from_empty_context(forget_everything_about_me(bob, True))
    assert "Not deleted yet" in asked
    assert facts(rows_of(path, ALICE)) == {
        ("PREFERENCE", "favorite_color"): "teal",
        ("PRESENTATION", "name"): "Marisol",
    }
    assert facts(rows_of(path, BOB)) == BOB_FACTS
    assert livekit_identity_to_uuid(ALICE) in spooled_user_ids()

    # the caller confirmed out loud, in a later turn
    caller_confirms(alice)
    done = await from_empty_context(forget_everything_about_me(alice, True))
    assert "Deleted" in done and "2 memories" in done

    assert rows_of(path, ALICE) == {}
    profiles, _ = sqlite_rows(path)
    assert livekit_identity_to_uuid(ALICE) not in {p["id"] for p in profiles}
    assert livekit_identity_to_uuid(BOB) in {p["id"] for p in profiles}
    assert livekit_identity_to_uuid(ALICE) not in spooled_user_ids()
    assert livekit_identity_to_uuid(BOB) in spooled_user_ids()

    # the caller keeps talking in the same session: nothing more is captured for them
    caller(alice).writer.capture("my favourite colour is red", message_id="after-forget")
    assert await caller(alice).writer.flush()
    # and what was spooled before is replayed for the other caller only
    await spool.replay()
    assert rows_of(path, ALICE) == {}
    assert livekit_identity_to_uuid(ALICE) not in {p["id"] for p in sqlite_rows(path)[0]}
    assert utterances(rows_of(path, BOB)) == ["I collect vintage radios"]
    assert facts(rows_of(path, BOB)) == facts(bob_before) == BOB_FACTS
    assert spooled_user_ids() == []


class FakeSlowWrites:
    """A store wrapper whose memory writes take `delay` seconds (a slow network)."""

    def __init__(self, inner: SQLiteMemoryStore, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.name = f"slow({inner.name})"
        self.writes_started = 0

    async def upsert_memory(
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        identity: str | None = None,
        **write_times: Any,
    ) -> WriteOutcome:
        self.writes_started += 1
        await asyncio.sleep(self.delay)
        return await self.inner.upsert_memory(
            user_id, category, key, value, identity, **write_times
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_write_in_flight_when_the_caller_asks_to_be_forgotten_is_not_left_behind(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    slow = FakeSlowWrites(installed_sqlite_store, delay=0.2)
    install_memory(slow)  # type: ignore[arg-type]
    alice = await tool_context_for(ALICE)
    caller(alice).writer.capture("my favourite colour is teal")
    await eventually(lambda: slow.writes_started > 0, "the background writer to be writing")

    await from_empty_context(forget_everything_about_me(alice, False))
    caller_confirms(alice)
    await from_empty_context(forget_everything_about_me(alice, True))
    await asyncio.sleep(0.3)  # well past the slow write
    assert await caller(alice).writer.flush()
    assert rows_of(installed_sqlite_store.path, ALICE) == {}
    assert spooled_user_ids() == []


# -- a tool call made by the model, through a real AgentSession ------------------------------


class FakeToolCallingLLM(FakeLLM):
    """An LLM that, for a user message starting with "please remember", calls remember_this
    with the rest of the message, then answers "tool said: ..." once the tool result is in."""

    model_name = "fake-tool-calling"

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        last = chat_ctx.items[-1] if chat_ctx.items else None
        if isinstance(last, llm.FunctionCallOutput):
            return [llm.ChoiceDelta(role="assistant", content=f"tool said: {last.output}")]
        if (
            isinstance(last, llm.ChatMessage)
            and last.role == "user"
            and (last.text_content or "").startswith("please remember ")
        ):
            fact = (last.text_content or "")[len("please remember ") :]
            call = llm.FunctionToolCall(
                name="remember_this", arguments=json.dumps({"fact": fact}), call_id="call-1"
            )
            return [llm.ChoiceDelta(role="assistant", tool_calls=[call])]
        return [llm.ChoiceDelta(role="assistant", content="ok")]


async def test_a_tool_call_from_the_model_stores_under_the_sessions_caller(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    fake_llm = FakeToolCallingLLM()
    session = text_session(fake_llm)
    call = await start_in_own_task(session, ALICE)
    try:
        result = await session.run(user_input="please remember my dog's name is Biscuit")
        result.expect.contains_function_call(name="remember_this")
        outputs = [
            e.item.output
            for e in result.events
            if isinstance(e.item, llm.FunctionCallOutput)  # type: ignore[union-attr]
        ]
        assert outputs and "Saved" in outputs[0]
    finally:
        assert await call.aclose()
        await session.aclose()
    # capture may queue behind the replay every session start runs
    spool = default_memory().spool
    spool.schedule_replay(first_delay=0.01)
    await eventually(lambda: not spool.has_pending, "the spool to be replayed")
    alice_rows = rows_of(installed_sqlite_store.path, ALICE)
    assert facts(alice_rows) == {("RELATIONSHIP", "dog_name"): "Biscuit"}
    assert {m["user_id"] for m in sqlite_rows(installed_sqlite_store.path)[1]} == {
        livekit_identity_to_uuid(ALICE)
    }


# -- forgetting one fact among many memories -------------------------------------------------


class StoreCallRecorder:
    """Not a fake: the real store, with the name of every operation asked of it recorded."""

    def __init__(self, inner: SQLiteMemoryStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self.inner, name)
        if not callable(operation):
            return operation

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return operation(*args, **kwargs)

        return recorded


async def said_earlier(identity: str, texts: list[str]) -> None:
    """What the caller said in earlier calls, stored as capture stores it (utterances and
    the facts they state)."""
    with session_user(identity):
        for text in texts:
            for memory in extract_memories(text):
                await memory_manager.astore(
                    memory.category, memory.key, memory.value, kind=memory.kind
                )


async def test_forgetting_one_fact_among_many_memories_forgets_what_states_it_by_search(
    installed_sqlite_store: SQLiteMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = StoreCallRecorder(installed_sqlite_store)
    install_memory(recorder)  # type: ignore[arg-type]
    stating = [
        "my favourite colour is green",  # an older value of the same fact
        "My favorite color is teal, by the way",
        "my favourite colour is teal",
    ]
    about_the_band = [f"my favourite band number {i} plays on fridays" for i in range(150)]
    unrelated = [f"I walked along river {i} today and counted {i % 7} herons" for i in range(250)]
    kept = ["I painted the boat teal last summer", *about_the_band, *unrelated]
    await said_earlier(ALICE, [*stating[:1], *kept, *stating[1:]])
    path = installed_sqlite_store.path
    assert facts(rows_of(path, ALICE))[("PREFERENCE", "favorite_color")] == "teal"
    before = rows_of(path, ALICE)
    alice = await tool_context_for(ALICE)
    recorder.calls.clear()  # what forgetting asks of the store, from here on
    extraction_threads: set[int] = set()

    def extract_and_note_thread(text: str) -> list[Any]:
        extraction_threads.add(threading.get_ident())
        return extract_memories(text)

    monkeypatch.setattr(caller_memory.voice.forget, "extract_memories", extract_and_note_thread)

    result = await from_empty_context(forget_memory(alice, "favorite_color"))

    assert "favorite_color (teal)" in result
    after = rows_of(path, ALICE)
    assert ("PREFERENCE", "favorite_color") not in after
    assert sorted(set(utterances(before)) - set(utterances(after))) == sorted(stating)
    assert utterances(after) == sorted(kept)  # everything else stays
    # found through the store's indexed search, never by listing everything
    assert "list_memories" not in recorder.calls
    assert "search_candidates" in recorder.calls
    # and the capture rules that tell what an utterance states ran off the event loop
    assert extraction_threads and threading.get_ident() not in extraction_threads


# -- "forget everything" needs the caller's confirmation in a later turn ---------------------


FORGET_EVERYTHING = "Forget everything about me."
CONFIRM = "Yes, I confirm: delete everything."


class FakeEagerForgetLLM(FakeLLM):
    """An LLM that, asked to forget everything, calls forget_everything_about_me with
    confirmed=true TWICE in one reply (the second call "confirming" the first); told "yes",
    it calls it once more with confirmed=true. After tool outputs it reads them back."""

    model_name = "fake-eager-forget"

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        last = chat_ctx.items[-1] if chat_ctx.items else None
        if isinstance(last, llm.FunctionCallOutput):
            return [llm.ChoiceDelta(role="assistant", content=f"tool said: {last.output}")]
        said = last.text_content if isinstance(last, llm.ChatMessage) else None
        calls = {FORGET_EVERYTHING: ["call-1", "call-2"], CONFIRM: ["call-3"]}.get(said or "")
        if not calls:
            return [llm.ChoiceDelta(role="assistant", content="ok")]
        arguments = json.dumps({"confirmed": True})
        return [
            llm.ChoiceDelta(
                role="assistant",
                tool_calls=[
                    llm.FunctionToolCall(
                        name="forget_everything_about_me", arguments=arguments, call_id=call_id
                    )
                    for call_id in calls
                ],
            )
        ]


def tool_outputs(result: Any) -> list[str]:
    return [
        e.item.output
        for e in result.events
        if isinstance(getattr(e, "item", None), llm.FunctionCallOutput)
    ]


async def test_one_reply_cannot_confirm_its_own_forget_everything(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await remember_earlier(
        ALICE, {("PREFERENCE", "favorite_color"): "teal", ("PRESENTATION", "name"): "Marisol"}
    )
    path = installed_sqlite_store.path
    session = text_session(FakeEagerForgetLLM())
    call = await start_in_own_task(session, ALICE)
    try:
        asked = await session.run(user_input=FORGET_EVERYTHING)
        outputs = tool_outputs(asked)
        assert len(outputs) == 2
        assert all("Not deleted yet" in output for output in outputs)
        assert await call.writer.flush()
        assert facts(rows_of(path, ALICE)) == {
            ("PREFERENCE", "favorite_color"): "teal",
            ("PRESENTATION", "name"): "Marisol",
        }
        assert livekit_identity_to_uuid(ALICE) in {p["id"] for p in sqlite_rows(path)[0]}

        # the caller confirms in their next turn
        confirmed = await session.run(user_input=CONFIRM)
        assert [o for o in tool_outputs(confirmed) if "Deleted" in o]
        assert await call.writer.flush()
        assert rows_of(path, ALICE) == {}
        assert livekit_identity_to_uuid(ALICE) not in {p["id"] for p in sqlite_rows(path)[0]}
    finally:
        await call.aclose()
        await session.aclose()
