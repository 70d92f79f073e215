"""Turn-latency benchmark: what memory costs the caller, in milliseconds and in LLM requests.

Run from the repository root::

    .venv/bin/python -m bench.turn_latency_benchmark                       # 100 and 10,000
    .venv/bin/python -m bench.turn_latency_benchmark --sizes 100 --turns 20 --modes spoken
    .venv/bin/python -m bench.turn_latency_benchmark --embeddings off     # search by words only

What the caller hears, through livekit-agents' real `AgentSession` with preemptive generation
at its default (on), as the reference worker hears its caller: a VAD and `turn_detection`
unset (VAD-based), endpointing `min_delay` 0.5 s. The fakes are those of
`caller_memory.testing` (`voice_session`): for each caller sentence the VAD (`FakeVAD`)
reports the start of speech, then, after `--speech-ms` of audio and `--vad-silence-ms` of
silence, the end of speech; the STT (`FakeVoiceSTT`) delivers the final transcript
`--stt-delay-ms` after the speech ended. LiveKit then starts its preemptive draft (an LLM
request on a copy of the context) and ends the turn `--endpointing-ms` after the end of
speech: a streaming STT's final transcript, in the middle of the endpointing wait. The LLM
(`FakeTimedLLM`) takes `--ttft-ms` (300) to its first token and counts requests; the TTS
(`FakeTTS`) voices any text at once and the speaker (`FakeAudioOutput`) records when each
frame reached it.

With `turn_detection` unset livekit-agents 1.8.9 adds its audio end-of-turn model (the local
`turn-detector-v1-mini`); it is asked for a verdict only during trailing silence inside the
VAD's speech, which the default `--vad-silence-ms 0` never reports, so the turn ends on the
endpointing delay. With `--vad-silence-ms` above 0 it judges the fakes' silent audio, finds
the end of the turn unlikely and waits its maximum delay (2.5 s): add `--turn-detection vad`
to leave it out (`turn_detection="vad"`).

Rows (one `AgentSession` per call, `--calls` calls per row that rotate between the rows so a
change in the machine's load hits every row alike; the first call of each row starts with
`--warmup` unmeasured turns):

- **no memory**: a plain livekit `Agent`, no `CallerMemory.attach`: what LiveKit alone costs;
- **this worker**: `CallerMemory.attach` and a `MemoryAgent`, as the package ships them at
  the time of the run;
- **hook injection**: the design before: the same `attach` and `MemoryAgent`, but its
  `on_user_turn_completed` waits for the recall started at the final transcript and adds the
  memory block to `turn_ctx` (LiveKit then discards a draft whose context changed), and its
  `llm_node` is the plain one.

Each row is measured with spoken turns (the caller's voice, as above) and typed turns
(`session.run(user_input=...)`, which goes straight to the reply: no endpointing, no draft,
no `on_user_turn_completed`).

Columns, per turn:

- **end of turn → first token**: for spoken turns, the end of the caller's turn is when
  LiveKit committed it, from its own metrics on the user message (`stopped_speaking_at` +
  `end_of_turn_delay`); for typed turns, the `session.run` call. The first token is the first
  chunk of the LLM request whose answer was spoken (each answer names its request), or the
  end of turn when that chunk came earlier (a draft's token is playable only once the turn
  ended);
- **end of turn → first audio**: the first audio frame of the reply reaching the speaker;
- **discarded drafts per 100 turns**: LiveKit's "preemptive generation invalidated" warnings
  (one per draft it threw away after `on_user_turn_completed`);
- **LLM requests per turn**; **replies from the draft**: turns whose draft LiveKit kept
  (its debug line "using preemptive generation"): the draft started at the final transcript,
  which may be well before the end of the turn (a streaming STT) or just as it ends (an STT
  that transcribes only after the VAD's end of speech: the draft then has no head start);
- **turns with memories**: turns whose answering request held a recalled-memories block
  (the block of known memories at the start of the call does not count);
- **recall budget misses**: recall's "budget ran out" warnings.

The store: for every size N one fresh SQLite file (`SQLiteMemoryStore`, WAL,
synchronous=NORMAL, the production defaults) filled in bulk (`bench/workload.py`): the caller
holds N memories (16 stable facts and N - 16 utterances made of everyday sentence frames and
a 4,000-word Zipf vocabulary, each with the agent's line it answered and the day it was
said, as the capture stores them); `--other-callers` others (default 20) hold
`--other-share` x N each. Each memory row gets its own copy and its own `CallerMemory` (every
setting at its default, whatever the environment says, but no cap on the caller's
utterances), one for the spoken turns and one for the typed.

Search by meaning (`--embeddings local`, the default, as the product searches): each
`CallerMemory` gets its own `OnnxEmbedder` (as a worker process has one), running the real
multilingual-e5-small from `--model-dir`, or else its test build
(`caller_memory.testing.embeddings.cached_test_model()`: same architecture and int8
quantisation as the production download), loaded before the calls. The caller's memories in
the file are embedded by that model when it is filled (the fill's time includes it), so recall
finds what a real caller's memories would give; the other callers' get random unit vectors
(search never compares them with this caller's). Every captured message is embedded
write-behind, as in the product. With `--embeddings off` there are no vectors and recall
searches by words only. The caller's sentences bear on what is stored: ~45%
about their stable facts ("What's my favourite colour again?"), ~45% everyday chatter from
the same frames and vocabulary as the stored utterances, ~10% small talk; the same sentences
for every row. After each reply the caller's pending memory writes land, then `--gap-ms`
passes before the next sentence.

Output: one Markdown table with the command in its header, the goal line ("this worker
within 5 ms (p99) of no memory, no draft discarded, 1.0 LLM requests per turn" at 10,000
memories), the environment and the load average. p99 is nearest-rank: with 100 turns it is
the second-largest value, so one slow turn shows. A lone first-audio p99 ~150 ms above its
p50 (in any row, no memory included) is a full garbage collection of the process landing in
that turn (~150 ms for the ~180,000 objects livekit-agents keeps alive, on a 2-core machine).
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
from collections.abc import AsyncIterable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import Agent, AgentSession, FlushSentinel, ModelSettings, llm
from livekit.agents import __version__ as livekit_agents_version
from livekit.agents.types import NOT_GIVEN

from bench.report import (
    DEFAULT_RECALL_BUDGET_MS,
    SQLITE_ENVIRONMENT,
    add_workload_options,
    choice_list,
    percentile,
    report_head,
    report_tail,
)
from bench.workload import (
    BASE_TIME,
    EMBEDDINGS_OFF,
    PERSONA,
    EmbeddingChoice,
    MemoryRow,
    Vocabulary,
    add_embedding_options,
    agent_line,
    benchmark_embedder,
    benchmark_memory,
    build_vocabulary,
    bulk_insert,
    embedding_choice,
    random_unit_vectors,
    sqlite_timestamp,
)
from caller_memory import (
    CallerMemory,
    CallerSession,
    MemoryAgent,
    MemoryKind,
    livekit_identity_to_uuid,
)
from caller_memory.capture.rule_based import categorize
from caller_memory.embeddings import EMBEDDING_DIMENSIONS, Embedder
from caller_memory.indexing import index_text, said_on_words
from caller_memory.recall.block import BLOCK_PREAMBLE, BLOCK_START, memory_block
from caller_memory.recall.recall import without_repeats
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.stores.vectors import encode_vector
from caller_memory.testing import (
    FakeAudioInput,
    FakeAudioOutput,
    FakeTimedLLM,
    FakeVAD,
    FakeVoice,
    FakeVoiceSTT,
    start_caller,
    user_texts,
    voice_session,
)

logger = logging.getLogger("bench.turn_latency")

NONE = "none"
WORKER = "worker"
HOOK = "hook"
DESIGNS = (NONE, WORKER, HOOK)
DESIGN_LABELS = {
    NONE: "no memory (plain Agent)",
    WORKER: "this worker (attach + MemoryAgent)",
    HOOK: "hook injection (recall into turn_ctx)",
}
SPOKEN = "spoken"
TYPED = "typed"
MODES = (SPOKEN, TYPED)

DEFAULT_SIZES = (100, 10_000)
DEFAULT_TURNS = 100
DEFAULT_CALLS = 4
DEFAULT_WARMUP = 3
DEFAULT_OTHER_CALLERS = 20
DEFAULT_OTHER_SHARE = 0.2
DEFAULT_SEED = 2024
DEFAULT_TTFT_MS = 300.0
DEFAULT_ENDPOINTING_MS = 500.0
DEFAULT_SPEECH_MS = 300.0
DEFAULT_STT_DELAY_MS = 50.0
DEFAULT_VAD_SILENCE_MS = 0.0
DEFAULT_GAP_MS = 30.0
LIVEKIT_DEFAULT = "default"
VAD_ONLY = "vad"
TURN_DETECTIONS = (LIVEKIT_DEFAULT, VAD_ONLY)
GOAL_SIZE = 10_000
GOAL_P99_MS = 5.0
REPLY_TIMEOUT_S = 15.0

CALLER_IDENTITY = "bench-turn-caller"
INVALIDATED = "preemptive generation invalidated"
KEPT = "using preemptive generation"
BUDGET_MISS = "budget ran out"

# ------------------------------------------------------------------------------------------
# Data: the stored memories and what the caller says
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
        """A caller sentence that mostly bears on what is stored: ~45% about the caller's
        stable facts, ~45% chatter like the stored utterances, ~10% small talk."""
        roll = self.rng.random()
        if roll < 0.45:
            return self.rng.choice(FACT_TURNS)
        if roll < 0.55:
            return self.rng.choice(SMALL_TALK)
        return self.utterance()


def caller_rows(
    gen: TextGenerator, user_id: str, count: int, facts: Sequence[tuple[str, str, str]]
) -> Iterator[MemoryRow]:
    """One caller's memories, lazily: its facts, then its utterances (each with the agent's
    line it answered), every one with the day it was said."""
    facts = facts[: min(count, len(facts))]
    for i, (category, key, value) in enumerate(facts):
        when_dt = BASE_TIME - timedelta(days=400 - i)
        when = sqlite_timestamp(when_dt)
        said_on = said_on_words(when_dt.timestamp())
        yield MemoryRow(user_id, category, key, value, when, when, MemoryKind.FACT, None, said_on)
    n_utterances = count - len(facts)
    for n in range(n_utterances):
        when_dt = BASE_TIME - timedelta(seconds=(n_utterances - n) * 90)
        frame, text = gen.framed_utterance()
        ms = int(when_dt.timestamp() * 1000)
        key = f"utterance_{ms}_{hashlib.sha1(f'{n}:{text}'.encode()).hexdigest()[:8]}"
        category = frame_category(frame, text)
        when = sqlite_timestamp(when_dt)
        context = agent_line(gen.vocab, gen.rng)
        said_on = said_on_words(when_dt.timestamp())
        yield MemoryRow(
            user_id, category, key, text, when, when, MemoryKind.UTTERANCE, context, said_on
        )


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
    embed_seconds: float = math.nan  # of `seconds`: embedding the caller's memories


async def embedded(rows: Sequence[MemoryRow], embedder: Embedder) -> list[MemoryRow]:
    """`rows` with their vectors, made by `embedder` from what the memory manager embeds
    (`indexing.index_text`)."""
    texts = [index_text(kind=r.kind, key=r.key, value=r.value, context=r.context) for r in rows]
    vectors = await embedder.embed_documents(texts)
    return [r._replace(embedding=encode_vector(v)) for r, v in zip(rows, vectors, strict=True)]


def with_random_vectors(rows: Iterator[MemoryRow], rng: np.random.Generator) -> Iterator[MemoryRow]:
    for row in rows:
        [vector] = random_unit_vectors(rng, 1, EMBEDDING_DIMENSIONS)
        yield row._replace(embedding=encode_vector(vector))


def fill_store_file(
    path: Path,
    *,
    size: int,
    other_callers: int,
    other_share: float,
    seed: int,
    embedder: Embedder | None = None,
) -> Fill:
    """A fresh store file with the measured caller's `size` memories among other callers';
    with `embedder`, the caller's memories get their vectors from it and the others' random
    ones (search never compares them with the caller's)."""
    started = time.perf_counter()
    gen = TextGenerator(build_vocabulary(), random.Random(f"turn-latency:{seed}:{size}"))
    vector_rng = np.random.default_rng([seed, size])
    caller = livekit_identity_to_uuid(CALLER_IDENTITY)
    others = [livekit_identity_to_uuid(f"bench-turn-other-{n:03d}") for n in range(other_callers)]
    per_other = max(round(size * other_share), 1) if other_callers else 0
    rows = [0]
    embed_seconds = math.nan

    def counted(it: Iterator[MemoryRow]) -> Iterator[MemoryRow]:
        for row in it:
            rows[0] += 1
            yield row

    def fill(conn: sqlite3.Connection, callers_rows: list[MemoryRow]) -> None:
        profiles: list[tuple[str, str | None]] = [(caller, CALLER_IDENTITY)]
        profiles += [(o, f"bench-turn-other-{n:03d}") for n, o in enumerate(others)]
        # the caller's rows interleaved with the others', as they would arrive over time
        streams: list[Iterator[MemoryRow]] = [iter(callers_rows)]
        for n, o in enumerate(others):
            stream = caller_rows(gen, o, per_other, other_facts(n))
            streams.append(with_random_vectors(stream, vector_rng) if embedder else stream)
        interleaved = (
            row for batch in itertools.zip_longest(*streams) for row in batch if row is not None
        )
        bulk_insert(
            conn,
            profiles,
            counted(interleaved),
            embedding_model=embedder.name if embedder is not None else None,
            optimize=True,
        )

    async def run() -> None:
        nonlocal embed_seconds
        callers_rows = list(caller_rows(gen, caller, size, CALLER_FACTS))
        if embedder is not None:
            embedding_started = time.perf_counter()
            callers_rows = await embedded(callers_rows, embedder)
            embed_seconds = time.perf_counter() - embedding_started
        store = SQLiteMemoryStore(path)
        try:
            await store._run(lambda conn: fill(conn, callers_rows))
        finally:
            await store.aclose()

    asyncio.run(run())
    seconds = time.perf_counter() - started
    return Fill(size, rows[0], seconds, path.stat().st_size / 1e6, embed_seconds)


def caller_sentences(count: int, seed: int) -> list[str]:
    """The caller's sentences, the same for every size, row and input."""
    gen = TextGenerator(build_vocabulary(), random.Random(f"turn-latency-turns:{seed}"))
    return [gen.turn() for _ in range(count)]


# ------------------------------------------------------------------------------------------
# The rows: three agents
# ------------------------------------------------------------------------------------------


class PlainAgent(Agent):
    """No memory at all: a plain livekit `Agent` with the benchmark's persona."""

    def __init__(self) -> None:
        super().__init__(instructions=PERSONA)


class WorkerAgent(MemoryAgent):
    """This worker: `MemoryAgent` as the package ships it (recall, capture, tools)."""

    def __init__(self) -> None:
        super().__init__(instructions=PERSONA)


class HookInjectionAgent(MemoryAgent):
    """The design before: recall awaited in `on_user_turn_completed`, its block added to
    `turn_ctx` (what `CallerSession.recall_into` did), and the plain `llm_node`.

    It waits for the caller's recall started at the final transcript (one per message, shared
    with the worker's own machinery, so both rows do the same search), leaves out what only
    repeats the conversation, and touches the context only when something was found, as the
    project did. LiveKit then finds the turn's context changed and discards its draft.
    """

    def __init__(self) -> None:
        super().__init__(instructions=PERSONA)

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        caller = self.caller
        text = new_message.text_content
        if caller is None or not text or caller.erased:
            return
        try:
            recall = caller.start_recall(text)
            found = await asyncio.shield(recall) if recall is not None else []
            memories = without_repeats(found, [*user_texts(turn_ctx), text])
            if memories and not caller.erased:
                turn_ctx.add_message(role="assistant", content=memory_block(memories))
        except Exception:
            logger.exception("recall failed; replying without memories")

    async def llm_node(
        self,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        model_settings: ModelSettings,
    ) -> AsyncIterable[llm.ChatChunk | str | FlushSentinel]:
        async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
            yield chunk


AGENTS: dict[str, Callable[[], Agent]] = {
    NONE: PlainAgent,
    WORKER: WorkerAgent,
    HOOK: HookInjectionAgent,
}


def has_recalled_block(chat_ctx: llm.ChatContext) -> bool:
    """Whether a request held a block of recalled memories (in any role; the block of known
    memories at the start of the call has a heading of its own and does not count)."""
    return any(
        isinstance(item, llm.ChatMessage)
        and (item.text_content or "").startswith(f"{BLOCK_START}\n{BLOCK_PREAMBLE}\n")
        for item in chat_ctx.items
    )


# ------------------------------------------------------------------------------------------
# Driving turns through a real AgentSession
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """How the caller and the fakes behave (seconds)."""

    ttft_s: float = DEFAULT_TTFT_MS / 1000
    endpointing_s: float = DEFAULT_ENDPOINTING_MS / 1000
    speech_s: float = DEFAULT_SPEECH_MS / 1000
    stt_delay_s: float = DEFAULT_STT_DELAY_MS / 1000
    vad_silence_s: float = DEFAULT_VAD_SILENCE_MS / 1000
    gap_s: float = DEFAULT_GAP_MS / 1000
    turn_detection: str = LIVEKIT_DEFAULT  # or "vad": no end-of-turn model


class _LogCounter(logging.Handler):
    """Counts the records of a logger whose message contains `needle`."""

    def __init__(self, needle: str, level: int) -> None:
        super().__init__(level)
        self.needle = needle
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.count += 1


@contextlib.contextmanager
def counting(logger_name: str, needle: str, level: int = logging.WARNING) -> Iterator[_LogCounter]:
    """A `_LogCounter` on `logger_name` while the block runs (its records of `level` let
    through)."""
    counter = _LogCounter(needle, level)
    target = logging.getLogger(logger_name)
    previous = target.level
    if target.getEffectiveLevel() > level:
        target.setLevel(level)
    target.addHandler(counter)
    try:
        yield counter
    finally:
        target.removeHandler(counter)
        target.setLevel(previous)


@dataclass
class Turn:
    text: str
    to_token_s: float  # end of turn -> first token of the answering request (0 if earlier)
    to_audio_s: float  # end of turn -> first audio frame of the reply at the speaker
    requests: int  # LLM requests made during the turn
    discarded: int  # drafts LiveKit discarded ("preemptive generation invalidated")
    from_draft: bool  # LiveKit kept its draft ("using preemptive generation")
    injected: bool  # the answering request held a recalled-memories block
    budget_miss: bool  # recall's budget ran out during the turn


@dataclass
class Row:
    """Every measured turn of one design, one input mode, one size."""

    design: str
    mode: str
    size: int
    turns: list[Turn] = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0

    def _ms(self, values: Iterator[float], q: float) -> float:
        return percentile((v * 1000 for v in values), q)

    def token_ms(self, q: float) -> float:
        return self._ms((t.to_token_s for t in self.turns), q)

    def audio_ms(self, q: float) -> float:
        return self._ms((t.to_audio_s for t in self.turns), q)

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.turns)

    @property
    def discarded(self) -> int:
        return sum(t.discarded for t in self.turns)

    @property
    def from_draft(self) -> int:
        return sum(t.from_draft for t in self.turns)

    @property
    def injected(self) -> int:
        return sum(t.injected for t in self.turns)

    @property
    def budget_misses(self) -> int:
        return sum(t.budget_miss for t in self.turns)

    @property
    def discarded_per_100(self) -> float:
        return 100 * self.discarded / len(self.turns) if self.turns else math.nan

    @property
    def requests_per_turn(self) -> float:
        return self.requests / len(self.turns) if self.turns else math.nan


