"""Retrieval benchmark: the worker's memory search against stemmed BM25, dense and hybrid.

Run from the repository root::

    .venv/bin/python -m bench.retrieval_benchmark --embeddings off
    .venv/bin/python -m bench.retrieval_benchmark --embeddings local \\
        --model-dir data/models/multilingual-e5-small
    .venv/bin/python -m bench.retrieval_benchmark --embeddings off --users 2 --limit 1  # small

The data (bench/retrieval_dataset.py, bench/retrieval_data/) was written before any tuning for
issue 11 and is split by caller into a TUNING split and a HELD-OUT split: the generated
conversational set (30 long chats, frozen by a checksum), a hand-written paraphrase set (facts
said without the words a question uses), a hand-written multilingual set (Spanish, Hindi, Urdu,
Russian) and hand-written update cases ("blue then green"). The held-out split is never used to
choose anything: the one thing this benchmark chooses, the hybrid weight, is chosen on the
tuning split, and the misses it can list (`--misses`) are tuning misses.

For every caller, every utterance goes through the worker's capture path into a fresh embedded
SQLite store (`--backend postgres`: a throwaway Postgres cluster with the real migrations and
pgvector) of a real `CallerMemory` (built by `CallerMemory.from_settings`, with
`MEMORY_EMBEDDINGS` as `--embeddings` says): the rule-based extraction, then
`MemoryManager.astore` with the time the caller said it (each call of a caller is its own
session) and, where the manager takes them, the agent's line before it (`context`) and
`said_at`. Every question then goes through `MemoryManager.asearch(question, limit=10)` under
that caller. Methods, side by side on the same questions:

- **project**: the worker's own search, as it is when the benchmark runs;
- **bm25**: `rank_bm25.BM25Okapi` over the caller's utterances, words (letters, digits and
  combining marks) lower-cased and stemmed by Snowball for the caller's language (English,
  Spanish, Hindi, Russian; Urdu has no Snowball stemmer and is left unstemmed), no stop words,
  no synonyms; zero scores are not returned;
- **dense** (with an embedder): cosine of the question's and each utterance's embeddings;
- **hybrid** (with an embedder): w * cosine + (1 - w) * BM25, each min-max normalised over the
  caller's utterances for that question; w from a grid, chosen on the tuning split (the grid is
  printed).

Ties go to the newer utterance. A question is a hit at k when one of the first k results is one
of its answers: for the project, the utterance memory holding an answer's words, or a stable-fact
memory (e.g. `favorite_color`) last written by an answer. For the update cases the superseded
value is tracked too: the share of questions whose current value ranks above it (or is returned
while it is not). The tables are Markdown, with the command line in the header.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import shlex
import sys
import tempfile
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import snowballstemmer
from rank_bm25 import BM25Okapi

from bench.retrieval_dataset import (
    DEFAULT_FACTS,
    DEFAULT_SEED,
    DEFAULT_USERS,
    DEFAULT_UTTERANCES,
    HELD_OUT,
    SET_NAMES,
    SPLITS,
    TUNING,
    Caller,
    CallerQuestion,
    conversational_callers,
    load_handwritten,
    split_digest,
)
from caller_memory import CallerMemory, MemoryCategory, MemoryKind, session_user
from caller_memory.capture.rule_based import extract_memories
from caller_memory.settings import MemorySettings
from caller_memory.types import Memory, MemoryDetails, Statement

if TYPE_CHECKING:
    from caller_memory.embeddings import Embedder
    from caller_memory.stores.base import MemoryStore

KS = (5, 10)
SEARCH_LIMIT = max(KS)
PROJECT = "project"
SQLITE = "sqlite"
BACKEND_LABELS = {SQLITE: "SQLite", "postgres": "Postgres + pgvector (throwaway cluster)"}
BM25 = "bm25"
DENSE = "dense"
HYBRID = "hybrid"
METHOD_LABELS = {
    PROJECT: "Project (`MemoryManager.asearch`)",
    BM25: "Stemmed BM25",
    DENSE: "Dense (cosine)",
    HYBRID: "Hybrid (BM25 + cosine)",
}
HYBRID_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # weight of the cosine
# A fixed clock, so that keys and dates are reproducible: calls three days apart, 30 s a turn.
BASE_TIME_S = 1_767_603_600.0  # 2026-01-05 09:00 UTC
CALL_GAP_S = 3 * 86_400.0
TURN_GAP_S = 30.0
SNOWBALL_LANGUAGES = {"en": "english", "es": "spanish", "hi": "hindi", "ru": "russian"}
LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "hi": "Hindi",
    "ur": "Urdu",
    "ru": "Russian",
    "ja": "Japanese",
}
# (A version of the package from before issue 11 has no such setting: the benchmark runs on it
# too, with --embeddings off, to measure what the issue changes.)
_MODEL_DIR_SETTING = MemorySettings.model_fields.get("embedding_model_dir")
DEFAULT_MODEL_DIR = Path(
    _MODEL_DIR_SETTING.default if _MODEL_DIR_SETTING else "data/models/multilingual-e5-small"
)

FloatArray = npt.NDArray[np.float32]


# ------------------------------------------------------------------------------------------
# Lexical baseline: words with their combining marks, stemmed per language
# ------------------------------------------------------------------------------------------

_JOINERS = frozenset("\u200c\u200d")  # ZWNJ / ZWJ: inside Urdu, Persian and Indic words


def lexical_words(text: str) -> list[str]:
    """Lower-cased words: runs of letters, digits and combining marks (a Hindi vowel sign or
    an Urdu diacritic stays in its word), NFC-normalised."""
    words: list[str] = []
    current: list[str] = []
    for ch in unicodedata.normalize("NFC", text).casefold():
        if unicodedata.category(ch)[0] in "LNM" or (ch in _JOINERS and current):
            current.append(ch)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words


@cache
def _stemmer(language: str) -> Any:
    algorithm = SNOWBALL_LANGUAGES.get(language)
    return snowballstemmer.stemmer(algorithm) if algorithm else None


def bm25_tokens(text: str, language: str) -> list[str]:
    """The stemmed words BM25 indexes (Snowball for `language`; unstemmed where it has no
    stemmer)."""
    words = lexical_words(text)
    stemmer = _stemmer(language)
    return list(stemmer.stemWords(words)) if stemmer is not None else words


# ------------------------------------------------------------------------------------------
# The project: a real CallerMemory on an embedded SQLite store
# ------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _category_value(category: object) -> str:
    return MemoryCategory.parse(category).value


@dataclass
class CaptureStats:
    turns: Counter[str] = field(default_factory=Counter)  # language -> turns
    silent_turns: Counter[str] = field(default_factory=Counter)  # language -> no memory
    silent_facts: Counter[str] = field(default_factory=Counter)  # language -> fact, no memory
    memories: int = 0
    stable_facts: int = 0
    passes_context: bool = False
    passes_said_at: bool = False


class ProjectUnderTest:
    """The worker's memory as a caller meets it: `CallerMemory.from_settings` with an embedded
    SQLite store (or `store`: Postgres); capture as the session's writer does it (rule-based
    extraction, then `astore` with capture and session times); search through
    `MemoryManager.asearch`."""

    def __init__(
        self,
        directory: Path,
        *,
        embeddings: str,
        model_dir: Path,
        store: MemoryStore | None = None,
    ) -> None:
        settings = MemorySettings.model_construct(
            sqlite_path=directory / "bench-memories.sqlite3",
            spool_dir=directory / "spool",
            max_utterances_per_caller=0,  # no cap: long chats keep every utterance
            embeddings=embeddings,
            embedding_model_dir=model_dir,
        )
        self.memory = (
            CallerMemory.from_settings(settings)
            if store is None
            else CallerMemory(store=store, settings=settings)
        )
        self.manager = self.memory.manager
        accepted = inspect.signature(self.manager.astore).parameters
        # Issue 11 adds these to `astore`; passed as soon as the manager takes them.
        self.passes_context = "context" in accepted
        self.passes_said_at = "said_at" in accepted
        self.passes_details = "details" in accepted
        # (identity, category, key) -> the turn that last wrote it
        self._owner: dict[tuple[str, str, str], int] = {}
        self._turn_of_value: dict[tuple[str, str], int] = {}

    @staticmethod
    def identity(caller: Caller) -> str:
        return f"{caller.set_name}:{caller.identity}"

    async def ingest(self, caller: Caller, stats: CaptureStats) -> None:
        identity = self.identity(caller)
        calls = sorted({t.call for t in caller.turns})
        for call in calls:
            started = BASE_TIME_S + call * CALL_GAP_S
            with session_user(identity):
                for i, turn in enumerate(caller.turns):
                    if turn.call != call:
                        continue
                    said_at = started + i * TURN_GAP_S
                    wrote = await self._capture(
                        identity, i, turn.text, turn.context, said_at, started
                    )
                    stats.turns[caller.language] += 1
                    stats.memories += wrote[0]
                    stats.stable_facts += wrote[1]
                    if not wrote[0]:
                        stats.silent_turns[caller.language] += 1
                        if turn.role == "fact":
                            stats.silent_facts[caller.language] += 1
                    self._turn_of_value.setdefault((identity, _norm(turn.text)), i)
        stats.passes_context = self.passes_context
        stats.passes_said_at = self.passes_said_at

    async def _capture(
        self, identity: str, index: int, text: str, context: str, said_at: float, started: float
    ) -> tuple[int, int]:
        extra: dict[str, Any] = {}
        if self.passes_context and context:
            extra["context"] = context
        if self.passes_said_at:
            extra["said_at"] = said_at
        memories = stable = 0
        captured = extract_memories(text, now_ms=int(said_at * 1000))
        # as the session's writer stores them: where in which call, and the facts an
        # utterance states (so that a fact changed later supersedes its old words)
        states = tuple(
            Statement(m.category.value, m.key, m.value)
            for m in captured
            if m.kind == MemoryKind.FACT
        )
        for m in captured:
            if self.passes_details:
                extra["details"] = MemoryDetails(
                    session_id=f"{identity}@{started:.0f}",
                    turn_index=index,
                    states=states if m.kind == MemoryKind.UTTERANCE else (),
                )
            await self.manager.astore(
                m.category,
                m.key,
                m.value,
                kind=m.kind,
                captured_at=said_at,
                session_started_at=started,
                **extra,
            )
            self._owner[(identity, _category_value(m.category), m.key)] = index
            memories += 1
            stable += m.kind == MemoryKind.FACT
        return memories, stable

    async def search(self, caller: Caller, question: str) -> list[Memory]:
        with session_user(self.identity(caller)):
            return await self.manager.asearch(question, limit=SEARCH_LIMIT)

    def turns_of(self, caller: Caller, memories: Sequence[Memory]) -> list[int | None]:
        """The caller's turn behind each returned memory (None: none of theirs)."""
        identity = self.identity(caller)
        out: list[int | None] = []
        for mem in memories:
            turn = self._turn_of_value.get((identity, _norm(mem.value)))
            if turn is None or not mem.is_utterance:
                owner = self._owner.get((identity, _category_value(mem.category), mem.key))
                turn = owner if owner is not None else turn
            out.append(turn)
        return out

    async def aclose(self) -> None:
        await self.memory.aclose()


