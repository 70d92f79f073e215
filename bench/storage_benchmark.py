"""Storage benchmark: store, retrieve and search latency and throughput, SQLite vs Postgres.

Run from the repository root::

    .venv/bin/python -m bench.storage_benchmark            # 1,000 / 10,000 / 100,000, by meaning
    .venv/bin/python -m bench.storage_benchmark --sizes 10000 --embeddings off
    .venv/bin/python -m bench.storage_benchmark --sizes 1000 --ops 300 --backends sqlite

For every size and backend the benchmark builds a fresh store and fills it, in bulk, with one
measured caller holding `size` memories and `--other-users` other callers (default 20) holding
`size * --other-share` memories each (default 0.2, so the others hold 4x the measured caller's
rows: the caller is one among many, and every index holds other people's data;
`--other-share-above SIZE=SHARE` lowers the share for the sizes above SIZE, and the report
says so). Each caller has 20 stable keys (`name`, `job`, `favorite_color`, ...) and otherwise
utterances under `utterance_<n>`: 6-18 words drawn from a 4,000-word vocabulary with a Zipf
distribution (`bench/workload.py`: common function words first, then everyday content words,
then rarer made-up words), so the commonest words are in nearly half of all memories and most
words in very few. As the capture stores them, each utterance carries the agent's line it
answered (its context) and every memory the day it was said, in words: both indexed.

Search by meaning (`--embeddings local`, the default, as the product searches): the real
multilingual-e5-small (`OnnxEmbedder` with the product's defaults: one intra-op thread, query
and document thread pools of their own) from `--model-dir`, or else the test build of the same
model (`caller_memory.testing.embeddings.cached_test_model()`: same architecture and int8
quantisation as the production download). The manager is `MemoryManager(store,
embedder=...)`, so every search embeds its query with the real model, and every write embeds
its memory (inline: in the product the write is write-behind and the caller never waits for
it). Every filled memory gets a vector under that model's name, so search by meaning scans
realistic amounts; the filled vectors are random unit vectors: SQLite's exact scan costs the
same whatever their values (Postgres' HNSW index may not: see the report's notes). With
`--embeddings off` there are no vectors and search is by words only.

The bulk fill bypasses the store (SQLite: `executemany` on the store's own connection, then a
WAL checkpoint; Postgres: `COPY` as the superuser, with the migrations' HNSW index on the
vectors dropped before and built again after, from its own definition, with
`maintenance_work_mem` raised for the build as Supabase advises for HNSW builds, then
`VACUUM ANALYZE` as autovacuum would do on a live database, and a `CHECKPOINT`); the fill
time includes the index build, which is also reported alone. Everything measured goes
through the worker's real path: `MemoryManager` under `session_user(identity)`, so
validation, context lookup, query normalisation, the query's embedding and the ranking
(`recall.fusion`) are included (with no cap on a caller's utterances, which would otherwise
delete the measured caller's oldest rows):

- store (new key): `astore` of a new utterance with its context (and its embedding);
- store (existing key): `astore` replacing an existing key's value;
- retrieve: `aretrieve` of an existing key (a stable key one time in five);
- search: `asearch(text, limit=5)` (the recall limit) of 2-5 content words drawn from the same
  Zipf distribution, in a spoken frame ("do you remember what I said about ...?"); with
  embeddings, two more rows split it: the query's embedding alone, and the store's hybrid
  search (`search_candidates`: text and meaning) from the moment the query's vector is there
  (the search by text runs while the query is embedded: this is what the store adds to the
  embedding); the rest is query building and ranking;
- search after a write: a new utterance stored (not measured) just before each search, as
  in a call, where the caller's previous sentence was captured before the next one is
  recalled: a store that keeps the caller's vectors in memory must then see the new one.

Each operation runs `--ops` times (default 1,000) at each concurrency level of `--concurrency`
(default 1 and 16 tasks sharing the one store, as sessions in one worker process do), after a
short unmeasured warm-up of its own, and stops early at `--max-cell-seconds`. The stores use
their production defaults: SQLite's 4 threads (WAL, synchronous=NORMAL), Postgres' pool of 1-10
connections with a 2 s timeout, logged in like Supabase's service role. The throwaway Postgres
cluster is the test suite's (`bench/workload.py`: a PostgreSQL build with pgvector when one is
installed, fsync off, unix socket, one new migrated database per size), so no commit waits for
the disk on either backend (SQLite still syncs at its WAL checkpoints; Postgres never does).
`--pg-dsn` points the benchmark at an existing migrated database instead (its memories and
profiles are truncated).

The output is Markdown: one table with both backends side by side (p50, p99, mean latency in
ms, throughput in ops/s) and SQLite/Postgres ratios, then the fill times and the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import inspect
import itertools
import math
import random
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import numpy as np

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
    EMBEDDINGS_OFF,
    ClusterUnavailableError,
    EmbeddingChoice,
    MemoryRow,
    Vocabulary,
    add_embedding_options,
    agent_line,
    benchmark_embedder,
    build_vocabulary,
    bulk_insert,
    embedding_choice,
    postgres_connection,
    postgres_database,
    random_unit_vectors,
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
from caller_memory.embeddings import EMBEDDING_DIMENSIONS, Embedder, Vector
from caller_memory.indexing import said_on_words
from caller_memory.recall.recall import RECALL_LIMIT
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.stores.vectors import encode_vector
from caller_memory.testing.postgres import PostgresCluster

STORE_NEW = "store_new"
STORE_EXISTING = "store_existing"
RETRIEVE = "retrieve"
SEARCH = "search"
SEARCH_AFTER_WRITE = "search_after_write"
OPERATIONS = (STORE_NEW, STORE_EXISTING, RETRIEVE, SEARCH, SEARCH_AFTER_WRITE)
SEARCHES = (SEARCH, SEARCH_AFTER_WRITE)
OPERATION_LABELS = {
    STORE_NEW: "store (new key)",
    STORE_EXISTING: "store (existing key)",
    RETRIEVE: "retrieve",
    SEARCH: "search",
    SEARCH_AFTER_WRITE: "search after a write",
}
# With an embedder, what each operation then includes.
EMBEDDED_LABELS = {
    STORE_NEW: "store (new key), its embedding included",
    STORE_EXISTING: "store (existing key), its embedding included",
    RETRIEVE: "retrieve",
    SEARCH: "search, query embedding included",
    SEARCH_AFTER_WRITE: "search after a write, query embedding included",
}

# The parts of an operation timed on their own (with an embedder), and how the table names them.
EMBEDDING = "embedding"
STORE = "store"
PART_LABELS = {
    (STORE_NEW, EMBEDDING): "↳ the memory's embedding alone",
    (STORE_EXISTING, EMBEDDING): "↳ the memory's embedding alone",
    (SEARCH, EMBEDDING): "↳ the query's embedding alone",
    (SEARCH, STORE): "↳ the store, once the query's vector is there",
    (SEARCH_AFTER_WRITE, EMBEDDING): "↳ the query's embedding alone",
    (SEARCH_AFTER_WRITE, STORE): "↳ the store, once the query's vector is there",
}

DEFAULT_SIZES = (1_000, 10_000, 100_000)
DEFAULT_OPS = 1_000
DEFAULT_CONCURRENCY = (1, 16)
DEFAULT_OTHER_USERS = 20
DEFAULT_OTHER_SHARE = 0.2
DEFAULT_MAX_CELL_SECONDS = 30.0
DEFAULT_SEED = 2024
WARMUP_OPS = 32  # per operation, at the highest concurrency (fills the Postgres pool)
MEASURED_IDENTITY = "bench-caller-measured"
VECTOR_CHUNK = 20_000  # random vectors are made this many at a time while filling

# Postgres: the migrations' HNSW index on the memories' vectors, and the memory its build gets
# (pgvector builds far faster when the graph fits; Supabase's docs advise raising it).
HNSW_INDEX = "memories_embedding_idx"
INDEX_BUILD_MEMORY = "2GB"
# A server process reports its statistics (index scans) within a second, or when it exits.
STATS_FLUSH_S = 1.5

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

# (user_id, category, key, value, updated_at, kind, context: the agent's line an utterance
# answered)
Row = tuple[str, str, str, str, datetime, MemoryKind, str | None]
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

    def context(self) -> str:
        return agent_line(self.vocab, self.rng)

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
            rows.append((user_id, category, key, value, when, FACT, None))
        n_utterances = count - len(rows)
        for n in range(n_utterances):
            when = BASE_TIME - timedelta(seconds=(n_utterances - n) * 60)
            rows.append(
                (
                    user_id,
                    self.category(),
                    f"utterance_{n}",
                    self.utterance(),
                    when,
                    UTTERANCE,
                    self.context(),
                )
            )
        return rows


@dataclass
class Workload:
    """Everything one size needs: the rows to fill in, and each operation's arguments."""

    size: int
    seed: int
    other_share: float
    measured_user: str
    rows: list[Row]
    user_ids: list[str]
    # operation -> one argument list per warm-up and per concurrency level: (category, key,
    # value, kind, context) to store, (category, key) to retrieve, (text,) to search, and
    # (category, key, value, context, text) to store a new utterance then search
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
    existing = [(cat, key) for _, cat, key, _, _, _, _ in rows]
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
            key = f"utterance_{next(next_key)}"
            return (gen.category(), key, gen.utterance(), UTTERANCE, gen.context())
        if op == STORE_EXISTING:
            said = gen.rng.random() < 0.8
            category, key = gen.rng.choice(utterances if said else stable)
            if said and utterances is not stable:
                return (category, key, gen.utterance(), UTTERANCE, gen.context())
            return (category, key, gen.utterance(), FACT, "")
        if op == RETRIEVE:
            return gen.rng.choice(utterances if gen.rng.random() < 0.8 else stable)
        if op == SEARCH_AFTER_WRITE:
            key = f"utterance_{next(next_key)}"
            return (gen.category(), key, gen.utterance(), gen.context(), gen.query())
        return (gen.query(),)

    warmup = {op: [args(op) for _ in range(WARMUP_OPS)] for op in OPERATIONS}
    cells = {(op, c): [args(op) for _ in range(ops)] for op in OPERATIONS for c in concurrency}
    return Workload(size, seed, other_share, measured, rows, user_ids, warmup, cells)


