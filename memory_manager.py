"""The caller's long-term memory, always for the caller of the current context.

`memory_manager` never takes a user id: every call reads the caller from the session
context (`session_context.get_current_user()`) and fails closed when there is none. The
summary's calls work as written from synchronous code::

    memory_manager.store("FACT", "favorite_color", "blue")
    memory_manager.retrieve("FACT", "favorite_color")

and async code (the agent) uses the `a`-prefixed twins, which never block the event loop.
`(category, key)` is unique per caller: storing a key again replaces its value.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from memory_types import Memory, MemoryCategory, MemoryKind, WriteOutcome
from search_query import build_search_query
from session_context import get_current_identity, get_current_user, get_session_started_at
from storage import MemoryStore, get_store
from storage.sync_bridge import run_sync

logger = logging.getLogger("memory_worker.memory")

T = TypeVar("T")

MAX_KEY_LENGTH = 200
MAX_VALUE_LENGTH = 8000
MAX_QUERY_LENGTH = 2000
MAX_SEARCH_LIMIT = 100
MAX_UTTERANCES_ENV = "MEMORY_MAX_UTTERANCES_PER_CALLER"
DEFAULT_MAX_UTTERANCES = 20_000


def max_utterances_from_env() -> int | None:
    """`MEMORY_MAX_UTTERANCES_PER_CALLER`: how many of a caller's own messages are kept (the
    oldest are dropped first; stable facts are never dropped); 0 means no limit."""
    raw = os.environ.get(MAX_UTTERANCES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_UTTERANCES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"{MAX_UTTERANCES_ENV} must be a whole number of utterances (0 for no limit), "
            f"got {raw!r}"
        )
    return value or None


def _check_unicode(text: str, what: str) -> None:
    # Lone surrogates cannot be stored by any backend (UTF-8 cannot encode them); refuse them
    # here, before the store, rather than fail inside it (or spool a write that never lands).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a memory {what} must be valid Unicode text") from None


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValueError("a memory key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"a memory key must be at most {MAX_KEY_LENGTH} characters")
    if "\x00" in key:
        raise ValueError("a memory key must not contain NUL characters")
    _check_unicode(key, "key")
    return key.strip()


def validate_value(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a memory value must be a non-empty string")
    if len(value) > MAX_VALUE_LENGTH:
        raise ValueError(
            f"a memory value must be at most {MAX_VALUE_LENGTH} characters, got {len(value)}"
        )
    if "\x00" in value:
        raise ValueError("a memory value must not contain NUL characters")
    _check_unicode(value, "value")
    return value


def validate_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_SEARCH_LIMIT}")
    return limit


class MemoryManager:
    """Memory operations for the caller in context (see module docstring)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self._store = store

    @property
    def store_backend(self) -> MemoryStore:
        return self._store if self._store is not None else get_store()

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
            max_utterances=max_utterances_from_env(),
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


memory_manager = MemoryManager()
