"""Session throughput: how many callers one worker process can start, and carry, at once.

Run from the repository root::

    .venv/bin/python -m bench.session_throughput_benchmark          # 1, 100, 500; both stores
    .venv/bin/python -m bench.session_throughput_benchmark --concurrency 1,100 --backends sqlite

At each concurrency level C, C callers arrive at once in one process, each in a task of its
own (as each job entrypoint is), and each goes through the worker's own path,
`CallerMemory.attach`: identity -> uuid -> session user -> profile (`ensure_profile`, a write
for a new caller) -> the caller's known memories (a search) -> `AgentSession.start` with a
`MemoryAgent` that greets first. The LLM is `FakeScriptedLLM` (no network), so
what is measured is the worker itself: livekit-agents' session machinery, our memory code
and the store; a real deployment adds the model providers' time, which costs the worker
little CPU. Then every session takes `--turns` typed turns back to back (`session.run`, each
message captured write-behind: one to three memory writes per turn), all sessions at once,
and hangs up (pending memories flushed, session closed).

Reported per backend and level:

- **sessions started/s**: C divided by the time from the first arrival to the last session
  ready; start latency p50/p95 per caller;
- **turns/s**: all turns divided by the time until the last one had its reply; per-turn
  latency p50/p95 (the worker's own time per turn, with C callers talking at once);
- **memories written**: captured memories written by the write-behind (or spooled), and how
  long the backlog took to drain after the last reply;
- **starts without the store**: session starts whose profile (3 s budget) or known memories
  (0.5 s budget) did not come back in time -- the call went on without them;
- **event-loop lag** p99/max: a task sleeping 5 ms again and again, and how late it woke.

Levels below `--min-sessions` callers are repeated (one after another) until that many calls
were made, so that C=1 is not a single sample. Stores use their production defaults (SQLite:
WAL, 4 threads; Postgres: pool of 1-10 connections, 2 s timeout, logged in like Supabase's
service role) on a fresh SQLite file and a fresh migrated database of a throwaway PostgreSQL
cluster (`bench/workload.py`; fsync off, unix socket). `--pg-dsn` uses an existing migrated
database instead. Every other setting is the default (the spool in a temp dir), whatever the
environment says. Search by meaning is on by default, as in the product (`--embeddings
local`): each level's `CallerMemory` gets its own `OnnxEmbedder`, loaded before the callers
arrive, running the real multilingual-e5-small from `--model-dir`, or else its test build
(same architecture and int8 quantisation as the production download), so every turn's recall
embeds its query and every captured memory is embedded write-behind; `--embeddings off`
searches by words only. Output: one Markdown table, the backends side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession

from bench.report import (
    BACKEND_LABELS,
    BACKENDS,
    POSTGRES,
    SQLITE,
    SQLITE_ENVIRONMENT,
    add_store_options,
    percentile,
    report_head,
    report_tail,
)
from bench.workload import (
    BenchAgent,
    ClusterUnavailableError,
    EmbeddingChoice,
    add_embedding_options,
    benchmark_embedder,
    benchmark_memory,
    embedding_choice,
    postgres_database,
    throwaway_postgres,
)
from caller_memory import CallerMemory, CallerSession, MemoryStore
from caller_memory.spool import MemorySpool
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeScriptedLLM, start_caller, text_session
from caller_memory.testing.postgres import PostgresCluster

DEFAULT_CONCURRENCY = (1, 100, 500)
DEFAULT_TURNS = 5
DEFAULT_MIN_SESSIONS = 50
TURN_TEXTS = (
    "My favourite colour is {tag}",
    "I collect old maps of the coast, the {tag} series",
    "I love sailing at dawn with my sister",
    "Tomorrow I will visit the lighthouse at {tag}",
    "My dog is called Biscuit and she is {tag} years old",
)
# Where `CallerMemory.attach` says that a start went on without the profile or the caller's
# known memories (their budget ran out, or the store failed).
SESSION_LOGGER = "caller_memory"


@dataclass(frozen=True, slots=True)
class LagStats:
    """How late a loop woke a task that asked to sleep a fixed interval, in seconds."""

    samples: int
    p50: float
    p99: float
    max: float

    def describe(self) -> str:
        return (
            f"p50 {self.p50 * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms, "
            f"max {self.max * 1000:.1f} ms over {self.samples} ticks"
        )


class LoopLagMeter:
    """Measures event-loop lag: a task sleeps `interval` again and again and records how much
    later than asked it woke up. Anything that blocks the loop (a synchronous database call, a
    long computation) shows up as a late wake-up of this ticker."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="loop-lag-meter")

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - asked - self.interval))

    async def stop(self) -> LagStats:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        return self.stats()

    def stats(self) -> LagStats:
        return LagStats(
            samples=len(self.lags),
            p50=percentile(self.lags, 50),
            p99=percentile(self.lags, 99),
            max=max(self.lags, default=0.0),
        )


