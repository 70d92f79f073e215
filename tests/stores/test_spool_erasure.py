"""Erasure against the spool: nothing spooled brings a forgotten caller back, and nothing
older overwrites something newer (issue 8, items 2 and 10).

Every spool writer goes through the store's write rule (`MemoryStore.upsert_memory`): a
record of a session that began before the caller's erasure is refused, and a record older
than the stored value of its key is refused. These tests attack that from the spool's side,
on SQLite and on the suite's Postgres:

(a) the caller forgets everything while this worker is halfway through a long replay of a
    spool holding their records among others';
(b) a second worker (a real process) holds its own spool file with the caller's records; this
    worker erases the caller; then the second one replays;
(c) "blue" was said before "red", red is stored, blue is replayed later: red stays;

and erasure reaches every file of the spool, also the `.mismatch` and `.corrupt` files.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from caller_memory import (
    CallerMemory,
    MemorySettings,
    MemoryStore,
    WriteOutcome,
    livekit_identity_to_uuid,
    session_user,
)
from caller_memory.spool import (
    MemorySpool,
    SpoolRecord,
    encode_record,
    new_record,
    read_spool_records,
)
from caller_memory.testing import FakeWriteGate
from tests.support import capture_writer, subprocess_env

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest) -> MemoryStore:
    """A fresh, empty store of each backend (each test builds its worker's memory on it)."""
    fresh: MemoryStore = request.getfixturevalue(f"{backend}_store")
    return fresh


async def values_of(store: MemoryStore, identity: str) -> set[tuple[str, str]]:
    return {(m.key, m.value) for m in await store.list_memories(livekit_identity_to_uuid(identity))}


def said_earlier(identity: str, n: int, *, session_began: float) -> SpoolRecord:
    """Something `identity` said in a session that began at `session_began`."""
    return new_record(
        identity,
        livekit_identity_to_uuid(identity),
        "FACT",
        f"note_{n:04d}",
        f"{identity} note {n}",
        captured_at=session_began + 1 + n / 1000,
        session_started_at=session_began,
    )


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []


# -- (a) forget during a long replay, in the same worker -------------------------------------


async def test_forget_during_a_long_replay_in_the_same_worker(
    store: MemoryStore, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    began = time.time() - 600  # the calls were ten minutes ago; the store was down since
    callers = [ALICE, BOB, CAROL]
    records = [said_earlier(callers[n % 3], n, session_began=began) for n in range(900)]
    (spool_dir / "spool-999999-deadbeef.jsonl").write_bytes(
        b"".join(encode_record(r) for r in records)
    )
    # the replay writes 100 records, then its next write waits: it is provably under way
    gate = FakeWriteGate(store, hold_after=100)
    worker = CallerMemory(
        store=gate,  # type: ignore[arg-type]
        settings=MemorySettings.load(spool_dir=spool_dir),
    )
    spool = worker.spool
    assert spool.directory == spool_dir
    replay = asyncio.create_task(spool.replay())
    await gate.held.wait()
    assert not replay.done()
    assert len(await values_of(store, ALICE)) > 0  # some of hers are in already

    # alice, in a call on this worker, asks to be forgotten
    memory = capture_writer(worker, ALICE)
    forget = asyncio.create_task(memory.forget_everything(), context=memory.context_copy())
    await forget
    assert await values_of(store, ALICE) == set()
    gate.release()
    written = await replay

    assert await values_of(store, ALICE) == set()
    assert await store.get_profile(livekit_identity_to_uuid(ALICE)) is None
    for identity in (BOB, CAROL):
        assert await values_of(store, identity) == {
            (r.key, r.value) for r in records if r.identity == identity
        }
    assert written == 600 + sum(1 for r in records[:100] if r.identity == ALICE)
    assert spool_files(spool_dir) == []


# -- (b) two workers sharing one spool directory ---------------------------------------------

# The second worker: it spools what its callers said (the store was down for it), holds its
# spool file while it lives, and replays it when told to, with the store back.
# It is a second `CallerMemory`, in another process, on the same store and the same spool
# directory (`MEMORY_SPOOL_DIR`), built from the package alone.
SECOND_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys

    from caller_memory import CallerMemory, MemorySettings, session_user
    from caller_memory.spool import new_record

    def open_store(backend, target):
        if backend == "sqlite":
            from caller_memory.stores.sqlite import SQLiteMemoryStore
            return SQLiteMemoryStore(target)
        from caller_memory.stores.postgres import PostgresMemoryStore
        return PostgresMemoryStore(target, timeout=5.0, server_settings={"role": "service_role"})

    async def main():
        backend, target, said = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        memory = CallerMemory(store=open_store(backend, target), settings=MemorySettings.load())
        namespace = memory.settings.identity_namespace
        records = []
        for identity, texts in said.items():
            with session_user(identity, namespace=namespace) as user_id:
                records += [new_record(identity, user_id, "FACT", f"fact_{n}", text)
                            for n, text in enumerate(texts)]
        await memory.spool.append(*records, replay=False)
        print("SPOOLED", len(records), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        written = await memory.spool.replay()
        print("REPLAYED", written, flush=True)
        await memory.aclose()

    asyncio.run(main())
    """
)


async def test_two_workers_sharing_a_spool_dir_cannot_undo_an_erasure(
    backend: str,
    store: MemoryStore,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    worker = CallerMemory(store=store, settings=MemorySettings.load())
    target = (
        str(store.path)  # type: ignore[attr-defined]
        if backend == "sqlite"
        else request.getfixturevalue("service_role_dsn")
    )
    said = {ALICE: ["teal", "Leeds", "nurse"], BOB: ["orange", "Oslo"]}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SECOND_WORKER,
        backend,
        target,
        json.dumps(said),
        cwd=tmp_path,  # outside the checkout: the package alone
        env=subprocess_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line == b"SPOOLED 5\n", line
        [held] = spool_files(worker.spool.directory)
        assert {r.identity for r in read_spool_records(held)} == {ALICE, BOB}

        # this worker: alice asks to be forgotten (her call came after the other worker's)
        memory = capture_writer(worker, ALICE)
        await asyncio.create_task(memory.forget_everything(), context=memory.context_copy())
        # her records in the other worker's file are out of reach, and said so
        assert any("held" in r.getMessage() or "holds" in r.getMessage() for r in caplog.records)

        # the other worker replays: the store refuses every record of hers
        proc.stdin.write(b"replay\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line == b"REPLAYED 2\n", line + (await proc.stderr.read()).decode()[-3000:]
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await values_of(store, ALICE) == set()
    assert await store.get_profile(livekit_identity_to_uuid(ALICE)) is None
    assert await values_of(store, BOB) == {("fact_0", "orange"), ("fact_1", "Oslo")}
    assert spool_files(worker.spool.directory) == []


# -- (c) blue, said before red, replayed after it --------------------------------------------


async def test_an_older_spooled_value_replayed_after_a_newer_one_does_not_overwrite_it(
    store: MemoryStore, tmp_path: Path
) -> None:
    gate = FakeWriteGate(store)
    worker = CallerMemory(
        store=gate,  # type: ignore[arg-type]
        settings=MemorySettings.load(spool_dir=tmp_path / "spool"),
    )
    spool = worker.spool
    memory = capture_writer(worker, ALICE)
    alice = livekit_identity_to_uuid(ALICE)

    gate.down = True
    memory.capture("my favourite colour is blue")  # the store is down: spooled
    assert await memory.flush()
    assert memory.spooled_count == 2
    await stop_replays(spool)

    gate.down = False
    memory.capture("my favourite colour is red")  # said later, straight to the store
    assert await memory.flush()
    assert memory.stored_count == 2
    assert await store.get_memory(alice, "PREFERENCE", "favorite_color") == "red"

    # blue's replay comes last: its words are kept, its value is older than red's
    assert await spool.replay() == 1
    assert await store.get_memory(alice, "PREFERENCE", "favorite_color") == "red"
    assert {v for _, v in await values_of(store, ALICE)} == {
        "my favourite colour is blue",
        "my favourite colour is red",
        "red",
    }
    with session_user(ALICE):  # and the store says why, to any writer
        earlier = time.time() - 3600
        assert (
            await worker.store.upsert_memory(
                alice,
                "PREFERENCE",
                "favorite_color",
                "green",
                captured_at=earlier,
                session_started_at=earlier,
            )
            == WriteOutcome.STALE
        )


async def stop_replays(spool: MemorySpool) -> None:
    """Stop the background replays appends started, so the test replays when it chooses."""
    tasks = list(spool._replayers.values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- erasure reaches every spool file (issue 8, item 10) -------------------------------------


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def identities_in(path: Path) -> list[str]:
    return [r.identity for r in read_spool_records(path)]


async def test_erasure_reaches_mismatch_and_corrupt_files_and_crash_leftovers(
    memory: CallerMemory, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    assert memory.spool.directory == spool_dir
    zoe = "zoë@example.com"  # her identity is not ASCII: JSON writes it two ways
    old_uuid = "00000000-0000-5000-8000-000000000000"  # of another IDENTITY_NAMESPACE

    def rec(identity: str, value: str, user_id: str | None = None) -> SpoolRecord:
        return new_record(
            identity, user_id or livekit_identity_to_uuid(identity), "FACT", "k", value
        )

    def legacy(r: SpoolRecord) -> bytes:
        return (
            json.dumps(
                {f: getattr(r, f) for f in ("identity", "user_id", "category", "key", "value")}
                | {"captured_at": r.captured_at},
                ensure_ascii=False,
            ).encode()
            + b"\n"
        )

    dead = spool_dir / "spool-999999-deadbeef.jsonl"
    dead.write_bytes(encode_record(rec(zoe, "Leeds")) + encode_record(rec(BOB, "Oslo")))
    mismatch = spool_dir / "claimed-spool-1-aaaaaaaa.mismatch"
    mismatch.write_bytes(
        encode_record(rec(zoe, "nurse", old_uuid))  # hers, under her old uuid
        + legacy(rec(zoe, "teal", old_uuid))
        + encode_record(rec(BOB, "cook", old_uuid))
    )
    torn_hers_framed = encode_record(rec(zoe, "Biscuit"))[:120] + b"\n"  # names her uuid
    hers_legacy = legacy(rec(zoe, "Porto", old_uuid))
    torn_hers_legacy = hers_legacy[: hers_legacy.index(b'",') + 1] + b"\n"  # her identity only
    torn_his = encode_record(rec(BOB, "radios"))[:120] + b"\n"
    corrupt = spool_dir / "spool-2-bbbbbbbb.corrupt"
    corrupt.write_bytes(torn_hers_framed + torn_his + torn_hers_legacy)
    assert json.dumps(zoe, ensure_ascii=False).encode() in torn_hers_legacy
    assert livekit_identity_to_uuid(zoe).encode() not in torn_hers_legacy
    # a rewrite that a crash interrupted: a copy of a file that is still whole
    leftover = spool_dir / "spool-3-cccccccc.jsonl.0badf00d.tmp"
    leftover.write_bytes(encode_record(rec(zoe, "Lisbon")))
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))

    dropped = await memory.spool.discard_user(livekit_identity_to_uuid(zoe), zoe)

    assert dropped == 3  # Leeds, and nurse and teal set aside under her old uuid
    assert identities_in(dead) == [BOB]
    assert identities_in(mismatch) == [BOB]
    assert lines_of(corrupt) == [torn_his]
    assert not leftover.exists()
    everything = b"".join(p.read_bytes() for p in spool_dir.iterdir())
    assert livekit_identity_to_uuid(zoe).encode() not in everything
    assert b"zo\\u00eb" not in everything and zoe.encode() not in everything


async def test_a_file_left_with_nothing_is_removed(memory: CallerMemory, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    assert memory.spool.directory == spool_dir
    hers = encode_record(said_earlier(ALICE, 1, session_began=time.time()))
    paths = [
        spool_dir / "spool-4-dddddddd.jsonl",
        spool_dir / "spool-4-dddddddd.mismatch",
        spool_dir / "spool-4-dddddddd.corrupt",
    ]
    for path in paths:
        path.write_bytes(hers if path.suffix != ".corrupt" else b"torn " + hers)
    alice = livekit_identity_to_uuid(ALICE)
    assert await memory.spool.discard_user(alice, ALICE) == 2
    assert [p for p in paths if p.exists()] == []
