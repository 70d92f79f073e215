"""Turn-latency benchmark: what the memory hook adds to a spoken turn, in LiveKit's own metric.

Run from the repository root::

    .venv/bin/python -m bench.turn_latency_benchmark                   # 100, 10,000, 100,000
    .venv/bin/python -m bench.turn_latency_benchmark --sizes 100,10000 --turns 100

`Agent.on_user_turn_completed` is awaited between the end of the caller's speech and the
reply, and livekit-agents times it itself (`time.perf_counter()` around the await, in
`AgentActivity._user_turn_completed_impl`) and reports it as `on_user_turn_completed_delay`,
in the user `ChatMessage.metrics` of every spoken turn (and in the end-of-utterance metrics).
That number, read from each user message as LiveKit adds it to the conversation, is what this
benchmark reports. Nothing here times the hook itself.

For every size N the benchmark fills one fresh SQLite file (`SQLiteMemoryStore`, WAL,
synchronous=NORMAL, the production defaults) in bulk, through the store's own connection:

- the measured caller holds N memories: 16 stable facts (PRESENTATION/name "Sam",
  PREFERENCE/favorite_color "green", RELATIONSHIP/dog_name "Biscuit", FACT/home_town "Porto",
  ...) and N - 16 conversational utterances under `utterance_<ms>_<hash>` keys, as the capture
  writes them: everyday sentence frames ("I went to the {} with my {} ...") whose content words
  are drawn from `bench/workload.py`'s 4,000-word Zipf vocabulary (common words in many
  memories, most words in very few);
- `--other-callers` other callers (default 20) hold `--other-share` x N memories each (default
  0.2, so the others together hold 4 x N rows): the caller is one among many, and every index
  holds other people's data. They have the same stable keys with other values.

Then each hook variant gets its own copy of that file, its own `CallerMemory` on it (every
setting at its default, whatever the environment says, except that the per-caller cap on
utterances is off: it would delete the caller's oldest rows) and real `AgentSession`s:
livekit-agents' real audio-recognition path (`FakeAudioInput` frames -> `FakeSTT` -> STT turn
detection -> `on_user_turn_completed` -> `FakeScriptedLLM` reply; no VAD, no TTS, default
preemptive generation), each started by `CallerMemory.attach` exactly as the worker starts a
caller, with a `MemoryAgent` that greets first. The `--turns` measured spoken turns (the
same sentences for every variant) are spread over `--calls` calls (sessions) per variant, and
the calls rotate between the variants (ours, summary, summary + recall; then summary,
summary + recall, ours; ...) so that a change in the machine's load hits every variant alike.
Each variant's first call starts with `--warmup` unmeasured turns (connections, pages, code
paths; in production the memory and its store are process-wide and outlive calls, as they
do here). The turns: ~30% about the caller's stable facts
("What's my favourite colour again?", "I took Biscuit to the beach this morning"), ~50%
everyday chatter from the same frames and vocabulary as the stored utterances, ~20% small
talk ("Okay.", "Yeah, thanks."). Each turn waits for its reply, then for the caller's pending
memory writes and `--gap-ms` (a real caller listens to the reply for seconds before speaking
again).

Variants:

- **ours**: `MemoryAgent`'s hook as in production: budgeted recall (`recall.recall`, started
  at the final transcript, in the session's context, on the store's thread pool; default 50 ms
  budget), a context edit only when something was recalled, then a non-blocking
  `CaptureWriter.capture`.
- **summary**: the design summary's hook: categorise the message and store it as
  `user_input_<ms>` with a blocking call on the event loop thread, no recall. The store is the
  same SQLite file, but every operation runs inline on the calling thread
  (`LoopBlockingSQLiteStore`: `_run` calls `_run_sync` directly), as the original's
  synchronous Supabase client did. The session's write-behind capture is closed, so the
  hook's write is the only one.
- **summary + recall**: the same, plus a blocking recall (search, context edit) before the
  write: the same work as ours, done the summary's way. Not bounded by any budget: a blocking
  call cannot be timed out.

Output: one Markdown table (size x variant: p50, p99, max of `on_user_turn_completed_delay` in
ms, p50/p99 ratios to ours, turns whose reply context got a recalled-memories block, recall
budget misses), the target line "p99 at 10,000 memories: X ms (target < 15 ms)", the fill
times, the machine's load average and the environment. p99 is nearest-rank: with 200 turns it
is the second-largest value. The benchmark measures wall time on whatever else the machine is
running: compare the load average column before trusting a tail.

`--breakdown` adds one more probed call of ours per size (not counted in the main table) and
prints where its hook spends the time: task spawn, query building, the hop to the store's
thread, the FTS5 search itself, the hop back, the context edit and the capture.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import logging
import math
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from livekit.agents import __version__ as livekit_agents_version
from livekit.agents import llm

import caller_memory.voice.caller as caller_session_module
from bench.report import (
    DEFAULT_RECALL_BUDGET_MS,
    SQLITE_ENVIRONMENT,
    add_workload_options,
    choice_list,
    percentile,
    ratio,
    report_head,
    report_tail,
)
from bench.workload import (
    BASE_TIME,
    BenchAgent,
    MemoryRow,
    Vocabulary,
    benchmark_memory,
    build_vocabulary,
    bulk_insert,
    sqlite_timestamp,
)
from caller_memory import CallerMemory, CallerSession, MemoryKind, livekit_identity_to_uuid
from caller_memory.capture.rule_based import categorize
from caller_memory.capture.writer import CaptureWriter
from caller_memory.recall.block import BLOCK_PREAMBLE, BLOCK_START, memory_block
from caller_memory.recall.recall import RECALL_LIMIT, without_repeats
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeAudioInput,
    FakeScriptedLLM,
    FakeSTT,
    spoken_session,
    start_caller,
    user_texts,
)

T = TypeVar("T")

OURS = "ours"
SUMMARY = "summary"
SUMMARY_RECALL = "summary+recall"
VARIANTS = (OURS, SUMMARY, SUMMARY_RECALL)
VARIANT_LABELS = {
    OURS: "ours (budgeted recall + write-behind)",
    SUMMARY: "summary (blocking write)",
    SUMMARY_RECALL: "summary + blocking recall",
}

DEFAULT_SIZES = (100, 10_000, 100_000)
DEFAULT_TURNS = 200
DEFAULT_WARMUP = 5
DEFAULT_CALLS = 4
DEFAULT_OTHER_CALLERS = 20
DEFAULT_OTHER_SHARE = 0.2
DEFAULT_GAP_MS = 30.0
DEFAULT_SEED = 2024
TARGET_SIZE = 10_000
TARGET_P99_MS = 15.0
REPLY_TIMEOUT_S = 15.0
DELAY_KEY = "on_user_turn_completed_delay"

CALLER_IDENTITY = "bench-turn-caller"

# ------------------------------------------------------------------------------------------
# Data: the stored memories and the spoken turns
# ------------------------------------------------------------------------------------------

# The measured caller's stable facts, under the keys and categories the capture rules write.
CALLER_FACTS: tuple[tuple[str, str, str], ...] = (
    ("PRESENTATION", "name", "Sam"),
    ("PRESENTATION", "pronouns", "she/her"),
    ("FACT", "home_town", "Porto"),
    ("FACT", "lives_in", "Lisbon"),
    ("FACT", "job", "nurse at the children's hospital"),
    ("FACT", "employer", "St. Mary's"),
    ("FACT", "birthday", "March 3rd"),
    ("FACT", "allergy_peanuts", "allergic to peanuts"),
    ("RELATIONSHIP", "wife_name", "Ana"),
    ("RELATIONSHIP", "dog_name", "Biscuit"),
    ("RELATIONSHIP", "mother_name", "Lucia"),
    ("RELATIONSHIP", "has_children", "has two kids"),
    ("PREFERENCE", "favorite_color", "green"),
    ("PREFERENCE", "favorite_food", "grilled sardines"),
    ("PREFERENCE", "favorite_band", "Madredeus"),
    ("PREFERENCE", "opinion_of_jazz", "loves jazz"),
)

# Other callers' values for the same keys (each other caller takes one of each, by index).
OTHER_VALUES: dict[str, tuple[str, ...]] = {
    "name": ("Alex", "Priya", "Tom", "Mei", "Jonas", "Fatima", "Leo", "Grace"),
    "pronouns": ("he/him", "they/them", "she/her"),
    "home_town": ("Leeds", "Lyon", "Osaka", "Cork", "Austin", "Gdansk"),
    "lives_in": ("Manchester", "Berlin", "Toronto", "Madrid", "Oslo"),
    "job": ("teacher", "plumber", "software developer", "chef", "accountant", "pilot"),
    "employer": ("Acme", "the city council", "a small bakery", "the local school"),
    "birthday": ("June 12th", "January 30th", "October 2nd", "May 19th"),
    "allergy_peanuts": ("allergic to peanuts",),
    "wife_name": ("Maria", "Julia", "Sofia", "Emma"),
    "dog_name": ("Rex", "Luna", "Pepper", "Max", "Nala"),
    "mother_name": ("Helen", "Rosa", "Ingrid", "Aiko"),
    "has_children": ("has one son", "has no children", "has three daughters"),
    "favorite_color": ("blue", "red", "purple", "yellow", "black"),
    "favorite_food": ("ramen", "lasagne", "tacos", "dumplings", "curry"),
    "favorite_band": ("Radiohead", "ABBA", "Daft Punk", "Fleetwood Mac"),
    "opinion_of_jazz": ("hates jazz", "likes jazz", "dislikes jazz"),
}

# Everyday sentence frames; {} are content words drawn from the Zipf vocabulary.
FRAMES: tuple[str, ...] = (
    "I went to the {} with my {} and we talked about {} for hours.",
    "Yesterday the {} was so {} that I forgot about the {}.",
    "My {} keeps asking me about {} and {}.",
    "We had {} and {} at the {} last weekend.",
    "Honestly I think {} is better than {}.",
    "I've been trying to get into {} but the {} makes it hard.",
    "Did I ever tell you about the {} at the {}?",
    "I can't stop thinking about that {} and the {}.",
    "This morning I saw a {} near the {}, it was {}.",
    "My friend says I should try {} before the {}.",
    "I'm a bit {} about the {} next week.",
    "We finally fixed the {} in the {}.",
    "The {} was {} again today, so I stayed in with some {}.",
    "I bought a new {} for the {} and a {} for myself.",
    "Remember when I said the {} was {}? It still is.",
    "I spent the whole evening on {} and {}.",
)

# What the measured caller says about their stable facts (questions and statements).
FACT_TURNS: tuple[str, ...] = (
    "What's my favourite colour again?",
    "Do you remember what my dog is called?",
    "Where did I grow up?",
    "Can you remind me what I do for a living?",
    "I took Biscuit to the beach this morning.",
    "Ana and I are thinking about a trip to Kyoto.",
    "What do you call me?",
    "I'm grilling sardines for dinner tonight.",
    "My mother called me yesterday about her garden.",
    "Do you know when my birthday is?",
    "I've been listening to a lot of jazz lately.",
    "Work at the hospital was exhausting today.",
    "Green is still my favourite colour, by the way.",
    "Remind me, what food do I love?",
    "My kids want a second dog.",
    "We might move out of Lisbon next year.",
    "Is there anything with peanuts I should avoid at the party?",
    "I put on some Madredeus while cooking.",
)

SMALL_TALK: tuple[str, ...] = (
    "Okay.",
    "Yeah, thanks.",
    "Hmm, let me think.",
    "Sure, go on.",
    "Right.",
    "Ha, that's funny.",
    "Oh really?",
    "Thanks, that helps.",
)


class TextGenerator:
    """Deterministic utterances and turns from the Zipf vocabulary."""

    def __init__(self, vocabulary: Vocabulary, rng: random.Random) -> None:
        self.vocab = vocabulary
        self.rng = rng

    def content_word(self) -> str:
        return self.vocab.content_word(self.rng)

    def utterance(self) -> str:
        return self.framed_utterance()[1]

    def framed_utterance(self) -> tuple[str, str]:
        frame = self.rng.choice(FRAMES)
        return frame, frame.format(*(self.content_word() for _ in range(frame.count("{}"))))

    def turn(self) -> str:
        roll = self.rng.random()
        if roll < 0.3:
            return self.rng.choice(FACT_TURNS)
        if roll < 0.5:
            return self.rng.choice(SMALL_TALK)
        return self.utterance()


def caller_rows(
    gen: TextGenerator, user_id: str, count: int, facts: Sequence[tuple[str, str, str]]
) -> Iterator[MemoryRow]:
    """(user_id, category, key, value, created_at, updated_at, kind) rows of one caller,
    lazily: its facts, then its utterances."""
    facts = facts[: min(count, len(facts))]
    for i, (category, key, value) in enumerate(facts):
        when = sqlite_timestamp(BASE_TIME - timedelta(days=400 - i))
        yield (user_id, category, key, value, when, when, MemoryKind.FACT)
    n_utterances = count - len(facts)
    for n in range(n_utterances):
        when_dt = BASE_TIME - timedelta(seconds=(n_utterances - n) * 90)
        frame, text = gen.framed_utterance()
        ms = int(when_dt.timestamp() * 1000)
        key = f"utterance_{ms}_{hashlib.sha1(f'{n}:{text}'.encode()).hexdigest()[:8]}"
        category = frame_category(frame, text)
        when = sqlite_timestamp(when_dt)
        yield (user_id, category, key, text, when, when, MemoryKind.UTTERANCE)


_FRAME_CATEGORIES: dict[str, str] = {}


def frame_category(frame: str, text: str) -> str:
    """The capture's category (`rule_based.categorize`) of the frame's first utterance.

    Categorising every one of 500,000 utterances would double the fill time; the category
    only breaks ties in search ranking, and it is the frame's wording that decides it.
    """
    category = _FRAME_CATEGORIES.get(frame)
    if category is None:
        category = _FRAME_CATEGORIES[frame] = categorize(text).value
    return category


def other_facts(n: int) -> list[tuple[str, str, str]]:
    facts = []
    for category, key, _ in CALLER_FACTS:
        values = OTHER_VALUES[key]
        facts.append((category, key, values[(n * 7 + len(key)) % len(values)]))
    return facts


@dataclass
class Fill:
    size: int
    rows: int
    seconds: float
    mb: float


def fill_store_file(
    path: Path, *, size: int, other_callers: int, other_share: float, seed: int
) -> Fill:
    """A fresh store file with the measured caller's `size` memories among other callers'."""
    started = time.perf_counter()
    gen = TextGenerator(build_vocabulary(), random.Random(f"turn-latency:{seed}:{size}"))
    caller = livekit_identity_to_uuid(CALLER_IDENTITY)
    others = [livekit_identity_to_uuid(f"bench-turn-other-{n:03d}") for n in range(other_callers)]
    per_other = max(round(size * other_share), 1) if other_callers else 0
    rows = [0]

    def counted(it: Iterator[MemoryRow]) -> Iterator[MemoryRow]:
        for row in it:
            rows[0] += 1
            yield row

    def fill(conn: sqlite3.Connection) -> None:
        profiles: list[tuple[str, str | None]] = [(caller, CALLER_IDENTITY)]
        profiles += [(o, f"bench-turn-other-{n:03d}") for n, o in enumerate(others)]
        # the caller's rows interleaved with the others', as they would arrive over time
        streams = [caller_rows(gen, caller, size, CALLER_FACTS)]
        streams += [caller_rows(gen, o, per_other, other_facts(n)) for n, o in enumerate(others)]
        interleaved = (
            row for batch in itertools.zip_longest(*streams) for row in batch if row is not None
        )
        bulk_insert(conn, profiles, counted(interleaved), optimize=True)

    async def run() -> None:
        store = SQLiteMemoryStore(path)
        try:
            await store._run(fill)
        finally:
            await store.aclose()

    asyncio.run(run())
    return Fill(size, rows[0], time.perf_counter() - started, path.stat().st_size / 1e6)


def spoken_turns(count: int, seed: int) -> list[str]:
    """The caller's sentences, the same for every size and variant."""
    gen = TextGenerator(build_vocabulary(), random.Random(f"turn-latency-turns:{seed}"))
    return [gen.turn() for _ in range(count)]


