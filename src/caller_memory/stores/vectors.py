"""Memories' vectors in the stores: how they are stored, and search by meaning on SQLite.

Every vector is 384 float32 values, L2-normalised by the embedder, stored with the name of the
model that made it (vectors of different models are never compared). Postgres and Supabase
store them in pgvector's `vector(384)` and search them in SQL; SQLite keeps them as BLOBs and
this module searches them: an exact scan of the caller's vectors, held in memory once read
(`VectorCache`), so a turn's search does not re-read them from disk. Every store combines its
search by words with its search by meaning by one rule (`HybridSearch`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import numpy.typing as npt

from caller_memory.stores.base import CANDIDATES_PER_RESULT, QueryVector, SearchVector
from caller_memory.stores.rows import memory_from_row
from caller_memory.types import Candidate

logger = logging.getLogger("caller_memory.stores.vectors")

DIMENSIONS = 384
# A caller's vectors held in memory are read again from the file after this long (another
# worker process may have rewritten some of them); this process's own writes are applied at
# once. The read runs in the background: searches meanwhile use the vectors already held.
REFRESH_S = 30.0
# At most this many vectors are held in memory, all callers together (~1.5 KB each).
MAX_CACHED_VECTORS = 250_000
# Nearest vectors read beyond those asked for, in case some rows changed since they were cached.
STALE_HEADROOM = 8
# A caller's buffer has room for an eighth more vectors than it was read with (at least this
# many: 24 KB) and doubles when full; hundreds of callers in one process each hold one.
MIN_CAPACITY = 16
# Rows looked up by id are still checked to be the caller's, but with the unary `+` SQLite
# does not use an index on user_id for it: the planner otherwise walks all the caller's rows in
# that index to find a few dozen ids (1.2 ms instead of 0.1 ms for 40 rows of a caller with
# 10,000 memories).
_NOT_BY_USER_INDEX = "+user_id = ?"
# What a search candidate is made of (`memory_from_row` and the neighbour boost's session and
# turn): never the vector, which would be read from the file for every candidate for nothing.
CANDIDATE_COLUMNS = (
    "id",
    "category",
    "key",
    "value",
    "created_at",
    "updated_at",
    "kind",
    "session_id",
    "turn_index",
)


def encode_vector(vector: Sequence[float] | npt.NDArray[np.float32]) -> bytes:
    """A vector as stored in SQLite: float32, little-endian."""
    return np.asarray(vector, dtype="<f4").tobytes()


def vector_literal(vector: Sequence[float] | npt.NDArray[np.float32]) -> str:
    """A vector as pgvector reads it from text: `[0.1,0.2,...]`."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


# A scan of at least this many rows gives its second half to the scan helper thread (one per
# process) when it is free: the scan is bound by memory bandwidth, which one core does not
# fill (100,000 rows: 6.7 ms on one thread, 4.9 ms on two, p50). Below it, handing over costs
# more than it saves.
SHARED_SCAN_ROWS = 32_768
_scan_helper: ThreadPoolExecutor | None = None
_scan_helper_lock = threading.Lock()


def _helper() -> ThreadPoolExecutor:
    global _scan_helper
    with _scan_helper_lock:
        if _scan_helper is None:
            _scan_helper = ThreadPoolExecutor(1, thread_name_prefix="vector-scan")
        return _scan_helper


def _forget_the_parents_helper() -> None:
    """In a forked child: the parent's helper thread does not exist here, and its executor
    would queue every half forever (each holding the caller's vectors); start afresh."""
    global _scan_helper, _scan_helper_lock
    _scan_helper, _scan_helper_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_the_parents_helper)


