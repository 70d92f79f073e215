"""Shared fixtures: a fresh embedded store per test, and a clean process-wide default memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from caller_memory import CallerMemory, MemorySettings, set_default_memory
from caller_memory.stores.sqlite import SQLiteMemoryStore

pytest_plugins = [
    "tests.postgres_fixtures",
    "tests.supabase_fixtures",
    "tests.embedding_fixtures",
]

# Variables the reference worker reads besides the memory settings.
WORKER_VARIABLES = (
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CONSOLE_USER_IDENTITY",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's .env, keys or database, nor another test's memory: the
    process-wide default memory is built afresh from this test's environment on first use."""
    for name in (*MemorySettings.variable_names(), *WORKER_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMORY_SQLITE_PATH", str(tmp_path / "memories.sqlite3"))
    monkeypatch.setenv("MEMORY_SPOOL_DIR", str(tmp_path / "spool"))
    # No model to fetch here: tests that search by meaning build one (`e5_model_dir`) and say
    # so; every other test searches by text, as a deployment with MEMORY_EMBEDDINGS=off does.
    monkeypatch.setenv("MEMORY_EMBEDDINGS", "off")
    # The fake LLMs answer the conversation; tests of the LLM's fact extraction turn it on.
    monkeypatch.setenv("MEMORY_LLM_EXTRACTOR", "0")
    previous = set_default_memory(None)
    yield
    set_default_memory(previous)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteMemoryStore]:
    store = SQLiteMemoryStore(tmp_path / "store.sqlite3")
    yield store
    await store.aclose()


@pytest.fixture
def memory(sqlite_store: SQLiteMemoryStore) -> CallerMemory:
    """A `CallerMemory` on the test's SQLite store (settings from the test's environment),
    installed as the process-wide default, so the module-level API uses it too."""
    caller_memory = CallerMemory(store=sqlite_store, settings=MemorySettings.load())
    set_default_memory(caller_memory)
    return caller_memory


@pytest.fixture
def installed_sqlite_store(memory: CallerMemory) -> SQLiteMemoryStore:
    """The SQLite store of the default memory (`memory`)."""
    assert isinstance(memory.store, SQLiteMemoryStore)
    return memory.store
