"""Conformance of ``emulator.functions_host`` with the Azure Functions host it stands in for. Each test names its
source: a Microsoft Learn page, or a file of the host or of an extension (the Storage queues extension and the Event
Grid extension live in Azure/azure-sdk-for-net, the host in Azure/azure-functions-host, the timer in
Azure/azure-webjobs-sdk-extensions).

    queues       host.json's visibilityTimeout after a failure; a dequeue count above maxDequeueCount is poisoned
                 before any invocation; a failure at maxDequeueCount is poisoned, the poison queue created if missing;
                 a body that is not base64 is poisoned and the pump goes on; batchSize + newBatchThreshold at once
    Event Grid   the webhook's system key, the two validation handshakes, one invocation per event, 202 or 500
    HTTP         function keys, 404 with an empty body, the RpcHttp the worker gets
    timer        the schedule from the app setting, the TimerInfo JSON and how its status moves on
    worker       an app the worker refuses to index, a value returned without a $return binding

A failure is made without touching the code under test: a broken ROTATION_TARGETS makes ``current_app()`` raise
``ConfigError``, which the queue and Event Grid triggers turn into ``Redeliver`` (see ``function_app._edge``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

import function_app
from emulator.azurite import Azurite
from emulator.functions_host import (
    FunctionsHost,
    HostConfigurationError,
    InvocationFailed,
    QueueOptions,
    Schedule,
    ScheduleError,
)
from rotation.app import configure
from rotation.model import KeyRef, event_request_id
from rotation.storage import POISON_QUEUE, REQUESTS_QUEUE
from tests.function.conftest import SAMPLE_KEY, Rotation
from tests.function.test_triggers import SAMPLES, enqueued, key_variant

ROOT = Path(__file__).resolve().parents[2]
HOST_JSON = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]


def event(schema: str = "EventGridSchema", event_id: str = "e-1", event_type: str = "KeyNearExpiry") -> dict[str, Any]:
    (one,) = json.loads(key_variant(SAMPLES[schema], event_type))
    one["id"] = event_id
    return one


def broken_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every invocation of a queue or Event Grid trigger fails from now on, with Redeliver."""
    monkeypatch.setenv("ROTATION_TARGETS", "[oops")
    configure(None)


def request_message(request_id: str = "r-1") -> str:
    return json.dumps({"request_id": request_id, "key": SAMPLE_KEY, "trigger": "http"})


def raw(rotation: Rotation, queue: str) -> QueueClient:
    """A client that writes and reads message text as stored (no base64)."""
    client = QueueClient.from_connection_string(rotation.host._connection, queue)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def drop_queue(rotation: Rotation, queue: str) -> None:
    with contextlib.suppress(ResourceNotFoundError):
        rotation.host.queue(queue).delete_queue()


@pytest.fixture
def fresh_poison(rotation: Rotation) -> Any:
    drop_queue(rotation, POISON_QUEUE)
    yield
    drop_queue(rotation, POISON_QUEUE)


# --- queues -------------------------------------------------------------------------------------------------------


def test_the_queue_options_are_host_jsons() -> None:
    """https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#hostjson-settings"""
    options = QueueOptions.from_host_json(HOST_JSON)
    assert options == QueueOptions(
        batch_size=HOST_JSON["batchSize"],
        new_batch_threshold=HOST_JSON["newBatchThreshold"],
        max_dequeue_count=HOST_JSON["maxDequeueCount"],
        visibility_timeout=timedelta(minutes=1),  # "00:01:00"
        max_polling_interval=timedelta(seconds=10),
        message_encoding="base64",
    )
    assert options.concurrency == HOST_JSON["batchSize"] + HOST_JSON["newBatchThreshold"]


