"""Embeddings: text -> vectors whose dot product says how close two texts are in meaning.

- `Embedder` (`base`): the interface, and its errors (`EmbeddingSetupError`: the
  configuration cannot work, the message says what to do; `EmbeddingUnavailableError`: no
  vector this time, go on without one).
- `OnnxEmbedder` (`onnx`): the default, multilingual-e5-small (int8 ONNX) run in the worker by
  ONNX Runtime, off the event loop, next to the voice pipeline's VAD.
- `OpenAIEmbedder` (`openai`): OpenAI's embeddings, asked for the same 384 dimensions.
- `embedder_from_settings` (`factory`): the one `MEMORY_EMBEDDINGS` selects (None for `off`).
- `download` : `python agent.py download-files` fetches the local model (pinned, checked).

Importing this package registers the download with livekit-agents (`register_plugin`), as
importing a LiveKit plugin package does. Only numpy is needed to import it; the local model
needs the `embeddings` extra (onnxruntime, tokenizers).
"""

from __future__ import annotations

from caller_memory.embeddings.base import (
    EMBEDDING_DIMENSIONS,
    Embedder,
    EmbeddingError,
    EmbeddingSetupError,
    EmbeddingUnavailableError,
    Vector,
)
from caller_memory.embeddings.download import (
    PRODUCTION_MODEL,
    EmbeddingModelPlugin,
    ModelDownloadError,
    download_model,
    register_plugin,
    verify_model,
)
from caller_memory.embeddings.factory import embedder_from_settings
from caller_memory.embeddings.onnx import OnnxEmbedder
from caller_memory.embeddings.openai import OpenAIEmbedder

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "PRODUCTION_MODEL",
    "Embedder",
    "EmbeddingError",
    "EmbeddingModelPlugin",
    "EmbeddingSetupError",
    "EmbeddingUnavailableError",
    "ModelDownloadError",
    "OnnxEmbedder",
    "OpenAIEmbedder",
    "Vector",
    "download_model",
    "embedder_from_settings",
    "register_plugin",
    "verify_model",
]

register_plugin()
