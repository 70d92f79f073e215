"""The store the settings select, and how to name it to an operator without a secret."""

from __future__ import annotations

from typing import TYPE_CHECKING

from caller_memory.stores.base import MemoryStore
from caller_memory.stores.database_url import parse_database_url
from caller_memory.stores.errors import StorageConfigError

if TYPE_CHECKING:
    from caller_memory.settings import MemorySettings


def open_store(settings: MemorySettings) -> MemoryStore:
    """A new store for the backend `settings` select; nothing connects until its first call.

    Raises `StorageConfigError` when the chosen backend's extra is not installed."""
    if settings.backend == "sqlite":
        from caller_memory.stores.sqlite import SQLiteMemoryStore

        return SQLiteMemoryStore(settings.sqlite_path)
    if settings.backend == "postgres":
        try:
            from caller_memory.stores.postgres import PostgresMemoryStore
        except ImportError as exc:
            raise StorageConfigError(
                "DATABASE_URL is set but the Postgres store's driver is not installed: "
                f"pip install 'livekit-caller-memory[postgres]' ({exc.name} is missing)"
            ) from None
        return PostgresMemoryStore.from_settings(settings)
    try:
        from caller_memory.stores.supabase import SupabaseMemoryStore
    except ImportError as exc:
        raise StorageConfigError(
            "SUPABASE_URL is set but the Supabase client is not installed: "
            f"pip install 'livekit-caller-memory[supabase]' ({exc.name} is missing)"
        ) from None
    return SupabaseMemoryStore.from_settings(settings)


def describe_store(settings: MemorySettings) -> str:
    """Which store the settings select, for an operator: backend and file, host or project,
    never a password or key."""
    if settings.backend == "supabase":
        return f"the Supabase project at {settings.supabase_url}"
    if settings.backend == "postgres":
        assert settings.database_url is not None
        target = parse_database_url(settings.database_url.get_secret_value())
        return f"the Postgres {target.describe()}"
    return f"the SQLite file {settings.sqlite_path.resolve()}"
