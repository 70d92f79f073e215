"""Test fakes for what cannot run here: the LLM, the STT, the microphone. Small, honest, named
as fakes. (`sqlite_rows` is no fake: it reads what the real store wrote, around the store.)

`FakeLLM` is every fake model's base: it records every chat context it was asked to complete,
so tests can check what the agent sent to the model, and streams what its `respond` returns.
`FakeScriptedLLM` streams a reply that quotes the caller's last message; the tool-calling
fakes of tests/test_memory_tools.py and tests/test_llm_extractor.py answer with tool calls.

`FakeSTT` and `FakeAudioInput` stand in for the caller's microphone and the speech-to-text
service, so that a real `AgentSession` runs its real audio-recognition path (STT turn
detection, `Agent.on_user_turn_completed`) with no network. `FakeStoreOutage` wraps a real
store and makes chosen operations fail with `StorageUnavailableError` while it is "down";
`outage_errors` finds what the worker logged about it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livekit import rtc
from livekit.agents import APIConnectOptions, llm, stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer
from livekit.agents.voice import io

from memory_types import Memory, Profile, WriteOutcome
from storage.base import MemoryStore
from storage.errors import StorageUnavailableError

if TYPE_CHECKING:
    import pytest


class FakeLLM(llm.LLM):
    """An `llm.LLM` whose answer to a chat context is what `respond` returns for it: each
    delta streamed as one chunk, after `delay` seconds (an exception `respond` raises is the
    model failing). Every chat context it is asked to complete is kept in `requests`."""

    model_name = "fake"

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.requests: list[llm.ChatContext] = []

    @property
    def model(self) -> str:
        return self.model_name

    @property
    def provider(self) -> str:
        return "fake"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.requests.append(chat_ctx.copy())
        return _FakeStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        raise NotImplementedError


class _FakeStream(llm.LLMStream):
    async def _run(self) -> None:
        fake = self._llm
        assert isinstance(fake, FakeLLM)
        if fake.delay:
            await asyncio.sleep(fake.delay)
        for delta in fake.respond(self._chat_ctx):
            self._event_ch.send_nowait(llm.ChatChunk(id="fake", delta=delta))


class FakeScriptedLLM(FakeLLM):
    """An `llm.LLM` that answers `reply: <last user text>` (or `greeting` with no user text)."""

    model_name = "fake-scripted"

    @staticmethod
    def reply_for(chat_ctx: llm.ChatContext) -> str:
        for item in reversed(chat_ctx.items):
            if isinstance(item, llm.ChatMessage) and item.role == "user":
                return f"reply: {item.text_content}"
        return "greeting"

    def respond(self, chat_ctx: llm.ChatContext) -> list[llm.ChoiceDelta]:
        words = self.reply_for(chat_ctx).split(" ")
        return [
            llm.ChoiceDelta(role="assistant", content=word if i == 0 else " " + word)
            for i, word in enumerate(words)
        ]


def chat_texts(chat_ctx: llm.ChatContext, role: str | None = None) -> list[str]:
    """The text of every message in `chat_ctx` (of `role`'s messages only, with `role`)."""
    return [
        item.text_content or ""
        for item in chat_ctx.items
        if isinstance(item, llm.ChatMessage) and (role is None or item.role == role)
    ]


def user_texts(chat_ctx: llm.ChatContext) -> list[str]:
    return chat_texts(chat_ctx, "user")


class FakeSTT(stt.STT):
    """A streaming `stt.STT` that "hears" scripted utterances in the audio it is sent.

    `say(text)` queues an utterance; the next audio frame the live recognition stream
    receives makes it emit START_OF_SPEECH, FINAL_TRANSCRIPT(text) and END_OF_SPEECH, as a
    streaming STT with its own end-of-speech detection does. Nothing is transcribed from
    frames that arrive with nothing queued, so no audio flowing means no transcript.
    """

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))
        self._utterances: asyncio.Queue[str] = asyncio.Queue()
        self.frames_received = 0
        self.transcripts_sent: list[str] = []

    @property
    def model(self) -> str:
        return "fake-stt"

    @property
    def provider(self) -> str:
        return "fake"

    def say(self, text: str) -> None:
        self._utterances.put_nowait(text)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("FakeSTT only streams")

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _FakeSTTStream(stt=self, conn_options=conn_options)


class _FakeSTTStream(stt.RecognizeStream):
    async def _run(self) -> None:
        fake = self._stt
        assert isinstance(fake, FakeSTT)
        async for frame in self._input_ch:
            if not isinstance(frame, rtc.AudioFrame):
                continue  # a flush marker
            fake.frames_received += 1
            if fake._utterances.empty():
                continue
            text = fake._utterances.get_nowait()
            fake.transcripts_sent.append(text)
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH))
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                    alternatives=[
                        stt.SpeechData(language=LanguageCode("en"), text=text, confidence=1.0)
                    ],
                )
            )
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))


