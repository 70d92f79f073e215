"""`caller-memory`: the operator's command.

    caller-memory check                                    # settings, spool directory, store
    caller-memory stats [--json]                           # totals: callers, memories, spool
    caller-memory backfill [--batch N]                     # vectors for memories without one
    caller-memory admin list   <identity>
    caller-memory admin export <identity> [--output FILE]  # JSON: profile + every memory
    caller-memory admin delete <identity> --yes            # profile and every memory, for good

It reads the settings exactly as the worker does (`load_environment`: the environment, then
`.env` and `.env.local` in the working directory), validates them the same way, and so acts on
the store the worker uses. Every command names that store on stderr (backend and file or
host, never a secret) before doing anything, so an operator sees at once when it is not the
store they meant. `admin delete` also drops the caller's memories waiting in the spool on this
machine, and records the erasure in the store, so that no worker writes back anything it
heard before. `stats` prints the store's totals (callers, memories by kind, superseded
utterances, replaced fact values, erasure tombstones) and what waits in this machine's spool:
numbers and times only, never a caller's identity, uuid or words.

Exit status: 0 done; 1 bad settings, an unusable store or spool, or an invalid identity; 2
`admin delete` without `--yes`; 3 `admin delete` found nothing of that caller (no profile, no
memory, nothing spooled) in the named store: nothing was there to delete, which is also what
an operator sees who points the command at the wrong store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from caller_memory.admin import delete_caller, export_caller
from caller_memory.backfill import DEFAULT_BATCH, backfill_embeddings
from caller_memory.embeddings.base import EmbeddingError
from caller_memory.identity import validate_identity
from caller_memory.memory import CallerMemory
from caller_memory.settings import MemorySettings, SettingsError, load_environment
from caller_memory.spool import SpoolDepth, SpoolNotWritableError, check_spool_writable, spool_depth
from caller_memory.stores.base import StoreStats
from caller_memory.stores.errors import StorageError

PROG = "caller-memory"
NOTHING_FOUND_EXIT = 3


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


async def _check(memory: CallerMemory) -> int:
    try:
        await memory.check()
        searching = await memory.search_mode()
    except (SpoolNotWritableError, StorageError, EmbeddingError) as exc:
        _say(f"check failed: {exc}")
        return 1
    finally:
        await memory.aclose()
    print(
        f"memory store OK ({memory.settings.backend}): {memory.describe()}; spool directory "
        f"{memory.settings.spool_dir.resolve()} is writable; {searching}"
    )
    return 0


def stats_json(stats: StoreStats, spool: SpoolDepth, spool_dir: Path) -> dict[str, object]:
    """What `caller-memory stats --json` prints: counts and times, no caller's data."""
    return {
        "callers": stats.callers,
        "memories": stats.memories,
        "memories_by_kind": {"fact": stats.facts, "utterance": stats.utterances},
        "superseded_utterances": stats.superseded,
        "replaced_fact_values": stats.replaced_values,
        "erasure_tombstones": stats.erasures,
        "spool": {
            "directory": str(spool_dir),
            "records": spool.records,
            "bytes": spool.size_bytes,
            "files": spool.files,
            "oldest_captured_at": (
                None
                if spool.oldest_captured_at is None
                else datetime.fromtimestamp(spool.oldest_captured_at, UTC).isoformat()
            ),
        },
    }


def stats_text(stats: StoreStats, spool: SpoolDepth, spool_dir: Path, *, now: float) -> str:
    """What `caller-memory stats` prints, one total a line."""
    lines = [
        f"callers                {stats.callers}",
        f"memories               {stats.memories}",
        f"  facts                {stats.facts}",
        f"  utterances           {stats.utterances}",
        f"superseded utterances  {stats.superseded}  (kept, never recalled)",
        f"replaced fact values   {stats.replaced_values}  (history)",
        f"erasure tombstones     {stats.erasures}",
        f"spool                  {spool.records} records, {spool.size_bytes} bytes in "
        f"{spool.files} files ({spool_dir})",
    ]
    if spool.oldest_captured_at is not None:
        when = datetime.fromtimestamp(spool.oldest_captured_at, UTC)
        age = max(0.0, now - spool.oldest_captured_at)
        lines.append(
            f"  oldest record        captured {when.isoformat(timespec='seconds')} "
            f"({age:.0f} s ago)"
        )
    return "\n".join(lines)


