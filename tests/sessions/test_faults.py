"""Faults in the middle of calls, through the worker's own path, on the real stores.

- **Postgres goes away mid-call**: the suite's real server is stopped (`pg_ctl stop -m
  immediate`) while several `AgentSession`s keep taking turns, typed and spoken, and a new
  caller arrives during the outage. Every turn still gets its reply; the outage is logged
  once (one ERROR from `caller_memory.stores.health`), not once a turn; every memory captured
  during it is kept in the spool, counted, and written exactly once after the server is
  started again -- and a value said during the outage never overwrites one said later.
- **SQLite can no longer be written mid-call**: another process takes SQLite's write lock
  (`BEGIN EXCLUSIVE`) and holds it, as a long admin transaction, a backup or a stuck worker
  would. `chmod` is no honest way to do this: the tests may run as root, which ignores file
  modes, and a mode change does not affect the descriptors the store already has open. With
  the lock held every write fails with "database is locked" after the busy timeout (shortened
  here to keep the test fast), while reads still work (WAL). Same checks as for Postgres.
- **The worker process is killed with writes pending**: a real worker process runs sessions
  while the store is locked, spools what its callers said, and gets SIGKILL. The next
  session start (`memory.attach` schedules the replay) writes them all; counted.
- **Start-up with an unreachable store or missing tables**: a session still starts and the
  caller still gets a conversation; the log says what is wrong and how to fix it ("check
  DATABASE_URL", "apply the migrations"), and `caller-memory check` says the same before the
  worker takes any call.

Everything is read back around the worker: Postgres rows with a separate connection, SQLite
rows from the file, spool records from the spool files on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from livekit.agents import AgentSession, llm
from livekit.agents.voice.run_result import ChatMessageEvent, RunResult

import caller_memory.memory as memory_module
import caller_memory.stores.health as store_check
import caller_memory.stores.postgres as postgres_store_module
import caller_memory.stores.sqlite as sqlite_store_module
from caller_memory import (
    CallerMemory,
    CallerSession,
    MemoryManager,
    MemorySettings,
    MemoryStore,
    StorageSchemaError,
    StorageUnavailableError,
    default_memory,
    livekit_identity_to_uuid,
    set_default_memory,
)
from caller_memory.capture.rule_based import extract_memories
from caller_memory.spool import MemorySpool, new_record, read_spool_records
from caller_memory.stores.outage import OutageLog
from caller_memory.stores.postgres import PostgresMemoryStore
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeAudioInput, FakeScriptedLLM, FakeStoreOutage, FakeSTT
from caller_memory.testing.postgres import PostgresCluster
from tests.session_harness import spoken_session, start_in_own_task, text_session
from tests.support import sqlite_rows, subprocess_env

HEALTH_LOGGER = "caller_memory.stores.health"
REPLY_TIMEOUT_S = 15.0  # deadlines (no hang), not speed assertions
RECOVERY_TIMEOUT_S = 45.0  # the replayer backs off up to 10 s between attempts
SHORT_BUSY_TIMEOUT_MS = 300

Row = tuple[str, str, str, str]  # user_id, category, key, value


# -- callers ---------------------------------------------------------------------------------


@dataclass
class Call:
    """One caller's running session, and everything the caller said in it."""

    identity: str
    spoken: bool
    session: AgentSession[Any]
    fake_stt: FakeSTT | None
    started: CallerSession
    said: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    async def turn(self, text: str) -> str:
        """One turn: typed (`session.run`) or spoken (STT -> hook -> reply); the reply."""
        self.said.append(text)
        if self.fake_stt is not None:
            reply = await spoken_reply(self.session, self.fake_stt, text)
        else:
            result: RunResult[Any] = await asyncio.wait_for(
                self.session.run(user_input=text), REPLY_TIMEOUT_S
            )
            [reply] = [
                e.item.text_content or ""
                for e in result.events
                if isinstance(e, ChatMessageEvent) and e.item.role == "assistant"
            ]
        self.replies.append(reply)
        return reply

    async def close(self) -> bool:
        if isinstance(self.session.input.audio, FakeAudioInput):
            self.session.input.audio.close()
        flushed = await self.started.aclose()
        await self.session.aclose()
        return flushed