# ------------------------------------------------------------------------------------------
# The hook variants
# ------------------------------------------------------------------------------------------


class LoopBlockingSQLiteStore(SQLiteMemoryStore):
    """The SQLite store with every operation run inline on the calling thread.

    Called from the agent, that is the event loop thread: the stand-in for the design
    summary's synchronous Supabase client called inside the hook. `await store.op(...)` runs
    the whole query before it returns and never yields to the loop.
    """

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._run_sync(fn)


class SummaryAgent(BenchAgent):
    """The design summary's hook: categorise the message, store it with a blocking call.

    Everything else (instructions, greeting, tools) is the production agent's. Runs on a
    memory whose store is a `LoopBlockingSQLiteStore`, so each store call blocks the event
    loop.
    """

    recall_in_hook = False

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        text = new_message.text_content
        caller = self.caller
        if not text or caller is None:
            return
        manager = caller.memory.manager
        if self.recall_in_hook:
            found = await manager.asearch(text, limit=RECALL_LIMIT)
            memories = without_repeats(found, [*user_texts(turn_ctx), text])
            if memories:
                turn_ctx.add_message(role="assistant", content=memory_block(memories))
        # [MEMORY CATEGORIZATION] ... then [MEMORY STORED] [INTEREST] user_input_<ms> = text
        category = categorize(text)
        await manager.astore(category, f"user_input_{int(time.time() * 1000)}", text)


