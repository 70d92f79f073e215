"""A Postgres without pgvector: the migrations apply, search is by text, and the worker says so.

Runs the real migrations on a second throwaway cluster built from the system's PostgreSQL
(Debian's postgresql-15, which has no pgvector package), then uses it through the Postgres
store and a `CallerMemory` with the real (test) embedding model.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from caller_memory import CallerMemory, session_user
from caller_memory.embeddings.onnx import OnnxEmbedder
from caller_memory.settings import MemorySettings
from caller_memory.stores.postgres import PostgresMemoryStore
from caller_memory.testing.postgres import (
    ClusterUnavailableError,
    PostgresCluster,
    find_postgres_bin,
    has_pgvector,
)

pytestmark = pytest.mark.postgres

ALICE = "alice@example.com"
DATABASE = "plain"


@pytest.fixture(scope="module")
def plain_cluster() -> Iterator[PostgresCluster]:
    bin_dir = find_postgres_bin(with_vector=False)
    if bin_dir is None or has_pgvector(bin_dir):
        pytest.skip("no PostgreSQL without pgvector on this machine")
    try:
        cluster = PostgresCluster.in_temp_dir("memory-plain-pg-", with_vector=False)
    except ClusterUnavailableError as exc:
        pytest.skip(str(exc))
    try:
        cluster.boot()
        cluster.create_database(DATABASE)
        cluster.apply_migrations(DATABASE)
        cluster.apply_migrations(DATABASE)  # re-runnable here too
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
async def plain_store(plain_cluster: PostgresCluster) -> AsyncIterator[PostgresMemoryStore]:
    store = PostgresMemoryStore(
        plain_cluster.dsn(DATABASE, user="authenticator"),
        timeout=5.0,
        server_settings={"role": "service_role"},
    )
    yield store
    await store.aclose()


async def test_the_migrations_apply_and_search_is_by_text(
    plain_cluster: PostgresCluster, plain_store: PostgresMemoryStore
) -> None:
    conn = await asyncpg.connect(plain_cluster.dsn(DATABASE))
    try:
        available = "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"
        assert await conn.fetchval(available) == 0
    finally:
        await conn.close()
    assert not await plain_store.has_vectors()
    user = str(uuid.uuid5(uuid.NAMESPACE_DNS, ALICE))
    await plain_store.upsert_memory(user, "FACT", "job", "nurse at the city hospital")
    # a vector has nowhere to go, and none is asked for
    assert not await plain_store.set_embedding(
        user, "FACT", "job", "nurse at the city hospital", (1.0,) + (0.0,) * 383, "m"
    )
    assert await plain_store.unembedded("m", 10) == []
    found = await plain_store.search_candidates(
        user, "hospital", 5, embedding=(1.0,) + (0.0,) * 383, embedding_model="m"
    )
    assert [(c.memory.key, c.dense) for c in found] == [("job", None)]
    assert found[0].lexical is not None and found[0].lexical > 0


async def test_the_worker_says_once_that_search_is_by_text_only(
    plain_store: PostgresMemoryStore,
    e5_model_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = MemorySettings.load().model_copy(update={"spool_dir": tmp_path / "spool"})
    memory = CallerMemory(store=plain_store, settings=settings, embedder=OnnxEmbedder(e5_model_dir))
    caplog.set_level(logging.INFO, logger="caller_memory")
    try:
        await memory.check()
        for _ in range(3):  # the start-up check, then calls
            with session_user(ALICE):
                await memory.manager.astore("FACT", "job", "nurse at the city hospital")
                hits = await memory.manager.asearch("where do I work? the hospital?")
            assert [m.key for m in hits] == ["job"]
    finally:
        await memory.embedder.aclose()  # type: ignore[union-attr]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "search is by text only" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "pgvector" in warnings[0] and "MEMORY_EMBEDDINGS=off" in warnings[0]
