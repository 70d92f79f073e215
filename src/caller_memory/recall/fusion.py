"""The one ranking rule of search: text and meaning combined, and a hit's neighbours.

Every store returns candidates with their raw scores (`MemoryStore.search_candidates`): the
text-search rank (BM25 on SQLite, `ts_rank` on Postgres) and the cosine similarity to the
query's vector. Raw scores of different kinds are not comparable, so each is min-max
normalised over the candidates, and the two are combined by a weighted sum (a convex
combination: in the project's own study it beat reciprocal-rank fusion, which often fell
below text search alone). A memory said right next to a strong hit in the same conversation
(the turn before or after) gets a small share of that hit's score: an answer often spans two
turns. Ties go to stable facts, then to the more recent.

The weights are chosen on the tuning split of the retrieval benchmark
(`python -m bench.retrieval_benchmark`), never on its held-out split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from caller_memory.types import Candidate, Memory, MemoryKind

# Chosen on the benchmark's tuning split (see README, "Retrieval quality").
DENSE_WEIGHT = 0.75
NEIGHBOUR_BOOST = 0.2


@dataclass(frozen=True, slots=True)
class FusionWeights:
    dense: float = DENSE_WEIGHT
    neighbours: float = NEIGHBOUR_BOOST


def _normalised(values: Sequence[float | None]) -> list[float]:
    present = [v for v in values if v is not None]
    if not present:
        return [0.0] * len(values)
    low, high = min(present), max(present)
    span = high - low
    return [0.0 if v is None else (1.0 if span <= 0 else (v - low) / span) for v in values]


def fuse(
    candidates: Sequence[Candidate], limit: int, weights: FusionWeights | None = None
) -> list[Memory]:
    """The `limit` best of `candidates` by the rule of the module docstring, each memory with
    its combined score."""
    if not candidates:
        return []
    weights = weights or FusionWeights()
    lexical = _normalised([c.lexical for c in candidates])
    dense = _normalised([c.dense for c in candidates])
    has_dense = any(c.dense is not None for c in candidates)
    has_lexical = any(c.lexical is not None for c in candidates)
    w = weights.dense if has_dense and has_lexical else (1.0 if has_dense else 0.0)
    base = [w * d + (1 - w) * x for d, x in zip(dense, lexical, strict=True)]

    at: dict[tuple[str, int], float] = {}
    for candidate, score in zip(candidates, base, strict=True):
        if candidate.session_id is not None and candidate.turn_index is not None:
            place = (candidate.session_id, candidate.turn_index)
            at[place] = max(at.get(place, 0.0), score)
    scored: list[tuple[float, Candidate]] = []
    for candidate, score in zip(candidates, base, strict=True):
        if candidate.session_id is not None and candidate.turn_index is not None:
            around = max(
                at.get((candidate.session_id, candidate.turn_index + step), 0.0) for step in (-1, 1)
            )
            score += weights.neighbours * around
        scored.append((score, candidate))
    scored.sort(
        key=lambda item: (
            -item[0],
            item[1].memory.kind == MemoryKind.UTTERANCE,
            -(item[1].memory.updated_at.timestamp() if item[1].memory.updated_at else 0.0),
        )
    )
    return [_with_score(c.memory, s) for s, c in scored[:limit]]


def _with_score(memory: Memory, score: float) -> Memory:
    return Memory(
        category=memory.category,
        key=memory.key,
        value=memory.value,
        created_at=memory.created_at,
        updated_at=memory.updated_at,
        score=score,
        kind=memory.kind,
    )
