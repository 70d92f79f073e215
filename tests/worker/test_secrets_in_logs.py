"""Secrets never reach logs or error messages; raw identities only reach DEBUG records.

Each test sets recognisable fake secrets (the LiveKit API secret, the OpenAI key, both
Supabase keys, a database password) in the environment, captures every log record of every
logger at DEBUG (a handler on the root logger and on any logger that does not propagate, plus
pytest's caplog), runs real work that is likely to mention its configuration, and then
searches all of it: every record's formatted message, arguments, extra fields and
traceback, every exception the work raised (with its causes), and whatever reached stdout or
stderr.

- A caller with an e-mail identity starts a real `AgentSession` through `memory.attach`
  (SQLite store, scripted LLM, fake STT) and has a spoken and a typed turn: their identity
  appears at DEBUG (so the check is not vacuous) and never at INFO or above.
- The settings checks (`WorkerSettings.load().check_for(command)`), passing and failing.
- The Supabase store through the fake PostgREST: working calls with the service-role key,
  a missing function, the anon key (refused by row-level security) and a forged key.
- The Postgres store with a DSN whose user does not exist and with one whose server refuses
  the connection, the password in the URL's userinfo and in its query string.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from agent import WorkerSettings
from caller_memory import (
    CallerMemory,
    MemorySettings,
    SettingsError,
    memory_manager,
    session_user,
    set_default_memory,
)
from caller_memory.stores.errors import StorageConfigError, StorageError, StorageUnavailableError
from caller_memory.stores.postgres import PostgresMemoryStore
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.stores.supabase import SupabaseMemoryStore
from caller_memory.testing import FakeScriptedLLM, FakeSTT, user_texts
from tests.postgrest_transport import FAKE_SUPABASE_URL, FakePostgrestTransport, mint_jwt
from tests.session_harness import eventually, spoken_session, start_in_own_task, text_session
from tests.support import sqlite_rows

LIVEKIT_SECRET = "lk-secret-XYZ" + "-7f3a9c1e5b2d4f60"
OPENAI_KEY = "sk-test-SECRET" + "-4b8d2f6a0c1e3579"
DB_PASSWORD = "pg-SECRET" + "-pass-9e1d7c5b3a"
SERVICE_KEY = mint_jwt("service_role", marker="SECRET-service-role")
ANON_KEY = mint_jwt("anon", marker="SECRET-anon")
FORGED_KEY = mint_jwt("service_role", secret="not-the-project-secret") + "-SECRET"
IDENTITY = "carol.private-caller@example.org"


def _jwt_parts(key: str) -> list[str]:
    _header, payload, signature = key.split(".")
    return [key, payload, signature]


SECRETS = [
    LIVEKIT_SECRET,
    OPENAI_KEY,
    DB_PASSWORD,
    quote(DB_PASSWORD, safe=""),
    *_jwt_parts(SERVICE_KEY),
    *_jwt_parts(ANON_KEY),
    *_jwt_parts(FORGED_KEY),
]

SECRET_ENV = {
    "LIVEKIT_URL": "wss://memory-test.livekit.invalid",
    "LIVEKIT_API_KEY": "APImemorytest",
    "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
    "OPENAI_API_KEY": OPENAI_KEY,
    "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
    "SUPABASE_ANON_KEY": ANON_KEY,
}


class Everything(logging.Handler):
    """Keeps every record it sees."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text_of(self, record: logging.LogRecord) -> str:
        """All a log sink could print for `record`: message, traceback, args, extras."""
        return "\n".join([self.format(record), repr(record.args), repr(vars(record))])


