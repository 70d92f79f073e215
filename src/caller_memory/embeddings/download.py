"""Fetching the local embedding model: `python agent.py download-files`.

LiveKit's convention for models a worker needs is a `livekit.agents.Plugin` whose
`download_files()` fetches them; `python agent.py download-files` calls it for every plugin
registered in the process (the Dockerfile runs it at build time, so a container starts with
its models). Importing `caller_memory.embeddings` registers `EmbeddingModelPlugin`, which
fetches `PRODUCTION_MODEL` into `MEMORY_EMBEDDING_MODEL_DIR` when `MEMORY_EMBEDDINGS=local`
(the default) and does nothing otherwise.

What is fetched, and how it is checked:

- `onnx/model_quantized.onnx` (saved as `model.onnx`) and `tokenizer.json` of the Hugging Face
  repository `Xenova/multilingual-e5-small`: `intfloat/multilingual-e5-small` (MIT) exported
  to ONNX and quantized to int8 for transformers.js, about 135 MB together. Pinned to one
  commit of that repository, so the bytes cannot change under the same name.
- Over plain HTTPS (`urllib`; the hub's `resolve` URLs redirect to its CDN). Each file goes to
  a temporary file in the model directory, its size and SHA-256 are checked against the pins
  below, and only then is it renamed into place (an atomic rename on one file system): an
  interrupted or corrupted download never leaves a file the embedder would load. A file
  already present with the pinned size and hash is kept, so running the command again
  fetches nothing.
- After the files, the model is loaded as the worker will load it (ONNX Runtime session,
  tokenizer) and one sentence embedded: a 384-dimensional unit vector, or the command fails.
- `embedder.json` (the name stored beside each vector) is written last, and removed before
  any file is replaced, so a directory with a half-replaced model never carries a release's
  name.

Where the pins come from: the commit, sizes and SHA-256 digests below are the ones the hub
publishes for that commit (its LFS pointers, which carry the SHA-256 and size of each file);
they could not be checked from the machine this was written on, which cannot reach the hub.
They agree with what several independent public projects pin for the same files. Verify them
once on a machine with access (`python agent.py download-files` checks every byte against
them and fails loudly on any difference; or compare with the file pages of the repository at
that commit) before relying on them; change `PRODUCTION_MODEL` and its name together.

Offline deployments: copy `model.onnx`, `tokenizer.json` (and `embedder.json`) into a
directory and point `MEMORY_EMBEDDING_MODEL_DIR` at it. `download_model(..., base_url=...)`
fetches from a mirror with the hub's URL layout (`<base>/<repository>/resolve/<revision>/
<path>`); the tests use it with a local server.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from livekit.agents import Plugin

from caller_memory.embeddings.base import EMBEDDING_DIMENSIONS, EmbeddingError
from caller_memory.embeddings.onnx import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE

__all__ = [
    "HUGGING_FACE_URL",
    "PRODUCTION_MODEL",
    "DownloadReport",
    "EmbeddingModelPlugin",
    "ModelDownloadError",
    "ModelFile",
    "ModelRelease",
    "download_model",
    "register_plugin",
    "verify_model",
]

logger = logging.getLogger("caller_memory.embeddings")

HUGGING_FACE_URL = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 60.0  # per connection attempt and per read, not for the whole file
_CHUNK = 1 << 20


class ModelDownloadError(EmbeddingError):
    """The model could not be fetched or failed its checks; the message says what to do."""


@dataclass(frozen=True)
class ModelFile:
    """One file of a release: where it is in the repository, its name in the model directory,
    and the size and SHA-256 it must have."""

    remote_path: str
    local_name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelRelease:
    """A pinned set of model files: repository, commit, files, and the embedder name their
    vectors are stored under."""

    name: str
    repository: str
    revision: str
    files: tuple[ModelFile, ...]

    def url(self, base_url: str, file: ModelFile) -> str:
        path = urllib.parse.quote(f"{self.repository}/resolve/{self.revision}/{file.remote_path}")
        return f"{base_url.rstrip('/')}/{path}"


# See the module docstring: where these values come from, and that they must be verified.
PRODUCTION_MODEL = ModelRelease(
    name="multilingual-e5-small/xenova-int8-761b726d",
    repository="Xenova/multilingual-e5-small",
    revision="761b726dd34fb83930e26aab4e9ac3899aa1fa78",
    files=(
        ModelFile(
            remote_path="onnx/model_quantized.onnx",
            local_name=MODEL_FILE,
            size=118_308_185,
            sha256="f80102d3f2a1229f387d3c81909990d8945513e347b0eab049f7de3c6f98c193",
        ),
        ModelFile(
            remote_path="tokenizer.json",
            local_name=TOKENIZER_FILE,
            size=17_082_730,
            sha256="0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
        ),
    ),
)


@dataclass
class DownloadReport:
    """What `download_model` did: files fetched, files already there and kept."""

    directory: Path
    fetched: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def download_model(
    directory: str | os.PathLike[str],
    *,
    release: ModelRelease = PRODUCTION_MODEL,
    base_url: str = HUGGING_FACE_URL,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    verify: bool = True,
) -> DownloadReport:
    """Fetch `release` into `directory` (see the module docstring). Blocking: for the
    `download-files` command and scripts, never on an event loop. Raises
    `ModelDownloadError`."""
    target = Path(directory)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelDownloadError(
            f"cannot create the model directory {target} ({exc.strerror}); set "
            "MEMORY_EMBEDDING_MODEL_DIR to a writable directory"
        ) from None
    report = DownloadReport(directory=target)
    needed = [f for f in release.files if not _has_pinned_file(target / f.local_name, f)]
    report.kept = [f.local_name for f in release.files if f not in needed]
    if needed:
        # no release's name over a directory whose files are being replaced (see docstring)
        _remove(target / MANIFEST_FILE)
        _check_free_space(target, sum(f.size for f in needed))
    for file in needed:
        _fetch(release.url(base_url, file), file, target, timeout_s)
        report.fetched.append(file.local_name)
    if verify:
        verify_model(target)
    _write_manifest(target, release)
    logger.info(
        "embedding model %s in %s: %s",
        release.name,
        target,
        f"fetched {', '.join(report.fetched)}" if report.fetched else "already there",
    )
    return report


def verify_model(directory: str | os.PathLike[str]) -> None:
    """Load the model in `directory` as the worker does and embed one sentence; raises
    `ModelDownloadError` unless that gives a 384-dimensional unit vector."""
    from caller_memory.embeddings.onnx import OnnxEmbedder

    try:
        embedder = OnnxEmbedder(directory, threads=1, name="verification", query_workers=1)
        (vector,) = embedder.embed_blocking(["Where does my sister live?"], "query")
    except EmbeddingError as exc:
        raise ModelDownloadError(f"the downloaded model does not work: {exc}") from None
    norm = float(np.linalg.norm(vector))
    if vector.shape != (EMBEDDING_DIMENSIONS,) or not abs(norm - 1.0) < 1e-3:
        raise ModelDownloadError(
            f"the model in {directory} gave a vector of shape {vector.shape} and norm "
            f"{norm:.3f}, not a {EMBEDDING_DIMENSIONS}-dimensional unit vector"
        )


# -- one file ----------------------------------------------------------------------------------


def _has_pinned_file(path: Path, file: ModelFile) -> bool:
    try:
        if path.stat().st_size != file.size:
            return False
        with path.open("rb") as handle:
            digest = _sha256(handle)
    except OSError:
        return False
    if digest != file.sha256:
        logger.warning("%s differs from the pinned file; fetching it again", path)
        return False
    return True


def _sha256(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, file: ModelFile, target: Path, timeout_s: float) -> None:
    destination = target / file.local_name
    host = urllib.parse.urlsplit(url).netloc
    logger.info("fetching %s (%.1f MB) from %s", file.local_name, file.size / 1e6, host)
    request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    temporary: str | None = None
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{file.local_name}.", suffix=".part", dir=target
        )
        with os.fdopen(handle, "wb") as out:
            received, digest = _stream(request, file, out, timeout_s, url)
            out.flush()
            os.fsync(out.fileno())
        if received != file.size:
            raise ModelDownloadError(
                f"{url} sent {received} bytes, the pinned {file.local_name} has {file.size}: "
                "refusing it (a truncated transfer, or the file changed upstream); run the "
                "command again"
            )
        if digest != file.sha256:
            raise ModelDownloadError(
                f"{url} sent a file whose SHA-256 is {digest}, not the pinned {file.sha256}: "
                f"refusing {file.local_name} (corrupted in transit, or not the pinned file)"
            )
        os.replace(temporary, destination)
        _fsync_directory(target)
    except OSError as exc:
        raise ModelDownloadError(
            f"cannot write {destination} ({exc.strerror or exc}); free some space or set "
            "MEMORY_EMBEDDING_MODEL_DIR to a writable directory"
        ) from None
    finally:
        if temporary is not None:
            _remove(Path(temporary))


def _stream(
    request: urllib.request.Request, file: ModelFile, out: IO[bytes], timeout_s: float, url: str
) -> tuple[int, str]:
    """Copy the response to `out`; (bytes received, their SHA-256)."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            announced = response.headers.get("Content-Length")
            if announced is not None and announced.isdigit() and int(announced) != file.size:
                raise ModelDownloadError(
                    f"{url} offers {announced} bytes, the pinned {file.local_name} has "
                    f"{file.size}: refusing it (not the pinned file)"
                )
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > file.size:
                    raise ModelDownloadError(
                        f"{url} sent more than the {file.size} bytes of the pinned "
                        f"{file.local_name}: refusing it (not the pinned file)"
                    )
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise ModelDownloadError(
            f"{url} answered HTTP {exc.code} {exc.reason}; the pinned revision may be gone, or "
            "the hub unreachable from here: copy the files by hand and set "
            "MEMORY_EMBEDDING_MODEL_DIR (or MEMORY_EMBEDDINGS=off)"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelDownloadError(
            f"could not fetch {file.local_name} from {urllib.parse.urlsplit(url).netloc} "
            f"({reason}); check the network and run the command again, or copy the files by "
            "hand and set MEMORY_EMBEDDING_MODEL_DIR (or MEMORY_EMBEDDINGS=off)"
        ) from None
    except http.client.HTTPException as exc:  # IncompleteRead: the connection closed early
        raise ModelDownloadError(
            f"the transfer of {file.local_name} from {urllib.parse.urlsplit(url).netloc} broke "
            f"off ({type(exc).__name__}); run the command again"
        ) from None
    return received, digest.hexdigest()


def _check_free_space(target: Path, needed: int) -> None:
    free = shutil.disk_usage(target).free
    if free < needed:
        raise ModelDownloadError(
            f"{target} has {free / 1e6:.0f} MB free, the embedding model needs "
            f"{needed / 1e6:.0f} MB: free some space or set MEMORY_EMBEDDING_MODEL_DIR elsewhere"
        )


def _write_manifest(target: Path, release: ModelRelease) -> None:
    manifest = {
        "name": release.name,
        "repository": release.repository,
        "revision": release.revision,
        "files": {
            f.local_name: {"from": f.remote_path, "size": f.size, "sha256": f.sha256}
            for f in release.files
        },
    }
    handle, temporary = tempfile.mkstemp(prefix=f".{MANIFEST_FILE}.", dir=target)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(manifest, indent=2) + "\n")
        os.replace(temporary, target / MANIFEST_FILE)
    finally:
        _remove(Path(temporary))


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_directory(directory: Path) -> None:
    # the rename itself durable, where the platform allows opening a directory
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _package_version() -> str:
    try:
        return importlib.metadata.version("livekit-caller-memory")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _user_agent() -> str:
    return f"livekit-caller-memory/{_package_version()}"


