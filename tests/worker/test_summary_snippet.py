"""The design summary's snippets, verbatim, run green on the embedded store.

The snippets are copied into this file character for character (the repository must not
depend on the summary being around), and run as a user runs them. They prove nothing about
concurrency (tests/stores/test_isolation.py does that); this only checks that the code the summary
tells people to run works as written: its "Test User Isolation" script through the sync
memory API, and the steps of its entrypoint (identity -> uuid -> ContextVar -> profile)
through the sync profile API, which refuses to be called inside an event loop instead of
silently doing nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

from caller_memory import set_default_memory
from tests.support import sqlite_rows

PROJECT_DIR = Path(__file__).resolve().parents[2]

# Copied character for character from the summary's "### Test User Isolation" block.
SNIPPET = """\
from agent import set_session_user, get_session_user_uuid, memory_manager

# Session 1 (Alice)
set_session_user("alice@example.com")
uuid_alice = get_session_user_uuid()
print(f"Alice UUID: {uuid_alice}")
memory_manager.store("FACT", "favorite_color", "blue")

# Session 2 (Bob) - in different async context
set_session_user("bob@example.com")
uuid_bob = get_session_user_uuid()
print(f"Bob UUID: {uuid_bob}")
memory_manager.store("FACT", "favorite_color", "red")

# Verify isolation
assert uuid_alice != uuid_bob
assert memory_manager.retrieve("FACT", "favorite_color") == "red"  # Bob's session

# Switch back to Alice's session
set_session_user("alice@example.com")
assert memory_manager.retrieve("FACT", "favorite_color") == "blue"  # Alice's data

