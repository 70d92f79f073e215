"""Per-caller long-term memory for LiveKit voice agents.

Five lines give an existing agent a memory of each caller of its own::

    from caller_memory import CallerMemory, MemoryAgent

    memory = CallerMemory.from_settings()

    class Assistant(MemoryAgent):  # was: Agent
        ...

    # in the entrypoint, once the session is built:
    caller = await memory.attach(session, identity=(await ctx.wait_for_participant()).identity)
    await session.start(agent=Assistant(...), room=ctx.room, **caller.start_options)

Every caller's memories are keyed by a deterministic uuid of their LiveKit identity, held in
ContextVars for the session; nothing reads another caller's, and code with no caller in
context fails closed. See README.md for the guarantees and how they are tested.
"""

from __future__ import annotations

from caller_memory.context import (
    NoSessionUserError,
    get_current_user,
    get_session_livekit_identity,
    get_session_user_uuid,
    session_user,
    set_session_user,
)
from caller_memory.identity import livekit_identity_to_uuid
from caller_memory.manager import MemoryManager, memory_manager
from caller_memory.memory import CallerMemory, attach, default_memory, set_default_memory
from caller_memory.settings import MemorySettings, SettingsError, load_environment
from caller_memory.stores import (
    MemoryStore,
    StorageConfigError,
    StorageError,
    StorageSchemaError,
    StorageUnavailableError,
)
from caller_memory.types import Memory, MemoryCategory, MemoryKind, Profile, WriteOutcome
from caller_memory.voice.agent import MemoryAgent
from caller_memory.voice.caller import CallerSession
from caller_memory.voice.registry import caller_of

__all__ = [
    "CallerMemory",
    "CallerSession",
    "Memory",
    "MemoryAgent",
    "MemoryCategory",
    "MemoryKind",
    "MemoryManager",
    "MemorySettings",
    "MemoryStore",
    "NoSessionUserError",
    "Profile",
    "SettingsError",
    "StorageConfigError",
    "StorageError",
    "StorageSchemaError",
    "StorageUnavailableError",
    "WriteOutcome",
    "attach",
    "caller_of",
    "default_memory",
    "get_current_user",
    "get_session_livekit_identity",
    "get_session_user_uuid",
    "livekit_identity_to_uuid",
    "load_environment",
    "memory_manager",
    "session_user",
    "set_default_memory",
    "set_session_user",
]
