"""Where memories live: one contract (`MemoryStore`), three backends, and the choice between them.

`open_store(settings)` builds the store the settings select (see `caller_memory.stores.factory`):
`SUPABASE_URL` -> Supabase, `DATABASE_URL` -> Postgres, otherwise the embedded SQLite file.
The backends' modules are imported only when chosen, so the optional extras (`postgres`,
`supabase`) are needed only by those who use them.
"""

from __future__ import annotations

from caller_memory.stores.base import MemoryStore
from caller_memory.stores.errors import (
    StorageConfigError,
    StorageError,
    StorageSchemaError,
    StorageUnavailableError,
)
from caller_memory.stores.factory import describe_store, open_store

__all__ = [
    "MemoryStore",
    "StorageConfigError",
    "StorageError",
    "StorageSchemaError",
    "StorageUnavailableError",
    "describe_store",
    "open_store",
]
