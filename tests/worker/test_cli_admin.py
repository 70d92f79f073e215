"""The operator's data-rights tool, run as the operator runs it: `caller-memory admin ...`.

Each command runs in a subprocess (`python -m caller_memory.cli`, what the console script
runs) against a temporary SQLite file (`MEMORY_SQLITE_PATH`) holding two callers, from a
directory without a `.env`, so nothing else is touched. What the store holds afterwards is
read back from the file row by row.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from caller_memory.identity import livekit_identity_to_uuid
from caller_memory.spool import new_record
from caller_memory.stores.sqlite import SQLiteMemoryStore
from tests.support import sqlite_rows

PROJECT_DIR = Path(__file__).resolve().parents[2]
ADMIN = [sys.executable, "-m", "caller_memory.cli", "admin"]
ALICE = "alice@example.com"
BOB = "bob@example.com"
MEMORIES = {
    ALICE: {
        ("PREFERENCE", "favorite_color"): "teal",
        ("PRESENTATION", "name"): "Marisol",
        ("RELATIONSHIP", "sister_name"): "Ana",
    },
    BOB: {
        ("PREFERENCE", "favorite_color"): "orange",
        ("PRESENTATION", "name"): "Thaddeus",
    },
}

# What Alice had said before, replaced since by MEMORIES' values: kept as history
REPLACED = {ALICE: {("PREFERENCE", "favorite_color"): "lilac"}}
SAID_BEFORE = 1_700_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store file with a profile and memories for each of two callers."""
    path = tmp_path / "admin.sqlite3"

    async def seed() -> None:
        store = SQLiteMemoryStore(path)
        try:
            for identity, memories in MEMORIES.items():
                user_id = livekit_identity_to_uuid(identity)
                await store.ensure_profile(user_id, identity)
                for (category, key), value in REPLACED.get(identity, {}).items():
                    await store.upsert_memory(
                        user_id, category, key, value, identity, captured_at=SAID_BEFORE
                    )
                for (category, key), value in memories.items():
                    await store.upsert_memory(user_id, category, key, value, identity)
        finally:
            await store.aclose()

    asyncio.run(seed())
    return path


