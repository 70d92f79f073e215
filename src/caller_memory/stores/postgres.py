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
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from caller_memory.stores.base import (
    SearchVector,
    StoreStats,
    counts_store_errors,
    erasure_time,
    write_times,
)
from caller_memory.stores.database_url import (
    DatabaseUrlError,
    parse_database_url,
    redact_database_url,
    scrub_database_secrets,
)
from caller_memory.stores.errors import (
    StorageConfigError,
    StorageError,
    StorageSchemaError,
    StorageUnavailableError,
)
from caller_memory.stores.per_loop import PerLoop
from caller_memory.stores.rows import (
    candidate_from_row,
    fact_change_from_row,
    from_epoch,
    memory_from_row,
    profile_from_row,
    statements_json,
    stats_from_row,
    unembedded_from_row,
    user_uuid,
)
from caller_memory.stores.vectors import HybridSearch, vector_literal
from caller_memory.text import cjk_pairs
from caller_memory.types import (
    Candidate,
    FactChange,
    Memory,
    MemoryDetails,
    MemoryKind,
    Profile,
    Unembedded,
    WriteOutcome,
)

if TYPE_CHECKING:
    from caller_memory.settings import MemorySettings

logger = logging.getLogger("caller_memory.stores.postgres")

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


@counts_store_errors
class PostgresMemoryStore(HybridSearch):
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
        self._pools: PerLoop[asyncpg.Pool] = PerLoop(
            self._open_pool,
            _close_pool,
            abort=_terminate_pool,
            what=f"Postgres pool to {self.target}",
        )
        self._releasing: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: MemorySettings) -> PostgresMemoryStore:
        """The store `DATABASE_URL` (and `DATABASE_POOL_MIN/MAX`, `DATABASE_TIMEOUT_SECONDS`,
        `DATABASE_STATEMENT_CACHE_SIZE`) describe; nothing connects until the first call."""
        if settings.database_url is None:
            raise StorageConfigError("DATABASE_URL is not set")
        return cls(
            settings.database_url.get_secret_value(),
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
            timeout=settings.database_timeout_seconds,
            statement_cache_size=settings.database_statement_cache_size,
        )

    def __repr__(self) -> str:
        return f"PostgresMemoryStore({self.target!r})"

    # -- plumbing ---------------------------------------------------------------------------

    async def _open_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StorageUnavailableError("the Postgres memory store is closed")
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
        return pool

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
                pool = await self._pools.get()
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
            user_uuid(user_id),
            identity,
        )
        if row is None:  # deleted again between the insert and the read
            raise StorageError(f"profile {user_id} was deleted while it was being created")
        return profile_from_row(row), bool(row["created"])

    async def get_profile(self, user_id: str) -> Profile | None:
        row = await self._call(
            "reading a profile",
            "fetchrow",
            "SELECT * FROM caller_memory.memory_get_profile($1)",
            user_uuid(user_id),
        )
        return profile_from_row(row) if row is not None else None

    async def complete_first_login(self, user_id: str) -> bool:
        flipped = await self._call(
            "completing the first login",
            "fetchval",
            "SELECT caller_memory.memory_complete_first_login($1)",
            user_uuid(user_id),
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
        details: MemoryDetails | None = None,
    ) -> WriteOutcome:
        captured_at, session_started_at = write_times(captured_at, session_started_at)
        extra = details or MemoryDetails()
        outcome = WriteOutcome(
            await self._call(
                "storing a memory",
                "fetchval",
                "SELECT caller_memory.memory_upsert("
                "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15)",
                user_uuid(user_id),
                category,
                key,
                value,
                identity,
                str(kind),
                from_epoch(captured_at),
                from_epoch(session_started_at),
                max_utterances,
                extra.context,
                extra.said_on,
                extra.session_id,
                extra.turn_index,
                statements_json(extra.states),
                cjk_pairs(value, extra.context),
            )
        )
        if outcome == WriteOutcome.STORED and extra.embedding is not None and extra.embedding_model:
            await self.set_embedding(
                user_id, category, key, value, extra.embedding, extra.embedding_model
            )
        return outcome

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None:
        value: str | None = await self._call(
            "reading a memory",
            "fetchval",
            "SELECT caller_memory.memory_get($1, $2, $3)",
            user_uuid(user_id),
            category,
            key,
        )
        return value

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        return [c.memory for c in await self._lexical(user_id, query, limit)]

    async def _lexical(self, user_id: str, query: str, limit: int) -> list[Candidate]:
        rows = await self._call(
            "searching memories",
            "fetch",
            "SELECT * FROM caller_memory.memory_search($1, $2, $3)",
            user_uuid(user_id),
            query.replace("\x00", " "),  # Postgres text cannot hold NUL; it is no word anyway
            limit,
        )
        return [candidate_from_row(r, lexical=bool(query.strip())) for r in rows]

    async def _dense(
        self, user_id: str, embedding: SearchVector, model: str, limit: int
    ) -> list[Candidate]:
        rows = await self._call(
            "searching memories by meaning",
            "fetch",
            "SELECT * FROM caller_memory.memory_dense_search($1, $2, $3, $4)",
            user_uuid(user_id),
            vector_literal(embedding),
            model,
            limit,
        )
        return [candidate_from_row(r, dense=True) for r in rows]

    async def set_embedding(
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        embedding: Sequence[float],
        embedding_model: str,
    ) -> bool:
        done = await self._call(
            "storing a memory's vector",
            "fetchval",
            "SELECT caller_memory.memory_set_embedding($1, $2, $3, $4, $5, $6)",
            user_uuid(user_id),
            category,
            key,
            value,
            vector_literal(embedding),
            embedding_model,
        )
        return bool(done)

    async def unembedded(self, embedding_model: str, limit: int) -> list[Unembedded]:
        rows = await self._call(
            "listing memories without a vector",
            "fetch",
            "SELECT * FROM caller_memory.memory_unembedded($1, $2)",
            embedding_model,
            limit,
        )
        return [unembedded_from_row(r) for r in rows]

    async def prepare_caller(self, user_id: str, embedding_model: str) -> None:
        return None  # the database holds the vectors and their index

    async def has_vectors(self) -> bool:
        found = await self._call(
            "checking for pgvector", "fetchval", "SELECT caller_memory.memory_has_vectors()"
        )
        return bool(found)

    async def list_memories(self, user_id: str) -> list[Memory]:
        rows = await self._call(
            "listing memories",
            "fetch",
            "SELECT * FROM caller_memory.memory_list($1)",
            user_uuid(user_id),
        )
        return [memory_from_row(r) for r in rows]

    async def list_history(self, user_id: str) -> list[FactChange]:
        rows = await self._call(
            "listing replaced values",
            "fetch",
            "SELECT * FROM caller_memory.memory_history_list($1)",
            user_uuid(user_id),
        )
        return [fact_change_from_row(r) for r in rows]

    async def list_stating(self, user_id: str, category: str, key: str) -> list[Memory]:
        rows = await self._call(
            "listing what states a fact",
            "fetch",
            "SELECT * FROM caller_memory.memory_stating($1, $2, $3)",
            user_uuid(user_id),
            category,
            key,
        )
        return [memory_from_row(r) for r in rows]

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool:
        deleted = await self._call(
            "deleting a memory",
            "fetchval",
            "SELECT caller_memory.memory_delete($1, $2, $3)",
            user_uuid(user_id),
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
            user_uuid(user_id),
            from_epoch(erased_at),
        )
        return int(deleted or 0)

    # -- lifecycle --------------------------------------------------------------------------

    async def stats(self) -> StoreStats:
        row = await self._call(
            "counting what the store holds",
            "fetchrow",
            "SELECT * FROM caller_memory.memory_stats()",
        )
        return stats_from_row(row)

    async def close_loop_pool(self) -> None:
        """Close the running loop's pool (call before closing a loop that used the store).

        The store stays usable: a later call on any loop opens a new pool for it.
        """
        await self._pools.close_current(self.timeout)

    async def aclose(self) -> None:
        """Close every pool: this loop's directly, other live loops' on their own loop."""
        self._closed = True
        await self._pools.close_all(self.timeout)


async def _close_pool(pool: asyncpg.Pool) -> None:
    await pool.close()


def _terminate_pool(pool: asyncpg.Pool) -> None:
    pool.terminate()
