"""A durable local spool for captured memories the store could not take.

When a write fails (the database blipped, the network dropped), the captured memory is
appended to a spool file in the spool directory (`MEMORY_SPOOL_DIR`, default `data/spool`) and
fsynced, so it survives the process being killed. A background replayer writes spooled
memories to the store once it is back, oldest file first; a new worker process replays files
left by dead processes at start-up. Every record carries when it was captured and when the
session that heard it began, and the store decides each write by those times (see
`MemoryStore.upsert_memory`): a record replayed twice, or after a newer value of its key,
changes nothing, and a record of a caller erased since is refused. So replay needs no ordering
of its own against live writes.

**Files.** Each process appends to its own file (`spool-<pid>-<random>.jsonl`) and holds an
exclusive `flock` on it while it lives; a file nobody holds a lock on belongs to a process
that is gone (or is one a replay claimed, `claimed-...`), and any process may claim and replay
it. Beside them: `<file>.mismatch` (records whose identity maps to another uuid now, kept for
the operator) and `<file>.corrupt` (records damaged on disk, kept for inspection). The
directory is created 0700 and every file 0600: records hold what callers said and their raw
identities (needed to replay each write as its own caller, through the fail-closed manager).

**Records.** One ASCII line each: the CRC-32 of the payload (8 hex digits), a space, the
record as JSON with every non-ASCII character escaped, and a newline. Nothing inside a record
can end its line (not U+2028, not U+0085: files are split on the newline byte only), and a
torn or damaged record (a full disk stops a write halfway) fails its checksum: it is set
aside into the `.corrupt` file, counted in one log line per file, and replay and erasure go
on with the next line. After an append failed, the next one starts with a newline, so a torn
tail never swallows the record after it. Plain JSON lines (the format before the checksum)
are still read.

**Memory.** Files are read and rewritten as streams, a bounded batch of lines at a time,
whatever their size: replay, what a stopped replay keeps, and erasure (`discard_user`) each
write a replacement file and rename it over the original (keeping its modification time,
which orders replay).

**Telemetry.** Records kept (and lost) are counted as writes (`spooled`, `lost`), stored
replays as `replayed`; the spool's size in records and bytes is a pair of gauges, grown by
each append and measured anew (`spool_depth`, a read of the directory in a worker thread)
after each replay pass and each erasure, never per turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from caller_memory.context import session_user
from caller_memory.manager import MemoryManager
from caller_memory.stores.errors import StorageError
from caller_memory.stores.outage import OutageLog
from caller_memory.telemetry import metrics
from caller_memory.types import MemoryDetails, MemoryKind, Statement, WriteOutcome

logger = logging.getLogger("caller_memory.spool")

SPOOL_DIR_ENV = "MEMORY_SPOOL_DIR"
MIN_RETRY_DELAY_S = 0.1
SIDE_FILE_LOCK_WAIT_S = 10.0
ORPHAN_REPLACEMENT_AGE_S = 60.0

DIR_MODE = 0o700
FILE_MODE = 0o600
SPOOL_SUFFIX = ".jsonl"
MISMATCH_SUFFIX = ".mismatch"
CORRUPT_SUFFIX = ".corrupt"
REPLACEMENT_SUFFIX = ".tmp"

# A record is at most a few tens of KB (values are capped at 8,000 characters, six bytes each
# when escaped); a longer line is damage, read in pieces and never held whole.
MAX_RECORD_BYTES = 1 << 20
BATCH_LINES = 256
BATCH_BYTES = 1 << 20
COPY_CHUNK_BYTES = 1 << 20

_TEXT_FIELDS = ("identity", "user_id", "category", "key", "value")


class SpoolNotWritableError(RuntimeError):
    """The spool (its directory or a file in it) cannot be written: disk full, read-only,
    or not the worker's to write. `kept` records of the failed append made it to disk whole
    (they will be replayed); the others are lost."""

    def __init__(self, path: Path, cause: OSError | str, *, kept: int = 0) -> None:
        reason = cause if isinstance(cause, str) else (cause.strerror or str(cause))
        self.path = path
        self.kept = kept
        super().__init__(
            f"the memory spool {path} cannot be written ({reason}). Captured memories the store "
            "cannot take are lost until it can: make the spool directory writable by the "
            f"worker's user and free disk space there, or set {SPOOL_DIR_ENV} to a writable "
            "directory"
        )


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One captured memory waiting for the store, with what the store's write rule needs."""

    identity: str
    user_id: str
    category: str
    key: str
    value: str
    captured_at: float
    kind: str
    session_started_at: float
    # what the memory answered and where (see `MemoryDetails`; absent in older records)
    context: str | None = None
    session_id: str | None = None
    turn_index: int | None = None
    states: tuple[tuple[str, str, str], ...] = ()

    def details(self) -> MemoryDetails:
        return MemoryDetails(
            context=self.context,
            session_id=self.session_id,
            turn_index=self.turn_index,
            states=tuple(Statement(*s) for s in self.states),
        )