# ------------------------------------------------------------------------------------------
# Filling the stores (setup: bulk, outside the measured path)
# ------------------------------------------------------------------------------------------


def workload_vectors(workload: Workload) -> Iterator[Vector]:
    """One random unit vector per row of `workload`, in order; the same for both backends."""
    rng = np.random.default_rng([workload.seed, workload.size])
    remaining = len(workload.rows)
    while remaining:
        count = min(VECTOR_CHUNK, remaining)
        yield from random_unit_vectors(rng, count, EMBEDDING_DIMENSIONS)
        remaining -= count


class SaidOn:
    """`said_on_words` of a time, computed once per day (the fill has hundreds of thousands)."""

    def __init__(self) -> None:
        self._days: dict[date, str] = {}

    def __call__(self, when: datetime) -> str:
        day = when.date()
        words = self._days.get(day)
        if words is None:
            words = self._days[day] = said_on_words(when.timestamp())
        return words


async def fill_sqlite(
    store: SQLiteMemoryStore, workload: Workload, embedding_model: str | None
) -> None:
    vectors = workload_vectors(workload) if embedding_model is not None else None
    said_on = SaidOn()

    def memories() -> Iterator[MemoryRow]:
        for u, c, k, v, t, kind, context in workload.rows:
            stamp = sqlite_timestamp(t)
            blob = encode_vector(next(vectors)) if vectors is not None else None
            yield MemoryRow(u, c, k, v, stamp, stamp, kind, context, said_on(t), blob)

    def fill(conn: sqlite3.Connection) -> None:
        bulk_insert(
            conn,
            [(user_id, None) for user_id in workload.user_ids],
            memories(),
            embedding_model=embedding_model,
        )

    await store._run(fill)


