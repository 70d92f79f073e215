"""Nobody else in the caller's room can read or drive the caller's session.

A caller's session is started the way the worker starts it (`memory.attach`, then
`session.start` with the room and `caller.start_options`, i.e. `caller_room_options` and no
remote-session host), with livekit-agents' real `AgentSession` and `RoomIO`, in a room where
a second participant, mallory, is also present and attacks through every channel
livekit-agents listens on: the remote-session channel (`lk.agent.session`, real
`agent_pb.AgentSessionMessage` requests as `RemoteSession` builds them), typed chat
(`lk.chat`), and the pre-connect audio buffer (`lk.agent.pre-connect-audio-buffer`) labelled
with the caller's microphone track.

The room is a fake (tests/fake_room.py: no LiveKit server can run here); the LLM and the STT
are the fakes of `caller_memory.testing`. What cannot work without a server is switched off
in the tests, never in the options under test: the agent's audio output (no TTS can run here,
so the agent answers in transcripts only), and the media of the caller's microphone track
(replaced by a silent stream, since a remote track's media comes from the server).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import AgentSession
from livekit.agents.voice.room_io import _input as room_input
from livekit.protocol.agent_pb import agent_session as agent_pb
from livekit.rtc._proto.track_pb2 import AudioTrackFeature

from agent import Companion
from caller_memory import (
    CallerSession,
    default_memory,
    livekit_identity_to_uuid,
    memory_manager,
    session_user,
)
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeScriptedLLM, FakeSTT, chat_texts, start_caller
from tests.fake_room import FakeRoom, SentData
from tests.session_harness import eventually, reply_arrived
from tests.support import sqlite_rows

ALICE = "alice@example.com"
MALLORY = "mallory"
SESSION_TOPIC = "lk.agent.session"
CHAT_TOPIC = "lk.chat"
PRE_CONNECT_TOPIC = "lk.agent.pre-connect-audio-buffer"
TRANSCRIPTION_TOPIC = "lk.transcription"
CALLER_MIC = "TR_alice_microphone"
REPLY_TIMEOUT = 10.0
EARLIER = {
    ("PRESENTATION", "name"): "Marisol",
    ("RELATIONSHIP", "dog_name"): "Biscuit",
}
MALLORY_SAYS = "My favourite colour is mauve and I collect vintage radios"

_request_ids = itertools.count(1)


def session_request(**request: Any) -> bytes:
    """One request of livekit's remote-session protocol, serialized as `RemoteSession` sends
    it on `lk.agent.session`."""
    message = agent_pb.AgentSessionMessage(
        request=agent_pb.SessionRequest(request_id=f"req_{next(_request_ids)}", **request)
    )
    return message.SerializeToString()


def mute_everything() -> agent_pb.SessionRequest.UpdateIO:
    update = agent_pb.SessionRequest.UpdateIO()
    update.input.audio_enabled = False
    update.output.audio_enabled = False
    update.output.transcription_enabled = False
    return update


MALLORYS_REQUESTS = {
    "ping": {"ping": agent_pb.SessionRequest.Ping()},
    "get_chat_history": {"get_chat_history": agent_pb.SessionRequest.GetChatHistory()},
    "get_agent_info": {"get_agent_info": agent_pb.SessionRequest.GetAgentInfo()},
    "get_session_state": {"get_session_state": agent_pb.SessionRequest.GetSessionState()},
    "run_input": {"run_input": agent_pb.SessionRequest.RunInput(text=MALLORY_SAYS)},
    "update_io": {"update_io": mute_everything()},
}


def session_in_room(fake_llm: FakeScriptedLLM, fake_stt: FakeSTT) -> AgentSession[Any]:
    """A spoken session whose audio input is the room's (RoomIO): turns end on the STT's
    end of speech. No TTS can run here, so its audio output is switched off before it
    starts (RoomIO still publishes the agent's track; the agent answers in transcripts)."""
    session: AgentSession[Any] = AgentSession(
        llm=fake_llm,
        stt=fake_stt,
        vad=None,
        turn_handling={
            "turn_detection": "stt",
            "endpointing": {"min_delay": 0.0, "max_delay": 1.0},
        },
        session_close_transcript_timeout=0.1,
    )
    session.output.set_audio_enabled(False)
    return session


async def remember_earlier(identity: str, facts: dict[tuple[str, str], str]) -> None:
    with session_user(identity):
        for (category, key), value in facts.items():
            await memory_manager.astore(category, key, value)


async def caller_in_room(
    room: FakeRoom, fake_llm: FakeScriptedLLM, fake_stt: FakeSTT
) -> tuple[AgentSession[Any], CallerSession]:
    """Alice's session, started as the worker starts it, linked to her and greeted."""
    session = session_in_room(fake_llm, fake_stt)
    greeted = reply_arrived(session, "greeting")
    call = await start_caller(default_memory(), session, ALICE, Companion, room=room)
    await asyncio.wait_for(session.room_io.wait_for_ready(), REPLY_TIMEOUT)
    linked = session.room_io.linked_participant
    assert linked is not None and linked.identity == ALICE
    await asyncio.wait_for(greeted, REPLY_TIMEOUT)
    return session, call


async def caller_types(room: FakeRoom, session: AgentSession[Any], text: str) -> None:
    """Alice types `text` in the room's chat and the agent answers it."""
    replied = reply_arrived(session, f"reply: {text}")
    reader = room.deliver_text_stream(ALICE, CHAT_TOPIC, text)
    await asyncio.wait_for(replied, REPLY_TIMEOUT)
    assert reader.read


def rows_by_user(path: Any) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for memory in sqlite_rows(path)[1]:
        rows.setdefault(memory["user_id"], []).append(memory["value"])
    return rows


def assert_nothing_for_anyone_else(sent: list[SentData], conversation: list[str]) -> None:
    """Nothing of the session went to mallory or to the room, beyond the conversation's own
    transcript (which LiveKit delivers room-wide, as it does the agent's audio)."""
    assert [s for s in sent if s.topic == SESSION_TOPIC] == []
    assert [s for s in sent if MALLORY in s.destination_identities] == []
    to_everyone = [s for s in sent if s.to_everyone]
    assert {s.topic for s in to_everyone} <= {TRANSCRIPTION_TOPIC}
    assert [s.payload for s in to_everyone] == conversation


async def close(session: AgentSession[Any], call: CallerSession) -> None:
    assert await call.aclose()
    await session.aclose()


# -- the remote-session channel and typed chat ------------------------------------------------


async def test_a_second_participant_can_neither_read_nor_drive_the_callers_session(
    installed_sqlite_store: SQLiteMemoryStore,
) -> None:
    await remember_earlier(ALICE, EARLIER)
    room = FakeRoom()
    room.join(ALICE)
    room.join(MALLORY)
    fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
    session, call = await caller_in_room(room, fake_llm, fake_stt)
    try:
        await mallory_attacks_the_session(room, session, fake_llm)
    finally:
        await close(session, call)
    rows = rows_by_user(installed_sqlite_store.path)
    assert set(rows) == {livekit_identity_to_uuid(ALICE)}
    stored = rows[livekit_identity_to_uuid(ALICE)]
    assert "I love sailing at dawn" in stored
    assert not [value for value in stored if "mauve" in value or "radios" in value]


async def mallory_attacks_the_session(
    room: FakeRoom, session: AgentSession[Any], fake_llm: FakeScriptedLLM
) -> None:
    await caller_types(room, session, "I love sailing at dawn")

    # mallory asks for everything the remote-session protocol offers, and types in the chat
    readers = {
        name: room.deliver_byte_stream(MALLORY, SESSION_TOPIC, session_request(**request))
        for name, request in MALLORYS_REQUESTS.items()
    }
    typed_by_mallory = room.deliver_text_stream(MALLORY, CHAT_TOPIC, MALLORY_SAYS)
    # nobody in the agent takes her requests (the room drops a stream nobody listens to)
    assert {name: r.handed_over for name, r in readers.items()} == dict.fromkeys(readers, False)
    assert SESSION_TOPIC not in room.byte_stream_topics()

    # the caller goes on talking; mallory's chat message was never read, nor answered
    await caller_types(room, session, "Tomorrow I will visit the lighthouse")
    assert not typed_by_mallory.read
    assert not [r for r in readers.values() if r.read]
    # nothing of the session (events, tool output, history, instructions) left the agent
    assert_nothing_for_anyone_else(
        room.local_participant.sent,
        [
            "greeting",
            "reply: I love sailing at dawn",
            "reply: Tomorrow I will visit the lighthouse",
        ],
    )
    # the agent state is the only attribute the agent shows the room
    assert {k for update in room.local_participant.attribute_updates for k in update} == {
        "lk.agent.state"
    }
    # nothing was muted
    assert session.input.audio_enabled and session.output.transcription_enabled
    # the model heard the caller only
    heard = [t for request in fake_llm.requests for t in chat_texts(request, "user")]
    assert heard and MALLORY_SAYS not in heard


# -- the pre-connect audio buffer --------------------------------------------------------------


class FakeSilentMicrophone:
    """Stands in for the `rtc.AudioStream` of the caller's microphone track (its media would
    come from the LiveKit server): yields no frame until closed; `reading` is set once the
    agent reads it, which RoomIO does after it has dealt with any pre-connect audio."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self._closed = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        self.reading.set()
        await self._closed.wait()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._closed.set()


def pcm_silence(seconds: float, sample_rate: int = 16000) -> bytes:
    return bytes(int(seconds * sample_rate) * 2)


async def test_a_second_participants_pre_connect_audio_never_becomes_the_callers_turn(
    installed_sqlite_store: SQLiteMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    microphones: list[FakeSilentMicrophone] = []

    def silent_microphone(_self: Any, _track: Any, _participant: Any) -> FakeSilentMicrophone:
        microphones.append(FakeSilentMicrophone())
        return microphones[-1]

    # the only part of RoomIO's audio input replaced: building the track's media stream
    monkeypatch.setattr(
        room_input._ParticipantAudioInputStream, "_create_stream", silent_microphone
    )
    room = FakeRoom()
    room.join(ALICE)
    room.join(MALLORY)
    fake_llm, fake_stt = FakeScriptedLLM(), FakeSTT()
    session, call = await caller_in_room(room, fake_llm, fake_stt)
    # whatever audio reaches the STT is heard as mallory's words (FakeSTT transcribes the
    # next frame it receives as the next queued utterance)
    fake_stt.say(MALLORY_SAYS)

    # mallory sends "pre-connect audio" labelled with the caller's microphone track, and the
    # caller's microphone, flagged as having a pre-connect buffer, is then subscribed
    buffer = room.deliver_byte_stream(
        MALLORY,
        PRE_CONNECT_TOPIC,
        pcm_silence(0.5),
        attributes={"trackId": CALLER_MIC, "sampleRate": "16000", "channels": "1"},
    )
    # nobody in the agent takes it (the room drops a stream nobody listens to)
    assert not buffer.handed_over
    assert PRE_CONNECT_TOPIC not in room.byte_stream_topics()
    room.publish_microphone(
        ALICE, track_sid=CALLER_MIC, audio_features=[AudioTrackFeature.TF_PRECONNECT_BUFFER]
    )
    await eventually(lambda: bool(microphones), "the caller's microphone to be subscribed")
    await asyncio.wait_for(microphones[0].reading.wait(), REPLY_TIMEOUT)
    # the pipeline gets a full turn's time to hand any buffered audio to the STT
    try:
        await caller_types(room, session, "I love sailing at dawn")
        assert not buffer.read
        assert fake_stt.frames_received == 0
        assert fake_stt.transcripts_sent == []
        heard = [t for request in fake_llm.requests for t in chat_texts(request, "user")]
        assert heard and MALLORY_SAYS not in heard
    finally:
        await close(session, call)
    stored = rows_by_user(installed_sqlite_store.path)[livekit_identity_to_uuid(ALICE)]
    assert not [value for value in stored if "mauve" in value]