class Capture:
    def __init__(self, handler: Everything, caplog: pytest.LogCaptureFixture) -> None:
        self.handler = handler
        self.caplog = caplog
        self.errors: list[BaseException] = []

    def records(self) -> list[logging.LogRecord]:
        seen = {id(r) for r in self.handler.records}
        return self.handler.records + [r for r in self.caplog.records if id(r) not in seen]

    async def expect_error(
        self, kind: type[BaseException] | tuple[type[BaseException], ...], work: Any
    ) -> BaseException:
        """Await `work` (a coroutine, or a callable), which must raise `kind`; keep the error."""
        with pytest.raises(kind) as caught:
            result = work() if callable(work) else work
            if asyncio.iscoroutine(result):
                await result
        self.errors.append(caught.value)
        return caught.value

    def assert_no_secrets(self, output: str = "") -> None:
        assert self.records(), "nothing was logged: the capture is not working"
        for record in self.records():
            text = self.handler.text_of(record)
            for secret in SECRETS:
                assert secret not in text, (secret, record.levelname, record.name, text[:500])
        for error in self.errors:
            text = "".join(traceback.format_exception(error)) + repr(error)
            for secret in SECRETS:
                assert secret not in text, (secret, text[:1000])
        for secret in SECRETS:
            assert secret not in output, secret

    def assert_identity_only_at_debug(self, identity: str, output: str = "") -> None:
        """`identity` is in DEBUG records only: not at INFO or above, in no error, no output."""
        records = self.records()
        loud = [
            (r.levelname, r.name, r.getMessage())
            for r in records
            if r.levelno > logging.DEBUG and identity in self.handler.text_of(r)
        ]
        assert loud == []
        for error in self.errors:
            assert identity not in "".join(traceback.format_exception(error)) + repr(error)
        assert identity not in output


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[Capture]:
    """The secrets in the environment, and every logger at DEBUG into one handler."""
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("CONSOLE_USER_IDENTITY", raising=False)
    handler = Everything()
    root = logging.getLogger()
    saved: list[tuple[logging.Logger, int]] = [(root, root.level)]
    isolated: list[logging.Logger] = []
    for logger in [*logging.Logger.manager.loggerDict.values(), root]:
        if not isinstance(logger, logging.Logger):
            continue
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        if not logger.propagate:
            logger.addHandler(handler)
            isolated.append(logger)
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        yield Capture(handler, caplog)
    finally:
        root.removeHandler(handler)
        for logger in isolated:
            logger.removeHandler(handler)
        for logger, level in reversed(saved):
            logger.setLevel(level)


def check_settings_for(command: str) -> None:
    """What `agent.py <command>` checks before it starts: every setting, and what `command`
    needs."""
    WorkerSettings.load().check_for(command)


def _user_texts(fake_llm: FakeScriptedLLM) -> list[str]:
    return [text for chat_ctx in fake_llm.requests for text in user_texts(chat_ctx)]


# -- a real session ---------------------------------------------------------------------------


async def test_a_session_logs_no_secret_and_the_identity_only_at_debug(
    capture: Capture,
    installed_sqlite_store: SQLiteMemoryStore,
    capfd: pytest.CaptureFixture[str],
) -> None:
    check_settings_for("start")
    fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
    session = spoken_session(fake_llm, fake_stt)
    caller = await start_in_own_task(session, IDENTITY)
    try:
        await eventually(lambda: bool(fake_llm.requests), "the greeting")
        spoken = "my name is Carol and my favorite color is teal"
        fake_stt.say(spoken)
        await eventually(lambda: spoken in _user_texts(fake_llm), "the spoken turn's reply")
        assert await caller.writer.flush(5.0)
        await session.run(user_input="I work as a nurse at the city hospital")
        assert await caller.writer.flush(5.0)
        recalled = "do you remember my favorite color?"
        fake_stt.say(recalled)
        await eventually(lambda: recalled in _user_texts(fake_llm), "the recall turn's reply")
        await caller.aclose()
    finally:
        await session.aclose()

    profiles, memories = sqlite_rows(installed_sqlite_store.path)
    assert [p["original_identity"] for p in profiles] == [IDENTITY]
    assert any(m["value"] == "teal" for m in memories)  # the turns really were remembered
    output = "".join(capfd.readouterr())
    capture.assert_no_secrets(output)
    capture.assert_identity_only_at_debug(IDENTITY, output)
    records = capture.records()
    # Not vacuous: the identity is logged, at DEBUG, and the uuid stands for it above that.
    assert any(IDENTITY in r.getMessage() for r in records if r.levelno == logging.DEBUG)
    assert any(r.levelno >= logging.INFO and caller.user_uuid in r.getMessage() for r in records)


# -- the settings checks ----------------------------------------------------------------------


