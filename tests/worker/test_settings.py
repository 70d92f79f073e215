"""Every setting is read one way and checked before anything starts, by every command.

Each command runs as a user runs it: a separate process, in a directory of its own whose
`.env` was made from `.env.example` (only the variables under test changed), with none of the
settings in the process environment. A bad setting must stop the worker (`agent.py console`)
and the operator's command (`caller-memory check`, `caller-memory admin ...`) before they
start, with a non-zero exit and one line that names the variable, and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent import OPENAI_CLIENT_VARIABLES, WorkerSettings
from caller_memory import load_environment
from caller_memory.testing.embeddings import e5_test_model_name

PROJECT_DIR = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = PROJECT_DIR / ".env.example"
COMMANDS = {
    "agent.py console": [str(PROJECT_DIR / "agent.py"), "console", "--text"],
    "caller-memory check": ["-m", "caller_memory.cli", "check"],
    "caller-memory admin list": ["-m", "caller_memory.cli", "admin", "list", "alice@example.com"],
}
ALL = tuple(COMMANDS)
WORKER_AND_STORE_CHECK = ("agent.py console", "caller-memory check")
# Read by livekit-agents' own command line, not by the worker's settings.
FRAMEWORK_VARIABLES = ("LIVEKIT_LOG_LEVEL",)
# What `agent.py` loads from `.env` files: the worker's settings and what the OpenAI client
# reads by itself.
WORKER_VARIABLES = WorkerSettings.variable_names() + OPENAI_CLIENT_VARIABLES


def example_variables() -> list[str]:
    return [
        line.partition("=")[0]
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]


def env_from_example(directory: Path, **values: str) -> None:
    """`.env` made from `.env.example` with only `values` changed (all must be listed)."""
    names = example_variables()
    assert set(values) <= set(names), set(values) - set(names)
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    filled = [
        f"{name}={values[name]}" if (name := line.partition("=")[0]) in values else line
        for line in lines
    ]
    (directory / ".env").write_text("\n".join(filled) + "\n", encoding="utf-8")


def clean_environment() -> dict[str, str]:
    """This process's environment without any setting, so that only `.env` speaks."""
    names = set(WORKER_VARIABLES) | set(FRAMEWORK_VARIABLES)
    return {
        k: v
        for k, v in os.environ.items()
        if k not in names and not k.startswith(("LIVEKIT_", "OPENAI_", "SUPABASE_"))
    }


def run_in(directory: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=directory,
        env={**clean_environment(), "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_known_settings_are_exactly_those_of_env_example() -> None:
    assert set(example_variables()) == set(WorkerSettings.variable_names()) | set(
        FRAMEWORK_VARIABLES
    )


# (id, .env changes, the variable the message must name, the commands that must refuse)
BAD_SETTINGS = [
    ("namespace", {"IDENTITY_NAMESPACE": "not-a-uuid"}, "IDENTITY_NAMESPACE", ALL),
    ("recall-budget-text", {"MEMORY_RECALL_BUDGET_MS": "abc"}, "MEMORY_RECALL_BUDGET_MS", ALL),
    ("recall-budget-zero", {"MEMORY_RECALL_BUDGET_MS": "0"}, "MEMORY_RECALL_BUDGET_MS", ALL),
    ("recall-budget-nan", {"MEMORY_RECALL_BUDGET_MS": "nan"}, "MEMORY_RECALL_BUDGET_MS", ALL),
    (
        "max-utterances",
        {"MEMORY_MAX_UTTERANCES_PER_CALLER": "-5"},
        "MEMORY_MAX_UTTERANCES_PER_CALLER",
        ALL,
    ),
    ("capture-queue", {"MEMORY_CAPTURE_QUEUE_MAX": "many"}, "MEMORY_CAPTURE_QUEUE_MAX", ALL),
    ("extractor-flag", {"MEMORY_LLM_EXTRACTOR": "on"}, "MEMORY_LLM_EXTRACTOR", ALL),
    (
        "default-user-flag",
        {"MEMORY_ALLOW_DEFAULT_USER": "enabled"},
        "MEMORY_ALLOW_DEFAULT_USER",
        ALL,
    ),
    (
        "database-port",
        {"DATABASE_URL": "postgresql://memory:pw@db.example:54x2/memory"},
        "DATABASE_URL",
        ALL,
    ),
    (
        "database-ipv6",
        {"DATABASE_URL": "postgresql://memory:pw@::1:5432/memory"},
        "DATABASE_URL",
        ALL,
    ),
    ("database-no-host", {"DATABASE_URL": "postgres:///memory"}, "DATABASE_URL", ALL),
    (
        "database-pool",
        {"DATABASE_URL": "postgresql://memory:pw@db.example/memory", "DATABASE_POOL_MAX": "x"},
        "DATABASE_POOL_MAX",
        ALL,
    ),
    (
        "database-pool-order",
        {
            "DATABASE_URL": "postgresql://memory:pw@db.example/memory",
            "DATABASE_POOL_MIN": "5",
            "DATABASE_POOL_MAX": "3",
        },
        "DATABASE_POOL_MIN",
        ALL,
    ),
    (
        "database-timeout",
        {
            "DATABASE_URL": "postgresql://memory:pw@db.example/memory",
            "DATABASE_TIMEOUT_SECONDS": "0",
        },
        "DATABASE_TIMEOUT_SECONDS",
        ALL,
    ),
    (
        "supabase-timeout",
        {
            "SUPABASE_URL": "https://project.supabase.co",
            "SUPABASE_SERVICE_ROLE_KEY": "sb_secret_settings_test",
            "SUPABASE_TIMEOUT_SECONDS": "soon",
        },
        "SUPABASE_TIMEOUT_SECONDS",
        ALL,
    ),
    ("sqlite-path-dir", {"MEMORY_SQLITE_PATH": "."}, "MEMORY_SQLITE_PATH", ALL),
    (
        "spool-dir-under-a-file",
        {"MEMORY_SPOOL_DIR": "not-a-directory/spool"},
        "MEMORY_SPOOL_DIR",
        WORKER_AND_STORE_CHECK,
    ),
    (
        "console-identity",
        {"CONSOLE_USER_IDENTITY": "x" * 2000},
        "CONSOLE_USER_IDENTITY",
        ("agent.py console",),
    ),
    (
        "openai-base-url",
        {"OPENAI_BASE_URL": "localhost:8000/v1"},
        "OPENAI_BASE_URL",
        ("agent.py console",),
    ),
]


def test_each_bad_setting_stops_every_command_in_one_line_naming_it(tmp_path: Path) -> None:
    runs = [
        (case_id, changes, variable, command)
        for case_id, changes, variable, commands in BAD_SETTINGS
        for command in commands
    ]

    def run(index: int) -> subprocess.CompletedProcess[str]:
        case_id, changes, _, command = runs[index]
        directory = tmp_path / f"{index}-{case_id}"
        directory.mkdir()
        (directory / "not-a-directory").write_text("a file\n", encoding="utf-8")
        env_from_example(directory, OPENAI_API_KEY="sk-test-settings", **changes)
        return run_in(directory, COMMANDS[command])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(len(runs))))
    problems = []
    for (case_id, _, variable, command), done in zip(runs, results, strict=True):
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        output = done.stdout + done.stderr
        if (
            done.returncode == 0
            or "Traceback" in output
            or len(lines) != 1
            or variable not in lines[0]
            or done.stdout.strip()
        ):
            problems.append(f"{case_id} / {command}: exit {done.returncode}\n{output[-1500:]}")
    assert problems == [], "\n\n".join(problems)


