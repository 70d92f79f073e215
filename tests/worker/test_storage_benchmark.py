"""The storage benchmark (bench/storage_benchmark.py) at a tiny size.

It checks that the benchmark runs end to end and prints every operation for every backend,
searching by words only and by meaning with the real test model (`e5_model_dir`); that the
fill gives every memory a vector of that model, and Postgres its HNSW index back; and that
the table's numbers agree with each other (a part of an operation never takes longer than the
operation). It asserts nothing about speed (that is what the benchmark itself is for).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from bench.report import percentile
from bench.storage_benchmark import (
    EMBEDDED_LABELS,
    EMBEDDING,
    HNSW_INDEX,
    OPERATION_LABELS,
    OPERATIONS,
    PART_LABELS,
    SEARCH,
    SEARCH_AFTER_WRITE,
    SEARCHES,
    STABLE_FACTS,
    STORE,
    STORE_EXISTING,
    STORE_NEW,
    Workload,
    build_workload,
    fill_postgres,
    fill_sqlite,
    main,
    parse_args,
    run_benchmark,
)
from bench.workload import build_vocabulary
from caller_memory.recall.recall import RECALL_LIMIT
from caller_memory.stores.sqlite import SQLiteMemoryStore

SIZE = 200
TINY = ["--sizes", str(SIZE), "--ops", "12", "--concurrency", "1,4", "--other-users", "3"]
NUMBER = re.compile(r"^[0-9][0-9,]*(\.[0-9]+)?$")
MODEL_NAME = "bench-test-model"


def _local(e5_model_dir: Path) -> list[str]:
    return ["--embeddings", "local", "--model-dir", str(e5_model_dir)]


def _table(out: str) -> tuple[list[str], dict[tuple[str, str], list[str]], list[str]]:
    """The main table's header cells, its rows keyed by (operation, tasks), and the
    operation column in the order printed. A part's row ("↳ ...") is keyed by
    ("<its operation> <the part>", tasks): two operations' parts share a label."""
    lines = [line for line in out.splitlines() if line.startswith("| N (caller) | Operation")]
    assert len(lines) == 1, out
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows: dict[tuple[str, str], list[str]] = {}
    order: list[str] = []
    operation = ""
    for line in out.splitlines():
        if line.startswith(f"| {SIZE} | "):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if len(cells) == len(header):
                label = cells[1]
                if label.startswith("↳"):
                    label = f"{operation} {label}"
                else:
                    operation = label
                rows[(label, cells[2])] = cells[3:]
                order.append(cells[1])
    return header, rows, order


def _check_rows(rows: dict[tuple[str, str], list[str]], columns: int) -> None:
    expected = {(label, tasks) for label in OPERATION_LABELS.values() for tasks in ("1", "4")}
    assert set(rows) == expected
    for cells in rows.values():
        assert len(cells) == columns
        assert all(NUMBER.match(cell) for cell in cells), cells


def _make(seed: int) -> Workload:
    return build_workload(
        build_vocabulary(),
        seed=seed,
        size=SIZE,
        other_users=3,
        other_share=0.5,
        ops=5,
        concurrency=[1, 4],
    )


def test_workload_is_deterministic_and_one_caller_among_many() -> None:
    vocabulary = build_vocabulary()
    assert len(vocabulary.words) == len(set(vocabulary.words)) >= 3000
    a, b = _make(7), _make(7)
    assert a.rows == b.rows and a.cells == b.cells
    assert a.rows != _make(8).rows
    assert len(a.user_ids) == 4 and a.user_ids[0] == a.measured_user
    assert sum(1 for row in a.rows if row[0] == a.measured_user) == SIZE
    assert len(a.rows) == SIZE + 3 * 100
    keys = [row[2] for row in a.rows if row[0] == a.measured_user]
    assert keys[: len(STABLE_FACTS)] == [key for _, key, _ in STABLE_FACTS]
    assert all(key.startswith("utterance_") for key in keys[len(STABLE_FACTS) :])
    # utterances carry the agent's line they answered, as the capture stores them; facts none
    for row in a.rows:
        assert (row[6] is not None and row[6].strip() != "") == (row[2].startswith("utterance_"))
    assert all(len(args) == 1 and args[0].strip() for args in a.cells[(SEARCH, 1)])
    # a search after a write: a new utterance (a key nobody holds yet), then a search
    held = {row[2] for row in a.rows if row[0] == a.measured_user}
    for args in a.cells[(SEARCH_AFTER_WRITE, 1)]:
        _category, key, value, context, query = args
        assert key.startswith("utterance_") and key not in held
        assert value.strip() and context.strip() and query.strip()


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_sqlite_table_lists_every_operation_searching_by_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*TINY, "--backends", "sqlite", "--embeddings", "off"]) == 0
    out = capsys.readouterr().out
    header, rows, _ = _table(out)
    assert header[3:] == ["SQLite p50", "SQLite p99", "SQLite mean", "SQLite ops/s"]
    _check_rows(rows, 4)
    assert "search by words only" in out and "embeddings off" in out
    assert "↳" not in out  # nothing to split without an embedder
    assert "SQLite 3." in out
    assert "Total wall time:" in out


