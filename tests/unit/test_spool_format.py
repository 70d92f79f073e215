"""The spool's files as they are on disk: framed records, damage, old files, modes, size.

Every test works on real files in a temp spool directory and a real SQLite store; damage is
made the way it happens (a write cut short by a full disk, bytes cut in the middle of a
UTF-8 character), and what the store holds afterwards is read back row by row.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import stat
import sys
import textwrap
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from caller_memory import CallerMemory, MemoryManager, livekit_identity_to_uuid, session_user
from caller_memory.capture.writer import CaptureWriter
from caller_memory.spool import (
    MAX_RECORD_BYTES,
    MemorySpool,
    SpoolRecord,
    decode_record,
    encode_record,
    new_record,
    read_spool_records,
)
from caller_memory.stores.base import MemoryStore
from caller_memory.stores.outage import OutageLog
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeWriteGate
from caller_memory.types import MemoryKind
from tests.support import sqlite_rows

PROJECT_DIR = Path(__file__).resolve().parents[2]
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
SPOOL_LOGGER = "caller_memory.spool"


def record(identity: str, key: str, value: str, **kwargs: object) -> SpoolRecord:
    return new_record(
        identity,
        livekit_identity_to_uuid(identity),
        "FACT",
        key,
        value,
        **kwargs,  # type: ignore[arg-type]
    )


def legacy_line(rec: SpoolRecord) -> bytes:
    """A record as the spool wrote it before framing: plain JSON, non-ASCII kept raw, and
    without the fields added since (kind, session_started_at)."""
    data = {
        "identity": rec.identity,
        "user_id": rec.user_id,
        "category": rec.category,
        "key": rec.key,
        "value": rec.value,
        "captured_at": rec.captured_at,
    }
    return json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n"


def values_by_user(path: Path) -> dict[str, set[str]]:
    rows: dict[str, set[str]] = {}
    for m in sqlite_rows(path)[1]:
        rows.setdefault(m["user_id"], set()).add(m["value"])
    return rows


def dead_file(directory: Path, data: bytes, name: str = "spool-999999-deadbeef.jsonl") -> Path:
    """A spool file left by a worker process that is gone."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def files(directory: Path, pattern: str) -> list[Path]:
    return sorted(directory.glob(pattern))


def spool_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == SPOOL_LOGGER and r.levelno >= logging.ERROR
    ]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def spool_on(directory: Path, store: MemoryStore) -> MemorySpool:
    """A worker's spool in `directory`, replaying into `store`, with an outage log of its own."""
    return MemorySpool(directory, manager=MemoryManager(store), outage=OutageLog())


def next_worker_spool(directory: Path, memory: CallerMemory) -> MemorySpool:
    """The spool of the next worker process: same directory, `memory`'s (real) store."""
    return MemorySpool(directory, manager=memory.manager, outage=OutageLog())


def worker_spool(directory: Path, store: SQLiteMemoryStore) -> MemorySpool:
    """The spool of a worker whose store stays down for it: its background replays keep
    everything (the test replays as the next worker does, with `next_worker_spool`)."""
    down = FakeWriteGate(store)
    down.down = True
    return spool_on(directory, down)  # type: ignore[arg-type]


