"""Which old versions retirement may disable (rotation/retirement.py): a pure function of a gather and its plan."""

from __future__ import annotations

from rotation.errors import NotFound
from rotation.model import TAG_APP, AccountRef, Retirement
from rotation.plan import decide
from rotation.retirement import Review, Verdict, review
from tests.unit.factories import AOAI_1, AOAI_2, DAY, NOW, RENEWAL, account, observe, version

APP = "test-app"
ELSEWHERE = AccountRef("00000000-0000-0000-0000-000000000002", "rg-b", "aoai-9")
OURS = {TAG_APP: APP}


def versions() -> list:  # type: ignore[type-arg]
    return [
        version("v0", created=NOW - 90 * DAY, tags={TAG_APP: "someone-else"}),
        version("v1", created=NOW - 60 * DAY, tags=OURS),
        version("v2", created=NOW - 30 * DAY, tags=OURS),
        version("v3", created=NOW - 10 * DAY, tags=OURS),  # the target: newest, not due
        version("v4", created=NOW - 70 * DAY, tags=OURS, enabled=False),  # already disabled: not reviewed
    ]


def verdicts(reviews: list[Review]) -> dict[str, Verdict]:
    return {r.version: r.verdict for r in reviews}


def test_only_old_unused_versions_of_this_app_are_retirable_and_one_in_use_is_not() -> None:
    obs = observe(versions(), [account(AOAI_1, key_version="v3"), account(AOAI_2, key_version="v3")])
    plan = decide(obs, RENEWAL, app_name=APP)
    unmanaged = [account(ELSEWHERE, key_version="v2")]

    own = review(obs, plan, unmanaged, mode=Retirement.OWN, app_name=APP)

    assert plan.target_version == "v3"
    assert verdicts(own) == {"v2": Verdict.IN_USE, "v1": Verdict.UNUSED, "v0": Verdict.KEPT}  # newest first
    assert [r.why for r in own] == [
        "1 accounts use it",
        "no account uses it",
        "not created by test-app (ROTATION_RETIREMENT=own)",
    ]
    assert verdicts(review(obs, plan, unmanaged, mode=Retirement.ALL, app_name=APP))["v0"] is Verdict.UNUSED


def test_nothing_is_retired_without_a_complete_view_or_while_the_key_rotates() -> None:
    accounts = [account(AOAI_1, key_version="v3"), account(AOAI_2, key_version="v3")]
    obs = observe(versions(), accounts)
    plan = decide(obs, RENEWAL, app_name=APP)

    blind = review(obs, plan, None, mode=Retirement.OWN, app_name=APP)  # discovery off or incomplete
    assert verdicts(blind) == {"v2": Verdict.UNKNOWN, "v1": Verdict.UNKNOWN, "v0": Verdict.KEPT}

    unread = observe(versions(), accounts[:1], targets=[AOAI_1, AOAI_2], unreadable={AOAI_2: NotFound("gone")})
    unread_plan = decide(unread, RENEWAL, app_name=APP)
    assert set(verdicts(review(unread, unread_plan, [], mode=Retirement.ALL, app_name=APP)).values()) == {
        Verdict.UNKNOWN
    }

    due = [*versions()[:3], version("v3", created=NOW - 10 * DAY, expires=NOW + 5 * DAY, tags=OURS)]
    rotating = observe(due, accounts)
    assert set(
        verdicts(
            review(rotating, decide(rotating, RENEWAL, app_name=APP), [], mode=Retirement.ALL, app_name=APP)
        ).values()
    ) == {Verdict.KEPT}


def test_a_version_is_retired_the_soak_after_the_evidence_began() -> None:
    unused = Review("v1", Verdict.UNUSED, "no account uses it")

    assert unused.retire_at(None, 30 * DAY) is None  # no evidence yet: the next sweep records it
    assert unused.retire_at(NOW, 30 * DAY) == NOW + 30 * DAY
    assert Review("v2", Verdict.IN_USE, "1 accounts use it").retire_at(NOW, 30 * DAY) is None
