"""The contract every memory store fulfils (SQLite, Postgres, Supabase).

Stores are deliberately dumb: they take the user uuid as an argument and never look at the
session context. Deciding *which* user an operation is for is the job of `memory_manager`
and `profiles`, which read it from the session context and fail closed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from memory_types import Memory, Profile


@runtime_checkable
class MemoryStore(Protocol):
    """Async storage for profiles and memories, keyed by user uuid."""

    name: str

    async def ensure_profile(self, user_id: str, identity: str | None) -> tuple[Profile, bool]:
        """Create the profile if missing; return it and whether this call created it."""
        ...

    async def get_profile(self, user_id: str) -> Profile | None: ...

    async def complete_first_login(self, user_id: str) -> bool:
        """Flip `is_first_login` to false; True only for the one call that flipped it."""
        ...

    async def upsert_memory(
        self, user_id: str, category: str, key: str, value: str, identity: str | None = None
    ) -> None:
        """Insert or replace `(user_id, category, key)`; creates the profile if missing."""
        ...

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None: ...

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        """The user's memories most relevant to `query` (recent and important first if empty)."""
        ...

    async def list_memories(self, user_id: str) -> list[Memory]: ...

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool: ...

    async def delete_user(self, user_id: str) -> int:
        """Delete the profile and every memory of the user; returns memories deleted."""
        ...

    async def aclose(self) -> None: ...
