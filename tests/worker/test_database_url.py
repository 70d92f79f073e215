"""`DATABASE_URL`: refused before anything connects when it cannot work, and no secret of it
in any message or log line, at start-up and on every capture.

The passwords below hold the characters that cut a URL short when they are not
percent-encoded (`#`, `/`, `?`, `@`). Each is made of distinctive pieces, and the tests look
for every piece: a URL parser that cut the password would put a piece into the host, the
port or the database name, and from there into error messages and tracebacks.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from caller_memory import CallerMemory, SettingsError
from caller_memory.stores.database_url import (
    DatabaseHost,
    DatabaseUrlError,
    database_url_secrets,
    parse_database_url,
    redact_database_url,
    scrub_database_secrets,
)
from caller_memory.testing import FakeScriptedLLM
from tests.session_harness import start_in_own_task, text_session

PROJECT_DIR = Path(__file__).resolve().parents[2]

PIECES = ("Zq7kv", "Kx9pw", "Wm4rt", "Vb8ny", "Tn6gd")
HASH_AND_SLASH = f"{PIECES[0]}#{PIECES[1]}/{PIECES[2]}"
QUESTION_AND_AT = f"{PIECES[3]}?{PIECES[4]}@{PIECES[0]}"
SSL_PASSWORD = "Qj5sslKeyPass"
SECRETS = (*PIECES, SSL_PASSWORD)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CLOSED = _closed_port()

# URLs that cannot work as written, and what the message must say.
MALFORMED = [
    pytest.param(
        f"postgresql://memory:{HASH_AND_SLASH}@127.0.0.1:{CLOSED}/memory",
        "contains '#'",
        id="hash-and-slash-in-password",
    ),
    pytest.param(
        f"postgresql://memory:{PIECES[0]}/{PIECES[1]}@127.0.0.1:{CLOSED}/memory",
        "cut short",
        id="slash-in-password",
    ),
    pytest.param(
        f"postgresql://memory:{QUESTION_AND_AT}@127.0.0.1:{CLOSED}/memory",
        "cut short",
        id="question-mark-in-password",
    ),
    pytest.param(
        f"postgresql://memory:{PIECES[2]}@{PIECES[3]}@127.0.0.1:{CLOSED}/memory",
        "more than one '@'",
        id="at-sign-in-password",
    ),
    pytest.param(f"postgresql://memory:{PIECES[0]}@127.0.0.1:54x2/memory", "port", id="bad-port"),
    pytest.param(f"postgresql://memory:{PIECES[0]}@db.example:0/memory", "port", id="port-0"),
    pytest.param(
        f"postgresql://memory:{PIECES[0]}@db.example:70000/memory", "port", id="port-too-big"
    ),
    pytest.param(
        f"postgresql://memory:{PIECES[0]}@::1:5432/memory", "without brackets", id="bare-ipv6"
    ),
    pytest.param(
        f"postgresql://memory:{PIECES[0]}@[::1:5432/memory", "unbalanced", id="unclosed-ipv6"
    ),
    pytest.param(f"postgresql://memory:{PIECES[0]}@[::1]:x/memory", "port", id="ipv6-bad-port"),
    pytest.param("postgres:///memory", "names no database server", id="no-host"),
    pytest.param(
        f"postgres://memory:{PIECES[0]}@/memory", "names no database server", id="no-host-user"
    ),
    pytest.param(
        f"mysql://memory:{PIECES[0]}@db.example/memory", "postgresql://", id="other-scheme"
    ),
    pytest.param(f"memory:{PIECES[0]}@db.example/memory", "postgresql://", id="no-scheme"),
    pytest.param(
        f"postgresql://memory:{PIECES[0]}@db.example/memory?sslmode",
        "query string",
        id="bad-query",
    ),
]


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, (secret, text)


@pytest.mark.parametrize(("url", "says"), MALFORMED)
def test_a_malformed_url_is_refused_naming_the_variable_and_no_secret(url: str, says: str) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        parse_database_url(url)
    message = str(caught.value)
    assert message.startswith("DATABASE_URL "), message
    assert says in message, message
    _assert_no_secret("".join(traceback.format_exception(caught.value)))


@pytest.mark.parametrize(
    ("url", "hosts", "database", "user"),
    [
        (
            "postgresql://memory:pw@db.example.com:6543/memory",
            (DatabaseHost("db.example.com", 6543),),
            "memory",
            "memory",
        ),
        ("postgres://memory:pw@[::1]:5433/db", (DatabaseHost("::1", 5433),), "db", "memory"),
        (
            "postgresql://memory@[2001:db8::1]/db",
            (DatabaseHost("2001:db8::1", None),),
            "db",
            "memory",
        ),
        (
            "postgresql://u:pw@h1:5432,h2:5433/db",
            (DatabaseHost("h1", 5432), DatabaseHost("h2", 5433)),
            "db",
            "u",
        ),
        (
            "postgresql://u@/db?host=/var/run/postgresql&port=5433",
            (DatabaseHost("/var/run/postgresql", 5433),),
            "db",
            "u",
        ),
        (
            f"postgresql://memory:{quote(HASH_AND_SLASH, safe='')}@db.example/memory",
            (DatabaseHost("db.example", None),),
            "memory",
            "memory",
        ),
    ],
)
def test_valid_urls_are_read_as_asyncpg_reads_them(
    url: str, hosts: tuple[DatabaseHost, ...], database: str, user: str
) -> None:
    target = parse_database_url(url)
    assert (target.hosts, target.database, target.user) == (hosts, database, user)
    description = target.describe()
    assert "pw" not in description.split() and PIECES[0] not in description
    assert database in description and str(hosts[0]) in description


@pytest.mark.parametrize(
    "url",
    [
        *(p.values[0] for p in MALFORMED),
        f"postgresql://memory:{quote(HASH_AND_SLASH, safe='')}@db.example/memory",
        f"postgresql://memory@db.example/memory?password={quote(QUESTION_AND_AT, safe='')}",
        f"postgresql://memory:pw@db.example/memory?sslmode=verify-full&sslpassword={SSL_PASSWORD}",
        f"postgresql://memory:pw@db.example/memory?SSLPASSWORD={SSL_PASSWORD}&sslmode=require",
        f"host=db.example user=memory password={PIECES[0]} sslpassword={SSL_PASSWORD}",
        f"garbage {PIECES[1]}:{PIECES[2]}@db.example",
    ],
)
def test_the_redacted_form_of_any_string_holds_no_secret(url: str) -> None:
    redacted = redact_database_url(url)
    _assert_no_secret(redacted)
    assert ("***" in redacted) == bool(database_url_secrets(url)), redacted
    # everything secret is listed for scrubbing, in every spelling
    scrubbed = scrub_database_secrets(f"error: {url} ({redacted})", url)
    _assert_no_secret(scrubbed)
    assert all(secret for secret in database_url_secrets(url))


def test_the_redacted_form_keeps_what_an_operator_needs() -> None:
    url = (
        f"postgresql://memory:{quote(HASH_AND_SLASH, safe='')}@db.example.com:6543/memory"
        f"?sslmode=require&sslpassword={SSL_PASSWORD}"
    )
    assert redact_database_url(url) == (
        "postgresql://memory:***@db.example.com:6543/memory?sslmode=require&sslpassword=***"
    )
    assert set(database_url_secrets(url)) == {
        quote(HASH_AND_SLASH, safe=""),
        HASH_AND_SLASH,
        SSL_PASSWORD,
    }


# -- at start-up: the worker and both operator tools ------------------------------------------

COMMANDS = {
    "agent.py console": [str(PROJECT_DIR / "agent.py"), "console", "--text"],
    "caller-memory check": ["-m", "caller_memory.cli", "check"],
    "caller-memory admin list": ["-m", "caller_memory.cli", "admin", "list", "alice@example.com"],
}
STARTUP_URLS = [
    f"postgresql://memory:{HASH_AND_SLASH}@127.0.0.1:{CLOSED}/memory",
    f"postgresql://memory:{QUESTION_AND_AT}@127.0.0.1:{CLOSED}/memory",
    f"postgresql://memory:{PIECES[2]}@[::1]:{PIECES[3]}/memory",
]


def _run(argv: list[str], cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIVEKIT_", "OPENAI_", "SUPABASE_")) and k != "DATABASE_URL"
    }
    env.update(OPENAI_API_KEY="sk-test-fake", PYTHONUNBUFFERED="1")
    (cwd / ".env").write_text(f"DATABASE_URL={database_url}\n", encoding="utf-8")
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_start_up_refuses_such_urls_in_one_line_with_no_secret(tmp_path: Path) -> None:
    runs = [(name, url) for name in COMMANDS for url in STARTUP_URLS]

    def run(index: int) -> subprocess.CompletedProcess[str]:
        name, url = runs[index]
        cwd = tmp_path / f"run-{index}"
        cwd.mkdir()
        return _run(COMMANDS[name], cwd, url)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, range(len(runs))))
    for (name, url), done in zip(runs, results, strict=True):
        output = done.stdout + done.stderr
        assert done.returncode not in (0, None), (name, url, output)
        assert "Traceback" not in output, (name, output)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "DATABASE_URL" in lines[0], (name, output)
        _assert_no_secret(output)


# -- on every capture: a real session whose store cannot be reached ---------------------------


@pytest.mark.parametrize(
    ("malformed_url", "database_url"),
    [
        pytest.param(
            STARTUP_URLS[0],
            f"postgresql://memory:{quote(HASH_AND_SLASH, safe='')}@127.0.0.1:{CLOSED}/memory",
            id="hash-and-slash-in-password",
        ),
        pytest.param(
            STARTUP_URLS[1],
            f"postgresql://memory:{quote(QUESTION_AND_AT, safe='')}@127.0.0.1:{CLOSED}/memory",
            id="question-mark-and-at-in-password",
        ),
        pytest.param(
            None,
            f"postgresql://memory:pw@127.0.0.1:{CLOSED}/memory?sslpassword={SSL_PASSWORD}",
            id="sslpassword",
        ),
    ],
)
async def test_captures_log_no_secret_when_the_store_fails(
    malformed_url: str | None,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The worker would not start with the malformed URLs (above), and a script building its
    memory from the settings is refused the same way, with no secret in the error; with the
    same password percent-encoded, the store is opened, and when it cannot be reached the
    secret must still stay out of every error and log line, on every capture."""
    caplog.set_level(logging.DEBUG)
    if malformed_url is not None:
        monkeypatch.setenv("DATABASE_URL", malformed_url)
        with pytest.raises(SettingsError) as refused:
            CallerMemory.from_settings()
        assert "DATABASE_URL" in str(refused.value), refused.value
        _assert_no_secret("".join(traceback.format_exception(refused.value)))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DATABASE_TIMEOUT_SECONDS", "1")
    memory = CallerMemory.from_settings()
    session = text_session(FakeScriptedLLM())
    try:
        caller = await start_in_own_task(session, "db-secrets@example.com", memory)
        for text in ("my favorite color is teal", "I work as a nurse"):
            await session.run(user_input=text)
        await caller.aclose(5.0)
        assert caller.writer.stored_count == 0  # the store never took a write
    finally:
        await session.aclose()
        await memory.aclose()
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert failures, "no failure was logged: the store did not fail as this test expects"
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        _assert_no_secret(text)
    _assert_no_secret("".join(capfd.readouterr()))
