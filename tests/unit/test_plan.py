"""decide(): table tests from an Observation to a RotationPlan."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from rotation.model import (
    TAG_APP,
    TAG_REASON,
    TAG_REQUEST_ID,
    TAG_TRIGGER,
    AccountAction,
    AccountPlan,
    Trigger,
    VersionSource,
)
from rotation.plan import decide
from rotation.reasons import Reason
from tests.unit.factories import (
    AOAI_1,
    AOAI_2,
    AOAI_3,
    DAY,
    NOW,
    OTHER_KEY,
    RENEWAL,
    account,
    observe,
    request,
    version,
)

FRESH = version("v1", created=NOW - 10 * DAY, expires=NOW + 100 * DAY)
DUE = version("v1", created=NOW - 100 * DAY, expires=NOW + 20 * DAY)
NEWER = version("v2", created=NOW - DAY, expires=NOW + 119 * DAY)


def actions(plan_accounts: Sequence[AccountPlan]) -> dict[str, tuple[AccountAction, Reason]]:
    return {a.account.name: (a.action, a.reason) for a in plan_accounts}


def test_fresh_key_and_converged_accounts_mean_nothing_to_do() -> None:
    plan = decide(observe([FRESH], [account(AOAI_1), account(AOAI_2)]), RENEWAL, app_name="app")
    assert (plan.reason, plan.create, plan.target_version, plan.blocked) == (Reason.UP_TO_DATE, None, "v1", False)
    assert actions(plan.accounts) == {
        "aoai-1": (AccountAction.LEAVE, Reason.ACCOUNT_UP_TO_DATE),
        "aoai-2": (AccountAction.LEAVE, Reason.ACCOUNT_UP_TO_DATE),
    }


def test_accounts_behind_are_repointed_and_provisioning_ones_waited_for() -> None:
    obs = observe(
        [FRESH, NEWER],
        [
            account(AOAI_1, key_version="v1"),
            account(AOAI_2, key_version="v2", state="Accepted"),
            account(AOAI_3, key_version="v2"),
        ],
    )
    plan = decide(obs, RENEWAL, app_name="app")
    assert (plan.reason, plan.create, plan.target_version) == (Reason.ACCOUNTS_BEHIND, None, "v2")
    assert actions(plan.accounts) == {
        "aoai-1": (AccountAction.REPOINT, Reason.ACCOUNT_BEHIND),
        "aoai-2": (AccountAction.WAIT, Reason.ACCOUNT_PROVISIONING),
        "aoai-3": (AccountAction.LEAVE, Reason.ACCOUNT_UP_TO_DATE),
    }
    assert plan.accounts[0].from_version == "v1"


@pytest.mark.parametrize(
    "trigger", [Trigger.TIMER, Trigger.KEY_NEAR_EXPIRY, Trigger.KEY_EXPIRED, Trigger.HTTP, Trigger.CLI]
)
def test_a_due_key_gets_a_new_version_with_provenance_tags(trigger: Trigger) -> None:
    plan = decide(observe([DUE], [account(AOAI_1)], req=request(trigger, request_id="r-42")), RENEWAL, app_name="app")
    assert plan.reason is Reason.EXPIRING
    assert plan.target_version is None
    assert plan.create is not None
    assert plan.create.kty == "RSA"
    assert plan.create.key_ops == ("wrapKey", "unwrapKey")
    assert plan.create.expires_on == NOW + RENEWAL.key_lifetime
    assert plan.create.tags == {
        TAG_REQUEST_ID: "r-42",
        TAG_TRIGGER: trigger.value,
        TAG_APP: "app",
        TAG_REASON: "Expiring",
    }
    assert actions(plan.accounts) == {"aoai-1": (AccountAction.REPOINT, Reason.ACCOUNT_BEHIND)}


def test_the_new_version_keeps_the_hsm_type_of_the_newest_good_version() -> None:
    hsm = version("v1", created=NOW - 100 * DAY, expires=NOW + 20 * DAY, kty="RSA-HSM")
    plan = decide(observe([hsm], [account()]), RENEWAL, app_name="app")
    assert plan.create is not None and plan.create.kty == "RSA-HSM"


def test_key_new_version_created_never_creates() -> None:
    req = request(Trigger.KEY_NEW_VERSION_CREATED, force=True)
    plan = decide(observe([DUE], [account(AOAI_1)], req=req), RENEWAL, app_name="app")
    assert plan.create is None
    assert (plan.reason, plan.target_version) == (Reason.NO_TARGET_VERSION, None)
    assert "never creates" in plan.message
    assert actions(plan.accounts) == {"aoai-1": (AccountAction.LEAVE, Reason.NO_TARGET_VERSION)}


def test_key_new_version_created_converges_on_a_version_someone_else_created() -> None:
    req = request(Trigger.KEY_NEW_VERSION_CREATED)
    plan = decide(observe([DUE, NEWER], [account(AOAI_1, key_version="v1")], req=req), RENEWAL, app_name="app")
    assert (plan.reason, plan.create, plan.target_version) == (Reason.ACCOUNTS_BEHIND, None, "v2")
    assert actions(plan.accounts) == {"aoai-1": (AccountAction.REPOINT, Reason.ACCOUNT_BEHIND)}


@pytest.mark.parametrize("trigger", [Trigger.TIMER, Trigger.KEY_NEAR_EXPIRY, Trigger.KEY_EXPIRED, Trigger.HTTP])
def test_a_key_whose_versions_come_from_key_vault_is_never_given_one(trigger: Trigger) -> None:
    """new_versions=key_vault: the vault's own rotation policy makes versions; a due key only gets reported."""
    obs = observe(
        [DUE], [account(AOAI_1, key_version="v1")], req=request(trigger), new_versions=VersionSource.KEY_VAULT
    )
    plan = decide(obs, RENEWAL, app_name="app")
    assert (plan.reason, plan.create, plan.target_version) == (Reason.UP_TO_DATE, None, "v1")
    assert "come from Key Vault's rotation policy" in plan.message and "expires" in plan.message