def test_a_failed_invocation_hides_the_message_for_the_visibility_timeout(
    rotation: Rotation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QueueProcessor.CompleteProcessingMessageAsync releases a failed message with host.json's visibilityTimeout
    (ReleaseMessageAsync); azure-sdk-for-net sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Common/src/Shared/
    Queues/QueueProcessor.cs."""
    assert rotation.host.queue_options.visibility_timeout == timedelta(minutes=1)
    rotation.host.queue(REQUESTS_QUEUE).send_message(request_message())
    broken_settings(monkeypatch)

    assert rotation.host.pump("rotation_worker") == 1

    assert rotation.host.invocations[-1].failure is not None
    time.sleep(1.5)  # longer than the old stand-in's one second
    requests = rotation.host.queue(REQUESTS_QUEUE)
    assert requests.peek_messages() == []
    assert requests.get_queue_properties().approximate_message_count == 1

    # A test that cannot wait a minute says so: the same failure, visible again after one second.
    quick = FunctionsHost(function_app.app, rotation.host._connection, visibility_timeout=timedelta(seconds=1))
    requests.clear_messages()
    requests.send_message(request_message("r-2"))
    assert quick.pump("rotation_worker", max_messages=1) == 1
    assert requests.peek_messages() == []
    time.sleep(1.5)
    (again,) = requests.peek_messages()
    assert again.dequeue_count == 1 and json.loads(again.content)["request_id"] == "r-2"


def test_a_message_dequeued_more_than_max_dequeue_count_is_poisoned_without_an_invocation(
    rotation: Rotation, fresh_poison: None
) -> None:
    """QueueProcessor.BeginProcessingMessageAsync: ``DequeueCount > MaxDequeueCount`` moves the message to the poison
    queue and the function is not invoked (its workers died five times); CopyMessageToPoisonQueueAsync creates the
    poison queue if it is missing (AddMessageAndCreateIfNotExistsAsync)."""
    requests = raw(rotation, REQUESTS_QUEUE)
    requests.send_message(base64.b64encode(request_message().encode()).decode())
    for _ in range(HOST_JSON["maxDequeueCount"]):  # five deliveries whose worker crashed before finishing
        (taken,) = requests.receive_messages(max_messages=1, visibility_timeout=30)
        requests.update_message(taken, visibility_timeout=0)
    before = len(rotation.host.invocations)

    assert rotation.host.pump("rotation_worker") == 0

    assert len(rotation.host.invocations) == before
    assert rotation.app.ledger.list_requests() == []
    assert requests.get_queue_properties().approximate_message_count == 0
    (poisoned,) = rotation.host.queue(POISON_QUEUE).peek_messages()
    assert poisoned.content == request_message()


def test_a_failure_at_max_dequeue_count_moves_the_message_to_a_new_poison_queue(
    rotation: Rotation, monkeypatch: pytest.MonkeyPatch, fresh_poison: None
) -> None:
    """QueueProcessor.CompleteProcessingMessageAsync: ``DequeueCount >= MaxDequeueCount`` after a failure moves the
    message to ``<queue>-poison``, created if missing. The failed deliveries are visible again at once here (an
    explicit ``visibility_timeout``), so the test need not wait host.json's minute between them."""
    host = FunctionsHost(function_app.app, rotation.host._connection, visibility_timeout=timedelta(0))
    host.queue(REQUESTS_QUEUE).send_message(request_message())
    broken_settings(monkeypatch)

    assert host.pump("rotation_worker") == HOST_JSON["maxDequeueCount"]

    counts = [json.loads(i.trigger_metadata["DequeueCount"].json) for i in host.invocations]
    assert counts == list(range(1, HOST_JSON["maxDequeueCount"] + 1))
    assert all(i.failure is not None and i.failure.exception_type == "Redeliver" for i in host.invocations)
    assert host.queue(REQUESTS_QUEUE).get_queue_properties().approximate_message_count == 0
    (poisoned,) = host.queue(POISON_QUEUE).peek_messages()
    assert poisoned.content == request_message()


def test_a_failure_on_a_poison_queue_leaves_the_message_hidden(
    rotation: Rotation, monkeypatch: pytest.MonkeyPatch, fresh_poison: None
) -> None:
    """QueueListenerFactory.CreatePoisonQueueReference: a queue whose name ends in ``-poison`` has no poison queue, and
    CompleteProcessingMessageAsync then neither releases nor moves a failed message: it stays hidden."""
    drop_queue(rotation, f"{POISON_QUEUE}-poison")  # the session's Azurite is shared: start without it
    rotation.host.queue(POISON_QUEUE).create_queue()
    rotation.host.queue(POISON_QUEUE).send_message(request_message())
    broken_settings(monkeypatch)

    assert rotation.host.pump("rotation_poison") == 1

    poison = rotation.host.queue(POISON_QUEUE)
    assert poison.peek_messages() == []
    assert poison.get_queue_properties().approximate_message_count == 1
    with pytest.raises(ResourceNotFoundError):
        rotation.host.queue(f"{POISON_QUEUE}-poison").get_queue_properties()


def test_a_body_that_is_not_base64_is_poisoned_and_the_pump_goes_on(rotation: Rotation) -> None:
    """QueueServiceClientProvider.CreateMessageDecodingFailedHandler (azure-sdk-for-net, sdk/storage/
    Microsoft.Azure.WebJobs.Extensions.Storage.Queues/src): with messageEncoding base64, a message that does not
    decode is logged ("Message decoding has failed!") and handed to HandlePoisonMessageAsync, never to the function."""
    key_events = raw(rotation, "key-events")
    key_events.clear_messages()
    drop_queue(rotation, "key-events-poison")
    try:
        key_events.send_message("this is {not} base64!")
        key_events.send_message(base64.b64encode(json.dumps(event()).encode()).decode())

        assert rotation.host.pump("on_queued_key_event") == 1  # only the good one is invoked

        (message,) = enqueued(rotation)
        assert message["key"] == SAMPLE_KEY
        (poisoned,) = raw(rotation, "key-events-poison").peek_messages()
        assert poisoned.content == "this is {not} base64!"  # copied as stored
        assert key_events.get_queue_properties().approximate_message_count == 0
    finally:
        drop_queue(rotation, "key-events-poison")


def test_at_most_batch_size_plus_new_batch_threshold_invocations_run_at_once(azurite: Azurite) -> None:
    """QueueListener: a batch of ``batchSize`` messages is received, and the next one only when no more than
    ``newBatchThreshold`` are still running (WaitForNewBatchThreshold), so at most batchSize + newBatchThreshold run at
    once (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#concurrency).
    The probe app's function runs for as long as its message says, in a process of its own."""
    batch, threshold = HOST_JSON["batchSize"], HOST_JSON["newBatchThreshold"]
    # Half of each batch ends early, so the next batch is fetched while the other half still runs.
    holds = [0.2, 1.2] * (batch // 2) + [1.0] * batch * 2
    result = probe(
        {"app": "probe", "action": "concurrency", "storage": azurite.connection_string, "queue": "probe-hold"},
        holds=holds,
    )
    assert result["invoked"] == len(holds)
    assert result["most"] == batch + threshold


def probe(job: dict[str, Any], **extra: Any) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.function.host_probe", json.dumps({**job, **extra})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return answer


# --- Event Grid ---------------------------------------------------------------------------------------------------

WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_key_event"
NOTIFICATION = {"aeg-event-type": "Notification"}


def test_the_webhook_takes_only_the_eventgrid_extension_system_key_or_the_master_key(rotation: Rotation) -> None:
    """azure-functions-host: DefaultScriptWebHookProvider (the key is ``eventgrid_extension``) and
    Security/Authorization/Policies/AuthorizationOptionsExtensions.cs (policy ExtensionWebhookInvoke: that system key;
    AuthUtility.PrincipalHasAuthLevelClaim lets the master key, admin level, through too)."""
    host, keys = rotation.host, rotation.host.keys
    body = json.dumps([event()]).encode()
    refused = {
        "no key": WEBHOOK,
        "a function key": f"{WEBHOOK}&code={keys.function_key('on_key_event')}",
        "a host key": f"{WEBHOOK}&code={keys.host['default']}",
        "a wrong key": f"{WEBHOOK}&code=not-a-key",
    }
    for what, url in refused.items():
        response = host.request("POST", url, headers=NOTIFICATION, body=body)
        assert (response.status_code, response.get_body()) == (401, b""), what
    assert not host.invocations
    assert rotation.queued() == []

    accepted = host.request("POST", f"{WEBHOOK}&code={keys.eventgrid_extension}", headers=NOTIFICATION, body=body)
    assert accepted.status_code == 202
    as_master = host.request("POST", WEBHOOK, headers={**NOTIFICATION, "x-functions-key": keys.master}, body=body)
    assert as_master.status_code == 202
    assert len(rotation.queued()) == 2  # one request; each delivery of its event sends it again


def test_subscription_validation_answers_the_validation_code_without_an_invocation(rotation: Rotation) -> None:
    """HttpRequestProcessor.ProcessAsync (azure-sdk-for-net, sdk/eventgrid/Microsoft.Azure.WebJobs.Extensions.EventGrid/
    src/TriggerBinding/HttpRequestProcessor.cs): ``aeg-event-type: SubscriptionValidation`` is answered 200 with
    ``{"validationResponse": <data.validationCode>}``."""
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/sample-kv",
            "subject": "",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://example"},
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2018-01-25T22:12:19.4556811Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    response = rotation.host.request(
        "POST",
        rotation.host.eventgrid_url("on_key_event"),
        headers={"aeg-event-type": "SubscriptionValidation"},
        body=json.dumps(validation).encode(),
    )
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert not rotation.host.invocations


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("eventgrid.azure.net", "eventgrid.azure.net"),
        ("eventgrid.azure.us", "eventgrid.azure.us"),
        (None, "eventgrid.azure.net"),
    ],
)
def test_the_cloudevents_handshake_allows_event_grids_origin(
    rotation: Rotation, origin: str | None, allowed: str
) -> None:
    """HttpRequestProcessor.ProcessAsync: an ``OPTIONS`` request (CloudEvents abuse protection) is answered 200 with
    ``WebHook-Allowed-Origin``: the ``WebHook-Request-Origin`` of an Event Grid cloud, or eventgrid.azure.net."""
    headers = {"WebHook-Request-Origin": origin} if origin else {}
    response = rotation.host.request("OPTIONS", rotation.host.eventgrid_url("on_key_event"), headers=headers)
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == allowed


