-- The memory store moves into a schema of its own, `caller_memory`, and gains the erasure
-- rule: a record of every "forget me" (a tombstone with its time) that refuses, inside the
-- same function every writer calls, any later write of something known before it.
--
-- Why a schema of its own: Supabase grants every new table, sequence and function in
-- `public` to `anon` and `authenticated` by default. The earlier migrations took those grants
-- back by name, which protects only the objects they named: anything a later migration adds
-- in `public` would be reachable with the anon key. In `caller_memory` the API roles have no
-- USAGE on the schema and no default privileges, so nothing created here, now or later, is
-- reachable by them. (Revoking the defaults in `public` instead would change them for every
-- other table of the project.) `public.profiles` stays where it is: it is the design
-- summary's profiles table, which other code of a project may use.
--
-- Supabase: add `caller_memory` to the API's exposed schemas (Dashboard: Project Settings >
-- Data API > Exposed schemas), so the worker can call these functions with the service-role
-- key. The API roles still cannot: they have no USAGE on the schema.
--
-- Upgrading: the tables of the earlier migrations are moved here with their data (or, when
-- both exist because the earlier files were run again, their rows are merged here and the
-- copies in `public` dropped), and the functions in `public` are dropped. Every statement is
-- idempotent: running every migration again leaves the same database.

create schema if not exists caller_memory;

revoke all on schema caller_memory from public, anon, authenticated;
grant usage on schema caller_memory to service_role;

-- Whatever the migration role creates in this schema later starts with no grant to anyone
-- but its owner; each migration grants service_role exactly what it needs.
alter default privileges in schema caller_memory revoke all on tables from public, anon, authenticated;
alter default privileges in schema caller_memory revoke all on sequences from public, anon, authenticated;
alter default privileges in schema caller_memory revoke all on functions from public, anon, authenticated;
alter default privileges in schema caller_memory revoke all on types from public, anon, authenticated;

-- -- the tables ----------------------------------------------------------------------------

do $$
declare
    t text;
begin
    foreach t in array array['memory_categories', 'memories'] loop
        if to_regclass('public.' || t) is not null then
            if to_regclass('caller_memory.' || t) is null then
                execute format('alter table public.%I set schema caller_memory', t);
            elsif t = 'memory_categories' then
                insert into caller_memory.memory_categories (category, priority)
                select category, priority from public.memory_categories
                on conflict (category) do nothing;
            else
                insert into caller_memory.memories
                    (user_id, category, key, value, created_at, updated_at)
                select user_id, category, key, value, created_at, updated_at
                from public.memories
                on conflict (user_id, category, key) do nothing;
            end if;
        end if;
    end loop;
    -- Dropped only after both merges: public.memories references public.memory_categories.
    drop table if exists public.memories;
    drop table if exists public.memory_categories;
end
$$;

create table if not exists caller_memory.memory_categories (
    category text primary key,
    priority integer not null
);

-- Lower priority = more important; the same numbers as memory_types.CATEGORY_PRIORITY.
insert into caller_memory.memory_categories (category, priority) values
    ('PRESENTATION', 0),
    ('FACT', 1),
    ('RELATIONSHIP', 2),
    ('PREFERENCE', 3),
    ('GOAL', 4),
    ('PLAN', 5),
    ('INTEREST', 6),
    ('OPINION', 7),
    ('EXPERIENCE', 8),
    ('CAMPAIGNS', 9),
    ('LORE', 10)
on conflict (category) do update set priority = excluded.priority;

create table if not exists caller_memory.memories (
    id         bigint generated always as identity primary key,
    user_id    uuid not null references public.profiles (id) on delete cascade,
    category   text not null references caller_memory.memory_categories (category),
    key        text not null,
    value      text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (user_id, category, key)
);

alter table caller_memory.memories add column if not exists search tsvector
    generated always as (
        setweight(to_tsvector('english'::regconfig, replace(key, '_', ' ')), 'A')
        || setweight(to_tsvector('english'::regconfig, value), 'B')
    ) stored;

