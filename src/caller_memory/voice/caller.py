"""One caller's memory in one `AgentSession`: what `CallerMemory.attach` hands back.

A `CallerSession` holds everything that belongs to the caller for the length of the session,
whichever agent is active (a handoff to another agent keeps it): who the caller is, their
profile and the memories known at the start, the background capture writer, the caller
turns counted so far, recall in flight, and whether the caller was erased meanwhile. Agents
reach it through their session (`caller_of(session)`), so nothing passes a user id around by
hand, and all memory work runs in the session's own context, where the caller is set: tools
and hooks can be reached from tasks that room callbacks started before the caller was known
(livekit-agents runs room callbacks in tasks of the room's own listener).

After an erasure during the session (the caller's own "forget everything", another
session's, or an operator's delete) it keeps every memory block out of what the agents send
to the LLM, recalls and captures nothing more, and the store refuses every later write of
this session. It learns of someone else's erasure from a write the store refused
(`CaptureWriter.on_erased`) or, before each LLM request, from the caller's profile being gone
(only an erasure deletes a profile).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from livekit.agents import AgentSession, ToolError, llm
from opentelemetry import context as otel_context

from caller_memory.capture.rule_based import extract_memories
from caller_memory.capture.writer import CaptureWriter
from caller_memory.profiles import aget_profile, amark_first_login_complete
from caller_memory.recall.block import memory_block, without_memories
from caller_memory.recall.recall import normal_text, recall, without_repeats
from caller_memory.stores.errors import StorageError
from caller_memory.telemetry import metrics
from caller_memory.telemetry.tracing import current_context
from caller_memory.types import Memory, Profile
from caller_memory.voice import registry
from caller_memory.voice.forget import forget_one
from caller_memory.voice.greeting import greeting_instructions
from caller_memory.voice.room import caller_start_options
from caller_memory.voice.tools import MEMORY_TOOLS

if TYPE_CHECKING:
    from caller_memory.memory import CallerMemory

logger = logging.getLogger("caller_memory.voice")

T = TypeVar("T")

STORE_DOWN_MESSAGE = (
    "The memory store is unavailable right now. Tell the caller you could not do it at the "
    "moment and offer to try again later."
)
ERASED_MESSAGE = (
    "Everything about this caller was deleted during this call; nothing more from it is "
    "remembered. Tell them so if it matters."
)
READ_BACK_LIMIT = 30
RECALL_CACHE_SIZE = 16
SEEN_MESSAGES_LIMIT = 512
SHUTDOWN_FLUSH_TIMEOUT_S = 5.0


class CallerSession:
    """The caller's memory in one session (see module docstring)."""

    def __init__(
        self,
        *,
        memory: CallerMemory,
        session: AgentSession[Any],
        identity: str,
        user_uuid: str,
        profile: Profile,
        profile_stored: bool,
        known_memories: list[Memory],
        writer: CaptureWriter,
        context: contextvars.Context,
    ) -> None:
        """Built by `CallerMemory.attach`. `profile_stored`: the profile was read from the
        store, so its absence later means the caller was erased; `context` is a copy of the
        session's context with the caller set."""
        self.memory = memory
        self.session = session
        self.identity = identity
        self.user_uuid = user_uuid
        self.profile = profile
        self.known_memories = list(known_memories)
        self.writer = writer
        self._context = context
        self._watch_erasure = profile_stored
        self._background: set[asyncio.Task[Any]] = set()
        # one recall per caller message, by its text (a draft and the final reply share it)
        self._recalls: dict[str, asyncio.Task[list[Memory]]] = {}
        self._known_keys = {(m.category, m.key) for m in known_memories}
        self.turns_with_memories = 0  # LLM requests that got a memory block
        # Caller messages (spoken or typed) that reached the session: a "forget everything"
        # request is confirmed only by a later one.
        self.caller_turns = 0
        self._agent_last_said: str | None = None
        self._counted_messages: dict[str, None] = {}
        self._forget_all_requested_at: int | None = None
        self._erasing = False
        self.erased = False
        self._closed: asyncio.Future[bool] | None = None
        writer.on_erased(self.memories_erased)

    # -- what the session needs from us ------------------------------------------------------

    @property
    def start_options(self) -> dict[str, Any]:
        """Keyword arguments for `session.start`: in a room, the session hears and answers
        this caller only (see `caller_memory.voice.room`)."""
        return caller_start_options(self.identity)

    @property
    def tools(self) -> list[llm.Tool]:
        """The caller-control tools, for an agent that does not use `MemoryAgent`:
        `Agent(instructions=..., tools=caller.tools)`."""
        return list(MEMORY_TOOLS)

    def context_copy(self) -> contextvars.Context:
        """A fresh copy of the session's context (the caller is set in it)."""
        return self._context.copy()

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, context=self._context.copy())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _in_session(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._spawn(coro)

    # -- greeting ------------------------------------------------------------------------------

    def greeting_instructions(self, **texts: str) -> str:
        """The instructions for the first reply of the call (see `voice.greeting`); `texts`
        replace the default wording (`first_call_text`, `returning_text`,
        `by_name_template`)."""
        return greeting_instructions(
            first_call=self.profile.is_first_login, known=self.known_memories, **texts
        )

    def greeted(self, handle: Any) -> None:
        """Call with the greeting's `SpeechHandle`: a first call counts as done only once
        its welcome was delivered (a caller who hung up before it is welcomed next time)."""
        if not self.profile.is_first_login:
            return

        def done(_handle: object) -> None:
            self._spawn(self._first_greeting_done())

        handle.add_done_callback(done)

    async def _first_greeting_done(self) -> None:
        try:
            await amark_first_login_complete(store=self.memory.store)
        except StorageError as exc:
            logger.warning("could not record the caller's first login: %s", exc)

    # -- each caller turn ----------------------------------------------------------------------

    def caller_said(self, text: str, *, message_id: str | None = None) -> None:
        """A caller message reached the session (spoken or typed: `attach` reports every
        one): count the turn and capture what it says, unless the caller was erased."""
        if message_id is not None:
            if message_id in self._counted_messages:
                return
            self._counted_messages[message_id] = None
            if len(self._counted_messages) > SEEN_MESSAGES_LIMIT:
                self._counted_messages.pop(next(iter(self._counted_messages)))
        self.caller_turns += 1
        if text and not self.erased:
            self.writer.capture(
                text,
                message_id=message_id,
                context=self._agent_last_said,
                turn_index=self.caller_turns,
            )

    def agent_said(self, text: str) -> None:
        """The agent's latest line in the conversation: kept with what the caller answers to
        it, so "yes, that one" is found later by what it answered."""
        self._agent_last_said = text.strip() or None

    def start_recall(self, text: str) -> asyncio.Task[list[Memory]] | None:
        """Start recall for a caller message as soon as its text is known (the final
        transcript; typed text on arrival); the same text shares one recall, so a preemptive
        draft, its retry and the final reply wait on the same search. None when there is
        nothing to recall (no words, or the caller was erased)."""
        if self.erased:
            return None
        key = normal_text(text)
        if not key:
            return None
        task = self._recalls.get(key)
        if task is None:
            # its span nests in the turn's trace that asked for it, not the session's start
            task = self._spawn(self._recall_turn(text, current_context()))
            self._recalls[key] = task
            while len(self._recalls) > RECALL_CACHE_SIZE:
                self._recalls.pop(next(iter(self._recalls)))
        return task

    async def _recall_turn(
        self, text: str, trace_context: otel_context.Context | None = None
    ) -> list[Memory]:
        """What the store holds that bears on `text`, within the recall budget ([] on a
        miss); and, at the same time, whether the caller was erased meanwhile (one indexed
        read: only an erasure deletes a profile)."""
        budget = self.memory.settings.recall_budget_s
        search = recall(
            text,
            manager=self.memory.manager,
            budget_s=budget,
            outage=self.memory.outage,
            trace_context=trace_context,
            backend=self.memory.store.name,
        )
        if not self._watch_erasure:
            return await search
        found, gone = await asyncio.gather(
            search, asyncio.wait_for(self._profile_is_gone(), budget), return_exceptions=True
        )
        if gone is True:
            self.memories_erased()
            return []
        if isinstance(gone, BaseException):
            logger.debug("erasure check skipped: %r", gone)
        if isinstance(found, BaseException):  # recall() itself never raises but on cancel
            raise found
        return found

    async def with_memories(self, chat_ctx: llm.ChatContext) -> llm.ChatContext:
        """The context to send to the LLM for one reply: `chat_ctx` with what the caller said
        before that bears on their last message, as a quoted memory block placed just before
        it; after an erasure, `chat_ctx` without any memory block. The block goes into this
        request only, never into the agent's context or the stored history, so LiveKit's
        preemptive draft stays valid and nothing is repeated in later turns. Memories already
        in the initial context (known at the start) or said in this conversation are left
        out. Never raises: a miss costs the reply its memories, not the reply."""
        try:
            index, text = _last_caller_message(chat_ctx)
            found: list[Memory] = []
            if text:
                task = self.start_recall(text)
                if task is not None:
                    found = await asyncio.shield(task)
            if self.erased:
                return without_memories(chat_ctx)
            said = [
                item.text_content or ""
                for item in chat_ctx.items
                if isinstance(item, llm.ChatMessage) and item.role == "user"
            ]
            memories = [
                m
                for m in without_repeats(found, said)
                if (m.category, m.key) not in self._known_keys
            ]
        except Exception:
            logger.exception("recall failed; replying without memories")
            return without_memories(chat_ctx) if self.erased else chat_ctx
        if not memories or index is None:
            if text:
                metrics.memories_injected(0)
            return chat_ctx
        metrics.memories_injected(len(memories))
        request = chat_ctx.copy()
        request.items.insert(
            index, llm.ChatMessage(role="system", content=[memory_block(memories)])
        )
        self.turns_with_memories += 1
        return request

    # -- erasure -------------------------------------------------------------------------------

    def memories_erased(self, *_: object) -> None:
        """The caller's data was erased during this session: stop using what was known.

        Sync, so it can be an erasure listener; the context edit is done in a task."""
        if self.erased:
            return
        self.erased = True
        self.known_memories = []
        self._forget_all_requested_at = None
        for task in self._recalls.values():
            task.cancel()
        self._recalls.clear()
        logger.info("caller %s erased during the session: memories dropped", self.user_uuid)
        self._spawn(self._drop_memories_from_context())

    async def _drop_memories_from_context(self) -> None:
        try:
            agent = self.session.current_agent
        except RuntimeError:  # no agent is running (the session ended)
            return
        try:
            await agent.update_chat_ctx(without_memories(agent.chat_ctx))
        except Exception:
            # the blocks still never reach the model: `with_memories` runs on every request
            logger.exception("could not drop the erased memories from the agent's context")

    async def _profile_is_gone(self) -> bool:
        return await aget_profile(store=self.memory.store) is None

    # -- the caller's control, by voice (the tools call these) ---------------------------------

    async def remember(self, fact: str) -> str:
        if self.erased:
            raise ToolError(ERASED_MESSAGE)
        memories = extract_memories(fact)
        if not memories:
            raise ToolError("There was nothing to remember in that; ask what exactly to keep.")

        async def store_all() -> None:
            for memory in memories:
                # refused by the store if the caller is erased after this session began
                await self.memory.manager.astore(
                    memory.category, memory.key, memory.value, kind=memory.kind
                )

        try:
            await self._in_session(store_all())
        except StorageError as exc:
            logger.warning("remember_this failed: %s", exc)
            raise ToolError(STORE_DOWN_MESSAGE) from None
        except ValueError as exc:
            raise ToolError(f"That could not be saved: {exc}") from None
        return "Saved. Confirm briefly to the caller."

    async def read_back(self) -> str:
        if self.erased:
            return ERASED_MESSAGE
        try:
            memories = await self._in_session(
                self.memory.manager.asearch("", limit=READ_BACK_LIMIT)
            )
        except StorageError as exc:
            logger.warning("what_do_you_know_about_me failed: %s", exc)
            raise ToolError(STORE_DOWN_MESSAGE) from None
        if not memories:
            return "You do not remember anything about this caller yet. Say so honestly."
        return (
            "Summarise this naturally for the caller; the keys let you forget an item later.\n"
            + memory_block(memories)
        )

    async def forget(self, what: str) -> str:
        try:
            forgotten = await self._in_session(forget_one(self.memory.manager, what))
        except StorageError as exc:
            logger.warning("forget_memory failed: %s", exc)
            raise ToolError(STORE_DOWN_MESSAGE) from None
        if not forgotten:
            raise ToolError(
                "Nothing matched that. Call what_do_you_know_about_me to see what is stored, "
                "then ask the caller which item to forget."
            )
        return "Forgotten: " + "; ".join(
            f"{'said' if m.is_utterance else m.key} ({m.value})" for m in forgotten
        )

    async def forget_everything(self, confirmed: bool) -> str:
        if self.erased or self._erasing:
            return ERASED_MESSAGE
        # The confirmation must come from the caller, i.e. from a caller turn later than the
        # one in which deletion was first asked for: a model reply cannot confirm its own
        # request (two calls in one reply are two calls in the same caller turn).
        requested_at = self._forget_all_requested_at
        if not (confirmed and requested_at is not None and self.caller_turns > requested_at):
            self._forget_all_requested_at = self.caller_turns
            return (
                "Not deleted yet. Ask the caller to confirm out loud that you should delete "
                "everything you remember about them; it cannot be undone. If they confirm, "
                "call this tool again with confirmed=true."
            )
        self._forget_all_requested_at = None
        self._erasing = True  # another call in the same reply must not ask again meanwhile
        try:
            deleted = await self._in_session(self.writer.forget_everything())
        except StorageError as exc:
            logger.warning("forget_everything_about_me failed: %s", exc)
            raise ToolError(STORE_DOWN_MESSAGE) from None
        finally:
            self._erasing = False
        self.memories_erased()
        return (
            f"Deleted the caller's profile and all {deleted} memories. Tell them it is done and "
            "that nothing more from this call will be remembered."
        )

    # -- the end of the session ----------------------------------------------------------------

    async def aclose(self, timeout: float = SHUTDOWN_FLUSH_TIMEOUT_S) -> bool:
        """Write (or spool) what the caller said that is still pending; True when nothing
        was left over or lost. Safe to call more than once (the session's close and the job's
        shutdown both do): later calls wait for the first."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
            try:
                result = await self.writer.aclose(timeout)
            except BaseException as exc:
                self._closed.set_exception(exc)
                raise
            self._closed.set_result(result)
            registry.forget(self.session)
        return await asyncio.shield(self._closed)


def _last_caller_message(chat_ctx: llm.ChatContext) -> tuple[int | None, str]:
    """The position and text of the caller's last message in `chat_ctx` (None, "" if none)."""
    for index in range(len(chat_ctx.items) - 1, -1, -1):
        item = chat_ctx.items[index]
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            return index, item.text_content or ""
    return None, ""
