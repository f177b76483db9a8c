"""API-key checks: one function, used by the HTTP middleware and by the chat UI alike.

Keys are compared in constant time against every configured key (no early exit), and never
logged. With REQUIRE_API_KEY=false every request passes.
"""

from __future__ import annotations

import hashlib
import hmac

from errors import AuthenticationFailed

PROTECTED_PREFIXES = ("/v1/", "/metrics")


def check_key(api_keys: list[str], require: bool, presented: str | None) -> None:
    if not require:
        return
    if not presented:
        raise AuthenticationFailed(
            "Missing API key. Send it as `Authorization: Bearer <key>`."
        )
    candidate = presented.encode()
    matched = False
    for key in api_keys:
        matched |= hmac.compare_digest(candidate, key.encode())
    if not matched:
        raise AuthenticationFailed("Incorrect API key provided.")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_protected(path: str) -> bool:
    return path == "/metrics" or any(path.startswith(p) for p in PROTECTED_PREFIXES) or path == "/v1"


def cache_scope(presented: str | None) -> str:
    """Whose cached prompt prefixes a request may reuse: its key, hashed (never kept in clear)."""
    return hashlib.sha256(presented.encode()).hexdigest()[:32] if presented else ""


def request_scope(headers) -> str:
    """`cache_scope` of the key a request presents in its `Authorization` header."""
    return cache_scope(bearer_token(headers.get("authorization")))