class SummaryRecallAgent(SummaryAgent):
    """The summary's hook plus a blocking recall: the same work as ours, blocking."""

    recall_in_hook = True


AGENT_CLASSES: dict[str, type[BenchAgent]] = {
    OURS: BenchAgent,
    SUMMARY: SummaryAgent,
    SUMMARY_RECALL: SummaryRecallAgent,
}
STORE_CLASSES: dict[str, type[SQLiteMemoryStore]] = {
    OURS: SQLiteMemoryStore,
    SUMMARY: LoopBlockingSQLiteStore,
    SUMMARY_RECALL: LoopBlockingSQLiteStore,
}


def variant_memory(variant: str, path: Path, work_dir: Path) -> CallerMemory:
    """The memory of `variant`'s calls: on the store file `path`, with the store class of the
    variant, no cap on the caller's utterances (it would delete the caller's oldest rows, the
    very data measured) and its own spool in `work_dir`."""
    store = STORE_CLASSES[variant](path)
    return benchmark_memory(store, work_dir / path.stem, max_utterances_per_caller=0)


# ------------------------------------------------------------------------------------------
# Driving spoken turns through a real AgentSession
# ------------------------------------------------------------------------------------------


class _RecallMisses(logging.Handler):
    """Counts recall's "budget ran out" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "budget ran out" in record.getMessage():
            self.count += 1


@dataclass
class Turn:
    text: str
    delay_s: float  # LiveKit's on_user_turn_completed_delay, from the user message's metrics
    injected: bool  # a reply request of this turn carried the hook's recalled-memories block
    budget_miss: bool  # the recall budget ran out during this turn
    metrics: dict[str, Any]  # the user message's metrics, as LiveKit filled them in


@dataclass
class VariantRun:
    """Every measured turn of one variant at one size, over all its calls."""

    variant: str
    size: int
    turns: list[Turn] = field(default_factory=list)
    seconds: float = 0.0
    calls: int = 0
    stored: int = 0  # the caller's rows in the store file after the calls, minus before

    @property
    def delays_ms(self) -> list[float]:
        return sorted(t.delay_s * 1000 for t in self.turns)

    @property
    def p50(self) -> float:
        return percentile(self.delays_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.delays_ms, 99)

    @property
    def max(self) -> float:
        return self.delays_ms[-1] if self.turns else math.nan

    @property
    def injected(self) -> int:
        return sum(t.injected for t in self.turns)

    @property
    def budget_misses(self) -> int:
        return sum(t.budget_miss for t in self.turns)


def _has_hook_block(chat_ctx: llm.ChatContext) -> bool:
    return any(
        isinstance(item, llm.ChatMessage)
        and item.role == "assistant"
        and (item.text_content or "").startswith(f"{BLOCK_START}\n{BLOCK_PREAMBLE}\n")
        for item in chat_ctx.items
    )


def _caller_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT count(*) FROM memories WHERE user_id = ?",
            (livekit_identity_to_uuid(CALLER_IDENTITY),),
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


async def _wait_for_reply(replies: list[str], event: asyncio.Event, text: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLY_TIMEOUT_S
    while text not in replies:
        event.clear()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"no reply {text!r} within {REPLY_TIMEOUT_S:g} s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), remaining)
    replies.remove(text)


async def run_call(
    variant: str,
    memory: CallerMemory,
    texts: Sequence[str],
    *,
    warmup: int = 0,
    gap_s: float = DEFAULT_GAP_MS / 1000,
    agent_cls: type[BenchAgent] | None = None,
) -> tuple[list[Turn], float]:
    """One call of the caller, attached to `memory`: speak `texts`, the first `warmup`
    unmeasured.

    Returns the measured turns and the call's wall time. `memory` (and its store) is left
    open: the worker's memory outlives its calls.
    """
    misses = _RecallMisses()
    recall_logger = logging.getLogger("caller_memory.recall")
    previous_level = recall_logger.level
    recall_logger.setLevel(logging.WARNING)
    recall_logger.addHandler(misses)
    fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
    # as the tests' spoken sessions: turns end at the STT's end of speech, then the hook
    session = spoken_session(fake_llm, fake_stt)
    user_messages: list[llm.ChatMessage] = []
    replies: list[str] = []
    reply_event = asyncio.Event()

    def on_item(event: Any) -> None:
        item = event.item
        if not isinstance(item, llm.ChatMessage):
            return
        if item.role == "user":
            user_messages.append(item)
        elif item.role == "assistant":
            replies.append(item.text_content or "")
            reply_event.set()

    session.on("conversation_item_added", on_item)
    turns: list[Turn] = []
    started_at = time.perf_counter()
    caller: CallerSession | None = None
    try:
        agent = agent_cls or AGENT_CLASSES[variant]
        caller = await start_caller(memory, session, CALLER_IDENTITY, agent)
        if variant != OURS:
            # The summary's hook is the only writer: no write-behind capture of its turns.
            await caller.writer.aclose(0.0)
        await _wait_for_reply(replies, reply_event, "greeting")
        for index, text in enumerate(texts):
            n_users, n_requests, n_misses = len(user_messages), len(fake_llm.requests), misses.count
            fake_stt.say(text)
            await _wait_for_reply(replies, reply_event, f"reply: {text}")
            new_users = user_messages[n_users:]
            if len(new_users) != 1 or new_users[0].text_content != text:
                raise RuntimeError(
                    f"turn {index}: expected the one user message {text!r}, got "
                    f"{[m.text_content for m in new_users]!r}"
                )
            metrics = dict(new_users[0].metrics)
            delay = metrics.get(DELAY_KEY)
            if not isinstance(delay, float):
                raise RuntimeError(f"turn {index}: LiveKit reported no {DELAY_KEY}: {metrics!r}")
            if index >= warmup:
                turns.append(
                    Turn(
                        text=text,
                        delay_s=delay,
                        injected=any(_has_hook_block(r) for r in fake_llm.requests[n_requests:]),
                        budget_miss=misses.count > n_misses,
                        metrics=metrics,
                    )
                )
            # The caller listens to the reply (seconds, in a real call) before speaking again:
            # this turn's memory writes have landed by then.
            if variant == OURS:
                await caller.writer.flush()
            await asyncio.sleep(gap_s)
    finally:
        seconds = time.perf_counter() - started_at
        audio = session.input.audio
        if isinstance(audio, FakeAudioInput):
            audio.close()
        if caller is not None:
            await caller.aclose()
        await session.aclose()
        recall_logger.removeHandler(misses)
        recall_logger.setLevel(previous_level)
    return turns, seconds


# ------------------------------------------------------------------------------------------
# Where ours' hook spends its time (--breakdown)
# ------------------------------------------------------------------------------------------

BREAKDOWN_STAGES: tuple[tuple[str, str, str], ...] = (
    ("hook, total (probe's own clock)", "hook0", "hook1"),
    ("task spawn: hook -> recall starts (not prefetched)", "hook0", "recall0"),
    ("recall start -> store search called (budget, query build)", "recall0", "search0"),
    ("thread hop: search called -> SQL starts in the pool", "search0", "sql0"),
    ("SQL: FTS5 search in the pool thread", "sql0", "sql1"),
    ("hop back: SQL done -> search returns on the loop", "sql1", "search1"),
    ("recall tail: filter, wait_for -> recall returns", "search1", "recall1"),
    ("join: recall returns -> hook resumes", "recall1", "resume"),
    ("context edit: memory_block + add_message", "block0", "capture0"),
    ("capture: extract_memories + queue, on the loop", "capture0", "capture1"),
)


class HookProbe:
    """Timestamps at each stage of `MemoryAgent.on_user_turn_completed` (ours only).

    Installed only for the extra calls of `--breakdown`, never during the main table's
    calls: it wraps `recall`, the store's search and `_run_sync`, `memory_block` and
    `CaptureWriter.capture` (a few microseconds of overhead per turn). Recall started at the
    final transcript, before the hook, is not timed: the hook then only waits for its end.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []
        self._current: dict[str, float] | None = None

    def _mark(self, name: str) -> None:
        if self._current is not None and name not in self._current:
            self._current[name] = time.perf_counter()

    def agent_class(self) -> type[BenchAgent]:
        probe = self

        class ProbedAgent(BenchAgent):
            async def on_user_turn_completed(
                self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
            ) -> None:
                probe._current = {"hook0": time.perf_counter()}
                try:
                    await super().on_user_turn_completed(turn_ctx, new_message)
                finally:
                    probe._mark("hook1")
                    probe.records.append(probe._current)
                    probe._current = None

        return ProbedAgent

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        probe = self
        hook = caller_session_module  # where the hook looks up `recall` and `memory_block`
        real_recall = hook.recall
        real_block = hook.memory_block
        real_search = SQLiteMemoryStore.search_memories
        real_run_sync = SQLiteMemoryStore._run_sync
        real_capture = CaptureWriter.capture

        async def recall(*args: Any, **kwargs: Any) -> Any:
            probe._mark("recall0")
            try:
                return await real_recall(*args, **kwargs)
            finally:
                probe._mark("recall1")

        def block(*args: Any, **kwargs: Any) -> str:
            probe._mark("resume")
            probe._mark("block0")
            return real_block(*args, **kwargs)

        async def search(self: SQLiteMemoryStore, *args: Any, **kwargs: Any) -> Any:
            probe._mark("search0")
            result = await real_search(self, *args, **kwargs)
            probe._mark("search1")
            return result

        def run_sync(self: SQLiteMemoryStore, fn: Callable[[sqlite3.Connection], T]) -> T:
            current = probe._current  # this runs in a pool thread; the turn is the same
            if current is not None and "search0" in current:
                current.setdefault("sql0", time.perf_counter())
            try:
                return real_run_sync(self, fn)
            finally:
                if current is not None and "search0" in current:
                    current.setdefault("sql1", time.perf_counter())

        def capture(self: Any, *args: Any, **kwargs: Any) -> None:
            first = probe._current is not None and "capture0" not in probe._current
            if first:
                probe._mark("resume")
                probe._mark("capture0")
            real_capture(self, *args, **kwargs)
            if first:
                probe._mark("capture1")

        patches: list[tuple[object, str, Any]] = [
            (hook, "recall", recall),
            (hook, "memory_block", block),
            (SQLiteMemoryStore, "search_memories", search),
            (SQLiteMemoryStore, "_run_sync", run_sync),
            (CaptureWriter, "capture", capture),
        ]
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        try:
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)

    def stage_ms(self, start: str, end: str) -> list[float]:
        return sorted((r[end] - r[start]) * 1000 for r in self.records if start in r and end in r)


