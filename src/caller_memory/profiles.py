"""Caller profiles: one row per caller, created before the caller's session starts.

A profile records the caller's uuid, the original LiveKit identity, whether the caller has
been greeted for the first time yet (`is_first_login`) and when it was created. Creation is
idempotent and race-safe (an insert that does nothing on conflict), so any number of
concurrent sessions of one caller make exactly one row.

They use the store they are given (`CallerMemory` passes its own), else the process-wide
default memory's. Like `memory_manager`, they act only for the session user in context and
fail closed without one; passing a uuid that is not the context's user is refused. They have the
same two shapes: the design summary's synchronous calls, which work as written from plain
code::

    user_uuid = set_session_user(livekit_identity)
    ensure_profile_exists(user_uuid, original_identity=livekit_identity)

and `a`-prefixed async twins for async code (`await aensure_profile_exists(...)`). A
synchronous call made inside a running event loop would block every session on that loop,
so it is refused there with a `RuntimeError` that names the async twin (a bare coroutine
called without `await` would instead do nothing at all, silently).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from caller_memory import defaults
from caller_memory.context import get_current_identity, get_current_user
from caller_memory.stores.base import MemoryStore
from caller_memory.sync_bridge import run_sync
from caller_memory.types import Profile

T = TypeVar("T")

logger = logging.getLogger("caller_memory.profiles")


def _store_or_default(store: MemoryStore | None) -> MemoryStore:
    return store if store is not None else defaults.current().store


def _checked_user(user_uuid: str | None, operation: str) -> str:
    current = get_current_user(operation)
    if user_uuid is not None and user_uuid != current:
        raise PermissionError(
            f"{operation} was asked for user {user_uuid} but the session user in this context "
            f"is {current}; set the session user first (set_session_user / session_user)"
        )
    return current


async def aensure_profile_exists(
    user_uuid: str | None = None,
    original_identity: str | None = None,
    *,
    store: MemoryStore | None = None,
) -> Profile:
    """Make sure the caller's profile exists and return it."""
    user_id = _checked_user(user_uuid, "ensuring a profile")
    identity = original_identity if original_identity is not None else get_current_identity()
    backend = _store_or_default(store)
    profile, created = await backend.ensure_profile(user_id, identity)
    if created:
        logger.info("[PROFILE CREATE] created profile %s", user_id)
        logger.debug("[PROFILE CREATE] profile %s is LiveKit identity %s", user_id, identity)
    else:
        logger.debug("[PROFILE] profile %s already exists", user_id)
    return profile


async def aget_profile(*, store: MemoryStore | None = None) -> Profile | None:
    """The caller's profile, or None if it does not exist (yet, or any more)."""
    user_id = get_current_user("reading a profile")
    backend = _store_or_default(store)
    return await backend.get_profile(user_id)


async def amark_first_login_complete(*, store: MemoryStore | None = None) -> bool:
    """Record that the caller has had their first-time greeting; True only the first time."""
    user_id = get_current_user("updating a profile")
    backend = _store_or_default(store)
    flipped = await backend.complete_first_login(user_id)
    if flipped:
        logger.info("[PROFILE] first login completed for %s", user_id)
    return flipped


# -- sync API (the summary's; for scripts, never inside an event loop) -----------------------


def _refuse_inside_event_loop(api_name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"profiles.{api_name}() blocks and was called inside a running event loop; "
        f"use `await a{api_name}(...)` in async code"
    )


def _sync(
    api_name: str, make: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any
) -> T:
    # Checked before the coroutine exists, so a refused call leaves nothing un-awaited.
    _refuse_inside_event_loop(api_name)
    return run_sync(make(*args, **kwargs), api_name=api_name)


def ensure_profile_exists(
    user_uuid: str | None = None,
    original_identity: str | None = None,
    *,
    store: MemoryStore | None = None,
) -> Profile:
    """`aensure_profile_exists`, from synchronous code (refused inside an event loop)."""
    return _sync(
        "ensure_profile_exists", aensure_profile_exists, user_uuid, original_identity, store=store
    )


def get_profile(*, store: MemoryStore | None = None) -> Profile | None:
    """`aget_profile`, from synchronous code (refused inside an event loop)."""
    return _sync("get_profile", aget_profile, store=store)


def mark_first_login_complete(*, store: MemoryStore | None = None) -> bool:
    """`amark_first_login_complete`, from synchronous code (refused inside an event loop)."""
    return _sync("mark_first_login_complete", amark_first_login_complete, store=store)
