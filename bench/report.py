"""What the benchmarks' command lines and Markdown reports share.

- `positive_int_list` and `choice_list`: argparse types for comma-separated arguments
  (`--sizes 1000,100000`, `--backends sqlite,postgres`); `add_workload_options` and
  `add_store_options`: the options several benchmarks take (sizes, other callers, seed;
  backends, concurrency, an existing database);
- `percentile`: the nearest-rank percentile every latency column uses; `ratio` for the
  columns that compare two of them;
- `report_head` and `report_tail`: a report's first lines (title, and the command that
  produced it) and last lines (the machine it ran on, and the total wall time).

The benchmarks run as modules from the repository root, with the package installed
(`.venv/bin/python -m bench.storage_benchmark`); they import `caller_memory` and each other,
never the tests.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from caller_memory import MemorySettings

__all__ = [
    "BACKENDS",
    "BACKEND_LABELS",
    "DEFAULT_RECALL_BUDGET_MS",
    "POSTGRES",
    "SQLITE",
    "SQLITE_ENVIRONMENT",
    "add_store_options",
    "add_workload_options",
    "choice_list",
    "percentile",
    "positive_int_list",
    "ratio",
    "report_head",
    "report_tail",
]

# The backends the benchmarks compare, and how their tables name them.
SQLITE = "sqlite"
POSTGRES = "postgres"
BACKENDS = (SQLITE, POSTGRES)
BACKEND_LABELS = {SQLITE: "SQLite", POSTGRES: "Postgres"}

# The recall budget a worker has unless `MEMORY_RECALL_BUDGET_MS` says otherwise.
DEFAULT_RECALL_BUDGET_MS: float = MemorySettings.model_construct().recall_budget_ms

# How the benchmarks run SQLite (`SQLiteMemoryStore`'s production settings).
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


def _not_negative(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
        return value

    return parse


def _listed(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


def add_workload_options(
    parser: argparse.ArgumentParser,
    *,
    sizes: Sequence[int],
    others: str,
    other_count: int,
    other_share: float,
    seed: int,
) -> None:
    """`--sizes` (the measured caller's memories), `--<others>` (how many other callers the
    store holds) and `--other-share` (their memories each, as a share of the measured
    caller's), and `--seed`."""
    parser.add_argument(
        "--sizes",
        type=positive_int_list,
        default=list(sizes),
        help=f"memories of the measured caller, comma-separated (default: {_listed(sizes)})",
    )
    parser.add_argument(
        f"--{others}",
        type=_not_negative(int),
        default=other_count,
        help=f"other callers in the store (default: {other_count})",
    )
    parser.add_argument(
        "--other-share",
        type=_not_negative(float),
        default=other_share,
        help=f"each other caller's memories as a share of the measured caller's "
        f"(default: {other_share:g})",
    )
    parser.add_argument("--seed", type=int, default=seed, help=f"(default: {seed})")


def add_store_options(
    parser: argparse.ArgumentParser, *, concurrency: Sequence[int], concurrent: str
) -> None:
    """`--backends` (SQLite first, whatever was typed, for the ratio columns), `--concurrency`
    (how many `concurrent` things at once, per level) and `--pg-dsn`."""
    parser.add_argument(
        "--backends",
        type=choice_list(BACKENDS, "backends"),
        default=list(BACKENDS),
        help=f"comma-separated: {', '.join(BACKENDS)} (default: all)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int_list,
        default=list(concurrency),
        help=f"{concurrent} at once, comma-separated levels (default: {_listed(concurrency)})",
    )
    parser.add_argument(
        "--pg-dsn",
        default=None,
        help="use this migrated database (as its owner) instead of a throwaway cluster; its "
        "memories, erasures and profiles are TRUNCATED",
    )


# ------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of `values` (in any order); nan for none."""
    ordered = sorted(values)  # linear for values already sorted
    if not ordered:
        return math.nan
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def ratio(a: float, b: float, suffix: str = "") -> str:
    """`a / b` to two decimals (then `suffix`); "-" when either is missing or `b` is 0."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}{suffix}"


# ------------------------------------------------------------------------------------------
# The report around the tables
# ------------------------------------------------------------------------------------------


def report_head(title: str, module: str, argv: Sequence[str]) -> list[str]:
    """The title, then the command line (the benchmark `module` run with `argv`) in a code
    block."""
    command = " ".join([f"$ .venv/bin/python -m {module}", *map(shlex.quote, argv)])
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
