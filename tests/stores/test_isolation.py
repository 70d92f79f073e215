"""Many callers at once, interleaved, on the real SQLite store: nobody sees anybody else.

Every session sets its own user in its own task (or thread), then stores, reads and searches
with awaits in between, so the event loop switches between sessions mid-operation. Keys are
the same for everyone and every value contains the same search word, so any cross-user read
would return someone else's value and any cross-user write would leave a row under the wrong
user. At the end the store is checked row by row.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from caller_memory.context import (
    DEFAULT_USER_IDENTITY,
    NoSessionUserError,
    get_session_user_uuid,
    session_user,
    set_session_user,
)
from caller_memory.manager import memory_manager
from caller_memory.stores.sqlite import SQLiteMemoryStore
from tests.support import sqlite_rows

# The same (category, key) for every caller.
SLOTS = [
    ("PREFERENCE", "favorite_color"),
    ("RELATIONSHIP", "pet_name"),
    ("FACT", "home_town"),
    ("GOAL", "next_trip"),
]
SEARCH_WORD = "hiking"
ORPHAN_PREFIX = "ORPHAN"

Row = tuple[str, str, str, str]  # user_id, category, key, value


def uuid_of(identity: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, identity))


def value_for(identity: str, key: str, version: int = 1) -> str:
    return f"{SEARCH_WORD} note v{version} for {key} of {identity}"


@dataclass
class Trace:
    """Which session did what, in the order it happened (shared by every session)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    steps: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def step(self, who: str) -> None:
        with self.lock:
            self.steps.append(who)

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def switches(self) -> int:
        return sum(1 for a, b in itertools.pairwise(self.steps) if a != b)


async def orphan_attempt(tag: str) -> None:
    """What a room callback task started before the user was known would do: refused."""
    assert get_session_user_uuid() is None
    with pytest.raises(NoSessionUserError):
        await memory_manager.astore("FACT", "favorite_color", f"{ORPHAN_PREFIX} {tag}")
    with pytest.raises(NoSessionUserError):
        await memory_manager.asearch(SEARCH_WORD)


async def caller_session(
    identity: str,
    *,
    rng: random.Random,
    trace: Trace,
    gate: asyncio.Event,
    ready: Callable[[], None],
    spawn_orphan: bool = False,
) -> set[Row]:
    """One caller's session: set the user in this task, then interleaved memory work."""
    trace.enter()
    try:
        me = set_session_user(identity)
        assert me == uuid_of(identity)
        ready()
        await gate.wait()  # every session has its user before any of them writes

        async def pause() -> None:
            await asyncio.sleep(rng.random() * 0.004)
            assert get_session_user_uuid() == me

        mine: dict[tuple[str, str], str] = {}
        for category, key in SLOTS:
            await pause()
            value = value_for(identity, key)
            await memory_manager.astore(category, key, value)
            trace.step(identity)
            mine[(category, key)] = value
            await pause()
            assert await memory_manager.aretrieve(category, key) == value

        if spawn_orphan:
            # a task started with an empty context from inside a running session
            await asyncio.get_running_loop().create_task(
                orphan_attempt(identity), context=contextvars.Context()
            )

        # overwrite one slot: the upsert replaces this caller's value only
        category, key = SLOTS[0]
        await pause()
        mine[(category, key)] = value_for(identity, key, version=2)
        await memory_manager.astore(category, key, mine[(category, key)])
        trace.step(identity)

        await pause()
        for (category, key), value in mine.items():
            assert await memory_manager.aretrieve(category, key) == value
            await asyncio.sleep(0)
        await pause()
        found = await memory_manager.asearch(SEARCH_WORD, limit=100)
        assert sorted(m.value for m in found) == sorted(mine.values())
        await pause()
        found = await memory_manager.asearch(f"{key} {identity}", limit=100)
        assert {m.value for m in found} <= set(mine.values())
        assert found  # its own notes match its own identity's words
        await pause()
        listed = await memory_manager.alist()
        assert {(m.category, m.key, m.value) for m in listed} == {
            (c, k, v) for (c, k), v in mine.items()
        }
        trace.step(identity)
        return {(me, c, k, v) for (c, k), v in mine.items()}
    finally:
        trace.leave()


async def run_sessions(
    identities: list[str],
    *,
    seed: int,
    trace: Trace,
    orphans: int = 0,
) -> set[Row]:
    """Run every identity's session as its own task on this loop, all at once."""
    gate = asyncio.Event()
    pending = len(identities)

    def ready() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            gate.set()

    tasks = [
        asyncio.create_task(
            caller_session(
                identity,
                rng=random.Random(seed * 100_003 + i),
                trace=trace,
                gate=gate,
                ready=ready,
                spawn_orphan=i % 25 == 0,
            ),
            name=f"session-{identity}",
        )
        for i, identity in enumerate(identities)
    ]
    loop = asyncio.get_running_loop()
    orphan_tasks = []
    for n in range(orphans):
        await asyncio.sleep(0.002)
        # room-callback style: created from the loop with a fresh, empty context
        orphan_tasks.append(
            loop.create_task(orphan_attempt(f"loose-{seed}-{n}"), context=contextvars.Context())
        )
    results = await asyncio.gather(*tasks)
    await asyncio.gather(*orphan_tasks)
    rows: set[Row] = set()
    for result in results:
        rows |= result
    return rows


