"""`DATABASE_URL`: checked before anything connects, and never shown with a secret in it.

The Postgres store hands `DATABASE_URL` to asyncpg, which splits it with `urllib.parse`: the
host part ends at the first `/`, `?` or `#`, and the user name ends at the first `@` and `:`.
A password holding one of those characters unencoded is therefore cut in two, and a piece of
it becomes the host, the port or the database name, which then shows up in connection errors
and tracebacks. `parse_database_url` refuses such a URL (and a bad port, an unbracketed IPv6
address, a missing host) before anything connects, with a message that names the variable,
says what to do, and quotes nothing of the URL that could be a secret.

`redact_database_url` gives a form of any string (well-formed or not) fit for logs and
messages: everything that may be part of the password (up to the last `@`), and the values of
`password` and `sslpassword` parameters, become `***`. `database_url_secrets` lists the
secret strings a URL holds, in every spelling a library might echo (as written and decoded),
so that error texts from below can be scrubbed with `scrub_database_secrets`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

DATABASE_URL_ENV = "DATABASE_URL"
SCHEMES = ("postgresql", "postgres")
# Query parameters whose value is a secret (libpq / asyncpg names).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
REDACTED = "***"
EXAMPLE = "postgresql://user:password@host:5432/dbname"
ENCODING_HINT = (
    "percent-encode these characters in the user name and password: "
    "@ as %40, : as %3A, / as %2F, ? as %3F, # as %23, % as %25"
)

_IPV6_HOST = re.compile(r"\[([0-9A-Fa-f:.]+(?:%[^\]]+)?)\](?::(.*))?")
# `password=...` / `sslpassword=...` in a key=value connection string or a query
_SECRET_ASSIGNMENT = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('[^']*'|[^&\s]+)")


class DatabaseUrlError(ValueError):
    """`DATABASE_URL` cannot be used as written; the message says why and what to do, and
    holds nothing of the URL that could be a secret."""


@dataclass(frozen=True, slots=True)
class DatabaseHost:
    """One server of the URL: a host name, an IP address or a Unix socket directory."""

    host: str
    port: int | None  # None: the default (5432, or PGPORT)

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port is None else f"{shown}:{self.port}"


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """What a valid `DATABASE_URL` points at, without its secrets."""

    user: str | None
    hosts: tuple[DatabaseHost, ...]
    database: str | None

    def describe(self) -> str:
        """A one-line description for operators: servers, database and user, no secret."""
        where = ", ".join(str(h) for h in self.hosts)
        text = f"database {self.database or '(the user name)'} on {where}"
        return f"{text} as user {self.user}" if self.user else text


def _error(problem: str, variable: str) -> DatabaseUrlError:
    return DatabaseUrlError(f"{variable} {problem}")


def _split_scheme(url: str) -> tuple[str, str] | None:
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return None
    return scheme, rest


def _parse_port(raw: str, variable: str) -> int:
    # The raw text is never quoted back: in a misparsed URL it is a piece of the password.
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise _error(
            f"has a port that is not a number from 1 to 65535; write it as host:5432 "
            f"(if the password holds any of @ : / ? #, {ENCODING_HINT})",
            variable,
        )
    return int(raw)


def _parse_host_spec(spec: str, variable: str) -> DatabaseHost:
    if not spec:
        raise _error(f"has an empty host in its host list; write it as {EXAMPLE}", variable)
    if spec.startswith("["):
        match = _IPV6_HOST.fullmatch(spec)
        if match is None:
            raise _error(
                "has an IPv6 address that is not written as [address] or [address]:port, "
                "e.g. postgresql://user:password@[2001:db8::1]:5432/dbname",
                variable,
            )
        port = match.group(2)
        return DatabaseHost(match.group(1), None if port is None else _parse_port(port, variable))
    host, colon, port = spec.partition(":")
    if ":" in port:
        raise _error(
            "has an IPv6 address without brackets; write it as [address]:port, "
            "e.g. postgresql://user:password@[2001:db8::1]:5432/dbname",
            variable,
        )
    if not host:
        raise _error(f"has a port but no host; write it as {EXAMPLE}", variable)
    return DatabaseHost(unquote(host), _parse_port(port, variable) if colon else None)


def parse_database_url(url: str, *, variable: str = DATABASE_URL_ENV) -> DatabaseTarget:
    """Check `url` the way asyncpg will read it; raise `DatabaseUrlError` if it cannot work.

    Refused: another scheme; a fragment (`#`, in practice an unencoded `#` in a password); an
    `@` after the host part or twice in it (an unencoded `/`, `?` or `@` in a password); a
    port that is not 1-65535; an IPv6 address without brackets; no host at all (neither in
    the URL nor as `?host=`); a malformed query string.
    """
    text = url.strip()
    parts = _split_scheme(text)
    if parts is None or parts[0].lower() not in SCHEMES:
        raise _error(
            f"must be a PostgreSQL URL starting with postgresql:// or postgres://, e.g. {EXAMPLE}",
            variable,
        )
    if "#" in text:
        raise _error(f"contains '#', which ends a URL; {ENCODING_HINT}", variable)
    try:
        split = urlsplit(text)
    except ValueError:
        raise _error(
            f"cannot be read as a URL (an unbalanced '[' or ']'?); write it as {EXAMPLE}, "
            "with an IPv6 address as [address]",
            variable,
        ) from None
    netloc = split.netloc
    if "@" in split.path or ("@" not in netloc and "@" in split.query):
        raise _error(
            f"has its user name or password cut short by a '/' or '?'; {ENCODING_HINT}",
            variable,
        )
    if netloc.count("@") > 1:
        raise _error(f"has more than one '@' before the host; {ENCODING_HINT}", variable)
    userinfo, _, hostlist = netloc.rpartition("@")
    user = unquote(userinfo.partition(":")[0]) or None

    try:
        query = parse_qsl(split.query, keep_blank_values=True, strict_parsing=bool(split.query))
    except ValueError:
        raise _error(
            "has a query string that is not name=value pairs joined by '&'; "
            f"e.g. {EXAMPLE}?sslmode=require",
            variable,
        ) from None
    params = {name.lower(): value for name, value in query}

    hosts: list[DatabaseHost] = []
    if hostlist:
        hosts = [_parse_host_spec(spec, variable) for spec in hostlist.split(",")]
    elif params.get("host"):
        hosts = [DatabaseHost(h, None) for h in params["host"].split(",") if h]
    if not hosts:
        raise _error(
            f"names no database server; write it as {EXAMPLE} (for a Unix socket: "
            "postgresql://user@/dbname?host=/var/run/postgresql)",
            variable,
        )
    if "port" in params:
        ports = [_parse_port(p, variable) for p in params["port"].split(",")]
        if not hostlist:
            hosts = [DatabaseHost(h.host, ports[0] if len(ports) == 1 else None) for h in hosts]
    database = unquote(split.path.lstrip("/")) or params.get("dbname") or None
    return DatabaseTarget(
        user=user or params.get("user") or None, hosts=tuple(hosts), database=database
    )


def _redact_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        if sep and unquote(name).strip().lower() in SECRET_PARAMETERS:
            value = REDACTED
        pairs.append(f"{name}{sep}{value}")
    return "&".join(pairs)


def redact_database_url(url: str) -> str:
    """`url` with every part that may be a secret replaced by `***`; works on any string.

    Everything up to the last `@` after `://` may be password (it is whenever the password
    holds an unencoded `/`, `?`, `#` or `@`), so only the user name before the first `:` is
    kept of it. `password=` and `sslpassword=` values are replaced in the query, and in a
    string that is not a URL at all (a `key=value` connection string)."""
    parts = _split_scheme(url)
    if parts is None:
        text = url
        if "@" in text:
            text = f"{REDACTED}@{text.rpartition('@')[2]}"
        return _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
    scheme, rest = parts
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if "/" in user or "?" in user or "#" in user:
            user, colon = REDACTED, ""
        prefix = f"{scheme}://{user}{':' + REDACTED if colon else ''}@"
    else:
        prefix = f"{scheme}://"
    head, question, query = rest.partition("?")
    redacted = prefix + head + (question + _redact_query(query) if question else "")
    return _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, redacted)


def database_url_secrets(url: str) -> tuple[str, ...]:
    """Every secret `url` holds, as written and percent-decoded: the password (everything
    between the first `:` and the last `@`, which is all of it even when an unencoded
    character would make a URL parser cut it short) and the values of `password` /
    `sslpassword` parameters. Longest first, for scrubbing."""
    found: set[str] = set()
    parts = _split_scheme(url.strip())
    rest = parts[1] if parts is not None else url
    if "@" in rest:
        userinfo = rest.rpartition("@")[0]
        found.add(userinfo.partition(":")[2])
        if parts is None:  # not a URL: all of it before the "@" is redacted, so all is secret
            found.add(userinfo)
    for match in _SECRET_ASSIGNMENT.finditer(url):
        found.add(match.group(2).strip("'"))
    for value in list(found):
        found.add(unquote(value))
        found.add(unquote(value.replace("+", " ")))
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def scrub_database_secrets(text: str, url: str) -> str:
    """`text` (an error message, a log line) with every secret of `url` replaced by `***`."""
    for secret in database_url_secrets(url):
        text = text.replace(secret, REDACTED)
    return text
