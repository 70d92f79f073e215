"""Soak: hundreds of callers at once in one worker process, and nobody sees anybody else.

One process carries ~300 simulated callers at the same time, as a worker does:

- most are *memory-level* sessions: a task of their own (as each job entrypoint is) sets the
  session user, then stores, reads back, searches and captures (write-behind through the
  `CaptureWriter` a session's memory uses), with random delays between operations, so the
  loop switches between callers in the middle of every operation;
- the rest are full livekit `AgentSession`s started as the reference worker starts them
  (`memory.attach`, then `session.start` with its `Companion` agent: identity -> uuid ->
  profile -> known memories -> session), whose LLM is `FakeScriptedLLM`; most take typed
  turns (`session.run`), some spoken turns (fake microphone -> `FakeSTT` ->
  `on_user_turn_completed` with recall -> reply).

The callers are spread over the main event loop *and* several OS threads with an event loop
each, which is what livekit's `JobExecutorType.THREAD` does (every job in its own thread and
loop, one process, one store); the main loop alone is the default executor's picture of one
job process carrying many sessions. Every caller has its own token in everything it says and
stores, the same keys as everybody else, and the same search word as everybody else, so a
cross-user read returns a foreign token and a cross-user write leaves a row under the wrong
user. At the end the store is read row by row, around the worker.

The callers keep going, with random pauses, for a bounded time (15 s on SQLite, 10 s on
Postgres), then hang up; their pending memories are flushed and the spool drained.

Each loop runs a lag meter (a task sleeping 5 ms again and again, recording how late it
wakes), and the garbage collector's pauses are recorded (one stalls every loop of the process
at once); the numbers are printed. As livekit does in its job processes, the heap that exists
before the calls is frozen out of the collector first (`gc.freeze()`). Only a generous bound
is asserted -- no stall of a second -- because speed is what
`bench/session_throughput_benchmark.py` measures.

The same soak, smaller, runs against the suite's real PostgreSQL (`postgres_store`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from livekit.agents import AgentSession
from livekit.agents.voice.run_result import ChatMessageEvent, RunResult

from agent import Companion
from bench.session_throughput_benchmark import GcPauses, LagStats, LoopLagMeter
from caller_memory import (
    CallerMemory,
    MemorySettings,
    MemoryStore,
    default_memory,
    get_session_user_uuid,
    livekit_identity_to_uuid,
    memory_manager,
    session_user,
    set_default_memory,
    set_session_user,
)
from caller_memory.capture.rule_based import extract_memories
from caller_memory.stores.postgres import PostgresMemoryStore
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeAudioInput,
    FakeScriptedLLM,
    FakeSTT,
    chat_texts,
    reply_arrived,
)
from tests.support import capture_writer, sqlite_rows

SEARCH_WORD = "hiking"
TOKEN_RE = re.compile(r"tok\d{5}z")
# The same (category, key) for every memory-level caller.
SLOTS = [
    ("GOAL", "next_trip"),
    ("FACT", "home_town"),
    ("RELATIONSHIP", "pet_name"),
    ("PREFERENCE", "favorite_food"),
]
EARLIER_KEY = ("FACT", "lucky_word")  # what an agent caller said in an earlier call
START_SPREAD_S = 1.0  # callers arrive over this long
MIN_TURNS = 3  # every agent caller takes at least this many turns, then goes on until the end
OP_PAUSE_S = (0.0, 0.05)  # random pause between a memory-level caller's operations
TURN_PAUSE_S = (0.05, 0.5)  # random pause between an agent caller's turns
REPLY_TIMEOUT_S = 20.0  # a deadline (no hang), not a speed assertion
FLUSH_TIMEOUT_S = 20.0
MAX_STALL_S = 1.0  # the loop never stalls this long
SQLITE_SOAK_S = 15.0  # how long the callers keep going (then they hang up and flush)
POSTGRES_SOAK_S = 10.0

HEALTH_LOGGER = "caller_memory.stores.health"


# -- one caller ------------------------------------------------------------------------------


@dataclass
class Caller:
    """One simulated caller: who it is, what it did (recorded as it goes), what it saw."""

    index: int
    kind: str  # "memory" | "text" | "voice"
    ops: list[tuple[Any, ...]] = field(default_factory=list)  # memory-level ops, as done
    texts: list[str] = field(default_factory=list)  # captured / said, in order
    values_read: int = 0  # memory-level reads that returned something
    read_tokens: set[str] = field(default_factory=set)  # tokens in everything read
    saw_earlier: bool = False  # an agent caller's LLM was shown its earlier memory
    replies: list[str] = field(default_factory=list)
    written: int = 0
    flushed: bool = False
    done: bool = False

    @property
    def identity(self) -> str:
        return f"soak-caller-{self.index:05d}@example.com"

    @property
    def token(self) -> str:
        return f"tok{self.index:05d}z"

    @property
    def user_uuid(self) -> str:
        return livekit_identity_to_uuid(self.identity)

    @property
    def earlier(self) -> dict[tuple[str, str], str]:
        if self.kind == "memory":
            return {}
        return {EARLIER_KEY: f"{SEARCH_WORD} lucky word {self.token}"}

    def expected_facts(self) -> dict[tuple[str, str], str]:
        facts = dict(self.earlier)
        for op in self.ops:
            if op[0] == "store":
                facts[op[1]] = op[2]
        for text in self.texts:
            for m in extract_memories(text):
                if not m.key.startswith("utterance_"):
                    facts[(m.category.value, m.key)] = m.value
        return facts

    def expected_utterances(self) -> Counter[str]:
        return Counter(
            m.value
            for text in self.texts
            for m in extract_memories(text)
            if m.key.startswith("utterance_")
        )

    def expected_captures(self) -> int:
        return sum(len(extract_memories(text)) for text in self.texts)

    # what the caller does next (random, but reproducible per caller)

    def memory_round(self, rng: random.Random, round_no: int) -> list[tuple[Any, ...]]:
        """One round of a memory-level caller: two stores of shared keys, two captured
        messages, two reads back and a search, in random order."""
        tok = self.token
        ops: list[tuple[Any, ...]] = [
            ("store", slot, f"{SEARCH_WORD} {slot[1]} r{round_no} of {tok}")
            for slot in rng.sample(SLOTS, 2)
        ]
        ops.append(("capture", f"I collect old {SEARCH_WORD} maps, label {tok} round {round_no}"))
        ops.append(("capture", f"My favourite colour is {tok}c{round_no}"))
        ops += [("retrieve", rng.choice(SLOTS)) for _ in range(2)]
        ops.append(("search",))
        rng.shuffle(ops)
        return ops

    def turn_text(self, turn: int) -> str:
        tok = self.token
        return [
            f"My favourite colour is {tok}c{turn}",
            f"I collect old {SEARCH_WORD} maps, label {tok} turn {turn}",
            f"I love {SEARCH_WORD} with {tok} at dawn number {turn}",
        ][turn % 3]


def plan_callers(first_index: int, memory: int, text: int, voice: int) -> list[Caller]:
    kinds = ["memory"] * memory + ["text"] * text + ["voice"] * voice
    return [Caller(index=first_index + n, kind=kind) for n, kind in enumerate(kinds)]


def tokens_in(values: list[str]) -> set[str]:
    return {t for v in values for t in TOKEN_RE.findall(v)}


def assistant_replies(result: RunResult[Any]) -> list[str]:
    return [
        event.item.text_content or ""
        for event in result.events
        if isinstance(event, ChatMessageEvent) and event.item.role == "assistant"
    ]


async def run_memory_caller(caller: Caller, deadline: float) -> None:
    rng = random.Random(caller.index * 7919)
    await asyncio.sleep(rng.uniform(0, START_SPREAD_S))
    user = set_session_user(caller.identity)
    memory = capture_writer(default_memory(), caller.identity)
    round_no = 0
    while round_no == 0 or time.monotonic() < deadline:
        for op in caller.memory_round(rng, round_no):
            if op[0] == "store":
                await memory_manager.astore(op[1][0], op[1][1], op[2])
            elif op[0] == "capture":
                memory.capture(op[1])
                caller.texts.append(op[1])
            elif op[0] == "retrieve":
                value = await memory_manager.aretrieve(*op[1])
                if value is not None:
                    caller.values_read += 1
                    caller.read_tokens |= tokens_in([value])
            else:
                found = await memory_manager.asearch(f"{SEARCH_WORD} maps", limit=20)
                caller.values_read += len(found)
                caller.read_tokens |= tokens_in([m.value for m in found])
            caller.ops.append(op)
            assert get_session_user_uuid() == user
            await asyncio.sleep(rng.uniform(*OP_PAUSE_S))
        round_no += 1
    caller.flushed = await memory.aclose(FLUSH_TIMEOUT_S)
    caller.written = memory.stored_count + memory.spooled_count
    caller.done = True


async def run_agent_caller(caller: Caller, deadline: float) -> None:
    rng = random.Random(caller.index * 7919)
    await asyncio.sleep(rng.uniform(0, START_SPREAD_S))
    with session_user(caller.identity):  # what this caller told the companion last time
        for (category, key), value in caller.earlier.items():
            await memory_manager.astore(category, key, value)
    fake_llm = FakeScriptedLLM()
    fake_stt: FakeSTT | None = None
    if caller.kind == "voice":
        fake_stt = FakeSTT()
        session: AgentSession[Any] = AgentSession(
            llm=fake_llm,
            stt=fake_stt,
            vad=None,
            turn_handling={
                "turn_detection": "stt",
                "endpointing": {"min_delay": 0.0, "max_delay": 1.0},
            },
            session_close_transcript_timeout=0.1,
        )
        session.input.audio = FakeAudioInput(frame_ms=20)
    else:
        session = AgentSession(llm=fake_llm, vad=None, turn_handling={"turn_detection": "manual"})
    # as the worker's entrypoint does, in this caller's own task
    call = await default_memory().attach(session, identity=caller.identity)
    await session.start(agent=Companion(), **call.start_options)
    try:
        turn = 0
        while turn < MIN_TURNS or time.monotonic() < deadline:
            text = caller.turn_text(turn)
            await asyncio.sleep(rng.uniform(*TURN_PAUSE_S))
            caller.texts.append(text)
            if fake_stt is not None:
                replied = reply_arrived(session, f"reply: {text}")
                fake_stt.say(text)
                await asyncio.wait_for(replied, REPLY_TIMEOUT_S)
                caller.replies.append(f"reply: {text}")
            else:
                result: RunResult[Any] = await asyncio.wait_for(
                    session.run(user_input=text), REPLY_TIMEOUT_S
                )
                caller.replies.extend(assistant_replies(result))
            assert get_session_user_uuid() == call.user_uuid
            turn += 1
            take_requests(fake_llm, caller)
    finally:
        if isinstance(session.input.audio, FakeAudioInput):
            session.input.audio.close()
        caller.flushed = await call.aclose(FLUSH_TIMEOUT_S)
        await session.aclose()
    caller.written = call.writer.stored_count + call.writer.spooled_count
    take_requests(fake_llm, caller)
    caller.done = True


def take_requests(fake_llm: FakeScriptedLLM, caller: Caller) -> None:
    """Keep what this caller's LLM was shown (its own words, its known memories, recall) as
    the tokens in it, and drop the requests: the fake keeps a copy of the whole chat context
    per request, which over a long soak is quadratic garbage for the collector."""
    texts = [t for request in fake_llm.requests for t in chat_texts(request)]
    fake_llm.requests.clear()
    caller.read_tokens |= tokens_in(texts)
    if not caller.saw_earlier:
        caller.saw_earlier = any(v in t for t in texts for v in caller.earlier.values())


# -- one loop's share, the thread executor ---------------------------------------------------


@dataclass
class LoopReport:
    name: str
    callers: int
    lag: LagStats
    failures: list[BaseException]


async def run_share(
    name: str,
    callers: list[Caller],
    deadline: float,
    before_loop_ends: Callable[[], Awaitable[None]] | None = None,
) -> LoopReport:
    """Run `callers` at once on the running loop, each in a task of its own (as each job
    entrypoint is), with a lag meter on the loop."""
    meter = LoopLagMeter()
    meter.start()
    runners = {"memory": run_memory_caller, "text": run_agent_caller, "voice": run_agent_caller}
    tasks = [
        asyncio.create_task(runners[c.kind](c, deadline), name=f"caller-{c.index}") for c in callers
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    lag = await meter.stop()
    if before_loop_ends is not None:
        await before_loop_ends()
    failures = [r for r in results if isinstance(r, BaseException)]
    return LoopReport(name, len(callers), lag, failures)


class JobThread(threading.Thread):
    """A share of the callers on an event loop of its own, in a thread of its own: what
    livekit's `JobExecutorType.THREAD` does with each job (`ipc/job_thread_executor.py`)."""

    def __init__(
        self,
        name: str,
        callers: list[Caller],
        deadline: float,
        before_loop_ends: Callable[[], Awaitable[None]] | None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.callers = callers
        self.deadline = deadline
        self.before_loop_ends = before_loop_ends
        self.report: LoopReport | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = asyncio.run(
                run_share(self.name, self.callers, self.deadline, self.before_loop_ends)
            )
        except BaseException as exc:
            self.error = exc


async def quiesce_loop(store: MemoryStore) -> None:
    """What a job's loop does before it ends: stop the spool replayer it started (the
    worker's memory and its spool stay; another loop replays what is left), close its store
    pool."""
    spool = default_memory().spool
    task = spool._replayers.get(asyncio.get_running_loop())
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if isinstance(store, PostgresMemoryStore):
        await store.close_loop_pool()


async def soak(
    store: MemoryStore,
    *,
    seconds: float,
    main_share: tuple[int, int, int],
    threads: int,
    thread_share: tuple[int, int, int],
) -> tuple[list[Caller], list[LoopReport], float, GcPauses]:
    """Run the callers on the main loop and on `threads` job threads at once."""
    callers = plan_callers(0, *main_share)
    shares: list[list[Caller]] = []
    for _ in range(threads):
        shares.append(plan_callers(len(callers), *thread_share))
        callers += shares[-1]

    # What livekit does in its job processes (ipc/_preload_freeze.py): objects that exist
    # before the calls (imports; here also pytest and earlier tests) are frozen out of the
    # cyclic GC, so a full collection scans what the calls created, not the whole heap.
    gc.collect()
    gc.freeze()
    try:
        with GcPauses() as gc_pauses:
            outcome = await _soak(store, callers, shares, seconds, main_share)
    finally:
        gc.unfreeze()
    return (*outcome, gc_pauses)


async def _soak(
    store: MemoryStore,
    callers: list[Caller],
    shares: list[list[Caller]],
    seconds: float,
    main_share: tuple[int, int, int],
) -> tuple[list[Caller], list[LoopReport], float]:
    async def before_thread_loop_ends() -> None:
        await quiesce_loop(store)

    started = time.monotonic()
    deadline = started + seconds
    job_threads = [
        JobThread(f"job_thread_runner-{n}", share, deadline, before_thread_loop_ends)
        for n, share in enumerate(shares)
    ]
    for thread in job_threads:
        thread.start()
    main_callers = callers[: sum(main_share)]
    reports = [await run_share("main loop", main_callers, deadline)]
    for thread in job_threads:
        await asyncio.to_thread(thread.join, 120)
        assert not thread.is_alive(), f"{thread.name} did not finish"
        if thread.error is not None:
            raise thread.error
        assert thread.report is not None
        reports.append(thread.report)
    elapsed = time.monotonic() - started
    for report in reports:
        if report.failures:
            raise report.failures[0]
    await spool_drained()
    return callers, reports, elapsed


async def spool_drained(timeout: float = 30.0) -> None:
    """Wait until the worker's spool has nothing left (writes diverted to it while a replay
    pass held it are written by the replayer)."""
    spool = default_memory().spool
    deadline = time.monotonic() + timeout
    while spool.has_pending or list(spool.directory.glob("*.jsonl")):
        if time.monotonic() > deadline:
            pytest.fail("the spool was not drained")
        spool.schedule_replay(first_delay=0.01)
        await asyncio.sleep(0.05)


# -- checking the store, row by row ----------------------------------------------------------


def check_store(
    callers: list[Caller], profiles: list[str], memories: list[tuple[str, str, str, str]]
) -> None:
    """Every caller has exactly its own memories, each exactly once; nobody else has rows."""
    by_user = {c.user_uuid: c for c in callers}
    assert len(by_user) == len(callers)
    assert sorted(profiles) == sorted(by_user)  # one profile per caller, nobody else
    assert {m[0] for m in memories} == set(by_user)
    duplicates = [k for k, n in Counter((m[0], m[1], m[2]) for m in memories).items() if n > 1]
    assert duplicates == []
    rows_of: dict[str, list[tuple[str, str, str, str]]] = {u: [] for u in by_user}
    for row in memories:
        rows_of[row[0]].append(row)
    for user, caller in by_user.items():
        rows = rows_of[user]
        # no cross-user write: every value this caller's rows hold is this caller's
        assert tokens_in([r[3] for r in rows]) == {caller.token}, caller.identity
        utterances = Counter(r[3] for r in rows if r[2].startswith("utterance_"))
        assert utterances == caller.expected_utterances(), caller.identity  # each exactly once
        facts = {(r[1], r[2]): r[3] for r in rows if not r[2].startswith("utterance_")}
        assert facts == caller.expected_facts(), caller.identity


def check_callers(callers: list[Caller]) -> str:
    for caller in callers:
        assert caller.done, caller.identity
        assert caller.flushed, caller.identity
        assert caller.written == caller.expected_captures(), caller.identity
        # no cross-user read: whatever this caller read carries only its own token
        assert caller.read_tokens <= {caller.token}, caller.identity
        if caller.kind != "memory":
            assert caller.replies == [f"reply: {t}" for t in caller.texts], caller.identity
    # The reads did happen and found the callers' own memories: agent sessions' LLMs were
    # shown the memory from their earlier call (known memories have a 0.5 s budget at session
    # start and under soak load many miss it, which is allowed: the call goes on without),
    # and memory-level callers read values back.
    agents = [c for c in callers if c.kind != "memory"]
    knew = [c for c in agents if c.saw_earlier]
    assert knew
    memory_callers = [c for c in callers if c.kind == "memory"]
    assert len([c for c in memory_callers if c.values_read]) >= len(memory_callers) // 2
    return f"{len(knew)} of {len(agents)} agent sessions started with their earlier memory"


def lag_report(
    title: str,
    reports: list[LoopReport],
    elapsed: float,
    callers: list[Caller],
    gc_pauses: GcPauses,
) -> str:
    ops = sum(len(c.ops) for c in callers)
    turns = sum(len(c.replies) for c in callers)
    captured = sum(c.written for c in callers)
    lines = [
        f"{title}: {len(callers)} callers at once for {elapsed:.1f} s: {ops} memory-level "
        f"operations, {turns} agent turns, {captured} memories captured; "
        "event-loop lag (5 ms ticker):"
    ]
    for report in reports:
        lines.append(f"  {report.name:<22} {report.callers:>4} callers  {report.lag.describe()}")
    lines.append(f"  garbage collector: {gc_pauses.describe()} (a GC pause stalls every loop)")
    return "\n".join(lines)


def check_lag(reports: list[LoopReport]) -> None:
    for report in reports:
        assert report.lag.samples > 0, report.name
        assert report.lag.max < MAX_STALL_S, f"{report.name} stalled: {report.lag.describe()}"


def health_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == HEALTH_LOGGER and r.levelno >= logging.ERROR]


