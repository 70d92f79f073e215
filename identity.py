"""Deterministic mapping from a LiveKit participant identity to the caller's user uuid.

The uuid is the caller's key in every table. It is `uuid5(namespace, identity)`: the same
identity always gives the same uuid, in every process and on every machine, so nothing has
to be looked up before a call can start. The default namespace is `uuid.NAMESPACE_DNS`
(`6ba7b810-9dad-11d1-80b4-00c04fd430c8`), as in the design summary; a deployment may pick
its own with `IDENTITY_NAMESPACE` so that its uuids cannot be recomputed from identities
alone by anyone who does not know the namespace.

Identities are taken exactly as LiveKit gives them: no trimming, no case folding, no Unicode
normalisation. `Alice@example.com` and `alice@example.com` are two different callers.
"""

from __future__ import annotations

import os
import uuid
from functools import lru_cache

MAX_IDENTITY_LENGTH = 1024
DEFAULT_NAMESPACE = uuid.NAMESPACE_DNS
NAMESPACE_ENV = "IDENTITY_NAMESPACE"


@lru_cache(maxsize=8)
def _parse_namespace(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValueError(
            f"{NAMESPACE_ENV} must be a UUID such as 6ba7b810-9dad-11d1-80b4-00c04fd430c8; "
            "unset it to use the default namespace"
        ) from None


def identity_namespace() -> uuid.UUID:
    """The namespace in force: `IDENTITY_NAMESPACE` if set, else `uuid.NAMESPACE_DNS`."""
    raw = os.environ.get(NAMESPACE_ENV, "").strip()
    return _parse_namespace(raw) if raw else DEFAULT_NAMESPACE


def validate_identity(identity: object) -> str:
    """Return `identity` unchanged if it can name a caller, else raise `ValueError`."""
    if not isinstance(identity, str):
        raise ValueError(f"a LiveKit identity must be a string, got {type(identity).__name__}")
    if not identity.strip():
        raise ValueError("a LiveKit identity must not be empty or only whitespace")
    if len(identity) > MAX_IDENTITY_LENGTH:
        raise ValueError(
            f"a LiveKit identity must be at most {MAX_IDENTITY_LENGTH} characters, "
            f"got {len(identity)}"
        )
    if "\x00" in identity:
        raise ValueError("a LiveKit identity must not contain NUL characters")
    try:
        identity.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a LiveKit identity must be valid Unicode text") from None
    return identity


def livekit_identity_to_uuid(identity: str) -> str:
    """Convert a LiveKit identity to its deterministic user uuid (as a string)."""
    return str(uuid.uuid5(identity_namespace(), validate_identity(identity)))
