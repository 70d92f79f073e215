"""The local embedder: multilingual-e5-small as an int8 ONNX model, run by ONNX Runtime.

A model directory holds `model.onnx` (an encoder with the Hugging Face export's interface:
inputs `input_ids`, `attention_mask` and optionally `token_type_ids`, output
`last_hidden_state`), `tokenizer.json` (a Hugging Face `tokenizers` file) and, optionally,
`embedder.json` whose `name` is stored beside every vector (`python agent.py download-files`
writes all three; see `caller_memory.embeddings.download`).

How a text becomes a vector, as e5 was trained: the prefix `query: ` (what the caller asks)
or `passage: ` (what is stored), tokens capped (a query keeps its last 28: a caller who
rambles asks last, and its latency counts; a document keeps its first 256), the encoder,
the mean of the token vectors over the attention mask, L2 normalisation.

Why it is run this way: the voice pipeline's Silero VAD runs on ONNX Runtime in the same
process, every 32 ms. An ONNX Runtime session with its defaults (an intra-op thread per core,
threads spinning while they wait) slows both down several times over on two cores. So the
session gets `MEMORY_EMBEDDING_THREADS` intra-op threads (default 1), one inter-op thread,
sequential execution and no spinning; queries run on their own small thread pool (at most
half the cores at once) and documents (write-behind) on one thread of their own, so a batch
of memories being embedded never delays a caller's query, and nothing runs on the event
loop. The model is loaded once, on first use or by `warm_up()`, by whichever thread gets
there first; ONNX Runtime sessions and `tokenizers` tokenizers are safe to share between
threads once built (nothing here changes them after loading).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from caller_memory.embeddings.base import (
    EMBEDDING_DIMENSIONS,
    EmbeddingSetupError,
    EmbeddingUnavailableError,
    Vector,
    normalised_rows,
)

if TYPE_CHECKING:
    from onnxruntime import InferenceSession
    from tokenizers import Encoding, Tokenizer

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DOCUMENT_MAX_TOKENS",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "QUERY_MAX_TOKENS",
    "TOKENIZER_FILE",
    "OnnxEmbedder",
    "missing_model_files",
    "model_files_message",
]

logger = logging.getLogger("caller_memory.embeddings")

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "embedder.json"  # {"name": ...}: optional, written by the download
REQUIRED_FILES = (MODEL_FILE, TOKENIZER_FILE)
# The name of a model directory without `embedder.json` (files copied there by hand).
DEFAULT_MODEL_NAME = "multilingual-e5-small"

QUERY_PREFIX = "query: "
DOCUMENT_PREFIX = "passage: "
QUERY_MAX_TOKENS = 28  # with the prefix and the special tokens
DOCUMENT_MAX_TOKENS = 256
# Documents per model run, sorted by length to pad little (8 or more is no faster on 2 cores).
# int8 activations are quantized per run, so a text's vector depends a little on the texts it
# is run with (cosine to the text run alone above 0.99 for real sentences).
DOCUMENT_BATCH = 8
# A text is cut to this many characters per token of its cap before tokenizing (no token of
# this vocabulary is that long), so a huge paste costs no more than a long memory.
_CHARACTERS_PER_TOKEN_CAP = 32

Kind = Literal["query", "document"]


def missing_model_files(model_dir: str | os.PathLike[str]) -> list[str]:
    """The files `OnnxEmbedder` needs that `model_dir` does not have."""
    directory = Path(model_dir)
    return [name for name in REQUIRED_FILES if not (directory / name).is_file()]


def model_files_message(model_dir: str | os.PathLike[str], missing: Sequence[str]) -> str:
    """What to do when the local model's files are missing from `model_dir`."""
    return (
        f"the local embedding model is missing from {model_dir} (no {' or '.join(missing)}): "
        "run `python agent.py download-files` to fetch it, or set MEMORY_EMBEDDING_MODEL_DIR "
        f"to a directory holding {MODEL_FILE} and {TOKENIZER_FILE} (multilingual-e5-small), "
        "or set MEMORY_EMBEDDINGS=off for lexical search only"
    )


def _manifest_name(model_dir: Path) -> str | None:
    path = model_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EmbeddingSetupError(
            f"{path} is unreadable ({exc}); run `python agent.py download-files` again or delete it"
        ) from None
    name = manifest.get("name") if isinstance(manifest, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise EmbeddingSetupError(f'{path} has no "name"; run `python agent.py download-files`')
    return name.strip()


def _require_text(texts: Sequence[object]) -> None:
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"an embedder embeds text, got {type(text).__name__}")


