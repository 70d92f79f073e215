"""`caller-memory stats`: the store's totals and the spool's depth, without any caller's data.

The totals are one query per backend (the SQL function `caller_memory.memory_stats()` of the
migrations on Postgres and Supabase, the same counts on SQLite), checked on all three with the
same callers; the command itself runs as an operator runs it, in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caller_memory.cli import stats_text
from caller_memory.identity import livekit_identity_to_uuid
from caller_memory.spool import SpoolDepth, encode_record, new_record, spool_depth
from caller_memory.stores.base import MemoryStore, StoreStats
from caller_memory.stores.sqlite import SQLiteMemoryStore
from caller_memory.types import MemoryDetails, Statement
from tests.support import subprocess_env

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
SAID = 1_700_000_000.0
SECRETS = [
    ALICE,
    BOB,
    CAROL,
    *(livekit_identity_to_uuid(i) for i in (ALICE, BOB, CAROL)),
    "lilac",
    "teal",
    "Thaddeus",
    "My favourite colour is lilac",
]
# Alice: a fact replaced once (lilac -> teal), and her words that stated the old value;
# Bob: erased; Carol: a profile only.
EXPECTED = StoreStats(callers=2, facts=1, utterances=1, superseded=1, replaced_values=1, erasures=1)


async def seed(store: MemoryStore) -> None:
    alice, bob, carol = (livekit_identity_to_uuid(i) for i in (ALICE, BOB, CAROL))
    await store.ensure_profile(alice, ALICE)
    await store.upsert_memory(alice, "PREFERENCE", "favorite_color", "lilac", captured_at=SAID)
    states = (Statement("PREFERENCE", "favorite_color", "lilac"),)
    await store.upsert_memory(
        alice,
        "EXPERIENCE",
        "utterance_1",
        "My favourite colour is lilac",
        kind="utterance",
        captured_at=SAID,
        details=MemoryDetails(states=states),
    )
    await store.upsert_memory(alice, "PREFERENCE", "favorite_color", "teal", captured_at=SAID + 60)
    await store.ensure_profile(bob, BOB)
    await store.upsert_memory(bob, "PRESENTATION", "name", "Thaddeus", captured_at=SAID)
    await store.delete_user(bob, erased_at=SAID + 120)
    await store.ensure_profile(carol, CAROL)


@pytest.fixture(
    params=[
        "sqlite_store",
        pytest.param("postgres_store", marks=pytest.mark.postgres),
        pytest.param("supabase_store", marks=pytest.mark.postgres),
    ]
)
def any_store(request: pytest.FixtureRequest) -> MemoryStore:
    store: MemoryStore = request.getfixturevalue(request.param)
    return store


async def test_every_store_counts_the_same_totals(any_store: MemoryStore) -> None:
    assert await any_store.stats() == StoreStats(0, 0, 0, 0, 0, 0)
    await seed(any_store)
    totals = await any_store.stats()
    assert totals == EXPECTED
    assert totals.memories == 2
    text = stats_text(totals, SpoolDepth(), Path("/spool"), now=time.time())
    assert not [s for s in SECRETS if s in text]


def spooled_file(directory: Path, captured_at: float) -> None:
    """A spool file left by a worker that died during an outage: two of Alice's memories."""
    directory.mkdir(mode=0o700)
    alice = livekit_identity_to_uuid(ALICE)
    lines = [
        encode_record(
            new_record(ALICE, alice, "PREFERENCE", "favorite_color", "lilac", captured_at=when)
        )
        for when in (captured_at, captured_at + 30)
    ]
    (directory / "spool-4242-deadbeef.jsonl").write_bytes(b"".join(lines))


def test_the_command_prints_totals_and_the_spool_without_any_callers_data(
    tmp_path: Path,
) -> None:
    db = tmp_path / "stats.sqlite3"

    async def seeded() -> None:
        store = SQLiteMemoryStore(db)
        try:
            await seed(store)
        finally:
            await store.aclose()

    asyncio.run(seeded())
    spool = tmp_path / "spool"
    spooled_file(spool, captured_at=SAID)
    depth = spool_depth(spool, oldest=True)
    assert (depth.records, depth.files, depth.oldest_captured_at) == (2, 1, SAID)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "caller_memory.cli", "stats", *args],
            env=subprocess_env(MEMORY_SQLITE_PATH=str(db), MEMORY_SPOOL_DIR=str(spool)),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    shown = run()
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:7] == [
        "callers                2",
        "memories               2",
        "  facts                1",
        "  utterances           1",
        "superseded utterances  1  (kept, never recalled)",
        "replaced fact values   1  (history)",
        "erasure tombstones     1",
    ]
    assert lines[7].startswith(f"spool                  2 records, {depth.size_bytes} bytes in 1")
    assert lines[8].startswith("  oldest record        captured 2023-11-14T22:13:20+00:00 (")
    assert "stats of the SQLite file" in shown.stderr

    as_json = run("--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["callers"] == 2
    assert data["memories_by_kind"] == {"fact": 1, "utterance": 1}
    assert data["spool"]["records"] == 2
    assert data["spool"]["oldest_captured_at"] == "2023-11-14T22:13:20+00:00"
    for output in (shown.stdout, shown.stderr, as_json.stdout):
        assert not [s for s in SECRETS if s in output]