@dataclass
class Breakdown:
    size: int
    turns: list[Turn]
    stages: dict[str, list[float]]


# ------------------------------------------------------------------------------------------
# The whole run
# ------------------------------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    turns: int
    large_turns: int
    large_size: int
    calls: int
    warmup: int
    other_callers: int
    other_share: float
    gap_ms: float
    seed: int
    variants: list[str]
    breakdown: bool
    argv: list[str]

    def turns_for(self, size: int) -> int:
        return self.large_turns if size >= self.large_size else self.turns


@dataclass
class Results:
    runs: dict[tuple[int, str], VariantRun] = field(default_factory=dict)
    fills: dict[int, Fill] = field(default_factory=dict)
    load: dict[int, tuple[float, float]] = field(default_factory=dict)  # 1-min load avg
    breakdowns: dict[int, Breakdown] = field(default_factory=dict)
    seconds: float = 0.0


def _chunks(items: Sequence[str], count: int) -> list[list[str]]:
    """`items` in `count` consecutive chunks of (nearly) equal length."""
    count = max(1, min(count, len(items)))
    bounds = [round(i * len(items) / count) for i in range(count + 1)]
    return [list(items[bounds[i] : bounds[i + 1]]) for i in range(count)]


async def run_size(
    config: Config, size: int, template: Path, work_dir: Path
) -> tuple[dict[str, VariantRun], Breakdown | None]:
    """All calls of every variant at one size, each variant on its own copy of `template`.

    The calls rotate between the variants (call 1: ours, summary, summary + recall; call 2:
    summary, summary + recall, ours; ...), so a change in the machine's load mid-run hits
    every variant alike. Each variant's first call starts with the warm-up turns.
    """
    turns = config.turns_for(size)
    texts = spoken_turns(config.warmup + turns, config.seed)
    warm, measured = texts[: config.warmup], texts[config.warmup :]
    chunks = _chunks(measured, config.calls)
    paths = {v: work_dir / f"{v.replace('+', '-')}-{size}.sqlite3" for v in config.variants}
    memories: dict[str, CallerMemory] = {}
    runs = {v: VariantRun(v, size) for v in config.variants}
    before = _caller_rows(template)
    try:
        for variant, path in paths.items():
            shutil.copyfile(template, path)
            memories[variant] = variant_memory(variant, path, work_dir)
        for call, chunk in enumerate(chunks):
            shift = call % len(config.variants)
            for variant in config.variants[shift:] + config.variants[:shift]:
                first = call == 0
                call_turns, seconds = await run_call(
                    variant,
                    memories[variant],
                    [*warm, *chunk] if first else chunk,
                    warmup=len(warm) if first else 0,
                    gap_s=config.gap_ms / 1000,
                )
                run = runs[variant]
                run.turns += call_turns
                run.seconds += seconds
                run.calls += 1
        for variant, path in paths.items():
            runs[variant].stored = _caller_rows(path) - before
        breakdown = None
        if config.breakdown and OURS in memories:
            probe = HookProbe()
            with probe.installed():
                probe_turns, _ = await run_call(
                    OURS,
                    memories[OURS],
                    measured,
                    gap_s=config.gap_ms / 1000,
                    agent_cls=probe.agent_class(),
                )
            stages = {name: probe.stage_ms(a, b) for name, a, b in BREAKDOWN_STAGES}
            breakdown = Breakdown(size, probe_turns, stages)
    finally:
        for memory in memories.values():
            await memory.aclose()
    for path in paths.values():
        path.unlink(missing_ok=True)
    return runs, breakdown


