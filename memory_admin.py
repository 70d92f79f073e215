"""Operator tool for one caller's data-rights requests: list, export, delete.

    python memory_admin.py list   <identity>
    python memory_admin.py export <identity> [--output FILE]   # JSON: profile + every memory
    python memory_admin.py delete <identity> --yes             # profile and every memory

It reads the settings exactly as the worker does (`settings.load_environment`: the
environment, then `.env` and `.env.local` in the working directory), checks them the same way,
and so acts on the store the worker uses (SUPABASE_URL / DATABASE_URL / MEMORY_SQLITE_PATH).
Every command names that store on stderr (backend and file or host, never a secret), before
doing anything, so an operator sees at once when it is not the store they meant. It acts
through the same fail-closed memory manager, as the caller named by their LiveKit identity.
`delete` also drops the caller's memories waiting in the worker's spool (MEMORY_SPOOL_DIR) on
this machine, and records the erasure in the store, so that no worker can write back anything
it heard before.

Exit status: 0 done; 1 bad settings, an unusable store or an invalid identity; 2 `delete`
without `--yes`; 3 `delete` found nothing of that caller (no profile, no memory, nothing
spooled) in the named store: nothing was there to delete, which is also what an operator sees
who points the tool at the wrong store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from identity import validate_identity
from memory_manager import memory_manager
from memory_spool import default_spool
from memory_types import Memory, Profile
from profiles import aget_profile
from session_context import session_user
from settings import SettingsError, check_settings_for, load_environment
from storage import StorageError, get_store
from store_check import describe_store_from_env

NOTHING_FOUND_EXIT = 3


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _memory_json(memory: Memory) -> dict[str, Any]:
    return {
        "category": memory.category,
        "key": memory.key,
        "value": memory.value,
        "created_at": _iso(memory.created_at),
        "updated_at": _iso(memory.updated_at),
    }


def _profile_json(profile: Profile | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    return {
        "id": profile.id,
        "original_identity": profile.original_identity,
        "is_first_login": profile.is_first_login,
        "created_at": _iso(profile.created_at),
        "updated_at": _iso(profile.updated_at),
    }


async def export_caller(identity: str) -> dict[str, Any]:
    with session_user(identity) as user_uuid:
        profile = await aget_profile()
        memories = await memory_manager.alist()
    return {
        "identity": identity,
        "user_uuid": user_uuid,
        "profile": _profile_json(profile),
        "memories": [_memory_json(m) for m in memories],
    }


@dataclass(frozen=True, slots=True)
class Deletion:
    user_uuid: str
    had_profile: bool
    memories: int  # deleted from the store
    spooled: int  # dropped from the spool on this machine

    @property
    def found_anything(self) -> bool:
        return self.had_profile or self.memories > 0 or self.spooled > 0


async def delete_caller(identity: str) -> Deletion:
    """Delete the caller's profile and memories, and record the erasure in the store.

    Memories the worker spooled for this caller during a store outage are dropped first:
    replayed later, they would bring the caller's data back after its deletion (the store
    refuses them anyway, since the erasure is recorded).
    """
    with session_user(identity) as user_uuid:
        had_profile = await aget_profile() is not None
        dropped = await default_spool().discard_user(user_uuid, identity)
        deleted = await memory_manager.aforget_everything()
    return Deletion(user_uuid, had_profile, deleted, dropped)


async def _run(args: argparse.Namespace, store: str) -> int:
    try:
        if args.command == "list":
            data = await export_caller(args.identity)
            print(f"user {data['user_uuid']}: {len(data['memories'])} memories")
            for m in data["memories"]:
                print(f"  [{m['category']}] {m['key']} = {m['value']}")
        elif args.command == "export":
            text = json.dumps(await export_caller(args.identity), ensure_ascii=False, indent=2)
            if args.output:
                await asyncio.to_thread(Path(args.output).write_text, text + "\n", "utf-8")
                print(f"exported to {args.output}")
            else:
                print(text)
        elif args.command == "delete":
            done = await delete_caller(args.identity)
            if not done.found_anything:
                print(
                    f"memory_admin: nothing to delete: {store} holds no profile and no memories "
                    f"of user {done.user_uuid}, and the spool none; the erasure is recorded",
                    file=sys.stderr,
                )
                return NOTHING_FOUND_EXIT
            what = "the profile and " if done.had_profile else "no profile (there was none) and "
            print(
                f"deleted {what}{done.memories} memories of user {done.user_uuid}"
                + (f", and {done.spooled} spooled memories not yet written" if done.spooled else "")
                + f", in {store}"
            )
        return 0
    except (StorageError, ValueError) as exc:
        print(f"memory_admin: {exc}", file=sys.stderr)
        return 1
    finally:
        await get_store().aclose()


def main(argv: list[str] | None = None) -> int:
    load_environment()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("list", "list a caller's memories"),
        ("export", "export a caller's profile and memories as JSON"),
        ("delete", "delete a caller's profile and every memory"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("identity", help="the caller's LiveKit participant identity")
        if name == "export":
            p.add_argument("--output", help="write the JSON to this file instead of stdout")
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="really delete")
    args = parser.parse_args(argv)
    try:
        check_settings_for("memory_admin")
        validate_identity(args.identity)
    except (SettingsError, ValueError) as exc:
        print(f"memory_admin: {exc}", file=sys.stderr)
        return 1
    if args.command == "delete" and not args.yes:
        print("refusing to delete without --yes", file=sys.stderr)
        return 2
    store = describe_store_from_env()
    print(f"memory_admin: {args.command} in {store}", file=sys.stderr)
    return asyncio.run(_run(args, store))


if __name__ == "__main__":
    sys.exit(main())