def pgvector_binary(vector: Vector) -> bytes:
    """pgvector's binary form of a vector (what binary COPY sends): its dimensions, a reserved
    zero, then the float4 values, all big-endian."""
    return struct.pack(">HH", len(vector), 0) + np.asarray(vector, dtype=">f4").tobytes()


async def fill_postgres(admin_dsn: str, workload: Workload, embedding_model: str | None) -> float:
    """Fill the migrated database at `admin_dsn`; with `embedding_model`, every memory gets a
    vector, and the migrations' HNSW index is built after the rows are in (dropped before,
    built again from its own definition). Returns the index build's seconds (nan: none)."""
    said_on = SaidOn()
    columns = [
        "user_id",
        "category",
        "key",
        "value",
        "created_at",
        "updated_at",
        "kind",
        "captured_at",
        "context",
        "said_on",
    ]
    async with postgres_connection(admin_dsn) as conn:
        await conn.copy_records_to_table(
            "profiles",
            schema_name="public",
            columns=["id", "is_first_login"],
            records=[(user_id, False) for user_id in workload.user_ids],
        )
        index_definition: str | None = None
        vectors: Iterator[Vector] | None = None
        if embedding_model is not None:
            schema = await conn.fetchval(
                "SELECT n.nspname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE a.attrelid = 'caller_memory.memories'::regclass "
                "AND a.attname = 'embedding' AND NOT a.attisdropped"
            )
            if schema is None:
                raise RuntimeError(
                    "this Postgres has no pgvector (the memories have no embedding column): "
                    "run with --embeddings off, or on a PostgreSQL with pgvector"
                )
            await conn.set_type_codec(
                "vector", schema=schema, encoder=pgvector_binary, decoder=bytes, format="binary"
            )
            index_definition = await conn.fetchval(
                "SELECT indexdef FROM pg_indexes "
                "WHERE schemaname = 'caller_memory' AND indexname = $1",
                HNSW_INDEX,
            )
            columns += ["embedding", "embedding_model"]
            vectors = workload_vectors(workload)

        def records() -> Iterator[tuple[Any, ...]]:
            for u, c, k, v, t, kind, context in workload.rows:
                row: tuple[Any, ...] = (u, c, k, v, t, t, str(kind), t, context, said_on(t))
                if vectors is not None:
                    row += (next(vectors), embedding_model)
                yield row

        index_seconds = math.nan
        if index_definition is not None:
            await conn.execute(f"DROP INDEX caller_memory.{HNSW_INDEX}")
        try:
            await conn.copy_records_to_table(
                "memories", schema_name="caller_memory", columns=columns, records=records()
            )
        finally:
            if index_definition is not None:  # built again even when the fill failed
                await conn.execute(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
                started = time.perf_counter()
                await conn.execute(index_definition)
                index_seconds = time.perf_counter() - started
                await conn.execute("RESET maintenance_work_mem")
        await conn.execute("VACUUM ANALYZE public.profiles, caller_memory.memories")
        await conn.execute("CHECKPOINT")  # measure from a clean state, as with SQLite below
    return index_seconds


async def postgres_server(admin_dsn: str) -> str:
    """The server's version, the settings that decide whether a commit waits on the disk, and
    pgvector's version and index."""
    async with postgres_connection(admin_dsn) as conn:
        version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
        shared_buffers = await conn.fetchval("SHOW shared_buffers")
        vector = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'caller_memory' AND indexname = $1",
            HNSW_INDEX,
        )
    server = (
        f"{version}, fsync={fsync}, synchronous_commit={sync_commit}, "
        f"shared_buffers={shared_buffers}"
    )
    if vector is None:
        return server + ", no pgvector"
    using = index.split(" USING ", 1)[-1] if index else "no vector index"
    return f"{server}, pgvector {vector} (index: {using}, pgvector's defaults)"


