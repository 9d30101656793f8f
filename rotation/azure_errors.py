"""Translate azure-core exceptions into the engine's few error classes, each with a message that says what to fix.

    AzureError
    ├── ClientAuthenticationError from the credential → PermissionDenied (no token: no identity, or not signed in)
    ├── ServiceRequestError / ServiceResponseError   → TransientError   (the connection failed; retrying is safe)
    └── HttpResponseError
        ├── 401, 403                                 → PermissionDenied (grant the identity the named permission)
        ├── 404                                      → NotFound
        ├── 409 RequestConflict                      → ConflictError    (another operation is in flight)
        ├── 408, 429, 5xx                            → TransientError   (with the server's Retry-After, if any)
        └── other 4xx                                → InvalidRequest

The messages carry the service's error code and message, which never contain secrets; request headers (where a token
lives) are never read here.
"""

from __future__ import annotations

import math
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from rotation.errors import (
    ConflictError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RotationError,
    TransientError,
)

_MAX_DETAIL = 300


MAX_RETRY_AFTER = 60.0  # seconds; a longer (or absurd) Retry-After is cut to this, so a step stays within its bounds


def retry_after(exc: HttpResponseError) -> float | None:
    """The server's ``Retry-After`` in seconds, when it sent one as a finite number, at most ``MAX_RETRY_AFTER``."""
    response: Any = exc.response  # an azure.core HttpResponse; the typed base lacks ``headers``
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def detail(exc: AzureError) -> str:
    """``<code>: <message>`` from the service's error body, shortened."""
    if isinstance(exc, HttpResponseError) and exc.error is not None:
        text = f"{exc.error.code}: {exc.error.message}"
    else:
        text = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0]
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def translate(exc: AzureError, *, action: str, resource: str, permission: str) -> RotationError:
    """The engine's error for ``exc``, raised while doing ``action`` on ``resource``.

    ``permission`` names what the identity needs for ``action``, e.g. ``"keys/create on vault https://kv.vault.azure.net"``.
    """
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        # Raised by the credential before any request: no identity, or a sign-in that cannot succeed by retrying.
        return PermissionDenied(
            f"could not get a token to {action} on {resource}: {detail(exc)}; in Azure, check the managed identity and "
            "AZURE_CLIENT_ID; on a workstation, sign in (az login)"
        )
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"could not reach {resource} to {action}: {detail(exc)}")
    if not isinstance(exc, HttpResponseError) or exc.status_code is None:
        return TransientError(f"{action} on {resource} failed: {detail(exc)}")
    status = exc.status_code
    if status in (401, 403):
        return PermissionDenied(f"the function's identity lacks {permission} ({status} {detail(exc)})")
    if status == 404:
        return NotFound(f"{resource} was not found while trying to {action} ({detail(exc)})")
    if status == 409:
        return ConflictError(f"{resource} is busy with another operation; {action} will be retried ({detail(exc)})")
    if status in (408, 429) or status >= 500:
        return TransientError(
            f"{action} on {resource} failed with {status}: {detail(exc)}", retry_after=retry_after(exc)
        )
    return InvalidRequest(f"{action} on {resource} was rejected with {status}: {detail(exc)}")
