"""Memories stored before embeddings were on get their vectors: `caller-memory backfill`.

A store filled by a release (or a worker) without embeddings holds memories search can find
only by their words. The backfill embeds them with the real (test) model, through the CLI an
operator runs, and afterwards a question that shares no word with a memory finds it by
meaning. Runs on SQLite through the command, and on Postgres with pgvector through the same
function the command calls.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from caller_memory import MemoryManager, session_user
from caller_memory.backfill import backfill_embeddings
from caller_memory.embeddings.onnx import OnnxEmbedder
from caller_memory.stores.base import MemoryStore
from caller_memory.stores.postgres import PostgresMemoryStore
from caller_memory.stores.sqlite import SQLiteMemoryStore

ALICE = "alice@example.com"
SAID = [
    "I'm terrified of spiders",
    "My sister lives in Lisbon",
    "I work night shifts at the hospital",
    "We adopted a grey cat last spring",
]
QUESTION = "What scares me?"  # no word in common with the spiders


async def fill_without_vectors(store: MemoryStore) -> None:
    manager = MemoryManager(store, embedder=None)
    with session_user(ALICE):
        for n, text in enumerate(SAID):
            await manager.astore("EXPERIENCE", f"utterance_{n}", text, kind="utterance")


async def search_by_meaning(store: MemoryStore, embedder: OnnxEmbedder) -> list[str]:
    manager = MemoryManager(store, embedder=embedder)
    with session_user(ALICE):
        return [m.value for m in await manager.asearch(QUESTION, limit=2)]


def test_the_backfill_command_embeds_what_the_store_holds(
    e5_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "memories.sqlite3"

    async def fill() -> None:
        store = SQLiteMemoryStore(path)
        try:
            await fill_without_vectors(store)
            assert len(await store.unembedded("any-model", 100)) == len(SAID)
        finally:
            await store.aclose()

    asyncio.run(fill())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "SUPABASE_"))},
        "DATABASE_URL": "",
        "MEMORY_SQLITE_PATH": str(path),
        "MEMORY_SPOOL_DIR": str(tmp_path / "spool"),
        "MEMORY_EMBEDDINGS": "local",
        "MEMORY_EMBEDDING_MODEL_DIR": str(e5_model_dir),
    }
    command = [sys.executable, "-m", "caller_memory.cli", "backfill", "--batch", "3"]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"backfill of the SQLite file {path}" in done.stderr
    assert done.stdout.startswith(f"embedded {len(SAID)} memories with multilingual-e5-small")
    again = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and again.stdout.startswith("embedded 0 memories"), again

    async def check() -> None:
        store = SQLiteMemoryStore(path)
        embedder = OnnxEmbedder(e5_model_dir)
        try:
            assert await store.unembedded(embedder.name, 100) == []
            assert (await search_by_meaning(store, embedder))[0] == "I'm terrified of spiders"
        finally:
            await embedder.aclose()
            await store.aclose()

    asyncio.run(check())


def test_backfill_with_embeddings_off_says_there_is_nothing_to_do(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "SUPABASE_"))},
        "DATABASE_URL": "",
        "MEMORY_SQLITE_PATH": str(tmp_path / "memories.sqlite3"),
        "MEMORY_SPOOL_DIR": str(tmp_path / "spool"),
        "MEMORY_EMBEDDINGS": "off",
    }
    done = subprocess.run(
        [sys.executable, "-m", "caller_memory.cli", "backfill"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "MEMORY_EMBEDDINGS=off" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.postgres
async def test_backfill_on_postgres_with_pgvector(
    postgres_store: PostgresMemoryStore, e5_model_dir: Path
) -> None:
    await fill_without_vectors(postgres_store)
    embedder = OnnxEmbedder(e5_model_dir)
    try:
        assert await search_by_meaning(postgres_store, embedder) == []  # words only, no match
        done = await backfill_embeddings(postgres_store, embedder, batch=3)
        assert (done.embedded, done.changed, done.batches) == (len(SAID), 0, 2)
        assert await postgres_store.unembedded(embedder.name, 100) == []
        assert (await search_by_meaning(postgres_store, embedder))[0] == (
            "I'm terrified of spiders"
        )
        other = str(uuid.uuid5(uuid.NAMESPACE_DNS, "bob@example.com"))
        assert (
            await postgres_store.search_candidates(
                other, "", 5, embedding=tuple([1.0] + [0.0] * 383), embedding_model=embedder.name
            )
            == []
        )
    finally:
        await embedder.aclose()
