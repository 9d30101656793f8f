"""Break-glass for a compromised version (rotation/breakglass.py): the plan's token, who is exposed, what becomes of the
version, the blast radius once the accounts moved, and its shape in a ledger row. Pure: observations and plans come
from ``decide``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest

from rotation.breakglass import (
    CONFIRM_WITHIN,
    NOT_OURS,
    TOKEN_PATTERN,
    BlastRadius,
    BreakGlassPlan,
    Census,
    Exposed,
    UnknownVersion,
    blast_radius,
    exposure,
)
from rotation.errors import InvalidInput, NotFound, PermissionDenied
from rotation.model import (
    AccountAction,
    AccountEncryption,
    AccountRef,
    AccountResult,
    KeyVersion,
    Observation,
    RotationRequest,
    Status,
    Trigger,
    UnmanagedPolicy,
    iso,
)
from rotation.plan import decide
from rotation.reasons import Reason
from rotation.storage.ledger import fitted_radius
from tests.unit.factories import AOAI_1, AOAI_2, AOAI_3, DAY, KEY, NOW, RENEWAL, SECOND, account, observe, version

APP = "test-app"
COMPROMISED = "c0" * 16
NEWER = "e1" * 16
OTHER = "a2" * 16
NEW = "f3" * 16  # the version a break-glass rotation moved the accounts to
ELSEWHERE = AccountRef("00000000-0000-0000-0000-000000000002", "rg-b", "aoai-9")  # not in the target's list
SEARCHED = "subscriptions 00000000-0000-0000-0000-000000000001, 00000000-0000-0000-0000-000000000002"
REPORT = UnmanagedPolicy.REPORT


def breakglass(compromised: str = COMPROMISED, *, accept_breakage: bool = False) -> RotationRequest:
    return RotationRequest(
        request_id="req-bg",
        key=KEY,
        trigger=Trigger.HTTP,
        force=True,
        compromised_version=compromised,
        accept_breakage=accept_breakage,
    )


def census(
    *accounts: AccountEncryption, complete: bool = True, unreadable: Iterable[AccountRef] = (), searched: str = SEARCHED
) -> Census:
    return Census(tuple(accounts), complete, searched, tuple(unreadable))


def key_versions(*, newer: bool = False) -> list[KeyVersion]:
    """The compromised version, the key's current one unless ``newer`` adds a usable, not-due version after it."""
    found = [version(OTHER, created=NOW - 200 * DAY, enabled=False), version(COMPROMISED, created=NOW - 40 * DAY)]
    return [*found, version(NEWER, created=NOW - 5 * DAY)] if newer else found


def observed(
    accounts: Iterable[AccountEncryption],
    *,
    req: RotationRequest | None = None,
    newer: bool = False,
    targets: Iterable[AccountRef] | None = None,
    unreadable: dict[AccountRef, NotFound] | None = None,
) -> Observation:
    return observe(key_versions(newer=newer), accounts, req=req or breakglass(), targets=targets, unreadable=unreadable)


def plan_of(obs: Observation, found: Census, *, unmanaged: UnmanagedPolicy = REPORT) -> BreakGlassPlan:
    return exposure(obs, decide(obs, RENEWAL, app_name=APP), found, unmanaged=unmanaged)


def a_plan(*exposed: Exposed, complete: bool = True, accept_breakage: bool = False) -> BreakGlassPlan:
    return BreakGlassPlan(
        KEY,
        COMPROMISED,
        True,
        exposed or (Exposed(AOAI_1, True, "moves to a new version"),),
        census(complete=complete, searched="nothing: discovery is off (ROTATION_DISCOVERY=off)"),
        accept_breakage,
    )


STRANDED = Exposed(ELSEWHERE, False, NOT_OURS)


# --- the confirmation token ---------------------------------------------------------------------------------------


def test_a_token_confirms_its_plan_until_confirm_within_has_passed() -> None:
    plan = a_plan()
    token = plan.token(NOW)

    assert TOKEN_PATTERN.fullmatch(token) is not None
    assert token.startswith(f"{int(NOW.timestamp()):010d}.")
    assert plan.refusal(token, NOW) is None
    assert plan.refusal(token, NOW + CONFIRM_WITHIN) is None
    late = plan.refusal(token, NOW + CONFIRM_WITHIN + SECOND)
    assert late is not None and f"issued at {iso(NOW)} and is valid for {CONFIRM_WITHIN}" in late


