"""Retrieval benchmark: the project's memory search against a plain BM25 peer.

Run from the repository root::

    .venv/bin/python -m bench.retrieval_benchmark            # 30 users, seed 2024
    .venv/bin/python -m bench.retrieval_benchmark --users 5 --seed 7 --misses 20

The data comes from `bench/retrieval_dataset.py` (long synthetic chats with scattered personal
facts and differently-worded questions labelled with their evidence utterances). For every user,
every utterance goes through the worker's real write path (`capture.rule_based.extract_memories`
then `MemoryManager.astore`, into a fresh `SQLiteMemoryStore`, with no cap on a caller's
utterances), and every question through
`MemoryManager.asearch(question, limit=10)` under that user's session. A question is a hit at k
when one of the first k memories returned is its evidence: the utterance memory whose value is
an evidence utterance, or a stable-fact memory (e.g. `favorite_color`) whose current value was
last written by an evidence utterance.

The peer is `rank_bm25.BM25Okapi` over the same user's utterances, tokenised by lowercasing and
splitting on non-word characters (no stemming, no stop words, no synonyms); documents scoring
zero are not returned, ties go to the newer utterance. Both are measured in the same run on the
same questions; the printed tables are Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rank_bm25 import BM25Okapi

from bench.retrieval_dataset import (
    DEFAULT_SEED,
    Dataset,
    UserChat,
    generate_dataset,
    lexical_overlap_share,
)
from caller_memory import MemoryCategory, MemoryKind, MemoryManager, session_user
from caller_memory.capture.rule_based import extract_memories
from caller_memory.stores.sqlite import SQLiteMemoryStore

KS = (5, 10)
SEARCH_LIMIT = max(KS)
PROJECT = "project"
BM25 = "bm25"
METHOD_LABELS = {
    PROJECT: "Project (`MemoryManager.asearch`, SQLite store)",
    BM25: "Plain BM25 (`rank_bm25.BM25Okapi`)",
}
BASE_MS = 1_700_000_000_000  # a fixed clock, so utterance keys are reproducible
STEP_MS = 60_000

_TOKEN_SPLIT = re.compile(r"\W+")


def bm25_tokens(text: str) -> list[str]:
    return [t for t in _TOKEN_SPLIT.split(text.lower()) if t]


@dataclass
class QuestionResult:
    user: str
    question: str
    fact_type: str
    changed: bool
    evidence: tuple[str, ...]
    rank: dict[str, int | None]  # method -> 1-based rank of the first evidence, or None
    top: dict[str, list[str]]  # method -> the values returned (for looking at misses)


@dataclass
class BenchmarkResult:
    dataset: Dataset
    questions: list[QuestionResult] = field(default_factory=list)
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    memories_stored: int = 0
    stable_memories: int = 0
    evidence_without_memory: int = 0
    ingest_seconds: float = 0.0
    total_seconds: float = 0.0

    def recall(self, method: str, k: int) -> float:
        return self.recall_of(self.questions, method, k)

    @staticmethod
    def recall_of(rows: Sequence[QuestionResult], method: str, k: int) -> float:
        """Share of `rows` with an evidence among `method`'s first k results."""
        if not rows:
            return 0.0
        return sum(1 for q in rows if (r := q.rank[method]) is not None and r <= k) / len(rows)

    def mean_latency_ms(self, method: str) -> float:
        values = self.latencies_ms.get(method) or [0.0]
        return statistics.fmean(values)


def _category_value(category: object) -> str:
    return MemoryCategory.parse(category).value


async def _run_user(manager: MemoryManager, user: UserChat, result: BenchmarkResult) -> None:
    # (category, key) -> index of the latest utterance that wrote it
    owner: dict[tuple[str, str], int] = {}
    produced: set[int] = set()
    with session_user(user.identity):
        started = time.perf_counter()
        for i, text in enumerate(user.utterances):
            for m in extract_memories(text, now_ms=BASE_MS + i * STEP_MS):
                await manager.astore(m.category, m.key, m.value, kind=m.kind)
                owner[(_category_value(m.category), m.key)] = i
                produced.add(i)
                result.memories_stored += 1
                if m.kind == MemoryKind.FACT:
                    result.stable_memories += 1
        result.ingest_seconds += time.perf_counter() - started

        evidence_ids = {i for q in user.questions for i in q.evidence}
        result.evidence_without_memory += len(evidence_ids - produced)

        corpus = [bm25_tokens(t) for t in user.utterances]
        bm25 = BM25Okapi(corpus)

        for q in user.questions:
            evidence = set(q.evidence)
            evidence_texts = {user.utterances[i] for i in evidence}

            t0 = time.perf_counter()
            memories = await manager.asearch(q.text, limit=SEARCH_LIMIT)
            result.latencies_ms[PROJECT].append((time.perf_counter() - t0) * 1000)
            project_rank = None
            for rank, mem in enumerate(memories, start=1):
                source = owner.get((_category_value(mem.category), mem.key))
                if mem.value in evidence_texts or source in evidence:
                    project_rank = rank
                    break

            t0 = time.perf_counter()
            scores = bm25.get_scores(bm25_tokens(q.text))
            order = sorted(
                (i for i in range(len(corpus)) if scores[i] > 0),
                key=lambda i: (-scores[i], -i),
            )[:SEARCH_LIMIT]
            result.latencies_ms[BM25].append((time.perf_counter() - t0) * 1000)
            bm25_rank = next((rank for rank, i in enumerate(order, start=1) if i in evidence), None)

            result.questions.append(
                QuestionResult(
                    user=user.identity,
                    question=q.text,
                    fact_type=q.fact_type,
                    changed=q.changed,
                    evidence=tuple(user.utterances[i] for i in q.evidence),
                    rank={PROJECT: project_rank, BM25: bm25_rank},
                    top={
                        PROJECT: [m.value for m in memories],
                        BM25: [user.utterances[i] for i in order],
                    },
                )
            )


