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
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from caller_memory.stores.base import erasure_time, write_times
from caller_memory.stores.errors import StorageError, StorageSchemaError, StorageUnavailableError
from caller_memory.stores.rows import memory_from_row, profile_from_row
from caller_memory.types import CATEGORY_PRIORITY, Memory, MemoryKind, Profile, WriteOutcome

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
)
FILE_MODE = 0o600
DIR_MODE = 0o700
BUSY_TIMEOUT_MS = 5000
MAX_QUERY_TERMS = 32
_TERM_RE = re.compile(r"[^\W_]+", re.UNICODE)  # "_" separates words, as in Postgres


def fts_match_expression(user_id: str, query: str) -> str | None:
    """The FTS5 query for `query`'s words within one user's memories; None if no words.

    Every word is quoted and the words are OR-ed, so operator characters and keywords in the
    caller's text (`"`, `*`, `NEAR`, `OR`, `-`) are searched as plain words, never parsed as
    syntax. The user's token comes from the uuid itself, never from caller text.
    """
    terms: list[str] = []
    for term in _TERM_RE.findall(query.lower()):
        quoted = f'"{term}"'
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


class SQLiteMemoryStore:
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
                conn.executescript("BEGIN IMMEDIATE;\n" + rest.split("\n", 1)[1] + "\nCOMMIT;")
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
    ) -> WriteOutcome:
        captured_at, session_started_at = write_times(captured_at, session_started_at)

        # The write rule of `MemoryStore.upsert_memory`, decided inside one write transaction
        # (BEGIN IMMEDIATE holds the file's write lock, so an erasure cannot slip in between).
        def op(conn: sqlite3.Connection) -> WriteOutcome:
            now = _now()
            conn.execute("BEGIN IMMEDIATE")
            erased = conn.execute(
                "SELECT 1 FROM memory_erasures WHERE user_id = ? AND erased_at >= ?",
                (user_id, session_started_at),
            ).fetchone()
            if erased is not None:
                conn.execute("ROLLBACK")
                return WriteOutcome.ERASED
            existing = conn.execute(
                "SELECT captured_at FROM memories WHERE user_id = ? AND category = ? AND key = ?",
                (user_id, category, key),
            ).fetchone()
            if existing is not None and existing["captured_at"] > captured_at:
                conn.execute("ROLLBACK")
                return WriteOutcome.STALE
            conn.execute(
                "INSERT INTO profiles(id, original_identity, is_first_login, created_at, "
                "updated_at) VALUES (?, ?, 1, ?, ?) ON CONFLICT(id) DO NOTHING",
                (user_id, identity, now, now),
            )
            conn.execute(
                "INSERT INTO memories(user_id, category, key, value, kind, captured_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(user_id, category, key) DO UPDATE SET "
                "value = excluded.value, kind = excluded.kind, "
                "captured_at = excluded.captured_at, updated_at = excluded.updated_at",
                (user_id, category, key, value, str(kind), captured_at, now, now),
            )
            if existing is None and kind == MemoryKind.UTTERANCE and max_utterances is not None:
                conn.execute(
                    "DELETE FROM memories WHERE id IN (SELECT id FROM memories "
                    "WHERE user_id = ? AND kind = 'utterance' "
                    "ORDER BY captured_at DESC, id DESC LIMIT -1 OFFSET ?)",
                    (user_id, max(max_utterances, 0)),
                )
            conn.execute("COMMIT")
            return WriteOutcome.STORED

        return await self._run(op)

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM memories WHERE user_id = ? AND category = ? AND key = ?",
                (user_id, category, key),
            ).fetchone()
            return row["value"] if row else None

        return await self._run(op)

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        match = fts_match_expression(user_id, query)

        def op(conn: sqlite3.Connection) -> list[Memory]:
            if match is None:
                rows = conn.execute(
                    "SELECT m.* FROM memories m JOIN memory_categories c USING (category) "
                    "WHERE m.user_id = ? "
                    "ORDER BY m.kind = 'utterance', c.priority, "
                    "m.updated_at DESC LIMIT ?",
                    (user_id, limit),
                ).fetchall()
                return [memory_from_row(r, score=0.0) for r in rows]
            # FTS5's `ORDER BY rank LIMIT` keeps only the best candidates while it scans; a few
            # more than asked for leave room for the category and recency tie-breakers.
            rows = conn.execute(
                "SELECT m.*, -hits.rank AS score FROM ("
                "  SELECT rowid, rank FROM memory_search_index"
                "  WHERE memory_search_index MATCH ? ORDER BY rank LIMIT ?"
                ") AS hits JOIN memories m ON m.id = hits.rowid "
                "JOIN memory_categories c ON c.category = m.category "
                "WHERE m.user_id = ? "
                "ORDER BY score DESC, c.priority, m.updated_at DESC LIMIT ?",
                (match, limit * 4, user_id, limit),
            ).fetchall()
            return [memory_from_row(r) for r in rows]

        return await self._run_read(op)

    async def list_memories(self, user_id: str) -> list[Memory]:
        def op(conn: sqlite3.Connection) -> list[Memory]:
            rows = conn.execute(
                "SELECT m.* FROM memories m JOIN memory_categories c USING (category) "
                "WHERE m.user_id = ? ORDER BY c.priority, m.key",
                (user_id,),
            ).fetchall()
            return [memory_from_row(r, score=0.0) for r in rows]

        return await self._run(op)

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM memories WHERE user_id = ? AND category = ? AND key = ?",
                (user_id, category, key),
            )
            return cur.rowcount > 0

        return await self._run(op)

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
            cur = conn.execute("DELETE FROM memories WHERE user_id = ?", (user_id,))
            deleted = cur.rowcount
            conn.execute("DELETE FROM profiles WHERE id = ?", (user_id,))
            conn.execute("COMMIT")
            return deleted

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
            conn.execute(backfill)


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
