"""The Postgres store: any PostgreSQL 15+ database reached through `DATABASE_URL`.

The tables and every query live in the migrations under `supabase/migrations/`; this module
only calls the `caller_memory.memory_*` SQL functions they define, the same functions the Supabase
backend calls through PostgREST, so the two backends cannot drift apart. Apply the
migrations first (`supabase db push`, or each `supabase/migrations/*.sql` file in order with
`psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f FILE`).

`DATABASE_URL` must log in as the tables' owner or as a role with `service_role`'s rights:
row-level security is on with no policies, so any other role sees no rows at all.

The voice turn waits on some of these calls, so nothing here may hang: every operation
(including opening the pool and connecting) gives up after `DATABASE_TIMEOUT_SECONDS`
(default 2 s) and raises `StorageUnavailableError`; a query cut off that way is cancelled
on the server as well. asyncpg pools belong to the event loop that created them, and this
process runs more than one loop (the agent's, and the sync bridge's thread), so the store
keeps one lazily created pool per running loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from database_url import (
    DatabaseUrlError,
    parse_database_url,
    redact_database_url,
    scrub_database_secrets,
)
from memory_types import Memory, MemoryKind, Profile, WriteOutcome
from storage.base import erasure_time, write_times
from storage.errors import (
    StorageConfigError,
    StorageError,
    StorageSchemaError,
    StorageUnavailableError,
)

logger = logging.getLogger("memory_worker.storage.postgres")

DEFAULT_TIMEOUT_SECONDS = 2.0
DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 10
# How long handing a connection back (resetting it, or waiting for a cancelled query to
# stop) may take before the connection is closed instead.
CLEANUP_GRACE_SECONDS = 0.5
MIGRATIONS_HINT = (
    "apply the migrations in supabase/migrations/ (`supabase db push`, or each "
    "supabase/migrations/*.sql file in order with "
    '`psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f FILE`)'
)

# SQLSTATE classes and codes, by what the operator can do about them.
_SCHEMA_ERRORS = (
    asyncpg.exceptions.UndefinedTableError,  # 42P01
    asyncpg.exceptions.UndefinedFunctionError,  # 42883
    asyncpg.exceptions.UndefinedColumnError,  # 42703
    asyncpg.exceptions.InvalidSchemaNameError,  # 3F000
)
_CONFIG_ERRORS = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28000, 28P01 (password)
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000 (no such database)
    asyncpg.exceptions.InsufficientPrivilegeError,  # 42501
    asyncpg.exceptions.ClientConfigurationError,
)
_UNAVAILABLE_ERRORS = (
    OSError,  # refused, reset, no route, DNS failure, missing unix socket
    TimeoutError,  # asyncio.TimeoutError is the same class on 3.11+
    asyncpg.exceptions.PostgresConnectionError,  # 08xxx
    asyncpg.exceptions.OperatorInterventionError,  # 57xxx: shutdown, starting up, canceled
    asyncpg.exceptions.InsufficientResourcesError,  # 53xxx: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # 40xxx: deadlock, serialization
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a replica after failover
    asyncpg.exceptions.InterfaceError,  # connection closed under us, pool closing
)


def _env_number(name: str, default: float, *, integer: bool, low: float, high: float) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default) if integer else default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise StorageConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if not low <= value <= high:
        raise StorageConfigError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


def _user_uuid(user_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(user_id))
    except ValueError:
        raise ValueError(f"user id must be a uuid, got {user_id!r}") from None


def _memory(row: asyncpg.Record) -> Memory:
    return Memory(
        category=row["category"],
        key=row["key"],
        value=row["value"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        score=float(row.get("score", 0.0)),
        kind=row.get("kind", MemoryKind.FACT),
    )


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _profile(row: asyncpg.Record) -> Profile:
    return Profile(
        id=str(row["id"]),
        original_identity=row["original_identity"],
        is_first_login=bool(row["is_first_login"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresMemoryStore:
    """`MemoryStore` on PostgreSQL through asyncpg (see module docstring)."""

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = DEFAULT_POOL_MIN,
        max_size: int = DEFAULT_POOL_MAX,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        statement_cache_size: int | None = None,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        """`statement_cache_size=0` is needed behind a transaction-mode pooler (PgBouncer,
        Supabase's port 6543), which cannot keep prepared statements; `server_settings` are
        sent at connect time (the tests use `{"role": "service_role"}`)."""
        try:
            parse_database_url(dsn)
        except DatabaseUrlError as exc:
            raise StorageConfigError(str(exc)) from None
        if not 0 <= min_size <= max_size or max_size < 1:
            raise StorageConfigError(
                f"pool sizes must satisfy 0 <= min <= max and max >= 1, got {min_size}/{max_size}"
            )
        if timeout <= 0:
            raise StorageConfigError(f"the database timeout must be positive, got {timeout}")
        self._dsn = dsn
        self.target = redact_database_url(dsn)
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._connect_kwargs: dict[str, Any] = {
            "server_settings": {"application_name": "memory_worker", **(server_settings or {})},
        }
        if statement_cache_size is not None:
            self._connect_kwargs["statement_cache_size"] = statement_cache_size
        self._pools: dict[asyncio.AbstractEventLoop, asyncpg.Pool] = {}
        self._creating: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._lock = threading.Lock()
        self._releasing: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_env(cls) -> PostgresMemoryStore:
        """The store `DATABASE_URL` (and `DATABASE_POOL_MIN/MAX`, `DATABASE_TIMEOUT_SECONDS`,
        `DATABASE_STATEMENT_CACHE_SIZE`) describe; nothing connects until the first call."""
        dsn = os.environ.get("DATABASE_URL", "").strip()
        if not dsn:
            raise StorageConfigError("DATABASE_URL is not set")
        min_size = _env_number(
            "DATABASE_POOL_MIN", DEFAULT_POOL_MIN, integer=True, low=0, high=1000
        )
        max_size = _env_number(
            "DATABASE_POOL_MAX", max(DEFAULT_POOL_MAX, min_size), integer=True, low=1, high=1000
        )
        timeout = _env_number(
            "DATABASE_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS, integer=False, low=0.05, high=60
        )
        cache = os.environ.get("DATABASE_STATEMENT_CACHE_SIZE", "").strip()
        statement_cache_size = (
            _env_number("DATABASE_STATEMENT_CACHE_SIZE", 0, integer=True, low=0, high=10000)
            if cache
            else None
        )
        return cls(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            statement_cache_size=statement_cache_size,
        )

    def __repr__(self) -> str:
        return f"PostgresMemoryStore({self.target!r})"

    # -- plumbing ---------------------------------------------------------------------------

    async def _pool(self) -> asyncpg.Pool:
        """This loop's pool, created on first use (one creation per loop at a time)."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        with self._lock:
            creating = self._creating.setdefault(loop, asyncio.Lock())
        async with creating:
            pool = self._pools.get(loop)
            if pool is not None:
                return pool
            if self._closed:
                raise StorageUnavailableError("the Postgres memory store is closed")
            self._forget_dead_loops()
            pool = asyncpg.create_pool(
                self._dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=self.timeout,  # connect timeout
                **self._connect_kwargs,
            )
            try:
                await pool
            except BaseException:
                pool.terminate()
                raise
            with self._lock:
                self._pools[loop] = pool
            logger.debug("opened a Postgres pool to %s for loop %#x", self.target, id(loop))
            return pool

    def _forget_dead_loops(self) -> None:
        """Drop pools whose loop has closed; their connections cannot be closed politely."""
        with self._lock:
            dead = [loop for loop in self._pools if loop.is_closed()]
            for loop in dead:
                pool = self._pools.pop(loop)
                self._creating.pop(loop, None)
                try:
                    pool.terminate()
                except RuntimeError:  # the loop is closed; the sockets go with the objects
                    pass

    async def _call(self, what: str, method: str, query: str, *args: Any) -> Any:
        """Run one function call on a pooled connection, within the time budget.

        Getting a connection (opening the pool, connecting) and running the query share one
        budget of `timeout` seconds. A query still running at the deadline is cancelled on
        the server too (asyncpg sends a cancel request), so a write the caller was told had
        failed cannot land later; the pool waits for that cancel in the background, not the
        caller.
        """
        if self._closed:
            raise StorageUnavailableError("the Postgres memory store is closed")
        deadline = time.monotonic() + self.timeout
        try:
            async with asyncio.timeout(self.timeout):
                pool = await self._pool()
                conn = await pool.acquire()
            try:
                result = await getattr(conn, method)(
                    query, *args, timeout=max(deadline - time.monotonic(), 0.001)
                )
            except asyncpg.PostgresError:
                await self._release(pool, conn)  # the server answered: the connection is fine
                raise
            except BaseException:  # timed out, cancelled by the caller, or cut off
                self._release_in_background(pool, conn)
                raise
            await self._release(pool, conn)
            return result
        except StorageError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise self._translate(exc, what) from exc

    @staticmethod
    async def _release(pool: asyncpg.Pool, conn: Any) -> None:
        """Hand the connection back; one that cannot be reset in time is closed instead."""
        try:
            await pool.release(conn, timeout=CLEANUP_GRACE_SECONDS)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            logger.debug("dropping a Postgres connection that could not be reset (%s)", exc)
            try:
                conn.terminate()
            except asyncpg.InterfaceError:
                # asyncpg already terminated it when the reset failed, and released the
                # proxy: the connection is gone either way. (Raising here turned a query
                # that had succeeded into a "store unavailable" error under load.)
                pass

    def _release_in_background(self, pool: asyncpg.Pool, conn: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._release(pool, conn))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def _scrub(self, text: str) -> str:
        return scrub_database_secrets(text, self._dsn)

    def _translate(self, exc: BaseException, what: str) -> StorageError:
        detail = self._scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
        where = f"the Postgres memory database ({self.target}, from DATABASE_URL)"
        if isinstance(exc, _SCHEMA_ERRORS):
            error: StorageError = StorageSchemaError(
                f"{where} is missing the memory tables or functions while {what} ({detail}); "
                f"{MIGRATIONS_HINT}"
            )
        elif isinstance(exc, _CONFIG_ERRORS):
            error = StorageConfigError(
                f"{where} refused {what} ({detail}); check the user, password, database name "
                "and that the role is the tables' owner or has service_role's rights"
            )
        elif isinstance(exc, TimeoutError):
            error = StorageUnavailableError(
                f"{where} did not answer within {self.timeout:g} s while {what}; check that the "
                "server is up and reachable (DATABASE_TIMEOUT_SECONDS sets the limit)"
            )
        elif isinstance(exc, _UNAVAILABLE_ERRORS):
            error = StorageUnavailableError(
                f"{where} is unavailable while {what} ({detail}); check DATABASE_URL and that "
                "the server is running and reachable"
            )
        else:
            error = StorageError(f"{where} failed while {what} ({detail})")
        logger.debug("%s", error)
        return error

    # -- profiles ---------------------------------------------------------------------------

    async def ensure_profile(self, user_id: str, identity: str | None) -> tuple[Profile, bool]:
        row = await self._call(
            "ensuring a profile",
            "fetchrow",
            "SELECT * FROM caller_memory.memory_ensure_profile($1, $2)",
            _user_uuid(user_id),
            identity,
        )
        if row is None:  # deleted again between the insert and the read
            raise StorageError(f"profile {user_id} was deleted while it was being created")
        return _profile(row), bool(row["created"])

    async def get_profile(self, user_id: str) -> Profile | None:
        row = await self._call(
            "reading a profile",
            "fetchrow",
            "SELECT * FROM caller_memory.memory_get_profile($1)",
            _user_uuid(user_id),
        )
        return _profile(row) if row is not None else None

    async def complete_first_login(self, user_id: str) -> bool:
        flipped = await self._call(
            "completing the first login",
            "fetchval",
            "SELECT caller_memory.memory_complete_first_login($1)",
            _user_uuid(user_id),
        )
        return bool(flipped)

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
        outcome = await self._call(
            "storing a memory",
            "fetchval",
            "SELECT caller_memory.memory_upsert($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            _user_uuid(user_id),
            category,
            key,
            value,
            identity,
            str(kind),
            _timestamp(captured_at),
            _timestamp(session_started_at),
            max_utterances,
        )
        return WriteOutcome(outcome)

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None:
        value: str | None = await self._call(
            "reading a memory",
            "fetchval",
            "SELECT caller_memory.memory_get($1, $2, $3)",
            _user_uuid(user_id),
            category,
            key,
        )
        return value

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        rows = await self._call(
            "searching memories",
            "fetch",
            "SELECT * FROM caller_memory.memory_search($1, $2, $3)",
            _user_uuid(user_id),
            query.replace("\x00", " "),  # Postgres text cannot hold NUL; it is no word anyway
            limit,
        )
        return [_memory(r) for r in rows]

    async def list_memories(self, user_id: str) -> list[Memory]:
        rows = await self._call(
            "listing memories",
            "fetch",
            "SELECT * FROM caller_memory.memory_list($1)",
            _user_uuid(user_id),
        )
        return [_memory(r) for r in rows]

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool:
        deleted = await self._call(
            "deleting a memory",
            "fetchval",
            "SELECT caller_memory.memory_delete($1, $2, $3)",
            _user_uuid(user_id),
            category,
            key,
        )
        return bool(deleted)

    async def delete_user(self, user_id: str, *, erased_at: float | None = None) -> int:
        erased_at = erasure_time(erased_at)
        deleted = await self._call(
            "deleting a user",
            "fetchval",
            "SELECT caller_memory.memory_delete_user($1, $2)",
            _user_uuid(user_id),
            _timestamp(erased_at),
        )
        return int(deleted or 0)

    # -- lifecycle --------------------------------------------------------------------------

    async def close_loop_pool(self) -> None:
        """Close the running loop's pool (call before closing a loop that used the store).

        The store stays usable: a later call on any loop opens a new pool for it.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._pools.pop(loop, None)
            self._creating.pop(loop, None)
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except (TimeoutError, OSError, asyncpg.InterfaceError) as exc:
                logger.debug("closing a Postgres pool failed (%s); terminating it", exc)
                pool.terminate()

    async def aclose(self) -> None:
        """Close every pool: this loop's directly, other live loops' on their own loop."""
        self._closed = True
        with self._lock:
            pools = list(self._pools.items())
            self._pools.clear()
            self._creating.clear()
        current = asyncio.get_running_loop()
        for loop, pool in pools:
            try:
                if loop is current:
                    await asyncio.wait_for(pool.close(), self.timeout)
                elif loop.is_running():
                    future = asyncio.run_coroutine_threadsafe(pool.close(), loop)
                    await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
                else:
                    pool.terminate()
            except (TimeoutError, RuntimeError, OSError, asyncpg.InterfaceError) as exc:
                logger.debug("closing a Postgres pool failed (%s); terminating it", exc)
                _terminate_on(loop, pool, current)


def _terminate_on(
    loop: asyncio.AbstractEventLoop, pool: asyncpg.Pool, current: asyncio.AbstractEventLoop
) -> None:
    """Abort a pool's connections from the thread of the loop that owns them."""
    try:
        if loop is current or not loop.is_running():
            pool.terminate()
        else:
            loop.call_soon_threadsafe(pool.terminate)
    except RuntimeError:  # its loop is closed: the sockets go away with the objects
        pass