# ------------------------------------------------------------------------------------------
# Running it
# ------------------------------------------------------------------------------------------


@dataclass
class QuestionResult:
    set_name: str
    caller: str
    language: str
    split: str
    qtype: str
    text: str
    answers: tuple[int, ...]
    superseded: tuple[int, ...]
    # method -> 1-based rank of the first answer / superseded turn in the first SEARCH_LIMIT
    rank: dict[str, int | None] = field(default_factory=dict)
    superseded_rank: dict[str, int | None] = field(default_factory=dict)
    top: dict[str, list[str]] = field(default_factory=dict)  # method -> first 3 results
    # per-utterance scores the hybrid is built from (with an embedder), dropped afterwards
    lexical: FloatArray | None = None
    cosine: FloatArray | None = None

    def hit(self, method: str, k: int) -> bool:
        r = self.rank.get(method)
        return r is not None and r <= k

    def current_above_superseded(self, method: str) -> bool:
        r, s = self.rank.get(method), self.superseded_rank.get(method)
        return r is not None and (s is None or r < s)


@dataclass
class GridRow:
    weight: float
    recall: dict[str, tuple[float, float]]  # set -> (R@5, R@10) on the tuning split
    score: tuple[float, float]  # macro-average over sets of (R@10, R@5)


@dataclass
class BenchmarkResult:
    callers: tuple[Caller, ...]
    frozen: bool
    methods: tuple[str, ...]
    embedder: str | None
    backend: str = SQLITE
    questions: list[QuestionResult] = field(default_factory=list)
    capture: CaptureStats = field(default_factory=CaptureStats)
    grid: list[GridRow] = field(default_factory=list)
    hybrid_weight: float | None = None
    seconds: float = 0.0

    def select(self, **where: str) -> list[QuestionResult]:
        return [q for q in self.questions if all(getattr(q, k) == v for k, v in where.items())]


