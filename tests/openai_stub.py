"""A test fake: a tiny OpenAI-compatible HTTP server, so the real worker runs with no network.

`OpenAIStub` serves, on 127.0.0.1 and a free port, the endpoints the worker's
`livekit.plugins.openai` models call under `OPENAI_BASE_URL` (`http://127.0.0.1:<port>/v1`):

- `POST /v1/chat/completions` — what `openai.LLM` uses in livekit-plugins-openai 1.8.9
  (chat completions with `stream=True`, answered as server-sent events). The reply is
  deterministic: `STUB-REPLY(<text of the last user message>)`, or `STUB-GREETING` when the
  conversation has no user message yet (the agent's greeting). A request that requires a
  tool call (`tool_choice` "required" or naming a function, as the memory's LLM fact
  extraction sends) is answered with one call of its first tool with the arguments
  `{"changes": []}`: "nothing to change", the one answer that needs no understanding.
- `GET /v1/models` — the LLM's prewarm; `GET /v1/` — the TTS prewarm.
- `POST /v1/audio/speech` and `POST /v1/audio/transcriptions` — minimal answers (silence, an
  empty transcript); console text mode is not expected to call them.
- `POST /v1/embeddings` — what `MEMORY_EMBEDDINGS=openai` calls: for each input a unit
  vector of `dimensions` floats (1536, text-embedding-3-small's, if not asked) drawn from a
  generator seeded by the text's SHA-256. Not a model: equal texts get equal vectors, others
  unrelated ones; meaning plays no part.

Every request is recorded (`requests`, `chat_requests()`), so a test can check what the worker
asked for. This is not a model and not a general OpenAI emulator: it knows only these paths,
and answers anything else with 404.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GREETING_REPLY = "STUB-GREETING"


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The stub's answer to a conversation: derived from its last user message only."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return f"STUB-REPLY({message_text(message)})"
    return GREETING_REPLY


def stub_embedding(text: str, dimensions: int) -> list[float]:
    """The stub's vector for `text`: a unit vector from a generator seeded by its SHA-256."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    generator = random.Random(seed)
    values = [generator.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat-completions message (`content` is a string or a list of parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any
    at: float = field(default_factory=time.monotonic)


class _Handler(BaseHTTPRequestHandler):
    server: _StubHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean; requests are recorded instead

    # -- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Type", "").startswith("application/json") and raw:
            try:
                return json.loads(raw)
            except ValueError:
                return raw.decode("utf-8", "replace")
        return raw

    def _record(self, body: Any) -> None:
        self.server.stub.record(RecordedRequest(self.command, self.path, body))

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _not_found(self) -> None:
        self._send_json(
            404,
            {
                "error": {
                    "message": f"the test stub has no {self.command} {self.path}",
                    "type": "invalid_request_error",
                    "code": "not_found",
                }
            },
        )

    def _route(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        prefix = "/v1"
        return path[len(prefix) :] if path.startswith(prefix) else path

    # -- endpoints -------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(None)
        route = self._route()
        if route == "/models":
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "stub-model",
                            "object": "model",
                            "created": 0,
                            "owned_by": "test-stub",
                        }
                    ],
                },
            )
        elif route == "":
            self._send(200, b"openai test stub", "text/plain")
        else:
            self._not_found()

    def do_POST(self) -> None:
        body = self._read_body()
        self._record(body)
        route = self._route()
        if route == "/chat/completions" and isinstance(body, dict):
            self._chat_completions(body)
        elif route == "/audio/speech":
            # 0.1 s of 24 kHz mono 16-bit silence, the "pcm" format the TTS asks for.
            self._send(200, b"\x00\x00" * 2400, "audio/pcm")
        elif route == "/audio/transcriptions":
            self._send_json(200, {"text": ""})
        elif route == "/embeddings" and isinstance(body, dict):
            self._embeddings(body)
        else:
            self._not_found()

    def _embeddings(self, body: dict[str, Any]) -> None:
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        dimensions = body.get("dimensions") or 1536
        if not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
            self._send_json(400, {"error": {"message": "input must be non-empty text"}})
            return
        data = [
            {"object": "embedding", "index": i, "embedding": stub_embedding(text, dimensions)}
            for i, text in enumerate(texts)
        ]
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        model = body.get("model", "stub-model")
        self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})

    def _chat_completions(self, body: dict[str, Any]) -> None:
        tool = required_tool(body)
        if tool is not None:
            self._tool_call(body, tool)
            return
        text = reply_for(body.get("messages") or [])
        model = body.get("model", "stub-model")
        completion_id = f"chatcmpl-stub-{self.server.stub.next_id()}"
        created = int(time.time())
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )
            return

        def chunk(delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n".encode()

        # Split the reply in two deltas so the client really assembles a stream.
        half = len(text) // 2
        events = [
            chunk({"role": "assistant", "content": text[:half]}, None),
            chunk({"content": text[half:]}, None),
            chunk({}, "stop"),
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                chunk({}, None, {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
            )
        events.append(b"data: [DONE]\n\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for event in events:
            self.wfile.write(event)
            self.wfile.flush()

    def _tool_call(self, body: dict[str, Any], tool: str) -> None:
        """One streamed call of `tool` with no changes (see the module docstring)."""
        completion_id = f"chatcmpl-stub-{self.server.stub.next_id()}"
        call = {
            "index": 0,
            "id": f"call-stub-{completion_id}",
            "type": "function",
            "function": {"name": tool, "arguments": json.dumps({"changes": []})},
        }
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "stub-model"),
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "tool_calls": [call]},
                    "finish_reason": None,
                }
            ],
        }
        done = dict(payload, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for event in (payload, done):
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def required_tool(body: dict[str, Any]) -> str | None:
    """The tool a chat request requires the model to call, if it requires one."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        return (choice.get("function") or {}).get("name")
    if choice == "required" and tools:
        return (tools[0].get("function") or {}).get("name")
    return None


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: OpenAIStub) -> None:
        self.stub = stub
        super().__init__(("127.0.0.1", 0), _Handler)


class OpenAIStub:
    """The fake server; use as a context manager (`with OpenAIStub() as stub: stub.base_url`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._ids = 0
        self._server: _StubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> OpenAIStub:
        self._server = _StubHTTPServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openai-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the stub is not running"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to put in `OPENAI_BASE_URL`."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- what the worker asked -------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return self._chat_requests_locked()

    def wait_for_chat_requests(self, count: int, timeout: float) -> bool:
        """Block until at least `count` chat completion requests arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if len(self._chat_requests_locked()) >= count:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def _chat_requests_locked(self) -> list[RecordedRequest]:
        return [r for r in self._requests if r.method == "POST" and _is_chat_path(r.path)]


def _is_chat_path(path: str) -> bool:
    return path.split("?", 1)[0].rstrip("/").endswith("/chat/completions")
