"""Storage benchmark: store, retrieve and search latency and throughput, SQLite vs Postgres.

Run from the repository root::

    .venv/bin/python -m bench.storage_benchmark                      # sizes 1,000 and 100,000
    .venv/bin/python -m bench.storage_benchmark --sizes 1000 --ops 300 --backends sqlite

For every size and backend the benchmark builds a fresh store and fills it, in bulk, with one
measured caller holding `size` memories and `--other-users` other callers (default 20) holding
`size * --other-share` memories each (default 0.2, so the others hold 4x the measured caller's
rows: the caller is one among many, and every index holds other people's data). Each caller has
20 stable keys (`name`, `job`, `favorite_color`, ...) and otherwise utterances under
`utterance_<n>`: 6-18 words drawn from a 4,000-word vocabulary with a Zipf distribution
(`bench/workload.py`: common function words first, then everyday content words, then rarer
made-up words), so the commonest words are in nearly half of all memories and most words in
very few. The bulk fill bypasses the store (SQLite: `executemany` on the store's own
connection, then a WAL checkpoint; Postgres: `COPY` as the superuser, then `VACUUM ANALYZE` as
autovacuum would do on a live database, and a `CHECKPOINT`); everything measured goes through
the worker's real path: `MemoryManager(store)` under `session_user(identity)`, so validation,
context lookup and (for search) query normalisation are included (with no cap on a caller's
utterances, which would otherwise delete the measured caller's oldest rows):

- store (new key): `astore` of a new utterance, `utterance_<n>`;
- store (existing key): `astore` replacing an existing key's value;
- retrieve: `aretrieve` of an existing key (a stable key one time in five);
- search: `asearch(text, limit=5)` (the recall limit) of 2-5 content words drawn from the same
  Zipf distribution, in a spoken frame ("do you remember what I said about ...?").

Each operation runs `--ops` times (default 1,000) at each concurrency level of `--concurrency`
(default 1 and 16 tasks sharing the one store, as sessions in one worker process do), after a
short unmeasured warm-up, and stops early at `--max-cell-seconds`. The stores use their
production defaults: SQLite's 4 threads (WAL, synchronous=NORMAL), Postgres' pool of 1-10
connections with a 2 s timeout, logged in like Supabase's service role. The throwaway Postgres
cluster is the test suite's (`bench/workload.py`: PostgreSQL from the system, fsync off,
unix socket, one new migrated database per size), so no commit waits for the disk on either
backend (SQLite still syncs at its WAL checkpoints; Postgres never does). `--pg-dsn` points the
benchmark at an existing migrated database instead (its memories and profiles are truncated).

The output is Markdown: one table with both backends side by side (p50, p99, mean latency in
ms, throughput in ops/s) and SQLite/Postgres ratios, then the fill times and the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.report import (
    BACKEND_LABELS,
    DEFAULT_RECALL_BUDGET_MS,
    POSTGRES,
    SQLITE,
    SQLITE_ENVIRONMENT,
    add_store_options,
    add_workload_options,
    percentile,
    ratio,
    report_head,
    report_tail,
)
from bench.workload import (
    BASE_TIME,
    ClusterUnavailableError,
    Vocabulary,
    build_vocabulary,
    bulk_insert,
    postgres_connection,
    postgres_database,
    sqlite_timestamp,
    throwaway_postgres,
)
from caller_memory import (
    MemoryKind,
    MemoryManager,
    MemoryStore,
    StorageError,
    livekit_identity_to_uuid,
    session_user,
)
from caller_memory.recall.recall import RECALL_LIMIT
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing.postgres import PostgresCluster

STORE_NEW = "store_new"
STORE_EXISTING = "store_existing"
RETRIEVE = "retrieve"
SEARCH = "search"
OPERATIONS = (STORE_NEW, STORE_EXISTING, RETRIEVE, SEARCH)
OPERATION_LABELS = {
    STORE_NEW: "store (new key)",
    STORE_EXISTING: "store (existing key)",
    RETRIEVE: "retrieve",
    SEARCH: "search",
}

DEFAULT_SIZES = (1_000, 100_000)
DEFAULT_OPS = 1_000
DEFAULT_CONCURRENCY = (1, 16)
DEFAULT_OTHER_USERS = 20
DEFAULT_OTHER_SHARE = 0.2
DEFAULT_MAX_CELL_SECONDS = 30.0
DEFAULT_SEED = 2024
WARMUP_OPS = 32  # per operation, at the highest concurrency (fills the Postgres pool)
MEASURED_IDENTITY = "bench-caller-measured"

# ------------------------------------------------------------------------------------------
# Data (the words: bench/workload.py)
# ------------------------------------------------------------------------------------------

# Every caller's stable facts (the keys the capture rules write), the same for everyone; the
# rest of a caller's memories are utterances.
STABLE_FACTS: tuple[tuple[str, str, str], ...] = (
    ("PRESENTATION", "preferred_name", "Sam"),
    ("FACT", "name", "Samantha Reyes"),
    ("FACT", "job", "nurse at the children's hospital"),
    ("FACT", "employer", "St. Mary's"),
    ("FACT", "lives_in", "Lisbon"),
    ("FACT", "home_town", "Porto"),
    ("FACT", "age", "34"),
    ("FACT", "birthday", "March 3rd"),
    ("RELATIONSHIP", "wife_name", "Ana"),
    ("RELATIONSHIP", "dog_name", "Biscuit"),
    ("RELATIONSHIP", "mother_name", "Lucia"),
    ("PREFERENCE", "favorite_color", "green"),
    ("PREFERENCE", "favorite_food", "grilled sardines"),
    ("PREFERENCE", "favorite_music", "fado and old jazz records"),
    ("PREFERENCE", "coffee", "flat white, no sugar"),
    ("GOAL", "goal_marathon", "run the Lisbon marathon next year"),
    ("PLAN", "plan_trip", "visit Kyoto in the spring"),
    ("INTEREST", "hobby", "bouldering and film photography"),
    ("INTEREST", "reading", "Portuguese poetry"),
    ("OPINION", "opinion_city", "Lisbon is too hilly for cycling"),
)

# The categories the capture rules give utterances, roughly as often as they give them.
UTTERANCE_CATEGORIES = tuple(
    "EXPERIENCE OPINION FACT PLAN PREFERENCE INTEREST RELATIONSHIP GOAL".split()
)
UTTERANCE_CATEGORY_CUM = tuple(itertools.accumulate((40, 15, 15, 10, 8, 6, 4, 2)))

QUERY_TEMPLATES = (
    "do you remember what I said about {}?",
    "what did I tell you about {}",
    "{}",
    "I was thinking about {} again",
    "can you remind me of the {} thing",
)

# (user_id, category, key, value, updated_at, kind)
Row = tuple[str, str, str, str, datetime, MemoryKind]
FACT, UTTERANCE = MemoryKind.FACT, MemoryKind.UTTERANCE


class DataGenerator:
    """Deterministic memories and operation arguments for one benchmark size."""

    def __init__(self, vocabulary: Vocabulary, seed: int, size: int) -> None:
        self.vocab = vocabulary
        self.rng = random.Random(f"storage-benchmark:{seed}:{size}")

    def utterance(self) -> str:
        rng = self.rng
        words = rng.choices(
            self.vocab.words, cum_weights=self.vocab.cum_weights, k=rng.randint(6, 18)
        )
        text = " ".join(words)
        return text[0].upper() + text[1:] + rng.choice((".", ".", ".", "!", "?"))

    def category(self) -> str:
        return self.rng.choices(UTTERANCE_CATEGORIES, cum_weights=UTTERANCE_CATEGORY_CUM)[0]

    def query(self) -> str:
        rng = self.rng
        wanted = rng.randint(2, 5)
        words: list[str] = []
        while len(words) < wanted:
            word = self.vocab.content_word(rng)
            if word not in words:
                words.append(word)
        return rng.choice(QUERY_TEMPLATES).format(" ".join(words))

    def user_rows(self, user_id: str, count: int) -> list[Row]:
        """`count` memories: the stable facts, then utterances `utterance_0`, ... ."""
        rows: list[Row] = []
        for i, (category, key, value) in enumerate(STABLE_FACTS[: min(count, len(STABLE_FACTS))]):
            when = BASE_TIME - timedelta(days=400 - i)
            rows.append((user_id, category, key, value, when, FACT))
        n_utterances = count - len(rows)
        for n in range(n_utterances):
            when = BASE_TIME - timedelta(seconds=(n_utterances - n) * 60)
            rows.append(
                (user_id, self.category(), f"utterance_{n}", self.utterance(), when, UTTERANCE)
            )
        return rows


@dataclass
class Workload:
    """Everything one size needs: the rows to fill in, and each operation's arguments."""

    size: int
    measured_user: str
    rows: list[Row]
    user_ids: list[str]
    # operation -> one argument list per warm-up and per concurrency level: (category, key,
    # value, kind) to store, (category, key) to retrieve, (text,) to search
    warmup: dict[str, list[tuple[str, ...]]]
    cells: dict[tuple[str, int], list[tuple[str, ...]]]


