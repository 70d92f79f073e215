"""Every setting of the memory layer in one object, read once and validated before anything starts.

`MemorySettings` reads the environment (variable names as in `.env.example`: `MEMORY_*`,
`SUPABASE_*`, `DATABASE_*`, `IDENTITY_NAMESPACE`) when it is created, and refuses to exist
with a malformed value: `MemorySettings.load()` turns pydantic's validation error into one
`SettingsError` whose message names the variable and says what to do. A `CallerMemory` is
built from one such object; nothing in the package reads the environment after that.

`load_environment()` is how the reference worker and the `caller-memory` command put `.env`
files into the environment first, the same way for all of them: `.env` (filling variables
that are unset or empty) then `.env.local` (overriding), from the working directory. A
variable set to an empty value counts as not set and is removed from the environment:
libraries read some variables themselves (the OpenAI client takes an empty `OPENAI_BASE_URL`
as its base URL), and an empty line copied from `.env.example` must mean "the default".
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from caller_memory.stores.database_url import DatabaseUrlError, parse_database_url

DEFAULT_DATA_DIR = Path("data")
DEFAULT_SQLITE_PATH = DEFAULT_DATA_DIR / "memories.sqlite3"
DEFAULT_SPOOL_DIR = DEFAULT_DATA_DIR / "spool"
DEFAULT_EMBEDDING_MODEL_DIR = DEFAULT_DATA_DIR / "models" / "multilingual-e5-small"
DEFAULT_LLM_EXTRACTOR_EVERY = 4
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})

Backend = Literal["sqlite", "postgres", "supabase"]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and says how to fix it."""


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(
        f"{name} must be 1 to switch it on or 0 to leave it off (true/false and yes/no work "
        "too); unset it for off"
    )


