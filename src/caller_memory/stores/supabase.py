"""The hosted store: the memory functions of a Supabase project, called through supabase-py.

Every operation is one RPC to a `memory_*` SQL function (see `supabase/migrations`), so each
is a single round trip and a single transaction on the server; the tables themselves are never
exposed. The functions run as the caller and are granted to `service_role` only, and row-level
security admits no other role: the worker needs the service-role key.

Why the details below matter on a voice turn:

- Only supabase-py's *async* client is used. Its sync client blocks the event loop, i.e. every
  session on the loop, for as long as the network takes.
- supabase-py's own PostgREST timeout is 120 s and it retries only GETs. Here every operation
  has one time budget (`SUPABASE_TIMEOUT_SECONDS`, default 2 s) that covers its retries too:
  transient failures (connection errors, timeouts, HTTP 5xx, 408, 429) are retried with a
  short jittered exponential backoff while the budget lasts, then `StorageUnavailableError`.
- An `httpx.AsyncClient` belongs to the event loop it first ran on, and this process has more
  than one loop (the sessions' loop and the sync bridge's loop thread; tests use many), so
  the client is created lazily, once per running loop.
- The API key is a secret: it is never logged nor put into an error message. HTTP/1.1 is used
  on purpose: under HTTP/2, `hpack` logs header values (the `apikey` header too) at DEBUG.
  Redirects are not followed, so the key is never sent to another host.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from postgrest.exceptions import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client
from supabase._async.client import SupabaseException
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from caller_memory.stores.base import (
    SearchVector,
    StoreStats,
    counts_store_errors,
    erasure_time,
    write_times,
)
from caller_memory.stores.errors import (
    StorageConfigError,
    StorageError,
    StorageSchemaError,
    StorageUnavailableError,
)
from caller_memory.stores.per_loop import PerLoop
from caller_memory.stores.rows import (
    candidate_from_row,
    fact_change_from_row,
    from_epoch,
    memory_from_row,
    profile_from_row,
    statements_json,
    stats_from_row,
    unembedded_from_row,
    user_uuid,
)
from caller_memory.stores.supabase_url import URL_ENV, check_supabase_url, key_role
from caller_memory.stores.vectors import HybridSearch, vector_literal
from caller_memory.text import cjk_pairs
from caller_memory.types import (
    Candidate,
    FactChange,
    Memory,
    MemoryDetails,
    MemoryKind,
    Profile,
    Unembedded,
    WriteOutcome,
)

if TYPE_CHECKING:
    from caller_memory.settings import MemorySettings

logger = logging.getLogger("caller_memory.stores.supabase")

SERVICE_KEY_ENV = "SUPABASE_SERVICE_ROLE_KEY"
ANON_KEY_ENV = "SUPABASE_ANON_KEY"
TIMEOUT_ENV = "SUPABASE_TIMEOUT_SECONDS"

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_MAX_ATTEMPTS = 4
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 0.5
REDACTED = "[redacted]"

SCHEMA = "caller_memory"
EXPOSE_SCHEMA_HINT = (
    f"add `{SCHEMA}` to the project's exposed schemas (Dashboard: Project Settings > Data API "
    "> Exposed schemas); the migrations keep the memory functions there, out of `public`"
)
DB_PUSH_HINT = (
    "apply the project's migrations to the Supabase database: run `supabase db push` "
    "(or paste supabase/migrations/*.sql into the SQL editor)"
)
SERVICE_KEY_HINT = (
    f"set {SERVICE_KEY_ENV} to the project's service_role key "
    "(Supabase dashboard: Project Settings > API)"
)

# SQLSTATEs and PostgREST codes that say "try again": connection trouble, lack of resources,
# a pool timeout, a serialization failure or deadlock, a cancelled statement.
_TRANSIENT_CODES = {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "40001", "40P01", "55P03"}
_TRANSIENT_CLASSES = ("08", "53", "57")
_TRANSIENT_STATUS = {408, 429}
# The function or a table it uses is missing, or its signature is not the one we call.
_SCHEMA_CODES = {"PGRST202", "PGRST203", "PGRST205", "42883", "42P01", "42703", "3F000"}

# The status of the HTTP response an attempt got, recorded by an httpx response hook:
# supabase-py's APIError carries the error body but not the status code.
_attempt_status: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "supabase_attempt_status", default=None
)


async def _record_status(response: httpx.Response) -> None:
    statuses = _attempt_status.get()
    if statuses is not None:
        statuses.append(response.status_code)


@dataclass(slots=True)
class _LoopClient:
    client: AsyncClient
    http: httpx.AsyncClient
    owns_http: bool


class _NoTimeLeft(stop_base):
    """Stop retrying when another attempt would start after the time budget is spent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.loop = loop
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.loop.time() + retry_state.upcoming_sleep >= self.deadline