def build_workload(
    vocabulary: Vocabulary,
    *,
    seed: int,
    size: int,
    other_users: int,
    other_share: float,
    ops: int,
    concurrency: Sequence[int],
) -> Workload:
    gen = DataGenerator(vocabulary, seed, size)
    measured = livekit_identity_to_uuid(MEASURED_IDENTITY)
    rows = gen.user_rows(measured, size)
    existing = [(cat, key) for _, cat, key, _, _, _ in rows]
    stable = existing[: len(STABLE_FACTS)]
    utterances = existing[len(STABLE_FACTS) :] or stable
    user_ids = [measured]
    per_other = max(round(size * other_share), 1) if other_users else 0
    for n in range(other_users):
        other = livekit_identity_to_uuid(f"bench-caller-{n:03d}")
        user_ids.append(other)
        rows.extend(gen.user_rows(other, per_other))

    next_key = itertools.count(size)

    def args(op: str) -> tuple[str, ...]:
        if op == STORE_NEW:
            return (gen.category(), f"utterance_{next(next_key)}", gen.utterance(), UTTERANCE)
        if op == STORE_EXISTING:
            said = gen.rng.random() < 0.8
            category, key = gen.rng.choice(utterances if said else stable)
            kind = UTTERANCE if said and utterances is not stable else FACT
            return (category, key, gen.utterance(), kind)
        if op == RETRIEVE:
            return gen.rng.choice(utterances if gen.rng.random() < 0.8 else stable)
        return (gen.query(),)

    warmup = {op: [args(op) for _ in range(WARMUP_OPS)] for op in OPERATIONS}
    cells = {(op, c): [args(op) for _ in range(ops)] for op in OPERATIONS for c in concurrency}
    return Workload(size, measured, rows, user_ids, warmup, cells)


