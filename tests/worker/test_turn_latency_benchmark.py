"""The turn-latency benchmark (bench/turn_latency_benchmark.py) at a tiny size, and the fakes it
hears the caller with.

It checks that the fakes make LiveKit behave as with a real VAD and a streaming STT (a draft
started at the final transcript and kept, by LiveKit's own log line), that the benchmark
runs end to end through real `AgentSession`s and prints a row for every size, input and
design, and that its counts agree with each other and with what LiveKit logged; searching
by meaning with the real test model (`e5_model_dir`), whose vectors the fill gives the
caller's memories, and by words only. It asserts nothing about speed (that is what the
benchmark itself is for).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from livekit.agents import Agent, llm

from bench.turn_latency_benchmark import (
    CALLER_IDENTITY,
    DESIGN_LABELS,
    DESIGNS,
    HOOK,
    MODES,
    NONE,
    SPOKEN,
    TABLE_HEADER,
    TYPED,
    WORKER,
    end_of_turn,
    fill_store_file,
    main,
    parse_args,
    render,
    run_benchmark,
)
from bench.workload import benchmark_memory
from caller_memory import livekit_identity_to_uuid, set_default_memory
from caller_memory.embeddings import OnnxEmbedder
from caller_memory.indexing import index_text
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import (
    FakeAudioInput,
    FakeAudioOutput,
    FakeTimedLLM,
    FakeVAD,
    FakeVoice,
    FakeVoiceSTT,
    eventually,
    voice_session,
)

SIZE = 60
TURNS = 4
TINY = [
    "--sizes",
    str(SIZE),
    "--turns",
    str(TURNS),
    "--calls",
    "2",
    "--warmup",
    "1",
    "--other-callers",
    "2",
    "--gap-ms",
    "0",
]
NUMBER = re.compile(r"^[0-9]+\.[0-9]$")


async def test_the_fake_voice_gets_a_draft_started_and_kept_by_livekit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain `Agent` in a `voice_session`: the VAD's start and end of speech, then the
    STT's final transcript; LiveKit starts its draft at the transcript, before it commits the
    turn, and uses it ("using preemptive generation"): one LLM request per turn, and the
    reply's audio reaches the speaker after the commit."""
    caplog.set_level(logging.DEBUG, logger="livekit.agents")
    voice = FakeVoice()
    fake_llm = FakeTimedLLM(ttft=0.05)
    session = voice_session(fake_llm, FakeVoiceSTT(voice), FakeVAD(voice))
    speaker = session.output.audio
    assert isinstance(speaker, FakeAudioOutput)
    users: list[llm.ChatMessage] = []
    replies: list[str] = []

    def on_item(event: object) -> None:
        item = getattr(event, "item", None)
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            users.append(item)
        elif isinstance(item, llm.ChatMessage) and item.role == "assistant":
            replies.append(item.text_content or "")

    session.on("conversation_item_added", on_item)
    await session.start(agent=Agent(instructions="You are terse."))
    try:
        for n, text in enumerate(["Where did I grow up?", "Tell me about Lisbon."], start=1):
            utterance = voice.say(text)
            await eventually(lambda: len(replies) == n, f"reply {n}")  # noqa: B023 -- awaited now
            request = fake_llm.timed_requests[-1]
            assert len(fake_llm.timed_requests) == n  # one request per turn: the draft
            assert replies[-1] == request.reply == f"reply #{n}: {text}"
            ended = end_of_turn(users[-1], n)
            assert utterance.speech_started_at is not None
            assert utterance.speech_ended_at is not None
            assert utterance.vad_ended_at is not None
            assert utterance.transcribed_at is not None
            # in order: speech, the VAD's end of speech, the transcript, the draft, the commit
            assert utterance.speech_started_at < utterance.speech_ended_at
            assert utterance.speech_ended_at <= utterance.vad_ended_at
            assert utterance.vad_ended_at <= utterance.transcribed_at
            assert utterance.transcribed_at <= request.started_at < ended
            first_audio = speaker.first_frame_after(request.started_at)
            assert first_audio is not None and first_audio.at >= ended
    finally:
        audio = session.input.audio
        assert isinstance(audio, FakeAudioInput)
        audio.close()
        await session.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name == "livekit.agents"]
    assert sum("using preemptive generation" in line for line in lines) == 2
    assert not any("preemptive generation invalidated" in line for line in lines)


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """The main table's rows at SIZE, keyed by (input, design label)."""
    assert out.count(TABLE_HEADER) == 1, out
    rows: dict[tuple[str, str], list[str]] = {}
    for line in out.splitlines():
        if line.startswith(f"| {SIZE} | "):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if cells[1] in MODES:  # not the setup table's row
                rows[(cells[1], cells[2])] = cells[3:]
    return rows