# -- the livekit-agents plugin -----------------------------------------------------------------


class EmbeddingModelPlugin(Plugin):
    """Fetches the local embedding model on `python agent.py download-files`, into
    `MEMORY_EMBEDDING_MODEL_DIR`, when `MEMORY_EMBEDDINGS=local` (read from the environment
    when the command runs)."""

    def __init__(
        self, *, release: ModelRelease = PRODUCTION_MODEL, base_url: str = HUGGING_FACE_URL
    ) -> None:
        super().__init__("caller_memory.embeddings", _package_version(), __package__, logger)
        self.release = release
        self.base_url = base_url

    def download_files(self) -> None:
        from caller_memory.settings import MemorySettings

        settings = MemorySettings.load()
        if settings.embeddings != "local":
            logger.info(
                "MEMORY_EMBEDDINGS=%s: no local embedding model to download", settings.embeddings
            )
            return
        try:
            download_model(
                settings.embedding_model_dir, release=self.release, base_url=self.base_url
            )
        except ModelDownloadError as exc:
            raise _command_error(str(exc)) from None


def _command_error(message: str) -> Exception:
    """The error livekit-agents' `download-files` prints as one line (its `CLIError`; it shows
    a traceback for any other), or a `ModelDownloadError` if that class moved."""
    try:
        from livekit.agents._exceptions import CLIError
    except ImportError:
        return ModelDownloadError(message)
    return CLIError(f"embedding model: {message}")


_registered: EmbeddingModelPlugin | None = None


def register_plugin() -> EmbeddingModelPlugin | None:
    """Register `EmbeddingModelPlugin` with livekit-agents, once per process. livekit-agents
    accepts plugins only from the main thread (where a worker imports its modules); elsewhere
    this does nothing and returns None."""
    global _registered
    if _registered is None and threading.current_thread() is threading.main_thread():
        plugin = EmbeddingModelPlugin()
        Plugin.register_plugin(plugin)
        _registered = plugin
    return _registered
