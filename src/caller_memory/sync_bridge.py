"""Run the async store from plain synchronous code (scripts, the summary's test snippet).

The stores are async so that the voice turn never blocks its event loop. Synchronous callers
get a private event loop on a daemon thread, and block on it; calling from inside a running
event loop is refused, because blocking there would stall every session on that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _bridge_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="memory-sync-bridge", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T], *, api_name: str) -> T:
    """Run `coro` to completion from synchronous code and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError(
            f"memory_manager.{api_name}() blocks and was called inside a running event loop; "
            f"use `await memory_manager.a{api_name}(...)` in async code"
        )
    # The coroutine runs in a copy of the caller's context, so it sees the caller's session
    # user exactly as the caller does.
    caller_context = contextvars.copy_context()
    result: concurrent.futures.Future[T] = concurrent.futures.Future()

    def _finish(task: asyncio.Task[T]) -> None:
        if task.cancelled():
            result.cancel()
        elif (exc := task.exception()) is not None:
            result.set_exception(exc)
        else:
            result.set_result(task.result())

    def _start() -> None:
        task = asyncio.get_running_loop().create_task(coro, context=caller_context)
        task.add_done_callback(_finish)

    _bridge_loop().call_soon_threadsafe(_start)
    return result.result()