def test_a_token_issued_by_a_clock_a_little_ahead_is_accepted_but_not_one_from_the_future() -> None:
    plan = a_plan()

    assert plan.refusal(plan.token(NOW + 60 * SECOND), NOW) is None
    assert plan.refusal(plan.token(NOW + 61 * SECOND), NOW) is not None


def test_the_same_plan_gives_the_same_token_whatever_the_order_of_its_accounts() -> None:
    first, second = Exposed(AOAI_1, True, "moves"), Exposed(AOAI_2, False, "blocked")

    assert a_plan(first, second).token(NOW) == a_plan(second, first).token(NOW)
    assert a_plan(first, second).refusal(a_plan(second, first).token(NOW), NOW) is None


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(a_plan(Exposed(AOAI_1, True, "moves"), Exposed(AOAI_2, True, "moves")), id="another-account"),
        pytest.param(a_plan(Exposed(AOAI_1, False, "blocked")), id="movability"),
        pytest.param(a_plan(Exposed(AOAI_2, True, "moves to a new version")), id="another-account-instead"),
        pytest.param(a_plan(accept_breakage=True), id="accept-breakage"),
        pytest.param(a_plan(complete=False), id="completeness"),
        pytest.param(replace(a_plan(), enabled=False), id="version-state"),
        pytest.param(replace(a_plan(), version=OTHER), id="another-version"),
    ],
)
def test_a_token_is_refused_once_a_fact_of_the_plan_has_changed(changed: BreakGlassPlan) -> None:
    token = a_plan().token(NOW)

    refusal = changed.refusal(token, NOW + SECOND)

    assert refusal is not None and refusal.startswith("the plan has changed since the confirmation was issued")
    assert changed.refusal(changed.token(NOW), NOW + SECOND) is None  # its own token confirms it


@pytest.mark.parametrize(
    "garble",
    [
        pytest.param(lambda token: "", id="empty"),
        pytest.param(lambda token: "yes", id="yes"),
        pytest.param(str.upper, id="upper-case"),
        pytest.param(lambda token: token + "\n", id="trailing-newline"),
        pytest.param(lambda token: " " + token, id="leading-space"),
        pytest.param(lambda token: token[:-1], id="short-digest"),
        pytest.param(lambda token: token + "0", id="long-digest"),
        pytest.param(lambda token: "1" + token, id="eleven-digit-time"),
        pytest.param(lambda token: token.replace(".", ":"), id="other-separator"),
    ],
)
def test_a_malformed_token_is_refused(garble: Callable[[str], str]) -> None:
    plan = a_plan()
    text = garble(plan.token(NOW))

    refusal = plan.refusal(text, NOW)

    assert TOKEN_PATTERN.fullmatch(text) is None
    assert refusal is not None and refusal.startswith("the confirmation is not a token this service issued")


def test_the_plan_as_answered_carries_its_token_and_deadline() -> None:
    plan = a_plan()

    answer = plan.to_dict(at=NOW)

    assert answer["confirmation"] == plan.token(NOW)
    assert answer["confirm_by"] == iso(NOW + CONFIRM_WITHIN)
    assert (answer["compromised_version"], answer["moves_to"]) == (COMPROMISED, "a new version")
    assert answer["version_outlook"] == plan.outlook()
    assert "confirmation" not in plan.to_dict() and "confirm_by" not in plan.to_dict()


# --- exposure: who is on the version, and who may be moved ---------------------------------------------------------


def test_a_listed_account_on_the_version_is_movable_and_one_on_another_version_is_not_exposed() -> None:
    obs = observed(
        [account(AOAI_1, key_version=COMPROMISED), account(AOAI_2, key_version=OTHER)], targets=[AOAI_1, AOAI_2]
    )

    found = plan_of(obs, census())

    assert found.accounts == (Exposed(AOAI_1, True, "moves to a new version"),)
    assert (found.version, found.enabled, found.disables, found.stranded) == (COMPROMISED, True, True, ())


def test_a_blocked_account_on_the_version_is_not_movable_and_says_why() -> None:
    obs = observed([account(AOAI_1, key_version=COMPROMISED), account(AOAI_2, key_version=COMPROMISED, identity=None)])

    found = plan_of(obs, census())

    [blocked] = found.stranded
    assert (blocked.account, blocked.movable) == (AOAI_2, False)
    assert f"account {AOAI_2.id} has no managed identity" in blocked.why
    assert not found.disables