def test_the_fill_embeds_the_callers_memories_with_the_model(
    tmp_path: Path, e5_model_dir: Path
) -> None:
    """The caller's memories carry the model's own vectors of what the manager embeds
    (`index_text`); the other callers' carry unit vectors under the same name."""
    embedder = OnnxEmbedder(e5_model_dir)
    path = tmp_path / "filled.sqlite3"
    try:
        fill = fill_store_file(
            path, size=SIZE, other_callers=2, other_share=0.5, seed=3, embedder=embedder
        )
        with sqlite3.connect(path) as conn:
            rows = conn.execute(
                "SELECT user_id, kind, key, value, context, embedding, embedding_model "
                "FROM memories ORDER BY id"
            ).fetchall()
        caller = livekit_identity_to_uuid(CALLER_IDENTITY)
        mine = [r for r in rows if r[0] == caller]
        assert fill.rows == len(rows) == SIZE + 2 * 30 and len(mine) == SIZE
        assert fill.embed_seconds > 0
        assert {r[6] for r in rows} == {embedder.name}
        vectors = np.stack([np.frombuffer(r[5], dtype="<f4") for r in rows])
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        sample = mine[:3] + mine[-3:]  # facts and utterances (with their context)
        assert any(r[4] for r in sample) and any(r[1] == "fact" for r in sample)
        again = embedder.embed_blocking(
            [index_text(kind=r[1], key=r[2], value=r[3], context=r[4]) for r in sample]
        )
        for row, vector in zip(sample, again, strict=True):
            assert float(np.frombuffer(row[5], dtype="<f4") @ vector) > 0.99, row[3]
    finally:
        asyncio.run(embedder.aclose())


