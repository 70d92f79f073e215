"""The Supabase backend, through supabase-py, against the real throwaway test database.

Each test drives `SupabaseMemoryStore` through supabase-py's async client and the fake
PostgREST of tests/postgrest_transport.py, then reads the outcome straight from PostgreSQL
(as its superuser) and asserts the exact rows. Nothing contacts a real Supabase.

Run alone with: `pytest -q tests/stores/test_supabase_store.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from caller_memory import MemorySettings, SettingsError
from caller_memory.stores import open_store
from caller_memory.stores.errors import (
    StorageConfigError,
    StorageError,
    StorageSchemaError,
    StorageUnavailableError,
)
from caller_memory.stores.supabase import SupabaseMemoryStore, key_role
from caller_memory.sync_bridge import run_sync
from tests.postgrest_transport import (
    FAKE_SUPABASE_URL,
    TEST_JWT_SECRET,
    FakePostgrestTransport,
    FlakyTransport,
    HangingTransport,
    JWTError,
    mint_jwt,
    verify_jwt,
)

ALICE = str(uuid.uuid5(uuid.NAMESPACE_DNS, "alice@example.com"))
BOB = str(uuid.uuid5(uuid.NAMESPACE_DNS, "bob@example.com"))
LOGGER = "caller_memory.stores.supabase"


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """The emptied test database, as its superuser: what is really stored."""
    from tests.postgres_fixtures import truncate_all

    await truncate_all(pg_dsn)
    conn = await asyncpg.connect(pg_dsn, timeout=10)
    yield conn
    await conn.close()


async def memory_rows(db: asyncpg.Connection) -> list[tuple[str, str, str, str]]:
    rows = await db.fetch(
        "select user_id::text, category, key, value from caller_memory.memories "
        "order by user_id, category, key"
    )
    return [tuple(r) for r in rows]


async def profile_rows(db: asyncpg.Connection) -> list[tuple[str, str | None, bool]]:
    rows = await db.fetch(
        "select id::text, original_identity, is_first_login from public.profiles order by id"
    )
    return [tuple(r) for r in rows]


def make_store(transport: httpx.AsyncBaseTransport, key: str, **kwargs: Any) -> SupabaseMemoryStore:
    return SupabaseMemoryStore(FAKE_SUPABASE_URL, key, transport=transport, **kwargs)


def store_from_environment(**kwargs: Any) -> SupabaseMemoryStore:
    """The store the environment's settings describe (read now), with `kwargs` for the rest."""
    return SupabaseMemoryStore.from_settings(MemorySettings.load(), **kwargs)


