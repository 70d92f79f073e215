"""The design summary's "Test User Isolation" snippet, verbatim, runs green on the embedded store.

The snippet proves nothing about concurrency (tests/test_isolation.py does that); this only
checks that the code the summary tells people to run works as written, through the sync API.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

import storage
from tests.fakes import sqlite_rows

PROJECT_DIR = Path(__file__).resolve().parent.parent
SUMMARY = Path("/work/shared/seed/session-user-refactor-summary.md")

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


@pytest.mark.skipif(not SUMMARY.exists(), reason="the design summary is not on this machine")
def test_snippet_is_the_summarys_verbatim() -> None:
    text = SUMMARY.read_text(encoding="utf-8")
    match = re.search(r"### Test User Isolation\n\n```python\n(.*?)```", text, re.S)
    assert match is not None
    assert match.group(1) == SNIPPET


def test_snippet_runs_green_as_a_script(tmp_path: Path) -> None:
    db = tmp_path / "snippet.sqlite3"
    script = tmp_path / "snippet.py"
    script.write_text(SNIPPET, encoding="utf-8")
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
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # no .env of the project's, no data/ of the project's
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines == [
        f"Alice UUID: {ALICE_UUID}",
        f"Bob UUID: {BOB_UUID}",
        "✅ User isolation working!",
    ]
    _check_rows(db)


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
    store = storage.set_store(None)
    try:
        assert not thread.is_alive()
        assert errors == []
        _check_rows(db)
    finally:
        if store is not None:
            asyncio.run(store.aclose())
