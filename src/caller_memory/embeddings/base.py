"""What an embedder is, and the errors every embedder raises.

An `Embedder` turns text into a unit vector of `dimensions` float32 numbers such that texts
that mean the same thing, in any language, get vectors with a high dot product (cosine). The
memory layer embeds each memory when it is written (write-behind) and the caller's words when
a turn's final transcript arrives, and ranks memories by the dot product of the two.

- `name` identifies the model (and how it is run) and is stored beside every vector: vectors
  made by different models live in different spaces and are never compared.
- `embed_query` embeds what the caller asks (short, capped) and `embed_documents` what is
  stored; asymmetric models (e5) treat the two differently, so use the right one.
- Both are coroutines that never block the event loop (a model runs in a thread, a service is
  awaited) and return L2-normalised `numpy.float32` vectors of shape `(dimensions,)`.
- `warm_up` does ahead of time what the first call would do (load a model), so that the
  first caller turn does not pay for it; `aclose` releases threads and connections.

Errors (all `EmbeddingError`):

- `EmbeddingSetupError`: the configuration cannot work (model files missing or unusable, the
  `embeddings` extra not installed, no API key); the message says what to do. Raised at start
  (`embedder_from_settings`, `warm_up`) and by every call after.
- `EmbeddingUnavailableError`: no vector this time (a service error or timeout). The caller
  goes on without a vector (lexical search only) and may try again next time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeAlias, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "Embedder",
    "EmbeddingError",
    "EmbeddingSetupError",
    "EmbeddingUnavailableError",
    "Vector",
    "normalised_rows",
]

# Every embedder of this package makes vectors of this size (multilingual-e5-small's; OpenAI's
# text-embedding-3 models are asked for it), so one column type holds any of them.
EMBEDDING_DIMENSIONS = 384

Vector: TypeAlias = NDArray[np.float32]


class EmbeddingError(Exception):
    """An embedder could not make a vector; the caller goes on without one."""


class EmbeddingSetupError(EmbeddingError):
    """The embedder cannot work as configured; the message says what to do."""


class EmbeddingUnavailableError(EmbeddingError):
    """No vector this time (a service failed or was too slow); a later call may work."""


@runtime_checkable
class Embedder(Protocol):
    """Text -> unit vectors of `dimensions` float32 numbers (see the module docstring)."""

    @property
    def name(self) -> str:
        """The model (and how it is run), stored beside each vector it makes."""
        ...

    @property
    def dimensions(self) -> int:
        """The length of every vector (384 for every embedder of this package)."""
        ...

    async def embed_query(self, text: str) -> Vector:
        """The vector of what the caller asks, for searching."""
        ...

    async def embed_documents(self, texts: Sequence[str]) -> list[Vector]:
        """The vectors of texts to be found (memories), in the order given."""
        ...

    async def warm_up(self) -> None:
        """Do ahead of time what the first call would (e.g. load the model)."""
        ...

    async def aclose(self) -> None:
        """Release threads and connections; the embedder is not used after."""
        ...


def normalised_rows(matrix: NDArray[np.floating]) -> list[Vector]:
    """The rows of `matrix` as separate float32 unit vectors (a zero row stays zero)."""
    rows = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.maximum(norms, np.float32(1e-12))
    return [np.ascontiguousarray(row, dtype=np.float32) for row in unit]
