"""An erasure during a live session sticks in the session too.

The caller is in a call, their earlier memories in the agent's context, when an operator
deletes them (`memory_manager.aforget_everything()` run as that caller from outside the
session, as `caller-memory admin delete` does from another process). From the caller's next turn on,
no LLM request holds any of the deleted facts, the agent recalls and keeps nothing, and
nothing of the caller is written again: not what they say next, not a profile.

Real `AgentSession` (typed turns, as a chat client sends them) and real SQLite store; the LLM
is the scripted fake of `caller_memory.testing`, which records every request.
"""

from __future__ import annotations

from typing import Any

from caller_memory import livekit_identity_to_uuid, memory_manager, session_user
from caller_memory.recall.block import BLOCK_START, without_memories
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeScriptedLLM, chat_texts
from tests.session_harness import eventually, start_in_own_task, text_session
from tests.support import install_memory, sqlite_rows

ALICE = "alice@example.com"
EARLIER = {
    ("PRESENTATION", "name"): "Marisol",
    ("RELATIONSHIP", "dog_name"): "Biscuit",
    ("PREFERENCE", "favorite_color"): "teal",
}


def request_text(request: Any) -> str:
    return "\n".join(chat_texts(request))


async def test_an_operator_delete_during_a_call_reaches_the_agent_and_sticks(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    # The agent looks at the store before each turn's LLM request within recall's budget
    # (50 ms in production); this test is about what it does with the answer, not speed.
    install_memory(installed_sqlite_store, recall_budget_ms=2000)
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
        assert call.erased
        assert call.known_memories == []
        agent = call.session.current_agent
        await eventually(
            lambda: without_memories(agent.chat_ctx).items == agent.chat_ctx.items,
            "the agent's own context to be rid of the memory block",
        )
    finally:
        assert await call.aclose()
        await session.aclose()

    # nothing of the caller was written again: no memory, no profile
    profiles, memories = sqlite_rows(installed_sqlite_store.path)
    assert [m for m in memories if m["user_id"] == livekit_identity_to_uuid(ALICE)] == []
    assert livekit_identity_to_uuid(ALICE) not in {p["id"] for p in profiles}
    assert call.writer.spooled_count == 0  # nor anything kept for later


async def test_a_write_the_store_refuses_for_an_erasure_tells_the_agent(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    """Without any LLM request in between: the session's own capture runs into the erasure
    (the store refuses the write), and the session hears of it from `CaptureWriter.on_erased`."""
    with session_user(ALICE) as user_uuid:
        for (category, key), value in EARLIER.items():
            await memory_manager.astore(category, key, value)
    await installed_sqlite_store.complete_first_login(user_uuid)
    session = text_session(FakeScriptedLLM())
    call = await start_in_own_task(session, ALICE)
    try:
        assert call.known_memories
        with session_user(ALICE):
            await memory_manager.aforget_everything()
        call.writer.capture("My favourite colour is red", message_id="said-after-the-delete")
        assert await call.writer.flush()
        assert call.writer.forgotten
        await eventually(lambda: call.erased, "the agent to hear of the erasure")
        assert call.known_memories == []
        agent = call.session.current_agent
        await eventually(
            lambda: without_memories(agent.chat_ctx).items == agent.chat_ctx.items,
            "the agent's own context to be rid of the memory block",
        )
    finally:
        assert await call.aclose()
        await session.aclose()
    _, memories = sqlite_rows(installed_sqlite_store.path)
    assert [m for m in memories if m["user_id"] == livekit_identity_to_uuid(ALICE)] == []