class FakeAudioInput(io.AudioInput):
    """A microphone that yields silent 16 kHz mono frames, one per `frame_ms`, until closed."""

    def __init__(self, *, sample_rate: int = 16000, frame_ms: int = 10) -> None:
        super().__init__(label="fake-audio-input")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self._samples = sample_rate * frame_ms // 1000
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def __anext__(self) -> rtc.AudioFrame:
        if self.closed:
            raise StopAsyncIteration
        await asyncio.sleep(self.frame_ms / 1000)
        return rtc.AudioFrame(
            data=bytes(self._samples * 2),
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=self._samples,
        )


class FakeStoreOutage:
    """A `MemoryStore` wrapper around a real store; the operations named in `failing` raise
    `StorageUnavailableError` while `down` is true, and every other call goes through.
    `calls` records the name of every operation asked of the store, refused or not."""

    def __init__(self, inner: MemoryStore, *, failing: frozenset[str] = frozenset()) -> None:
        self.inner = inner
        self.name = f"outage({inner.name})"
        self.failing = failing
        self.down = True
        self.refused: list[str] = []
        self.calls: list[str] = []

    def _check(self, operation: str) -> None:
        self.calls.append(operation)
        if self.down and operation in self.failing:
            self.refused.append(operation)
            raise StorageUnavailableError(f"fake outage: {operation} refused")

    async def ensure_profile(self, user_id: str, identity: str | None) -> tuple[Profile, bool]:
        self._check("ensure_profile")
        return await self.inner.ensure_profile(user_id, identity)

    async def get_profile(self, user_id: str) -> Profile | None:
        self._check("get_profile")
        return await self.inner.get_profile(user_id)

    async def complete_first_login(self, user_id: str) -> bool:
        self._check("complete_first_login")
        return await self.inner.complete_first_login(user_id)

    async def upsert_memory(
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        identity: str | None = None,
        **when: Any,
    ) -> WriteOutcome:
        self._check("upsert_memory")
        return await self.inner.upsert_memory(user_id, category, key, value, identity, **when)

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None:
        self._check("get_memory")
        return await self.inner.get_memory(user_id, category, key)

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        self._check("search_memories")
        return await self.inner.search_memories(user_id, query, limit)

    async def list_memories(self, user_id: str) -> list[Memory]:
        self._check("list_memories")
        return await self.inner.list_memories(user_id)

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool:
        self._check("delete_memory")
        return await self.inner.delete_memory(user_id, category, key)

    async def delete_user(self, user_id: str, *, erased_at: float | None = None) -> int:
        self._check("delete_user")
        return await self.inner.delete_user(user_id, erased_at=erased_at)

    async def aclose(self) -> None:
        await self.inner.aclose()


def outage_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The outage errors `store_health` logged (once per outage, not once per failure)."""
    return [
        r
        for r in caplog.records
        if r.name == "memory_worker.storage.health" and r.levelno >= logging.ERROR
    ]


def sqlite_rows(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(profiles, memories) exactly as they are in the SQLite file, read around the store.

    Not a fake: tests use it to check what the real store wrote, row by row. A file or table
    that does not exist yet holds no rows.
    """
    if not Path(path).exists():
        return [], []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        profiles = (
            [dict(r) for r in conn.execute("SELECT * FROM profiles ORDER BY id")]
            if "profiles" in tables
            else []
        )
        memories = (
            [dict(r) for r in conn.execute("SELECT * FROM memories ORDER BY id")]
            if "memories" in tables
            else []
        )
    finally:
        conn.close()
    return profiles, memories


class FakeWriteGate:
    """A `MemoryStore` wrapper around a real store that controls its memory writes (every
    other call goes straight through):

    - while `down` is true, `upsert_memory` raises `StorageUnavailableError` (an outage);
    - with `hold_after=N`, the writes after the first N wait until `release()` is called:
      `held` is set once a write is waiting, so a test can act while a writer (a spool replay)
      is provably halfway through its work.

    `writes` counts the writes that reached the real store.
    """

    def __init__(self, inner: MemoryStore, *, hold_after: int | None = None) -> None:
        self.inner = inner
        self.name = f"gate({inner.name})"
        self.down = False
        self.hold_after = hold_after
        self.held = asyncio.Event()
        self._released = asyncio.Event()
        self.writes = 0
        self.refused = 0

    def release(self) -> None:
        self._released.set()

    async def upsert_memory(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            self.refused += 1
            raise StorageUnavailableError("fake outage: upsert_memory refused")
        if self.hold_after is not None and self.writes >= self.hold_after:
            self.held.set()
            await self._released.wait()
        self.writes += 1
        return await self.inner.upsert_memory(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
