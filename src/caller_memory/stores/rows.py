"""Rows as the stores read them, turned into `Memory` and `Profile`: one mapping for all three.

A row is anything indexable by column name: an `sqlite3.Row`, an `asyncpg.Record`, or the JSON
object PostgREST returns. Timestamps arrive as `datetime` (asyncpg) or ISO text (SQLite,
PostgREST); every store passes them through `timestamp`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from caller_memory.types import Memory, MemoryKind, Profile


def timestamp(value: Any) -> datetime | None:
    """A stored time as a `datetime` (ISO text is parsed; None and "" stay None)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def from_epoch(seconds: float) -> datetime:
    """Seconds since the epoch, as the timezone-aware time the databases store."""
    return datetime.fromtimestamp(seconds, UTC)


def _get(row: Any, column: str, default: Any = None) -> Any:
    try:
        value = row[column]
    except (KeyError, IndexError):
        return default
    return default if value is None else value


def memory_from_row(row: Mapping[str, Any] | Any, *, score: float | None = None) -> Memory:
    """A `Memory` from a row with category, key, value, created_at, updated_at and
    (optionally) score and kind."""
    return Memory(
        category=row["category"],
        key=row["key"],
        value=row["value"],
        created_at=timestamp(_get(row, "created_at")),
        updated_at=timestamp(_get(row, "updated_at")),
        score=float(_get(row, "score", 0.0)) if score is None else score,
        kind=_get(row, "kind", MemoryKind.FACT),
    )


def profile_from_row(row: Mapping[str, Any] | Any) -> Profile:
    """A `Profile` from a row with id, original_identity, is_first_login and times."""
    return Profile(
        id=str(row["id"]),
        original_identity=_get(row, "original_identity"),
        is_first_login=bool(row["is_first_login"]),
        created_at=timestamp(_get(row, "created_at")),
        updated_at=timestamp(_get(row, "updated_at")),
    )


def user_uuid(user_id: object) -> uuid.UUID:
    """`user_id` as a uuid; `ValueError` (the same in every store) if it is not one."""
    try:
        return uuid.UUID(str(user_id))
    except ValueError:
        raise ValueError(f"user id must be a uuid, got {user_id!r}") from None