# -- the soaks -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_soak_300_callers_on_sqlite_main_loop_and_job_threads(
    sqlite_store: SQLiteMemoryStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Recall in spoken turns has 50 ms in production; under a soak on a 2-core machine it
    # would mostly run out, and this test is about who sees what, not how fast.
    monkeypatch.setenv("MEMORY_RECALL_BUDGET_MS", "1000")
    worker = CallerMemory(store=sqlite_store, settings=MemorySettings.load())
    assert worker.settings.recall_budget_s == 1.0
    set_default_memory(worker)  # the worker's memory, one for the process and every thread
    caplog.set_level(logging.WARNING)
    # main loop: 150 memory-level, 24 typed, 6 spoken; 4 job threads: 25 + 4 + 1 each
    callers, reports, elapsed, gc_pauses = await soak(
        sqlite_store,
        seconds=SQLITE_SOAK_S,
        main_share=(150, 24, 6),
        threads=4,
        thread_share=(25, 4, 1),
    )
    assert len(callers) == 300
    assert Counter(c.kind for c in callers) == {"memory": 250, "text": 40, "voice": 10}

    profiles, memories = sqlite_rows(sqlite_store.path)
    check_store(
        callers,
        [p["id"] for p in profiles],
        [(m["user_id"], m["category"], m["key"], m["value"]) for m in memories],
    )
    known = check_callers(callers)
    assert health_errors(caplog) == []  # no outage was seen
    with capsys.disabled():
        print("\n" + lag_report("SQLite soak", reports, elapsed, callers, gc_pauses))
        print(f"  {known}")
    check_lag(reports)