print("✅ User isolation working!")
"""

# Copied character for character from the summary's entrypoint ("Key Code"), steps 1 to 3,
# one string per line (its blank lines hold four spaces); `participant` is what its
# surrounding code provides.
ENTRYPOINT_STEPS = "\n".join(
    [
        "    # Step 1: Get LiveKit identity",
        "    livekit_identity = participant.identity",
        "    ",
        "    # Step 2: Set session user (converts to UUID, stores in ContextVar)",
        "    user_uuid = set_session_user(livekit_identity)",
        "    ",
        "    # Step 3: Ensure profile exists BEFORE starting session",
        "    ensure_profile_exists(user_uuid, original_identity=livekit_identity)",
        "",
    ]
)

ALICE_UUID = str(uuid.uuid5(uuid.NAMESPACE_DNS, "alice@example.com"))
BOB_UUID = str(uuid.uuid5(uuid.NAMESPACE_DNS, "bob@example.com"))


def _check_rows(db: Path) -> None:
    profiles, memories = sqlite_rows(db)
    assert sorted((m["user_id"], m["category"], m["key"], m["value"]) for m in memories) == sorted(
        [
            (ALICE_UUID, "FACT", "favorite_color", "blue"),
            (BOB_UUID, "FACT", "favorite_color", "red"),
        ]
    )
    assert sorted((p["id"], p["original_identity"]) for p in profiles) == sorted(
        [(ALICE_UUID, "alice@example.com"), (BOB_UUID, "bob@example.com")]
    )


def _run_script(tmp_path: Path, text: str, db: Path) -> subprocess.CompletedProcess[str]:
    """`text` run as a user's script: its own process, the project importable, memories in
    `db`, from a directory without the project's `.env` or `data/`."""
    script = tmp_path / "snippet.py"
    script.write_text(text, encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "SUPABASE_URL",
            "DATABASE_URL",
            "MEMORY_ALLOW_DEFAULT_USER",
            "IDENTITY_NAMESPACE",
            "PYTHONPATH",
        }
    }
    env.update(
        MEMORY_SQLITE_PATH=str(db),
        MEMORY_SPOOL_DIR=str(tmp_path / "spool"),
        PYTHONPATH=str(PROJECT_DIR),
        PYTHONIOENCODING="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(script)],
        cwd=tmp_path,  # no .env of the project's, no data/ of the project's
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def test_snippet_runs_green_as_a_script(tmp_path: Path) -> None:
    db = tmp_path / "snippet.sqlite3"
    done = _run_script(tmp_path, SNIPPET, db)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines == [
        f"Alice UUID: {ALICE_UUID}",
        f"Bob UUID: {BOB_UUID}",
        "✅ User isolation working!",
    ]
    _check_rows(db)


def _entrypoint_script(header: str, steps: str, call: str) -> str:
    body = textwrap.indent(textwrap.dedent(steps), "    ")
    return (
        "import asyncio, types\n"
        "from agent import set_session_user, ensure_profile_exists\n"
        "from profiles import aensure_profile_exists\n\n"
        f"{header}\n{body}    print(user_uuid)\n\n"
        "# what LiveKit hands the entrypoint: a participant with an identity\n"
        'participant = types.SimpleNamespace(identity="alice@example.com")\n'
        f"{call}\n"
    )


def test_the_summarys_entrypoint_steps_make_the_profile_from_plain_code(tmp_path: Path) -> None:
    db = tmp_path / "entrypoint.sqlite3"
    script = _entrypoint_script("def entrypoint_steps():", ENTRYPOINT_STEPS, "entrypoint_steps()")
    done = _run_script(tmp_path, script, db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [ALICE_UUID]
    profiles, memories = sqlite_rows(db)
    assert [(p["id"], p["original_identity"], p["is_first_login"]) for p in profiles] == [
        (ALICE_UUID, "alice@example.com", 1)
    ]
    assert memories == []


def test_the_summarys_entrypoint_steps_inside_an_event_loop_are_refused_not_skipped(
    tmp_path: Path,
) -> None:
    """The summary's entrypoint is `async def`: there, a blocking call would stall every
    session on the loop, and an un-awaited coroutine would silently create no profile. The
    call is refused with a message naming the async twin; awaiting the twin works."""
    db = tmp_path / "entrypoint.sqlite3"
    as_written = _entrypoint_script(
        "async def entrypoint():", ENTRYPOINT_STEPS, "asyncio.run(entrypoint())"
    )
    done = _run_script(tmp_path, as_written, db)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.splitlines()[-1] == (
        "RuntimeError: profiles.ensure_profile_exists() blocks and was called inside a running "
        "event loop; use `await aensure_profile_exists(...)` in async code"
    )
    assert "never awaited" not in done.stderr
    assert not db.exists() or sqlite_rows(db)[0] == []

    awaited = ENTRYPOINT_STEPS.replace(
        "    ensure_profile_exists(", "    await aensure_profile_exists("
    )
    assert awaited != ENTRYPOINT_STEPS
    fixed = _entrypoint_script("async def entrypoint():", awaited, "asyncio.run(entrypoint())")
    done = _run_script(tmp_path, fixed, db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [ALICE_UUID]
    assert [(p["id"], p["original_identity"]) for p in sqlite_rows(db)[0]] == [
        (ALICE_UUID, "alice@example.com")
    ]


def test_snippet_runs_green_in_a_thread_with_no_event_loop(tmp_path: Path) -> None:
    db = tmp_path / "memories.sqlite3"  # conftest points MEMORY_SQLITE_PATH here
    assert os.environ["MEMORY_SQLITE_PATH"] == str(db)
    # livekit plugins register themselves on import and insist on the main thread: import the
    # worker module here first, as a script would have, so the snippet's import is a lookup.
    importlib.import_module("agent")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            exec(compile(SNIPPET, "<summary snippet>", "exec"), {"__name__": "snippet"})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    memory = set_default_memory(None)  # the default memory the snippet used
    try:
        assert not thread.is_alive()
        assert errors == []
        _check_rows(db)
    finally:
        if memory is not None:
            asyncio.run(memory.aclose())