def test_a_batch_invokes_every_event_and_one_failure_answers_500(rotation: Rotation) -> None:
    """EventGridExtensionConfigProvider.ProcessEventsAsync (azure-sdk-for-net, sdk/eventgrid/
    Microsoft.Azure.WebJobs.Extensions.EventGrid/src/Config): single dispatch runs one invocation per event, all of
    them, then answers 500 if any failed (so Event Grid sends the whole batch again) and 202 Accepted otherwise."""
    unreadable = event("CloudEventSchemaV1_0", "bad")
    unreadable["time"] = "yesterday"  # the worker cannot decode it: that invocation fails
    batch = [event(event_id="one"), unreadable, event("CloudEventSchemaV1_0", "two")]
    url = rotation.host.eventgrid_url("on_key_event")

    response = rotation.host.request("POST", url, headers=NOTIFICATION, body=json.dumps(batch).encode())

    assert response.status_code == 500
    assert response.get_body() == b"Exception while executing function: Functions.on_key_event"
    key = KeyRef.parse(SAMPLE_KEY)
    assert sorted(m["request_id"] for m in enqueued(rotation)) == sorted(
        event_request_id(event_id, key) for event_id in ("one", "two")
    )
    invoked = sorted(json.loads(i.inputs["event"].json)["id"] for i in rotation.host.invocations)
    assert invoked == ["bad", "one", "two"]

    again = rotation.host.request("POST", url, headers=NOTIFICATION, body=json.dumps(batch[:1]).encode())
    assert again.status_code == 202
    with pytest.raises(InvocationFailed) as failed:  # the convenience raises what the worker reported
        rotation.host.deliver_events("on_key_event", batch)
    assert [f.exception_type for f in failed.value.failures] == ["ValueError"]


