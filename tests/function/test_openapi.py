"""``docs/openapi.json`` stays true: it describes exactly the HTTP routes the real worker indexes from
``function_app.py``, it is a valid OpenAPI 3.0 document, its vocabularies are the code's, and real answers of the app
(through ``emulator.functions_host`` and the real Python worker) match the schema it declares for their status.

    routes        (operationId, path, method) of the document == (function, route, method) of every HTTP trigger
    document      openapi-spec-validator (the OpenAPI 3.0 meta-schema, and each Schema Object against it)
    vocabularies  every enum and limit the document states equals the code's (reasons, triggers, statuses, ids)
    answers       each answer's status is declared for its operation, with its headers, and its JSON body validates
                  against the declared schema (openapi-schema-validator's OAS 3.0 dialect: jsonschema plus
                  ``nullable``), or its body is empty when the document declares none (the host's own answers)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import OpenAPIV30SpecValidator

from emulator.azurite import Azurite
from emulator.functions_host import HostJson
from emulator.functions_worker import FunctionsWorker
from rotation import app as rotation_app
from rotation.app import MAX_BODY_BYTES, configure
from rotation.auth import ROLE_READ, ROLE_SUBMIT
from rotation.model import MAX_IDEMPOTENCY_KEY, REQUEST_ID_PATTERN, AccountAction, Severity, Status, Trigger
from rotation.reasons import Reason
from rotation.storage import LedgerStatus
from tests.function.conftest import SAMPLE_KEY, Rotation

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT: dict[str, Any] = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
OPERATIONS: dict[str, dict[str, Any]] = {
    operation["operationId"]: operation
    for item in DOCUMENT["paths"].values()
    for method, operation in item.items()
    if method in HTTP_METHODS
}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A ``#/components/...`` reference's target (the document's own references only)."""
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def enum(name: str) -> list[str]:
    values: list[str] = SCHEMAS[name]["enum"]
    return values


# --- routes -------------------------------------------------------------------------------------------------------


def test_the_documents_operations_are_the_workers_http_routes() -> None:
    """Routes are relative to the host's route prefix (``/api``), which is the server URL's path."""
    indexed = set()
    for name, function in FunctionsWorker.start().functions.items():
        trigger = function.trigger
        if str(trigger["type"]).lower() == "httptrigger":
            indexed |= {(name, "/" + str(trigger["route"]), method.lower()) for method in trigger["methods"]}
    documented = {
        (operation["operationId"], path, method)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }

    assert documented == indexed
    prefix = HostJson.load(ROOT / "host.json").route_prefix
    assert [server["url"].rsplit("/", 1)[1] for server in DOCUMENT["servers"]] == [prefix]


def test_every_operation_needs_the_function_key_in_the_header_or_an_entra_token() -> None:
    """Every route is ``authLevel: FUNCTION`` in this process (no ``ROTATION_HTTP_AUTH=entra`` when the worker indexed
    the app); the document offers exactly two schemes, as alternatives: that key in ``x-functions-key``, or a bearer
    token for App Service authentication, with the app roles the app checks."""
    levels = {
        name: str(function.trigger["authLevel"]).lower()
        for name, function in FunctionsWorker.start().functions.items()
        if str(function.trigger["type"]).lower() == "httptrigger"
    }
    assert set(levels.values()) == {"function"}
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert {k: v for k, v in schemes["functionKey"].items() if k != "description"} == {
        "type": "apiKey",
        "in": "header",
        "name": "x-functions-key",
    }
    assert (schemes["entraId"]["type"], schemes["entraId"]["scheme"]) == ("http", "bearer")
    assert ROLE_SUBMIT in schemes["entraId"]["description"] and ROLE_READ in schemes["entraId"]["description"]
    assert set(schemes) == {"functionKey", "entraId"}
    assert DOCUMENT["security"] == [{"functionKey": []}, {"entraId": []}]
    for operation in OPERATIONS.values():
        assert "MissingAppRole" in resolve(operation["responses"]["403"])["description"]
    assert all("security" not in operation for operation in OPERATIONS.values())
    assert "?code=" not in json.dumps(DOCUMENT)


