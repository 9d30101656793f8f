"""Event Grid in the emulator: Key Vault system events, delivery to webhooks, queues and callbacks, the custom topic.

Real clients only: ``KeyClient`` creates keys over HTTPS, ``EventGridPublisherClient`` publishes to the custom topic,
``QueueClient`` reads what was delivered into the session's Azurite, and webhooks are tiny ``http.server`` servers
that answer Event Grid's validation handshakes the way the Functions host does (EXT-EG in azure-facts §0).

Sources cited below: EG-DR is MicrosoftDocs/azure-docs ``articles/event-grid/delivery-and-retry.md`` @2ccf6fd4
(Learn: /azure/event-grid/delivery-and-retry); EG-VAL and EG-VALCE are the endpoint-validation articles; EG-KV is
``articles/event-grid/event-schema-key-vault.md`` @05b33ddd; SPEC-EGKV is the Key Vault event spec under
``tests/specs/eventgrid``. All are listed in /work/shared/docs/azure-facts.md §0.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest
from azure.core.credentials import AccessToken, AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient, generate_sas
from azure.keyvault.keys import KeyClient, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from emulator import Emulator, EmulatorCredential
from emulator.azurite import Azurite
from emulator.eventgrid import (
    CLOUD_EVENT_SCHEMA,
    DATA_VARIANTS,
    KEY_EXPIRED,
    KEY_NEAR_EXPIRY,
    KEY_NEW_VERSION_CREATED,
    SUBSCRIPTION_VALIDATION_EVENT,
    DeadLetterReason,
    DeliveryOutcome,
    PublishedEvent,
)
from rotation.events import parse_key_event
from rotation.notify import OutcomePublisher
from tests.emulator.test_core import admin
from tests.swagger import EVENTGRID_KEYVAULT, example, validate

DAY = 86400
EXAMPLES = "eventgrid/data-plane/Microsoft.KeyVault/stable/2018-01-01/examples"
DATA_DEFINITIONS = {
    KEY_NEW_VERSION_CREATED: "KeyVaultKeyNewVersionCreatedEventData",
    KEY_NEAR_EXPIRY: "KeyVaultKeyNearExpiryEventData",
    KEY_EXPIRED: "KeyVaultKeyExpiredEventData",
}
# EG-VAL's SubscriptionValidationEvent sample (azure-facts §5), the shape the handshake POST must have.
VALIDATION_SAMPLE = {
    "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
    "topic": "/subscriptions/xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
    "subject": "",
    "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://rp-eastus2..."},
    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
    "eventTime": "2022-10-28T04:23:35.1981776Z",
    "metadataVersion": "1",
    "dataVersion": "1",
}


class Webhook:
    """A local HTTP endpoint that records each POST and answers with the next scripted status (then 200).

    With ``handshake=True`` (the default) it answers Event Grid's validation handshakes as the Functions host does
    (EXT-EG): the ``SubscriptionValidation`` POST with 200 and ``{"validationResponse": code}``, an ``OPTIONS`` with
    ``WebHook-Allowed-Origin``. Handshakes go to ``handshakes``, not ``requests``, and use no scripted status. With
    ``handshake=False`` it is an endpoint that knows nothing of them: the validation POST is an ordinary request and
    ``OPTIONS`` gets 405. ``sleep`` delays every answer (seconds).
    """

    def __init__(self, statuses: list[int], *, handshake: bool = True, sleep: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.handshakes: list[tuple[str, str, dict[str, str], Any]] = []  # (method, path, headers, body)
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                headers = dict(self.headers.items())
                time.sleep(sleep)
                if handshake and headers.get("aeg-event-type") == "SubscriptionValidation":
                    hook.handshakes.append(("POST", self.path, headers, body))
                    self.answer(200, json.dumps({"validationResponse": body[0]["data"]["validationCode"]}).encode())
                    return
                hook.requests.append((self.path, headers, body))
                self.answer(hook.statuses.pop(0) if hook.statuses else 200)

            def do_OPTIONS(self) -> None:
                hook.handshakes.append(("OPTIONS", self.path, dict(self.headers.items()), None))
                if not handshake:
                    self.answer(405)
                    return
                self.answer(200, extra={"WebHook-Allowed-Origin": self.headers["WebHook-Request-Origin"]})

            def answer(self, status: int, body: bytes = b"", extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Callable[..., Webhook]]:
    hooks: list[Webhook] = []

    def make(*statuses: int, handshake: bool = True, sleep: float = 0.0) -> Webhook:
        hooks.append(Webhook(list(statuses), handshake=handshake, sleep=sleep))
        return hooks[-1]

    yield make
    for hook in hooks:
        hook.close()


def of_type(events: list[PublishedEvent], event_type: str) -> list[PublishedEvent]:
    return [e for e in events if e.event_type == event_type]


def attempts(emulator: Emulator, subscription_id: str) -> list[tuple[int, int | None, str]]:
    return [
        (d.attempt, d.status, d.outcome) for d in emulator.eventgrid.deliveries if d.subscription_id == subscription_id
    ]


# Key Vault system events ---------------------------------------------------------------------------------------
def test_key_new_version_created_follows_the_published_schemas(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-events")
    now = emulator.clock.timestamp()
    record = vault.create_key("cmk", nbf=now - 60, exp=now + 90 * DAY)

    (event,) = emulator.eventgrid.published
    eg, ce = event.event_grid, event.cloud_event
    assert set(eg) == set(example(f"{EXAMPLES}/event-grid-schema/secret_new_version_created.json"))
    assert set(ce) == set(example(f"{EXAMPLES}/cloud-events-schema/secret_new_version_created.json"))
    assert eg["topic"] == ce["source"] == vault.arm_id
    assert eg["subject"] == ce["subject"] == "cmk"
    assert eg["eventType"] == ce["type"] == KEY_NEW_VERSION_CREATED
    assert eg["id"] == ce["id"] and eg["eventTime"] == ce["time"]
    assert (eg["dataVersion"], eg["metadataVersion"], ce["specversion"]) == ("1", "1", "1.0")
    assert (
        eg["data"]
        == ce["data"]
        == {
            "Id": record.kid,
            "VaultName": "kv-events",
            "ObjectType": "Key",
            "ObjectName": "cmk",
            "Version": record.version,
            "NBF": now - 60,
            "EXP": now + 90 * DAY,
        }
    )
    validate(EVENTGRID_KEYVAULT, "KeyVaultKeyNewVersionCreatedEventData", eg["data"])
    event_time = datetime.fromisoformat(eg["eventTime"].replace("Z", "+00:00"))
    assert abs((event_time - emulator.clock.now()).total_seconds()) < 5
    # The SDKs' own parsers accept both forms.
    assert EventGridEvent.from_dict(eg).event_type == KEY_NEW_VERSION_CREATED
    assert CloudEvent.from_dict(ce).source == vault.arm_id


def test_a_key_without_dates_omits_nbf_and_exp_as_the_schema_allows(emulator: Emulator) -> None:
    """SPEC-EGKV types NBF and EXP as ``number`` and requires neither, so a key without them omits them: ``null``
    would not validate. Real Key Vault's choice is not published (no sample of a key without dates exists)."""
    vault = emulator.add_vault("kv-nodates")
    vault.create_key("plain")
    (event,) = emulator.eventgrid.published
    assert "NBF" not in event.event_grid["data"] and "EXP" not in event.event_grid["data"]
    assert "NBF" not in event.cloud_event["data"] and "EXP" not in event.cloud_event["data"]
    validate(EVENTGRID_KEYVAULT, "KeyVaultKeyNewVersionCreatedEventData", event.event_grid["data"])
    with pytest.raises(jsonschema.ValidationError, match="None is not of type 'number'"):
        validate(EVENTGRID_KEYVAULT, "KeyVaultKeyNewVersionCreatedEventData", {**event.event_grid["data"], "NBF": None})
    emulator.clock.advance(timedelta(days=3650))
    assert len(emulator.eventgrid.published) == 1  # no expiry, so no notices


