"""`python agent.py download-files` for the local embedding model, against a local server.

The Hugging Face hub cannot be reached from here, so a small HTTP server on 127.0.0.1 serves
files under the hub's URL layout (`/<repository>/resolve/<revision>/<path>`, with the hub's
redirect to a CDN when asked) and `download_model(..., base_url=...)` fetches from it. The
releases are pinned to the sizes and SHA-256 of the files served, as `PRODUCTION_MODEL` is to
the hub's. What is checked: the files arrive whole and checked, the model is loaded before the
command succeeds, a second run fetches nothing, a wrong hash or size is refused, an
interrupted transfer leaves neither a torn file nor a temporary one, and the plugin
livekit-agents runs is registered and follows the settings.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import Plugin

from caller_memory.embeddings import (
    PRODUCTION_MODEL,
    EmbeddingModelPlugin,
    ModelDownloadError,
    OnnxEmbedder,
    download_model,
)
from caller_memory.embeddings.download import ModelFile, ModelRelease

REVISION = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Served:
    """A file the server serves, and how: `body` as is, cut off after `cut_at` bytes (with
    the full Content-Length announced), or with no Content-Length (the end of the body is
    the end of the connection)."""

    body: bytes | Path
    cut_at: int | None = None
    announce_length: bool = True

    def data(self) -> bytes:
        return self.body.read_bytes() if isinstance(self.body, Path) else self.body


@dataclass
class FileServer:
    """An HTTP server on 127.0.0.1 serving `files` by URL path; `redirect` answers the hub's
    `resolve` paths with a 302 to `/cdn/...` as the hub does. Records every GET path."""

    files: dict[str, Served] = field(default_factory=dict)
    redirect: bool = False
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def serve(self, release: ModelRelease, name: str, served: Served) -> None:
        (file,) = [f for f in release.files if f.local_name == name]
        self.files[release.url("", file)] = served


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append(self.path)
            if state.redirect and not self.path.startswith("/cdn/"):
                self.send_response(302)
                self.send_header("Location", "/cdn" + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            served = state.files.get(self.path.removeprefix("/cdn"))
            if served is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = served.data()
            self.send_response(200)
            if served.announce_length:
                self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data if served.cut_at is None else data[: served.cut_at])
            self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def pinned(name: str, data: bytes | Path, remote_path: str) -> ModelFile:
    raw = data.read_bytes() if isinstance(data, Path) else data
    return ModelFile(
        remote_path=remote_path,
        local_name=name,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def release_of(model: bytes | Path, tokenizer: bytes | Path, name: str = "test-e5") -> ModelRelease:
    return ModelRelease(
        name=name,
        repository="test-owner/multilingual-e5-small",
        revision=REVISION,
        files=(
            pinned("model.onnx", model, "onnx/model_quantized.onnx"),
            pinned("tokenizer.json", tokenizer, "tokenizer.json"),
        ),
    )


@pytest.fixture(scope="module")
def model_release(e5_model_dir: Path) -> ModelRelease:
    """The test model, pinned as `PRODUCTION_MODEL` pins the production one."""
    return release_of(e5_model_dir / "model.onnx", e5_model_dir / "tokenizer.json")


def serve_model(server: FileServer, release: ModelRelease, model_dir: Path) -> None:
    server.serve(release, "model.onnx", Served(model_dir / "model.onnx"))
    server.serve(release, "tokenizer.json", Served(model_dir / "tokenizer.json"))


def leftovers(directory: Path) -> list[str]:
    """Temporary files a download left in the model directory."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


SMALL_MODEL = b"not really a model, but pinned as one " * 100
SMALL_TOKENIZER = b'{"not": "a tokenizer"}' * 50


def small_release() -> ModelRelease:
    return release_of(SMALL_MODEL, SMALL_TOKENIZER, name="small")


# -- fetching --------------------------------------------------------------------------------


def test_the_model_is_fetched_checked_loaded_and_named(
    server: FileServer, model_release: ModelRelease, e5_model_dir: Path, tmp_path: Path
) -> None:
    serve_model(server, model_release, e5_model_dir)
    directory = tmp_path / "data" / "models" / "multilingual-e5-small"
    report = download_model(directory, release=model_release, base_url=server.url)
    assert sorted(report.fetched) == ["model.onnx", "tokenizer.json"]
    for name in ("model.onnx", "tokenizer.json"):
        assert (directory / name).read_bytes() == (e5_model_dir / name).read_bytes()
    assert leftovers(directory) == []
    manifest = json.loads((directory / "embedder.json").read_text())
    assert manifest["name"] == "test-e5"
    assert manifest["revision"] == REVISION
    assert OnnxEmbedder(directory).name == "test-e5"
    resolve = f"/test-owner/multilingual-e5-small/resolve/{REVISION}/onnx/model_quantized.onnx"
    assert resolve in server.requests