def _number(name: str, value: object, *, low: float, high: float, unit: str, example: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high:  # also refuses nan and inf
        raise ValueError(
            f"{name} must be a number of {unit} from {low:g} to {high:g}, e.g. {example} "
            f"(unset it for the default), got {value!r}"
        )
    return number


def _whole(name: str, value: object, *, low: int, high: int, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ValueError(
            f"{name} must be a whole number from {low} to {high} ({what}), got {value!r}"
        )
    return number


class MemorySettings(BaseSettings):
    """The memory layer's settings (see the module docstring and `.env.example`)."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True, extra="ignore", frozen=True, validate_default=False
    )

    # -- who a caller is -----------------------------------------------------------------------
    identity_namespace: uuid.UUID = Field(default=uuid.NAMESPACE_DNS, alias="IDENTITY_NAMESPACE")
    allow_default_user: bool = Field(default=False, alias="MEMORY_ALLOW_DEFAULT_USER")

    # -- where memories live -------------------------------------------------------------------
    supabase_url: str | None = Field(default=None, alias="SUPABASE_URL")
    supabase_service_role_key: SecretStr | None = Field(
        default=None, alias="SUPABASE_SERVICE_ROLE_KEY"
    )
    supabase_anon_key: SecretStr | None = Field(default=None, alias="SUPABASE_ANON_KEY")
    supabase_timeout_seconds: float = Field(default=2.0, alias="SUPABASE_TIMEOUT_SECONDS")
    database_url: SecretStr | None = Field(default=None, alias="DATABASE_URL")
    database_pool_min: int = Field(default=1, alias="DATABASE_POOL_MIN")
    database_pool_max: int = Field(default=10, alias="DATABASE_POOL_MAX")
    database_timeout_seconds: float = Field(default=2.0, alias="DATABASE_TIMEOUT_SECONDS")
    database_statement_cache_size: int | None = Field(
        default=None, alias="DATABASE_STATEMENT_CACHE_SIZE"
    )
    sqlite_path: Path = Field(default=DEFAULT_SQLITE_PATH, alias="MEMORY_SQLITE_PATH")

    # -- how memory behaves --------------------------------------------------------------------
    recall_budget_ms: float = Field(default=50.0, alias="MEMORY_RECALL_BUDGET_MS")
    max_utterances_per_caller: int = Field(default=20_000, alias="MEMORY_MAX_UTTERANCES_PER_CALLER")
    capture_queue_max: int = Field(default=256, alias="MEMORY_CAPTURE_QUEUE_MAX")
    spool_dir: Path = Field(default=DEFAULT_SPOOL_DIR, alias="MEMORY_SPOOL_DIR")
    llm_extractor: bool = Field(default=True, alias="MEMORY_LLM_EXTRACTOR")
    llm_extractor_every: int = Field(
        default=DEFAULT_LLM_EXTRACTOR_EVERY, alias="MEMORY_LLM_EXTRACTOR_EVERY"
    )

    # -- meaning (embeddings) ---------------------------------------------------------------------
    embeddings: Literal["local", "openai", "off"] = Field(
        default="local", alias="MEMORY_EMBEDDINGS"
    )
    embedding_model_dir: Path = Field(
        default=DEFAULT_EMBEDDING_MODEL_DIR, alias="MEMORY_EMBEDDING_MODEL_DIR"
    )
    embedding_threads: int = Field(default=1, alias="MEMORY_EMBEDDING_THREADS")
    openai_embedding_model: str = Field(
        default="text-embedding-3-small", alias="MEMORY_OPENAI_EMBEDDING_MODEL"
    )

    # -- validation, one message per variable ---------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # A variable set to spaces counts as not set, as an empty one does (`env_ignore_empty`):
        # a line copied from `.env.example` with a stray space must mean "the default".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    @field_validator("identity_namespace", mode="before")
    @classmethod
    def _namespace(cls, value: object) -> object:
        if isinstance(value, uuid.UUID):
            return value
        try:
            return uuid.UUID(str(value).strip())
        except ValueError:
            raise ValueError(
                "IDENTITY_NAMESPACE must be a UUID such as 6ba7b810-9dad-11d1-80b4-00c04fd430c8; "
                "unset it to use the default namespace (and never change it once callers exist)"
            ) from None

    @field_validator("allow_default_user", mode="before")
    @classmethod
    def _allow_default_user(cls, value: object) -> bool:
        return _flag("MEMORY_ALLOW_DEFAULT_USER", value)

    @field_validator("llm_extractor", mode="before")
    @classmethod
    def _llm_extractor(cls, value: object) -> bool:
        try:
            return _flag("MEMORY_LLM_EXTRACTOR", value)
        except ValueError:
            raise ValueError(
                "MEMORY_LLM_EXTRACTOR must be 0 to stop asking the session's LLM for the "
                "caller's facts (the capture rules alone then find them) or 1 to ask it "
                f"(true/false and yes/no work too); unset it for the default, on; got {value!r}"
            ) from None

    @field_validator("llm_extractor_every", mode="before")
    @classmethod
    def _llm_extractor_every(cls, value: object) -> int:
        return _whole(
            "MEMORY_LLM_EXTRACTOR_EVERY",
            value,
            low=1,
            high=100,
            what="caller messages the LLM reads per fact-extraction request; default "
            f"{DEFAULT_LLM_EXTRACTOR_EVERY}",
        )

    @field_validator("supabase_url", mode="before")
    @classmethod
    def _supabase_url(cls, value: object) -> object:
        from caller_memory.stores.errors import StorageConfigError
        from caller_memory.stores.supabase_url import check_supabase_url

        try:
            return check_supabase_url(str(value).strip())
        except StorageConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("supabase_service_role_key", "supabase_anon_key", mode="before")
    @classmethod
    def _supabase_key(cls, value: object) -> object:
        key = str(value).strip() if not isinstance(value, SecretStr) else value.get_secret_value()
        if any(c.isspace() or not c.isprintable() or not c.isascii() for c in key):
            raise ValueError(
                "a Supabase key is malformed (it contains spaces or non-ASCII characters); copy "
                "it again from Project Settings > API"
            )
        return key

    @field_validator("supabase_timeout_seconds", mode="before")
    @classmethod
    def _supabase_timeout(cls, value: object) -> float:
        return _number(
            "SUPABASE_TIMEOUT_SECONDS", value, low=0.05, high=600, unit="seconds", example="2"
        )

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value).strip()
        try:
            parse_database_url(raw)
        except DatabaseUrlError as exc:
            raise ValueError(str(exc)) from None
        return raw

    @field_validator("database_pool_min", mode="before")
    @classmethod
    def _pool_min(cls, value: object) -> int:
        return _whole("DATABASE_POOL_MIN", value, low=0, high=1000, what="idle connections kept")

    @field_validator("database_pool_max", mode="before")
    @classmethod
    def _pool_max(cls, value: object) -> int:
        return _whole("DATABASE_POOL_MAX", value, low=1, high=1000, what="connections at most")

    @field_validator("database_timeout_seconds", mode="before")
    @classmethod
    def _database_timeout(cls, value: object) -> float:
        return _number(
            "DATABASE_TIMEOUT_SECONDS", value, low=0.05, high=60, unit="seconds", example="2"
        )

    @field_validator("database_statement_cache_size", mode="before")
    @classmethod
    def _statement_cache(cls, value: object) -> int:
        return _whole(
            "DATABASE_STATEMENT_CACHE_SIZE",
            value,
            low=0,
            high=10_000,
            what="0 behind a transaction-mode pooler such as Supabase's port 6543",
        )

    @field_validator("recall_budget_ms", mode="before")
    @classmethod
    def _recall_budget(cls, value: object) -> float:
        return _number(
            "MEMORY_RECALL_BUDGET_MS", value, low=1, high=2000, unit="milliseconds", example="50"
        )

    @field_validator("max_utterances_per_caller", mode="before")
    @classmethod
    def _max_utterances(cls, value: object) -> int:
        return _whole(
            "MEMORY_MAX_UTTERANCES_PER_CALLER",
            value,
            low=0,
            high=100_000_000,
            what="a caller's own messages kept, the oldest dropped first; 0 for no limit",
        )

    @field_validator("capture_queue_max", mode="before")
    @classmethod
    def _capture_queue(cls, value: object) -> int:
        return _whole(
            "MEMORY_CAPTURE_QUEUE_MAX",
            value,
            low=1,
            high=1_000_000,
            what="captured memories one session may hold waiting for the store; default 256",
        )

    @field_validator("embeddings", mode="before")
    @classmethod
    def _embeddings(cls, value: object) -> str:
        text = str(value).strip().lower()
        if text not in {"local", "openai", "off"}:
            raise ValueError(
                "MEMORY_EMBEDDINGS must be local (the default: a multilingual model run in the "
                "worker, fetched by `python agent.py download-files`), openai (OpenAI's "
                f"embeddings, with OPENAI_API_KEY) or off (lexical search only), got {value!r}"
            )
        return text

    @field_validator("embedding_threads", mode="before")
    @classmethod
    def _embedding_threads(cls, value: object) -> int:
        return _whole(
            "MEMORY_EMBEDDING_THREADS",
            value,
            low=1,
            high=64,
            what="threads the local embedding model may use; 1 leaves the rest to the VAD",
        )

    @field_validator("sqlite_path", "spool_dir", "embedding_model_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _consistent(self) -> MemorySettings:
        if self.database_pool_min > self.database_pool_max:
            raise ValueError(
                "DATABASE_POOL_MIN must not be larger than DATABASE_POOL_MAX "
                f"(got {self.database_pool_min} and {self.database_pool_max})"
            )
        if self.supabase_url and not (self.supabase_service_role_key or self.supabase_anon_key):
            raise ValueError(
                "SUPABASE_URL is set but neither SUPABASE_SERVICE_ROLE_KEY nor SUPABASE_ANON_KEY "
                "is; set SUPABASE_SERVICE_ROLE_KEY (Project Settings > API)"
            )
        if self.backend == "sqlite" and self.sqlite_path.is_dir():
            raise ValueError(
                f"MEMORY_SQLITE_PATH names a directory ({self.sqlite_path}); give the path of "
                "the database file, e.g. data/memories.sqlite3 (unset it for that default)"
            )
        return self

    # -- what the settings select ----------------------------------------------------------------

    @classmethod
    def variable_names(cls) -> tuple[str, ...]:
        """The environment variables these settings read."""
        return tuple(f.alias for f in cls.model_fields.values() if f.alias)

    @property
    def backend(self) -> Backend:
        """`SUPABASE_URL` -> Supabase, else `DATABASE_URL` -> Postgres, else SQLite."""
        if self.supabase_url:
            return "supabase"
        if self.database_url is not None:
            return "postgres"
        return "sqlite"

    @property
    def recall_budget_s(self) -> float:
        return self.recall_budget_ms / 1000

    @property
    def max_utterances(self) -> int | None:
        """The per-caller utterance cap, None for no limit."""
        return self.max_utterances_per_caller or None

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """The settings the environment gives (with `overrides` by field name), or one
        `SettingsError` naming the first malformed variable."""
        # The fields are read by their variable names (aliases): an override given by field
        # name would be ignored without a word (`extra="ignore"`), so it is passed by alias.
        fields = cls.model_fields
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting named {', '.join(unknown)}")
        by_alias = {fields[name].alias or name: value for name, value in overrides.items()}
        try:
            return cls(**by_alias)
        except ValidationError as exc:
            raise settings_error(exc) from None


def settings_error(exc: ValidationError) -> SettingsError:
    """The first problem of a validation error as one message that names its variable."""
    error = exc.errors(include_url=False)[0]
    message = str(error.get("ctx", {}).get("error") or error["msg"])
    message = message.removeprefix("Value error, ")
    location = [str(part) for part in error.get("loc", ())]
    if location and not any(name in message for name in location):
        message = f"{location[0]}: {message}"
    return SettingsError(message)


# -- .env files ----------------------------------------------------------------------------------


def load_environment(directory: Path | None = None, *, names: tuple[str, ...] = ()) -> None:
    """Put `.env` then `.env.local` from `directory` (default: the working directory) into the
    environment, then remove every variable set to an empty value among those the files
    name, `names`, and the memory settings' own (see the module docstring)."""
    from dotenv import dotenv_values

    base = Path.cwd() if directory is None else directory
    seen = set(names) | set(MemorySettings.variable_names())
    for filename, override in ((".env", False), (".env.local", True)):
        path = base / filename
        if not path.is_file():
            continue
        for name, value in dotenv_values(path).items():
            seen.add(name)
            # an empty variable in the environment is "not set": the file's value applies
            if value is not None and (override or not os.environ.get(name, "").strip()):
                os.environ[name] = value
    for name in seen:
        if name in os.environ and not os.environ[name].strip():
            del os.environ[name]


# -- the process-wide default --------------------------------------------------------------------

_default: MemorySettings | None = None


def default_settings() -> MemorySettings:
    """The settings of the process-wide default memory (the design summary's module-level
    API: `memory_manager`, `set_session_user`): read from the environment once, on first use,
    unless `use_settings` installed others. Raises `SettingsError` for a malformed variable."""
    global _default
    if _default is None:
        _default = MemorySettings.load()
    return _default


def use_settings(settings: MemorySettings | None) -> MemorySettings | None:
    """Make `settings` the process's default settings (None: read the environment again on
    next use); returns the previous ones. `caller_memory.set_default_memory` calls it."""
    global _default
    previous, _default = _default, settings
    return previous
