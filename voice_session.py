"""One caller's session, from identity to a running AgentSession, in the summary's order.

`start_caller_session` is what the worker's entrypoint runs once it knows who the caller is,
and what the tests run with a scripted LLM: identity -> uuid -> ContextVars -> profile ->
memory capture -> `session.start`. It must run in the task that serves this caller (each job
entrypoint is its own task), because it sets the session user in the current context.
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
from profiles import ensure_profile_exists
from session_context import set_session_user
from session_memory import SessionMemory
from storage.errors import StorageError

logger = logging.getLogger("memory_worker.session")

PROFILE_TIMEOUT_S = 3.0
KNOWN_MEMORIES_TIMEOUT_S = 0.5
KNOWN_MEMORIES_LIMIT = 8
SHUTDOWN_FLUSH_TIMEOUT_S = 5.0
STARTUP_REPLAY_DELAY_S = 0.05


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


async def _ensure_profile(user_uuid: str, identity: str) -> Profile:
    try:
        return await asyncio.wait_for(
            ensure_profile_exists(user_uuid, original_identity=identity), PROFILE_TIMEOUT_S
        )
    except (TimeoutError, StorageError) as exc:
        # The caller still gets a conversation; the profile row is created by the first
        # memory write once the store is back.
        logger.error(
            "[SESSION INIT] profile store unavailable, continuing without it: %s", _why(exc)
        )
        return Profile(id=user_uuid, original_identity=None, is_first_login=False)


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


def _capture_typed_messages(session: AgentSession[Any], memory: SessionMemory) -> None:
    """Capture user messages that bypass `on_user_turn_completed` (typed chat, session.run).

    Spoken turns are captured in the hook first; the message id keeps them from being
    captured twice. The handler may run in a room-callback task that has no session user:
    `SessionMemory` writes in the session's own context regardless.
    """

    def on_item_added(event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            text = item.text_content
            if text:
                memory.capture(text, message_id=item.id)

    session.on("conversation_item_added", on_item_added)


async def start_caller_session(
    session: AgentSession[Any],
    *,
    identity: str,
    room: rtc.Room | None = None,
    room_options: room_io.RoomOptions | None = None,
) -> CallerSession:
    """Set the caller, make sure their profile exists, then start `session` for them."""
    # Memories spooled by a process that died (or by this one during an outage) are replayed
    # in the background; each record is written as its own caller. The first delay must not
    # be 0: the replayer backs off by doubling it, and 0 doubled stays 0, i.e. a hot loop
    # against a store that is down.
    default_spool().schedule_replay(first_delay=STARTUP_REPLAY_DELAY_S)
    user_uuid = set_session_user(identity)
    logger.info("[SESSION INIT] caller -> UUID: %s", user_uuid)
    logger.debug("[SESSION INIT] Identity: %s -> UUID: %s", identity, user_uuid)

    profile = await _ensure_profile(user_uuid, identity)
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
    _capture_typed_messages(session, memory)
    agent = CompanionAgent(profile=profile, session_memory=memory, known_memories=known)

    def on_transcribed(event: UserInputTranscribedEvent) -> None:
        if event.is_final and event.transcript.strip():
            agent.prefetch_recall(event.transcript)

    session.on("user_input_transcribed", on_transcribed)

    logger.info("[SESSION INIT] Starting LiveKit session...")
    start_kwargs: dict[str, Any] = {"agent": agent}
    if room is not None:
        start_kwargs["room"] = room
    if room_options is not None:
        start_kwargs["room_options"] = room_options
    await session.start(**start_kwargs)
    logger.info("[SESSION INIT] ✓ Session started successfully")
    return CallerSession(
        user_uuid=user_uuid, profile=profile, agent=agent, memory=memory, session=session
    )
