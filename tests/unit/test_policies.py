"""The policy chain at its boundaries, with an injected instant."""

from __future__ import annotations

from datetime import datetime

import pytest

from rotation.model import KeyVersion
from rotation.policies import POLICY_CHAIN, PolicyInput, needs_new_version, select_target
from rotation.reasons import Reason
from tests.unit.factories import DAY, NOW, RENEWAL, SECOND, version

EXP = NOW + 40 * DAY
DUE = EXP - RENEWAL.renew_before  # 10 days from NOW


def reason_at(current: KeyVersion, now: datetime, *, force: bool = False) -> Reason | None:
    hit = needs_new_version(PolicyInput(current, now, RENEWAL, force))
    return hit[0] if hit else None


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (DUE - SECOND, None),
        (DUE, Reason.EXPIRING),
        (DUE + SECOND, Reason.EXPIRING),
        (EXP - SECOND, Reason.EXPIRING),
        (EXP, Reason.EXPIRED),
        (EXP + DAY, Reason.EXPIRED),
    ],
)
def test_expiry_boundaries(now: datetime, expected: Reason | None) -> None:
    assert reason_at(version(expires=EXP, created=NOW - 80 * DAY), now) == expected


def test_no_expiry_is_due_at_created_plus_lifetime_minus_renew_before() -> None:
    created = NOW - 50 * DAY
    due = created + RENEWAL.key_lifetime - RENEWAL.renew_before
    current = version(created=created, expires=None)
    assert reason_at(current, due - SECOND) is None
    assert reason_at(current, due) == Reason.LIFETIME_ELAPSED


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (version(enabled=False), Reason.CURRENT_DISABLED),
        (version(not_before=NOW + SECOND), Reason.CURRENT_NOT_YET_VALID),
        (version(kty="EC"), Reason.CURRENT_WRONG_TYPE),
        (version(kty=None), Reason.CURRENT_WRONG_TYPE),
        (version(kty="oct-HSM"), Reason.CURRENT_WRONG_TYPE),
        (version(size=3072), Reason.CURRENT_WRONG_SIZE),
        (version(size=None), Reason.CURRENT_WRONG_SIZE),
        (version(kty="RSA-HSM"), None),
        (version(not_before=NOW), None),
        (version(), None),
    ],
)
def test_unusable_current_version(current: KeyVersion, expected: Reason | None) -> None:
    assert reason_at(current, NOW) == expected


def test_force_wins_over_everything() -> None:
    assert reason_at(version(), NOW, force=True) == Reason.FORCED
    assert reason_at(version(enabled=False, expires=NOW - DAY), NOW, force=True) == Reason.FORCED


def test_the_chain_order_decides_between_several_problems() -> None:
    # Disabled and expired and the wrong size at once: the first policy in the chain names it.
    assert reason_at(version(enabled=False, expires=NOW - DAY, size=4096), NOW) == Reason.CURRENT_DISABLED
    assert reason_at(version(expires=NOW - DAY, size=4096), NOW) == Reason.EXPIRED
    assert reason_at(version(size=4096, expires=NOW + DAY), NOW) == Reason.CURRENT_WRONG_SIZE
    assert POLICY_CHAIN[0].__name__ == "forced"


def test_messages_name_the_version_and_the_instant() -> None:
    hit = needs_new_version(PolicyInput(version("abc", expires=EXP), DUE, RENEWAL, False))
    assert hit is not None
    assert "abc" in hit[1]
    assert EXP.isoformat().replace("+00:00", "Z") in hit[1]


def test_target_is_the_newest_usable_fresh_version() -> None:
    old = version("old", created=NOW - 30 * DAY, expires=NOW + 90 * DAY)
    new = version("new", created=NOW - DAY, expires=NOW + 119 * DAY)
    newest_disabled = version("off", created=NOW, enabled=False)
    newest_due = version("due", created=NOW - 2 * DAY, expires=NOW + 5 * DAY)
    assert select_target([old, new, newest_disabled, newest_due], NOW, RENEWAL) == new
    assert select_target([old, newest_due], NOW, RENEWAL) == old
    assert select_target([newest_due, newest_disabled], NOW, RENEWAL) is None
    assert select_target([version("big", size=4096)], NOW, RENEWAL) is None
    assert select_target([version("later", not_before=NOW + DAY)], NOW, RENEWAL) is None
