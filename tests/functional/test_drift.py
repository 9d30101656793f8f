"""Drift on the sweep and in ``GET /api/status``, end to end: ``function_app.py``'s own functions through the real
Python worker, Resource Graph and ARM in the emulator, Azurite for storage.

The scene is the functional ``fleet`` (three listed accounts on ``aoai-cmk`` in the emulator's first subscription,
one bystander on ``other-cmk``) plus one account on ``aoai-cmk`` in a second subscription that ROTATION_TARGETS does
not list. What it shows: the sweep finds that account through Resource Graph and, with Resource Graph refused,
through ARM's listing of the configured subscriptions; reports it (an event naming it, a metric, a
``CmkRotation.Drift`` outcome event, the status) and never writes to it under ``report``; raises the ERROR event once
its version nears expiry; reports a listed account that left the key; and, under ``enrol``, rotates it with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rotation.app import RotationApp, configure
from rotation.log import Event
from rotation.model import AccountRef
from rotation.telemetry import MetricName
from tests.function.test_openapi import assert_documented
from tests.functional.conftest import ACCOUNT_NAMES, KEY, OTHER_KEY, Fleet
from tests.functional.wiring import build_app
from tests.otel import Telemetry, capture

SUB2 = "00000000-0000-0000-0000-000000000002"
UNMANAGED = "openai-west-9"


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    with capture() as captured:
        yield captured


@pytest.fixture
def unmanaged(fleet: Fleet) -> AccountRef:
    """An account on the fleet's key, on its first version, in a second subscription the targets do not list."""
    encryption = {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyName": KEY, "keyVersion": fleet.initial_version, "keyVaultUri": fleet.vault.url},
    }
    body = fleet.emulator.arm.add_account(UNMANAGED, subscription_id=SUB2, encryption=encryption)
    return AccountRef.parse(body["id"])


def with_settings(fleet: Fleet, **settings: str) -> RotationApp:
    """The fleet's app again, with ``settings`` added, serving the host's functions."""
    app = build_app(
        fleet.emulator.endpoints(), fleet.storage, fleet.targets, ledger_table=fleet.ledger_table, settings=settings
    )
    configure(app)
    return app


def records(caplog: pytest.LogCaptureFixture, event: Event) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def unmanaged_version(fleet: Fleet) -> str:
    account = fleet.emulator.arm.account("rg-ai", UNMANAGED, subscription_id=SUB2)
    return str(account["properties"]["encryption"]["keyVaultProperties"]["keyVersion"])


def writes_to(fleet: Fleet, account: AccountRef) -> list[Any]:
    return [
        c
        for c in fleet.emulator.control.calls()
        if c.method in ("PATCH", "PUT") and account.name in c.path and account.subscription_id in c.path
    ]


def drift_events(fleet: Fleet) -> list[dict[str, Any]]:
    return [e for e in fleet.outcome_events() if e["type"] == "CmkRotation.Drift"]


def test_the_sweep_reports_an_unmanaged_account_in_another_subscription_and_never_touches_it(
    fleet: Fleet, unmanaged: AccountRef, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="rotation"):
        fleet.host.fire_timer("rotation_sweep")  # the key is due: the listed accounts are rotated
        assert fleet.pump() == 1
        (new,) = fleet.new_versions()
        fleet.assert_converged(new)
        fleet.host.fire_timer("rotation_sweep")
    assert fleet.pump() == 0  # nothing the service may act on is behind

    [completed, *_] = records(caplog, Event.DISCOVERY_COMPLETED)
    assert (completed.path, completed.searched) == ("resource_graph", "tenant")  # type: ignore[attr-defined]
    first, second = records(caplog, Event.DRIFT_FOUND)
    assert (first.unmanaged, first.off_target, first.policy) == (1, 0, "report")  # type: ignore[attr-defined]
    assert (second.unmanaged, second.off_target, second.left) == (1, 1, 0)  # type: ignore[attr-defined]
    assert unmanaged.id in second.getMessage() and f"on {fleet.initial_version}, which expires in" in (
        second.getMessage()
    )
    assert unmanaged_version(fleet) == fleet.initial_version and writes_to(fleet, unmanaged) == []
    assert records(caplog, Event.UNMANAGED_EXPIRY_NEAR) == []  # 19 days left: reported, no page

    drift = {(p["key"], p["kind"]): v for p, v in telemetry.points(MetricName.DRIFT_ACCOUNTS)}
    assert (drift[(fleet.key_id, "unmanaged")], drift[(fleet.key_id, "off_target")]) == (1, 1)
    assert drift[(fleet.key_id, "left")] == 0
    event = drift_events(fleet)[-1]
    [off] = event["data"]["off_target"]
    assert event["subject"] == fleet.key_id and event["data"]["unmanaged"] == [off]
    assert (off["account"], off["key_version"], off["managed"]) == (unmanaged.id, fleet.initial_version, False)
    assert off["days_until_expiry"] in (18, 19)

    status = assert_documented(fleet.host.http("fleet_status", "GET", "/api/status"), "fleet_status")
    assert (status["discovery"]["path"], status["discovery"]["failures"]) == ("resource_graph", [])
    [key] = status["keys"]
    assert key["drift"]["target_version"] == new and [a["account"] for a in key["drift"]["unmanaged"]] == [unmanaged.id]
    assert [a["account"] for a in key["accounts"]] == [t for t in fleet.targets[0]["accounts"]]  # not enrolled