def check_store(path: Any, expected_rows: set[Row], identities: list[str]) -> None:
    profiles, memories = sqlite_rows(path)
    actual = [(m["user_id"], m["category"], m["key"], m["value"]) for m in memories]
    assert len(actual) == len(set(actual))
    assert set(actual) == expected_rows
    by_user: dict[str, set[str]] = {}
    for user_id, _category, _key, value in actual:
        by_user.setdefault(user_id, set()).add(value)
    identity_of = {uuid_of(i): i for i in identities}
    assert set(by_user) == set(identity_of)
    for user_id, values in by_user.items():
        # every value under a user names that user's identity, and only that one
        assert all(v.endswith(f" of {identity_of[user_id]}") for v in values)
        assert len(values) == len(SLOTS)
    assert not [v for *_, v in actual if v.startswith(ORPHAN_PREFIX)]
    assert sorted((p["id"], p["original_identity"]) for p in profiles) == sorted(
        (uuid_of(i), i) for i in identities
    )
    assert uuid_of(DEFAULT_USER_IDENTITY) not in {p["id"] for p in profiles}


# -- (a) + (c): 200+ sessions on one loop, with context-less code running among them --------


async def test_many_interleaved_sessions_on_one_loop(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    identities = [f"caller-{i:03d}@example.com" for i in range(220)]
    trace = Trace()
    rows = await run_sessions(identities, seed=1, trace=trace, orphans=12)

    assert trace.max_in_flight == len(identities)  # all at once, not one after another
    # the loop really switched between sessions between their writes
    assert trace.switches() > len(identities) * 2
    assert len(rows) == len(identities) * len(SLOTS)
    check_store(installed_sqlite_store.path, rows, identities)


# -- (b): threads, each with its own event loop, plus threads on the sync API ----------------


def run_in_threads(targets: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def body(index: int, target: Callable[[], Any]) -> None:
        try:
            start.wait()
            results[index] = target()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=body, args=(i, t), name=f"isolation-{i}")
        for i, t in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not [t.name for t in threads if t.is_alive()]
    if errors:
        raise errors[0]
    return results


def sync_script(identities: list[str], seed: int, trace: Trace) -> set[Row]:
    """A script on the summary's sync API, switching between its callers as it goes."""
    rng = random.Random(seed)
    assert get_session_user_uuid() is None  # a new thread starts with no session user
    rows: set[Row] = set()
    trace.enter()
    try:
        for category, key in SLOTS:
            for identity in identities:
                with session_user(identity) as me:
                    time.sleep(rng.random() * 0.002)
                    value = value_for(identity, key)
                    memory_manager.store(category, key, value)
                    trace.step(identity)
                    assert memory_manager.retrieve(category, key) == value
                    rows.add((me, category, key, value))
        for identity in identities:
            set_session_user(identity)
            found = memory_manager.search(SEARCH_WORD, limit=100)
            assert sorted(m.value for m in found) == sorted(
                value_for(identity, key) for _, key in SLOTS
            )
        # and a thread with no user is refused, here too
        with pytest.raises(NoSessionUserError):
            contextvars.Context().run(
                memory_manager.store, "FACT", "favorite_color", f"{ORPHAN_PREFIX} sync {seed}"
            )
        return rows
    finally:
        trace.leave()


async def test_threads_with_their_own_loops_and_sync_threads(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    trace = Trace()
    loop_threads, sessions_per_thread = 8, 25
    sync_threads, callers_per_sync_thread = 4, 5

    def loop_thread(t: int) -> Callable[[], set[Row]]:
        identities = [f"t{t}-caller-{i:02d}" for i in range(sessions_per_thread)]
        return lambda: asyncio.run(run_sessions(identities, seed=100 + t, trace=trace, orphans=3))

    def sync_thread(t: int) -> Callable[[], set[Row]]:
        identities = [f"sync{t}-caller-{i}" for i in range(callers_per_sync_thread)]
        return lambda: sync_script(identities, 200 + t, trace)

    targets = [loop_thread(t) for t in range(loop_threads)]
    targets += [sync_thread(t) for t in range(sync_threads)]
    results = await asyncio.to_thread(run_in_threads, targets)

    all_identities = [
        f"t{t}-caller-{i:02d}" for t in range(loop_threads) for i in range(sessions_per_thread)
    ]
    all_identities += [
        f"sync{t}-caller-{i}" for t in range(sync_threads) for i in range(callers_per_sync_thread)
    ]
    rows: set[Row] = set().union(*results)
    assert len(rows) == len(all_identities) * len(SLOTS)
    # the threads overlapped: some moment had sessions of several threads in flight
    assert trace.max_in_flight > sessions_per_thread
    assert trace.switches() > len(all_identities)
    assert get_session_user_uuid() is None  # nothing leaked into the test's own context
    check_store(installed_sqlite_store.path, rows, all_identities)


# -- how context does (and does not) travel, as asyncio documents it ----------------------------


async def test_context_travels_to_tasks_and_to_thread_but_not_run_in_executor(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    me = set_session_user("dana@example.com")

    async def child() -> str | None:
        await memory_manager.astore("FACT", "from_child_task", "child task note")
        return get_session_user_uuid()

    assert await asyncio.create_task(child()) == me
    assert await asyncio.to_thread(get_session_user_uuid) == me
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, get_session_user_uuid) is None

    def sync_write() -> None:
        memory_manager.store("FACT", "from_executor", "executor note")

    with pytest.raises(NoSessionUserError):
        await loop.run_in_executor(None, sync_write)
    await asyncio.to_thread(memory_manager.store, "FACT", "from_to_thread", "to_thread note")

    _, memories = sqlite_rows(installed_sqlite_store.path)
    assert sorted((m["user_id"], m["key"], m["value"]) for m in memories) == [
        (me, "from_child_task", "child task note"),
        (me, "from_to_thread", "to_thread note"),
    ]
