-- The memory store's queries, each written once. The Postgres backend calls them over
-- asyncpg (`select * from public.memory_...($1, ...)`) and the Supabase backend through
-- PostgREST (`client.rpc("memory_...", {...})`), so both backends behave identically.
--
-- All are SECURITY INVOKER: they run with the caller's rights, so row-level security and the
-- table grants apply to whoever calls them. EXECUTE is granted to service_role only.
-- `search_path` is pinned so an object in another schema can never stand in for a table.
-- Every statement is idempotent (create or replace), so the file can be applied again.

-- Create the caller's profile if missing; report whether this call created it. Safe under
-- concurrency: of any number of simultaneous calls for one uuid exactly one inserts (and
-- returns created = true); the others wait for it and return the row it inserted. A profile
-- created without an identity gets the first identity a later call brings.
create or replace function public.memory_ensure_profile(p_user_id uuid, p_identity text)
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
set search_path = public
as $$
#variable_conflict use_column
declare
    v_created boolean;
begin
    insert into profiles as p (id, original_identity)
    values (p_user_id, p_identity)
    on conflict (id) do nothing;
    v_created := found;

    if not v_created and p_identity is not null then
        update profiles as p
        set original_identity = p_identity, updated_at = now()
        where p.id = p_user_id and p.original_identity is null;
    end if;

    -- A new statement, so a new snapshot: it sees a row a concurrent call just committed.
    return query
        select p.id, p.original_identity, p.is_first_login, p.created_at, p.updated_at, v_created
        from profiles as p
        where p.id = p_user_id;
end
$$;

create or replace function public.memory_get_profile(p_user_id uuid)
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
set search_path = public
as $$
    select p.id, p.original_identity, p.is_first_login, p.created_at, p.updated_at
    from profiles as p
    where p.id = p_user_id;
$$;

-- True only for the one call that flipped is_first_login: a concurrent call waits on the row
-- lock, re-checks the condition against the committed row, and updates nothing.
create or replace function public.memory_complete_first_login(p_user_id uuid)
returns boolean
language sql
volatile
security invoker
set search_path = public
as $$
    with flipped as (
        update profiles as p
        set is_first_login = false, updated_at = now()
        where p.id = p_user_id and p.is_first_login
        returning 1
    )
    select count(*) = 1 from flipped;
$$;

-- Insert or replace one memory; creates the caller's profile first if it is missing, so a
-- write never fails for want of one.
create or replace function public.memory_upsert(
    p_user_id uuid,
    p_category text,
    p_key text,
    p_value text,
    p_identity text default null
)
returns void
language plpgsql
volatile
security invoker
set search_path = public
as $$
begin
    insert into profiles (id, original_identity)
    values (p_user_id, p_identity)
    on conflict (id) do nothing;

    insert into memories as m (user_id, category, key, value)
    values (p_user_id, p_category, p_key, p_value)
    on conflict (user_id, category, key)
    do update set value = excluded.value, updated_at = now();
end
$$;

create or replace function public.memory_get(p_user_id uuid, p_category text, p_key text)
returns text
language sql
stable
security invoker
set search_path = public
as $$
    select m.value
    from memories as m
    where m.user_id = p_user_id and m.category = p_category and m.key = p_key;
$$;

-- The text-search query for free text: its words, stemmed with the english configuration
-- and OR-ed. Each lexeme comes out of the text-search parser and is quoted as one operand,
-- so characters and keywords that are tsquery (or LIKE, or FTS5) syntax in the caller's text
-- (`&`, `|`, `!`, `:`, `*`, `"`, `'`, `\`, `%`, `_`, OR, NEAR) are never parsed as syntax.
-- NULL when the text holds no searchable word (empty, punctuation, or only stop words).
create or replace function public.memory_search_tsquery(p_query text)
returns tsquery
language sql
immutable
parallel safe
security invoker
set search_path = public
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

-- The caller's memories most relevant to p_query, best first: text-search rank (cover
-- density; a word in the key counts double a word in the value, as in the SQLite backend's
-- BM25 weights; normalised by document length), then category priority, then the most
-- recently updated.
-- A query with no words at all returns the caller's most important memories instead (stable
-- facts before raw utterances, by category priority, newest first); a query whose words are
-- all stop words matches nothing. Only p_user_id's memories are ever considered.
create or replace function public.memory_search(p_user_id uuid, p_query text, p_limit integer)
returns table (
    category text,
    key text,
    value text,
    created_at timestamptz,
    updated_at timestamptz,
    score real
)
language plpgsql
stable
security invoker
set search_path = public
as $$
#variable_conflict use_column
declare
    v_query tsquery := memory_search_tsquery(p_query);
    v_limit integer := greatest(coalesce(p_limit, 0), 0);
begin
    if v_query is null then
        if to_tsvector('simple'::regconfig, coalesce(p_query, '')) <> ''::tsvector then
            return;  -- words, but none that can be searched for: nothing is relevant
        end if;
        return query
            select m.category, m.key, m.value, m.created_at, m.updated_at, 0::real
            from memories as m
            join memory_categories as c on c.category = m.category
            where m.user_id = p_user_id
            order by starts_with(m.key, 'utterance_'), c.priority, m.updated_at desc, m.id desc
            limit v_limit;
        return;
    end if;

    return query
        select m.category, m.key, m.value, m.created_at, m.updated_at,
               ts_rank_cd('{0, 0, 0.5, 1}'::real[], m.search, v_query, 1) as score
        from memories as m
        join memory_categories as c on c.category = m.category
        where m.user_id = p_user_id and m.search @@ v_query
        order by score desc, c.priority, m.updated_at desc, m.id desc
        limit v_limit;
end
$$;

-- Every memory of the caller, most important category first, then by key (byte order, so
-- the order is the same on every database collation and in the SQLite backend).
create or replace function public.memory_list(p_user_id uuid)
returns table (
    category text,
    key text,
    value text,
    created_at timestamptz,
    updated_at timestamptz
)
language sql
stable
security invoker
set search_path = public
as $$
    select m.category, m.key, m.value, m.created_at, m.updated_at
    from memories as m
    join memory_categories as c on c.category = m.category
    where m.user_id = p_user_id
    order by c.priority, m.key collate "C";
$$;

create or replace function public.memory_delete(p_user_id uuid, p_category text, p_key text)
returns boolean
language sql
volatile
security invoker
set search_path = public
as $$
    with gone as (
        delete from memories as m
        where m.user_id = p_user_id and m.category = p_category and m.key = p_key
        returning 1
    )
    select count(*) > 0 from gone;
$$;

-- Forget a caller entirely: every memory, then the profile. Returns the memories deleted.
create or replace function public.memory_delete_user(p_user_id uuid)
returns integer
language plpgsql
volatile
security invoker
set search_path = public
as $$
declare
    v_deleted integer;
begin
    delete from memories as m where m.user_id = p_user_id;
    get diagnostics v_deleted = row_count;
    delete from profiles as p where p.id = p_user_id;
    return v_deleted;
end
$$;

-- Functions are executable by PUBLIC by default, and Supabase also grants new functions in
-- `public` to anon, authenticated and service_role: take all of that back, then let
-- service_role (and the owner) call them, and no one else.
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
        execute format(
            'revoke all on function %s from public, anon, authenticated, service_role', fn
        );
        execute format('grant execute on function %s to service_role', fn);
    end loop;
end
$$;
