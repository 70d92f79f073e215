"""Fixtures for the Supabase backend: supabase-py, through a fake PostgREST, on the test database.

`supabase_store` is the `SupabaseMemoryStore` the contract suite runs as its `supabase`
backend. Its requests go through supabase-py's async client to `FakePostgrestTransport`
(tests/postgrest_transport.py), which runs them as the role in the key's token on the same
throwaway, migrated PostgreSQL database the Postgres backend uses (tests/postgres_fixtures.py
provides `pg_dsn` and `service_role_dsn`). Nothing contacts a real Supabase.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from caller_memory.stores.supabase import SupabaseMemoryStore
from tests.postgrest_transport import FAKE_SUPABASE_URL, FakePostgrestTransport, mint_jwt

# What a project set up as README says exposes: Supabase's defaults plus the memory schema.
EXPOSED_SCHEMAS = ("public", "graphql_public", "caller_memory")


@pytest.fixture
def authenticator_dsn(service_role_dsn: str) -> str:
    """The test database as `authenticator`, the login PostgREST uses before `SET ROLE`."""
    return service_role_dsn


@pytest.fixture
def service_role_key() -> str:
    return mint_jwt("service_role")


@pytest.fixture
def anon_key() -> str:
    return mint_jwt("anon")


@pytest.fixture
def postgrest_transport(authenticator_dsn: str) -> FakePostgrestTransport:
    return FakePostgrestTransport(authenticator_dsn, db_schemas=EXPOSED_SCHEMAS)


@pytest.fixture
async def supabase_store(
    pg_dsn: str, postgrest_transport: FakePostgrestTransport, service_role_key: str
) -> AsyncIterator[SupabaseMemoryStore]:
    """A `SupabaseMemoryStore` with the service-role key, on the emptied test database."""
    # Imported here: importing the plugin module at load time would keep pytest from
    # assertion-rewriting it when conftest registers it.
    from tests.postgres_fixtures import truncate_all

    await truncate_all(pg_dsn)
    store = SupabaseMemoryStore(
        FAKE_SUPABASE_URL, service_role_key, transport=postgrest_transport, timeout=5.0
    )
    yield store
    await store.aclose()


@pytest.fixture
async def wide_supabase_store(
    pg_dsn: str, authenticator_dsn: str, service_role_key: str
) -> AsyncIterator[SupabaseMemoryStore]:
    """Like `supabase_store`, but the fake PostgREST serves 50 requests at once (its pool)."""
    from tests.postgres_fixtures import truncate_all

    await truncate_all(pg_dsn)
    transport = FakePostgrestTransport(authenticator_dsn, db_schemas=EXPOSED_SCHEMAS, pool_size=50)
    store = SupabaseMemoryStore(
        FAKE_SUPABASE_URL, service_role_key, transport=transport, timeout=10.0
    )
    yield store
    await store.aclose()