def error_text(exc: BaseException) -> str:
    """Everything an operator could see of an exception: message, repr, chained traceback."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


def warnings_from_store(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


# -- through supabase-py, into the database ---------------------------------------------------


@pytest.mark.postgres
async def test_store_retrieve_and_search_land_in_the_database(
    supabase_store: SupabaseMemoryStore,
    db: asyncpg.Connection,
    postgrest_transport: FakePostgrestTransport,
) -> None:
    profile, created = await supabase_store.ensure_profile(ALICE, "alice@example.com")
    assert created is True
    assert profile.id == ALICE and profile.is_first_login is True
    assert await profile_rows(db) == [(ALICE, "alice@example.com", True)]

    await supabase_store.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
    await supabase_store.upsert_memory(ALICE, "PREFERENCE", "drink", "green tea")
    await supabase_store.upsert_memory(BOB, "FACT", "favorite_color", "red", "bob@example.com")
    assert await memory_rows(db) == sorted(
        [
            (ALICE, "FACT", "favorite_color", "blue"),
            (ALICE, "PREFERENCE", "drink", "green tea"),
            (BOB, "FACT", "favorite_color", "red"),
        ]
    )
    # The upsert created Bob's profile, with his identity.
    assert (BOB, "bob@example.com", True) in await profile_rows(db)

    assert await supabase_store.get_memory(ALICE, "FACT", "favorite_color") == "blue"
    assert await supabase_store.get_memory(BOB, "FACT", "favorite_color") == "red"
    assert await supabase_store.get_memory(ALICE, "FACT", "missing") is None

    found = await supabase_store.search_memories(ALICE, "what is my favorite color?", 5)
    assert [(m.category, m.key, m.value) for m in found] == [("FACT", "favorite_color", "blue")]
    assert found[0].score > 0 and found[0].updated_at is not None

    listed = await supabase_store.list_memories(ALICE)
    assert [(m.category, m.key, m.value) for m in listed] == [
        ("FACT", "favorite_color", "blue"),
        ("PREFERENCE", "drink", "green tea"),
    ]
    assert {call.role for call in postgrest_transport.calls} == {"service_role"}
    assert {call.status for call in postgrest_transport.calls} <= {200, 204}


@pytest.mark.postgres
async def test_upsert_twice_leaves_one_row_with_the_new_value(
    supabase_store: SupabaseMemoryStore, db: asyncpg.Connection
) -> None:
    await supabase_store.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
    first = await db.fetchrow("select id, created_at, updated_at from caller_memory.memories")
    await supabase_store.upsert_memory(ALICE, "FACT", "favorite_color", "red")

    assert await memory_rows(db) == [(ALICE, "FACT", "favorite_color", "red")]
    second = await db.fetchrow("select id, created_at, updated_at from caller_memory.memories")
    assert second["id"] == first["id"] and second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    assert await supabase_store.get_memory(ALICE, "FACT", "favorite_color") == "red"


@pytest.mark.postgres
async def test_first_login_and_deletes_change_the_database(
    supabase_store: SupabaseMemoryStore, db: asyncpg.Connection
) -> None:
    await supabase_store.ensure_profile(ALICE, "alice@example.com")
    assert await supabase_store.complete_first_login(ALICE) is True
    assert await supabase_store.complete_first_login(ALICE) is False
    assert await profile_rows(db) == [(ALICE, "alice@example.com", False)]
    profile = await supabase_store.get_profile(ALICE)
    assert profile is not None and profile.is_first_login is False
    assert await supabase_store.get_profile(BOB) is None

    await supabase_store.upsert_memory(ALICE, "FACT", "a", "1")
    await supabase_store.upsert_memory(ALICE, "FACT", "b", "2")
    await supabase_store.upsert_memory(BOB, "FACT", "a", "3")
    assert await supabase_store.delete_memory(ALICE, "FACT", "a") is True
    assert await supabase_store.delete_memory(ALICE, "FACT", "a") is False
    assert await memory_rows(db) == sorted([(ALICE, "FACT", "b", "2"), (BOB, "FACT", "a", "3")])

    assert await supabase_store.delete_user(ALICE) == 1
    assert await memory_rows(db) == [(BOB, "FACT", "a", "3")]
    assert [row[0] for row in await profile_rows(db)] == [BOB]


@pytest.mark.postgres
async def test_a_user_id_that_is_not_a_uuid_is_refused_before_any_request(
    supabase_store: SupabaseMemoryStore, postgrest_transport: FakePostgrestTransport
) -> None:
    with pytest.raises(ValueError, match="uuid"):
        await supabase_store.upsert_memory("alice", "FACT", "k", "v")
    assert postgrest_transport.calls == []


@pytest.mark.postgres
async def test_the_store_works_from_several_event_loops(
    supabase_store: SupabaseMemoryStore, db: asyncpg.Connection
) -> None:
    """The test's loop, a fresh loop in a thread, and the sync bridge's loop thread."""
    await supabase_store.upsert_memory(ALICE, "FACT", "here", "1")
    await asyncio.to_thread(asyncio.run, supabase_store.upsert_memory(ALICE, "FACT", "thread", "2"))
    value = await asyncio.to_thread(
        run_sync, supabase_store.get_memory(ALICE, "FACT", "thread"), api_name="retrieve"
    )
    assert value == "2"
    await asyncio.to_thread(
        run_sync, supabase_store.upsert_memory(ALICE, "FACT", "bridge", "3"), api_name="store"
    )
    assert await memory_rows(db) == [
        (ALICE, "FACT", "bridge", "3"),
        (ALICE, "FACT", "here", "1"),
        (ALICE, "FACT", "thread", "2"),
    ]
    await supabase_store.aclose()
    with pytest.raises(StorageUnavailableError, match="closed"):
        await supabase_store.get_memory(ALICE, "FACT", "here")


# -- keys: which one is used, what happens with the anon key, and never leaking it ---------------


@pytest.mark.postgres
async def test_with_only_the_anon_key_writes_are_refused_and_rows_stay_unchanged(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    supabase_store: SupabaseMemoryStore,
    postgrest_transport: FakePostgrestTransport,
    db: asyncpg.Connection,
    anon_key: str,
) -> None:
    await supabase_store.upsert_memory(ALICE, "FACT", "favorite_color", "blue", "alice@example.com")
    memories_before, profiles_before = await memory_rows(db), await profile_rows(db)
    postgrest_transport.calls.clear()

    monkeypatch.setenv("SUPABASE_URL", FAKE_SUPABASE_URL)
    monkeypatch.setenv("SUPABASE_ANON_KEY", anon_key)
    caplog.set_level(logging.DEBUG)
    store = store_from_environment(transport=postgrest_transport)
    try:
        assert store.key_variable == "SUPABASE_ANON_KEY"
        [warning] = warnings_from_store(caplog)  # logged at start-up, before any request
        assert "SUPABASE_ANON_KEY" in warning.getMessage()
        assert "row-level security" in warning.getMessage()
        assert "SUPABASE_SERVICE_ROLE_KEY" in warning.getMessage()

        attempts = [
            store.upsert_memory(ALICE, "FACT", "favorite_color", "red"),
            store.upsert_memory(BOB, "FACT", "favorite_color", "green", "bob@example.com"),
            store.ensure_profile(BOB, "bob@example.com"),
            store.complete_first_login(ALICE),
            store.delete_memory(ALICE, "FACT", "favorite_color"),
            store.delete_user(ALICE),
            store.get_memory(ALICE, "FACT", "favorite_color"),
            store.search_memories(ALICE, "color", 5),
        ]
        for attempt in attempts:
            with pytest.raises(StorageError) as caught:
                await attempt
            assert isinstance(caught.value, StorageConfigError)  # not "try again later"
            message = str(caught.value)
            assert "anon key" in message and "row-level security" in message
            assert "SUPABASE_SERVICE_ROLE_KEY" in message
        # Another loop: still no second warning.
        with pytest.raises(StorageConfigError):
            await asyncio.to_thread(asyncio.run, store.list_memories(ALICE))
    finally:
        await store.aclose()

    assert await memory_rows(db) == memories_before
    assert await profile_rows(db) == profiles_before
    assert len(warnings_from_store(caplog)) == 1
    # Refused by the database itself (42501 -> 401 for anon), each exactly once: not retried.
    assert [(c.role, c.status) for c in postgrest_transport.calls] == [("anon", 401)] * 9


@pytest.mark.postgres
async def test_with_both_keys_set_the_service_role_key_is_used(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    postgrest_transport: FakePostgrestTransport,
    db: asyncpg.Connection,
    service_role_key: str,
    anon_key: str,
) -> None:
    monkeypatch.setenv("SUPABASE_URL", FAKE_SUPABASE_URL)
    monkeypatch.setenv("SUPABASE_ANON_KEY", anon_key)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", service_role_key)
    caplog.set_level(logging.WARNING)
    store = store_from_environment(transport=postgrest_transport)
    try:
        assert store.key_variable == "SUPABASE_SERVICE_ROLE_KEY"
        assert store.key_role == "service_role"
        await store.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
        assert await store.get_memory(ALICE, "FACT", "favorite_color") == "blue"
    finally:
        await store.aclose()
    assert await memory_rows(db) == [(ALICE, "FACT", "favorite_color", "blue")]
    assert {c.role for c in postgrest_transport.calls} == {"service_role"}
    assert warnings_from_store(caplog) == []


@pytest.mark.postgres
async def test_an_empty_service_role_key_falls_back_to_the_anon_key(
    monkeypatch: pytest.MonkeyPatch,
    postgrest_transport: FakePostgrestTransport,
    anon_key: str,
) -> None:
    """`os.getenv(SERVICE) or os.getenv(ANON)`, as the summary has it: empty means unset."""
    monkeypatch.setenv("SUPABASE_URL", FAKE_SUPABASE_URL)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "")
    monkeypatch.setenv("SUPABASE_ANON_KEY", anon_key)
    store = store_from_environment(transport=postgrest_transport)
    await store.aclose()
    assert store.key_variable == "SUPABASE_ANON_KEY" and store.key_role == "anon"


@pytest.mark.postgres
async def test_the_service_role_key_never_reaches_logs_or_errors(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    authenticator_dsn: str,
    postgrest_transport: FakePostgrestTransport,
    db: asyncpg.Connection,
    service_role_key: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and supabase-py included
    monkeypatch.setenv("SUPABASE_URL", FAKE_SUPABASE_URL)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", service_role_key)
    forged_key = mint_jwt("service_role", secret="not-this-project's-secret-at-all-0000")
    errors: list[BaseException] = []
    stores = [
        store_from_environment(transport=postgrest_transport),
        store_from_environment(
            transport=FlakyTransport(postgrest_transport, failures=100), timeout=0.5
        ),
        store_from_environment(transport=HangingTransport(), timeout=0.2),
        store_from_environment(
            transport=FlakyTransport(
                postgrest_transport, failures=100, error=httpx.ConnectError("refused")
            ),
            timeout=0.3,
        ),
        store_from_environment(
            transport=FakePostgrestTransport(authenticator_dsn, db_schemas=("api",)),
            schema="api",
        ),
        make_store(postgrest_transport, forged_key),
    ]
    try:
        ok = stores[0]
        await ok.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
        assert await ok.search_memories(ALICE, "color", 3)
        for store in stores[1:]:
            with pytest.raises(StorageError) as caught:
                await store.upsert_memory(ALICE, "FACT", "favorite_color", "red")
            errors.append(caught.value)
    finally:
        for store in stores:
            await store.aclose()

    assert [type(e) for e in errors] == [
        StorageUnavailableError,
        StorageUnavailableError,
        StorageUnavailableError,
        StorageSchemaError,
        StorageConfigError,
    ]
    assert caplog.records, "the test must actually capture some logging"
    for secret in (service_role_key, forged_key):
        assert secret not in caplog.text
        for record in caplog.records:
            assert secret not in str(record.args)
        for error in errors:
            assert secret not in error_text(error)
        for store in stores:
            assert secret not in repr(store)
    assert await memory_rows(db) == [(ALICE, "FACT", "favorite_color", "blue")]


# -- failures: retried, bounded, and explained ------------------------------------------------


@pytest.mark.postgres
async def test_transient_503s_are_retried_and_then_succeed(
    postgrest_transport: FakePostgrestTransport,
    db: asyncpg.Connection,
    service_role_key: str,
) -> None:
    flaky = FlakyTransport(postgrest_transport, failures=3)
    store = make_store(flaky, service_role_key, timeout=2.0)
    try:
        await store.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
    finally:
        await store.aclose()
    assert (flaky.requests, flaky.forwarded) == (4, 1)
    assert await memory_rows(db) == [(ALICE, "FACT", "favorite_color", "blue")]


@pytest.mark.postgres
async def test_a_cloudflare_520_and_a_dropped_connection_are_retried(
    supabase_store: SupabaseMemoryStore,
    postgrest_transport: FakePostgrestTransport,
    service_role_key: str,
) -> None:
    await supabase_store.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
    cloudflare = FlakyTransport(
        postgrest_transport,
        failures=1,
        status=520,
        content=b"error code: 520",
        content_type="text/plain",
    )
    dropped = FlakyTransport(
        postgrest_transport, failures=2, error=httpx.RemoteProtocolError("server hung up")
    )
    for transport in (cloudflare, dropped):
        store = make_store(transport, service_role_key)
        try:
            assert await store.get_memory(ALICE, "FACT", "favorite_color") == "blue"
        finally:
            await store.aclose()
        assert transport.forwarded == 1 and transport.requests == transport.failures + 1


@pytest.mark.postgres
async def test_retries_are_bounded_then_unavailable(
    postgrest_transport: FakePostgrestTransport,
    db: asyncpg.Connection,
    service_role_key: str,
) -> None:
    flaky = FlakyTransport(postgrest_transport, failures=1000)
    store = make_store(flaky, service_role_key, timeout=5.0, max_attempts=4)
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailableError, match="memory_upsert") as caught:
            await store.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
    finally:
        await store.aclose()
    assert flaky.requests == 4 and flaky.forwarded == 0
    assert time.monotonic() - started < 2.0  # short backoffs, well inside the budget
    assert "503" in str(caught.value)
    assert await memory_rows(db) == []


async def test_a_hanging_server_fails_within_the_timeout(service_role_key: str) -> None:
    hanging = HangingTransport()
    store = make_store(hanging, service_role_key, timeout=0.4)
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailableError, match="SUPABASE_TIMEOUT_SECONDS"):
            await store.get_memory(ALICE, "FACT", "favorite_color")
    finally:
        await store.aclose()
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 0.4 + 0.25
    assert hanging.started >= 1 and hanging.cancelled == hanging.started


@pytest.mark.postgres
async def test_missing_functions_say_to_run_supabase_db_push(
    authenticator_dsn: str, service_role_key: str
) -> None:
    """A project without the migrations: PostgREST has no such function (404 PGRST202)."""
    transport = FakePostgrestTransport(authenticator_dsn, db_schemas=("api",))
    store = make_store(transport, service_role_key, schema="api")
    try:
        with pytest.raises(StorageSchemaError, match="supabase db push"):
            await store.get_memory(ALICE, "FACT", "favorite_color")
    finally:
        await store.aclose()
    assert [c.status for c in transport.calls] == [404]


@pytest.mark.postgres
async def test_an_expired_or_forged_key_is_refused_with_a_clear_error(
    postgrest_transport: FakePostgrestTransport, db: asyncpg.Connection
) -> None:
    expired = make_store(postgrest_transport, mint_jwt("service_role", expires_in=-60))
    try:
        with pytest.raises(StorageConfigError, match="SUPABASE_SERVICE_ROLE_KEY") as caught:
            await expired.upsert_memory(ALICE, "FACT", "k", "v")
    finally:
        await expired.aclose()
    assert "invalid, expired or from another project" in str(caught.value)
    assert [(c.role, c.status) for c in postgrest_transport.calls] == [(None, 401)]
    assert await memory_rows(db) == []


@pytest.mark.postgres
async def test_the_service_role_without_execute_rights_is_told_to_push_the_migrations(
    authenticator_dsn: str, db: asyncpg.Connection, service_role_key: str
) -> None:
    """A function the service role may not run (grants missing) is a 403 42501 from PostgREST."""
    await db.execute(
        """
        create schema memory_no_grants;
        grant usage on schema memory_no_grants to service_role;
        create function memory_no_grants.memory_get(p_user_id uuid, p_category text, p_key text)
            returns text language sql as 'select null::text';
        revoke all on function memory_no_grants.memory_get(uuid, text, text) from public;
        """
    )
    transport = FakePostgrestTransport(authenticator_dsn, db_schemas=("memory_no_grants",))
    store = make_store(transport, service_role_key, schema="memory_no_grants")
    try:
        with pytest.raises(StorageConfigError, match="grants") as caught:
            await store.get_memory(ALICE, "FACT", "k")
    finally:
        await store.aclose()
        await db.execute("drop schema memory_no_grants cascade")
    assert "supabase db push" in str(caught.value)
    assert [(c.role, c.status) for c in transport.calls] == [("service_role", 403)]


@pytest.mark.postgres
async def test_the_fake_maps_a_signed_in_users_refusal_to_403_like_postgrest(
    postgrest_transport: FakePostgrestTransport, anon_key: str
) -> None:
    """The fake itself: anon apikey, a signed-in user's token, 42501 -> 403 (401 is for anon)."""
    from postgrest.exceptions import APIError
    from supabase import AsyncClientOptions, acreate_client

    async with httpx.AsyncClient(transport=postgrest_transport) as http:
        options = AsyncClientOptions(
            schema="caller_memory",
            httpx_client=http,
            headers={"Authorization": f"Bearer {mint_jwt('authenticated', sub=ALICE)}"},
            postgrest_client_retry=False,
        )
        client = await acreate_client(FAKE_SUPABASE_URL, anon_key, options=options)
        with pytest.raises(APIError) as caught:
            await client.rpc("memory_list", {"p_user_id": ALICE}).execute()
    assert caught.value.code == "42501"
    # The API roles may not even use the schema the memory functions live in.
    assert "permission denied for schema caller_memory" in (caught.value.message or "")
    assert [(c.role, c.status) for c in postgrest_transport.calls] == [("authenticated", 403)]


