"""How azure-core's exceptions become the engine's error classes (pure: exceptions built without any I/O)."""

from __future__ import annotations

import json
import socket
import ssl

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.core.rest import HttpRequest
from azure.identity import CredentialUnavailableError
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError
from urllib3.exceptions import SSLError as Urllib3SSLError

from rotation.azure_errors import MAX_RETRY_AFTER, Unreachable, translate
from rotation.errors import PermanentError, PermissionDenied, TransientError


def test_a_credential_that_cannot_get_a_token_is_permanent_and_says_how_to_fix_it() -> None:
    error = translate(CredentialUnavailableError("no identity"), action="list", resource="k", permission="keys/list")
    assert isinstance(error, PermissionDenied)
    assert "az login" in str(error) and "AZURE_CLIENT_ID" in str(error)


def test_a_connection_failure_is_transient() -> None:
    error = translate(ServiceRequestError("connection refused"), action="list", resource="k", permission="p")
    assert isinstance(error, TransientError)


class Throttled:
    """Just enough of an HTTP response for ``HttpResponseError`` (no network: the exception is built directly)."""

    status_code = 429
    reason = "Too Many Requests"
    content_type = "application/json"
    request = HttpRequest("GET", "https://kv.vault.azure.net/keys/cmk")

    def __init__(self, retry_after: str) -> None:
        self.headers = {"Retry-After": retry_after}

    def text(self, encoding: str | None = None) -> str:
        return '{"error": {"code": "Throttled", "message": "slow down"}}'

    def body(self) -> bytes:
        return self.text().encode()


@pytest.mark.parametrize(
    ("header", "wait"), [("2", 2.0), ("3600", MAX_RETRY_AFTER), ("inf", None), ("nan", None), ("soon", None)]
)
def test_retry_after_is_finite_and_capped(header: str, wait: float | None) -> None:
    error = translate(HttpResponseError(response=Throttled(header)), action="get", resource="k", permission="p")
    assert isinstance(error, TransientError)
    assert error.retry_after == wait


class Refused:
    """A 401 with an error body, built directly like ``Throttled``."""

    status_code = 401
    reason = "Unauthorized"
    content_type = "application/json"
    request = HttpRequest("GET", "https://kv.vault.azure.net/keys/cmk")

    def __init__(self, code: str, message: str) -> None:
        self.headers: dict[str, str] = {}
        self._body = json.dumps({"error": {"code": code, "message": message}})

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def body(self) -> bytes:
        return self._body.encode()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("Unauthorized", "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://x.example."),
        ("InvalidAuthenticationTokenAudience", "The access token has been obtained for wrong audience or resource."),
    ],
)
def test_a_token_for_another_audience_says_the_clouds_differ(code: str, message: str) -> None:
    """Key Vault's and ARM's audience refusals (azure-facts §10.9) are not a missing role: the message says so."""
    error = translate(HttpResponseError(response=Refused(code, message)), action="get", resource="k", permission="p")
    assert isinstance(error, PermissionDenied)
    assert (
        "issued for another resource" in str(error) and "same Azure cloud" in str(error) and "lacks" not in str(error)
    )


def test_a_plain_401_still_names_the_missing_permission() -> None:
    error = translate(
        HttpResponseError(response=Refused("Unauthorized", "no")), action="get", resource="k", permission="keys/get"
    )
    assert isinstance(error, PermissionDenied) and "lacks keys/get" in str(error)


# Connection failures: a name that does not resolve and a refused certificate fail fast; the rest is retried --------
#
# Each exception is raised the way its library raises it (inside the ``except`` block of the one it wraps, or with
# ``from``), so the chain is the one translate() walks in production. Nothing here opens a socket or resolves a name.

HOST = "nonexistent-vault.invalid"
KEY = f"https://{HOST}/keys/cmk"
REQUEST = requests.Request("GET", f"{KEY}/versions").prepare()


