"""Honest fakes for testing an agent with caller memory, where the real thing cannot run.

- `FakeLLM` streams what its `respond` returns for each chat context and records every
  context it was asked to complete (`requests`), so a test can check what the agent sent to
  the model; `FakeScriptedLLM` replies by quoting the caller's last message.
- `FakeSTT` and `FakeAudioInput` stand in for the caller's microphone and the speech-to-text
  service, so that a real `AgentSession` runs its real audio path (STT turn detection,
  `Agent.on_user_turn_completed`) with no network: `FakeSTT.say(text)` delivers a final
  transcript and the end of speech.
- `FakeStoreOutage` and `FakeWriteGate` wrap a real store: the first makes chosen operations
  fail as an unreachable store does, the second holds or refuses writes on cue.
- `sqlite_memory(directory)` is a `CallerMemory` on a fresh SQLite file and spool in
  `directory`, the embedded store every test can afford.
- `text_session`, `spoken_session` and `start_caller` run callers through livekit-agents'
  real `AgentSession` the way a job entrypoint does; `eventually` and `reply_arrived` wait for
  what a session does. `caller_memory.testing.postgres` starts a throwaway PostgreSQL.

Nothing here contacts a network or needs a key.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, APIConnectOptions, llm, stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer
from livekit.agents.voice import io

from caller_memory.memory import CallerMemory
from caller_memory.settings import MemorySettings
from caller_memory.stores.base import MemoryStore
from caller_memory.stores.errors import StorageUnavailableError
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.types import Memory, Profile, WriteOutcome
from caller_memory.voice.caller import CallerSession


def sqlite_memory(directory: Path, **settings: Any) -> CallerMemory:
    """A `CallerMemory` on `directory`/memories.sqlite3 with its spool in `directory`/spool;
    `settings` override other settings by field name (e.g. `recall_budget_ms=100`). The
    environment is not read."""
    values: dict[str, Any] = {
        "sqlite_path": directory / "memories.sqlite3",
        "spool_dir": directory / "spool",
        **settings,
    }
    config = MemorySettings.model_construct(**values)
    return CallerMemory(store=SQLiteMemoryStore(config.sqlite_path), settings=config)


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


# -- sessions ----------------------------------------------------------------------------------


def text_session(fake_llm: llm.LLM) -> AgentSession[Any]:
    """A session for typed turns (`session.run`, room chat): no audio, no VAD. Typed turns do
    not go through `on_user_turn_completed`."""
    return AgentSession(llm=fake_llm, vad=None, turn_handling={"turn_detection": "manual"})


def spoken_session(fake_llm: llm.LLM, fake_stt: FakeSTT) -> AgentSession[Any]:
    """A session whose turns come from the STT: end of turn decided by the STT's
    end-of-speech, then `Agent.on_user_turn_completed`, then the reply. Its microphone is a
    `FakeAudioInput`: close it before closing the session."""
    session: AgentSession[Any] = AgentSession(
        llm=fake_llm,
        stt=fake_stt,
        vad=None,
        turn_handling={
            "turn_detection": "stt",
            "endpointing": {"min_delay": 0.0, "max_delay": 1.0},
        },
        # on close the session waits this long for a last transcript; the caller is done
        session_close_transcript_timeout=0.1,
    )
    session.input.audio = FakeAudioInput()
    return session


async def start_caller(
    memory: CallerMemory,
    session: AgentSession[Any],
    identity: str,
    agent: Callable[[], Agent],
    **start: Any,
) -> CallerSession:
    """Attach `identity` and start `session` with the agent `agent()` makes, the way a job
    entrypoint does: in a task of its own (so the caller's context is that task's)."""

    async def entrypoint() -> CallerSession:
        caller = await memory.attach(session, identity=identity)
        await session.start(agent=agent(), **{**caller.start_options, **start})
        return caller

    return await asyncio.create_task(entrypoint())


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    """Wait until `condition` holds (a deadline, not a speed assertion); `TimeoutError`
    naming `what` when it does not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def reply_arrived(session: AgentSession[Any], text: str) -> asyncio.Future[llm.ChatMessage]:
    """A future for the assistant message `text` being added to `session`'s conversation."""
    future: asyncio.Future[llm.ChatMessage] = asyncio.get_running_loop().create_future()

    def on_item(event: Any) -> None:
        item = event.item
        if (
            isinstance(item, llm.ChatMessage)
            and item.role == "assistant"
            and item.text_content == text
            and not future.done()
        ):
            future.set_result(item)

    session.on("conversation_item_added", on_item)
    future.add_done_callback(lambda _f: session.off("conversation_item_added", on_item))
    return future
