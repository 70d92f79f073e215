"""Smoke test of the turn-latency benchmark (bench/turn_latency_benchmark.py) at a tiny size.

It checks that the benchmark runs end to end through real `AgentSession`s, prints a row for
every hook variant, and that the delays it reports are LiveKit's own
`on_user_turn_completed_delay`, read from the user messages' metrics. It asserts nothing
about speed (that is what the benchmark itself is for).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from livekit.agents import llm

import caller_memory.voice.caller as caller_session_module
from bench.turn_latency_benchmark import (
    DELAY_KEY,
    OURS,
    SUMMARY,
    TABLE_HEADER,
    VARIANT_LABELS,
    VARIANTS,
    fill_store_file,
    main,
    parse_args,
    render,
    run_benchmark,
    run_call,
    spoken_turns,
)
from bench.workload import BenchAgent, benchmark_memory
from caller_memory import set_default_memory
from caller_memory.capture.writer import CaptureWriter
from caller_memory.stores.sqlite import SQLiteMemoryStore

SIZE = 60
TINY = [
    "--sizes",
    str(SIZE),
    "--turns",
    "6",
    "--calls",
    "2",
    "--warmup",
    "1",
    "--other-callers",
    "2",
    "--gap-ms",
    "0",
]
NUMBER = re.compile(r"^[0-9]+\.[0-9]{2}$")


def _rows(out: str) -> dict[str, list[str]]:
    """The main table's rows at SIZE, keyed by hook label."""
    assert out.count(TABLE_HEADER) == 1, out
    rows: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith(f"| {SIZE} | "):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if cells[1] in VARIANT_LABELS.values():
                rows[cells[1]] = cells[2:]
    return rows


def test_tiny_run_prints_every_hook_with_livekit_delays() -> None:
    patched = (caller_session_module.recall, caller_session_module.memory_block)
    capture = CaptureWriter.capture
    config = parse_args([*TINY, "--breakdown"])  # the probes patch the hook's functions
    results = run_benchmark(config, progress=lambda _m: None)
    assert results.breakdowns[SIZE].turns  # the probed call ran

    for variant in VARIANTS:
        run = results.runs[(SIZE, variant)]
        assert len(run.turns) == 6
        assert run.calls == 2
        for turn in run.turns:
            # the number reported is the one LiveKit put in the user message's metrics
            assert turn.metrics[DELAY_KEY] == turn.delay_s
            assert isinstance(turn.delay_s, float)
            assert turn.delay_s > 0
    # ours recalled something for the caller at least once; the summary never injects
    assert results.runs[(SIZE, OURS)].injected > 0
    assert results.runs[(SIZE, SUMMARY)].injected == 0
    # every spoken turn of the summary's hook was written by its blocking call
    assert results.runs[(SIZE, SUMMARY)].stored == 1 + 6  # the warm-up turn, then 6

    out = render(config, results)
    rows = _rows(out)
    assert set(rows) == set(VARIANT_LABELS.values())
    for cells in rows.values():
        turns, p50, p99, worst = cells[:4]
        assert turns == "6"
        assert all(NUMBER.match(v) for v in (p50, p99, worst)), cells
        assert 0 < float(p50) <= float(p99) <= float(worst)
    assert "p99 at 10,000 memories" not in out  # no such size in this run
    # the benchmark used its own memories: no process-wide one was built or installed
    assert set_default_memory(None) is None
    # and it put back everything its probes patched
    assert (caller_session_module.recall, caller_session_module.memory_block) == patched
    assert CaptureWriter.capture is capture


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--variants", "ours,summary"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {VARIANT_LABELS[OURS], VARIANT_LABELS[SUMMARY]}
    assert "Load avg (1 min)" in out


async def test_the_delay_is_livekits_measure_of_the_hook(tmp_path: Path) -> None:
    """A hook that sleeps 40 ms is reported as taking at least 40 ms: the metric the
    benchmark reads times the hook (a lower bound from our own sleep, not a speed check)."""

    class SlowHookAgent(BenchAgent):
        async def on_user_turn_completed(
            self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
        ) -> None:
            await asyncio.sleep(0.04)

    path = tmp_path / "slow.sqlite3"
    await asyncio.to_thread(
        fill_store_file, path, size=20, other_callers=1, other_share=0.5, seed=1
    )
    memory = benchmark_memory(SQLiteMemoryStore(path), tmp_path, max_utterances_per_caller=0)
    try:
        turns, _ = await run_call(OURS, memory, spoken_turns(3, 1), agent_cls=SlowHookAgent)
    finally:
        await memory.aclose()
    assert len(turns) == 3
    assert all(t.delay_s >= 0.04 for t in turns), [t.delay_s for t in turns]
