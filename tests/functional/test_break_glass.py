"""Break-glass for a compromised version end to end: ``function_app.py``'s own functions through the real Python
worker, against the emulator's Key Vault, ARM and Resource Graph, with Azurite for the ledger.

The fleet's key has one version, which its three listed accounts use; an account that ROTATION_TARGETS does not list
(found by discovery) uses it too. The version is declared compromised. What it shows: the first call answers the plan
and writes nothing; the confirmed call moves every listed account at once (the rollout's waves are not waited for),
names the unlisted one it may not move, and keeps the version enabled for it; once its owner moved it, a second
break-glass disables the version without creating another; with ``accept_breakage`` the version is disabled at once,
naming the account that loses access; under ``ROTATION_UNMANAGED=enrol`` the unlisted account moves with the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from rotation.app import configure
from rotation.log import Event
from tests.function.test_openapi import assert_documented
from tests.functional.conftest import ACCOUNT_NAMES, KEY, Fleet, repoint
from tests.functional.test_rollout import staged, updates
from tests.functional.wiring import build_app

UNLISTED = "openai-unlisted"


def unlisted(fleet: Fleet) -> str:
    """An account on the fleet's version that ROTATION_TARGETS does not list."""
    encryption = {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyName": KEY, "keyVersion": fleet.initial_version, "keyVaultUri": fleet.vault.url},
    }
    account_id: str = fleet.emulator.arm.add_account(UNLISTED, encryption=encryption)["id"]
    return account_id


def post(fleet: Fleet, **body: Any) -> tuple[int, dict[str, Any]]:
    """POST /api/rotations for the fleet's key: the status and the body, which docs/openapi.json describes."""
    answer = fleet.host.http(
        "submit_rotation", "POST", "/api/rotations", body=json.dumps({"key": fleet.key_id, **body}).encode()
    )
    found: dict[str, Any] = assert_documented(answer, "submit_rotation")
    return answer.status_code, found


def break_glass(fleet: Fleet, version: str, **options: Any) -> tuple[dict[str, Any], str]:
    """Both calls: the plan, then its confirmation; the plan and the request id."""
    status, plan = post(fleet, compromised_version=version, **options)
    assert status == 200, plan
    status, accepted = post(fleet, compromised_version=version, confirmation=plan["confirmation"], **options)
    assert status == 202, accepted
    return plan, accepted["request_id"]


def enabled(fleet: Fleet, version: str) -> bool:
    return {r.version: r.enabled for r in fleet.vault.versions(KEY)}[version]


def unlisted_version(fleet: Fleet) -> str:
    encryption = fleet.emulator.arm.account("rg-ai", UNLISTED)["properties"]["encryption"]
    version: str = encryption["keyVaultProperties"]["keyVersion"]
    return version


def test_the_plan_names_every_account_on_the_version_and_writes_nothing(fleet: Fleet) -> None:
    account_id = unlisted(fleet)
    staged(fleet)  # a rollout in waves: break-glass does not wait for them

    status, plan = post(fleet, compromised_version=fleet.initial_version)

    assert status == 200, plan
    assert (plan["compromised_version"], plan["version_enabled"], plan["moves_to"]) == (
        fleet.initial_version,
        True,
        "a new version",
    )
    movable = {a["account"].rsplit("/", 1)[-1]: a["movable"] for a in plan["accounts"]}
    assert movable == {**dict.fromkeys(ACCOUNT_NAMES, True), UNLISTED: False}
    [stranded] = [a for a in plan["accounts"] if not a["movable"]]
    assert stranded["account"] == account_id and "ROTATION_TARGETS does not list it" in stranded["why"]
    assert plan["discovery"]["complete"] is True
    assert plan["version_outlook"].startswith("left enabled: 1 account is on it that the service may not move.")
    # A plan writes nothing: no version, no update, no ledger row, no message.
    assert fleet.new_versions() == [] and updates(fleet) == dict.fromkeys(ACCOUNT_NAMES, 0)
    assert fleet.pump() == 0
    assert fleet.app.ledger.list_requests(limit=5) == []


