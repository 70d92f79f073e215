"""The vocabulary shared by every layer: memory categories, and what a memory and a profile are.

The eleven categories are those of the companion the design summary describes. A category
that is not one of them is an error, never silently turned into FACT.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple


class MemoryCategory(enum.StrEnum):
    CAMPAIGNS = "CAMPAIGNS"
    EXPERIENCE = "EXPERIENCE"
    FACT = "FACT"
    GOAL = "GOAL"
    INTEREST = "INTEREST"
    LORE = "LORE"
    OPINION = "OPINION"
    PLAN = "PLAN"
    PREFERENCE = "PREFERENCE"
    PRESENTATION = "PRESENTATION"
    RELATIONSHIP = "RELATIONSHIP"

    @classmethod
    def parse(cls, value: object) -> MemoryCategory:
        """Accept a member or its name in any case; anything else raises `ValueError`."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        valid = ", ".join(c.value for c in cls)
        raise ValueError(f"unknown memory category {value!r}; use one of: {valid}")


# Lower number = more important when two memories are otherwise equally relevant, and the
# order in which a caller's profile is summarised at session start.
CATEGORY_PRIORITY: dict[MemoryCategory, int] = {
    MemoryCategory.PRESENTATION: 0,
    MemoryCategory.FACT: 1,
    MemoryCategory.RELATIONSHIP: 2,
    MemoryCategory.PREFERENCE: 3,
    MemoryCategory.GOAL: 4,
    MemoryCategory.PLAN: 5,
    MemoryCategory.INTEREST: 6,
    MemoryCategory.OPINION: 7,
    MemoryCategory.EXPERIENCE: 8,
    MemoryCategory.CAMPAIGNS: 9,
    MemoryCategory.LORE: 10,
}


class MemoryKind(enum.StrEnum):
    """A stable fact (one value per key, replaced when it changes) or the caller's own words
    (one row per message, never replaced)."""

    FACT = "fact"
    UTTERANCE = "utterance"


class WriteOutcome(enum.StrEnum):
    """What the store did with one memory write.

    The store, not the writer, decides: every writer (a live session, a spool replay in any
    worker, an operator script) passes through the same rule (see `storage.base`).
    """

    STORED = "stored"
    """Inserted, or replaced an older capture of the same key."""
    STALE = "stale"
    """Refused: the stored value of this key was captured later (last writer by capture time
    wins, so an older spooled value never overwrites a newer one)."""
    ERASED = "erased"
    """Refused: the caller was erased after the writing session began (or after the memory
    was captured), so nothing from before the erasure may come back."""


@dataclass(frozen=True, slots=True)
class Memory:
    category: str
    key: str
    value: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    score: float = 0.0
    kind: str = MemoryKind.FACT

    @property
    def is_utterance(self) -> bool:
        return self.kind == MemoryKind.UTTERANCE


@dataclass(frozen=True, slots=True)
class Statement:
    """A stable fact an utterance states: (category, key) = value."""

    category: str
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class MemoryDetails:
    """What a memory answers and when, beside its value (all optional).

    `context` is what was said just before (in a call, the agent's line the caller answered)
    and `said_on` the day, in words: both are indexed with the value (lexically and by
    meaning) but never returned as the caller's words. `session_id` and `turn_index` say where
    in which conversation it was said (recall gives a small boost to a hit's neighbours). An
    utterance lists the stable facts it `states`, so that when one of them changes the old
    words stop being recalled. `embedding` is the memory's vector by `embedding_model`.
    """

    context: str | None = None
    said_on: str | None = None
    session_id: str | None = None
    turn_index: int | None = None
    states: tuple[Statement, ...] = ()
    embedding: tuple[float, ...] | None = None
    embedding_model: str | None = None


@dataclass(frozen=True, slots=True)
class FactChange:
    """A value a stable fact held before a newer one replaced it: kept (for the caller's
    export, and to know when it stopped being true), never recalled."""

    category: str
    key: str
    value: str
    valid_from: datetime
    valid_until: datetime


class Unembedded(NamedTuple):
    """A memory without a vector of the current model (for the backfill)."""

    user_id: str
    category: str
    key: str
    value: str
    context: str | None
    said_on: str | None
    kind: str = "fact"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A memory a search found, with the raw score of each way it was found: `lexical` (the
    text-search rank; None when the text did not match) and `dense` (cosine similarity to the
    query's vector; None when it was not among the nearest or has no vector)."""

    memory: Memory
    lexical: float | None = None
    dense: float | None = None
    session_id: str | None = None
    turn_index: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    original_identity: str | None
    is_first_login: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None
