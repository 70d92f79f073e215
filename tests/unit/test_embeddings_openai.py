"""`OpenAIEmbedder` against the project's OpenAI-compatible stub (tests/openai_stub.py).

The stub is not a model (its vectors carry no meaning); what is checked is the embedder's side
of the API: what it asks for (model, 384 dimensions, floats, the texts in order), what it makes
of the answer (unit float32 vectors in the order of the texts), that every failure (an HTTP
error, a refused connection, a service that never answers) becomes `EmbeddingUnavailableError`
without the key in its message, and that it works from more than one event loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from caller_memory.embeddings import (
    Embedder,
    EmbeddingSetupError,
    EmbeddingUnavailableError,
    OpenAIEmbedder,
)
from tests.openai_stub import OpenAIStub, RecordedRequest, stub_embedding

KEY = "sk-test-key-never-shown-0123456789"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as stub:
        yield stub


def embedding_requests(stub: OpenAIStub) -> list[RecordedRequest]:
    return [r for r in stub.requests if r.path.endswith("/embeddings")]


async def test_a_query_is_one_request_for_384_float_dimensions(stub: OpenAIStub) -> None:
    embedder = OpenAIEmbedder("text-embedding-3-small", api_key=KEY, base_url=stub.base_url)
    try:
        assert isinstance(embedder, Embedder)
        vector = await embedder.embed_query("¿Dónde vive mi hermana?")
    finally:
        await embedder.aclose()
    (request,) = embedding_requests(stub)
    assert request.body == {
        "model": "text-embedding-3-small",
        "input": ["¿Dónde vive mi hermana?"],
        "dimensions": 384,
        "encoding_format": "float",
    }
    assert vector.dtype == np.float32
    assert vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    np.testing.assert_allclose(vector, stub_embedding("¿Dónde vive mi hermana?", 384), atol=1e-6)


async def test_documents_come_back_in_the_order_given(stub: OpenAIStub) -> None:
    texts = [f"memory number {i}" for i in range(300)]  # more than one request's worth
    embedder = OpenAIEmbedder(api_key=KEY, base_url=stub.base_url)
    try:
        vectors = await embedder.embed_documents(texts)
        assert await embedder.embed_documents([]) == []
    finally:
        await embedder.aclose()
    assert len(vectors) == len(texts)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vector, stub_embedding(text, 384), atol=1e-6)
    sent = [text for r in embedding_requests(stub) for text in r.body["input"]]
    assert sent == texts
    assert len(embedding_requests(stub)) == 2


async def test_the_name_says_model_and_dimensions() -> None:
    embedder = OpenAIEmbedder("text-embedding-3-large", api_key=KEY)
    assert (embedder.name, embedder.dimensions) == ("openai/text-embedding-3-large/384", 384)


def test_no_key_is_a_clear_setup_error() -> None:
    with pytest.raises(EmbeddingSetupError, match="OPENAI_API_KEY"):
        OpenAIEmbedder()


async def test_the_key_and_base_url_default_to_the_openai_variables(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    embedder = OpenAIEmbedder()
    try:
        await embedder.embed_query("hello")
    finally:
        await embedder.aclose()
    assert len(embedding_requests(stub)) == 1


async def test_an_http_error_is_no_vector_this_time_and_hides_the_key(stub: OpenAIStub) -> None:
    # the stub answers 404 for a path it does not serve
    embedder = OpenAIEmbedder(api_key=KEY, base_url=stub.base_url + "/not-here")
    try:
        with pytest.raises(EmbeddingUnavailableError, match="HTTP 404") as raised:
            await embedder.embed_query("hello")
    finally:
        await embedder.aclose()
    assert KEY not in str(raised.value)
    assert "no vector this time" in str(raised.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_refused_connection_is_no_vector_this_time() -> None:
    embedder = OpenAIEmbedder(api_key=KEY, base_url=f"http://127.0.0.1:{free_port()}/v1")
    try:
        with pytest.raises(EmbeddingUnavailableError, match="APIConnectionError"):
            await embedder.embed_query("hello")
    finally:
        await embedder.aclose()


async def test_a_service_that_never_answers_is_given_up_on() -> None:
    # a server that accepts connections and reads, but never says anything
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    embedder = OpenAIEmbedder(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", timeout_s=0.3)
    try:
        with pytest.raises(EmbeddingUnavailableError, match="APITimeoutError"):
            await embedder.embed_query("hello")
    finally:
        await embedder.aclose()
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
    assert accepted  # it did connect, and waited in vain


def test_one_embedder_serves_several_event_loops(stub: OpenAIStub) -> None:
    embedder = OpenAIEmbedder(api_key=KEY, base_url=stub.base_url)

    async def one_call(text: str) -> None:
        await embedder.embed_query(text)

    def in_a_thread_loop() -> None:
        asyncio.run(one_call("from a thread"))

    thread = threading.Thread(target=in_a_thread_loop)
    thread.start()
    thread.join()
    asyncio.run(one_call("from the main thread"))
    asyncio.run(embedder.aclose())
    assert [r.body["input"] for r in embedding_requests(stub)] == [
        ["from a thread"],
        ["from the main thread"],
    ]


async def test_the_workers_settings_give_the_key_and_base_url(stub: OpenAIStub) -> None:
    from agent import WorkerSettings
    from caller_memory.embeddings import embedder_from_settings

    settings = WorkerSettings.load(
        embeddings="openai", openai_api_key=KEY, openai_base_url=stub.base_url
    )
    embedder = embedder_from_settings(settings)
    assert isinstance(embedder, OpenAIEmbedder)
    try:
        await embedder.embed_query("hello")
    finally:
        await embedder.aclose()
    assert len(embedding_requests(stub)) == 1
