"""Smoke test of the storage benchmark (bench/storage_benchmark.py) at a tiny size.

It checks that the benchmark runs end to end and prints every operation for every backend;
it asserts nothing about speed (that is what the benchmark itself is for).
"""

from __future__ import annotations

import re

import pytest

from bench.report import percentile
from bench.storage_benchmark import (
    OPERATION_LABELS,
    SEARCH,
    STABLE_FACTS,
    Workload,
    build_workload,
    main,
)
from bench.workload import build_vocabulary

TINY = ["--sizes", "200", "--ops", "12", "--concurrency", "1,4", "--other-users", "3"]
NUMBER = re.compile(r"^[0-9][0-9,]*(\.[0-9]+)?$")


def _table(out: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """The main table's header cells, and its rows keyed by (operation, tasks)."""
    lines = [line for line in out.splitlines() if line.startswith("| N (caller) | Operation")]
    assert len(lines) == 1, out
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows: dict[tuple[str, str], list[str]] = {}
    for line in out.splitlines():
        if line.startswith("| 200 | "):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if cells[1] in OPERATION_LABELS.values():
                rows[(cells[1], cells[2])] = cells[3:]
    return header, rows


def _check_rows(rows: dict[tuple[str, str], list[str]], columns: int) -> None:
    expected = {(label, tasks) for label in OPERATION_LABELS.values() for tasks in ("1", "4")}
    assert set(rows) == expected
    for cells in rows.values():
        assert len(cells) == columns
        assert all(NUMBER.match(cell) for cell in cells), cells


def test_workload_is_deterministic_and_one_caller_among_many() -> None:
    vocabulary = build_vocabulary()
    assert len(vocabulary.words) == len(set(vocabulary.words)) >= 3000

    def make(seed: int) -> Workload:
        return build_workload(
            vocabulary,
            seed=seed,
            size=200,
            other_users=3,
            other_share=0.5,
            ops=5,
            concurrency=[1, 4],
        )

    a, b = make(7), make(7)
    assert a.rows == b.rows and a.cells == b.cells
    assert a.rows != make(8).rows
    assert len(a.user_ids) == 4 and a.user_ids[0] == a.measured_user
    assert sum(1 for row in a.rows if row[0] == a.measured_user) == 200
    assert len(a.rows) == 200 + 3 * 100
    keys = [row[2] for row in a.rows if row[0] == a.measured_user]
    assert keys[: len(STABLE_FACTS)] == [key for _, key, _ in STABLE_FACTS]
    assert all(key.startswith("utterance_") for key in keys[len(STABLE_FACTS) :])
    assert all(len(args) == 1 and args[0].strip() for args in a.cells[(SEARCH, 1)])


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_sqlite_table_lists_every_operation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--backends", "sqlite"]) == 0
    out = capsys.readouterr().out
    header, rows = _table(out)
    assert header[3:] == ["SQLite p50", "SQLite p99", "SQLite mean", "SQLite ops/s"]
    _check_rows(rows, 4)
    assert "SQLite 3." in out
    assert "Total wall time:" in out


@pytest.mark.postgres
def test_sqlite_and_postgres_side_by_side(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--pg-dsn", pg_dsn]) == 0
    out = capsys.readouterr().out
    header, rows = _table(out)
    for backend in ("SQLite", "Postgres"):
        for column in ("p50", "p99", "mean", "ops/s"):
            assert f"{backend} {column}" in header
    assert header[-2:] == ["p50 SQLite/PG", "ops/s SQLite/PG"]
    _check_rows(rows, 10)
    assert "PostgreSQL 1" in out and "SQLite 3." in out
    assert "StorageError" not in out  # no operation failed