def recall(rows: Sequence[QuestionResult], method: str, k: int) -> float:
    """Share of `rows` with an answer among `method`'s first k results (0 for no rows)."""
    return sum(q.hit(method, k) for q in rows) / len(rows) if rows else 0.0


def _first_rank(order: Sequence[int | None], wanted: Iterable[int]) -> int | None:
    targets = set(wanted)
    return next((r for r, i in enumerate(order, start=1) if i is not None and i in targets), None)


def _top_order(scores: FloatArray, *, positive_only: bool) -> list[int | None]:
    """Indexes of the SEARCH_LIMIT best scores, ties to the newer utterance."""
    candidates = [i for i in range(len(scores)) if not positive_only or scores[i] > 0]
    candidates.sort(key=lambda i: (-float(scores[i]), -i))
    return list(candidates[:SEARCH_LIMIT])


def _min_max(scores: FloatArray) -> FloatArray:
    lo, hi = float(scores.min(initial=0.0)), float(scores.max(initial=0.0))
    if hi - lo <= 1e-12:
        return np.zeros_like(scores)
    return ((scores - lo) / (hi - lo)).astype(np.float32)


def hybrid_scores(lexical: FloatArray, cosine: FloatArray, weight: float) -> FloatArray:
    """weight * normalised cosine + (1 - weight) * normalised BM25."""
    return (weight * _min_max(cosine) + (1.0 - weight) * _min_max(lexical)).astype(np.float32)


