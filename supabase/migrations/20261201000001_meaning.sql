-- Memory that understands: what each memory answers and when, facts that update, and search
-- by meaning where the database can do it.
--
-- - Every memory keeps what was said just before it (`context`: in a call, the agent's line
--   the caller answered), the day it was said (`said_on`, in words), and where it was said
--   (`session_id`, `turn_index`). The lexical index covers the value with its context and
--   date, in the english configuration (stemmed) and in `simple` (any language, unstemmed).
-- - A stable fact replaced by a newer value is kept in `memory_history` (with when it stopped
--   being true), and the caller's utterances that stated the old value (`memory_statements`)
--   are marked superseded: search never returns either.
-- - With pgvector (Supabase has it; `create extension vector`), each memory may carry an
--   embedding and search combines text and meaning. Without it these migrations still apply,
--   and search is lexical only (the worker says so once at start-up).
--
-- Every statement is idempotent.

-- -- columns ----------------------------------------------------------------------------------

alter table caller_memory.memories add column if not exists context text;
alter table caller_memory.memories add column if not exists said_on text;
-- the character pairs of Chinese/Japanese/Korean text in value and context (written by the
-- store from caller_memory.text.cjk_pairs; indexed, never returned)
alter table caller_memory.memories add column if not exists cjk_pairs text;
alter table caller_memory.memories add column if not exists session_id text;
alter table caller_memory.memories add column if not exists turn_index integer;
alter table caller_memory.memories add column if not exists superseded_at timestamptz;
alter table caller_memory.memories add column if not exists embedding_model text;

-- The lexical index, rebuilt once with the context, the date and the `simple` configuration.
do $$
begin
    if coalesce((
        select pg_get_expr(d.adbin, d.adrelid)
        from pg_attrdef d
        join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
        where d.adrelid = 'caller_memory.memories'::regclass and a.attname = 'search'
    ), '') not like '%cjk_pairs%' then
        alter table caller_memory.memories drop column if exists search;
        alter table caller_memory.memories add column search tsvector
            generated always as (
                setweight(to_tsvector('english'::regconfig, replace(key, '_', ' ')), 'A')
                || setweight(to_tsvector('english'::regconfig, value), 'B')
                || setweight(to_tsvector('simple'::regconfig, value), 'B')
                || setweight(to_tsvector('english'::regconfig, coalesce(context, '')), 'D')
                || setweight(to_tsvector('simple'::regconfig, coalesce(context, '')), 'D')
                || setweight(to_tsvector('simple'::regconfig, coalesce(said_on, '')), 'D')
                || setweight(to_tsvector('simple'::regconfig, coalesce(cjk_pairs, '')), 'B')
            ) stored;
    end if;
end
$$;

create index if not exists memories_search_idx on caller_memory.memories using gin (search);
create index if not exists memories_user_session_idx
    on caller_memory.memories (user_id, session_id, turn_index) where session_id is not null;

-- -- history and statements ----------------------------------------------------------------------

-- Values of a stable fact that were replaced: kept, with when each stopped being true, and
-- never searched. Erasing a caller deletes these too.
create table if not exists caller_memory.memory_history (
    id          bigint generated always as identity primary key,
    user_id     uuid not null,
    category    text not null,
    key         text not null,
    value       text not null,
    valid_from  timestamptz not null,
    valid_until timestamptz not null
);
create index if not exists memory_history_user_idx
    on caller_memory.memory_history (user_id, category, key);

-- Which stable facts an utterance of the caller stated (so that when a fact changes, the
-- words that stated the old value stop being recalled, and forgetting a fact reaches them).
create table if not exists caller_memory.memory_statements (
    user_id       uuid not null,
    utterance_key text not null,
    category      text not null,
    key           text not null,
    value         text not null,
    primary key (user_id, utterance_key, category, key)
);
create index if not exists memory_statements_fact_idx
    on caller_memory.memory_statements (user_id, category, key);

alter table caller_memory.memory_history enable row level security;
alter table caller_memory.memory_statements enable row level security;
revoke all on table caller_memory.memory_history, caller_memory.memory_statements
    from public, anon, authenticated, service_role;
grant select, insert, update, delete
    on table caller_memory.memory_history, caller_memory.memory_statements to service_role;

do $$
declare
    seq text := pg_get_serial_sequence('caller_memory.memory_history', 'id');
begin
    execute format('revoke all on sequence %s from public, anon, authenticated, service_role', seq);
    execute format('grant usage, select on sequence %s to service_role', seq);
end
$$;

-- -- pgvector, where it exists -------------------------------------------------------------------

do $$
begin
    if exists (select 1 from pg_available_extensions where name = 'vector') then
        create extension if not exists vector with schema extensions;
    end if;
