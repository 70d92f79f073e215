"""A test fake of Supabase's REST endpoint (API gateway + PostgREST), for RPC calls only.

Nothing here may contact a real Supabase, and no PostgREST binary is available, so the tests
give supabase-py an `httpx` transport that answers `POST /rest/v1/rpc/<function>` the way
Supabase does, against the REAL throwaway test database:

- the gateway's check: an `apikey` header holding a valid anon or service_role key, else 401;
- PostgREST's: the HS256 JWT in `Authorization: Bearer` (verified with PyJWT; none means the
  anon role) picks the role; the call runs in one transaction after `SET LOCAL ROLE <role>`
  and with `request.jwt.claims` set, connected as `authenticator` like PostgREST;
- the JSON body's keys are the function's named arguments. The function is looked up in
  `pg_proc` like PostgREST's schema cache (no match: 404 `PGRST202`) and the arguments are
  typed with the function's own argument types through `json_to_record`, as PostgREST does;
- what comes back is what PostgREST sends: a JSON array of objects for set-returning
  functions, a JSON object for a composite, the JSON scalar for a scalar, 204 with no body for
  `void`; a Postgres error becomes `{"code","message","details","hint"}` with PostgREST's
  status for its SQLSTATE (42501 is 401 for anon, else 403); no database is 503 `PGRST000`.

It is deliberately small: no GET/HEAD RPC, no filters, no tables, no `Prefer` handling.
Anything else gets a 404 that says so. `FlakyTransport` and `HangingTransport` wrap or replace
it to inject gateway errors and hangs.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import jwt

TEST_JWT_SECRET = "memory-worker-test-jwt-secret-not-used-anywhere-real"
FAKE_SUPABASE_URL = "https://memory-test.supabase.invalid"
API_KEY_ROLES = ("anon", "service_role")
_RPC_PATH = re.compile(r"/rest/v1/rpc/([A-Za-z_][A-Za-z0-9_]*)")
_ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- JWTs (PyJWT) ---------------------------------------------------------------------------------


def mint_jwt(
    role: str, *, secret: str = TEST_JWT_SECRET, expires_in: float = 3600, **claims: Any
) -> str:
    """An HS256 token like the keys Supabase issues (`role`, `iss`, `iat`, `exp` claims)."""
    now = int(time.time())
    payload = {"iss": "supabase-test", "role": role, "iat": now, "exp": int(now + expires_in)}
    payload.update(claims)
    with warnings.catch_warnings():
        # Tests forge keys with made-up secrets, short ones too; the fake never accepts them.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm="HS256")


class JWTError(ValueError):
    """A token PostgREST refuses; the message is PostgREST's."""


def verify_jwt(token: str, secret: str) -> dict[str, Any]:
    """The claims of a valid, unexpired HS256 token signed with `secret`; else `JWTError`
    with the message PostgREST answers such a token with."""
    parts = token.count(".") + 1
    if parts != 3:
        raise JWTError(f"Expected 3 parts in JWT; got {parts}")
    try:
        # `exp` is checked when present (as PostgREST does), and nothing else is required.
        return jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})
    except jwt.ExpiredSignatureError:
        raise JWTError("JWT expired") from None
    except jwt.InvalidAlgorithmError:
        raise JWTError("Wrong or unsupported encoding algorithm") from None
    except jwt.InvalidTokenError:
        raise JWTError("JWT cryptographic operation failed") from None


# -- PostgREST's status codes -------------------------------------------------------------------


def postgrest_status(sqlstate: str, role: str, anon_role: str = "anon") -> int:
    """The HTTP status PostgREST answers a PostgreSQL error with (its documented table)."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "P0001": 400,
        "42883": 404,
        "42P01": 404,
        "42P17": 500,
    }
    if sqlstate == "42501":
        return 401 if role == anon_role else 403
    if sqlstate in exact:
        return exact[sqlstate]
    prefix = {
        "08": 503,
        "09": 500,
        "0L": 403,
        "0P": 403,
        "25": 500,
        "28": 403,
        "2D": 500,
        "38": 500,
        "39": 500,
        "3B": 500,
        "40": 500,
        "53": 503,
        "54": 500,
        "55": 500,
        "57": 500,
        "58": 500,
        "F0": 500,
        "HV": 500,
        "P0": 500,
        "XX": 500,
    }
    return prefix.get(sqlstate[:2], 400)


def _error(
    status: int,
    code: str | None,
    message: str,
    details: str | None = None,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {"code": code, "details": details, "hint": hint, "message": message}
    if code is None:  # the gateway's own errors carry no code
        body = {"message": message, "hint": hint} if hint else {"message": message}
    return _json_response(status, body, headers)


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"content-type": "application/json; charset=utf-8", **(headers or {})},
    )


# -- the fake ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RpcCall:
    """One request the fake answered: which function, as which role, with what status."""

    function: str
    role: str | None
    status: int


@dataclass(frozen=True, slots=True)
class _Function:
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]
    n_defaults: int
    returns_set: bool
    returns_void: bool
    returns_composite: bool

    def accepts(self, keys: set[str]) -> bool:
        required = set(self.arg_names[: len(self.arg_names) - self.n_defaults])
        return keys <= set(self.arg_names) and required <= keys


_LOOKUP_SQL = """
select coalesce(p.proargnames, '{}'::text[]) as all_names,
       coalesce(p.proargmodes::text[], '{}'::text[]) as all_modes,
       array(select format_type(t, null) from unnest(p.proargtypes) with ordinality as a(t, n)
             order by n) as in_types,
       p.pronargdefaults as n_defaults,
       p.proretset as returns_set,
       p.prorettype = 'void'::regtype as returns_void,
       (rt.typtype = 'c' or (p.prorettype = 'record'::regtype and p.proargmodes is not null))
           as returns_composite