def test_the_null_dates_variant_still_sends_null(emulator: Emulator) -> None:
    """The kinder, older output on request: ``data_variant="null-dates"``."""
    vault = emulator.add_vault("kv-nulldates")
    received: list[dict[str, Any]] = []
    emulator.eventgrid.subscribe(endpoint=received.append, data_variant="null-dates")
    vault.create_key("plain")
    emulator.eventgrid.wait_idle(5)
    (event,) = received
    assert event["data"]["NBF"] is None and event["data"]["EXP"] is None


def test_expiry_notices_fire_once_per_version_as_the_clock_crosses_them(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-expiry")
    now = emulator.clock.timestamp()
    first = vault.create_key("cmk", nbf=now, exp=now + 40 * DAY)
    published = emulator.eventgrid.published

    emulator.clock.advance(timedelta(days=9))
    assert of_type(published, KEY_NEAR_EXPIRY) == []  # 31 days left
    emulator.clock.advance(timedelta(days=2))
    (near,) = of_type(published, KEY_NEAR_EXPIRY)
    assert near.event_grid["data"]["Version"] == first.version
    validate(EVENTGRID_KEYVAULT, DATA_DEFINITIONS[KEY_NEAR_EXPIRY], near.event_grid["data"])
    emulator.clock.advance(timedelta(days=1))
    assert emulator.eventgrid.scan() == []
    assert len(of_type(published, KEY_NEAR_EXPIRY)) == 1

    emulator.clock.advance(timedelta(days=29))
    (expired,) = of_type(published, KEY_EXPIRED)
    assert expired.cloud_event["data"]["Version"] == first.version
    validate(EVENTGRID_KEYVAULT, DATA_DEFINITIONS[KEY_EXPIRED], expired.cloud_event["data"])
    emulator.clock.advance(timedelta(days=100))
    assert emulator.eventgrid.scan() == []
    assert len(published) == 3

    second = vault.create_key("cmk", exp=emulator.clock.timestamp() + 60 * DAY)  # a new version starts afresh
    emulator.clock.advance(timedelta(days=31))
    notices = of_type(published, KEY_NEAR_EXPIRY)
    assert [n.event_grid["data"]["Version"] for n in notices] == [first.version, second.version]
    assert of_type(published, KEY_EXPIRED) == [expired]


def test_keys_seeded_inside_the_window_get_their_notices_on_the_next_scan(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-seeded")
    now = emulator.clock.timestamp()
    soon = vault.create_key("soon", exp=now + 10 * DAY)
    gone = vault.create_key("gone", exp=now - DAY)
    assert [e.event_type for e in emulator.eventgrid.published] == [KEY_NEW_VERSION_CREATED] * 2

    emitted = emulator.eventgrid.scan()
    assert [(e.subject, e.event_type) for e in emitted] == [
        ("gone", KEY_NEAR_EXPIRY),
        ("gone", KEY_EXPIRED),
        ("soon", KEY_NEAR_EXPIRY),
    ]
    assert {e.event_grid["data"]["Version"] for e in emitted} == {soon.version, gone.version}
    assert emulator.eventgrid.scan() == []


def test_only_the_current_version_gets_expiry_notices(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-current")
    now = emulator.clock.timestamp()
    vault.create_key("cmk", exp=now + 5 * DAY)
    vault.create_key("cmk", exp=now + 100 * DAY)
    emulator.clock.advance(timedelta(days=6))  # the old version expired, but it is no longer current
    assert emulator.eventgrid.scan() == []
    assert of_type(emulator.eventgrid.published, KEY_EXPIRED) == []


def test_near_expiry_follows_the_rotation_policy_notify_time(emulator: Emulator) -> None:
    """Key Vault fires KeyNearExpiry at the policy's Notify ``timeBeforeExpiry``, P30D by default (azure-facts §10.10;
    EG-KV today: "The event time can be configured using key rotation policy"). The policy is set with the real
    KeyClient."""
    vault = emulator.add_vault("kv-notify")
    now = emulator.clock.timestamp()
    client = KeyClient(vault.url, emulator.credential(), verify_challenge_resource=False, **emulator.client_kwargs())
    early = vault.create_key("early", exp=now + 60 * DAY)
    late = vault.create_key("late", exp=now + 60 * DAY)
    vault.create_key("default", exp=now + 60 * DAY)
    client.update_key_rotation_policy(
        "early",
        KeyRotationPolicy(
            expires_in="P90D",
            lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P45D")],
        ),
    )
    client.update_key_rotation_policy(
        "late",
        KeyRotationPolicy(
            expires_in="P90D",
            lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P10D")],
        ),
    )

    def notified() -> list[str]:
        return [e.subject for e in of_type(emulator.eventgrid.published, KEY_NEAR_EXPIRY)]

    emulator.clock.advance(timedelta(days=14))
    assert notified() == []  # 46 days left
    emulator.clock.advance(timedelta(days=1, hours=1))
    assert notified() == ["early"]  # inside its 45 days
    emulator.clock.advance(timedelta(days=15))
    assert notified() == ["early", "default"]  # inside the default 30 days
    emulator.clock.advance(timedelta(days=19))
    assert notified() == ["early", "default"]  # 11 days left: not yet inside 10
    emulator.clock.advance(timedelta(days=1))
    assert notified() == ["early", "default", "late"]
    versions = {
        e.subject: e.event_grid["data"]["Version"] for e in of_type(emulator.eventgrid.published, KEY_NEAR_EXPIRY)
    }
    assert (versions["early"], versions["late"]) == (early.version, late.version)


def test_a_rest_create_is_delivered_on_the_worker_thread(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    vault = emulator.add_vault("kv-rest")
    threads: list[str] = []
    emulator.eventgrid.subscribe(endpoint=lambda event: threads.append(threading.current_thread().name))
    hook = webhook()
    subscription = emulator.eventgrid.subscribe(endpoint=hook.url + "/api/events?code=s3cret")
    client = KeyClient(vault.url, emulator.credential(), verify_challenge_resource=False, **emulator.client_kwargs())
    key = client.create_rsa_key("cmk", size=2048)
    emulator.eventgrid.wait_idle(5)

    assert threads == ["eventgrid-delivery"]
    ((path, headers, body),) = hook.requests
    assert path == "/api/events?code=s3cret"
    assert headers["aeg-event-type"] == "Notification"
    assert headers["aeg-subscription-name"] == subscription.id.upper()
    assert headers["Content-Type"] == "application/json"
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["eventType"] == KEY_NEW_VERSION_CREATED and body[0]["data"]["Id"] == key.id
    assert "s3cret" not in json.dumps(subscription.describe())


# Delivery ------------------------------------------------------------------------------------------------------
def test_webhook_gets_each_schema_with_its_content_type(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    vault = emulator.add_vault("kv-schemas")
    hook = webhook()
    emulator.eventgrid.subscribe(endpoint=hook.url + "/eg")
    emulator.eventgrid.subscribe(endpoint=hook.url + "/ce", schema=CLOUD_EVENT_SCHEMA)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)

    by_path = {path: (headers, body) for path, headers, body in hook.requests}
    (event,) = emulator.eventgrid.published
    assert by_path["/eg"][0]["Content-Type"] == "application/json"
    assert by_path["/eg"][1] == [event.event_grid]
    assert by_path["/ce"][0]["Content-Type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert by_path["/ce"][1] == [event.cloud_event]
    assert all(headers["aeg-event-type"] == "Notification" for headers, _ in by_path.values())


def test_a_500_is_retried_on_the_scaled_schedule(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    vault = emulator.add_vault("kv-retry")
    hook = webhook(500)
    subscription = emulator.eventgrid.subscribe(endpoint=hook.url)
    started = time.monotonic()
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)

    assert attempts(emulator, subscription.id) == [(1, 500, "retrying"), (2, 200, "delivered")]
    assert time.monotonic() - started >= 10 * emulator.eventgrid.retry_scale
    assert len(hook.requests) == 2 and hook.requests[0][2] == hook.requests[1][2]
    assert [headers["aeg-delivery-count"] for _, headers, _ in hook.requests] == ["0", "1"]
    assert emulator.eventgrid.dead_letters == []


def test_a_400_is_not_retried_and_is_dead_lettered(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    vault = emulator.add_vault("kv-400")
    hook = webhook(400)
    subscription = emulator.eventgrid.subscribe(endpoint=hook.url)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)

    assert attempts(emulator, subscription.id) == [(1, 400, "dead-lettered")]
    (letter,) = emulator.eventgrid.dead_letters
    assert letter.event == emulator.eventgrid.published[0].event_grid
    # The words of a captured dead letter for a 400 (Stack Overflow 52173869, quoted in the module docstring).
    described = letter.describe()
    assert (described["deadLetterReason"], described["lastDeliveryOutcome"]) == (
        "UndeliverableDueToHttpBadRequest",
        "BadRequest",
    )
    assert (described["deliveryAttempts"], described["lastHttpStatusCode"]) == (1, 400)


def test_delivery_gives_up_after_max_attempts(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    vault = emulator.add_vault("kv-giveup")
    hook = webhook(503, 503, 503)
    busy = emulator.eventgrid.subscribe(endpoint=hook.url, max_attempts=2)
    closed = webhook()
    closed.close()  # nothing listens on this port any more
    # A down endpoint cannot answer the validation handshake; opt out of it to test delivery to one.
    unreachable = emulator.eventgrid.subscribe(endpoint=closed.url, max_attempts=2, validate=False)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)

    assert attempts(emulator, busy.id) == [(1, 503, "retrying"), (2, 503, "dead-lettered")]
    assert attempts(emulator, unreachable.id) == [(1, None, "retrying"), (2, None, "dead-lettered")]
    errors = [d.error for d in emulator.eventgrid.deliveries if d.subscription_id == unreachable.id]
    assert all(error and "webhook unreachable" in error for error in errors)
    words = {
        letter.subscription_id: (letter.dead_letter_reason, letter.last_delivery_outcome)
        for letter in emulator.eventgrid.dead_letters
    }
    assert words == {
        busy.id: ("MaxDeliveryAttemptsExceeded", "Busy"),
        unreachable.id: ("MaxDeliveryAttemptsExceeded", "SocketError"),
    }


def test_duplicates_and_delay(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-dupes")
    arrivals: list[tuple[float, str]] = []
    emulator.eventgrid.subscribe(
        endpoint=lambda e: arrivals.append((time.monotonic(), e["id"])), duplicate=2, delay=0.3
    )
    started = time.monotonic()
    vault.create_key("cmk")
    assert arrivals == []  # still delayed
    emulator.eventgrid.wait_idle(5)

    (event,) = emulator.eventgrid.published
    assert [event_id for _, event_id in arrivals] == [event.id] * 3
    assert min(at for at, _ in arrivals) - started >= 0.3
    assert sorted(d.copy for d in emulator.eventgrid.deliveries) == [0, 1, 2]


def test_a_failing_callback_is_retried(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-callback")
    calls: list[str] = []

    def flaky(event: dict[str, Any]) -> None:
        calls.append(event["id"])
        if len(calls) == 1:
            raise RuntimeError("not yet")

    subscription = emulator.eventgrid.subscribe(endpoint=flaky)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)
    assert attempts(emulator, subscription.id) == [(1, None, "retrying"), (2, 200, "delivered")]
    assert emulator.eventgrid.deliveries[0].error == "RuntimeError: not yet"
    assert [d.result for d in emulator.eventgrid.deliveries] == ["GenericError", "Delivered"]
    assert calls[0] == calls[1]


def test_filters_and_order_with_and_without_shuffle(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-order")
    now = emulator.clock.timestamp()
    for index in range(6):
        vault.create_key(f"cmk-{index}", exp=now + DAY)
    vault.create_key("other", exp=now + DAY)
    emulator.eventgrid.random.seed(7)
    ordered: list[str] = []
    shuffled: list[str] = []
    near_expiry = [KEY_NEAR_EXPIRY]
    emulator.eventgrid.subscribe(endpoint=lambda e: ordered.append(e["subject"]), event_types=near_expiry)
    emulator.eventgrid.subscribe(
        endpoint=lambda e: shuffled.append(e["subject"]),
        event_types=near_expiry,
        subject_begins_with="CMK-",  # Event Grid's subject filters ignore case
        shuffle=True,
    )
    emitted = emulator.eventgrid.scan()
    emulator.eventgrid.wait_idle(5)

    in_batch_order = [e.subject for e in emitted if e.event_type == KEY_NEAR_EXPIRY]
    assert ordered == in_batch_order  # one worker, same due time: the order they were published in
    assert sorted(shuffled) == [f"cmk-{index}" for index in range(6)]
    assert shuffled != [s for s in in_batch_order if s.startswith("cmk-")]


def test_storage_queue_gets_base64_event_json(emulator: Emulator, azurite: Azurite) -> None:
    vault = emulator.add_vault("kv-queue")
    name = f"events-{uuid.uuid4().hex[:12]}"
    reader = QueueClient.from_connection_string(
        azurite.connection_string, name, message_decode_policy=TextBase64DecodePolicy()
    )
    reader.create_queue()
    emulator.eventgrid.subscribe(endpoint={"connection_string": azurite.connection_string, "queue": name})
    missing = emulator.eventgrid.subscribe(
        endpoint={"connection_string": azurite.connection_string, "queue": f"missing-{name}"}, max_attempts=1
    )
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)

    (event,) = emulator.eventgrid.published
    (raw,) = QueueClient.from_connection_string(azurite.connection_string, name).peek_messages()
    assert json.loads(base64.b64decode(raw.content)) == event.event_grid  # base64 on the wire
    (message,) = reader.receive_messages()
    assert json.loads(message.content) == event.event_grid
    assert attempts(emulator, missing.id) == [(1, 404, "dead-lettered")]
    (letter,) = emulator.eventgrid.dead_letters
    assert (letter.dead_letter_reason, letter.last_delivery_outcome) == ("MaxDeliveryAttemptsExceeded", "NotFound")
    assert "AccountKey" not in json.dumps([s.describe() for s in emulator.eventgrid.subscriptions])


def test_stop_is_quick_with_deliveries_pending() -> None:
    with Emulator() as emu:
        vault = emu.add_vault("kv-stop")
        emu.eventgrid.subscribe(endpoint=lambda event: None, delay=60)
        vault.create_key("cmk")
        started = time.monotonic()
        emu.eventgrid.stop()
        assert time.monotonic() - started < 1
        emu.eventgrid.wait_idle(0.1)  # nothing pending after stop


# Webhook validation (EG-VAL, EG-VALCE, azure-facts §5) ------------------------------------------------------------
def test_a_webhook_subscription_is_validated_before_it_exists(
    emulator: Emulator, webhook: Callable[..., Webhook]
) -> None:
    """EG-VAL: on create Event Grid POSTs a SubscriptionValidationEvent with ``aeg-event-type: SubscriptionValidation``
    and needs 200 with ``{"validationResponse": code}``; the event has the sample's shape (azure-facts §5)."""
    vault = emulator.add_vault("kv-validate")
    hook = webhook()
    subscription = emulator.eventgrid.subscribe(endpoint=hook.url + "/runtime/webhooks/eventgrid?code=s3cret")

    ((method, path, headers, body),) = hook.handshakes
    assert (method, path) == ("POST", "/runtime/webhooks/eventgrid?code=s3cret")
    assert headers["aeg-event-type"] == "SubscriptionValidation"
    assert headers["aeg-subscription-name"] == subscription.id.upper()
    assert (headers["aeg-delivery-count"], headers["aeg-data-version"], headers["aeg-metadata-version"]) == (
        "0",
        "1",
        "1",
    )
    (event,) = body
    assert set(event) == set(VALIDATION_SAMPLE) and set(event["data"]) == set(VALIDATION_SAMPLE["data"])
    assert event["eventType"] == SUBSCRIPTION_VALIDATION_EVENT and event["subject"] == ""
    assert uuid.UUID(event["data"]["validationCode"])
    assert subscription.validation == "Succeeded" and emulator.eventgrid.subscriptions == [subscription]
    assert hook.requests == []  # the handshake is not a delivery
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    with pytest.raises(urllib.error.HTTPError) as manual:  # manual validation (a GET on validationUrl) is not emulated
        urllib.request.urlopen(event["data"]["validationUrl"], context=context)
    assert manual.value.code == 400 and "not emulated" in json.loads(manual.value.read())["error"]["message"]

    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)
    ((_, notification, _),) = hook.requests
    assert notification["aeg-event-type"] == "Notification"


@pytest.mark.parametrize("answer", ["ignores the code", "refuses", "is down"])
def test_a_webhook_that_fails_validation_is_not_subscribed(
    emulator: Emulator, webhook: Callable[..., Webhook], answer: str
) -> None:
    """Until validated nothing is delivered and the subscription is not created; Event Grid's own message
    (azure-docs articles/event-grid/troubleshoot-errors.md) names the endpoint."""
    vault = emulator.add_vault("kv-novalidate")
    hook = webhook(*({"ignores the code": [200], "refuses": [404], "is down": []}[answer]), handshake=False)
    if answer == "is down":
        hook.close()
    with pytest.raises(
        ValueError, match=r"The attempt to validate the provided endpoint http://127\.0\.0\.1:"
    ) as caught:
        emulator.eventgrid.subscribe(endpoint=hook.url + "/hook?code=s3cret")
    assert "https://aka.ms/esvalidation" in str(caught.value) and "s3cret" not in str(caught.value)
    assert emulator.eventgrid.subscriptions == []
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)
    assert emulator.eventgrid.deliveries == []
    assert len(hook.requests) == (0 if answer == "is down" else 1)  # the validation POST, and nothing after it

    status, body = admin(emulator, "POST", "/admin/eventgrid/subscriptions", {"webhook": hook.url})
    assert status == 400 and "The attempt to validate the provided endpoint" in body["error"]["message"]


def test_a_cloudevents_webhook_is_validated_with_the_options_handshake(
    emulator: Emulator, webhook: Callable[..., Webhook]
) -> None:
    """EG-VALCE: CloudEvents output uses the HTTP OPTIONS abuse-protection handshake. ``WebHook-Request-Origin`` goes
    out and consent is ``WebHook-Allowed-Origin`` coming back; a 405 is no consent."""
    hook = webhook()
    subscription = emulator.eventgrid.subscribe(endpoint=hook.url + "/ce", schema=CLOUD_EVENT_SCHEMA)
    ((method, path, headers, _),) = hook.handshakes
    assert (method, path, headers["WebHook-Request-Origin"]) == ("OPTIONS", "/ce", "eventgrid.azure.net")
    assert subscription.validation == "Succeeded"

    deaf = webhook(handshake=False)
    with pytest.raises(ValueError, match="WebHook-Allowed-Origin"):
        emulator.eventgrid.subscribe(endpoint=deaf.url, schema=CLOUD_EVENT_SCHEMA)
    assert [h[0] for h in deaf.handshakes] == ["OPTIONS"]
    assert emulator.eventgrid.subscriptions == [subscription]


def test_validation_can_be_skipped_for_an_endpoint_that_cannot_answer_it(
    emulator: Emulator, webhook: Callable[..., Webhook]
) -> None:
    """The kinder behaviour on request: ``validate=False`` (Python) or ``"validate": false`` (admin)."""
    vault = emulator.add_vault("kv-skip")
    plain = webhook(handshake=False)
    subscription = emulator.eventgrid.subscribe(endpoint=plain.url + "/eg", validate=False)
    status, created = admin(
        emulator,
        "POST",
        "/admin/eventgrid/subscriptions",
        {"webhook": plain.url + "/ce", "schema": CLOUD_EVENT_SCHEMA, "validate": False},
    )
    assert status == 201 and created["validation"] == "Skipped" and subscription.validation == "Skipped"
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)
    assert plain.handshakes == []
    assert sorted(path for path, _, _ in plain.requests) == ["/ce", "/eg"]


def test_notifications_carry_event_grids_headers(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    """azure-docs articles/event-grid/includes/event-grid-message-headers.md: aeg-subscription-name,
    aeg-delivery-count, aeg-event-type, aeg-metadata-version (the spec version for CloudEvents), aeg-data-version
    (not for CloudEvents) and aeg-output-event-id."""
    vault = emulator.add_vault("kv-headers")
    hook = webhook()
    eg = emulator.eventgrid.subscribe(endpoint=hook.url + "/eg")
    ce = emulator.eventgrid.subscribe(endpoint=hook.url + "/ce", schema=CLOUD_EVENT_SCHEMA)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)

    by_path = {path: headers for path, headers, _ in hook.requests}
    (event,) = emulator.eventgrid.published
    expected = {"aeg-event-type": "Notification", "aeg-delivery-count": "0", "aeg-output-event-id": event.id}
    assert (
        by_path["/eg"].items()
        >= {
            **expected,
            "aeg-subscription-name": eg.id.upper(),
            "aeg-metadata-version": "1",
            "aeg-data-version": "1",
        }.items()
    )
    assert (
        by_path["/ce"].items()
        >= {
            **expected,
            "aeg-subscription-name": ce.id.upper(),
            "aeg-metadata-version": "1.0",
        }.items()
    )
    assert "aeg-data-version" not in by_path["/ce"]


# Retry policy and dead-letter words (EG-DR) ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (400, "UndeliverableDueToHttpBadRequest", "BadRequest"),
        (401, "UndeliverableDueToClientError", "Unauthorized"),
        (403, "UndeliverableDueToClientError", "Forbidden"),
        (413, "UndeliverableDueToClientError", "PayloadTooLarge"),
    ],
)
def test_a_webhooks_client_errors_are_not_retried(
    emulator: Emulator, webhook: Callable[..., Webhook], status: int, reason: str, outcome: str
) -> None:
    """EG-DR, "The following table describes the types of endpoints and errors for which retry doesn't happen":
    Webhook 400, 413, 401, 403 (the current Learn page; the 2023 text marks 403 "Not retried" in its status table)."""
    vault = emulator.add_vault("kv-client-error")
    hook = webhook(status)
    subscription = emulator.eventgrid.subscribe(endpoint=hook.url)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)
    assert attempts(emulator, subscription.id) == [(1, status, "dead-lettered")]
    (letter,) = emulator.eventgrid.dead_letters
    assert letter.describe()["deadLetterReason"] == reason
    assert letter.describe()["lastDeliveryOutcome"] == outcome


