"""A fake LiveKit room, because no LiveKit server can run here. Small, honest, named as a fake.

`FakeRoom` stands in for `rtc.Room` with the surface livekit-agents' `RoomIO` and its
remote-session host use: room events (`on`/`off`/`emit`), `isconnected()`, `name`,
`remote_participants`, the data-stream handler registry
(`register_byte_stream_handler` / `register_text_stream_handler` and their unregister, which
refuse a second handler for a topic exactly as `rtc.Room` does), and a `local_participant`
(the agent) that records everything it sends or publishes instead of sending it.

What a real room does when a participant sends a data stream is what `deliver_byte_stream` /
`deliver_text_stream` do: look up the handler registered for the stream's topic and call it
with a reader and the sender's identity, right away; with no handler the stream is ignored
(the real room logs and drops it). The readers record whether a handler got them
(`handed_over`) and whether it read them (`read`).

Not modelled: media. A remote participant's audio reaches the agent through an `AudioStream`
built by the FFI from a track the server delivered; tests that need one replace it (and say
so). Tracks the agent publishes are recorded, and `wait_for_subscription` returns at once (the
caller's app subscribes to the agent's audio straight away).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from livekit import rtc
from livekit.agents.types import CLIENT_PROTOCOL_TRANSCRIPTION_STREAMS

_ids = itertools.count(1)


def _stream_id() -> str:
    return f"FAKE_STREAM_{next(_ids)}"


@dataclass
class SentData:
    """One thing the agent sent into the room: a data packet, a whole stream, or a stream
    still open (`payload` holds everything written to it so far)."""

    method: str  # send_bytes, stream_bytes, send_text, stream_text, publish_data, ...
    topic: str
    destination_identities: tuple[str, ...]  # empty: everyone in the room
    payload: bytes | str = b""
    attributes: dict[str, str] = field(default_factory=dict)
    sender_identity: str | None = None
    closed: bool = True

    @property
    def to_everyone(self) -> bool:
        return not self.destination_identities

    def reaches(self, identity: str) -> bool:
        return self.to_everyone or identity in self.destination_identities


class FakeTextStreamWriter:
    def __init__(self, record: SentData, info: rtc.TextStreamInfo) -> None:
        self._record = record
        self.info = info

    async def write(self, text: str) -> None:
        assert not self._record.closed, "write to a closed text stream"
        assert isinstance(self._record.payload, str)
        self._record.payload += text

    async def aclose(self, *, reason: str = "", attributes: dict[str, str] | None = None) -> None:
        self._record.closed = True
        self._record.attributes.update(attributes or {})


class FakeByteStreamWriter:
    def __init__(self, record: SentData, info: rtc.ByteStreamInfo) -> None:
        self._record = record
        self.info = info

    async def write(self, data: bytes) -> None:
        assert not self._record.closed, "write to a closed byte stream"
        assert isinstance(self._record.payload, bytes)
        self._record.payload += data

    async def aclose(self, *, reason: str = "", attributes: dict[str, str] | None = None) -> None:
        self._record.closed = True
        self._record.attributes.update(attributes or {})


@dataclass
class FakeTrackPublication:
    """A published track (the agent's, or a remote participant's); `track` is what the
    room hands to `track_subscribed` handlers."""

    sid: str
    name: str
    source: rtc.TrackSource.ValueType
    kind: rtc.TrackKind.ValueType = rtc.TrackKind.KIND_AUDIO
    track: Any = None
    audio_features: list[int] = field(default_factory=list)
    mime_type: str = "audio/opus"
    subscribed: bool = True

    async def wait_for_subscription(self) -> None:
        return None


@dataclass
class FakeRemoteTrack:
    sid: str
    name: str
    kind: rtc.TrackKind.ValueType = rtc.TrackKind.KIND_AUDIO


class FakeRemoteParticipant:
    """A participant who joined the room, active (so `JobContext.wait_for_participant` returns
    them); speaks the current transcription protocol (so the agent publishes transcripts as
    text streams, not through the legacy packets)."""

    def __init__(
        self,
        identity: str,
        *,
        kind: rtc.ParticipantKind.ValueType = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    ) -> None:
        self.identity = identity
        self.sid = f"PA_{identity}"
        self.name = identity
        self.metadata = ""
        self.kind = kind
        self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
        self.attributes: dict[str, str] = {}
        self.track_publications: dict[str, FakeTrackPublication] = {}
        self.disconnect_reason: rtc.DisconnectReason.ValueType | None = None
        self._info = SimpleNamespace(client_protocol=CLIENT_PROTOCOL_TRANSCRIPTION_STREAMS)

    def __repr__(self) -> str:
        return f"FakeRemoteParticipant({self.identity!r})"


class FakeLocalParticipant:
    """The agent in the room: records every send, attribute change and published track."""

    def __init__(self, room: FakeRoom, identity: str) -> None:
        self._room = room
        self.identity = identity
        self.sid = f"PA_{identity}"
        self.name = identity
        self.metadata = ""
        self.kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        self.attributes: dict[str, str] = {}
        self.attribute_updates: list[dict[str, str]] = []
        self.track_publications: dict[str, FakeTrackPublication] = {}
        self.sent: list[SentData] = []
        self.subscription_permissions: list[dict[str, Any]] = []

    def _record(self, record: SentData) -> SentData:
        self.sent.append(record)
        return record

    @staticmethod
    def _to(destination_identities: list[str] | None) -> tuple[str, ...]:
        return tuple(destination_identities or ())

    async def send_bytes(
        self,
        data: bytes,
        *,
        topic: str = "",
        name: str | None = None,
        mime_type: str | None = None,
        destination_identities: list[str] | None = None,
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        compress: bool = True,
    ) -> rtc.ByteStreamInfo:
        self._record(
            SentData(
                "send_bytes",
                topic,
                self._to(destination_identities),
                payload=bytes(data),
                attributes=dict(attributes or {}),
                sender_identity=self.identity,
            )
        )
        return rtc.ByteStreamInfo(
            stream_id=stream_id or _stream_id(),
            mime_type=mime_type or "application/octet-stream",
            topic=topic,
            timestamp=int(time.time() * 1000),
            size=len(data),
            attributes=dict(attributes or {}),
            name=name or "unknown",
        )

    async def stream_bytes(
        self,
        name: str,
        *,
        total_size: int | None = None,
        mime_type: str = "application/octet-stream",
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        destination_identities: list[str] | None = None,
        topic: str = "",
    ) -> FakeByteStreamWriter:
        record = self._record(
            SentData(
                "stream_bytes",
                topic,
                self._to(destination_identities),
                payload=b"",
                attributes=dict(attributes or {}),
                sender_identity=self.identity,
                closed=False,
            )
        )
        info = rtc.ByteStreamInfo(
            stream_id=stream_id or _stream_id(),
            mime_type=mime_type,
            topic=topic,
            timestamp=int(time.time() * 1000),
            size=total_size,
            attributes=dict(attributes or {}),
            name=name,
        )
        return FakeByteStreamWriter(record, info)

    async def send_text(
        self,
        text: str,
        *,
        destination_identities: list[str] | None = None,
        topic: str = "",
        attributes: dict[str, str] | None = None,
        reply_to_id: str | None = None,
        compress: bool = True,
    ) -> rtc.TextStreamInfo:
        self._record(
            SentData(
                "send_text",
                topic,
                self._to(destination_identities),
                payload=text,
                attributes=dict(attributes or {}),
                sender_identity=self.identity,
            )
        )
        return rtc.TextStreamInfo(
            stream_id=_stream_id(),
            mime_type="text/plain",
            topic=topic,
            timestamp=int(time.time() * 1000),
            size=len(text.encode()),
            attributes=dict(attributes or {}),
            attachments=[],
        )

    async def stream_text(
        self,
        *,
        destination_identities: list[str] | None = None,
        topic: str = "",
        attributes: dict[str, str] | None = None,
        stream_id: str | None = None,
        reply_to_id: str | None = None,
        total_size: int | None = None,
        sender_identity: str | None = None,
    ) -> FakeTextStreamWriter:
        record = self._record(
            SentData(
                "stream_text",
                topic,
                self._to(destination_identities),
                payload="",
                attributes=dict(attributes or {}),
                sender_identity=sender_identity or self.identity,
                closed=False,
            )
        )
        info = rtc.TextStreamInfo(
            stream_id=stream_id or _stream_id(),
            mime_type="text/plain",
            topic=topic,
            timestamp=int(time.time() * 1000),
            size=total_size,
            attributes=dict(attributes or {}),
            attachments=[],
        )
        return FakeTextStreamWriter(record, info)

    async def publish_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        destination_identities: list[str] | None = None,
        topic: str = "",
    ) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self._record(SentData("publish_data", topic, self._to(destination_identities), data))

    async def publish_transcription(self, transcription: rtc.Transcription) -> None:
        text = "".join(segment.text for segment in transcription.segments)
        self._record(SentData("publish_transcription", "", (), text))

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        # participant attributes are visible to everyone in the room
        self.attribute_updates.append(dict(attributes))
        self.attributes.update(attributes)

    async def publish_track(
        self, track: Any, options: rtc.TrackPublishOptions | None = None
    ) -> FakeTrackPublication:
        source = options.source if options is not None else rtc.TrackSource.SOURCE_UNKNOWN
        publication = FakeTrackPublication(
            sid=f"TR_agent_{next(_ids)}",
            name=getattr(track, "name", ""),
            source=source,
            track=track,
        )
        self.track_publications[publication.sid] = publication
        self._room.emit("local_track_published", publication, track)
        return publication

    async def unpublish_track(self, track_sid: str) -> None:
        publication = self.track_publications.pop(track_sid, None)
        if publication is not None:
            self._room.emit("local_track_unpublished", publication)

    def set_track_subscription_permissions(
        self,
        *,
        allow_all_participants: bool,
        participant_permissions: list[Any] | None = None,
    ) -> None:
        self.subscription_permissions.append(
            {
                "allow_all": allow_all_participants,
                "participants": list(participant_permissions or []),
            }
        )

    def sent_on(self, topic: str) -> list[SentData]:
        return [s for s in self.sent if s.topic == topic]


class FakeByteStreamReader:
    """An incoming byte stream, as a handler receives it: `handed_over` tells whether a
    handler got it, `read` whether it was read."""

    def __init__(self, info: rtc.ByteStreamInfo, chunks: list[bytes]) -> None:
        self.info = info
        self._chunks = list(chunks)
        self.handed_over = False
        self.read = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        self.read = True
        for chunk in self._chunks:
            yield chunk

    def close(self) -> None:
        pass


class FakeTextStreamReader:
    """An incoming text stream, as a handler receives it (see `FakeByteStreamReader`)."""

    def __init__(self, info: rtc.TextStreamInfo, chunks: list[str]) -> None:
        self.info = info
        self._chunks = list(chunks)
        self.handed_over = False
        self.read = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        self.read = True
        for chunk in self._chunks:
            yield chunk

    async def read_all(self) -> str:
        return "".join([chunk async for chunk in self])

    def close(self) -> None:
        pass


class FakeRoom(rtc.EventEmitter[str]):
    """A connected room as the agent sees it (see module docstring)."""

    def __init__(self, name: str = "fake-room", *, agent_identity: str = "agent-worker") -> None:
        super().__init__()
        self.name = name
        self.sid = f"RM_{name}"
        self.metadata = ""
        self.connection_state = rtc.ConnectionState.CONN_CONNECTED
        self.local_participant = FakeLocalParticipant(self, agent_identity)
        self.remote_participants: dict[str, FakeRemoteParticipant] = {}
        self._byte_stream_handlers: dict[str, Any] = {}
        self._text_stream_handlers: dict[str, Any] = {}
        self.ignored_streams: list[tuple[str, str]] = []  # (sender, topic), no handler

    def isconnected(self) -> bool:
        return self.connection_state == rtc.ConnectionState.CONN_CONNECTED

    # -- the handler registry, as rtc.Room keeps it -------------------------------------------

    def register_byte_stream_handler(self, topic: str, handler: Any) -> None:
        if topic in self._byte_stream_handlers:
            raise ValueError(f"byte stream handler for topic '{topic}' already set")
        self._byte_stream_handlers[topic] = handler

    def unregister_byte_stream_handler(self, topic: str) -> None:
        self._byte_stream_handlers.pop(topic, None)

    def register_text_stream_handler(self, topic: str, handler: Any) -> None:
        if topic in self._text_stream_handlers:
            raise ValueError(f"text stream handler for topic '{topic}' already set")
        self._text_stream_handlers[topic] = handler

    def unregister_text_stream_handler(self, topic: str) -> None:
        self._text_stream_handlers.pop(topic, None)

    def byte_stream_topics(self) -> set[str]:
        return set(self._byte_stream_handlers)

    def text_stream_topics(self) -> set[str]:
        return set(self._text_stream_handlers)

    # -- what other participants do ------------------------------------------------------------

    def join(
        self,
        identity: str,
        *,
        kind: rtc.ParticipantKind.ValueType = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    ) -> FakeRemoteParticipant:
        participant = FakeRemoteParticipant(identity, kind=kind)
        self.remote_participants[identity] = participant
        self.emit("participant_connected", participant)
        return participant

    def leave(
        self,
        identity: str,
        reason: rtc.DisconnectReason.ValueType = rtc.DisconnectReason.CLIENT_INITIATED,
    ) -> None:
        participant = self.remote_participants.pop(identity)
        participant.disconnect_reason = reason
        self.emit("participant_disconnected", participant)

    def publish_microphone(
        self, identity: str, *, track_sid: str, audio_features: list[int] | None = None
    ) -> FakeTrackPublication:
        """`identity` publishes a microphone track and the agent is subscribed to it."""
        participant = self.remote_participants[identity]
        track = FakeRemoteTrack(sid=track_sid, name="microphone")
        publication = FakeTrackPublication(
            sid=track_sid,
            name="microphone",
            source=rtc.TrackSource.SOURCE_MICROPHONE,
            track=track,
            audio_features=list(audio_features or []),
        )
        participant.track_publications[track_sid] = publication
        self.emit("track_published", publication, participant)
        self.emit("track_subscribed", track, publication, participant)
        return publication

    def _sender(self, identity: str) -> FakeRemoteParticipant:
        if identity not in self.remote_participants:
            raise ValueError(f"{identity!r} is not in the room: only participants send streams")
        return self.remote_participants[identity]

    def deliver_byte_stream(
        self,
        sender: str,
        topic: str,
        data: bytes | list[bytes],
        *,
        attributes: dict[str, str] | None = None,
        mime_type: str = "application/octet-stream",
        name: str = "",
    ) -> FakeByteStreamReader:
        """`sender` sends a byte stream on `topic`; the handler of that topic (if any) gets it
        now, as the real room hands it over."""
        self._sender(sender)
        chunks = data if isinstance(data, list) else [data]
        info = rtc.ByteStreamInfo(
            stream_id=_stream_id(),
            mime_type=mime_type,
            topic=topic,
            timestamp=int(time.time() * 1000),
            size=sum(len(c) for c in chunks),
            attributes=dict(attributes or {}),
            name=name,
        )
        reader = FakeByteStreamReader(info, chunks)
        handler = self._byte_stream_handlers.get(topic)
        if handler is None:
            self.ignored_streams.append((sender, topic))
        else:
            reader.handed_over = True
            handler(reader, sender)
        return reader

    def deliver_text_stream(
        self,
        sender: str,
        topic: str,
        text: str,
        *,
        attributes: dict[str, str] | None = None,
    ) -> FakeTextStreamReader:
        """`sender` sends a text stream on `topic` (see `deliver_byte_stream`)."""
        self._sender(sender)
        info = rtc.TextStreamInfo(
            stream_id=_stream_id(),
            mime_type="text/plain",
            topic=topic,
            timestamp=int(time.time() * 1000),
            size=len(text.encode()),
            attributes=dict(attributes or {}),
            attachments=[],
        )
        reader = FakeTextStreamReader(info, [text])
        handler = self._text_stream_handlers.get(topic)
        if handler is None:
            self.ignored_streams.append((sender, topic))
        else:
            reader.handed_over = True
            handler(reader, sender)
        return reader

    async def get_rtc_stats(self) -> Any:
        return None