def _rank_with(q: QuestionResult, method: str, order: Sequence[int | None]) -> None:
    q.rank[method] = _first_rank(order, q.answers)
    q.superseded_rank[method] = _first_rank(order, q.superseded)


async def _run_caller(
    project: ProjectUnderTest,
    caller: Caller,
    result: BenchmarkResult,
    embedder: Embedder | None,
) -> None:
    await project.ingest(caller, result.capture)
    texts = [t.text for t in caller.turns]
    bm25 = BM25Okapi([bm25_tokens(t, caller.language) for t in texts])
    passages = questions_vec = None
    if embedder is not None:
        passages = np.stack(await embedder.embed_documents(texts)).astype(np.float32)
        questions_vec = np.stack(
            [await embedder.embed_query(q.text) for q in caller.questions]
        ).astype(np.float32)
    for n, cq in enumerate(caller.questions):
        q = _new_result(caller, cq)
        memories = await project.search(caller, cq.text)
        _rank_with(q, PROJECT, project.turns_of(caller, memories))
        q.top[PROJECT] = [m.value for m in memories[:3]]

        lexical = np.asarray(bm25.get_scores(bm25_tokens(cq.text, caller.language)), np.float32)
        order = _top_order(lexical, positive_only=True)
        _rank_with(q, BM25, order)
        q.top[BM25] = [texts[i] for i in order[:3] if i is not None]

        if passages is not None and questions_vec is not None:
            cosine = (passages @ questions_vec[n]).astype(np.float32)
            order = _top_order(cosine, positive_only=False)
            _rank_with(q, DENSE, order)
            q.top[DENSE] = [texts[i] for i in order[:3] if i is not None]
            q.lexical, q.cosine = lexical, cosine
        result.questions.append(q)


