"""What a Supabase setting must look like, checked without the Supabase client installed.

The settings are validated before anything starts, also where the `supabase` extra is not
installed; these checks need nothing but the standard library.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import urlparse

from caller_memory.stores.errors import StorageConfigError

URL_ENV = "SUPABASE_URL"


def key_role(key: str) -> str | None:
    """The role a Supabase API key grants, read from the key itself; None if unknown.

    Only for diagnostics (the server verifies the key): legacy keys are JWTs with a `role`
    claim, new-style keys say what they are in their prefix.
    """
    if key.startswith("sb_secret_"):
        return "service_role"
    if key.startswith("sb_publishable_"):
        return "anon"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        role = json.loads(payload).get("role")
    except (binascii.Error, ValueError, AttributeError):
        return None
    return role if isinstance(role, str) else None


def check_supabase_url(url: str) -> str:
    """The project URL without a trailing slash; `StorageConfigError` if it is not usable."""
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise StorageConfigError(
            f"{URL_ENV} must be the project URL starting with https://, "
            "e.g. https://<project-ref>.supabase.co"
        )
    if parsed.query or parsed.fragment or parsed.path.rstrip("/").endswith("/rest/v1"):
        raise StorageConfigError(
            f"{URL_ENV} must be the project's base URL (https://<project-ref>.supabase.co), "
            "without /rest/v1, a query or a fragment"
        )
    return url.rstrip("/")