# --- the document -------------------------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_0() -> None:
    assert DOCUMENT["openapi"].startswith("3.0.")
    OpenAPIV30SpecValidator(DOCUMENT).validate()  # raises with the first error's path


def test_the_documents_vocabularies_are_the_codes() -> None:
    assert enum("Reason") == [r.value for r in Reason]
    assert enum("Trigger") == [t.value for t in Trigger]
    assert enum("RequestStatus") == [s.value for s in LedgerStatus]
    assert enum("AccountAction") == [a.value for a in AccountAction]
    assert enum("AccountOutcome") == [s.value for s in Status]
    assert SCHEMAS["Finding"]["properties"]["severity"]["enum"] == [s.value for s in Severity]
    assert SCHEMAS["RotationRequest"]["properties"]["reason"]["enum"] == ["", *enum("Reason")]
    assert set(SCHEMAS["RotationSubmission"]["properties"]) == rotation_app._SUBMIT_FIELDS

    (request_id,) = OPERATIONS["get_rotation"]["parameters"]
    assert request_id["schema"]["pattern"] == REQUEST_ID_PATTERN.pattern
    idempotency_key = DOCUMENT["components"]["parameters"]["IdempotencyKey"]
    assert (idempotency_key["schema"]["minLength"], idempotency_key["schema"]["maxLength"]) == (1, MAX_IDEMPOTENCY_KEY)
    assert f"{MAX_BODY_BYTES // 1024} KiB" in OPERATIONS["submit_rotation"]["responses"]["413"]["description"]


# --- real answers -------------------------------------------------------------------------------------------------


def assert_documented(response: Any, operation_id: str) -> Any:
    """The answer's status is declared for the operation, with the declared headers, and its body is what the
    declared response says: JSON valid against its schema, or empty when it declares no content. The parsed body."""
    status = response.status_code
    declared = OPERATIONS[operation_id]["responses"].get(str(status))
    assert declared is not None, f"{operation_id} answered {status}, which docs/openapi.json does not declare"
    declared = resolve(declared)
    for name, header in declared.get("headers", {}).items():
        value = response.headers.get(name)
        assert value is not None, f"{operation_id} {status} lacks its declared {name} header"
        if resolve(header)["schema"]["type"] == "integer":
            assert value.isdigit() and int(value) >= resolve(header)["schema"].get("minimum", 0), (name, value)
    body = response.get_body()
    if "content" not in declared:
        assert body == b"", f"{operation_id} {status} declares no body but answered {body[:200]!r}"
        return None
    assert response.mimetype == "application/json"
    instance = json.loads(body)
    schema = declared["content"]["application/json"]["schema"]
    validator = OAS30Validator({**schema, "components": DOCUMENT["components"]}, format_checker=oas30_format_checker)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    assert not errors, f"{operation_id} {status}: {errors} in {json.dumps(instance)[:2000]}"
    return instance