exception
    when invalid_schema_name then  -- no `extensions` schema (plain Postgres): the default one
        create extension if not exists vector;
end
$$;

do $$
declare
    v_type text;
begin
    select format('%I.vector', n.nspname) into v_type
    from pg_type t join pg_namespace n on n.oid = t.typnamespace
    where t.typname = 'vector' and n.nspname in ('extensions', 'public')
    limit 1;
    if v_type is not null then
        execute format(
            'alter table caller_memory.memories add column if not exists embedding %s(384)', v_type
        );
    end if;
end
$$;

-- -- the functions -------------------------------------------------------------------------------

-- Insert or replace one memory: the write rule of the previous migration (erasure, last
-- capture wins, the utterance cap), now also keeping what a memory answers and when, and the
-- history of facts: a stable fact replaced by another value goes to memory_history, and the
-- utterances that stated its old value are marked superseded; an utterance is stored with
-- the facts it states (p_states: a JSON array of {"category","key","value"}), and arrives
-- superseded if one of those has a newer value already.
drop function if exists caller_memory.memory_upsert(
    uuid, text, text, text, text, text, timestamptz, timestamptz, integer
);
create or replace function caller_memory.memory_upsert(
    p_user_id uuid,
    p_category text,
    p_key text,
    p_value text,
    p_identity text default null,
    p_kind text default 'fact',
    p_captured_at timestamptz default null,
    p_session_started_at timestamptz default null,
    p_max_utterances integer default null,
    p_context text default null,
    p_said_on text default null,
    p_session_id text default null,
    p_turn_index integer default null,
    p_states jsonb default null,
    p_cjk_pairs text default null
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
    v_kind text := coalesce(p_kind, 'fact');
    v_old record;
    v_superseded timestamptz;
begin
    perform pg_catalog.pg_advisory_xact_lock_shared(caller_memory.user_lock_key(p_user_id));

    if exists (
        select 1 from caller_memory.erasures as e
        where e.user_id = p_user_id and e.erased_at >= v_started
    ) then
        return 'erased';
    end if;

    select m.value, m.captured_at into v_old
    from caller_memory.memories as m
    where m.user_id = p_user_id and m.category = p_category and m.key = p_key
    for update;
    if found and v_old.captured_at > v_captured then
        return 'stale';
    end if;

    insert into public.profiles (id, original_identity)
    values (p_user_id, p_identity)
    on conflict (id) do nothing;

    -- An utterance stating a value that a later capture already replaced is old news.
    if v_kind = 'utterance' and p_states is not null then
        select min(f.captured_at) into v_superseded
        from jsonb_to_recordset(p_states) as s(category text, key text, value text)
        join caller_memory.memories as f
            on f.user_id = p_user_id and f.category = s.category and f.key = s.key
        where f.kind = 'fact' and f.value <> s.value and f.captured_at > v_captured;
    end if;

    insert into caller_memory.memories as m
        (user_id, category, key, value, kind, captured_at, context, said_on, cjk_pairs,
         session_id, turn_index, superseded_at)
    values (p_user_id, p_category, p_key, p_value, v_kind, v_captured, p_context, p_said_on,
            p_cjk_pairs, p_session_id, p_turn_index, v_superseded)
    on conflict (user_id, category, key) do update
        set value = excluded.value,
            kind = excluded.kind,
            captured_at = excluded.captured_at,
            context = excluded.context,
            said_on = excluded.said_on,
            cjk_pairs = excluded.cjk_pairs,
            session_id = excluded.session_id,
            turn_index = excluded.turn_index,
            superseded_at = excluded.superseded_at,
            updated_at = now(),
            embedding_model = case
                when m.value = excluded.value then m.embedding_model end;

    if v_kind = 'utterance' and p_states is not null then
        insert into caller_memory.memory_statements (user_id, utterance_key, category, key, value)
        select p_user_id, p_key, s.category, s.key, s.value
        from jsonb_to_recordset(p_states) as s(category text, key text, value text)
        on conflict do nothing;
    end if;

    if v_kind = 'fact' and v_old.value is not null and v_old.value <> p_value then
        insert into caller_memory.memory_history
            (user_id, category, key, value, valid_from, valid_until)
        values (p_user_id, p_category, p_key, v_old.value, v_old.captured_at, v_captured);
        update caller_memory.memories as u
        set superseded_at = v_captured
        from caller_memory.memory_statements as s
        where s.user_id = p_user_id and s.category = p_category and s.key = p_key
          and s.value <> p_value
          and u.user_id = p_user_id and u.key = s.utterance_key and u.kind = 'utterance'
          and u.superseded_at is null;
    end if;

    if v_kind = 'utterance' and p_max_utterances is not null and v_old.value is null then
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

-- The text-search query for free text: its words, stemmed (english) and as they are
-- (simple, any language), OR-ed; each lexeme quoted as one operand, so nothing in the
-- caller's text is parsed as tsquery syntax. NULL when the text holds no searchable word.
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
        select distinct lexeme
        from unnest(
            tsvector_to_array(to_tsvector(
                'english'::regconfig, replace(left(coalesce(p_query, ''), 2000), '_', ' ')
            ))
            || tsvector_to_array(to_tsvector(
                'simple'::regconfig, replace(left(coalesce(p_query, ''), 2000), '_', ' ')
            ))
        ) as lexeme
        limit 128
    ) as words;
