"""Every function of ``function_app.py`` invoked through the real Python worker (``emulator.functions_worker``) with
the wire input the Functions host sends. The input is built here by hand, from the host's serialisation rules
(azure-functions-host, src/WebJobs.Script.Grpc/MessageExtensions/GrpcMessageConversionExtensions.cs, ``ToRpc``: a
string is ``string``, bytes ``bytes``, a JSON object ``json``, anything else Json.NET text in ``json``), not with
``emulator.functions_host``, so the two can be checked against each other:

    Event Grid   each event as ``json``, in the Event Grid schema and as a CloudEvent; metadata ``data`` and ``sys``
    queue        the message as ``string`` or as ``bytes``; trigger metadata ``Id``, ``PopReceipt``, ``QueueTrigger`` as
                 strings, ``DequeueCount`` (a long) and the three dates (DateTimeOffset) as Json.NET text
    HTTP         ``RpcHttp``: lower-cased headers, route ``params``, the body as ``bytes`` (the worker asks for
                 ``RawHttpBodyBytes`` and ``RpcHttpBodyOnly``); the answer is the ``RpcHttp`` of ``$return``
    timer        TimerInfo JSON: ``Schedule``, ``ScheduleStatus`` (``Last``, ``Next``, ``LastUpdated``), ``IsPastDue``
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emulator.functions_worker import FunctionsWorker, InvocationFailed
from rotation.app import configure
from rotation.storage import REQUESTS_QUEUE
from tests.function.conftest import SAMPLE_KEY, Rotation
from tests.function.test_triggers import SAMPLE_VERSION, SAMPLES, enqueued, key_variant

FUNCTIONS = (
    "on_key_event",
    "on_queued_key_event",
    "rotation_sweep",
    "submit_rotation",
    "get_rotation",
    "fleet_status",
    "rotation_worker",
    "rotation_poison",
)


@pytest.fixture(scope="module")
def worker() -> FunctionsWorker:
    return FunctionsWorker.start()


def typed(worker: FunctionsWorker, **value: Any) -> Any:
    return worker.protos.TypedData(**value)


def as_json(worker: FunctionsWorker, value: Any) -> Any:
    return typed(worker, json=json.dumps(value))


def sys_metadata(worker: FunctionsWorker, name: str) -> Any:
    return as_json(
        worker,
        {"MethodName": f"Functions.{name}", "UtcNow": "2024-05-01T10:00:00.1234567Z", "RandGuid": str(uuid.uuid4())},
    )


def queue_metadata(worker: FunctionsWorker, name: str, text: str, *, dequeue_count: int = 1) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "QueueTrigger": typed(worker, string=text),
        "DequeueCount": typed(worker, json=str(dequeue_count)),
        "Id": typed(worker, string=str(uuid.uuid4())),
        "PopReceipt": typed(worker, string="AgAAAAMAAAAAAAAAz1A8BV3a2gE="),
        "InsertionTime": as_json(worker, now.isoformat()),
        "ExpirationTime": as_json(worker, (now + timedelta(days=7)).isoformat()),
        "NextVisibleTime": as_json(worker, (now + timedelta(minutes=10)).isoformat()),
        "sys": sys_metadata(worker, name),
    }


def http(worker: FunctionsWorker, method: str, path: str, *, body: bytes = b"", **fields: Any) -> Any:
    rpc = worker.protos.RpcHttp(method=method, url=f"http://localhost:7071{path}", **fields)
    if body:
        rpc.body.CopyFrom(typed(worker, bytes=body))
    return typed(worker, http=rpc)


def test_the_worker_indexes_every_function_and_tells_the_host_what_it_needs(worker: FunctionsWorker) -> None:
    assert sorted(worker.functions) == sorted(FUNCTIONS)
    assert {k: worker.capabilities.get(k) for k in ("RawHttpBodyBytes", "RpcHttpBodyOnly", "TypedDataCollection")} == {
        "RawHttpBodyBytes": "true",
        "RpcHttpBodyOnly": "true",
        "TypedDataCollection": "true",
    }
    for function in worker.functions.values():
        assert function.metadata.language == "python"
        assert function.metadata.properties["worker_indexed"] == "True"
        assert {name: info.type for name, info in function.metadata.bindings.items()} == {
            b["name"]: b["type"] for b in function.bindings
        }


# --- Event Grid ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", SAMPLES)
def test_on_key_event_takes_one_event_in_either_schema(
    rotation: Rotation, worker: FunctionsWorker, schema: str
) -> None:
    (event,) = json.loads(key_variant(SAMPLES[schema], "KeyNearExpiry"))
    metadata = {"data": as_json(worker, event["data"]), "sys": sys_metadata(worker, "on_key_event")}

    assert worker.invoke("on_key_event", {"event": as_json(worker, event)}, metadata) is None

    (message,) = enqueued(rotation)
    assert (message["key"], message["trigger"], message["event_version"]) == (
        SAMPLE_KEY,
        "KeyNearExpiry",
        SAMPLE_VERSION,
    )


def test_an_event_the_worker_cannot_decode_fails_the_invocation_before_the_function(
    rotation: Rotation, worker: FunctionsWorker
) -> None:
    (event,) = json.loads(key_variant(SAMPLES["CloudEventSchemaV1_0"], "KeyNearExpiry"))
    event["time"] = "yesterday"

    with pytest.raises(InvocationFailed) as failed:
        worker.invoke("on_key_event", {"event": as_json(worker, event)}, {"sys": sys_metadata(worker, "on_key_event")})

    assert failed.value.function == "on_key_event"
    assert failed.value.exception_type == "ValueError" and "yesterday" in failed.value.message
    assert rotation.queued() == []


# --- queues -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [False, True], ids=["string", "bytes"])
def test_on_queued_key_event_takes_the_message_as_a_string_or_as_bytes(
    rotation: Rotation, worker: FunctionsWorker, as_bytes: bool
) -> None:
    (event,) = json.loads(key_variant(SAMPLES["EventGridSchema"], "KeyExpired"))
    text = json.dumps(event)
    body = typed(worker, bytes=text.encode()) if as_bytes else typed(worker, string=text)

    worker.invoke("on_queued_key_event", {"message": body}, queue_metadata(worker, "on_queued_key_event", text))

    (message,) = enqueued(rotation)
    assert (message["key"], message["trigger"]) == (SAMPLE_KEY, "KeyExpired")


def submit(worker: FunctionsWorker, key: str) -> str:
    body = json.dumps({"key": key}).encode()
    answer = worker.invoke("submit_rotation", {"req": http(worker, "POST", "/api/rotations", body=body)}, {})
    assert answer.http.status_code == "202", answer.http.body
    request_id: str = json.loads(answer.http.body.bytes)["request_id"]
    return request_id


def test_rotation_worker_and_rotation_poison_take_a_queued_request(rotation: Rotation, worker: FunctionsWorker) -> None:
    worked, abandoned = submit(worker, rotation.emulator_key), submit(worker, rotation.emulator_key)
    texts = {json.loads(text)["request_id"]: text for text in rotation.queued()}
    rotation.host.queue(REQUESTS_QUEUE).clear_messages()

    for function, request_id in (("rotation_worker", worked), ("rotation_poison", abandoned)):
        text = texts[request_id]
        metadata = queue_metadata(worker, function, text, dequeue_count=5)
        assert worker.invoke(function, {"message": typed(worker, string=text)}, metadata) is None

    worked_row, abandoned_row = rotation.app.ledger.get(worked), rotation.app.ledger.get(abandoned)
    assert worked_row is not None and worked_row.status.final and worked_row.status != "failed"
    assert abandoned_row is not None and abandoned_row.status == "failed"


# --- HTTP ---------------------------------------------------------------------------------------------------------


def test_the_http_functions_take_an_rpc_http_and_answer_with_one(rotation: Rotation, worker: FunctionsWorker) -> None:
    body = json.dumps({"key": SAMPLE_KEY}).encode()
    headers = {"content-type": "application/json", "idempotency-key": "wire-1"}
    submitted = worker.invoke(
        "submit_rotation", {"req": http(worker, "POST", "/api/rotations", body=body, headers=headers)}, {}
    )
    assert submitted.WhichOneof("data") == "http"
    assert submitted.http.status_code == "202"
    assert submitted.http.headers["content-type"] == "application/json"
    answer = json.loads(submitted.http.body.bytes)
    request_id = answer["request_id"]
    assert submitted.http.headers["Location"] == answer["status_url"] == f"/api/rotations/{request_id}"
    assert rotation.app.ledger.get(request_id) is not None and rotation.app.ledger.get(request_id).idempotency_key == (
        "wire-1"
    )

    path = f"/api/rotations/{request_id}"
    looked_up = worker.invoke("get_rotation", {"req": http(worker, "GET", path, params={"request_id": request_id})}, {})
    assert (looked_up.http.status_code, json.loads(looked_up.http.body.bytes)["status"]) == ("200", "queued")

    status = worker.invoke("fleet_status", {"req": http(worker, "GET", "/api/status")}, {})
    assert status.http.status_code == "200"
    assert SAMPLE_KEY in status.http.body.bytes.decode()


# --- timer --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("past_due", [False, True])
def test_rotation_sweep_takes_the_timer_json(
    rotation: Rotation, worker: FunctionsWorker, caplog: pytest.LogCaptureFixture, past_due: bool
) -> None:
    caplog.set_level(logging.INFO, logger="rotation")
    timer = {
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {
            "Last": "2024-05-01T03:00:00+00:00",
            "Next": "2024-05-02T03:00:00+00:00",
            "LastUpdated": "2024-05-01T03:00:00+00:00",
        },
        "IsPastDue": past_due,
    }

    worker.invoke("rotation_sweep", {"timer": as_json(worker, timer)}, {"sys": sys_metadata(worker, "rotation_sweep")})

    (completed,) = [r for r in caplog.records if str(r.msg).startswith("rotation.sweep_completed")]
    assert completed.past_due is past_due  # type: ignore[attr-defined]


# --- failures -----------------------------------------------------------------------------------------------------


def test_a_function_that_raises_fails_with_its_exception_type_message_and_traceback(
    rotation: Rotation, worker: FunctionsWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATION_TARGETS", "[oops")
    configure(None)  # the next call builds the app from the (broken) settings, as a fresh worker would
    text = json.dumps({"request_id": "r-1", "key": SAMPLE_KEY, "trigger": "http"})

    with pytest.raises(InvocationFailed) as failed:
        worker.invoke(
            "rotation_worker", {"message": typed(worker, string=text)}, queue_metadata(worker, "rotation_worker", text)
        )

    assert failed.value.exception_type == "Redeliver"  # raised on purpose, so that the host delivers it again
    assert "ROTATION_TARGETS" in failed.value.message
    assert "ConfigError" in failed.value.stack_trace  # the cause, chained
