"""A ``TokenCredential`` for the emulator, and how the emulator reads the caller's identity back.

The token is an unsigned JWT whose ``oid`` claim names the identity and whose ``aud`` claim is the resource the
token was asked for, as Entra ID issues it: the scope without ``/.default`` (``https://vault.azure.net``,
``https://management.azure.com``, ``https://eventgrid.azure.net``). The emulator never checks a signature; it reads
who is calling (so tests can revoke one identity's access and leave another's alone) and for which audience (each
service refuses a token meant for another, with Azure's error). This is a real credential implementation, not a
mock: the SDKs run their normal bearer-token and challenge policies with it.
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
        claims = {"oid": self.identity, "tid": TENANT_ID, "aud": audience_of(scopes), "exp": expires_on}
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


def audience_of(scopes: tuple[str, ...]) -> str:
    """The ``aud`` Entra ID puts in a token for ``scopes``: the one resource they name, without ``/.default``."""
    resources = {scope.removesuffix("/.default").removesuffix(".default") for scope in scopes}
    if len(resources) != 1:
        raise ValueError(f"a token is for exactly one resource; the scopes {list(scopes)} name {len(resources)}.")
    return resources.pop()


def claims_from_authorization(header: str | None) -> dict[str, Any] | None:
    """The claims of a ``Bearer <jwt>`` header; None when the header is missing or not a token we can read."""
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
    return claims if isinstance(claims, dict) else None


def identity_from_authorization(header: str | None) -> str | None:
    """The ``oid`` of a ``Bearer <jwt>`` header; None when the header is missing or not a token we can read."""
    oid = (claims_from_authorization(header) or {}).get("oid")
    return oid if isinstance(oid, str) and oid else None


def audience_from_authorization(header: str | None) -> str | None:
    """The ``aud`` of a ``Bearer <jwt>`` header, without a trailing slash; None when there is none."""
    aud = (claims_from_authorization(header) or {}).get("aud")
    return aud.rstrip("/") if isinstance(aud, str) and aud else None
