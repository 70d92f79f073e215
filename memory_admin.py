"""Operator tool for one caller's data-rights requests: list, export, delete.

    python memory_admin.py list   <identity>
    python memory_admin.py export <identity> [--output FILE]   # JSON: profile + every memory
    python memory_admin.py delete <identity> --yes             # profile and every memory

It uses the same store the worker is configured with (SUPABASE_URL / DATABASE_URL /
MEMORY_SQLITE_PATH, from the environment or .env) and acts through the same fail-closed
memory manager, as the caller named by their LiveKit identity. `delete` also drops the
caller's memories waiting in the worker's spool (MEMORY_SPOOL_DIR) on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from identity import livekit_identity_to_uuid
from memory_manager import memory_manager
from memory_spool import default_spool
from memory_types import Memory, Profile
from profiles import get_profile
from session_context import session_user
from storage import StorageError, get_store


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
        profile = await get_profile()
        memories = await memory_manager.alist()
    return {
        "identity": identity,
        "user_uuid": user_uuid,
        "profile": _profile_json(profile),
        "memories": [_memory_json(m) for m in memories],
    }


async def delete_caller(identity: str) -> tuple[int, int]:
    """Delete the caller's profile and memories; returns (memories deleted, spooled dropped).

    Memories the worker spooled for this caller during a store outage are dropped first:
    replayed later, they would bring the caller's data back after its deletion.
    """
    with session_user(identity) as user_uuid:
        dropped = await default_spool().discard_user(user_uuid)
        return await memory_manager.aforget_everything(), dropped


async def _run(args: argparse.Namespace) -> int:
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
            if not args.yes:
                print("refusing to delete without --yes", file=sys.stderr)
                return 2
            deleted, dropped = await delete_caller(args.identity)
            print(
                f"deleted the profile and {deleted} memories of user "
                f"{livekit_identity_to_uuid(args.identity)}"
                + (f", and {dropped} spooled memories not yet written" if dropped else "")
            )
        return 0
    except (StorageError, ValueError) as exc:
        print(f"memory_admin: {exc}", file=sys.stderr)
        return 1
    finally:
        await get_store().aclose()


def main(argv: list[str] | None = None) -> int:
    from dotenv import load_dotenv

    load_dotenv(".env")
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
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