def test_a_listed_account_that_could_not_be_read_may_be_on_the_version() -> None:
    obs = observed(
        [account(AOAI_1, key_version=COMPROMISED)],
        targets=[AOAI_1, AOAI_2],
        unreadable={AOAI_2: NotFound(f"account {AOAI_2.id} was not found")},
    )

    found = plan_of(obs, census())

    assert found.stranded == (
        Exposed(AOAI_2, False, f"could not be read, so it may be on the version (account {AOAI_2.id} was not found)"),
    )


def test_an_unlisted_account_the_discovery_found_on_the_version_is_not_ours_to_move() -> None:
    listed = account(AOAI_1, key_version=COMPROMISED)
    obs = observed([listed], targets=[AOAI_1])
    found_by_discovery = census(
        listed,  # listed: not named twice
        account(ELSEWHERE, key_version=COMPROMISED),
        account(AOAI_2, key_version=OTHER),  # unlisted, on another version: not exposed
    )

    found = plan_of(obs, found_by_discovery)

    assert found.accounts == (Exposed(AOAI_1, True, "moves to a new version"), Exposed(ELSEWHERE, False, NOT_OURS))
    assert not found.disables


def test_accounts_the_discovery_could_not_read_are_named_unless_the_request_rotates_them() -> None:
    obs = observed([account(AOAI_1, key_version=COMPROMISED)], targets=[AOAI_1])

    found = plan_of(obs, census(unreadable=[ELSEWHERE, AOAI_1]))

    assert found.stranded == (Exposed(ELSEWHERE, False, "discovery could not read it, so it may be on the version"),)


def test_a_version_the_key_lacks_is_refused() -> None:
    obs = observed([account(AOAI_1, key_version=COMPROMISED)], req=breakglass("0" * 32))

    with pytest.raises(UnknownVersion, match=f"key {KEY.id} has no version 0{{32}}") as raised:
        plan_of(obs, census())

    assert isinstance(raised.value, InvalidInput)


def test_the_version_is_found_without_case_and_named_as_the_key_names_it() -> None:
    obs = observed([account(AOAI_1, key_version=COMPROMISED)], req=breakglass(COMPROMISED.upper()), targets=[AOAI_1])

    found = plan_of(obs, census())

    assert found.version == COMPROMISED
    assert [e.account for e in found.accounts] == [AOAI_1]


def test_the_accounts_move_to_a_new_version_when_the_compromised_one_is_the_target() -> None:
    obs = observed([account(AOAI_1, key_version=COMPROMISED)], targets=[AOAI_1])

    found = plan_of(obs, census())

    assert found.moves_to is None
    assert found.to_dict(at=NOW)["moves_to"] == "a new version"


def test_the_accounts_move_to_a_newer_usable_target_instead_of_a_new_version() -> None:
    obs = observed([account(AOAI_1, key_version=COMPROMISED), account(AOAI_2, key_version=NEWER)], newer=True)

    found = plan_of(obs, census())

    assert found.moves_to == NEWER
    assert found.accounts == (Exposed(AOAI_1, True, f"moves to {NEWER}"),)


# --- the version's outlook --------------------------------------------------------------------------------------


def test_the_outlook_is_disabling_when_nobody_stays_and_the_discovery_searched_everywhere() -> None:
    plan = a_plan()

    assert plan.outlook() == "disabled once every account on it has moved"
    assert plan.disables


def test_the_outlook_is_enabled_while_an_account_stays_or_the_discovery_is_incomplete() -> None:
    stranded = a_plan(Exposed(AOAI_1, True, "moves"), STRANDED)
    two = a_plan(STRANDED, Exposed(AOAI_2, False, "blocked"))
    blind = a_plan(complete=False)

    assert stranded.outlook() == (
        "left enabled: 1 account is on it that the service may not move. Move them (or accept the breakage), then "
        "break glass again to disable it"
    )
    assert two.outlook().startswith("left enabled: 2 accounts are on it that the service may not move. ")
    assert blind.outlook() == (
        "left enabled: the discovery did not search everywhere, so another account may be on it (nothing: discovery "
        "is off (ROTATION_DISCOVERY=off)). Move them (or accept the breakage), then break glass again to disable it"
    )
    assert not stranded.disables and not two.disables and not blind.disables


def test_the_outlook_says_who_loses_access_when_the_breakage_is_accepted() -> None:
    plan = a_plan(STRANDED, complete=False, accept_breakage=True)

    assert plan.outlook() == (
        "disabled once the movable accounts have moved, although 1 account is on it that the service may not move; "
        "and the discovery did not search everywhere, so another account may be on it (nothing: discovery is off "
        "(ROTATION_DISCOVERY=off)): those lose access to their data"
    )
    assert plan.disables


