-- Profiles are keyed by the uuid the worker derives from the caller's LiveKit identity
-- (uuid5), not by a Supabase Auth user, so a foreign key from profiles.id to auth.users
-- makes every new caller's profile insert fail. Older deployments created that key;
-- remove it there (a no-op on databases created by these migrations).
alter table if exists public.profiles drop constraint if exists profiles_id_fkey;
