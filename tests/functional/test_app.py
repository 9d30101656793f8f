"""The Functions app end to end: ``function_app.py``'s own functions, invoked through ``emulator.functions_host`` (the
real Python worker, the real Azurite queues), against the emulator's Key Vault, ARM and Event Grid.

    happy paths   KeyNearExpiry in both schemas; the HTTP API (dry run, Idempotency-Key, GET, status);
                  a version someone else created is rolled out without creating one
    (a)           duplicate and out-of-order events, and a timer racing an HTTP request: one new version, all verified
    (b)           two worker processes on one key never hold it at the same time
    (c)           a worker killed mid-rotation keeps its lease until it expires; the retry adopts its version
    (d)           a message that fails every delivery lands in the poison queue, and the ledger says failed

Only (c) waits for a lease to expire (15 s, Azure's shortest).
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobClient

import function_app
from emulator.azurite import Azurite
from emulator.control import FaultRule
from emulator.core import Emulator
from emulator.eventgrid import CLOUD_EVENT_SCHEMA, EVENT_GRID_SCHEMA
from emulator.functions_host import FunctionsHost
from rotation.app import configure
from rotation.model import TAG_REQUEST_ID, KeyRef, RotationRequest
from rotation.storage import LOCKS_CONTAINER, REQUESTS_QUEUE
from rotation.storage.lock import lock_blob_name
from tests.functional.conftest import ACCOUNT_NAMES, KEY, Fleet, empty_queues
from tests.functional.wiring import build_app

ROOT = Path(__file__).resolve().parents[2]
NEAR_EXPIRY = "Microsoft.KeyVault.KeyNearExpiry"
NEW_VERSION = "Microsoft.KeyVault.KeyNewVersionCreated"
HOST_JSON_MAX_DEQUEUE = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"]


def key_events(fleet: Fleet, *, schema: str = EVENT_GRID_SCHEMA, **subscription: Any) -> list[dict[str, Any]]:
    """Subscribe to the vault's events, let the emulator notice what is due, and return what Event Grid delivered."""
    delivered: list[dict[str, Any]] = []
    fleet.emulator.eventgrid.subscribe(endpoint=delivered.append, schema=schema, **subscription)
    fleet.emulator.eventgrid.scan()
    fleet.emulator.eventgrid.wait_idle()
    return delivered


