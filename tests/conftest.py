"""Shared fixtures: a fresh embedded store per test, installed as the process-wide store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import storage
from storage.sqlite_store import SQLiteMemoryStore

pytest_plugins = ["tests.postgres_fixtures", "tests.supabase_fixtures"]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's .env, keys or database, nor another test's store."""
    for name in (
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_ANON_KEY",
        "SUPABASE_TIMEOUT_SECONDS",
        "MEMORY_SPOOL_DIR",
        "MEMORY_RECALL_BUDGET_MS",
        "MEMORY_LLM_EXTRACTOR",
        "DATABASE_URL",
        "MEMORY_ALLOW_DEFAULT_USER",
        "IDENTITY_NAMESPACE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMORY_SQLITE_PATH", str(tmp_path / "memories.sqlite3"))
    monkeypatch.setenv("MEMORY_SPOOL_DIR", str(tmp_path / "spool"))
    previous = storage.set_store(None)
    yield
    storage.set_store(previous)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteMemoryStore]:
    store = SQLiteMemoryStore(tmp_path / "store.sqlite3")
    yield store
    await store.aclose()


@pytest.fixture
async def installed_sqlite_store(sqlite_store: SQLiteMemoryStore) -> SQLiteMemoryStore:
    """The SQLite store, installed as the store `memory_manager` and `profiles` use."""
    storage.set_store(sqlite_store)
    return sqlite_store
