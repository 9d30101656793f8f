"""A staged rollout end to end: ``function_app.py``'s own functions through the real Python worker, against the
emulator's Key Vault and ARM, with Azurite for storage.

The fleet's three accounts roll out one at a time (``wave_size`` 1: the canary, then two waves). The emulator refuses
an account's update when the account's identity has no access to the vault (KeyVaultAccessDenied, as ARM does), which
is how a new version a resource provider cannot use looks. What it shows: a failed canary halts the rollout with
every other account untouched and still working on its version, and the ledger row, the outcome event and the
``rotation.failed`` record say which wave and why; the next request resumes and never repeats a converged wave.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from rotation.app import configure
from rotation.log import Event
from tests.functional.conftest import ACCOUNT_NAMES, Fleet
from tests.functional.wiring import build_app


def staged(fleet: Fleet) -> None:
    """The fleet's app again, its target rolled out one account at a time."""
    targets = [{**fleet.targets[0], "rollout": {"wave_size": 1}}]
    app = build_app(fleet.emulator.endpoints(), fleet.storage, targets, ledger_table=fleet.ledger_table)
    configure(app)
    fleet.app = app


def updates(fleet: Fleet) -> dict[str, int]:
    """The accepted updates (PATCH answered 2xx) of each account."""
    counts = dict.fromkeys(ACCOUNT_NAMES, 0)
    for call in fleet.emulator.control.calls("arm.update_account"):
        name = call.path.rstrip("/").rsplit("/", 1)[-1]
        if 200 <= call.status < 300 and name in counts:
            counts[name] += 1
    return counts


def lock_out(fleet: Fleet, name: str) -> str:
    """Take the account's identity's access to the vault: ARM then refuses to point it at any version of the key."""
    principal = fleet.emulator.arm.identity_principal("rg-ai", name)
    assert principal is not None
    fleet.vault.deny(principal, ["wrapKey"])
    return principal


def submit(fleet: Fleet) -> str:
    answer = fleet.host.http(
        "submit_rotation", "POST", "/api/rotations", body=json.dumps({"key": fleet.key_id}).encode()
    )
    assert answer.status_code == 202, answer.get_body()
    request_id: str = json.loads(answer.get_body())["request_id"]
    return request_id


def test_a_failed_canary_halts_the_rollout_and_a_resumed_one_finishes(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    staged(fleet)
    principal = lock_out(fleet, ACCOUNT_NAMES[0])  # the canary: the first listed account

    with caplog.at_level(logging.INFO, logger="rotation"):
        request_id = submit(fleet)
        assert fleet.pump() == 1

    (new,) = fleet.new_versions()
    row = fleet.row(request_id)
    assert (row.status, row.reason) == ("failed", "HaltedAfterFailure")
    assert row.error is not None and row.error.startswith("the rollout halted after wave 1 of 3 (the canary): ")
    assert "KeyVaultAccessDenied" in row.error
    results = {r["account"].rsplit("/", 1)[-1]: r for r in row.accounts.values()}
    assert [(results[n]["status"], results[n]["reason"], results[n]["wave"]) for n in ACCOUNT_NAMES] == [
        ("failed", "InvalidRequest", 1),
        ("skipped", "HaltedAfterFailure", 2),
        ("skipped", "HaltedAfterFailure", 3),
    ]
    # Nobody was moved: every account still works on the version it had.
    assert fleet.accounts() == dict.fromkeys(ACCOUNT_NAMES, (fleet.initial_version, "Succeeded"))
    assert updates(fleet) == dict.fromkeys(ACCOUNT_NAMES, 0)
    [failed] = [r for r in caplog.records if getattr(r, "event", None) == Event.FAILED]
    assert (failed.reason, failed.halted_after_wave) == ("HaltedAfterFailure", 1)  # type: ignore[attr-defined]
    outcome: dict[str, Any] = fleet.outcome_events()[-1]
    assert (outcome["type"], outcome["data"]["reason"]) == ("CmkRotation.Failed", "HaltedAfterFailure")
    assert "wave 1 of 3 (the canary)" in outcome["data"]["error"]

    fleet.vault.allow(principal)  # the cause is fixed; the next request carries on from Azure's state
    resumed = submit(fleet)
    assert fleet.pump() == 1

    assert fleet.row(resumed).status == "succeeded" and fleet.new_versions() == [new]
    fleet.assert_converged(new)
    assert updates(fleet) == dict.fromkeys(ACCOUNT_NAMES, 1)


def test_a_resumed_rollout_does_not_repeat_the_waves_that_converged(fleet: Fleet) -> None:
    staged(fleet)
    principal = lock_out(fleet, ACCOUNT_NAMES[1])  # wave 2: the canary converges, wave 3 is never reached

    halted = submit(fleet)
    assert fleet.pump() == 1
    (new,) = fleet.new_versions()
    assert fleet.row(halted).reason == "HaltedAfterFailure"
    assert fleet.accounts() == {
        ACCOUNT_NAMES[0]: (new, "Succeeded"),
        ACCOUNT_NAMES[1]: (fleet.initial_version, "Succeeded"),
        ACCOUNT_NAMES[2]: (fleet.initial_version, "Succeeded"),
    }

    fleet.vault.allow(principal)
    fleet.host.fire_timer("rotation_sweep")  # the sweep sees an account behind and enqueues the key
    assert fleet.pump() == 1

    fleet.assert_converged(new)
    assert updates(fleet) == dict.fromkeys(ACCOUNT_NAMES, 1)  # the converged waves were left alone