from pg_proc as p
join pg_namespace as n on n.oid = p.pronamespace
join pg_type as rt on rt.oid = p.prorettype
where n.nspname = $1 and p.proname = $2 and p.prokind = 'f'
"""


class FakePostgrestTransport(httpx.AsyncBaseTransport):
    """Answers supabase-py's RPC requests like Supabase would, on the real test database.

    `dsn` should log in as `authenticator` (NOINHERIT, granted the API roles), as PostgREST
    does, so a request has exactly the rights of the role its token names. Like PostgREST's
    connection pool (`db-pool`), at most `pool_size` requests use the database at once per
    event loop; the others wait for a slot.
    """

    def __init__(
        self,
        dsn: str,
        *,
        jwt_secret: str = TEST_JWT_SECRET,
        db_schemas: tuple[str, ...] = ("public", "graphql_public"),
        anon_role: str = "anon",
        connect_timeout: float = 5.0,
        pool_size: int = 10,
    ) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self.jwt_secret = jwt_secret
        self.db_schemas = db_schemas
        self.anon_role = anon_role
        self.connect_timeout = connect_timeout
        self.calls: list[RpcCall] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        match = _RPC_PATH.fullmatch(request.url.path)
        if match is None or request.method != "POST":
            response = _error(
                404,
                "PGRST125",
                "Invalid path specified in request URL",
                details=(
                    "this test fake of PostgREST serves only POST /rest/v1/rpc/<function>; "
                    f"got {request.method} {request.url.path}"
                ),
            )
            self.calls.append(RpcCall(request.url.path, None, response.status_code))
            return response
        function = match.group(1)
        role: str | None = None
        response = self._check_api_key(request)
        if response is None:
            authenticated = self._role(request)
            if isinstance(authenticated, httpx.Response):
                response = authenticated
            else:
                role, claims = authenticated
                response = await self._rpc(request, function, role, claims)
        self.calls.append(RpcCall(function, role, response.status_code))
        return response

    # -- the gateway and authentication ------------------------------------------------------

    def _check_api_key(self, request: httpx.Request) -> httpx.Response | None:
        api_key = request.headers.get("apikey")
        if not api_key:
            return _error(
                401,
                None,
                "No API key found in request",
                hint="No `apikey` request header or url param was found.",
            )
        try:
            claims = verify_jwt(api_key, self.jwt_secret)
        except JWTError:
            claims = {}
        if claims.get("role") not in API_KEY_ROLES:
            return _error(
                401,
                None,
                "Invalid API key",
                hint="Double check your Supabase `anon` or `service_role` API key.",
            )
        return None

    def _role(self, request: httpx.Request) -> tuple[str, dict[str, Any]] | httpx.Response:
        auth = request.headers.get("authorization")
        if auth is None:
            return self.anon_role, {"role": self.anon_role}
        scheme, _, token = auth.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise JWTError("No suitable key or wrong key type")
            claims = verify_jwt(token.strip(), self.jwt_secret)
        except JWTError as exc:
            return _error(
                401,
                "PGRST301",
                str(exc),
                headers={
                    "www-authenticate": f'Bearer error="invalid_token", error_description="{exc}"'
                },
            )
        role = claims.get("role", self.anon_role)
        if not isinstance(role, str) or not _ROLE_NAME.fullmatch(role):
            return _error(401, "PGRST301", "The JWT role claim is not a role name")
        return role, claims

    # -- the call ----------------------------------------------------------------------------

    async def _rpc(
        self, request: httpx.Request, function: str, role: str, claims: dict[str, Any]
    ) -> httpx.Response:
        profile = request.headers.get("content-profile") or self.db_schemas[0]
        if profile not in self.db_schemas:
            return _error(
                406,
                "PGRST106",
                f"Invalid schema: {profile}",
                hint=f"Only the following schemas are exposed: {', '.join(self.db_schemas)}",
            )
        raw = await request.aread()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "PGRST102", "Empty or invalid json")

        loop = asyncio.get_running_loop()
        slots = self._slots.setdefault(loop, asyncio.Semaphore(self.pool_size))
        async with slots:
            return await self._run(profile, function, body, role, claims)

    async def _run(
        self, profile: str, function: str, body: dict[str, Any], role: str, claims: dict[str, Any]
    ) -> httpx.Response:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return _error(
                503,
                "PGRST000",
                "Could not connect with the database due to an incorrect db-uri or due to "
                "the PostgreSQL service not running.",
                details=str(exc),
            )
        try:
            return await self._call(conn, profile, function, body, role, claims)
        except asyncpg.PostgresError as exc:
            sqlstate = exc.sqlstate or "XX000"
            return _error(
                postgrest_status(sqlstate, role, self.anon_role),
                sqlstate,
                getattr(exc, "message", None) or str(exc),
                details=getattr(exc, "detail", None),
                hint=getattr(exc, "hint", None),
            )
        except (OSError, asyncpg.InterfaceError) as exc:
            return _error(
                503, "PGRST001", "Database client error. Retrying the connection.", details=str(exc)
            )
        finally:
            # terminate(), not close(): it cannot be cancelled half-way when the client gives
            # up on the request; an open transaction is rolled back by the server.
            conn.terminate()

    async def _call(
        self,
        conn: asyncpg.Connection,
        schema: str,
        function: str,
        body: dict[str, Any],
        role: str,
        claims: dict[str, Any],
    ) -> httpx.Response:
        candidates = [
            _function_from_row(row) for row in await conn.fetch(_LOOKUP_SQL, schema, function)
        ]
        keys = set(body)
        matches = [fn for fn in candidates if fn.accepts(keys)]
        if not matches:
            params = ", ".join(sorted(keys))
            return _error(
                404,
                "PGRST202",
                f"Could not find the function {schema}.{function}({params}) in the schema cache",
                details=(
                    f"Searched for the function {schema}.{function} with parameters {params} "
                    "or with a single unnamed json/jsonb parameter, but no matches were found "
                    "in the schema cache."
                ),
                hint=None,
            )
        if len(matches) > 1:
            return _error(
                300,
                "PGRST203",
                f"Could not choose the best candidate function between overloads of "
                f"{schema}.{function}",
            )
        fn = matches[0]
        names = [name for name in fn.arg_names if name in keys]
        types = dict(zip(fn.arg_names, fn.arg_types, strict=True))
        record = ", ".join(f"{_ident(n)} {types[n]}" for n in names)
        call_args = ", ".join(f"{_ident(n)} := _args.{_ident(n)}" for n in names)
        call = f"{_ident(schema)}.{_ident(function)}({call_args})"
        source = f"json_to_record($1::json) as _args({record})" if names else "(select 1) as _args"
        if fn.returns_set:
            sql = f"select coalesce(json_agg(_r), '[]')::text from {source}, lateral {call} as _r"
        elif fn.returns_composite:
            sql = f"select to_json(_r)::text from {source}, lateral {call} as _r"
        elif fn.returns_void:
            sql = f"select {call} from {source}"
        else:
            sql = f"select to_json({call})::text from {source}"

        async with conn.transaction():
            await conn.execute(f"set local role {_ident(role)}")
            await conn.execute(
                "select set_config('request.jwt.claims', $1, true), "
                "set_config('request.method', 'POST', true), "
                "set_config('request.path', $2, true)",
                json.dumps(claims),
                f"/rpc/{function}",
            )
            args = (json.dumps(body),) if names else ()
            result = await conn.fetchval(sql, *args)
        if fn.returns_void:
            return httpx.Response(204)
        return _json_response(200, (result if result is not None else "null").encode())


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _function_from_row(row: asyncpg.Record) -> _Function:
    in_types = tuple(row["in_types"])
    names: list[str]
    if row["all_modes"]:
        names = [
            name
            for name, mode in zip(row["all_names"], row["all_modes"], strict=True)
            if mode in ("i", "b", "v")
        ]
    else:
        names = list(row["all_names"][: len(in_types)])
    return _Function(
        arg_names=tuple(names),
        arg_types=in_types,
        n_defaults=row["n_defaults"],
        returns_set=row["returns_set"],
        returns_void=row["returns_void"],
        returns_composite=row["returns_composite"],
    )


# -- fault injection ------------------------------------------------------------------------------


@dataclass
class FlakyTransport(httpx.AsyncBaseTransport):
    """Answers the first `failures` requests with a gateway error, then forwards to `inner`.

    The default is what PostgREST answers while its database is unreachable (503 PGRST001);
    `status=520, content=b"error code: 520"` is Cloudflare's unknown-error page. With `error`
    set, the failing requests raise it instead (e.g. `httpx.ConnectError`), as a network
    failure does.
    """

    inner: httpx.AsyncBaseTransport
    failures: int
    status: int = 503
    content: bytes = json.dumps(
        {
            "code": "PGRST001",
            "details": "connection refused",
            "hint": None,
            "message": "Database client error. Retrying the connection.",
        }
    ).encode()
    content_type: str = "application/json; charset=utf-8"
    error: Exception | None = None
    requests: int = 0
    forwarded: int = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests <= self.failures:
            if self.error is not None:
                raise self.error
            return httpx.Response(
                self.status, content=self.content, headers={"content-type": self.content_type}
            )
        self.forwarded += 1
        return await self.inner.handle_async_request(request)


@dataclass
class HangingTransport(httpx.AsyncBaseTransport):
    """Never answers: a request waits until the client gives up on it (and is cancelled)."""

    started: int = 0
    cancelled: int = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")  # pragma: no cover