async def test_the_fill_gives_every_memory_a_vector_of_the_model(tmp_path: Path) -> None:
    workload = _make(3)
    store = SQLiteMemoryStore(tmp_path / "fill.sqlite3")
    try:
        await fill_sqlite(store, workload, MODEL_NAME)
    finally:
        await store.aclose()
    with sqlite3.connect(tmp_path / "fill.sqlite3") as conn:
        rows = conn.execute("SELECT embedding, embedding_model, said_on FROM memories").fetchall()
        contexts = conn.execute("SELECT count(*) FROM memories WHERE context IS NOT NULL")
        assert contexts.fetchone()[0] == sum(1 for row in workload.rows if row[6] is not None)
    assert len(rows) == len(workload.rows)
    assert {model for _, model, _ in rows} == {MODEL_NAME}
    assert all(said_on for _, _, said_on in rows)
    vectors = np.stack([np.frombuffer(blob, dtype="<f4") for blob, _, _ in rows])
    assert vectors.shape == (len(workload.rows), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({blob for blob, _, _ in rows}) == len(rows)  # random, not one vector repeated


async def test_the_fill_by_words_stores_no_vector(tmp_path: Path) -> None:
    workload = _make(3)
    store = SQLiteMemoryStore(tmp_path / "fill.sqlite3")
    try:
        await fill_sqlite(store, workload, None)
    finally:
        await store.aclose()
    with sqlite3.connect(tmp_path / "fill.sqlite3") as conn:
        row = conn.execute(
            "SELECT count(*), count(embedding), count(embedding_model) FROM memories"
        ).fetchone()
    assert row == (len(workload.rows), 0, 0)


def test_search_by_meaning_splits_where_the_time_goes(e5_model_dir: Path) -> None:
    config = parse_args([*TINY, "--backends", "sqlite", *_local(e5_model_dir)])
    results = asyncio.run(run_benchmark(config))
    assert "multilingual-e5-small" in results.embedder and str(e5_model_dir) in results.embedder
    for op in OPERATIONS:
        for c in (1, 4):
            cell = results.cells[("sqlite", SIZE, op, c)]
            assert cell.done == 12 and cell.errors == 0, (op, c)
            embedding = cell.parts_ms.get(EMBEDDING, [])
            store = cell.parts_ms.get(STORE, [])
            if op in SEARCHES:
                # every search embedded its query once and asked the store once; by meaning it
                # always finds the recall limit (the nearest memories), whatever the words
                assert len(embedding) == len(store) == cell.done, (op, c)
                assert cell.results == RECALL_LIMIT * cell.done, (op, c)
            elif op in (STORE_NEW, STORE_EXISTING):
                assert len(embedding) == len(store) == cell.done, (op, c)  # the memory's
            else:
                assert embedding == [], (op, c)
            # the operations ran one at a time in each task: a part within its operation
            for part_ms in (embedding, store):
                if part_ms:
                    for q in (50, 99):
                        assert percentile(part_ms, q) <= percentile(cell.latencies_ms, q)
            if embedding and store:
                assert sum(embedding) + sum(store) <= sum(cell.latencies_ms)


def test_sqlite_table_by_meaning_prints_the_split_rows(
    e5_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY, "--backends", "sqlite", *_local(e5_model_dir)]) == 0
    out = capsys.readouterr().out
    header, rows, order = _table(out)
    assert header[3:] == ["SQLite p50", "SQLite p99", "SQLite mean", "SQLite ops/s"]
    assert "search by meaning and words" in out
    assert "embeddings local: `multilingual-e5-small" in out and str(e5_model_dir) in out
    for op in OPERATIONS:
        label = EMBEDDED_LABELS[op]
        parts = [PART_LABELS[(op, p)] for p in (EMBEDDING, STORE) if (op, p) in PART_LABELS]
        at = [i for i, name in enumerate(order) if name == label]
        assert len(at) == 2, (label, order)  # 1 task and 4 tasks
        for i in at:
            assert order[i + 1 : i + 1 + len(parts)] == parts  # its split right below it
        for tasks in ("1", "4"):
            p50, p99, mean, rate = rows[(label, tasks)]
            assert all(NUMBER.match(v) for v in (p50, p99, mean, rate)), rows[(label, tasks)]
            assert float(p50) <= float(p99)
            for part in parts:
                part_p50, part_p99, part_mean, part_rate = rows[(f"{label} {part}", tasks)]
                assert part_rate == "-"
                assert float(part_p50) <= float(part_p99)
                assert float(part_p50) <= float(p50) and float(part_p99) <= float(p99)
                assert float(part_mean) <= float(mean)