def new_record(
    identity: str,
    user_id: str,
    category: str,
    key: str,
    value: str,
    *,
    kind: str = MemoryKind.FACT,
    captured_at: float | None = None,
    session_started_at: float | None = None,
    details: MemoryDetails | None = None,
) -> SpoolRecord:
    """A record of `value`, captured at `captured_at` (default now) by a session that began at
    `session_started_at` (default: when it was captured), with what it answered and where
    (`details`; its vector is not kept: the backfill makes it)."""
    captured = time.time() if captured_at is None else float(captured_at)
    started = captured if session_started_at is None else float(session_started_at)
    extra = details or MemoryDetails()
    return SpoolRecord(
        identity,
        user_id,
        category,
        key,
        value,
        captured,
        MemoryKind(kind).value,
        started,
        extra.context,
        extra.session_id,
        extra.turn_index,
        tuple((s.category, s.key, s.value) for s in extra.states),
    )


# -- the record format -----------------------------------------------------------------------


class CorruptRecordError(ValueError):
    """A spool line that is not a whole, valid record."""


def encode_record(record: SpoolRecord) -> bytes:
    """The framed line of `record`: `<crc32 hex> <ASCII JSON>\\n`."""
    payload = json.dumps(
        asdict(record), ensure_ascii=True, allow_nan=False, separators=(",", ":")
    ).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_record(line: bytes) -> SpoolRecord | None:
    """The record of one spool line (framed, or a plain JSON line of the earlier format);
    None for a blank line. Raises `CorruptRecordError` for anything else."""
    body = line[:-1] if line.endswith(b"\n") else line
    if not body.strip():
        return None
    head, _, payload = body.partition(b" ")
    if len(head) == 8 and all(c in b"0123456789abcdef" for c in head):
        if zlib.crc32(payload) != int(head, 16):
            raise CorruptRecordError("checksum mismatch (a torn or damaged record)")
    elif body.lstrip().startswith(b"{"):
        payload = body  # one JSON object per line, as written before framing
    else:
        raise CorruptRecordError("not a spool record")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CorruptRecordError("not valid JSON in UTF-8") from None
    return _record_from(data)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _record_from(data: Any) -> SpoolRecord:
    if not isinstance(data, dict):
        raise CorruptRecordError("not a JSON object")
    missing = [f for f in _TEXT_FIELDS if not isinstance(data.get(f), str)]
    captured_at = _number(data.get("captured_at"))
    if missing or captured_at is None:
        raise CorruptRecordError("missing or malformed fields")
    kind = data.get("kind")
    if kind is None:
        # Records written before kinds existed: utterances were the keys made for them.
        is_utterance = data["key"].startswith("utterance_")
        kind = MemoryKind.UTTERANCE if is_utterance else MemoryKind.FACT
    elif kind not in {k.value for k in MemoryKind}:
        raise CorruptRecordError("unknown kind")
    started = data.get("session_started_at")
    session_started_at = captured_at if started is None else _number(started)
    if session_started_at is None:
        raise CorruptRecordError("malformed session_started_at")
    return SpoolRecord(
        data["identity"],
        data["user_id"],
        data["category"],
        data["key"],
        data["value"],
        captured_at,
        MemoryKind(kind).value,
        session_started_at,
        *_optional_details(data),
    )


def _optional_details(
    data: dict[str, Any],
) -> tuple[str | None, str | None, int | None, tuple[tuple[str, str, str], ...]]:
    """The details a record may carry (records of earlier releases carry none)."""
    context = data.get("context")
    session_id = data.get("session_id")
    turn_index = data.get("turn_index")
    raw_states = data.get("states") or []
    if (
        not (context is None or isinstance(context, str))
        or not (session_id is None or isinstance(session_id, str))
        or not (
            turn_index is None or (isinstance(turn_index, int) and not isinstance(turn_index, bool))
        )
        or not isinstance(raw_states, list)
        or not all(
            isinstance(s, list) and len(s) == 3 and all(isinstance(x, str) for x in s)
            for s in raw_states
        )
    ):
        raise CorruptRecordError("malformed details")
    return context, session_id, turn_index, tuple((s[0], s[1], s[2]) for s in raw_states)


