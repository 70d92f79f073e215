"""A durable local spool for captured memories the store could not take.

When a write fails (the database blipped, the network dropped), the captured memory is
appended to a JSON-lines file under `MEMORY_SPOOL_DIR` (default `data/spool`) and fsynced,
so it survives the process being killed. A background replayer writes spooled memories to
the store once it is back, oldest first; a new worker process replays files left by dead
processes at start-up. Writes are upserts on (user, category, key), so replaying a record
twice cannot duplicate it.

Each process appends to its own file and holds an exclusive `flock` on it while it lives;
a file nobody holds a lock on belongs to a process that is gone, and any process may claim
and replay it. Records carry the raw identity (the spool is local disk on the worker) so
replay can run each write as that caller, through the same fail-closed memory manager.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from memory_manager import MemoryManager, memory_manager
from session_context import session_user
from storage import PROJECT_DIR
from storage.errors import StorageError
from store_health import store_outage

logger = logging.getLogger("memory_worker.spool")

DEFAULT_SPOOL_DIR = PROJECT_DIR / "data" / "spool"
DISCARD_WAIT_S = 10.0
MIN_RETRY_DELAY_S = 0.1


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    identity: str
    user_id: str
    category: str
    key: str
    value: str
    captured_at: float


def spool_dir_from_env() -> Path:
    raw = os.environ.get("MEMORY_SPOOL_DIR", "").strip()
    return Path(raw).expanduser() if raw else DEFAULT_SPOOL_DIR


class MemorySpool:
    """The spool of one process (see module docstring). Safe to use from several loops."""

    def __init__(self, directory: Path, *, manager: MemoryManager = memory_manager) -> None:
        self.directory = directory
        self._manager = manager
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._own_records = 0
        self._unfinished = False  # the last replay stopped early: claimed records are waiting
        self._in_flight = 0  # spooled records a replay is writing right now
        self._replay_lock = threading.Lock()
        self._replayers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    # -- writing ----------------------------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        """Whether this process has spooled records not yet replayed (new writes queue behind)."""
        return self._own_records > 0 or self._unfinished or self._in_flight > 0

    def _open_own_file(self) -> IO[str]:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._path = self.directory / name
            fh = open(self._path, "a", encoding="utf-8")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file = fh
        return self._file

    def _append_many_sync(self, records: list[SpoolRecord]) -> None:
        with self._lock:
            fh = self._open_own_file()
            fh.write("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records))
            fh.flush()
            os.fsync(fh.fileno())
            self._own_records += len(records)

    async def append(self, *records: SpoolRecord, replay: bool = True) -> None:
        """Durably keep `records`; returns once they are on disk."""
        if not records:
            return
        await asyncio.to_thread(self._append_many_sync, list(records))
        logger.debug("spooled %d memories", len(records))
        if replay:
            self.schedule_replay()

    def _discard_own_sync(self, user_id: str) -> int:
        with self._lock:
            if self._file is None or self._path is None or self._own_records == 0:
                return 0
            lines = self._path.read_text(encoding="utf-8").splitlines()
            keep = [x for x in lines if x.strip() and _record_user(x) != user_id]
            with open(self._path, "r+", encoding="utf-8") as fh:  # the append handle can't seek
                _rewrite(fh, "".join(x + "\n" for x in keep))
            self._own_records = len(keep)
            return len(lines) - len(keep)

    def _discard_user_sync(self, user_id: str) -> tuple[int, int]:
        # Hold the replay lock so that no replay in this process is halfway through a file
        # holding this user's records (it would write them after their deletion).
        locked = self._replay_lock.acquire(timeout=DISCARD_WAIT_S)
        try:
            dropped, held = self._discard_own_sync(user_id), 0
            # Files a replay claimed and could not finish, or left by dead processes.
            for path in self._claimable_files():
                file_dropped, file_held = _discard_from_file(path, user_id)
                dropped += file_dropped
                held += file_held
            return dropped, held
        finally:
            if locked:
                self._replay_lock.release()

    async def discard_user(self, user_id: str) -> int:
        """Drop every spooled record of `user_id` this process can reach (they asked to be
        forgotten): its own, and those in files no live process holds."""
        dropped, held = await asyncio.to_thread(self._discard_user_sync, user_id)
        if dropped:
            logger.info("dropped %d spooled memories of user %s", dropped, user_id)
        if held:
            logger.warning(
                "%d spooled memories of user %s are held by another running worker, which "
                "will write them when the store is back; delete the user again after that",
                held,
                user_id,
            )
        return dropped

    # -- replaying --------------------------------------------------------------------------

    def _rotate_own_file(self) -> Path | None:
        """Close this process's file and hand it over for replay (renamed, still locked)."""
        with self._lock:
            if self._file is None or self._own_records == 0:
                return None
            assert self._path is not None
            claimed = self._path.with_name("claimed-" + self._path.name)
            os.replace(self._path, claimed)
            self._file.close()  # releases the lock; the claim below takes it again
            self._file, self._path, self._own_records = None, None, 0
            return claimed

    def _claimable_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        files = [p for p in self.directory.glob("*.jsonl") if p != self._path]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    async def replay(self) -> int:
        """Write every spooled record this process can claim; returns how many were written.

        Stops at the first storage failure, keeping what is left for the next attempt.
        """
        if not self._replay_lock.acquire(blocking=False):
            return 0
        try:
            await asyncio.to_thread(self._rotate_own_file)
            written, complete = 0, True
            for path in await asyncio.to_thread(self._claimable_files):
                done, complete = await self._replay_file(path)
                written += done
                if not complete:
                    break
            # What a failed pass kept (now in a claimed file, not this process's own) must
            # still hold new writes back, or an older value would overwrite a newer one.
            self._unfinished = not complete
            if written:
                logger.info("replayed %d spooled memories into the store", written)
            return written
        finally:
            self._replay_lock.release()

    async def _replay_file(self, path: Path) -> tuple[int, bool]:
        try:
            fh = await asyncio.to_thread(open, path, "r+", encoding="utf-8")
        except FileNotFoundError:
            return 0, True
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0, True  # a live process owns it
            lines = (await asyncio.to_thread(fh.read)).splitlines()
            # While these are being written, new writes queue behind them (has_pending);
            # a replay that finds nothing does not hold anyone back.
            self._in_flight += len(lines)
            try:
                return await self._replay_lines(path, fh, lines)
            finally:
                self._in_flight -= len(lines)
        finally:
            await asyncio.to_thread(fh.close)

    async def _replay_lines(self, path: Path, fh: IO[str], lines: list[str]) -> tuple[int, bool]:
        written = 0
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = SpoolRecord(**json.loads(line))
            except (ValueError, TypeError):
                logger.error("skipping a corrupt spool line in %s", path.name)
                continue
            try:
                await self._write(record)
            except _IdentityMismatch as exc:
                # Not an outage: retrying cannot help, and it must not hold back every other
                # record. Kept beside the spool (not replayed) for the operator.
                logger.error("%s", exc)
                await asyncio.to_thread(_set_aside, path, line)
                continue
            except ValueError as exc:
                logger.error("dropping a spooled memory the store refuses: %s", exc)
                continue
            except StorageError as exc:
                store_outage.failed("spool replay", exc)
                rest = "".join(x + "\n" for x in lines[index:] if x.strip())
                await asyncio.to_thread(_rewrite, fh, rest)
                return written, False
            written += 1
        store_outage.succeeded()
        await asyncio.to_thread(path.unlink, True)
        return written, True

    async def _write(self, record: SpoolRecord) -> None:
        with session_user(record.identity) as user_id:
            if user_id != record.user_id:
                raise _IdentityMismatch(record)
            await self._manager.astore(record.category, record.key, record.value)

    def schedule_replay(self, *, first_delay: float = 0.5, max_delay: float = 10.0) -> None:
        """Keep replaying in the background on the current loop until the spool is empty."""
        loop = asyncio.get_running_loop()
        task = self._replayers.get(loop)
        if task is not None and not task.done():
            return
        self._replayers[loop] = loop.create_task(
            self._replay_until_empty(first_delay, max_delay), name="memory-spool-replay"
        )

    async def _replay_until_empty(self, first_delay: float, max_delay: float) -> None:
        delay = first_delay
        while True:
            await asyncio.sleep(delay)
            await self.replay()
            leftovers = await asyncio.to_thread(self._claimable_files)
            # Checked after the last await and acted on at once: a record appended from now on
            # finds this task done, and its `schedule_replay` starts a new one.
            if not leftovers and not self.has_pending:
                return
            delay = min(max(delay * 2, MIN_RETRY_DELAY_S), max_delay)


