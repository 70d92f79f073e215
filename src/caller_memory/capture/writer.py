"""Capturing what one caller says, without ever making the reply wait for storage.

A `CaptureWriter` belongs to one session and holds a copy of that session's context (taken in
the entrypoint, after the session user was set). Captured messages go into a bounded queue
that a background task drains in that context, so:

- capture is a non-blocking call from the turn hook or from any event callback, including
  room callbacks that run in tasks started before the user was known;
- writes are attributed to the session's caller, whatever context the capture came from;
- every memory carries when it was captured and when this session began; the store decides
  each write by those times (last capture of a key wins; nothing this session heard is
  written after the caller was erased), so a spooled value replayed later never overwrites
  a newer one;
- a write the store refuses for being unavailable goes to the durable spool
  (`caller_memory.spool`), which replays it once the store is back. When the spool cannot take it
  either (disk full, read-only), the memory is lost, and that is said: an error naming the
  spool and the count, `lost_count`, and `aclose()` returning False;
- a flood (typed chat can be pasted faster than any store writes) fills the queue up to
  `MEMORY_CAPTURE_QUEUE_MAX` memories; beyond that new captures are dropped, counted
  (`dropped_count`) and logged once per burst;
- when the store answers that the caller was erased (an operator's `memory_admin delete`
  during the call, or another worker's forget), the session stops capturing, drops what it
  holds, and tells its erasure listeners (`on_erased`) once, so the agent can forget what it
  holds in its context too;
- with the session's LLM (`fact_extractor`), every caller message is also read by it, in
  batches written behind (`caller_memory.capture.llm_extractor`): never before the rules'
  memories of the message, never on the reply path;
- `aclose()` (called from the job's shutdown callback) waits for what is pending (the last
  LLM batch included, within the same time) and spools whatever could not be written in time.

What waits in the queue is the `caller_memory_capture_queue_depth` gauge, and what is dropped
from it is counted by reason (`caller_memory.telemetry.metrics`); each captured message is a
`caller_memory.capture` span with its counts.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from livekit.agents.utils import aio
from opentelemetry import trace

from caller_memory.capture.llm_extractor import (
    CallerMessage,
    FactExtractor,
    Replies,
    SessionFactExtraction,
    new_message_id,
)
from caller_memory.capture.rule_based import CapturedMemory, extract_memories
from caller_memory.context import (
    get_session_livekit_identity,
    get_session_started_at,
    get_session_user_uuid,
)
from caller_memory.manager import MemoryManager
from caller_memory.settings import DEFAULT_LLM_EXTRACTOR_EVERY
from caller_memory.spool import MemorySpool, SpoolNotWritableError, SpoolRecord, new_record
from caller_memory.stores.errors import StorageError
from caller_memory.stores.outage import OutageLog
from caller_memory.telemetry import metrics
from caller_memory.telemetry.tracing import memory_span, set_attributes
from caller_memory.types import MemoryDetails, MemoryKind, Statement, WriteOutcome

logger = logging.getLogger("caller_memory.capture")

SEEN_IDS_LIMIT = 512
# With the session's replies to watch, a message's memories are written once the agent has
# answered it (or after this long): embedding and storing them then never compete with the
# reply's first audio for the CPU. What arrives while the writer is busy is written right
# after, without waiting again; a closing session waits for nothing.
REPLY_WAIT_S = 5.0
CAPTURE_QUEUE_MAX_ENV = "MEMORY_CAPTURE_QUEUE_MAX"

ErasureListener = Callable[[], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class _Captured:
    memory: CapturedMemory
    captured_at: float
    details: MemoryDetails = field(default_factory=MemoryDetails)
    replies_before: int | None = None  # the agent's replies counted when it was said


class CaptureWriter:
    """Write-behind capture of one session's user messages (see module docstring)."""

    def __init__(
        self,
        session_context: contextvars.Context,
        *,
        manager: MemoryManager,
        spool: MemorySpool,
        outage: OutageLog,
        queue_max: int,
        extractor: Callable[[str], list[CapturedMemory]] = extract_memories,
        fact_extractor: FactExtractor | None = None,
        extract_every: int = DEFAULT_LLM_EXTRACTOR_EVERY,
        replies: Replies | None = None,
    ) -> None:
        """`session_context`: a copy of the session's context, with its caller set; the
        writer runs every write in it. `manager`, `spool` and `outage` are the owning
        memory's; `queue_max` bounds what waits for the store. `fact_extractor` (the
        session's LLM) reads the caller's messages `extract_every` at a time, each batch
        after the agent's reply to its last message (`replies`; without, at once)."""
        self._context = session_context
        self._manager = manager
        self._extractor = extractor
        self._spool = spool
        self._outage = outage
        self.queue_max = queue_max
        if self.queue_max < 1:
            raise ValueError("queue_max must be at least 1")
        self._queue: asyncio.Queue[_Captured] = asyncio.Queue()
        self._seen_ids: dict[str, None] = {}
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self._closed = False
        self._closing = asyncio.Event()  # set with `_closed`: stop waiting for replies
        self._replies = replies
        self._forgotten = False
        self._queue_full = False  # in a burst of dropped captures
        self._burst_dropped = 0
        self._erasure_listeners: list[ErasureListener] = []
        self._erasure_announced = False
        self._listener_tasks: set[asyncio.Task[None]] = set()
        user_uuid = session_context.run(get_session_user_uuid)
        identity = session_context.run(get_session_livekit_identity)
        if user_uuid is None or identity is None:
            raise RuntimeError(
                "CaptureWriter needs the session's context with the session user set; "
                "create it after set_session_user(...)"
            )
        self.user_uuid: str = user_uuid
        self._identity: str = identity
        # When this session began: the store refuses its writes if the caller is erased after
        # it (everything it heard was heard before the erasure).
        started = session_context.run(get_session_started_at)
        self.session_started_at: float = time.time() if started is None else started
        # names this conversation in what it stores (recall boosts a hit's neighbouring turns)
        self.session_id = uuid.uuid4().hex
        self.stored_count = 0
        self.spooled_count = 0
        self.stale_count = 0  # refused by the store: a later capture of the key is stored
        self.lost_count = 0  # neither the store nor the spool could keep them
        self.dropped_count = 0  # the queue was full
        self.facts: SessionFactExtraction | None = None
        if fact_extractor is not None:
            self.facts = SessionFactExtraction(
                fact_extractor,
                every=extract_every,
                context=session_context,
                manager=manager,
                write=self._write,
                settled=self.flush,
                replies=replies,
            )

    def context_copy(self) -> contextvars.Context:
        """A fresh copy of the session's context, to run session work in."""
        return self._context.copy()

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (1 if self._busy else 0)

    @property
    def forgotten(self) -> bool:
        """Whether the caller was erased (asked to be forgotten, or by an operator) during
        this session: nothing more of it is captured or written."""
        return self._forgotten

    # -- erasure ----------------------------------------------------------------------------

    def on_erased(self, listener: ErasureListener) -> None:
        """Call `listener` (a function, or a coroutine function run as a task in the session's
        context) once when the caller is erased during this session: by `forget_everything`,
        or when the store refuses a write because someone else erased them. Registered after
        that, it is called at once."""
        self._erasure_listeners.append(listener)
        if self._erasure_announced:
            self._call_listener(listener)

    def _announce_erasure(self) -> None:
        if self._erasure_announced:
            return
        self._erasure_announced = True
        for listener in list(self._erasure_listeners):
            self._call_listener(listener)

    def _call_listener(self, listener: ErasureListener) -> None:
        try:
            result = self._context.copy().run(listener)
        except Exception:
            logger.exception("an erasure listener of user %s failed", self.user_uuid)
            return
        if inspect.isawaitable(result):
            task = asyncio.get_running_loop().create_task(
                self._await_listener(result), context=self._context.copy()
            )
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_tasks.discard)

    async def _await_listener(self, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            logger.exception("an erasure listener of user %s failed", self.user_uuid)

    def _take(self) -> _Captured:
        """The next queued memory, now (the queue must not be empty)."""
        item = self._queue.get_nowait()
        metrics.capture_dequeued()
        return item

    def _drop_queue(self) -> None:
        dropped = 0
        while not self._queue.empty():
            self._take()
            self._queue.task_done()
            dropped += 1
        metrics.capture_dropped("erased", dropped)

    def _erased_by_someone_else(self) -> None:
        if self._forgotten:
            return
        self._forgotten = True
        self._closed = True
        self._closing.set()
        self._drop_queue()
        if self.facts is not None:
            self.facts.stop()
        logger.warning(
            "user %s was erased while this session was running; it stops capturing and "
            "writes nothing more of what it heard",
            self.user_uuid,
        )
        self._announce_erasure()

    # -- capturing --------------------------------------------------------------------------

    def capture(
        self,
        text: str,
        *,
        message_id: str | None = None,
        context: str | None = None,
        turn_index: int | None = None,
    ) -> None:
        """Queue the memories of one user message; returns at once. `context` is what was
        said just before (the agent's line the caller answered), `turn_index` the message's
        place in this session: both are kept with what the message yields."""
        if self._closed:
            logger.debug("capture after the session's memory was closed; message not kept")
            return
        if message_id is not None:
            if message_id in self._seen_ids:
                return
            self._seen_ids[message_id] = None
            if len(self._seen_ids) > SEEN_IDS_LIMIT:
                self._seen_ids.pop(next(iter(self._seen_ids)))
        with memory_span("capture", turn_index=turn_index) as span:
            self._capture(span, text, message_id=message_id, context=context, turn_index=turn_index)

    def _capture(
        self,
        span: trace.Span,
        text: str,
        *,
        message_id: str | None,
        context: str | None,
        turn_index: int | None,
    ) -> None:
        now = time.time()
        memories = self._extractor(text)
        states = tuple(
            Statement(m.category.value, m.key, m.value)
            for m in memories
            if m.kind == MemoryKind.FACT
        )
        details = MemoryDetails(context=context, session_id=self.session_id, turn_index=turn_index)
        items: list[_Captured] = [
            _Captured(
                m,
                now,
                replace(details, states=states) if m.kind == MemoryKind.UTTERANCE else details,
                self._replies.count if self._replies is not None else None,
            )
            for m in memories
        ]
        if not memories:
            logger.debug(
                "a message of user %s yields no memory (a question, small talk, or no words)",
                self.user_uuid,
            )
        if self.facts is not None and text.strip():
            # read by the LLM too, later: with what the rules found it states
            self.facts.add(
                CallerMessage(
                    message_id=message_id or new_message_id(),
                    text=text,
                    captured_at=now,
                    details=details,
                    utterance=next((m for m in memories if m.kind == MemoryKind.UTTERANCE), None),
                    states=states,
                )
            )
        set_attributes(
            span,
            memories=len(memories),
            facts=len(states),
            llm_extraction=self.facts is not None,
        )
        if not items:
            return
        if self._queue.qsize() + len(items) > self.queue_max:
            self._drop(items)
            set_attributes(span, dropped=len(items), queue_depth=self._queue.qsize())
            return
        if self._queue_full:
            self._queue_full = False
            logger.info(
                "the capture queue of user %s has room again; %d captured memories were "
                "dropped while it was full",
                self.user_uuid,
                self._burst_dropped,
            )
        for item in items:
            self._queue.put_nowait(item)
        metrics.capture_queued(len(items))
        set_attributes(span, queued=len(items), queue_depth=self._queue.qsize())
        self._ensure_worker()

    def _drop(self, items: list[_Captured]) -> None:
        memories = len(items)
        self.dropped_count += memories
        metrics.capture_dropped("queue_full", memories)
        if self._queue_full:
            self._burst_dropped += memories
            return
        self._queue_full = True
        self._burst_dropped = memories
        logger.warning(
            "the capture queue of user %s is full (%d memories waiting for the store, the "
            "%s limit); new captures are dropped until it drains (%d dropped in this session "
            "so far)",
            self.user_uuid,
            self._queue.qsize(),
            CAPTURE_QUEUE_MAX_ENV,
            self.dropped_count,
        )

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._drain(), name="session-memory-writer", context=self._context.copy()
            )

    async def _drain(self) -> None:
        while True:
            idle = self._queue.empty()
            item = await self._queue.get()
            self._busy = True  # from here on `flush` waits for this item
            metrics.capture_dequeued()
            try:
                if idle:
                    await self._after_reply(item.replies_before)
                await self._write(item.memory, item.captured_at, item.details)
            except Exception:
                logger.exception("unexpected error while storing a captured memory")
            finally:
                self._busy = False
                self._queue.task_done()

    async def _after_reply(self, replies_before: int | None) -> None:
        """Return once the agent answered the message (more than `replies_before` replies),
        after `REPLY_WAIT_S`, or at once when the session is closing or nothing is watched."""
        if self._replies is None or replies_before is None or self._closed:
            return
        answered = asyncio.ensure_future(self._replies.beyond(replies_before))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait(
                {answered, closing}, timeout=REPLY_WAIT_S, return_when="FIRST_COMPLETED"
            )
        finally:
            answered.cancel()
            closing.cancel()

    def _record(
        self, memory: CapturedMemory, captured_at: float, details: MemoryDetails | None = None
    ) -> SpoolRecord:
        return new_record(
            self._identity,
            self.user_uuid,
            memory.category.value,
            memory.key,
            memory.value,
            kind=memory.kind,
            captured_at=captured_at,
            session_started_at=self.session_started_at,
            details=details,
        )

    async def _write(
        self, memory: CapturedMemory, captured_at: float, details: MemoryDetails | None = None
    ) -> None:
        if self._forgotten:
            return  # e.g. the rest of a slow extraction that finished after the caller's ask
        try:
            outcome = await self._manager.astore(
                memory.category,
                memory.key,
                memory.value,
                kind=memory.kind,
                captured_at=captured_at,
                session_started_at=self.session_started_at,
                details=details,
            )
        except StorageError as exc:
            self._outage.failed("storing a captured memory", exc)
            await self._keep_in_spool([self._record(memory, captured_at, details)])
            return
        except ValueError as exc:
            logger.warning("captured memory rejected and dropped: %s", exc)
            return
        self._outage.succeeded()
        if outcome == WriteOutcome.STORED:
            self.stored_count += 1
        elif outcome == WriteOutcome.STALE:
            self.stale_count += 1
            logger.debug("a later capture of %s is stored already; this one is dropped", memory.key)
        elif outcome == WriteOutcome.ERASED:
            self._erased_by_someone_else()

    async def _keep_in_spool(self, records: list[SpoolRecord], *, replay: bool = True) -> int:
        """Spool `records`; returns how many were kept (the rest are lost, and said so)."""
        try:
            await self._spool.append(*records, replay=replay)
        except SpoolNotWritableError as exc:
            lost = len(records) - exc.kept
            self.spooled_count += exc.kept
            first = self.lost_count == 0
            self.lost_count += lost
            if first:
                logger.error(
                    "%d captured memories of user %s are lost: %s",
                    lost,
                    self.user_uuid,
                    exc,
                )
            else:
                logger.debug("%d more captured memories of user %s lost", lost, self.user_uuid)
            return exc.kept
        self.spooled_count += len(records)
        return len(records)

    async def forget_everything(self) -> int:
        """The caller asked to be forgotten: stop capturing for this session, drop what is
        queued or spooled for them, delete their profile and every memory (recording the
        erasure, so no writer brings any of it back), and tell the erasure listeners."""
        self._closed = True
        self._closing.set()
        self._forgotten = True
        self._drop_queue()
        if self.facts is not None:
            self.facts.stop()
        # A write already on its way finishes first (the store refuses it afterwards anyway).
        await self.flush()
        await self._spool.discard_user(self.user_uuid, self._identity)
        deleted = await self._manager.aforget_everything()
        self._announce_erasure()
        return deleted

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

        Returns True only when every memory captured in this session is in the store or the
        spool: False after a timeout, and when any was lost (the spool could not take it) or
        dropped (the queue was full).
        """
        self._closed = True
        self._closing.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        flushed = await self.flush(timeout)
        if self.facts is not None and not self._forgotten:
            # the last batch gets what is left of the time: messages it cannot read in time
            # keep the rules' facts (an LLM fact is not worth missing the shutdown window)
            await self.facts.aclose(max(0.0, deadline - loop.time()))
        leftovers: list[SpoolRecord] = []
        while not self._queue.empty():
            item = self._take()
            leftovers.append(self._record(item.memory, item.captured_at, item.details))
            self._queue.task_done()
        if self._worker is not None:
            await aio.cancel_and_wait(self._worker)
        if leftovers and not self._forgotten:
            kept = await self._keep_in_spool(leftovers, replay=False)
            if kept:
                logger.warning(
                    "%d captured memories could not be written before shutdown; spooled for replay",
                    kept,
                )
        if self.lost_count:
            logger.error(
                "%d captured memories of user %s were lost in this session: neither the store "
                "nor the spool (%s) could keep them",
                self.lost_count,
                self.user_uuid,
                self._spool.directory,
            )
        if self._queue_full:
            logger.info(
                "%d captured memories of user %s were dropped at the end of the session (the "
                "capture queue was full)",
                self._burst_dropped,
                self.user_uuid,
            )
        return flushed and not self.lost_count and not self.dropped_count
