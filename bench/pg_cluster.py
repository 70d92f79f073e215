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

from collections.abc import Iterator
from contextlib import contextmanager

from tests.postgres_fixtures import ClusterUnavailableError, PostgresCluster

__all__ = ["ClusterUnavailableError", "create_migrated_database", "throwaway_cluster"]


@contextmanager
def throwaway_cluster() -> Iterator[PostgresCluster]:
    """A running private cluster with the Supabase roles; destroyed on exit.

    Raises `ClusterUnavailableError` when the PostgreSQL server binaries (or a user to run
    them as) are missing.
    """
    cluster = PostgresCluster.in_temp_dir("memory-bench-pg-")
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
