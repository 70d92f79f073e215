"""Worker settings read from the environment, checked before anything starts.

Every variable is listed in `.env.example`. A missing or malformed one stops the command with
one message that names it, instead of a stack trace in the middle of a call. Secret values
are never echoed back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

from identity import validate_identity
from session_context import ALLOW_DEFAULT_USER_ENV, default_user_allowed

DEFAULT_CONSOLE_IDENTITY = "console-user"


class SettingsError(ValueError):
    """A required setting is missing or malformed; the message says which and how to fix."""


@dataclass(frozen=True, slots=True)
class ModelSettings:
    llm_model: str
    stt_model: str
    tts_model: str
    tts_voice: str
    base_url: str | None


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def model_settings() -> ModelSettings:
    return ModelSettings(
        llm_model=_env("OPENAI_LLM_MODEL") or "gpt-4.1-mini",
        stt_model=_env("OPENAI_STT_MODEL") or "gpt-4o-mini-transcribe",
        tts_model=_env("OPENAI_TTS_MODEL") or "gpt-4o-mini-tts",
        tts_voice=_env("OPENAI_TTS_VOICE") or "ash",
        base_url=_env("OPENAI_BASE_URL") or None,
    )


def console_identity() -> str:
    """The caller identity used by `python agent.py console` (no remote participant there)."""
    raw = os.environ.get("CONSOLE_USER_IDENTITY", "")
    identity = raw if raw.strip() else DEFAULT_CONSOLE_IDENTITY
    try:
        return validate_identity(identity)
    except ValueError as exc:
        raise SettingsError(f"CONSOLE_USER_IDENTITY is not a usable identity: {exc}") from None


def _require(name: str, hint: str) -> str:
    value = _env(name)
    if not value:
        raise SettingsError(f"{name} is not set: {hint}")
    return value


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> None:
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise SettingsError(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
            f"e.g. {schemes[0]}://example.host"
        )


def check_settings_for(command: str) -> None:
    """Raise `SettingsError` if `command` (dev, start, console, ...) cannot run as configured."""
    if command in {"dev", "start", "connect"}:
        url = _require(
            "LIVEKIT_URL", "set it to your LiveKit server, e.g. wss://<project>.livekit.cloud"
        )
        _check_url("LIVEKIT_URL", url, ("wss", "ws", "https", "http"))
        _require("LIVEKIT_API_KEY", "copy it from your LiveKit project's settings")
        _require("LIVEKIT_API_SECRET", "copy it from your LiveKit project's settings")
    if command in {"dev", "start", "connect", "console"}:
        _require(
            "OPENAI_API_KEY",
            "the worker's STT, LLM and TTS use it (any value works with a local "
            "OpenAI-compatible server set in OPENAI_BASE_URL)",
        )
        base_url = _env("OPENAI_BASE_URL")
        if base_url:
            _check_url("OPENAI_BASE_URL", base_url, ("https", "http"))
        if command == "console":
            console_identity()
    if command == "start" and default_user_allowed():
        raise SettingsError(
            f"{ALLOW_DEFAULT_USER_ENV} is on, which lets context-less code share one user's "
            "memories; it is for local scripts only and is refused in production. Unset it."
        )
    supabase_url = _env("SUPABASE_URL")
    if supabase_url:
        _check_url("SUPABASE_URL", supabase_url, ("https", "http"))
        if not (_env("SUPABASE_SERVICE_ROLE_KEY") or _env("SUPABASE_ANON_KEY")):
            raise SettingsError(
                "SUPABASE_URL is set but neither SUPABASE_SERVICE_ROLE_KEY nor SUPABASE_ANON_KEY "
                "is; set SUPABASE_SERVICE_ROLE_KEY (Project Settings > API)"
            )
    database_url = _env("DATABASE_URL")
    if database_url and not supabase_url:
        _check_url("DATABASE_URL", database_url, ("postgresql", "postgres"))