class GcPauses:
    """Records how long each cyclic garbage collection took (it holds the GIL, so it stalls
    every event loop of the process at once); use as a context manager."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    @property
    def longest(self) -> float:
        return max((p for _, p in self.pauses), default=0.0)

    def describe(self) -> str:
        full = [p for g, p in self.pauses if g == 2]
        return (
            f"{len(self.pauses)} GC runs, longest {self.longest * 1000:.1f} ms "
            f"({len(full)} full, longest full {max(full, default=0.0) * 1000:.1f} ms)"
        )


# ------------------------------------------------------------------------------------------
# One level
# ------------------------------------------------------------------------------------------


class _Counter(logging.Handler):
    """Counts the session-start warnings and errors (a budget ran out, the store failed):
    those of `SESSION_LOGGER` itself, not of the loggers below it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == SESSION_LOGGER:
            self.records.append(record)


@dataclass
class LevelResult:
    backend: str
    concurrency: int
    sessions: int = 0
    start_wall: float = 0.0
    start_latencies: list[float] = field(default_factory=list)
    turns: int = 0
    turn_wall: float = 0.0
    turn_latencies: list[float] = field(default_factory=list)
    written: int = 0
    spooled: int = 0
    drain_wall: float = 0.0
    degraded_starts: int = 0
    lag: LagStats | None = None
    gc_longest: float = 0.0

    @property
    def sessions_per_s(self) -> float:
        return self.sessions / self.start_wall if self.start_wall else 0.0

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.turn_wall if self.turn_wall else 0.0


async def _start_one(
    memory: CallerMemory, identity: str
) -> tuple[AgentSession[Any], CallerSession, float]:
    started = time.perf_counter()
    session = text_session(FakeScriptedLLM())
    call = await start_caller(memory, session, identity, BenchAgent)
    return session, call, time.perf_counter() - started


async def _talk(session: AgentSession[Any], tag: str, turns: int, latencies: list[float]) -> None:
    for n in range(turns):
        text = TURN_TEXTS[n % len(TURN_TEXTS)].format(tag=f"{tag}x{n}")
        started = time.perf_counter()
        await session.run(user_input=text)
        latencies.append(time.perf_counter() - started)


async def run_round(memory: CallerMemory, result: LevelResult, round_no: int, turns: int) -> None:
    """C callers arrive at once, talk, hang up."""
    c = result.concurrency
    prefix = f"bench-{result.backend}-{c}-{round_no}"
    t0 = time.perf_counter()
    started = await asyncio.gather(
        *(asyncio.create_task(_start_one(memory, f"{prefix}-{i}@example.com")) for i in range(c))
    )
    result.start_wall += time.perf_counter() - t0
    result.sessions += c
    result.start_latencies += [latency for _, _, latency in started]

    t1 = time.perf_counter()
    await asyncio.gather(
        *(
            asyncio.create_task(_talk(session, f"{round_no}n{i}", turns, result.turn_latencies))
            for i, (session, _, _) in enumerate(started)
        )
    )
    t2 = time.perf_counter()
    result.turn_wall += t2 - t1
    result.turns += c * turns

    for _, call, _ in started:  # the write-behind backlog after the last reply
        await call.writer.flush(60)
    for session, call, _ in started:
        await call.aclose()
        await session.aclose()
        result.written += call.writer.stored_count
        result.spooled += call.writer.spooled_count
    await _spool_drained(memory.spool)  # what could not be written in time is stored now too
    result.drain_wall += time.perf_counter() - t2