class _Failure(Exception):
    """One failed attempt: whether to try again, and the error to raise if not."""

    def __init__(
        self, transient: bool, error: StorageError, cause: BaseException, summary: str
    ) -> None:
        super().__init__(summary)
        self.transient = transient
        self.error = error
        self.cause = cause
        self.summary = summary


@counts_store_errors
class SupabaseMemoryStore(HybridSearch):
    """`MemoryStore` on a Supabase project's `memory_*` functions (see module docstring)."""

    name = "supabase"

    def __init__(
        self,
        url: str,
        key: str,
        *,
        key_variable: str = SERVICE_KEY_ENV,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        schema: str = SCHEMA,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """`transport` (a fresh `httpx.AsyncClient` per loop uses it) or `http_client` (used
        as is, on whichever loop it belongs to, and not closed here) replace the network;
        tests use them. `key_variable` names where the key came from, for error messages.
        """
        if not key or not key.strip():
            raise StorageConfigError(f"{key_variable} is empty; {SERVICE_KEY_HINT}")
        if transport is not None and http_client is not None:
            raise ValueError("pass either transport or http_client, not both")
        self.url = check_supabase_url(url)
        self._key = key
        self.key_variable = key_variable
        self.key_role = key_role(key)
        self.timeout = float(timeout)
        self.max_attempts = max(1, int(max_attempts))
        self.schema = schema
        self._transport = transport
        self._http_client = http_client
        if http_client is not None:
            hooks = http_client.event_hooks
            if _record_status not in hooks["response"]:
                hooks["response"] = [*hooks["response"], _record_status]
                http_client.event_hooks = hooks
        self._clients: PerLoop[_LoopClient] = PerLoop(
            self._new_client, _close_client, what="Supabase client"
        )
        self._closed = False
        self._warn_if_not_service_role()

    @classmethod
    def from_settings(cls, settings: MemorySettings, **kwargs: Any) -> SupabaseMemoryStore:
        """The store the settings describe, as in the design summary: `SUPABASE_URL`, and the
        key `SUPABASE_SERVICE_ROLE_KEY`, or else `SUPABASE_ANON_KEY` (which row-level security
        refuses; a warning says so at start-up)."""
        if not settings.supabase_url:
            raise StorageConfigError(
                f"{URL_ENV} is not set: set it to the project URL, "
                "e.g. https://<project-ref>.supabase.co"
            )
        if settings.supabase_service_role_key is not None:
            key, variable = settings.supabase_service_role_key, SERVICE_KEY_ENV
        elif settings.supabase_anon_key is not None:
            key, variable = settings.supabase_anon_key, ANON_KEY_ENV
        else:
            raise StorageConfigError(
                f"{URL_ENV} is set but neither {SERVICE_KEY_ENV} nor {ANON_KEY_ENV} is; "
                f"{SERVICE_KEY_HINT}"
            )
        kwargs.setdefault("timeout", settings.supabase_timeout_seconds)
        return cls(settings.supabase_url, key.get_secret_value(), key_variable=variable, **kwargs)

    def __repr__(self) -> str:
        return (
            f"SupabaseMemoryStore(url={self.url!r}, key_variable={self.key_variable!r}, "
            f"key_role={self.key_role!r})"
        )

    def _warn_if_not_service_role(self) -> None:
        if self.key_role == "service_role":
            return
        if self.key_variable == ANON_KEY_ENV or self.key_role == "anon":
            source = (
                f"{ANON_KEY_ENV} (the anon key)"
                if self.key_variable == ANON_KEY_ENV
                else f"{self.key_variable}, which holds an anon key"
            )
            logger.warning(
                "Supabase memory store is using %s: row-level security will refuse the "
                "worker's memory reads and writes (nothing will be remembered). To fix: %s.",
                source,
                SERVICE_KEY_HINT,
            )

    # -- plumbing ---------------------------------------------------------------------------

    async def _client(self) -> AsyncClient:
        return (await self._clients.get()).client

    async def _new_client(self) -> _LoopClient:
        if self._http_client is not None:
            http, owns = self._http_client, False
        else:
            http = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
                http2=False,
                follow_redirects=False,
                event_hooks={"response": [_record_status]},
            )
            owns = True
        options = AsyncClientOptions(
            schema=self.schema,
            httpx_client=http,
            postgrest_client_retry=False,  # retries are ours, inside the time budget
            auto_refresh_token=False,
            persist_session=False,
        )
        try:
            client = await acreate_client(self.url, self._key, options=options)
        except SupabaseException as exc:
            if owns:
                await http.aclose()
            raise StorageConfigError(
                f"supabase-py rejected the settings ({self._redact(exc.message)}); "
                f"check {URL_ENV} and {self.key_variable}"
            ) from None
        return _LoopClient(client=client, http=http, owns_http=owns)

    def _redact(self, text: object) -> str:
        return str(text).replace(self._key, REDACTED)

    def _leaks_key(self, exc: BaseException | None) -> bool:
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if self._key in str(exc) or self._key in repr(exc):
                return True
            exc = exc.__cause__ or exc.__context__
        return False

    async def _rpc(self, fn: str, params: dict[str, Any]) -> Any:
        """Call `fn` with `params` as named arguments, retrying transient failures (tenacity:
        jittered exponential backoff, within the attempts and the one time budget).

        Retrying is safe for the database: every function is an upsert, a read, or a delete
        or flag flip that is a no-op the second time. Only a return value can be off after an
        ambiguous failure (a timeout after the server committed): a retried
        `complete_first_login` or `delete_*` then reports False/0 for work the first attempt
        did. That is the price of not failing a voice turn on one dropped response.
        """
        if self._closed:
            raise StorageUnavailableError("the Supabase memory store is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout

        def log_retry(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            logger.debug(
                "%s attempt %d failed (%s); retrying in %.0f ms",
                fn,
                state.attempt_number,
                failure.summary if isinstance(failure, _Failure) else failure,
                state.upcoming_sleep * 1000,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _Failure) and exc.transient),
            stop=stop_any(stop_after_attempt(self.max_attempts), _NoTimeLeft(loop, deadline)),
            wait=wait_random_exponential(multiplier=BACKOFF_BASE_S, max=BACKOFF_MAX_S),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return await retrying(self._attempt, fn, params, deadline)
        except _Failure as failure:
            if failure.transient:
                logger.debug("%s failed: %s", fn, failure.summary)
            raise failure.error from (None if self._leaks_key(failure.cause) else failure.cause)

    async def _attempt(self, fn: str, params: dict[str, Any], deadline: float) -> Any:
        """One call of `fn`; any failure raised as a `_Failure` saying whether to retry."""
        loop = asyncio.get_running_loop()
        statuses: list[int] = []
        token = _attempt_status.set(statuses)
        try:
            async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                client = await self._client()
                response = await client.rpc(fn, params).execute()
            return response.data
        except APIError as exc:
            raise self._api_failure(fn, exc, statuses[-1] if statuses else None) from None
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise _Failure(
                transient=True,
                error=StorageUnavailableError(
                    f"Supabase did not answer {fn} within the {self.timeout:g} s budget "
                    f"({TIMEOUT_ENV}); the project may be paused, overloaded or "
                    "unreachable from this worker"
                ),
                cause=exc,
                summary="timed out",
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Failure(
                transient=True,
                error=StorageUnavailableError(
                    f"cannot reach Supabase at {self.url} for {fn} "
                    f"({type(exc).__name__}: {self._redact(exc)}); check the network "
                    f"and {URL_ENV}"
                ),
                cause=exc,
                summary=type(exc).__name__,
            ) from None
        except httpx.HTTPError as exc:
            raise _Failure(
                transient=False,
                error=StorageError(
                    f"the request to Supabase for {fn} failed "
                    f"({type(exc).__name__}: {self._redact(exc)}); check {URL_ENV}"
                ),
                cause=exc,
                summary=type(exc).__name__,
            ) from None
        finally:
            _attempt_status.reset(token)

    def _api_failure(self, fn: str, exc: APIError, status: int | None) -> _Failure:
        code = exc.code or ""
        if status is None and code.isdigit():
            status = int(code)
        detail = self._redact(
            " ".join(str(part) for part in (code, exc.message) if part) or "no details"
        )
        summary = f"HTTP {status} {code}".strip() if status else code or "error"
        if (
            (status is not None and (status >= 500 or status in _TRANSIENT_STATUS))
            or code in _TRANSIENT_CODES
            or code[:2] in _TRANSIENT_CLASSES
        ):
            return _Failure(
                transient=True,
                error=StorageUnavailableError(
                    f"Supabase could not run {fn} right now ({summary}: {detail}); "
                    "the project may be restarting, paused or overloaded"
                ),
                cause=exc,
                summary=summary,
            )
        if status in (401, 403) or code == "42501" or code.startswith("PGRST3"):
            return _Failure(False, self._permission_error(fn, code, detail), exc, summary)
        if code == "PGRST106":  # the schema is not one of the exposed schemas
            return _Failure(
                transient=False,
                error=StorageSchemaError(
                    f"Supabase does not expose the `{self.schema}` schema to its API, so "
                    f"{fn} cannot be called ({detail}); {EXPOSE_SCHEMA_HINT}, and apply the "
                    f"migrations ({DB_PUSH_HINT})"
                ),
                cause=exc,
                summary=summary,
            )
        if code in _SCHEMA_CODES or status == 404:
            return _Failure(
                transient=False,
                error=StorageSchemaError(
                    f"the Supabase database has no usable {fn} function ({detail}); "
                    f"{DB_PUSH_HINT}. If the migrations are applied, check that {URL_ENV} "
                    "points at this project"
                ),
                cause=exc,
                summary=summary,
            )
        return _Failure(
            transient=False,
            error=StorageError(f"Supabase refused {fn} ({summary}: {detail})"),
            cause=exc,
            summary=summary,
        )

    def _permission_error(self, fn: str, code: str, detail: str) -> StorageConfigError:
        """A refusal is a configuration problem (the wrong key, missing grants), as in the
        Postgres backend; retrying cannot help, so it is not `StorageUnavailableError`."""
        if self.key_role == "anon" or (self.key_role is None and self.key_variable == ANON_KEY_ENV):
            return StorageConfigError(
                f"Supabase refused {fn} ({detail}): the worker is using the anon key "
                f"(from {self.key_variable}), and row-level security and the memory "
                f"functions' grants admit only the service role. To fix: {SERVICE_KEY_HINT}"
            )
        if code == "42501":
            return StorageConfigError(
                f"Supabase refused {fn} to the service role ({detail}): the memory "
                f"functions' grants are missing or out of date; {DB_PUSH_HINT}"
            )
        return StorageConfigError(
            f"Supabase did not accept the key in {self.key_variable} for {fn} ({detail}): "
            f"it is invalid, expired or from another project. To fix: {SERVICE_KEY_HINT}"
        )

    # -- profiles ---------------------------------------------------------------------------

    async def ensure_profile(self, user_id: str, identity: str | None) -> tuple[Profile, bool]:
        fn = "memory_ensure_profile"
        params = {"p_user_id": str(user_uuid(user_id)), "p_identity": identity}
        rows = _rows(fn, await self._rpc(fn, params))
        if len(rows) != 1:
            raise _shape_error(fn, f"{len(rows)} rows instead of one")
        return _profile(rows[0], fn), bool(rows[0].get("created"))

    async def get_profile(self, user_id: str) -> Profile | None:
        fn = "memory_get_profile"
        rows = _rows(fn, await self._rpc(fn, {"p_user_id": str(user_uuid(user_id))}))
        return _profile(rows[0], fn) if rows else None

    async def complete_first_login(self, user_id: str) -> bool:
        fn = "memory_complete_first_login"
        return _scalar(fn, await self._rpc(fn, {"p_user_id": str(user_uuid(user_id))}), bool)

    # -- memories ---------------------------------------------------------------------------

    async def upsert_memory(
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        identity: str | None = None,
        *,
        kind: str = MemoryKind.FACT,
        captured_at: float | None = None,
        session_started_at: float | None = None,
        max_utterances: int | None = None,
        details: MemoryDetails | None = None,
    ) -> WriteOutcome:
        captured_at, session_started_at = write_times(captured_at, session_started_at)
        extra = details or MemoryDetails()
        states = statements_json(extra.states)
        params = {
            "p_user_id": str(user_uuid(user_id)),
            "p_category": category,
            "p_key": key,
            "p_value": value,
            "p_identity": identity,
            "p_kind": str(kind),
            "p_captured_at": _iso(captured_at),
            "p_session_started_at": _iso(session_started_at),
            "p_max_utterances": max_utterances,
            "p_context": extra.context,
            "p_said_on": extra.said_on,
            "p_session_id": extra.session_id,
            "p_turn_index": extra.turn_index,
            "p_states": json.loads(states) if states is not None else None,
            "p_cjk_pairs": cjk_pairs(value, extra.context),
        }
        outcome = _scalar("memory_upsert", await self._rpc("memory_upsert", params), str)
        try:
            stored = WriteOutcome(outcome)
        except ValueError:
            raise _shape_error("memory_upsert", f"the outcome {outcome!r}") from None
        if stored == WriteOutcome.STORED and extra.embedding is not None and extra.embedding_model:
            await self.set_embedding(
                user_id, category, key, value, extra.embedding, extra.embedding_model
            )
        return stored

    async def get_memory(self, user_id: str, category: str, key: str) -> str | None:
        params = {"p_user_id": str(user_uuid(user_id)), "p_category": category, "p_key": key}
        result = await self._rpc("memory_get", params)
        return None if result is None else _scalar("memory_get", result, str)

    async def search_memories(self, user_id: str, query: str, limit: int) -> list[Memory]:
        return [c.memory for c in await self._lexical(user_id, query, limit)]

    async def _lexical(self, user_id: str, query: str, limit: int) -> list[Candidate]:
        params = {"p_user_id": str(user_uuid(user_id)), "p_query": query, "p_limit": limit}
        rows = _rows("memory_search", await self._rpc("memory_search", params))
        return [_candidate(row, "memory_search", lexical=bool(query.strip())) for row in rows]

    async def _dense(
        self, user_id: str, embedding: SearchVector, model: str, limit: int
    ) -> list[Candidate]:
        params = {
            "p_user_id": str(user_uuid(user_id)),
            "p_embedding": vector_literal(embedding),
            "p_model": model,
            "p_limit": limit,
        }
        fn = "memory_dense_search"
        return [_candidate(row, fn, dense=True) for row in _rows(fn, await self._rpc(fn, params))]

    async def set_embedding(
        self,
        user_id: str,
        category: str,
        key: str,
        value: str,
        embedding: Sequence[float],
        embedding_model: str,
    ) -> bool:
        params = {
            "p_user_id": str(user_uuid(user_id)),
            "p_category": category,
            "p_key": key,
            "p_value": value,
            "p_embedding": vector_literal(embedding),
            "p_model": embedding_model,
        }
        fn = "memory_set_embedding"
        return _scalar(fn, await self._rpc(fn, params), bool)

    async def unembedded(self, embedding_model: str, limit: int) -> list[Unembedded]:
        fn = "memory_unembedded"
        rows = _rows(fn, await self._rpc(fn, {"p_model": embedding_model, "p_limit": limit}))
        try:
            return [unembedded_from_row(r) for r in rows]
        except (KeyError, TypeError) as exc:
            raise _shape_error(fn, f"a malformed row ({exc!r})") from None

    async def prepare_caller(self, user_id: str, embedding_model: str) -> None:
        return None  # the database holds the vectors and their index

    async def has_vectors(self) -> bool:
        fn = "memory_has_vectors"
        return _scalar(fn, await self._rpc(fn, {}), bool)

    async def list_memories(self, user_id: str) -> list[Memory]:
        params = {"p_user_id": str(user_uuid(user_id))}
        rows = _rows("memory_list", await self._rpc("memory_list", params))
        return [_memory(row, "memory_list") for row in rows]

    async def list_history(self, user_id: str) -> list[FactChange]:
        params = {"p_user_id": str(user_uuid(user_id))}
        rows = _rows("memory_history_list", await self._rpc("memory_history_list", params))
        try:
            return [fact_change_from_row(row) for row in rows]
        except (KeyError, TypeError, ValueError) as exc:
            raise _shape_error("memory_history_list", f"a malformed row ({exc!r})") from None

    async def list_stating(self, user_id: str, category: str, key: str) -> list[Memory]:
        params = {"p_user_id": str(user_uuid(user_id)), "p_category": category, "p_key": key}
        rows = _rows("memory_stating", await self._rpc("memory_stating", params))
        return [_memory(row, "memory_stating") for row in rows]

    async def delete_memory(self, user_id: str, category: str, key: str) -> bool:
        params = {"p_user_id": str(user_uuid(user_id)), "p_category": category, "p_key": key}
        return _scalar("memory_delete", await self._rpc("memory_delete", params), bool)

    async def delete_user(self, user_id: str, *, erased_at: float | None = None) -> int:
        erased_at = erasure_time(erased_at)
        params = {"p_user_id": str(user_uuid(user_id)), "p_erased_at": _iso(erased_at)}
        return _scalar("memory_delete_user", await self._rpc("memory_delete_user", params), int)

    async def stats(self) -> StoreStats:
        fn = "memory_stats"
        rows = _rows(fn, await self._rpc(fn, {}))
        if len(rows) != 1:
            raise _shape_error(fn, f"{len(rows)} rows instead of one")
        try:
            return stats_from_row(rows[0])
        except (KeyError, TypeError, ValueError) as exc:
            raise _shape_error(fn, f"a malformed row ({exc!r})") from None

    async def aclose(self) -> None:
        """Close the HTTP clients this store opened, on whichever loop each belongs to.

        A client whose loop has already stopped is dropped: its connections went with it.
        """
        self._closed = True
        await self._clients.close_all(timeout=2.0)


async def _close_client(entry: _LoopClient) -> None:
    if entry.owns_http:
        await entry.http.aclose()


# -- encoding and decoding ------------------------------------------------------------------


def _shape_error(fn: str, what: str) -> StorageSchemaError:
    return StorageSchemaError(
        f"the Supabase function {fn} returned {what}, not what this worker expects; "
        f"the database functions are out of date: {DB_PUSH_HINT}"
    )


def _rows(fn: str, data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise _shape_error(fn, f"a {type(data).__name__}")
    return data


def _scalar(fn: str, data: Any, kind: type) -> Any:
    # bool is an int in Python; an integer result must not be accepted as a boolean or back.
    if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
        raise _shape_error(fn, f"a {type(data).__name__} instead of a {kind.__name__}")
    return data


def _iso(seconds: float) -> str:
    """A time as PostgREST passes it to a timestamptz argument (microseconds, UTC)."""
    return from_epoch(seconds).isoformat(timespec="microseconds")


def _profile(row: dict[str, Any], fn: str) -> Profile:
    try:
        return profile_from_row(row)
    except (KeyError, TypeError, ValueError) as exc:
        raise _shape_error(fn, f"a malformed row ({exc!r})") from None


def _candidate(
    row: dict[str, Any], fn: str, *, lexical: bool = False, dense: bool = False
) -> Candidate:
    try:
        return candidate_from_row(row, lexical=lexical, dense=dense)
    except (KeyError, TypeError, ValueError) as exc:
        raise _shape_error(fn, f"a malformed row ({exc!r})") from None


def _memory(row: dict[str, Any], fn: str) -> Memory:
    try:
        return memory_from_row(row)
    except (KeyError, TypeError, ValueError) as exc:
        raise _shape_error(fn, f"a malformed row ({exc!r})") from None
