"""An erasure during a live session sticks in the session too.

The caller is in a call, their earlier memories in the agent's context, when an operator
deletes them (`memory_manager.aforget_everything()` run as that caller from outside the
session, as `memory_admin delete` does from another process). From the caller's next turn on,
no LLM request holds any of the deleted facts, the agent recalls and keeps nothing, and
nothing of the caller is written again: not what they say next, not a profile.

Real `AgentSession` (typed turns, as a chat client sends them) and real SQLite store; the LLM
is the scripted fake of tests/fakes.py, which records every request.
"""

from __future__ import annotations

from typing import Any

import pytest

from companion import without_memories
from identity import livekit_identity_to_uuid
from memory_manager import memory_manager
from memory_recall import BLOCK_START
from session_context import session_user
from storage.sqlite_store import SQLiteMemoryStore
from tests.fakes import FakeScriptedLLM, chat_texts, sqlite_rows
from tests.session_harness import eventually, start_in_own_task, text_session

ALICE = "alice@example.com"
EARLIER = {
    ("PRESENTATION", "name"): "Marisol",
    ("RELATIONSHIP", "dog_name"): "Biscuit",
    ("PREFERENCE", "favorite_color"): "teal",
}


def request_text(request: Any) -> str:
    return "\n".join(chat_texts(request))


async def test_an_operator_delete_during_a_call_reaches_the_agent_and_sticks(
    installed_sqlite_store: SQLiteMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent looks at the store before each turn's LLM request within recall's budget
    # (50 ms in production); this test is about what it does with the answer, not speed.
    monkeypatch.setenv("MEMORY_RECALL_BUDGET_MS", "2000")
    with session_user(ALICE) as user_uuid:
        for (category, key), value in EARLIER.items():
            await memory_manager.astore(category, key, value)
    await installed_sqlite_store.complete_first_login(user_uuid)
    fake_llm = FakeScriptedLLM()
    session = text_session(fake_llm)
    call = await start_in_own_task(session, ALICE)
    try:
        await session.run(user_input="I love sailing at dawn")
        before = request_text(fake_llm.requests[-1])
        assert all(value in before for value in EARLIER.values())  # known to the agent

        # the operator deletes the caller, from outside the session
        with session_user(ALICE):
            assert await memory_manager.aforget_everything() >= len(EARLIER)

        asked = len(fake_llm.requests)
        await session.run(user_input="What do you remember about my dog?")
        await session.run(user_input="My favourite colour is red and my sister is called Ana")
        after = [request_text(r) for r in fake_llm.requests[asked:]]
        assert after
        for text in after:
            assert not [value for value in EARLIER.values() if value in text], text
            assert f"{BLOCK_START}\n" not in text  # no memory block (the instructions name it)
        assert call.agent.erased
        assert call.agent.known_memories == []
        await eventually(
            lambda: without_memories(call.agent.chat_ctx).items == call.agent.chat_ctx.items,
            "the agent's own context to be rid of the memory block",
        )
    finally:
        assert await call.aclose()
        await session.aclose()

    # nothing of the caller was written again: no memory, no profile
    profiles, memories = sqlite_rows(installed_sqlite_store.path)
    assert [m for m in memories if m["user_id"] == livekit_identity_to_uuid(ALICE)] == []
    assert livekit_identity_to_uuid(ALICE) not in {p["id"] for p in profiles}
    assert call.memory.spooled_count == 0  # nor anything kept for later


async def test_a_write_the_store_refuses_for_an_erasure_tells_the_agent(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    """Without any LLM request in between: the session's own capture runs into the erasure
    (the store refuses the write), and the agent hears of it from `SessionMemory.on_erased`."""
    with session_user(ALICE) as user_uuid:
        for (category, key), value in EARLIER.items():
            await memory_manager.astore(category, key, value)
    await installed_sqlite_store.complete_first_login(user_uuid)
    session = text_session(FakeScriptedLLM())
    call = await start_in_own_task(session, ALICE)
    try:
        assert call.agent.known_memories
        with session_user(ALICE):
            await memory_manager.aforget_everything()
        call.memory.capture("My favourite colour is red", message_id="said-after-the-delete")
        assert await call.memory.flush()
        assert call.memory.forgotten
        await eventually(lambda: call.agent.erased, "the agent to hear of the erasure")
        assert call.agent.known_memories == []
        await eventually(
            lambda: without_memories(call.agent.chat_ctx).items == call.agent.chat_ctx.items,
            "the agent's own context to be rid of the memory block",
        )
    finally:
        assert await call.aclose()
        await session.aclose()
    _, memories = sqlite_rows(installed_sqlite_store.path)
    assert [m for m in memories if m["user_id"] == livekit_identity_to_uuid(ALICE)] == []
