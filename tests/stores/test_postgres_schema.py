"""The migrations in supabase/migrations/, checked on a real PostgreSQL with Supabase's roles.

The session fixture has already applied every migration twice to the test database; these
tests check what that produced, that a re-run and an upgrade of an older deployment keep the
data, and that row-level security, the grants and the schema's default privileges really
lock `anon` and `authenticated` out (also of what a later migration adds) while
`service_role` can do everything the stores need.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from caller_memory.stores.migrations import migration_files
from caller_memory.testing.postgres import PostgresCluster
from caller_memory.types import CATEGORY_PRIORITY
from tests.postgres_fixtures import truncate_all

pytestmark = pytest.mark.postgres

ALICE = uuid.uuid5(uuid.NAMESPACE_DNS, "alice@example.com")
BOB = uuid.uuid5(uuid.NAMESPACE_DNS, "bob@example.com")
MALLORY = uuid.uuid5(uuid.NAMESPACE_DNS, "mallory@example.com")
# Each table by name, schema-qualified: the profiles table is the design summary's, in
# `public`; the memory store's own tables live in the `caller_memory` schema.
QUALIFIED = {
    "profiles": "public.profiles",
    "memory_categories": "caller_memory.memory_categories",
    "memories": "caller_memory.memories",
    "erasures": "caller_memory.erasures",
    "memory_history": "caller_memory.memory_history",
    "memory_statements": "caller_memory.memory_statements",
}
TABLES = tuple(QUALIFIED)
MEMORY_SCHEMA = "caller_memory"

# name -> (identity arguments, result type), exactly as the backends call them.
FUNCTIONS = {
    "memory_ensure_profile": (
        "p_user_id uuid, p_identity text",
        "TABLE(id uuid, original_identity text, is_first_login boolean, "
        "created_at timestamp with time zone, updated_at timestamp with time zone, "
        "created boolean)",
    ),
    "memory_get_profile": (
        "p_user_id uuid",
        "TABLE(id uuid, original_identity text, is_first_login boolean, "
        "created_at timestamp with time zone, updated_at timestamp with time zone)",
    ),
    "memory_complete_first_login": ("p_user_id uuid", "boolean"),
    "memory_upsert": (
        "p_user_id uuid, p_category text, p_key text, p_value text, p_identity text, "
        "p_kind text, p_captured_at timestamp with time zone, "
        "p_session_started_at timestamp with time zone, p_max_utterances integer, "
        "p_context text, p_said_on text, p_session_id text, p_turn_index integer, "
        "p_states jsonb, p_cjk_pairs text",
        "text",
    ),
    "memory_get": ("p_user_id uuid, p_category text, p_key text", "text"),
    "memory_search": (
        "p_user_id uuid, p_query text, p_limit integer",
        "TABLE(category text, key text, value text, created_at timestamp with time zone, "
        "updated_at timestamp with time zone, score real, kind text, session_id text, "
        "turn_index integer)",
    ),
    "memory_dense_search": (
        "p_user_id uuid, p_embedding text, p_model text, p_limit integer",
        "TABLE(category text, key text, value text, created_at timestamp with time zone, "
        "updated_at timestamp with time zone, score real, kind text, session_id text, "
        "turn_index integer)",
    ),
    "memory_set_embedding": (
        "p_user_id uuid, p_category text, p_key text, p_value text, p_embedding text, p_model text",
        "boolean",
    ),
    "memory_has_vectors": ("", "boolean"),
    "memory_unembedded": (
        "p_model text, p_limit integer",
        "TABLE(user_id uuid, category text, key text, value text, context text, said_on text, "
        "kind text)",
    ),
    "memory_history_list": (
        "p_user_id uuid",
        "TABLE(category text, key text, value text, valid_from timestamp with time zone, "
        "valid_until timestamp with time zone)",
    ),
    "memory_stats": (
        "",
        "TABLE(callers bigint, facts bigint, utterances bigint, superseded bigint, "
        "replaced_values bigint, erasures bigint)",
    ),
    "memory_stating": (
        "p_user_id uuid, p_category text, p_key text",
        "TABLE(category text, key text, value text, created_at timestamp with time zone, "
        "updated_at timestamp with time zone, kind text)",
    ),
    "memory_list": (
        "p_user_id uuid",
        "TABLE(category text, key text, value text, created_at timestamp with time zone, "
        "updated_at timestamp with time zone, kind text)",
    ),
    "memory_delete": ("p_user_id uuid, p_category text, p_key text", "boolean"),
    "memory_delete_user": ("p_user_id uuid, p_erased_at timestamp with time zone", "integer"),
    "memory_search_tsquery": ("p_query text", "tsquery"),
    "user_lock_key": ("p_user_id uuid", "bigint"),
}

# One call of every function, as an API role would try it: (sql, args).
FUNCTION_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("SELECT * FROM caller_memory.memory_ensure_profile($1, $2)", (MALLORY, "mallory")),
    ("SELECT * FROM caller_memory.memory_get_profile($1)", (ALICE,)),
    ("SELECT caller_memory.memory_complete_first_login($1)", (ALICE,)),
    ("SELECT caller_memory.memory_upsert($1, 'FACT', 'job', 'hacked', NULL)", (ALICE,)),
    ("SELECT caller_memory.memory_get($1, 'FACT', 'job')", (ALICE,)),
    ("SELECT * FROM caller_memory.memory_search($1, 'nurse', 10)", (ALICE,)),
    ("SELECT * FROM caller_memory.memory_list($1)", (ALICE,)),
    ("SELECT * FROM caller_memory.memory_history_list($1)", (ALICE,)),
    ("SELECT * FROM caller_memory.memory_stats()", ()),
    ("SELECT * FROM caller_memory.memory_stating($1, 'FACT', 'job')", (ALICE,)),
    ("SELECT caller_memory.memory_delete($1, 'FACT', 'job')", (ALICE,)),
    ("SELECT caller_memory.memory_delete_user($1)", (ALICE,)),
]

# Direct table access an API role might try.
TABLE_STATEMENTS: list[tuple[str, tuple[Any, ...]]] = [
    ("SELECT * FROM public.profiles", ()),
    ("SELECT * FROM caller_memory.memories", ()),
    ("SELECT * FROM caller_memory.memory_categories", ()),
    ("INSERT INTO public.profiles (id, original_identity) VALUES ($1, 'mallory')", (MALLORY,)),
    (
        "INSERT INTO caller_memory.memories (user_id, category, key, value) "
        "VALUES ($1, 'FACT', 'job', 'hacked')",
        (ALICE,),
    ),
    ("INSERT INTO caller_memory.memory_categories (category, priority) VALUES ('EVIL', -1)", ()),
    ("INSERT INTO caller_memory.erasures (user_id, erased_at) VALUES ($1, now())", (ALICE,)),
    ("UPDATE public.profiles SET original_identity = 'hacked'", ()),
    ("UPDATE caller_memory.memories SET value = 'hacked'", ()),
    ("UPDATE caller_memory.memory_categories SET priority = 99", ()),
    ("DELETE FROM caller_memory.memories", ()),
    ("DELETE FROM public.profiles", ()),
    ("DELETE FROM caller_memory.memory_categories", ()),
    ("SELECT * FROM caller_memory.erasures", ()),
    ("DELETE FROM caller_memory.erasures", ()),
]


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection to the emptied test database."""
    await truncate_all(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def seeded(db: asyncpg.Connection) -> asyncpg.Connection:
    """Alice (two memories) and Bob (one), written as the owner."""
    await db.execute(
        "INSERT INTO public.profiles (id, original_identity) VALUES ($1, 'alice'), ($2, 'bob')",
        ALICE,
        BOB,
    )
    await db.executemany(
        "INSERT INTO caller_memory.memories (user_id, category, key, value) "
        "VALUES ($1, $2, $3, $4)",
        [
            (ALICE, "FACT", "job", "nurse at the city hospital"),
            (ALICE, "PREFERENCE", "favorite_color", "blue"),
            (BOB, "FACT", "job", "pilot"),
        ],
    )
    return db


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables, as the owner sees them, in a stable order."""
    return {
        "profiles": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT id, original_identity, is_first_login, created_at, updated_at "
                "FROM public.profiles ORDER BY id"
            )
        ],
        "memories": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT id, user_id, category, key, value, kind, captured_at, created_at, "
                "updated_at FROM caller_memory.memories ORDER BY id"
            )
        ],
        "memory_categories": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT category, priority FROM caller_memory.memory_categories ORDER BY category"
            )
        ],
        "erasures": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT user_id, erased_at FROM caller_memory.erasures ORDER BY user_id"
            )
        ],
    }


async def as_role(cluster: PostgresCluster, role: str) -> asyncpg.Connection:
    """Log in as PostgREST does (`authenticator`) and switch to an API role."""
    conn = await asyncpg.connect(cluster.dsn(user="authenticator"))
    await conn.execute(f"SET ROLE {role}")
    assert await conn.fetchval("SELECT current_user") == role
    return conn


# -- what the migrations create ---------------------------------------------------------------


def test_migrations_are_named_for_the_supabase_cli() -> None:
    names = [path.name for path in migration_files()]
    assert len(names) >= 2
    for name in names:
        assert name[:14].isdigit() and name[14] == "_" and name.endswith(".sql"), name
    assert names == sorted(names)
    assert any(
        "drop constraint if exists profiles_id_fkey" in p.read_text().lower()
        for p in migration_files()[1:]
    )


async def test_tables_columns_and_indexes_exist(db: asyncpg.Connection) -> None:
    columns = await db.fetch(
        "SELECT table_schema || '.' || table_name AS qualified, column_name, data_type, "
        "is_nullable FROM information_schema.columns "
        "WHERE (table_schema || '.' || table_name) = ANY($1::text[]) "
        "ORDER BY table_name, ordinal_position",
        list(QUALIFIED.values()),
    )
    by_table: dict[str, list[tuple[str, str, str]]] = {}
    for r in columns:
        by_table.setdefault(r["qualified"], []).append(
            (r["column_name"], r["data_type"], r["is_nullable"])
        )
    assert by_table["public.profiles"] == [
        ("id", "uuid", "NO"),
        ("original_identity", "text", "YES"),
        ("is_first_login", "boolean", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("updated_at", "timestamp with time zone", "NO"),
    ]
    assert by_table["caller_memory.memory_categories"] == [
        ("category", "text", "NO"),
        ("priority", "integer", "NO"),
    ]
    assert by_table["caller_memory.memories"] == [
        ("id", "bigint", "NO"),
        ("user_id", "uuid", "NO"),
        ("category", "text", "NO"),
        ("key", "text", "NO"),
        ("value", "text", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("updated_at", "timestamp with time zone", "NO"),
        ("kind", "text", "NO"),
        ("captured_at", "timestamp with time zone", "NO"),
        ("context", "text", "YES"),
        ("said_on", "text", "YES"),
        ("cjk_pairs", "text", "YES"),
        ("session_id", "text", "YES"),
        ("turn_index", "integer", "YES"),
        ("superseded_at", "timestamp with time zone", "YES"),
        ("embedding_model", "text", "YES"),
        ("search", "tsvector", "YES"),
        ("embedding", "USER-DEFINED", "YES"),  # pgvector's vector(384), where installed
    ]
    assert by_table["caller_memory.memory_history"] == [
        ("id", "bigint", "NO"),
        ("user_id", "uuid", "NO"),
        ("category", "text", "NO"),
        ("key", "text", "NO"),
        ("value", "text", "NO"),
        ("valid_from", "timestamp with time zone", "NO"),
        ("valid_until", "timestamp with time zone", "NO"),
    ]
    assert by_table["caller_memory.memory_statements"] == [
        ("user_id", "uuid", "NO"),
        ("utterance_key", "text", "NO"),
        ("category", "text", "NO"),
        ("key", "text", "NO"),
        ("value", "text", "NO"),
    ]
    assert by_table["caller_memory.erasures"] == [
        ("user_id", "uuid", "NO"),
        ("erased_at", "timestamp with time zone", "NO"),
    ]
    # Nothing of the memory store is left in `public` but the summary's profiles table.
    assert (
        await db.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relname LIKE 'memor%'"
        )
        == []
    )
    assert (
        await db.fetchval(
            "SELECT is_identity FROM information_schema.columns WHERE table_schema = "
            "'caller_memory' AND table_name = 'memories' AND column_name = 'id'"
        )
        == "YES"
    )
    assert (
        await db.fetchval(
            "SELECT is_generated FROM information_schema.columns WHERE table_schema = "
            "'caller_memory' AND table_name = 'memories' AND column_name = 'search'"
        )
        == "ALWAYS"
    )

    indexes = {
        r["indexname"]: r["indexdef"]
        for r in await db.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'caller_memory' "
            "AND tablename = 'memories'"
        )
    }
    assert "USING gin (search)" in indexes["memories_search_idx"]
    assert "(user_id, updated_at DESC)" in indexes["memories_user_recent_idx"]
    assert (
        "(user_id, captured_at DESC, id DESC) WHERE (kind = 'utterance'::text)"
        in (indexes["memories_user_utterances_idx"])
    )
    assert any("UNIQUE" in d and "(user_id, category, key)" in d for d in indexes.values()), indexes

    constraints = sorted(
        r["def"]
        for r in await db.fetch(
            "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint "
            "WHERE contype IN ('f', 'c') AND conrelid = ANY($1::regclass[])",
            list(QUALIFIED.values()),
        )
    )
    assert constraints == [
        "CHECK ((kind = ANY (ARRAY['fact'::text, 'utterance'::text])))",
        "FOREIGN KEY (category) REFERENCES caller_memory.memory_categories(category)",
        "FOREIGN KEY (user_id) REFERENCES profiles(id) ON DELETE CASCADE",
    ]


async def test_categories_equal_memory_types(db: asyncpg.Connection) -> None:
    rows = await db.fetch("SELECT category, priority FROM caller_memory.memory_categories")
    assert {r["category"]: r["priority"] for r in rows} == {
        c.value: p for c, p in CATEGORY_PRIORITY.items()
    }


async def test_functions_have_the_agreed_signatures_and_settings(db: asyncpg.Connection) -> None:
    rows = await db.fetch(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args, "
        "pg_get_function_result(p.oid) AS result, p.prosecdef, p.proconfig "
        "FROM pg_proc p WHERE p.pronamespace = 'caller_memory'::regnamespace"
    )
    found = {r["proname"]: (r["args"], r["result"]) for r in rows}
    assert found == FUNCTIONS
    for r in rows:
        assert r["prosecdef"] is False, f"{r['proname']} must be SECURITY INVOKER"
        # dense search scans on past other callers' vectors (pgvector 0.8's iterative scan)
        scan = ["hnsw.iterative_scan=strict_order"] if r["proname"] == "memory_dense_search" else []
        assert r["proconfig"] == ['search_path=""', *scan], r["proname"]
    # No memory function is left in `public`, where Supabase's default grants apply.
    assert (
        await db.fetch(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace "
            "AND proname LIKE 'memory\\_%'"
        )
        == []
    )
    # Everything after the value is optional, as the Supabase backend may leave it out.
    assert (
        await db.fetchval(
            "SELECT pg_get_function_arguments('caller_memory.memory_upsert(uuid,text,text,text,"
            "text,text,timestamptz,timestamptz,integer,text,text,text,integer,jsonb,text)'"
            "::regprocedure)"
        )
        == "p_user_id uuid, p_category text, p_key text, p_value text, "
        "p_identity text DEFAULT NULL::text, p_kind text DEFAULT 'fact'::text, "
        "p_captured_at timestamp with time zone DEFAULT NULL::timestamp with time zone, "
        "p_session_started_at timestamp with time zone DEFAULT NULL::timestamp with time zone, "
        "p_max_utterances integer DEFAULT NULL::integer, p_context text DEFAULT NULL::text, "
        "p_said_on text DEFAULT NULL::text, p_session_id text DEFAULT NULL::text, "
        "p_turn_index integer DEFAULT NULL::integer, p_states jsonb DEFAULT NULL::jsonb, "
        "p_cjk_pairs text DEFAULT NULL::text"
    )


async def test_rls_enabled_with_no_policies_and_no_api_grants(db: asyncpg.Connection) -> None:
    rls = {
        r["relname"]: r["relrowsecurity"]
        for r in await db.fetch(
            "SELECT relname, relrowsecurity FROM pg_class WHERE oid = ANY($1::regclass[])",
            list(QUALIFIED.values()),
        )
    }
    assert rls == {t: True for t in TABLES}
    assert (
        await db.fetch(
            "SELECT * FROM pg_policies WHERE schemaname || '.' || tablename = ANY($1::text[])",
            list(QUALIFIED.values()),
        )
        == []
    )

    # Who holds which privilege: only the owner and service_role, never PUBLIC or API roles.
    table_grants = {
        (r["relname"], r["grantee"]): r["privileges"]
        for r in await db.fetch(
            "SELECT c.relname, coalesce(g.rolname, 'PUBLIC') AS grantee, "
            "array_agg(a.privilege_type ORDER BY a.privilege_type) AS privileges "
            "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
            "LEFT JOIN pg_roles g ON g.oid = a.grantee "
            "WHERE c.oid = ANY($1::regclass[]) GROUP BY 1, 2",
            list(QUALIFIED.values()),
        )
    }
    crud = ["DELETE", "INSERT", "SELECT", "UPDATE"]
    owner_all = ["DELETE", "INSERT", "REFERENCES", "SELECT", "TRIGGER", "TRUNCATE", "UPDATE"]
    assert table_grants == {
        ("profiles", "postgres"): owner_all,
        ("profiles", "service_role"): crud,
        ("memories", "postgres"): owner_all,
        ("memories", "service_role"): crud,
        ("memory_categories", "postgres"): owner_all,
        ("memory_categories", "service_role"): ["SELECT"],
        ("erasures", "postgres"): owner_all,
        ("erasures", "service_role"): crud,
        ("memory_history", "postgres"): owner_all,
        ("memory_history", "service_role"): crud,
        ("memory_statements", "postgres"): owner_all,
        ("memory_statements", "service_role"): crud,
    }

    function_grants = await db.fetch(
        "SELECT p.proname, array_agg(coalesce(g.rolname, 'PUBLIC') "
        "ORDER BY coalesce(g.rolname, 'PUBLIC')) "
        "AS grantees "
        "FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a "
        "LEFT JOIN pg_roles g ON g.oid = a.grantee "
        "WHERE p.pronamespace = 'caller_memory'::regnamespace "
        "AND a.privilege_type = 'EXECUTE' GROUP BY 1"
    )
    assert {r["proname"]: r["grantees"] for r in function_grants} == {
        name: ["postgres", "service_role"] for name in FUNCTIONS
    }
    # The API roles may not even look inside the schema; service_role may use it.
    for role in ("anon", "authenticated", "authenticator"):
        assert not await db.fetchval(
            "SELECT has_schema_privilege($1, 'caller_memory', 'USAGE')", role
        ), role
        for name in FUNCTIONS:
            assert not await db.fetchval(
                "SELECT bool_or(has_function_privilege($1, p.oid, 'EXECUTE')) FROM pg_proc p "
                "WHERE p.pronamespace = 'caller_memory'::regnamespace AND p.proname = $2",
                role,
                name,
            ), (role, name)
    assert await db.fetchval(
        "SELECT has_schema_privilege('service_role', 'caller_memory', 'USAGE')"
    )


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_what_a_later_migration_adds_to_the_memory_schema_is_not_reachable(
    pg_cluster: PostgresCluster, db: asyncpg.Connection, role: str
) -> None:
    """A table and a function a later migration creates, as the migrations' role, in the
    schema the migrations keep the memories in, start with no grant to the API roles (Supabase
    grants everything new in `public` to them by default; the test database does the same)."""
    schema = await db.fetchval(
        "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass($1)",
        QUALIFIED["memories"],
    )
    await db.execute(
        f"""
        CREATE TABLE {schema}.later_table (secret text);
        INSERT INTO {schema}.later_table VALUES ('a later secret');
        CREATE FUNCTION {schema}.later_function() RETURNS text
            LANGUAGE sql SECURITY DEFINER AS 'SELECT secret FROM {schema}.later_table';
        """
    )
    conn = await as_role(pg_cluster, role)
    try:
        for sql in (
            f"SELECT * FROM {schema}.later_table",
            f"INSERT INTO {schema}.later_table VALUES ('x')",
            f"SELECT {schema}.later_function()",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()
        await db.execute(
            f"DROP FUNCTION {schema}.later_function(); DROP TABLE {schema}.later_table"
        )


# -- behaviour of the schema ------------------------------------------------------------------


async def test_deleting_a_profile_cascades_to_its_memories(seeded: asyncpg.Connection) -> None:
    await seeded.execute("DELETE FROM public.profiles WHERE id = $1", ALICE)
    rows = await seeded.fetch(
        "SELECT user_id, category, key, value FROM caller_memory.memories ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [(BOB, "FACT", "job", "pilot")]


async def test_unknown_category_is_refused(seeded: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await seeded.execute(
            "SELECT caller_memory.memory_upsert($1, 'NOT_A_CATEGORY', 'k', 'v')", ALICE
        )


async def test_profiles_need_no_auth_user(seeded: asyncpg.Connection) -> None:
    """A profile id is a uuid5 of the LiveKit identity, never an auth.users id."""
    assert (
        await seeded.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.profiles'::regclass "
            "AND contype = 'f'"
        )
        == 0
    )
    row = await seeded.fetchrow(
        "SELECT * FROM caller_memory.memory_ensure_profile($1, 'm')", MALLORY
    )
    assert (row["id"], row["created"]) == (MALLORY, True)


async def test_rerunning_the_migrations_keeps_the_data(
    pg_cluster: PostgresCluster, fresh_database: str
) -> None:
    pg_cluster.apply_migrations(fresh_database)
    conn = await asyncpg.connect(pg_cluster.dsn(fresh_database))
    try:
        await conn.execute(
            "SELECT caller_memory.memory_upsert($1, 'FACT', 'job', 'nurse', 'alice')", ALICE
        )
        await conn.execute("SELECT caller_memory.memory_complete_first_login($1)", ALICE)
        before = await snapshot(conn)
        pg_cluster.apply_migrations(fresh_database)
        pg_cluster.apply_migrations(fresh_database)
        assert await snapshot(conn) == before
        assert len(before["memories"]) == 1 and before["profiles"][0][2] is False
    finally:
        await conn.close()


async def test_upgrading_an_older_deployment(
    pg_cluster: PostgresCluster, fresh_database: str
) -> None:
    """The summary's schema: profiles keyed to auth.users, with policies for end users."""
    auth_user = uuid.uuid4()
    pg_cluster.psql(
        f"""
        CREATE SCHEMA auth;
        CREATE TABLE auth.users (id uuid PRIMARY KEY);
        INSERT INTO auth.users VALUES ('{auth_user}');
        CREATE TABLE public.profiles (
            id uuid PRIMARY KEY REFERENCES auth.users (id),
            email text,
            is_first_login boolean DEFAULT true,
            created_at timestamptz DEFAULT now()
        );
        INSERT INTO public.profiles (id, email) VALUES ('{auth_user}', 'old@example.com');
        ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "own profile" ON public.profiles FOR SELECT TO authenticated
            USING (true);
        CREATE POLICY "anyone" ON public.profiles FOR ALL USING (true);
        """,
        dbname=fresh_database,
    )
    conn = await asyncpg.connect(pg_cluster.dsn(fresh_database))
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'profiles_id_fkey'"
            )
            == 1
        )
        pg_cluster.apply_migrations(fresh_database)
        pg_cluster.apply_migrations(fresh_database)

        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'profiles_id_fkey'"
            )
            == 0
        )
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_policies WHERE tablename = 'profiles'")
            == 0
        )
        old = await conn.fetchrow(
            "SELECT id, email, original_identity, is_first_login FROM public.profiles"
        )
        assert tuple(old) == (auth_user, "old@example.com", None, True)
        # A caller with no auth user at all now gets a profile and memories.
        row = await conn.fetchrow(
            "SELECT * FROM caller_memory.memory_ensure_profile($1, 'alice')", ALICE
        )
        assert (row["id"], row["original_identity"], row["created"]) == (ALICE, "alice", True)
        await conn.execute("SELECT caller_memory.memory_upsert($1, 'FACT', 'job', 'nurse')", ALICE)
        assert (
            await conn.fetchval("SELECT caller_memory.memory_get($1, 'FACT', 'job')", ALICE)
            == "nurse"
        )
    finally:
        await conn.close()


