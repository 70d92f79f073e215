"""Check the memory store before the worker takes calls: `python store_check.py`.

Without this, an unreachable database or one without the tables shows up only when the
first caller's session starts (logged there; the caller still gets a conversation without
memory). `check_store` runs a few cheap reads that touch every table the worker uses, within
a time limit, and raises a `StorageError` whose message says what is wrong and what to do
("check DATABASE_URL ...", "apply the migrations ..."). It writes nothing to Postgres or
Supabase; SQLite creates its tables on first use, as it does anyway.

`check_store_from_env()` opens the store the environment selects, checks it and closes it
again (so nothing is left bound to a short-lived event loop). `python store_check.py` reads
the settings exactly as the worker does (`settings.load_environment`: `.env` and `.env.local`
in the working directory), checks them, the spool directory (`MEMORY_SPOOL_DIR` must be
writable) and the store, and prints which store it checked (`describe_store_from_env`:
backend and file or host, never a secret). It exits with status 1 and one line of
explanation when something is not usable.
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit

from storage import MemoryStore, backend_name_from_env, open_store, sqlite_path_from_env
from storage.errors import StorageError, StorageUnavailableError

CHECK_TIMEOUT_S = 10.0
# The nil uuid: never a caller (callers' uuids are uuid5, version 5), so the reads find nothing.
PROBE_USER = "00000000-0000-0000-0000-000000000000"


async def check_store(store: MemoryStore, *, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise `StorageError` (saying what to fix) unless `store` answers reads of its
    profiles and memories, including a search, within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await store.get_profile(PROBE_USER)
            await store.get_memory(PROBE_USER, "FACT", "store_check")
            await store.search_memories(PROBE_USER, "store check", 1)
    except TimeoutError:
        raise StorageUnavailableError(
            f"the {store.name} memory store did not answer within {timeout:g} s; check that it "
            "is running and reachable from this machine"
        ) from None
    except StorageError as exc:
        raise type(exc)(f"the {store.name} memory store is not usable: {exc}") from None


def check_store_from_env(*, timeout: float = CHECK_TIMEOUT_S) -> str:
    """Open the store the environment selects, check it, close it; returns its backend name.

    Raises `StorageError` (including `StorageConfigError` for malformed settings)."""

    async def run() -> None:
        store = open_store()
        try:
            await check_store(store, timeout=timeout)
        finally:
            await store.aclose()

    asyncio.run(run())
    return backend_name_from_env()


def describe_store_from_env() -> str:
    """Which store the environment selects, for operators: the backend and its file or
    host, never a key or password. Call it after `settings.check_settings_for` (it assumes
    the settings are well-formed, and falls back to the bare backend name if not)."""
    backend = backend_name_from_env()
    if backend == "sqlite":
        return f"the SQLite file {sqlite_path_from_env().resolve()}"
    if backend == "postgres":
        from database_url import DatabaseUrlError, parse_database_url

        try:
            target = parse_database_url(os.environ.get("DATABASE_URL", ""))
        except DatabaseUrlError:
            return "the Postgres database of DATABASE_URL"
        return f"the Postgres {target.describe()}"
    try:
        parts = urlsplit(os.environ.get("SUPABASE_URL", "").strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the Supabase project of SUPABASE_URL"
    return f"the Supabase project at {parts.scheme}://{host}{port}"


def main() -> int:
    from memory_spool import SpoolNotWritableError, check_spool_writable, spool_dir_from_env
    from settings import SettingsError, check_settings_for, load_environment

    load_environment()
    try:
        check_settings_for("store_check")
        check_spool_writable(spool_dir_from_env())
        backend = check_store_from_env()
    except (SettingsError, SpoolNotWritableError, StorageError) as exc:
        print(f"memory store check failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"memory store OK ({backend}): {describe_store_from_env()}; "
        f"spool directory {spool_dir_from_env().resolve()} is writable"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
