"""Benchmarks, run as modules from the repository root with the package installed, e.g.
`.venv/bin/python -m bench.storage_benchmark` (see each module's docstring).

They use `caller_memory` (and its `testing` module for the fakes and the throwaway
PostgreSQL), never the repository's tests.
"""
