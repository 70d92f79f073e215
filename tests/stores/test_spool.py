"""Write-behind: nothing a caller said is lost when the store fails, nor when the process dies.

Captured memories the store refuses go to the durable spool (checksummed JSON lines under
`MEMORY_SPOOL_DIR`, fsynced, one flock'd file per process). The background replayer writes
them once the store is back, each as its own caller, exactly once; a process that was killed
leaves its file behind, and the next process replays it. Outcomes are read back from the
SQLite file row by row and from the spool files as they are on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from caller_memory import (
    CallerMemory,
    MemorySettings,
    get_session_user_uuid,
    livekit_identity_to_uuid,
    set_default_memory,
    set_session_user,
)
from caller_memory.capture.rule_based import extract_memories
from caller_memory.capture.writer import CaptureWriter
from caller_memory.spool import new_record, read_spool_records
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeStoreOutage, eventually
from tests.support import capture_writer, outage_errors, sqlite_rows, subprocess_env

SAID = {
    "alice@example.com": [
        "My name is Marisol",
        "my favourite colour is teal",
        "I collect old maps of Porto",
        "My sister Ana lives in Lisbon",
    ],
    "bob@example.com": [
        "My name is Thaddeus",
        "my favourite colour is orange",
        "I collect vintage radios",
    ],
    "carol@example.com": [
        "I love sailing at dawn",
        "My dog is called Biscuit",
        "I prefer tea over coffee",
    ],
}


# -- helpers ---------------------------------------------------------------------------------


def expected_rows(said: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """Per caller uuid: the sorted utterances and the sorted (category, key, value) facts."""
    expected: dict[str, dict[str, list[str]]] = {}
    for identity, texts in said.items():
        memories = [m for t in texts for m in extract_memories(t)]
        expected[livekit_identity_to_uuid(identity)] = {
            "utterances": sorted(m.value for m in memories if m.key.startswith("utterance_")),
            "facts": sorted(
                f"{m.category.value}/{m.key}={m.value}"
                for m in memories
                if not m.key.startswith("utterance_")
            ),
        }
    return expected


def stored_rows(path: Path) -> dict[str, dict[str, list[str]]]:
    rows: dict[str, dict[str, list[str]]] = {}
    for m in sqlite_rows(path)[1]:
        mine = rows.setdefault(m["user_id"], {"utterances": [], "facts": []})
        if m["key"].startswith("utterance_"):
            mine["utterances"].append(m["value"])
        else:
            mine["facts"].append(f"{m['category']}/{m['key']}={m['value']}")
    return {u: {k: sorted(v) for k, v in r.items()} for u, r in rows.items()}


def memory_count(said: dict[str, list[str]]) -> int:
    return sum(len(extract_memories(t)) for texts in said.values() for t in texts)


def spool_dir() -> Path:
    """The spool directory this test's environment gives every worker (`MEMORY_SPOOL_DIR`)."""
    return MemorySettings.load().spool_dir


def spool_files() -> list[Path]:
    directory = spool_dir()
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []


def spooled_records() -> list[dict[str, Any]]:
    return [asdict(r) for path in spool_files() for r in read_spool_records(path)]


# -- (a) the store fails for a while ---------------------------------------------------------


