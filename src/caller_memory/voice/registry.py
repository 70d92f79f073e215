"""Which caller is attached to which session, and to the current context.

`CallerMemory.attach` registers each `CallerSession`; the agent and the tools find it from
the session they run in (`caller_of`), or, while an agent is being built in the entrypoint,
from the context `attach` ran in (`current_caller`). Sessions are held weakly: a finished
session takes its entry with it.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import TYPE_CHECKING, Any

from livekit.agents import AgentSession

if TYPE_CHECKING:
    from caller_memory.voice.caller import CallerSession

_callers: weakref.WeakKeyDictionary[AgentSession[Any], CallerSession] = weakref.WeakKeyDictionary()
_current: contextvars.ContextVar[CallerSession | None] = contextvars.ContextVar(
    "caller_memory_current_caller", default=None
)


def register(caller: CallerSession) -> None:
    """Make `caller` the one of its session, and of the current context."""
    _callers[caller.session] = caller
    _current.set(caller)


def forget(session: AgentSession[Any]) -> None:
    _callers.pop(session, None)


def caller_of(session: AgentSession[Any]) -> CallerSession | None:
    """The caller attached to `session`, if any."""
    return _callers.get(session)


def current_caller() -> CallerSession | None:
    """The caller attached in this context (by `CallerMemory.attach`), if any."""
    return _current.get()