def name_not_resolved(errno: int = socket.EAI_NONAME, text: str = "Name or service not known") -> NameResolutionError:
    """urllib3's error for a failed lookup, raised from the resolver's ``gaierror`` as urllib3 raises it."""
    try:
        try:
            raise socket.gaierror(errno, text)
        except socket.gaierror as exc:
            raise NameResolutionError(HOST, HTTPSConnection(HOST, 443), exc) from exc
    except NameResolutionError as exc:
        return exc


def connection_refused() -> NewConnectionError:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise NewConnectionError(
                HTTPSConnection(HOST, 443), f"Failed to establish a new connection: {exc}"
            ) from exc
    except NewConnectionError as exc:
        return exc


def wrapped_by_requests(reason: Exception) -> requests.exceptions.ConnectionError:
    """requests' ConnectionError for urllib3's exhausted retries on ``reason``, as requests' adapter raises it."""
    try:
        try:
            raise MaxRetryError(HTTPSConnectionPool(HOST, 443), "/keys/cmk/versions", reason) from reason
        except MaxRetryError as exc:
            raise requests.exceptions.ConnectionError(exc, request=REQUEST)  # noqa: B904 -- as requests does
    except requests.exceptions.ConnectionError as exc:
        return exc


def tls_refused(error: ssl.SSLError) -> requests.exceptions.SSLError:
    """``error`` from the handshake, wrapped by urllib3 and then requests, each inside the other's ``except``."""
    try:
        try:
            try:
                raise error
            except ssl.SSLError as exc:
                raise Urllib3SSLError(exc)  # noqa: B904 -- as urllib3 does
        except Urllib3SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=REQUEST)  # noqa: B904 -- as requests does
    except requests.exceptions.SSLError as exc:
        return exc


def as_azure_core_raises(inner: Exception) -> ServiceRequestError:
    """azure-core's requests transport: ``ServiceRequestError(err, error=err)``, raised after its ``except`` block."""
    return ServiceRequestError(inner, error=inner)


def translated(inner: Exception) -> Exception:
    return translate(as_azure_core_raises(inner), action="list key versions", resource=KEY, permission="keys/list")


CERTIFICATE_REFUSED = ssl.SSLCertVerificationError(
    1,
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)",
)


@pytest.mark.parametrize(
    "inner",
    [name_not_resolved(), wrapped_by_requests(name_not_resolved())],
    ids=["urllib3 NameResolutionError (azure-core 1.41)", "requests ConnectionError around urllib3's retries"],
)
def test_a_name_that_does_not_resolve_is_permanent_and_names_the_host(inner: Exception) -> None:
    error = translated(inner)

    assert isinstance(error, Unreachable) and isinstance(error, PermanentError)
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"cannot list key versions on {KEY}: the host name {HOST} does not resolve ")
    assert "[Errno -2] Name or service not known" in message and "private DNS zone" in message


def test_a_refused_certificate_is_permanent_and_says_to_check_the_ca_bundle() -> None:
    error = translated(tls_refused(CERTIFICATE_REFUSED))

    assert isinstance(error, Unreachable)
    assert f"TLS with {HOST} failed ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed" in str(error)
    assert "CA bundle" in str(error) and "REQUESTS_CA_BUNDLE" in str(error)


def test_a_tls_error_without_its_ssl_cause_is_still_a_tls_failure() -> None:
    error = translated(requests.exceptions.SSLError("bad handshake", request=REQUEST))

    assert isinstance(error, Unreachable) and f"TLS with {HOST} failed (bad handshake)" in str(error)


@pytest.mark.parametrize(
    "inner",
    [
        name_not_resolved(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        wrapped_by_requests(name_not_resolved(socket.EAI_AGAIN, "Temporary failure in name resolution")),
        tls_refused(ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:992)")),
        connection_refused(),
        wrapped_by_requests(connection_refused()),
    ],
    ids=[
        "resolver says try again",
        "the same through requests",
        "hung up mid-handshake",
        "refused",
        "refused (requests)",
    ],
)
def test_other_connection_failures_stay_transient(inner: Exception) -> None:
    error = translated(inner)

    assert type(error) is TransientError
    assert str(error).startswith(f"could not reach {KEY} to list key versions: ")
