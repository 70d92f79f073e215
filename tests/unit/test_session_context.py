"""The session user in ContextVars: set/get, scoping, and failing closed without one."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import caller_memory.context as session_context
import caller_memory.profiles as profiles
from caller_memory import CallerMemory, MemorySettings, SettingsError, set_default_memory
from caller_memory.context import (
    DEFAULT_USER_IDENTITY,
    NoSessionUserError,
    clear_session_user,
    get_current_identity,
    get_current_user,
    get_session_livekit_identity,
    get_session_user_uuid,
    session_user,
    set_session_user,
)
from caller_memory.identity import livekit_identity_to_uuid
from caller_memory.manager import memory_manager
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeStoreOutage
from caller_memory.validation import MAX_KEY_LENGTH, MAX_VALUE_LENGTH
from tests.support import sqlite_rows

ALICE = "alice@example.com"
BOB = "bob@example.com"


def uuid_of(identity: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, identity))


def in_empty_context(fn: Callable[..., Any], *args: Any) -> Any:
    return contextvars.Context().run(fn, *args)


@pytest.fixture
async def recorded_store(memory: CallerMemory) -> FakeStoreOutage:
    """The real SQLite store (schema created) behind a wrapper that records calls, as the store
    of the process-wide default memory (the one `memory_manager` and `profiles` use)."""
    await memory.store.get_profile("schema-only")
    wrapper = FakeStoreOutage(memory.store)
    wrapper.down = False
    set_default_memory(CallerMemory(store=wrapper, settings=memory.settings))  # type: ignore[arg-type]
    return wrapper


def reread_settings(store: SQLiteMemoryStore | None = None) -> None:
    """Make the process-wide default memory read the environment again (it reads it once, on
    first use): on `store` if given, else on the store the environment selects."""
    if store is None:
        set_default_memory(None)
    else:
        set_default_memory(CallerMemory(store=store, settings=MemorySettings.load()))


# -- set / get / scoping ---------------------------------------------------------------------


def test_set_and_get() -> None:
    def body() -> None:
        assert get_session_user_uuid() is None
        assert get_session_livekit_identity() is None
        got = set_session_user(ALICE)
        assert got == uuid_of(ALICE)
        assert get_session_user_uuid() == uuid_of(ALICE)
        assert get_session_livekit_identity() == ALICE
        assert get_current_user() == uuid_of(ALICE)
        assert get_current_identity() == ALICE
        assert set_session_user(BOB) == uuid_of(BOB)
        assert get_current_user() == uuid_of(BOB)
        assert get_current_identity() == BOB

    in_empty_context(body)


def test_invalid_identity_leaves_the_current_user_unchanged() -> None:
    def body() -> None:
        set_session_user(ALICE)
        for bad in ["", "  ", None, "a\x00b", "x" * 1025]:
            with pytest.raises(ValueError):
                set_session_user(bad)  # type: ignore[arg-type]
            assert get_session_user_uuid() == uuid_of(ALICE)
            assert get_session_livekit_identity() == ALICE

    in_empty_context(body)


def test_session_user_block_restores_the_previous_value_nested() -> None:
    def body() -> None:
        assert get_session_user_uuid() is None
        with session_user(ALICE) as outer:
            assert outer == uuid_of(ALICE)
            assert get_current_user() == outer
            with session_user(BOB) as inner:
                assert inner == uuid_of(BOB)
                assert get_current_user() == inner
                assert get_session_livekit_identity() == BOB
            assert get_current_user() == outer
            assert get_session_livekit_identity() == ALICE
            with pytest.raises(KeyError), session_user("carol"):
                assert get_session_livekit_identity() == "carol"
                raise KeyError("boom")
            assert get_current_user() == outer
        assert get_session_user_uuid() is None
        assert get_session_livekit_identity() is None
        # inside a set_session_user'd context, the block restores that value too
        set_session_user(BOB)
        with session_user(ALICE):
            assert get_current_user() == uuid_of(ALICE)
        assert get_current_user() == uuid_of(BOB)

    in_empty_context(body)


def test_clear_session_user_fails_closed_afterwards() -> None:
    def body() -> None:
        set_session_user(ALICE)
        clear_session_user()
        assert get_session_user_uuid() is None
        assert get_session_livekit_identity() is None
        with pytest.raises(NoSessionUserError):
            get_current_user()

    in_empty_context(body)


async def test_a_task_setting_its_user_does_not_change_its_parent() -> None:
    async def child(identity: str) -> str | None:
        set_session_user(identity)
        await asyncio.sleep(0)
        return get_session_user_uuid()

    set_session_user(ALICE)
    got = await asyncio.gather(child(BOB), child("carol"))
    assert got == [uuid_of(BOB), uuid_of("carol")]
    assert get_session_user_uuid() == uuid_of(ALICE)


def test_get_current_user_fails_closed_when_empty() -> None:
    with pytest.raises(NoSessionUserError, match="No session user is set") as info:
        in_empty_context(get_current_user, "storing a memory")
    text = str(info.value)
    assert "storing a memory was refused" in text
    assert "nothing was written" in text
    assert "set_session_user" in text
    assert isinstance(info.value, RuntimeError)
    assert in_empty_context(get_current_identity) is None


# -- the opt-in default user -----------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "  ", "0", "false", "no", " NO "])
def test_default_user_refused_without_opt_in(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("MEMORY_ALLOW_DEFAULT_USER", raising=False)
    else:
        monkeypatch.setenv("MEMORY_ALLOW_DEFAULT_USER", value)
    reread_settings()
    assert not session_context.default_user_allowed()
    with pytest.raises(NoSessionUserError):
        in_empty_context(get_current_user)
    with pytest.raises(NoSessionUserError):
        session_context.get_or_create_default_user()
    assert in_empty_context(get_current_identity) is None


@pytest.mark.parametrize("value", ["2", "off", "enabled", "-1"])
def test_a_malformed_opt_in_refuses_the_default_user_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # Settings are validated: a value that is none of the documented ones (1/true/yes,
    # 0/false/no) is an error that names the variable (it used to count as off silently), and
    # no path falls back to the shared user.
    monkeypatch.setenv("MEMORY_ALLOW_DEFAULT_USER", value)
    reread_settings()
    attempts: list[Callable[[], object]] = [
        session_context.default_user_allowed,
        session_context.get_or_create_default_user,
        lambda: in_empty_context(get_current_user),
        lambda: in_empty_context(get_current_identity),
    ]
    for attempt in attempts:
        with pytest.raises(SettingsError, match=r"^MEMORY_ALLOW_DEFAULT_USER must be 1 to"):
            attempt()


@pytest.mark.parametrize("value", ["1", "true", "yes", " TRUE "])
def test_default_user_only_with_opt_in(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MEMORY_ALLOW_DEFAULT_USER", value)
    reread_settings()
    default = uuid_of(DEFAULT_USER_IDENTITY)
    assert in_empty_context(get_current_user) == default
    assert in_empty_context(get_current_identity) == DEFAULT_USER_IDENTITY
    assert session_context.get_or_create_default_user() == default

    # a real session user still wins over the fallback
    def with_user() -> tuple[str, str | None]:
        set_session_user(ALICE)
        return get_current_user(), get_current_identity()

    assert in_empty_context(with_user) == (uuid_of(ALICE), ALICE)


async def test_default_user_writes_land_in_the_default_bucket(
    monkeypatch: pytest.MonkeyPatch, installed_sqlite_store: SQLiteMemoryStore
) -> None:
    monkeypatch.setenv("MEMORY_ALLOW_DEFAULT_USER", "1")
    reread_settings(installed_sqlite_store)
    await asyncio.get_running_loop().create_task(
        memory_manager.astore("FACT", "favorite_color", "green"), context=contextvars.Context()
    )
    profiles_rows, memories = sqlite_rows(installed_sqlite_store.path)
    default = livekit_identity_to_uuid(DEFAULT_USER_IDENTITY)
    assert [(m["user_id"], m["category"], m["key"], m["value"]) for m in memories] == [
        (default, "FACT", "favorite_color", "green")
    ]
    assert [(p["id"], p["original_identity"]) for p in profiles_rows] == [
        (default, DEFAULT_USER_IDENTITY)
    ]


# -- no session user: refused, and nothing written -------------------------------------------

NO_USER_OPERATIONS: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
    ("astore", lambda: memory_manager.astore("FACT", "favorite_color", "blue")),
    ("aretrieve", lambda: memory_manager.aretrieve("FACT", "favorite_color")),
    ("asearch", lambda: memory_manager.asearch("favorite color")),
    ("asearch-empty", lambda: memory_manager.asearch("")),
    ("aforget", lambda: memory_manager.aforget("FACT", "favorite_color")),
    ("alist", lambda: memory_manager.alist()),
    ("aforget_everything", lambda: memory_manager.aforget_everything()),
    ("ensure_profile_exists", lambda: profiles.aensure_profile_exists()),
    (
        "ensure_profile_exists-with-uuid",
        lambda: profiles.aensure_profile_exists(uuid_of(ALICE), original_identity=ALICE),
    ),
    ("get_profile", lambda: profiles.aget_profile()),
    ("mark_first_login_complete", lambda: profiles.amark_first_login_complete()),
]


@pytest.mark.parametrize(
    "operation", [op for _, op in NO_USER_OPERATIONS], ids=[n for n, _ in NO_USER_OPERATIONS]
)
async def test_no_session_user_is_refused_and_writes_nothing(
    recorded_store: FakeStoreOutage, operation: Callable[[], Awaitable[Any]]
) -> None:
    async def attempt() -> None:
        assert get_session_user_uuid() is None
        await operation()

    with pytest.raises(NoSessionUserError):
        await asyncio.get_running_loop().create_task(attempt(), context=contextvars.Context())
    assert recorded_store.calls == []  # the store was never even asked
    assert sqlite_rows(recorded_store.inner.path) == ([], [])  # type: ignore[attr-defined]


async def test_cleared_user_is_refused_and_writes_nothing(recorded_store: FakeStoreOutage) -> None:
    async def attempt() -> None:
        set_session_user(ALICE)
        clear_session_user()
        await memory_manager.astore("FACT", "favorite_color", "blue")

    with pytest.raises(NoSessionUserError):
        await asyncio.get_running_loop().create_task(attempt(), context=contextvars.Context())
    assert recorded_store.calls == []
    assert sqlite_rows(recorded_store.inner.path) == ([], [])  # type: ignore[attr-defined]


async def test_sync_api_without_user_is_refused_and_writes_nothing(
    recorded_store: FakeStoreOutage,
) -> None:
    def script() -> None:  # a plain thread: no running loop, no session user
        with pytest.raises(NoSessionUserError):
            memory_manager.store("FACT", "favorite_color", "blue")
        with pytest.raises(NoSessionUserError):
            memory_manager.retrieve("FACT", "favorite_color")
        with pytest.raises(NoSessionUserError):
            memory_manager.list()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            script()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert errors == []
    assert recorded_store.calls == []
    assert sqlite_rows(recorded_store.inner.path) == ([], [])  # type: ignore[attr-defined]


# -- input validation ------------------------------------------------------------------------


@pytest.mark.parametrize("category", ["COLOR", "facts", "", "  ", None, 3, "FACT;DROP"])
async def test_unknown_category_raises_not_silently_fact(
    recorded_store: FakeStoreOutage, category: object
) -> None:
    set_session_user(ALICE)
    with pytest.raises(ValueError, match="unknown memory category"):
        await memory_manager.astore(category, "favorite_color", "blue")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown memory category"):
        await memory_manager.aretrieve(category, "favorite_color")  # type: ignore[arg-type]
    assert recorded_store.calls == []
    assert sqlite_rows(recorded_store.inner.path) == ([], [])  # type: ignore[attr-defined]


async def test_category_names_are_case_insensitive(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    set_session_user(ALICE)
    await memory_manager.astore("preference", "drink", "tea")
    await memory_manager.astore(" Goal ", "run", "a marathon")
    _, memories = sqlite_rows(installed_sqlite_store.path)
    assert sorted((m["category"], m["key"], m["value"]) for m in memories) == [
        ("GOAL", "run", "a marathon"),
        ("PREFERENCE", "drink", "tea"),
    ]
    assert await memory_manager.aretrieve("PREFERENCE", "drink") == "tea"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("", "blue", "key must be a non-empty string"),
        ("   ", "blue", "key must be a non-empty string"),
        (None, "blue", "key must be a non-empty string"),
        ("k" * (MAX_KEY_LENGTH + 1), "blue", f"at most {MAX_KEY_LENGTH} characters"),
        ("favorite\x00color", "blue", "key must not contain NUL"),
        ("favorite_color", "", "value must be a non-empty string"),
        ("favorite_color", " \n ", "value must be a non-empty string"),
        ("favorite_color", None, "value must be a non-empty string"),
        ("favorite_color", "bl\x00ue", "value must not contain NUL"),
        ("favorite_color", "v" * (MAX_VALUE_LENGTH + 1), f"at most {MAX_VALUE_LENGTH}"),
    ],
)
async def test_bad_keys_and_values_are_rejected_and_write_nothing(
    recorded_store: FakeStoreOutage, key: object, value: object, message: str
) -> None:
    set_session_user(ALICE)
    with pytest.raises(ValueError, match=message):
        await memory_manager.astore("FACT", key, value)  # type: ignore[arg-type]
    assert recorded_store.calls == []
    assert sqlite_rows(recorded_store.inner.path) == ([], [])  # type: ignore[attr-defined]


async def test_limits_are_inclusive(installed_sqlite_store: SQLiteMemoryStore) -> None:
    set_session_user(ALICE)
    key, value = "k" * MAX_KEY_LENGTH, "v" * MAX_VALUE_LENGTH
    await memory_manager.astore("FACT", key, value)
    assert await memory_manager.aretrieve("FACT", key) == value


@pytest.mark.parametrize("limit", [0, -1, 101, True, 2.5, "5"])
async def test_bad_search_limit_is_rejected(recorded_store: FakeStoreOutage, limit: object) -> None:
    set_session_user(ALICE)
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 100"):
        await memory_manager.asearch("color", limit=limit)  # type: ignore[arg-type]
    assert recorded_store.calls == []


# -- the sync API inside a running loop ------------------------------------------------------

SYNC_CALLS: list[tuple[str, Callable[[], Any]]] = [
    ("store", lambda: memory_manager.store("FACT", "favorite_color", "blue")),
    ("retrieve", lambda: memory_manager.retrieve("FACT", "favorite_color")),
    ("search", lambda: memory_manager.search("color")),
    ("forget", lambda: memory_manager.forget("FACT", "favorite_color")),
    ("list", lambda: memory_manager.list()),
    ("forget_everything", lambda: memory_manager.forget_everything()),
]


@pytest.mark.parametrize("name,call", SYNC_CALLS, ids=[n for n, _ in SYNC_CALLS])
async def test_sync_api_is_refused_inside_a_running_loop(
    recorded_store: FakeStoreOutage, name: str, call: Callable[[], Any]
) -> None:
    set_session_user(ALICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError) as info:
            call()
        gc.collect()
    text = str(info.value)
    assert f"memory_manager.{name}() blocks and was called inside a running event loop" in text
    assert f"await memory_manager.a{name}(...)" in text
    assert not [w for w in caught if "never awaited" in str(w.message)]
    await asyncio.sleep(0.05)  # had anything been scheduled, it would have run by now
    assert recorded_store.calls == []
    assert sqlite_rows(recorded_store.inner.path) == ([], [])  # type: ignore[attr-defined]


async def test_sync_api_works_from_a_thread_with_its_own_user(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    def script() -> tuple[str | None, str | None]:
        set_session_user(BOB)
        memory_manager.store("FACT", "favorite_color", "red")
        return memory_manager.retrieve("FACT", "favorite_color"), get_session_user_uuid()

    got, user_in_thread = await asyncio.to_thread(contextvars.Context().run, script)
    assert (got, user_in_thread) == ("red", uuid_of(BOB))
    assert get_session_user_uuid() is None  # the thread's user did not leak out
    _, memories = sqlite_rows(installed_sqlite_store.path)
    assert [(m["user_id"], m["value"]) for m in memories] == [(uuid_of(BOB), "red")]