def test_the_webhook_sends_each_event_as_the_extension_does(rotation: Rotation) -> None:
    """The trigger value is the event (a JObject: TypedData json), and the binding data carries its ``data``
    (EventGridTriggerAttributeBindingProvider.BindAsync) and ``sys``."""
    sent = event()
    rotation.host.deliver_events("on_key_event", [sent])
    (invocation,) = rotation.host.invocations
    assert json.loads(invocation.inputs["event"].json) == sent
    assert json.loads(invocation.trigger_metadata["data"].json) == sent["data"]
    assert json.loads(invocation.trigger_metadata["sys"].json)["MethodName"] == "Functions.on_key_event"


@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [
        ("/runtime/webhooks/eventgrid?functionName=nope", NOTIFICATION, 404),
        ("/runtime/webhooks/eventgrid?functionName=rotation_worker", NOTIFICATION, 404),
        ("/runtime/webhooks/eventgrid?functionName=on_key_event", {}, 400),
        ("/runtime/webhooks/eventgrid?functionName=on_key_event", {"aeg-event-type": "Unsubscribe"}, 202),
    ],
)
def test_the_webhook_answers_an_unknown_function_or_event_type(
    rotation: Rotation, url: str, headers: dict[str, str], status: int
) -> None:
    """EventGridExtensionConfigProvider.ProcessAsync (404 "cannot find function") and HttpRequestProcessor (400 for
    a missing ``aeg-event-type``, 202 for Unsubscribe)."""
    key = {"x-functions-key": rotation.host.keys.eventgrid_extension}
    response = rotation.host.request("POST", url, headers={**headers, **key}, body=json.dumps([event()]).encode())
    assert response.status_code == status
    assert not rotation.host.invocations


