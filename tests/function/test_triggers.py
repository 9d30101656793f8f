"""The trigger layer (``function_app.py``): binding metadata, and the app's functions invoked through
``emulator.functions_host`` and the real Python worker, which decodes the wire input as in Azure.

    bindings      every function, as the worker reports them to the host (its one ``get_functions()`` call)
    Event Grid    Microsoft's sample events (azure-facts §4.2, copied exactly, typos included) as key events in both
                  schemas, tolerant variants, and events that must be ignored: acknowledged, nothing enqueued
    HTTP          every kind of bad input gets a 4xx with a JSON error body, never a 500 or a traceback

What was enqueued is read back from the real queue in Azurite, and what was recorded from the ledger table.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from emulator.azurite import Azurite
from emulator.core import Emulator
from emulator.functions_worker import FunctionsWorker
from rotation.app import configure
from rotation.model import KeyRef, RotationRequest, event_request_id
from tests.function.conftest import SAMPLE_ACCOUNT, SAMPLE_KEY, Rotation

# Copied exactly from azure-facts.md §4.2 (Microsoft's Key Vault event schema page): note "ObjectName " and " ee05...".
EVENT_GRID_SAMPLE = """[
   {
      "id":"00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
      "topic":"/subscriptions/{subscription-id}/resourceGroups/sample-rg/providers/Microsoft.KeyVault/vaults/sample-kv",
      "subject":"newsecret",
      "eventType":"Microsoft.KeyVault.SecretNewVersionCreated",
      "eventTime":"2019-07-25T01:08:33.1036736Z",
      "data":{
         "Id":"https://sample-kv.vault.azure.net/secrets/newsecret/ee059b2bb5bc48398a53b168c6cdcb10",
         "VaultName":"sample-kv",
         "ObjectType":"Secret",
         "ObjectName ":"newsecret",
         "Version":" ee059b2bb5bc48398a53b168c6cdcb10",
         "NBF":"1559081980",
         "EXP":"1559082102"
      },
      "dataVersion":"1",
      "metadataVersion":"1"
   }
]"""
CLOUD_EVENTS_SAMPLE = """[
   {
      "id":"00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
      "source":"/subscriptions/{subscription-id}/resourceGroups/sample-rg/providers/Microsoft.KeyVault/vaults/sample-kv",
      "subject":"newsecret",
      "type":"Microsoft.KeyVault.SecretNewVersionCreated",
      "time":"2019-07-25T01:08:33.1036736Z",
      "data":{
         "Id":"https://sample-kv.vault.azure.net/secrets/newsecret/ee059b2bb5bc48398a53b168c6cdcb10",
         "VaultName":"sample-kv",
         "ObjectType":"Secret",
         "ObjectName ":"newsecret",
         "Version":" ee059b2bb5bc48398a53b168c6cdcb10",
         "NBF":"1559081980",
         "EXP":"1559082102"
      },
      "specversion":"1.0"
   }
]"""
SAMPLES = {"EventGridSchema": EVENT_GRID_SAMPLE, "CloudEventSchemaV1_0": CLOUD_EVENTS_SAMPLE}
SAMPLE_VERSION = "ee059b2bb5bc48398a53b168c6cdcb10"
KEY_EVENT_TYPES = ("KeyNearExpiry", "KeyExpired", "KeyNewVersionCreated")


def key_variant(sample: str, event_type: str) -> str:
    """The secret sample as a key event: the same text and quirks, with Key in place of Secret."""
    return (
        sample.replace("Microsoft.KeyVault.SecretNewVersionCreated", f"Microsoft.KeyVault.{event_type}")
        .replace('"ObjectType":"Secret"', '"ObjectType":"Key"')
        .replace("/secrets/newsecret/", "/keys/newsecret/")
    )


def sample_event(schema: str = "EventGridSchema", event_type: str = "KeyNearExpiry") -> dict[str, Any]:
    event: dict[str, Any] = json.loads(key_variant(SAMPLES[schema], event_type))[0]
    return event


def with_data(data: Any, *, schema: str = "EventGridSchema", **fields: Any) -> dict[str, Any]:
    event = sample_event(schema)
    event["data"] = data
    event.update(fields)
    return event


def enqueued(rotation: Rotation) -> list[dict[str, Any]]:
    return [json.loads(RotationRequest.from_message(text).to_message()) for text in rotation.queued()]


# --- binding metadata -------------------------------------------------------------------------------------------


def bindings(name: str) -> list[dict[str, Any]]:
    """One function's bindings as the host receives them: the raw bindings of the worker's metadata response."""
    return FunctionsWorker.start().function(name).bindings


def http_bindings(route: str, method: str) -> list[dict[str, Any]]:
    trigger = {"direction": "IN", "type": "httpTrigger", "name": "req", "methods": [method], "authLevel": "FUNCTION"}
    return [{**trigger, "route": route}, {"direction": "OUT", "type": "http", "name": "$return"}]


def test_every_function_and_its_bindings() -> None:
    assert {name: bindings(name) for name in FunctionsWorker.start().functions} == {
        "on_key_event": [{"direction": "IN", "type": "eventGridTrigger", "name": "event"}],
        "on_queued_key_event": [
            {
                "direction": "IN",
                "type": "queueTrigger",
                "name": "message",
                "queueName": "key-events",
                "connection": "AzureWebJobsStorage",
            }
        ],
        "rotation_sweep": [
            {
                "direction": "IN",
                "type": "timerTrigger",
                "name": "timer",
                "schedule": "%ROTATION_SCHEDULE%",
                "runOnStartup": False,
                "useMonitor": True,
            }
        ],
        "submit_rotation": http_bindings("rotations", "POST"),
        "get_rotation": http_bindings("rotations/{request_id}", "GET"),
        "fleet_status": http_bindings("status", "GET"),
        "rotation_worker": [
            {
                "direction": "IN",
                "type": "queueTrigger",
                "name": "message",
                "queueName": "rotation-requests",
                "connection": "AzureWebJobsStorage",
            }
        ],
        "rotation_poison": [
            {
                "direction": "IN",
                "type": "queueTrigger",
                "name": "message",
                "queueName": "rotation-requests-poison",
                "connection": "AzureWebJobsStorage",
            }
        ],
    }


# --- Event Grid: accepted -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", SAMPLES)
@pytest.mark.parametrize("event_type", KEY_EVENT_TYPES)
def test_key_variants_of_microsofts_samples_enqueue_one_request(
    rotation: Rotation, schema: str, event_type: str
) -> None:
    payload = key_variant(SAMPLES[schema], event_type)
    assert '"ObjectName ":"newsecret"' in payload and '"Version":" ee05' in payload  # the quirks survive

    rotation.host.deliver_events("on_key_event", payload)

    (message,) = enqueued(rotation)
    request_id = event_request_id("00eccf70-95a7-4e7c-8299-2eb17ee9ad64", KeyRef.parse(SAMPLE_KEY))
    assert message["request_id"] == request_id
    assert (message["key"], message["trigger"], message["force"]) == (SAMPLE_KEY, event_type, False)
    assert message["event_version"] == SAMPLE_VERSION  # the leading space is gone
    row = rotation.app.ledger.get(request_id)
    assert row is not None
    assert (row.key.id, row.trigger, row.status) == (SAMPLE_KEY, event_type, "queued")


def pascal(**overrides: Any) -> dict[str, Any]:
    data = {
        "Id": f"{SAMPLE_KEY}/{SAMPLE_VERSION}",
        "VaultName": "sample-kv",
        "ObjectType": "Key",
        "ObjectName": "newsecret",
        "Version": SAMPLE_VERSION,
        "NBF": 1559081980,
        "EXP": 1559082102,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


TOLERATED = {
    "spec example, tidy, NBF/EXP numbers": pascal(),
    "NBF/EXP null": pascal(NBF=None, EXP=None),
    "NBF/EXP as odd strings": pascal(NBF="", EXP="soon"),
    "older camelCase fields": {
        "id": f"{SAMPLE_KEY}/{SAMPLE_VERSION}",
        "vaultName": "sample-kv",
        "objectType": "Key",
        "objectName": "newsecret",
        "version": SAMPLE_VERSION,
        "nbf": 1559081980,
        "exp": 1559082102,
    },
    "keys with stray spaces everywhere": {
        " Id ": f"{SAMPLE_KEY}/{SAMPLE_VERSION}",
        "VaultName ": "sample-kv",
        " ObjectType": "Key",
        "Version ": f" {SAMPLE_VERSION} ",
    },
    "no Id: VaultName and ObjectName": pascal(Id=..., ObjectName=..., **{"ObjectName ": "newsecret"}),
    "Id not a URL: VaultName and ObjectName": pascal(Id="newsecret"),
    "Id of another service: VaultName and ObjectName": pascal(Id="https://example.com/whatever"),
    "no Id and no ObjectName: the subject": pascal(Id=..., ObjectName=...),
    "Id with an unclosed bracket: VaultName and ObjectName": pascal(Id="https://[sample-kv/keys/newsecret/1"),
    "Id with a bad port: VaultName and ObjectName": pascal(Id="https://sample-kv.vault.azure.net:99999/keys/newsecret"),
    "versionless Id": pascal(Id=SAMPLE_KEY, Version=SAMPLE_VERSION),
    "key name in another case": pascal(Id=f"https://SAMPLE-KV.vault.azure.net/keys/NewSecret/{SAMPLE_VERSION}"),
}


@pytest.mark.parametrize("schema", SAMPLES)
@pytest.mark.parametrize("data", TOLERATED.values(), ids=TOLERATED.keys())
def test_tolerated_variants_enqueue_the_target_key(rotation: Rotation, schema: str, data: dict[str, Any]) -> None:
    rotation.host.deliver_events("on_key_event", [with_data(data, schema=schema)])

    (message,) = enqueued(rotation)
    assert message["key"].lower() == SAMPLE_KEY.lower()
    assert (message["trigger"], message["event_version"]) == ("KeyNearExpiry", SAMPLE_VERSION)


def test_a_batch_invokes_the_function_once_per_event(rotation: Rotation) -> None:
    events = [dict(sample_event(), id=f"event-{n}") for n in range(3)]
    events.append(json.loads(EVENT_GRID_SAMPLE)[0])  # the secret event in the same batch is ignored

    rotation.host.deliver_events("on_key_event", events)

    assert sorted(m["request_id"] for m in enqueued(rotation)) == sorted(
        event_request_id(f"event-{n}", KeyRef.parse(SAMPLE_KEY)) for n in range(3)
    )


# --- Event Grid: ignored ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", SAMPLES)
def test_microsofts_exact_secret_samples_are_ignored(
    rotation: Rotation, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rotation")

    rotation.host.deliver_events("on_key_event", SAMPLES[schema])  # the text exactly as Microsoft documents it

    assert rotation.queued() == []
    assert rotation.app.ledger.list_requests() == []
    (ignored,) = [r for r in caplog.records if r.name == "rotation"]
    assert (ignored.event, ignored.event_type) == (
        "rotation.event_ignored",
        "Microsoft.KeyVault.SecretNewVersionCreated",
    )


IGNORED = {
    "secret near expiry": dict(sample_event(), eventType="Microsoft.KeyVault.SecretNearExpiry"),
    "certificate event": dict(sample_event(), eventType="Microsoft.KeyVault.CertificateNewVersionCreated"),
    "access policy changed": dict(sample_event(), eventType="Microsoft.KeyVault.VaultAccessPolicyChanged"),
    "another service's event": dict(sample_event(), eventType="Microsoft.Storage.BlobCreated"),
    "subscription validation": dict(sample_event(), eventType="Microsoft.EventGrid.SubscriptionValidationEvent"),
    "key event about a secret": with_data(pascal(ObjectType="Secret")),
    "a vault not in the targets": with_data(
        pascal(Id=f"https://other-kv.vault.azure.net/keys/newsecret/{SAMPLE_VERSION}", VaultName="other-kv")
    ),
    "a key not in the targets": with_data(pascal(Id=f"https://sample-kv.vault.azure.net/keys/other/{SAMPLE_VERSION}")),
    "a look-alike vault host": with_data(pascal(Id="https://sample-kv.vault.azure.net.evil.example/keys/newsecret/1")),
    "no data": with_data(...),
    "data null": with_data(None),
    "data a string": with_data("https://sample-kv.vault.azure.net/keys/newsecret"),
    "data a list": with_data([pascal()]),
    "data empty": with_data({}),
    "no usable Id, vault or name": with_data({"Id": 42, "VaultName": None, "ObjectName": ["newsecret"]}, subject=None),
    "vault name with bad characters": with_data(pascal(Id=..., VaultName="sample kv/..")),
    "key name with bad characters": with_data(pascal(Id=..., ObjectName="new secret!")),
    "event type missing": {k: v for k, v in sample_event().items() if k != "eventType"},
    "event type a number": dict(sample_event(), eventType=42),
    "event type a list": dict(sample_event(), eventType=["Microsoft.KeyVault.KeyNearExpiry"]),
    "CloudEvent type a number": dict(sample_event("CloudEventSchemaV1_0"), type=7),
    "id missing": {k: v for k, v in sample_event().items() if k != "id"},
    "id a number": dict(sample_event(), id=12345),
    "id too long": dict(sample_event(), id="x" * 5000),
    "id not ASCII": dict(sample_event(), id="ключ-\u0000"),
    "subject a number": with_data(pascal(Id=..., ObjectName=...), subject=7),
}


@pytest.mark.parametrize("event", IGNORED.values(), ids=IGNORED.keys())
def test_ignored_events_are_acknowledged_logged_and_never_enqueued(
    rotation: Rotation, event: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    event = {k: v for k, v in event.items() if v is not ...}
    if isinstance(event.get("data"), dict):
        event["data"] = {k: v for k, v in event["data"].items() if v is not ...}
    caplog.set_level(logging.INFO, logger="rotation")

    rotation.host.deliver_events("on_key_event", [event])  # returns: the host answers Event Grid with success

    assert rotation.queued() == []
    assert rotation.app.ledger.list_requests() == []
    assert [r.event for r in caplog.records if r.name == "rotation"] == ["rotation.event_ignored"]


# --- HTTP: bad input ----------------------------------------------------------------------------------------------

ALLOWED_KEY = SAMPLE_KEY
BAD_SUBMISSIONS = {
    "not JSON": (b'{"key": ', {}, 400, "InvalidJson"),
    "not UTF-8": (b"\xff\xfe\xfa", {}, 400, "InvalidJson"),
    "empty body": (b"", {}, 400, "InvalidBody"),
    "a JSON array": (b"[]", {}, 400, "InvalidBody"),
    "a JSON string": (b'"https://sample-kv.vault.azure.net/keys/newsecret"', {}, 400, "InvalidBody"),
    "deeply nested": (b"[" * 8000 + b"]" * 8000, {}, 400, "InvalidJson"),
    "too large": (
        json.dumps({"key": ALLOWED_KEY, "force": False, "pad": "x" * 20_000}).encode(),
        {},
        413,
        "BodyTooLarge",
    ),
    "unknown field": (json.dumps({"key": ALLOWED_KEY, "reason": "because"}).encode(), {}, 400, "UnknownField"),
    "no key": (b"{}", {}, 400, "InvalidField"),
    "key a number": (b'{"key": 7}', {}, 400, "InvalidField"),
    "key null": (b'{"key": null}', {}, 400, "InvalidField"),
    "key NaN": (b'{"key": NaN}', {}, 400, "InvalidField"),
    "force a string": (json.dumps({"key": ALLOWED_KEY, "force": "yes"}).encode(), {}, 400, "InvalidField"),
    "force a number": (json.dumps({"key": ALLOWED_KEY, "force": 1}).encode(), {}, 400, "InvalidField"),
    "dry_run null": (json.dumps({"key": ALLOWED_KEY, "dry_run": None}).encode(), {}, 400, "InvalidField"),
    "key not a URL": (b'{"key": "newsecret"}', {}, 400, "InvalidKey"),
    "key over http": (b'{"key": "http://sample-kv.vault.azure.net/keys/newsecret"}', {}, 400, "InvalidKey"),
    "key with a version": (
        json.dumps({"key": f"{ALLOWED_KEY}/{SAMPLE_VERSION}"}).encode(),
        {},
        400,
        "InvalidKey",
    ),
    "key with an unclosed bracket": (b'{"key": "https://[sample-kv/keys/newsecret"}', {}, 400, "InvalidKey"),
    "key with a bad port": (b'{"key": "https://sample-kv.vault.azure.net:99999/keys/x"}', {}, 400, "InvalidKey"),
    "a secret URL": (b'{"key": "https://sample-kv.vault.azure.net/secrets/newsecret"}', {}, 400, "InvalidKey"),
    "key outside the allowlist": (
        b'{"key": "https://sample-kv.vault.azure.net/keys/other"}',
        {},
        403,
        "KeyNotAllowed",
    ),
    "vault outside the allowlist": (
        b'{"key": "https://other-kv.vault.azure.net/keys/newsecret"}',
        {},
        403,
        "KeyNotAllowed",
    ),
    "Idempotency-Key too long": (
        json.dumps({"key": ALLOWED_KEY}).encode(),
        {"Idempotency-Key": "k" * 201},
        400,
        "InvalidIdempotencyKey",
    ),
    "Idempotency-Key not ASCII": (
        json.dumps({"key": ALLOWED_KEY}).encode(),
        {"Idempotency-Key": "ключ"},
        400,
        "InvalidIdempotencyKey",
    ),
    "Idempotency-Key empty": (
        json.dumps({"key": ALLOWED_KEY}).encode(),
        {"Idempotency-Key": ""},
        400,
        "InvalidIdempotencyKey",
    ),
}


def assert_json_error(response: Any, status: int, code: str) -> dict[str, Any]:
    text = response.get_body().decode()
    assert (response.status_code, response.mimetype) == (status, "application/json"), text
    body: dict[str, Any] = json.loads(text)
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in text and 'File "' not in text
    return body


@pytest.mark.parametrize(("body", "headers", "status", "code"), BAD_SUBMISSIONS.values(), ids=BAD_SUBMISSIONS.keys())
def test_bad_submissions_get_a_4xx_json_error_and_nothing_is_written(
    rotation: Rotation, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = rotation.host.http("submit_rotation", "POST", "/api/rotations", body=body, headers=headers)

    assert_json_error(response, status, code)
    assert rotation.queued() == []
    assert rotation.app.ledger.list_requests() == []


def test_error_messages_name_the_bad_value(rotation: Rotation) -> None:
    cases = {
        b'{"key": "https://sample-kv.vault.azure.net/keys/other"}': "https://sample-kv.vault.azure.net/keys/other",
        json.dumps({"key": ALLOWED_KEY, "colour": 1}).encode(): "colour",
        json.dumps({"key": ALLOWED_KEY, "force": "yes"}).encode(): "'yes'",
        b'{"key": "newsecret"}': "newsecret",
    }
    for body, named in cases.items():
        response = rotation.host.http("submit_rotation", "POST", "/api/rotations", body=body)
        assert named in json.loads(response.get_body())["error"]["message"]


BAD_LOOKUPS = {
    "unknown id": ("5d1b2a7e-0000-4000-8000-000000000000", 404, "RequestNotFound"),
    "empty id": ("", 400, "InvalidRequestId"),
    "path characters": ("../../status", 400, "InvalidRequestId"),
    "spaces": ("a b", 400, "InvalidRequestId"),
    "too long": ("a" * 300, 400, "InvalidRequestId"),
    "not ASCII": ("запрос", 400, "InvalidRequestId"),
}


@pytest.mark.parametrize(("request_id", "status", "code"), BAD_LOOKUPS.values(), ids=BAD_LOOKUPS.keys())
def test_bad_lookups_get_a_4xx_json_error(rotation: Rotation, request_id: str, status: int, code: str) -> None:
    response = rotation.host.http(
        "get_rotation", "GET", f"/api/rotations/{request_id}", route_params={"request_id": request_id}
    )
    assert_json_error(response, status, code)


@pytest.mark.parametrize(
    ("function", "method", "url"),
    [
        ("submit_rotation", "GET", "/api/rotations"),
        ("submit_rotation", "DELETE", "/api/rotations"),
        ("get_rotation", "POST", "/api/rotations/5d1b2a7e"),
        ("fleet_status", "PUT", "/api/status"),
    ],
)
def test_a_wrong_method_gets_the_hosts_404_with_an_empty_body(
    rotation: Rotation, function: str, method: str, url: str
) -> None:
    """The host answers a method no route accepts itself: 404 with an empty body (azure-functions-host#10098)."""
    response = rotation.host.http(function, method, url)
    assert (response.status_code, response.get_body()) == (404, b"")
    assert rotation.queued() == []


def test_a_good_submission_is_accepted_after_all(rotation: Rotation) -> None:
    """The bad-input table's counterpart: the same function accepts a good body, so its 4xx answers mean something."""
    response = rotation.host.http(
        "submit_rotation", "POST", "/api/rotations", body=json.dumps({"key": ALLOWED_KEY}).encode()
    )
    assert response.status_code == 202
    (message,) = enqueued(rotation)
    assert (message["key"], message["trigger"]) == (SAMPLE_KEY, "http")


def test_a_misconfigured_app_answers_503_naming_the_setting(
    rotation: Rotation, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("ROTATION_TARGETS", "[oops")
    configure(None)  # the next call builds from the (broken) settings, as a fresh Functions worker would

    response = rotation.host.http("fleet_status", "GET", "/api/status")

    body = assert_json_error(response, 503, "ConfigError")
    assert "ROTATION_TARGETS" in body["error"]["message"]
    assert "AccountKey" not in response.get_body().decode()  # the storage connection string stays secret


# --- Event Grid's storage-queue delivery (the key-events queue) ----------------------------------------------------


def key_events_queue(rotation: Rotation) -> QueueClient:
    queue = rotation.host.queue("key-events")
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    queue.clear_messages()
    return queue


@pytest.mark.parametrize("schema", SAMPLES)
def test_a_key_event_from_the_key_events_queue_enqueues_one_request(rotation: Rotation, schema: str) -> None:
    (event,) = json.loads(key_variant(SAMPLES[schema], "KeyNearExpiry"))
    key_events_queue(rotation).send_message(json.dumps(event))  # one event per message, as Event Grid writes them

    assert rotation.host.pump("on_queued_key_event") == 1

    (message,) = enqueued(rotation)
    assert (message["key"], message["trigger"], message["event_version"]) == (
        SAMPLE_KEY,
        "KeyNearExpiry",
        SAMPLE_VERSION,
    )
    assert rotation.host.queue("key-events").peek_messages() == []  # acknowledged


def test_the_emulators_storage_queue_delivery_reaches_the_rotation_queue(
    rotation: Rotation, emulator_vault: tuple[Emulator, str], azurite: Azurite
) -> None:
    emulator, key = emulator_vault
    key_events_queue(rotation)
    subscription = emulator.eventgrid.subscribe(
        endpoint={"connection_string": azurite.connection_string, "queue": "key-events"},
        event_types=["Microsoft.KeyVault.KeyNewVersionCreated"],
    )
    try:
        record = emulator.vault("contoso-cmk").create_key("aoai-cmk")
        emulator.eventgrid.wait_idle()
    finally:
        emulator.eventgrid.unsubscribe(subscription.id)

    assert rotation.host.pump("on_queued_key_event") == 1

    (message,) = enqueued(rotation)
    assert (message["key"], message["trigger"], message["event_version"]) == (
        key,
        "KeyNewVersionCreated",
        record.version,
    )


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '"a string"'])
def test_an_unusable_key_events_message_is_acknowledged_and_ignored(rotation: Rotation, body: str) -> None:
    key_events_queue(rotation).send_message(body)

    assert rotation.host.pump("on_queued_key_event") == 1

    assert enqueued(rotation) == []
    assert rotation.host.queue("key-events").peek_messages() == []