def run_benchmark(config: Config, *, progress: Callable[[str], None] = print) -> Results:
    results = Results()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="turn-latency-") as tmp:
        work_dir = Path(tmp)
        for size in config.sizes:
            load_start = os.getloadavg()[0]
            template = work_dir / f"template-{size}.sqlite3"
            fill = fill_store_file(
                template,
                size=size,
                other_callers=config.other_callers,
                other_share=config.other_share,
                seed=config.seed,
            )
            results.fills[size] = fill
            progress(
                f"# N={size:,}: filled {fill.rows:,} rows in {fill.seconds:.1f} s "
                f"({fill.mb:.0f} MB); load average {load_start:.2f}"
            )
            runs, breakdown = asyncio.run(run_size(config, size, template, work_dir))
            template.unlink()
            results.load[size] = (load_start, os.getloadavg()[0])
            for variant, run in runs.items():
                results.runs[(size, variant)] = run
                progress(
                    f"#   {variant}: p50 {run.p50:.2f} ms, p99 {run.p99:.2f} ms, "
                    f"{len(run.turns)} turns in {run.calls} calls, {run.seconds:.1f} s"
                )
            if breakdown is not None:
                results.breakdowns[size] = breakdown
    results.seconds = time.perf_counter() - started
    return results


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------