async def test_settings_checks_echo_no_secret(
    capture: Capture, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for command in ("dev", "start", "connect", "console", "download-files"):
        check_settings_for(command)
    logging.getLogger("memory_worker.test").debug("settings checked")  # the capture works

    # Secrets pasted into the wrong variable, and secrets left with their URL missing.
    bad: list[tuple[str, dict[str, str | None]]] = [
        ("start", {"LIVEKIT_URL": LIVEKIT_SECRET}),
        ("start", {"LIVEKIT_URL": f"localhost:7880?secret={LIVEKIT_SECRET}"}),
        ("start", {"LIVEKIT_API_KEY": None}),
        ("dev", {"LIVEKIT_API_SECRET": None}),
        ("console", {"OPENAI_BASE_URL": OPENAI_KEY}),
        ("console", {"OPENAI_API_KEY": None}),
        ("start", {"SUPABASE_URL": SERVICE_KEY}),
        ("start", {"SUPABASE_URL": f"supabase.invalid/?apikey={SERVICE_KEY}"}),
        ("start", {"DATABASE_URL": f"mysql://memory:{DB_PASSWORD}@db.invalid/memory"}),
        ("start", {"MEMORY_ALLOW_DEFAULT_USER": "1"}),
        (
            "start",
            {
                "SUPABASE_URL": "https://memory-test.supabase.invalid",
                "SUPABASE_SERVICE_ROLE_KEY": None,
                "SUPABASE_ANON_KEY": None,
            },
        ),
    ]
    for command, changes in bad:
        with monkeypatch.context() as patch:
            for name, value in changes.items():
                if value is None:
                    patch.delenv(name, raising=False)
                else:
                    patch.setenv(name, value)
            await capture.expect_error(SettingsError, lambda c=command: check_settings_for(c))
    assert len(capture.errors) == len(bad)

    # A memory built from the settings (as a script or the operator's command builds one)
    # refuses the same variables, and the stores' own checks refuse them when given directly.
    with monkeypatch.context() as patch:
        patch.setenv("SUPABASE_URL", FAKE_SUPABASE_URL)
        patch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY + " pasted twice " + SERVICE_KEY)
        await capture.expect_error(SettingsError, CallerMemory.from_settings)
        patch.setenv("SUPABASE_URL", f"ftp://{SERVICE_KEY}@x")
        await capture.expect_error(SettingsError, CallerMemory.from_settings)
    with monkeypatch.context() as patch:
        patch.setenv("DATABASE_URL", f"mysql://memory:{DB_PASSWORD}@db.invalid/memory")
        await capture.expect_error(SettingsError, CallerMemory.from_settings)
    await capture.expect_error(
        StorageConfigError, lambda: SupabaseMemoryStore(f"ftp://{SERVICE_KEY}@x", SERVICE_KEY)
    )
    await capture.expect_error(
        StorageConfigError,
        lambda: PostgresMemoryStore(f"mysql://memory:{DB_PASSWORD}@db.invalid/memory"),
    )
    capture.assert_no_secrets("".join(capfd.readouterr()))


