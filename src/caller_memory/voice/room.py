"""How a caller's session uses its LiveKit room: the caller's audio and typed chat only.

livekit-agents 1.8 `AgentSession.start(room=...)` does two things a caller's session must not:

- it hosts a remote-session channel (byte-stream topic `lk.agent.session`) that answers
  requests from *any* participant in the room (the chat history, the agent's instructions and
  context, a turn run as the caller, muting its input or output) and sends every session
  event, tool output included, to all of them. Pinning the room options to the caller does
  not reach it: `session_host=False` turns it off;
- it plays pre-connect audio (byte-stream topic `lk.agent.pre-connect-audio-buffer`) from
  *any* participant who labels it with the caller's microphone track id into the caller's
  first turn, as if the caller had said it, with no option to take the linked participant's
  only: it is turned off. What is lost: words a caller says before the agent has joined.

`caller_start_options(identity)` are the keyword arguments `session.start` needs for that
(`CallerSession.start_options` hands them over).
"""

from __future__ import annotations

from typing import Any

from livekit.agents import room_io

CALLER_SESSION_HOST = False


def caller_room_options(identity: str) -> room_io.RoomOptions:
    """Listen to this participant's microphone and answer this participant's `lk.chat`
    messages only (the session ends when they leave); no pre-connect audio."""
    return room_io.RoomOptions(
        participant_identity=identity,
        audio_input=room_io.AudioInputOptions(pre_connect_audio=False),
    )


def caller_start_options(identity: str) -> dict[str, Any]:
    """`session.start(agent=..., room=..., **caller_start_options(identity))`."""
    return {"room_options": caller_room_options(identity), "session_host": CALLER_SESSION_HOST}