def post(fleet: Fleet, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    answer = fleet.host.http(
        "submit_rotation", "POST", "/api/rotations", body=json.dumps(body).encode(), headers=headers
    )
    return answer.status_code, json.loads(answer.get_body()), dict(answer.headers)


def get(fleet: Fleet, function: str, url: str, **route: str) -> tuple[int, dict[str, Any]]:
    answer = fleet.host.http(function, "GET", url, route_params=route)
    return answer.status_code, json.loads(answer.get_body())


def successful_calls(fleet: Fleet, operation: str) -> list[Any]:
    return [c for c in fleet.emulator.control.calls(operation) if 200 <= c.status < 300]


def events_named(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if str(r.msg).split(":")[0] == name]


# --- happy paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [EVENT_GRID_SCHEMA, CLOUD_EVENT_SCHEMA])
def test_key_near_expiry_rotates_once_and_every_account_is_verified(fleet: Fleet, schema: str) -> None:
    delivered = key_events(fleet, schema=schema, event_types=[NEAR_EXPIRY])
    assert len(delivered) == 1

    fleet.host.deliver_events("on_key_event", json.dumps(delivered))
    assert fleet.pump() == 1

    (new,) = fleet.new_versions()
    fleet.assert_converged(new)
    (row,) = fleet.app.ledger.list_requests(KeyRef.parse(fleet.key_id))
    assert (row.trigger, row.status, row.reason) == ("KeyNearExpiry", "succeeded", "Expiring")
    assert (row.from_version, row.to_version, row.attempts) == (fleet.initial_version, new, 1)
    assert {account["status"] for account in row.accounts.values()} == {"succeeded"}
    assert fleet.vault.get(KEY, new).tags[TAG_REQUEST_ID] == row.request_id
    planned, outcome = fleet.outcome_events()
    assert (planned["type"], planned["data"]["request_id"], planned["data"]["reason"]) == (
        "CmkRotation.Planned",
        row.request_id,
        "Expiring",
    )
    assert planned["data"]["create"]["kty"] == "RSA"
    assert {a["action"] for a in planned["data"]["accounts"]} == {"repoint"}
    assert (outcome["type"], outcome["data"]["request_id"], outcome["data"]["to_version"]) == (
        "CmkRotation.Succeeded",
        row.request_id,
        new,
    )


def test_http_dry_run_then_an_idempotent_submit_then_the_request_and_fleet_status(fleet: Fleet) -> None:
    status, plan, _ = post(fleet, {"key": fleet.key_id, "dry_run": True})
    assert status == 200
    assert (plan["reason"], plan["current_version"]) == ("Expiring", fleet.initial_version)
    assert plan["create"] is not None
    assert fleet.new_versions() == []
    assert fleet.host.queue(REQUESTS_QUEUE).peek_messages() == []

    idempotency_key = f"change-{uuid.uuid4()}"
    answers = [post(fleet, {"key": fleet.key_id, "force": False}, **{"Idempotency-Key": idempotency_key}) for _ in "ab"]
    assert [a[0] for a in answers] == [202, 202]
    request_ids = {a[1]["request_id"] for a in answers}
    assert len(request_ids) == 1
    (request_id,) = request_ids
    for _, body, headers in answers:
        assert headers["Location"] == body["status_url"] == f"/api/rotations/{request_id}"
        assert body["status"] == "queued"

    fleet.pump()
    (new,) = fleet.new_versions()
    fleet.assert_converged(new)

    status, row = get(fleet, "get_rotation", f"/api/rotations/{request_id}", request_id=request_id)
    assert status == 200
    assert (row["request_id"], row["trigger"], row["status"], row["to_version"]) == (
        request_id,
        "http",
        "succeeded",
        new,
    )
    assert sorted(row["accounts"]) == sorted(fleet.targets[0]["accounts"])

    status, fleet_status = get(fleet, "fleet_status", "/api/status")
    assert status == 200
    (key,) = fleet_status["keys"]
    assert (key["key"], key["current_version"], key["target_version"]) == (fleet.key_id, new, new)
    assert [(a["key_version"], a["provisioning_state"], a["drift"]) for a in key["accounts"]] == [
        (new, "Succeeded", False)
    ] * len(ACCOUNT_NAMES)


def test_a_version_someone_else_created_is_rolled_out_and_none_is_created(fleet: Fleet) -> None:
    delivered: list[dict[str, Any]] = []
    fleet.emulator.eventgrid.subscribe(endpoint=delivered.append, schema=CLOUD_EVENT_SCHEMA, event_types=[NEW_VERSION])
    portal = fleet.vault.create_key(KEY, exp=datetime.now(UTC) + timedelta(days=100))  # e.g. a person in the portal
    fleet.emulator.eventgrid.wait_idle()
    assert [e["data"]["Version"] for e in delivered] == [portal.version]

    fleet.host.deliver_events("on_key_event", delivered)
    assert fleet.pump() == 1

    assert fleet.versions() == [fleet.initial_version, portal.version]
    fleet.assert_converged(portal.version)
    assert successful_calls(fleet, "keyvault.create_key") == []
    (row,) = fleet.app.ledger.list_requests(KeyRef.parse(fleet.key_id))
    assert (row.trigger, row.status, row.to_version) == ("KeyNewVersionCreated", "succeeded", portal.version)


# --- (a) duplicates, reordering and racing triggers ---------------------------------------------------------------


def test_duplicate_and_out_of_order_events_end_with_one_new_version(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rotation")
    stale = [e.event_grid for e in fleet.emulator.eventgrid.published if e.event_type == NEW_VERSION]
    delivered = key_events(fleet, duplicate=2, shuffle=True)
    near = [e for e in delivered if e["eventType"] == NEAR_EXPIRY]
    assert len(near) == 3 and len({e["id"] for e in near}) == 1  # Event Grid delivered the notice three times

    for copy in near:  # every copy is delivered before the worker runs: each one re-sends the queued request
        fleet.host.deliver_events("on_key_event", [copy])
    assert fleet.pump(one_at_a_time=True) == 3
    (new,) = fleet.new_versions()
    fleet.assert_converged(new)
    assert len(events_named(caplog, "rotation.duplicate")) == 2

    fleet.emulator.eventgrid.wait_idle()
    ours = [e for e in delivered if e["eventType"] == NEW_VERSION and e["data"]["Version"] == new]
    assert len(ours) == 3  # our own create, announced (and duplicated) by Key Vault
    # Out of order: our own announcement, then the seeded version's announcement from before the rotation.
    fleet.host.deliver_events("on_key_event", [ours[0], *stale, ours[1]])
    fleet.pump(one_at_a_time=True)

    assert fleet.new_versions() == [new]
    fleet.assert_converged(new)
    assert len(successful_calls(fleet, "keyvault.create_key")) == 1
    rows = fleet.app.ledger.list_requests(KeyRef.parse(fleet.key_id))
    assert sorted((r.trigger, r.status, r.to_version) for r in rows) == [
        ("KeyNearExpiry", "succeeded", new),
        ("KeyNewVersionCreated", "skipped", new),
        ("KeyNewVersionCreated", "skipped", new),
    ]


def test_a_timer_sweep_and_an_http_request_racing_on_one_key_make_one_version(fleet: Fleet) -> None:
    fleet.host.fire_timer("rotation_sweep")
    status, body, _ = post(fleet, {"key": fleet.key_id})
    assert status == 202
    near = key_events(fleet, event_types=[NEAR_EXPIRY])
    fleet.host.deliver_events("on_key_event", near)
    assert fleet.host.queue(REQUESTS_QUEUE).get_queue_properties().approximate_message_count == 3

    assert fleet.pump(one_at_a_time=True) == 3

    (new,) = fleet.new_versions()
    fleet.assert_converged(new)
    assert len(successful_calls(fleet, "keyvault.create_key")) == 1
    rows = fleet.app.ledger.list_requests(KeyRef.parse(fleet.key_id))
    assert sorted(r.trigger for r in rows) == ["KeyNearExpiry", "http", "timer"]
    assert sorted(r.status for r in rows) == ["skipped", "skipped", "succeeded"]
    assert {r.to_version for r in rows} == {new}
    assert body["request_id"] in {r.request_id for r in rows}


# --- (b) and (c): worker processes ----------------------------------------------------------------------------------


class WorkerProcess:
    """``tests/functional/worker_process.py`` in its own OS process; its JSON lines are read on a thread."""

    def __init__(self, fleet: Fleet, identity: str, **job: Any) -> None:
        self.identity = identity
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.functional.worker_process"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        spec = {
            "endpoints": fleet.emulator.endpoints(),
            "storage": fleet.storage,
            "targets": fleet.targets,
            "identity": identity,
            "lock_duration": 60,
            "ledger_table": fleet.ledger_table,
            **job,
        }
        self._send(json.dumps(spec))
        threading.Thread(target=self._read, daemon=True).start()

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def go(self) -> None:
        self._send("go")

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line["event"] == event:
                return line
        raise AssertionError(f"{self.identity} did not report {event}; it reported {[s['event'] for s in self.seen]}")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["event"] == name]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def take_messages(fleet: Fleet) -> list[str]:
    """Every visible message of the rotation queue, removed from it (to be handed to a worker process)."""
    requests = fleet.host.queue(REQUESTS_QUEUE)
    texts = []
    for message in requests.receive_messages(max_messages=32):
        texts.append(message.content)
        requests.delete_message(message)
    return texts


