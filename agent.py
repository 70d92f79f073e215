"""The worker: `python agent.py dev | start | console | download-files`.

For each job: the caller's LiveKit identity -> deterministic uuid -> session ContextVars ->
profile -> AgentSession (see `voice_session.start_caller_session`). Importing this module
needs no keys and starts nothing. It re-exports `set_session_user`, `get_session_user_uuid`
and `memory_manager`, so the design summary's snippets run as written.
"""

from __future__ import annotations

import logging
import sys

from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, cli, room_io
from livekit.agents.types import NOT_GIVEN
from livekit.plugins import openai, silero

from memory_manager import memory_manager
from session_context import get_session_livekit_identity, get_session_user_uuid, set_session_user
from settings import SettingsError, check_settings_for, console_identity, model_settings
from storage.errors import StorageError, StorageUnavailableError
from store_check import check_store_from_env
from voice_session import start_caller_session

__all__ = [
    "entrypoint",
    "get_session_livekit_identity",
    "get_session_user_uuid",
    "memory_manager",
    "server",
    "set_session_user",
]

logger = logging.getLogger("memory_worker")

STARTUP_STORE_CHECK_S = 5.0


def prewarm(proc: JobProcess) -> None:
    """Load the VAD once per process (the model ships inside livekit-plugins-silero)."""
    proc.userdata["vad"] = silero.VAD.load()


def build_session(proc: JobProcess) -> AgentSession:
    models = model_settings()
    base_url = models.base_url or NOT_GIVEN
    return AgentSession(
        stt=openai.STT(model=models.stt_model, base_url=base_url),
        llm=openai.LLM(model=models.llm_model, base_url=base_url),
        tts=openai.TTS(model=models.tts_model, voice=models.tts_voice, base_url=base_url),
        vad=proc.userdata["vad"],
    )


server = AgentServer()
server.setup_fnc = prewarm


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    ctx.log_context_fields = {"room": ctx.room.name}
    logger.info("[ENTRYPOINT] Starting session for room: %s", ctx.room.name)

    room_options: room_io.RoomOptions | None = None
    if ctx.is_fake_job():
        # `console` runs a fake job with no remote participant: waiting for one would hang.
        identity = console_identity()
        logger.info("[SESSION INIT] console mode: caller identity from CONSOLE_USER_IDENTITY")
    else:
        participant = await ctx.wait_for_participant()
        identity = participant.identity
        logger.info("[SESSION INIT] Participant SID: %s", participant.sid)
        # Pin the session to this participant: the voice the agent listens to and the user
        # whose memories it reads are the same person.
        room_options = room_io.RoomOptions(participant_identity=identity)

    session = build_session(ctx.proc)
    caller = await start_caller_session(
        session, identity=identity, room=ctx.room, room_options=room_options
    )
    ctx.log_context_fields = {"room": ctx.room.name, "user_uuid": caller.user_uuid}

    async def flush_memories() -> None:
        await caller.aclose()

    ctx.add_shutdown_callback(flush_memories)

    @session.on("close")
    def _end_job_when_session_closes(_event: object) -> None:
        # The session closes when its participant leaves; the job has nothing left to do.
        ctx.shutdown(reason="agent session closed")


def main(argv: list[str]) -> None:
    from dotenv import load_dotenv

    load_dotenv(".env")
    load_dotenv(".env.local", override=True)
    command = argv[1] if len(argv) > 1 else ""
    try:
        check_settings_for(command)
    except SettingsError as exc:
        sys.exit(f"agent.py {command}: {exc}")
    if command in {"dev", "start", "connect", "console"}:
        try:
            check_store_from_env(timeout=STARTUP_STORE_CHECK_S)
        except StorageUnavailableError as exc:
            # It may come back: calls still work without memory, and what callers say is
            # spooled until it does.
            logger.warning("agent.py %s: starting anyway, %s", command, exc)
        except StorageError as exc:
            # Missing tables or bad settings do not fix themselves: say what to do, now.
            sys.exit(f"agent.py {command}: {exc}")
    cli.run_app(server)


if __name__ == "__main__":
    main(sys.argv)