$$;

-- The caller's current memories ranked by text (superseded ones never): the candidates of
-- lexical search, with their raw rank and where they were said. A query with no words at all
-- returns the caller's most important memories (stable facts before utterances, by category,
-- newest first); a query whose words are all stop words matches nothing.
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
    kind text,
    session_id text,
    turn_index integer
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
            select m.category, m.key, m.value, m.created_at, m.updated_at, 0::real, m.kind,
                   m.session_id, m.turn_index
            from caller_memory.memories as m
            join caller_memory.memory_categories as c on c.category = m.category
            where m.user_id = p_user_id and m.superseded_at is null
            order by m.kind = 'utterance', c.priority, m.updated_at desc, m.id desc
            limit v_limit;
        return;
    end if;

    return query
        select m.category, m.key, m.value, m.created_at, m.updated_at,
               ts_rank_cd('{0.1, 0.2, 0.5, 1}'::real[], m.search, v_query, 1) as score,
               m.kind, m.session_id, m.turn_index
        from caller_memory.memories as m
        join caller_memory.memory_categories as c on c.category = m.category
        where m.user_id = p_user_id and m.search @@ v_query and m.superseded_at is null
        order by score desc, c.priority, m.updated_at desc, m.id desc
        limit v_limit;
end
$$;

-- The caller's current memories nearest in meaning to p_embedding (cosine similarity), among
-- those embedded by p_model; empty where pgvector is missing. The vector travels as text
-- ('[0.1, ...]') so that this signature exists on every database.
create or replace function caller_memory.memory_dense_search(
    p_user_id uuid, p_embedding text, p_model text, p_limit integer
)
returns table (
    category text,
    key text,
    value text,
    created_at timestamptz,
    updated_at timestamptz,
    score real,
    kind text,
    session_id text,
    turn_index integer
)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
    return;  -- replaced below where pgvector exists
end
$$;

-- Attach an embedding (as text) to one memory; false where pgvector is missing or the memory
-- is gone (or changed since: p_value must still be its value).
create or replace function caller_memory.memory_set_embedding(
    p_user_id uuid, p_category text, p_key text, p_value text, p_embedding text, p_model text
)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
    return false;  -- replaced below where pgvector exists
end
$$;

-- Whether this database can search by meaning (pgvector is installed).
create or replace function caller_memory.memory_has_vectors()
returns boolean
language sql
stable
security invoker
set search_path = ''
as $$
    select exists (
        select 1 from pg_catalog.pg_attribute
        where attrelid = 'caller_memory.memories'::regclass and attname = 'embedding'
          and not attisdropped
    );
$$;

do $$
declare
    v_ops text;
    v_type text;
    v_scan text := '';
begin
    if not caller_memory.memory_has_vectors() then
        return;
    end if;
    -- The HNSW index holds every caller's vectors; one caller's nearest are found by scanning
    -- on past the other callers' (pgvector 0.8's iterative scan) instead of stopping at the
    -- first ef_search candidates, which may all be someone else's.
    if exists (
        select 1 from pg_extension
        where extname = 'vector'
          and string_to_array(split_part(extversion, '-', 1), '.')::int[] >= '{0,8}'::int[]
    ) then
        v_scan := 'set hnsw.iterative_scan = strict_order';
    end if;
    select format('%I.vector', n.nspname), format('%I.vector_cosine_ops', n.nspname)
    into v_type, v_ops
    from pg_type t join pg_namespace n on n.oid = t.typnamespace
    where t.typname = 'vector' and n.nspname in ('extensions', 'public')
    limit 1;

    execute format(
        'create index if not exists memories_embedding_idx on caller_memory.memories '
        'using hnsw (embedding %s) where embedding is not null', v_ops
    );

    execute format($f$
        create or replace function caller_memory.memory_dense_search(
            p_user_id uuid, p_embedding text, p_model text, p_limit integer
        )
        returns table (
            category text, key text, value text, created_at timestamptz,
            updated_at timestamptz, score real, kind text, session_id text,
            turn_index integer
        )
        language plpgsql
        stable
        security invoker
        set search_path = ''
        %3$s
        as $body$
        #variable_conflict use_column
        declare
            -- parsed once: a cast of the parameter in the query itself is evaluated again
            -- for every row it is compared with
            v_query %2$s := p_embedding::%2$s;
        begin
            -- ordered by the distance alone, so the HNSW index can serve it
            return query
            select m.category, m.key, m.value, m.created_at, m.updated_at,
                   (1 - (m.embedding OPERATOR(%1$s.<=>) v_query))::real,
                   m.kind, m.session_id, m.turn_index
            from caller_memory.memories as m
            where m.user_id = p_user_id and m.embedding_model = p_model
              and m.embedding is not null and m.superseded_at is null
            order by m.embedding OPERATOR(%1$s.<=>) v_query
            limit greatest(coalesce(p_limit, 0), 0);
        end
        $body$
    $f$, split_part(v_type, '.', 1), v_type, v_scan);

    execute format($f$
        create or replace function caller_memory.memory_set_embedding(
            p_user_id uuid, p_category text, p_key text, p_value text, p_embedding text,
            p_model text
        )
        returns boolean
        language sql
        volatile
        security invoker
        set search_path = ''
        as $body$
            with done as (
                update caller_memory.memories as m
                set embedding = p_embedding::%1$s, embedding_model = p_model
                where m.user_id = p_user_id and m.category = p_category and m.key = p_key
                  and m.value = p_value
                returning 1
            )
            select count(*) > 0 from done;
        $body$
    $f$, v_type);