def test_a_good_env_made_from_the_example_passes_and_the_store_is_named(
    tmp_path: Path, e5_model_dir: Path
) -> None:
    env_from_example(
        tmp_path,
        OPENAI_API_KEY="sk-test-settings",
        MEMORY_SQLITE_PATH="memories.sqlite3",
        MEMORY_SPOOL_DIR="spool",
        MEMORY_EMBEDDING_MODEL_DIR=str(e5_model_dir),  # where an offline deployment has it
    )
    done = run_in(tmp_path, COMMANDS["caller-memory check"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"memory store OK (sqlite): the SQLite file {tmp_path.resolve() / 'memories.sqlite3'}; "
        f"spool directory {tmp_path.resolve() / 'spool'} is writable; search by words and "
        f"meaning ({e5_test_model_name()})"
    ]


# -- empty means "not set", everywhere --------------------------------------------------------

_BUILD_PROBE = """
import sys, types
sys.path.insert(0, sys.argv[1])
import agent

# what `agent.py` does first: load the settings, as `main` and `prewarm` do
agent.load_environment(names=agent.WorkerSettings.variable_names() + agent.OPENAI_CLIENT_VARIABLES)
settings = agent.worker_settings()
session = agent.build_session(types.SimpleNamespace(userdata={"vad": None, "settings": settings}))
for model in (session.llm, session.stt, session.tts):
    print(str(model._client.base_url))
"""


def test_the_models_of_a_quickstart_env_use_openais_default_base_url(tmp_path: Path) -> None:
    """`.env.example` has `OPENAI_BASE_URL=` (empty). The OpenAI client reads that variable
    itself and took the empty string as its base URL, so every request failed."""
    env_from_example(tmp_path, OPENAI_API_KEY="sk-test-quickstart")
    assert "OPENAI_BASE_URL=\n" in (tmp_path / ".env").read_text(encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", _BUILD_PROBE, str(PROJECT_DIR)],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["https://api.openai.com/v1/"] * 3


def test_an_empty_variable_is_not_set_and_dot_env_fills_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "OPENAI_BASE_URL=\nMEMORY_SPOOL_DIR=from-dot-env\nDATABASE_URL=\n", encoding="utf-8"
    )
    (tmp_path / ".env.local").write_text("IDENTITY_NAMESPACE=\n", encoding="utf-8")
    monkeypatch.setenv("MEMORY_SPOOL_DIR", "")  # set but empty in the environment
    monkeypatch.setenv("IDENTITY_NAMESPACE", "6ba7b811-9dad-11d1-80b4-00c04fd430c8")
    monkeypatch.setenv("OPENAI_ORG_ID", " ")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    load_environment(tmp_path, names=WORKER_VARIABLES)
    assert "OPENAI_BASE_URL" not in os.environ
    assert "DATABASE_URL" not in os.environ
    assert "OPENAI_ORG_ID" not in os.environ
    assert "IDENTITY_NAMESPACE" not in os.environ  # .env.local overrides, with "not set"
    assert os.environ["MEMORY_SPOOL_DIR"] == "from-dot-env"