class _Conversation:
    """What `session` adds to its conversation: the user messages, and the assistant
    messages with a way to wait for the next one."""

    def __init__(self, session: AgentSession[Any]) -> None:
        self.users: list[llm.ChatMessage] = []
        self.replies: list[llm.ChatMessage] = []
        self._arrived = asyncio.Event()
        session.on("conversation_item_added", self._on_item)

    def _on_item(self, event: Any) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            self.users.append(item)
        elif isinstance(item, llm.ChatMessage) and item.role == "assistant":
            self.replies.append(item)
            self._arrived.set()

    async def reply_after(self, count: int) -> llm.ChatMessage:
        """The first assistant message after the first `count` (waiting for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLY_TIMEOUT_S
        while len(self.replies) <= count:
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no reply within {REPLY_TIMEOUT_S:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.replies[count]


def end_of_turn(message: llm.ChatMessage, index: int) -> float:
    """When LiveKit committed the caller's turn (`time.time()`), from its own metrics on the
    user message: the end of speech plus the end-of-turn delay it measured."""
    metrics = message.metrics
    stopped, delay = metrics.get("stopped_speaking_at"), metrics.get("end_of_turn_delay")
    if not isinstance(stopped, float) or not isinstance(delay, float):
        raise RuntimeError(f"turn {index}: LiveKit reported no end-of-turn metrics: {metrics!r}")
    return stopped + delay


async def run_call(
    design: str,
    mode: str,
    memory: CallerMemory | None,
    texts: Sequence[str],
    *,
    warmup: int = 0,
    timing: Timing = Timing(),
) -> tuple[list[Turn], float]:
    """One call of the caller with `design`'s agent: say (or type) `texts`, the first
    `warmup` unmeasured. Returns the measured turns and the call's wall time. `memory` (None
    for no memory) is left open: the worker's memory outlives its calls."""
    voice = FakeVoice(speech_s=timing.speech_s)
    fake_llm = FakeTimedLLM(ttft=timing.ttft_s)
    session = voice_session(
        fake_llm,
        FakeVoiceSTT(voice, delay_s=timing.stt_delay_s),
        FakeVAD(voice, silence_s=timing.vad_silence_s),
        endpointing_delay=timing.endpointing_s,
        turn_detection="vad" if timing.turn_detection == VAD_ONLY else NOT_GIVEN,
    )
    speaker = session.output.audio
    assert isinstance(speaker, FakeAudioOutput)
    conversation = _Conversation(session)
    turns: list[Turn] = []
    caller: CallerSession | None = None
    started_at = time.perf_counter()
    with (
        counting("livekit.agents", INVALIDATED) as invalidated,
        counting("livekit.agents", KEPT, logging.DEBUG) as kept,
        counting("caller_memory.recall", BUDGET_MISS) as misses,
    ):
        try:
            if memory is None:
                await session.start(agent=AGENTS[design]())
            else:
                caller = await start_caller(memory, session, CALLER_IDENTITY, AGENTS[design])
            for index, text in enumerate(texts):
                n_users, n_replies = len(conversation.users), len(conversation.replies)
                n_requests, n_frames = len(fake_llm.timed_requests), len(speaker.frames)
                n_invalidated, n_kept, n_misses = invalidated.count, kept.count, misses.count
                if mode == SPOKEN:
                    voice.say(text)
                    reply = await conversation.reply_after(n_replies)
                    users = conversation.users[n_users:]
                    if len(users) != 1 or users[0].text_content != text:
                        raise RuntimeError(
                            f"turn {index}: expected the one user message {text!r}, got "
                            f"{[m.text_content for m in users]!r}"
                        )
                    ended = end_of_turn(users[0], index)
                else:
                    ended = time.time()
                    await session.run(user_input=text)
                    reply = await conversation.reply_after(n_replies)
                request = fake_llm.request_for(reply.text_content or "")
                if request is None or request.number <= n_requests:
                    raise RuntimeError(f"turn {index}: no request of this turn answered {reply!r}")
                if request.first_chunk_at is None or len(speaker.frames) <= n_frames:
                    raise RuntimeError(f"turn {index}: the reply has no token or no audio")
                if index >= warmup:
                    turns.append(
                        Turn(
                            text=text,
                            to_token_s=max(request.first_chunk_at - ended, 0.0),
                            to_audio_s=speaker.frames[n_frames].at - ended,
                            requests=len(fake_llm.timed_requests) - n_requests,
                            discarded=invalidated.count - n_invalidated,
                            from_draft=kept.count > n_kept,
                            injected=has_recalled_block(request.chat_ctx),
                            budget_miss=misses.count > n_misses,
                        )
                    )
                # The caller listens to the reply before saying more: this turn's memory
                # writes have landed by then.
                if caller is not None:
                    await caller.writer.flush()
                await asyncio.sleep(timing.gap_s)
        finally:
            seconds = time.perf_counter() - started_at
            audio = session.input.audio
            if isinstance(audio, FakeAudioInput):
                audio.close()
            if caller is not None:
                await caller.aclose()
            await session.aclose()
    return turns, seconds


