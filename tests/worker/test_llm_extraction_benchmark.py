"""The LLM fact-extraction benchmark (bench/llm_extraction_benchmark.py) at a tiny size.

It runs end to end through the real capture writer and store, and its table agrees with
itself: a row per call, the batches each call must make, totals that add up, every request
at least as large as the part every request repeats. It asserts nothing about speed.
"""

from __future__ import annotations

import json
import math

import pytest

from bench.llm_extraction_benchmark import (
    CALLERS,
    TABLE_HEADER,
    TOKENS_PER_MESSAGE,
    load_tokenizer,
    main,
)
from caller_memory.capture.llm_extractor import RECORD_CHANGES_SCHEMA, SYSTEM_PROMPT

CALLS = len(CALLERS) + 1  # every caller's first call, then the first caller's second
TURNS = 5
EVERY = 2


def test_the_benchmark_reports_requests_and_tokens_per_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--calls", str(CALLS), "--turns", str(TURNS), "--every", str(EVERY)]) == 0
    report = capsys.readouterr().out
    lines = report.splitlines()
    start = lines.index(TABLE_HEADER) + 2
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start:]]
    rows = rows[: next(i for i, r in enumerate(rows) if r == [""])]
    calls, total, mean = rows[:-2], rows[-2], rows[-1]

    assert [r[0] for r in calls] == [str(n) for n in range(1, CALLS + 1)]
    assert [r[1] for r in calls][-1] == f"{CALLERS[0].language}, call 2"
    tokenizer = load_tokenizer()
    fixed = tokenizer.count(SYSTEM_PROMPT) + TOKENS_PER_MESSAGE
    fixed += tokenizer.count(json.dumps(RECORD_CHANGES_SCHEMA, ensure_ascii=False))
    for row in calls:
        turns, requests, tokens_in, tokens_out, chars_in, chars_out = map(int, row[2:8])
        assert turns == TURNS
        # a request per EVERY caller messages, the last one at the end of the call
        assert requests == math.ceil(TURNS / EVERY)
        assert tokens_in > requests * fixed and chars_in > tokens_in
        assert 0 < tokens_out and tokens_out < chars_out
    # the returning caller's second call changed something the first stored
    assert int(calls[-1][8]) > 0 and int(calls[-1][9]) > 0
    for column in range(2, 9):
        assert int(total[column]) == sum(int(r[column]) for r in calls)
    assert float(mean[3]) == pytest.approx(int(total[3]) / CALLS)
    assert tokenizer.name in report


def test_it_refuses_sizes_it_cannot_run() -> None:
    for argv in (["--turns", "13"], ["--calls", "0"], ["--every", "0"]):
        with pytest.raises(SystemExit):
            main(argv)