@pytest.mark.slow
@pytest.mark.postgres
async def test_soak_on_postgres_main_loop_and_job_threads(
    make_postgres_store: Callable[..., PostgresMemoryStore],
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MEMORY_RECALL_BUDGET_MS", "1000")
    caplog.set_level(logging.WARNING)
    store = make_postgres_store()  # production pool sizes (1-10 per loop)
    set_default_memory(CallerMemory(store=store, settings=MemorySettings.load()))
    # main loop: 60 memory-level, 8 typed, 2 spoken; 2 job threads: 20 + 4 + 1 each
    callers, reports, elapsed, gc_pauses = await soak(
        store,
        seconds=POSTGRES_SOAK_S,
        main_share=(60, 8, 2),
        threads=2,
        thread_share=(20, 4, 1),
    )
    assert len(callers) == 120

    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        profiles = [str(r["id"]) for r in await conn.fetch("SELECT id FROM public.profiles")]
        memories = [
            (str(r["user_id"]), r["category"], r["key"], r["value"])
            for r in await conn.fetch(
                "SELECT user_id, category, key, value FROM caller_memory.memories"
            )
        ]
    finally:
        await conn.close()
    check_store(callers, profiles, memories)
    known = check_callers(callers)
    assert health_errors(caplog) == []
    with capsys.disabled():
        print("\n" + lag_report("Postgres soak", reports, elapsed, callers, gc_pauses))
        print(f"  {known}")
    check_lag(reports)
