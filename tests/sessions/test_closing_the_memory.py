"""Closing a `CallerMemory` loses nothing a session captured.

A worker (or a script, or a test) that closes its memory while a session's writer still holds
captured messages, because the store is slow and the session's own close has not run, must
see those messages written before the store is closed, not dropped with the queue.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from livekit.agents import Agent

from caller_memory import CallerMemory, MemoryAgent, MemorySettings
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeScriptedLLM, FakeWriteGate, start_caller, text_session
from tests.support import sqlite_rows

SAID = ("My sister Ana lives in Lisbon.", "I'm terrified of spiders.", "I work as a nurse.")


class Companion(MemoryAgent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a warm companion.")


async def test_closing_the_memory_writes_what_an_open_session_still_holds(tmp_path: Path) -> None:
    path = tmp_path / "memories.sqlite3"
    gate = FakeWriteGate(SQLiteMemoryStore(path), hold_after=0)  # a store that is slow to write
    settings = MemorySettings.model_construct(
        sqlite_path=path, spool_dir=tmp_path / "spool", embeddings="off", llm_extractor=False
    )
    memory = CallerMemory(store=gate, settings=settings, embedder=None)
    session = text_session(FakeScriptedLLM())
    agent: type[Agent] = Companion
    await start_caller(memory, session, "ana@example.com", agent)
    for line in SAID:
        await session.run(user_input=line)
    await asyncio.wait_for(gate.held.wait(), 10)  # the first write is waiting on the store

    closing = asyncio.create_task(memory.aclose())  # the session itself is still open
    await asyncio.sleep(0.05)
    gate.release()  # the store answers again
    await asyncio.wait_for(closing, 30)

    _, memories = sqlite_rows(path)
    kept = {row["value"] for row in memories if row["kind"] == "utterance"}
    assert kept == set(SAID)
    await session.aclose()