# -- the real HTTP stack (httpx + httpcore on a local socket) -----------------------------------


class LocalHTTPServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 that answers with canned responses, in order.

    It exercises what the fake transport skips: httpcore's connections, sockets and its
    DEBUG logging. `None` as a response means: accept the request and never answer.
    """

    def __init__(self, responses: list[tuple[int, bytes] | None]) -> None:
        self.responses = responses
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *header_lines = head.strip().split("\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in header_lines)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((request_line, headers, body))
                response = self.responses[min(len(self.requests), len(self.responses)) - 1]
                if response is None:
                    await asyncio.Event().wait()
                    return
                status, content = response
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(content)}\r\n\r\n".encode()
                    + content
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_over_real_http_the_key_is_sent_but_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, service_role_key: str
) -> None:
    caplog.set_level(logging.DEBUG)
    unavailable = b'{"code":"PGRST001","message":"Database client error.","details":null}'
    server = LocalHTTPServer([(503, unavailable), (200, b'"blue"')])
    async with server as url:
        monkeypatch.setenv("SUPABASE_URL", url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", service_role_key)
        store = store_from_environment()
        try:
            assert await store.get_memory(ALICE, "FACT", "favorite_color") == "blue"
        finally:
            await store.aclose()

    assert len(server.requests) == 2  # the 503 was retried
    for request_line, headers, body in server.requests:
        assert request_line == "POST /rest/v1/rpc/memory_get HTTP/1.1"
        assert headers["apikey"] == service_role_key
        assert headers["authorization"] == f"Bearer {service_role_key}"
        assert json.loads(body) == {
            "p_user_id": ALICE,
            "p_category": "FACT",
            "p_key": "favorite_color",
        }
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert service_role_key not in caplog.text


async def test_over_real_http_a_server_that_never_answers_times_out(
    caplog: pytest.LogCaptureFixture, service_role_key: str
) -> None:
    caplog.set_level(logging.DEBUG)
    server = LocalHTTPServer([None])
    async with server as url:
        store = SupabaseMemoryStore(url, service_role_key, timeout=0.3)
        started = time.monotonic()
        try:
            with pytest.raises(StorageUnavailableError, match=r"within the 0\.3 s budget"):
                await store.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
        finally:
            await store.aclose()
    assert time.monotonic() - started < 0.3 + 0.25
    assert len(server.requests) == 1
    assert service_role_key not in caplog.text


@pytest.mark.postgres
async def test_an_injected_http_client_is_used_retried_through_and_left_open(
    postgrest_transport: FakePostgrestTransport,
    db: asyncpg.Connection,
    service_role_key: str,
) -> None:
    flaky = FlakyTransport(postgrest_transport, failures=1)
    async with httpx.AsyncClient(transport=flaky) as http:
        store = SupabaseMemoryStore(FAKE_SUPABASE_URL, service_role_key, http_client=http)
        await store.upsert_memory(ALICE, "FACT", "favorite_color", "blue")
        await store.aclose()
        assert not http.is_closed  # the caller's client, the caller closes it
    assert (flaky.requests, flaky.forwarded) == (2, 1)
    assert await memory_rows(db) == [(ALICE, "FACT", "favorite_color", "blue")]


# -- configuration ------------------------------------------------------------------------------


# Malformed settings are refused when the settings are read (`SettingsError`); settings that are
# well-formed but select no Supabase project are refused by the store (`StorageConfigError`).
@pytest.mark.parametrize(
    ("env", "variable", "error"),
    [
        ({}, "SUPABASE_URL", StorageConfigError),
        ({"SUPABASE_URL": "my-project.supabase.co"}, "SUPABASE_URL", SettingsError),
        ({"SUPABASE_URL": "ftp://my-project.supabase.co"}, "SUPABASE_URL", SettingsError),
        ({"SUPABASE_URL": "https://my-project.supabase.co/rest/v1"}, "SUPABASE_URL", SettingsError),
        (
            {"SUPABASE_URL": "https://my-project.supabase.co"},
            "SUPABASE_SERVICE_ROLE_KEY",
            SettingsError,
        ),
        (
            {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "   "},
            "SUPABASE_SERVICE_ROLE_KEY",
            SettingsError,
        ),
        (
            {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "ab cd"},
            "SUPABASE_SERVICE_ROLE_KEY",
            SettingsError,
        ),
        (
            {
                "SUPABASE_URL": "https://x.supabase.co",
                "SUPABASE_ANON_KEY": "abc",
                "SUPABASE_TIMEOUT_SECONDS": "soon",
            },
            "SUPABASE_TIMEOUT_SECONDS",
            SettingsError,
        ),
        (
            {
                "SUPABASE_URL": "https://x.supabase.co",
                "SUPABASE_ANON_KEY": "abc",
                "SUPABASE_TIMEOUT_SECONDS": "0",
            },
            "SUPABASE_TIMEOUT_SECONDS",
            SettingsError,
        ),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str, error: type[Exception]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(error, match=variable) as caught:
        store_from_environment()
    assert "ab cd" not in str(caught.value)


async def test_open_store_picks_supabase_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, service_role_key: str
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://my-project.supabase.co/")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", service_role_key)
    # well-formed (every setting is validated) and still ignored: Supabase wins
    monkeypatch.setenv("DATABASE_URL", "postgresql://ignored@db.example.com/x")
    monkeypatch.setenv("SUPABASE_TIMEOUT_SECONDS", "0.75")
    store = open_store(MemorySettings.load())  # builds, connects to nothing
    try:
        assert isinstance(store, SupabaseMemoryStore)
        assert store.url == "https://my-project.supabase.co"
        assert store.timeout == 0.75 and store.key_variable == "SUPABASE_SERVICE_ROLE_KEY"
    finally:
        await store.aclose()


def test_key_role_reads_the_key_kind() -> None:
    assert key_role(mint_jwt("anon")) == "anon"
    assert key_role(mint_jwt("service_role")) == "service_role"
    assert key_role("sb_secret_abc123") == "service_role"
    assert key_role("sb_publishable_abc123") == "anon"
    assert key_role("not-a-jwt") is None
    assert key_role("a.!!!.c") is None


def test_the_fake_verifies_keys_as_postgrest_does() -> None:
    """The fake's own check of a key (the gateway's and PostgREST's), which the tests of
    refused keys rely on: signed with the project's secret, HS256, and not expired."""
    claims = verify_jwt(mint_jwt("authenticated", sub=ALICE), TEST_JWT_SECRET)
    assert (claims["role"], claims["sub"]) == ("authenticated", ALICE)
    assert claims["iss"] == "supabase-test"
    assert claims["exp"] - claims["iat"] == 3600
    refused = {
        "expired": (mint_jwt("service_role", expires_in=-60), "JWT expired"),
        "forged": (
            mint_jwt("service_role", secret="not-this-project's-secret-at-all-0000"),
            "JWT cryptographic operation failed",
        ),
        "unsigned": (
            jwt.encode({"role": "service_role"}, None, algorithm="none"),
            "Wrong or unsupported encoding algorithm",
        ),
        "HS512": (
            jwt.encode({"role": "service_role"}, TEST_JWT_SECRET * 2, algorithm="HS512"),
            "Wrong or unsupported encoding algorithm",
        ),
        "two parts": ("abc.def", "Expected 3 parts in JWT; got 2"),
        "garbage": ("a.!!!.c", "JWT cryptographic operation failed"),
    }
    for what, (token, message) in refused.items():
        with pytest.raises(JWTError) as caught:
            verify_jwt(token, TEST_JWT_SECRET)
        assert str(caught.value) == message, what