async def worker_gone(spool: MemorySpool) -> None:
    """The worker stops: its background replays end, and its own file is handed over (a
    last failed replay renames and unlocks it, as the process's end would)."""
    tasks = list(spool._replayers.values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await spool.replay() == 0


# -- damaged records (issue 8, item 3) -------------------------------------------------------


async def test_a_torn_record_is_set_aside_and_everything_else_is_replayed(
    memory: CallerMemory,
    installed_sqlite_store: SQLiteMemoryStore,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk cuts a write short: in an old-format line that can be in the middle of a
    UTF-8 character, which made reading the file raise and stopped all replay."""
    first = encode_record(record(ALICE, "home_town", "Leeds"))
    torn_legacy = legacy_line(record(BOB, "cafe", "the café on the corner"))
    torn_legacy = torn_legacy[: torn_legacy.index("é".encode()) + 1]  # ends inside "é"
    after = encode_record(record(BOB, "job", "nurse"))
    bad_checksum = encode_record(record(CAROL, "pet", "Biscuit")).replace(b"Biscuit", b"Biscuir")
    no_fields = b'%08x {"identity":"x"}\n' % zlib.crc32(b'{"identity":"x"}')
    torn_tail = encode_record(record(CAROL, "boat", "a small yawl"))[:40]  # the last write
    dead = dead_file(
        spool_dir,
        first
        + torn_legacy
        + b"\n"
        + after
        + bad_checksum
        + no_fields
        + b"not a record\n"
        # the previous format, still read
        + legacy_line(record(CAROL, "drink", "tea"))
        + torn_tail,
    )
    with caplog.at_level(logging.INFO, logger="caller_memory"):
        assert await next_worker_spool(spool_dir, memory).replay() == 3

    assert values_by_user(installed_sqlite_store.path) == {
        livekit_identity_to_uuid(ALICE): {"Leeds"},
        livekit_identity_to_uuid(BOB): {"nurse"},
        livekit_identity_to_uuid(CAROL): {"tea"},
    }
    assert not dead.exists()
    corrupt = dead.with_suffix(".corrupt")
    assert corrupt.read_bytes() == (
        torn_legacy + b"\n" + bad_checksum + no_fields + b"not a record\n" + torn_tail + b"\n"
    )
    # one line for the file, with the count
    errors = spool_errors(caplog)
    assert len(errors) == 1, errors
    assert "5 damaged spool records" in errors[0] and dead.name in errors[0]


async def test_erasure_goes_on_past_a_torn_record(memory: CallerMemory, spool_dir: Path) -> None:
    """A torn record made every forget fail (reading the file raised)."""
    alice = livekit_identity_to_uuid(ALICE)
    torn = legacy_line(record(BOB, "cafe", "the café"))
    torn = torn[: torn.index("é".encode()) + 1]
    alices_torn = encode_record(record(ALICE, "pet", "Biscuit"))[:-20]  # names her uuid
    bobs = encode_record(record(BOB, "job", "nurse"))
    dead = dead_file(
        spool_dir,
        encode_record(record(ALICE, "home_town", "Leeds"))
        + torn
        + b"\n"
        + bobs
        + alices_torn
        + b"\n"
        + legacy_line(record(ALICE, "drink", "tea")),
    )
    assert await next_worker_spool(spool_dir, memory).discard_user(alice, ALICE) == 2
    lines = dead.read_bytes().splitlines(keepends=True)
    assert lines == [torn + b"\n", bobs]
    assert [r.identity for r in read_spool_records(dead)] == [BOB]


# -- identities with line separators (issue 8, item 7) ---------------------------------------

SEPARATOR_IDENTITIES = [
    "ali\u2028ce@example.com",  # LINE SEPARATOR
    "b\u0085ob@example.com",  # NEXT LINE
    "car\u2029ol@example.com",  # PARAGRAPH SEPARATOR
    "d\x1cave",  # FILE SEPARATOR (str.splitlines splits on it too)
    "eve\nnewline",
]


async def test_identities_with_line_separators_keep_their_spooled_memories(
    memory: CallerMemory, installed_sqlite_store: SQLiteMemoryStore, spool_dir: Path
) -> None:
    gate = FakeWriteGate(installed_sqlite_store)
    gate.down = True
    spool = worker_spool(spool_dir, installed_sqlite_store)
    for identity in SEPARATOR_IDENTITIES:
        with session_user(identity):
            writer = CaptureWriter(
                contextvars.copy_context(),
                manager=MemoryManager(gate),  # type: ignore[arg-type]
                spool=spool,
                outage=OutageLog(),
                queue_max=memory.settings.capture_queue_max,
            )
        writer.capture("my favourite colour is teal")
        assert await writer.aclose()
        assert writer.spooled_count == 2 and writer.lost_count == 0
    await worker_gone(spool)
    # the previous format, with the separators raw in the line
    dead_file(
        spool_dir,
        b"".join(legacy_line(record(i, "home_town", "Leeds")) for i in SEPARATOR_IDENTITIES),
    )
    gate.down = False

    # the next process replays everything, each as its own caller
    assert await next_worker_spool(spool_dir, memory).replay() == 3 * len(SEPARATOR_IDENTITIES)
    rows = values_by_user(installed_sqlite_store.path)
    for identity in SEPARATOR_IDENTITIES:
        assert rows[livekit_identity_to_uuid(identity)] == {
            "my favourite colour is teal",
            "teal",
            "Leeds",
        }, identity
    assert files(spool_dir, "*.corrupt") == []


def test_a_record_is_one_ascii_line_whatever_it_holds() -> None:
    rec = record("ali\u2028ce\u0085\n", "note", "line\u2028sep\u0085next\r\nend \ud7ff 😀")
    line = encode_record(rec)
    assert line.isascii() and line.count(b"\n") == 1 and line.endswith(b"\n")
    assert decode_record(line) == rec


async def test_old_format_lines_replay_with_kind_and_capture_time(
    memory: CallerMemory, installed_sqlite_store: SQLiteMemoryStore, spool_dir: Path
) -> None:
    said = record(ALICE, "utterance_1730000000000_abc", "I moved to Leeds", captured_at=1.7e9)
    fact = record(ALICE, "home_town", "Leeds", captured_at=1.7e9)
    dead_file(spool_dir, legacy_line(said) + legacy_line(fact))
    assert await next_worker_spool(spool_dir, memory).replay() == 2
    rows = {m["key"]: m for m in sqlite_rows(installed_sqlite_store.path)[1]}
    assert rows[said.key]["kind"] == MemoryKind.UTTERANCE
    assert rows[fact.key]["kind"] == MemoryKind.FACT
    assert rows[fact.key]["captured_at"] == pytest.approx(1.7e9)


# -- after a failed append, the next record starts on a new line -----------------------------

# A worker whose spool file hits the file-size limit (RLIMIT_FSIZE, enforced by the kernel as
# a full disk is: the write stops short, then fails) in the middle of an append of three
# records, then gets room again and appends one more.
FULL_DISK_WORKER = textwrap.dedent(
    """
    import asyncio, json, pathlib, resource, signal, sys
    from caller_memory.spool import SpoolNotWritableError, encode_record, new_record
    from caller_memory.testing import sqlite_memory

    def rec(key, value):
        return new_record("alice@example.com", sys.argv[2], "FACT", key, value)

    async def main():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a dead process
        spool_dir = pathlib.Path(sys.argv[1])
        spool = sqlite_memory(spool_dir.parent, spool_dir=spool_dir).spool
        await spool.append(rec("first", "kept before the disk filled"), replay=False)
        size = spool._path.stat().st_size
        batch = [rec("second", "fits"), rec("third", "torn"), rec("fourth", "not written")]
        failed = {"failed": False}
        room = len(encode_record(batch[0])) + len(encode_record(batch[1])) // 2
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + room, resource.RLIM_INFINITY))
        try:
            await spool.append(*batch, replay=False)
        except SpoolNotWritableError as exc:
            failed = {"failed": True, "kept": exc.kept, "message": str(exc)}
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)  # room again
        await spool.append(rec("fifth", "after the disk was freed"), replay=False)
        print(json.dumps(failed), flush=True)

    asyncio.run(main())
    """
)


async def test_after_a_failed_append_the_next_record_starts_on_a_new_line(
    memory: CallerMemory,
    installed_sqlite_store: SQLiteMemoryStore,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice = livekit_identity_to_uuid(ALICE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FULL_DISK_WORKER,
        str(spool_dir),
        alice,
        cwd=PROJECT_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["failed"] and result["kept"] == 1, result
    assert str(spool_dir) in result["message"] and "File too large" in result["message"]

    # the worker is gone; the next one replays its file: the torn record is set aside, the
    # record appended after it is not lost with it
    with caplog.at_level(logging.INFO, logger="caller_memory"):
        assert await next_worker_spool(spool_dir, memory).replay() == 3
    assert values_by_user(installed_sqlite_store.path) == {
        alice: {"kept before the disk filled", "fits", "after the disk was freed"}
    }
    [corrupt] = files(spool_dir, "*.corrupt")
    assert len(corrupt.read_bytes().splitlines()) == 1
    assert any("1 damaged spool records" in m for m in spool_errors(caplog))


# -- file modes (issue 8, item 12) -----------------------------------------------------------


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common umask 022, under which files are created 0644 unless asked otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_spool_directory_and_every_spool_file_are_private(
    installed_sqlite_store: SQLiteMemoryStore,
    tmp_path: Path,
    usual_umask: None,
) -> None:
    spool_dir = tmp_path / "data" / "spool"
    gate = FakeWriteGate(installed_sqlite_store)
    gate.down = True
    spool = spool_on(spool_dir, gate)  # type: ignore[arg-type]
    await spool.append(record(ALICE, "home_town", "Leeds"), replay=False)
    assert mode(spool_dir) == 0o700
    [own] = files(spool_dir, f"spool-{os.getpid()}-*.jsonl")
    assert mode(own) == 0o600

    # a file of a dead worker (written 0644 by whatever wrote it) holding a record of another
    # namespace, a damaged line and a record the store cannot take now
    other_namespace = new_record(
        BOB, "00000000-0000-5000-8000-000000000000", "FACT", "home_town", "Oslo"
    )
    dead = dead_file(
        spool_dir,
        encode_record(other_namespace) + b"damaged\n" + encode_record(record(CAROL, "k", "v")),
        name="spool-1-00000000.jsonl",
    )
    os.utime(dead, (1, 1))  # oldest: replayed first
    assert await spool.replay() == 0  # stops at the store failure, keeping the rest
    claimed = spool_dir / f"claimed-{own.name}"
    for path in (claimed, dead, dead.with_suffix(".mismatch"), dead.with_suffix(".corrupt")):
        assert mode(path) == 0o600, path.name
    assert [r.value for r in read_spool_records(dead)] == ["v"]  # the replacement

    # an erasure's rewrite is private too
    await spool.append(record(ALICE, "job", "nurse"), record(BOB, "job", "cook"), replay=False)
    assert await spool.discard_user(livekit_identity_to_uuid(ALICE), ALICE) == 2
    [own] = files(spool_dir, f"spool-{os.getpid()}-*.jsonl")
    assert [r.identity for r in read_spool_records(own)] == [BOB]
    assert mode(own) == 0o600
    assert sorted(p.name for p in spool_dir.iterdir() if mode(p) != 0o600) == []


# -- size: replay and erasure stream (issue 8, item 5) ---------------------------------------

BIG_VALUE_CHARS = 7_900
BIG_RECORDS = 2_000  # about 16 MB of spool


def big_spool(directory: Path) -> tuple[Path, list[SpoolRecord]]:
    callers = [ALICE, BOB, CAROL]
    records = [
        record(callers[n % 3], f"note_{n:05d}", f"{n:05d} " + "x" * BIG_VALUE_CHARS)
        for n in range(BIG_RECORDS)
    ]
    path = dead_file(directory, b"".join(encode_record(r) for r in records))
    return path, records


class PeakMemory:
    """The most memory Python allocated (tracemalloc) while the block ran."""

    def __enter__(self) -> PeakMemory:
        tracemalloc.start()
        tracemalloc.reset_peak()
        self.peak = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


async def test_a_big_spool_is_replayed_and_erased_in_bounded_memory(
    installed_sqlite_store: SQLiteMemoryStore, spool_dir: Path
) -> None:
    """Replaying a failed 146 MB spool took 620 MB: every read of a file was whole."""
    path, records = big_spool(spool_dir)
    size = path.stat().st_size
    mtime = path.stat().st_mtime_ns
    bound = size // 4
    gate = FakeWriteGate(installed_sqlite_store, hold_after=500)
    spool = spool_on(spool_dir, gate)  # type: ignore[arg-type]

    async def outage_after_500() -> None:
        await gate.held.wait()
        gate.down = True
        gate.release()

    with PeakMemory() as replay_memory:
        outage = asyncio.create_task(outage_after_500())
        written = await spool.replay()  # stops at the failure, streaming the rest aside
        await outage
    assert written == 501
    assert replay_memory.peak < bound, (replay_memory.peak, size)
    # what is left is the rest, in order, and still as old as it was (replay order)
    assert read_spool_records(path) == records[501:]
    assert path.stat().st_mtime_ns == mtime

    with PeakMemory() as erase_memory:
        assert await spool.discard_user(livekit_identity_to_uuid(BOB), BOB) == sum(
            1 for r in records[501:] if r.identity == BOB
        )
    assert erase_memory.peak < bound, (erase_memory.peak, size)

    gate.down = False
    with PeakMemory() as rest_memory:
        assert await spool.replay() == sum(1 for r in records[501:] if r.identity != BOB)
    assert rest_memory.peak < bound, (rest_memory.peak, size)
    stored = {(m["user_id"], m["key"]) for m in sqlite_rows(installed_sqlite_store.path)[1]}
    assert stored == {
        (r.user_id, r.key) for n, r in enumerate(records) if n < 501 or r.identity != BOB
    }
    assert files(spool_dir, "*.jsonl") == []


async def test_an_overlong_damaged_line_is_skipped_without_reading_it_whole(
    memory: CallerMemory, spool_dir: Path
) -> None:
    alice = livekit_identity_to_uuid(ALICE)
    bob_line = encode_record(record(BOB, "job", "nurse"))
    carol_line = encode_record(record(CAROL, "job", "cook"))
    # her uuid sits across the boundary of two of the pieces the line is read in
    garbage = b"\x00" * (3 * MAX_RECORD_BYTES) + alice.encode() + b"\x00" * 100 + b"\n"
    dead = dead_file(spool_dir, bob_line + garbage + carol_line)
    # erasure finds her uuid in the line's tail, and drops the line (no whole record of hers)
    assert await next_worker_spool(spool_dir, memory).discard_user(alice, ALICE) == 0
    assert dead.read_bytes() == bob_line + carol_line

    dead.write_bytes(bob_line + garbage.replace(alice.encode(), b"x" * len(alice)) + carol_line)
    assert await next_worker_spool(spool_dir, memory).replay() == 2
    [corrupt] = files(spool_dir, "*.corrupt")
    assert corrupt.stat().st_size == MAX_RECORD_BYTES + 1  # its head, set aside
