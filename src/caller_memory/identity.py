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

import uuid

MAX_IDENTITY_LENGTH = 1024
DEFAULT_NAMESPACE = uuid.NAMESPACE_DNS


def identity_namespace() -> uuid.UUID:
    """The process's namespace: `IDENTITY_NAMESPACE` of the default settings (see
    `caller_memory.settings.default_settings`), else `uuid.NAMESPACE_DNS`."""
    from caller_memory.settings import default_settings

    return default_settings().identity_namespace


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


def livekit_identity_to_uuid(identity: str, namespace: uuid.UUID | None = None) -> str:
    """Convert a LiveKit identity to its deterministic user uuid (as a string), in `namespace`
    (default: the process's, `identity_namespace()`)."""
    ns = identity_namespace() if namespace is None else namespace
    return str(uuid.uuid5(ns, validate_identity(identity)))
