"""The test session's PostgreSQL: one throwaway cluster shaped like a Supabase database.

The session starts one private cluster (`caller_memory.testing.postgres.PostgresCluster`),
creates a database and applies every migration in order -- twice, because Supabase may re-run
migrations and they must stay idempotent. The cluster is stopped and deleted at session end.

When the PostgreSQL server binaries are missing the Postgres tests are skipped with a hint on
how to install them; with `CI=true` they fail instead, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import asyncpg
import pytest

from caller_memory.stores.migrations import migration_files
from caller_memory.testing.postgres import (
    DATABASE,
    SUPABASE_DEFAULT_GRANTS_SQL,
    ClusterUnavailableError,
    PostgresCluster,
)

if TYPE_CHECKING:
    from caller_memory.stores.postgres import PostgresMemoryStore

__all__ = [
    "SUPABASE_DEFAULT_GRANTS_SQL",
    "ClusterUnavailableError",
    "PostgresCluster",
    "migration_files",
    "truncate_all",
]


def _unavailable(message: str) -> NoReturn:
    """Skip, or fail under CI, where the Postgres tests cannot run."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """The session's private cluster, with the Supabase roles and the migrated database."""
    try:
        cluster = PostgresCluster.in_temp_dir("memory-pg-")
    except ClusterUnavailableError as exc:
        _unavailable(str(exc))
    try:
        cluster.boot()
        cluster.create_database(DATABASE)
        cluster.apply_migrations(DATABASE)
        cluster.apply_migrations(DATABASE)  # again: migrations must be re-runnable
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster: PostgresCluster) -> str:
    """DSN of the migrated test database as its owner (the superuser)."""
    return pg_cluster.dsn()


@pytest.fixture(scope="session")
def service_role_dsn(pg_cluster: PostgresCluster) -> str:
    """DSN logging in as `authenticator`; pair it with `role=service_role`, as PostgREST does."""
    return pg_cluster.dsn(user="authenticator")


@pytest.fixture
def pg_server(pg_cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """The cluster, for tests that stop and start it; it is always running again afterwards."""
    yield pg_cluster
    if not pg_cluster.running:
        pg_cluster.start()


@pytest.fixture
def fresh_database(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A new database prepared like a new Supabase project, no migrations; dropped after."""
    name = f"memory_fresh_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name)
    yield name
    if pg_cluster.running:
        pg_cluster.psql(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            dbname="postgres",
            single_transaction=False,
        )


async def truncate_all(dsn: str) -> None:
    """Empty profiles, memories and their history (the category table keeps its seeded
    rows)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(
            "TRUNCATE caller_memory.memories, caller_memory.erasures, "
            "caller_memory.memory_history, caller_memory.memory_statements, public.profiles "
            "RESTART IDENTITY CASCADE"
        )
    finally:
        await conn.close()


@pytest.fixture
async def make_postgres_store(
    pg_dsn: str, service_role_dsn: str
) -> AsyncIterator[Callable[..., PostgresMemoryStore]]:
    """A factory of `PostgresMemoryStore`s on the emptied test database; all closed after.

    The stores log in as `authenticator` and run as `service_role`, exactly the rights the
    Supabase backend gets, so every test through them also proves the migrations grant
    enough. Keyword arguments go to the store (pool sizes, timeout).
    """
    from caller_memory.stores.postgres import PostgresMemoryStore

    await truncate_all(pg_dsn)
    stores: list[PostgresMemoryStore] = []

    def make(**kwargs: Any) -> PostgresMemoryStore:
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("server_settings", {"role": "service_role"})
        store = PostgresMemoryStore(service_role_dsn, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


@pytest.fixture
async def postgres_store(
    make_postgres_store: Callable[..., PostgresMemoryStore],
) -> PostgresMemoryStore:
    """A `PostgresMemoryStore` on the emptied test database (see `make_postgres_store`)."""
    return make_postgres_store()
