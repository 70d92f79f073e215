"""What a caller said means what it answered, and a fact that changed is recalled as it is now.

Through livekit-agents' real `AgentSession` (typed turns, the fake LLM) and the embedded
store, over several calls of one caller:

- a caller's short answer ("Yes, the red one") is kept with the agent's line it answered, so
  a later call that asks about the bicycle recalls it, though the answer never names it;
- blue then green: after the caller changed their favourite colour, nothing sent to the LLM
  says blue any more, neither the fact nor the sentence that stated it; the store keeps blue
  as history, with when it stopped being true.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import llm

from agent import Companion
from caller_memory import CallerMemory, default_memory, livekit_identity_to_uuid
from caller_memory.recall.block import BLOCK_START
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeLLM,
    FakeScriptedLLM,
    chat_texts,
    eventually,
    start_caller,
    text_session,
)

ALICE = "alice@example.com"
AGENT_QUESTION = "Which bicycle should we order for your triathlon, the red or the blue one?"


class FakeAskingLLM(FakeLLM):
    """Greets with a question about the caller's bicycle; answers anything else with "ok"."""

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        said = chat_texts(chat_ctx, "user")
        return [llm.ChoiceDelta(role="assistant", content="ok" if said else AGENT_QUESTION)]


async def a_call(fake_llm: FakeLLM, *said: str) -> None:
    """One call of Alice's: the greeting, then each of `said` typed, then hang up."""
    memory: CallerMemory = default_memory()
    session = text_session(fake_llm)
    call = await start_caller(memory, session, ALICE, Companion)
    try:
        await eventually(lambda: chat_texts(session.history, "assistant") != [], "the greeting")
        for text in said:
            await session.run(user_input=text)
    finally:
        assert await call.aclose()
        await session.aclose()


def request_answering(fake_llm: FakeLLM, text: str) -> llm.ChatContext:
    [request] = [r for r in fake_llm.requests if (u := chat_texts(r, "user")) and u[-1] == text]
    return request


def everything_sent(request: llm.ChatContext) -> str:
    return "\n".join(chat_texts(request))


async def test_a_short_answer_is_recalled_by_the_question_it_answered(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    asking = FakeAskingLLM()
    await a_call(asking, "Yes, the red one")
    # the agent's question reached the caller before the answer
    assert chat_texts(request_answering(asking, "Yes, the red one"), "assistant") == [
        AGENT_QUESTION
    ]

    later = FakeScriptedLLM()
    question = "Remind me, which bicycle did I choose for the triathlon?"
    await a_call(later, question)
    sent = request_answering(later, question)
    blocks = [t for t in chat_texts(sent) if t.startswith(BLOCK_START)]
    assert any("Yes, the red one" in block for block in blocks), blocks
    # recalled as the caller's words: the agent's question is not passed off as theirs
    assert all(AGENT_QUESTION not in block for block in blocks)


async def test_blue_then_green_recalls_only_green(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await a_call(FakeScriptedLLM(), "My favourite colour is blue")
    await a_call(FakeScriptedLLM(), "Actually my favourite colour is green now")

    fake_llm = FakeScriptedLLM()
    question = "What's my favourite colour?"
    await a_call(fake_llm, question)
    sent = everything_sent(request_answering(fake_llm, question))
    assert "green" in sent
    assert "blue" not in sent.lower(), sent

    alice = livekit_identity_to_uuid(ALICE)
    [change] = await installed_sqlite_store.list_history(alice)
    assert (change.key, change.value) == ("favorite_color", "blue")
    values: dict[str, Any] = {
        m.key: m.value for m in await installed_sqlite_store.list_memories(alice)
    }
    assert values["favorite_color"] == "green"
    # the sentence that said blue is kept (the caller's export has it), just never recalled
    assert "My favourite colour is blue" in values.values()
