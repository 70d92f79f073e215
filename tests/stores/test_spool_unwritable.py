"""An unwritable spool says the truth (issue 8, item 4).

While the store is down, what callers say goes to the spool; when the spool cannot take it
either (a read-only or foreign directory, a full disk), it is lost. The worker must say so (an
error naming the spool and how many memories of which user, never the raw identity nor what
was said), count it, and `aclose()` must return False; no log line may claim it was kept.
`check_spool_writable` finds such a spool before the worker takes calls.

The spool is made unwritable for real: a worker process that runs as an unprivileged user
(the suite runs as root, and root writes anywhere), and a full tmpfs (where mounting is
allowed). The store's outage is the `FakeWriteGate` fake; the spool is not faked at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from caller_memory import CallerMemory, MemorySettings, livekit_identity_to_uuid
from caller_memory.capture.rule_based import extract_memories
from caller_memory.spool import (
    SpoolNotWritableError,
    check_spool_writable,
    encode_record,
    new_record,
)
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeWriteGate, eventually
from tests.support import capture_writer, sqlite_rows, subprocess_env

SAID = {
    "alice@example.com": ["My name is Marisol", "my favourite colour is teal", "I love sailing"],
    "bob@example.com": ["My name is Thaddeus", "I collect vintage radios", "I live in Oslo"],
    "carol@example.com": ["My dog is called Biscuit", "I prefer tea over coffee"],
}


def memories(texts: list[str]) -> int:
    return sum(len(extract_memories(t)) for t in texts)


# A worker whose store is down and whose spool directory it may not write: it checks the
# spool as the start-up check does, then its callers talk, then their sessions close. It
# runs on the package alone (its memory built from the settings its environment gives).
UNPRIVILEGED_WORKER = textwrap.dedent(
    """
    import asyncio, concurrent.futures.thread, contextvars, json, logging, os, sys

    from caller_memory import CallerMemory, MemorySettings, session_user
    from caller_memory.capture.writer import CaptureWriter
    from caller_memory.spool import SpoolNotWritableError, check_spool_writable
    from caller_memory.stores.sqlite import SQLiteMemoryStore
    from caller_memory.testing import FakeWriteGate

    said, db, run_as = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    gate = FakeWriteGate(SQLiteMemoryStore(db))
    gate.down = True
    worker = CallerMemory(store=gate, settings=MemorySettings.load())
    if run_as >= 0:  # everything is imported: from here on, an unprivileged worker
        os.setgroups([])
        os.setgid(run_as)
        os.setuid(run_as)
    try:
        check_spool_writable(worker.settings.spool_dir)
        check = None
    except SpoolNotWritableError as exc:
        check = str(exc)

    async def caller(identity, texts):
        with session_user(identity, namespace=worker.settings.identity_namespace):
            memory = CaptureWriter(
                contextvars.copy_context(),
                manager=worker.manager,
                spool=worker.spool,
                outage=worker.outage,
                queue_max=worker.settings.capture_queue_max,
            )
        for text in texts:
            memory.capture(text)
            await asyncio.sleep(0)
        closed = await memory.aclose()
        return {"lost": memory.lost_count, "spooled": memory.spooled_count, "closed": closed}

    async def main():
        results = await asyncio.gather(*(caller(i, t) for i, t in said.items()))
        print(json.dumps({"check": check, "sessions": dict(zip(said, results))}), flush=True)

    asyncio.run(main())
    """
)


@pytest.fixture
def foreign_spool_dir() -> Iterator[tuple[Path, int]]:
    """A spool directory the worker may not write, and the uid to run the worker as (-1: as
    we are). As root: a root-owned 0755 directory, for an unprivileged user (`nobody`). As
    anyone else: our own directory, made read-only."""
    root = Path(tempfile.mkdtemp(prefix="spool-foreign-"))
    root.chmod(0o755)  # others may look in, not write
    spool_dir = root / "spool"
    spool_dir.mkdir(mode=0o755)
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam("nobody").pw_uid
        except KeyError:
            pytest.skip("running as root and no unprivileged `nobody` user exists")
    else:
        spool_dir.chmod(0o555)
        run_as = -1
    yield spool_dir, run_as
    spool_dir.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


async def test_a_spool_the_worker_may_not_write_loses_captures_and_says_so(
    foreign_spool_dir: tuple[Path, int], tmp_path: Path
) -> None:
    spool_dir, run_as = foreign_spool_dir
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        UNPRIVILEGED_WORKER,
        json.dumps(SAID),
        str(tmp_path / "memories.sqlite3"),
        str(run_as),
        cwd=spool_dir.parent,  # outside the checkout (the package alone), readable by the user
        env=subprocess_env(MEMORY_SPOOL_DIR=str(spool_dir)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    log = err.decode()
    assert proc.returncode == 0, log[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])

    # the start-up check would have stopped this worker, saying where and what to do
    assert result["check"] is not None
    assert str(spool_dir) in result["check"] and "MEMORY_SPOOL_DIR" in result["check"]
    assert "Permission denied" in result["check"]

    for identity, texts in SAID.items():
        session = result["sessions"][identity]
        assert session == {"lost": memories(texts), "spooled": 0, "closed": False}, identity
        user = livekit_identity_to_uuid(identity)
        errors = [x for x in log.splitlines() if x.startswith("ERROR caller_memory.capture")]
        mine = [x for x in errors if user in x]
        # the first loss, as it happens, and the session's total at its end
        assert len(mine) == 2, errors
        assert all(str(spool_dir) in x for x in mine)
        assert f"{memories(texts)} captured memories of user {user} were lost" in mine[1]
    for line in log.splitlines():
        assert "kept and written" not in line
        if line.startswith(("ERROR", "WARNING")):
            assert not any(i in line for i in SAID), line
            assert not any(t in line for texts in SAID.values() for t in texts), line
    assert list(spool_dir.iterdir()) == []


def test_check_spool_writable_creates_a_private_directory_and_refuses_a_file(
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "data" / "spool"
    check_spool_writable(spool_dir)
    assert spool_dir.is_dir() and (spool_dir.stat().st_mode & 0o777) == 0o700
    assert list(spool_dir.iterdir()) == []  # the probe is gone
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    with pytest.raises(SpoolNotWritableError, match="MEMORY_SPOOL_DIR") as raised:
        check_spool_writable(not_a_dir)
    assert str(not_a_dir) in str(raised.value)


# -- a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(size_kib: int) -> Iterator[Path]:
    """A real filesystem of `size_kib` KiB (tmpfs), or skip where mounting is not allowed."""
    mount_point = Path(tempfile.mkdtemp(prefix="spool-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
        mount_point.rmdir()


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = directory / f"filler-{uuid.uuid4().hex[:8]}"
    with open(filler, "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)
    return filler


async def test_a_full_disk_loses_captures_and_says_so_then_the_spool_works_again(
    sqlite_store: SQLiteMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = FakeWriteGate(sqlite_store)
    gate.down = True
    with small_tmpfs(256) as disk:
        spool_dir = disk / "spool"
        worker = CallerMemory(
            store=gate,  # type: ignore[arg-type]
            settings=MemorySettings.load(spool_dir=spool_dir),
        )
        spool = worker.spool
        await asyncio.to_thread(check_spool_writable, spool_dir)
        filler = await asyncio.to_thread(fill, disk)
        with pytest.raises(SpoolNotWritableError, match="No space left on device"):
            await asyncio.to_thread(check_spool_writable, spool_dir)

        with caplog.at_level(logging.INFO, logger="caller_memory"):
            memory = capture_writer(worker, "alice@example.com")
            for text in SAID["alice@example.com"]:
                memory.capture(text)
            assert await memory.flush()
            lost = memories(SAID["alice@example.com"])
            assert (memory.lost_count, memory.spooled_count) == (lost, 0)

            await asyncio.to_thread(filler.unlink)  # room again: what she says now is kept
            memory.capture("I live in Leeds")
            assert await memory.flush()
            assert memory.spooled_count == 2
            assert await memory.aclose() is False  # some of what she said is lost

        user = livekit_identity_to_uuid("alice@example.com")
        errors = [
            r.getMessage()
            for r in caplog.records
            if r.name == "caller_memory.capture" and r.levelno == logging.ERROR
        ]
        assert len(errors) == 2, errors
        assert errors[0].startswith(f"1 captured memories of user {user} are lost")
        assert "No space left on device" in errors[0] and str(spool_dir) in errors[0]
        assert errors[1].startswith(f"{lost} captured memories of user {user} were lost")

        gate.down = False

        def replayed() -> bool:
            values = {m["value"] for m in sqlite_rows(sqlite_store.path)[1]}
            return values == {"I live in Leeds", "Leeds"}

        spool.schedule_replay(first_delay=0.01)
        await eventually(replayed, "the spooled memories to be replayed", timeout=15)
        await eventually(lambda: not spool.has_pending, "the spool's replay to end")
        tasks = list(spool._replayers.values())  # the worker ends: the disk can be unmounted
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_forget_goes_on_when_a_spool_file_cannot_be_rewritten(
    sqlite_store: SQLiteMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Dropping the caller's spooled records needs room for a rewritten file; without it the
    caller's erasure must still happen (the store then refuses those records at replay)."""
    alice, bob = "alice@example.com", "bob@example.com"
    began = time.time() - 60
    with small_tmpfs(256) as disk:
        spool_dir = disk / "spool"
        await asyncio.to_thread(check_spool_writable, spool_dir)
        dead = spool_dir / "spool-999999-deadbeef.jsonl"
        records = [
            new_record(
                i,
                livekit_identity_to_uuid(i),
                "FACT",
                "home_town",
                town,
                captured_at=began,
                session_started_at=began,
            )
            for i, town in ((alice, "Leeds"), (bob, "Oslo"))
        ]
        await asyncio.to_thread(dead.write_bytes, b"".join(encode_record(r) for r in records))
        filler = await asyncio.to_thread(fill, disk)
        worker = CallerMemory(store=sqlite_store, settings=MemorySettings.load(spool_dir=spool_dir))
        spool = worker.spool

        memory = capture_writer(worker, alice)
        with caplog.at_level(logging.ERROR, logger="caller_memory.spool"):
            forget = asyncio.create_task(memory.forget_everything(), context=memory.context_copy())
            await forget
        [error] = [r.getMessage() for r in caplog.records if r.name == "caller_memory.spool"]
        assert dead.name in error and livekit_identity_to_uuid(alice) in error
        assert "No space left on device" in error

        await asyncio.to_thread(filler.unlink)
        assert await spool.replay() == 1  # bob's; alice's is refused by the store
    values = {(m["user_id"], m["value"]) for m in sqlite_rows(sqlite_store.path)[1]}
    assert values == {(livekit_identity_to_uuid(bob), "Oslo")}
