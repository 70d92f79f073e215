"""The design summary's `identity` module: LiveKit identity -> deterministic uuid5.

The same functions as `caller_memory.identity`.
"""

from caller_memory.identity import (
    DEFAULT_NAMESPACE,
    MAX_IDENTITY_LENGTH,
    identity_namespace,
    livekit_identity_to_uuid,
    validate_identity,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "MAX_IDENTITY_LENGTH",
    "identity_namespace",
    "livekit_identity_to_uuid",
    "validate_identity",
]
