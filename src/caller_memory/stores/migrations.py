"""The SQL migrations: the schema of the Postgres and Supabase stores, in the order to apply.

They live in the repository's `supabase/migrations/` (where the Supabase CLI looks for them)
and ship inside the package as `caller_memory/migrations/` for `pip install` users.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent.parent / "migrations"
_CHECKOUT = Path(__file__).resolve().parents[3] / "supabase" / "migrations"


def migrations_dir() -> Path:
    """The directory holding the migrations (the package's copy, else the checkout's)."""
    for directory in (_PACKAGED, _CHECKOUT):
        if directory.is_dir() and any(directory.glob("*.sql")):
            return directory
    raise FileNotFoundError(
        f"no SQL migrations found in {_PACKAGED} or {_CHECKOUT}; reinstall livekit-caller-memory"
    )


def migration_files() -> list[Path]:
    """Every migration, in the order Supabase applies them (by file name)."""
    return sorted(migrations_dir().glob("*.sql"))