# --- HTTP ---------------------------------------------------------------------------------------------------------


def test_a_function_route_needs_a_function_host_or_master_key(rotation: Rotation) -> None:
    """https://learn.microsoft.com/azure/azure-functions/function-keys-how-to: an ``authLevel: function`` route takes
    a key of the function or a host key, in ``x-functions-key`` or ``code``; the master key opens every route; a system
    key is not a function key (AuthUtility.PrincipalHasAuthLevelClaim: the level must match, or be admin)."""
    host, keys = rotation.host, rotation.host.keys
    body = json.dumps({"key": SAMPLE_KEY}).encode()
    refused = {
        "no key": ("/api/rotations", {}),
        "a wrong key": ("/api/rotations", {"x-functions-key": "not-a-key"}),
        "another function's key": ("/api/rotations", {"x-functions-key": keys.function_key("fleet_status")}),
        "the Event Grid system key": (f"/api/rotations?code={keys.eventgrid_extension}", {}),
    }
    for what, (url, headers) in refused.items():
        response = host.request("POST", url, headers=headers, body=body)
        assert (response.status_code, response.get_body()) == (401, b""), what
    assert rotation.queued() == []

    accepted = {
        "its key in the header": ("/api/rotations", {"x-functions-key": keys.function_key("submit_rotation")}),
        "its key in code": (f"/api/rotations?code={keys.function_key('submit_rotation')}", {}),
        "a host key": ("/api/rotations", {"x-functions-key": keys.host["default"]}),
        "the master key": (f"/api/rotations?code={keys.master}", {}),
    }
    for what, (url, headers) in accepted.items():
        assert host.request("POST", url, headers=headers, body=body).status_code == 202, what


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/nope"),
        ("DELETE", "/api/rotations"),
        ("GET", "/api/rotations"),
        ("POST", "/rotations"),
        ("GET", "/"),
    ],
)
def test_an_unknown_route_or_method_is_404_with_an_empty_body(rotation: Rotation, method: str, url: str) -> None:
    """azure-functions-host#10098: a method that no route accepts, like a path no route matches, is answered 404 with
    an empty body by the host (not 405), before any key is checked and without an invocation."""
    response = rotation.host.request(method, url, headers={"x-functions-key": rotation.host.keys.master})
    assert (response.status_code, response.get_body()) == (404, b"")
    assert not rotation.host.invocations