def _new_result(caller: Caller, cq: CallerQuestion) -> QuestionResult:
    return QuestionResult(
        set_name=caller.set_name,
        caller=caller.identity,
        language=caller.language,
        split=caller.split,
        qtype=cq.qtype,
        text=cq.text,
        answers=cq.answers,
        superseded=cq.superseded,
    )


def choose_hybrid_weight(tuning: Sequence[QuestionResult]) -> tuple[float, list[GridRow]]:
    """The cosine weight with the best macro-average over sets of R@10 (then R@5, then the
    smaller weight) on `tuning`: pass it tuning questions only."""
    if any(q.split != TUNING for q in tuning):
        raise ValueError("the hybrid weight is chosen on the tuning split only")
    rows: list[GridRow] = []
    by_set: dict[str, list[QuestionResult]] = defaultdict(list)
    for q in tuning:
        by_set[q.set_name].append(q)
    for weight in HYBRID_GRID:
        per_set: dict[str, tuple[float, float]] = {}
        for name, qs in sorted(by_set.items()):
            hits5 = hits10 = 0
            for q in qs:
                assert q.lexical is not None and q.cosine is not None
                order = _top_order(hybrid_scores(q.lexical, q.cosine, weight), positive_only=False)
                r = _first_rank(order, q.answers)
                hits5 += r is not None and r <= 5
                hits10 += r is not None
            per_set[name] = (hits5 / len(qs), hits10 / len(qs))
        n = max(len(per_set), 1)
        score = (
            sum(v[1] for v in per_set.values()) / n,
            sum(v[0] for v in per_set.values()) / n,
        )
        rows.append(GridRow(weight, per_set, score))
    best = max(rows, key=lambda r: (r.score, -r.weight)) if rows else None
    return (best.weight if best else 0.5), rows


