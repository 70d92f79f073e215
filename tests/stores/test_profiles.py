"""Caller profiles on the real SQLite store: race-safe creation, first login flipped once."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from caller_memory.context import session_user, set_session_user
from caller_memory.profiles import aensure_profile_exists, aget_profile, amark_first_login_complete
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.types import Profile
from tests.support import sqlite_rows

ALICE = "alice@example.com"
BOB = "bob@example.com"


def uuid_of(identity: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, identity))


def profile_rows(path: Path) -> list[tuple[str, str | None, int]]:
    profiles, _ = sqlite_rows(path)
    return [(p["id"], p["original_identity"], p["is_first_login"]) for p in profiles]


async def test_ensure_profile_raced_from_50_tasks_makes_one_row(
    installed_sqlite_store: SQLiteMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    me = set_session_user(ALICE)

    async def racer(i: int) -> Profile:
        await asyncio.sleep((i % 7) * 0.001)
        return await aensure_profile_exists(me, original_identity=ALICE)

    with caplog.at_level(logging.INFO, logger="caller_memory.profiles"):
        results = await asyncio.gather(*(racer(i) for i in range(50)))

    assert len(results) == 50
    assert {(p.id, p.original_identity, p.is_first_login) for p in results} == {(me, ALICE, True)}
    assert len({p.created_at for p in results}) == 1  # all saw the one row
    created = [
        r for r in caplog.records if r.getMessage() == f"[PROFILE CREATE] created profile {me}"
    ]
    assert len(created) == 1
    assert profile_rows(installed_sqlite_store.path) == [(me, ALICE, 1)]


async def test_ensure_profile_raced_from_two_stores_on_one_file(tmp_path: Path) -> None:
    """Two store instances on one file behave like two worker processes."""
    path = tmp_path / "shared.sqlite3"
    first, second = SQLiteMemoryStore(path), SQLiteMemoryStore(path)
    try:
        me = set_session_user(BOB)
        results = await asyncio.gather(
            *(aensure_profile_exists(store=first if i % 2 else second) for i in range(50))
        )
        assert {(p.id, p.original_identity) for p in results} == {(me, BOB)}
        assert profile_rows(path) == [(me, BOB, 1)]
    finally:
        await first.aclose()
        await second.aclose()


async def test_first_login_flag_flips_exactly_once_under_a_race(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    me = set_session_user(ALICE)
    profile = await aensure_profile_exists()
    assert profile.is_first_login is True
    assert (await aget_profile()).is_first_login is True  # type: ignore[union-attr]

    async def racer(i: int) -> bool:
        await asyncio.sleep((i % 5) * 0.001)
        return await amark_first_login_complete()

    flips = await asyncio.gather(*(racer(i) for i in range(50)))
    assert flips.count(True) == 1
    assert flips.count(False) == 49
    after = await aget_profile()
    assert after is not None and after.is_first_login is False
    assert after.created_at == profile.created_at
    assert await amark_first_login_complete() is False
    # a later ensure keeps the flag: a returning caller is not "new" again
    assert (await aensure_profile_exists()).is_first_login is False
    assert profile_rows(installed_sqlite_store.path) == [(me, ALICE, 0)]


async def test_first_login_is_per_caller(installed_sqlite_store: SQLiteMemoryStore) -> None:
    async def caller(identity: str, flip: bool) -> bool:
        set_session_user(identity)
        await aensure_profile_exists()
        await asyncio.sleep(0.001)
        return await amark_first_login_complete() if flip else False

    flipped = await asyncio.gather(caller(ALICE, True), caller(BOB, False))
    assert flipped == [True, False]
    assert sorted(profile_rows(installed_sqlite_store.path)) == sorted(
        [(uuid_of(ALICE), ALICE, 0), (uuid_of(BOB), BOB, 1)]
    )


async def test_mark_first_login_without_a_profile_writes_nothing(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    set_session_user(ALICE)
    assert await amark_first_login_complete() is False
    assert await aget_profile() is None
    assert profile_rows(installed_sqlite_store.path) == []


async def test_another_users_uuid_is_refused(installed_sqlite_store: SQLiteMemoryStore) -> None:
    me = set_session_user(ALICE)
    other = uuid_of(BOB)
    with pytest.raises(PermissionError) as info:
        await aensure_profile_exists(other, original_identity=BOB)
    text = str(info.value)
    assert other in text and me in text
    assert "set the session user first" in text
    with pytest.raises(PermissionError):
        await aensure_profile_exists(other)
    assert profile_rows(installed_sqlite_store.path) == []
    # the context's own uuid, given explicitly, is fine
    assert (await aensure_profile_exists(me)).id == me
    assert profile_rows(installed_sqlite_store.path) == [(me, ALICE, 1)]


async def test_profile_records_identity_and_creation_time(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    identity = "Ünïcødé Caller <sip:+15551234567>"
    before = datetime.now(UTC)
    me = set_session_user(identity)
    profile = await aensure_profile_exists()  # the identity comes from the session context
    after = datetime.now(UTC)

    assert profile.id == me == uuid_of(identity)
    assert profile.original_identity == identity
    assert profile.created_at is not None and profile.created_at.tzinfo is not None
    assert before <= profile.created_at <= after
    assert profile.updated_at == profile.created_at
    profiles, _ = sqlite_rows(installed_sqlite_store.path)
    assert len(profiles) == 1
    row = profiles[0]
    assert row["original_identity"] == identity
    assert datetime.fromisoformat(row["created_at"]) == profile.created_at

    # a second session of the same caller changes nothing
    again = await aensure_profile_exists(original_identity="something else")
    assert again == profile


async def test_missing_identity_is_filled_in_later(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    me = uuid_of(ALICE)
    await installed_sqlite_store.ensure_profile(me, None)
    assert profile_rows(installed_sqlite_store.path) == [(me, None, 1)]
    with session_user(ALICE):
        profile = await aensure_profile_exists()
    assert profile.original_identity == ALICE
    assert profile_rows(installed_sqlite_store.path) == [(me, ALICE, 1)]


def test_first_connections_to_a_fresh_file_do_not_fail(tmp_path: Path) -> None:
    """Several workers opening a brand-new file at the same moment (each its own store, its
    own connection) all get their profile: switching the file to WAL does not fail one."""
    rounds, workers = 40, 8
    failures: list[BaseException] = []

    for n in range(rounds):
        path = tmp_path / f"fresh-{n}.sqlite3"
        start = threading.Barrier(workers)

        def worker(w: int, path: Path = path, start: threading.Barrier = start) -> None:
            async def body() -> None:
                store = SQLiteMemoryStore(path)
                try:
                    start.wait()
                    await store.ensure_profile(uuid_of(f"worker-{w}"), f"worker-{w}")
                finally:
                    await store.aclose()

            try:
                asyncio.run(body())
            except BaseException as exc:  # surfaced below
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert failures == []
        assert sorted(p[0] for p in profile_rows(path)) == sorted(
            uuid_of(f"worker-{w}") for w in range(workers)
        )


# -- the summary's synchronous calls ---------------------------------------------------------


def test_sync_calls_work_from_plain_code_as_the_summary_writes_them(tmp_path: Path) -> None:
    """From code with no event loop (a script, a thread), the sync API blocks until done."""
    import caller_memory.profiles as profiles

    path = tmp_path / "sync.sqlite3"
    results: list[object] = []

    def script() -> None:
        store = SQLiteMemoryStore(path)
        user_uuid = set_session_user(ALICE)
        results.append(
            profiles.ensure_profile_exists(user_uuid, original_identity=ALICE, store=store)
        )
        results.append(profiles.mark_first_login_complete(store=store))
        results.append(profiles.mark_first_login_complete(store=store))
        results.append(profiles.get_profile(store=store))
        asyncio.run(store.aclose())

    thread = threading.Thread(target=script)
    thread.start()
    thread.join(timeout=60)
    created, first_flip, second_flip, profile = results
    assert isinstance(created, Profile) and created.id == uuid_of(ALICE)
    assert created.is_first_login is True
    assert (first_flip, second_flip) == (True, False)
    assert isinstance(profile, Profile) and profile.is_first_login is False
    assert profile_rows(path) == [(uuid_of(ALICE), ALICE, 0)]


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("ensure_profile_exists", lambda p: p.ensure_profile_exists()),
        ("get_profile", lambda p: p.get_profile()),
        ("mark_first_login_complete", lambda p: p.mark_first_login_complete()),
    ],
)
async def test_sync_calls_inside_an_event_loop_are_refused_naming_the_async_twin(
    installed_sqlite_store: SQLiteMemoryStore, name: str, call: object
) -> None:
    """Blocking the loop would stall every session on it; a coroutine that nobody awaits
    would do nothing at all. Neither: a clear error, and no coroutine left behind."""
    import gc
    import warnings

    import caller_memory.profiles as profiles

    set_session_user(ALICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError) as info:
            call(profiles)  # type: ignore[operator]
        gc.collect()
    assert str(info.value) == (
        f"profiles.{name}() blocks and was called inside a running event loop; "
        f"use `await a{name}(...)` in async code"
    )
    assert [w for w in caught if "never awaited" in str(w.message)] == []
    assert profile_rows(installed_sqlite_store.path) == []
