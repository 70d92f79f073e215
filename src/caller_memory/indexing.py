"""What a memory is indexed as: its words with what it answered and when (one definition).

The lexical index (the store's full-text search over the `value`, `context` and `said_on`
columns) covers the value, the line it answered (`context`: in a call, what the agent had
just said) and the day it was said, in words ("Monday 2 March 2026"), so "what did I say in
March?" finds it. The index by meaning embeds `index_text`: the value and the line it
answered, not the day (on the retrieval benchmark's tuning split, the day in the embedded
text lowered recall@10 by 0.02 and without the context it was 0.015 lower: a date says
nothing about what a memory means). Recall returns the value alone: the caller's words,
never the context. A stable fact's key is part of what it means ("favorite_color" + "blue"),
so it leads the text of a fact.
"""

from __future__ import annotations

from datetime import UTC, datetime

from caller_memory.types import MemoryKind

# A few hundred characters of context say what was asked; more is a monologue of the agent's.
MAX_CONTEXT_CHARS = 400


def said_on_words(seconds: float) -> str:
    """The day a memory was said, in words a question may use ("last Monday", "in March")
    and as an ISO date."""
    day = datetime.fromtimestamp(seconds, UTC)
    return f"{day:%A} {day.day} {day:%B} {day.year} ({day:%Y-%m-%d})"


def clip_context(context: str | None) -> str | None:
    """The context kept with a memory: whitespace folded, its last `MAX_CONTEXT_CHARS` (an
    agent's line ends with what it asked, and that is what the caller answered)."""
    if not context:
        return None
    text = " ".join(context.split())
    if len(text) > MAX_CONTEXT_CHARS:
        text = text[-MAX_CONTEXT_CHARS:].split(" ", 1)[-1]
    return text or None


def index_text(*, kind: str, key: str, value: str, context: str | None = None) -> str:
    """The text a memory is embedded as (see the module docstring)."""
    head = value if kind == MemoryKind.UTTERANCE else f"{key.replace('_', ' ')}: {value}"
    return f"{head}\n(in reply to: {context})" if context else head
