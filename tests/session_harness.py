"""Callers of the reference worker through livekit-agents' real `AgentSession`.

Only the LLM, the STT and the microphone are fakes (`caller_memory.testing`). Every caller is
started the way the worker's entrypoint starts one: `memory.attach`, then `session.start`
with the worker's `Companion` agent, in a task of its own, as each job entrypoint is.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentSession

from agent import Companion
from caller_memory import CallerMemory, CallerSession, default_memory
from caller_memory.testing import (
    eventually,
    reply_arrived,
    spoken_session,
    start_caller,
    text_session,
)

__all__ = [
    "eventually",
    "reply_arrived",
    "spoken_session",
    "start_in_own_task",
    "text_session",
]


async def start_in_own_task(
    session: AgentSession[Any], identity: str, memory: CallerMemory | None = None
) -> CallerSession:
    """Start a caller of the reference worker (its `Companion` agent) the way a job entrypoint
    does; `memory` defaults to the process-wide one (what the worker uses)."""
    return await start_caller(memory or default_memory(), session, identity, Companion)
