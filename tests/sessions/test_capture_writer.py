"""The background capture writer of one session (`CaptureWriter`): its bounded queue, the
times every write carries, and what it does when the caller is erased while it runs.

Real SQLite store (and the suite's Postgres where the erasure rule is concerned); the only
fake is `FakeWriteGate`, which holds or refuses the writes reaching the real store, so that a
slow or failing store is a fact of the test and not a timing accident.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from caller_memory import (
    CallerMemory,
    MemorySettings,
    MemoryStore,
    SettingsError,
    default_memory,
    livekit_identity_to_uuid,
    memory_manager,
    session_user,
    set_default_memory,
)
from caller_memory.capture.rule_based import extract_memories
from caller_memory.capture.writer import CAPTURE_QUEUE_MAX_ENV, CaptureWriter
from caller_memory.spool import SpoolRecord, read_spool_records
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeWriteGate, eventually
from tests.support import capture_writer, sqlite_rows

ALICE, BOB = "alice@example.com", "bob@example.com"
CAPTURE_LOGGER = "caller_memory.capture"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> MemoryStore:
    """A fresh, empty store of each backend, the store of the process's default memory."""
    backend: MemoryStore = request.getfixturevalue(f"{request.param}_store")
    worker_on(backend)
    return backend


def worker_on(store: object) -> CallerMemory:
    """The worker's memory on `store` (a real store, or a fake wrapping one), with the
    settings this test's environment gives, installed as the process's default."""
    memory = CallerMemory(store=store, settings=MemorySettings.load())  # type: ignore[arg-type]
    set_default_memory(memory)
    return memory


def session_of(identity: str) -> CaptureWriter:
    """The capture writer of a session of `identity` on the process's default memory."""
    return capture_writer(default_memory(), identity)


def spooled(directory: Path) -> list[SpoolRecord]:
    return [r for path in sorted(directory.glob("*.jsonl")) for r in read_spool_records(path)]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == CAPTURE_LOGGER and r.levelno == logging.WARNING
    ]


# -- the queue is bounded (issue 8, item 5) --------------------------------------------------


def test_the_capture_queue_size_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CAPTURE_QUEUE_MAX_ENV, raising=False)
    assert MemorySettings.load().capture_queue_max == 256
    monkeypatch.setenv(CAPTURE_QUEUE_MAX_ENV, " 40 ")
    assert MemorySettings.load().capture_queue_max == 40
    for bad in ("abc", "0", "-3", "1.5"):
        monkeypatch.setenv(CAPTURE_QUEUE_MAX_ENV, bad)
        with pytest.raises(SettingsError, match=rf"{CAPTURE_QUEUE_MAX_ENV} must be .* got '{bad}'"):
            MemorySettings.load()


