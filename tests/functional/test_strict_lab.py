"""The service under the lab's strict defaults (issue 9): each test drives the real engine and adapters over HTTPS
against an emulator that behaves as Azure does where Azure is unkind, and checks the emulator's own record.

- "Act, then fail": Key Vault makes the version, then the answer is a 500 or never arrives. azure-core never retries
  the create (``retry_total=0``), the engine finds the version by its request tag and adopts it: exactly one new
  version, every account on it.
- A partial role (keys list and get, but not create): the rotation fails with the missing permission named, in the
  service's words and Key Vault's, and writes nothing.
- An ARM endpoint of another cloud (its tokens have another audience): every account fails with a message that says
  the endpoint and the identity are in two clouds, not that a role is missing, and no account is written.
- A vault that sends ``KeyNearExpiry`` earlier than ``ROTATION_RENEW_BEFORE`` (its policy's Notify is 45 days): the
  event rotates nothing yet, and the timer sweep rotates once the key is due, well before it expires.
- A key whose versions come from Key Vault's own rotation policy (``new_versions: "key_vault"``): the vault rotates on
  its clock, the service repoints and verifies every account and never creates a version, even when the key is due.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import pytest

from emulator.azurite import Azurite
from emulator.control import FaultRule
from rotation import cli
from rotation.config import Settings
from rotation.engine import RotationEngine
from rotation.errors import PermissionDenied
from rotation.model import TAG_REQUEST_ID, RotationRequest, Status, Trigger
from rotation.reasons import Reason
from tests.functional.test_engine_emulator import APP, CREATE, FAST, IDENTITY, UPDATE, Scene, scene
from tests.functional.wiring import build_app

__all__ = ["scene"]


@pytest.mark.parametrize("lost", ["500", "dropped"], ids=["answer-500", "connection-dropped"])
def test_a_create_that_acts_then_fails_leaves_exactly_one_new_version_adopted(scene: Scene, lost: str) -> None:
    fault = FaultRule(operation=CREATE, act_first=True, status=500, drop=lost == "dropped")
    scene.emulator.control.add_fault(fault)

    outcome = scene.reconcile("req-lost-answer")

    versions = scene.vault.versions("cmk")
    assert [v.version for v in versions[:1]] == [scene.first] and len(versions) == 2, "exactly one new version"
    new = versions[-1]
    assert new.tags[TAG_REQUEST_ID] == "req-lost-answer"
    assert outcome.status is Status.SUCCEEDED and outcome.to_version == new.version
    assert scene.statuses(CREATE) == [0 if lost == "dropped" else 500]  # one create, never retried
    for account in scene.accounts:
        assert (scene.key_version(account), scene.state(account)) == (new.version, "Succeeded")


def test_a_role_that_can_list_and_get_keys_but_not_create_them_fails_naming_the_permission(scene: Scene) -> None:
    scene.vault.deny(IDENTITY, ["create"])

    with pytest.raises(PermissionDenied) as refused:
        scene.reconcile("req-partial-role")

    assert f"lacks keys/create on vault {scene.vault.url}" in str(refused.value)
    assert "does not have keys create permission" in str(refused.value)  # Key Vault's own words, kept
    assert scene.versions() == [scene.first] and scene.statuses(UPDATE) == []
    assert scene.statuses(CREATE) == [403]


def key_vault_engine(scene: Scene) -> RotationEngine:
    """The engine for ``scene``'s key with ``new_versions: "key_vault"``: the vault's policy makes the versions."""
    targets = [{"key": scene.key.id, "accounts": [a.id for a in scene.accounts], "new_versions": "key_vault"}]
    settings = Settings.from_env(
        {"ROTATION_TARGETS": json.dumps(targets), "ROTATION_APP_NAME": APP, "ROTATION_VERIFY_TIMEOUT": "PT20S"}
    )
    connection = scene.connection()
    return RotationEngine(
        connection.key_vault(), connection.accounts(), settings, clock=scene.emulator.clock.now, retry=FAST
    )


def test_a_key_rotated_by_key_vaults_policy_gets_every_account_repointed_and_no_version_of_ours(scene: Scene) -> None:
    engine = key_vault_engine(scene)
    due = engine.reconcile(RotationRequest("req-sweep", scene.key, Trigger.TIMER))  # due in 10 days, by the sweep
    assert due.status is Status.SKIPPED and not due.created and scene.versions() == [scene.first]

    # The team's policy: rotate 12 days before expiry, new versions live 90 days. The vault acts on its own clock.
    scene.vault.set_rotation_policy("cmk", [("Rotate", "timeBeforeExpiry", "P12D")], expiry_time="P90D")
    scene.emulator.clock.advance(timedelta(hours=1))
    rotated = scene.vault.versions("cmk")[-1]
    assert len(scene.vault.versions("cmk")) == 2 and rotated.tags == {}  # made by Key Vault, not by us
    assert any(
        e.event_grid["eventType"] == "Microsoft.KeyVault.KeyNewVersionCreated"
        and e.event_grid["data"]["Version"] == rotated.version
        for e in scene.emulator.eventgrid.published
    )

    outcome = engine.reconcile(RotationRequest("req-event", scene.key, Trigger.KEY_NEW_VERSION_CREATED))

    assert outcome.status is Status.SUCCEEDED and not outcome.created and outcome.to_version == rotated.version
    assert scene.statuses(CREATE) == [] and len(scene.versions()) == 2
    for account in scene.accounts:
        assert (scene.key_version(account), scene.state(account)) == (rotated.version, "Succeeded")


def test_a_forced_rotation_of_a_key_vault_key_is_refused_before_anything_is_written(
    scene: Scene, azurite: Azurite
) -> None:
    """HTTP answers 409 ``ForceNotAllowed`` and writes no ledger row and no message; the CLI exits 2. Both say how to
    rotate such a key (in Key Vault), and neither reaches Key Vault."""
    targets = [{"key": scene.key.id, "accounts": [a.id for a in scene.accounts], "new_versions": "key_vault"}]
    table = f"ledger{uuid.uuid4().hex[:12]}"
    app = build_app(scene.emulator.endpoints(), azurite.connection_string, targets, ledger_table=table)
    scene.emulator.control.reset_calls()

    answer = app.submit(json.dumps({"key": scene.key.id, "force": True}).encode(), "force-kv-1")

    assert answer.status == 409 and answer.body["error"]["code"] == "ForceNotAllowed"
    assert "rotate the key in Key Vault" in answer.body["error"]["message"]
    assert app.ledger.list_requests(scene.key) == []
    assert app.submit(json.dumps({"key": scene.key.id}).encode(), None).status == 202  # without force: accepted
    assert [entry.force for entry in app.ledger.list_requests(scene.key)] == [False]

    err = io.StringIO()
    env = {"ROTATION_TARGETS": json.dumps(targets)}
    code = cli.main(["rotate", "--key", scene.key.id, "--force"], env=env, connection=scene.connection(), err=err)
    assert code == 2 and "--force: new versions of key" in err.getvalue()
    assert scene.vault_statuses() == []


NEAR_EXPIRY = "Microsoft.KeyVault.KeyNearExpiry"


def near_expiry_notices(scene: Scene, version: str) -> list[str]:
    return [
        e.event_grid["eventTime"]
        for e in scene.emulator.eventgrid.published
        if e.event_grid["eventType"] == "Microsoft.KeyVault.KeyNearExpiry"
        and e.event_grid["data"]["Version"] == version
    ]


def test_a_vault_that_notifies_earlier_than_renew_before_still_rotates_in_time(scene: Scene) -> None:
    """The decision (runbook, "When KeyNearExpiry arrives"): the event is a hint, ROTATION_RENEW_BEFORE (30 days)
    decides. A notice 45 days ahead rotates nothing; the sweep rotates at 30 days."""
    clock = scene.emulator.clock
    fresh = scene.vault.create_key("cmk", exp=clock.now() + timedelta(days=60), key_ops=["wrapKey", "unwrapKey"])
    scene.vault.set_rotation_policy("cmk", [("Notify", "timeBeforeExpiry", "P45D")])
    engine = scene.engine()
    assert engine.reconcile(RotationRequest("req-setup", scene.key, Trigger.TIMER)).to_version == fresh.version

    clock.advance(timedelta(days=14))  # 46 days left: no notice yet
    assert near_expiry_notices(scene, fresh.version) == []
    clock.advance(timedelta(days=2))  # 44 days left: Key Vault's notice, 14 days before our renew_before
    assert len(near_expiry_notices(scene, fresh.version)) == 1
    early = engine.reconcile(RotationRequest("req-notice", scene.key, Trigger.KEY_NEAR_EXPIRY))
    assert early.status is Status.SKIPPED and early.reason is Reason.UP_TO_DATE and not early.created

    clock.advance(timedelta(days=15))  # 29 days left: due by ROTATION_RENEW_BEFORE
    swept = engine.reconcile(RotationRequest("req-sweep", scene.key, Trigger.TIMER))
    assert swept.status is Status.SUCCEEDED and swept.reason is Reason.EXPIRING and swept.created
    assert len(scene.versions()) == 3
    for account in scene.accounts:
        assert (scene.key_version(account), scene.state(account)) == (swept.to_version, "Succeeded")


def test_an_arm_of_another_cloud_refuses_the_token_and_the_error_says_so(scene: Scene) -> None:
    """Azure US Government's ARM accepts only its own audience; the app asks for the public cloud's
    (``InvalidAuthenticationTokenAudience``, azure-facts 10.9)."""
    scene.emulator.arm.audiences = ("https://management.usgovcloudapi.net/", "https://management.usgovcloudapi.net")

    outcome = scene.reconcile("req-other-cloud")

    assert outcome.status is Status.FAILED and outcome.error is not None  # the key was due: its new version stays
    assert outcome.error.count("issued for another resource") == 3 and "same Azure cloud" in outcome.error
    assert "InvalidAuthenticationTokenAudience" in outcome.error and "lacks" not in outcome.error
    assert scene.statuses(UPDATE) == []