def test_two_worker_processes_on_one_key_never_rotate_it_at_the_same_time(fleet: Fleet) -> None:
    fleet.host.fire_timer("rotation_sweep")
    assert post(fleet, {"key": fleet.key_id})[0] == 202
    messages = take_messages(fleet)
    assert len(messages) == 2
    fleet.emulator.control.set_latency("arm.update_account", 1)  # widens the window in which both could act
    workers = [WorkerProcess(fleet, f"worker-{n}", message=m) for n, m in enumerate(messages)]
    try:
        for worker in workers:
            worker.wait_for("ready")
        for worker in workers:
            worker.go()
        for worker in workers:
            worker.wait_for("done")
    finally:
        for worker in workers:
            worker.stop()

    holders = [w for w in workers if w.events("rotation.lock_acquired")]
    assert len(holders) == 1, [w.seen for w in workers]
    (winner,) = holders
    (loser,) = [w for w in workers if w is not winner]
    (busy,) = loser.events("rotation.lock_busy")  # the loser tried while the winner held the key, and gave way
    assert busy["at"] < winner.events("rotation.lock_released")[0]["at"]
    writes = successful_calls(fleet, "keyvault.create_key") + successful_calls(fleet, "arm.update_account")
    assert {c.identity for c in writes} == {winner.identity}
    assert not [c for c in fleet.emulator.control.calls() if c.identity == loser.identity]
    (new,) = fleet.new_versions()
    fleet.assert_converged(new)

    # The loser's request went back on the queue, hidden, instead of failing; run now, it finds the key fresh.
    assert fleet.host.queue(REQUESTS_QUEUE).get_queue_properties().approximate_message_count == 1
    (loser_message,) = [m for m in messages if json.loads(m)["request_id"] == busy["request_id"]]
    fleet.emulator.control.set_latency("arm.update_account", 0)
    outcome = fleet.app.work(loser_message)
    assert outcome is not None
    assert (outcome.status.value, outcome.to_version, outcome.created) == ("skipped", new, False)
    assert fleet.new_versions() == [new]