def test_the_hubs_redirect_to_its_cdn_is_followed(server: FileServer, tmp_path: Path) -> None:
    release = small_release()
    server.redirect = True
    server.serve(release, "model.onnx", Served(SMALL_MODEL))
    server.serve(release, "tokenizer.json", Served(SMALL_TOKENIZER))
    download_model(tmp_path, release=release, base_url=server.url, verify=False)
    assert (tmp_path / "model.onnx").read_bytes() == SMALL_MODEL
    resolve = f"/test-owner/multilingual-e5-small/resolve/{REVISION}/onnx/model_quantized.onnx"
    assert server.requests[:2] == [resolve, "/cdn" + resolve]


def test_running_it_again_fetches_nothing(server: FileServer, tmp_path: Path) -> None:
    release = small_release()
    server.serve(release, "model.onnx", Served(SMALL_MODEL))
    server.serve(release, "tokenizer.json", Served(SMALL_TOKENIZER))
    download_model(tmp_path, release=release, base_url=server.url, verify=False)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    server.requests.clear()
    report = download_model(tmp_path, release=release, base_url=server.url, verify=False)
    assert report.fetched == []
    assert sorted(report.kept) == ["model.onnx", "tokenizer.json"]
    assert server.requests == []
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert after["model.onnx"] == before["model.onnx"]
    assert after["tokenizer.json"] == before["tokenizer.json"]
    assert json.loads((tmp_path / "embedder.json").read_text())["name"] == "small"


def test_a_local_file_that_differs_is_fetched_again(server: FileServer, tmp_path: Path) -> None:
    release = small_release()
    server.serve(release, "model.onnx", Served(SMALL_MODEL))
    server.serve(release, "tokenizer.json", Served(SMALL_TOKENIZER))
    (tmp_path / "model.onnx").write_bytes(SMALL_MODEL[:-1] + b"!")  # same size, other bytes
    (tmp_path / "tokenizer.json").write_bytes(SMALL_TOKENIZER)
    report = download_model(tmp_path, release=release, base_url=server.url, verify=False)
    assert (report.fetched, report.kept) == (["model.onnx"], ["tokenizer.json"])
    assert (tmp_path / "model.onnx").read_bytes() == SMALL_MODEL


# -- refusing --------------------------------------------------------------------------------


def test_a_file_with_another_hash_is_refused(server: FileServer, tmp_path: Path) -> None:
    release = small_release()
    tampered = SMALL_TOKENIZER[:-1] + b"?"  # the pinned size, not the pinned bytes
    server.serve(release, "model.onnx", Served(SMALL_MODEL))
    server.serve(release, "tokenizer.json", Served(tampered))
    with pytest.raises(ModelDownloadError, match="SHA-256") as raised:
        download_model(tmp_path, release=release, base_url=server.url, verify=False)
    assert "refusing tokenizer.json" in str(raised.value)
    assert not (tmp_path / "tokenizer.json").exists()
    assert not (tmp_path / "embedder.json").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("announce_length", [True, False], ids=["announced", "unannounced"])
def test_a_file_of_another_size_is_refused(
    server: FileServer, tmp_path: Path, announce_length: bool
) -> None:
    release = small_release()
    server.serve(
        release, "model.onnx", Served(SMALL_MODEL + b"more", announce_length=announce_length)
    )
    with pytest.raises(ModelDownloadError, match=r"pinned model\.onnx"):
        download_model(tmp_path, release=release, base_url=server.url, verify=False)
    assert not (tmp_path / "model.onnx").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("announce_length", [True, False], ids=["announced", "unannounced"])
