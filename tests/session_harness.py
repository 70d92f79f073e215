"""Callers through livekit-agents' real `AgentSession`: how the tests (and the turn-latency
benchmark) build the sessions, start the callers, and wait for what the session does.

Only the LLM, the STT and the microphone are fakes (tests/fakes.py). Every caller is started
by `voice_session.start_caller_session`, the function the worker's entrypoint runs, in a task
of its own, as each job entrypoint is.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from livekit.agents import AgentSession, llm

from tests.fakes import FakeAudioInput, FakeSTT
from voice_session import CallerSession, start_caller_session

__all__ = [
    "eventually",
    "reply_arrived",
    "spoken_session",
    "start_in_own_task",
    "text_session",
]


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


async def start_in_own_task(session: AgentSession[Any], identity: str) -> CallerSession:
    """Start a caller the way a job entrypoint does: in a task of its own."""
    return await asyncio.create_task(start_caller_session(session, identity=identity))


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    """Wait until `condition` holds (a deadline, not a speed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
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