# ------------------------------------------------------------------------------------------
# Filling the stores (setup: bulk, outside the measured path)
# ------------------------------------------------------------------------------------------


async def fill_sqlite(store: SQLiteMemoryStore, workload: Workload) -> None:
    def fill(conn: sqlite3.Connection) -> None:
        bulk_insert(
            conn,
            [(user_id, None) for user_id in workload.user_ids],
            (
                (u, c, k, v, sqlite_timestamp(t), sqlite_timestamp(t), kind)
                for u, c, k, v, t, kind in workload.rows
            ),
        )

    await store._run(fill)


async def fill_postgres(admin_dsn: str, workload: Workload) -> None:
    async with postgres_connection(admin_dsn) as conn:
        await conn.copy_records_to_table(
            "profiles",
            schema_name="public",
            columns=["id", "is_first_login"],
            records=[(user_id, False) for user_id in workload.user_ids],
        )
        await conn.copy_records_to_table(
            "memories",
            schema_name="caller_memory",
            columns=[
                "user_id",
                "category",
                "key",
                "value",
                "created_at",
                "updated_at",
                "kind",
                "captured_at",
            ],
            records=((u, c, k, v, t, t, str(kind), t) for u, c, k, v, t, kind in workload.rows),
        )
        await conn.execute("VACUUM ANALYZE public.profiles, caller_memory.memories")
        await conn.execute("CHECKPOINT")  # measure from a clean state, as with SQLite below


async def postgres_server(admin_dsn: str) -> str:
    """The server's version and the settings that decide whether a commit waits on the disk."""
    async with postgres_connection(admin_dsn) as conn:
        version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
    return f"{version}, fsync={fsync}, synchronous_commit={sync_commit}"


async def postgres_size_mb(admin_dsn: str) -> float:
    async with postgres_connection(admin_dsn) as conn:
        size = await conn.fetchval("SELECT pg_total_relation_size('caller_memory.memories')")
    return float(size) / 1e6