def test_with_resource_graph_refused_the_configured_subscriptions_are_listed_through_arm(
    fleet: Fleet, unmanaged: AccountRef, caplog: pytest.LogCaptureFixture
) -> None:
    fleet.emulator.arm.deny("rotation-app", "graph")
    scope = f"/subscriptions/{fleet.emulator.subscription_id},/subscriptions/{SUB2}"
    with_settings(fleet, ROTATION_DISCOVERY=scope)

    with caplog.at_level(logging.INFO, logger="rotation"):
        fleet.host.fire_timer("rotation_sweep")

    [fallback] = records(caplog, Event.DISCOVERY_FALLBACK)
    assert fallback.reason == "PermissionDenied"  # type: ignore[attr-defined]
    [drift] = records(caplog, Event.DRIFT_FOUND)
    assert drift.unmanaged == 1 and unmanaged.id in drift.getMessage()  # type: ignore[attr-defined]
    listed = {c.path.split("/")[2] for c in fleet.emulator.control.calls("arm.list_accounts") if c.status == 200}
    assert listed == {fleet.emulator.subscription_id, SUB2}


def test_an_unmanaged_account_near_its_versions_expiry_pages_and_a_listed_one_that_left_is_drift(
    fleet: Fleet, unmanaged: AccountRef, caplog: pytest.LogCaptureFixture
) -> None:
    fleet.vault.update_key(KEY, fleet.initial_version, exp=datetime.now(UTC) + timedelta(days=3, hours=1))
    moved = fleet.emulator.arm.account("rg-ai", ACCOUNT_NAMES[2])
    fleet.repoint(ACCOUNT_NAMES[2], OTHER_KEY, fleet.bystander_version)

    with caplog.at_level(logging.INFO, logger="rotation"):
        fleet.host.fire_timer("rotation_sweep")

    [page] = records(caplog, Event.UNMANAGED_EXPIRY_NEAR)
    assert (page.account, page.version, page.days, page.levelno) == (  # type: ignore[attr-defined]
        unmanaged.id,
        fleet.initial_version,
        3,
        logging.ERROR,
    )
    assert "ROTATION_UNMANAGED=enrol" in page.getMessage()
    [drift] = records(caplog, Event.DRIFT_FOUND)
    assert drift.left == 1 and f"listed but no longer on the key: {moved['id']}" in drift.getMessage()  # type: ignore[attr-defined]


def test_under_enrol_the_sweep_rotates_the_unmanaged_account_with_the_listed_ones(
    fleet: Fleet, unmanaged: AccountRef, caplog: pytest.LogCaptureFixture
) -> None:
    app = with_settings(fleet, ROTATION_UNMANAGED="enrol")

    with caplog.at_level(logging.INFO, logger="rotation"):
        fleet.host.fire_timer("rotation_sweep")
        assert fleet.pump() == 1

    (new,) = fleet.new_versions()
    fleet.assert_converged(new)
    assert unmanaged_version(fleet) == new
    [row] = app.ledger.list_requests()
    assert row.status == "succeeded" and unmanaged.id in row.accounts and len(row.accounts) == 4
    assert records(caplog, Event.UNMANAGED_EXPIRY_NEAR) == []