-- What a memory is: a stable fact (one value per key, replaced when it changes) or the
-- caller's own words (one row per message). Rows from before this column are classified by
-- the key prefix that used to stand in for it.
alter table caller_memory.memories add column if not exists kind text;
update caller_memory.memories
set kind = case when starts_with(key, 'utterance_') then 'utterance' else 'fact' end
where kind is null;
alter table caller_memory.memories alter column kind set default 'fact';
alter table caller_memory.memories alter column kind set not null;
alter table caller_memory.memories drop constraint if exists memories_kind_check;
alter table caller_memory.memories
    add constraint memories_kind_check check (kind in ('fact', 'utterance'));

-- When the caller said it: writes of one key are ordered by it (last writer by capture time
-- wins, whichever worker writes last). Rows from before this column take their update time.
alter table caller_memory.memories add column if not exists captured_at timestamptz;
update caller_memory.memories set captured_at = updated_at where captured_at is null;
alter table caller_memory.memories alter column captured_at set default now();
alter table caller_memory.memories alter column captured_at set not null;

create index if not exists memories_search_idx on caller_memory.memories using gin (search);
create index if not exists memories_user_recent_idx
    on caller_memory.memories (user_id, updated_at desc);
-- The per-caller cap on utterances drops the oldest first.
create index if not exists memories_user_utterances_idx
    on caller_memory.memories (user_id, captured_at desc, id desc) where kind = 'utterance';

-- One row per erased caller: the time of their latest erasure. It holds no memory and no
-- identity, only the uuid, and must outlive the profile: it is what refuses a write captured
-- before the erasure (a spool replay on any worker, a session still running).
create table if not exists caller_memory.erasures (
    user_id   uuid primary key,
    erased_at timestamptz not null
);

alter table caller_memory.memory_categories enable row level security;
alter table caller_memory.memories enable row level security;
alter table caller_memory.erasures enable row level security;

do $$
declare
    pol record;
begin
    for pol in
        select schemaname, tablename, policyname
        from pg_policies
        where schemaname = 'caller_memory'
    loop
        execute format('drop policy %I on %I.%I', pol.policyname, pol.schemaname, pol.tablename);
    end loop;
end
$$;

revoke all on table caller_memory.memory_categories, caller_memory.memories,
    caller_memory.erasures from public, anon, authenticated, service_role;
grant select on table caller_memory.memory_categories to service_role;
grant select, insert, update, delete on table caller_memory.memories, caller_memory.erasures
    to service_role;

do $$
declare
    seq text := pg_get_serial_sequence('caller_memory.memories', 'id');
begin
    if seq is not null then
        execute format(
            'revoke all on sequence %s from public, anon, authenticated, service_role', seq
        );
        execute format('grant usage, select on sequence %s to service_role', seq);
    end if;
end
$$;

-- -- the functions ---------------------------------------------------------------------------
-- Each query is written once, here: the Postgres backend calls them over asyncpg and the
-- Supabase backend through PostgREST `rpc`. All are SECURITY INVOKER (they run with the
-- caller's rights, so RLS and the grants apply) with an empty search_path (every name is
-- schema-qualified, so nothing in another schema can stand in for a table).

do $$
declare
    fn regprocedure;
begin
    for fn in
        select p.oid::regprocedure
        from pg_proc as p
        where p.pronamespace = 'public'::regnamespace
          and p.proname in (
              'memory_ensure_profile', 'memory_get_profile', 'memory_complete_first_login',
              'memory_upsert', 'memory_get', 'memory_search_tsquery', 'memory_search',
              'memory_list', 'memory_delete', 'memory_delete_user'
          )
    loop
        execute format('drop function %s', fn);
    end loop;
end
$$;

-- Writers of one caller (shared) and that caller's erasure (exclusive) serialise on this
-- lock, so a write racing an erasure either lands before it (and is deleted by it) or sees
-- its tombstone: it can never land after it.
create or replace function caller_memory.user_lock_key(p_user_id uuid)
returns bigint
language sql
immutable
parallel safe
security invoker
set search_path = ''
as $$
    select pg_catalog.hashtextextended('caller_memory.user:' || p_user_id::text, 0);
$$;

create or replace function caller_memory.memory_ensure_profile(p_user_id uuid, p_identity text)
returns table (
    id uuid,
    original_identity text,
    is_first_login boolean,
    created_at timestamptz,
    updated_at timestamptz,
    created boolean
)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
#variable_conflict use_column
declare
    v_created boolean;
