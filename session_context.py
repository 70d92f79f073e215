"""The design summary's `session_context` module: who the caller of this context is.

The same objects as `caller_memory.context` (a re-export, so there is one ContextVar, not two).
"""

from caller_memory.context import (
    ALLOW_DEFAULT_USER_ENV,
    DEFAULT_USER_IDENTITY,
    NoSessionUserError,
    clear_session_user,
    default_user_allowed,
    get_current_identity,
    get_current_user,
    get_or_create_default_user,
    get_session_livekit_identity,
    get_session_started_at,
    get_session_user_uuid,
    session_user,
    set_session_user,
)

__all__ = [
    "ALLOW_DEFAULT_USER_ENV",
    "DEFAULT_USER_IDENTITY",
    "NoSessionUserError",
    "clear_session_user",
    "default_user_allowed",
    "get_current_identity",
    "get_current_user",
    "get_or_create_default_user",
    "get_session_livekit_identity",
    "get_session_started_at",
    "get_session_user_uuid",
    "session_user",
    "set_session_user",
]
