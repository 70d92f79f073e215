-- Totals for an operator (`caller-memory stats`): how many callers, memories of each kind,
-- superseded utterances, replaced fact values and erasure tombstones the store holds. Counts
-- only: no identity, no uuid, no memory text. The one implementation of the query for the
-- Postgres and Supabase stores (PostgREST: rpc/memory_stats); the SQLite store runs the same
-- counts on its own tables.
--
-- Like every function of this schema: security invoker (the caller's rights, so RLS and the
-- grants apply), an empty search_path (every name qualified), executable by service_role only.

create or replace function caller_memory.memory_stats()
returns table (
    callers bigint,
    facts bigint,
    utterances bigint,
    superseded bigint,
    replaced_values bigint,
    erasures bigint
)
language sql
stable
security invoker
set search_path = ''
as $$
    select
        (select count(*) from public.profiles),
        m.facts,
        m.utterances,
        m.superseded,
        (select count(*) from caller_memory.memory_history),
        (select count(*) from caller_memory.erasures)
    from (
        -- one pass over the memories for all three counts
        select
            count(*) filter (where kind = 'fact') as facts,
            count(*) filter (where kind = 'utterance') as utterances,
            count(*) filter (where superseded_at is not null) as superseded
        from caller_memory.memories
    ) as m;
$$;

revoke all on function caller_memory.memory_stats()
    from public, anon, authenticated, service_role;
grant execute on function caller_memory.memory_stats() to service_role;
