"""The embedded default store: one SQLite file, no server, no setup.

Every operation runs on a small thread pool owned by the store, so async callers never block
their event loop on disk I/O. Each pool thread keeps its own connection; the file is in WAL
mode with a busy timeout, so many threads and tasks (and several worker processes) can use
one file at once. Search uses an FTS5 index with the Porter stemmer and BM25 ranking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from caller_memory.stores.base import (
    CANDIDATES_PER_RESULT,
    SearchVector,
    StoreStats,
    counts_store_errors,
    erasure_time,
    write_times,
)
from caller_memory.stores.errors import StorageError, StorageSchemaError, StorageUnavailableError
from caller_memory.stores.rows import (
    fact_change_from_row,
    memory_from_row,
    profile_from_row,
    stats_from_row,
    unembedded_from_row,
)
from caller_memory.stores.vectors import (
    CANDIDATE_COLUMNS,
    HybridSearch,
    VectorCache,
    encode_vector,
)
from caller_memory.text import cjk_pairs, words
from caller_memory.types import (
    CATEGORY_PRIORITY,
    Candidate,
    FactChange,
    Memory,
    MemoryDetails,
    MemoryKind,
    Profile,
    Statement,
    Unembedded,
    WriteOutcome,
)

logger = logging.getLogger("caller_memory.stores.sqlite")

T = TypeVar("T")

SCHEMA_FILE = Path(__file__).with_name("sqlite_schema.sql")
_UPGRADE_MARK = "-- @upgrade-columns"
# Columns added after the first release, with how to fill them in existing rows.
_ADDED_COLUMNS = (
    (
        "kind",
        "TEXT NOT NULL DEFAULT 'fact' CHECK (kind IN ('fact', 'utterance'))",
        "UPDATE memories SET kind = 'utterance' WHERE key LIKE 'utterance\\_%' ESCAPE '\\'",
    ),
    (
        "captured_at",
        "REAL NOT NULL DEFAULT 0",
        "UPDATE memories SET captured_at = (julianday(updated_at) - 2440587.5) * 86400.0",
    ),
    ("context", "TEXT", None),
    ("said_on", "TEXT", None),
    ("cjk_pairs", "TEXT", None),
    ("session_id", "TEXT", None),
    ("turn_index", "INTEGER", None),
    ("superseded_at", "REAL", None),
    ("embedding", "BLOB", None),
    ("embedding_model", "TEXT", None),
)
# The full-text index of the first releases (key and value only), replaced by
# `memory_text_index`; `PRAGMA user_version` records that the move is done.
_OLD_INDEX_OBJECTS = (
    "DROP TRIGGER IF EXISTS memory_search_insert",
    "DROP TRIGGER IF EXISTS memory_search_delete",
    "DROP TRIGGER IF EXISTS memory_search_update",
    "DROP TABLE IF EXISTS memory_search_index",
)
SCHEMA_VERSION = 3
FILE_MODE = 0o600
DIR_MODE = 0o700
BUSY_TIMEOUT_MS = 5000
MAX_QUERY_TERMS = 32
# BM25 over the index's columns: the user token not at all, key words double, the value, the
# context and the day little, CJK pairs as the value. Called by name in `ORDER BY`, not as
# FTS5's configured `rank`: ranking by `rank` takes FTS5's sorted-match path, which gave the
# same order 40 % slower (p50 11.0 against 6.9 ms, p99 23 against 12 ms, 100,000 memories).
BM25_RANK = "bm25(memory_text_index, 0.0, 2.0, 1.0, 0.3, 0.3, 1.0)"
# The caller's utterances that stated a fact, marked superseded at `?` (all of them, or those
# that stated a value other than the one still true: `value IS NOT NULL` holds for every row).
# Found through the index on the caller's keys (`memories_user_key`).
SUPERSEDE_WORDS = (
    "UPDATE memories SET superseded_at = ? WHERE user_id = ? AND kind = 'utterance' "
    "AND superseded_at IS NULL AND key IN (SELECT utterance_key FROM memory_statements "
    "WHERE user_id = ? AND category = ? AND key = ? AND value IS NOT ?)"
)


def fts_match_expression(user_id: str, query: str) -> str | None:
    """The FTS5 query for `query`'s words within one user's memories; None if no words.

    Every word is quoted and the words are OR-ed, so operator characters and keywords in the
    caller's text (`"`, `*`, `NEAR`, `OR`, `-`) are searched as plain words, never parsed as
    syntax. The user's token comes from the uuid itself, never from caller text.
    """
    terms: list[str] = []
    for term in words(query):  # "_" separates words, as in Postgres
        quoted = '"{}"'.format(term.replace('"', ""))
        if quoted not in terms:
            terms.append(quoted)
        if len(terms) >= MAX_QUERY_TERMS:
            break
    if not terms:
        return None
    return f'user_tok:"u{uuid.UUID(user_id).hex}" AND ({" OR ".join(terms)})'


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting out other connections doing the same.

    Switching a new file to WAL takes an exclusive lock, and when two connections switch it
    at the same moment SQLite answers "database is locked" at once instead of waiting for the
    busy timeout (deadlock avoidance). So the first concurrent sessions on a fresh file, or
    several workers starting together, would fail; retry within the busy timeout instead.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class _GaveUp(Exception):
    """The reader gave up before its query started; nobody awaits this."""


class _Interruptible:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: sqlite3.Connection | None = None
        self.cancelled = False


@counts_store_errors
class SQLiteMemoryStore(HybridSearch):
    """`MemoryStore` on a local SQLite file (see module docstring)."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, max_threads: int = 4) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._closed = False
        self._executor = ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="sqlite-memory"
        )
        # each caller's vectors, held in memory once read (search by meaning scans them)
        self._vectors = VectorCache(in_background=self._in_background)

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            # Creating the tables may have failed when this connection was opened (another
            # process held the write lock): try again, or the tables would never be made.
            self._ensure_schema(conn)
            return conn
        if self._closed:
            raise StorageUnavailableError("the SQLite memory store is closed")
        try:
            _create_private_file(self.path)
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise StorageUnavailableError(
                f"cannot open the SQLite memory database at {self.path}: {exc}. "
                "Set MEMORY_SQLITE_PATH to a file in a writable directory."
            ) from exc
        with self._conn_lock:
            self._connections.append(conn)
        self._local.conn = conn
        self._ensure_schema(conn)
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                # Write transactions: several processes opening a new file at once would
                # otherwise all pass `IF NOT EXISTS` and collide creating the FTS5 table's
                # shadow tables ("vtable constructor failed"); the lock serialises them. Two
                # of them (executescript commits whatever is open before it runs): the tables
                # and their new columns, then indexes, triggers and the FTS5 table.
                tables, rest = SCHEMA_FILE.read_text(encoding="utf-8").split(_UPGRADE_MARK, 1)
                conn.executescript("BEGIN IMMEDIATE;\n" + tables)
                _add_missing_columns(conn)
                conn.execute("COMMIT")
                conn.executescript("BEGIN IMMEDIATE;\n" + rest.split("\n", 1)[1])
                _move_to_the_current_index(conn)
                conn.execute("COMMIT")
                conn.executemany(
                    "INSERT INTO memory_categories(category, priority) VALUES (?, ?) "
                    "ON CONFLICT(category) DO UPDATE SET priority = excluded.priority",
                    [(c.value, p) for c, p in CATEGORY_PRIORITY.items()],
                )
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _translate(exc, self.path) from exc
            self._schema_ready = True

    def _run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connect()
        try:
            return fn(conn)
        except BaseException as exc:
            # Any failure (also a value sqlite3 cannot bind, e.g. UnicodeEncodeError) must not
            # leave this thread's connection inside a transaction holding the write lock.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, self.path) from exc
            raise

    def _in_background(self, job: Callable[[sqlite3.Connection], None]) -> None:
        """Run `job` on a store thread without waiting for it; a failure is logged."""
        self._executor.submit(self._run_sync, job).add_done_callback(_log_background_failure)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run_sync, fn)
        except RuntimeError as exc:  # executor shut down
            if isinstance(exc, StorageError):
                raise
            raise StorageUnavailableError(f"the SQLite memory store is closed ({exc})") from exc

    async def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`_run` for a read the caller may give up on (recall's time budget): when the
        awaiting task is cancelled, the query is interrupted instead of holding a store
        thread until it finishes on its own."""
        handle = _Interruptible()

        def guarded(conn: sqlite3.Connection) -> T:
            with handle.lock:
                if handle.cancelled:
                    raise _GaveUp
                handle.conn = conn
            try:
                return fn(conn)
            finally:
                with handle.lock:
                    handle.conn = None

        try:
            return await self._run(guarded)
        except asyncio.CancelledError:
            with handle.lock:
                handle.cancelled = True
                if handle.conn is not None:
                    handle.conn.interrupt()
            raise

    # -- profiles ---------------------------------------------------------------------------

    async def ensure_profile(self, user_id: str, identity: str | None) -> tuple[Profile, bool]:
        def op(conn: sqlite3.Connection) -> tuple[Profile, bool]:
            now = _now()
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO profiles(id, original_identity, is_first_login, created_at, "
                "updated_at) VALUES (?, ?, 1, ?, ?) ON CONFLICT(id) DO NOTHING",
                (user_id, identity, now, now),
            )
            created = cur.rowcount == 1
            if not created and identity is not None:
                conn.execute(
                    "UPDATE profiles SET original_identity = ?, updated_at = ? "
                    "WHERE id = ? AND original_identity IS NULL",
                    (identity, now, user_id),
                )
            row = conn.execute("SELECT * FROM profiles WHERE id = ?", (user_id,)).fetchone()
            conn.execute("COMMIT")
            return profile_from_row(row), created

        return await self._run(op)

    async def get_profile(self, user_id: str) -> Profile | None:
        def op(conn: sqlite3.Connection) -> Profile | None:
            row = conn.execute("SELECT * FROM profiles WHERE id = ?", (user_id,)).fetchone()
            return profile_from_row(row) if row else None

        return await self._run(op)

    async def complete_first_login(self, user_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE profiles SET is_first_login = 0, updated_at = ? "
                "WHERE id = ? AND is_first_login = 1",
                (_now(), user_id),
            )
            return cur.rowcount == 1

        return await self._run(op)

    # -- memories ---------------------------------------------------------------------------

    async def upsert_memory(
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        identity: str | None = None,
        *,
        kind: str = MemoryKind.FACT,
        captured_at: float | None = None,
        session_started_at: float | None = None,
        max_utterances: int | None = None,
        details: MemoryDetails | None = None,
    ) -> WriteOutcome:
        captured_at, session_started_at = write_times(captured_at, session_started_at)
        extra = details or MemoryDetails()
        embedding = encode_vector(extra.embedding) if extra.embedding is not None else None

        # The write rule of `MemoryStore.upsert_memory`, decided inside one write transaction
        # (BEGIN IMMEDIATE holds the file's write lock, so an erasure cannot slip in between).
        def op(conn: sqlite3.Connection) -> tuple[WriteOutcome, int | None]:
            now = _now()
            conn.execute("BEGIN IMMEDIATE")
            erased = conn.execute(
                "SELECT 1 FROM memory_erasures WHERE user_id = ? AND erased_at >= ?",
                (user_id, session_started_at),
            ).fetchone()
            if erased is not None:
                conn.execute("ROLLBACK")
                return WriteOutcome.ERASED, None
            existing = conn.execute(
                "SELECT id, value, captured_at, embedding_model FROM memories "
                "WHERE user_id = ? AND category = ? AND key = ?",
                (user_id, category, key),
            ).fetchone()
            if existing is not None and existing["captured_at"] > captured_at:
                conn.execute("ROLLBACK")
                return WriteOutcome.STALE, None
            conn.execute(
                "INSERT INTO profiles(id, original_identity, is_first_login, created_at, "
                "updated_at) VALUES (?, ?, 1, ?, ?) ON CONFLICT(id) DO NOTHING",
                (user_id, identity, now, now),
            )
            superseded = (
                _superseded_since(conn, user_id, extra.states, captured_at)
                if kind == MemoryKind.UTTERANCE
                else None
            )
            # a vector is kept only while the value it was made of stays
            keep_vector = existing is not None and existing["value"] == value
            written = conn.execute(
                "INSERT INTO memories(user_id, category, key, value, kind, captured_at, "
                "created_at, updated_at, context, said_on, cjk_pairs, session_id, turn_index, "
                "superseded_at, embedding, embedding_model) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(user_id, category, key) DO UPDATE SET "
                "value = excluded.value, kind = excluded.kind, "
                "captured_at = excluded.captured_at, updated_at = excluded.updated_at, "
                "context = excluded.context, said_on = excluded.said_on, "
                "cjk_pairs = excluded.cjk_pairs, session_id = excluded.session_id, "
                "turn_index = excluded.turn_index, "
                "superseded_at = excluded.superseded_at, "
                "embedding = coalesce(excluded.embedding, "
                "  CASE WHEN ? THEN memories.embedding END), "
                "embedding_model = coalesce(excluded.embedding_model, "
                "  CASE WHEN ? THEN memories.embedding_model END)",
                (
                    user_id,
                    category,
                    key,
                    value,
                    str(kind),
                    captured_at,
                    now,
                    now,
                    extra.context,
                    extra.said_on,
                    cjk_pairs(value, extra.context),
                    extra.session_id,
                    extra.turn_index,
                    superseded,
                    embedding,
                    extra.embedding_model if embedding is not None else None,
                    keep_vector,
                    keep_vector,
                ),
            )
            if kind == MemoryKind.UTTERANCE and extra.states:
                conn.executemany(
                    "INSERT INTO memory_statements(user_id, utterance_key, category, key, "
                    "value) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(user_id, key, st.category, st.key, st.value) for st in extra.states],
                )
            if kind == MemoryKind.FACT and existing is not None and existing["value"] != value:
                _supersede(conn, user_id, category, key, existing, value, captured_at)
            if existing is None and kind == MemoryKind.UTTERANCE and max_utterances is not None:
                conn.execute(
                    "DELETE FROM memories WHERE id IN (SELECT id FROM memories "
                    "WHERE user_id = ? AND kind = 'utterance' "
                    "ORDER BY captured_at DESC, id DESC LIMIT -1 OFFSET ?)",
                    (user_id, max(max_utterances, 0)),
                )
            conn.execute("COMMIT")
            return WriteOutcome.STORED, existing[
                "id"
            ] if existing is not None else written.lastrowid

        outcome, row_id = await self._run(op)
        if row_id is not None:
            # the caller's vectors in memory re-read this row, not all of them: the rows this
            # write superseded or dropped are left out when a search reads its results
            self._vectors.changed(user_id, row_id)
        return outcome

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM memories WHERE user_id = ? AND category = ? AND key = ?",
                (user_id, category, key),
            ).fetchone()
            return row["value"] if row else None

        return await self._run(op)

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        return [c.memory for c in await self._lexical(user_id, query, limit)]

    async def _lexical(self, user_id: str, query: str, limit: int) -> list[Candidate]:
        match = fts_match_expression(user_id, query)
        columns = ", ".join(f"m.{c}" for c in CANDIDATE_COLUMNS)

        def op(conn: sqlite3.Connection) -> list[Candidate]:
            if match is None:
                rows = conn.execute(
                    f"SELECT {columns} FROM memories m JOIN memory_categories c USING (category) "
                    "WHERE m.user_id = ? AND m.superseded_at IS NULL "
                    "ORDER BY m.kind = 'utterance', c.priority, "
                    "m.updated_at DESC LIMIT ?",
                    (user_id, limit),
                ).fetchall()
                return [_candidate(r, lexical=None) for r in rows]
            # The best-ranked matches only (SQLite keeps them while it scans); a few more than
            # asked for leave room for superseded rows and the tie-breakers.
            rows = conn.execute(
                f"SELECT {columns}, hits.score FROM ("
                f"  SELECT rowid, -{BM25_RANK} AS score FROM memory_text_index"
                "  WHERE memory_text_index MATCH ? ORDER BY score DESC LIMIT ?"
                ") AS hits JOIN memories m ON m.id = hits.rowid "
                "JOIN memory_categories c ON c.category = m.category "
                "WHERE m.user_id = ? AND m.superseded_at IS NULL "
                "ORDER BY score DESC, c.priority, m.updated_at DESC LIMIT ?",
                (match, limit * CANDIDATES_PER_RESULT, user_id, limit),
            ).fetchall()
            return [_candidate(r, lexical=float(r["score"])) for r in rows]

        return await self._run_read(op)

    async def _dense(
        self, user_id: str, embedding: SearchVector, model: str, limit: int
    ) -> list[Candidate]:
        return await self._run_read(
            lambda conn: self._vectors.nearest(conn, user_id, model, embedding, limit)
        )

    async def set_embedding(
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        embedding: Sequence[float],
        embedding_model: str,
    ) -> bool:
        blob = encode_vector(embedding)

        def op(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "UPDATE memories SET embedding = ?, embedding_model = ? "
                "WHERE user_id = ? AND category = ? AND key = ? AND value = ? RETURNING id",
                (blob, embedding_model, user_id, category, key, value),
            ).fetchone()
            return None if row is None else int(row[0])

        row_id = await self._run(op)
        if row_id is not None:
            self._vectors.changed(user_id, row_id)
        return row_id is not None

    async def unembedded(self, embedding_model: str, limit: int) -> list[Unembedded]:
        def op(conn: sqlite3.Connection) -> list[Unembedded]:
            rows = conn.execute(
                "SELECT user_id, category, key, value, context, said_on, kind FROM memories "
                "WHERE embedding_model IS NOT ? AND superseded_at IS NULL ORDER BY id LIMIT ?",
                (embedding_model, limit),
            ).fetchall()
            return [unembedded_from_row(r) for r in rows]

        return await self._run(op)

    async def has_vectors(self) -> bool:
        return True  # an exact scan of the caller's vectors, in this process

    async def prepare_caller(self, user_id: str, embedding_model: str) -> None:
        # read the caller's vectors into memory now, not in their first turn's recall
        await self._run_read(lambda conn: self._vectors.prepare(conn, user_id, embedding_model))

    async def list_memories(self, user_id: str) -> list[Memory]:
        def op(conn: sqlite3.Connection) -> list[Memory]:
            rows = conn.execute(
                "SELECT m.* FROM memories m JOIN memory_categories c USING (category) "
                "WHERE m.user_id = ? ORDER BY c.priority, m.key",
                (user_id,),
            ).fetchall()
            return [memory_from_row(r, score=0.0) for r in rows]

        return await self._run(op)

    async def list_history(self, user_id: str) -> list[FactChange]:
        def op(conn: sqlite3.Connection) -> list[FactChange]:
            rows = conn.execute(
                "SELECT category, key, value, valid_from, valid_until FROM memory_history "
                "WHERE user_id = ? ORDER BY valid_until, id",
                (user_id,),
            ).fetchall()
            return [fact_change_from_row(r) for r in rows]

        return await self._run(op)

    async def list_stating(self, user_id: str, category: str, key: str) -> list[Memory]:
        def op(conn: sqlite3.Connection) -> list[Memory]:
            rows = conn.execute(
                "SELECT m.* FROM memories m WHERE m.user_id = ? AND m.kind = 'utterance' "
                "AND m.key IN (SELECT utterance_key FROM memory_statements "
                "WHERE user_id = ? AND category = ? AND key = ?) ORDER BY m.id",
                (user_id, user_id, category, key),
            ).fetchall()
            return [memory_from_row(r, score=0.0) for r in rows]

        return await self._run(op)

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "DELETE FROM memories WHERE user_id = ? AND category = ? AND key = ? "
                "RETURNING kind",
                (user_id, category, key),
            )
            gone = cur.fetchone()
            if gone is not None and gone["kind"] == MemoryKind.FACT:
                # the caller's words that stated it are no longer true either
                _supersede_words(conn, user_id, category, key, time.time())
            conn.execute(
                "DELETE FROM memory_history WHERE user_id = ? AND category = ? AND key = ?",
                (user_id, category, key),
            )
            conn.execute(
                "DELETE FROM memory_statements WHERE user_id = ? AND utterance_key = ?",
                (user_id, key),
            )
            conn.execute("COMMIT")
            return gone is not None

        deleted = await self._run(op)
        self._vectors.invalidate(user_id)
        return deleted

    async def delete_user(self, user_id: str, *, erased_at: float | None = None) -> int:
        erased_at = erasure_time(erased_at)

        def op(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO memory_erasures(user_id, erased_at) VALUES (?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET "
                "erased_at = max(erased_at, excluded.erased_at)",
                (user_id, erased_at),
            )
            conn.execute("DELETE FROM memory_statements WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM memory_history WHERE user_id = ?", (user_id,))
            cur = conn.execute("DELETE FROM memories WHERE user_id = ?", (user_id,))
            deleted = cur.rowcount
            conn.execute("DELETE FROM profiles WHERE id = ?", (user_id,))
            conn.execute("COMMIT")
            return deleted

        deleted = await self._run(op)
        self._vectors.invalidate(user_id)
        return deleted

    async def stats(self) -> StoreStats:
        def op(conn: sqlite3.Connection) -> StoreStats:
            # the counts of the Postgres function `caller_memory.memory_stats()`
            row = conn.execute(
                "SELECT (SELECT count(*) FROM profiles) AS callers, "
                "count(*) FILTER (WHERE kind = 'fact') AS facts, "
                "count(*) FILTER (WHERE kind = 'utterance') AS utterances, "
                "count(*) FILTER (WHERE superseded_at IS NOT NULL) AS superseded, "
                "(SELECT count(*) FROM memory_history) AS replaced_values, "
                "(SELECT count(*) FROM memory_erasures) AS erasures "
                "FROM memories"
            ).fetchone()
            return stats_from_row(row)

        return await self._run(op)

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._close_sync)

    def _close_sync(self) -> None:
        self._executor.shutdown(wait=True)
        with self._conn_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()


def _log_background_failure(future: Future[None]) -> None:
    exc = None if future.cancelled() else future.exception()
    if exc is not None:
        logger.warning(
            "re-reading a caller's vectors in the background failed (%s); searches go on "
            "with those held, and the next one tries again",
            exc,
        )


def _candidate(row: sqlite3.Row, *, lexical: float | None) -> Candidate:
    return Candidate(
        memory=memory_from_row(row, score=lexical or 0.0),
        lexical=lexical,
        session_id=row["session_id"],
        turn_index=row["turn_index"],
    )


def _superseded_since(
    conn: sqlite3.Connection, user_id: str, states: tuple[Statement, ...], captured_at: float
) -> float | None:
    """When an utterance captured at `captured_at` stating `states` was superseded already: a
    fact it states had a newer, different value by then (None: it was not)."""
    found: list[float] = []
    for statement in states:
        row = conn.execute(
            "SELECT captured_at FROM memories WHERE user_id = ? AND category = ? AND key = ? "
            "AND kind = 'fact' AND value <> ? AND captured_at > ?",
            (user_id, statement.category, statement.key, statement.value, captured_at),
        ).fetchone()
        if row is not None:
            found.append(row["captured_at"])
    return min(found) if found else None


def _supersede(
    conn: sqlite3.Connection,
    user_id: str,
    category: str,
    key: str,
    old: sqlite3.Row,
    value: str,
    captured_at: float,
) -> None:
    """A stable fact changed: keep its old value as history, and stop recalling the
    utterances that stated it."""
    conn.execute(
        "INSERT INTO memory_history(user_id, category, key, value, valid_from, valid_until) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, category, key, old["value"], old["captured_at"], captured_at),
    )
    _supersede_words(conn, user_id, category, key, captured_at, still_true=value)


def _supersede_words(
    conn: sqlite3.Connection,
    user_id: str,
    category: str,
    key: str,
    at: float,
    *,
    still_true: str | None = None,
) -> None:
    """Stop recalling the caller's words that stated `category`/`key` (with `still_true`,
    those that stated another value)."""
    conn.execute(SUPERSEDE_WORDS, (at, user_id, user_id, category, key, still_true))


def _create_private_file(path: Path) -> None:
    """Create the database file (and its directory) readable by this user only.

    Memories are personal data: the file is made 0600 (SQLite creates its -wal and -shm
    files with the database file's mode) and a directory this creates 0700. A file or
    directory that already exists keeps the mode its owner gave it.
    """
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    for directory in reversed(missing):  # `mkdir(parents=True)` ignores the mode for parents
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a memories table from an earlier release up to the current columns."""
    present = {row["name"] for row in conn.execute("PRAGMA table_info(memories)")}
    for name, definition, backfill in _ADDED_COLUMNS:
        if name not in present:
            conn.execute(f"ALTER TABLE memories ADD COLUMN {name} {definition}")
            if backfill is not None:
                conn.execute(backfill)


def _move_to_the_current_index(conn: sqlite3.Connection) -> None:
    """Once per file: drop the first releases' text index and index every memory in the
    current one (a contentless FTS5 table holds only what was inserted into it)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    for statement in _OLD_INDEX_OBJECTS:
        conn.execute(statement)
    conn.create_function("cjk_pairs", 2, cjk_pairs, deterministic=True)
    conn.execute(
        "UPDATE memories SET cjk_pairs = cjk_pairs(value, context) "
        "WHERE cjk_pairs(value, context) IS NOT NULL"
    )
    conn.execute("INSERT INTO memory_text_index(memory_text_index) VALUES ('delete-all')")
    conn.execute(
        "INSERT INTO memory_text_index(rowid, user_tok, key, value, context, said_on, cjk_pairs) "
        "SELECT id, 'u' || replace(user_id, '-', ''), key, value, coalesce(context, ''), "
        "coalesce(said_on, ''), coalesce(cjk_pairs, '') FROM memories"
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _translate(exc: sqlite3.Error, path: Path) -> StorageError:
    text = str(exc)
    lowered = text.lower()
    if "no such table" in lowered or "no such column" in lowered:
        return StorageSchemaError(
            f"the SQLite memory database at {path} is missing tables ({text}); delete the "
            "file to let the worker recreate it, or point MEMORY_SQLITE_PATH elsewhere"
        )
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError
    ):
        return StorageUnavailableError(
            f"the SQLite memory database at {path} cannot be used right now ({text}); "
            "check that the file and its directory are writable, or point MEMORY_SQLITE_PATH "
            "elsewhere"
        )
    return StorageError(f"SQLite memory store error: {text}")