TABLE_HEADER = (
    "| Memories (caller) | Hook | Turns | p50 ms | p99 ms | max ms | p50 ÷ ours | p99 ÷ ours "
    "| Turns with memories injected | Recall budget misses |"
)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def target_line(results: Results) -> str | None:
    run = results.runs.get((TARGET_SIZE, OURS))
    if run is None or not run.turns:
        return None
    verdict = "met" if run.p99 < TARGET_P99_MS else "MISSED"
    return (
        f"p99 at {TARGET_SIZE:,} memories: {run.p99:.2f} ms (target < {TARGET_P99_MS:g} ms) "
        f"— {verdict}"
    )


def render(config: Config, results: Results) -> str:
    lines = report_head(
        "Turn latency: what the memory hook adds to a spoken turn",
        "bench.turn_latency_benchmark",
        config.argv,
    )
    out = lines.append
    turns = ", ".join(f"{config.turns_for(s)} at N={s:,}" for s in config.sizes)
    out(
        f"LiveKit's own `{DELAY_KEY}` in ms, read from each spoken turn's user message "
        f"(`ChatMessage.metrics`), through a real `AgentSession` (STT turn detection; fake "
        f"STT, LLM and microphone; no TTS). The caller holds N memories; "
        f"{config.other_callers} other callers hold {config.other_share:g} × N each. Measured "
        f"turns per hook: {turns}, in {config.calls} calls per hook that rotate between the "
        f"hooks, after {config.warmup} unmeasured warm-up turns. p99 is nearest-rank. Recall "
        f"budget {DEFAULT_RECALL_BUDGET_MS:g} ms (ours; a blocking call cannot be bounded)."
    )
    out("")
    out(TABLE_HEADER)
    out("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in config.sizes:
        ours = results.runs.get((size, OURS))
        for variant in config.variants:
            run = results.runs[(size, variant)]
            n = len(run.turns)
            misses = str(run.budget_misses) if variant == OURS else "n/a"
            p50_ratio = ratio(run.p50, ours.p50, "×") if ours else "-"
            p99_ratio = ratio(run.p99, ours.p99, "×") if ours else "-"
            out(
                f"| {size:,} | {VARIANT_LABELS[variant]} | {n} | {_ms(run.p50)} | "
                f"{_ms(run.p99)} | {_ms(run.max)} | {p50_ratio} | {p99_ratio} | "
                f"{run.injected} / {n} | {misses} |"
            )
    out("")
    line = target_line(results)
    if line:
        out(line)
        out("")
    for size, breakdown in results.breakdowns.items():
        lk = sorted(t.delay_s * 1000 for t in breakdown.turns)
        out(
            f"Where ours' hook spends its time at N={size:,} (`--breakdown`: {len(lk)} extra "
            f"probed turns, LiveKit p50 {_ms(percentile(lk, 50))} / p99 "
            f"{_ms(percentile(lk, 99))} ms; stages that did not happen in a turn are not "
            "counted, e.g. no SQL for small talk, no context edit when nothing was recalled):"
        )
        out("")
        out("| Stage | Turns | p50 ms | p90 ms | p99 ms | max ms |")
        out("|---|---:|---:|---:|---:|---:|")
        for name, values in breakdown.stages.items():
            out(
                f"| {name} | {len(values)} | {_ms(percentile(values, 50))} | "
                f"{_ms(percentile(values, 90))} | {_ms(percentile(values, 99))} | "
                f"{_ms(values[-1] if values else math.nan)} |"
            )
        out("")
    out("Setup (bulk fill through the store's own connection, not measured):")
    out("")
    out(
        "| Memories (caller) | Rows, all callers | Fill s | File MB | Load avg (1 min) "
        "start → end | Caller rows written per hook |"
    )
    out("|---:|---:|---:|---:|---:|---|")
    for size in config.sizes:
        fill = results.fills[size]
        load_start, load_end = results.load[size]
        written = ", ".join(f"{v}: {results.runs[(size, v)].stored}" for v in config.variants)
        out(
            f"| {size:,} | {fill.rows:,} | {fill.seconds:.1f} | {fill.mb:.0f} | "
            f"{load_start:.2f} → {load_end:.2f} | {written} |"
        )
    out("")
    lines += report_tail(
        [SQLITE_ENVIRONMENT, f"livekit-agents {livekit_agents_version}"], results.seconds
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(
        description="LiveKit's on_user_turn_completed_delay: our memory hook vs the summary's."
    )
    add_workload_options(
        parser,
        sizes=DEFAULT_SIZES,
        others="other-callers",
        other_count=DEFAULT_OTHER_CALLERS,
        other_share=DEFAULT_OTHER_SHARE,
        seed=DEFAULT_SEED,
    )
    parser.add_argument(
        "--turns", type=int, default=DEFAULT_TURNS, help="measured turns per hook and size"
    )
    parser.add_argument(
        "--large-turns",
        type=int,
        default=None,
        help="measured turns per hook at sizes >= --large-size (default: --turns)",
    )
    parser.add_argument("--large-size", type=int, default=100_000)
    parser.add_argument(
        "--calls",
        type=int,
        default=DEFAULT_CALLS,
        help="calls (sessions) per hook and size that share the turns (default 4)",
    )
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=DEFAULT_GAP_MS,
        help="pause after each reply, the caller listening (default 30)",
    )
    parser.add_argument(
        "--variants",
        type=choice_list(VARIANTS, "variants"),
        default=list(VARIANTS),
        help=", ".join(VARIANTS),
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also run ours once more per size with probes, and print where the hook's time goes",
    )
    args = parser.parse_args(list(argv))
    large_turns = args.large_turns if args.large_turns is not None else args.turns
    if min(args.turns, large_turns, args.calls) < 1:
        parser.error("--turns, --large-turns and --calls must be at least 1")
    if args.warmup < 0 or args.gap_ms < 0:
        parser.error("--warmup and --gap-ms must be >= 0")
    return Config(
        sizes=args.sizes,
        turns=args.turns,
        large_turns=large_turns,
        large_size=args.large_size,
        calls=args.calls,
        warmup=args.warmup,
        other_callers=args.other_callers,
        other_share=args.other_share,
        gap_ms=args.gap_ms,
        seed=args.seed,
        variants=args.variants,
        breakdown=args.breakdown,
        argv=list(argv),
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    results = run_benchmark(config, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(render(config, results))
    return 0


if __name__ == "__main__":
    # Every turn logs warnings (invalidated preemptive generations, recall budget misses):
    # only errors reach the terminal; the misses are counted in the table.
    _handler = logging.StreamHandler()
    _handler.setLevel(logging.ERROR)
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(_handler)
    sys.exit(main())
