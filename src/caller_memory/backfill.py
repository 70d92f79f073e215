"""Give the memories a store already holds their vectors (`caller-memory backfill`).

New memories are embedded as they are written. Memories written before embeddings were
turned on, by another model, while the embedder was failing, or by a release without
embeddings have none, and search finds them by text only. The backfill asks the store for
current memories without a vector of this embedder's model, embeds them in batches (the same
text a new memory is embedded as: `caller_memory.indexing.index_text`) and attaches each
vector, unless the memory changed in the meantime (its new value is embedded when written).

It runs beside live workers: it only fills a missing column, and a memory written meanwhile
is left to its writer. Run it again at any time; it finishes when nothing is left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from caller_memory.embeddings.base import Embedder
from caller_memory.indexing import index_text
from caller_memory.stores.base import MemoryStore
from caller_memory.types import Unembedded

logger = logging.getLogger("caller_memory.backfill")

DEFAULT_BATCH = 64


@dataclass(slots=True)
class BackfillResult:
    embedded: int = 0  # memories that got their vector
    changed: int = 0  # changed or deleted while being embedded: left to their writer
    batches: int = 0


async def backfill_embeddings(
    store: MemoryStore, embedder: Embedder, *, batch: int = DEFAULT_BATCH
) -> BackfillResult:
    """Embed every current memory of `store` that has no vector of `embedder`'s model."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    result = BackfillResult()
    skipped: set[tuple[str, str, str, str]] = set()
    while True:
        # memories skipped (changed meanwhile) stay in the list until rewritten: ask for
        # enough to get a batch of new ones past them
        pending = [
            m
            for m in await store.unembedded(embedder.name, batch + len(skipped))
            if _identity(m) not in skipped
        ][:batch]
        if not pending:
            return result
        vectors = await embedder.embed_documents([_text(m) for m in pending])
        result.batches += 1
        for memory, vector in zip(pending, vectors, strict=True):
            done = await store.set_embedding(
                memory.user_id,
                memory.category,
                memory.key,
                memory.value,
                tuple(float(x) for x in vector),
                embedder.name,
            )
            if done:
                result.embedded += 1
            else:
                result.changed += 1
                skipped.add(_identity(memory))
        logger.info("backfill: %d memories embedded so far", result.embedded)


def _identity(memory: Unembedded) -> tuple[str, str, str, str]:
    return (memory.user_id, memory.category, memory.key, memory.value)


def _text(memory: Unembedded) -> str:
    return index_text(kind=memory.kind, key=memory.key, value=memory.value, context=memory.context)