async def _stats(memory: CallerMemory, *, as_json: bool) -> int:
    spool_dir = memory.settings.spool_dir.resolve()
    try:
        stats = await memory.store.stats()
        spool = await asyncio.to_thread(spool_depth, spool_dir, oldest=True)
    except (StorageError, OSError) as exc:
        _say(f"stats failed: {exc}")
        return 1
    finally:
        await memory.aclose()
    if as_json:
        print(json.dumps(stats_json(stats, spool, spool_dir), indent=2))
    else:
        print(stats_text(stats, spool, spool_dir, now=time.time()))
    return 0


async def _admin(memory: CallerMemory, args: argparse.Namespace) -> int:
    store = memory.describe()
    try:
        if args.action == "list":
            data = await export_caller(memory, args.identity)
            print(f"user {data['user_uuid']}: {len(data['memories'])} memories")
            for m in data["memories"]:
                print(f"  [{m['category']}] {m['key']} = {m['value']}")
        elif args.action == "export":
            data = await export_caller(memory, args.identity)
            text = json.dumps(data, ensure_ascii=False, indent=2)
            if args.output:
                await asyncio.to_thread(Path(args.output).write_text, text + "\n", "utf-8")
                print(f"exported to {args.output}")
            else:
                print(text)
        elif args.action == "delete":
            done = await delete_caller(memory, args.identity)
            if not done.found_anything:
                _say(
                    f"nothing to delete: {store} holds no profile and no memories of user "
                    f"{done.user_uuid}, and the spool none; the erasure is recorded"
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
        _say(str(exc))
        return 1
    finally:
        await memory.aclose()


async def _backfill(memory: CallerMemory, batch: int) -> int:
    try:
        if memory.embedder is None:
            _say(
                memory.embedding_problem
                or "embeddings are off (MEMORY_EMBEDDINGS=off): there is nothing to backfill"
            )
            return 1
        await memory.check()
        if not await memory.store.has_vectors():
            _say(
                f"{memory.describe()} cannot search by meaning (install pgvector: "
                "`create extension vector`, then apply the migrations again): nothing to backfill"
            )
            return 1
        done = await backfill_embeddings(memory.store, memory.embedder, batch=batch)
    except (SpoolNotWritableError, StorageError, EmbeddingError) as exc:
        _say(f"backfill failed: {exc}")
        return 1
    finally:
        await memory.aclose()
    print(
        f"embedded {done.embedded} memories with {memory.embedder.name}"
        + (f"; {done.changed} changed meanwhile (their writers embed them)" if done.changed else "")
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Operate caller memory.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check the settings, the spool directory and the store")
    stats = commands.add_parser(
        "stats", help="the store's totals and this machine's spool (no caller's data)"
    )
    stats.add_argument("--json", action="store_true", help="print the totals as JSON")
    backfill = commands.add_parser(
        "backfill", help="embed the stored memories that have no vector of the current model"
    )
    backfill.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="memories embedded at a time"
    )
    admin = commands.add_parser("admin", help="a caller's data-rights requests")
    actions = admin.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("list", "list a caller's memories"),
        ("export", "export a caller's profile and memories as JSON"),
        ("delete", "delete a caller's profile and every memory, for good"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("identity", help="the caller's LiveKit participant identity")
        if name == "export":
            action.add_argument("--output", help="write the JSON to this file instead of stdout")
        if name == "delete":
            action.add_argument("--yes", action="store_true", help="really delete")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_environment()
    try:
        settings = MemorySettings.load()
        if args.command == "admin":
            validate_identity(args.identity)
        memory = CallerMemory.from_settings(settings)
    except (SettingsError, StorageError, ValueError) as exc:
        _say(str(exc))
        return 1
    if args.command == "check":
        try:
            # A setting like the others: refused in its one line before the check starts.
            check_spool_writable(settings.spool_dir)
        except SpoolNotWritableError as exc:
            _say(str(exc))
            return 1
        _say(f"check of {memory.describe()}")
        return asyncio.run(_check(memory))
    if args.command == "stats":
        _say(f"stats of {memory.describe()}")
        return asyncio.run(_stats(memory, as_json=args.json))
    if args.command == "backfill":
        _say(f"backfill of {memory.describe()}")
        return asyncio.run(_backfill(memory, max(args.batch, 1)))
    if args.action == "delete" and not args.yes:
        _say("refusing to delete without --yes")
        return 2
    _say(f"admin {args.action} in {memory.describe()}")
    return asyncio.run(_admin(memory, args))


if __name__ == "__main__":
    sys.exit(main())
