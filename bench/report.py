"""What the benchmarks' command lines and Markdown reports share.

- `positive_int_list` and `choice_list`: argparse types for comma-separated arguments
  (`--sizes 1000,100000`, `--backends sqlite,postgres`);
- `percentile`: the nearest-rank percentile every latency column uses; `ratio` for the
  columns that compare two of them;
- `report_head` and `report_tail`: a report's first lines (title, and the command that
  produced it) and last lines (the machine it ran on, and the total wall time).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "SQLITE_ENVIRONMENT",
    "choice_list",
    "percentile",
    "positive_int_list",
    "ratio",
    "report_head",
    "report_tail",
]

# How both benchmarks run SQLite (`SQLiteMemoryStore`'s production settings).
# The backends the benchmarks compare, and how their tables name them.
SQLITE = "sqlite"
POSTGRES = "postgres"
BACKENDS = (SQLITE, POSTGRES)
BACKEND_LABELS = {SQLITE: "SQLite", POSTGRES: "Postgres"}

SQLITE_ENVIRONMENT = f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)"


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def positive_int_list(text: str) -> list[int]:
    """`1000,100_000` -> [1000, 100000]; an argparse type."""
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def choice_list(choices: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated subset of `choices` (case-insensitive), named
    `what` in errors; the subset comes back in the order of `choices`, whatever was typed."""

    def parse(text: str) -> list[str]:
        values = [part.strip().lower() for part in text.split(",") if part.strip()]
        unknown = [v for v in values if v not in choices]
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"{what} are {', '.join(choices)}; got {text!r}")
        return [c for c in choices if c in values]

    return parse


# ------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def ratio(a: float, b: float, suffix: str = "") -> str:
    """`a / b` to two decimals (then `suffix`); "-" when either is missing or `b` is 0."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}{suffix}"


# ------------------------------------------------------------------------------------------
# The report around the tables
# ------------------------------------------------------------------------------------------


def report_head(title: str, script: str, argv: Sequence[str]) -> list[str]:
    """The title, then the command line (`script` run with `argv`) in a code block."""
    command = " ".join([f"$ .venv/bin/python {script}", *map(shlex.quote, argv)])
    return [f"## {title}", "", "```", command, "```", ""]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report_tail(environment: Sequence[str], total_seconds: float) -> list[str]:
    """The machine (CPUs, OS, Python, then `environment`) and the total wall time."""
    env = [
        f"{os.cpu_count()} CPUs ({_cpu_model()})",
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}",
        *environment,
    ]
    return ["Environment: " + ", ".join(env) + ".", f"Total wall time: {total_seconds:.1f} s."]