async def run_benchmark(
    callers: Sequence[Caller],
    *,
    embeddings: str = "off",
    model_dir: Path = DEFAULT_MODEL_DIR,
    embedder: Embedder | None = None,
    frozen: bool = False,
    db_dir: Path | None = None,
    backend: str = SQLITE,
) -> BenchmarkResult:
    """Ingest every caller, ask every question, with every method. `embedder` (required for
    dense and hybrid) is the benchmark's own; `embeddings`/`model_dir` configure the project's
    `CallerMemory` (its `MEMORY_EMBEDDINGS` / `MEMORY_EMBEDDING_MODEL_DIR`); `backend` its
    store: an embedded SQLite file, or a throwaway Postgres cluster with the real migrations."""
    methods = (PROJECT, BM25) + ((DENSE, HYBRID) if embedder is not None else ())
    result = BenchmarkResult(
        callers=tuple(callers),
        frozen=frozen,
        methods=methods,
        embedder=embedder.name if embedder is not None else None,
        backend=backend,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        async with _store(backend) as store:
            project = ProjectUnderTest(
                Path(db_dir or tmp), embeddings=embeddings, model_dir=model_dir, store=store
            )
            try:
                for caller in callers:
                    await _run_caller(project, caller, result, embedder)
            finally:
                await project.aclose()
    if embedder is not None:
        tuning = [q for q in result.questions if q.split == TUNING]
        result.hybrid_weight, result.grid = choose_hybrid_weight(tuning)
        for q in result.questions:
            assert q.lexical is not None and q.cosine is not None
            scores = hybrid_scores(q.lexical, q.cosine, result.hybrid_weight)
            order = _top_order(scores, positive_only=False)
            _rank_with(q, HYBRID, order)
    for q in result.questions:
        q.lexical = q.cosine = None
    result.seconds = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


@asynccontextmanager
async def _store(backend: str) -> AsyncIterator[MemoryStore | None]:
    """None for SQLite (the settings' own file); for Postgres, a store on a new migrated
    database of a throwaway cluster, logged in as Supabase's service key is (dropped after)."""
    if backend == SQLITE:
        yield None
        return
    from bench.workload import postgres_database
    from caller_memory.testing.postgres import throwaway_cluster

    async with AsyncExitStack() as stack:
        cluster = stack.enter_context(throwaway_cluster("retrieval-bench-pg-"))
        database = await stack.enter_async_context(
            postgres_database(cluster, None, "retrieval_bench")
        )
        yield database.store()


def _f(x: float) -> str:
    return f"{x:.3f}"


def _recall_header(methods: Sequence[str], first: str) -> list[str]:
    cells = [first, "Questions"]
    for m in methods:
        cells += [f"{m} R@5", f"{m} R@10"]
    return [
        "| " + " | ".join(cells) + " |",
        "|---|" + "---:|" * (len(cells) - 1),
    ]


def _recall_row(name: str, rows: Sequence[QuestionResult], methods: Sequence[str]) -> str:
    cells = [name, str(len(rows))]
    for m in methods:
        cells += [_f(recall(rows, m, 5)), _f(recall(rows, m, 10))]
    return "| " + " | ".join(cells) + " |"


def _language(code: str) -> str:
    return f"{LANGUAGE_NAMES.get(code, code)} ({code})"


def _grouped(
    rows: Iterable[QuestionResult], key: Callable[[QuestionResult], str]
) -> list[tuple[str, list[QuestionResult]]]:
    groups: dict[str, list[QuestionResult]] = defaultdict(list)
    for q in rows:
        groups[key(q)].append(q)
    return sorted(groups.items())


def _split_section(result: BenchmarkResult, split: str) -> list[str]:
    methods = result.methods
    rows = result.select(split=split)
    title = "Held-out split (report these)" if split == HELD_OUT else "Tuning split"
    lines = [f"### {title}", ""]
    if not rows:
        return [*lines, "No questions in this split.", ""]
    lines += ["By set:", "", *_recall_header(methods, "Set")]
    for name, qs in _grouped(rows, lambda q: q.set_name):
        lines.append(_recall_row(name, qs, methods))
    lines.append(_recall_row("**all**", rows, methods))
    lines += ["", "By language (every set):", "", *_recall_header(methods, "Language")]
    for code, qs in _grouped(rows, lambda q: q.language):
        lines.append(_recall_row(_language(code), qs, methods))
    multilingual = [q for q in rows if q.set_name == "multilingual"]
    if multilingual:
        lines += ["", "Multilingual set, by language:", "", *_recall_header(methods, "Language")]
        for code, qs in _grouped(multilingual, lambda q: q.language):
            lines.append(_recall_row(_language(code), qs, methods))
    lines += ["", "By question type:", "", *_recall_header(methods, "Set / type")]
    for name, qs in _grouped(rows, lambda q: f"{q.set_name} / {q.qtype}"):
        lines.append(_recall_row(name, qs, methods))
    lines.append("")
    return lines


def _updates_section(result: BenchmarkResult) -> list[str]:
    methods = result.methods
    cells = ["Split", "Set", "Questions"]
    for m in methods:
        cells += [f"{m} current@10", f"{m} current above old", f"{m} old in top 10"]
    lines = [
        "### Updates: the current value against the superseded one",
        "",
        "Questions about a fact that changed (the update set, and the generated set's facts "
        "that changed). *current@10*: the current value is in the first 10; *current above "
        "old*: it is, and ranks above every superseded statement (or none is returned); *old "
        "in top 10*: a superseded statement is returned.",
        "",
        "| " + " | ".join(cells) + " |",
        "|---|---|" + "---:|" * (len(cells) - 2),
    ]
    for split in (HELD_OUT, TUNING):
        for name, qs in _grouped(result.select(split=split), lambda q: q.set_name):
            changed = [q for q in qs if q.superseded]
            if not changed:
                continue
            row = [split, name, str(len(changed))]
            for m in methods:
                row += [
                    _f(recall(changed, m, 10)),
                    _f(sum(q.current_above_superseded(m) for q in changed) / len(changed)),
                    _f(sum(q.superseded_rank.get(m) is not None for q in changed) / len(changed)),
                ]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def _data_section(result: BenchmarkResult) -> list[str]:
    lines = [
        "### Data",
        "",
        "| Set | Split | Callers | Utterances | Questions | Languages |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name in SET_NAMES:
        for split in SPLITS:
            cs = [c for c in result.callers if c.set_name == name and c.split == split]
            if not cs:
                continue
            langs = Counter(c.language for c in cs for _ in c.questions)
            lines.append(
                f"| {name} | {split} | {len(cs)} | {sum(len(c.turns) for c in cs):,} "
                f"| {sum(len(c.questions) for c in cs):,} "
                f"| {', '.join(f'{k} {v}' for k, v in sorted(langs.items()))} |"
            )
    cap = result.capture
    lines += [
        "",
        f"Split checksum (sha256 of set/caller/split): `{split_digest(result.callers)[:16]}`.",
        "",
        "Project capture: "
        f"{cap.memories:,} memories written ({cap.stable_facts:,} stable facts); "
        f"`context` {'passed' if cap.passes_context else 'not taken by astore'}, "
        f"`said_at` {'passed' if cap.passes_said_at else 'not taken by astore'}.",
        "",
        "| Language | Utterances | Kept no memory | Fact utterances that kept no memory |",
        "|---|---:|---:|---:|",
    ]
    for code in sorted(cap.turns):
        lines.append(
            f"| {_language(code)} | {cap.turns[code]:,} | {cap.silent_turns[code]:,} "
            f"| {cap.silent_facts[code]:,} |"
        )
    lines.append("")
    return lines


def _grid_section(result: BenchmarkResult) -> list[str]:
    if not result.grid:
        return []
    sets = sorted({s for row in result.grid for s in row.recall})
    cells = ["Cosine weight", *[f"{s} R@10" for s in sets], "macro R@10", "macro R@5"]
    lines = [
        "### Hybrid weight, chosen on the tuning split",
        "",
        "Grid over the weight of the cosine (0 = BM25 only, 1 = cosine only), scored on the "
        "tuning split only by the average over sets of R@10 (then R@5, then the smaller "
        f"weight). Chosen: **{result.hybrid_weight}**.",
        "",
        "| " + " | ".join(cells) + " |",
        "|" + "---:|" * len(cells),
    ]
    for row in result.grid:
        mark = " ←" if row.weight == result.hybrid_weight else ""
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{row.weight}{mark}",
                    *[_f(row.recall[s][1]) for s in sets],
                    _f(row.score[0]),
                    _f(row.score[1]),
                ]
            )
            + " |"
        )
    lines.append("")
    return lines