async def test_upgrading_the_previous_release_moves_the_memories_into_their_schema(
    pg_cluster: PostgresCluster, fresh_database: str
) -> None:
    """A deployment of the previous release (memories in `public`, written by its functions)
    keeps every memory, now typed and timed, in `caller_memory`; nothing is left in `public`."""
    earlier = [p for p in migration_files() if p.name < "20261130"]
    assert len(earlier) == 3
    for path in earlier:
        pg_cluster.psql(file=path, dbname=fresh_database)
    conn = await asyncpg.connect(pg_cluster.dsn(fresh_database))
    try:
        await conn.execute("SELECT public.memory_upsert($1, 'FACT', 'job', 'nurse', 'a')", ALICE)
        await conn.execute(
            "SELECT public.memory_upsert($1, 'INTEREST', 'utterance_17_ab', 'I paint')", ALICE
        )
        old = await conn.fetch("SELECT key, updated_at FROM public.memories ORDER BY key")
        pg_cluster.apply_migrations(fresh_database)
        pg_cluster.apply_migrations(fresh_database)
        rows = await conn.fetch(
            "SELECT key, value, kind, captured_at FROM caller_memory.memories ORDER BY key"
        )
        assert [tuple(r) for r in rows] == [
            ("job", "nurse", "fact", old[0]["updated_at"]),
            ("utterance_17_ab", "I paint", "utterance", old[1]["updated_at"]),
        ]
        assert (
            await conn.fetch(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                "AND relname LIKE 'memor%'"
            )
            == []
        )
        assert (
            await conn.fetch(
                "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace "
                "AND proname LIKE 'memory\\_%'"
            )
            == []
        )
    finally:
        await conn.close()


