"""Event Grid in the emulator: Key Vault system events, delivery to webhooks, queues and callbacks, the custom topic.

Real clients only: ``KeyClient`` creates keys over HTTPS, ``EventGridPublisherClient`` publishes to the custom topic,
``QueueClient`` reads what was delivered into the session's Azurite, and webhooks are tiny ``http.server`` servers.
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

import pytest
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient, generate_sas
from azure.keyvault.keys import KeyClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from emulator import Emulator
from emulator.azurite import Azurite
from emulator.eventgrid import (
    CLOUD_EVENT_SCHEMA,
    KEY_EXPIRED,
    KEY_NEAR_EXPIRY,
    KEY_NEW_VERSION_CREATED,
    PublishedEvent,
)
from tests.emulator.test_core import admin
from tests.swagger import EVENTGRID_KEYVAULT, example, validate

DAY = 86400
EXAMPLES = "eventgrid/data-plane/Microsoft.KeyVault/stable/2018-01-01/examples"
DATA_DEFINITIONS = {
    KEY_NEW_VERSION_CREATED: "KeyVaultKeyNewVersionCreatedEventData",
    KEY_NEAR_EXPIRY: "KeyVaultKeyNearExpiryEventData",
    KEY_EXPIRED: "KeyVaultKeyExpiredEventData",
}


class Webhook:
    """A local HTTP endpoint that records each POST and answers with the next scripted status (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.requests.append((self.path, dict(self.headers.items()), json.loads(body)))
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

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

    def make(*statuses: int) -> Webhook:
        hooks.append(Webhook(list(statuses)))
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


def test_a_key_without_dates_has_null_nbf_and_exp(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-nodates")
    vault.create_key("plain")
    (event,) = emulator.eventgrid.published
    assert event.event_grid["data"]["NBF"] is None and event.event_grid["data"]["EXP"] is None
    emulator.clock.advance(timedelta(days=3650))
    assert len(emulator.eventgrid.published) == 1  # no expiry, so no notices


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
    assert letter.dead_letter_reason == "NonRetriableResponse"
    assert letter.event == emulator.eventgrid.published[0].event_grid
    assert letter.describe()["deliveryAttempts"] == 1 and letter.describe()["lastDeliveryOutcome"] == "HTTP 400"


def test_delivery_gives_up_after_max_attempts(emulator: Emulator, webhook: Callable[..., Webhook]) -> None:
    vault = emulator.add_vault("kv-giveup")
    hook = webhook(503, 503, 503)
    busy = emulator.eventgrid.subscribe(endpoint=hook.url, max_attempts=2)
    closed = webhook()
    closed.close()  # nothing listens on this port any more
    unreachable = emulator.eventgrid.subscribe(endpoint=closed.url, max_attempts=2)
    vault.create_key("cmk")
    emulator.eventgrid.wait_idle(5)

    assert attempts(emulator, busy.id) == [(1, 503, "retrying"), (2, 503, "dead-lettered")]
    assert attempts(emulator, unreachable.id) == [(1, None, "retrying"), (2, None, "dead-lettered")]
    errors = [d.error for d in emulator.eventgrid.deliveries if d.subscription_id == unreachable.id]
    assert all(error and "webhook unreachable" in error for error in errors)
    reasons = {letter.subscription_id: letter.dead_letter_reason for letter in emulator.eventgrid.dead_letters}
    assert reasons == {busy.id: "MaxDeliveryAttemptsExceeded", unreachable.id: "MaxDeliveryAttemptsExceeded"}


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
