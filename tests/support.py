"""Helpers of this project's own tests (not fakes): what the real stores wrote, what was logged,
a capture writer as `attach` makes one, the environment of a worker subprocess."""

from __future__ import annotations

import contextvars
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caller_memory import CallerMemory, MemorySettings, MemoryStore, set_default_memory
from caller_memory.capture.writer import CaptureWriter, FactExtractor
from caller_memory.context import session_user

if TYPE_CHECKING:
    import pytest


def outage_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The outage errors `store_health` logged (once per outage, not once per failure)."""
    return [
        r
        for r in caplog.records
        if r.name == "caller_memory.stores.health" and r.levelno >= logging.ERROR
    ]


def sqlite_rows(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(profiles, memories) exactly as they are in the SQLite file, read around the store.

    Not a fake: tests use it to check what the real store wrote, row by row. A file or table
    that does not exist yet holds no rows.
    """
    if not Path(path).exists():
        return [], []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        profiles = (
            [dict(r) for r in conn.execute("SELECT * FROM profiles ORDER BY id")]
            if "profiles" in tables
            else []
        )
        memories = (
            [dict(r) for r in conn.execute("SELECT * FROM memories ORDER BY id")]
            if "memories" in tables
            else []
        )
    finally:
        conn.close()
    return profiles, memories


def capture_writer(
    memory: CallerMemory, identity: str, *, fact_extractor: FactExtractor | None = None
) -> CaptureWriter:
    """The capture writer of one session of `identity` on `memory`, made as `attach` makes
    it (a copy of a context with the caller set; `memory`'s manager, spool, outage log and
    queue limit; the LLM `fact_extractor` when the setting is on), without an `AgentSession`:
    for tests of what the writer itself does."""
    with session_user(identity, namespace=memory.settings.identity_namespace):
        context = contextvars.copy_context()
    return CaptureWriter(
        context,
        manager=memory.manager,
        spool=memory.spool,
        outage=memory.outage,
        queue_max=memory.settings.capture_queue_max,
        fact_extractor=fact_extractor,
    )


def install_memory(store: MemoryStore, **settings: Any) -> CallerMemory:
    """A `CallerMemory` on `store` (a real store, or a fake wrapping one), with the settings of
    the test's environment (`settings` override fields by name, e.g. `recall_budget_ms=2000`),
    installed as the process-wide default: the memory the reference worker's callers
    (`start_in_own_task`) and the module-level API (`memory_manager`) use from then on."""
    memory = CallerMemory(store=store, settings=MemorySettings.load(**settings))
    set_default_memory(memory)
    return memory


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment of a worker subprocess that must run on the installed package alone:
    this test's environment without PYTHONPATH (run it outside the checkout, and the
    repository root is not importable), plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **overrides}


# Eight stable facts more important (category FACT) than any preference or relationship: a
# caller who holds these besides the fact a test asks about does not have that fact among the
# memories a session starts knowing (the 8 most important), so only recall can bring it in.
MORE_IMPORTANT_FACTS: dict[tuple[str, str], str] = {
    ("FACT", "home_town"): "Leeds",
    ("FACT", "job"): "nurse",
    ("FACT", "birthday"): "March 3rd",
    ("FACT", "diet"): "vegan",
    ("FACT", "employer"): "the city hospital",
    ("FACT", "lives_in"): "Bristol",
    ("FACT", "school"): "Oxford",
    ("FACT", "age"): "34",
}