async def spoken_reply(session: AgentSession[Any], fake_stt: FakeSTT, text: str) -> str:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_item(event: Any) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant" and not future.done():
            if item.text_content == f"reply: {text}":
                future.set_result(item.text_content)

    session.on("conversation_item_added", on_item)
    try:
        fake_stt.say(text)
        return await asyncio.wait_for(future, REPLY_TIMEOUT_S)
    finally:
        session.off("conversation_item_added", on_item)


async def start_call(identity: str, *, spoken: bool = False) -> Call:
    """Start a caller the way a job entrypoint does (`memory.attach`, then `session.start`
    with the worker's agent, in a task of its own), on the worker's (default) memory."""
    fake_llm = FakeScriptedLLM()
    fake_stt = FakeSTT() if spoken else None
    session = spoken_session(fake_llm, fake_stt) if fake_stt else text_session(fake_llm)
    started = await start_in_own_task(session, identity)
    return Call(identity, spoken, session, fake_stt, started)


async def everyone(calls: list[Call], texts: Callable[[Call], list[str]]) -> None:
    """Each caller takes its turns, all callers at once; every turn must get its reply."""

    async def one(call: Call) -> None:
        for text in texts(call):
            assert await call.turn(text) == f"reply: {text}"

    await asyncio.gather(*(asyncio.create_task(one(c)) for c in calls))


async def flushed(calls: list[Call]) -> None:
    """Wait until every capture was written or spooled (nothing left in a session queue)."""
    for call in calls:
        assert await call.started.writer.flush(REPLY_TIMEOUT_S)


def captures(texts: list[str]) -> int:
    return sum(len(extract_memories(t)) for t in texts)


def written_or_spooled(calls: list[Call]) -> int:
    return sum(c.started.writer.stored_count + c.started.writer.spooled_count for c in calls)


# -- reading the outcome around the worker ----------------------------------------------------


async def eventually(condition: Callable[[], Any], what: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def spooled_records() -> list[dict[str, Any]]:
    """Every record in the spool files on disk (own, claimed, or left by dead processes), in
    the spool directory this test's environment gives every worker (`MEMORY_SPOOL_DIR`)."""
    directory = MemorySettings.load().spool_dir
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        try:
            records += [asdict(r) for r in read_spool_records(path)]
        except FileNotFoundError:  # replayed and removed meanwhile
            continue
    return records


async def postgres_rows(dsn: str) -> list[Row]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT user_id, category, key, value FROM caller_memory.memories")
    finally:
        await conn.close()
    return [(str(r["user_id"]), r["category"], r["key"], r["value"]) for r in rows]


def sqlite_memory_rows(path: Path) -> list[Row]:
    return [(m["user_id"], m["category"], m["key"], m["value"]) for m in sqlite_rows(path)[1]]


def assert_exactly(rows: list[Row], said: dict[str, list[str]]) -> None:
    """Each caller's rows are exactly what that caller said: every utterance exactly once,
    every fact with the value said last; nobody else has a row."""
    users = {livekit_identity_to_uuid(i): i for i in said}
    assert {r[0] for r in rows} == set(users)
    for user_id, identity in users.items():
        mine = [r for r in rows if r[0] == user_id]
        memories = [m for t in said[identity] for m in extract_memories(t)]
        utterances = Counter(r[3] for r in mine if r[2].startswith("utterance_"))
        expected = Counter(m.value for m in memories if m.key.startswith("utterance_"))
        assert utterances == expected, identity
        facts = {(r[1], r[2]): r[3] for r in mine if not r[2].startswith("utterance_")}
        later_wins = {
            (m.category.value, m.key): m.value
            for m in memories
            if not m.key.startswith("utterance_")
        }
        assert facts == later_wins, identity
    assert len(rows) == sum(
        len({(m.category.value, m.key) for t in said[i] for m in extract_memories(t)}) for i in said
    )


def errors_from(caplog: pytest.LogCaptureFixture, name: str | None = None) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and (name is None or r.name == name)
    ]


