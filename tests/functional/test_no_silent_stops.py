"""No silent stops (issue 8): refused input writes nothing, one fault never hides another, no request is lost.

Each test reproduces one finding of the issue through the app's own functions, against the emulator and a real
Azurite, and would fail on the code before the fix:

    refused input       a message for a key outside the targets, or one forging another key's request id, writes
                        nothing (no lease blob, ledger row, outcome event or rotation.failed)
    lost requests       a failed enqueue answers 503 with Retry-After and the request id; the sweep re-sends it
    sweep isolation     a storage fault on one target does not stop the sweep of the others
    poison              the poison handler never overrides a copy of the request that holds the key's lock
    force cooldown      a second forced rotation within ROTATION_FORCE_COOLDOWN is 429 with Retry-After

A storage service that fails is a real client aimed at a closed local port, swapped in through the app's fields.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import ContainerClient

from emulator.azurite import Azurite
from rotation.app import RotationApp, Timings, configure
from rotation.model import KeyRef, RotationRequest, Trigger
from rotation.storage import LOCKS_CONTAINER, POISON_QUEUE, REQUESTS_QUEUE, RotationQueue
from tests.functional.conftest import Fleet
from tests.functional.test_app import events_named, post
from tests.functional.wiring import build_app


def dead_storage() -> str:
    """A connection string whose endpoints refuse every connection (a port that was just closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    account_key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={account_key};"
        f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def with_app(fleet: Fleet, app: RotationApp) -> None:
    fleet.app = app
    configure(app)


def lock_blobs(fleet: Fleet) -> list[str]:
    container = ContainerClient.from_connection_string(fleet.storage, LOCKS_CONTAINER)
    return [blob.name for blob in container.list_blobs()] if container.exists() else []


def message(key: str, request_id: str, trigger: Trigger = Trigger.HTTP) -> str:
    return RotationRequest(request_id, KeyRef.parse(key), trigger).to_message()


# --- refused input writes nothing -----------------------------------------------------------------------------


def test_a_message_for_a_key_outside_the_targets_writes_nothing(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    outsider = f"{fleet.vault.url}/keys/other-cmk"  # a real key in the same vault, not in ROTATION_TARGETS
    locks_before = lock_blobs(fleet)
    fleet.host.queue(REQUESTS_QUEUE).send_message(message(outsider, "forged-1"))

    with caplog.at_level(logging.INFO, logger="rotation"):
        assert fleet.pump() == 1  # acknowledged, not retried

    assert fleet.app.ledger.get("forged-1") is None
    assert lock_blobs(fleet) == locks_before
    assert fleet.outcome_events() == []
    assert events_named(caplog, "rotation.failed") == []
    (refused,) = events_named(caplog, "rotation.message_rejected")
    assert "not in ROTATION_TARGETS" in refused.getMessage()
    assert [c for c in fleet.emulator.control.calls() if c.operation.startswith(("keyvault.", "arm."))] == []


def test_a_message_that_reuses_another_keys_request_id_never_touches_that_request(
    fleet: Fleet, azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    status, body, _ = post(fleet, {"key": fleet.key_id})
    assert status == 202
    request_id = body["request_id"]
    assert fleet.pump() == 1
    assert fleet.row(request_id).status == "succeeded"
    # A second target, so the forged message names a key the service does act on.
    other_key = f"{fleet.vault.url}/keys/other-cmk"
    targets = [
        *fleet.targets,
        {"key": other_key, "accounts": [fleet.emulator.arm.account("rg-ai", "openai-other-key")["id"]]},
    ]
    with_app(
        fleet,
        build_app(fleet.emulator.endpoints(), azurite.connection_string, targets, ledger_table=fleet.ledger_table),
    )
    events_before = len(fleet.outcome_events())

    fleet.host.queue(REQUESTS_QUEUE).send_message(message(other_key, request_id))
    fleet.host.queue(POISON_QUEUE).send_message(message(other_key, request_id))
    with caplog.at_level(logging.INFO, logger="rotation"):
        assert fleet.pump() == 1
        assert fleet.pump("rotation_poison") == 1

    row = fleet.row(request_id)
    assert (row.key.id, row.status, row.error) == (fleet.key_id, "succeeded", "")
    assert len(fleet.outcome_events()) == events_before
    assert len(events_named(caplog, "rotation.message_rejected")) == 2
    assert events_named(caplog, "rotation.failed") == []


# --- no request is lost ---------------------------------------------------------------------------------------


def test_a_failed_enqueue_answers_503_with_the_request_and_the_sweep_sends_it_later(fleet: Fleet) -> None:
    dead = RotationQueue.from_connection_string(dead_storage(), retry_total=0)
    healthy = fleet.app
    with_app(fleet, replace(healthy, queue=dead))

    status, body, headers = post(fleet, {"key": fleet.key_id}, **{"Idempotency-Key": "lost-send-1"})

    assert status == 503
    assert headers["Retry-After"] == "60"
    assert body["error"]["code"] == "StorageUnavailable"
    (row,) = fleet.app.ledger.list_requests(KeyRef.parse(fleet.key_id))
    assert row.request_id in body["error"]["message"]
    assert row.status == "queued"
    assert "AccountKey" not in json.dumps(body)

    # Storage is back; the sweep repairs the row once nobody has touched it for repair_after.
    with_app(fleet, replace(healthy, timings=Timings(lease=15, repair_after=timedelta(0))))
    fleet.host.fire_timer("rotation_sweep")
    assert fleet.pump(one_at_a_time=True) >= 1
    # The sweep's own request for the due key may run first; the repaired one then finds nothing left to do.
    assert fleet.row(row.request_id).status in ("succeeded", "skipped")
    (new,) = fleet.new_versions()
    fleet.assert_converged(new)


def test_a_failed_enqueue_does_not_stop_the_sweep_of_the_next_target(
    fleet: Fleet, azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    second_key = f"{fleet.vault.url}/keys/other-cmk"
    bystander = fleet.emulator.arm.account("rg-ai", "openai-other-key")["id"]
    fleet.vault.update_key("other-cmk", exp=datetime.now(UTC) + timedelta(days=5))  # due as well
    targets = [*fleet.targets, {"key": second_key, "accounts": [bystander]}]
    app = build_app(fleet.emulator.endpoints(), azurite.connection_string, targets, ledger_table=fleet.ledger_table)
    with_app(fleet, replace(app, queue=RotationQueue.from_connection_string(dead_storage(), retry_total=0)))

    with caplog.at_level(logging.INFO, logger="rotation"):
        fleet.host.fire_timer("rotation_sweep")

    failed = events_named(caplog, "rotation.sweep_failed")
    # The keys are swept at once (in either order); then the dead queue service leaves its poison queues unread too.
    assert sorted(getattr(r, "key", "") for r in failed[:2]) == sorted([fleet.key_id, second_key])
    assert (getattr(failed[2], "key", None), getattr(failed[2], "step", None)) == (None, "poison")
    assert len(failed) == 3
    (summary,) = events_named(caplog, "rotation.sweep_completed")
    assert summary.levelno == logging.ERROR and "2 targets failed" in summary.getMessage()


# --- the poison handler ---------------------------------------------------------------------------------------


def test_the_poison_handler_waits_for_a_copy_that_holds_the_lock(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    status, body, _ = post(fleet, {"key": fleet.key_id})
    assert status == 202
    request_id = body["request_id"]
    poison_copy = message(fleet.key_id, request_id)
    fleet.host.queue(POISON_QUEUE).send_message(poison_copy)

    running_copy = fleet.app.lock_for(KeyRef.parse(fleet.key_id))
    with running_copy, caplog.at_level(logging.INFO, logger="rotation"):
        assert fleet.pump("rotation_poison") == 1

    assert fleet.row(request_id).status == "queued"  # not marked failed under a running copy
    assert events_named(caplog, "rotation.failed") == []
    assert len(events_named(caplog, "rotation.poison_deferred")) == 1
    assert fleet.host.queue(POISON_QUEUE).peek_messages() == []  # deferred: hidden for poison_retry_delay
    deferred = fleet.host.queue(POISON_QUEUE).get_queue_properties().approximate_message_count
    assert deferred == 1

    assert fleet.pump() == 1  # the running copy finishes the request
    assert fleet.row(request_id).status == "succeeded"
    fleet.app.give_up(poison_copy, reason="the deferred poison copy comes back")
    assert fleet.row(request_id).status == "succeeded"
    assert events_named(caplog, "rotation.failed") == []


# --- forced rotations --------------------------------------------------------------------------------------------


def test_a_second_forced_rotation_within_the_cooldown_is_429_with_retry_after(fleet: Fleet) -> None:
    first = post(fleet, {"key": fleet.key_id, "force": True}, **{"Idempotency-Key": "force-1"})
    assert first[0] == 202
    again = post(fleet, {"key": fleet.key_id, "force": True}, **{"Idempotency-Key": "force-1"})
    assert (again[0], again[1]["request_id"]) == (202, first[1]["request_id"])  # a repeat is not another one

    status, body, headers = post(fleet, {"key": fleet.key_id, "force": True})

    assert status == 429
    assert body["error"]["code"] == "ForceCooldown"
    assert first[1]["request_id"] in body["error"]["message"]
    assert 3500 <= int(headers["Retry-After"]) <= 3600  # the default cooldown is one hour
    assert post(fleet, {"key": fleet.key_id})[0] == 202  # an unforced request is never held back
    assert len(fleet.app.ledger.list_requests(KeyRef.parse(fleet.key_id))) == 2
    repeat = post(fleet, {"key": fleet.key_id, "force": True}, **{"Idempotency-Key": "force-1"})
    assert (repeat[0], repeat[1]["request_id"]) == (202, first[1]["request_id"])  # still the same request
