"""Drift as a pure function of an observation, its plan and discovery's accounts (rotation/drift.py)."""

from __future__ import annotations

from dataclasses import replace

from rotation.drift import Drift, DriftKind, drift_of, unmanaged_of
from rotation.errors import NotFound
from rotation.model import AccountRef, Observation, Target
from rotation.plan import decide
from tests.unit.factories import AOAI_1, AOAI_2, AOAI_3, DAY, KEY, NOW, OTHER_KEY, RENEWAL, account, observe, version

ELSEWHERE = AccountRef("00000000-0000-0000-0000-000000000002", "rg-team", "aoai-9")
LISTED = Target(KEY, (AOAI_1, AOAI_2, AOAI_3))


def drift(obs: Observation, unmanaged: list[AccountRef] | None = None, *, old_version: str = "v1") -> Drift:
    """``obs``'s drift against the listed target; ``unmanaged`` accounts were found on ``old_version``."""
    found = None if unmanaged is None else [account(a, key_version=old_version) for a in unmanaged]
    return drift_of(LISTED, obs, decide(obs, RENEWAL, app_name="test"), found)


def test_a_converged_key_without_discovery_has_no_drift_and_no_unmanaged_count() -> None:
    obs = observe([version("v1")], [account(a) for a in LISTED.accounts])

    found = drift(obs)

    assert not found.found and found.unmanaged is None and found.summary() == "no drift"
    assert found.counts() == {DriftKind.LEFT: 0, DriftKind.OFF_TARGET: 0}
    assert found.to_dict() == {"target_version": "v1", "unmanaged": None, "left": [], "off_target": []}


def test_each_kind_is_named_with_the_version_and_its_days_to_expiry() -> None:
    versions = [version("v1", created=NOW - 90 * DAY, expires=NOW + 5 * DAY), version("v2", expires=NOW + 100 * DAY)]
    states = [account(AOAI_1, key_version="v2"), account(AOAI_2, key_version="v1"), account(AOAI_3, key=OTHER_KEY)]

    found = drift(observe(versions, states), [ELSEWHERE])

    assert found.target_version == "v2"
    assert found.counts() == {DriftKind.UNMANAGED: 1, DriftKind.LEFT: 1, DriftKind.OFF_TARGET: 2}
    assert found.left == (AOAI_3,)
    assert [(a.account, a.key_version, a.managed, a.days_until_expiry) for a in found.off_target] == [
        (AOAI_2, "v1", True, 5),
        (ELSEWHERE, "v1", False, 5),
    ]
    assert found.expiring(7) == found.unmanaged and found.expiring(5) == ()  # only the unmanaged one pages
    summary = found.summary()
    assert f"not in ROTATION_TARGETS: {ELSEWHERE.id} (on v1, which expires in 5 days)" in summary
    assert f"listed but no longer on the key: {AOAI_3.id}" in summary
    assert f"not on the target version v2: {AOAI_2.id} (on v1, which expires in 5 days)" in summary


def test_while_a_version_is_due_accounts_are_compared_with_the_current_one() -> None:
    versions = [version("v1", created=NOW - 200 * DAY, expires=NOW - 2 * DAY), version("v2", expires=NOW + 10 * DAY)]
    obs = observe(versions, [account(a, key_version="v2") for a in LISTED.accounts])

    found = drift(obs, [ELSEWHERE])  # v2 is due (10 days < 30): the plan creates, so its target is still to come

    assert found.target_version == "v2" and [a.account for a in found.off_target] == [ELSEWHERE]
    assert "expired 2 days ago" in found.summary() and found.expiring(7)[0].days_until_expiry == -2


def test_an_enrolled_accounts_state_is_the_observations_and_an_unreadable_one_is_not_drift() -> None:
    base = observe([version("v1")], [account(AOAI_1), account(AOAI_2)], unreadable={AOAI_3: NotFound("gone")})
    # Enrolled: the gather read the unmanaged account too, and ARM now says it is on v1 (discovery saw v0).
    obs = replace(base, accounts={**base.accounts, ELSEWHERE: account(ELSEWHERE, key_version="v1")})

    found = drift(obs, [ELSEWHERE], old_version="v0")

    assert found.off_target == () and found.left == ()
    assert [(a.account, a.key_version) for a in found.unmanaged or ()] == [(ELSEWHERE, "v1")]


def test_unmanaged_are_the_found_accounts_on_the_key_the_target_does_not_list_compared_without_case() -> None:
    shouted = AccountRef(AOAI_1.subscription_id, "RG-AI", "AOAI-1")
    on_other_key = AccountRef(ELSEWHERE.subscription_id, "rg-team", "aoai-10")
    found = [account(shouted), account(ELSEWHERE), account(on_other_key, key=OTHER_KEY)]

    assert [s.account for s in unmanaged_of(LISTED, found)] == [ELSEWHERE]


def test_a_key_without_versions_has_no_target_to_be_off() -> None:
    found = drift(observe([], [account(a, key_version="v0") for a in LISTED.accounts]), [ELSEWHERE])

    assert found.target_version is None and found.off_target == () and len(found.unmanaged or ()) == 1