def test_the_worker_gets_an_rpc_http_as_the_host_builds_it(rotation: Rotation) -> None:
    """GrpcMessageConversionExtensions.ToRpcHttp (azure-functions-host, src/WebJobs.Script.Grpc/MessageExtensions):
    header names lower-cased, empty query values left out, the route's values as params, and with RpcHttpBodyOnly and
    RawHttpBodyBytes the body alone, as bytes. The function's RpcHttp comes back as the answer."""
    host = rotation.host
    request_id = "5d1b2a7e-0000-4000-8000-000000000000"
    response = host.request(
        "GET",
        f"/api/Rotations/{request_id}?empty=&code={host.keys.function_key('get_rotation')}",
        headers={"X-Trace": "abc", "Accept": "application/json"},
    )
    assert response.status_code == 404 and response.mimetype == "application/json"  # the app's own 404: unknown id
    assert json.loads(response.get_body())["error"]["code"] == "RequestNotFound"
    (invocation,) = host.invocations
    sent = invocation.inputs["req"].http
    assert (sent.method, sent.url) == (
        "GET",
        f"http://localhost:7071/api/Rotations/{request_id}?empty=&code=" + (host.keys.function_key("get_rotation")),
    )
    assert dict(sent.headers) == {"x-trace": "abc", "accept": "application/json"}
    assert dict(sent.query) == {"code": host.keys.function_key("get_rotation")}
    assert dict(sent.params) == {"request_id": request_id}
    assert not sent.HasField("body")

    posted = host.http("submit_rotation", "POST", "/api/rotations", body=json.dumps({"key": SAMPLE_KEY}).encode())
    assert posted.status_code == 202
    assert host.invocations[-1].inputs["req"].http.body.bytes == json.dumps({"key": SAMPLE_KEY}).encode()


# --- timer --------------------------------------------------------------------------------------------------------


def next_three_oclock(after: datetime) -> datetime:
    moment = after.replace(hour=3, minute=0, second=0, microsecond=0)
    return moment if moment > after else moment + timedelta(days=1)


def test_the_timer_sends_the_timer_info_json_and_moves_its_status_on(rotation: Rotation) -> None:
    """TimerListener (azure-webjobs-sdk-extensions, src/WebJobs.Extensions/Extensions/Timers/Listener/TimerListener.cs):
    with useMonitor, the status before the first tick has Last and LastUpdated never recorded (default(DateTime)) and
    Next the schedule's next occurrence; after a tick, Last = LastUpdated = the tick's time, Next the occurrence after
    it. The function gets TimerInfo as JSON: Schedule, ScheduleStatus, IsPastDue."""
    host = rotation.host
    first_next = next_three_oclock(datetime.now(UTC))  # ROTATION_SCHEDULE "0 0 3 * * *"
    expected = {
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {
            "Last": "0001-01-01T00:00:00",
            "Next": first_next.isoformat(),
            "LastUpdated": "0001-01-01T00:00:00",
        },
        "IsPastDue": False,
    }
    assert host.timer_info("rotation_sweep") == expected

    host.fire_timer("rotation_sweep")

    assert json.loads(host.invocations[-1].inputs["timer"].json) == expected
    second = host.timer_info("rotation_sweep")["ScheduleStatus"]
    assert second == {
        "Last": first_next.isoformat(),
        "Next": (first_next + timedelta(days=1)).isoformat(),
        "LastUpdated": first_next.isoformat(),
    }


