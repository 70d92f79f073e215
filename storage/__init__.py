"""Memory stores and the choice between them.

`open_store()` picks the backend from the environment, in this order:
`SUPABASE_URL` -> Supabase, `DATABASE_URL` -> Postgres, otherwise the embedded SQLite file at
`MEMORY_SQLITE_PATH` (default `data/memories.sqlite3` under the project). `get_store()` is the
process-wide store that `memory_manager` and `profiles` use; tests and tools may install
another with `set_store()`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from storage.base import MemoryStore
from storage.errors import (
    StorageConfigError,
    StorageError,
    StorageSchemaError,
    StorageUnavailableError,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_DIR / "data" / "memories.sqlite3"

__all__ = [
    "MemoryStore",
    "StorageConfigError",
    "StorageError",
    "StorageSchemaError",
    "StorageUnavailableError",
    "get_store",
    "open_store",
    "set_store",
    "sqlite_path_from_env",
]

_store: MemoryStore | None = None
_store_lock = threading.Lock()


def sqlite_path_from_env() -> Path:
    raw = os.environ.get("MEMORY_SQLITE_PATH", "").strip()
    return Path(raw).expanduser() if raw else DEFAULT_SQLITE_PATH


def backend_name_from_env() -> str:
    if os.environ.get("SUPABASE_URL", "").strip():
        return "supabase"
    if os.environ.get("DATABASE_URL", "").strip():
        return "postgres"
    return "sqlite"


def open_store() -> MemoryStore:
    """A new store for the backend the environment selects (see module docstring)."""
    backend = backend_name_from_env()
    if backend == "sqlite":
        from storage.sqlite_store import SQLiteMemoryStore

        return SQLiteMemoryStore(sqlite_path_from_env())
    if backend == "postgres":
        try:
            from storage.postgres_store import PostgresMemoryStore
        except ImportError as exc:  # pragma: no cover - until the backend lands
            raise StorageConfigError(
                "DATABASE_URL is set but the Postgres backend is not available"
            ) from exc
        return PostgresMemoryStore.from_env()  # type: ignore[no-any-return]
    try:
        from storage.supabase_store import SupabaseMemoryStore
    except ImportError as exc:  # pragma: no cover - until the backend lands
        raise StorageConfigError(
            "SUPABASE_URL is set but the Supabase backend is not available"
        ) from exc
    return SupabaseMemoryStore.from_env()  # type: ignore[no-any-return]


def get_store() -> MemoryStore:
    """The process-wide store, opened from the environment on first use."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = open_store()
    return _store


def set_store(store: MemoryStore | None) -> MemoryStore | None:
    """Install `store` as the process-wide store; returns the previous one (not closed)."""
    global _store
    with _store_lock:
        previous, _store = _store, store
    return previous