begin
    insert into public.profiles as p (id, original_identity)
    values (p_user_id, p_identity)
    on conflict (id) do nothing;
    v_created := found;

    if not v_created and p_identity is not null then
        update public.profiles as p
        set original_identity = p_identity, updated_at = now()
        where p.id = p_user_id and p.original_identity is null;
    end if;

    -- A new statement, so a new snapshot: it sees a row a concurrent call just committed.
    return query
        select p.id, p.original_identity, p.is_first_login, p.created_at, p.updated_at, v_created
        from public.profiles as p
        where p.id = p_user_id;
end
$$;

create or replace function caller_memory.memory_get_profile(p_user_id uuid)
returns table (
    id uuid,
    original_identity text,
    is_first_login boolean,
    created_at timestamptz,
    updated_at timestamptz
)
language sql
stable
security invoker
set search_path = ''
as $$
    select p.id, p.original_identity, p.is_first_login, p.created_at, p.updated_at
    from public.profiles as p
    where p.id = p_user_id;
$$;

-- True only for the one call that flipped is_first_login.
create or replace function caller_memory.memory_complete_first_login(p_user_id uuid)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
    with flipped as (
        update public.profiles as p
        set is_first_login = false, updated_at = now()
        where p.id = p_user_id and p.is_first_login
        returning 1
    )
    select count(*) = 1 from flipped;
$$;

-- Insert or replace one memory; returns what happened: 'stored', 'stale' (the stored value
-- of this key was captured later: last writer by capture time wins) or 'erased' (the caller
-- was erased at or after p_session_started_at, the start of the session that heard it: what
-- was known before an erasure is never written again). Creates the caller's profile when it
-- stores. With p_max_utterances, the caller's oldest utterances beyond that many are dropped
-- (stable facts never are).
create or replace function caller_memory.memory_upsert(
    p_user_id uuid,
    p_category text,
    p_key text,
    p_value text,
    p_identity text default null,
    p_kind text default 'fact',
    p_captured_at timestamptz default null,
    p_session_started_at timestamptz default null,
    p_max_utterances integer default null
)
returns text
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_captured timestamptz := coalesce(p_captured_at, now());
    v_started timestamptz := coalesce(p_session_started_at, p_captured_at, now());
    v_inserted boolean;
begin
    perform pg_catalog.pg_advisory_xact_lock_shared(caller_memory.user_lock_key(p_user_id));

    if exists (
        select 1 from caller_memory.erasures as e
        where e.user_id = p_user_id and e.erased_at >= v_started
    ) then
        return 'erased';
    end if;

    insert into public.profiles (id, original_identity)
    values (p_user_id, p_identity)
    on conflict (id) do nothing;

    insert into caller_memory.memories as m
        (user_id, category, key, value, kind, captured_at)
    values (p_user_id, p_category, p_key, p_value, coalesce(p_kind, 'fact'), v_captured)
    on conflict (user_id, category, key) do update
        set value = excluded.value,
            kind = excluded.kind,
            captured_at = excluded.captured_at,
            updated_at = now()
        where m.captured_at <= excluded.captured_at
    returning (xmax = 0) into v_inserted;

    if v_inserted is null then
        return 'stale';
    end if;

    if v_inserted and p_kind = 'utterance' and p_max_utterances is not null then
        delete from caller_memory.memories as m
        where m.id in (
            select u.id
            from caller_memory.memories as u
            where u.user_id = p_user_id and u.kind = 'utterance'
            order by u.captured_at desc, u.id desc
            offset greatest(p_max_utterances, 0)
        );
    end if;
    return 'stored';
end
$$;

create or replace function caller_memory.memory_get(p_user_id uuid, p_category text, p_key text)
returns text
language sql
stable
security invoker
set search_path = ''
as $$
    select m.value
    from caller_memory.memories as m
    where m.user_id = p_user_id and m.category = p_category and m.key = p_key;
$$;

-- The text-search query for free text: its words, stemmed with the english configuration
-- and OR-ed. Each lexeme comes out of the text-search parser and is quoted as one operand,
-- so characters and keywords that are tsquery syntax in the caller's text are never parsed
-- as syntax. NULL when the text holds no searchable word.
create or replace function caller_memory.memory_search_tsquery(p_query text)
returns tsquery
language sql
immutable
parallel safe
security invoker
set search_path = ''
as $$
    select string_agg(
               '''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''',
               ' | '
           )::tsquery
    from (
        select lexeme
        from unnest(tsvector_to_array(
            to_tsvector('english'::regconfig, replace(left(coalesce(p_query, ''), 2000), '_', ' '))
        )) as lexeme
        limit 64
    ) as words;
