"""One caller's session, from identity to a running AgentSession, in the summary's order.

`start_caller_session` is what the worker's entrypoint runs once it knows who the caller is,
and what the tests run with a scripted LLM: identity -> uuid -> ContextVars -> profile ->
memory capture -> `session.start`. It must run in the task that serves this caller (each job
entrypoint is its own task), because it sets the session user in the current context.

In a room, a caller's session listens to the caller only and answers nobody else: see
`caller_room_options` and `CALLER_SESSION_HOST`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession, llm, room_io
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

from companion import CompanionAgent
from llm_extractor import LLMFactExtractor, llm_extractor_enabled
from memory_manager import memory_manager
from memory_spool import default_spool
from memory_types import Memory, Profile
from profiles import aensure_profile_exists
from session_context import set_session_user
from session_memory import SessionMemory
from storage.errors import StorageError

logger = logging.getLogger("memory_worker.session")

PROFILE_TIMEOUT_S = 3.0
KNOWN_MEMORIES_TIMEOUT_S = 0.5
KNOWN_MEMORIES_LIMIT = 8
SHUTDOWN_FLUSH_TIMEOUT_S = 5.0
STARTUP_REPLAY_DELAY_S = 0.05

# livekit-agents' `AgentSession.start(room=...)` hosts a remote-session channel (byte-stream
# topic `lk.agent.session`) unless told not to: it answers requests from *any* participant in
# the room (chat history, the agent's instructions and context, a turn run as the caller,
# muting its input or output) and sends every session event, tool output included, to all of
# them. Pinning the room options to the caller does not reach it. A caller's session hosts
# none.
CALLER_SESSION_HOST = False


def caller_room_options(identity: str) -> room_io.RoomOptions:
    """How a caller's session uses the room: the caller's audio and typed chat only.

    - `participant_identity`: RoomIO listens to this participant's microphone and answers
      this participant's `lk.chat` messages only (everyone else's are ignored), and the
      session ends when they leave.
    - no pre-connect audio: livekit-agents' pre-connect buffer (byte-stream topic
      `lk.agent.pre-connect-audio-buffer`) takes audio from *any* participant who labels it
      with the caller's microphone track id, and plays it into the caller's first turn as if
      the caller had said it; it has no option to take the linked participant's only. What is
      lost: words a caller says before the agent has joined are not heard (this agent greets
      first, so callers rarely speak before it).
    """
    return room_io.RoomOptions(
        participant_identity=identity,
        audio_input=room_io.AudioInputOptions(pre_connect_audio=False),
    )


@dataclass
class CallerSession:
    """What `start_caller_session` started; `aclose()` flushes the caller's pending memories."""

    user_uuid: str
    profile: Profile
    agent: CompanionAgent
    memory: SessionMemory
    session: AgentSession[Any]

    async def aclose(self, timeout: float = SHUTDOWN_FLUSH_TIMEOUT_S) -> bool:
        return await self.memory.aclose(timeout)


async def _ensure_profile(user_uuid: str, identity: str) -> tuple[Profile, bool]:
    """The caller's profile, and whether it is in the store (False: the store did not answer,
    and the session goes on with a stand-in)."""
    try:
        profile = await asyncio.wait_for(
            aensure_profile_exists(user_uuid, original_identity=identity), PROFILE_TIMEOUT_S
        )
        return profile, True
    except (TimeoutError, StorageError) as exc:
        # The caller still gets a conversation; the profile row is created by the first
        # memory write once the store is back.
        logger.error(
            "[SESSION INIT] profile store unavailable, continuing without it: %s", _why(exc)
        )
        return Profile(id=user_uuid, original_identity=None, is_first_login=False), False


async def _known_memories() -> list[Memory]:
    try:
        return await asyncio.wait_for(
            memory_manager.asearch("", limit=KNOWN_MEMORIES_LIMIT), KNOWN_MEMORIES_TIMEOUT_S
        )
    except (TimeoutError, StorageError) as exc:
        logger.warning("[SESSION INIT] could not load the caller's memories: %s", _why(exc))
        return []


def _why(exc: BaseException) -> str:
    # A timeout's own text is empty: say what it was (the store's errors say what to do).
    if isinstance(exc, TimeoutError) and not str(exc):
        return "the memory store did not answer in time (it is overloaded or unreachable)"
    return str(exc)


def _follow_caller_messages(session: AgentSession[Any], agent: CompanionAgent) -> None:
    """Tell the agent of every caller message, spoken or typed (`CompanionAgent.caller_said`
    counts the caller's turns and captures what they said).

    Typed chat and `session.run` bypass `on_user_turn_completed`; spoken turns are captured
    in the hook first, and the message id keeps them from being captured twice. The handler
    may run in a room-callback task that has no session user: `SessionMemory` writes in the
    session's own context regardless.
    """

    def on_item_added(event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            agent.caller_said(item.text_content or "", message_id=item.id)

    session.on("conversation_item_added", on_item_added)


async def start_caller_session(
    session: AgentSession[Any],
    *,
    identity: str,
    room: rtc.Room | None = None,
) -> CallerSession:
    """Set the caller, make sure their profile exists, then start `session` for them.

    With a `room`, the session is started with `caller_room_options(identity)` and no
    remote-session host (`CALLER_SESSION_HOST`): it hears and answers the caller only.
    """
    # Memories spooled by a process that died (or by this one during an outage) are replayed
    # in the background; each record is written as its own caller. The first delay must not
    # be 0: the replayer backs off by doubling it, and 0 doubled stays 0, i.e. a hot loop
    # against a store that is down.
    default_spool().schedule_replay(first_delay=STARTUP_REPLAY_DELAY_S)
    user_uuid = set_session_user(identity)
    logger.info("[SESSION INIT] caller -> UUID: %s", user_uuid)
    logger.debug("[SESSION INIT] Identity: %s -> UUID: %s", identity, user_uuid)

    profile, profile_stored = await _ensure_profile(user_uuid, identity)
    logger.info(
        "[SESSION INIT] ✓ Profile ready for user: %s (first login: %s)",
        user_uuid,
        profile.is_first_login,
    )
    known = await _known_memories()
    extractor = (
        LLMFactExtractor(session.llm)
        if llm_extractor_enabled() and isinstance(session.llm, llm.LLM)
        else None
    )
    memory = SessionMemory.for_current_session(fact_extractor=extractor)
    agent = CompanionAgent(
        profile=profile,
        session_memory=memory,
        known_memories=known,
        # a profile that was there and is gone means the caller was erased meanwhile
        watch_erasure=profile_stored,
    )
    # an erasure by someone else (an operator, another session) that a write ran into
    memory.on_erased(agent.memories_erased)
    _follow_caller_messages(session, agent)

    def on_transcribed(event: UserInputTranscribedEvent) -> None:
        if event.is_final and event.transcript.strip():
            agent.prefetch_recall(event.transcript)

    session.on("user_input_transcribed", on_transcribed)

    logger.info("[SESSION INIT] Starting LiveKit session...")
    if room is None:
        await session.start(agent=agent)
    else:
        await session.start(
            agent=agent,
            room=room,
            room_options=caller_room_options(identity),
            session_host=CALLER_SESSION_HOST,
        )
    logger.info("[SESSION INIT] ✓ Session started successfully")
    return CallerSession(
        user_uuid=user_uuid, profile=profile, agent=agent, memory=memory, session=session
    )
