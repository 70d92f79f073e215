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

Every write the store answers is counted by its result, every erasure by who asked for it,
and every embedding is timed and traced (`caller_memory.telemetry`): this is where they
happen, whoever asks (capture, the caller's tools, spool replay, an operator).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from caller_memory import defaults
from caller_memory.context import get_current_identity, get_current_user, get_session_started_at
from caller_memory.embeddings.base import Embedder, EmbeddingError, Vector
from caller_memory.indexing import clip_context, index_text, said_on_words
from caller_memory.recall.fusion import FusionWeights, fuse
from caller_memory.recall.query import build_search_query
from caller_memory.stores.base import MemoryStore
from caller_memory.sync_bridge import run_sync
from caller_memory.telemetry import metrics
from caller_memory.telemetry.tracing import memory_span, set_attributes
from caller_memory.types import Memory, MemoryCategory, MemoryDetails, MemoryKind, WriteOutcome
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

    def __init__(
        self,
        store: MemoryStore,
        *,
        max_utterances: int | None = None,
        embedder: Embedder | None = None,
        fusion: FusionWeights | None = None,
    ) -> None:
        """`max_utterances`: the per-caller cap on stored utterances (None: no limit);
        `embedder`: what makes vectors of memories and queries (None: lexical search only);
        `fusion`: the weights of hybrid ranking (default: the tuned ones)."""
        self._store = store
        self._max_utterances = max_utterances
        self._embedder = embedder
        self._fusion = fusion or FusionWeights()

    @property
    def store_backend(self) -> MemoryStore:
        return self._store

    @property
    def max_utterances(self) -> int | None:
        return self._max_utterances

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    @property
    def fusion(self) -> FusionWeights:
        return self._fusion

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
        said_at: float | None = None,
        context: str | None = None,
        details: MemoryDetails | None = None,
    ) -> WriteOutcome:
        """Store one memory for the caller in context; the store decides whether it lands.

        `captured_at` (or its other name, `said_at`) is when the caller said it (default:
        now) and orders writes of one key across writers; `session_started_at` is when the
        session that heard it began (default: the start of the session in context, set by
        `set_session_user`, else `captured_at`): an erasure of the caller since then refuses
        the write. `context` is what was said just before (in a call, the agent's line the
        caller answered): indexed with the value, never returned as it; `details` carry the
        rest (where it was said, the facts an utterance states). With an embedder, the
        memory's vector is made here (a memory without one is still stored: the backfill
        command adds it later). Returns what the store did (`WriteOutcome`); a refusal is
        not an error.
        """
        cat = MemoryCategory.parse(category).value
        kind = MemoryKind(kind)
        key, value = validate_key(key), validate_value(value)
        user_id = get_current_user("storing a memory")
        when = captured_at if captured_at is not None else said_at
        captured = time.time() if when is None else float(when)
        if session_started_at is None:
            session_started_at = get_session_started_at()
        started = captured if session_started_at is None else float(session_started_at)
        extra = await self._described(kind, key, value, captured, context, details)
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
            details=extra,
        )
        metrics.write_answered(outcome)
        logger.debug("memory write for %s: [%s] %s -> %s", user_id, cat, key, outcome)
        return outcome

    async def _described(
        self,
        kind: MemoryKind,
        key: str,
        value: str,
        captured: float,
        context: str | None,
        details: MemoryDetails | None,
    ) -> MemoryDetails:
        """`details` completed: the context and the day, and the vector (with an embedder)."""
        extra = details or MemoryDetails()
        clipped = clip_context(context if context is not None else extra.context)
        said_on = extra.said_on or said_on_words(captured)
        extra = replace(extra, context=clipped, said_on=said_on)
        if self.embedder is None or extra.embedding is not None:
            return extra
        text = index_text(kind=kind, key=key, value=value, context=clipped)
        try:
            [vector] = await _embedding(
                "memory", self.embedder, self.embedder.embed_documents([text])
            )
        except EmbeddingError as exc:
            logger.debug("memory stored without a vector (%s); the backfill adds it", exc)
            return extra
        return replace(
            extra,
            embedding=tuple(float(x) for x in vector),
            embedding_model=self.embedder.name,
        )

    async def aretrieve(self, category: str | MemoryCategory, key: str) -> str | None:
        cat = MemoryCategory.parse(category).value
        key = validate_key(key)
        user_id = get_current_user("reading a memory")
        return await self.store_backend.get_memory(user_id, cat, key)

    async def aprepare(self) -> None:
        """Get the store ready to search the caller in context by meaning (the SQLite store
        reads their vectors into memory), so the first turn's recall does not pay for it."""
        if self.embedder is not None:
            user_id = get_current_user("preparing search")
            await self.store_backend.prepare_caller(user_id, self.embedder.name)

    async def asearch(self, query: str, limit: int = 5) -> list[Memory]:
        """The caller's memories most relevant to `query`, best first.

        By text and, with an embedder, by meaning, ranked by `caller_memory.recall.fusion`;
        never a superseded memory. An empty query returns the caller's most important
        memories (stable facts before utterances, by category, newest first); a query with no
        content words and no embedder ("hello!") returns nothing.
        """
        if not isinstance(query, str):
            raise ValueError("a search query must be a string")
        limit = validate_limit(limit)
        user_id = get_current_user("searching memories")
        text = query[-MAX_QUERY_LENGTH:]  # an over-long message asks last, as a query does
        if not text.strip():
            return await self.store_backend.search_memories(user_id, "", limit)
        terms = build_search_query(text)
        if not terms and self.embedder is None:
            return []  # no word that can be searched for, and no meaning to search by
        # The store searches by text while the query is embedded, then by meaning. The
        # embedding is a task of its own: it is cancelled if the search ends without it (a
        # store that failed first, or one that cannot search by meaning and never awaits it).
        vector = (
            asyncio.ensure_future(self._query_vector(text)) if self.embedder is not None else None
        )
        try:
            candidates = await self.store_backend.search_candidates(
                user_id,
                terms,
                limit,
                embedding=vector,
                embedding_model=self.embedder.name if self.embedder is not None else None,
            )
        finally:
            if vector is not None:
                vector.cancel()
        return fuse(candidates, limit, self.fusion)

    async def _query_vector(self, text: str) -> Vector | None:
        """The query's vector as the embedder gives it: the store reads the float32 array as
        it is (turning it into Python floats cost 24 µs of the event loop per search)."""
        if self.embedder is None:
            return None
        try:
            return await _embedding("query", self.embedder, self.embedder.embed_query(text))
        except EmbeddingError as exc:
            logger.debug("searching by text only this time (%s)", exc)
            return None

    async def aforget(self, category: str | MemoryCategory, key: str) -> bool:
        cat = MemoryCategory.parse(category).value
        key = validate_key(key)
        user_id = get_current_user("forgetting a memory")
        return await self.store_backend.delete_memory(user_id, cat, key)

    async def astating(self, category: str | MemoryCategory, key: str) -> list[Memory]:
        """The caller's utterances that stated any value of the fact (category, key),
        replaced ones too."""
        cat = MemoryCategory.parse(category).value
        key = validate_key(key)
        user_id = get_current_user("listing what states a fact")
        return await self.store_backend.list_stating(user_id, cat, key)

    async def alist(self) -> list[Memory]:
        user_id = get_current_user("listing memories")
        return await self.store_backend.list_memories(user_id)

    async def aforget_everything(
        self, *, erased_at: float | None = None, source: metrics.ErasureSource = "caller"
    ) -> int:
        """Delete the caller's profile and every memory, and record the erasure (at
        `erased_at`, default now) so that no writer can bring any of it back; returns
        memories deleted. `source`: who asked (the caller, or an operator), as counted."""
        user_id = get_current_user("forgetting everything")
        when = time.time() if erased_at is None else float(erased_at)
        deleted = await self.store_backend.delete_user(user_id, erased_at=when)
        metrics.erased(source)
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


async def _embedding(kind: metrics.EmbeddingKind, embedder: Embedder, work: Awaitable[T]) -> T:
    """`work` (one embedding call of `embedder`), timed and traced as `kind`."""
    started = time.perf_counter()
    with memory_span("embedding", kind=kind, model=embedder.name) as span:
        outcome = "error"
        try:
            result = await work
            outcome = "ok"
        finally:
            seconds = time.perf_counter() - started
            metrics.embedding_timed(kind, seconds)
            set_attributes(span, outcome=outcome, duration_ms=round(seconds * 1000, 3))
    return result


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

    @property
    def embedder(self) -> Embedder | None:
        return self._default.embedder

    @property
    def fusion(self) -> FusionWeights:
        return self._default.fusion


memory_manager: MemoryManager = DefaultMemoryManager()
