"""The worker: `python agent.py dev | start | console | download-files`.

For each job: the caller's LiveKit identity -> deterministic uuid -> session ContextVars ->
profile -> AgentSession (see `voice_session.start_caller_session`). Importing this module
needs no keys and starts nothing. It re-exports `set_session_user`, `get_session_user_uuid`,
`memory_manager` and `ensure_profile_exists`, so the design summary's snippets run as written
(from synchronous code; async code awaits `profiles.aensure_profile_exists`).

`main` loads the settings as every operator tool does (`settings.load_environment`), checks
them, the spool directory and the store before the worker starts, and sets up logging: INFO
by default (`--log-level debug` or `LIVEKIT_LOG_LEVEL=debug` shows raw identities and what
callers say), livekit-agents' own records redacted above DEBUG (`worker_logging`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.agents.types import NOT_GIVEN
from livekit.plugins import openai, silero

from console_display import show_agent_replies_outside_runs
from memory_manager import memory_manager
from memory_spool import SpoolNotWritableError, check_spool_writable, spool_dir_from_env
from profiles import ensure_profile_exists
from session_context import get_session_livekit_identity, get_session_user_uuid, set_session_user
from settings import (
    SettingsError,
    check_settings_for,
    console_identity,
    load_environment,
    model_settings,
)
from storage.errors import StorageError, StorageUnavailableError
from store_check import check_store_from_env
from voice_session import start_caller_session
from worker_logging import (
    DEFAULT_LOG_LEVEL,
    install_console_noise_filter,
    install_identity_redaction,
)

__all__ = [
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
WORKER_COMMANDS = ("dev", "start", "connect", "console")
HELP_OPTIONS = ("--help", "-h")


def prewarm(proc: JobProcess) -> None:
    """Runs in every process (or thread) that runs jobs, before its first job: keeps raw
    identities out of livekit-agents' log records above DEBUG there, and loads the VAD once
    (the model ships inside livekit-plugins-silero)."""
    install_identity_redaction()
    proc.userdata["vad"] = silero.VAD.load()


def build_session(proc: JobProcess) -> AgentSession:
    models = model_settings()
    base_url = models.base_url or NOT_GIVEN
    session: AgentSession = AgentSession(
        stt=openai.STT(model=models.stt_model, base_url=base_url),
        llm=openai.LLM(model=models.llm_model, base_url=base_url),
        tts=openai.TTS(model=models.tts_model, voice=models.tts_voice, base_url=base_url),
        vad=proc.userdata["vad"],
    )
    show_agent_replies_outside_runs(session)  # the greeting, in `console --text`
    return session


# INFO unless `--log-level` / LIVEKIT_LOG_LEVEL say otherwise (livekit-agents' default for
# `dev` and `console` is DEBUG, which logs raw identities and everything callers say).
server = AgentServer(log_level=DEFAULT_LOG_LEVEL)
server.setup_fnc = prewarm


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    ctx.log_context_fields = {"room": ctx.room.name}
    logger.info("[ENTRYPOINT] Starting session for room: %s", ctx.room.name)

    if ctx.is_fake_job():
        # `console` runs a fake job with no remote participant: waiting for one would hang.
        identity = console_identity()
        logger.info("[SESSION INIT] console mode: caller identity from CONSOLE_USER_IDENTITY")
    else:
        participant = await ctx.wait_for_participant()
        identity = participant.identity
        logger.info("[SESSION INIT] Participant SID: %s", participant.sid)

    session = build_session(ctx.proc)
    # In the room, the session is pinned to this participant and answers nobody else
    # (`voice_session.caller_room_options`, no remote-session host): the voice the agent
    # listens to and the user whose memories it reads are the same person.
    caller = await start_caller_session(session, identity=identity, room=ctx.room)
    ctx.log_context_fields = {"room": ctx.room.name, "user_uuid": caller.user_uuid}

    async def flush_memories() -> None:
        await caller.aclose()

    ctx.add_shutdown_callback(flush_memories)

    @session.on("close")
    def _end_job_when_session_closes(_event: object) -> None:
        # The session closes when its participant leaves; the job has nothing left to do.
        ctx.shutdown(reason="agent session closed")


def main(argv: Sequence[str]) -> None:
    load_environment()
    command = argv[1] if len(argv) > 1 else ""
    if any(arg in HELP_OPTIONS for arg in argv[1:]):
        cli.run_app(server)  # help needs no settings
        return
    try:
        check_settings_for(command)
    except SettingsError as exc:
        sys.exit(f"agent.py {command}: {exc}")
    if command in WORKER_COMMANDS:
        try:
            # Where captures wait while the store is down: unwritable, they would be lost.
            check_spool_writable(spool_dir_from_env())
        except SpoolNotWritableError as exc:
            sys.exit(f"agent.py {command}: {exc}")
        try:
            check_store_from_env(timeout=STARTUP_STORE_CHECK_S)
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
    cli.run_app(server)


if __name__ == "__main__":
    main(sys.argv)
