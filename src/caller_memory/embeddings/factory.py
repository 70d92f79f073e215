"""The embedder the settings select (`MEMORY_EMBEDDINGS`), checked at start-up."""

from __future__ import annotations

from pydantic import SecretStr

from caller_memory.embeddings.base import Embedder
from caller_memory.settings import MemorySettings

__all__ = ["embedder_from_settings"]


def embedder_from_settings(settings: MemorySettings) -> Embedder | None:
    """The embedder `settings` select: None for `off` (lexical search only); `local`: an
    `OnnxEmbedder` on `MEMORY_EMBEDDING_MODEL_DIR` with `MEMORY_EMBEDDING_THREADS` threads;
    `openai`: an `OpenAIEmbedder` for `MEMORY_OPENAI_EMBEDDING_MODEL`.

    Raises `EmbeddingSetupError` saying what to do when the choice cannot work: the local
    model's files are missing (run `python agent.py download-files`, point
    MEMORY_EMBEDDING_MODEL_DIR at the files, or set MEMORY_EMBEDDINGS=off), or there is no
    OpenAI key. The local model itself is loaded later, by `warm_up()` or the first call, off
    the event loop. The OpenAI key and base URL are the settings' `openai_api_key` and
    `openai_base_url` where they have them (the reference worker's do), else the
    `OPENAI_API_KEY` and `OPENAI_BASE_URL` the `openai` client reads."""
    if settings.embeddings == "off":
        return None
    if settings.embeddings == "openai":
        from caller_memory.embeddings.openai import OpenAIEmbedder

        key = getattr(settings, "openai_api_key", None)
        base_url = getattr(settings, "openai_base_url", None)
        return OpenAIEmbedder(
            settings.openai_embedding_model,
            api_key=key.get_secret_value() if isinstance(key, SecretStr) else key,
            base_url=base_url if isinstance(base_url, str) else None,
        )
    from caller_memory.embeddings.onnx import OnnxEmbedder

    return OnnxEmbedder(settings.embedding_model_dir, threads=settings.embedding_threads)