# -- the outage scenario, on either store ----------------------------------------------------

# What each caller says, by phase. Caller 0 states a fact during the outage and changes it
# later in the outage (after several failed replay attempts); caller 1 states it during the
# outage and changes it after: in both cases the value said last must be the one stored.
BEFORE = ["I collect old maps of Porto", "I love sailing at dawn"]
DURING = [
    "My favourite colour is teal",
    "My sister Ana lives in Lisbon",
    "I prefer tea over coffee",
]
LATER_IN_OUTAGE = "My favourite colour is amber"
SPOKEN_LATER = "I collect old stamps from Lisbon"  # recall reads work in a write-only outage
AFTER = "My favourite colour is crimson"


@dataclass
class Outage:
    """How a test takes the store away and gives it back."""

    stop: Callable[[], Any]
    start: Callable[[], Any]
    rows: Callable[[], Any]  # -> list[Row] (maybe awaitable)


async def outage_mid_call(outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    """Four callers (three typed, one spoken) in mid-call when the store goes away; a fifth
    caller arrives during the outage. See the module docstring for what is checked."""
    identities = [f"fault-caller-{n}@example.com" for n in range(4)]
    calls = [await start_call(i, spoken=(n == 3)) for n, i in enumerate(identities)]
    try:
        await everyone(calls, lambda c: list(BEFORE))
        await flushed(calls)
        rows = outage.rows()
        before = await rows if asyncio.iscoroutine(rows) else rows
        assert len(before) == captures(BEFORE) * len(calls)  # the store worked until now
        assert written_or_spooled(calls) == len(before)

        await outage.stop()
        # mid-call turns while the store is gone: each one gets its reply
        await everyone(calls, lambda c: list(DURING))
        late = await start_call("fault-late-caller@example.com")  # a call starts meanwhile
        calls.append(late)
        assert await late.turn("I collect vintage radios") == "reply: I collect vintage radios"
        # the replayer tries (and fails) a few times before the caller changes a fact
        await asyncio.sleep(2.0)
        assert await calls[0].turn(LATER_IN_OUTAGE) == f"reply: {LATER_IN_OUTAGE}"
        assert await calls[3].turn(SPOKEN_LATER) == f"reply: {SPOKEN_LATER}"
        await flushed(calls)

        # everything said during the outage is kept, in the spool on disk, counted
        said_in_outage = [t for c in calls for t in c.said if t not in BEFORE]
        assert written_or_spooled(calls) == len(before) + captures(said_in_outage)
        # (read around the replayer, which may be rewriting a file at this very moment)
        await eventually(
            lambda: len(spooled_records()) == captures(said_in_outage), "the spool on disk", 5
        )
        # logged once for the whole outage, not once a turn or once a caller
        health = errors_from(caplog, HEALTH_LOGGER)
        assert len(health) == 1, health
        await asyncio.sleep(2.0)  # more failed replay attempts: still nothing more logged
        assert len(errors_from(caplog, HEALTH_LOGGER)) == 1

        await outage.start()
        assert await calls[1].turn(AFTER) == f"reply: {AFTER}"
        said = {c.identity: c.said for c in calls}

        async def all_arrived() -> bool:
            rows = outage.rows()
            current = await rows if asyncio.iscoroutine(rows) else rows
            return (
                len(current)
                >= sum(
                    len({(m.category.value, m.key) for t in texts for m in extract_memories(t)})
                    for texts in said.values()
                )
                and not default_memory().spool.has_pending
            )

        await eventually(all_arrived, "the spooled memories to arrive", RECOVERY_TIMEOUT_S)
        rows = outage.rows()
        after = await rows if asyncio.iscoroutine(rows) else rows
        assert_exactly(after, said)
        assert spooled_records() == []
        # the recovery is logged; the outage still only once
        assert len(errors_from(caplog, HEALTH_LOGGER)) == 1
        assert [
            r for r in caplog.records if r.name == HEALTH_LOGGER and "reachable again" in r.message
        ]
        for call in calls:
            assert call.replies == [f"reply: {t}" for t in call.said]
    finally:
        for call in calls:
            assert await call.close()


@pytest.mark.slow
@pytest.mark.postgres
async def test_postgres_stopped_mid_call_replies_continue_and_memories_arrive_after(
    pg_server: PostgresCluster,
    make_postgres_store: Callable[..., PostgresMemoryStore],
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # the worker's memory (a fresh one: its outage log has seen no outage yet)
    set_default_memory(
        CallerMemory(store=make_postgres_store(timeout=1.0), settings=MemorySettings.load())
    )

    async def stop() -> None:
        await asyncio.to_thread(pg_server.stop, "immediate")

    async def start() -> None:
        await asyncio.to_thread(pg_server.start)

    await outage_mid_call(Outage(stop, start, lambda: postgres_rows(pg_dsn)), caplog)
    # the only other errors: the late caller's profile could not be created at its start
    others = [m for m in errors_from(caplog) if m not in errors_from(caplog, HEALTH_LOGGER)]
    assert len(others) == 1 and "profile store unavailable" in others[0], others
    assert "DATABASE_URL" in others[0]


class SQLiteWriteLock:
    """Another process holding SQLite's write lock on the file (`BEGIN EXCLUSIVE`)."""

    SCRIPT = textwrap.dedent(
        """
        import sqlite3, sys
        conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        print("LOCKED", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        conn.execute("ROLLBACK")
        """
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[str] | None = None

    def take(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "LOCKED"

    def release(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(10)
            self.proc = None

    async def atake(self) -> None:
        await asyncio.to_thread(self.take)

    async def arelease(self) -> None:
        await asyncio.to_thread(self.release)


@contextmanager
def sqlite_write_lock(path: Path) -> Iterator[SQLiteWriteLock]:
    lock = SQLiteWriteLock(path)
    try:
        yield lock
    finally:
        if lock.proc is not None:
            lock.proc.kill()
            lock.proc.wait(10)


@pytest.mark.slow
async def test_sqlite_unwritable_mid_call_replies_continue_and_memories_arrive_after(
    sqlite_store: SQLiteMemoryStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sqlite_store_module, "BUSY_TIMEOUT_MS", SHORT_BUSY_TIMEOUT_MS)
    # Reads still work while another process holds the write lock (WAL): give recall the
    # time to succeed, so the spoken turns read from the store in the middle of the outage.
    monkeypatch.setenv("MEMORY_RECALL_BUDGET_MS", "1500")
    worker = CallerMemory(store=sqlite_store, settings=MemorySettings.load())
    assert worker.settings.recall_budget_s == 1.5
    set_default_memory(worker)
    caplog.set_level(logging.INFO)
    path = sqlite_store.path
    with sqlite_write_lock(path) as lock:
        outage = Outage(lock.atake, lock.arelease, lambda: sqlite_memory_rows(path))
        await outage_mid_call(outage, caplog)
    others = [m for m in errors_from(caplog) if m not in errors_from(caplog, HEALTH_LOGGER)]
    assert len(others) == 1 and "profile store unavailable" in others[0], others
    assert "database is locked" in others[0]


# -- an outage that outlasts several replay attempts ------------------------------------------


async def test_an_outage_over_several_replay_attempts_keeps_the_newest_value(
    installed_sqlite_store: SQLiteMemoryStore, tmp_path: Path
) -> None:
    """Each failed replay attempt rewrites the file it stopped in (what is left of it). The
    files are replayed oldest first; a rewrite must not make a file of older records look
    newer than one written after it, or the older value is written last and wins."""
    outage = FakeStoreOutage(installed_sqlite_store, failing=frozenset({"upsert_memory"}))
    spool = MemorySpool(
        tmp_path / "spool-several",
        manager=MemoryManager(outage, max_utterances=None),  # type: ignore[arg-type]
        outage=OutageLog(),
    )
    identity = "several@example.com"
    user = livekit_identity_to_uuid(identity)

    def said(colour: str) -> Any:
        return new_record(identity, user, "PREFERENCE", "favorite_color", colour)

    await spool.append(said("teal"), replay=False)
    assert await spool.replay() == 0  # the store is down: teal kept (in a claimed file)
    await asyncio.sleep(0.02)
    await spool.append(said("amber"), replay=False)  # said later, in a new file
    await asyncio.sleep(0.02)
    assert await spool.replay() == 0  # down again: stops in teal's file, rewrites it
    await asyncio.sleep(0.02)
    outage.down = False
    assert await spool.replay() == 2
    assert await installed_sqlite_store.get_memory(user, "PREFERENCE", "favorite_color") == "amber"


def test_reads_that_work_do_not_end_an_outage_of_writes(caplog: pytest.LogCaptureFixture) -> None:
    """Recall reads can succeed while every write fails (the SQLite case above): each turn's
    successful recall must not count as a recovery, or the outage is logged once a turn."""
    outage = OutageLog()  # a worker's memory has one
    caplog.set_level(logging.DEBUG, logger=HEALTH_LOGGER)
    locked = StorageUnavailableError("database is locked")
    for _ in range(3):  # three turns: a write fails, the next recall works
        outage.failed("storing a captured memory", locked)
        outage.succeeded(reading=True)
    assert len(errors_from(caplog, HEALTH_LOGGER)) == 1
    assert not [r for r in caplog.records if "reachable again" in r.message]
    outage.succeeded()  # a write went through: that is the recovery
    assert [r for r in caplog.records if "reachable again after 3" in r.message]
    # an outage that only reads saw ends with a read that works
    outage.failed("recall", locked, reading=True)
    outage.succeeded(reading=True)
    assert len(errors_from(caplog, HEALTH_LOGGER)) == 2
    assert not outage.is_down


# -- a store that starts locked recovers -----------------------------------------------------


async def test_sqlite_store_first_used_while_locked_works_once_the_lock_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's first use of a new database file happens while another process holds the
    write lock (two workers starting at once, an operator's sqlite3 shell): those calls fail,
    and the store must create its tables on a later call instead of never."""
    monkeypatch.setattr(sqlite_store_module, "BUSY_TIMEOUT_MS", SHORT_BUSY_TIMEOUT_MS)
    path = tmp_path / "new.sqlite3"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")  # a new, empty database in WAL mode
    setup.close()
    user = livekit_identity_to_uuid("early@example.com")
    store = SQLiteMemoryStore(path)
    try:
        with sqlite_write_lock(path) as lock:
            await lock.atake()
            for _ in range(6):  # more calls than the store has threads
                with pytest.raises(StorageUnavailableError, match="database is locked"):
                    await store.upsert_memory(user, "FACT", "job", "nurse")
            await lock.arelease()
        await store.upsert_memory(user, "FACT", "job", "nurse")
        assert await store.get_memory(user, "FACT", "job") == "nurse"
        await asyncio.gather(*(store.get_profile(user) for _ in range(16)))  # every thread
    finally:
        await store.aclose()


# -- a connection reset that times out is no failure ------------------------------------------


@pytest.mark.postgres
async def test_postgres_query_that_succeeded_is_not_reported_failed_when_the_reset_is_slow(
    make_postgres_store: Callable[..., PostgresMemoryStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under load (the soak) handing a connection back can take longer than its grace time;
    the connection is then dropped. That must not turn the query, which had succeeded, into
    a "store unavailable" error (asyncpg has already closed the connection itself)."""
    monkeypatch.setattr(
        postgres_store_module, "CLEANUP_GRACE_SECONDS", 1e-6
    )  # every reset too slow
    store = make_postgres_store()
    user = livekit_identity_to_uuid("reset@example.com")
    for n in range(5):
        await store.upsert_memory(user, "FACT", "job", f"nurse {n}")
        assert await store.get_memory(user, "FACT", "job") == f"nurse {n}"


# -- the worker process is killed with writes pending ----------------------------------------

# A worker on the package alone: its memory built from the settings its environment gives,
# an agent with caller memory (`MemoryAgent`), each caller attached in a task of its own.
WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from livekit.agents import AgentSession
    import caller_memory.stores.sqlite
    from caller_memory import CallerMemory, MemoryAgent
    from caller_memory.testing import FakeScriptedLLM, start_caller

    caller_memory.stores.sqlite.BUSY_TIMEOUT_MS = int(sys.argv[2])
    said = json.loads(sys.argv[1])

    def assistant():
        return MemoryAgent(instructions="You are a friendly companion.")

    async def caller(memory, identity, texts):
        session = AgentSession(
            llm=FakeScriptedLLM(), vad=None, turn_handling={"turn_detection": "manual"}
        )
        call = await start_caller(memory, session, identity, assistant)
        for text in texts:
            await session.run(user_input=text)
        assert await call.writer.flush(30)
        return call.writer.stored_count, call.writer.spooled_count

    async def main():
        memory = CallerMemory.from_settings()
        counts = await asyncio.gather(*(caller(memory, i, t) for i, t in said.items()))
        print("STORED", sum(s for s, _ in counts), "SPOOLED", sum(p for _, p in counts),
              flush=True)
        await asyncio.sleep(3600)  # a live worker with calls; it will be killed

    asyncio.run(main())
    """
)


async def test_worker_killed_with_writes_pending_next_start_replays_them(
    installed_sqlite_store: SQLiteMemoryStore, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    path = installed_sqlite_store.path
    await installed_sqlite_store.get_profile(str(uuid.uuid4()))  # the file and its tables exist
    said = {
        "killed-alice@example.com": ["My name is Marisol", "I collect old maps of Porto"],
        "killed-bob@example.com": ["My favourite colour is orange", "I love sailing at dawn"],
    }
    with sqlite_write_lock(path) as lock:
        await lock.atake()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            json.dumps(said),
            str(SHORT_BUSY_TIMEOUT_MS),
            cwd=tmp_path,  # outside the checkout: the package alone
            env=subprocess_env(MEMORY_SQLITE_PATH=str(path)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().split()
            assert line[:1] == ["STORED"], line
            stored, spooled = int(line[1]), int(line[3])
            assert (stored, spooled) == (0, captures([t for ts in said.values() for t in ts]))
            assert len(spooled_records()) == spooled  # on disk before it said so
        finally:
            proc.send_signal(signal.SIGKILL)  # no shutdown callback, no flush
            await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        await lock.arelease()
    assert sqlite_memory_rows(path) == []

    # the next worker start: a caller's session start schedules the replay
    with caplog.at_level(logging.INFO):
        next_call = await start_call("next-caller@example.com")
        try:
            await eventually(
                lambda: len(sqlite_memory_rows(path)) == spooled,
                "the killed worker's memories to be replayed",
                RECOVERY_TIMEOUT_S,
            )
            assert_exactly(sqlite_memory_rows(path), said)
            await eventually(lambda: spooled_records() == [], "the spool to be empty", 10)
        finally:
            assert await next_call.close()
    assert [r for r in caplog.records if f"replayed {spooled} spooled memories" in r.message]


# -- start-up with an unreachable store or without the tables ---------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def store_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> AsyncIterator[MemoryStore]:
    """The store the worker would open from this environment: that of the process-wide
    default memory, built from the environment afresh."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_TIMEOUT_SECONDS", "1")
    set_default_memory(None)
    memory = default_memory()
    try:
        yield memory.store
    finally:
        set_default_memory(None)
        await memory.aclose()


async def a_call_still_happens(caplog: pytest.LogCaptureFixture) -> str:
    """Start a session as the worker does; the caller gets a conversation; the ERROR logged
    at session start is returned."""
    with caplog.at_level(logging.INFO):
        call = await start_call("startup@example.com")
        try:
            assert await call.turn("I collect vintage radios") == "reply: I collect vintage radios"
        finally:
            await call.close()
    [error] = errors_from(caplog, "caller_memory")  # what `attach` logged
    assert "Traceback" not in caplog.text
    return error


async def test_unreachable_postgres_at_start_says_check_database_url(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://memory:secret@127.0.0.1:{closed_port()}/memories"
    async with store_from_env(monkeypatch, DATABASE_URL=url) as store:
        error = await a_call_still_happens(caplog)
        assert "check DATABASE_URL" in error and "secret" not in error
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match="check DATABASE_URL") as info:
            await store_check.check_store(store)
        assert time.monotonic() - started < 5
        assert "secret" not in str(info.value)


@pytest.mark.postgres
async def test_postgres_without_the_migrations_at_start_says_apply_the_migrations(
    pg_cluster: PostgresCluster,
    fresh_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with store_from_env(monkeypatch, DATABASE_URL=pg_cluster.dsn(fresh_database)) as store:
        error = await a_call_still_happens(caplog)
        assert "apply the migrations" in error
        with pytest.raises(StorageSchemaError, match="apply the migrations"):
            await store_check.check_store(store)


async def test_unusable_sqlite_path_at_start_says_set_memory_sqlite_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    bad = str(not_a_dir / "memories.sqlite3")  # its "directory" is a file: unusable, even as root
    async with store_from_env(monkeypatch, MEMORY_SQLITE_PATH=bad) as store:
        error = await a_call_still_happens(caplog)
        assert "MEMORY_SQLITE_PATH" in error
        with pytest.raises(StorageUnavailableError, match="MEMORY_SQLITE_PATH"):
            await store_check.check_store(store)


async def test_a_healthy_store_passes_the_check_and_gets_no_rows(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await store_check.check_store(installed_sqlite_store)
    assert sqlite_rows(installed_sqlite_store.path) == ([], [])


class FakeSlowSearchStore:
    """A fake: the real store, except that searches take `delay` seconds (an overloaded
    store); everything else goes straight through."""

    def __init__(self, inner: SQLiteMemoryStore, delay: float) -> None:
        self.inner, self.delay, self.name = inner, delay, "slow-search"

    async def search_memories(self, user_id: str, query: str, limit: int) -> Any:
        await asyncio.sleep(self.delay)
        return await self.inner.search_memories(user_id, query, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_start_that_times_out_says_so_in_words(
    installed_sqlite_store: SQLiteMemoryStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A timeout's own message is empty; the log line must still say what happened."""
    monkeypatch.setattr(memory_module, "KNOWN_MEMORIES_TIMEOUT_S", 0.05)
    slow = FakeSlowSearchStore(installed_sqlite_store, delay=1.0)
    set_default_memory(CallerMemory(store=slow, settings=MemorySettings.load()))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO):
        call = await start_call("slow-start@example.com")
        try:
            assert await call.turn("I collect vintage radios") == "reply: I collect vintage radios"
        finally:
            await call.close()
    [warning] = [r.getMessage() for r in caplog.records if "could not load" in r.getMessage()]
    assert warning.endswith("did not answer in time (it is overloaded or unreachable)")


def run_store_check(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`caller-memory check` run from `cwd` (never the project: a developer's .env must not
    count), on the installed package alone."""
    clean = {k: v for k, v in subprocess_env().items() if k not in {"DATABASE_URL", "SUPABASE_URL"}}
    return subprocess.run(
        [sys.executable, "-m", "caller_memory.cli", "check"],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.postgres
def test_store_check_command_says_what_is_wrong_without_a_stack_trace(
    pg_cluster: PostgresCluster, fresh_database: str, tmp_path: Path
) -> None:
    missing = run_store_check({"DATABASE_URL": pg_cluster.dsn(fresh_database)}, tmp_path)
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    assert "apply the migrations" in missing.stderr

    down = run_store_check(
        {
            "DATABASE_URL": f"postgresql://u:pw@127.0.0.1:{closed_port()}/db",
            "DATABASE_TIMEOUT_SECONDS": "1",
        },
        tmp_path,
    )
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert "check DATABASE_URL" in down.stderr and ":pw@" not in down.stderr

    ok = run_store_check({"MEMORY_SQLITE_PATH": str(tmp_path / "ok.sqlite3")}, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "memory store OK" in ok.stdout