def _identity_needles(user_id: str, identity: str | None) -> tuple[bytes, ...]:
    """Byte strings whose presence in a damaged line marks it as this caller's: the uuid, and
    the identity as JSON writes it (escaped, as framed records do; raw UTF-8, as plain JSON
    lines of the earlier format did)."""
    needles = {user_id.encode("ascii", "replace")}
    if identity:
        needles.add(json.dumps(identity, ensure_ascii=True).encode("ascii"))
        needles.add(json.dumps(identity, ensure_ascii=False).encode("utf-8", "replace"))
    return tuple(sorted(needles))


# -- streaming lines -------------------------------------------------------------------------


@dataclass(slots=True)
class _Line:
    raw: bytes  # the line with its newline (or the first MAX_RECORD_BYTES of an overlong one)
    overlong: bool = False
    mentions: bool = False  # contains one of the reader's needles (overlong lines only)


class _LineReader:
    """The lines of a binary file, split on b"\\n" only, in bounded batches."""

    def __init__(self, fh: IO[bytes], needles: tuple[bytes, ...] = ()) -> None:
        self._fh = fh
        self._needles = needles
        self._overlap = max((len(n) for n in needles), default=1) - 1

    def _line(self) -> _Line | None:
        raw = self._fh.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            return None
        if raw.endswith(b"\n") or len(raw) <= MAX_RECORD_BYTES:
            return _Line(raw)
        # An overlong line: keep its head, read past the rest, noting whether it names anyone
        # we look for (a needle may straddle two pieces).
        line = _Line(raw[:MAX_RECORD_BYTES], overlong=True, mentions=self._mentions(raw))
        tail = raw[-self._overlap :] if self._overlap else b""
        while True:
            chunk = self._fh.readline(COPY_CHUNK_BYTES)
            if not chunk:
                break
            line.mentions = line.mentions or self._mentions(tail + chunk)
            if chunk.endswith(b"\n"):
                break
            tail = chunk[-self._overlap :] if self._overlap else b""
        return line

    def _mentions(self, data: bytes) -> bool:
        return any(n in data for n in self._needles)

    def batch(self) -> list[_Line]:
        lines: list[_Line] = []
        size = 0
        while len(lines) < BATCH_LINES and size < BATCH_BYTES:
            line = self._line()
            if line is None:
                break
            lines.append(line)
            size += len(line.raw)
        return lines

    def __iter__(self) -> Iterator[_Line]:
        while batch := self.batch():
            yield from batch

    def copy_rest(self, fd: int) -> None:
        """Write everything not read yet to `fd`."""
        while chunk := self._fh.read(COPY_CHUNK_BYTES):
            _write_all(fd, chunk)