# ------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One operation at one concurrency level on one backend and size."""

    latencies_ms: list[float]
    wall_seconds: float
    errors: int = 0
    planned: int = 0
    results: int = 0  # memories returned, summed (search only)

    @property
    def done(self) -> int:
        return len(self.latencies_ms)

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies_ms) if self.latencies_ms else math.nan

    @property
    def throughput(self) -> float:
        return self.done / self.wall_seconds if self.wall_seconds > 0 else math.nan

    def share_over(self, limit_ms: float) -> float:
        if not self.latencies_ms:
            return math.nan
        return sum(1 for x in self.latencies_ms if x > limit_ms) / len(self.latencies_ms)


def operation_call(
    manager: MemoryManager, op: str, counter: list[int]
) -> Callable[[tuple[str, ...]], Awaitable[Any]]:
    if op in (STORE_NEW, STORE_EXISTING):
        return lambda a: manager.astore(a[0], a[1], a[2], kind=a[3])
    if op == RETRIEVE:
        return lambda a: manager.aretrieve(a[0], a[1])

    async def search(a: tuple[str, ...]) -> None:
        found = await manager.asearch(a[0], limit=RECALL_LIMIT)
        counter[0] += len(found)

    return search


async def run_cell(
    call: Callable[[tuple[str, ...]], Awaitable[Any]],
    arguments: Sequence[tuple[str, ...]],
    concurrency: int,
    max_seconds: float,
) -> Cell:
    """Run `arguments` through `call` from `concurrency` tasks; stop early at `max_seconds`."""
    latencies: list[float] = []
    errors = 0
    position = 0
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal position, errors
        while position < len(arguments) and time.perf_counter() < deadline:
            a = arguments[position]
            position += 1
            started = time.perf_counter()
            try:
                await call(a)
            except StorageError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Cell(latencies, time.perf_counter() - started, errors, len(arguments))


async def measure_store(
    store: MemoryStore, workload: Workload, concurrency: Sequence[int], max_seconds: float
) -> dict[tuple[str, int], Cell]:
    manager = MemoryManager(store, max_utterances=None)  # the cap would delete the workload
    cells: dict[tuple[str, int], Cell] = {}
    # The workload's hundreds of thousands of rows would make every full garbage collection
    # a pause of tens of ms inside some measured operation: set them aside while measuring.
    gc.collect()
    gc.freeze()
    try:
        return await _measure(manager, workload, concurrency, max_seconds, cells)
    finally:
        gc.unfreeze()


async def _measure(
    manager: MemoryManager,
    workload: Workload,
    concurrency: Sequence[int],
    max_seconds: float,
    cells: dict[tuple[str, int], Cell],
) -> dict[tuple[str, int], Cell]:
    with session_user(MEASURED_IDENTITY) as user_id:
        if user_id != workload.measured_user:  # IDENTITY_NAMESPACE changed under us
            raise RuntimeError("the measured caller's uuid changed during the run")
        for op in OPERATIONS:  # warm up: pool connections, statement caches, pages
            await run_cell(
                operation_call(manager, op, [0]), workload.warmup[op], max(concurrency), max_seconds
            )
        for op in OPERATIONS:
            for c in concurrency:
                counter = [0]
                cell = await run_cell(
                    operation_call(manager, op, counter), workload.cells[(op, c)], c, max_seconds
                )
                cell.results = counter[0]
                cells[(op, c)] = cell
    return cells


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    ops: int
    backends: list[str]
    concurrency: list[int]
    other_users: int
    other_share: float
    max_cell_seconds: float
    seed: int
    pg_dsn: str | None
    argv: list[str]


@dataclass
class Results:
    cells: dict[tuple[str, int, str, int], Cell] = field(default_factory=dict)  # b, size, op, c
    fill_seconds: dict[tuple[str, int], float] = field(default_factory=dict)
    size_mb: dict[tuple[str, int], float] = field(default_factory=dict)
    total_rows: dict[int, int] = field(default_factory=dict)
    generate_seconds: dict[int, float] = field(default_factory=dict)
    postgres_server: str | None = None


