"""Smoke test of the session throughput benchmark (bench/session_throughput_benchmark.py) at a
tiny size, searching by meaning with the real test model (`e5_model_dir`) as the product does
by default, and by words only; and of its event-loop lag meter. Nothing here asserts a
speed."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from bench.session_throughput_benchmark import MEASURES, GcPauses, LoopLagMeter, main

NUMBER = r"[0-9][0-9,]*(\.[0-9]+)?"
TINY = ["--concurrency", "1,3", "--turns", "2", "--min-sessions", "2"]


def table(out: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """The header cells, and the rows keyed by (concurrent sessions, measure)."""
    [header] = [line for line in out.splitlines() if line.startswith("| Concurrent sessions |")]
    rows: dict[tuple[str, str], list[str]] = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows[(cells[0], cells[1])] = cells[2:]
    return [c.strip() for c in header.strip("|").split("|")], rows


def check(out: str, backends: list[str]) -> dict[tuple[str, str], list[str]]:
    header, rows = table(out)
    assert header == ["Concurrent sessions", "Measure", *backends]
    assert set(rows) == {(c, label) for c in ("1", "3") for label, _ in MEASURES}
    for (concurrency, label), cells in rows.items():
        assert len(cells) == len(backends)
        for cell in cells:
            assert re.fullmatch(rf"{NUMBER}( / {NUMBER})?|{NUMBER} \({NUMBER}\)|\d+/\d+", cell), (
                label,
                cell,
            )
        if label.startswith("starts without the store"):
            sessions = {"1": 2, "3": 3}[concurrency]  # the 1-session level ran twice
            assert all(cell.endswith(f"/{sessions}") for cell in cells)
        if label.startswith("memories captured"):
            # every turn says something worth keeping: at least its utterance
            sessions = {"1": 2, "3": 3}[concurrency]
            assert all(int(cell.split()[0].replace(",", "")) >= sessions * 2 for cell in cells)
    assert "Environment:" in out
    return rows


def _local(e5_model_dir: Path) -> list[str]:
    return ["--embeddings", "local", "--model-dir", str(e5_model_dir)]


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_sqlite(
    e5_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY, "--backends", "sqlite", *_local(e5_model_dir)]) == 0
    out = capsys.readouterr().out
    check(out, ["SQLite"])
    assert "embeddings local: `multilingual-e5-small" in out and str(e5_model_dir) in out


@pytest.mark.slow
def test_benchmark_runs_by_words_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--backends", "sqlite", "--embeddings", "off"]) == 0
    out = capsys.readouterr().out
    check(out, ["SQLite"])
    assert "embeddings off (search by words only)" in out


@pytest.mark.slow
@pytest.mark.postgres
def test_benchmark_runs_end_to_end_on_both_backends(
    pg_dsn: str, e5_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*TINY, "--backends", "sqlite,postgres", "--pg-dsn", pg_dsn, *_local(e5_model_dir)]
    assert main(argv) == 0
    rows = check(capsys.readouterr().out, ["SQLite", "Postgres"])
    # nothing had to be spooled at this size: the store answered every write in time
    assert rows[("3", "memories captured (of them spooled, replayed later)")][1].endswith("(0)")


async def test_lag_meter_sees_a_blocked_loop() -> None:
    meter = LoopLagMeter()
    meter.start()
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # noqa: ASYNC251 -- what a blocking database call does to the loop
    await asyncio.sleep(0.05)
    stats = await meter.stop()
    assert stats.samples >= 5
    assert stats.max >= 0.15
    assert stats.p50 < 0.05


def test_gc_pauses_are_recorded() -> None:
    with GcPauses() as pauses:
        import gc

        gc.collect()
    assert pauses.pauses and pauses.pauses[-1][0] == 2
