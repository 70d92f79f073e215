-- Schema of the embedded SQLite store. The same tables, columns and rules as the Postgres
-- migrations in supabase/migrations/, in SQLite's dialect. Applied on first use; every
-- statement is idempotent.
CREATE TABLE IF NOT EXISTS profiles (
    id                TEXT PRIMARY KEY,
    original_identity TEXT,
    is_first_login    INTEGER NOT NULL DEFAULT 1,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS memory_categories (
    category TEXT PRIMARY KEY,
    priority INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS memories (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    category    TEXT NOT NULL REFERENCES memory_categories(category),
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    -- 'fact' (one value per key) or 'utterance' (the caller's own words, one per message)
    kind        TEXT NOT NULL DEFAULT 'fact' CHECK (kind IN ('fact', 'utterance')),
    -- when the caller said it, in seconds since the epoch: orders writes of one key
    captured_at REAL NOT NULL DEFAULT 0,
    UNIQUE (user_id, category, key)
);

-- One row per erased caller: the time (seconds since the epoch) of their latest erasure. It
-- outlives the profile, and refuses every write of something known before it.
CREATE TABLE IF NOT EXISTS memory_erasures (
    user_id   TEXT PRIMARY KEY,
    erased_at REAL NOT NULL
);

-- @upgrade-columns: files from before `kind` and `captured_at` get them here (see the store).

CREATE INDEX IF NOT EXISTS memories_user_recent ON memories (user_id, updated_at DESC);
CREATE INDEX IF NOT EXISTS memories_user_utterances
    ON memories (user_id, captured_at DESC, id DESC) WHERE kind = 'utterance';

-- Full-text index, contentless. Its first column holds one token naming the user, so a search
-- is `user_tok:"u<hex>" AND (words...)`: FTS5 itself restricts the match to one user and ranks
-- with BM25 (key words weigh double), instead of ranking every user's rows and filtering.
CREATE VIRTUAL TABLE IF NOT EXISTS memory_search_index USING fts5(
    user_tok, key, value,
    content = '',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO memory_search_index(memory_search_index, rank) VALUES ('rank', 'bm25(0.0, 2.0, 1.0)');

CREATE TRIGGER IF NOT EXISTS memory_search_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memory_search_index(rowid, user_tok, key, value)
    VALUES (new.id, 'u' || replace(new.user_id, '-', ''), new.key, new.value);
END;
CREATE TRIGGER IF NOT EXISTS memory_search_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memory_search_index(memory_search_index, rowid, user_tok, key, value)
    VALUES ('delete', old.id, 'u' || replace(old.user_id, '-', ''), old.key, old.value);
END;
CREATE TRIGGER IF NOT EXISTS memory_search_update AFTER UPDATE ON memories BEGIN
    INSERT INTO memory_search_index(memory_search_index, rowid, user_tok, key, value)
    VALUES ('delete', old.id, 'u' || replace(old.user_id, '-', ''), old.key, old.value);
    INSERT INTO memory_search_index(rowid, user_tok, key, value)
    VALUES (new.id, 'u' || replace(new.user_id, '-', ''), new.key, new.value);
END;
