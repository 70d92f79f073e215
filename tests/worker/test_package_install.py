"""`pip install .` into a fresh virtualenv, then use it from outside the checkout.

The virtualenv is new and empty; only the package's dependencies (livekit-agents, asyncpg,
supabase, ...) are borrowed from the project's .venv through a path file, because the machine
has no network. Path files of .venv itself are not processed there, so the project's editable
install is invisible: what imports is what `pip install .` installed.
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]

PROBE = """
import importlib.resources, json, caller_memory
from caller_memory import CallerMemory, MemoryAgent, attach, memory_manager
from caller_memory.stores.migrations import migration_files
root = importlib.resources.files("caller_memory")
print(json.dumps({
    "file": caller_memory.__file__,
    "typed": root.joinpath("py.typed").is_file(),
    "migrations": [p.name for p in migration_files()],
    "sqlite_schema": root.joinpath("stores", "sqlite_schema.sql").is_file(),
    "names": [n for n in ("CallerMemory", "attach", "MemoryAgent") if hasattr(caller_memory, n)],
}))
"""


@pytest.mark.slow
def test_pip_install_into_a_fresh_virtualenv_gives_the_package(tmp_path: Path) -> None:
    env_dir = tmp_path / "fresh-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies (and pip, hatchling) from the project's environment, as plain paths
    Path(purelib, "_borrowed_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8"
    )

    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(PROJECT_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = subprocess.run(
        [str(python), "-I", "-c", PROBE], capture_output=True, text=True, cwd=outside, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["file"].startswith(purelib), found["file"]
    assert not found["file"].startswith(str(PROJECT_DIR))
    assert found["typed"] is True
    assert found["sqlite_schema"] is True
    shipped = sorted(p.name for p in (PROJECT_DIR / "supabase" / "migrations").glob("*.sql"))
    assert found["migrations"] == shipped
    assert found["names"] == ["CallerMemory", "attach", "MemoryAgent"]

    cli = subprocess.run(
        [str(env_dir / "bin" / "caller-memory"), "--help"],
        capture_output=True,
        text=True,
        cwd=outside,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert "caller-memory" in cli.stdout and "admin" in cli.stdout