def format_report(result: BenchmarkResult, *, command: str, misses: int = 0) -> str:
    methods = ", ".join(f"**{m}** = {METHOD_LABELS[m]}" for m in result.methods)
    data = (
        "the frozen data (bench/retrieval_data/, written before tuning)"
        if result.frozen
        else "NOT the frozen default data (other generator parameters or --limit)"
    )
    lines = [
        "## Retrieval benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Data: {data}. Methods: {methods}; the project's store: {BACKEND_LABELS[result.backend]}. "
        + (
            f"Embedder for dense and hybrid: {result.embedder}."
            if result.embedder
            else "No embedder (`--embeddings off`): dense and hybrid not run."
        ),
        "",
        *_data_section(result),
        *_split_section(result, HELD_OUT),
        *_split_section(result, TUNING),
        *_updates_section(result),
        *_grid_section(result),
    ]
    if misses:
        missed = [q for q in result.select(split=TUNING) if not q.hit(PROJECT, SEARCH_LIMIT)]
        lines += [f"### Project misses at 10, tuning split only (first {min(misses, len(missed))})"]
        lines.append("")
        for q in missed[:misses]:
            lines.append(f"- [{q.set_name}/{q.language}/{q.qtype}] {q.text!r}")
            lines.append(f"  project top 3: {q.top.get(PROJECT)!r}; BM25 rank: {q.rank[BM25]}")
        lines.append("")
    lines.append(f"Total run time: {result.seconds:.1f} s.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--embeddings",
        choices=("off", "local"),
        default="local",
        help="the embedder: local (the model in --model-dir, for dense, hybrid and the "
        "project's MEMORY_EMBEDDINGS) or off (lexical only). Default: local",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help=f"the local embedding model (ONNX + tokenizer.json); default {DEFAULT_MODEL_DIR}",
    )
    parser.add_argument(
        "--backend",
        choices=tuple(BACKEND_LABELS),
        default=SQLITE,
        help="the project's store: sqlite (an embedded file) or postgres (a throwaway "
        "cluster with the real migrations and pgvector). Default: sqlite",
    )
    parser.add_argument(
        "--sets",
        default=",".join(SET_NAMES),
        help=f"comma-separated sets to run (default: all of {', '.join(SET_NAMES)})",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=DEFAULT_USERS,
        help=f"generated users (default {DEFAULT_USERS}: the frozen set)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument("--min-utterances", type=int, default=DEFAULT_UTTERANCES[0])
    parser.add_argument("--max-utterances", type=int, default=DEFAULT_UTTERANCES[1])
    parser.add_argument("--min-facts", type=int, default=DEFAULT_FACTS[0])
    parser.add_argument("--max-facts", type=int, default=DEFAULT_FACTS[1])
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="at most this many callers of each hand-written set per language and split (0: all)",
    )
    parser.add_argument(
        "--misses",
        type=int,
        default=0,
        help="also list this many questions the project missed (tuning split only)",
    )
    return parser