end
$$;

-- Memories still without a vector of p_model (for the backfill command), oldest first.
drop function if exists caller_memory.memory_unembedded(text, integer);
create or replace function caller_memory.memory_unembedded(p_model text, p_limit integer)
returns table (
    user_id uuid,
    category text,
    key text,
    value text,
    context text,
    said_on text,
    kind text
)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
    if not caller_memory.memory_has_vectors() then
        return;
    end if;
    return query
        select m.user_id, m.category, m.key, m.value, m.context, m.said_on, m.kind
        from caller_memory.memories as m
        where m.embedding_model is distinct from p_model and m.superseded_at is null
        order by m.id
        limit greatest(coalesce(p_limit, 0), 0);
end
$$;

-- Forget a caller entirely: record the erasure, then delete every memory, the history of
-- their facts, the statements and the profile. Returns the memories deleted.
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

    delete from caller_memory.memory_statements as s where s.user_id = p_user_id;
    delete from caller_memory.memory_history as h where h.user_id = p_user_id;
    delete from caller_memory.memories as m where m.user_id = p_user_id;
    get diagnostics v_deleted = row_count;
    delete from public.profiles as p where p.id = p_user_id;
    return v_deleted;
end
$$;

-- Forget one memory; a stable fact's history and the statements of a forgotten utterance go
-- with it.
create or replace function caller_memory.memory_delete(
    p_user_id uuid, p_category text, p_key text
)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
    v_kind text;
begin
    delete from caller_memory.memories as m
    where m.user_id = p_user_id and m.category = p_category and m.key = p_key
    returning m.kind into v_kind;
    if v_kind = 'fact' then
        -- the caller's words that stated it are no longer true either
        update caller_memory.memories as u
        set superseded_at = now()
        from caller_memory.memory_statements as s
        where s.user_id = p_user_id and s.category = p_category and s.key = p_key
          and u.user_id = p_user_id and u.key = s.utterance_key and u.kind = 'utterance'
          and u.superseded_at is null;
    end if;
    delete from caller_memory.memory_history as h
    where h.user_id = p_user_id and h.category = p_category and h.key = p_key;
    delete from caller_memory.memory_statements as s
    where s.user_id = p_user_id and s.utterance_key = p_key;
    return v_kind is not null;
end
$$;

-- The caller's utterances that stated any value of one stable fact, replaced ones too (so
-- that forgetting the fact reaches every word of it).
create or replace function caller_memory.memory_stating(
    p_user_id uuid, p_category text, p_key text
)
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
    where m.user_id = p_user_id and m.kind = 'utterance'
      and m.key in (
          select s.utterance_key from caller_memory.memory_statements as s
          where s.user_id = p_user_id and s.category = p_category and s.key = p_key
      )
    order by m.id;
$$;

-- The values the caller's stable facts held before they were replaced, oldest first (for the
-- caller's export: never searched).
create or replace function caller_memory.memory_history_list(p_user_id uuid)
returns table (
    category text,
    key text,
    value text,
    valid_from timestamptz,
    valid_until timestamptz
)
language sql
stable
security invoker
set search_path = ''
as $$
    select h.category, h.key, h.value, h.valid_from, h.valid_until
    from caller_memory.memory_history as h
    where h.user_id = p_user_id
    order by h.valid_until, h.id;
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
