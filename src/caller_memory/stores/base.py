"""The contract every memory store fulfils (SQLite, Postgres, Supabase).

Stores are deliberately dumb: they take the user uuid as an argument and never look at the
session context. Deciding *which* user an operation is for is the job of `memory_manager`
and `profiles`, which read it from the session context and fail closed.

Every backend class is decorated with `counts_store_errors`: the one place where a failed
store operation is counted (`caller_memory_store_errors_total{backend, operation, error}`),
whichever backend and whoever called.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from caller_memory.stores.errors import (
    StorageConfigError,
    StorageError,
    StorageSchemaError,
    StorageUnavailableError,
)
from caller_memory.telemetry import metrics
from caller_memory.types import (
    Candidate,
    FactChange,
    Memory,
    MemoryDetails,
    Profile,
    Unembedded,
    WriteOutcome,
)


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
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        identity: str | None = None,
        *,
        kind: str = "fact",
        captured_at: float | None = None,
        session_started_at: float | None = None,
        max_utterances: int | None = None,
        details: MemoryDetails | None = None,
    ) -> WriteOutcome:
        """Insert or replace `(user_id, category, key)`; creates the profile if missing.

        The write rule, the same in every backend (one SQL function on Postgres and Supabase,
        one transaction on SQLite), decided atomically with the write:

        - ERASED if the user has an erasure recorded at or after `session_started_at` (the
          start of the session that captured it; for a write outside a session, its capture
          time): nothing known before an erasure may be written again, by any writer;
        - STALE if the stored row of this key was captured after `captured_at`
          (last writer by capture time wins);
        - else STORED. With `max_utterances`, the user's oldest utterances beyond that number
          are then dropped (stable facts are never dropped). A stable fact stored with a new
          value keeps the old one as history, and the utterances that stated the old value
          are marked superseded; an utterance is stored with the facts it states
          (`details.states`), superseded already if one of them has a newer value. With
          `details.embedding`, the memory's vector is stored too.

        Times are seconds since the epoch (`time.time()`); `captured_at` defaults to now and
        `session_started_at` to `captured_at` (see `write_times`).
        """
        ...

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None: ...

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        """The user's current memories ranked by text (superseded ones never); the most
        important and recent first when `query` holds no word at all."""
        ...

    async def search_candidates(
        self,
        user_id: str,
        query: str,
        limit: int,
        *,
        embedding: QueryVector | None = None,
        embedding_model: str | None = None,
    ) -> list[Candidate]:
        """The candidates of a hybrid search, each with its raw scores: the `limit` *
        `CANDIDATES_PER_RESULT` best by text, and with `embedding`, as many nearest in meaning
        among the memories `embedding_model` embedded (none where the store cannot search by
        meaning). `embedding` may still be on its way (an awaitable): the search by text does
        not wait for it. The ranking rule is not the store's: `caller_memory.recall.fusion`
        combines the scores."""
        ...

    async def set_embedding(
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        embedding: Sequence[float],
        embedding_model: str,
    ) -> bool:
        """Attach a vector to a memory still holding `value`; False otherwise."""
        ...

    async def unembedded(self, embedding_model: str, limit: int) -> list[Unembedded]:
        """Current memories without a vector of `embedding_model` (the backfill's work)."""
        ...

    async def has_vectors(self) -> bool:
        """Whether this store can search by meaning (SQLite always; Postgres with pgvector)."""
        ...

    async def prepare_caller(self, user_id: str, embedding_model: str) -> None:
        """Get ready to search the user's memories by meaning, before their first turn (a
        store that holds vectors in memory reads them now; the others have nothing to do)."""
        ...

    async def list_memories(self, user_id: str) -> list[Memory]: ...

    async def list_history(self, user_id: str) -> list[FactChange]:
        """The values the user's stable facts held before they were replaced, oldest first."""
        ...

    async def list_stating(self, user_id: str, category: str, key: str) -> list[Memory]:
        """The user's utterances that stated any value of the fact (category, key), replaced
        ones too: what forgetting the fact must also forget."""
        ...

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool:
        """Delete one memory and its history; a deleted fact's stating utterances are no
        longer searched (they state what is no longer true)."""
        ...

    async def delete_user(self, user_id: str, *, erased_at: float | None = None) -> int:
        """Delete the profile and every memory of the user, and record the erasure at
        `erased_at` (kept as the latest of all erasures), so that no write from before it can
        bring anything back; returns memories deleted."""
        ...

    async def stats(self) -> StoreStats:
        """The store's totals, for an operator (`caller-memory stats`): counts only, never a
        caller's data. One query (a SQL function on Postgres and Supabase)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a store holds, in numbers: no identity, uuid or memory text."""

    callers: int  # profiles
    facts: int  # current stable facts
    utterances: int  # the callers' own words kept (superseded ones included)
    superseded: int  # utterances that only state a replaced value: kept, never recalled
    replaced_values: int  # former values of facts, kept as history
    erasures: int  # erasure tombstones: callers erased, kept to refuse late writes

    @property
    def memories(self) -> int:
        return self.facts + self.utterances


# How many candidates of each kind a search gathers per result it returns: room for the
# ranking rule to reorder (`caller_memory.recall.fusion`).
CANDIDATES_PER_RESULT = 4

# The vector a search looks for: as the embedder gives it (a float32 array, not turned into
# Python floats on the event loop), or any sequence of floats.
SearchVector = Sequence[float] | npt.NDArray[np.float32]
# A search's query vector: at hand, or still being computed (None then means the embedder
# failed, and the search goes on by text alone).
QueryVector = SearchVector | Awaitable[SearchVector | None]


def write_times(captured_at: float | None, session_started_at: float | None) -> tuple[float, float]:
    """(captured_at, session_started_at) of a write, with the defaults every store applies:
    captured now, by a session that began when it was captured."""
    captured = time.time() if captured_at is None else float(captured_at)
    started = captured if session_started_at is None else float(session_started_at)
    return captured, started


def erasure_time(erased_at: float | None) -> float:
    """When an erasure happened: `erased_at`, or now."""
    return time.time() if erased_at is None else float(erased_at)


# -- counting failures, once for every backend -------------------------------------------------

S = TypeVar("S")

# Everything a store does (the protocol's operations), the label values of its error counter.
STORE_OPERATIONS = tuple(
    name
    for name, member in vars(MemoryStore).items()
    if not name.startswith("_") and inspect.iscoroutinefunction(member) and name != "aclose"
)
# Set while a store operation runs: one that calls another (an upsert that stores its
# vector) counts one failure, the outer one.
_IN_OPERATION: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "caller_memory_store_operation", default=False
)


def error_kind(exc: StorageError) -> str:
    """The label of a storage error: what the operator has to do differs for each."""
    if isinstance(exc, StorageUnavailableError):
        return "unavailable"
    if isinstance(exc, StorageSchemaError):
        return "schema"
    if isinstance(exc, StorageConfigError):
        return "config"
    return "other"


def _counted(
    operation: str, method: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _IN_OPERATION.get():
            return await method(self, *args, **kwargs)
        token = _IN_OPERATION.set(True)
        try:
            return await method(self, *args, **kwargs)
        except StorageError as exc:
            metrics.store_failed(str(getattr(self, "name", "")), operation, error_kind(exc))
            raise
        finally:
            _IN_OPERATION.reset(token)

    return counted


def counts_store_errors(cls: type[S]) -> type[S]:
    """Class decorator of a store backend: each operation of the `MemoryStore` protocol it
    has (its own or inherited: `search_candidates` comes from `HybridSearch`) counts its
    `StorageError`s by backend (`name`), operation and kind, then raises them as they were."""
    for operation in STORE_OPERATIONS:
        method = getattr(cls, operation, None)
        if method is not None and inspect.iscoroutinefunction(method):
            setattr(cls, operation, _counted(operation, method))
    return cls