async def run_benchmark(config: Config, cluster: PostgresCluster | None = None) -> Results:
    """Measure every backend at every size (on `cluster`, or on `config.pg_dsn`)."""
    results = Results()
    vocabulary = build_vocabulary()
    with tempfile.TemporaryDirectory(prefix="memory-bench-sqlite-") as tmp:
        for size in config.sizes:
            started = time.perf_counter()
            workload = build_workload(
                vocabulary,
                seed=config.seed,
                size=size,
                other_users=config.other_users,
                other_share=config.other_share,
                ops=config.ops,
                concurrency=config.concurrency,
            )
            results.generate_seconds[size] = time.perf_counter() - started
            results.total_rows[size] = len(workload.rows)
            for backend in config.backends:
                if backend == SQLITE:
                    await _bench_sqlite(config, results, workload, Path(tmp))
                else:
                    await _bench_postgres(config, results, workload, cluster)
    return results


def _progress(backend: str, size: int, what: str) -> None:
    print(f"[{backend}, {size:,} memories] {what} ...", file=sys.stderr, flush=True)


async def _measure_into(
    config: Config, results: Results, backend: str, store: MemoryStore, workload: Workload
) -> None:
    _progress(backend, workload.size, "measuring")
    try:
        cells = await measure_store(store, workload, config.concurrency, config.max_cell_seconds)
    finally:
        await store.aclose()
    for (op, c), cell in cells.items():
        results.cells[(backend, workload.size, op, c)] = cell


async def _bench_sqlite(config: Config, results: Results, workload: Workload, tmp: Path) -> None:
    size = workload.size
    path = tmp / f"bench_{size}.sqlite3"
    store = SQLiteMemoryStore(path)
    _progress(SQLITE, size, "filling")
    started = time.perf_counter()
    try:
        await fill_sqlite(store, workload)
    except BaseException:
        await store.aclose()
        raise
    results.fill_seconds[(SQLITE, size)] = time.perf_counter() - started
    await _measure_into(config, results, SQLITE, store, workload)
    results.size_mb[(SQLITE, size)] = _sqlite_size_mb(path)
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


async def _bench_postgres(
    config: Config, results: Results, workload: Workload, cluster: PostgresCluster | None
) -> None:
    size = workload.size
    async with postgres_database(cluster, config.pg_dsn, f"bench_{size}") as database:
        if results.postgres_server is None:
            results.postgres_server = await postgres_server(database.admin_dsn)
        _progress(POSTGRES, size, "filling")
        started = time.perf_counter()
        await fill_postgres(database.admin_dsn, workload)
        results.fill_seconds[(POSTGRES, size)] = time.perf_counter() - started
        await _measure_into(config, results, POSTGRES, database.store(), workload)
        results.size_mb[(POSTGRES, size)] = await postgres_size_mb(database.admin_dsn)


def _sqlite_size_mb(path: Path) -> float:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total / 1e6


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _tasks(count: int) -> str:
    return f"{count} task" if count == 1 else f"{count} tasks"


