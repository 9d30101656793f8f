"""A ``TokenCredential`` for the emulator, and how the emulator reads the caller's identity back.

The token is an unsigned JWT whose ``oid`` claim names the identity. The emulator never checks a signature; it only
needs to know *who* is calling, so tests can revoke one identity's access (a 403) and leave another's alone. This is
a real credential implementation, not a mock: the SDKs run their normal bearer-token and challenge policies with it.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

DEFAULT_IDENTITY = "rotation-app"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class EmulatorCredential:
    """Issues tokens for ``identity`` (its object id). Works for Key Vault, ARM and Event Grid scopes."""

    def __init__(self, identity: str = DEFAULT_IDENTITY, *, lifetime: int = 3600) -> None:
        self.identity = identity
        self.lifetime = lifetime
        self.requests: list[tuple[str, ...]] = []

    def _token(self, scopes: tuple[str, ...]) -> tuple[str, int]:
        self.requests.append(scopes)
        expires_on = int(time.time()) + self.lifetime
        claims = {"oid": self.identity, "tid": TENANT_ID, "aud": " ".join(scopes), "exp": expires_on}
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.", expires_on

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token, expires_on = self._token(scopes)
        return AccessToken(token, expires_on)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        token, expires_on = self._token(scopes)
        return AccessTokenInfo(token, expires_on)

    def close(self) -> None:
        pass

    def __enter__(self) -> EmulatorCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def identity_from_authorization(header: str | None) -> str | None:
    """The ``oid`` of a ``Bearer <jwt>`` header; None when the header is missing or not a token we can read."""
    if not header or not header.startswith("Bearer "):
        return None
    parts = header[len("Bearer ") :].split(".")
    if len(parts) < 2:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        return None
    oid = claims.get("oid") if isinstance(claims, dict) else None
    return oid if isinstance(oid, str) and oid else None