# --- the blast radius, once the accounts moved ------------------------------------------------------------------


def result(
    ref: AccountRef,
    status: Status,
    from_version: str | None = COMPROMISED,
    reason: Reason = Reason.ACCOUNT_BEHIND,
    error: str | None = None,
) -> AccountResult:
    return AccountResult(ref, AccountAction.REPOINT, status, reason, from_version, NEW, error)


def radius(
    results: Iterable[AccountResult], found: Census | None = None, *, accept_breakage: bool = False
) -> BlastRadius:
    return blast_radius(
        COMPROMISED, tuple(results), found or census(), accept_breakage=accept_breakage, unmanaged=REPORT
    )


def test_the_accounts_that_left_the_version_are_moved_and_then_it_may_be_disabled() -> None:
    moved = radius([result(AOAI_1, Status.SUCCEEDED), result(AOAI_2, Status.SUCCEEDED, from_version=OTHER)])

    assert (moved.moved, moved.left, moved.disables) == ((AOAI_1,), (), True)


def test_an_account_that_failed_to_move_is_left_on_the_version() -> None:
    failed = radius(
        [
            result(AOAI_1, Status.SUCCEEDED),
            result(AOAI_2, Status.FAILED, reason=Reason.PERMISSION_DENIED, error="refused"),
            result(AOAI_3, Status.FAILED, from_version=OTHER, reason=Reason.PERMISSION_DENIED, error="refused"),
        ]
    )

    assert failed.moved == (AOAI_1,)
    assert failed.left == (Exposed(AOAI_2, True, "is still on it: failed (PermissionDenied): refused"),)
    assert not failed.disables
    assert replace(failed, accept_breakage=True).disables


def test_an_account_that_could_not_be_read_may_still_be_on_the_version() -> None:
    unread = radius([result(AOAI_1, Status.FAILED, from_version=None, reason=Reason.ACCOUNT_UNREADABLE, error="404")])

    assert unread.left == (
        Exposed(AOAI_1, True, "may be on the version (it could not be read): failed (AccountUnreadable): 404"),
    )
    assert not unread.disables


def test_accounts_the_discovery_finds_on_the_version_beyond_the_request_are_left() -> None:
    found = census(account(ELSEWHERE, key_version=COMPROMISED), unreadable=[AOAI_3])

    left = radius([result(AOAI_1, Status.SUCCEEDED)], found).left

    assert left == (
        Exposed(ELSEWHERE, False, NOT_OURS),
        Exposed(AOAI_3, False, "discovery could not read it, so it may be on the version"),
    )


def test_under_enrol_an_account_discovered_after_the_rotation_began_is_left_as_not_moved_yet() -> None:
    found = census(account(ELSEWHERE, key_version=COMPROMISED))

    left = blast_radius(COMPROMISED, (), found, accept_breakage=False, unmanaged=UnmanagedPolicy.ENROL).left

    assert left == (Exposed(ELSEWHERE, False, "discovered after the rotation began; not moved yet"),)


def test_an_account_the_request_moved_counts_by_its_result_not_by_a_lagging_discovery() -> None:
    lagging = census(account(AOAI_1, key_version=COMPROMISED))  # Resource Graph has not seen the move yet

    moved = radius([result(AOAI_1, Status.SUCCEEDED)], lagging)

    assert (moved.moved, moved.left, moved.disables) == ((AOAI_1,), (), True)


def test_the_version_is_kept_after_an_incomplete_discovery_unless_the_breakage_is_accepted() -> None:
    blind = census(complete=False, searched="nothing: discovery failed (403)")

    assert not radius([result(AOAI_1, Status.SUCCEEDED)], blind).disables
    assert radius([result(AOAI_1, Status.SUCCEEDED)], blind, accept_breakage=True).disables


def test_the_version_is_matched_without_case() -> None:
    moved = blast_radius(
        COMPROMISED.upper(),
        (result(AOAI_1, Status.SUCCEEDED), result(AOAI_2, Status.SUCCEEDED, from_version=COMPROMISED.upper())),
        census(),
        accept_breakage=False,
        unmanaged=REPORT,
    )

    assert moved.moved == (AOAI_1, AOAI_2)