def render(config: Config, results: Results, total_seconds: float) -> str:
    backends = config.backends
    both = SQLITE in backends and POSTGRES in backends
    lines = report_head(
        "Storage benchmark: SQLite vs Postgres", "bench.storage_benchmark", config.argv
    )
    out = lines.append
    share = config.other_share
    out(
        f"The measured caller holds N memories; {config.other_users} other callers hold "
        f"{share:g} x N each. Latencies in ms (p50 / p99 / mean per operation), throughput in "
        f"operations per second; {config.ops:,} operations per row after {WARMUP_OPS} "
        f"unmeasured ones; search uses `limit={RECALL_LIMIT}`."
    )
    if both:
        out(
            "Ratios are SQLite ÷ Postgres: a p50 ratio below 1 and an ops/s ratio above 1 "
            "mean SQLite is faster."
        )
    out("")
    header = ["N (caller)", "Operation", "Tasks"]
    for b in backends:
        label = BACKEND_LABELS[b]
        header += [f"{label} p50", f"{label} p99", f"{label} mean", f"{label} ops/s"]
    if both:
        header += ["p50 SQLite/PG", "ops/s SQLite/PG"]
    out("| " + " | ".join(header) + " |")
    out("|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|")
    notes: list[str] = []
    for size in config.sizes:
        for op in OPERATIONS:
            for c in config.concurrency:
                row = [f"{size:,}", OPERATION_LABELS[op], str(c)]
                for b in backends:
                    cell = results.cells[(b, size, op, c)]
                    row += [_ms(cell.p50), _ms(cell.p99), _ms(cell.mean), _rate(cell.throughput)]
                    label = f"{BACKEND_LABELS[b]}, N={size:,}, {OPERATION_LABELS[op]}, {_tasks(c)}"
                    if cell.errors:
                        notes.append(f"{label}: {cell.errors} operations failed (StorageError)")
                    if cell.done + cell.errors < cell.planned:
                        notes.append(
                            f"{label}: stopped after {config.max_cell_seconds:g} s, "
                            f"{cell.done:,} of {cell.planned:,} operations"
                        )
                if both:
                    s = results.cells[(SQLITE, size, op, c)]
                    p = results.cells[(POSTGRES, size, op, c)]
                    row += [ratio(s.p50, p.p50), ratio(s.throughput, p.throughput)]
                out("| " + " | ".join(row) + " |")
    out("")
    budget = DEFAULT_RECALL_BUDGET_MS
    out(f"Search detail (recall budget {budget:g} ms; memories returned per search, mean):")
    out("")
    for size in config.sizes:
        parts = []
        for b in backends:
            for c in config.concurrency:
                cell = results.cells[(b, size, SEARCH, c)]
                mean_hits = cell.results / cell.done if cell.done else math.nan
                parts.append(
                    f"{BACKEND_LABELS[b]} {_tasks(c)}: "
                    f"{cell.share_over(budget):.1%} over budget, {mean_hits:.1f} returned"
                )
        out(f"- N={size:,}: " + "; ".join(parts))
    if notes:
        out("")
        out("Notes:")
        out("")
        lines.extend(f"- {n}" for n in notes)
    out("")
    out("Setup (bulk fill, not measured through the store):")
    out("")
    fill_header = ["N (caller)", "Rows, all callers", "Generate s"]
    for b in backends:
        fill_header += [f"{BACKEND_LABELS[b]} fill s", f"{BACKEND_LABELS[b]} MB after"]
    out("| " + " | ".join(fill_header) + " |")
    out("|" + "|".join(["---:"] * len(fill_header)) + "|")
    for size in config.sizes:
        row = [
            f"{size:,}",
            f"{results.total_rows[size]:,}",
            f"{results.generate_seconds[size]:.1f}",
        ]
        for b in backends:
            row += [
                f"{results.fill_seconds[(b, size)]:.1f}",
                f"{results.size_mb.get((b, size), math.nan):.0f}",
            ]
        out("| " + " | ".join(row) + " |")
    out("")
    env = []
    if SQLITE in backends:
        env.append(SQLITE_ENVIRONMENT)
    if POSTGRES in backends:
        env.append(f"PostgreSQL {results.postgres_server} (asyncpg {asyncpg.__version__})")
    lines += report_tail(env, total_seconds)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(
        description="Store, retrieve and search latency and throughput, SQLite vs Postgres."
    )
    add_workload_options(
        parser,
        sizes=DEFAULT_SIZES,
        others="other-users",
        other_count=DEFAULT_OTHER_USERS,
        other_share=DEFAULT_OTHER_SHARE,
        seed=DEFAULT_SEED,
    )
    add_store_options(parser, concurrency=DEFAULT_CONCURRENCY, concurrent="tasks sharing the store")
    parser.add_argument(
        "--ops",
        type=int,
        default=DEFAULT_OPS,
        help=f"operations per measurement (default: {DEFAULT_OPS})",
    )
    parser.add_argument(
        "--max-cell-seconds",
        type=float,
        default=DEFAULT_MAX_CELL_SECONDS,
        help=f"stop a measurement early after this long (default: {DEFAULT_MAX_CELL_SECONDS:g})",
    )
    ns = parser.parse_args(list(argv))
    if ns.ops < 1:
        parser.error("--ops must be at least 1")
    return Config(
        sizes=ns.sizes,
        ops=ns.ops,
        backends=ns.backends,
        concurrency=ns.concurrency,
        other_users=ns.other_users,
        other_share=ns.other_share,
        max_cell_seconds=ns.max_cell_seconds,
        seed=ns.seed,
        pg_dsn=ns.pg_dsn,
        argv=list(argv),
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    with ExitStack() as stack:
        try:
            cluster = throwaway_postgres(stack, config.backends, config.pg_dsn)
        except ClusterUnavailableError as exc:
            print(f"cannot benchmark Postgres: {exc}", file=sys.stderr)
            return 2
        results = asyncio.run(run_benchmark(config, cluster))
    print(render(config, results, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