# ------------------------------------------------------------------------------------------
# The whole run
# ------------------------------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    turns: int
    calls: int
    warmup: int
    other_callers: int
    other_share: float
    seed: int
    designs: list[str]
    modes: list[str]
    timing: Timing
    embeddings: EmbeddingChoice
    argv: list[str]


@dataclass
class Results:
    rows: dict[tuple[int, str, str], Row] = field(default_factory=dict)  # size, mode, design
    fills: dict[int, Fill] = field(default_factory=dict)
    load: dict[int, tuple[float, float]] = field(default_factory=dict)  # 1-min load average
    seconds: float = 0.0
    embedder: str = ""


def _chunks(items: Sequence[str], count: int) -> list[list[str]]:
    """`items` in `count` consecutive chunks of (nearly) equal length."""
    count = max(1, min(count, len(items)))
    bounds = [round(i * len(items) / count) for i in range(count + 1)]
    return [list(items[bounds[i] : bounds[i + 1]]) for i in range(count)]


async def run_size(
    config: Config, size: int, template: Path, work_dir: Path
) -> dict[tuple[str, str], Row]:
    """Every call of every design and mode at one size. Each memory row of each mode has its
    own copy of `template` (what the spoken calls captured is not in the typed calls' store,
    so both start alike). The calls rotate between the designs, so a change in the machine's
    load mid-run hits every design alike."""
    texts = caller_sentences(config.warmup + config.turns, config.seed)
    warm, measured = texts[: config.warmup], texts[config.warmup :]
    chunks = _chunks(measured, config.calls)
    rows: dict[tuple[str, str], Row] = {}
    for mode in config.modes:
        memories: dict[str, CallerMemory] = {}
        try:
            for design in config.designs:
                if design != NONE:
                    path = work_dir / f"{mode}-{design}-{size}.sqlite3"
                    shutil.copyfile(template, path)
                    embedder = benchmark_embedder(config.embeddings)
                    memories[design] = benchmark_memory(
                        SQLiteMemoryStore(path),
                        work_dir / path.stem,
                        embedder=embedder,
                        max_utterances_per_caller=0,
                    )
                    if embedder is not None:  # as a worker's prewarm does
                        await embedder.warm_up()
            for call, chunk in enumerate(chunks):
                shift = call % len(config.designs)
                for design in config.designs[shift:] + config.designs[:shift]:
                    first = call == 0
                    call_turns, seconds = await run_call(
                        design,
                        mode,
                        memories.get(design),
                        [*warm, *chunk] if first else chunk,
                        warmup=len(warm) if first else 0,
                        timing=config.timing,
                    )
                    row = rows.setdefault((mode, design), Row(design, mode, size))
                    row.turns += call_turns
                    row.seconds += seconds
                    row.calls += 1
        finally:
            for memory in memories.values():
                await memory.aclose()
    return rows


