"""How azure-core's exceptions become the engine's error classes (pure: exceptions built without any I/O)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.core.rest import HttpRequest
from azure.identity import CredentialUnavailableError

from rotation.azure_errors import MAX_RETRY_AFTER, translate
from rotation.errors import PermissionDenied, TransientError


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