# -- row-level security and grants, for real -------------------------------------------------


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_api_roles_can_touch_nothing(
    pg_cluster: PostgresCluster, seeded: asyncpg.Connection, role: str
) -> None:
    before = await snapshot(seeded)
    assert len(before["profiles"]) == 2 and len(before["memories"]) == 3

    conn = await as_role(pg_cluster, role)
    try:
        for sql, args in TABLE_STATEMENTS + FUNCTION_CALLS:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql, *args)
    finally:
        await conn.close()

    assert await snapshot(seeded) == before


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_rls_alone_hides_every_row(
    pg_cluster: PostgresCluster, seeded: asyncpg.Connection, role: str
) -> None:
    """Even if a grant slipped back in, RLS with no policy shows and changes nothing.

    Inside a transaction that is rolled back, the owner grants the role every table
    privilege and EXECUTE; the role then sees zero rows, updates and deletes zero rows, and
    cannot insert, directly or through the (security invoker) functions.
    """
    before = await snapshot(seeded)
    tx = seeded.transaction()
    await tx.start()
    try:
        await seeded.execute(
            f"GRANT USAGE ON SCHEMA caller_memory TO {role}; "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(QUALIFIED.values())} "
            f"TO {role}; "
            f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA caller_memory TO {role}; "
            f"SET LOCAL ROLE {role}"
        )
        for table in QUALIFIED.values():
            assert await seeded.fetch(f"SELECT * FROM {table}") == []
        assert (
            await seeded.execute("UPDATE caller_memory.memories SET value = 'hacked'") == "UPDATE 0"
        )
        assert await seeded.execute("DELETE FROM caller_memory.memories") == "DELETE 0"
        assert await seeded.execute("DELETE FROM public.profiles") == "DELETE 0"

        assert await seeded.fetch("SELECT * FROM caller_memory.memory_list($1)", ALICE) == []
        assert await seeded.fetch("SELECT * FROM caller_memory.memory_get_profile($1)", ALICE) == []
        assert (
            await seeded.fetchval("SELECT caller_memory.memory_get($1, 'FACT', 'job')", ALICE)
            is None
        )
        assert (
            await seeded.fetch("SELECT * FROM caller_memory.memory_search($1, 'nurse', 9)", ALICE)
            == []
        )
        assert (
            await seeded.fetch("SELECT * FROM caller_memory.memory_search($1, '', 9)", ALICE) == []
        )
        assert (
            await seeded.fetchval("SELECT caller_memory.memory_complete_first_login($1)", ALICE)
            is False
        )
        assert (
            await seeded.fetchval("SELECT caller_memory.memory_delete($1, 'FACT', 'job')", ALICE)
            is False
        )

        for sql, args in [
            (TABLE_STATEMENTS[3][0], TABLE_STATEMENTS[3][1]),
            (TABLE_STATEMENTS[4][0], TABLE_STATEMENTS[4][1]),
            ("SELECT * FROM caller_memory.memory_ensure_profile($1, 'mallory')", (MALLORY,)),
            ("SELECT caller_memory.memory_upsert($1, 'FACT', 'job', 'hacked')", (ALICE,)),
            # An erasure must be recorded before anything is deleted: RLS refuses the record.
            ("SELECT caller_memory.memory_delete_user($1)", (ALICE,)),
        ]:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                async with seeded.transaction():  # a savepoint: the tx stays usable
                    await seeded.execute(sql, *args)
    finally:
        await tx.rollback()

    assert await snapshot(seeded) == before