async def test_a_flood_of_typed_messages_is_dropped_beyond_the_queue_limit_once_per_burst(
    sqlite_store: MemoryStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(CAPTURE_QUEUE_MAX_ENV, "20")
    gate = FakeWriteGate(sqlite_store, hold_after=0)  # the store takes nothing for now
    worker = worker_on(gate)  # its settings read the environment now: a queue of 20
    memory = session_of(ALICE)
    assert memory.queue_max == worker.settings.capture_queue_max == 20
    alice = livekit_identity_to_uuid(ALICE)

    def flood(start: int) -> int:
        """500 pasted messages, faster than any store writes; returns memories captured."""
        captured = 0
        for n in range(start, start + 500):
            text = f"I like jazz number {n}"  # two memories each: the words and the opinion
            captured += len(extract_memories(text))
            memory.capture(text)
        return captured

    with caplog.at_level(logging.INFO, logger=CAPTURE_LOGGER):
        said = flood(0)
        await gate.held.wait()  # the writer took the first memory and waits for the store
        assert memory.pending <= 20 + 1
        assert memory.dropped_count == said - 20
        burst = warnings_of(caplog)
        assert len(burst) == 1, burst
        assert alice in burst[0] and ALICE not in burst[0] and "20" in burst[0]
        assert "jazz" not in burst[0]

        gate.release()
        assert await memory.flush()
        assert memory.stored_count == 20
        rows = await sqlite_store.list_memories(alice)
        assert len(rows) == 20

        # the queue drained: the next flood is a new burst, said once again
        said_again = flood(1000)
        assert memory.dropped_count == said - 20 + said_again - 20
        assert len(warnings_of(caplog)) == 2
        assert await memory.aclose() is False  # not everything the caller said was kept


# -- every write carries when it was said and when the session began -------------------------


async def test_a_write_carries_its_capture_time_not_the_time_the_store_took_it(
    sqlite_store: SQLiteMemoryStore, tmp_path: Path
) -> None:
    gate = FakeWriteGate(sqlite_store, hold_after=0)
    worker = worker_on(gate)
    assert worker.spool.directory == tmp_path / "spool"
    before_session = time.time()
    memory = session_of(ALICE)
    assert before_session <= memory.session_started_at <= time.time()

    before = time.time()
    memory.capture("my favourite colour is teal")
    after = time.time()
    await gate.held.wait()
    await asyncio.sleep(0.01)  # the store takes them later than they were said
    gate.release()
    assert await memory.flush()
    rows = await sqlite_store.list_memories(memory.user_uuid)
    assert {m.key for m in rows if not m.is_utterance} == {"favorite_color"}
    with session_user(ALICE):
        stored = await memory_manager.alist()
    assert len(stored) == 2
    # both memories of the message carry the moment it was said, not when each was written
    times = {m["captured_at"] for m in sqlite_rows(sqlite_store.path)[1]}
    assert len(times) == 1 and before <= times.pop() <= after

    # spooled, a memory keeps both times for the replay
    gate.down = True
    before = time.time()
    memory.capture("I live in Leeds")
    after = time.time()
    assert await memory.flush()
    records = spooled(tmp_path / "spool")
    assert records and all(before <= r.captured_at <= after for r in records)
    assert {r.session_started_at for r in records} == {memory.session_started_at}
    assert {r.kind for r in records} == {"utterance", "fact"}


# -- erased while the session runs (issue 8, item 2) -----------------------------------------


async def test_an_erasure_during_the_call_stops_the_session_writing_anything_of_the_caller(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator deletes the caller (`memory_admin delete`) while their call goes on: the
    session must neither write what it heard before nor recreate the profile, and it tells
    its listeners once, so the agent can drop what it holds in its context."""
    memory = session_of(ALICE)
    alice = livekit_identity_to_uuid(ALICE)
    told: list[str] = []
    memory.on_erased(lambda: told.append("sync"))

    async def async_listener() -> None:
        told.append("async")

    memory.on_erased(async_listener)
    memory.capture("my favourite colour is teal")
    assert await memory.flush()
    assert memory.stored_count == 2

    with session_user(ALICE):  # the operator, in another process as far as the store knows
        assert await memory_manager.aforget_everything() == 2

    with caplog.at_level(logging.INFO, logger=CAPTURE_LOGGER):
        memory.capture("I live in Leeds")
        memory.capture("my sister Ana lives in Lisbon")
        assert await memory.flush()
        await eventually(lambda: len(told) == 2, "the erasure listeners")
        memory.capture("my favourite colour is red")  # after it knows: not even queued
        assert memory.pending == 0
    assert await store.list_memories(alice) == []
    assert await store.get_profile(alice) is None
    assert memory.forgotten and memory.stored_count == 2
    assert sorted(told) == ["async", "sync"]
    erased_lines = [m for m in warnings_of(caplog) if "erased" in m]
    assert len(erased_lines) == 1 and alice in erased_lines[0] and ALICE not in erased_lines[0]
    late: list[str] = []
    memory.on_erased(lambda: late.append("late"))  # registered afterwards: called at once
    assert late == ["late"] and sorted(told) == ["async", "sync"]


async def test_forget_everything_erases_and_tells_the_listeners_once(
    sqlite_store: MemoryStore, tmp_path: Path
) -> None:
    gate = FakeWriteGate(sqlite_store)
    worker = worker_on(gate)
    spool = worker.spool
    assert spool.directory == tmp_path / "spool"
    alice_memory = session_of(ALICE)
    bob_memory = session_of(BOB)
    told: list[str] = []
    alice_memory.on_erased(lambda: told.append("alice"))
    bob_memory.on_erased(lambda: told.append("bob"))
    alice_memory.capture("my favourite colour is teal")
    assert await alice_memory.flush()
    gate.down = True  # both say more while the store is down: it waits in the spool
    alice_memory.capture("I live in Leeds")
    bob_memory.capture("I live in Oslo")
    assert await alice_memory.flush() and await bob_memory.flush()
    gate.down = False

    def forget() -> asyncio.Task[int]:  # as the agent's tool runs it: in the session's context
        return asyncio.create_task(
            alice_memory.forget_everything(), context=alice_memory.context_copy()
        )

    assert await forget() == 2
    assert told == ["alice"]
    assert [r.identity for r in spooled(tmp_path / "spool")] == [BOB, BOB]
    assert await forget() == 0
    assert told == ["alice"]  # once

    async def bobs_values() -> set[str]:
        return {m.value for m in await sqlite_store.list_memories(livekit_identity_to_uuid(BOB))}

    spool.schedule_replay(first_delay=0.01)
    await eventually(bobs_values, "bob's spooled memories", timeout=15)
    assert await bobs_values() == {"I live in Oslo", "Oslo"}
    assert await sqlite_store.list_memories(livekit_identity_to_uuid(ALICE)) == []