def test_the_summary_says_what_became_of_the_version() -> None:
    clean = radius([result(AOAI_1, Status.SUCCEEDED)])
    kept = radius([result(AOAI_1, Status.SUCCEEDED)], census(account(ELSEWHERE, key_version=COMPROMISED)))
    broken = replace(
        radius(
            [result(AOAI_1, Status.SUCCEEDED)],
            census(account(ELSEWHERE, key_version=COMPROMISED)),
            accept_breakage=True,
        ),
        disabled=True,
    )
    refused = replace(clean, failure=PermissionDenied("the identity lacks keys/update"))

    assert replace(clean, disabled=True).summary() == (
        f"1 account moved off version {COMPROMISED}; the version is disabled"
    )
    assert kept.summary() == (
        f"1 account moved off version {COMPROMISED}; the version stays enabled: 1 account is still on it: "
        f"{ELSEWHERE.id} ({NOT_OURS})"
    )
    assert broken.summary() == (
        f"1 account moved off version {COMPROMISED}; the version is disabled. The breakage was accepted: "
        f"{ELSEWHERE.id} ({NOT_OURS}) lose access"
    )
    assert refused.summary() == (
        f"1 account moved off version {COMPROMISED}; disabling the version failed, so it is still enabled: "
        "PermissionDenied: the identity lacks keys/update"
    )


def test_the_report_shows_the_version_state_and_a_failed_disable() -> None:
    clean = radius([result(AOAI_1, Status.SUCCEEDED)])
    refused = replace(clean, failure=PermissionDenied("the identity lacks keys/update"))

    assert replace(clean, disabled=True).to_dict() == {
        "compromised_version": COMPROMISED,
        "version_state": "disabled",
        "accept_breakage": False,
        "moved": [AOAI_1.id],
        "left": [],
        "discovery": {"complete": True, "searched": SEARCHED},
        "error": None,
    }
    assert (refused.to_dict()["version_state"], refused.to_dict()["error"]) == (
        "enabled",
        "PermissionDenied: the identity lacks keys/update",
    )


# --- accounts that are not what they seem ----------------------------------------------------------------------


def test_a_listed_account_without_a_customer_managed_key_does_not_keep_the_version() -> None:
    microsoft_keys = account(AOAI_2, key_version=None, key_source="Microsoft.CognitiveServices")
    obs = observed([account(AOAI_1, key_version=COMPROMISED), microsoft_keys], targets=[AOAI_1, AOAI_2])
    plan = decide(obs, RENEWAL, app_name=APP)
    assert exposure(obs, plan, census(), unmanaged=REPORT).accounts == (
        Exposed(AOAI_1, True, "moves to a new version"),
    )
    [blocked] = [p for p in plan.accounts if p.account == AOAI_2]
    # What the engine records for the blocked account: failed, nothing tried, from_version None.
    results = [
        result(AOAI_1, Status.SUCCEEDED),
        AccountResult(
            AOAI_2, blocked.action, Status.FAILED, blocked.reason, blocked.from_version, NEW, blocked.message
        ),
    ]

    after = radius(results)

    assert after.left == ()
    assert after.disables


def test_a_listed_account_the_discovery_spells_in_another_case_is_not_named_twice() -> None:
    listed = account(AOAI_1, key_version=COMPROMISED)
    spelled = AccountRef(AOAI_1.subscription_id, AOAI_1.resource_group.upper(), AOAI_1.name)
    obs = observed([listed], targets=[AOAI_1])

    found = plan_of(obs, census(replace(listed, account=spelled)))

    assert found.accounts == (Exposed(AOAI_1, True, "moves to a new version"),)
    assert found.disables


# --- the report in a ledger row --------------------------------------------------------------------------------------


def test_a_report_that_fits_a_ledger_row_is_kept_whole() -> None:
    report = radius([result(AOAI_1, Status.SUCCEEDED)]).to_dict()
    assert fitted_radius(report, 10_000) == report


def test_a_report_too_long_for_a_ledger_row_keeps_the_accounts_left_first_and_counts_them_all() -> None:
    moved = [
        f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/a{i}" for i in range(50)
    ]
    left = [{"account": f"{account}-left", "movable": False, "why": "x" * 100} for account in moved[:20]]
    report = {**radius([]).to_dict(), "moved": moved, "left": left}

    cut = fitted_radius(report, 3_000)

    assert len(json.dumps(cut, sort_keys=True, separators=(",", ":"))) <= 3_000
    assert (cut["left_total"], cut["moved_total"]) == (20, 50)
    assert cut["left"] == left[: len(cut["left"])] and 0 < len(cut["left"]) < 20  # type: ignore[arg-type]
    kept = cut["moved"]
    assert isinstance(kept, list) and kept == moved[: len(kept)] and len(kept) < len(cut["left"])  # type: ignore[arg-type]
    assert cut["version_state"] == report["version_state"]
