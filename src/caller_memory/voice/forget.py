"""Forgetting one thing the caller asked to be forgotten, and their words that state it.

The fact and the caller's own words that state it go together: forgetting one and keeping the
other would let recall bring the forgotten thing back. The store knows which utterances
stated a fact (captured with it, any value it ever had); older ones are found by search.
Every store call here is indexed (a bounded search, a lookup by key, a delete by key), and
the capture rules that tell which
utterances state the fact run in a worker thread: the cost does not grow with everything the
caller ever said, and the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from caller_memory.capture.rule_based import extract_memories
from caller_memory.manager import MemoryManager
from caller_memory.types import Memory, MemoryKind

# Utterances that state the fact are found by the store's search, in bounded rounds of
# bounded pages, never by listing everything.
FORGET_SEARCH_PAGE = 50
FORGET_SEARCH_ROUNDS = 20


def stated_keys(memory: Memory) -> set[tuple[str, str]]:
    """The stable facts (category, key) a memory states: a fact itself, or what the caller's
    words in an utterance state. Runs the capture rules (CPU work): call it off the loop."""
    if not memory.is_utterance:
        return {(memory.category, memory.key)}
    return {
        (m.category.value, m.key)
        for m in extract_memories(memory.value)
        if m.kind != MemoryKind.UTTERANCE
    }


def _all_stated_keys(memories: Iterable[Memory]) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for memory in memories:
        keys |= stated_keys(memory)
    return keys


def _stating(memories: Iterable[Memory], keys: set[tuple[str, str]]) -> list[Memory]:
    return [m for m in memories if stated_keys(m) & keys]


async def forget_one(manager: MemoryManager, what: str) -> list[Memory]:
    """Forget what `what` names (a key, or a few words describing it) for the caller in
    context, and the caller's utterances that state it; returns what was forgotten."""
    wanted = what.strip().lower().replace(" ", "_")
    candidates = await manager.asearch(what, limit=5)
    exact = [m for m in candidates if m.key.lower() == wanted]
    facts = [m for m in candidates if not m.is_utterance]
    chosen = exact or (facts or candidates)[:1]
    if not chosen:
        return []
    keys = await asyncio.to_thread(_all_stated_keys, chosen)
    forgotten = {(m.category, m.key): m for m in chosen}
    for category, key in sorted(keys):  # an utterance chosen: the facts it states
        if (category, key) not in forgotten:
            value = await manager.aretrieve(category, key)
            if value is not None:
                forgotten[(category, key)] = Memory(category=category, key=key, value=value)
    # the words the store knows stated the fact, whatever value they stated (also values
    # replaced since, which search no longer returns)
    for category, key in sorted(keys):
        for memory in await manager.astating(category, key):
            forgotten.setdefault((memory.category, memory.key), memory)
    for category, key in list(forgotten):
        await manager.aforget(category, key)
    if not keys:
        return list(forgotten.values())
    # What states a fact names its key (its words) and usually its value.
    query = " ".join(
        [key.replace("_", " ") for _, key in sorted(keys)]
        + [m.value for m in forgotten.values() if not m.is_utterance]
    )
    for _ in range(FORGET_SEARCH_ROUNDS):
        page = await manager.asearch(query, limit=FORGET_SEARCH_PAGE)
        unseen = [m for m in page if m.is_utterance and (m.category, m.key) not in forgotten]
        stating = await asyncio.to_thread(_stating, unseen, keys)
        if not stating:
            break
        for memory in stating:  # deleted as found, so the next page holds new ones
            await manager.aforget(memory.category, memory.key)
            forgotten[(memory.category, memory.key)] = memory
    return list(forgotten.values())
