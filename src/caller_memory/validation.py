"""What a memory key, value, query and limit may be: checked once, before any store sees them.

Every backend gets the same refusals (a `ValueError` that says what is wrong), so a value one
store would take and another reject never gets as far as a store, or into the spool.
"""

from __future__ import annotations

MAX_KEY_LENGTH = 200
MAX_VALUE_LENGTH = 8000
MAX_QUERY_LENGTH = 2000
MAX_SEARCH_LIMIT = 100


def _check_unicode(text: str, what: str) -> None:
    # Lone surrogates cannot be stored by any backend (UTF-8 cannot encode them); refuse them
    # here, before the store, rather than fail inside it (or spool a write that never lands).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a memory {what} must be valid Unicode text") from None


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValueError("a memory key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"a memory key must be at most {MAX_KEY_LENGTH} characters")
    if "\x00" in key:
        raise ValueError("a memory key must not contain NUL characters")
    _check_unicode(key, "key")
    return key.strip()


def validate_value(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a memory value must be a non-empty string")
    if len(value) > MAX_VALUE_LENGTH:
        raise ValueError(
            f"a memory value must be at most {MAX_VALUE_LENGTH} characters, got {len(value)}"
        )
    if "\x00" in value:
        raise ValueError("a memory value must not contain NUL characters")
    _check_unicode(value, "value")
    return value


def validate_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_SEARCH_LIMIT}")
    return limit