def test_tiny_run_prints_a_coherent_row_for_every_input_and_design(e5_model_dir: Path) -> None:
    config = parse_args([*TINY, "--embeddings", "local", "--model-dir", str(e5_model_dir)])
    results = run_benchmark(config, progress=lambda _m: None)
    assert results.fills[SIZE].embed_seconds > 0  # the caller's memories were embedded

    for mode in MODES:
        for design in DESIGNS:
            row = results.rows[(SIZE, mode, design)]
            assert len(row.turns) == TURNS and row.calls == 2, (mode, design)
            for turn in row.turns:
                assert 0 <= turn.to_token_s <= turn.to_audio_s, turn
                assert turn.requests == 1 + turn.discarded, turn  # a discarded draft is redone
            if mode == TYPED:  # no endpointing, no draft: straight to the reply
                assert row.discarded == row.from_draft == 0, design
    # no memory: LiveKit's draft answers every spoken turn, and no block reaches the LLM
    plain = results.rows[(SIZE, SPOKEN, NONE)]
    assert plain.from_draft == TURNS and plain.discarded == 0
    assert all(r.injected == 0 for (_, _, d), r in results.rows.items() if d == NONE)
    # the hook's design: a turn with memories costs the draft; one without keeps it
    hook = results.rows[(SIZE, SPOKEN, HOOK)]
    assert hook.injected > 0  # the caller's sentences bear on what is stored
    assert hook.discarded == hook.injected
    assert hook.from_draft == TURNS - hook.injected
    for turn in hook.turns:
        assert turn.from_draft == (not turn.injected), turn
    # ... and typed turns never reach its hook, so they get no memories
    assert results.rows[(SIZE, TYPED, HOOK)].injected == 0
    # this worker recalls for spoken and typed turns alike
    assert all(results.rows[(SIZE, mode, WORKER)].injected > 0 for mode in MODES)

    out = render(config, results)
    rows = _rows(out)
    assert set(rows) == {(m, DESIGN_LABELS[d]) for m in MODES for d in DESIGNS}
    for (mode, label), cells in rows.items():
        design = next(d for d, name in DESIGN_LABELS.items() if name == label)
        row = results.rows[(SIZE, mode, design)]
        turns, token50, token99, audio50, audio99, discarded, requests = cells[:7]
        drafts, memories, misses = cells[7:]
        assert turns == str(TURNS)
        assert all(NUMBER.match(v) for v in (token50, token99, audio50, audio99)), cells
        assert float(token50) <= float(token99) and float(audio50) <= float(audio99)
        assert discarded == f"{100 * row.discarded / TURNS:.1f}"
        assert requests == f"{row.requests / TURNS:.2f}"
        assert drafts == (f"{row.from_draft} / {TURNS}" if mode == SPOKEN else "n/a")
        assert memories == (f"{row.injected} / {TURNS}" if design != NONE else "n/a")
        assert misses == (str(row.budget_misses) if design != NONE else "n/a")
    assert "Goal at 10,000 memories" not in out  # no such size in this run
    assert "search by meaning and words" in out
    assert "embeddings local: `multilingual-e5-small" in out and str(e5_model_dir) in out
    fill = results.fills[SIZE]
    assert f"| {SIZE} | {fill.rows} | {fill.seconds:.1f} | {fill.embed_seconds:.1f} |" in out
    # the benchmark used its own memories: no process-wide one was built or installed
    assert set_default_memory(None) is None


def test_main_prints_the_table_with_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*TINY, "--designs", "none,worker", "--modes", "typed", "--embeddings", "off"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "$ .venv/bin/python -m bench.turn_latency_benchmark " + " ".join(argv) in out
    assert set(_rows(out)) == {(TYPED, DESIGN_LABELS[NONE]), (TYPED, DESIGN_LABELS[WORKER])}
    assert "Load avg (1 min)" in out
    assert "search by words only" in out and "embeddings off" in out
    # the fill embedded nothing: "-" in its column
    assert re.search(rf"\| {SIZE} \| {SIZE + 2 * 12} \| [0-9.]+ \| - \|", out), out


async def test_benchmark_memory_searches_with_the_embedder_it_is_given(
    tmp_path: Path, e5_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmarks' memory takes its embedder from its argument, never from the
    environment: None searches by words even where the environment asks for meaning."""
    monkeypatch.setenv("MEMORY_EMBEDDINGS", "local")
    monkeypatch.setenv("MEMORY_EMBEDDING_MODEL_DIR", str(e5_model_dir))
    by_words = benchmark_memory(
        SQLiteMemoryStore(tmp_path / "words.sqlite3"), tmp_path, embedder=None
    )
    await by_words.aclose()
    assert by_words.embedder is None and by_words.manager.embedder is None
    assert by_words.settings.embeddings == "off"

    monkeypatch.setenv("MEMORY_EMBEDDINGS", "off")
    embedder = OnnxEmbedder(e5_model_dir)
    by_meaning = benchmark_memory(
        SQLiteMemoryStore(tmp_path / "meaning.sqlite3"), tmp_path, embedder=embedder
    )
    await by_meaning.aclose()
    assert by_meaning.embedder is embedder and by_meaning.manager.embedder is embedder
    assert by_meaning.settings.embeddings == "local"
