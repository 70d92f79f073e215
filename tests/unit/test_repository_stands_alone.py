"""The repository stands alone: nothing in it reads or cites a file a reader cannot open.

A clone is all a user has. Code, tests, scripts and docs may cite only files in the
repository (and public URLs); a test that read a file elsewhere on the author's machine
would be skipped or fail for everyone else, and a docstring citing notes that are not in
the repository explains nothing.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "data",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    # what `pip install .` leaves behind: copies of files checked here already
    "build",
    "dist",
}
TEXT_SUFFIXES = {".py", ".sh", ".md", ".toml", ".txt", ".sql", ".example", ".yml", ".yaml", ""}
# Spelled in pieces, so that this file does not match itself.
FORBIDDEN = (
    "NOTES" + ".md",  # the design notes, kept outside the repository
    "/work/" + "shared",  # the directory they live in on the authors' machines
)


def _repository_files() -> list[Path]:
    files = []
    for path in PROJECT_DIR.rglob("*"):
        relative = path.relative_to(PROJECT_DIR)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts):
            continue
        if not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in {"Dockerfile", ".env.example"}:
            files.append(path)
    return files


def test_no_file_reads_or_cites_anything_outside_the_repository() -> None:
    files = _repository_files()
    # not vacuous: the docs, the package, the reference worker and the tests are all read
    assert PROJECT_DIR / "README.md" in files and Path(__file__) in files
    assert PROJECT_DIR / "src" / "caller_memory" / "__init__.py" in files
    assert PROJECT_DIR / "agent.py" in files
    found = [
        f"{path.relative_to(PROJECT_DIR)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
        )
        if any(needle in line for needle in FORBIDDEN)
    ]
    assert found == [], "\n".join(found)