async def vector_index_scans(admin_dsn: str) -> int | None:
    """How many times the vector index was scanned since the database was made (None: no
    such index): whether searches by meaning use it, or compare every vector of the caller."""
    async with postgres_connection(admin_dsn) as conn:
        scans = await conn.fetchval(
            "SELECT idx_scan FROM pg_stat_user_indexes "
            "WHERE schemaname = 'caller_memory' AND indexrelname = $1",
            HNSW_INDEX,
        )
    return None if scans is None else int(scans)


async def postgres_size_mb(admin_dsn: str) -> float:
    async with postgres_connection(admin_dsn) as conn:
        size = await conn.fetchval("SELECT pg_total_relation_size('caller_memory.memories')")
    return float(size) / 1e6


# ------------------------------------------------------------------------------------------
# Timing the parts of an operation
# ------------------------------------------------------------------------------------------


class Stopwatch:
    """The time each operation spent in its parts (the embedder, the store). The operations
    of one cell run concurrently, one at a time in each of their tasks; a part may run in a
    task the operation started (the query's embedding, beside the search by words), which
    inherits the operation's context, so the parts are kept in a context variable."""

    def __init__(self) -> None:
        self._parts: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
            "stopwatch_parts", default=None
        )

    def start(self) -> None:
        self._parts.set({})

    def add(self, part: str, seconds: float) -> None:
        parts = self._parts.get()
        if parts is not None:  # outside a timed operation (a write before a search): ignored
            parts[part] = parts.get(part, 0.0) + seconds

    def stop(self) -> dict[str, float]:
        parts = self._parts.get()
        self._parts.set(None)
        return parts or {}


class TimedEmbedder:
    """An `Embedder` that tells `stopwatch` how long each of its calls took (waiting for the
    model's thread included: that is what a search waits for)."""

    def __init__(self, embedder: Embedder, stopwatch: Stopwatch) -> None:
        self._embedder = embedder
        self._stopwatch = stopwatch

    @property
    def name(self) -> str:
        return self._embedder.name

    @property
    def dimensions(self) -> int:
        return self._embedder.dimensions

    async def embed_query(self, text: str) -> Vector:
        started = time.perf_counter()
        try:
            return await self._embedder.embed_query(text)
        finally:
            self._stopwatch.add(EMBEDDING, time.perf_counter() - started)

    async def embed_documents(self, texts: Sequence[str]) -> list[Vector]:
        started = time.perf_counter()
        try:
            return await self._embedder.embed_documents(texts)
        finally:
            self._stopwatch.add(EMBEDDING, time.perf_counter() - started)

    async def warm_up(self) -> None:
        await self._embedder.warm_up()

    async def aclose(self) -> None:
        await self._embedder.aclose()


