"""What Application Insights receives, read through OpenTelemetry's in-memory exporters (``tests/otel.py``) while the
app's functions run behind the host stand-in and the real Python worker, on the emulator and Azurite.

- Every rotation event carries its key and reason twice: in its text (a line read without its dimensions) and as
  attributes (the custom dimensions the runbook's queries and the alerts filter on).
- One trace per request: the trigger's span, then the worker's (continued from the queue message's ``traceparent``),
  with the engine's ``gather``, ``create``, ``update_account`` and ``verify`` under it.
- A failure that the queue's next delivery fixes logs warnings only: nothing an alert matches.
- The sweep reports each key's days until renewal and expiry, and an overdue renewal, a near expiry and a waiting
  poison message as the ERROR events the alerts match.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient
from opentelemetry._logs import SeverityNumber

import function_app
from emulator.control import FaultRule
from emulator.functions_host import FunctionsHost
from rotation.app import Timings, configure
from rotation.log import Event
from rotation.model import KeyRef
from rotation.storage import REQUESTS_QUEUE, RotationQueue
from rotation.telemetry import MetricName, SpanName
from tests.function.conftest import Rotation
from tests.functional.wiring import build_app
from tests.otel import Telemetry, capture

# The events of one rotation's run: each names its key and its reason.
ROTATION_EVENTS = {
    Event.PLANNED,
    Event.VERSION_CREATED,
    Event.VERSION_ADOPTED,
    Event.ACCOUNT_UPDATED,
    Event.ACCOUNT_FAILED,
    Event.COMPLETED,
    Event.ATTEMPT_FAILED,
    Event.FAILED,
}
ERROR = SeverityNumber.ERROR.value  # a record logged at logging.ERROR; the alerts match these
CONFLICT = {"error": {"code": "RequestConflict", "message": "Another operation is in progress on the account."}}


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    with capture() as captured:
        yield captured


def submit(rotation: Rotation, key: str, *, force: bool = True) -> str:
    body = json.dumps({"key": key, "force": force}).encode()
    response = rotation.host.http("submit_rotation", "POST", "/api/rotations", body=body)
    assert response.status_code == 202, response.get_body()
    return str(json.loads(response.get_body())["request_id"])


def rotation_records(telemetry: Telemetry) -> list[tuple[str, dict[str, Any], str, int]]:
    """Each exported ``rotation.*`` record: its event, attributes, text and severity number."""
    found = []
    for log in telemetry.logs():
        record = log.log_record
        attributes = dict(record.attributes or {})
        if str(attributes.get("event", "")).startswith("rotation."):
            found.append((str(attributes["event"]), attributes, str(record.body), record.severity_number.value))
    return found


def test_each_rotation_event_carries_its_key_and_reason_in_its_text_and_as_attributes(
    rotation: Rotation, telemetry: Telemetry
) -> None:
    request_id = submit(rotation, rotation.emulator_key)
    assert rotation.host.pump("rotation_worker") == 1
    assert rotation.app.ledger.get(request_id).status.value == "succeeded"

    runs = [(e, a, text) for e, a, text, _ in rotation_records(telemetry) if e in ROTATION_EVENTS]
    assert {e for e, _, _ in runs} >= {Event.PLANNED, Event.VERSION_CREATED, Event.ACCOUNT_UPDATED, Event.COMPLETED}
    for event, attributes, text in runs:
        assert attributes["key"] == rotation.emulator_key, event
        assert attributes["request_id"] == request_id, event
        assert attributes["reason"], event
        assert text.startswith(f"{event}: key_url={rotation.emulator_key} "), text
        assert f" reason={attributes['reason']} " in text, text
    account_updates = [a for e, a, _ in runs if e == Event.ACCOUNT_UPDATED]
    assert all(a["account"].endswith("/accounts/openai-east-1") for a in account_updates)


def test_one_trace_runs_from_the_http_trigger_through_the_queue_to_the_engines_steps(
    rotation: Rotation, telemetry: Telemetry
) -> None:
    request_id = submit(rotation, rotation.emulator_key)
    message = json.loads(rotation.queued()[0])
    assert rotation.host.pump("rotation_worker") == 1

    (submitted,) = telemetry.spans(SpanName.SUBMIT)
    (work,) = telemetry.spans(SpanName.WORK)
    trace_id = submitted.context.trace_id
    assert message["traceparent"].startswith(f"00-{trace_id:032x}-{submitted.context.span_id:016x}-")
    assert work.parent is not None and work.parent.span_id == submitted.context.span_id
    assert work.attributes is not None and work.attributes["request_id"] == request_id
    steps = {name: telemetry.spans(name) for name in (SpanName.GATHER, SpanName.CREATE, SpanName.UPDATE_ACCOUNT)}
    verify = telemetry.spans(SpanName.VERIFY)
    for span in [*(s for found in steps.values() for s in found), *verify]:
        assert span.context.trace_id == trace_id, span.name
    (gather,) = steps[SpanName.GATHER]
    (update,) = steps[SpanName.UPDATE_ACCOUNT]
    assert gather.parent is not None and gather.parent.span_id == work.context.span_id
    assert update.attributes is not None and str(update.attributes["account"]).endswith("/openai-east-1")
    # The accounts are updated on pool threads: their spans still nest under the worker's.
    assert update.parent is not None and update.parent.span_id == work.context.span_id


def test_a_failure_that_the_next_delivery_fixes_logs_no_alert_level_event(
    rotation: Rotation, telemetry: Telemetry, emulator_vault: Any, azurite: Any
) -> None:
    emulator, _ = emulator_vault
    # The update conflicts for every step retry of the first delivery (QUICK_RETRIES: 2 attempts), then goes through.
    emulator.control.add_fault(FaultRule(operation="arm.update_account", status=409, times=2, body=CONFLICT))
    # host.json hides a failed message for 60 s; this host, for 1 s.
    host = FunctionsHost(
        function_app.app,
        azurite.connection_string,
        app_settings=rotation.host._app_settings,
        visibility_timeout=timedelta(seconds=1),
    )
    try:
        request_id = submit(rotation, rotation.emulator_key)
        assert host.pump("rotation_worker") == 1  # failed: hidden for 1 s
        time.sleep(1.2)
        assert host.pump("rotation_worker") == 1
    finally:
        emulator.control.clear_faults()
    assert rotation.app.ledger.get(request_id).status.value == "succeeded"

    records = rotation_records(telemetry)
    events = [e for e, _, _, _ in records]
    assert Event.ACCOUNT_FAILED in events and Event.ATTEMPT_FAILED in events and Event.COMPLETED in events
    alert_level = [(e, text) for e, _, text, severity in records if severity >= ERROR]
    assert alert_level == []  # nothing for the alerts to match
    assert Event.FAILED not in events
    points = telemetry.points(MetricName.ROTATIONS)
    outcomes = {(p["status"], p["reason"]) for p, _ in points if p["key"] == rotation.emulator_key}
    assert ("failed", "Forced") in outcomes and ("succeeded", "Forced") in outcomes


def test_a_final_failure_is_one_error_event_with_its_key_and_reason(
    rotation: Rotation, telemetry: Telemetry, emulator_vault: Any
) -> None:
    emulator, _ = emulator_vault
    denied = {"error": {"code": "AuthorizationFailed", "message": "The client does not have authorization."}}
    emulator.control.add_fault(FaultRule(operation="arm.update_account", status=403, times=None, body=denied))
    try:
        request_id = submit(rotation, rotation.emulator_key)
        assert rotation.host.pump("rotation_worker") == 1
    finally:
        emulator.control.clear_faults()
    assert rotation.app.ledger.get(request_id).status.value == "failed"

    errors = [(e, a, text) for e, a, text, severity in rotation_records(telemetry) if severity >= ERROR]
    assert [e for e, _, _ in errors] == [Event.FAILED]
    (_, attributes, text) = errors[0]
    assert attributes["key"] == rotation.emulator_key and attributes["reason"] == "Forced"
    assert text.startswith(f"rotation.failed: key_url={rotation.emulator_key} reason=Forced request={request_id}: ")
    assert "PermissionDenied" in text or "authorization" in text.lower()


@pytest.fixture
def expiring_key(rotation: Rotation, emulator_vault: Any, azurite: Any) -> Iterator[str]:
    """An app with two targets: the fixture's emulator key, and a key whose only version expires in 3 days, so that
    its renewal (30 days before) is 27 days overdue."""
    emulator, _ = emulator_vault
    vault = emulator.vault("contoso-cmk")
    name = f"expiring-{uuid.uuid4().hex[:8]}"
    record = vault.create_key(name, exp=datetime.now(UTC) + timedelta(days=3))
    key = f"{vault.url}/keys/{name}"
    cmk = {"keyName": name, "keyVersion": record.version, "keyVaultUri": vault.url}
    account = emulator.arm.add_account(name, encryption={"keySource": "Microsoft.KeyVault", "keyVaultProperties": cmk})
    healthy = rotation.app.settings.target_for(KeyRef.parse(rotation.emulator_key))
    assert healthy is not None
    targets = [
        {"key": rotation.emulator_key, "accounts": [a.id for a in healthy.accounts]},
        {"key": key, "accounts": [account["id"]]},
    ]
    table = f"ledger{uuid.uuid4().hex[:12]}"
    configure(build_app(emulator.endpoints(), azurite.connection_string, targets, ledger_table=table))
    try:
        yield key
    finally:
        configure(rotation.app)
        TableClient.from_connection_string(azurite.connection_string, table).delete_table()


def test_the_sweep_reports_days_left_and_alerts_on_an_overdue_renewal_and_a_near_expiry(
    rotation: Rotation, telemetry: Telemetry, expiring_key: str
) -> None:
    rotation.host.fire_timer("rotation_sweep")

    errors = {e: a for e, a, _, severity in rotation_records(telemetry) if severity >= ERROR}
    assert set(errors) == {Event.RENEWAL_OVERDUE, Event.EXPIRY_NEAR}
    assert errors[Event.EXPIRY_NEAR]["key"] == expiring_key and 2.9 <= errors[Event.EXPIRY_NEAR]["days"] <= 3.0
    assert errors[Event.RENEWAL_OVERDUE]["key"] == expiring_key and errors[Event.RENEWAL_OVERDUE]["days"] >= 26.9
    expiry = {p["key"]: v for p, v in telemetry.points(MetricName.DAYS_UNTIL_EXPIRY)}
    renewal = {p["key"]: v for p, v in telemetry.points(MetricName.DAYS_UNTIL_RENEWAL)}
    assert 2.9 <= expiry[expiring_key] <= 3.0 and renewal[expiring_key] <= -26.9
    assert renewal[rotation.emulator_key] > 0  # the healthy key: reported, no alert
    (sweep,) = telemetry.spans(SpanName.SWEEP)
    assert sweep.attributes is not None and sweep.attributes["targets"] == 2


def test_the_sweep_alerts_on_poison_messages_nobody_handles(
    rotation: Rotation, telemetry: Telemetry, azurite: Any
) -> None:
    suffix = uuid.uuid4().hex[:10]
    queue = RotationQueue.from_connection_string(
        azurite.connection_string, name=f"rq{suffix}", key_events=f"ke{suffix}"
    )
    poison = QueueClient.from_connection_string(azurite.connection_string, f"ke{suffix}-poison")
    poison.create_queue()
    try:
        poison.send_message("an event no delivery could handle")
        rotation.app.queue = queue
        rotation.app.timings = Timings(poison_alert_after=timedelta(0))
        rotation.host.fire_timer("rotation_sweep")
    finally:
        poison.delete_queue()

    (waiting,) = [a for e, a, _, _ in rotation_records(telemetry) if e == Event.POISON_WAITING]
    assert (waiting["queue"], waiting["messages"]) == (f"ke{suffix}-poison", 1)
    counts = {p["queue"]: v for p, v in telemetry.points(MetricName.POISON_MESSAGES)}
    assert counts[f"ke{suffix}-poison"] == 1 and counts[f"rq{suffix}-poison"] == 0
    assert REQUESTS_QUEUE not in counts
