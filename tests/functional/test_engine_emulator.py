"""The engine with the real adapters: azure-keyvault-keys and azure-mgmt-cognitiveservices over HTTPS to the emulator.

What it shows, each against the emulator's own record of what happened (its key versions, its accounts and its call
log): a due key gets exactly one new version and every account is verified on it; running again, or the same request
twice, creates nothing; a crash between the create and the repoint is healed by the next run without a second version;
409 conflicts, 429s (Retry-After honoured) and a lingering "Accepted" are ridden out; 403 and 404 fail fast with clear
messages; an account on another vault's key, and one outside the targets, are never written.

Step retries use tiny waits (the engine's ``RetrySettings``), so only the two Retry-After tests wait, one second each.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import requests

from emulator.control import FaultRule
from emulator.core import Emulator
from rotation.config import Settings
from rotation.connection import AzureConnection
from rotation.engine import RetrySettings, RotationEngine
from rotation.errors import PermissionDenied
from rotation.model import (
    TAG_APP,
    TAG_REQUEST_ID,
    TAG_TRIGGER,
    AccountAction,
    AccountRef,
    KeyRef,
    RotationOutcome,
    RotationRequest,
    Status,
    Trigger,
)
from rotation.reasons import Reason

APP = "rotation-test"
IDENTITY = "rotation-app"  # the emulator credential's default identity
FAST = RetrySettings(
    attempts=4,
    step_timeout=timedelta(seconds=20),
    wait_initial=timedelta(milliseconds=10),
    wait_max=timedelta(milliseconds=50),
    poll_initial=timedelta(milliseconds=10),
    poll_max=timedelta(milliseconds=50),
)
UPDATE = "arm.update_account"
GET_ACCOUNT = "arm.get_account"
CREATE = "keyvault.create_key"
CONFLICT = {"error": {"code": "RequestConflict", "message": "Another operation is in progress on the account."}}


def encryption(vault_url: str, version: str, key_name: str = "cmk") -> dict[str, Any]:
    return {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyVaultUri": vault_url, "keyName": key_name, "keyVersion": version},
    }


@dataclass
class Scene:
    """One vault with key ``cmk`` (first version due in 10 days) and accounts that use it, as seeded in the emulator."""

    emulator: Emulator
    vault: Any
    key: KeyRef
    first: str
    accounts: list[AccountRef]

    def engine(self, accounts: Sequence[AccountRef] | None = None, *, key: KeyRef | None = None) -> RotationEngine:
        targets = [
            {"key": (key or self.key).id, "accounts": [a.id for a in (self.accounts if accounts is None else accounts)]}
        ]
        settings = Settings.from_env(
            {"ROTATION_TARGETS": json.dumps(targets), "ROTATION_APP_NAME": APP, "ROTATION_VERIFY_TIMEOUT": "PT20S"}
        )
        connection = self.connection()
        return RotationEngine(
            connection.key_vault(), connection.accounts(), settings, clock=self.emulator.clock.now, retry=FAST
        )

    def connection(self, **client_options: Any) -> AzureConnection:
        return AzureConnection(
            self.emulator.credential(),
            arm_endpoint=self.emulator.arm_url,
            ca_bundle=self.emulator.ca_bundle,
            verify_challenge_resource=False,
            polling_interval=0.05,
            client_options=client_options,
        )

    def reconcile(
        self,
        request_id: str | None = None,
        *,
        trigger: Trigger = Trigger.TIMER,
        force: bool = False,
        engine: RotationEngine | None = None,
    ) -> RotationOutcome:
        request = RotationRequest(request_id or str(uuid.uuid4()), self.key, trigger, force=force)
        return (engine or self.engine()).reconcile(request)

    def add_account(self, name: str, **seed: Any) -> AccountRef:
        seed.setdefault("encryption", encryption(self.vault.url, self.first))
        body = self.emulator.arm.add_account(name, **seed)
        return AccountRef.parse(body["id"])

    def versions(self) -> list[str]:
        return [record.version for record in self.vault.versions("cmk")]

    def key_version(self, account: AccountRef) -> str:
        body = self.emulator.arm.account(account.resource_group, account.name)
        return str(body["properties"]["encryption"]["keyVaultProperties"]["keyVersion"])

    def state(self, account: AccountRef) -> str:
        return str(self.emulator.arm.account(account.resource_group, account.name)["properties"]["provisioningState"])

    def vault_statuses(self) -> list[int]:
        """The statuses of every Key Vault call, challenges left out."""
        return [
            call.status for call in self.emulator.control.calls() if call.service == "keyvault" and call.status != 401
        ]

    def statuses(self, operation: str, account: AccountRef | None = None) -> list[int]:
        """The HTTP statuses the emulator answered for ``operation`` (on ``account``), challenges left out."""
        return [
            call.status
            for call in self.emulator.control.calls(operation)
            if call.status != 401 and (account is None or call.path.endswith(f"/accounts/{account.name}"))
        ]


@pytest.fixture
def scene(emulator: Emulator) -> Scene:
    vault = emulator.add_vault("kv-rotation")
    first = vault.create_key("cmk", exp=emulator.clock.now() + timedelta(days=10), key_ops=["wrapKey", "unwrapKey"])
    key = KeyRef.parse(f"{vault.url}/keys/cmk")
    made = Scene(emulator, vault, key, first.version, [])
    made.accounts = [made.add_account(f"aoai-{i}") for i in (1, 2, 3)]
    return made


def test_a_due_key_gets_exactly_one_version_and_every_account_is_verified_on_it(scene: Scene) -> None:
    outcome = scene.reconcile("req-due")

    assert outcome.status is Status.SUCCEEDED and outcome.reason is Reason.EXPIRING and outcome.created
    assert scene.statuses(CREATE) == [200]
    versions = scene.versions()
    assert len(versions) == 2 and versions[0] == scene.first
    new = scene.vault.versions("cmk")[-1]
    assert outcome.from_version == scene.first and outcome.to_version == new.version
    assert new.tags == {
        TAG_REQUEST_ID: "req-due",
        TAG_TRIGGER: "timer",
        TAG_APP: APP,
        "rotation-reason": "Expiring",
    }
    assert (new.kty, new.size, list(new.key_ops)) == ("RSA", 2048, ["wrapKey", "unwrapKey"])
    lifetime = timedelta(seconds=new.exp - new.created)
    assert timedelta(days=120) - timedelta(seconds=5) <= lifetime <= timedelta(days=120)
    for account in scene.accounts:
        assert (scene.key_version(account), scene.state(account)) == (new.version, "Succeeded")
        assert scene.statuses(UPDATE, account) == [202]
    assert [(r.status, r.action, r.to_version) for r in outcome.accounts] == [
        (Status.SUCCEEDED, AccountAction.REPOINT, new.version)
    ] * 3


def test_running_again_or_repeating_the_request_creates_nothing(scene: Scene) -> None:
    engine = scene.engine()
    first = scene.reconcile("req-1", engine=engine)
    assert first.status is Status.SUCCEEDED
    scene.emulator.control.reset_calls()

    again = scene.reconcile("req-2", engine=engine)
    repeated = scene.reconcile("req-1", engine=engine)
    by_event = scene.reconcile(trigger=Trigger.KEY_NEW_VERSION_CREATED, engine=engine)

    assert again.status is Status.SKIPPED and again.reason is Reason.UP_TO_DATE and not again.created
    assert repeated.reason is Reason.EXPIRING and repeated.to_version == first.to_version  # adopted, not re-created
    assert by_event.reason is Reason.UP_TO_DATE
    assert scene.statuses(CREATE) == [] and scene.statuses(UPDATE) == []
    assert len(scene.versions()) == 2
    for outcome in (again, repeated, by_event):
        assert {(r.action, r.status) for r in outcome.accounts} == {(AccountAction.LEAVE, Status.SKIPPED)}


def test_a_key_new_version_created_event_never_creates_a_version_even_when_due(scene: Scene) -> None:
    outcome = scene.reconcile(trigger=Trigger.KEY_NEW_VERSION_CREATED)

    assert outcome.reason is Reason.NO_TARGET_VERSION and not outcome.created
    assert scene.versions() == [scene.first] and scene.statuses(CREATE) == [] and scene.statuses(UPDATE) == []


@pytest.mark.parametrize("next_run", ["queue retry, same request", "timer sweep, new request"])
def test_a_crash_after_the_create_is_healed_by_the_next_run_without_a_second_version(
    scene: Scene, next_run: str
) -> None:
    # Every account update is refused while the "crashing" run is on: it ends after the create, before any repoint.
    scene.emulator.control.add_fault(FaultRule(operation=UPDATE, status=409, times=None, body=CONFLICT))
    crashed = scene.reconcile("req-crash")
    assert crashed.status is Status.FAILED and crashed.created and crashed.retryable
    assert all(scene.key_version(a) == scene.first for a in scene.accounts)
    assert len(scene.versions()) == 2
    scene.emulator.control.clear_faults()

    healed = scene.reconcile("req-crash" if next_run.startswith("queue") else "req-sweep")

    assert healed.status is Status.SUCCEEDED and healed.to_version == crashed.to_version
    assert scene.versions() == [scene.first, crashed.to_version]
    assert scene.statuses(CREATE) == [200]
    assert all(scene.key_version(a) == crashed.to_version and scene.state(a) == "Succeeded" for a in scene.accounts)


def test_a_version_created_just_before_a_crash_is_adopted_not_created_again(scene: Scene) -> None:
    # The state a worker leaves when it dies right after the create: a version tagged with its request id.
    request = RotationRequest("req-died", scene.key, Trigger.KEY_NEAR_EXPIRY)
    plan = scene.engine().dry_run(request)
    assert plan.create is not None
    orphan = (
        scene.connection()
        .key_vault()
        .create_version(
            scene.key,
            kty=plan.create.kty,
            key_ops=plan.create.key_ops,
            expires_on=plan.create.expires_on,
            tags=plan.create.tags,
        )
    )
    scene.emulator.control.reset_calls()

    outcome = scene.engine().reconcile(request)  # the queue delivers the same request again

    assert outcome.status is Status.SUCCEEDED and outcome.to_version == orphan.version
    assert outcome.reason is Reason.EXPIRING  # the reason the orphan was created for, from its tags
    assert scene.statuses(CREATE) == [] and scene.versions() == [scene.first, orphan.version]
    assert all(scene.key_version(a) == orphan.version for a in scene.accounts)


def test_a_create_answered_after_the_client_gave_up_is_awaited_and_adopted_not_repeated(scene: Scene) -> None:
    # Key Vault carries the create out 1.5 s after it arrives; the client stops waiting for the answer after 1 s.
    scene.emulator.control.set_latency(CREATE, 1.5)
    connection = scene.connection(read_timeout=1)
    settings = Settings.from_env(
        {"ROTATION_TARGETS": json.dumps([{"key": scene.key.id, "accounts": [a.id for a in scene.accounts]}])}
    )
    engine = RotationEngine(
        connection.key_vault(), connection.accounts(), settings, clock=scene.emulator.clock.now, retry=FAST
    )

    outcome = scene.reconcile("req-late", engine=engine)
    time.sleep(1.6)  # a second create, had one been sent, would land by now

    assert len(scene.statuses(CREATE)) == 1  # sent once: its version was awaited, not created again
    assert len(scene.versions()) == 2
    assert (outcome.status, outcome.created, outcome.to_version) == (Status.SUCCEEDED, True, scene.versions()[-1])
    assert {scene.key_version(a) for a in scene.accounts} == {outcome.to_version}


def test_409_conflicts_are_ridden_out(scene: Scene) -> None:
    scene.emulator.control.add_fault(FaultRule(operation=UPDATE, status=409, times=2, body=CONFLICT))
    account = scene.accounts[0]

    outcome = scene.reconcile(engine=scene.engine([account]))

    assert outcome.status is Status.SUCCEEDED
    assert scene.statuses(UPDATE, account) == [409, 409, 202]
    assert scene.key_version(account) == outcome.to_version


def test_a_throttled_create_waits_for_retry_after_and_still_makes_one_version(scene: Scene) -> None:
    scene.emulator.control.add_fault(FaultRule(operation=CREATE, status=429, retry_after=1, times=1))

    outcome = scene.reconcile(engine=scene.engine(scene.accounts[:1]))

    assert outcome.status is Status.SUCCEEDED
    creates = [c for c in scene.emulator.control.calls(CREATE) if c.status != 401]
    assert [c.status for c in creates] == [429, 200]
    assert (creates[1].at - creates[0].at) >= timedelta(seconds=0.95)
    assert len(scene.versions()) == 2


def test_a_throttled_account_update_waits_for_retry_after(scene: Scene) -> None:
    scene.emulator.control.add_fault(FaultRule(operation=UPDATE, status=429, retry_after=1, times=1))
    account = scene.accounts[0]

    outcome = scene.reconcile(engine=scene.engine([account]))

    assert outcome.status is Status.SUCCEEDED
    updates = [c for c in scene.emulator.control.calls(UPDATE) if c.status != 401]
    assert [c.status for c in updates] == [429, 202]
    assert (updates[1].at - updates[0].at) >= timedelta(seconds=0.95)


def test_a_refused_operation_status_poll_is_verified_by_reading_the_account(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    """ARM authorises the status URL at subscription scope; a role on the account alone may not cover it."""
    forbidden = {"error": {"code": "AuthorizationFailed", "message": "no .../locations/operationResults/read"}}
    scene.emulator.control.add_fault(
        FaultRule(operation="arm.operation_status", status=403, times=None, body=forbidden)
    )
    account = scene.accounts[0]

    with caplog.at_level(logging.WARNING, logger="rotation"):
        outcome = scene.reconcile(engine=scene.engine([account]))

    assert outcome.status is Status.SUCCEEDED
    assert scene.key_version(account) == outcome.to_version and scene.state(account) == "Succeeded"
    assert scene.statuses("arm.operation_status") == [403]
    assert scene.statuses(UPDATE, account) == [202]  # not sent again
    assert [getattr(r, "event", None) for r in caplog.records].count("rotation.operation_status_forbidden") == 1


def test_a_slow_operation_and_a_lingering_accepted_are_waited_out(scene: Scene) -> None:
    scene.emulator.arm.configure(lro_polls=3, linger_accepted_reads=3)
    account = scene.accounts[0]

    outcome = scene.reconcile(engine=scene.engine([account]))

    assert outcome.status is Status.SUCCEEDED
    assert scene.key_version(account) == outcome.to_version and scene.state(account) == "Succeeded"
    assert scene.statuses("arm.operation_status") == [200] * 4  # three InProgress polls, then Succeeded
    # gather read it once; after the update, three reads still said "Accepted" before one said "Succeeded".
    assert len(scene.statuses(GET_ACCOUNT, account)) >= 1 + 3 + 1


def test_a_vault_that_refuses_the_identity_fails_fast_with_the_missing_permission(scene: Scene) -> None:
    scene.vault.deny(IDENTITY)

    with pytest.raises(PermissionDenied, match=r"keys/list and keys/get on vault https://127\.0\.0\.1:\d+ \(403"):
        scene.reconcile()

    assert scene.vault_statuses() == [403]  # one call: no retries
    assert scene.statuses(UPDATE) == []


def test_arm_refusing_the_update_fails_each_account_fast_and_names_the_permission(scene: Scene) -> None:
    scene.emulator.arm.deny(IDENTITY, "write")

    outcome = scene.reconcile()

    assert outcome.status is Status.FAILED and not outcome.retryable
    for result, account in zip(outcome.accounts, scene.accounts, strict=True):
        assert result.status is Status.FAILED and result.reason is Reason.PERMISSION_DENIED
        assert "Microsoft.CognitiveServices/accounts/write" in (result.error or "")
        assert scene.statuses(UPDATE, account) == [403]
        assert scene.key_version(account) == scene.first


def test_an_account_that_does_not_exist_fails_fast_and_the_others_still_rotate(scene: Scene) -> None:
    ghost = AccountRef(scene.accounts[0].subscription_id, "rg-ai", "aoai-ghost")

    outcome = scene.reconcile(engine=scene.engine([*scene.accounts[:1], ghost]))

    assert outcome.status is Status.FAILED
    ok, missing = outcome.accounts
    assert ok.status is Status.SUCCEEDED and scene.key_version(scene.accounts[0]) == outcome.to_version
    assert missing.status is Status.FAILED and missing.reason is Reason.ACCOUNT_UNREADABLE
    assert "aoai-ghost" in (missing.error or "") and "was not found" in (missing.error or "")
    assert scene.statuses(GET_ACCOUNT, ghost) == [404]
    assert scene.statuses(UPDATE, ghost) == []


def test_a_key_that_does_not_exist_blocks_without_creating_it(scene: Scene) -> None:
    absent = KeyRef(scene.key.vault_url, "absent")
    request = RotationRequest("req-absent", absent, Trigger.TIMER)

    outcome = scene.engine(key=absent).reconcile(request)

    assert outcome.status is Status.FAILED and outcome.reason is Reason.KEY_NOT_FOUND
    assert f"key {absent.id} has no versions" in (outcome.error or "")
    # Two reads, the current version's and the listing (a 404 for either), and nothing else: no retries, no create.
    assert scene.vault_statuses() == [404, 404]
    assert scene.statuses(UPDATE) == []


def test_accounts_on_another_vault_or_outside_the_targets_are_never_written(scene: Scene) -> None:
    other_vault = scene.emulator.add_vault("kv-elsewhere")
    other_first = other_vault.create_key("cmk", exp=scene.emulator.clock.now() + timedelta(days=10)).version
    elsewhere = scene.add_account("aoai-elsewhere", encryption=encryption(other_vault.url, other_first))
    outsider = scene.add_account("aoai-outsider")  # uses the target key, but is not listed
    listed = scene.accounts[0]

    outcome = scene.reconcile(engine=scene.engine([listed, elsewhere]))

    results = {r.account: r for r in outcome.accounts}
    assert results[listed].status is Status.SUCCEEDED
    assert results[elsewhere].status is Status.FAILED and results[elsewhere].reason is Reason.ACCOUNT_USES_OTHER_KEY
    assert outsider not in results
    assert scene.statuses(UPDATE, elsewhere) == [] and scene.statuses(UPDATE, outsider) == []
    assert scene.key_version(elsewhere) == other_first and scene.key_version(outsider) == scene.first
    assert [r.version for r in other_vault.versions("cmk")] == [other_first]


# --- disabled versions: Key Vault refuses to return them --------------------------------------------------------------


def test_a_disabled_newest_version_is_replaced_and_accounts_follow(scene: Scene) -> None:
    fresh = scene.vault.create_key("cmk", exp=scene.emulator.clock.now() + timedelta(days=90))
    scene.vault.update_key("cmk", fresh.version, enabled=False)  # someone disables the newest version

    outcome = scene.reconcile()

    assert (outcome.status, outcome.reason) == (Status.SUCCEEDED, Reason.CURRENT_DISABLED)
    assert len(scene.versions()) == 3 and outcome.to_version == scene.versions()[-1]
    assert {scene.key_version(a) for a in scene.accounts} == {outcome.to_version}


def pair_in_one_second(vault: Any, name: str) -> tuple[Any, Any]:
    """Two versions whose ``created`` second is the same (Key Vault's timestamps have whole seconds)."""
    for _ in range(5):
        first, second = vault.create_key(name), vault.create_key(name)
        if first.created == second.created:
            return first, second
    raise AssertionError("could not create two versions within one second")


def test_versions_created_in_one_second_are_ordered_by_key_vaults_current_version(scene: Scene) -> None:
    first, second = pair_in_one_second(scene.vault, "tied")
    tied = KeyRef.parse(f"{scene.vault.url}/keys/tied")

    listed = scene.connection().key_vault().list_versions(tied)

    # An earlier try of pair_in_one_second may have left a third version in that second: Key Vault's current is last.
    order = [v.version for v in listed]
    assert order[-1] == second.version and order.index(first.version) < order.index(second.version)
    assert [v.version for v in listed if v.latest] == [second.version]


def test_a_tie_whose_current_version_is_disabled_still_lists(scene: Scene) -> None:
    _, second = pair_in_one_second(scene.vault, "tied")
    scene.vault.update_key("tied", second.version, enabled=False)
    tied = KeyRef.parse(f"{scene.vault.url}/keys/tied")

    listed = scene.connection().key_vault().list_versions(tied)

    assert [v.version for v in listed if v.latest] == [second.version]  # the refusal itself names the disabled one
    assert {v.version: v.enabled for v in listed}[second.version] is False


# --- flat in versions: a key's history costs nothing -----------------------------------------------------------------


@pytest.mark.parametrize("older", [5, 500])
def test_a_healthy_keys_decision_reads_one_version_however_long_its_history(scene: Scene, older: int) -> None:
    """500 versions are 20 list pages and, read one by one, 500 key reads: the decision needs neither."""
    name = f"history-{older}"
    for _ in range(older):
        scene.vault.create_key(name, exp=scene.emulator.clock.now() + timedelta(days=20))  # all due
    scene.vault.create_key(name, exp=scene.emulator.clock.now() + timedelta(days=90))  # current, not due
    key = KeyRef.parse(f"{scene.vault.url}/keys/{name}")
    scene.emulator.control.reset_calls()

    plan = scene.engine(key=key).dry_run(RotationRequest(f"req-{older}", key, Trigger.TIMER))

    assert plan.create is None and plan.target_version == scene.vault.versions(name)[-1].version
    # Key Vault's challenge (a 401) comes first unless the SDK's process-wide challenge cache already holds one for
    # this host and port (an earlier emulator in this process may have had the same port).
    calls = [(c.operation, c.status) for c in scene.emulator.control.calls() if c.service == "keyvault"]
    assert [call for call in calls if call[1] != 401] == [("keyvault.get_key", 200)]


# --- ARM calls per account -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("linger", [0, 2])
def test_an_update_reads_the_account_back_only_through_the_pollers_final_get(scene: Scene, linger: int) -> None:
    """Per account: the gather's read (fresh, so no second read before the PATCH: see the architecture), the PATCH,
    the status polls ARM asks for, and the poller's own final GET, which the update returns. Only when "Accepted"
    lingers after the operation (Azure's observed behaviour) does the verify step read again, until it leaves
    "Accepted"."""
    scene.emulator.arm.configure(linger_accepted_reads=linger, lro_polls=1)
    (account, *_) = scene.accounts
    scene.emulator.control.reset_calls()

    outcome = scene.engine([account]).reconcile(RotationRequest("req-calls", scene.key, Trigger.TIMER))

    assert outcome.status is Status.SUCCEEDED
    arm = [c.operation for c in scene.emulator.control.calls() if c.service == "arm" and c.status != 401]
    polls = ("arm.operation_status", "arm.operation_result")
    assert sum(op in polls for op in arm) == 2  # one "InProgress" (lro_polls=1), then the one that ends it
    reads_after = [GET_ACCOUNT] * (1 + linger)  # the poller's final GET, then the verify's while "Accepted" lingers
    assert [op for op in arm if op not in polls] == [GET_ACCOUNT, UPDATE, *reads_after]


def test_requests_wait_for_arms_budget_instead_of_running_into_its_throttle(scene: Scene) -> None:
    """ARM's read bucket nearly spent (by someone else): the rotation's reads are paced by the budget the answers
    report, one refill interval apart, and none is throttled. Sent as fast as they come, a third of them would be."""
    accounts = [scene.add_account(f"paced-{i:02}") for i in range(10)]
    scene.emulator.arm.configure(linger_accepted_reads=2, lro_polls=1)  # 6 reads per account
    token = scene.emulator.credential().get_token("https://management.azure.com/.default").token
    url = f"{scene.emulator.arm_url}{accounts[0].id}?api-version=2025-09-01"
    remaining = 250
    with requests.Session() as someone_else:
        while remaining > 15:
            answer = someone_else.get(
                url, headers={"Authorization": f"Bearer {token}"}, verify=scene.emulator.ca_bundle, timeout=10
            )
            remaining = int(answer.headers["x-ms-ratelimit-remaining-subscription-reads"])
    scene.emulator.control.reset_calls()

    outcome = scene.reconcile(engine=scene.engine(accounts))

    assert outcome.status is Status.SUCCEEDED and len(outcome.accounts) == 10
    arm = [c for c in scene.emulator.control.calls() if c.service == "arm" and c.status != 401]
    assert len([c for c in arm if c.method == "GET"]) >= 10 * 6 > remaining + 25  # more than the bucket held
    assert [c.status for c in arm if c.status == 429] == []
