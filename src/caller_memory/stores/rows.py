"""Rows as the stores read them, turned into `Memory` and `Profile`: one mapping for all three.

A row is anything indexable by column name: an `sqlite3.Row`, an `asyncpg.Record`, or the JSON
object PostgREST returns. Timestamps arrive as `datetime` (asyncpg) or ISO text (SQLite,
PostgREST); every store passes them through `timestamp`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from caller_memory.stores.base import StoreStats
from caller_memory.types import (
    Candidate,
    FactChange,
    Memory,
    MemoryKind,
    Profile,
    Statement,
    Unembedded,
)


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


def candidate_from_row(
    row: Mapping[str, Any] | Any, *, lexical: bool = False, dense: bool = False
) -> Candidate:
    """A search hit: the row's `score` is its lexical rank (`lexical`) or its cosine
    similarity (`dense`)."""
    score = float(_get(row, "score", 0.0))
    return Candidate(
        memory=memory_from_row(row),
        lexical=score if lexical else None,
        dense=score if dense else None,
        session_id=_get(row, "session_id"),
        turn_index=_get(row, "turn_index"),
    )


def fact_change_from_row(row: Mapping[str, Any] | Any) -> FactChange:
    """A replaced value from a row with category, key, value, valid_from and valid_until
    (times as seconds since the epoch, as SQLite keeps them, or as stored times)."""

    def when(value: Any) -> datetime:
        found = from_epoch(value) if isinstance(value, int | float) else timestamp(value)
        if found is None:
            raise ValueError("a replaced value without its times")
        return found

    return FactChange(
        category=row["category"],
        key=row["key"],
        value=row["value"],
        valid_from=when(row["valid_from"]),
        valid_until=when(row["valid_until"]),
    )


def unembedded_from_row(row: Mapping[str, Any] | Any) -> Unembedded:
    """A memory waiting for its vector, from a row of `unembedded`'s query."""
    return Unembedded(
        user_id=str(row["user_id"]),
        category=row["category"],
        key=row["key"],
        value=row["value"],
        context=_get(row, "context"),
        said_on=_get(row, "said_on"),
        kind=_get(row, "kind", MemoryKind.FACT),
    )


def statements_json(states: tuple[Statement, ...]) -> str | None:
    """What an utterance states, as the JSON array the SQL functions read (None: nothing)."""
    if not states:
        return None
    return json.dumps(
        [{"category": s.category, "key": s.key, "value": s.value} for s in states],
        ensure_ascii=False,
    )


STATS_COLUMNS = ("callers", "facts", "utterances", "superseded", "replaced_values", "erasures")


def stats_from_row(row: Mapping[str, Any] | Any) -> StoreStats:
    """The totals of `caller_memory.memory_stats()` (or the SQLite store's same query)."""
    return StoreStats(*(int(row[column]) for column in STATS_COLUMNS))