def test_a_404_and_a_timeout_are_retried_and_named(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    """A webhook's 404 is retried (it is not in the no-retry table); an answer slower than the response timeout is
    ``TimedOut`` and retried (EG-DR: "After 30 seconds, if the endpoint hasn't responded, the message is queued for
    retry")."""
    vault = emulator.add_vault("kv-retried")
    missing = webhook(404, 404)
    lost = emulator.eventgrid.subscribe(endpoint=missing.url, max_attempts=2)
    slow = webhook(sleep=0.5)
    emulator.eventgrid.response_timeout = 0.2
    late = emulator.eventgrid.subscribe(endpoint=slow.url, max_attempts=2, validate=False)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(10)

    assert attempts(emulator, lost.id) == [(1, 404, "retrying"), (2, 404, "dead-lettered")]
    assert [d.result for d in emulator.eventgrid.deliveries if d.subscription_id == late.id] == ["TimedOut"] * 2
    words = {
        d.subscription_id: (d.dead_letter_reason, d.last_delivery_outcome) for d in emulator.eventgrid.dead_letters
    }
    assert words == {
        lost.id: (DeadLetterReason.MAX_DELIVERY_ATTEMPTS_EXCEEDED, DeliveryOutcome.NOT_FOUND),
        late.id: (DeadLetterReason.MAX_DELIVERY_ATTEMPTS_EXCEEDED, DeliveryOutcome.TIMED_OUT),
    }


def test_a_503_waits_at_least_30_scaled_seconds(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    """EG-DR "Failure codes": 503 Service Unavailable, "Retry after 30 seconds or more" (the schedule says 10 s)."""
    vault = emulator.add_vault("kv-503")
    hook = webhook(503)
    emulator.eventgrid.subscribe(endpoint=hook.url)
    started = time.monotonic()
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)
    assert [d.result for d in emulator.eventgrid.deliveries] == ["Busy", "Delivered"]
    assert time.monotonic() - started >= 30 * emulator.eventgrid.retry_scale


def test_an_event_outliving_its_time_to_live_is_dead_lettered(
    emulator: Emulator, webhook: Callable[..., Webhook]
) -> None:
    """EG-DR "Retry policy": TTL 1-1440 minutes, default 1440; the first limit hit wins, and "The time-to-live
    expiration is checked ONLY at the next scheduled delivery attempt". The TTL runs on the scaled schedule: 1 minute
    is 0.6 s at retry_scale 0.01, so with 30 attempts allowed the 4th (due after 0.1 + 0.3 + 0.6 s) never happens."""
    vault = emulator.add_vault("kv-ttl")
    hook = webhook(*([500] * 30))
    subscription = emulator.eventgrid.subscribe(endpoint=hook.url, event_ttl=1)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(10)

    tried = attempts(emulator, subscription.id)
    assert 2 <= len(tried) <= 3 and all(outcome == "retrying" for _, _, outcome in tried)
    (letter,) = emulator.eventgrid.dead_letters
    described = letter.describe()
    assert described["deadLetterReason"] == "TimeToLiveExceeded"
    assert (described["deliveryAttempts"], described["lastDeliveryOutcome"]) == (len(tried), "GenericError")
    assert described["lastHttpStatusCode"] == 500


def test_time_to_live_defaults_to_a_day_and_is_checked(emulator: Emulator) -> None:
    subscription = emulator.eventgrid.subscribe(endpoint=lambda event: None)
    assert subscription.event_ttl == 1440 and subscription.describe()["event_ttl"] == 1440
    for wrong in (0, 1441, 2.5, True):
        with pytest.raises(ValueError, match=r"event_ttl .* from 1 to 1440"):
            emulator.eventgrid.subscribe(endpoint=lambda event: None, event_ttl=wrong)  # type: ignore[arg-type]


# Payload variants (EG-KV @05b33ddd, SPEC-EGKV and its examples) ---------------------------------------------------
def test_each_data_variant_has_its_published_shape_and_the_service_reads_it(emulator: Emulator) -> None:
    """Microsoft's own samples show Key Vault ``data`` in several shapes (azure-facts §4.2): the spec's numbers, the
    spec examples' and docs' strings, the older camelCase names, and the current docs sample with ``"ObjectName "``
    and a space before the version. A subscription asks for one by name; the rotation service must read each."""
    vault = emulator.add_vault("kv-variants")
    now = emulator.clock.timestamp()
    received: dict[str, list[dict[str, Any]]] = {variant: [] for variant in DATA_VARIANTS}
    for variant, events in received.items():
        emulator.eventgrid.subscribe(endpoint=events.append, data_variant=variant)
        emulator.eventgrid.subscribe(endpoint=events.append, data_variant=variant, schema=CLOUD_EVENT_SCHEMA)
    record = vault.create_key("cmk", nbf=now, exp=now + 90 * DAY)
    emulator.eventgrid.wait_idle(5)

    spec_example = example(f"{EXAMPLES}/event-grid-schema/secret_new_version_created.json")["data"]
    docs_sample_names = {"Id", "VaultName", "ObjectType", "ObjectName ", "Version", "NBF", "EXP"}  # EG-KV @05b33ddd
    camel_names = {"id", "vaultName", "objectType", "objectName", "version", "nbf", "exp"}  # SPEC-EGKV @1370afed
    for variant, events in received.items():
        assert len(events) == 2, variant
        data = events[0]["data"]
        assert events[1]["data"] == data, variant  # the same shape in both schemas
        if variant in ("spec", "null-dates"):
            assert data == {**spec_example, **data} and (data["NBF"], data["EXP"]) == (now, now + 90 * DAY)
            validate(EVENTGRID_KEYVAULT, DATA_DEFINITIONS[KEY_NEW_VERSION_CREATED], data)
        elif variant == "string-dates":
            assert set(data) == set(spec_example) and (data["NBF"], data["EXP"]) == (str(now), str(now + 90 * DAY))
        elif variant == "camel-case":
            assert set(data) == camel_names and data["version"] == record.version
        else:
            assert set(data) == docs_sample_names and data["Version"] == f" {record.version}"
            assert isinstance(data["NBF"], str)
        for event in events:
            parsed = parse_key_event(
                event_id=event["id"],
                event_type=event.get("eventType") or event["type"],
                subject=event["subject"],
                data=event["data"],
            )
            assert (parsed.key.name, parsed.version) == ("cmk", record.version), variant
    assert emulator.eventgrid.published[0].event_grid["data"]["NBF"] == now  # the record keeps the spec shape


def test_an_unknown_data_variant_is_refused(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="Unknown data_variant 'PascalCase'; use one of"):
        emulator.eventgrid.subscribe(endpoint=lambda event: None, data_variant="PascalCase")
    status, body = admin(
        emulator, "POST", "/admin/eventgrid/subscriptions", {"webhook": "http://127.0.0.1:1/x", "data_variant": "x"}
    )
    assert status == 400 and "Unknown data_variant 'x'" in body["error"]["message"]


# The custom topic ----------------------------------------------------------------------------------------------
def test_custom_topic_accepts_both_schemas_from_the_real_client(emulator: Emulator) -> None:
    client = EventGridPublisherClient(emulator.topic_url, AzureKeyCredential(emulator.eventgrid.topic_key))
    client.send(
        [EventGridEvent(subject="rotation/cmk", event_type="Rotation.Completed", data={"to": "v2"}, data_version="1")],
        connection_verify=emulator.ca_bundle,
    )
    client.send(
        [CloudEvent(source="/rotation", type="Rotation.Failed", data={"error": "x"})],
        connection_verify=emulator.ca_bundle,
    )
    expiry = emulator.clock.now() + timedelta(hours=1)
    token = generate_sas(emulator.topic_url, emulator.eventgrid.topic_key, expiry)
    EventGridPublisherClient(emulator.topic_url, AzureSasCredential(token)).send(
        [CloudEvent(source="/rotation", type="Rotation.Started", data=None)], connection_verify=emulator.ca_bundle
    )

    received = emulator.eventgrid.received
    assert [(r["schema"], r["event"].get("eventType") or r["event"]["type"]) for r in received] == [
        ("EventGridSchema", "Rotation.Completed"),
        (CLOUD_EVENT_SCHEMA, "Rotation.Failed"),
        (CLOUD_EVENT_SCHEMA, "Rotation.Started"),
    ]
    assert received[0]["event"]["data"] == {"to": "v2"}
    status, body = admin(emulator, "GET", "/admin/eventgrid/received")
    assert status == 200 and body["events"] == received


def test_custom_topic_refuses_a_wrong_key_or_an_expired_token(emulator: Emulator) -> None:
    wrong = EventGridPublisherClient(emulator.topic_url, AzureKeyCredential(base64.b64encode(b"x" * 32).decode()))
    event = EventGridEvent(subject="s", event_type="t", data={}, data_version="1")
    with pytest.raises(HttpResponseError) as caught:
        wrong.send([event], connection_verify=emulator.ca_bundle, retry_total=0)
    assert caught.value.status_code == 401
    assert caught.value.error is not None and caught.value.error.code == "Unauthorized"
    assert emulator.eventgrid.topic_key not in str(caught.value)

    stale = generate_sas(emulator.topic_url, emulator.eventgrid.topic_key, datetime.now(UTC) + timedelta(minutes=5))
    emulator.clock.advance(timedelta(hours=1))
    with pytest.raises(HttpResponseError) as caught:
        EventGridPublisherClient(emulator.topic_url, AzureSasCredential(stale)).send(
            [event], connection_verify=emulator.ca_bundle, retry_total=0
        )
    assert caught.value.status_code == 401
    assert emulator.eventgrid.received == []


class OtherAudience:
    """A credential that answers every request with a token for Key Vault, whatever scope was asked for."""

    def __init__(self) -> None:
        self.inner = EmulatorCredential("publisher")

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.inner.get_token("https://vault.azure.net/.default")


def test_custom_topic_accepts_an_entra_token_for_event_grid(emulator: Emulator) -> None:
    """azure-facts §4.3: with a TokenCredential the client sends a bearer token for
    ``https://eventgrid.azure.net/.default``; the identity needs the "EventGrid Data Sender" role."""
    credential = emulator.credential("publisher")
    client = EventGridPublisherClient(emulator.topic_url, credential)
    client.send(
        [CloudEvent(source="/rotation", type="Rotation.Succeeded", data={"to": "v2"})],
        connection_verify=emulator.ca_bundle,
    )

    assert credential.requests == [("https://eventgrid.azure.net/.default",)]
    (received,) = emulator.eventgrid.received
    assert received["event"]["type"] == "Rotation.Succeeded"
    (call,) = emulator.control.calls("eventgrid.publish")
    assert (call.status, call.identity) == (200, "publisher")


def test_custom_topic_refuses_another_audience_and_a_denied_identity_with_401(emulator: Emulator) -> None:
    """Event Grid answers a principal without the role with 401 ``Unauthorized``, not 403: Azure/azure-sdk-for-net
    #22831 quotes "The principal associated with access token presented with the incoming request does not have
    permission to send data to /subscriptions/.../topics/...". A token for another audience is refused the same way
    (azure-facts §10.9 for the other services; no Event Grid sample found for the exact words)."""
    event = EventGridEvent(subject="s", event_type="t", data={}, data_version="1")
    with pytest.raises(HttpResponseError) as caught:
        EventGridPublisherClient(emulator.topic_url, OtherAudience()).send(
            [event], connection_verify=emulator.ca_bundle, retry_total=0
        )
    assert caught.value.status_code == 401
    assert caught.value.error is not None and caught.value.error.code == "Unauthorized"
    assert "audience 'https://vault.azure.net' is not valid for Event Grid" in str(caught.value.error.message)

    emulator.eventgrid.deny("intruder")
    with pytest.raises(HttpResponseError) as caught:
        EventGridPublisherClient(emulator.topic_url, emulator.credential("intruder")).send(
            [event], connection_verify=emulator.ca_bundle, retry_total=0
        )
    assert caught.value.status_code == 401
    assert caught.value.error is not None and caught.value.error.code == "Unauthorized"
    assert f"does not have permission to send data to {emulator.eventgrid.topic_id}" in str(caught.value.error.message)
    assert emulator.eventgrid.received == []

    status, body = admin(emulator, "POST", "/admin/eventgrid/access", {"identity": "intruder", "allowed": True})
    assert (status, body) == (200, {"identity": "intruder", "allowed": True})
    EventGridPublisherClient(emulator.topic_url, emulator.credential("intruder")).send(
        [event], connection_verify=emulator.ca_bundle
    )
    assert len(emulator.eventgrid.received) == 1
    status, body = admin(emulator, "POST", "/admin/eventgrid/access", {"identity": "intruder", "colour": "red"})
    assert status == 400 and "Unknown fields ['colour']" in body["error"]["message"]


def test_the_rotation_service_publishes_outcomes_with_its_identity(emulator: Emulator) -> None:
    """The app's path when no topic key is set (rotation/connection.py): OutcomePublisher with the app's
    TokenCredential. It must reach the topic, and a denied identity must fail softly (publish returns False)."""
    publisher = OutcomePublisher(
        emulator.topic_url, emulator.credential(), app_name="cmk-rotator", connection_verify=emulator.ca_bundle
    )
    assert publisher.publish("succeeded", {"request_id": "r1", "key": "https://kv/keys/cmk"}) is True
    (received,) = emulator.eventgrid.received
    assert (received["schema"], received["event"]["type"]) == (CLOUD_EVENT_SCHEMA, "CmkRotation.Succeeded")

    emulator.eventgrid.deny(emulator.credential().identity)
    assert publisher.publish("failed", {"request_id": "r2", "key": "https://kv/keys/cmk"}) is False
    assert len(emulator.eventgrid.received) == 1


def post_topic(emulator: Emulator, body: bytes, content_type: str = "application/json", query: str = "") -> Any:
    request = urllib.request.Request(
        emulator.topic_url + (query or "?api-version=2018-01-01"),
        data=body,
        method="POST",
        headers={"aeg-sas-key": emulator.eventgrid.topic_key, "Content-Type": content_type},
    )
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    try:
        with urllib.request.urlopen(request, context=context) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_custom_topic_rejects_malformed_bodies_with_a_clear_400(emulator: Emulator) -> None:
    ce = "application/cloudevents-batch+json; charset=utf-8"
    eg_event = {"id": "1", "subject": "s", "eventType": "t", "eventTime": "2024-01-01T00:00:00Z", "data": {}}
    cases = [
        (b'{"id": "1"}', "application/json", "non-empty JSON array"),
        (b"[]", "application/json", "non-empty JSON array"),
        (b"[1]", "application/json", "Event 0 must be a JSON object"),
        (json.dumps([eg_event]).encode(), "application/json", "missing required field(s) ['dataVersion']"),
        (
            json.dumps([{"id": "1", "type": "t", "specversion": "1.0"}]).encode(),
            ce,
            "missing required field(s) ['source']",
        ),
        (json.dumps([{"id": "1", "source": "/s", "type": "t", "specversion": "0.3"}]).encode(), ce, "use '1.0'"),
        (b"[{not json", "application/json", "not valid JSON"),
    ]
    for body, content_type, message in cases:
        status, answer = post_topic(emulator, body, content_type)
        assert status == 400, (body, answer)
        assert answer["error"]["code"] == "BadRequest" and message in answer["error"]["message"], answer
    status, answer = post_topic(emulator, b"[]", query="?api-version=2099-01-01")
    assert status == 400 and "api-version=2018-01-01" in answer["error"]["message"]
    assert emulator.eventgrid.received == []


# Admin API -----------------------------------------------------------------------------------------------------
def test_admin_subscribes_lists_reports_and_deletes(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    vault = emulator.add_vault("kv-admin")
    hook = webhook()
    status, created = admin(
        emulator,
        "POST",
        "/admin/eventgrid/subscriptions",
        {"webhook": hook.url, "schema": CLOUD_EVENT_SCHEMA, "event_types": [KEY_NEAR_EXPIRY], "max_attempts": 3},
    )
    assert status == 201 and created["schema"] == CLOUD_EVENT_SCHEMA
    vault.create_key("cmk", exp=emulator.clock.timestamp() + DAY)
    status, scanned = admin(emulator, "POST", "/admin/eventgrid/scan")
    assert status == 200 and [e["eventType"] for e in scanned["emitted"]] == [KEY_NEAR_EXPIRY]
    emulator.eventgrid.wait_idle(5)

    assert [body[0]["type"] for _, _, body in hook.requests] == [KEY_NEAR_EXPIRY]
    _, listed = admin(emulator, "GET", "/admin/eventgrid/subscriptions")
    assert [s["id"] for s in listed["subscriptions"]] == [created["id"]]
    _, published = admin(emulator, "GET", f"/admin/eventgrid/published?schema={CLOUD_EVENT_SCHEMA}")
    assert [e["type"] for e in published["events"]] == [KEY_NEW_VERSION_CREATED, KEY_NEAR_EXPIRY]
    _, deliveries = admin(emulator, "GET", "/admin/eventgrid/deliveries")
    assert [(d["subscription_id"], d["status"]) for d in deliveries["deliveries"]] == [(created["id"], 200)]
    _, letters = admin(emulator, "GET", "/admin/eventgrid/dead-letters")
    assert letters == {"dead_letters": []}

    assert admin(emulator, "DELETE", f"/admin/eventgrid/subscriptions/{created['id']}")[0] == 204
    status, answer = admin(emulator, "DELETE", f"/admin/eventgrid/subscriptions/{created['id']}")
    assert status == 404 and created["id"] in answer["error"]["message"]
    assert emulator.eventgrid.subscriptions == []


def test_admin_bad_subscription_input_gets_a_clear_400(emulator: Emulator) -> None:
    queue = {"connection_string": "UseDevelopmentStorage=true", "queue": "Bad_Name"}
    cases = [
        ({"webhook": "http://127.0.0.1:1/x", "schema": "CustomInputSchema"}, "Unknown schema 'CustomInputSchema'"),
        ({"webhook": "https://example.com/hook"}, "not a loopback address"),
        ({"webhook": "ftp://127.0.0.1/x"}, "must be an http:// or https:// URL"),
        ({}, "Give exactly one endpoint"),
        ({"webhook": "http://127.0.0.1:1/x", "queue": queue}, "Give exactly one endpoint"),
        ({"queue": queue}, "Queue name 'Bad_Name' is not valid"),
        ({"queue": {"queue": "q1"}}, "A queue endpoint is"),
        ({"webhook": 5}, "Field 'webhook' must be a string"),
        ({"webhook": "http://127.0.0.1:1/x", "duplicate": "two"}, "Field 'duplicate' must be an integer"),
        ({"webhook": "http://127.0.0.1:1/x", "duplicate": -1}, "duplicate (extra copies of each event)"),
        ({"webhook": "http://127.0.0.1:1/x", "delay": -1}, "delay must be a number of seconds >= 0"),
        ({"webhook": "http://127.0.0.1:1/x", "max_attempts": 31}, "max_attempts must be a whole number from 1 to 30"),
        ({"webhook": "http://127.0.0.1:1/x", "event_types": []}, "event_types must be a non-empty list"),
        ({"webhook": "http://127.0.0.1:1/x", "event_types": "x"}, "Field 'event_types' must be a list"),
        ({"webhook": "http://127.0.0.1:1/x", "shuffle": "yes"}, "Field 'shuffle' must be true or false"),
        ({"webhook": "http://127.0.0.1:1/x", "colour": "red"}, "Unknown subscription fields ['colour']"),
    ]
    for body, message in cases:
        status, answer = admin(emulator, "POST", "/admin/eventgrid/subscriptions", body)
        assert status == 400, (body, answer)
        assert message in answer["error"]["message"], (body, answer)
    status, answer = admin(emulator, "GET", "/admin/eventgrid/published?schema=nope")
    assert status == 400 and "Unknown schema 'nope'" in answer["error"]["message"]
    assert emulator.eventgrid.subscriptions == []


def test_python_api_bad_endpoint_names_the_problem(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="not a storage connection string") as caught:
        emulator.eventgrid.subscribe(endpoint={"connection_string": "AccountKey=s3cret", "queue": "events"})
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValueError, match="must be a webhook URL, a queue"):
        emulator.eventgrid.subscribe(endpoint=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a loopback address") as caught:
        emulator.eventgrid.subscribe(endpoint="https://10.0.0.1/hook?code=s3cret")
    assert "s3cret" not in str(caught.value)