def run_benchmark(config: Config, *, progress: Callable[[str], None] = print) -> Results:
    results = Results()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="turn-latency-") as tmp:
        work_dir = Path(tmp)
        for size in config.sizes:
            load_start = os.getloadavg()[0]
            template = work_dir / f"template-{size}.sqlite3"
            fill_embedder = benchmark_embedder(config.embeddings)
            results.embedder = config.embeddings.describe(fill_embedder)
            try:
                fill = fill_store_file(
                    template,
                    size=size,
                    other_callers=config.other_callers,
                    other_share=config.other_share,
                    seed=config.seed,
                    embedder=fill_embedder,
                )
            finally:
                if fill_embedder is not None:
                    asyncio.run(fill_embedder.aclose())
            results.fills[size] = fill
            progress(
                f"# N={size:,}: filled {fill.rows:,} rows in {fill.seconds:.1f} s "
                f"({fill.mb:.0f} MB); load average {load_start:.2f}"
            )
            rows = asyncio.run(run_size(config, size, template, work_dir))
            results.load[size] = (load_start, os.getloadavg()[0])
            for (mode, design), row in rows.items():
                results.rows[(size, mode, design)] = row
                progress(
                    f"#   {mode} {design}: first audio p50 {row.audio_ms(50):.1f} ms, p99 "
                    f"{row.audio_ms(99):.1f} ms, {row.requests_per_turn:.2f} requests/turn, "
                    f"{len(row.turns)} turns in {row.seconds:.1f} s"
                )
    results.seconds = time.perf_counter() - started
    return results


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------

