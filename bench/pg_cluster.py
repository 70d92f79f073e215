"""A throwaway PostgreSQL cluster for benchmarks, started like the test suite's.

The server process, DSNs, Supabase roles and migrations come from `tests/postgres_fixtures.py`
(`PostgresCluster` and its helpers), so a benchmark runs on exactly the database the tests
run on: a private cluster in a temp dir (initdb, fsync off, unix socket only, no TCP port),
Supabase's API roles, and every file of `supabase/migrations/` applied to each database made
with `create_migrated_database`. Everything is stopped and deleted when the context exits.

    with throwaway_cluster() as cluster:
        name = create_migrated_database(cluster, "bench_1000")
        admin_dsn = cluster.dsn(name)                          # superuser, for bulk setup
        store_dsn = cluster.dsn(name, user="authenticator")    # + role=service_role
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.postgres_fixtures import (
    INSTALL_HINT,
    SUPABASE_ROLES_SQL,
    PostgresCluster,
    _server_user,
    find_postgres_bin,
)

__all__ = ["ClusterUnavailableError", "create_migrated_database", "throwaway_cluster"]


class ClusterUnavailableError(RuntimeError):
    """The PostgreSQL server binaries (or a user to run them as) are missing."""


@contextmanager
def throwaway_cluster() -> Iterator[PostgresCluster]:
    """A running private cluster with the Supabase roles; destroyed on exit."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise ClusterUnavailableError(INSTALL_HINT)
    run_as = _server_user()
    if os.geteuid() == 0 and run_as is None:
        raise ClusterUnavailableError(
            "running as root and no unprivileged `postgres` or `nobody` user exists"
        )
    if run_as and shutil.which("runuser") is None:
        raise ClusterUnavailableError("running as root but `runuser` (util-linux) is missing")
    root = Path(tempfile.mkdtemp(prefix="memory-bench-pg-"))
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = PostgresCluster(bin_dir, root, run_as)
    try:
        cluster.initdb()
        cluster.start()
        cluster.psql(SUPABASE_ROLES_SQL, dbname="postgres")
        yield cluster
    finally:
        cluster.destroy()


def create_migrated_database(cluster: PostgresCluster, name: str) -> str:
    """A new database prepared like a Supabase project, with every migration applied."""
    cluster.create_database(name)
    cluster.apply_migrations(name)
    return name