async def run_benchmark(dataset: Dataset, db_dir: Path | None = None) -> BenchmarkResult:
    """Ingest every user's chat, ask every question, with both methods."""
    result = BenchmarkResult(dataset=dataset)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        store = SQLiteMemoryStore(Path(db_dir or tmp) / "bench-memories.sqlite3")
        try:
            manager = MemoryManager(store, max_utterances=None)
            for user in dataset.users:
                await _run_user(manager, user, result)
        finally:
            await store.aclose()
    result.total_seconds = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def _f(x: float) -> str:
    return f"{x:.3f}"


def format_report(result: BenchmarkResult, *, misses: int = 0) -> str:
    ds = result.dataset
    n_q = len(result.questions)
    lines = [
        f"## Retrieval benchmark (seed {ds.seed})",
        "",
        (
            f"Dataset: {len(ds.users)} users, {ds.n_utterances:,} utterances "
            f"({ds.role_count('evidence')} evidence, {ds.role_count('stale')} stale, "
            f"{ds.role_count('distractor')} distractors), {n_q:,} questions over "
            f"{len(ds.fact_types)} fact types; "
            f"{lexical_overlap_share(ds):.0%} of questions share a content word with their "
            "evidence."
        ),
        (
            f"Project ingestion: {result.memories_stored:,} memories written "
            f"({result.stable_memories:,} stable facts), "
            f"{result.evidence_without_memory} evidence utterances produced no memory; "
            f"{result.ingest_seconds:.1f} s."
        ),
        "",
        "| Method | Recall@5 | Recall@10 | Mean search latency |",
        "|---|---:|---:|---:|",
    ]
    for method in (PROJECT, BM25):
        lines.append(
            f"| {METHOD_LABELS[method]} | {_f(result.recall(method, 5))} "
            f"| {_f(result.recall(method, 10))} | {result.mean_latency_ms(method):.2f} ms |"
        )

    lines += [
        "",
        "### By fact type",
        "",
        "| Fact type | Questions | Project R@5 | Project R@10 | BM25 R@5 | BM25 R@10 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    by_type: dict[str, list[QuestionResult]] = defaultdict(list)
    for q in result.questions:
        by_type[q.fact_type].append(q)
    groups = sorted(by_type.items(), key=lambda kv: (result.recall_of(kv[1], PROJECT, 10), kv[0]))
    changed = [q for q in result.questions if q.changed]
    if changed:
        groups.append(("*(facts that changed: latest statement only)*", changed))
    for name, rows in groups:
        lines.append(
            f"| {name} | {len(rows)} "
            f"| {_f(result.recall_of(rows, PROJECT, 5))} "
            f"| {_f(result.recall_of(rows, PROJECT, 10))} "
            f"| {_f(result.recall_of(rows, BM25, 5))} "
            f"| {_f(result.recall_of(rows, BM25, 10))} |"
        )

    if misses:
        missed = [q for q in result.questions if q.rank[PROJECT] is None]
        lines += ["", f"### Project misses at 10 (first {min(misses, len(missed))})", ""]
        for q in missed[:misses]:
            top = q.top[PROJECT][:3]
            lines.append(f"- [{q.fact_type}] {q.question!r} -> evidence {list(q.evidence)!r}")
            lines.append(f"  project top 3: {top!r}; BM25 rank: {q.rank[BM25]}")

    lines += ["", f"Total run time: {result.total_seconds:.1f} s."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=30, help="number of users (default 30)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="dataset seed")
    parser.add_argument("--min-utterances", type=int, default=200)
    parser.add_argument("--max-utterances", type=int, default=400)
    parser.add_argument("--min-facts", type=int, default=15)
    parser.add_argument("--max-facts", type=int, default=25)
    parser.add_argument(
        "--misses", type=int, default=0, help="also list this many questions the project missed"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    dataset = generate_dataset(
        args.users,
        args.seed,
        utterances=(args.min_utterances, args.max_utterances),
        facts=(args.min_facts, args.max_facts),
    )
    result = asyncio.run(run_benchmark(dataset))
    print(format_report(result, misses=args.misses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
