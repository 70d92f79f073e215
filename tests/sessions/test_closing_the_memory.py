"""What a `CallerMemory` does around a session: it reads the caller's vectors when they are
attached, and closing it loses nothing a session captured.

A worker (or a script, or a test) that closes its memory while a session's writer still holds
captured messages, because the store is slow and the session's own close has not run, must
see those messages written before the store is closed, not dropped with the queue.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from livekit.agents import Agent

from caller_memory import CallerMemory, MemoryAgent, MemorySettings, session_user
from caller_memory.embeddings.onnx import OnnxEmbedder
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeScriptedLLM,
    FakeWriteGate,
    eventually,
    start_caller,
    text_session,
)
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


async def test_attaching_a_caller_reads_their_vectors_before_their_first_turn(
    tmp_path: Path, e5_model_dir: Path
) -> None:
    """The SQLite store keeps a caller's vectors in memory once read; attaching reads them,
    so the first turn's recall does not spend its budget on the disk."""
    path = tmp_path / "memories.sqlite3"
    store = SQLiteMemoryStore(path)
    embedder = OnnxEmbedder(e5_model_dir)
    settings = MemorySettings.model_construct(
        sqlite_path=path, spool_dir=tmp_path / "spool", llm_extractor=False
    )
    memory = CallerMemory(store=store, settings=settings, embedder=embedder)
    with_vectors = CallerMemory(store=store, settings=settings, embedder=embedder)
    with session_user("ana@example.com"):
        for n, line in enumerate(SAID):
            await with_vectors.manager.astore("EXPERIENCE", f"said_{n}", line, kind="utterance")
    session = text_session(FakeScriptedLLM())
    caller = await start_caller(memory, session, "ana@example.com", Companion)

    def read() -> bool:
        held = store._vectors._entries.get((caller.user_uuid, embedder.name))
        return held is not None and held.ids.size == len(SAID)

    await eventually(read, "the caller's vectors in memory after attach")
    await session.aclose()
    await memory.aclose()
