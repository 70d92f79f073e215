"""A caller's data-rights requests, for operators: export what is kept, delete it for good.

Both act on one `CallerMemory` (the store and spool it owns) as the caller named by their
LiveKit identity, through the same fail-closed memory manager as the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from caller_memory.context import session_user
from caller_memory.memory import CallerMemory
from caller_memory.profiles import aget_profile
from caller_memory.types import Memory, Profile


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def memory_json(memory: Memory) -> dict[str, Any]:
    return {
        "category": memory.category,
        "key": memory.key,
        "value": memory.value,
        "kind": str(memory.kind),
        "created_at": _iso(memory.created_at),
        "updated_at": _iso(memory.updated_at),
    }


def profile_json(profile: Profile | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    return {
        "id": profile.id,
        "original_identity": profile.original_identity,
        "is_first_login": profile.is_first_login,
        "created_at": _iso(profile.created_at),
        "updated_at": _iso(profile.updated_at),
    }


async def export_caller(memory: CallerMemory, identity: str) -> dict[str, Any]:
    """The caller's profile, every memory, and the values their facts held before they were
    replaced, as JSON-ready data."""
    with session_user(identity, namespace=memory.settings.identity_namespace) as user_uuid:
        profile = await aget_profile(store=memory.store)
        memories = await memory.manager.alist()
        history = await memory.store.list_history(user_uuid)
    return {
        "identity": identity,
        "user_uuid": user_uuid,
        "profile": profile_json(profile),
        "memories": [memory_json(m) for m in memories],
        "replaced": [
            {
                "category": h.category,
                "key": h.key,
                "value": h.value,
                "valid_from": _iso(h.valid_from),
                "valid_until": _iso(h.valid_until),
            }
            for h in history
        ],
    }


@dataclass(frozen=True, slots=True)
class Deletion:
    user_uuid: str
    had_profile: bool
    memories: int  # deleted from the store
    spooled: int  # dropped from the spool on this machine

    @property
    def found_anything(self) -> bool:
        return self.had_profile or self.memories > 0 or self.spooled > 0


async def delete_caller(memory: CallerMemory, identity: str) -> Deletion:
    """Delete the caller's profile and memories, and record the erasure in the store.

    Memories spooled for this caller during a store outage are dropped first: replayed
    later, they would bring the caller's data back after its deletion (the store refuses them
    anyway, since the erasure is recorded; this also removes them from the disk).
    """
    with session_user(identity, namespace=memory.settings.identity_namespace) as user_uuid:
        had_profile = await aget_profile(store=memory.store) is not None
        dropped = await memory.spool.discard_user(user_uuid, identity)
        deleted = await memory.manager.aforget_everything(source="operator")
    return Deletion(user_uuid, had_profile, deleted, dropped)
