"""Capturing what one caller says, without ever making the reply wait for storage.

A `SessionMemory` belongs to one session and holds a copy of that session's context (taken in
the entrypoint, after the session user was set). Captured messages go into a queue that a
background task drains in that context, so:

- capture is a non-blocking call from the turn hook or from any event callback, including
  room callbacks that run in tasks started before the user was known (NOTES.md);
- writes are attributed to the session's caller, whatever context the capture came from;
- storage errors are retried with backoff and logged, never raised into the voice turn;
- `flush()` (called from the job's shutdown callback) waits for what is pending.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass

from memory_capture import CapturedMemory, extract_memories
from memory_manager import MemoryManager, memory_manager
from session_context import get_session_user_uuid
from storage.errors import StorageError

logger = logging.getLogger("memory_worker.capture")

SEEN_IDS_LIMIT = 512


@dataclass(frozen=True, slots=True)
class _Pending:
    memory: CapturedMemory


class SessionMemory:
    """Write-behind capture of one session's user messages (see module docstring)."""

    def __init__(
        self,
        session_context: contextvars.Context,
        *,
        manager: MemoryManager = memory_manager,
        extractor: Callable[[str], list[CapturedMemory]] = extract_memories,
        retry_initial_delay: float = 0.2,
        retry_max_delay: float = 5.0,
    ) -> None:
        self._context = session_context
        self._manager = manager
        self._extractor = extractor
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._seen_ids: dict[str, None] = {}
        self._worker: asyncio.Task[None] | None = None
        self._retry_initial_delay = retry_initial_delay
        self._retry_max_delay = retry_max_delay
        self._closed = False
        self._busy = False
        self.user_uuid = session_context.run(get_session_user_uuid)
        if self.user_uuid is None:
            raise RuntimeError(
                "SessionMemory needs the session's context with the session user set; "
                "create it after set_session_user(...)"
            )
        self.stored_count = 0

    @classmethod
    def for_current_session(cls, **kwargs: object) -> SessionMemory:
        return cls(contextvars.copy_context(), **kwargs)  # type: ignore[arg-type]

    def context_copy(self) -> contextvars.Context:
        """A fresh copy of the session's context, to run session work in."""
        return self._context.copy()

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (1 if self._busy else 0)

    def capture(self, text: str, *, message_id: str | None = None) -> None:
        """Queue the memories of one user message; returns at once."""
        if self._closed:
            logger.warning("capture after the session's memory was closed; message dropped")
            return
        if message_id is not None:
            if message_id in self._seen_ids:
                return
            self._seen_ids[message_id] = None
            if len(self._seen_ids) > SEEN_IDS_LIMIT:
                self._seen_ids.pop(next(iter(self._seen_ids)))
        for memory in self._extractor(text):
            self._queue.put_nowait(_Pending(memory))
        self._ensure_worker()

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._drain(), name="session-memory-writer", context=self._context.copy()
            )

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            self._busy = True
            try:
                await self._write_with_retry(item.memory)
            finally:
                self._busy = False
                self._queue.task_done()

    async def _write_with_retry(self, memory: CapturedMemory) -> None:
        delay = self._retry_initial_delay
        failures = 0
        while True:
            try:
                await self._manager.astore(memory.category, memory.key, memory.value)
                self.stored_count += 1
                if failures:
                    logger.info("memory store reachable again after %d failed attempts", failures)
                return
            except StorageError as exc:
                failures += 1
                if failures == 1:
                    logger.warning("could not store a captured memory, will retry: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_delay)
            except ValueError as exc:
                logger.warning("captured memory rejected and dropped: %s", exc)
                return

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every captured memory is written; False if `timeout` ran out first."""
        if self._queue.empty() and not self._busy:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            logger.error(
                "%d captured memories were still pending after %.1fs", self.pending, timeout
            )
            return False

    async def aclose(self, timeout: float = 5.0) -> bool:
        """Flush, then stop the writer. Returns whether everything was written."""
        flushed = await self.flush(timeout)
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        return flushed