@pytest.mark.postgres
def test_sqlite_and_postgres_side_by_side(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--pg-dsn", pg_dsn, "--embeddings", "off"]) == 0
    out = capsys.readouterr().out
    header, rows, _ = _table(out)
    for backend in ("SQLite", "Postgres"):
        for column in ("p50", "p99", "mean", "ops/s"):
            assert f"{backend} {column}" in header
    assert header[-2:] == ["p50 SQLite/PG", "ops/s SQLite/PG"]
    _check_rows(rows, 10)
    assert "PostgreSQL 1" in out and "SQLite 3." in out
    assert "StorageError" not in out  # no operation failed


@pytest.mark.postgres
async def test_postgres_fill_stores_vectors_and_builds_the_index_again(pg_dsn: str) -> None:
    workload = _make(5)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "TRUNCATE caller_memory.memories, caller_memory.erasures, public.profiles "
            "RESTART IDENTITY CASCADE"
        )
        definition = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = $1", HNSW_INDEX
        )
        assert definition is not None  # the migrations made it (pgvector is there)
        index_seconds = await fill_postgres(pg_dsn, workload, MODEL_NAME)
        assert index_seconds > 0
        # the same index as the migrations define, with every row's vector in it
        assert (
            await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1", HNSW_INDEX)
            == definition
        )
        counts = await conn.fetchrow(
            "SELECT count(*) AS rows, count(embedding) AS vectors, "
            "count(*) FILTER (WHERE embedding_model = $1) AS named, "
            "count(said_on) AS days, count(context) AS contexts, "
            "min(vector_norm(embedding)) AS low, max(vector_norm(embedding)) AS high "
            "FROM caller_memory.memories",
            MODEL_NAME,
        )
        assert counts["rows"] == counts["vectors"] == counts["named"] == len(workload.rows)
        assert counts["days"] == len(workload.rows)
        assert counts["contexts"] == sum(1 for row in workload.rows if row[6] is not None)
        assert 0.9999 < counts["low"] <= counts["high"] < 1.0001
    finally:
        await conn.execute(
            "TRUNCATE caller_memory.memories, caller_memory.erasures, public.profiles "
            "RESTART IDENTITY CASCADE"
        )
        await conn.close()


@pytest.mark.postgres
def test_both_backends_by_meaning(
    pg_dsn: str, e5_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY, "--pg-dsn", pg_dsn, *_local(e5_model_dir)]) == 0
    out = capsys.readouterr().out
    header, rows, _ = _table(out)
    assert header[-2:] == ["p50 SQLite/PG", "ops/s SQLite/PG"]
    for op in OPERATIONS:
        for tasks in ("1", "4"):
            cells = rows[(EMBEDDED_LABELS[op], tasks)]
            assert all(NUMBER.match(cell) for cell in cells), cells
    assert "pgvector 0." in out and "vector index build s" in out
    # whether searches by meaning walked the vector index or scanned the caller's vectors
    scanned = r"the HNSW vector index was scanned [0-9,]+ times during [0-9,]+ searches"
    assert re.search(scanned, out), out
    assert "StorageError" not in out
