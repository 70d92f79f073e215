"""Capturing what one caller says, without ever making the reply wait for storage.

A `SessionMemory` belongs to one session and holds a copy of that session's context (taken in
the entrypoint, after the session user was set). Captured messages go into a queue that a
background task drains in that context, so:

- capture is a non-blocking call from the turn hook or from any event callback, including
  room callbacks that run in tasks started before the user was known (NOTES.md);
- writes are attributed to the session's caller, whatever context the capture came from;
- a write the store refuses for being unavailable goes to the durable spool
  (`memory_spool`), which replays it once the store is back; while anything is spooled, new
  writes queue behind it so a newer value is never overwritten by an older one;
- `aclose()` (called from the job's shutdown callback) waits for what is pending and spools
  whatever could not be written in time.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from memory_capture import CapturedMemory, extract_memories
from memory_manager import MemoryManager, memory_manager
from memory_spool import MemorySpool, default_spool, new_record
from session_context import get_session_livekit_identity, get_session_user_uuid
from storage.errors import StorageError
from store_health import store_outage

logger = logging.getLogger("memory_worker.capture")

SEEN_IDS_LIMIT = 512

FactExtractor = Callable[[str], Awaitable[list[CapturedMemory]]]


@dataclass(frozen=True, slots=True)
class _ExtractLater:
    """A message for the optional (slow) fact extractor, run by the background writer."""

    text: str


class SessionMemory:
    """Write-behind capture of one session's user messages (see module docstring)."""

    def __init__(
        self,
        session_context: contextvars.Context,
        *,
        manager: MemoryManager = memory_manager,
        extractor: Callable[[str], list[CapturedMemory]] = extract_memories,
        spool: MemorySpool | None = None,
        fact_extractor: FactExtractor | None = None,
    ) -> None:
        self._context = session_context
        self._manager = manager
        self._extractor = extractor
        self._spool = spool if spool is not None else default_spool()
        self._fact_extractor = fact_extractor
        self._queue: asyncio.Queue[CapturedMemory | _ExtractLater] = asyncio.Queue()
        self._seen_ids: dict[str, None] = {}
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self._closed = False
        self._forgotten = False
        user_uuid = session_context.run(get_session_user_uuid)
        identity = session_context.run(get_session_livekit_identity)
        if user_uuid is None or identity is None:
            raise RuntimeError(
                "SessionMemory needs the session's context with the session user set; "
                "create it after set_session_user(...)"
            )
        self.user_uuid: str = user_uuid
        self._identity: str = identity
        self.stored_count = 0
        self.spooled_count = 0

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
            logger.debug("capture after the session's memory was closed; message not kept")
            return
        if message_id is not None:
            if message_id in self._seen_ids:
                return
            self._seen_ids[message_id] = None
            if len(self._seen_ids) > SEEN_IDS_LIMIT:
                self._seen_ids.pop(next(iter(self._seen_ids)))
        for memory in self._extractor(text):
            self._queue.put_nowait(memory)
        if self._fact_extractor is not None:
            self._queue.put_nowait(_ExtractLater(text))
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
                if isinstance(item, _ExtractLater):
                    assert self._fact_extractor is not None
                    for memory in await self._fact_extractor(item.text):
                        await self._write(memory)
                else:
                    await self._write(item)
            except Exception:
                logger.exception("unexpected error while storing a captured memory")
            finally:
                self._busy = False
                self._queue.task_done()

    def _record(self, memory: CapturedMemory):  # type: ignore[no-untyped-def]
        return new_record(
            self._identity, self.user_uuid, memory.category.value, memory.key, memory.value
        )

    async def _write(self, memory: CapturedMemory) -> None:
        if self._forgotten:
            return  # e.g. the rest of a slow extraction that finished after the caller's ask
        if self._spool.has_pending:
            await self._spool.append(self._record(memory))
            self.spooled_count += 1
            return
        try:
            await self._manager.astore(memory.category, memory.key, memory.value)
        except StorageError as exc:
            store_outage.failed("storing a captured memory", exc)
            await self._spool.append(self._record(memory))
            self.spooled_count += 1
            return
        except ValueError as exc:
            logger.warning("captured memory rejected and dropped: %s", exc)
            return
        store_outage.succeeded()
        self.stored_count += 1

    async def forget_everything(self) -> int:
        """The caller asked to be forgotten: stop capturing for this session, drop what is
        queued or spooled for them, and delete their profile and every memory."""
        self._closed = True
        self._forgotten = True
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        # A write already inside the store (or on its way to the spool) must land before the
        # deletion below, not after it.
        await self.flush()
        await self._spool.discard_user(self.user_uuid)
        return await self._manager.aforget_everything()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every captured memory is written or spooled; False on timeout."""
        if self._queue.empty() and not self._busy:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def aclose(self, timeout: float = 5.0) -> bool:
        """Flush within `timeout`, spool whatever is left, stop the writer.

        Returns True when nothing was left over (everything is in the store or the spool).
        """
        self._closed = True
        flushed = await self.flush(timeout)
        leftovers: list[CapturedMemory] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, CapturedMemory):  # unextracted messages are not worth the wait
                leftovers.append(item)
            self._queue.task_done()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if leftovers:
            await self._spool.append(*(self._record(m) for m in leftovers), replay=False)
            self.spooled_count += len(leftovers)
            logger.warning(
                "%d captured memories could not be written before shutdown; spooled for replay",
                len(leftovers),
            )
        return flushed