class TimedStore:
    """A `MemoryStore` that tells `stopwatch` how long its searches and writes took; every
    other call goes straight to `store`."""

    def __init__(self, store: MemoryStore, stopwatch: Stopwatch) -> None:
        self._store = store
        self._stopwatch = stopwatch
        self.searches_by_meaning = 0  # searches that brought a query vector, warm-ups included

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def search_candidates(self, *args: Any, **kwargs: Any) -> Any:
        """The store's part of a search: from the query's vector's arrival (the search by
        text runs while the query is embedded) to the candidates, i.e. what the search adds
        to the embedding; all of it for a search with its vector at hand or without one."""
        pending = kwargs.get("embedding")
        if pending is not None:
            self.searches_by_meaning += 1
        arrived: float | None = None
        if inspect.isawaitable(pending):

            async def timed_vector() -> Any:
                nonlocal arrived
                try:
                    return await pending
                finally:
                    arrived = time.perf_counter()

            kwargs["embedding"] = timed_vector()
        started = time.perf_counter()
        try:
            return await self._store.search_candidates(*args, **kwargs)
        finally:
            since = started if arrived is None else max(started, arrived)
            self._stopwatch.add(STORE, time.perf_counter() - since)

    async def upsert_memory(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._store.upsert_memory(*args, **kwargs)
        finally:
            self._stopwatch.add(STORE, time.perf_counter() - started)


# ------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One measured operation: its seconds, its parts' seconds, the memories it returned."""

    seconds: float
    parts: dict[str, float]
    found: int = 0


@dataclass
class Cell:
    """One operation at one concurrency level on one backend and size."""

    latencies_ms: list[float]
    wall_seconds: float
    errors: int = 0
    planned: int = 0
    results: int = 0  # memories returned, summed (searches only)
    parts_ms: dict[str, list[float]] = field(default_factory=dict)

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

    def part(self, name: str, q: float | None) -> float:
        """A part's percentile `q` in ms (its mean with `q` None); nan if never timed."""
        values = self.parts_ms.get(name, [])
        if not values:
            return math.nan
        return statistics.fmean(values) if q is None else percentile(values, q)

    def share_over(self, limit_ms: float) -> float:
        if not self.latencies_ms:
            return math.nan
        return sum(1 for x in self.latencies_ms if x > limit_ms) / len(self.latencies_ms)


def operation_call(
    manager: MemoryManager, stopwatch: Stopwatch, op: str
) -> Callable[[tuple[str, ...]], Awaitable[Sample]]:
    """How `op` runs with one argument tuple, timed (a search after a write: the search)."""

    async def run(a: tuple[str, ...]) -> int:
        if op in (STORE_NEW, STORE_EXISTING):
            await manager.astore(a[0], a[1], a[2], kind=a[3], context=a[4] or None)
            return 0
        if op == RETRIEVE:
            await manager.aretrieve(a[0], a[1])
            return 0
        return len(await manager.asearch(a[-1], limit=RECALL_LIMIT))

    async def call(a: tuple[str, ...]) -> Sample:
        if op == SEARCH_AFTER_WRITE:  # the caller's previous sentence lands first
            await manager.astore(a[0], a[1], a[2], kind=UTTERANCE, context=a[3])
        stopwatch.start()
        started = time.perf_counter()
        try:
            found = await run(a)
        finally:
            parts = stopwatch.stop()
        seconds = time.perf_counter() - started
        # A part this operation did not need this time (a fact whose value did not change is
        # not embedded again) counts as 0 ms, so each part's percentiles are over the same
        # operations as the whole's and never exceed them.
        for part in (EMBEDDING, STORE):
            if (op, part) in PART_LABELS:
                parts.setdefault(part, 0.0)
        return Sample(seconds, parts, found)

    return call


async def run_cell(
    call: Callable[[tuple[str, ...]], Awaitable[Sample]],
    arguments: Sequence[tuple[str, ...]],
    concurrency: int,
    max_seconds: float,
) -> Cell:
    """Run `arguments` through `call` from `concurrency` tasks; stop early at `max_seconds`."""
    cell = Cell([], 0.0, planned=len(arguments))
    position = 0
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal position
        while position < len(arguments) and time.perf_counter() < deadline:
            a = arguments[position]
            position += 1
            try:
                sample = await call(a)
            except StorageError:
                cell.errors += 1
                continue
            cell.latencies_ms.append(sample.seconds * 1000)
            cell.results += sample.found
            for part, seconds in sample.parts.items():
                cell.parts_ms.setdefault(part, []).append(seconds * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cell.wall_seconds = time.perf_counter() - started
    return cell


@dataclass
class Measured:
    """What one store did: a cell per operation and concurrency level, and how many searches
    (warm-ups included) searched by meaning."""

    cells: dict[tuple[str, int], Cell]
    searches_by_meaning: int


async def measure_store(
    store: MemoryStore,
    workload: Workload,
    concurrency: Sequence[int],
    max_seconds: float,
    embedder: Embedder | None = None,
) -> Measured:
    stopwatch = Stopwatch()
    timed_store = TimedStore(store, stopwatch)
    manager = MemoryManager(
        cast(MemoryStore, timed_store),
        max_utterances=None,  # the cap would delete the workload
        embedder=TimedEmbedder(embedder, stopwatch) if embedder is not None else None,
    )
    # The workload's hundreds of thousands of rows would make every full garbage collection
    # a pause of tens of ms inside some measured operation: set them aside while measuring.
    gc.collect()
    gc.freeze()
    try:
        cells = await _measure(manager, stopwatch, workload, concurrency, max_seconds)
    finally:
        gc.unfreeze()
    return Measured(cells, timed_store.searches_by_meaning)


async def _measure(
    manager: MemoryManager,
    stopwatch: Stopwatch,
    workload: Workload,
    concurrency: Sequence[int],
    max_seconds: float,
) -> dict[tuple[str, int], Cell]:
    cells: dict[tuple[str, int], Cell] = {}
    with session_user(MEASURED_IDENTITY) as user_id:
        if user_id != workload.measured_user:  # IDENTITY_NAMESPACE changed under us
            raise RuntimeError("the measured caller's uuid changed during the run")
        for op in OPERATIONS:
            call = operation_call(manager, stopwatch, op)
            # warm up: pool connections, statement caches, pages, the caller's vectors
            await run_cell(call, workload.warmup[op], max(concurrency), max_seconds)
            for c in concurrency:
                cells[(op, c)] = await run_cell(call, workload.cells[(op, c)], c, max_seconds)
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
    other_share_above: tuple[int, float] | None
    max_cell_seconds: float
    seed: int
    pg_dsn: str | None
    embeddings: EmbeddingChoice
    argv: list[str]

    def share_at(self, size: int) -> float:
        """The other callers' share at `size` (`--other-share-above` lowers it for large
        sizes)."""
        if self.other_share_above is not None and size > self.other_share_above[0]:
            return self.other_share_above[1]
        return self.other_share


@dataclass
class Results:
    cells: dict[tuple[str, int, str, int], Cell] = field(default_factory=dict)  # b, size, op, c
    fill_seconds: dict[tuple[str, int], float] = field(default_factory=dict)
    index_seconds: dict[int, float] = field(default_factory=dict)  # Postgres' vector index
    # Postgres, per size: (scans of the vector index, searches by meaning) while measuring
    index_use: dict[int, tuple[int, int]] = field(default_factory=dict)
    size_mb: dict[tuple[str, int], float] = field(default_factory=dict)
    total_rows: dict[int, int] = field(default_factory=dict)
    generate_seconds: dict[int, float] = field(default_factory=dict)
    postgres_server: str | None = None
    embedder: str = ""


async def run_benchmark(config: Config, cluster: PostgresCluster | None = None) -> Results:
    """Measure every backend at every size (on `cluster`, or on `config.pg_dsn`)."""
    results = Results()
    embedder = benchmark_embedder(config.embeddings)
    results.embedder = config.embeddings.describe(embedder)
    try:
        if embedder is not None:
            await embedder.warm_up()
        await _run_sizes(config, results, embedder, cluster)
    finally:
        if embedder is not None:
            await embedder.aclose()
    return results


async def _run_sizes(
    config: Config, results: Results, embedder: Embedder | None, cluster: PostgresCluster | None
) -> None:
    vocabulary = build_vocabulary()
    with tempfile.TemporaryDirectory(prefix="memory-bench-sqlite-") as tmp:
        for size in config.sizes:
            started = time.perf_counter()
            workload = build_workload(
                vocabulary,
                seed=config.seed,
                size=size,
                other_users=config.other_users,
                other_share=config.share_at(size),
                ops=config.ops,
                concurrency=config.concurrency,
            )
            results.generate_seconds[size] = time.perf_counter() - started
            results.total_rows[size] = len(workload.rows)
            for backend in config.backends:
                if backend == SQLITE:
                    await _bench_sqlite(config, results, workload, Path(tmp), embedder)
                else:
                    await _bench_postgres(config, results, workload, cluster, embedder)
            del workload
            gc.collect()


def _progress(backend: str, size: int, what: str) -> None:
    print(f"[{backend}, {size:,} memories] {what} ...", file=sys.stderr, flush=True)


async def _measure_into(
    config: Config,
    results: Results,
    backend: str,
    store: MemoryStore,
    workload: Workload,
    embedder: Embedder | None,
) -> Measured:
    _progress(backend, workload.size, "measuring")
    try:
        measured = await measure_store(
            store, workload, config.concurrency, config.max_cell_seconds, embedder
        )
    finally:
        await store.aclose()
    for (op, c), cell in measured.cells.items():
        results.cells[(backend, workload.size, op, c)] = cell
    return measured


async def _bench_sqlite(
    config: Config, results: Results, workload: Workload, tmp: Path, embedder: Embedder | None
) -> None:
    size = workload.size
    path = tmp / f"bench_{size}.sqlite3"
    store = SQLiteMemoryStore(path)
    _progress(SQLITE, size, "filling")
    started = time.perf_counter()
    try:
        await fill_sqlite(store, workload, embedder.name if embedder is not None else None)
    except BaseException:
        await store.aclose()
        raise
    results.fill_seconds[(SQLITE, size)] = time.perf_counter() - started
    await _measure_into(config, results, SQLITE, store, workload, embedder)
    results.size_mb[(SQLITE, size)] = _sqlite_size_mb(path)
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


async def _bench_postgres(
    config: Config,
    results: Results,
    workload: Workload,
    cluster: PostgresCluster | None,
    embedder: Embedder | None,
) -> None:
    size = workload.size
    async with postgres_database(cluster, config.pg_dsn, f"bench_{size}") as database:
        if results.postgres_server is None:
            results.postgres_server = await postgres_server(database.admin_dsn)
        _progress(POSTGRES, size, "filling")
        started = time.perf_counter()
        model = embedder.name if embedder is not None else None
        results.index_seconds[size] = await fill_postgres(database.admin_dsn, workload, model)
        results.fill_seconds[(POSTGRES, size)] = time.perf_counter() - started
        scans_before = await vector_index_scans(database.admin_dsn)
        measured = await _measure_into(
            config, results, POSTGRES, database.store(), workload, embedder
        )
        if scans_before is not None:
            await asyncio.sleep(STATS_FLUSH_S)
            scans = await vector_index_scans(database.admin_dsn)
            if scans is not None:
                results.index_use[size] = (scans - scans_before, measured.searches_by_meaning)
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

TABLE_HEADER_START = "| N (caller) | Operation | Tasks |"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _tasks(count: int) -> str:
    return f"{count} task" if count == 1 else f"{count} tasks"


def operation_label(op: str, embeddings: bool) -> str:
    return EMBEDDED_LABELS[op] if embeddings else OPERATION_LABELS[op]


def operation_parts(op: str, embeddings: bool) -> list[str]:
    """The parts of `op` the table shows on rows of their own (with embeddings only)."""
    if not embeddings:
        return []
    return [part for part in (EMBEDDING, STORE) if (op, part) in PART_LABELS]


def render(config: Config, results: Results, total_seconds: float) -> str:
    backends = config.backends
    both = SQLITE in backends and POSTGRES in backends
    embeddings = config.embeddings.mode != EMBEDDINGS_OFF
    lines = report_head(
        "Storage benchmark: SQLite vs Postgres"
        + (", search by meaning and words" if embeddings else ", search by words only"),
        "bench.storage_benchmark",
        config.argv,
    )
    out = lines.append
    share = config.other_share
    out(
        f"The measured caller holds N memories; {config.other_users} other callers hold "
        f"{share:g} x N each. Latencies in ms (p50 / p99 / mean per operation), throughput in "
        f"operations per second; {config.ops:,} operations per row after {WARMUP_OPS} "
        f"unmeasured ones; searches use `limit={RECALL_LIMIT}`. A search after a write is "
        "timed alone; its ops/s count a write and a search as one."
    )
    if embeddings:
        out(
            "Search by meaning and by words, as the product does by default: every search "
            "embeds its query with the real model, and every write embeds its memory (inline "
            "here: in the product the write is write-behind and the caller never waits for "
            "it). The rows marked ↳ split the row above: the embedder's call alone (waiting "
            "for its thread included) and the store's hybrid search from the moment the "
            "query's vector is there (the search by words runs while the query is embedded, "
            "so this is what the store adds to the embedding); query building and ranking "
            "are the rest. The filled memories' vectors are random unit vectors "
            "(the queries' are real)."
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
                row = [f"{size:,}", operation_label(op, embeddings), str(c)]
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
                for part in operation_parts(op, embeddings):
                    row = [f"{size:,}", PART_LABELS[(op, part)], str(c)]
                    for b in backends:
                        cell = results.cells[(b, size, op, c)]
                        row += [
                            _ms(cell.part(part, 50)),
                            _ms(cell.part(part, 99)),
                            _ms(cell.part(part, None)),
                            "-",
                        ]
                    if both:
                        s = results.cells[(SQLITE, size, op, c)]
                        p = results.cells[(POSTGRES, size, op, c)]
                        row += [ratio(s.part(part, 50), p.part(part, 50)), "-"]
                    out("| " + " | ".join(row) + " |")
    out("")
    budget = DEFAULT_RECALL_BUDGET_MS
    out(f"Search detail (recall budget {budget:g} ms; memories returned per search, mean):")
    out("")
    for size in config.sizes:
        for op in SEARCHES:
            parts = []
            for b in backends:
                for c in config.concurrency:
                    cell = results.cells[(b, size, op, c)]
                    mean_hits = cell.results / cell.done if cell.done else math.nan
                    parts.append(
                        f"{BACKEND_LABELS[b]} {_tasks(c)}: "
                        f"{cell.share_over(budget):.1%} over budget, {mean_hits:.1f} returned"
                    )
            out(f"- N={size:,}, {OPERATION_LABELS[op]}: " + "; ".join(parts))
    for size in config.sizes:
        if config.share_at(size) != share:
            notes.append(
                f"N={size:,}: the other callers hold {config.share_at(size):g} x N each "
                f"(not {share:g}), set by --other-share-above to keep the fill within this "
                "machine's time and disk"
            )
    for size, (scans, searches) in sorted(results.index_use.items()):
        if searches:
            used = (
                "none used it: each compared the query with every vector of the caller "
                "(an exact scan, whose cost does not depend on the vectors' values)"
                if scans == 0
                else "an index walk's cost may depend on the vectors' values (a graph of random "
                "points is harder to walk than one of real sentences)"
            )
            notes.append(
                f"Postgres, N={size:,}: the HNSW vector index was scanned {scans:,} times "
                f"during {searches:,} searches by meaning (warm-ups included); {used}"
            )
    if notes:
        out("")
        out("Notes:")
        out("")
        lines.extend(f"- {n}" for n in notes)
    out("")
    out("Setup (bulk fill, not measured through the store):")
    out("")
    index_column = embeddings and POSTGRES in backends
    fill_header = ["N (caller)", "Rows, all callers", "Generate s"]
    for b in backends:
        fill_header += [f"{BACKEND_LABELS[b]} fill s"]
        if b == POSTGRES and index_column:
            fill_header += ["of it, Postgres vector index build s"]
        fill_header += [f"{BACKEND_LABELS[b]} MB after"]
    out("| " + " | ".join(fill_header) + " |")
    out("|" + "|".join(["---:"] * len(fill_header)) + "|")
    for size in config.sizes:
        row = [
            f"{size:,}",
            f"{results.total_rows[size]:,}",
            f"{results.generate_seconds[size]:.1f}",
        ]
        for b in backends:
            row += [f"{results.fill_seconds[(b, size)]:.1f}"]
            if b == POSTGRES and index_column:
                index_s = results.index_seconds.get(size, math.nan)
                row += ["-" if math.isnan(index_s) else f"{index_s:.1f}"]
            row += [f"{results.size_mb.get((b, size), math.nan):.0f}"]
        out("| " + " | ".join(row) + " |")
    out("")
    env = [results.embedder]
    if SQLITE in backends:
        env.append(SQLITE_ENVIRONMENT)
    if POSTGRES in backends:
        env.append(f"PostgreSQL {results.postgres_server} (asyncpg {asyncpg.__version__})")
        if index_column:
            env.append(f"the vector index built with maintenance_work_mem={INDEX_BUILD_MEMORY}")
    lines += report_tail(env, total_seconds)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _size_share(text: str) -> tuple[int, float]:
    """`100000=0.05` -> (100000, 0.05); an argparse type."""
    size, sep, share = text.partition("=")
    try:
        parsed = (int(size.replace("_", "")), float(share))
    except ValueError:
        parsed = (-1, -1.0)
    if not sep or parsed[0] < 1 or parsed[1] < 0:
        raise argparse.ArgumentTypeError(f"expected SIZE=SHARE (e.g. 10000=0.05), got {text!r}")
    return parsed


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
    parser.add_argument(
        "--other-share-above",
        type=_size_share,
        default=None,
        metavar="SIZE=SHARE",
        help="the other callers' share for the sizes above SIZE (default: --other-share for "
        "every size)",
    )
    add_store_options(parser, concurrency=DEFAULT_CONCURRENCY, concurrent="tasks sharing the store")
    add_embedding_options(parser)
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
        other_share_above=ns.other_share_above,
        max_cell_seconds=ns.max_cell_seconds,
        seed=ns.seed,
        pg_dsn=ns.pg_dsn,
        embeddings=embedding_choice(ns),
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
