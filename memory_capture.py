"""Turn what the caller says into memories: which category, under which key.

Each user message is kept as an utterance memory in the category its wording points to
(`utterance_<ms>_<hash>` keys, so utterances never overwrite each other). The rules are
checked most-specific first, so "I prefer ..." is a PREFERENCE, not an INTEREST, and every
category of the eleven can be reached.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from memory_types import MemoryCategory

MAX_CAPTURED_CHARS = 2000


@dataclass(frozen=True, slots=True)
class CapturedMemory:
    category: MemoryCategory
    key: str
    value: str


# (category, pattern) in the order they are tried; the first match wins.
_CATEGORY_RULES: list[tuple[MemoryCategory, re.Pattern[str]]] = [
    (
        MemoryCategory.PRESENTATION,
        re.compile(
            r"\b(call me|my name is|my name's|i go by|my pronouns|i'm called|"
            r"address me as|pronounce my name)\b"
        ),
    ),
    (
        MemoryCategory.RELATIONSHIP,
        re.compile(
            r"\bmy (wife|husband|partner|boyfriend|girlfriend|son|daughter|kids?|children|"
            r"mom|mother|dad|father|brother|sister|friend|best friend|boss|colleague|"
            r"grandma|grandmother|grandpa|grandfather|dog|cat|fianc[eé]e?)\b"
        ),
    ),
    (
        MemoryCategory.PREFERENCE,
        re.compile(
            r"\b(i prefer|i'd rather|i would rather|my favou?rite|i don't like|i do not like|"
            r"i dislike|i hate|i can't stand|i like .+ better|rather than)\b"
        ),
    ),
    (
        MemoryCategory.GOAL,
        re.compile(
            r"\b(my goal|i want to (become|be|learn|get better|improve)|i hope to|"
            r"i'm trying to|i am trying to|i dream of|i aspire|someday i)\b"
        ),
    ),
    (
        MemoryCategory.PLAN,
        re.compile(
            r"\b(i'm going to|i am going to|i'm planning|i am planning|i plan to|i will|"
            r"i'll|tomorrow|next (week|month|year|weekend)|this weekend|tonight)\b"
        ),
    ),
    (
        MemoryCategory.CAMPAIGNS,
        re.compile(r"\b(campaign|quest|dungeon master|our party|session zero|one-shot|d&d)\b"),
    ),
    (
        MemoryCategory.LORE,
        re.compile(r"\b(legend|lore|myth|in the story|in my world|kingdom of|prophecy)\b"),
    ),
    (
        MemoryCategory.OPINION,
        re.compile(
            r"\b(i think|i believe|in my opinion|i feel that|i reckon|i'm convinced|"
            r"i am convinced|overrated|underrated)\b"
        ),
    ),
    (
        MemoryCategory.INTEREST,
        re.compile(
            r"\b(i love|i like|i enjoy|i'm into|i am into|i'm interested in|"
            r"i am interested in|my hobby|hobbies|i'm a fan of|i am a fan of|passionate about)\b"
        ),
    ),
    (
        MemoryCategory.EXPERIENCE,
        re.compile(
            r"\b(i went|i visited|i was|i had|i did|i saw|i met|last (week|month|year|night)|"
            r"yesterday|when i was|i used to|i've been|i have been)\b"
        ),
    ),
]


def categorize(text: str) -> MemoryCategory:
    """The category a sentence's wording points to; FACT when nothing more specific fits."""
    lowered = " ".join(text.lower().replace("’", "'").split())
    for category, pattern in _CATEGORY_RULES:
        if pattern.search(lowered):
            return category
    return MemoryCategory.FACT


def utterance_key(text: str, now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"utterance_{ms}_{digest}"


def extract_memories(text: str, *, now_ms: int | None = None) -> list[CapturedMemory]:
    """The memories one user message yields (none for an empty message)."""
    cleaned = " ".join(text.replace("\x00", " ").split())[:MAX_CAPTURED_CHARS]
    if not cleaned:
        return []
    return [CapturedMemory(categorize(cleaned), utterance_key(cleaned, now_ms), cleaned)]