async def _spool_drained(spool: MemorySpool, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while spool.has_pending or list(spool.directory.glob("*.jsonl")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the spool was not replayed within {timeout:g} s")
        spool.schedule_replay(first_delay=0.05)
        await asyncio.sleep(0.05)


async def run_level(
    memory: CallerMemory, backend: str, concurrency: int, turns: int, min_sessions: int
) -> LevelResult:
    result = LevelResult(backend, concurrency)
    counter = _Counter()
    session_logger = logging.getLogger(SESSION_LOGGER)
    session_logger.addHandler(counter)
    gc.collect()
    meter = LoopLagMeter()
    meter.start()
    try:
        with GcPauses() as pauses:
            for round_no in range(max(1, math.ceil(min_sessions / concurrency))):
                await run_round(memory, result, round_no, turns)
    finally:
        result.lag = await meter.stop()
        session_logger.removeHandler(counter)
    result.gc_longest = pauses.longest
    # one warning or error per start that went on without its profile or known memories
    result.degraded_starts = len(counter.records)
    return result


# ------------------------------------------------------------------------------------------
# Stores
# ------------------------------------------------------------------------------------------


async def _warm(store: MemoryStore) -> None:
    """What a running worker has: tables created, pool connections open."""
    probe = "00000000-0000-0000-0000-000000000000"
    await asyncio.gather(*(store.get_profile(probe) for _ in range(16)))


async def run_backend(
    backend: str, config: Config, workdir: Path, cluster: PostgresCluster | None
) -> list[LevelResult]:
    results: list[LevelResult] = []
    for concurrency in config.concurrency:
        async with _level_store(backend, config, workdir, cluster, concurrency) as store:
            embedder = benchmark_embedder(config.embeddings)
            memory = benchmark_memory(
                store, workdir / f"{backend}-{concurrency}", embedder=embedder
            )
            try:
                if embedder is not None:  # as a worker's prewarm does
                    await embedder.warm_up()
                await _warm(store)
                print(
                    f"{BACKEND_LABELS[backend]}: {concurrency} concurrent sessions ...",
                    file=sys.stderr,
                    flush=True,
                )
                results.append(
                    await run_level(memory, backend, concurrency, config.turns, config.min_sessions)
                )
                config.embedder_line = config.embeddings.describe(embedder)
            finally:
                if embedder is not None:  # the store is closed with its level
                    await embedder.aclose()
    return results


@asynccontextmanager
async def _level_store(
    backend: str,
    config: Config,
    workdir: Path,
    cluster: PostgresCluster | None,
    concurrency: int,
) -> AsyncIterator[MemoryStore]:
    """A fresh store for one level: a new SQLite file, or a new (or emptied) database."""
    async with AsyncExitStack() as stack:
        store: MemoryStore
        if backend == SQLITE:
            store = SQLiteMemoryStore(workdir / f"sessions-{concurrency}.sqlite3")
        else:
            database = await stack.enter_async_context(
                postgres_database(cluster, config.pg_dsn, f"bench_sessions_{concurrency}")
            )
            store = database.store()
        try:
            yield store
        finally:
            await store.aclose()


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}" if seconds >= 0.01 else f"{seconds * 1000:.1f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


MEASURES: tuple[tuple[str, Any], ...] = (
    ("sessions started/s", lambda r: _rate(r.sessions_per_s)),
    (
        "start latency p50 / p95 (ms)",
        lambda r: (
            f"{_ms(percentile(r.start_latencies, 50))} / {_ms(percentile(r.start_latencies, 95))}"
        ),
    ),
    ("turns/s", lambda r: _rate(r.turns_per_s)),
    (
        "turn latency p50 / p95 (ms)",
        lambda r: (
            f"{_ms(percentile(r.turn_latencies, 50))} / {_ms(percentile(r.turn_latencies, 95))}"
        ),
    ),
    (
        "memories captured (of them spooled, replayed later)",
        lambda r: f"{r.written + r.spooled:,} ({r.spooled:,})",
    ),
    ("all memories stored, after the last reply (s)", lambda r: f"{r.drain_wall / _rounds(r):.2f}"),
    ("starts without the store (budget ran out)", lambda r: f"{r.degraded_starts}/{r.sessions}"),
    (
        "event-loop lag p99 / max (ms)",
        lambda r: f"{_ms(r.lag.p99)} / {_ms(r.lag.max)}" if r.lag else "-",
    ),
    ("longest GC pause (ms)", lambda r: _ms(r.gc_longest)),
)


def _rounds(r: LevelResult) -> int:
    return max(1, r.sessions // r.concurrency)


def render(
    config: Config, results: dict[str, list[LevelResult]], wall: float, argv: Sequence[str]
) -> str:
    backends = [b for b in BACKENDS if b in results]
    lines = report_head(
        "Session throughput of one worker process", "bench.session_throughput_benchmark", argv
    )
    header = ["Concurrent sessions", "Measure", *(BACKEND_LABELS[b] for b in backends)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---:|---|" + "---:|" * len(backends))
    for index, concurrency in enumerate(config.concurrency):
        for label, cell in MEASURES:
            cells = [cell(results[b][index]) for b in backends]
            lines.append(f"| {concurrency} | {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Each session: `CallerMemory.attach` (new caller: profile created, known memories "
        f"searched), then {config.turns} typed turns back to back (`session.run`, scripted "
        f"LLM, write-behind capture), then hang-up. Levels with fewer than "
        f"{config.min_sessions} sessions are repeated until that many calls were made. "
        "Stored after the last reply: from a round's last reply until its last memory is in "
        "the store (write-behind queue, then the spool's replay of what had to be spooled), "
        "averaged over rounds."
    )
    lines.append("")
    environment = [config.embedder_line]
    if SQLITE in backends:
        environment.append(SQLITE_ENVIRONMENT + ", 4 threads")
    if POSTGRES in backends:
        environment.append("PostgreSQL (throwaway cluster, fsync off), pool 1-10, 2 s timeout")
    lines += report_tail(environment, wall)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


@dataclass
class Config:
    concurrency: list[int]
    backends: list[str]
    turns: int
    min_sessions: int
    pg_dsn: str | None
    embeddings: EmbeddingChoice
    embedder_line: str = ""  # the report's line on the embedder, once one ran


def parse_args(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_options(parser, concurrency=DEFAULT_CONCURRENCY, concurrent="sessions")
    add_embedding_options(parser)
    parser.add_argument("--turns", type=int, default=DEFAULT_TURNS, help="turns per session")
    parser.add_argument(
        "--min-sessions",
        type=int,
        default=DEFAULT_MIN_SESSIONS,
        help="repeat smaller levels until this many sessions were started (default 50)",
    )
    ns = parser.parse_args(argv)
    if ns.turns < 1 or ns.min_sessions < 1:
        parser.error("--turns and --min-sessions must be at least 1")
    return Config(
        ns.concurrency, ns.backends, ns.turns, ns.min_sessions, ns.pg_dsn, embedding_choice(ns)
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """Logs kept off the report (the session-start warnings are counted, not printed)."""
    memory_logger = logging.getLogger(SESSION_LOGGER)
    livekit_logger = logging.getLogger("livekit")
    saved = (memory_logger.propagate, memory_logger.level, livekit_logger.level)
    memory_logger.propagate = False
    memory_logger.setLevel(logging.WARNING)
    livekit_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        memory_logger.propagate, memory_logger.level, livekit_logger.level = saved


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config = parse_args(args)
    started = time.perf_counter()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sessions-")))
        stack.enter_context(_quiet())
        try:
            cluster = throwaway_postgres(stack, config.backends, config.pg_dsn)
        except ClusterUnavailableError as exc:
            print(f"cannot benchmark Postgres: {exc}", file=sys.stderr)
            return 2

        async def run_all() -> dict[str, list[LevelResult]]:
            return {
                backend: await run_backend(backend, config, workdir, cluster)
                for backend in config.backends
            }

        results = asyncio.run(run_all())
    print(render(config, results, time.perf_counter() - started, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