def submit(rotation: Rotation, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return rotation.host.http("submit_rotation", "POST", "/api/rotations", body=data, headers=headers)


def lookup(rotation: Rotation, request_id: str) -> Any:
    return rotation.host.http(
        "get_rotation", "GET", f"/api/rotations/{request_id}", route_params={"request_id": request_id}
    )


def test_an_accepted_request_its_row_and_its_repeats_match_the_document(rotation: Rotation) -> None:
    headers = {"Idempotency-Key": "openapi-1"}

    accepted = assert_documented(submit(rotation, {"key": SAMPLE_KEY}, headers), "submit_rotation")
    row = assert_documented(lookup(rotation, accepted["request_id"]), "get_rotation")
    reused = assert_documented(submit(rotation, {"key": SAMPLE_KEY, "force": True}, headers), "submit_rotation")

    assert (accepted["status"], accepted["trigger"], accepted["status_url"]) == (
        "queued",
        "http",
        f"/api/rotations/{accepted['request_id']}",
    )
    assert row == {k: v for k, v in accepted.items() if k != "status_url"}
    assert reused["error"]["code"] == "IdempotencyKeyReused"


def test_a_finished_request_matches_the_document(rotation: Rotation) -> None:
    """A row the worker finished carries every account's outcome: the richest shape the ledger answers."""
    accepted = assert_documented(submit(rotation, {"key": rotation.emulator_key}), "submit_rotation")
    rotation.host.pump("rotation_worker")

    row = assert_documented(lookup(rotation, accepted["request_id"]), "get_rotation")

    assert row["status"] in ("succeeded", "skipped") and row["reason"] and row["accounts"], row


def test_a_dry_run_plan_matches_the_document(rotation: Rotation) -> None:
    plan = assert_documented(submit(rotation, {"key": rotation.emulator_key, "dry_run": True}), "submit_rotation")
    assert plan["key"] == rotation.emulator_key and plan["accounts"]
    assert rotation.queued() == []


def test_a_second_forced_rotation_within_the_cooldown_matches_the_document(rotation: Rotation) -> None:
    assert_documented(submit(rotation, {"key": SAMPLE_KEY, "force": True}), "submit_rotation")
    refused = submit(rotation, {"key": SAMPLE_KEY, "force": True})
    assert refused.status_code == 429
    assert assert_documented(refused, "submit_rotation")["error"]["code"] == "ForceCooldown"


def test_the_fleet_status_matches_the_document(rotation: Rotation) -> None:
    status = assert_documented(rotation.host.http("fleet_status", "GET", "/api/status"), "fleet_status")
    # The emulator's key is read; the samples' vault (sample-kv.vault.azure.net) cannot be: both shapes are checked.
    by_key = {entry["key"]: entry for entry in status["keys"]}
    assert by_key[rotation.emulator_key]["versions"] and "now" in by_key[rotation.emulator_key]
    assert by_key[SAMPLE_KEY]["versions"] == [] and by_key[SAMPLE_KEY]["error"]


ANSWERS = {
    "400 not JSON": ("submit_rotation", b"{", 400, "InvalidJson"),
    "400 unknown field": ("submit_rotation", {"key": SAMPLE_KEY, "colour": 1}, 400, "UnknownField"),
    "403 key outside the targets": (
        "submit_rotation",
        {"key": "https://sample-kv.vault.azure.net/keys/other"},
        403,
        "KeyNotAllowed",
    ),
    "413 body too large": ("submit_rotation", b" " * (MAX_BODY_BYTES + 1), 413, "BodyTooLarge"),
    "404 unknown request": ("get_rotation", "5d1b2a7e-0000-4000-8000-000000000000", 404, "RequestNotFound"),
    "400 bad request id": ("get_rotation", "a b", 400, "InvalidRequestId"),
}


@pytest.mark.parametrize(("operation_id", "sent", "status", "code"), ANSWERS.values(), ids=ANSWERS.keys())
def test_error_answers_match_the_document(
    rotation: Rotation, operation_id: str, sent: Any, status: int, code: str
) -> None:
    response = submit(rotation, sent) if operation_id == "submit_rotation" else lookup(rotation, sent)
    assert response.status_code == status
    assert assert_documented(response, operation_id)["error"]["code"] == code


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_the_hosts_401_for_a_missing_key_matches_the_document(rotation: Rotation, operation_id: str) -> None:
    url = {"submit_rotation": "/api/rotations", "get_rotation": "/api/rotations/r1", "fleet_status": "/api/status"}
    method = "POST" if operation_id == "submit_rotation" else "GET"
    response = rotation.host.http(operation_id, method, url[operation_id], key="")
    assert response.status_code == 401
    assert_documented(response, operation_id)


def test_a_misconfigured_apps_503_matches_the_document(
    rotation: Rotation, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("ROTATION_TARGETS", "[oops")
    configure(None)  # the next call builds from the (broken) settings

    for operation_id, response in {
        "fleet_status": rotation.host.http("fleet_status", "GET", "/api/status"),
        "get_rotation": lookup(rotation, "r1"),
        "submit_rotation": submit(rotation, {"key": SAMPLE_KEY}),
    }.items():
        assert response.status_code == 503
        assert assert_documented(response, operation_id)["error"]["code"] == "ConfigError"
