"""Errors a memory store raises, each saying what the operator can do about it."""

from __future__ import annotations


class StorageError(RuntimeError):
    """Base class for every storage failure."""


class StorageUnavailableError(StorageError):
    """The store cannot be reached or written right now (a blip, a lock, a stopped server)."""


class StorageSchemaError(StorageError):
    """The store is reachable but its tables are missing or out of date."""


class StorageConfigError(StorageError):
    """The storage settings are missing or malformed."""
