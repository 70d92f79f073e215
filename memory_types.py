"""The vocabulary shared by every layer: memory categories, and what a memory and a profile are.

The eleven categories are those of the original companion (NOTES.md). A category that is not
one of them is an error, never silently turned into FACT.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


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


@dataclass(frozen=True, slots=True)
class Memory:
    category: str
    key: str
    value: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    original_identity: str | None
    is_first_login: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None