async def test_every_memory_captured_during_an_outage_arrives_once_when_the_store_is_back(
    sqlite_store: SQLiteMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = FakeStoreOutage(sqlite_store, failing=frozenset({"upsert_memory"}))
    worker = CallerMemory(store=outage, settings=MemorySettings.load())  # type: ignore[arg-type]
    set_default_memory(worker)
    path = sqlite_store.path
    total = memory_count(SAID)

    async def caller(identity: str, offset: float) -> CaptureWriter:
        """One session: set the caller, then capture what they say, turn by turn."""
        set_session_user(identity)
        memory = capture_writer(worker, identity)
        await asyncio.sleep(offset)
        for text in SAID[identity]:
            memory.capture(text)
            await asyncio.sleep(0.003)
        assert await memory.flush()
        assert get_session_user_uuid() == livekit_identity_to_uuid(identity)
        return memory

    with caplog.at_level(logging.DEBUG, logger="caller_memory"):
        sessions = await asyncio.gather(
            *(asyncio.create_task(caller(identity, i * 0.001)) for i, identity in enumerate(SAID))
        )
        # nothing reached the store; everything is on disk in the spool, under its caller
        assert sqlite_rows(path)[1] == []
        assert [s.stored_count for s in sessions] == [0, 0, 0]
        assert sum(s.spooled_count for s in sessions) == total
        records = spooled_records()
        assert len(records) == total
        for identity in SAID:
            mine = [r for r in records if r["identity"] == identity]
            assert {r["user_id"] for r in mine} == {livekit_identity_to_uuid(identity)}
            assert len(mine) == sum(len(extract_memories(t)) for t in SAID[identity])

        # the background replayer tries while the store is still down, and keeps everything
        refused = len(outage.refused)
        await eventually(lambda: len(outage.refused) > refused, "a replay attempt")
        assert sqlite_rows(path)[1] == []
        assert len(spooled_records()) == total

        outage.down = False
        await eventually(lambda: len(sqlite_rows(path)[1]) >= total, "the replay", timeout=15)
        spool = worker.spool
        await eventually(lambda: not spool.has_pending and not spool_files(), "an empty spool")

    # every memory exactly once, for the caller who said it
    assert len(sqlite_rows(path)[1]) == total
    assert stored_rows(path) == expected_rows(SAID)
    # one outage, said once (not once per message or per replay attempt), then the recovery
    errors = outage_errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "fake outage: upsert_memory refused" in errors[0].getMessage()
    recovered = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(recovered) == 1
    assert worker.outage.is_down is False


async def test_a_newer_value_is_not_overwritten_by_an_older_spooled_one(
    sqlite_store: SQLiteMemoryStore,
) -> None:
    """A replay that failed keeps its records in a claimed file; new writes go straight to
    the store meanwhile, and when the older record is replayed after them the store keeps
    the later capture, so the caller's latest word wins."""
    outage = FakeStoreOutage(sqlite_store, failing=frozenset({"upsert_memory"}))
    worker = CallerMemory(store=outage, settings=MemorySettings.load())  # type: ignore[arg-type]
    memory = capture_writer(worker, "alice@example.com")
    memory.capture("my favourite colour is teal")
    assert await memory.flush()
    spool = worker.spool
    assert await spool.replay() == 0  # the store is still down: the attempt keeps the record

    outage.down = False
    memory.capture("my favourite colour is red")
    assert await memory.flush()
    await spool.replay()
    await eventually(lambda: not spool.has_pending and not spool_files(), "an empty spool")

    facts = {
        m["key"]: m["value"]
        for m in sqlite_rows(sqlite_store.path)[1]
        if not m["key"].startswith("utterance_")
    }
    assert facts == {"favorite_color": "red"}


# -- (b) the process is killed before the store is back --------------------------------------

# A worker process whose store is down for memory writes: it captures what its callers say
# (each caller in a task of its own, as the job entrypoints are), reports how many memories
# it spooled, and waits for the store to come back, which it never sees: the test kills it.
# In "hold" mode it instead keeps shutdown leftovers in its own spool file, and holds it.
# It is a `CallerMemory` of its own, in its own process, on the same store file and the same
# spool directory (`MEMORY_SPOOL_DIR`) as this test's, built from the package alone.
WORKER = textwrap.dedent(
    """
    import asyncio, contextvars, json, sys

    from caller_memory import CallerMemory, MemorySettings, session_user
    from caller_memory.capture.writer import CaptureWriter
    from caller_memory.profiles import aensure_profile_exists
    from caller_memory.spool import new_record
    from caller_memory.stores.errors import StorageUnavailableError
    from caller_memory.stores.sqlite import SQLiteMemoryStore


    class FakeWritesDown:
        # the worker's SQLite file, but memory writes and searches fail (an outage)
        def __init__(self, inner):
            self.inner, self.name = inner, "writes-down"

        def __getattr__(self, name):
            if name not in ("upsert_memory", "search_memories"):
                return getattr(self.inner, name)

            async def refuse(*args, **kwargs):
                raise StorageUnavailableError("the store is down")
            return refuse


    async def caller(memory, identity, texts):
        with session_user(identity, namespace=memory.settings.identity_namespace):
            await aensure_profile_exists(store=memory.store)
            writer = CaptureWriter(
                contextvars.copy_context(),
                manager=memory.manager,
                spool=memory.spool,
                outage=memory.outage,
                queue_max=memory.settings.capture_queue_max,
            )
        for text in texts:
            writer.capture(text)
            await asyncio.sleep(0)
        await writer.flush()
        return writer.spooled_count


    async def main():
        mode, said, path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
        memory = CallerMemory(
            store=FakeWritesDown(SQLiteMemoryStore(path)), settings=MemorySettings.load()
        )
        if mode == "capture":
            counts = await asyncio.gather(*(caller(memory, i, t) for i, t in said.items()))
            print("SPOOLED", sum(counts), flush=True)
        else:
            records = []
            for identity, texts in said.items():
                namespace = memory.settings.identity_namespace
                with session_user(identity, namespace=namespace) as user_id:
                    records += [new_record(identity, user_id, "FACT", f"fact_{n}", t)
                                for n, t in enumerate(texts)]
            await memory.spool.append(*records, replay=False)
            print("SPOOLED", len(records), flush=True)
        await asyncio.sleep(3600)


    asyncio.run(main())
    """
)


async def start_worker(
    mode: str, said: dict[str, list[str]], db: Path
) -> tuple[asyncio.subprocess.Process, int]:
    """The second worker, run outside the checkout (the package alone)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        mode,
        json.dumps(said),
        str(db),
        cwd=db.parent,
        env=subprocess_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"SPOOLED "):
        proc.kill()
        _, err = await proc.communicate()
        pytest.fail(f"the worker did not spool: {line!r} {err.decode()[-2000:]}")
    return proc, int(line.split()[1])


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def test_memories_spooled_by_a_killed_process_are_replayed_by_the_next(
    memory: CallerMemory,
) -> None:
    assert isinstance(memory.store, SQLiteMemoryStore)
    path = memory.store.path
    proc, spooled = await start_worker("capture", SAID, path)
    try:
        assert spooled == memory_count(SAID)
        assert len(spooled_records()) == spooled  # fsynced before it reported them
        # its replayer tries the store, which is still down, and keeps every record
        await eventually(
            lambda: any(p.name.startswith("claimed-") for p in spool_files()),
            "the worker's first replay attempt",
        )
        assert len(spooled_records()) == spooled
    finally:
        await kill(proc)  # SIGKILL: no shutdown callback, no flush, no goodbye
    profiles, memories = sqlite_rows(path)
    assert memories == []  # the worker reached the store file, but no memory got in
    assert sorted(p["original_identity"] for p in profiles) == sorted(SAID)

    # the next worker process starts on the same store file and spool directory
    assert memory.spool.directory == spool_dir()
    written = await memory.spool.replay()
    assert written == spooled
    assert stored_rows(path) == expected_rows(SAID)
    assert len(sqlite_rows(path)[1]) == spooled
    assert spool_files() == []


async def test_a_live_processs_spool_file_is_not_claimed_by_another(
    sqlite_store: SQLiteMemoryStore,
) -> None:
    path = sqlite_store.path
    said = {"alice@example.com": ["teal"], "bob@example.com": ["orange", "Oslo"]}
    proc, spooled = await start_worker("hold", said, path)
    try:
        assert spooled == 3
        [held] = spool_files()
        before = held.read_bytes()
        # another process (here: this one) replays what it can claim: not a live one's file
        other = CallerMemory(store=sqlite_store, settings=MemorySettings.load()).spool
        assert await other.replay() == 0
        assert held.exists() and held.read_bytes() == before
        assert sqlite_rows(path)[1] == []
        # nor may a caller's "forget me" in another process edit it under the owner's feet
        assert await other.discard_user(livekit_identity_to_uuid("alice@example.com")) == 0
        assert held.read_bytes() == before
    finally:
        await kill(proc)

    # once its owner is gone, the file is anyone's to replay
    anyone = CallerMemory(store=sqlite_store, settings=MemorySettings.load())
    assert await anyone.spool.replay() == 3
    values = {(m["user_id"], m["key"], m["value"]) for m in sqlite_rows(path)[1]}
    assert values == {
        (livekit_identity_to_uuid("alice@example.com"), "fact_0", "teal"),
        (livekit_identity_to_uuid("bob@example.com"), "fact_0", "orange"),
        (livekit_identity_to_uuid("bob@example.com"), "fact_1", "Oslo"),
    }
    assert spool_files() == []


async def test_a_record_of_another_namespace_is_set_aside_and_holds_nothing_back(
    memory: CallerMemory,
) -> None:
    """A record whose identity maps to another uuid now (IDENTITY_NAMESPACE changed) can
    never be written as its caller: it is kept for the operator, and the rest is replayed."""
    directory = memory.spool.directory
    directory.mkdir(parents=True)
    alice, bob = "alice@example.com", "bob@example.com"
    lines = [
        new_record(alice, livekit_identity_to_uuid(alice), "FACT", "home_town", "Leeds"),
        new_record(bob, "00000000-0000-5000-8000-000000000000", "FACT", "home_town", "Oslo"),
        new_record(bob, livekit_identity_to_uuid(bob), "FACT", "job", "nurse"),
    ]
    dead = directory / "spool-999999-deadbeef.jsonl"  # a file left by a process that is gone
    dead.write_text("".join(json.dumps(asdict(r)) + "\n" for r in lines), encoding="utf-8")

    spool = memory.spool
    assert await spool.replay() == 2
    assert not spool.has_pending and spool_files() == []
    assert stored_rows(memory.store.path) == {  # type: ignore[attr-defined]
        livekit_identity_to_uuid(alice): {"utterances": [], "facts": ["FACT/home_town=Leeds"]},
        livekit_identity_to_uuid(bob): {"utterances": [], "facts": ["FACT/job=nurse"]},
    }
    [kept] = directory.glob("*.mismatch")
    assert [r.value for r in read_spool_records(kept)] == ["Oslo"]
    # and captures are written straight to the store again
    writer = capture_writer(memory, alice)
    writer.capture("my favourite colour is teal")
    assert await writer.flush()
    assert writer.stored_count == 2 and writer.spooled_count == 0