def _terminated(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\n") else raw + b"\n"


# -- files -----------------------------------------------------------------------------------


class _PartialWriteError(OSError):
    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.written = written
        self.cause = cause


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data`; on failure raise `_PartialWriteError` saying how much got out."""
    view = memoryview(data)
    written = 0
    while written < len(data):
        try:
            written += os.write(fd, view[written:])
        except OSError as exc:
            raise _PartialWriteError(written, exc) from exc


def _make_dir(directory: Path) -> None:
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def _create_file(path: Path, *, exclusive: bool = False) -> int:
    """Open `path` for appending, created 0600 (the mode is set as it is created)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    if exclusive:
        flags |= os.O_EXCL
    return os.open(path, flags, FILE_MODE)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename itself is atomic
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (not replaced or removed since)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _lock_within(fd: int, seconds: float) -> bool:
    if seconds <= 0:
        return _try_lock(fd)
    deadline = time.monotonic() + seconds
    while not _try_lock(fd):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class _Replacement:
    """A new version of `path`, written beside it and renamed over it when complete (so a
    crash leaves the old version whole). Locked while it exists: an unlocked replacement is
    the orphan of a crash, and any process may delete it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{REPLACEMENT_SUFFIX}")
        self.fd = _create_file(self.temp, exclusive=True)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.lines = 0

    def add(self, raw: bytes) -> None:
        _write_all(self.fd, _terminated(raw))
        self.lines += 1

    def commit(self, times_from: os.stat_result) -> int:
        """Fsync, give it the original's times, rename it over the original; returns its
        descriptor (still locked, open for appending)."""
        os.fsync(self.fd)
        os.utime(self.fd, ns=(times_from.st_atime_ns, times_from.st_mtime_ns))
        os.replace(self.temp, self.path)
        _fsync_dir(self.path.parent)
        return self.fd

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.temp.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _append_side_file(path: Path, lines: list[bytes]) -> None:
    """Append `lines` to a `.mismatch` or `.corrupt` file (created 0600), under its lock: an
    erasure may be rewriting it, from this process or another."""
    if not lines:
        return
    data = b"".join(_terminated(x) for x in lines)
    while True:
        fd = _create_file(path)
        try:
            if not _lock_within(fd, SIDE_FILE_LOCK_WAIT_S):
                raise OSError(f"{path.name} stayed locked for {SIDE_FILE_LOCK_WAIT_S:g} s")
            if not _same_file(fd, path):
                continue  # replaced while we waited: append to the new one
            _write_all(fd, data)
            os.fsync(fd)
            return
        finally:
            os.close(fd)


def side_file(path: Path, suffix: str) -> Path:
    """`spool-1-ab.jsonl` -> `spool-1-ab<suffix>`."""
    return path.with_suffix(suffix)


def read_spool_records(path: Path) -> list[SpoolRecord]:
    """Every whole record in one spool file (damaged lines skipped), for operators and tests.
    Reads the whole file: not for use on the worker's event loop or on large files."""
    records: list[SpoolRecord] = []
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return records
    with fh:
        for line in _LineReader(fh):
            try:
                record = decode_record(line.raw) if not line.overlong else None
            except CorruptRecordError:
                continue
            if record is not None:
                records.append(record)
    return records


def check_spool_writable(directory: Path) -> None:
    """Raise `SpoolNotWritableError` (naming the path and what to do) unless a spool file can
    be created, written and synced in `directory` (created 0700 if missing). Run it before the
    worker takes calls: an unwritable spool loses what callers say during a store outage."""
    probe = directory / f"write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}{REPLACEMENT_SUFFIX}"
    try:
        _make_dir(directory)
        fd = _create_file(probe, exclusive=True)
        try:
            _write_all(fd, b"\n" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        cause = exc.cause if isinstance(exc, _PartialWriteError) else exc
        raise SpoolNotWritableError(directory, cause) from None


# -- how much waits --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpoolDepth:
    """What the spool directory holds for replay (set-aside `.mismatch` and `.corrupt`
    files are not waiting for anything and are not counted)."""

    records: int = 0  # lines waiting (a torn line too: replay sets it aside)
    size_bytes: int = 0
    files: int = 0
    oldest_captured_at: float | None = None  # None when not asked for, or nothing waits


def spool_depth(directory: Path, *, oldest: bool = False) -> SpoolDepth:
    """What waits in the spool files of `directory` (every process's): records, bytes, files,
    and with `oldest`, when the oldest waiting record was captured (decodes every record:
    for operators, not for each append). Blocking: run it in a thread on an event loop."""
    if not directory.is_dir():
        return SpoolDepth()
    records = size = files = 0
    first: float | None = None
    for path in directory.glob(f"*{SPOOL_SUFFIX}"):
        try:
            fh = open(path, "rb")
        except OSError:
            continue  # gone meanwhile (replayed, or rewritten and renamed)
        with fh:
            files += 1
            size += os.fstat(fh.fileno()).st_size
            for line in _LineReader(fh):
                if not line.raw.strip():
                    continue
                records += 1
                if not oldest or line.overlong:
                    continue
                try:
                    record = decode_record(line.raw)
                except CorruptRecordError:
                    continue
                if record is not None and (first is None or record.captured_at < first):
                    first = record.captured_at
    return SpoolDepth(records, size, files, first)


# -- erasure, one file at a time -------------------------------------------------------------


@dataclass(slots=True)
class _Discarded:
    records: int = 0  # whole records of the caller, dropped
    damaged: int = 0  # damaged lines naming the caller, dropped
    held: int = 0  # records of the caller in files another holder has locked


def _is_callers(record: SpoolRecord, user_id: str, identity: str | None) -> bool:
    return record.user_id == user_id or (identity is not None and record.identity == identity)


def _callers_lines(
    fh: IO[bytes], user_id: str, identity: str | None, needles: tuple[bytes, ...]
) -> Iterator[tuple[_Line, bool | None]]:
    """Each line of `fh`, with True for a record of the caller, None for a damaged line that
    names them, False for anything else."""
    for line in _LineReader(fh, needles):
        if line.overlong:
            yield line, (None if line.mentions else False)
            continue
        try:
            record = decode_record(line.raw)
        except CorruptRecordError:
            yield line, (None if any(n in line.raw for n in needles) else False)
            continue
        yield line, (record is not None and _is_callers(record, user_id, identity))


def _count_callers(fh: IO[bytes], user_id: str, identity: str | None) -> int:
    needles = _identity_needles(user_id, identity)
    fh.seek(0)
    return sum(1 for _, theirs in _callers_lines(fh, user_id, identity, needles) if theirs)


@dataclass(slots=True)
class _Rewritten:
    fd: int | None  # the replacement (locked, open for appending); None: the file is removed
    lines: int  # lines it holds


def _rewrite_without(
    path: Path, fh: IO[bytes], user_id: str, identity: str | None, result: _Discarded
) -> _Rewritten | None:
    """Stream `path` (open as `fh`, locked by the caller) into a replacement without the
    caller's lines (a file left with nothing is removed). None when nothing had to change."""
    needles = _identity_needles(user_id, identity)
    fh.seek(0)
    if not any(theirs is not False for _, theirs in _callers_lines(fh, user_id, identity, needles)):
        return None
    before = os.fstat(fh.fileno())
    fh.seek(0)
    replacement = _Replacement(path)
    try:
        for line, theirs in _callers_lines(fh, user_id, identity, needles):
            if theirs is True:
                result.records += 1
            elif theirs is None:
                result.damaged += 1
            elif line.raw.strip():
                replacement.add(line.raw)
        if replacement.lines == 0:
            replacement.abandon()
            path.unlink(missing_ok=True)
            _fsync_dir(path.parent)
            return _Rewritten(None, 0)
        return _Rewritten(replacement.commit(before), replacement.lines)
    except BaseException:
        replacement.abandon()
        raise


def _discard_from_file(
    path: Path, user_id: str, identity: str | None, result: _Discarded, *, wait: float = 0.0
) -> None:
    """Drop the caller's lines from a file no one else holds (waiting up to `wait` seconds for
    its lock); count them as held otherwise."""
    while True:
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return
        with fh:
            if not _lock_within(fh.fileno(), wait):
                result.held += _count_callers(fh, user_id, identity)
                return
            if not _same_file(fh.fileno(), path):
                continue  # replaced meanwhile: look at the new one
            rewritten = _rewrite_without(path, fh, user_id, identity, result)
            if rewritten is not None and rewritten.fd is not None:
                os.close(rewritten.fd)
            return


# -- the spool -------------------------------------------------------------------------------


@dataclass(slots=True)
class _ReplayTally:
    written: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # WriteOutcome -> records


class _ClaimedFile:
    """A spool file this process replays: open, locked, read in batches; what it sets aside
    is gathered per batch and appended to the side files between batches."""

    def __init__(self, path: Path, fh: IO[bytes]) -> None:
        self.path = path
        self.fh = fh
        self.reader = _LineReader(fh)
        self.times = os.fstat(fh.fileno())
        self.corrupt: list[bytes] = []
        self.mismatch: list[bytes] = []
        self.corrupt_count = 0
        self.replacement_fd: int | None = None

    @classmethod
    def claim(cls, path: Path) -> _ClaimedFile | None:
        """Open and lock `path`; None if a live process holds it or it is gone."""
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return None
        if not _try_lock(fh.fileno()) or not _same_file(fh.fileno(), path):
            fh.close()
            return None
        return cls(path, fh)

    def set_aside_pending(self) -> None:
        _append_side_file(side_file(self.path, CORRUPT_SUFFIX), self.corrupt)
        _append_side_file(side_file(self.path, MISMATCH_SUFFIX), self.mismatch)
        self.corrupt_count += len(self.corrupt)
        self.corrupt, self.mismatch = [], []

    def keep_rest(self, first: list[_Line]) -> None:
        """Replace the file by what is not written yet: `first`, then everything unread."""
        self.set_aside_pending()
        replacement = _Replacement(self.path)
        try:
            for line in first:
                replacement.add(line.raw)
            self.reader.copy_rest(replacement.fd)
            self.replacement_fd = replacement.commit(self.times)
        except BaseException:
            replacement.abandon()
            raise

    def finish(self) -> None:
        self.set_aside_pending()
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def close(self) -> None:
        self.fh.close()
        if self.replacement_fd is not None:
            os.close(self.replacement_fd)
        if self.corrupt_count:
            logger.error(
                "set aside %d damaged spool records of %s in %s (torn or corrupted on disk, "
                "e.g. by a full disk; not replayed)",
                self.corrupt_count,
                self.path.name,
                side_file(self.path, CORRUPT_SUFFIX).name,
            )


class MemorySpool:
    """The spool of one process (see module docstring). Safe to use from several loops."""

    def __init__(
        self,
        directory: Path,
        *,
        manager: MemoryManager,
        outage: OutageLog,
        namespace: uuid.UUID | None = None,
    ) -> None:
        """`manager` writes replayed records, `outage` hears how the store answers, and each
        record is replayed as its own caller, their uuid computed in `namespace` (the owning
        memory's; a record whose uuid no longer matches is set aside, not replayed)."""
        self.directory = directory
        self._manager = manager
        self._outage = outage
        self._namespace = namespace
        self._lock = threading.Lock()  # this process's own file
        self._fd: int | None = None
        self._path: Path | None = None
        self._own_records = 0
        self._own_has_data = False  # also a torn record counts: replay must set it aside
        self._torn_tail = False  # the last append failed: the next starts on a new line
        self._unfinished = False  # the last replay stopped early: claimed records wait
        self._replaying = False
        self._replay_lock = threading.Lock()
        self._replayers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    # -- writing ----------------------------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        """Whether this process has spooled records not yet replayed."""
        return self._own_records > 0 or self._unfinished or self._replaying

    def _open_own_file(self) -> int:
        if self._fd is None:
            _make_dir(self.directory)
            path = self.directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}{SPOOL_SUFFIX}"
            fd = _create_file(path, exclusive=True)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fd, self._path = fd, path
            self._torn_tail = False
        return self._fd

    def _append_many_sync(self, records: list[SpoolRecord]) -> None:
        lines = [encode_record(r) for r in records]
        with self._lock:
            try:
                fd = self._open_own_file()
            except OSError as exc:
                raise SpoolNotWritableError(self._path or self.directory, exc) from None
            assert self._path is not None
            separator = b"\n" if self._torn_tail else b""
            try:
                _write_all(fd, separator + b"".join(lines))
            except _PartialWriteError as exc:
                self._torn_tail = True
                self._own_has_data = self._own_has_data or exc.written > 0
                whole, end = 0, len(separator)
                for line in lines:
                    end += len(line)
                    if end > exc.written:
                        break
                    whole += 1
                self._own_records += whole
                metrics.spool_grew(whole, exc.written)  # a torn line is in the file too
                raise SpoolNotWritableError(self._path, exc.cause, kept=whole) from None
            self._own_has_data = True
            self._torn_tail = False
            self._own_records += len(records)
            metrics.spool_grew(len(records), len(separator) + sum(len(x) for x in lines))
            try:
                os.fsync(fd)
            except OSError as exc:
                # On disk or not, nobody can say: they will be replayed if they are there.
                raise SpoolNotWritableError(self._path, exc) from None

    async def append(self, *records: SpoolRecord, replay: bool = True) -> None:
        """Durably keep `records`; returns once they are on disk.

        Raises `SpoolNotWritableError` when they could not all be kept (its `kept` says how
        many of them were)."""
        if not records:
            return
        try:
            await asyncio.to_thread(self._append_many_sync, list(records))
        except SpoolNotWritableError as exc:
            metrics.writes_spooled(exc.kept, len(records) - exc.kept)
            raise
        else:
            metrics.writes_spooled(len(records), 0)
        finally:
            if replay:
                self.schedule_replay()
        logger.debug("spooled %d memories", len(records))

    def _measure(self) -> None:
        """Read the whole spool directory's size into the gauges (blocking: in a thread)."""
        try:
            depth = spool_depth(self.directory)
        except OSError as exc:
            logger.debug("could not measure the spool directory: %s", exc)
            return
        metrics.spool_measured(depth.records, depth.size_bytes)

    # -- erasure ----------------------------------------------------------------------------

    def _discard_own_sync(self, user_id: str, identity: str | None, result: _Discarded) -> None:
        with self._lock:
            if self._fd is None or self._path is None or not self._own_has_data:
                return
            with open(self._path, "rb") as fh:
                rewritten = _rewrite_without(self._path, fh, user_id, identity, result)
            if rewritten is None:
                return  # nothing of the caller in it
            os.close(self._fd)  # the old version, and its lock
            self._fd = rewritten.fd
            if rewritten.fd is None:
                self._path = None
            self._own_records = rewritten.lines
            self._own_has_data = rewritten.lines > 0
            self._torn_tail = False  # the replacement ends every line

    def _spool_files(self, suffix: str) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [p for p in self.directory.glob(f"*{suffix}") if p != self._path]

    def _remove_orphan_replacements(self) -> None:
        """Delete replacement files a crash left behind (the original is still whole)."""
        for path in self._spool_files(REPLACEMENT_SUFFIX):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                age = time.time() - os.fstat(fd).st_mtime
                if age > ORPHAN_REPLACEMENT_AGE_S and _try_lock(fd) and _same_file(fd, path):
                    path.unlink(missing_ok=True)
                    logger.info("removed %s, left by a crashed spool rewrite", path.name)
            except OSError:
                pass
            finally:
                os.close(fd)

    def _discard_user_sync(self, user_id: str, identity: str | None) -> _Discarded:
        result = _Discarded()

        def attempt(path: Path | None, discard: Callable[[], None]) -> None:
            # One file that cannot be rewritten (disk full) must not stop the erasure: its
            # records are refused by the store when replayed, the erasure being recorded.
            try:
                discard()
            except OSError as exc:
                logger.error(
                    "could not remove the spooled memories of user %s from %s: %s",
                    user_id,
                    path.name if path else "this worker's spool file",
                    exc,
                )

        attempt(self._path, functools.partial(self._discard_own_sync, user_id, identity, result))
        attempt(None, self._remove_orphan_replacements)
        # Files a replay claimed and could not finish, files left by dead processes, and
        # what was set aside beside them: erasure reaches every file of the spool.
        for path in self._claimable_files():
            attempt(path, functools.partial(_discard_from_file, path, user_id, identity, result))
        for suffix in (MISMATCH_SUFFIX, CORRUPT_SUFFIX):
            for path in self._spool_files(suffix):
                discard = functools.partial(
                    _discard_from_file, path, user_id, identity, result, wait=SIDE_FILE_LOCK_WAIT_S
                )
                attempt(path, discard)
        self._measure()
        return result

    async def discard_user(self, user_id: str, identity: str | None = None) -> int:
        """Drop every spooled record of `user_id` (or of `identity`) this process can reach,
        because the caller asked to be forgotten: its own file, files no live process holds,
        and the `.mismatch` and `.corrupt` files beside them (a damaged line is dropped if it
        names the caller's uuid or identity). Returns the whole records dropped.

        Records in a file another worker holds (or a replay is reading right now) are not
        reachable; the store refuses them when they are replayed, since the erasure is
        recorded there (`aforget_everything`)."""
        result = await asyncio.to_thread(self._discard_user_sync, user_id, identity)
        if result.records or result.damaged:
            logger.info(
                "dropped %d spooled memories (and %d damaged spool lines) of user %s",
                result.records,
                result.damaged,
                user_id,
            )
        if result.held:
            logger.warning(
                "%d spooled memories of user %s are in a spool file another worker or a "
                "running replay holds; the store refuses them when they are replayed (the "
                "erasure is recorded), and their file is removed then",
                result.held,
                user_id,
            )
        return result.records

    # -- replaying --------------------------------------------------------------------------

    def _rotate_own_file(self) -> None:
        """Close this process's file and hand it over for replay (renamed, then unlocked)."""
        with self._lock:
            if self._fd is None or not self._own_has_data:
                return
            assert self._path is not None
            claimed = self._path.with_name("claimed-" + self._path.name)
            try:
                os.replace(self._path, claimed)
            except OSError as exc:
                logger.error("could not hand the spool file %s to replay: %s", self._path, exc)
                return
            os.close(self._fd)  # releases the lock; the replay's claim takes it again
            self._fd, self._path = None, None
            self._own_records, self._own_has_data, self._torn_tail = 0, False, False

    def _claimable_files(self) -> list[Path]:
        def age(path: Path) -> tuple[float, str]:
            try:
                return path.stat().st_mtime, path.name
            except FileNotFoundError:
                return 0.0, path.name

        return sorted(self._spool_files(SPOOL_SUFFIX), key=age)

    async def replay(self) -> int:
        """Write every spooled record this process can claim; returns how many the store took.

        Stops at the first storage failure, keeping what is left for the next attempt.
        Records the store refuses (the caller was erased since, or a newer value of the key
        is stored) are dropped, and counted in a log line.
        """
        if not self._replay_lock.acquire(blocking=False):
            return 0
        self._replaying = True
        try:
            await asyncio.to_thread(self._rotate_own_file)
            await asyncio.to_thread(self._remove_orphan_replacements)
            tally, complete = _ReplayTally(), True
            for path in await asyncio.to_thread(self._claimable_files):
                complete = await self._replay_file(path, tally)
                if not complete:
                    break
            self._unfinished = not complete
            await asyncio.to_thread(self._measure)
            if tally.written:
                logger.info("replayed %d spooled memories into the store", tally.written)
            if tally.refused:
                logger.info(
                    "dropped spooled memories the store refused: %s",
                    ", ".join(f"{n} {why}" for why, n in sorted(tally.refused.items())),
                )
            return tally.written
        finally:
            self._replaying = False
            self._replay_lock.release()

    async def _replay_file(self, path: Path, tally: _ReplayTally) -> bool:
        """Replay one file; False when it stopped early (what is left is kept in it)."""
        try:
            claimed = await asyncio.to_thread(_ClaimedFile.claim, path)
        except OSError as exc:
            logger.error("could not open the spool file %s: %s", path, exc)
            return False
        if claimed is None:
            return True  # a live process owns it, or it is gone
        try:
            return await self._replay_claimed(claimed, tally)
        except OSError as exc:
            # The file is left as it was: what was written is written again next time, which
            # the store's write rule makes harmless.
            logger.error("could not rewrite the spool file %s (%s); it is kept as it is", path, exc)
            return False
        finally:
            await asyncio.to_thread(claimed.close)

    async def _replay_claimed(self, claimed: _ClaimedFile, tally: _ReplayTally) -> bool:
        reached_store = False
        while batch := await asyncio.to_thread(claimed.reader.batch):
            for index, line in enumerate(batch):
                if line.overlong:
                    claimed.corrupt.append(line.raw)
                    continue
                try:
                    record = decode_record(line.raw)
                except CorruptRecordError:
                    claimed.corrupt.append(line.raw)
                    continue
                if record is None:
                    continue
                try:
                    outcome = await self._write(record)
                except _IdentityMismatchError as exc:
                    # Not an outage: retrying cannot help, and it must not hold back every
                    # other record. Kept beside the spool (not replayed) for the operator.
                    logger.error("%s", exc)
                    claimed.mismatch.append(line.raw)
                    continue
                except ValueError as exc:
                    logger.error("dropping a spooled memory the store refuses: %s", exc)
                    continue
                except StorageError as exc:
                    self._outage.failed("spool replay", exc)
                    await asyncio.to_thread(claimed.keep_rest, batch[index:])
                    return False
                reached_store = True
                if outcome == WriteOutcome.STORED:
                    tally.written += 1
                else:
                    why = WriteOutcome(outcome).value
                    tally.refused[why] = tally.refused.get(why, 0) + 1
                    logger.debug("a spooled memory of user %s was %s", record.user_id, why)
            await asyncio.to_thread(claimed.set_aside_pending)
        if reached_store:
            self._outage.succeeded()
        await asyncio.to_thread(claimed.finish)
        return True

    async def _write(self, record: SpoolRecord) -> WriteOutcome:
        with session_user(record.identity, namespace=self._namespace) as user_id:
            if user_id != record.user_id:
                raise _IdentityMismatchError(record)
            with metrics.replaying():
                return await self._manager.astore(
                    record.category,
                    record.key,
                    record.value,
                    kind=record.kind,
                    captured_at=record.captured_at,
                    session_started_at=record.session_started_at,
                    details=record.details(),
                )

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


class _IdentityMismatchError(StorageError):
    def __init__(self, record: SpoolRecord) -> None:
        super().__init__(
            f"a spooled memory for user {record.user_id} maps to another uuid now; "
            "IDENTITY_NAMESPACE changed since it was captured. It is kept beside the spool, "
            "in a .mismatch file, and not replayed."
        )


__all__ = [
    "CorruptRecordError",
    "MemorySpool",
    "SpoolDepth",
    "SpoolNotWritableError",
    "SpoolRecord",
    "check_spool_writable",
    "decode_record",
    "encode_record",
    "new_record",
    "read_spool_records",
    "spool_depth",
]
