"""HMAC signatures over the raw body, as every tracker here signs its webhooks."""

from __future__ import annotations

import hashlib
import hmac


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, given: str | None, *, prefix: str = "") -> bool:
    """True when ``given`` is ``prefix`` + the body's hex HMAC-SHA256, in constant time.

    An empty secret or an empty/missing header never matches: unconfigured is refused.
    """
    if not secret or not given or not given.strip():
        return False
    value = given.strip()
    if prefix:
        if not value.lower().startswith(prefix.lower()):
            return False
        value = value[len(prefix) :]
    expected = hmac_sha256_hex(secret, body).encode("ascii")
    return hmac.compare_digest(expected, value.lower().encode("utf-8", "replace"))
