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
    id              INTEGER PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    category        TEXT NOT NULL REFERENCES memory_categories(category),
    key             TEXT NOT NULL,
    value           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    -- 'fact' (one value per key) or 'utterance' (the caller's own words, one per message)
    kind            TEXT NOT NULL DEFAULT 'fact' CHECK (kind IN ('fact', 'utterance')),
    -- when the caller said it, in seconds since the epoch: orders writes of one key
    captured_at     REAL NOT NULL DEFAULT 0,
    -- what was said just before, and the day, in words: indexed, never returned as the value
    context         TEXT,
    said_on         TEXT,
    -- the character pairs of Chinese/Japanese/Korean text in value and context (indexed only)
    cjk_pairs       TEXT,
    session_id      TEXT,
    turn_index      INTEGER,
    -- set when a newer value replaced what this memory states: never searched again
    superseded_at   REAL,
    -- the memory's vector (float32, little-endian) and the model that made it
    embedding       BLOB,
    embedding_model TEXT,
    UNIQUE (user_id, category, key)
);

-- One row per erased caller: the time (seconds since the epoch) of their latest erasure. It
-- outlives the profile, and refuses every write of something known before it.
CREATE TABLE IF NOT EXISTS memory_erasures (
    user_id   TEXT PRIMARY KEY,
    erased_at REAL NOT NULL
);

-- Values of a stable fact that were replaced, with when each stopped being true.
CREATE TABLE IF NOT EXISTS memory_history (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL,
    category    TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    valid_from  REAL NOT NULL,
    valid_until REAL NOT NULL
);

-- Which stable facts an utterance of the caller stated.
CREATE TABLE IF NOT EXISTS memory_statements (
    user_id       TEXT NOT NULL,
    utterance_key TEXT NOT NULL,
    category      TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (user_id, utterance_key, category, key)
);

-- @upgrade-columns: files from earlier releases get the newer columns here (see the store).

CREATE INDEX IF NOT EXISTS memories_user_recent ON memories (user_id, updated_at DESC);
CREATE INDEX IF NOT EXISTS memories_user_utterances
    ON memories (user_id, captured_at DESC, id DESC) WHERE kind = 'utterance';
CREATE INDEX IF NOT EXISTS memories_user_embedded
    ON memories (user_id, id) WHERE embedding IS NOT NULL;
-- Utterances by key (the facts they state name them by key, not by category): without it, a
-- fact that changes makes SQLite walk every memory of the caller to mark the old words
-- superseded (120 ms at 100,000 memories, holding the write lock).
CREATE INDEX IF NOT EXISTS memories_user_key ON memories (user_id, key);
CREATE INDEX IF NOT EXISTS memory_history_user ON memory_history (user_id, category, key);
CREATE INDEX IF NOT EXISTS memory_statements_fact ON memory_statements (user_id, category, key);

-- Full-text index, contentless: the value with what was said before it and the day. Its first
-- column holds one token naming the user, so a search is `user_tok:"u<hex>" AND (words...)`:
-- FTS5 itself restricts the match to one user and ranks with BM25 (weights: `BM25_RANK` in
-- sqlite.py), instead of ranking every user's rows and filtering.
-- Words are letters, digits and combining marks (`categories`), as in caller_memory.text, so a
-- Hindi or Arabic word is not cut at its vowel signs; Latin accents fold; English stems.
CREATE VIRTUAL TABLE IF NOT EXISTS memory_text_index USING fts5(
    user_tok, key, value, context, said_on, cjk_pairs,
    content = '',
    tokenize = "porter unicode61 remove_diacritics 2 categories 'L* N* Co M*'"
);

CREATE TRIGGER IF NOT EXISTS memory_text_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memory_text_index(rowid, user_tok, key, value, context, said_on, cjk_pairs)
    VALUES (new.id, 'u' || replace(new.user_id, '-', ''), new.key, new.value,
            coalesce(new.context, ''), coalesce(new.said_on, ''), coalesce(new.cjk_pairs, ''));
END;
CREATE TRIGGER IF NOT EXISTS memory_text_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memory_text_index(memory_text_index, rowid, user_tok, key, value, context, said_on,
                                  cjk_pairs)
    VALUES ('delete', old.id, 'u' || replace(old.user_id, '-', ''), old.key, old.value,
            coalesce(old.context, ''), coalesce(old.said_on, ''), coalesce(old.cjk_pairs, ''));
END;
CREATE TRIGGER IF NOT EXISTS memory_text_update
AFTER UPDATE OF user_id, key, value, context, said_on, cjk_pairs ON memories BEGIN
    INSERT INTO memory_text_index(memory_text_index, rowid, user_tok, key, value, context, said_on,
                                  cjk_pairs)
    VALUES ('delete', old.id, 'u' || replace(old.user_id, '-', ''), old.key, old.value,
            coalesce(old.context, ''), coalesce(old.said_on, ''), coalesce(old.cjk_pairs, ''));
    INSERT INTO memory_text_index(rowid, user_tok, key, value, context, said_on, cjk_pairs)
    VALUES (new.id, 'u' || replace(new.user_id, '-', ''), new.key, new.value,
            coalesce(new.context, ''), coalesce(new.said_on, ''), coalesce(new.cjk_pairs, ''));
END;
