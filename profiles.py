"""The design summary's `profiles` module: `ensure_profile_exists(...)` as the summary calls it.

The same functions as `caller_memory.profiles`: the summary's synchronous calls, and their
`a`-prefixed async twins for async code.
"""

from caller_memory.profiles import (
    aensure_profile_exists,
    aget_profile,
    amark_first_login_complete,
    ensure_profile_exists,
    get_profile,
    mark_first_login_complete,
)

__all__ = [
    "aensure_profile_exists",
    "aget_profile",
    "amark_first_login_complete",
    "ensure_profile_exists",
    "get_profile",
    "mark_first_login_complete",
]