def load_callers(args: argparse.Namespace) -> tuple[tuple[Caller, ...], bool]:
    """The callers `args` select, and whether they are the whole frozen data."""
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - set(SET_NAMES))
    if unknown:
        raise SystemExit(f"unknown set {unknown[0]!r}; the sets are {', '.join(SET_NAMES)}")
    callers: list[Caller] = []
    frozen = args.limit == 0 and set(sets) == set(SET_NAMES)
    for name in SET_NAMES:
        if name not in sets:
            continue
        if name == "conversational":
            generated, is_frozen = conversational_callers(
                args.users,
                args.seed,
                utterances=(args.min_utterances, args.max_utterances),
                facts=(args.min_facts, args.max_facts),
            )
            callers += generated
            frozen = frozen and is_frozen
            continue
        kept: Counter[tuple[str, str]] = Counter()
        for caller in load_handwritten(name):
            group = (caller.language, caller.split)
            if args.limit and kept[group] >= args.limit:
                continue
            kept[group] += 1
            callers.append(caller)
    return tuple(callers), frozen


def benchmark_embedder(embeddings: str, model_dir: Path) -> Embedder | None:
    """The benchmark's own embedder for dense and hybrid: the package's, as `MEMORY_EMBEDDINGS`
    and `MEMORY_EMBEDDING_MODEL_DIR` select it (None for off). Raises `EmbeddingSetupError`
    saying what to do when the model's files are missing."""
    if embeddings == "off":
        return None  # (imported here: the benchmark also runs on versions without embeddings)
    from caller_memory.embeddings import embedder_from_settings

    settings = MemorySettings.model_construct(embeddings=embeddings, embedding_model_dir=model_dir)
    return embedder_from_settings(settings)


async def _run(
    callers: Sequence[Caller],
    args: argparse.Namespace,
    embedder: Embedder | None,
    frozen: bool,
) -> BenchmarkResult:
    try:
        return await run_benchmark(
            callers,
            embeddings=args.embeddings,
            model_dir=args.model_dir,
            embedder=embedder,
            frozen=frozen,
            backend=args.backend,
        )
    finally:
        if embedder is not None:
            await embedder.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    callers, frozen = load_callers(args)
    embedder: Embedder | None = None
    if args.embeddings != "off":
        from caller_memory.embeddings import EmbeddingSetupError

        try:
            embedder = benchmark_embedder(args.embeddings, args.model_dir)
        except EmbeddingSetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    result = asyncio.run(_run(callers, args, embedder, frozen))
    command = shlex.join([".venv/bin/python", "-m", "bench.retrieval_benchmark", *argv])
    print(format_report(result, command=command, misses=args.misses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