def test_an_interrupted_transfer_leaves_the_old_file_untouched_and_no_temporary_one(
    server: FileServer, tmp_path: Path, announce_length: bool
) -> None:
    release = small_release()
    server.serve(
        release,
        "model.onnx",
        Served(SMALL_MODEL, cut_at=len(SMALL_MODEL) // 2, announce_length=announce_length),
    )
    old = b"an older model.onnx that a worker may be using right now"
    (tmp_path / "model.onnx").write_bytes(old)
    with pytest.raises(ModelDownloadError, match="run the command again"):
        download_model(tmp_path, release=release, base_url=server.url, verify=False)
    assert (tmp_path / "model.onnx").read_bytes() == old  # never a torn file in its place
    assert leftovers(tmp_path) == []


def test_a_model_that_does_not_load_is_refused(server: FileServer, tmp_path: Path) -> None:
    release = small_release()  # pinned and served exactly: only the loading can tell
    server.serve(release, "model.onnx", Served(SMALL_MODEL))
    server.serve(release, "tokenizer.json", Served(SMALL_TOKENIZER))
    with pytest.raises(ModelDownloadError, match="the downloaded model does not work"):
        download_model(tmp_path, release=release, base_url=server.url)
    assert not (tmp_path / "embedder.json").exists()


def test_a_missing_file_upstream_says_what_to_do(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ModelDownloadError, match="HTTP 404") as raised:
        download_model(tmp_path, release=small_release(), base_url=server.url)
    assert "MEMORY_EMBEDDING_MODEL_DIR" in str(raised.value)


def test_an_unreachable_hub_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelDownloadError, match=r"could not fetch model\.onnx") as raised:
        download_model(tmp_path, release=small_release(), base_url=f"http://127.0.0.1:{port}")
    assert "MEMORY_EMBEDDING_MODEL_DIR" in str(raised.value)
    assert "MEMORY_EMBEDDINGS=off" in str(raised.value)


def test_the_production_release_is_pinned_to_one_commit_with_sizes_and_hashes() -> None:
    assert len(PRODUCTION_MODEL.revision) == 40
    assert int(PRODUCTION_MODEL.revision, 16) >= 0
    assert {f.local_name for f in PRODUCTION_MODEL.files} == {"model.onnx", "tokenizer.json"}
    for file in PRODUCTION_MODEL.files:
        assert file.size > 0
        assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0
        url = PRODUCTION_MODEL.url("https://huggingface.co", file)
        assert url.startswith(
            f"https://huggingface.co/Xenova/multilingual-e5-small/resolve/{PRODUCTION_MODEL.revision}/"
        )


# -- the livekit-agents plugin ---------------------------------------------------------------


def test_importing_the_package_registers_the_download_with_livekit() -> None:
    plugins = [p for p in Plugin.registered_plugins if isinstance(p, EmbeddingModelPlugin)]
    assert len(plugins) == 1
    assert plugins[0].release == PRODUCTION_MODEL
    assert plugins[0].package == "caller_memory.embeddings"  # what a worker preloads


def test_the_plugin_fetches_into_the_configured_directory(
    server: FileServer,
    model_release: ModelRelease,
    e5_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serve_model(server, model_release, e5_model_dir)
    monkeypatch.setenv("MEMORY_EMBEDDINGS", "local")
    monkeypatch.setenv("MEMORY_EMBEDDING_MODEL_DIR", str(tmp_path / "models"))
    EmbeddingModelPlugin(release=model_release, base_url=server.url).download_files()
    assert OnnxEmbedder(tmp_path / "models").name == "test-e5"


@pytest.mark.parametrize("choice", ["off", "openai"])
def test_the_plugin_fetches_nothing_unless_the_local_model_is_chosen(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    monkeypatch.setenv("MEMORY_EMBEDDINGS", choice)
    monkeypatch.setenv("MEMORY_EMBEDDING_MODEL_DIR", str(tmp_path / "models"))
    EmbeddingModelPlugin(release=small_release(), base_url=server.url).download_files()
    assert server.requests == []
    assert not (tmp_path / "models").exists()


def test_a_failed_download_is_one_line_for_the_command(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livekit.agents._exceptions import (
        CLIError,
    )  # what download-files prints without a traceback

    monkeypatch.setenv("MEMORY_EMBEDDINGS", "local")
    monkeypatch.setenv("MEMORY_EMBEDDING_MODEL_DIR", str(tmp_path / "models"))
    plugin = EmbeddingModelPlugin(release=small_release(), base_url=server.url)
    with pytest.raises(CLIError, match=r"^embedding model: .*HTTP 404"):
        plugin.download_files()


def test_a_model_directory_that_cannot_be_made_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(ModelDownloadError, match="cannot create the model directory") as raised:
        download_model(tmp_path / "a-file" / "models", release=small_release(), base_url="http://x")
    assert "MEMORY_EMBEDDING_MODEL_DIR" in str(raised.value)