TABLE_HEADER = (
    "| Memories (caller) | Input | Design | Turns | → first token p50 ms | p99 ms "
    "| → first audio p50 ms | p99 ms | Drafts discarded / 100 turns | LLM requests / turn "
    "| Replies from the draft | Turns with memories | Recall budget misses |"
)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def goal_line(results: Results) -> str | None:
    """Whether this worker met the issue's goal at 10,000 memories, spoken turns."""
    worker = results.rows.get((GOAL_SIZE, SPOKEN, WORKER))
    plain = results.rows.get((GOAL_SIZE, SPOKEN, NONE))
    if worker is None or plain is None or not worker.turns or not plain.turns:
        return None
    gap = worker.audio_ms(99) - plain.audio_ms(99)
    met = gap <= GOAL_P99_MS and worker.discarded == 0 and worker.requests == len(worker.turns)
    return (
        f"Goal at {GOAL_SIZE:,} memories, spoken: this worker's first audio p99 within "
        f"{GOAL_P99_MS:g} ms of no memory ({gap:+.1f} ms), no draft discarded "
        f"({worker.discarded}), 1.0 LLM requests per turn ({worker.requests_per_turn:.2f}) — "
        f"{'met' if met else 'MISSED'}"
    )


def render(config: Config, results: Results) -> str:
    by_meaning = config.embeddings.mode != EMBEDDINGS_OFF
    title = "Turn latency: what memory costs the caller" + (
        ", search by meaning and words" if by_meaning else ", search by words only"
    )
    lines = report_head(title, "bench.turn_latency_benchmark", config.argv)
    out = lines.append
    t = config.timing
    detection = (
        "a VAD, `turn_detection` unset (LiveKit's end-of-turn model added)"
        if t.turn_detection == LIVEKIT_DEFAULT
        else "`turn_detection='vad'`"
    )
    out(
        f"What the caller hears, through a real `AgentSession` ({detection}, "
        f"endpointing {t.endpointing_s * 1000:g} ms, preemptive generation on): from the end "
        "of the caller's turn (LiveKit's commit, from its metrics; for typed turns the "
        "`session.run` call) to the first token of the LLM request whose answer was spoken "
        "(the end of turn if the draft's came earlier) and to the first audio frame at the "
        f"speaker. Fake LLM {t.ttft_s * 1000:g} ms to first token; the caller speaks "
        f"{t.speech_s * 1000:g} ms, the VAD ends the speech after {t.vad_silence_s * 1000:g} "
        f"ms of silence, the final transcript comes {t.stt_delay_s * 1000:g} ms after the "
        f"speech. The caller holds N memories; {config.other_callers} other callers hold "
        f"{config.other_share:g} × N each. {config.turns} measured turns per row in "
        f"{config.calls} calls that rotate between the designs, after {config.warmup} "
        f"warm-up turns. Recall budget {DEFAULT_RECALL_BUDGET_MS:g} ms. p99 is nearest-rank. "
        + (
            "Recall searches by meaning and by words, as the product does by default: each "
            "turn's query is embedded by the real model, and each captured message "
            "write-behind."
            if by_meaning
            else "Recall searches by words only (embeddings off)."
        )
    )
    out("")
    out(TABLE_HEADER)
    out("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in config.sizes:
        for mode in config.modes:
            for design in config.designs:
                row = results.rows[(size, mode, design)]
                n = len(row.turns)
                drafts = f"{row.from_draft} / {n}" if mode == SPOKEN else "n/a"
                memories = f"{row.injected} / {n}" if design != NONE else "n/a"
                misses = str(row.budget_misses) if design != NONE else "n/a"
                out(
                    f"| {size:,} | {mode} | {DESIGN_LABELS[design]} | {n} | "
                    f"{_ms(row.token_ms(50))} | {_ms(row.token_ms(99))} | "
                    f"{_ms(row.audio_ms(50))} | {_ms(row.audio_ms(99))} | "
                    f"{row.discarded_per_100:.1f} | {row.requests_per_turn:.2f} | "
                    f"{drafts} | {memories} | {misses} |"
                )
    out("")
    line = goal_line(results)
    if line:
        out(line)
        out("")
    out("Setup (bulk fill through the store's own connection, not measured):")
    out("")
    out(
        "| Memories (caller) | Rows, all callers | Fill s | of it, embedding the caller's "
        "memories s | File MB | Load avg (1 min) start → end |"
    )
    out("|---:|---:|---:|---:|---:|---|")
    for size in config.sizes:
        fill = results.fills[size]
        load_start, load_end = results.load[size]
        embed = "-" if math.isnan(fill.embed_seconds) else f"{fill.embed_seconds:.1f}"
        out(
            f"| {size:,} | {fill.rows:,} | {fill.seconds:.1f} | {embed} | {fill.mb:.0f} | "
            f"{load_start:.2f} → {load_end:.2f} |"
        )
    out("")
    lines += report_tail(
        [results.embedder, SQLITE_ENVIRONMENT, f"livekit-agents {livekit_agents_version}"],
        results.seconds,
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _ms_option(parser: argparse.ArgumentParser, name: str, default: float, what: str) -> None:
    parser.add_argument(
        f"--{name}", type=float, default=default, help=f"{what} (default {default:g})"
    )


def parse_args(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(
        description="What memory costs the caller: end of turn -> first token, first audio."
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
        "--turns", type=int, default=DEFAULT_TURNS, help="measured turns per row (default 100)"
    )
    parser.add_argument(
        "--calls",
        type=int,
        default=DEFAULT_CALLS,
        help="calls (sessions) per row that share the turns (default 4)",
    )
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument(
        "--designs",
        type=choice_list(DESIGNS, "designs"),
        default=list(DESIGNS),
        help=", ".join(DESIGNS),
    )
    parser.add_argument(
        "--modes", type=choice_list(MODES, "modes"), default=list(MODES), help=", ".join(MODES)
    )
    _ms_option(parser, "ttft-ms", DEFAULT_TTFT_MS, "the fake LLM's time to first token")
    _ms_option(parser, "endpointing-ms", DEFAULT_ENDPOINTING_MS, "endpointing min_delay")
    _ms_option(parser, "speech-ms", DEFAULT_SPEECH_MS, "how long each sentence is spoken")
    _ms_option(parser, "stt-delay-ms", DEFAULT_STT_DELAY_MS, "end of speech -> final transcript")
    _ms_option(
        parser, "vad-silence-ms", DEFAULT_VAD_SILENCE_MS, "silence before the VAD's end of speech"
    )
    _ms_option(parser, "gap-ms", DEFAULT_GAP_MS, "pause after each reply, the caller listening")
    parser.add_argument(
        "--turn-detection",
        choices=TURN_DETECTIONS,
        default=LIVEKIT_DEFAULT,
        help="default: unset, as the reference worker (LiveKit adds its end-of-turn model); "
        "vad: turn_detection='vad', no model",
    )
    add_embedding_options(parser)
    args = parser.parse_args(list(argv))
    if min(args.turns, args.calls) < 1:
        parser.error("--turns and --calls must be at least 1")
    timings = (
        args.ttft_ms,
        args.endpointing_ms,
        args.speech_ms,
        args.stt_delay_ms,
        args.vad_silence_ms,
        args.gap_ms,
    )
    if args.warmup < 0 or min(timings) < 0:
        parser.error("--warmup and the times in ms must be >= 0")
    if args.speech_ms <= 0:
        parser.error("--speech-ms must be more than 0")
    return Config(
        sizes=args.sizes,
        turns=args.turns,
        calls=args.calls,
        warmup=args.warmup,
        other_callers=args.other_callers,
        other_share=args.other_share,
        seed=args.seed,
        designs=args.designs,
        modes=args.modes,
        timing=Timing(
            ttft_s=args.ttft_ms / 1000,
            endpointing_s=args.endpointing_ms / 1000,
            speech_s=args.speech_ms / 1000,
            stt_delay_s=args.stt_delay_ms / 1000,
            vad_silence_s=args.vad_silence_ms / 1000,
            gap_s=args.gap_ms / 1000,
            turn_detection=args.turn_detection,
        ),
        embeddings=embedding_choice(args),
        argv=list(argv),
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    results = run_benchmark(config, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(render(config, results))
    return 0


if __name__ == "__main__":
    # Discarded drafts and recall budget misses are logged as warnings on every turn they
    # happen: only errors reach the terminal; the table counts them.
    _handler = logging.StreamHandler()
    _handler.setLevel(logging.ERROR)
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(_handler)
    sys.exit(main())