def test_break_glass_moves_what_it_may_keeps_the_version_for_an_unlisted_account_then_disables_it(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    unlisted(fleet)
    staged(fleet)
    compromised = fleet.initial_version

    with caplog.at_level(logging.INFO, logger="rotation"):
        _, request_id = break_glass(fleet, compromised)
        assert fleet.pump() == 1

    (new,) = fleet.new_versions()
    fleet.assert_converged(new)  # every listed account, in one go despite the waves
    assert unlisted_version(fleet) == compromised  # never touched: not the service's to move
    assert enabled(fleet, compromised)
    row = fleet.row(request_id)
    assert (row.status, row.reason, row.compromised_version) == ("failed", "CompromisedVersionInUse", compromised)
    radius = row.blast_radius
    assert radius["version_state"] == "enabled"
    assert sorted(a.rsplit("/", 1)[-1] for a in radius["moved"]) == sorted(ACCOUNT_NAMES)
    assert [a["account"].rsplit("/", 1)[-1] for a in radius["left"]] == [UNLISTED]
    assert row.error is not None and UNLISTED in row.error and "stays enabled" in row.error
    [failed] = [r for r in caplog.records if getattr(r, "event", None) == Event.FAILED]
    assert failed.reason == "CompromisedVersionInUse"  # type: ignore[attr-defined]
    outcome = fleet.outcome_events()[-1]
    assert (outcome["type"], outcome["data"]["blast_radius"]["version_state"]) == ("CmkRotation.Failed", "enabled")
    answer = fleet.host.http(
        "get_rotation", "GET", f"/api/rotations/{request_id}", route_params={"request_id": request_id}
    )
    assert assert_documented(answer, "get_rotation")["blast_radius"] == radius

    # Its owner moves the unlisted account; a second break-glass finds nobody on the version and disables it.
    repoint(fleet.emulator, fleet.emulator.arm.account_id("rg-ai", UNLISTED), fleet.vault.url, KEY, new)
    plan, second = break_glass(fleet, compromised)
    assert (plan["accounts"], plan["moves_to"]) == ([], new)
    assert plan["version_outlook"] == "disabled once every account on it has moved"
    assert fleet.pump() == 1

    assert fleet.new_versions() == [new]  # the target is newer than the compromised version: nothing is created
    assert not enabled(fleet, compromised)
    row = fleet.row(second)
    assert (row.status, row.reason, row.error) == ("succeeded", "CompromisedVersionDisabled", "")
    assert row.blast_radius["version_state"] == "disabled" and row.blast_radius["left"] == []
    assert updates(fleet) == dict.fromkeys(ACCOUNT_NAMES, 1)  # nothing moved twice


def test_accepting_the_breakage_disables_the_version_and_names_who_loses_access(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    account_id = unlisted(fleet)
    compromised = fleet.initial_version

    with caplog.at_level(logging.INFO, logger="rotation"):
        plan, request_id = break_glass(fleet, compromised, accept_breakage=True)
        assert fleet.pump() == 1

    assert plan["version_outlook"].startswith("disabled once the movable accounts have moved, although 1 account")
    (new,) = fleet.new_versions()
    fleet.assert_converged(new)
    assert not enabled(fleet, compromised) and unlisted_version(fleet) == compromised
    row = fleet.row(request_id)
    assert (row.status, row.reason) == ("succeeded", "CompromisedVersionDisabled")
    assert f"The breakage was accepted: {account_id} (ROTATION_TARGETS does not list it" in (row.error or "")
    [disabled] = [r for r in caplog.records if getattr(r, "event", None) == Event.COMPROMISED_VERSION_DISABLED]
    assert disabled.levelno == logging.ERROR and account_id in disabled.getMessage()


def test_under_enrol_the_unlisted_account_moves_too_and_the_version_is_disabled(fleet: Fleet) -> None:
    account_id = unlisted(fleet)
    fleet.app = build_app(
        fleet.emulator.endpoints(),
        fleet.storage,
        fleet.targets,
        ledger_table=fleet.ledger_table,
        settings={"ROTATION_UNMANAGED": "enrol"},
    )
    configure(fleet.app)

    plan, request_id = break_glass(fleet, fleet.initial_version)
    assert fleet.pump() == 1

    assert [a["movable"] for a in plan["accounts"]] == [True] * 4 and plan["accounts"][-1]["account"] == account_id
    (new,) = fleet.new_versions()
    fleet.assert_converged(new)
    assert unlisted_version(fleet) == new and not enabled(fleet, fleet.initial_version)
    row = fleet.row(request_id)
    assert (row.status, row.reason, len(row.blast_radius["moved"])) == ("succeeded", "CompromisedVersionDisabled", 4)


def test_a_stale_expired_or_foreign_confirmation_is_refused_with_the_fresh_plan(fleet: Fleet) -> None:
    compromised = fleet.initial_version
    status, plan = post(fleet, compromised_version=compromised)
    assert status == 200

    unlisted(fleet)  # the plan changes: an account arrives on the version
    status, refused = post(fleet, compromised_version=compromised, confirmation=plan["confirmation"])
    assert status == 409 and refused["error"]["code"] == "ConfirmationRefused"
    assert "the plan has changed" in refused["error"]["message"]
    assert len(refused["plan"]["accounts"]) == 4

    # A token for another choice (accept_breakage) does not confirm this one.
    status, refused = post(
        fleet, compromised_version=compromised, confirmation=refused["plan"]["confirmation"], accept_breakage=True
    )
    assert status == 409 and refused["error"]["code"] == "ConfirmationRefused"

    issued, digest = refused["plan"]["confirmation"].split(".")
    old = f"{int(issued) - 3600:010d}.{digest}"
    status, refused = post(fleet, compromised_version=compromised, confirmation=old)
    assert status == 409  # its digest no longer matches its time
    assert fleet.new_versions() == [] and fleet.pump() == 0 and fleet.app.ledger.list_requests(limit=5) == []


def test_repeating_the_confirmed_call_is_the_same_request(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    compromised = fleet.initial_version
    _, plan = post(fleet, compromised_version=compromised)
    confirm = {"compromised_version": compromised, "confirmation": plan["confirmation"]}
    with caplog.at_level(logging.INFO, logger="rotation"):
        first = post(fleet, **confirm)
        again = post(fleet, **{**confirm, "compromised_version": compromised.upper()})  # the same version
        assert first[0] == again[0] == 202 and first[1]["request_id"] == again[1]["request_id"]
        assert fleet.pump() >= 1
    (new,) = fleet.new_versions()
    fleet.assert_converged(new)
    assert not enabled(fleet, compromised)
    assert not [r for r in caplog.records if getattr(r, "event", None) == Event.MESSAGE_REJECTED]
    assert post(fleet, **confirm)[1]["status"] == "succeeded"  # answered from its row, once done


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"compromised_version": "not-a-version"}, 400, "InvalidField"),
        ({"compromised_version": "0" * 32}, 404, "VersionNotFound"),
        ({"compromised_version": "{v}", "force": True}, 400, "InvalidField"),
        ({"compromised_version": "{v}", "dry_run": True}, 400, "InvalidField"),
        ({"compromised_version": "{v}", "confirmation": "yes"}, 400, "InvalidConfirmation"),
        ({"accept_breakage": True}, 400, "InvalidField"),
        ({"compromised_version": "{v}", "accept_breakage": "yes"}, 400, "InvalidField"),
    ],
)
def test_bad_break_glass_input_is_refused_and_writes_nothing(
    fleet: Fleet, body: dict[str, Any], status: int, code: str
) -> None:
    body = {
        name: value.format(v=fleet.initial_version) if isinstance(value, str) else value for name, value in body.items()
    }
    got, answer = post(fleet, **body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert fleet.new_versions() == [] and fleet.pump() == 0 and fleet.app.ledger.list_requests(limit=5) == []


@pytest.mark.parametrize("field", ["accept_breakage", "confirmation", "compromised_version"])
def test_a_refused_value_is_never_echoed_with_a_secret_after_an_escaped_character(fleet: Fleet, field: str) -> None:
    body = {"compromised_version": fleet.initial_version, field: "yes\ncode=s3cr3t-value-42"}
    got, answer = post(fleet, **body)
    assert got == 400 and field in answer["error"]["message"], answer
    assert "s3cr3t-value-42" not in answer["error"]["message"]


@pytest.mark.parametrize(
    ("field", "code"), [("compromised_version", "InvalidField"), ("confirmation", "InvalidConfirmation")]
)
def test_a_break_glass_field_sent_as_null_is_refused_not_taken_as_absent(fleet: Fleet, field: str, code: str) -> None:
    got, answer = post(fleet, **{"compromised_version": fleet.initial_version, field: None})
    assert (got, answer["error"]["code"]) == (400, code), answer
    assert fleet.pump() == 0 and fleet.app.ledger.list_requests(limit=5) == []
