"""Worker settings: loaded one way for every command, and checked before anything starts.

Every variable is listed in `.env.example`. `load_environment()` is how the worker
(`agent.py`) and the operator tools (`memory_admin.py`, `store_check.py`) read them, so all of
them act on the same store: `.env` then `.env.local` from the working directory (a variable
already in the environment wins over `.env`; `.env.local` wins over both), and a variable set
to an empty value counts as not set. That last rule matters beyond this project: libraries
read some variables themselves (the OpenAI client takes `OPENAI_BASE_URL` as its base URL even
when it is empty), so empty ones are removed from the environment.

`check_settings_for(command)` then validates every setting the command uses, and raises
`SettingsError` with one message that names the variable and says what to do, instead of a
stack trace in the middle of a call. Secret values are never echoed back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from database_url import DatabaseUrlError, parse_database_url
from identity import NAMESPACE_ENV, identity_namespace, validate_identity
from session_context import ALLOW_DEFAULT_USER_ENV, default_user_allowed

DEFAULT_CONSOLE_IDENTITY = "console-user"
LLM_EXTRACTOR_ENV = "MEMORY_LLM_EXTRACTOR"

WORKER_COMMANDS = frozenset({"dev", "start", "connect", "console"})
LIVEKIT_COMMANDS = frozenset({"dev", "start", "connect"})
OPERATOR_TOOLS = frozenset({"memory_admin", "store_check"})

# Every variable of `.env.example`, and those the OpenAI client reads by itself.
SETTINGS_VARIABLES = (
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_LLM_MODEL",
    "OPENAI_STT_MODEL",
    "OPENAI_TTS_MODEL",
    "OPENAI_TTS_VOICE",
    "CONSOLE_USER_IDENTITY",
    NAMESPACE_ENV,
    ALLOW_DEFAULT_USER_ENV,
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_ANON_KEY",
    "SUPABASE_TIMEOUT_SECONDS",
    "DATABASE_URL",
    "DATABASE_POOL_MIN",
    "DATABASE_POOL_MAX",
    "DATABASE_TIMEOUT_SECONDS",
    "DATABASE_STATEMENT_CACHE_SIZE",
    "MEMORY_SQLITE_PATH",
    "MEMORY_RECALL_BUDGET_MS",
    "MEMORY_MAX_UTTERANCES_PER_CALLER",
    "MEMORY_CAPTURE_QUEUE_MAX",
    "MEMORY_SPOOL_DIR",
    LLM_EXTRACTOR_ENV,
    "LIVEKIT_LOG_LEVEL",
)
OPENAI_CLIENT_VARIABLES = (
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_WEBHOOK_SECRET",
)
_FLAG_VALUES = frozenset({"1", "true", "yes", "0", "false", "no"})


class SettingsError(ValueError):
    """A required setting is missing or malformed; the message says which and how to fix."""


@dataclass(frozen=True, slots=True)
class ModelSettings:
    llm_model: str
    stt_model: str
    tts_model: str
    tts_voice: str
    base_url: str | None


def load_environment(directory: Path | None = None) -> None:
    """Load settings as the worker does, for the worker and every operator tool.

    `.env` (never overriding a variable the environment sets to a non-empty value) then
    `.env.local` (overriding) from `directory` (default: the working directory); then every
    variable of `.env.example`, of those files
    and of the OpenAI client that is set to an empty value is removed from the environment:
    empty means "not set", for this code and for the libraries that read the environment
    themselves."""
    from dotenv import dotenv_values

    base = Path.cwd() if directory is None else directory
    names = set(SETTINGS_VARIABLES) | set(OPENAI_CLIENT_VARIABLES)
    for filename, override in ((".env", False), (".env.local", True)):
        path = base / filename
        if not path.is_file():
            continue
        for name, value in dotenv_values(path).items():
            names.add(name)
            # an empty variable in the environment is "not set": the file's value applies
            if value is not None and (override or not os.environ.get(name, "").strip()):
                os.environ[name] = value
    for name in names:
        if name in os.environ and not os.environ[name].strip():
            del os.environ[name]


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
    try:
        parsed = urlparse(value)
        usable = parsed.scheme in schemes and bool(parsed.hostname)
    except ValueError:  # e.g. an unbalanced "[" in the host
        usable = False
    if not usable:
        raise SettingsError(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
            f"e.g. {schemes[0]}://example.host"
        )


def _check_parser(name: str, parse: Callable[[], object]) -> None:
    """Run the parser the code uses for `name`; its `ValueError` becomes a `SettingsError`."""
    try:
        parse()
    except ValueError as exc:
        message = str(exc)
        raise SettingsError(message if name in message else f"{name}: {message}") from None


def _check_flag(name: str) -> None:
    if _env(name) and _env(name).lower() not in _FLAG_VALUES:
        raise SettingsError(
            f"{name} must be 1 to switch it on or 0 to leave it off (true/false and yes/no "
            "work too); unset it for off"
        )


def _check_memory_settings() -> None:
    from memory_manager import max_utterances_from_env
    from memory_recall import recall_budget_seconds
    from session_memory import capture_queue_max_from_env

    _check_parser(NAMESPACE_ENV, identity_namespace)
    _check_parser("MEMORY_RECALL_BUDGET_MS", recall_budget_seconds)
    _check_parser("MEMORY_MAX_UTTERANCES_PER_CALLER", max_utterances_from_env)
    _check_parser("MEMORY_CAPTURE_QUEUE_MAX", capture_queue_max_from_env)
    _check_flag(LLM_EXTRACTOR_ENV)
    _check_flag(ALLOW_DEFAULT_USER_ENV)


def _check_store_settings() -> None:
    from storage.errors import StorageConfigError

    supabase_url = _env("SUPABASE_URL")
    database_url = _env("DATABASE_URL")
    if supabase_url:
        from storage.supabase_store import check_supabase_url, timeout_from_env

        _check_url("SUPABASE_URL", supabase_url, ("https", "http"))
        if not (_env("SUPABASE_SERVICE_ROLE_KEY") or _env("SUPABASE_ANON_KEY")):
            raise SettingsError(
                "SUPABASE_URL is set but neither SUPABASE_SERVICE_ROLE_KEY nor SUPABASE_ANON_KEY "
                "is; set SUPABASE_SERVICE_ROLE_KEY (Project Settings > API)"
            )
        try:
            check_supabase_url(supabase_url)
            timeout_from_env()
        except StorageConfigError as exc:
            raise SettingsError(str(exc)) from None
    elif database_url:
        try:
            parse_database_url(database_url)
        except DatabaseUrlError as exc:
            raise SettingsError(str(exc)) from None
        from storage.postgres_store import PostgresMemoryStore

        try:
            # Builds the store from the environment as the worker will (pool sizes, timeout,
            # statement cache); nothing connects until its first call.
            PostgresMemoryStore.from_env()
        except StorageConfigError as exc:
            message = str(exc)
            if "DATABASE_" not in message:  # e.g. the pool sizes contradict each other
                message = f"DATABASE_POOL_MIN / DATABASE_POOL_MAX: {message}"
            raise SettingsError(message) from None
    else:
        from storage import sqlite_path_from_env

        if sqlite_path_from_env().is_dir():
            raise SettingsError(
                "MEMORY_SQLITE_PATH names a directory; give the path of the database file, "
                "e.g. data/memories.sqlite3 (unset it for that default)"
            )


def check_settings_for(command: str) -> None:
    """Raise `SettingsError` if `command` cannot run as configured.

    `command` is a worker command (dev, start, connect, console, download-files, ...) or an
    operator tool (memory_admin, store_check). The memory and store settings are checked for
    every one of them; the LiveKit and OpenAI settings for the commands that use them."""
    if command in LIVEKIT_COMMANDS:
        url = _require(
            "LIVEKIT_URL", "set it to your LiveKit server, e.g. wss://<project>.livekit.cloud"
        )
        _check_url("LIVEKIT_URL", url, ("wss", "ws", "https", "http"))
        _require("LIVEKIT_API_KEY", "copy it from your LiveKit project's settings")
        _require("LIVEKIT_API_SECRET", "copy it from your LiveKit project's settings")
    if command in WORKER_COMMANDS:
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
    _check_memory_settings()
    _check_store_settings()
