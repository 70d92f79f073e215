"""Check the memory store before the worker takes calls (`caller-memory check`, and at start-up).

Without this, an unreachable database or one without the tables shows up only when the
first caller's session starts (logged there; the caller still gets a conversation without
memory). `check_store` runs a few cheap reads that touch every table the worker uses, within
a time limit, and raises a `StorageError` whose message says what is wrong and what to do
("check DATABASE_URL ...", "apply the migrations ..."). It writes nothing to Postgres or
Supabase; SQLite creates its tables on first use, as it does anyway.

`CallerMemory.check()` runs this and checks the spool directory too.
"""

from __future__ import annotations

import asyncio

from caller_memory.stores.base import MemoryStore
from caller_memory.stores.errors import StorageError, StorageUnavailableError

CHECK_TIMEOUT_S = 10.0
# The nil uuid: never a caller (callers' uuids are uuid5, version 5), so the reads find nothing.
PROBE_USER = "00000000-0000-0000-0000-000000000000"


async def check_store(store: MemoryStore, *, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise `StorageError` (saying what to fix) unless `store` answers reads of its
    profiles and memories, including a search, within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await store.get_profile(PROBE_USER)
            await store.get_memory(PROBE_USER, "FACT", "store_check")
            await store.search_memories(PROBE_USER, "store check", 1)
    except TimeoutError:
        raise StorageUnavailableError(
            f"the {store.name} memory store did not answer within {timeout:g} s; check that it "
            "is running and reachable from this machine"
        ) from None
    except StorageError as exc:
        raise type(exc)(f"the {store.name} memory store is not usable: {exc}") from None