def test_a_key_whose_versions_come_from_key_vault_converges_on_its_newest_usable_version() -> None:
    """The policy's version is the target even when it is due by ROTATION_RENEW_BEFORE (its timing is the vault's)."""
    short = version("v2", created=NOW - DAY, expires=NOW + 25 * DAY)  # due by RENEWAL's 30 days
    obs = observe([DUE, short], [account(AOAI_1, key_version="v1")], new_versions=VersionSource.KEY_VAULT)
    plan = decide(obs, RENEWAL, app_name="app")
    assert (plan.reason, plan.create, plan.target_version) == (Reason.ACCOUNTS_BEHIND, None, "v2")
    assert actions(plan.accounts) == {"aoai-1": (AccountAction.REPOINT, Reason.ACCOUNT_BEHIND)}

    expired = version("v1", created=NOW - 200 * DAY, expires=NOW - DAY)
    plan = decide(observe([expired], [account(AOAI_1)], new_versions=VersionSource.KEY_VAULT), RENEWAL, app_name="a")
    assert (plan.reason, plan.create, plan.target_version) == (Reason.NO_TARGET_VERSION, None, None)
    assert "rotate it in Key Vault" in plan.message


def test_force_creates_even_when_fresh() -> None:
    plan = decide(observe([FRESH], [account()], req=request(Trigger.HTTP, force=True)), RENEWAL, app_name="app")
    assert plan.reason is Reason.FORCED
    assert plan.create is not None


def test_a_version_tagged_with_this_request_is_adopted_not_created_again() -> None:
    mine = version("v2", created=NOW - DAY / 24, tags={TAG_REQUEST_ID: "req-1", TAG_REASON: "Forced"})
    plan = decide(
        observe([FRESH, mine], [account(key_version="v1")], req=request(Trigger.HTTP, force=True)),
        RENEWAL,
        app_name="app",
    )
    assert (plan.create, plan.adopted, plan.reason, plan.target_version) == (None, True, Reason.FORCED, "v2")
    assert actions(plan.accounts) == {"aoai-1": (AccountAction.REPOINT, Reason.ACCOUNT_BEHIND)}


def test_a_tagged_version_that_is_no_longer_usable_is_not_adopted() -> None:
    mine = version("v2", created=NOW - DAY, enabled=False, tags={TAG_REQUEST_ID: "req-1"})
    plan = decide(observe([FRESH, mine], [account()], req=request(Trigger.HTTP)), RENEWAL, app_name="app")
    assert plan.adopted is False
    assert plan.reason is Reason.CURRENT_DISABLED
    assert plan.create is not None


def test_a_tag_from_another_request_is_not_adopted() -> None:
    other = version("v2", created=NOW - DAY, tags={TAG_REQUEST_ID: "req-0"})
    plan = decide(observe([FRESH, other], [account()], req=request(Trigger.HTTP, force=True)), RENEWAL, app_name="app")
    assert (plan.adopted, plan.reason) == (False, Reason.FORCED)


def test_a_blocked_key_plans_nothing() -> None:
    plan = decide(observe([version(recovery_level="Recoverable+Purgeable")], [account()]), RENEWAL, app_name="app")
    assert plan.blocked
    assert (plan.reason, plan.create, plan.target_version) == (Reason.PURGE_PROTECTION_DISABLED, None, None)
    assert actions(plan.accounts) == {"aoai-1": (AccountAction.LEAVE, Reason.PURGE_PROTECTION_DISABLED)}


def test_a_missing_key_plans_nothing() -> None:
    plan = decide(observe([], [account()]), RENEWAL, app_name="app")
    assert (plan.blocked, plan.reason, plan.current_version) == (True, Reason.KEY_NOT_FOUND, None)


def test_a_blocked_account_is_left_alone_while_the_others_proceed() -> None:
    obs = observe([DUE], [account(AOAI_1), account(AOAI_2, key=OTHER_KEY)])
    plan = decide(obs, RENEWAL, app_name="app")
    assert plan.create is not None
    assert not plan.blocked
    assert actions(plan.accounts) == {
        "aoai-1": (AccountAction.REPOINT, Reason.ACCOUNT_BEHIND),
        "aoai-2": (AccountAction.BLOCKED, Reason.ACCOUNT_USES_OTHER_KEY),
    }


def test_accounts_outside_the_target_are_never_planned() -> None:
    obs = observe([FRESH, NEWER], [account(AOAI_1), account(AOAI_2)], targets=[AOAI_1])
    plan = decide(obs, RENEWAL, app_name="app")
    assert [a.account for a in plan.accounts] == [AOAI_1]


def test_warnings_are_carried_and_the_plan_is_json_ready() -> None:
    plan = decide(
        observe([version(expires=None)], [account(location="westus")], vault_location="eastus"), RENEWAL, app_name="app"
    )
    assert [w.reason for w in plan.warnings] == [Reason.CURRENT_HAS_NO_EXPIRY, Reason.REGION_MISMATCH]
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["reason"] == "UpToDate"
    assert data["findings"][1]["account"] == AOAI_1.id