$$;

-- The caller's memories most relevant to p_query, best first (text-search rank, then
-- category priority, then the most recently updated). A query with no words at all returns
-- the caller's most important memories (stable facts before utterances, by category, newest
-- first); a query whose words are all stop words matches nothing.
-- (dropped first: a later migration changes what it returns, and these files may run again)
drop function if exists caller_memory.memory_search(uuid, text, integer);
create or replace function caller_memory.memory_search(
    p_user_id uuid, p_query text, p_limit integer
)
returns table (
    category text,
    key text,
    value text,
    created_at timestamptz,
    updated_at timestamptz,
    score real,
    kind text
)
language plpgsql
stable
security invoker
set search_path = ''
as $$
#variable_conflict use_column
declare
    v_query tsquery := caller_memory.memory_search_tsquery(p_query);
    v_limit integer := greatest(coalesce(p_limit, 0), 0);
begin
    if v_query is null then
        if to_tsvector('simple'::regconfig, coalesce(p_query, '')) <> ''::tsvector then
            return;  -- words, but none that can be searched for: nothing is relevant
        end if;
        return query
            select m.category, m.key, m.value, m.created_at, m.updated_at, 0::real, m.kind
            from caller_memory.memories as m
            join caller_memory.memory_categories as c on c.category = m.category
            where m.user_id = p_user_id
            order by m.kind = 'utterance', c.priority, m.updated_at desc, m.id desc
            limit v_limit;
        return;
    end if;

    return query
        select m.category, m.key, m.value, m.created_at, m.updated_at,
               ts_rank_cd('{0, 0, 0.5, 1}'::real[], m.search, v_query, 1) as score, m.kind
        from caller_memory.memories as m
        join caller_memory.memory_categories as c on c.category = m.category
        where m.user_id = p_user_id and m.search @@ v_query
        order by score desc, c.priority, m.updated_at desc, m.id desc
        limit v_limit;
end
$$;

-- Every memory of the caller, most important category first, then by key (byte order).
create or replace function caller_memory.memory_list(p_user_id uuid)
returns table (
    category text,
    key text,
    value text,
    created_at timestamptz,
    updated_at timestamptz,
    kind text
)
language sql
stable
security invoker
set search_path = ''
as $$
    select m.category, m.key, m.value, m.created_at, m.updated_at, m.kind
    from caller_memory.memories as m
    join caller_memory.memory_categories as c on c.category = m.category
    where m.user_id = p_user_id
    order by c.priority, m.key collate "C";
$$;

create or replace function caller_memory.memory_delete(
    p_user_id uuid, p_category text, p_key text
)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
    with gone as (
        delete from caller_memory.memories as m
        where m.user_id = p_user_id and m.category = p_category and m.key = p_key
        returning 1
    )
    select count(*) > 0 from gone;
$$;

-- Forget a caller entirely: record the erasure (keeping the latest time), then delete every
-- memory and the profile. Returns the memories deleted.
create or replace function caller_memory.memory_delete_user(
    p_user_id uuid, p_erased_at timestamptz default null
)
returns integer
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_deleted integer;
begin
    perform pg_catalog.pg_advisory_xact_lock(caller_memory.user_lock_key(p_user_id));

    insert into caller_memory.erasures as e (user_id, erased_at)
    values (p_user_id, coalesce(p_erased_at, now()))
    on conflict (user_id) do update
        set erased_at = greatest(e.erased_at, excluded.erased_at);

    delete from caller_memory.memories as m where m.user_id = p_user_id;
    get diagnostics v_deleted = row_count;
    delete from public.profiles as p where p.id = p_user_id;
    return v_deleted;
end
$$;

-- Only service_role (and the owner) may call the functions.
do $$
declare
    fn regprocedure;
begin
    for fn in
        select p.oid::regprocedure
        from pg_proc as p
        where p.pronamespace = 'caller_memory'::regnamespace
    loop
        execute format(
            'revoke all on function %s from public, anon, authenticated, service_role', fn
        );
        execute format('grant execute on function %s to service_role', fn);
    end loop;
end
$$;
