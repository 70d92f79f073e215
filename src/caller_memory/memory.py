"""`CallerMemory`: one memory service, its settings, store, spool and outage log owned together.

Build one from settings (`CallerMemory.from_settings()`, which reads the environment once) or
from explicit objects (`CallerMemory(store=..., settings=...)`); two with two stores can live
in one process. `attach(session, identity=...)` is the one call a LiveKit agent needs per
caller: it sets the caller in the current context, makes sure their profile exists, wires
capture of every user message (spoken and typed), recall and the caller-control tools, and
flushes what is pending when the session closes (or the job shuts down).

The design summary's module-level API (`memory_manager`, `set_session_user`,
`ensure_profile_exists`) works on a process-wide default memory: `default_memory()`, built
from the environment on first use, or the one `set_default_memory` installed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from livekit import rtc
from livekit.agents import AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

from caller_memory import defaults
from caller_memory.capture.llm_extractor import LLMFactExtractor, ReplyWatch
from caller_memory.capture.writer import CaptureWriter
from caller_memory.context import set_session_user
from caller_memory.embeddings.base import Embedder, EmbeddingError, EmbeddingSetupError
from caller_memory.embeddings.factory import embedder_from_settings
from caller_memory.manager import MemoryManager
from caller_memory.profiles import aensure_profile_exists
from caller_memory.settings import MemorySettings, default_settings, use_settings
from caller_memory.spool import MemorySpool, check_spool_writable
from caller_memory.stores.base import MemoryStore
from caller_memory.stores.errors import StorageError
from caller_memory.stores.factory import describe_store, open_store
from caller_memory.stores.health import CHECK_TIMEOUT_S, check_store
from caller_memory.stores.outage import OutageLog
from caller_memory.types import Memory, Profile
from caller_memory.voice.caller import CallerSession
from caller_memory.voice.registry import register

logger = logging.getLogger("caller_memory")

PROFILE_TIMEOUT_S = 3.0
KNOWN_MEMORIES_TIMEOUT_S = 0.5
KNOWN_MEMORIES_LIMIT = 8
STARTUP_REPLAY_DELAY_S = 0.05


class CallerMemory:
    """Per-caller long-term memory for LiveKit agents (see module docstring)."""

    def __init__(
        self,
        *,
        store: MemoryStore,
        settings: MemorySettings | None = None,
        embedder: Embedder | Literal["settings"] | None = "settings",
    ) -> None:
        """`settings` default to the defaults of every setting (the environment is not read:
        use `from_settings` for that). `embedder` defaults to the one the settings select
        (`MEMORY_EMBEDDINGS`); when that cannot work (the local model's files are missing),
        search is lexical only, a warning says why, and `check()` refuses to pass."""
        self.settings = settings if settings is not None else MemorySettings.model_construct()
        self.store = store
        self.outage = OutageLog()
        self.embedding_problem: str | None = None
        if embedder == "settings":
            try:
                embedder = embedder_from_settings(self.settings)
            except EmbeddingSetupError as exc:
                embedder = None
                self.embedding_problem = str(exc)  # check() refuses; attach() warns once
        self.embedder = embedder
        self._search_noted = False
        # callers attached and not yet closed: `aclose` writes (or spools) what they hold
        self._open_callers: set[CallerSession] = set()
        self._preparing: set[asyncio.Task[None]] = set()
        self.manager = MemoryManager(
            store, max_utterances=self.settings.max_utterances, embedder=embedder
        )
        self.spool = MemorySpool(
            self.settings.spool_dir,
            manager=self.manager,
            outage=self.outage,
            namespace=self.settings.identity_namespace,
        )

    @classmethod
    def from_settings(cls, settings: MemorySettings | None = None) -> CallerMemory:
        """The memory `settings` describe (default: read from the environment, once): the
        store they select, the spool directory and limits they set. Nothing connects yet.
        Raises `SettingsError` for a malformed setting."""
        settings = settings if settings is not None else MemorySettings.load()
        return cls(store=open_store(settings), settings=settings)

    def describe(self) -> str:
        """Which store this memory uses, for an operator (never a secret)."""
        if self.settings.backend == "sqlite" and getattr(self.store, "path", None) is not None:
            return f"the SQLite file {self.store.path.resolve()}"  # type: ignore[attr-defined]
        return describe_store(self.settings)

    # -- one caller, one session ---------------------------------------------------------------

    async def attach(
        self,
        session: AgentSession[Any],
        *,
        identity: str,
        room: rtc.Room | None = None,
    ) -> CallerSession:
        """Attach the caller `identity` to `session`, before `session.start`.

        Run it in the task that serves this caller (a job's entrypoint): it sets the caller in
        the current context (identity -> uuid -> ContextVars), ensures their profile, reads
        what they told earlier calls, and starts capturing every user message of `session`.
        Pass `**caller.start_options` to `session.start` (with `room=`), and give the session
        a `MemoryAgent` (or an agent with `caller.tools`). `room` is not needed: it is
        accepted so that attaching reads like starting.
        """
        del room  # the session's room is passed to `session.start`; see `start_options`
        await self._note_how_search_works()
        # Memories spooled by a process that died (or by this one during an outage) are
        # replayed in the background, each as its own caller. The first delay must not be 0:
        # the replayer backs off by doubling it, and 0 doubled stays 0.
        self.spool.schedule_replay(first_delay=STARTUP_REPLAY_DELAY_S)
        user_uuid = set_session_user(identity, namespace=self.settings.identity_namespace)
        logger.info("[SESSION INIT] caller -> UUID: %s", user_uuid)
        logger.debug("[SESSION INIT] Identity: %s -> UUID: %s", identity, user_uuid)
        profile, profile_stored = await self._ensure_profile(user_uuid, identity)
        logger.info(
            "[SESSION INIT] ✓ Profile ready for user: %s (first login: %s)",
            user_uuid,
            profile.is_first_login,
        )
        known = await self._known_memories()
        context = contextvars.copy_context()
        # the caller's vectors are read while the session starts and greets, not in recall
        preparing = asyncio.get_running_loop().create_task(self._prepare(), context=context)
        self._preparing.add(preparing)
        preparing.add_done_callback(self._preparing.discard)
        writer = CaptureWriter(
            context,
            manager=self.manager,
            spool=self.spool,
            outage=self.outage,
            queue_max=self.settings.capture_queue_max,
            fact_extractor=self._fact_extractor(session),
            extract_every=self.settings.llm_extractor_every,
            # writes and LLM batches wait for the agent's reply to what made them
            replies=ReplyWatch(session),
        )
        caller = CallerSession(
            memory=self,
            session=session,
            identity=identity,
            user_uuid=user_uuid,
            profile=profile,
            profile_stored=profile_stored,
            known_memories=known,
            writer=writer,
            context=context,
        )
        register(caller)
        self._open_callers.add(caller)
        _follow_the_session(session, caller, on_closed=self._open_callers.discard)
        return caller

    def _fact_extractor(self, session: AgentSession[Any]) -> LLMFactExtractor | None:
        """The session's own LLM reads the caller's facts (`MEMORY_LLM_EXTRACTOR`, on by
        default); without one (no LLM, or a realtime model, which takes no text request)
        the capture rules alone find them."""
        if not self.settings.llm_extractor:
            return None
        if isinstance(session.llm, llm.LLM):
            return LLMFactExtractor(session.llm)
        logger.debug(
            "no LLM fact extraction in this session: its model (%s) takes no text request",
            type(session.llm).__name__,
        )
        return None

    async def _ensure_profile(self, user_uuid: str, identity: str) -> tuple[Profile, bool]:
        """The caller's profile, and whether it is in the store (False: the store did not
        answer, and the session goes on with a stand-in)."""
        try:
            profile = await asyncio.wait_for(
                aensure_profile_exists(user_uuid, original_identity=identity, store=self.store),
                PROFILE_TIMEOUT_S,
            )
            return profile, True
        except (TimeoutError, StorageError) as exc:
            # The caller still gets a conversation; the profile row is created by the first
            # memory write once the store is back.
            logger.error(
                "[SESSION INIT] profile store unavailable, continuing without it: %s", _why(exc)
            )
            return Profile(id=user_uuid, original_identity=None, is_first_login=False), False

    async def _prepare(self) -> None:
        try:
            await self.manager.aprepare()
        except StorageError as exc:
            logger.debug("could not prepare the caller's search by meaning: %s", exc)

    async def _known_memories(self) -> list[Memory]:
        try:
            return await asyncio.wait_for(
                self.manager.asearch("", limit=KNOWN_MEMORIES_LIMIT), KNOWN_MEMORIES_TIMEOUT_S
            )
        except (TimeoutError, StorageError) as exc:
            logger.warning("[SESSION INIT] could not load the caller's memories: %s", _why(exc))
            return []

    async def _note_how_search_works(self) -> None:
        """Once: say when search goes by text only although meaning was asked for."""
        if self._search_noted:
            return
        if self.embedder is None:
            self._search_noted = True
            if self.embedding_problem is not None:
                logger.warning("search is by text only: %s", self.embedding_problem)
            return
        self._search_noted = True
        try:
            if not await self.store.has_vectors():
                logger.warning(
                    "search is by text only: the %s store cannot search by meaning (install "
                    "pgvector in the database and apply the migrations again, or set "
                    "MEMORY_EMBEDDINGS=off to say so)",
                    self.store.name,
                )
        except StorageError as exc:
            self._search_noted = False  # the store is down: ask again next time
            logger.debug("could not ask the store whether it searches by meaning: %s", exc)

    # -- operating it --------------------------------------------------------------------------

    async def search_mode(self) -> str:
        """How this memory searches, for an operator: by meaning with which model, or by
        words only and why."""
        if self.embedder is None:
            return (
                "search by words only (MEMORY_EMBEDDINGS=off)"
                if self.embedding_problem is None
                else "search by words only (the embedding model cannot be used)"
            )
        if not await self.store.has_vectors():
            return "search by words only (the store has no pgvector)"
        return f"search by words and meaning ({self.embedder.name})"

    async def check(self, *, timeout: float = CHECK_TIMEOUT_S) -> None:
        """Raise (saying what to do) unless the spool directory can be written, the embedder
        the settings ask for can work, and the store answers: `SpoolNotWritableError`,
        `EmbeddingSetupError`, or a `StorageError`."""
        await asyncio.to_thread(check_spool_writable, self.settings.spool_dir)
        if self.embedding_problem is not None:
            raise EmbeddingSetupError(self.embedding_problem)
        if self.embedder is not None:
            await self.embedder.warm_up()
        await check_store(self.store, timeout=timeout)
        await self._note_how_search_works()

    def prewarm(self) -> None:
        """Load now what the first caller turn would otherwise wait for (the local embedding
        model, about a second): for a worker's prewarm, which may block. A model that cannot
        load is logged; search is then by text (`check()` refuses such settings earlier)."""
        if self.embedder is None:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="memory-prewarm") as pool:
            try:
                pool.submit(asyncio.run, self.embedder.warm_up()).result()
            except EmbeddingError as exc:
                logger.error("the embedding model could not be loaded; searching by text: %s", exc)

    async def aclose(self) -> None:
        """Write (or spool) what every attached caller still holds, then close the store (its
        connections or files) and the embedder: closing the memory loses nothing a session
        captured, also when its own close has not run (or not finished) yet."""
        callers = list(self._open_callers)
        if callers:
            results = await asyncio.gather(
                *(caller.aclose() for caller in callers), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    logger.error("a session's memories could not be written at close: %r", result)
            self._open_callers.clear()
        await self.store.aclose()
        if self.embedder is not None:
            await self.embedder.aclose()


def _why(exc: BaseException) -> str:
    # A timeout's own text is empty: say what it was (the store's errors say what to do).
    if isinstance(exc, TimeoutError) and not str(exc):
        return "the memory store did not answer in time (it is overloaded or unreachable)"
    return str(exc)


def _follow_the_session(
    session: AgentSession[Any],
    caller: CallerSession,
    *,
    on_closed: Callable[[CallerSession], None],
) -> None:
    """Every caller message of `session` (spoken or typed: typed chat and `session.run`
    bypass `on_user_turn_completed`) reaches `caller.caller_said`, once it is committed to
    the conversation (a discarded preemptive draft's message never is): that is where it is
    captured, and only there. Final transcripts start recall as early as the text is known.
    When the session closes, and when the job shuts down, what is pending is written. The
    handlers may run in room-callback tasks that have no caller in context: the caller's own
    work runs in the session's context regardless."""

    def on_item_added(event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            caller.caller_said(item.text_content or "", message_id=item.id)
        elif isinstance(item, llm.ChatMessage) and item.role == "assistant":
            caller.agent_said(item.text_content or "")

    def on_transcribed(event: UserInputTranscribedEvent) -> None:
        if event.is_final and event.transcript.strip():
            caller.start_recall(event.transcript)

    closing: set[asyncio.Task[bool]] = set()

    def on_close(_event: object) -> None:
        task = asyncio.get_running_loop().create_task(caller.aclose())
        closing.add(task)
        task.add_done_callback(closing.discard)
        task.add_done_callback(lambda _task: on_closed(caller))

    session.on("conversation_item_added", on_item_added)
    session.on("user_input_transcribed", on_transcribed)
    session.on("close", on_close)

    async def flush_at_shutdown() -> None:
        await caller.aclose()

    try:
        from livekit.agents import get_job_context

        get_job_context().add_shutdown_callback(flush_at_shutdown)
    except RuntimeError:
        pass  # not in a job (tests, scripts): the session's close flushes


# -- the process-wide default ----------------------------------------------------------------------

defaults.register_factory(lambda: CallerMemory.from_settings(default_settings()))


def default_memory() -> CallerMemory:
    """The process-wide memory the design summary's module-level API uses: built from
    `default_settings()` on first use, unless `set_default_memory` installed one."""
    return defaults.current()


def set_default_memory(memory: CallerMemory | None) -> CallerMemory | None:
    """Install `memory` as the process-wide default (None: build one from the environment on
    next use); its settings become the default settings too (the identity namespace, the
    opt-in default user). Returns the previous default (not closed)."""
    previous = defaults.replace(memory)
    use_settings(memory.settings if memory is not None else None)
    return previous


async def attach(
    session: AgentSession[Any], *, identity: str, room: rtc.Room | None = None
) -> CallerSession:
    """`default_memory().attach(...)`."""
    return await default_memory().attach(session, identity=identity, room=room)
