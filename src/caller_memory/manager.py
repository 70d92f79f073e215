"""The caller's long-term memory, always for the caller of the current context.

A `MemoryManager` belongs to one `CallerMemory` (its store and its per-caller limits) and
never takes a user id: every call reads the caller from the session context
(`caller_memory.context.get_current_user()`) and fails closed when there is none.
`memory_manager` is the manager of the process-wide default memory; the design summary's
calls work as written from synchronous code::

    memory_manager.store("FACT", "favorite_color", "blue")
    memory_manager.retrieve("FACT", "favorite_color")

and async code (the agent) uses the `a`-prefixed twins, which never block the event loop.
`(category, key)` is unique per caller: storing a key again replaces its value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from caller_memory import defaults
from caller_memory.context import get_current_identity, get_current_user, get_session_started_at
from caller_memory.recall.query import build_search_query
from caller_memory.stores.base import MemoryStore
from caller_memory.sync_bridge import run_sync
from caller_memory.types import Memory, MemoryCategory, MemoryKind, WriteOutcome
from caller_memory.validation import (
    MAX_QUERY_LENGTH,
    validate_key,
    validate_limit,
    validate_value,
)

logger = logging.getLogger("caller_memory.memory")

T = TypeVar("T")


class MemoryManager:
    """Memory operations for the caller in context (see module docstring)."""

    def __init__(self, store: MemoryStore, *, max_utterances: int | None = None) -> None:
        """`max_utterances`: the per-caller cap on stored utterances (None: no limit)."""
        self._store = store
        self._max_utterances = max_utterances

    @property
    def store_backend(self) -> MemoryStore:
        return self._store

    @property
    def max_utterances(self) -> int | None:
        return self._max_utterances

    # -- async API (the agent's) ------------------------------------------------------------

    async def astore(
        self,
        category: str | MemoryCategory,
        key: str,
        value: str,
        *,
        kind: str | MemoryKind = MemoryKind.FACT,
        captured_at: float | None = None,
        session_started_at: float | None = None,
    ) -> WriteOutcome:
        """Store one memory for the caller in context; the store decides whether it lands.

        `captured_at` is when the caller said it (default: now) and orders writes of one key
        across writers; `session_started_at` is when the session that heard it began
        (default: the start of the session in context, set by `set_session_user`, else
        `captured_at`): an erasure of the caller since then refuses the write.
        Returns what the store did (`WriteOutcome`); a refusal is not an error.
        """
        cat = MemoryCategory.parse(category).value
        kind = MemoryKind(kind)
        key, value = validate_key(key), validate_value(value)
        user_id = get_current_user("storing a memory")
        captured = time.time() if captured_at is None else float(captured_at)
        if session_started_at is None:
            session_started_at = get_session_started_at()
        started = captured if session_started_at is None else float(session_started_at)
        outcome = await self.store_backend.upsert_memory(
            user_id,
            cat,
            key,
            value,
            identity=get_current_identity(),
            kind=kind.value,
            captured_at=captured,
            session_started_at=started,
            max_utterances=self.max_utterances,
        )
        logger.debug("memory write for %s: [%s] %s -> %s", user_id, cat, key, outcome)
        return outcome

    async def aretrieve(self, category: str | MemoryCategory, key: str) -> str | None:
        cat = MemoryCategory.parse(category).value
        key = validate_key(key)
        user_id = get_current_user("reading a memory")
        return await self.store_backend.get_memory(user_id, cat, key)

    async def asearch(self, query: str, limit: int = 5) -> list[Memory]:
        """The caller's memories most relevant to `query`, best first.

        An empty query returns the caller's most important memories (stable facts before
        utterances, by category, newest first); a query with no content words ("hello!")
        returns nothing, since nothing in it can be relevant.
        """
        if not isinstance(query, str):
            raise ValueError("a search query must be a string")
        limit = validate_limit(limit)
        user_id = get_current_user("searching memories")
        terms = build_search_query(query[:MAX_QUERY_LENGTH])
        if not terms and query.strip():
            return []
        return await self.store_backend.search_memories(user_id, terms, limit)

    async def aforget(self, category: str | MemoryCategory, key: str) -> bool:
        cat = MemoryCategory.parse(category).value
        key = validate_key(key)
        user_id = get_current_user("forgetting a memory")
        return await self.store_backend.delete_memory(user_id, cat, key)

    async def alist(self) -> list[Memory]:
        user_id = get_current_user("listing memories")
        return await self.store_backend.list_memories(user_id)

    async def aforget_everything(self, *, erased_at: float | None = None) -> int:
        """Delete the caller's profile and every memory, and record the erasure (at
        `erased_at`, default now) so that no writer can bring any of it back; returns
        memories deleted."""
        user_id = get_current_user("forgetting everything")
        when = time.time() if erased_at is None else float(erased_at)
        deleted = await self.store_backend.delete_user(user_id, erased_at=when)
        logger.info("deleted every memory (%d) and the profile of user %s", deleted, user_id)
        return deleted

    # -- sync API (the summary's; for scripts, never inside an event loop) -------------------

    def _sync(self, coro: Coroutine[Any, Any, T], api_name: str) -> T:
        return run_sync(coro, api_name=api_name)

    def store(self, category: str | MemoryCategory, key: str, value: str) -> WriteOutcome:
        return self._sync(self.astore(category, key, value), "store")

    def retrieve(self, category: str | MemoryCategory, key: str) -> str | None:
        return self._sync(self.aretrieve(category, key), "retrieve")

    def search(self, query: str, limit: int = 5) -> list[Memory]:
        return self._sync(self.asearch(query, limit), "search")

    def forget(self, category: str | MemoryCategory, key: str) -> bool:
        return self._sync(self.aforget(category, key), "forget")

    def list(self) -> list[Memory]:
        return self._sync(self.alist(), "list")

    def forget_everything(self) -> int:
        return self._sync(self.aforget_everything(), "forget_everything")


class DefaultMemoryManager(MemoryManager):
    """`memory_manager`: the manager of the process-wide default `CallerMemory`, whichever it
    is when called (see `caller_memory.default_memory`), so the design summary's module-level
    calls work as written."""

    def __init__(self) -> None:  # no state of its own: everything comes from the default
        pass

    @property
    def _default(self) -> MemoryManager:
        return defaults.current().manager

    @property
    def store_backend(self) -> MemoryStore:
        return self._default.store_backend

    @property
    def max_utterances(self) -> int | None:
        return self._default.max_utterances


memory_manager: MemoryManager = DefaultMemoryManager()
