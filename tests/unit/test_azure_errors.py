"""How azure-core's exceptions become the engine's error classes (pure: exceptions built without any I/O)."""

from __future__ import annotations

from azure.core.exceptions import ServiceRequestError
from azure.identity import CredentialUnavailableError

from rotation.azure_errors import translate
from rotation.errors import PermissionDenied, TransientError


def test_a_credential_that_cannot_get_a_token_is_permanent_and_says_how_to_fix_it() -> None:
    error = translate(CredentialUnavailableError("no identity"), action="list", resource="k", permission="keys/list")
    assert isinstance(error, PermissionDenied)
    assert "az login" in str(error) and "AZURE_CLIENT_ID" in str(error)


def test_a_connection_failure_is_transient() -> None:
    error = translate(ServiceRequestError("connection refused"), action="list", resource="k", permission="p")
    assert isinstance(error, TransientError)
