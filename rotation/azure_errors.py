"""Translate azure-core exceptions into the engine's few error classes, each with a message that says what to fix.

    AzureError
    ├── ClientAuthenticationError from the credential → PermissionDenied (no token: no identity, or not signed in)
    ├── ServiceRequestError / ServiceResponseError
    │   ├── the host name does not resolve           → Unreachable      (check the name, the private endpoint's DNS)
    │   ├── TLS failed (certificate refused ...)     → Unreachable      (check the CA bundle, a TLS-inspecting proxy)
    │   └── any other connection failure             → TransientError   (retrying is safe)
    └── HttpResponseError
        ├── 401, a token for another audience        → PermissionDenied (endpoint and identity in two clouds)
        ├── 401, 403                                 → PermissionDenied (grant the identity the named permission)
        ├── 404                                      → NotFound
        ├── 409 RequestConflict                      → ConflictError    (another operation is in flight)
        ├── 408, 429, 5xx                            → TransientError   (with the server's Retry-After, if any)
        └── other 4xx                                → InvalidRequest

The cause of a connection failure is found by walking what azure-core and the transport chained behind it
(``inner_exception``, ``__cause__``, ``__context__``): the resolver's ``socket.gaierror`` or urllib3's
``NameResolutionError`` for DNS; ``ssl.SSLError`` (a refused certificate above all), urllib3's or requests' ``SSLError``
for TLS. Two of these stay transient, because retrying can fix them: a resolver that answered "try again"
(``EAI_AGAIN``: no DNS server answered in time), and a peer that hung up in the middle of the handshake
(``SSLEOFError``, ``SSLZeroReturnError``).

The messages carry the service's error code and message, which never contain secrets; request headers (where a token
lives) are never read here.
"""

from __future__ import annotations

import math
import socket
import ssl
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests.exceptions
import urllib3.exceptions
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
    PermanentError,
    PermissionDenied,
    RotationError,
    TransientError,
)
from rotation.reasons import Reason

_MAX_DETAIL = 300
_TLS_WRAPPERS = (urllib3.exceptions.SSLError, requests.exceptions.SSLError)  # each wraps the ssl module's error
_TLS_HUNG_UP = (ssl.SSLEOFError, ssl.SSLZeroReturnError)  # the peer closed the connection mid-handshake


class Unreachable(PermanentError):
    """The service's host name does not resolve, or TLS with it failed (its certificate is not trusted): retrying
    cannot help until someone fixes the name, the private endpoint's DNS or the CA bundle. The message names the host
    and what to check."""

    reason: ClassVar[Reason] = Reason.UNREACHABLE


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
    return _shortened(text)


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
        return _unreachable(exc, action=action, resource=resource) or TransientError(
            f"could not reach {resource} to {action}: {detail(exc)}"
        )
    if not isinstance(exc, HttpResponseError) or exc.status_code is None:
        return TransientError(f"{action} on {resource} failed: {detail(exc)}")
    status = exc.status_code
    if status == 401 and _wrong_audience(exc):
        return PermissionDenied(
            f"{resource} refused the token to {action}: it was issued for another resource ({detail(exc)}); the "
            "endpoint and the identity must be in the same Azure cloud, and the client must ask for that cloud's scope"
        )
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


def _wrong_audience(exc: HttpResponseError) -> bool:
    """Key Vault's ``AKV10022: Invalid audience`` or ARM's ``InvalidAuthenticationTokenAudience``."""
    code = exc.error.code if exc.error is not None else ""
    return code == "InvalidAuthenticationTokenAudience" or "AKV10022" in detail(exc)


def _unreachable(exc: AzureError, *, action: str, resource: str) -> Unreachable | None:
    """``Unreachable`` when the connection failed because the host does not resolve or TLS with it failed; None for
    any other connection failure (refused, reset, timed out), which is worth retrying."""
    chain = _chain(exc)
    host = _host(chain) or resource
    lookup = _name_resolution_failure(chain)
    if lookup is not None:
        return Unreachable(
            f"cannot {action} on {resource}: the host name {host} does not resolve ({_first_line(lookup)}); check the "
            "name, and behind a private endpoint check that this network resolves it through the linked private DNS "
            "zone"
        )
    handshake = _tls_failure(chain)
    if handshake is not None:
        return Unreachable(
            f"cannot {action} on {resource}: TLS with {host} failed ({_first_line(handshake)}); check the CA bundle "
            "this machine trusts (REQUESTS_CA_BUNDLE) and any proxy or firewall that inspects TLS"
        )
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything behind it: azure-core's ``inner_exception``, then ``__cause__`` and ``__context__``."""
    found: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop(0)
        if error is None or any(error is seen for seen in found):
            continue
        found.append(error)
        pending += [getattr(error, "inner_exception", None), error.__cause__, error.__context__]
    return found


def _name_resolution_failure(chain: Sequence[BaseException]) -> BaseException | None:
    """The resolver's definite "no such name" (or the transport's report of it); None when it only said "try again"."""
    lookups = [e for e in chain if isinstance(e, socket.gaierror)]
    if lookups:
        return next((e for e in lookups if e.errno != socket.EAI_AGAIN), None)
    return next((e for e in chain if isinstance(e, urllib3.exceptions.NameResolutionError)), None)


def _tls_failure(chain: Sequence[BaseException]) -> BaseException | None:
    """The TLS error (a refused certificate, a protocol mismatch); None when the peer only hung up mid-handshake."""
    handshakes = [e for e in chain if isinstance(e, ssl.SSLError)]
    if handshakes:
        return next((e for e in handshakes if not isinstance(e, _TLS_HUNG_UP)), None)
    return next((e for e in chain if isinstance(e, _TLS_WRAPPERS)), None)


def _host(chain: Sequence[BaseException]) -> str | None:
    """The host the transport tried, from urllib3's connection (``conn``) or requests' ``request``."""
    for error in chain:
        host = getattr(getattr(error, "conn", None), "host", None)
        if isinstance(host, str) and host:
            return host
        url = getattr(getattr(error, "request", None), "url", None)
        if isinstance(url, str) and urlsplit(url).hostname:
            return urlsplit(url).hostname
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return _shortened(lines[0] if lines else type(error).__name__)


def _shortened(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