def test_a_past_due_tick_reaches_the_function(rotation: Rotation, caplog: pytest.LogCaptureFixture) -> None:
    """TimerListener.StartAsync: a missed occurrence runs at once with IsPastDue true (TimerInfo.IsPastDue)."""
    caplog.set_level("INFO", logger="rotation")
    rotation.host.fire_timer("rotation_sweep", past_due=True)
    assert json.loads(rotation.host.invocations[-1].inputs["timer"].json)["IsPastDue"] is True
    (completed,) = [r for r in caplog.records if str(r.msg).startswith("rotation.sweep_completed")]
    assert completed.past_due is True  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "'%ROTATION_SCHEDULE%' does not resolve to a value."),
        ({"ROTATION_SCHEDULE": "0 3 * *"}, "The schedule expression '0 3 * *' was not recognized"),
        ({"ROTATION_SCHEDULE": "0 0 25 * * *"}, "The schedule expression '0 0 25 * * *' was not recognized"),
    ],
)
def test_a_missing_or_bad_schedule_setting_is_a_clear_error(
    rotation: Rotation, settings: dict[str, str], message: str
) -> None:
    """The host resolves ``%NAME%`` from the app settings (its name resolver's message when one is missing) and
    the Timers extension refuses an expression that is not NCRONTAB (TimerSchedule.Create)."""
    host = FunctionsHost(function_app.app, rotation.host._connection, app_settings=settings)
    with pytest.raises(HostConfigurationError) as error:
        host.fire_timer("rotation_sweep")
    assert message in str(error.value)
    assert not host.invocations


NCRONTAB = {
    # expression, after, next (UTC)
    "every five minutes": ("0 */5 * * * *", "2024-05-01T10:02:30", "2024-05-01T10:05:00"),
    "five fields: no seconds": ("*/15 * * * *", "2024-05-01T10:02:30", "2024-05-01T10:15:00"),
    "weekdays by name": ("0 30 9 * * MON-FRI", "2024-05-03T10:00:00", "2024-05-06T09:30:00"),  # Friday -> Monday
    "day and weekday both": ("0 0 0 13 * FRI", "2024-01-01T00:00:00", "2024-09-13T00:00:00"),  # NCrontab: AND
    "a value with a step": ("0 5/20 * * * *", "2024-05-01T10:26:00", "2024-05-01T10:45:00"),
    "a list and a month name": ("0 0 3 1,15 JAN *", "2024-01-15T03:00:00", "2025-01-01T03:00:00"),
}


@pytest.mark.parametrize(("expression", "after", "expected"), NCRONTAB.values(), ids=NCRONTAB.keys())
def test_ncrontab_next_occurrence(expression: str, after: str, expected: str) -> None:
    """https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions"""
    moment = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert Schedule.parse(expression).next_after(moment) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "expression", ["", "0 3 * *", "0 0 3 * * * *", "0 60 * * * *", "0 */0 * * * *", "0 0 0 * FOO *"]
)
def test_ncrontab_refuses_what_is_not_an_expression(expression: str) -> None:
    with pytest.raises(ScheduleError):
        Schedule.parse(expression)


# --- the worker -------------------------------------------------------------------------------------------------


def test_an_app_the_worker_cannot_index_fails_with_the_workers_message() -> None:
    """handle_event.worker_init_request (azure-functions-runtime) indexes the app and answers StatusResult.Failure when
    a function's annotation does not match its binding; the host does not start it."""
    answer = probe({"app": "unloadable", "action": "start"})
    assert answer["error"] == "WorkerError"
    assert "FunctionLoadError: cannot load the on_event function" in answer["message"]
    assert "QueueMessage" in answer["message"]


def test_a_value_returned_without_a_return_binding_fails_the_invocation() -> None:
    """handle_event.invocation_request: a function without a $return binding that returns a value fails."""
    answer = probe({"app": "probe", "action": "return_value"})
    assert answer["error"] == "RuntimeError"
    assert "without a $return binding" in answer["message"]
