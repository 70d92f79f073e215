"""OpenAI's embeddings (`MEMORY_EMBEDDINGS=openai`): no model in the worker, a request a text.

The worker already has an OpenAI key for its speech and language models, and the `openai`
client comes with livekit-agents. The model is `MEMORY_OPENAI_EMBEDDING_MODEL` (default
`text-embedding-3-small`), asked for 384 dimensions so that its vectors fit the same column
as the local model's (OpenAI's text-embedding-3 models shorten their vectors on request and
keep them comparable). Any OpenAI-compatible server works through `OPENAI_BASE_URL`.

A query embedding is part of a voice turn, so a request has a short timeout and is never
retried: a failure or a timeout raises `EmbeddingUnavailableError` at once, and the turn goes
on without a vector. No message carries the key or the service's error text (which can
quote part of the key); the status code and the error type say what happened.

The HTTP client belongs to the event loop it was created on; a worker runs several loops, so
there is one client per loop (`PerLoop`), all closed by `aclose()`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from caller_memory.embeddings.base import (
    EMBEDDING_DIMENSIONS,
    EmbeddingSetupError,
    EmbeddingUnavailableError,
    Vector,
    normalised_rows,
)
from caller_memory.stores.per_loop import PerLoop

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["DEFAULT_OPENAI_TIMEOUT_S", "OpenAIEmbedder"]

# A query must come back within a turn's recall budget to be of use; a write-behind document
# batch can wait longer, but a service this slow is better skipped than waited for.
DEFAULT_OPENAI_TIMEOUT_S = 2.0
# Inputs per request (the API takes up to 2,048; a smaller batch fails smaller).
_BATCH = 256
_CLOSE_TIMEOUT_S = 2.0


class OpenAIEmbedder:
    """Embeddings from OpenAI's API (see the module docstring). `api_key` and `base_url`
    default to `OPENAI_API_KEY` and `OPENAI_BASE_URL`, as the `openai` client's do."""

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = DEFAULT_OPENAI_TIMEOUT_S,
    ) -> None:
        key = api_key or os.environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise EmbeddingSetupError(
                "MEMORY_EMBEDDINGS=openai needs OPENAI_API_KEY (the key the worker's models "
                "use); set it, or set MEMORY_EMBEDDINGS=local (the default) or off"
            )
        self.model = model
        self.timeout_s = timeout_s
        self._api_key = key
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL", "").strip() or None
        self._clients: PerLoop[AsyncOpenAI] = PerLoop(
            self._new_client, self._close_client, what="OpenAI embeddings client"
        )

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, base_url={self._base_url!r})"

    @property
    def name(self) -> str:
        return f"openai/{self.model}/{EMBEDDING_DIMENSIONS}"

    @property
    def dimensions(self) -> int:
        return EMBEDDING_DIMENSIONS

    async def embed_query(self, text: str) -> Vector:
        (vector,) = await self._embed([text])
        return vector

    async def embed_documents(self, texts: Sequence[str]) -> list[Vector]:
        texts = list(texts)
        vectors: list[Vector] = []
        for start in range(0, len(texts), _BATCH):
            vectors.extend(await self._embed(texts[start : start + _BATCH]))
        return vectors

    async def warm_up(self) -> None:
        """Nothing to load: the model runs at OpenAI."""

    async def aclose(self) -> None:
        await self._clients.close_all(_CLOSE_TIMEOUT_S)

    async def _new_client(self) -> AsyncOpenAI:
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            api_key=self._api_key,
            base_url=self._base_url,
            timeout=self.timeout_s,
            max_retries=0,  # a retry inside a voice turn comes too late
        )

    @staticmethod
    async def _close_client(client: AsyncOpenAI) -> None:
        await client.close()

    async def _embed(self, texts: list[str]) -> list[Vector]:
        import openai

        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"an embedder embeds text, got {type(text).__name__}")
        client = await self._clients.get()
        try:
            response = await client.embeddings.create(
                model=self.model,
                input=texts,
                dimensions=EMBEDDING_DIMENSIONS,
                encoding_format="float",
            )
        except openai.APIStatusError as exc:
            raise EmbeddingUnavailableError(
                f"OpenAI embeddings ({self.model}) answered HTTP {exc.status_code} "
                f"({type(exc).__name__}): no vector this time"
            ) from None
        except openai.OpenAIError as exc:  # timeouts, refused connections, malformed answers
            raise EmbeddingUnavailableError(
                f"OpenAI embeddings ({self.model}) failed ({type(exc).__name__}): no vector "
                "this time"
            ) from None
        data = sorted(response.data, key=lambda item: item.index)
        lengths = {len(item.embedding) for item in data}
        if len(data) != len(texts) or lengths - {EMBEDDING_DIMENSIONS}:
            raise EmbeddingUnavailableError(
                f"OpenAI embeddings ({self.model}) answered {len(data)} vectors of "
                f"{sorted(lengths)} dimensions for {len(texts)} texts, not "
                f"{EMBEDDING_DIMENSIONS}-dimensional ones: no vector this time"
            )
        matrix = np.array([item.embedding for item in data], dtype=np.float32)
        return normalised_rows(matrix.reshape(len(texts), EMBEDDING_DIMENSIONS))