class _IdentityMismatch(StorageError):
    def __init__(self, record: SpoolRecord) -> None:
        super().__init__(
            f"a spooled memory for user {record.user_id} maps to another uuid now; "
            "IDENTITY_NAMESPACE changed since it was captured. It is kept beside the spool, "
            "in a .mismatch file, and not replayed."
        )


def _record_user(line: str) -> str | None:
    try:
        user_id = json.loads(line).get("user_id")
    except (ValueError, AttributeError):
        return None  # a corrupt line is kept; replay reports it
    return user_id if isinstance(user_id, str) else None


def _discard_from_file(path: Path, user_id: str) -> tuple[int, int]:
    """(records of `user_id` dropped from `path`, records left because a live process
    holds the file)."""
    try:
        fh = open(path, "r+", encoding="utf-8")
    except FileNotFoundError:
        return 0, 0
    with fh:
        lines = [x for x in fh.read().splitlines() if x.strip()]
        keep = [x for x in lines if _record_user(x) != user_id]
        if len(keep) == len(lines):
            return 0, 0
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0, len(lines) - len(keep)
        fh.seek(0)  # read again under the lock: the file may have changed meanwhile
        lines = [x for x in fh.read().splitlines() if x.strip()]
        keep = [x for x in lines if _record_user(x) != user_id]
        if keep:
            _rewrite(fh, "".join(x + "\n" for x in keep))
        else:
            path.unlink(missing_ok=True)
        return len(lines) - len(keep), 0


def _set_aside(path: Path, line: str) -> None:
    with open(path.with_suffix(".mismatch"), "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _rewrite(fh: IO[str], text: str) -> None:
    # Keep the file's modification time: files are replayed oldest first by it, and what is
    # left of a file is no newer than it was (else an older value would be written last).
    before = os.fstat(fh.fileno())
    fh.seek(0)
    fh.write(text)
    fh.truncate()
    fh.flush()
    os.utime(fh.fileno(), ns=(before.st_atime_ns, before.st_mtime_ns))
    os.fsync(fh.fileno())


_default_spool: MemorySpool | None = None
_default_lock = threading.Lock()


def default_spool() -> MemorySpool:
    """The process-wide spool in `MEMORY_SPOOL_DIR`."""
    global _default_spool
    with _default_lock:
        if _default_spool is None or _default_spool.directory != spool_dir_from_env():
            _default_spool = MemorySpool(spool_dir_from_env())
        return _default_spool


def new_record(identity: str, user_id: str, category: str, key: str, value: str) -> SpoolRecord:
    return SpoolRecord(identity, user_id, category, key, value, time.time())
