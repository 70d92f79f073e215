"""Honest fakes for testing an agent with caller memory, where the real thing cannot run.

- `FakeLLM` streams what its `respond` returns for each chat context and records every
  context it was asked to complete (`requests`), so a test can check what the agent sent to
  the model; `FakeScriptedLLM` replies by quoting the caller's last message.
- `FakeSTT` and `FakeAudioInput` stand in for the caller's microphone and the speech-to-text
  service, so that a real `AgentSession` runs its real audio path (STT turn detection,
  `Agent.on_user_turn_completed`) with no network: `FakeSTT.say(text)` delivers a final
  transcript and the end of speech.
- `FakeVoice`, `FakeVAD` and `FakeVoiceSTT` are the caller's voice as a VAD-based session
  hears it (as the reference worker's session: a VAD, `turn_detection` unset): for each
  `FakeVoice.say(text)` the VAD reports the start and then the end of speech as the audio
  frames flow, and the STT delivers the final transcript (by default just after the end of
  speech, before the end of the turn: when LiveKit starts its preemptive draft); `FakeTTS` and
  `FakeAudioOutput` are the agent's voice and the caller's speaker (which records when each
  frame reached it); `FakeTimedLLM` takes a set time to its first token and keeps the timing
  of every request. `voice_session` puts them together.
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
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    APIConnectOptions,
    TurnHandlingOptions,
    llm,
    stt,
    tts,
    vad,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given
from livekit.agents.voice import io

from caller_memory.memory import CallerMemory
from caller_memory.settings import MemorySettings
from caller_memory.stores.base import MemoryStore, StoreStats, counts_store_errors
from caller_memory.stores.errors import StorageUnavailableError
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.types import Candidate, FactChange, Memory, Profile, Unembedded, WriteOutcome
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


@counts_store_errors
class FakeStoreOutage:
    """A `MemoryStore` wrapper around a real store; the operations named in `failing` raise
    `StorageUnavailableError` while `down` is true, and every other call goes through.
    `calls` records the name of every operation asked of the store, refused or not. Its
    refusals are counted as store errors like a backend's (backend `other`: it is none of
    the three), once: the inner store's own failures are counted as the fake's."""

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
        **when_and_details: Any,
    ) -> WriteOutcome:
        self._check("upsert_memory")
        return await self.inner.upsert_memory(
            user_id, category, key, value, identity, **when_and_details
        )

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None:
        self._check("get_memory")
        return await self.inner.get_memory(user_id, category, key)

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        self._check("search_memories")
        return await self.inner.search_memories(user_id, query, limit)

    async def search_candidates(
        self, user_id: str, query: str, limit: int, **by_meaning: Any
    ) -> list[Candidate]:
        self._check("search_candidates")
        return await self.inner.search_candidates(user_id, query, limit, **by_meaning)

    async def set_embedding(self, *args: Any) -> bool:
        self._check("set_embedding")
        return await self.inner.set_embedding(*args)

    async def unembedded(self, embedding_model: str, limit: int) -> list[Unembedded]:
        self._check("unembedded")
        return await self.inner.unembedded(embedding_model, limit)

    async def has_vectors(self) -> bool:
        return await self.inner.has_vectors()

    async def prepare_caller(self, user_id: str, embedding_model: str) -> None:
        await self.inner.prepare_caller(user_id, embedding_model)

    async def list_memories(self, user_id: str) -> list[Memory]:
        self._check("list_memories")
        return await self.inner.list_memories(user_id)

    async def list_history(self, user_id: str) -> list[FactChange]:
        self._check("list_history")
        return await self.inner.list_history(user_id)

    async def list_stating(self, user_id: str, category: str, key: str) -> list[Memory]:
        self._check("list_stating")
        return await self.inner.list_stating(user_id, category, key)

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool:
        self._check("delete_memory")
        return await self.inner.delete_memory(user_id, category, key)

    async def delete_user(self, user_id: str, *, erased_at: float | None = None) -> int:
        self._check("delete_user")
        return await self.inner.delete_user(user_id, erased_at=erased_at)

    async def stats(self) -> StoreStats:
        self._check("stats")
        return await self.inner.stats()

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


# -- a VAD-based voice session: the caller's voice, the agent's voice, a model's timing ---------


@dataclass
class FakeUtterance:
    """One thing the caller said into a `FakeVoice`, and when each part of hearing it happened
    (`time.time()` values; None until it happened)."""

    text: str
    speech_s: float  # how long the caller speaks, in audio time
    said_at: float  # `FakeVoice.say` was called
    speech_started_at: float | None = None  # the VAD heard the first frame of it
    speech_ended_at: float | None = None  # the last frame of speech went by
    vad_ended_at: float | None = None  # the VAD reported END_OF_SPEECH
    transcribed_at: float | None = None  # the STT delivered the final transcript


class FakeVoice:
    """The caller's voice, heard by a `FakeVAD` and transcribed by a `FakeVoiceSTT`.

    `say(text)` queues an utterance of `speech_s` seconds of audio; utterances are spoken one
    after another into whatever audio the VAD is pushed. `utterances` keeps every one of them
    with its times, so a test or a benchmark can see when the speech ended and when the
    transcript came.
    """

    def __init__(self, *, speech_s: float = 0.3) -> None:
        self.speech_s = speech_s
        self.utterances: list[FakeUtterance] = []
        self._unspoken: list[FakeUtterance] = []
        self._spoken: asyncio.Queue[FakeUtterance] = asyncio.Queue()

    def say(self, text: str, *, speech_s: float | None = None) -> FakeUtterance:
        utterance = FakeUtterance(
            text=text,
            speech_s=self.speech_s if speech_s is None else speech_s,
            said_at=time.time(),
        )
        self.utterances.append(utterance)
        self._unspoken.append(utterance)
        return utterance

    def _next_utterance(self) -> FakeUtterance | None:
        return self._unspoken.pop(0) if self._unspoken else None


class FakeVAD(vad.VAD):
    """A `vad.VAD` that hears a `FakeVoice` in the audio frames its stream is pushed.

    It counts audio time frame by frame, as a real VAD counts samples: the first frame after
    `voice.say(text)` starts the speech (START_OF_SPEECH), the speech lasts the utterance's
    `speech_s`, and END_OF_SPEECH comes once `silence_s` of silence followed it, reporting
    that silence as its `silence_duration` (as Silero does with its `min_silence_duration`,
    0.55 s by default), so LiveKit places the end of speech where the speech really ended.
    Every frame also gets an INFERENCE_DONE. Frames with nothing said are silence.

    With `silence_s` 0 (the default) the end of speech is reported as soon as it happened, so
    LiveKit's default turn detector is never asked for a verdict on the fake's silent audio
    (see `voice_session`), and a fast STT's final transcript comes after the end of speech
    and before the end of the turn: that is when LiveKit starts a preemptive draft.
    """

    def __init__(self, voice: FakeVoice, *, silence_s: float = 0.0) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.01))
        self.voice = voice
        self.silence_s = silence_s

    @property
    def model(self) -> str:
        return "fake-vad"

    @property
    def provider(self) -> str:
        return "fake"

    def stream(self) -> vad.VADStream:
        return _FakeVADStream(self)


class _FakeVADStream(vad.VADStream):
    def _event(self, kind: vad.VADEventType, samples: int, **values: Any) -> None:
        self._event_ch.send_nowait(
            vad.VADEvent(type=kind, samples_index=samples, timestamp=time.time(), **values)
        )

    async def _main_task(self) -> None:
        fake = self._vad
        assert isinstance(fake, FakeVAD)
        current: FakeUtterance | None = None
        speech = silence = 0.0  # audio seconds: of the current utterance, of silence after it
        samples = 0
        async for item in self._input_ch:
            if not isinstance(item, rtc.AudioFrame):
                continue  # a flush marker: a scripted utterance has no state worth dropping
            samples += item.samples_per_channel
            now = time.time()
            started = False
            if current is None:
                current = fake.voice._next_utterance()
                if current is None:
                    silence += item.duration
                    self._event(
                        vad.VADEventType.INFERENCE_DONE,
                        samples,
                        speech_duration=0.0,
                        silence_duration=silence,
                        raw_accumulated_silence=silence,
                    )
                    continue
                current.speech_started_at = now - item.duration
                speech, silence, started = item.duration, 0.0, True
            elif current.speech_ended_at is None:
                speech += item.duration
            else:
                silence += item.duration
            just_ended = current.speech_ended_at is None and speech >= current.speech_s - 1e-9
            if just_ended:
                current.speech_ended_at = now
            speaking = current.speech_ended_at is None
            self._event(
                vad.VADEventType.INFERENCE_DONE,
                samples,
                speech_duration=speech,
                silence_duration=silence,
                speaking=speaking,
                probability=1.0 if speaking else 0.0,
                raw_accumulated_speech=speech if speaking else 0.0,
                raw_accumulated_silence=silence,
            )
            if started:
                self._event(
                    vad.VADEventType.START_OF_SPEECH,
                    samples,
                    speech_duration=speech,
                    silence_duration=0.0,
                    speaking=True,
                )
            if not speaking and silence >= fake.silence_s - 1e-9:
                self._event(
                    vad.VADEventType.END_OF_SPEECH,
                    samples,
                    speech_duration=speech,
                    silence_duration=silence,
                    speaking=False,
                )
                current.vad_ended_at = now
            if just_ended:
                fake.voice._spoken.put_nowait(current)  # the STT has heard it all
            if current.vad_ended_at is not None:
                current = None


class FakeVoiceSTT(stt.STT):
    """A streaming `stt.STT` that transcribes a `FakeVoice`: the FINAL_TRANSCRIPT of each
    utterance arrives `delay_s` after the caller stopped speaking (where the `FakeVAD` heard
    the speech end), as a streaming STT finalises what it heard once the speech is over.
    With the defaults (the VAD's `silence_s` 0, `delay_s` 0.05) it comes just after the VAD's
    END_OF_SPEECH; a `delay_s` below the VAD's `silence_s` makes it come before (a fast
    streaming STT next to Silero's 0.55 s of silence). No interim results and no speech
    events of its own: in a VAD-based session the VAD says when speech starts and ends."""

    def __init__(self, voice: FakeVoice, *, delay_s: float = 0.05) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))
        self.voice = voice
        self.delay_s = delay_s
        self.frames_received = 0
        self.transcripts_sent: list[str] = []

    @property
    def model(self) -> str:
        return "fake-voice-stt"

    @property
    def provider(self) -> str:
        return "fake"

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("FakeVoiceSTT only streams")

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _FakeVoiceSTTStream(stt=self, conn_options=conn_options)


class _FakeVoiceSTTStream(stt.RecognizeStream):
    async def _run(self) -> None:
        fake = self._stt
        assert isinstance(fake, FakeVoiceSTT)

        async def listen() -> None:
            async for frame in self._input_ch:
                if isinstance(frame, rtc.AudioFrame):
                    fake.frames_received += 1

        listening = asyncio.create_task(listen())
        next_spoken: asyncio.Future[FakeUtterance] | None = None
        try:
            while True:
                next_spoken = asyncio.ensure_future(fake.voice._spoken.get())
                await asyncio.wait({next_spoken, listening}, return_when=asyncio.FIRST_COMPLETED)
                if not next_spoken.done():
                    return  # the audio input ended
                utterance = next_spoken.result()
                ended = utterance.speech_ended_at or time.time()
                wait = ended + fake.delay_s - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                utterance.transcribed_at = time.time()
                fake.transcripts_sent.append(utterance.text)
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                        alternatives=[
                            stt.SpeechData(
                                language=LanguageCode("en"), text=utterance.text, confidence=1.0
                            )
                        ],
                    )
                )
        finally:
            listening.cancel()
            if next_spoken is not None and not next_spoken.done():
                next_spoken.cancel()


class FakeTTS(tts.TTS):
    """A streaming `tts.TTS` that voices any text at once: `frame_ms` of silent audio for each
    text chunk it is sent, the first `first_audio_s` seconds after a segment's first text."""

    def __init__(
        self, *, sample_rate: int = 24000, frame_ms: int = 20, first_audio_s: float = 0.0
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self.frame_ms = frame_ms
        self.first_audio_s = first_audio_s
        self.texts: list[str] = []  # every text chunk it was sent
        self._requests = itertools.count(1)

    @property
    def model(self) -> str:
        return "fake-tts"

    @property
    def provider(self) -> str:
        return "fake"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return self._synthesize_with_stream(text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.SynthesizeStream:
        return _FakeTTSStream(tts=self, conn_options=conn_options)


class _FakeTTSStream(tts.SynthesizeStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        fake = self._tts
        assert isinstance(fake, FakeTTS)
        request = next(fake._requests)
        output_emitter.initialize(
            request_id=f"fake-tts-{request}",
            sample_rate=fake.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
            frame_size_ms=fake.frame_ms,
            stream=True,
        )
        chunk = bytes(fake.sample_rate * fake.frame_ms // 1000 * 2)
        segments = itertools.count(1)
        in_segment = False
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                if in_segment:
                    output_emitter.end_segment()
                    in_segment = False
                continue
            if not in_segment:
                output_emitter.start_segment(segment_id=f"{request}-{next(segments)}")
                in_segment = True
                self._mark_started()
                if fake.first_audio_s:
                    await asyncio.sleep(fake.first_audio_s)
            fake.texts.append(item)
            output_emitter.push(chunk)
        if in_segment:
            output_emitter.end_segment()


@dataclass
class FakeCapturedFrame:
    at: float  # `time.time()` when the frame reached the speaker
    duration: float
    segment: int  # the playback segment it belongs to, from 1


class FakeAudioOutput(io.AudioOutput):
    """The caller's speaker: takes the agent's audio, records when each frame reached it
    (`frames`), and reports each segment played as soon as it is flushed (playback takes no
    time), so the session moves on as it does with a real speaker. It can be paused, as a
    room's speaker can (LiveKit pauses the agent when the caller starts talking over it):
    with nothing waiting to be played, a pause holds nothing back."""

    def __init__(self, *, sample_rate: int | None = None) -> None:
        super().__init__(
            label="fake-audio-output",
            capabilities=io.AudioOutputCapabilities(pause=True),
            next_in_chain=None,
            sample_rate=sample_rate,
        )
        self.frames: list[FakeCapturedFrame] = []
        self.segments = 0
        self._pushed = 0.0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        now = time.time()
        if not self._pushed:
            self.segments += 1
            self.on_playback_started(created_at=now)
        self._pushed += frame.duration
        self.frames.append(
            FakeCapturedFrame(at=now, duration=frame.duration, segment=self.segments)
        )

    def flush(self) -> None:
        super().flush()
        if not self._pushed:
            return
        played, self._pushed = self._pushed, 0.0
        # reported from the loop, not from inside flush: the wrappers LiveKit puts around a
        # speaker finish their own flush first, as they do with a real one
        asyncio.get_running_loop().call_soon(
            lambda: self.on_playback_finished(playback_position=played, interrupted=False)
        )

    def clear_buffer(self) -> None:
        pass  # playback takes no time: nothing is waiting to be played

    def first_frame_after(self, moment: float) -> FakeCapturedFrame | None:
        """The first frame that reached the speaker at or after `moment` (`time.time()`)."""
        return next((f for f in self.frames if f.at >= moment), None)


@dataclass
class FakeLLMRequest:
    """One request a `FakeTimedLLM` was asked to complete, and how it went (`time.time()`)."""

    number: int  # from 1, in the order the requests were made
    chat_ctx: llm.ChatContext
    started_at: float
    reply: str
    first_chunk_at: float | None = None
    finished_at: float | None = None
    cancelled: bool = False  # closed before its last chunk (e.g. a discarded draft)
    chunks: list[float] = field(default_factory=list)


class FakeTimedLLM(FakeLLM):
    """An `llm.LLM` with a model's timing: its first chunk `ttft` seconds after the request,
    the next ones `chunk_interval` apart. It answers `reply #<n>: <the caller's last
    message>` (`greeting #<n>` with none), n the request's number, so a reply says which
    request produced it (`request_for`); `timed_requests` keeps every request's timing."""

    model_name = "fake-timed"

    def __init__(self, *, ttft: float = 0.3, chunk_interval: float = 0.0) -> None:
        super().__init__()
        self.ttft = ttft
        self.chunk_interval = chunk_interval
        self.timed_requests: list[FakeLLMRequest] = []

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
        number = len(self.timed_requests) + 1
        said = FakeScriptedLLM.reply_for(chat_ctx)  # "reply: <text>", or "greeting"
        reply = (
            f"greeting #{number}"
            if said == "greeting"
            else f"reply #{number}: {said.removeprefix('reply: ')}"
        )
        request = FakeLLMRequest(
            number=number, chat_ctx=chat_ctx.copy(), started_at=time.time(), reply=reply
        )
        self.timed_requests.append(request)
        self.requests.append(request.chat_ctx)
        return _FakeTimedStream(
            self, request, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )

    def request_for(self, reply: str) -> FakeLLMRequest | None:
        """The request whose answer `reply` is (the text of an assistant message)."""
        return next((r for r in self.timed_requests if r.reply == reply), None)


class _FakeTimedStream(llm.LLMStream):
    def __init__(self, fake: FakeTimedLLM, request: FakeLLMRequest, **kwargs: Any) -> None:
        super().__init__(fake, **kwargs)
        self._request = request

    async def _run(self) -> None:
        fake = self._llm
        assert isinstance(fake, FakeTimedLLM)
        request = self._request
        words = request.reply.split(" ")
        try:
            await asyncio.sleep(fake.ttft)
            for i, word in enumerate(words):
                if i and fake.chunk_interval:
                    await asyncio.sleep(fake.chunk_interval)
                now = time.time()
                if request.first_chunk_at is None:
                    request.first_chunk_at = now
                request.chunks.append(now)
                content = word if i == 0 else " " + word
                delta = llm.ChoiceDelta(role="assistant", content=content)
                self._event_ch.send_nowait(llm.ChatChunk(id=f"fake-{request.number}", delta=delta))
            request.finished_at = time.time()
        except asyncio.CancelledError:
            request.cancelled = True
            raise


def voice_session(
    fake_llm: llm.LLM,
    fake_stt: stt.STT,
    fake_vad: vad.VAD,
    fake_tts: tts.TTS | None = None,
    *,
    endpointing_delay: float = 0.5,
    turn_detection: NotGivenOr[Literal["vad"]] = NOT_GIVEN,
) -> AgentSession[Any]:
    """A session that hears the caller as the reference worker's does: a VAD, and
    `turn_detection` unset, preemptive generation at its default (on), the end of the turn
    `endpointing_delay` after the end of speech (the issue's 0.5 s; LiveKit's own default with
    its turn detector is 0.3 s). Its microphone is a `FakeAudioInput` (close it before closing
    the session) and its speaker a `FakeAudioOutput` (`session.output.audio`); the TTS is a
    `FakeTTS` unless given.

    With `turn_detection` unset, livekit-agents 1.8.9 adds its own audio end-of-turn model
    (`inference.TurnDetector()`, the local `turn-detector-v1-mini` without LiveKit Cloud):
    the session stays VAD-based (a final transcript starts a draft), and the model is asked
    for a verdict only while the VAD reports trailing silence inside the speech. A `FakeVAD`
    with `silence_s=0` (its default) reports none, so the turn ends `endpointing_delay` after
    the speech; with `silence_s` > 0 the model judges the fake (silent) audio, finds the end
    of the turn unlikely and waits the maximum delay (2.5 s). `turn_detection="vad"` leaves
    the model out: the turn then always ends on the endpointing delay."""
    turn_handling: TurnHandlingOptions = {"endpointing": {"min_delay": endpointing_delay}}
    if is_given(turn_detection):
        turn_handling["turn_detection"] = turn_detection
    session: AgentSession[Any] = AgentSession(
        llm=fake_llm,
        stt=fake_stt,
        vad=fake_vad,
        tts=fake_tts if fake_tts is not None else FakeTTS(),
        turn_handling=turn_handling,
        # on close the session waits this long for a last transcript; the caller is done
        session_close_transcript_timeout=0.1,
    )
    session.input.audio = FakeAudioInput()
    session.output.audio = FakeAudioOutput()
    return session