@dataclass(frozen=True)
class _LoadedModel:
    session: InferenceSession
    tokenizer: Tokenizer
    wants_token_type_ids: bool
    output_name: str
    pad_id: int
    special_tokens: int  # how many special tokens the tokenizer adds to one text


class OnnxEmbedder:
    """multilingual-e5-small in this process (see the module docstring).

    `model_dir` must hold `model.onnx` and `tokenizer.json` (checked now: a clear
    `EmbeddingSetupError` otherwise); the model itself is loaded on first use or by
    `warm_up()`. `threads` is the session's intra-op thread count (`MEMORY_EMBEDDING_THREADS`);
    `name` overrides the name read from `embedder.json`."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        threads: int = 1,
        name: str | None = None,
        query_max_tokens: int = QUERY_MAX_TOKENS,
        document_max_tokens: int = DOCUMENT_MAX_TOKENS,
        query_workers: int | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        missing = missing_model_files(self.model_dir)
        if missing:
            raise EmbeddingSetupError(model_files_message(self.model_dir, missing))
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self._name = name or _manifest_name(self.model_dir) or DEFAULT_MODEL_NAME
        self.threads = threads
        self.max_tokens: dict[Kind, int] = {
            "query": query_max_tokens,
            "document": document_max_tokens,
        }
        self._lock = threading.Lock()
        self._model: _LoadedModel | None = None
        self._load_error: EmbeddingSetupError | None = None
        workers = query_workers or max(1, (os.cpu_count() or 2) // 2)
        self._query_pool = ThreadPoolExecutor(workers, thread_name_prefix="embed-query")
        self._document_pool = ThreadPoolExecutor(1, thread_name_prefix="embed-documents")

    def __repr__(self) -> str:
        return f"OnnxEmbedder({str(self.model_dir)!r}, name={self._name!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> int:
        return EMBEDDING_DIMENSIONS

    # -- the async API (never blocks the event loop) ---------------------------------------------

    async def embed_query(self, text: str) -> Vector:
        _require_text([text])
        (vector,) = await self._in_thread(self._query_pool, self.embed_blocking, [text], "query")
        return vector

    async def embed_documents(self, texts: Sequence[str]) -> list[Vector]:
        texts = list(texts)
        if not texts:
            return []
        _require_text(texts)
        return await self._in_thread(self._document_pool, self.embed_blocking, texts, "document")

    async def warm_up(self) -> None:
        await self._in_thread(self._query_pool, self._loaded)

    async def aclose(self) -> None:
        # Threads already running a model finish their batch; nothing queued starts.
        self._query_pool.shutdown(wait=False, cancel_futures=True)
        self._document_pool.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(
        self, pool: ThreadPoolExecutor, call: Callable[..., Any], *args: Any
    ) -> Any:
        try:
            future = asyncio.get_running_loop().run_in_executor(pool, call, *args)
        except RuntimeError:  # the pool was shut down
            raise EmbeddingUnavailableError("the local embedder was closed") from None
        return await future

    # -- the work, in a thread -------------------------------------------------------------------

    def embed_blocking(self, texts: Sequence[str], kind: Kind = "document") -> list[Vector]:
        """The vectors of `texts` as queries or documents, computed in the calling thread: for
        scripts, checks and benchmarks, never on an event loop (use `embed_query` and
        `embed_documents` there)."""
        _require_text(texts)
        model = self._loaded()
        prefix = QUERY_PREFIX if kind == "query" else DOCUMENT_PREFIX
        cap = self.max_tokens[kind]
        encodings = [self._encode(model, prefix, text, cap, kind) for text in texts]
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        vectors: list[Vector | None] = [None] * len(encodings)
        for start in range(0, len(order), DOCUMENT_BATCH):
            batch = order[start : start + DOCUMENT_BATCH]
            pooled = self._run(model, [encodings[i] for i in batch])
            for i, vector in zip(batch, normalised_rows(pooled), strict=True):
                vectors[i] = vector
        return [v for v in vectors if v is not None]

    def _encode(
        self, model: _LoadedModel, prefix: str, text: str, cap: int, kind: Kind
    ) -> Encoding:
        """`prefix` + `text` as the model's tokens, at most `cap` of them. A document keeps its
        beginning; a query keeps its end: a caller who rambles asks their question last
        ("...anyway, what was the name of my sister's dog?")."""
        # Truncated per call rather than by the tokenizer's own setting, which is shared state:
        # queries and documents have different caps and run in different threads at once.
        room = max(cap - model.special_tokens, 1)
        longest = cap * _CHARACTERS_PER_TOKEN_CAP
        if kind == "document":
            encoding = model.tokenizer.encode(prefix + text[:longest], add_special_tokens=False)
            encoding.truncate(room)
        else:
            from tokenizers import Encoding  # loaded with the model (an optional extra)

            head = model.tokenizer.encode(prefix.rstrip(), add_special_tokens=False)
            tail = model.tokenizer.encode(text[-longest:], add_special_tokens=False)
            tail.truncate(max(room - len(head.ids), 1), direction="left")
            encoding = Encoding.merge([head, tail], growing_offsets=True)
        return model.tokenizer.post_process(encoding)

    def _run(self, model: _LoadedModel, encodings: Sequence[Encoding]) -> NDArray[np.float32]:
        """Masked mean of the encoder's token vectors, one row per encoding."""
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), model.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if model.wants_token_type_ids:
            feed["token_type_ids"] = np.zeros_like(ids)
        try:
            (hidden,) = model.session.run([model.output_name], feed)
        except Exception as exc:  # onnxruntime's own exception types (e.g. out of memory)
            raise EmbeddingUnavailableError(
                f"the local embedding model failed ({type(exc).__name__}: {exc})"
            ) from exc
        weights = mask[:, :, None].astype(np.float32)
        summed = (np.asarray(hidden, dtype=np.float32) * weights).sum(axis=1)
        return summed / np.maximum(weights.sum(axis=1), 1.0)

    def _loaded(self) -> _LoadedModel:
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                if self._load_error is not None:
                    raise self._load_error
                try:
                    self._model = self._load()
                except EmbeddingSetupError as exc:
                    self._load_error = exc  # a broken model stays broken: not reloaded per turn
                    raise
            return self._model

    def _load(self) -> _LoadedModel:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingSetupError(
                f"the local embedding model needs onnxruntime and tokenizers ({exc.name} is "
                "not installed): pip install 'livekit-caller-memory[embeddings]', or set "
                "MEMORY_EMBEDDINGS=off"
            ) from None
        missing = missing_model_files(self.model_dir)
        if missing:
            raise EmbeddingSetupError(model_files_message(self.model_dir, missing))
        model_path = self.model_dir / MODEL_FILE
        tokenizer_path = self.model_dir / TOKENIZER_FILE
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no warnings about unused initializers
        try:
            session = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types, unexported
            raise EmbeddingSetupError(
                f"{model_path} is not a usable ONNX model ({type(exc).__name__}: {exc}); run "
                "`python agent.py download-files` to fetch it again"
            ) from None
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises plain Exception for a malformed file
            raise EmbeddingSetupError(
                f"{tokenizer_path} is not a usable tokenizer ({exc}); run `python agent.py "
                "download-files` to fetch it again"
            ) from None
        inputs = {i.name for i in session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise EmbeddingSetupError(
                f"{model_path} takes {sorted(inputs)}, not input_ids and attention_mask: it is "
                "not a text encoder export such as multilingual-e5-small's"
            )
        outputs = [o.name for o in session.get_outputs()]
        pad_id = tokenizer.token_to_id("<pad>")
        model = _LoadedModel(
            session=session,
            tokenizer=tokenizer,
            wants_token_type_ids="token_type_ids" in inputs,
            output_name="last_hidden_state" if "last_hidden_state" in outputs else outputs[0],
            pad_id=0 if pad_id is None else pad_id,
            special_tokens=tokenizer.num_special_tokens_to_add(False),
        )
        try:
            shape = self._run(model, [self._encode(model, QUERY_PREFIX, "hello", 8, "query")]).shape
        except (EmbeddingUnavailableError, ValueError) as exc:  # wrong output rank, shapes
            raise EmbeddingSetupError(
                f"{model_path} could not embed a test sentence ({exc}): it is not a text "
                "encoder export such as multilingual-e5-small's"
            ) from None
        if shape != (1, EMBEDDING_DIMENSIONS):
            raise EmbeddingSetupError(
                f"{model_path} makes vectors of shape {shape[1:]}, not "
                f"({EMBEDDING_DIMENSIONS},): this package stores multilingual-e5-small's "
                f"{EMBEDDING_DIMENSIONS}-dimensional vectors"
            )
        logger.info(
            "local embedding model %s loaded from %s (%d thread%s)",
            self._name,
            self.model_dir,
            self.threads,
            "" if self.threads == 1 else "s",
        )
        return model
