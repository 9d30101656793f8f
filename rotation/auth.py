"""Who may call the HTTP API: Functions keys (the default), or Microsoft Entra ID app roles behind App Service
authentication (``ROTATION_HTTP_AUTH=entra``).

::

    ROTATION_HTTP_AUTH=keys   caller ──x-functions-key──► Functions host (authLevel function) ──► the function
    ROTATION_HTTP_AUTH=entra  caller ──Bearer token──► App Service authentication ──X-MS-CLIENT-PRINCIPAL──►
                              Functions host (authLevel anonymous) ──► authorize(headers, role) ──► the function

In ``entra`` mode the functions are anonymous at the Functions level, and the only thing between a caller and a
rotation is the ``X-MS-CLIENT-PRINCIPAL`` header. App Service authentication sets it and removes any copy a client
sent, but only when it is on; without it anybody could forge the header. So ``entra`` is refused unless the platform
says authentication is on (``WEBSITE_AUTH_ENABLED``, which App Service injects, read-only), and
``functions_auth_level`` falls back to function keys for anything it does not recognise.

The header is base64 JSON (Learn, "Work with user identities in Azure App Service authentication")::

    {"auth_typ": "aad", "name_typ": "<claim type>", "role_typ": "<claim type>",
     "claims": [{"typ": "<claim type>", "val": "<value>"}, ...]}

An app role is a claim whose ``typ`` is ``role_typ``, ``roles`` (App Service's default, legacy claim names) or the
long role claim URI, once per role. The roles: ``Rotations.Submit`` for ``POST /api/rotations``, ``Rotations.Read``
for ``GET /api/rotations/{id}`` and ``GET /api/status``; ``Rotations.Submit`` includes reading.

This module is pure (no I/O, no environment reads of its own) and never raises on input from outside: any header
value, however malformed or large, is a ``Refusal`` (401 or 403) or None. It never echoes the header or a token; a
refusal names only the caller's name claim, redacted and clipped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from rotation.errors import ConfigError
from rotation.redact import quoted

HTTP_AUTH_SETTING = "ROTATION_HTTP_AUTH"
WEBSITE_AUTH_ENABLED = "WEBSITE_AUTH_ENABLED"  # set by App Service, read-only, when its authentication is on
PRINCIPAL_HEADER = "x-ms-client-principal"

ROLE_SUBMIT = "Rotations.Submit"  # POST /api/rotations (and everything ROLE_READ allows)
ROLE_READ = "Rotations.Read"  # GET /api/rotations/{id}, GET /api/status
ROLES = (ROLE_SUBMIT, ROLE_READ)
# The roles that satisfy each role: a submitter may also read.
_SATISFIED_BY: Mapping[str, frozenset[str]] = {
    ROLE_SUBMIT: frozenset({ROLE_SUBMIT}),
    ROLE_READ: frozenset({ROLE_READ, ROLE_SUBMIT}),
}

MAX_PRINCIPAL_CHARS = 16 * 1024  # far above a real principal (a few KiB); refused before decoding
ENTRA_PROVIDER = "aad"  # auth_typ of App Service's Microsoft Entra ID provider
ROLE_CLAIM_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
_ROLE_CLAIM_TYPES = ("roles", ROLE_CLAIM_URI)
# Claims that name the caller, in order of preference after the principal's own name_typ.
_NAME_CLAIM_TYPES = (
    "name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "preferred_username",
    "upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "appid",
    "azp",
    "oid",
    "http://schemas.microsoft.com/identity/claims/objectidentifier",
)
MAX_NAME_CHARS = 80

UNAUTHENTICATED = "Unauthenticated"
MISSING_APP_ROLE = "MissingAppRole"


class HttpAuth(StrEnum):
    """``ROTATION_HTTP_AUTH``: who may call the HTTP API."""

    KEYS = "keys"  # Functions keys in x-functions-key (authLevel function)
    ENTRA = "entra"  # App Service authentication in front, app roles checked by ``authorize``


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status, a machine code and a message for the caller."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class Principal:
    """The caller as App Service authentication describes it: its identity provider, a display name and app roles."""

    provider: str
    name: str | None
    roles: frozenset[str]


def http_auth(env: Mapping[str, str]) -> HttpAuth:
    """Parse ``ROTATION_HTTP_AUTH`` (``keys`` when unset or blank); ``ConfigError`` naming the value and the fix for
    anything else, and for ``entra`` without App Service authentication on."""
    text = _text(env.get(HTTP_AUTH_SETTING))
    if text is None:
        return HttpAuth.KEYS
    try:
        mode = HttpAuth(text.lower())
    except ValueError:
        raise ConfigError(
            f"{HTTP_AUTH_SETTING}={quoted(text, 40)} must be 'keys' (Functions keys in the x-functions-key header, the "
            "default) or 'entra' (App Service authentication with Microsoft Entra ID in front, and the app roles "
            f"{ROLE_SUBMIT} and {ROLE_READ})"
        ) from None
    if mode is HttpAuth.ENTRA and not platform_auth_enabled(env):
        raise ConfigError(
            f"{HTTP_AUTH_SETTING}=entra needs App Service authentication, but {WEBSITE_AUTH_ENABLED} is not 'True': "
            "without it any caller could forge the X-MS-CLIENT-PRINCIPAL header that names its roles. Turn on App "
            "Service authentication with the Microsoft Entra ID provider and 'require authentication' (the platform "
            f"then sets {WEBSITE_AUTH_ENABLED}; never set it yourself), or set {HTTP_AUTH_SETTING}=keys"
        )
    return mode


def platform_auth_enabled(env: Mapping[str, str]) -> bool:
    """Whether App Service says its authentication is on (``WEBSITE_AUTH_ENABLED`` is ``True``, in any case)."""
    text = _text(env.get(WEBSITE_AUTH_ENABLED))
    return text is not None and text.lower() == "true"


def functions_auth_level(env: Mapping[str, str]) -> Literal["function", "anonymous"]:
    """The Functions auth level of the HTTP functions, chosen when ``function_app.py`` is imported. Never raises.

    ``anonymous`` exactly when ``http_auth(env)`` is ``ENTRA`` (the two can never disagree the other way); anything
    else, including a value ``http_auth`` refuses, is ``function``, the stricter: the bad setting is then reported
    by the settings' parse (503 on the first request), and no request gets in without a key meanwhile.
    """
    try:
        return "anonymous" if http_auth(env) is HttpAuth.ENTRA else "function"
    except Exception:  # noqa: BLE001 - a bad setting or an odd mapping must not stop the app from loading
        return "function"


def principal(headers: Mapping[str, str]) -> Principal | Refusal:
    """The caller App Service authentication put in ``X-MS-CLIENT-PRINCIPAL`` (header names in any case), or a 401
    ``Refusal`` when it is missing, too large or not a principal. Never raises."""
    try:
        return _principal(headers)
    except Exception:  # noqa: BLE001 - input from outside is refused, never an exception (the tests fuzz it)
        return _unauthenticated("could not be read")


def authorize(headers: Mapping[str, str], role: str) -> Refusal | None:
    """None when the caller has ``role`` (or a role that includes it); otherwise a 401 or 403 ``Refusal``.

    Call it only in ``entra`` mode. ``role`` is ``ROLE_SUBMIT`` or ``ROLE_READ``; any other role needs itself only.
    Never raises.
    """
    found = principal(headers)
    if isinstance(found, Refusal):
        return found
    if found.provider.lower() != ENTRA_PROVIDER:
        return Refusal(
            403,
            MISSING_APP_ROLE,
            f"the caller {_who(found)} signed in with the identity provider {quoted(found.provider, 40)}; this API "
            f"takes only Microsoft Entra ID callers with the app role {role!r}",
        )
    if found.roles & _SATISFIED_BY.get(role, frozenset({role})):
        return None
    includes = f" (or {ROLE_SUBMIT}, which includes it)" if role == ROLE_READ else ""
    return Refusal(
        403,
        MISSING_APP_ROLE,
        f"the caller {_who(found)} does not have the app role {role!r}{includes} of this API; assign it to the user, "
        "group or application in the API's enterprise application (Users and groups, or the application's API "
        "permissions with admin consent), then get a new token",
    )


def _principal(headers: Mapping[str, str]) -> Principal | Refusal:
    values = {value for name, value in headers.items() if isinstance(name, str) and name.lower() == PRINCIPAL_HEADER}
    if not values:
        return _unauthenticated("is missing")
    if len(values) > 1:
        return _unauthenticated("was sent more than once")
    value = values.pop()
    if not isinstance(value, str):
        return _unauthenticated("is not text")
    if len(value) > MAX_PRINCIPAL_CHARS:
        return _unauthenticated(f"is longer than {MAX_PRINCIPAL_CHARS // 1024} KiB")
    text = value.strip()
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode("utf-8")
        data = json.loads(decoded)
    except (binascii.Error, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _unauthenticated("is not base64-encoded JSON")
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        return _unauthenticated("is not a client principal (an object with auth_typ and claims)")
    provider = data.get("auth_typ")
    if not isinstance(provider, str) or not provider:
        return _unauthenticated("names no identity provider (auth_typ)")
    claims = [
        (claim["typ"], claim["val"])
        for claim in data["claims"]
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str)
    ]
    role_types = {*_ROLE_CLAIM_TYPES, *_optional_text(data.get("role_typ"))}
    roles = frozenset(val for typ, val in claims if typ in role_types)
    name_types = (*_optional_text(data.get("name_typ")), *_NAME_CLAIM_TYPES)
    name = next((val for wanted in name_types for typ, val in claims if typ == wanted and val.strip()), None)
    return Principal(provider=provider, name=name, roles=roles)


def _unauthenticated(problem: str) -> Refusal:
    return Refusal(
        401,
        UNAUTHENTICATED,
        f"the X-MS-CLIENT-PRINCIPAL header {problem}; App Service authentication puts it there for a caller signed in "
        "with Microsoft Entra ID: send a bearer token for this API's app registration in the Authorization header",
    )


def _who(found: Principal) -> str:
    return quoted(found.name, MAX_NAME_CHARS) if found.name is not None else "(no name claim)"


def _optional_text(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) and value else ()


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