def test_a_worker_killed_mid_rotation_keeps_the_lease_and_the_retry_adopts_its_version(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rotation")
    # In Azure an accepted update completes whether or not its client lives to poll it; lro_polls=0 says the same.
    fleet.emulator.arm.configure(lro_polls=0)
    fleet.emulator.control.set_latency("arm.update_account", 3)
    status, body, _ = post(fleet, {"key": fleet.key_id})
    assert status == 202
    request_id = body["request_id"]
    worker = WorkerProcess(fleet, "worker-killed", lock_duration=15, pump=15)
    try:
        worker.wait_for("ready")
        worker.go()
        acquired = worker.wait_for("rotation.lock_acquired")["at"]
        worker.wait_for("rotation.version_created")
        worker.process.send_signal(signal.SIGKILL)  # while its account updates wait on ARM
        worker.process.wait(timeout=10)
    finally:
        worker.stop()
    killed_at = time.time()
    fleet.emulator.control.set_latency("arm.update_account", 0)
    (created,) = fleet.new_versions()
    assert fleet.vault.get(KEY, created).tags[TAG_REQUEST_ID] == request_id
    assert (fleet.row(request_id).status, fleet.row(request_id).attempts) == ("running", 1)

    # Another worker finds the key locked: it puts the request back with a delay and touches nothing.
    calls_before = len(fleet.emulator.control.calls())
    assert fleet.app.work(_message_of(fleet, request_id)) is None
    assert events_named(caplog, "rotation.lock_busy")
    assert len(fleet.emulator.control.calls()) == calls_before

    lease = BlobClient.from_connection_string(
        fleet.storage, LOCKS_CONTAINER, lock_blob_name(KeyRef.parse(fleet.key_id))
    )
    deadline = time.monotonic() + 30
    while lease.get_blob_properties().lease.state == "leased":
        assert time.monotonic() < deadline, "the killed worker's lease never expired"
        time.sleep(0.2)
    freed_at = time.time()
    assert freed_at - acquired >= 14.5, "the lease ended before its 15 s: the killed worker released it"
    assert freed_at > killed_at

    assert fleet.pump() >= 1  # the message the killed worker received reappears

    assert fleet.new_versions() == [created]
    fleet.assert_converged(created)
    assert len(successful_calls(fleet, "keyvault.create_key")) == 1
    row = fleet.row(request_id)
    assert (row.status, row.to_version, row.attempts) == ("succeeded", created, 2)
    retry = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert [r.create for r in retry if getattr(r, "event", None) == "rotation.planned"] == [False]  # adopted instead
    assert [r.created_version for r in retry if getattr(r, "event", None) == "rotation.completed"] == [True]


def _message_of(fleet: Fleet, request_id: str) -> str:
    row = fleet.row(request_id)
    return RotationRequest(request_id, row.key, row.trigger, requested_at=row.created_at).to_message()


# --- (d) poison ---------------------------------------------------------------------------------------------------


def test_a_request_that_fails_every_delivery_is_poisoned_and_the_ledger_says_failed(fleet: Fleet) -> None:
    fleet.emulator.control.add_fault(FaultRule(operation="arm.update_account", status=409, times=None))
    status, body, _ = post(fleet, {"key": fleet.key_id})
    assert status == 202
    request_id = body["request_id"]
    # host.json's maxDequeueCount, with the failed message visible again at once instead of host.json's 60 s later
    host = FunctionsHost(function_app.app, fleet.storage, visibility_timeout=timedelta(0))
    assert host.max_dequeue_count == HOST_JSON_MAX_DEQUEUE
    poison = host.queue(f"{REQUESTS_QUEUE}-poison")

    deliveries = 0
    deadline = time.monotonic() + 30
    while not poison.peek_messages():
        assert time.monotonic() < deadline, f"not poisoned after {deliveries} deliveries"
        deliveries += host.pump("rotation_worker")
        time.sleep(0.1)
    assert deliveries == HOST_JSON_MAX_DEQUEUE
    row = fleet.row(request_id)
    assert (row.status, row.attempts) == ("queued", HOST_JSON_MAX_DEQUEUE)  # every failure was recorded, then retried

    assert fleet.pump("rotation_poison") == 1

    row = fleet.row(request_id)
    assert row.status == "failed"
    assert f"gave up after {HOST_JSON_MAX_DEQUEUE} attempt(s)" in row.error
    assert "last error: 3 of 3 accounts failed" in row.error
    assert "busy with another operation" in row.error
    assert len(fleet.new_versions()) == 1  # every retry adopted the version the first delivery created
    outcomes = [e for e in fleet.outcome_events() if e["data"]["request_id"] == request_id]
    assert [e["type"] for e in outcomes][-1] == "CmkRotation.Failed"  # after a CmkRotation.Planned per attempt
    assert {e["type"] for e in outcomes[:-1]} == {"CmkRotation.Planned"}
    status, answer = get(fleet, "get_rotation", f"/api/rotations/{request_id}", request_id=request_id)
    assert (status, answer["status"]) == (200, "failed")


# --- the sweep ----------------------------------------------------------------------------------------------------


def test_the_sweep_enqueues_a_drifting_key_and_skips_a_fresh_one(fleet: Fleet) -> None:
    fleet.host.fire_timer("rotation_sweep")  # the key expires in 20 days: due
    assert fleet.pump() == 1
    (new,) = fleet.new_versions()
    fleet.assert_converged(new)

    fleet.host.fire_timer("rotation_sweep")  # fresh and converged: nothing to do
    assert fleet.pump() == 0

    # Someone points an account back at the old version: drift, which the next sweep repairs without a new version.
    fleet.repoint(ACCOUNT_NAMES[0], KEY, fleet.initial_version)
    fleet.host.fire_timer("rotation_sweep")
    assert fleet.pump() == 1
    fleet.assert_converged(new)
    assert fleet.new_versions() == [new]


def test_the_sweep_reports_a_blocked_key_and_enqueues_nothing(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    fleet.vault.update_key(KEY, enabled=False)  # no enabled version left: KeyDisabled blocks the rotation

    with caplog.at_level(logging.ERROR, logger="rotation"):
        fleet.host.fire_timer("rotation_sweep")

    assert fleet.pump() == 0
    blocked = events_named(caplog, "rotation.sweep_blocked")
    assert [(r.key, r.reason) for r in blocked] == [(fleet.key_id, "KeyDisabled")]  # type: ignore[attr-defined]
    assert fleet.versions() == [fleet.initial_version]


# --- a large fleet ------------------------------------------------------------------------------------------------


def test_a_fleet_too_large_for_one_ledger_cell_is_summarised_and_still_succeeds(
    emulator: Emulator, azurite: Azurite
) -> None:
    vault = emulator.add_vault("kv-fleet")
    current = vault.create_key("cmk", exp=datetime.now(UTC) + timedelta(days=20))
    encryption = {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyName": "cmk", "keyVersion": current.version, "keyVaultUri": vault.url},
    }
    accounts = [emulator.arm.add_account(f"openai-{i:03}", encryption=encryption)["id"] for i in range(90)]
    emulator.arm.set_throttle_scale(100)
    key = f"{vault.url}/keys/cmk"
    app = build_app(emulator.endpoints(), azurite.connection_string, [{"key": key, "accounts": accounts}])
    host = FunctionsHost(function_app.app, azurite.connection_string)  # no timer here: no settings needed
    empty_queues(host)
    configure(app)
    try:
        answer = host.http("submit_rotation", "POST", "/api/rotations", body=json.dumps({"key": key}).encode())
        assert answer.status_code == 202
        body = json.loads(answer.get_body())
        assert host.pump("rotation_worker") == 1
        row = app.ledger.get(body["request_id"])
    finally:
        configure(None)
        empty_queues(host)

    assert row is not None and row.status == "succeeded"
    assert row.accounts == {"summary": {"succeeded": 90}}
    (new,) = [v.version for v in vault.versions("cmk") if v.version != current.version]
    stored = [emulator.arm.account("rg-ai", f"openai-{i:03}")["properties"]["encryption"] for i in range(90)]
    assert {e["keyVaultProperties"]["keyVersion"] for e in stored} == {new}