def _scan(
    matrix: npt.NDArray[np.float32], query: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """`matrix @ query`, the second half of a large matrix on the helper thread if it takes it
    up in time; a half it has not started is scanned here instead (the helper may be busy with
    another caller's scan), so a search never waits in its queue."""
    scores = np.empty(len(matrix), dtype=np.float32)
    if len(matrix) < SHARED_SCAN_ROWS:
        return np.einsum("ij,j->i", matrix, query, out=scores)
    half = len(matrix) // 2
    second = _helper().submit(np.einsum, "ij,j->i", matrix[half:], query, out=scores[half:])
    np.einsum("ij,j->i", matrix[:half], query, out=scores[:half])
    if second.cancel():  # not started: the helper is busy
        np.einsum("ij,j->i", matrix[half:], query, out=scores[half:])
    else:
        second.result()
    return scores


def merge_candidates(*found: Iterable[Candidate]) -> list[Candidate]:
    """One candidate per memory from several searches, each with every score it got."""
    merged: dict[tuple[str, str], Candidate] = {}
    for candidates in found:
        for candidate in candidates:
            key = (candidate.memory.category, candidate.memory.key)
            seen = merged.get(key)
            if seen is None:
                merged[key] = candidate
                continue
            merged[key] = Candidate(
                memory=seen.memory,
                lexical=seen.lexical if seen.lexical is not None else candidate.lexical,
                dense=seen.dense if seen.dense is not None else candidate.dense,
                session_id=seen.session_id or candidate.session_id,
                turn_index=seen.turn_index if seen.turn_index is not None else candidate.turn_index,
            )
    return list(merged.values())


class HybridSearch:
    """`MemoryStore.search_candidates` for every store: the one rule, given the store's two
    lookups, `_lexical(user_id, query, n)` (by words) and `_dense(user_id, vector, model, n)`
    (by meaning), each asked for `CANDIDATES_PER_RESULT` per result.

    The search by words starts at once, while the query's vector may still be computed
    (`embedding` is then an awaitable): a turn waits for the embedding and the search by
    meaning, not for the search by words as well. A memory both found comes back once with
    both scores (`merge_candidates`). If one lookup fails, the other is cancelled.
    """

    async def _lexical(self, user_id: str, query: str, limit: int) -> list[Candidate]:
        raise NotImplementedError

    async def _dense(
        self, user_id: str, embedding: SearchVector, model: str, limit: int
    ) -> list[Candidate]:
        raise NotImplementedError

    async def search_candidates(
        self,
        user_id: str,
        query: str,
        limit: int,
        *,
        embedding: QueryVector | None = None,
        embedding_model: str | None = None,
    ) -> list[Candidate]:
        wanted = limit * CANDIDATES_PER_RESULT

        async def by_meaning(model: str, pending: QueryVector) -> list[Candidate]:
            vector = await pending if inspect.isawaitable(pending) else pending
            if vector is None:  # the embedder failed: by words alone this time
                return []
            return await self._dense(user_id, vector, model, wanted)

        searches: list[asyncio.Task[list[Candidate]]] = []
        if query.strip():
            searches.append(asyncio.ensure_future(self._lexical(user_id, query, wanted)))
        if embedding is not None and embedding_model is not None:
            searches.append(asyncio.ensure_future(by_meaning(embedding_model, embedding)))
        elif inspect.iscoroutine(embedding):
            embedding.close()  # a vector no model can be searched by: never computed
        try:
            return merge_candidates(*await asyncio.gather(*searches))
        except BaseException:
            for search in searches:
                search.cancel()
            raise


def _ids_and_matrix(
    rows: Sequence[sqlite3.Row | tuple[int, bytes]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(id, embedding BLOB) rows as an id array and a matrix of their vectors."""
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    blob = b"".join(r[1] for r in rows)
    matrix = np.frombuffer(blob, dtype="<f4").reshape(len(rows), DIMENSIONS)
    return ids, matrix.astype(np.float32, copy=False)


@dataclass(frozen=True)
class _CallerVectors:
    """One caller's vectors of one model, as a search sees them.

    Rows `[:size]` of `matrix` are this entry's; the buffer has room after them, so a write
    adds its row to the same buffer instead of copying all of them (150 MB at 100,000
    memories). A published entry never changes: a newer one may write rows after `size` (this
    one never reads them), and a row rewritten since is marked in a new `replaced` mask, not
    overwritten.
    """

    ids: npt.NDArray[np.int64]  # one per row in use
    matrix: npt.NDArray[np.float32]  # the buffer: `size` rows in use, then room
    replaced: npt.NDArray[np.bool_]  # one per row in use: rows a newer version replaced
    max_id: int
    loaded_at: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, ids: npt.NDArray[np.int64], matrix: npt.NDArray[np.float32]) -> _CallerVectors:
        room = len(ids) + max(len(ids) // 8, MIN_CAPACITY)
        buffer = np.empty((room, DIMENSIONS), dtype=np.float32)
        buffer[: len(ids)] = matrix
        return cls(ids, buffer, np.zeros(len(ids), dtype=np.bool_), int(ids.max(initial=0)))

    @property
    def size(self) -> int:
        return len(self.ids)

    @cached_property
    def replaced_count(self) -> int:
        return int(self.replaced.sum())

    @property
    def live(self) -> int:
        return self.size - self.replaced_count

    def scores(self, query: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Cosine similarity of every row with `query`; -inf for replaced rows.

        `einsum`, not `@`: the product runs on the calling thread alone, with the GIL
        released. `@` hands it to OpenBLAS's threads, which take both cores of a small machine
        from the event loop for up to 16 ms and, called from the store's threads, made one
        search in a hundred take 8-10 ms instead of 0.3 (10,000 memories); at 100,000
        memories `einsum` on one thread is as fast at p99 as OpenBLAS on two. A large scan
        is shared with a helper thread when it is free (`_scan`).
        """
        scores = _scan(self.matrix[: self.size], query)
        if self.replaced_count:
            scores[self.replaced] = -np.inf
        return scores

    def with_rows(
        self,
        ids: npt.NDArray[np.int64],
        matrix: npt.NDArray[np.float32],
        *,
        replacing: Sequence[int] = (),
    ) -> _CallerVectors:
        """This entry with rows `ids` added, and the rows holding the ids `replacing` marked
        replaced; compacted into a new buffer when most of its rows are replaced ones."""
        replaced = self.replaced | np.isin(self.ids, replacing) if len(replacing) else self.replaced
        dead = int(replaced.sum())
        if dead > self.size - dead:  # more replaced rows than live ones: a buffer afresh
            keep = ~replaced
            fresh = _CallerVectors.of(
                np.concatenate([self.ids[keep], ids]),
                np.vstack([self.matrix[: self.size][keep], matrix]),
            )
            return replace(fresh, max_id=max(fresh.max_id, self.max_id), loaded_at=self.loaded_at)
        buffer = self.matrix
        size = self.size + len(ids)
        if size > len(buffer):
            buffer = np.empty((max(2 * len(buffer), size), DIMENSIONS), dtype=np.float32)
            buffer[: self.size] = self.matrix[: self.size]
        buffer[self.size : size] = matrix
        return _CallerVectors(
            np.concatenate([self.ids, ids]),
            buffer,
            np.concatenate([replaced, np.zeros(len(ids), dtype=np.bool_)]),
            int(ids.max(initial=self.max_id)),
            self.loaded_at,
        )


@dataclass
class _Refresh:
    """A caller's vectors being re-read in the background: since when, and the rows written
    since then (what was read may lack them)."""

    started: float = field(default_factory=time.monotonic)
    since: set[int] = field(default_factory=set)


class VectorCache:
    """The SQLite store's in-memory copy of each caller's vectors, per model (see module
    docstring). Thread-safe: the store's worker threads share it."""

    def __init__(
        self,
        *,
        max_vectors: int = MAX_CACHED_VECTORS,
        in_background: Callable[[Callable[[sqlite3.Connection], None]], None] | None = None,
    ) -> None:
        """`in_background(job)` runs `job` with a connection on another thread (the store's
        executor) without waiting for it: a caller's vectors due for their periodic re-read
        are read there while searches go on with those already held (at 100,000 memories the
        read is 150 MB, far beyond a recall's budget). Without it, the due search re-reads
        them itself."""
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _CallerVectors] = OrderedDict()
        # rows written since each entry was read; one lock per entry, so that two searches of
        # one caller never store an entry that misses a change the other one applied
        self._changed: dict[tuple[str, str], set[int]] = {}
        self._entry_locks: dict[tuple[str, str], threading.Lock] = {}
        # entries being re-read in the background
        self._refreshing: dict[tuple[str, str], _Refresh] = {}
        self._in_background = in_background
        self._max_vectors = max_vectors

    def invalidate(self, user_id: str) -> None:
        """This process deleted some of the caller's memories: read all their vectors again
        next time."""
        with self._lock:
            for entry_key in [k for k in self._entries if k[0] == user_id]:
                del self._entries[entry_key]
                self._changed.pop(entry_key, None)
            for entry_key in [k for k in self._refreshing if k[0] == user_id]:
                del self._refreshing[entry_key]  # what that read finds is not kept

    def changed(self, user_id: str, row_id: int) -> None:
        """This process wrote the caller's memory `row_id` (new, or a new value or vector):
        the next search reads that row again, and only it, so a caller's search after each
        thing they say costs one row, not all their vectors."""
        with self._lock:
            for entry_key in [k for k in self._entries if k[0] == user_id]:
                self._changed.setdefault(entry_key, set()).add(row_id)
            for entry_key, refresh in self._refreshing.items():
                if entry_key[0] == user_id:
                    refresh.since.add(row_id)

    def nearest(
        self,
        conn: sqlite3.Connection,
        user_id: str,
        model: str,
        query: SearchVector,
        limit: int,
    ) -> list[Candidate]:
        """The caller's current memories nearest in meaning to `query` (cosine similarity),
        among those embedded by `model`; runs on a store thread."""
        entry = self._entry(conn, user_id, model)
        if entry is None or entry.live == 0:
            return []
        scores = entry.scores(np.asarray(query, dtype=np.float32))
        # As many as asked for, as Postgres returns. A few more are read in case some were
        # superseded or deleted since they were cached (a fact that changed marks its old
        # words; the utterance cap drops the oldest): those are not returned, and the next
        # search reads them again, which drops them.
        k = min(limit + STALE_HEADROOM, entry.live)
        top = np.argpartition(scores, len(scores) - k)[-k:]  # the k best, not yet in order
        top = top[np.argsort(-scores[top])]
        wanted = {int(entry.ids[i]): float(scores[i]) for i in top}
        marks = ",".join("?" * len(wanted))
        rows = conn.execute(
            f"SELECT {', '.join(CANDIDATE_COLUMNS)} FROM memories "
            f"WHERE id IN ({marks}) AND {_NOT_BY_USER_INDEX} "
            "AND superseded_at IS NULL AND embedding_model = ?",
            (*wanted, user_id, model),
        ).fetchall()
        stale = set(wanted) - {r["id"] for r in rows}
        for row_id in stale:
            self.changed(user_id, row_id)
        found = [
            Candidate(
                memory=memory_from_row(r, score=wanted[r["id"]]),
                dense=wanted[r["id"]],
                session_id=r["session_id"],
                turn_index=r["turn_index"],
            )
            for r in rows
        ]
        found.sort(key=lambda c: -(c.dense or 0.0))
        return found[:limit]

    def prepare(self, conn: sqlite3.Connection, user_id: str, model: str) -> None:
        """Read the caller's vectors now (a session starting), so their first search does not."""
        self._entry(conn, user_id, model)

    def _entry(self, conn: sqlite3.Connection, user_id: str, model: str) -> _CallerVectors | None:
        key = (user_id, model)
        with self._lock:
            entry_lock = self._entry_locks.setdefault(key, threading.Lock())
        with entry_lock:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                changed = self._changed.pop(key, set())
            due = entry is not None and time.monotonic() - entry.loaded_at > REFRESH_S
            if due and self._in_background is None:
                entry = None
            if entry is None:
                entry = self._load(conn, user_id, model, after=0, into=None)
            else:
                if changed:
                    entry = self._reload(conn, user_id, model, entry, changed)
                entry = self._load(conn, user_id, model, after=entry.max_id, into=entry)
            with self._lock:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                self._evict()
        if due and self._in_background is not None:
            self._refresh_in_background(key)
        return entry

    def _refresh_in_background(self, key: tuple[str, str]) -> None:
        refresh = _Refresh()
        with self._lock:
            running = self._refreshing.get(key)
            if running is not None and refresh.started - running.started < REFRESH_S:
                return  # one at a time (one that never ran is replaced after REFRESH_S)
            self._refreshing[key] = refresh
        assert self._in_background is not None
        try:
            self._in_background(lambda conn: self._refresh(conn, key, refresh))
        except Exception as exc:  # the store is closing: the next search tries again
            with self._lock:
                if self._refreshing.get(key) is refresh:
                    del self._refreshing[key]
            logger.debug("could not start re-reading a caller's vectors (%s)", exc)

    def _refresh(self, conn: sqlite3.Connection, key: tuple[str, str], refresh: _Refresh) -> None:
        """Read the caller's vectors afresh, then put them in place of those held. A row
        written while they were read may be missing from what was read (and a search may have
        applied it to the old entry meanwhile): every such row is read again by the next
        search, so no write is lost."""
        user_id, model = key
        try:
            fresh = self._load(conn, user_id, model, after=0, into=None)
        except BaseException:
            with self._lock:
                if self._refreshing.get(key) is refresh:
                    del self._refreshing[key]
            raise
        with self._lock:
            entry_lock = self._entry_locks.setdefault(key, threading.Lock())
        with entry_lock, self._lock:
            if self._refreshing.get(key) is not refresh:
                return  # forgotten (or replaced) meanwhile: what was read is not kept
            del self._refreshing[key]
            if key not in self._entries:
                return  # evicted meanwhile: the next search reads afresh
            self._entries[key] = fresh
            self._changed[key] = self._changed.get(key, set()) | refresh.since
            self._evict()

    @staticmethod
    def _load(
        conn: sqlite3.Connection,
        user_id: str,
        model: str,
        *,
        after: int,
        into: _CallerVectors | None,
    ) -> _CallerVectors:
        """The caller's vectors with ids above `after` (all of them with `into` None), added
        to `into`: newer rows arrive with higher ids, and rows rewritten since are read again
        when the entry is refreshed or dropped."""
        rows = conn.execute(
            "SELECT id, embedding FROM memories WHERE user_id = ? AND id > ? "
            "AND embedding IS NOT NULL AND embedding_model = ? AND superseded_at IS NULL "
            "ORDER BY id",
            (user_id, after, model),
        ).fetchall()
        if not rows and into is not None:
            return into
        ids, matrix = _ids_and_matrix(rows)
        if into is None:
            return _CallerVectors.of(ids, matrix)
        return into.with_rows(ids, matrix)

    @staticmethod
    def _reload(
        conn: sqlite3.Connection,
        user_id: str,
        model: str,
        entry: _CallerVectors,
        row_ids: set[int],
    ) -> _CallerVectors:
        """`entry` with the rows `row_ids` read again (those at or below its newest row; newer
        ones come with the next incremental load)."""
        known = sorted(i for i in row_ids if i <= entry.max_id)
        if not known:
            return entry
        marks = ",".join("?" * len(known))
        rows = conn.execute(
            f"SELECT id, embedding FROM memories WHERE id IN ({marks}) AND {_NOT_BY_USER_INDEX} "
            "AND embedding IS NOT NULL AND embedding_model = ? AND superseded_at IS NULL",
            (*known, user_id, model),
        ).fetchall()
        ids, matrix = _ids_and_matrix(rows)
        return entry.with_rows(ids, matrix, replacing=known)

    def _evict(self) -> None:
        total = sum(len(e.matrix) for e in self._entries.values())  # the room counts too
        while total > self._max_vectors and len(self._entries) > 1:
            dropped_key, dropped = self._entries.popitem(last=False)
            self._changed.pop(dropped_key, None)
            self._entry_locks.pop(dropped_key, None)
            total -= len(dropped.matrix)
