-- Tables of the caller memory store: one profile per caller (keyed by the uuid the worker
-- derives from the LiveKit identity), the memory categories with their priorities, and the
-- memories themselves, keyed (user_id, category, key).
--
-- The worker reaches these tables only as the owner or as `service_role` (the Postgres
-- backend through DATABASE_URL, the Supabase backend with the service-role key). Row-level
-- security is on with no policy at all, and the `anon` and `authenticated` roles hold no
-- privilege on them, so an anon key (or a signed-in end user) can neither read nor write.
--
-- Every statement is idempotent: Supabase may run this file again on a database that has it.

create table if not exists public.profiles (
    id                uuid primary key,
    original_identity text,
    is_first_login    boolean not null default true,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);

-- Deployments from before this schema had a smaller profiles table (id, email,
-- is_first_login, created_at): bring it up to shape instead of failing on it.
alter table public.profiles add column if not exists original_identity text;
alter table public.profiles add column if not exists is_first_login boolean not null default true;
alter table public.profiles add column if not exists created_at timestamptz not null default now();
alter table public.profiles add column if not exists updated_at timestamptz not null default now();

create table if not exists public.memory_categories (
    category text primary key,
    priority integer not null
);

-- Lower priority = more important; the same numbers as memory_types.CATEGORY_PRIORITY.
insert into public.memory_categories (category, priority) values
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

create table if not exists public.memories (
    id         bigint generated always as identity primary key,
    user_id    uuid not null references public.profiles (id) on delete cascade,
    category   text not null references public.memory_categories (category),
    key        text not null,
    value      text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (user_id, category, key)
);

-- What search matches against: the key's words (underscores split them: `favorite_color`
-- is "favorite color") weigh more than the value's. The english configuration stems, so
-- "colours" finds "colour".
alter table public.memories add column if not exists search tsvector
    generated always as (
        setweight(to_tsvector('english'::regconfig, replace(key, '_', ' ')), 'A')
        || setweight(to_tsvector('english'::regconfig, value), 'B')
    ) stored;

-- A memories table from an older deployment may lack the key the upserts conflict on.
do $$
begin
    if not exists (
        select 1
        from pg_index i
        where i.indrelid = 'public.memories'::regclass
          and i.indisunique
          and i.indnkeyatts = 3
          and (
              select array_agg(a.attname::text order by a.attname)
              from pg_attribute a
              where a.attrelid = i.indrelid and a.attnum = any (i.indkey::int2[])
          ) = array['category', 'key', 'user_id']
    ) then
        alter table public.memories
            add constraint memories_user_id_category_key_key unique (user_id, category, key);
    end if;
end
$$;

create index if not exists memories_search_idx on public.memories using gin (search);
create index if not exists memories_user_recent_idx on public.memories (user_id, updated_at desc);

-- Row-level security on, and no policy for anyone: only roles that bypass RLS (the owner,
-- service_role) see rows. Policies left over from an older deployment (for example
-- "users can read their own profile" keyed on auth.uid(), which never matched the worker's
-- uuids) are dropped, so that stays true on every database this runs on.
alter table public.profiles enable row level security;
alter table public.memory_categories enable row level security;
alter table public.memories enable row level security;

do $$
declare
    pol record;
begin
    for pol in
        select schemaname, tablename, policyname
        from pg_policies
        where schemaname = 'public'
          and tablename in ('profiles', 'memory_categories', 'memories')
    loop
        execute format('drop policy %I on %I.%I', pol.policyname, pol.schemaname, pol.tablename);
    end loop;
end
$$;

-- Supabase grants every new table in `public` to anon, authenticated and service_role by
-- default: take all of that back, then give service_role exactly what the memory functions
-- need (the categories are defined here, so it only reads them).
revoke all on table public.profiles, public.memory_categories, public.memories
    from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.profiles, public.memories to service_role;
grant select on table public.memory_categories to service_role;

do $$
declare
    seq text := pg_get_serial_sequence('public.memories', 'id');
begin
    if seq is not null then
        execute format(
            'revoke all on sequence %s from public, anon, authenticated, service_role', seq
        );
        execute format('grant usage, select on sequence %s to service_role', seq);
    end if;
end
$$;