# -- Supabase ---------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_supabase_store_logs_no_key_working_or_failing(
    capture: Capture,
    monkeypatch: pytest.MonkeyPatch,
    pg_dsn: str,
    postgrest_transport: FakePostgrestTransport,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from tests.postgres_fixtures import truncate_all

    await truncate_all(pg_dsn)
    monkeypatch.setenv("SUPABASE_URL", FAKE_SUPABASE_URL)
    settings = MemorySettings.load()
    store = SupabaseMemoryStore.from_settings(settings, transport=postgrest_transport)
    assert store.key_variable == "SUPABASE_SERVICE_ROLE_KEY" and store.key_role == "service_role"
    set_default_memory(CallerMemory(store=store, settings=settings))
    try:
        with session_user(IDENTITY) as user_uuid:
            await memory_manager.astore("FACT", "favorite_color", "teal")
            assert await memory_manager.aretrieve("FACT", "favorite_color") == "teal"
            assert [m.value for m in await memory_manager.asearch("color")] == ["teal"]
            assert len(await memory_manager.alist()) == 1
            await capture.expect_error(StorageError, store._rpc("memory_no_such_function", {}))
            assert await memory_manager.aforget("FACT", "favorite_color") is True
        assert repr(store).count("service_role") == 1
    finally:
        await store.aclose()

    # The anon key only: one warning at start-up, every call refused by row-level security.
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY")
    anon = SupabaseMemoryStore.from_settings(MemorySettings.load(), transport=postgrest_transport)
    try:
        for work in (
            anon.upsert_memory(user_uuid, "FACT", "favorite_color", "red", IDENTITY),
            anon.ensure_profile(user_uuid, IDENTITY),
            anon.search_memories(user_uuid, "color", 5),
            anon.delete_user(user_uuid),
        ):
            error = await capture.expect_error(StorageConfigError, work)
            assert "anon key" in str(error)
    finally:
        await anon.aclose()

    # A key from another project (or tampered with): the gateway refuses it.
    forged = SupabaseMemoryStore(
        FAKE_SUPABASE_URL, FORGED_KEY, transport=postgrest_transport, timeout=5.0
    )
    try:
        error = await capture.expect_error(
            StorageConfigError, forged.get_memory(user_uuid, "FACT", "favorite_color")
        )
        assert "SUPABASE_SERVICE_ROLE_KEY" in str(error)
    finally:
        await forged.aclose()

    assert any(r.levelno == logging.WARNING and "anon" in r.getMessage() for r in capture.records())
    output = "".join(capfd.readouterr())
    capture.assert_no_secrets(output)
    capture.assert_identity_only_at_debug(IDENTITY, output)


# -- Postgres ---------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.postgres
async def test_postgres_store_logs_no_password_when_it_cannot_log_in(
    capture: Capture,
    monkeypatch: pytest.MonkeyPatch,
    pg_cluster: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    socket_dir = quote(str(pg_cluster.socket_dir))
    port = pg_cluster.port
    password = quote(DB_PASSWORD, safe="")
    refused = _closed_port()
    cases: list[tuple[str, type[StorageError]]] = [
        # No such role: the server refuses the login.
        (
            f"postgresql://intruder:{password}@/memory_test?host={socket_dir}&port={port}",
            StorageConfigError,
        ),
        (
            f"postgresql://intruder@/memory_test?host={socket_dir}&port={port}&password={password}",
            StorageConfigError,
        ),
        # No server at all: the connection is refused.
        (f"postgresql://memory:{password}@127.0.0.1:{refused}/memory", StorageUnavailableError),
        (
            f"postgres://memory@127.0.0.1:{refused}/memory?password={password}",
            StorageUnavailableError,
        ),
    ]
    for dsn, kind in cases:
        monkeypatch.setenv("DATABASE_URL", dsn)
        monkeypatch.setenv("DATABASE_TIMEOUT_SECONDS", "2")
        memory = CallerMemory.from_settings()
        store = memory.store
        assert isinstance(store, PostgresMemoryStore)
        assert DB_PASSWORD not in repr(store) and password not in store.target
        set_default_memory(memory)
        try:
            with session_user(IDENTITY):
                error = await capture.expect_error(
                    kind, memory_manager.astore("FACT", "favorite_color", "teal")
                )
                assert "DATABASE_URL" in str(error)
                await capture.expect_error(kind, memory_manager.asearch("color"))
        finally:
            await store.aclose()

    # A whole session on the store that refuses the login: the profile, the known memories
    # and the capture all fail, are logged, and the captured memories go to the spool.
    monkeypatch.setenv("DATABASE_URL", cases[0][0])
    memory = CallerMemory.from_settings()
    store = memory.store
    set_default_memory(memory)
    session = text_session(FakeScriptedLLM())
    try:
        caller = await start_in_own_task(session, IDENTITY)
        await session.run(user_input="my favorite color is teal")
        assert await caller.aclose(5.0)
        assert caller.writer.spooled_count >= 1 and caller.writer.stored_count == 0
    finally:
        await session.aclose()
        await store.aclose()
    assert any(
        r.levelno >= logging.WARNING and "DATABASE_URL" in r.getMessage() for r in capture.records()
    )
    output = "".join(capfd.readouterr())
    capture.assert_no_secrets(output)
    capture.assert_identity_only_at_debug(IDENTITY, output)
