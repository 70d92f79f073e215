"""How the Postgres store fails: fast, with the right error, without leaking the password.

The voice turn waits on the store, so an outage must turn into `StorageUnavailableError`
within the configured timeout -- a stopped server, a server that accepts connections but
never answers, a query stuck behind a lock -- and the same store object must work again as
soon as the server does. A database without the migrations gives `StorageSchemaError`, a
wrong database name `StorageConfigError`, and malformed settings fail at start-up.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from caller_memory import MemorySettings, SettingsError
from caller_memory.stores import open_store
from caller_memory.stores.database_url import redact_database_url
from caller_memory.stores.errors import (
    StorageConfigError,
    StorageSchemaError,
    StorageUnavailableError,
)
from caller_memory.stores.postgres import PostgresMemoryStore
from caller_memory.testing.postgres import (
    INSTALL_HINT,
    PostgresCluster,
    _bundled_bins,
    find_postgres_bin,
    has_pgvector,
)
from tests import postgres_fixtures

ALICE = str(uuid.uuid5(uuid.NAMESPACE_DNS, "alice@example.com"))
BOB = str(uuid.uuid5(uuid.NAMESPACE_DNS, "bob@example.com"))
DEADLINE_S = 5.0  # what "no hang" means here; the store's own budget is smaller
SECRET = "hunter2-s3cret"


def every_operation(store: PostgresMemoryStore) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """One call of each store method, fresh coroutine per call."""
    return [
        ("ensure_profile", lambda: store.ensure_profile(BOB, "bob")),
        ("get_profile", lambda: store.get_profile(ALICE)),
        ("complete_first_login", lambda: store.complete_first_login(ALICE)),
        ("upsert_memory", lambda: store.upsert_memory(ALICE, "FACT", "pet", "a cat")),
        ("get_memory", lambda: store.get_memory(ALICE, "FACT", "job")),
        ("search_memories", lambda: store.search_memories(ALICE, "nurse", 5)),
        ("list_memories", lambda: store.list_memories(ALICE)),
        ("delete_memory", lambda: store.delete_memory(ALICE, "FACT", "job")),
        ("delete_user", lambda: store.delete_user(ALICE)),
    ]


async def assert_fails_fast(
    call: Callable[[], Awaitable[Any]], error: type[Exception], what: str
) -> Exception:
    started = time.monotonic()
    with pytest.raises(error) as info:
        await asyncio.wait_for(call(), DEADLINE_S + 5)  # a hang fails the test, not the run
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE_S, f"{what} took {elapsed:.1f} s to fail"
    return info.value


# -- a stopped server -------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
async def test_store_fails_fast_while_the_server_is_down_and_recovers(
    pg_server: PostgresCluster, make_postgres_store: Callable[..., PostgresMemoryStore]
) -> None:
    store = make_postgres_store(timeout=2.0)
    await store.ensure_profile(ALICE, "alice")
    await store.upsert_memory(ALICE, "FACT", "job", "nurse")
    # Several pooled connections, all of which the outage will break.
    await asyncio.gather(*(store.search_memories(ALICE, "nurse", 5) for _ in range(8)))

    await asyncio.to_thread(pg_server.stop, "immediate")
    for what, call in every_operation(store):
        error = await assert_fails_fast(call, StorageUnavailableError, what)
        assert "DATABASE_URL" in str(error)
    # Many at once, as several sessions would: all fail, none hangs.
    started = time.monotonic()
    results = await asyncio.gather(
        *(store.get_memory(ALICE, "FACT", "job") for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, StorageUnavailableError) for r in results), results
    assert time.monotonic() - started < DEADLINE_S

    await asyncio.to_thread(pg_server.start)
    # The same store object, no restart: every operation works again, with the data intact.
    assert await store.get_memory(ALICE, "FACT", "job") == "nurse"
    profile = await store.get_profile(ALICE)
    assert profile is not None and profile.original_identity == "alice"
    assert [m.key for m in await store.search_memories(ALICE, "nurse", 5)] == ["job"]
    assert await store.complete_first_login(ALICE) is True
    await store.upsert_memory(ALICE, "FACT", "pet", "a cat")
    assert [m.key for m in await store.list_memories(ALICE)] == ["job", "pet"]
    assert await store.delete_memory(ALICE, "FACT", "pet") is True
    assert await store.delete_user(ALICE) == 1
    _, created = await store.ensure_profile(BOB, "bob")
    assert created is True


@pytest.mark.postgres
async def test_store_that_never_connected_recovers_when_the_server_starts(
    pg_server: PostgresCluster, make_postgres_store: Callable[..., PostgresMemoryStore]
) -> None:
    store = make_postgres_store(timeout=1.0)
    await asyncio.to_thread(pg_server.stop, "fast")
    await assert_fails_fast(lambda: store.list_memories(ALICE), StorageUnavailableError, "list")
    await asyncio.to_thread(pg_server.start)
    assert await store.list_memories(ALICE) == []


# -- a server that does not answer ------------------------------------------------------------


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word (a hung server or proxy)."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_unanswering_server_times_out_without_leaking_the_password(
    silent_server: int,
) -> None:
    store = PostgresMemoryStore(
        f"postgresql://worker:{SECRET}@127.0.0.1:{silent_server}/memories", timeout=0.5
    )
    try:
        for what, call in every_operation(store)[:3]:
            error = await assert_fails_fast(call, StorageUnavailableError, what)
            text = str(error)
            assert SECRET not in text
            assert "worker:***@127.0.0.1" in text
            assert "did not answer within 0.5 s" in text
    finally:
        await store.aclose()


async def test_nothing_listening_fails_at_once(unused_tcp_port: int) -> None:
    store = PostgresMemoryStore(
        f"postgresql://worker:{SECRET}@127.0.0.1:{unused_tcp_port}/memories", timeout=2.0
    )
    try:
        started = time.monotonic()
        error = await assert_fails_fast(
            lambda: store.upsert_memory(ALICE, "FACT", "job", "nurse"),
            StorageUnavailableError,
            "upsert",
        )
        assert time.monotonic() - started < 1.0
        assert SECRET not in str(error)
        assert "DATABASE_URL" in str(error) and "unavailable while storing a memory" in str(error)
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_query_stuck_behind_a_lock_times_out_and_leaves_no_late_write(
    pg_dsn: str, make_postgres_store: Callable[..., PostgresMemoryStore]
) -> None:
    store = make_postgres_store(timeout=0.5)
    await store.upsert_memory(ALICE, "FACT", "job", "nurse")

    blocker = await asyncpg.connect(pg_dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE caller_memory.memories IN ACCESS EXCLUSIVE MODE")
        await assert_fails_fast(
            lambda: store.upsert_memory(ALICE, "FACT", "job", "surgeon"),
            StorageUnavailableError,
            "upsert behind a lock",
        )
        await assert_fails_fast(
            lambda: store.list_memories(ALICE), StorageUnavailableError, "list behind a lock"
        )
        # A caller with its own, shorter budget (recall's 50 ms) gets control back at once:
        # the cancelled query is cleaned up in the background, not on the caller's time.
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.search_memories(ALICE, "nurse", 5), 0.05)
        assert time.monotonic() - started < 0.25
        await tx.rollback()
    finally:
        await blocker.close()

    await asyncio.sleep(0.3)  # a write that was not cancelled would land about now
    assert await store.get_memory(ALICE, "FACT", "job") == "nurse"
    assert [m.value for m in await store.list_memories(ALICE)] == ["nurse"]


# -- schema and configuration -----------------------------------------------------------------


@pytest.mark.postgres
async def test_missing_migrations_raise_a_schema_error(
    pg_cluster: PostgresCluster, fresh_database: str
) -> None:
    store = PostgresMemoryStore(pg_cluster.dsn(fresh_database), timeout=2.0)
    try:
        for what, call in every_operation(store):
            error = await assert_fails_fast(call, StorageSchemaError, what)
            assert "supabase db push" in str(error), what
            assert "supabase/migrations/" in str(error), what
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_unknown_database_is_a_config_error(pg_cluster: PostgresCluster) -> None:
    dsn = pg_cluster.dsn("no_such_database").replace("postgres@", f"postgres:{SECRET}@")
    store = PostgresMemoryStore(dsn, timeout=2.0)
    try:
        error = await assert_fails_fast(
            lambda: store.list_memories(ALICE), StorageConfigError, "list"
        )
        assert "no_such_database" in str(error)
        assert SECRET not in str(error) and "postgres:***@" in str(error)
    finally:
        await store.aclose()


async def test_closed_store_refuses_work() -> None:
    store = PostgresMemoryStore("postgresql://worker@127.0.0.1:1/memories")
    await store.aclose()
    with pytest.raises(StorageUnavailableError, match="closed"):
        await store.list_memories(ALICE)


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        (
            f"postgresql://worker:{SECRET}@db.example.com:5432/postgres",
            "postgresql://worker:***@db.example.com:5432/postgres",
        ),
        (
            "postgres://worker:p%40ss%3Aw0rd@db.example.com/postgres?sslmode=require",
            "postgres://worker:***@db.example.com/postgres?sslmode=require",
        ),
        (
            f"postgresql://worker@db.example.com/postgres?password={SECRET}&sslmode=require",
            "postgresql://worker@db.example.com/postgres?password=***&sslmode=require",
        ),
        (
            "postgresql://worker@db.example.com/postgres",
            "postgresql://worker@db.example.com/postgres",
        ),
    ],
)
def test_redact_dsn(dsn: str, redacted: str) -> None:
    assert redact_database_url(dsn) == redacted


def test_from_settings_reads_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://worker:{SECRET}@db.example.com/postgres")
    monkeypatch.setenv("DATABASE_POOL_MIN", "0")
    monkeypatch.setenv("DATABASE_POOL_MAX", "3")
    monkeypatch.setenv("DATABASE_TIMEOUT_SECONDS", "0.75")
    store = PostgresMemoryStore.from_settings(MemorySettings.load())
    assert (store.min_size, store.max_size, store.timeout) == (0, 3, 0.75)
    assert SECRET not in repr(store) and SECRET not in store.target

    monkeypatch.delenv("DATABASE_POOL_MIN")
    monkeypatch.delenv("DATABASE_POOL_MAX")
    monkeypatch.delenv("DATABASE_TIMEOUT_SECONDS")
    store = PostgresMemoryStore.from_settings(MemorySettings.load())
    assert (store.min_size, store.max_size, store.timeout) == (1, 10, 2.0)

    # open_store() picks this backend when DATABASE_URL is set.
    opened = open_store(MemorySettings.load())
    assert isinstance(opened, PostgresMemoryStore) and opened.name == "postgres"


def test_from_settings_without_database_url_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "")  # empty: not set
    monkeypatch.setenv("DATABASE_POOL_MAX", "3")
    with pytest.raises(StorageConfigError, match="DATABASE_URL is not set"):
        PostgresMemoryStore.from_settings(MemorySettings.load())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "mysql://x@y/z", "^DATABASE_URL must be a PostgreSQL URL .*postgresql://"),
        (
            "DATABASE_TIMEOUT_SECONDS",
            "soon",
            "^DATABASE_TIMEOUT_SECONDS must be a number of seconds from 0.05 to 60",
        ),
        (
            "DATABASE_TIMEOUT_SECONDS",
            "0",
            "^DATABASE_TIMEOUT_SECONDS must be a number of seconds from 0.05 to 60",
        ),
        ("DATABASE_POOL_MAX", "many", "^DATABASE_POOL_MAX must be a whole number"),
        # min above max (3)
        ("DATABASE_POOL_MIN", "5", r"^DATABASE_POOL_MIN must not be larger than DATABASE_POOL_MAX"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    # Settings are validated once, when they are read: no store is ever built from bad ones.
    monkeypatch.setenv("DATABASE_URL", "postgresql://worker@db.example.com/postgres")
    monkeypatch.setenv("DATABASE_POOL_MAX", "3")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        MemorySettings.load()


def test_missing_postgres_skips_locally_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql-15"):
        postgres_fixtures._unavailable(INSTALL_HINT)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        postgres_fixtures._unavailable(INSTALL_HINT)


def test_postgres_binaries_are_found_on_path_or_in_the_debian_layout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = find_postgres_bin(with_vector=False)  # the system's server, not a bundled one
    if found is None:
        pytest.skip(INSTALL_HINT)
    assert str(found).startswith("/usr/lib/postgresql/")
    assert all((found / tool).exists() for tool in ("initdb", "pg_ctl", "postgres"))


def test_a_build_with_pgvector_is_preferred_where_one_is_installed() -> None:
    """The test cluster runs with pgvector (hybrid search) wherever a bundled build is
    installed (requirements-dev.txt installs one on Linux x86_64)."""
    found = find_postgres_bin()
    if found is None:
        pytest.skip(INSTALL_HINT)
    bundled = [b for b in _bundled_bins() if (b / "initdb").exists()]
    if not bundled:
        pytest.skip("no PostgreSQL build with pgvector is installed on this platform")
    assert found == bundled[0]
    assert has_pgvector(found)
    system = find_postgres_bin(with_vector=False)
    if system is not None:  # Debian's postgresql-15 has no pgvector: the lexical-only case
        assert not has_pgvector(system)