async def test_service_role_can_do_everything(
    pg_cluster: PostgresCluster, seeded: asyncpg.Connection
) -> None:
    conn = await as_role(pg_cluster, "service_role")
    try:
        # Direct table access.
        rows = await conn.fetch(
            "SELECT user_id, category, key, value FROM caller_memory.memories ORDER BY id"
        )
        assert [tuple(r) for r in rows] == [
            (ALICE, "FACT", "job", "nurse at the city hospital"),
            (ALICE, "PREFERENCE", "favorite_color", "blue"),
            (BOB, "FACT", "job", "pilot"),
        ]
        assert await conn.fetchval("SELECT count(*) FROM caller_memory.memory_categories") == len(
            CATEGORY_PRIORITY
        )
        assert (
            await conn.execute(
                "UPDATE caller_memory.memories SET value = 'captain' WHERE user_id = $1", BOB
            )
            == "UPDATE 1"
        )
        assert (
            await conn.execute(
                "INSERT INTO caller_memory.memories (user_id, category, key, value) "
                "VALUES ($1, 'GOAL', 'fly', 'to the moon')",
                BOB,
            )
            == "INSERT 0 1"
        )
        assert (
            await conn.execute(
                "DELETE FROM caller_memory.memories WHERE user_id = $1 AND key = 'fly'", BOB
            )
            == "DELETE 1"
        )

        # Every function.
        row = await conn.fetchrow(
            "SELECT * FROM caller_memory.memory_ensure_profile($1, 'm')", MALLORY
        )
        assert (row["id"], row["original_identity"], row["is_first_login"], row["created"]) == (
            MALLORY,
            "m",
            True,
            True,
        )
        row = await conn.fetchrow("SELECT * FROM caller_memory.memory_get_profile($1)", ALICE)
        assert (row["id"], row["original_identity"], row["is_first_login"]) == (
            ALICE,
            "alice",
            True,
        )
        assert (
            await conn.fetchval("SELECT caller_memory.memory_complete_first_login($1)", ALICE)
            is True
        )
        assert (
            await conn.fetchval("SELECT caller_memory.memory_complete_first_login($1)", ALICE)
            is False
        )
        await conn.execute(
            "SELECT caller_memory.memory_upsert($1, 'FACT', 'job', 'surgeon')", ALICE
        )
        assert await conn.fetchval("SELECT caller_memory.memory_get($1, 'FACT', 'job')", ALICE) == (
            "surgeon"
        )
        found = await conn.fetch(
            "SELECT key, value FROM caller_memory.memory_search($1, 'blue', 5)", ALICE
        )
        assert [tuple(r) for r in found] == [("favorite_color", "blue")]
        listed = await conn.fetch(
            "SELECT category, key, value FROM caller_memory.memory_list($1)", ALICE
        )
        assert [tuple(r) for r in listed] == [
            ("FACT", "job", "surgeon"),
            ("PREFERENCE", "favorite_color", "blue"),
        ]
        assert (
            await conn.fetchval("SELECT caller_memory.memory_delete($1, 'FACT', 'job')", ALICE)
            is True
        )
        assert await conn.fetchval("SELECT caller_memory.memory_delete_user($1)", ALICE) == 1
        assert await conn.fetchval("SELECT caller_memory.memory_delete_user($1)", BOB) == 1
    finally:
        await conn.close()

    after = await snapshot(seeded)
    assert [r[0] for r in after["profiles"]] == [MALLORY]
    assert after["memories"] == []
