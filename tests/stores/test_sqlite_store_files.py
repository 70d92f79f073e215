"""The embedded store's file on disk: who may read it, and files from the previous release.

Memories are personal data. The SQLite database (and the -wal and -shm files SQLite keeps
beside it) must be readable by the worker's user only, and a directory the store creates for
it must be private too. A database file written by the previous release (before memories had
a `kind` and a capture time, and before erasures were recorded) must keep working, with its
memories classified and ordered as the current release expects.
"""

from __future__ import annotations

import sqlite3
import stat
import uuid
from pathlib import Path

from caller_memory.stores.sqlite import SUPERSEDE_WORDS, SQLiteMemoryStore
from caller_memory.types import MemoryKind, WriteOutcome

ALICE = str(uuid.uuid5(uuid.NAMESPACE_DNS, "alice@example.com"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_database_and_its_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "memories.sqlite3"
    store = SQLiteMemoryStore(path)
    try:
        await store.upsert_memory(ALICE, "FACT", "job", "nurse")
        files = sorted(p.name for p in path.parent.iterdir())
        assert files == [
            "memories.sqlite3",
            "memories.sqlite3-shm",
            "memories.sqlite3-wal",
        ]
        for name in files:
            assert mode(path.parent / name) == 0o600, name
        assert mode(path.parent) == 0o700
        assert mode(path.parent.parent) == 0o700
    finally:
        await store.aclose()


async def test_an_existing_file_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    path.touch(mode=0o640)
    path.chmod(0o640)  # touch's mode is filtered by the umask
    store = SQLiteMemoryStore(path)
    try:
        await store.upsert_memory(ALICE, "FACT", "job", "nurse")
    finally:
        await store.aclose()
    assert mode(path) == 0o640


# The previous release's tables, as its schema file created them.
PREVIOUS_RELEASE_SCHEMA = """
CREATE TABLE profiles (
    id TEXT PRIMARY KEY, original_identity TEXT, is_first_login INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE memory_categories (category TEXT PRIMARY KEY, priority INTEGER NOT NULL);
CREATE TABLE memories (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    category TEXT NOT NULL REFERENCES memory_categories(category),
    key TEXT NOT NULL, value TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    UNIQUE (user_id, category, key)
);
CREATE INDEX memories_user_recent ON memories (user_id, updated_at DESC);
CREATE VIRTUAL TABLE memory_search_index USING fts5(
    user_tok, key, value, content = '', tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO memory_search_index(memory_search_index, rank) VALUES ('rank', 'bm25(0.0, 2.0, 1.0)');
CREATE TRIGGER memory_search_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memory_search_index(rowid, user_tok, key, value)
    VALUES (new.id, 'u' || replace(new.user_id, '-', ''), new.key, new.value);
END;
CREATE TRIGGER memory_search_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memory_search_index(memory_search_index, rowid, user_tok, key, value)
    VALUES ('delete', old.id, 'u' || replace(old.user_id, '-', ''), old.key, old.value);
END;
CREATE TRIGGER memory_search_update AFTER UPDATE ON memories BEGIN
    INSERT INTO memory_search_index(memory_search_index, rowid, user_tok, key, value)
    VALUES ('delete', old.id, 'u' || replace(old.user_id, '-', ''), old.key, old.value);
    INSERT INTO memory_search_index(rowid, user_tok, key, value)
    VALUES (new.id, 'u' || replace(new.user_id, '-', ''), new.key, new.value);
END;
INSERT INTO memory_categories VALUES ('FACT', 1), ('INTEREST', 6), ('PREFERENCE', 3);
"""


async def test_a_database_of_the_previous_release_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(PREVIOUS_RELEASE_SCHEMA)
    stamp = "2026-11-24T10:00:00.500000+00:00"
    conn.execute("INSERT INTO profiles VALUES (?, 'alice', 0, ?, ?)", (ALICE, stamp, stamp))
    conn.executemany(
        "INSERT INTO memories(user_id, category, key, value, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (ALICE, "PREFERENCE", "favorite_color", "blue", stamp, stamp),
            (
                ALICE,
                "INTEREST",
                "utterance_1764000000000_ab12cd34",
                "I love painting",
                stamp,
                stamp,
            ),
        ],
    )
    conn.commit()
    conn.close()

    store = SQLiteMemoryStore(path)
    try:
        listed = {m.key: m for m in await store.list_memories(ALICE)}
        assert listed["favorite_color"].kind == MemoryKind.FACT
        assert listed["utterance_1764000000000_ab12cd34"].kind == MemoryKind.UTTERANCE
        # The old rows count as captured when they were last updated: a spooled value captured
        # before that is older, one captured after it is newer.
        updated = 1_795_514_400.5  # 2026-11-24T10:00:00.5Z
        stale = await store.upsert_memory(
            ALICE, "PREFERENCE", "favorite_color", "red", captured_at=updated - 1
        )
        assert stale is WriteOutcome.STALE
        newer = await store.upsert_memory(
            ALICE, "PREFERENCE", "favorite_color", "green", captured_at=updated + 1
        )
        assert newer is WriteOutcome.STORED
        found = await store.search_memories(ALICE, "painting", 5)
        assert [m.value for m in found] == ["I love painting"]
        assert await store.delete_user(ALICE) == 2
    finally:
        await store.aclose()


async def test_the_words_a_changed_fact_supersedes_are_found_by_index(tmp_path: Path) -> None:
    """Marking the utterances that stated a changed fact looks them up by the caller's key
    index, not by walking all of the caller's memories (which held the write lock for 120 ms
    at 100,000 memories, and timed other writers out)."""
    path = tmp_path / "memories.sqlite3"
    store = SQLiteMemoryStore(path)
    try:
        await store.upsert_memory(ALICE, "FACT", "job", "nurse")
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN " + SUPERSEDE_WORDS,
            (1.0, ALICE, ALICE, "PREFERENCE", "favorite_color", "green"),
        ).fetchall()
    details = [row[3] for row in plan]
    assert any("USING INDEX memories_user_key (user_id=? AND key=?)" in d for d in details), plan
