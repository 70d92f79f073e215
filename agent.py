"""The reference worker: `python agent.py dev | start | console | download-files`.

A LiveKit voice companion built on the `caller_memory` package's public API, in the style of
LiveKit's agent starter. For each job: the caller's LiveKit identity -> `memory.attach`
(uuid5 -> ContextVars -> profile -> capture, recall, tools) -> `session.start`, pinned to the
caller. Importing this module needs no keys and starts nothing. It re-exports
`set_session_user`, `get_session_user_uuid`, `memory_manager` and `ensure_profile_exists`, so
the design summary's snippets run as written (from synchronous code; async code awaits
`caller_memory.profiles.aensure_profile_exists`).

`main` loads the settings as the `caller-memory` command does (`load_environment`), validates
every one of them, checks the spool directory and the store, and sets up logging: INFO by
default (`--log-level debug` or `LIVEKIT_LOG_LEVEL=debug` shows raw identities and what
callers say), livekit-agents' own records redacted above DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.agents.types import NOT_GIVEN
from livekit.plugins import openai, silero
from pydantic import Field, SecretStr, field_validator

from caller_memory import (
    CallerMemory,
    MemoryAgent,
    MemorySettings,
    SettingsError,
    StorageError,
    StorageUnavailableError,
    default_memory,
    get_session_livekit_identity,
    get_session_user_uuid,
    load_environment,
    memory_manager,
    set_default_memory,
    set_session_user,
)
from caller_memory.embeddings import EmbeddingSetupError, EmbeddingUnavailableError
from caller_memory.identity import validate_identity
from caller_memory.profiles import ensure_profile_exists
from caller_memory.spool import SpoolNotWritableError
from caller_memory.voice.console import show_agent_replies_outside_runs
from caller_memory.voice.log_privacy import (
    DEFAULT_LOG_LEVEL,
    install_console_noise_filter,
    install_identity_redaction,
)

__all__ = [
    "Companion",
    "ensure_profile_exists",
    "entrypoint",
    "get_session_livekit_identity",
    "get_session_user_uuid",
    "memory_manager",
    "server",
    "set_session_user",
]

logger = logging.getLogger("memory_worker")

STARTUP_STORE_CHECK_S = 5.0
# Where job processes leave their metrics for the endpoint to collect (LiveKit empties it).
DEFAULT_PROMETHEUS_DIR = Path("data/prometheus")
WORKER_COMMANDS = ("dev", "start", "connect", "console")
LIVEKIT_COMMANDS = ("dev", "start", "connect")
HELP_OPTIONS = ("--help", "-h")
# Variables the OpenAI client reads by itself: set to an empty value, they must count as unset.
OPENAI_CLIENT_VARIABLES = ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_WEBHOOK_SECRET")

PERSONA = """\
You are a warm, attentive voice companion. You talk with one caller at a time. Keep replies \
short and natural for speech: no lists, no markdown, no emojis."""


# -- settings --------------------------------------------------------------------------------


def _http_url(name: str, value: object, schemes: tuple[str, ...]) -> str:
    from urllib.parse import urlparse

    text = str(value).strip()
    try:
        parsed = urlparse(text)
        usable = parsed.scheme in schemes and bool(parsed.hostname)
    except ValueError:  # e.g. an unbalanced "[" in the host
        usable = False
    if not usable:
        raise ValueError(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
            f"e.g. {schemes[0]}://example.host"
        )
    return text


class WorkerSettings(MemorySettings):
    """The memory settings, and the worker's own: LiveKit, the models, the console caller."""

    livekit_url: str | None = Field(default=None, alias="LIVEKIT_URL")
    livekit_api_key: SecretStr | None = Field(default=None, alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr | None = Field(default=None, alias="LIVEKIT_API_SECRET")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    llm_model: str = Field(default="gpt-4.1-mini", alias="OPENAI_LLM_MODEL")
    stt_model: str = Field(default="gpt-4o-mini-transcribe", alias="OPENAI_STT_MODEL")
    tts_model: str = Field(default="gpt-4o-mini-tts", alias="OPENAI_TTS_MODEL")
    tts_voice: str = Field(default="ash", alias="OPENAI_TTS_VOICE")
    console_identity: str = Field(default="console-user", alias="CONSOLE_USER_IDENTITY")
    prometheus_port: int | None = Field(default=None, alias="PROMETHEUS_PORT")
    prometheus_multiproc_dir: Path = Field(
        default=DEFAULT_PROMETHEUS_DIR, alias="PROMETHEUS_MULTIPROC_DIR"
    )

    @field_validator("prometheus_port", mode="before")
    @classmethod
    def _prometheus_port(cls, value: object) -> int:
        try:
            port = int(str(value).strip())
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise ValueError(
                f"PROMETHEUS_PORT must be a port number from 1 to 65535 (got {value!r}); "
                "leave it empty for no metrics endpoint"
            )
        return port

    @field_validator("livekit_url", mode="before")
    @classmethod
    def _livekit_url(cls, value: object) -> str:
        return _http_url("LIVEKIT_URL", value, ("wss", "ws", "https", "http"))

    @field_validator("openai_base_url", mode="before")
    @classmethod
    def _openai_base_url(cls, value: object) -> str:
        return _http_url("OPENAI_BASE_URL", value, ("https", "http"))

    @field_validator("console_identity", mode="before")
    @classmethod
    def _console_identity(cls, value: object) -> str:
        try:
            return validate_identity(value)
        except ValueError as exc:
            raise ValueError(f"CONSOLE_USER_IDENTITY is not a usable identity: {exc}") from None

    def check_for(self, command: str) -> None:
        """Raise `SettingsError` if `command` cannot run with these settings."""

        def require(value: object, name: str, hint: str) -> None:
            if value is None:
                raise SettingsError(f"{name} is not set: {hint}")

        if command in LIVEKIT_COMMANDS:
            require(
                self.livekit_url,
                "LIVEKIT_URL",
                "set it to your LiveKit server, e.g. wss://<project>.livekit.cloud",
            )
            require(self.livekit_api_key, "LIVEKIT_API_KEY", "copy it from your project")
            require(self.livekit_api_secret, "LIVEKIT_API_SECRET", "copy it from your project")
        if command in WORKER_COMMANDS:
            require(
                self.openai_api_key,
                "OPENAI_API_KEY",
                "the worker's STT, LLM and TTS use it (any value works with a local "
                "OpenAI-compatible server set in OPENAI_BASE_URL)",
            )
        if command == "start" and self.allow_default_user:
            raise SettingsError(
                "MEMORY_ALLOW_DEFAULT_USER is on, which lets context-less code share one user's "
                "memories; it is for local scripts only and is refused in production. Unset it."
            )


def worker_settings() -> WorkerSettings:
    """The worker's settings from the environment, or one `SettingsError`."""
    return WorkerSettings.load()


# -- the agent ---------------------------------------------------------------------------------


class Companion(MemoryAgent):
    """The reference worker's persona: greets first (a first call is welcomed and asked for a
    name, a returning caller greeted by it) and remembers each caller (`MemoryAgent`)."""

    def __init__(self) -> None:
        super().__init__(instructions=PERSONA)

    async def on_enter(self) -> None:
        caller = self.caller
        if caller is None:
            self.session.generate_reply()
            return
        caller.greeted(self.session.generate_reply(instructions=caller.greeting_instructions()))


# -- the worker ----------------------------------------------------------------------------------


def prewarm(proc: JobProcess) -> None:
    """Runs in every process (or thread) that runs jobs, before its first job: keeps raw
    identities out of livekit-agents' log records above DEBUG there, loads the VAD once (the
    model ships inside livekit-plugins-silero) and the memory (read from the settings once;
    the design summary's module-level API uses the same one)."""
    install_identity_redaction()
    proc.userdata["vad"] = silero.VAD.load()
    settings = worker_settings()
    memory = CallerMemory.from_settings(settings)
    memory.prewarm()  # the embedding model, so the first caller turn does not load it
    set_default_memory(memory)
    proc.userdata["memory"] = memory
    proc.userdata["settings"] = settings


def build_session(proc: JobProcess) -> AgentSession[Any]:
    settings: WorkerSettings = proc.userdata["settings"]
    base_url = settings.openai_base_url or NOT_GIVEN
    session: AgentSession[Any] = AgentSession(
        stt=openai.STT(model=settings.stt_model, base_url=base_url),
        llm=openai.LLM(model=settings.llm_model, base_url=base_url),
        tts=openai.TTS(model=settings.tts_model, voice=settings.tts_voice, base_url=base_url),
        vad=proc.userdata["vad"],
    )
    show_agent_replies_outside_runs(session)  # the greeting, in `console --text`
    return session


def build_server(settings: WorkerSettings | None = None) -> AgentServer:
    """The worker's `AgentServer`: `prewarm` and `entrypoint`, logging at INFO unless
    `--log-level` / LIVEKIT_LOG_LEVEL say otherwise (livekit-agents' default for `dev` and
    `console` is DEBUG, which logs raw identities and everything callers say). With
    `PROMETHEUS_PORT` it also serves LiveKit's Prometheus endpoint (memory's metrics
    included) on that port, collecting from every job process through
    `PROMETHEUS_MULTIPROC_DIR` (which LiveKit empties at start-up)."""
    port = settings.prometheus_port if settings is not None else None
    built = AgentServer(
        log_level=DEFAULT_LOG_LEVEL,
        prometheus_port=port,
        prometheus_multiproc_dir=(
            str(settings.prometheus_multiproc_dir) if settings is not None and port else None
        ),
    )
    built.setup_fnc = prewarm
    built.rtc_session(entrypoint)
    return built


async def entrypoint(ctx: JobContext) -> None:
    ctx.log_context_fields = {"room": ctx.room.name}
    logger.info("[ENTRYPOINT] Starting session for room: %s", ctx.room.name)
    memory: CallerMemory = ctx.proc.userdata.get("memory") or default_memory()

    if ctx.is_fake_job():
        # `console` runs a fake job with no remote participant: waiting for one would hang.
        identity = ctx.proc.userdata["settings"].console_identity
        logger.info("[SESSION INIT] console mode: caller identity from CONSOLE_USER_IDENTITY")
    else:
        participant = await ctx.wait_for_participant()
        identity = participant.identity
        logger.info("[SESSION INIT] Participant SID: %s", participant.sid)

    session = build_session(ctx.proc)
    caller = await memory.attach(session, identity=identity)
    ctx.log_context_fields = {"room": ctx.room.name, "user_uuid": caller.user_uuid}
    logger.info("[SESSION INIT] Starting LiveKit session...")
    # In the room, the session is pinned to this participant and answers nobody else: the
    # voice the agent listens to and the user whose memories it reads are the same person.
    await session.start(agent=Companion(), room=ctx.room, **caller.start_options)
    logger.info("[SESSION INIT] ✓ Session started successfully")

    @session.on("close")
    def _end_job_when_session_closes(_event: object) -> None:
        # The session closes when its participant leaves; the job has nothing left to do.
        ctx.shutdown(reason="agent session closed")


# Built at import as LiveKit's starter does; `main` builds it again from the settings when
# they ask for a metrics endpoint.
server = build_server()


async def _check_memory(settings: WorkerSettings) -> None:
    memory = CallerMemory.from_settings(settings)
    try:
        await memory.check(timeout=STARTUP_STORE_CHECK_S)
    finally:
        await memory.aclose()


def main(argv: Sequence[str]) -> None:
    load_environment(names=WorkerSettings.variable_names() + OPENAI_CLIENT_VARIABLES)
    command = argv[1] if len(argv) > 1 else ""
    if any(arg in HELP_OPTIONS for arg in argv[1:]):
        cli.run_app(server)  # help needs no settings
        return
    try:
        settings = worker_settings()
        settings.check_for(command)
    except SettingsError as exc:
        sys.exit(f"agent.py {command}: {exc}")
    if command in WORKER_COMMANDS:
        try:
            asyncio.run(_check_memory(settings))
        except (SpoolNotWritableError, EmbeddingSetupError) as exc:
            # Where captures wait while the store is down: unwritable, they would be lost.
            # An embedding model that is missing or unusable does not fix itself either.
            sys.exit(f"agent.py {command}: {exc}")
        except EmbeddingUnavailableError as exc:
            # The embedding service may come back: search is by text until it does.
            logger.warning("agent.py %s: starting anyway, %s", command, exc)
        except StorageUnavailableError as exc:
            # It may come back: calls still work without memory, and what callers say is
            # spooled until it does.
            logger.warning("agent.py %s: starting anyway, %s", command, exc)
        except StorageError as exc:
            # Missing tables or bad settings do not fix themselves: say what to do, now.
            sys.exit(f"agent.py {command}: {exc}")
    install_identity_redaction()
    if command == "console":
        install_console_noise_filter()
    cli.run_app(build_server(settings) if settings.prometheus_port else server)


if __name__ == "__main__":
    main(sys.argv)
