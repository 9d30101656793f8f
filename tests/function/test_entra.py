"""The HTTP API in Entra ID mode (``ROTATION_HTTP_AUTH=entra``), through the host stand-in and the real worker.

App Service authentication validates the caller's token in front of the app and hands the app the principal in the
``X-MS-CLIENT-PRINCIPAL`` header (base64 JSON of its claims); external callers cannot set that header. The app checks
the app role: ``Rotations.Submit`` to submit, ``Rotations.Read`` (or ``Submit``) to read. This process's worker
indexed ``function_app.py`` without the setting, so its routes still take a function key too; the Functions level
itself (anonymous in Entra mode) is ``rotation.auth.functions_auth_level``'s, unit-tested in tests/unit/test_auth.py.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables import TableClient

from rotation.app import configure
from rotation.errors import ConfigError
from rotation.model import KeyRef
from tests.function.conftest import Rotation
from tests.function.test_openapi import assert_documented
from tests.function.test_triggers import assert_json_error
from tests.functional.wiring import build_app

ENTRA = {"ROTATION_HTTP_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "True"}


def principal(*roles: str) -> str:
    claims = [{"typ": "name", "val": "ops@contoso.com"}, *({"typ": "roles", "val": role} for role in roles)]
    document = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.fixture
def entra(rotation: Rotation, emulator_vault: Any, azurite: Any) -> Iterator[Rotation]:
    """The fixture's targets, in an app whose settings turn Entra ID mode on."""
    emulator, _ = emulator_vault
    targets = emulator_target(rotation)
    table = f"ledger{uuid.uuid4().hex[:12]}"
    configure(build_app(emulator.endpoints(), azurite.connection_string, targets, ledger_table=table, settings=ENTRA))
    try:
        yield rotation
    finally:
        configure(rotation.app)
        TableClient.from_connection_string(azurite.connection_string, table).delete_table()


def emulator_target(rotation: Rotation) -> list[dict[str, Any]]:
    target = rotation.app.settings.target_for(KeyRef.parse(rotation.emulator_key))
    assert target is not None
    return [{"key": target.key.id, "accounts": [a.id for a in target.accounts]}]


def call(rotation: Rotation, name: str, method: str, url: str, headers: dict[str, str], body: bytes = b"") -> Any:
    return rotation.host.http(name, method, url, body=body, headers=headers)


def test_each_route_needs_its_app_role(entra: Rotation) -> None:
    dry_run = json.dumps({"key": entra.emulator_key, "dry_run": True}).encode()
    submit = ("submit_rotation", "POST", "/api/rotations")
    status = ("fleet_status", "GET", "/api/status")

    no_principal = call(entra, *submit, {}, dry_run)
    assert_json_error(no_principal, 401, "Unauthenticated")
    assert no_principal.headers["WWW-Authenticate"] == "Bearer"
    reader = {"X-MS-CLIENT-PRINCIPAL": principal("Rotations.Read")}
    forbidden = call(entra, *submit, reader, dry_run)
    refused = assert_json_error(forbidden, 403, "MissingAppRole")
    assert "Rotations.Submit" in refused["error"]["message"]
    assert_documented(forbidden, "submit_rotation")  # docs/openapi.json declares it
    assert call(entra, *status, reader).status_code == 200

    submitter = {"x-ms-client-principal": principal("Rotations.Submit")}
    assert call(entra, *submit, submitter, dry_run).status_code == 200  # the plan
    assert call(entra, *status, submitter).status_code == 200  # Submit may read
    assert_json_error(call(entra, *status, {}), 401, "Unauthenticated")
    assert entra.queued() == []  # a dry run and the refusals wrote nothing


def test_a_refused_caller_writes_nothing(entra: Rotation) -> None:
    body = json.dumps({"key": entra.emulator_key, "force": True}).encode()
    for headers in ({}, {"X-MS-CLIENT-PRINCIPAL": "forged-Zq9 {"}, {"X-MS-CLIENT-PRINCIPAL": principal()}):
        response = call(entra, "submit_rotation", "POST", "/api/rotations", headers, body)
        assert response.status_code in (401, 403), headers
        assert "forged-Zq9" not in response.get_body().decode()  # the header is never echoed
    assert entra.queued() == []


def test_entra_mode_without_app_service_authentication_refuses_to_serve(
    rotation: Rotation, emulator_vault: Any, azurite: Any
) -> None:
    """Without App Service authentication in front, anyone could send the principal header: the app answers 503
    naming the setting, whatever the header says."""
    emulator, _ = emulator_vault
    with pytest.raises(ConfigError, match="WEBSITE_AUTH_ENABLED"):
        build_app(
            emulator.endpoints(),
            azurite.connection_string,
            emulator_target(rotation),
            settings={"ROTATION_HTTP_AUTH": "entra"},
        )
    configure(None)  # the app is built from the process's settings, as in Azure
    monkey = pytest.MonkeyPatch()
    monkey.setenv("ROTATION_HTTP_AUTH", "entra")
    monkey.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    try:
        headers = {"X-MS-CLIENT-PRINCIPAL": principal("Rotations.Read")}
        answer = assert_json_error(call(rotation, "fleet_status", "GET", "/api/status", headers), 503, "ConfigError")
        assert "WEBSITE_AUTH_ENABLED" in answer["error"]["message"]
    finally:
        monkey.undo()
        configure(rotation.app)