def test_an_app_without_storage_settings_answers_503_naming_the_setting(
    rotation: Rotation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage__accountName", raising=False)
    monkeypatch.setenv("ROTATION_TARGETS", json.dumps([{"key": SAMPLE_KEY, "accounts": [SAMPLE_ACCOUNT]}]))
    configure(None)

    response = rotation.host.http("fleet_status", "GET", "/api/status")

    body = assert_json_error(response, 503, "ConfigError")
    assert "AzureWebJobsStorage" in body["error"]["message"]


def test_an_idempotency_key_reused_with_a_different_force_is_refused(rotation: Rotation) -> None:
    def submit(force: bool) -> Any:
        body = json.dumps({"key": SAMPLE_KEY, "force": force}).encode()
        return rotation.host.http(
            "submit_rotation", "POST", "/api/rotations", body=body, headers={"Idempotency-Key": "change-42"}
        )

    first = submit(False)
    assert first.status_code == 202
    refused = assert_json_error(submit(True), 422, "IdempotencyKeyReused")
    assert "force=false" in refused["error"]["message"]
    assert submit(False).status_code == 202  # the original request, unchanged
    assert [m["force"] for m in enqueued(rotation)] == [False, False]  # the refusal sent nothing
    row = rotation.app.ledger.get(json.loads(first.get_body())["request_id"])
    assert row is not None and row.force is False


# --- no silent stops (issue 8) ------------------------------------------------------------------------------------

NESTED = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("function", "body"),
    [
        ("on_queued_key_event", NESTED),
        (
            "on_queued_key_event",
            '{"id": "e1", "eventType": "Microsoft.KeyVault.KeyNearExpiry", "data": ' + NESTED + "}",
        ),
        ("rotation_worker", NESTED),
        ("rotation_worker", "x" * 1_000_000),
        ("rotation_poison", NESTED),
        ("rotation_worker", json.dumps({"request_id": "r1", "key": "https://[x/keys/k", "trigger": "http"})),
    ],
    ids=["key-events nested", "key-events data nested", "worker nested", "worker 1 MB", "poison nested", "bad host"],
)
def test_a_hostile_message_is_acknowledged_with_one_clipped_line_and_writes_nothing(
    rotation: Rotation, function: str, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rotation")

    rotation.host.deliver_message(function, body)  # returns: acknowledged, never retried

    assert rotation.queued() == []
    assert rotation.app.ledger.list_requests() == []
    (line,) = [r for r in caplog.records if r.name == "rotation"]
    assert line.event in ("rotation.event_ignored", "rotation.message_rejected")
    assert len(line.getMessage()) < 1000


@pytest.mark.parametrize("version", ["ver-1.0", "a" * 65, "0123456789abcdef0123456789abcde\u0000"])
def test_an_event_for_a_target_key_with_a_bad_version_is_ignored_before_any_write(
    rotation: Rotation, version: str
) -> None:
    event = with_data(pascal(Id=f"https://sample-kv.vault.azure.net/keys/newsecret/{version}", Version=version))

    rotation.host.deliver_events("on_key_event", [event])

    assert rotation.queued() == []
    assert rotation.app.ledger.list_requests() == []


def test_a_malformed_storage_setting_answers_503_naming_it_without_echoing_it(
    rotation: Rotation, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "c2VjcmV0LWtleS1ub3QtYS1yZWFsLW9uZQ=="
    monkeypatch.setenv("AzureWebJobsStorage", f"AccountName=st;AccountKey={secret};BlobEndpoint=https://[x")
    monkeypatch.setenv("ROTATION_TARGETS", json.dumps([{"key": SAMPLE_KEY, "accounts": [SAMPLE_ACCOUNT]}]))
    configure(None)

    response = rotation.host.http("fleet_status", "GET", "/api/status")

    body = assert_json_error(response, 503, "ConfigError")
    assert "AzureWebJobsStorage" in body["error"]["message"]
    assert secret not in response.get_body().decode()
