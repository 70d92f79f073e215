"""Who the current caller is, held in ContextVars for the duration of one session.

The worker's entrypoint calls `set_session_user(identity)` once, before the AgentSession
starts; every task the session creates afterwards inherits the value, and concurrent
sessions in one process each see their own. Memory and profile code reads the user only
from here (`get_current_user()`), and **fails closed**: with no session user in context it
raises `NoSessionUserError` and writes nothing.

The design summary fell back to a shared default user when the context was empty. That is a
leak (every context-less code path would share one bucket), so it exists here only behind an
explicit opt-in (`MEMORY_ALLOW_DEFAULT_USER=1`), meant for local scripts; the worker refuses
to run `start` with it on.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

from caller_memory.identity import livekit_identity_to_uuid

logger = logging.getLogger("caller_memory.session")

_session_user_uuid: ContextVar[str | None] = ContextVar("session_user_uuid", default=None)
_session_livekit_identity: ContextVar[str | None] = ContextVar(
    "session_livekit_identity", default=None
)
# When the current caller's session began (seconds since the epoch). Every write made in this
# context carries it, and the store refuses it if the caller was erased since: a session that
# heard things before an erasure may not write any of them afterwards.
_session_started_at: ContextVar[float | None] = ContextVar("session_started_at", default=None)

ALLOW_DEFAULT_USER_ENV = "MEMORY_ALLOW_DEFAULT_USER"
DEFAULT_USER_IDENTITY = "local-default-user"


class NoSessionUserError(RuntimeError):
    """Raised when memory or profile code runs with no caller in context."""

    def __init__(self, operation: str = "this operation") -> None:
        super().__init__(
            f"No session user is set in this context, so {operation} was refused and nothing "
            "was written. Call set_session_user(identity) (or use `with session_user(identity):`) "
            "before touching memories; code started from room callbacks must run in the "
            "session's context (asyncio.create_task(coro, context=session_context))."
        )


def set_session_user(identity: str, *, namespace: uuid.UUID | None = None) -> str:
    """Make `identity` the caller of the current context; returns the caller's uuid (in
    `namespace`, default the process's: see `caller_memory.identity`)."""
    user_uuid = livekit_identity_to_uuid(identity, namespace)
    _session_livekit_identity.set(identity)
    _session_user_uuid.set(user_uuid)
    _session_started_at.set(time.time())
    logger.debug("session user set: %s -> %s", identity, user_uuid)
    return user_uuid


def get_session_user_uuid() -> str | None:
    """The caller's uuid in this context, or None when no session user is set."""
    return _session_user_uuid.get()


def get_session_livekit_identity() -> str | None:
    """The caller's raw LiveKit identity in this context, or None."""
    return _session_livekit_identity.get()


def get_session_started_at() -> float | None:
    """When the session of the caller in this context began (epoch seconds), or None."""
    return _session_started_at.get()


@contextlib.contextmanager
def session_user(identity: str, *, namespace: uuid.UUID | None = None) -> Iterator[str]:
    """Set the caller for a block and restore whatever was there before."""
    user_uuid = livekit_identity_to_uuid(identity, namespace)
    tok_identity = _session_livekit_identity.set(identity)
    tok_uuid = _session_user_uuid.set(user_uuid)
    tok_started = _session_started_at.set(time.time())
    try:
        yield user_uuid
    finally:
        _session_started_at.reset(tok_started)
        _session_user_uuid.reset(tok_uuid)
        _session_livekit_identity.reset(tok_identity)


def clear_session_user() -> None:
    """Forget the caller in this context (later memory calls here fail closed)."""
    _session_user_uuid.set(None)
    _session_livekit_identity.set(None)
    _session_started_at.set(None)


def default_user_allowed() -> bool:
    """Whether the opt-in fallback to a shared local user is switched on (in the process's
    default settings: the fallback belongs to the design summary's module-level API)."""
    from caller_memory.settings import default_settings

    return default_settings().allow_default_user


def get_or_create_default_user() -> str:
    """The shared local user's uuid; only reachable with `MEMORY_ALLOW_DEFAULT_USER=1`."""
    if not default_user_allowed():
        raise NoSessionUserError("falling back to the default user")
    return livekit_identity_to_uuid(DEFAULT_USER_IDENTITY)


def get_current_user(operation: str = "this operation") -> str:
    """The caller's uuid; the opt-in default user; or `NoSessionUserError`."""
    user_uuid = _session_user_uuid.get()
    if user_uuid:
        return user_uuid
    if default_user_allowed():
        logger.warning(
            "no session user in context; using the shared default user because %s is set",
            ALLOW_DEFAULT_USER_ENV,
        )
        return get_or_create_default_user()
    raise NoSessionUserError(operation)


def get_current_identity() -> str | None:
    """The raw identity matching `get_current_user()` (the default user's when it applies)."""
    identity = _session_livekit_identity.get()
    if identity is None and _session_user_uuid.get() is None and default_user_allowed():
        return DEFAULT_USER_IDENTITY
    return identity