def admin(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMORY_SQLITE_PATH": str(db)}
    for name in ("SUPABASE_URL", "DATABASE_URL"):
        env.pop(name, None)
    return subprocess.run(
        [*ADMIN, *args],
        cwd=db.parent,  # no .env here: the test's environment is all it sees
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def rows_by_user(db: Path) -> dict[str, set[tuple[str, str, str]]]:
    rows: dict[str, set[tuple[str, str, str]]] = {}
    for m in sqlite_rows(db)[1]:
        rows.setdefault(m["user_id"], set()).add((m["category"], m["key"], m["value"]))
    return rows


def expected(identity: str) -> set[tuple[str, str, str]]:
    return {(c, k, v) for (c, k), v in MEMORIES[identity].items()}


def test_list_shows_one_callers_memories(db: Path) -> None:
    done = admin(db, "list", ALICE)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"user {livekit_identity_to_uuid(ALICE)}: 3 memories"
    assert sorted(lines[1:]) == sorted(
        f"  [{c}] {k} = {v}" for (c, k), v in MEMORIES[ALICE].items()
    )
    assert "orange" not in done.stdout and "Thaddeus" not in done.stdout


def test_export_is_json_of_exactly_one_callers_profile_and_memories(
    db: Path, tmp_path: Path
) -> None:
    done = admin(db, "export", ALICE)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    user_id = livekit_identity_to_uuid(ALICE)
    assert set(data) == {"identity", "user_uuid", "profile", "memories", "replaced"}
    assert data["identity"] == ALICE and data["user_uuid"] == user_id
    assert data["profile"]["id"] == user_id
    assert data["profile"]["original_identity"] == ALICE
    assert data["profile"]["created_at"]
    assert {(m["category"], m["key"], m["value"]) for m in data["memories"]} == expected(ALICE)
    assert all(m["created_at"] and m["updated_at"] for m in data["memories"])
    # what a fact held before it changed is hers too, with when it stopped being true
    [replaced] = data["replaced"]
    assert (replaced["key"], replaced["value"]) == ("favorite_color", "lilac")
    assert replaced["valid_from"].startswith("2023-11-14T22:13:20")
    assert replaced["valid_until"] > replaced["valid_from"]
    assert "orange" not in done.stdout and "Thaddeus" not in done.stdout

    # to a file, for handing over; the same document
    out = tmp_path / "alice.json"
    to_file = admin(db, "export", ALICE, "--output", str(out))
    assert to_file.returncode == 0, to_file.stderr
    assert json.loads(out.read_text(encoding="utf-8")) == data

    # a caller the store has never seen: an empty export, not an error, nothing created
    nobody = admin(db, "export", "nobody@example.com")
    assert nobody.returncode == 0, nobody.stderr
    assert json.loads(nobody.stdout)["profile"] is None
    assert json.loads(nobody.stdout)["memories"] == []
    assert rows_by_user(db) == {
        livekit_identity_to_uuid(ALICE): expected(ALICE),
        livekit_identity_to_uuid(BOB): expected(BOB),
    }


def test_delete_without_yes_refuses_and_deletes_nothing(db: Path) -> None:
    before = sqlite_rows(db)
    done = admin(db, "delete", ALICE)
    assert done.returncode == 2
    assert "refusing to delete without --yes" in done.stderr
    assert sqlite_rows(db) == before


def test_delete_with_yes_deletes_that_caller_only(db: Path) -> None:
    # memories the worker spooled for both callers while the store was down, in the file of
    # a worker process that is gone: they would be written back when replayed
    spool_dir = Path(os.environ["MEMORY_SPOOL_DIR"])
    spool_dir.mkdir(parents=True)
    records = [
        new_record(ALICE, livekit_identity_to_uuid(ALICE), "FACT", "home_town", "Leeds"),
        new_record(BOB, livekit_identity_to_uuid(BOB), "FACT", "home_town", "Oslo"),
    ]
    spool_file = spool_dir / "spool-999999-deadbeef.jsonl"
    spool_file.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    profiles_before, _ = sqlite_rows(db)
    bob_profile = [p for p in profiles_before if p["id"] == livekit_identity_to_uuid(BOB)]

    done = admin(db, "delete", ALICE, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"deleted the profile and 3 memories of user {livekit_identity_to_uuid(ALICE)}"
    )
    assert "1 spooled" in done.stdout
    assert done.stdout.rstrip().endswith(f"in the SQLite file {db.resolve()}")

    profiles, _ = sqlite_rows(db)
    assert profiles == bob_profile
    assert rows_by_user(db) == {livekit_identity_to_uuid(BOB): expected(BOB)}
    spooled = [json.loads(x) for x in spool_file.read_text().splitlines()]
    assert [r["identity"] for r in spooled] == [BOB]

    # deleting again is harmless, and says that it found nothing, in which store (exit 3)
    again = admin(db, "delete", ALICE, "--yes")
    assert again.returncode == 3, (again.stdout, again.stderr)
    assert again.stdout == ""
    assert again.stderr.splitlines()[-1] == (
        f"caller-memory: nothing to delete: the SQLite file {db.resolve()} holds no profile and "
        f"no memories of user {livekit_identity_to_uuid(ALICE)}, and the spool none; "
        "the erasure is recorded"
    )
    assert rows_by_user(db) == {livekit_identity_to_uuid(BOB): expected(BOB)}


def test_an_invalid_identity_is_a_clear_error(db: Path) -> None:
    before = sqlite_rows(db)
    runs = [
        (command, identity)
        for identity in ("", "   ", "x" * 1025)
        for command in (("list",), ("export",), ("delete", "--yes"))
    ]
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        results = list(pool.map(lambda run: admin(db, run[0][0], run[1], *run[0][1:]), runs))
    for run, done in zip(runs, results, strict=True):
        assert done.returncode == 1, (run, done.stdout, done.stderr)
        assert done.stderr.startswith("caller-memory: a LiveKit identity must"), run
        assert "Traceback" not in done.stderr
        assert done.stdout == ""
    assert sqlite_rows(db) == before


def test_an_unusable_store_is_a_clear_error(tmp_path: Path) -> None:
    not_a_db = tmp_path / "a-directory"  # MEMORY_SQLITE_PATH names a directory
    not_a_db.mkdir()
    done = admin(not_a_db, "list", ALICE)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("caller-memory: ")
    assert "Traceback" not in done.stderr


# -- the store it acts on: the worker's, read the worker's way, and named -------------------


def admin_in(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`caller-memory admin` run from `workdir`, with no store variable in its environment: only
    the `.env` / `.env.local` files there say which store to use, as on a deployed worker."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SUPABASE_URL", "DATABASE_URL", "MEMORY_SQLITE_PATH"}
    }
    return subprocess.run(
        [*ADMIN, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def env_file_from_example(path: Path, **values: str) -> None:
    """`.env.example` as a user fills it in: only the given variables changed."""
    lines = (PROJECT_DIR / ".env.example").read_text(encoding="utf-8").splitlines()
    filled = [
        f"{name}={values[name]}" if (name := line.partition("=")[0]) in values else line
        for line in lines
    ]
    assert {line.partition("=")[0] for line in filled} >= set(values), "not in .env.example"
    path.write_text("\n".join(filled) + "\n", encoding="utf-8")


def test_the_store_named_in_dot_env_is_the_one_listed_and_named(db: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "deployment"
    workdir.mkdir()
    env_file_from_example(workdir / ".env", MEMORY_SQLITE_PATH=str(db))
    done = admin_in(workdir, "list", ALICE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"user {livekit_identity_to_uuid(ALICE)}: 3 memories"
    assert done.stderr.splitlines() == [
        f"caller-memory: admin list in the SQLite file {db.resolve()}"
    ]


def test_delete_acts_on_the_store_the_worker_uses_with_dot_env_local(
    db: Path, tmp_path: Path
) -> None:
    """The worker lets `.env.local` override `.env`; so must the operator tool, or `delete`
    reports success on a store the worker does not use while the caller's data stays."""
    workdir = tmp_path / "deployment"
    workdir.mkdir()
    decoy = tmp_path / "not-the-workers.sqlite3"
    env_file_from_example(workdir / ".env", MEMORY_SQLITE_PATH=str(decoy))
    (workdir / ".env.local").write_text(f"MEMORY_SQLITE_PATH={db}\n", encoding="utf-8")

    done = admin_in(workdir, "delete", ALICE, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"deleted the profile and 3 memories of user {livekit_identity_to_uuid(ALICE)}"
    )
    assert str(db.resolve()) in done.stdout and str(db.resolve()) in done.stderr
    assert rows_by_user(db) == {livekit_identity_to_uuid(BOB): expected(BOB)}
    assert not decoy.exists()


def test_deleting_an_identity_the_store_does_not_hold_says_so(db: Path) -> None:
    before = sqlite_rows(db)
    done = admin(db, "delete", "nobody@example.com", "--yes")
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"caller-memory: admin delete in the SQLite file {db.resolve()}",
        f"caller-memory: nothing to delete: the SQLite file {db.resolve()} holds no profile and "
        f"no memories of user {livekit_identity_to_uuid('nobody@example.com')}, and the spool "
        "none; the erasure is recorded",
    ]
    assert sqlite_rows(db)[1] == before[1]
    assert [p["id"] for p in sqlite_rows(db)[0]] == [p["id"] for p in before[0]]


def test_a_bad_setting_in_dot_env_stops_the_tool_before_it_touches_a_store(
    db: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "deployment"
    workdir.mkdir()
    env_file_from_example(
        workdir / ".env", MEMORY_SQLITE_PATH=str(db), IDENTITY_NAMESPACE="not-a-uuid"
    )
    before = sqlite_rows(db)
    done = admin_in(workdir, "delete", ALICE, "--yes")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("caller-memory: IDENTITY_NAMESPACE must be a UUID"), line
    assert sqlite_rows(db) == before
