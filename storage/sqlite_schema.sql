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
    id         INTEGER PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    category   TEXT NOT NULL REFERENCES memory_categories(category),
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (user_id, category, key)
);

CREATE INDEX IF NOT EXISTS memories_user_recent ON memories (user_id, updated_at DESC);

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
