"""A break-glass reconcile against the in-memory twins of Key Vault and ARM: every account leaves the compromised
version at once, and the version is disabled only when nobody is (or may be) left on it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from rotation.breakglass import NOT_OURS, Census
from rotation.config import Settings
from rotation.engine import RotationEngine
from rotation.errors import ConflictError, PermissionDenied, TransientError
from rotation.log import LOGGER_NAME, Event
from rotation.model import AccountRef, RotationOutcome, RotationRequest, Status, Trigger
from rotation.reasons import Reason
from tests.doubles import InMemoryAccounts, InMemoryKeyVault
from tests.unit.factories import AOAI_1, AOAI_2, AOAI_3, DAY, KEY, NOW, FixedClock, account
from tests.unit.test_engine import no_backoff  # noqa: F401 - the autouse fixture: retries never sleep

ACCOUNTS = (AOAI_1, AOAI_2, AOAI_3)
COMPROMISED = "c0" * 16
NEWER = "e1" * 16
ELSEWHERE = AccountRef("00000000-0000-0000-0000-000000000002", "rg-b", "aoai-9")  # not in ROTATION_TARGETS
SEARCHED = "tenant"


@dataclass
class World:
    engine: RotationEngine
    vault: InMemoryKeyVault
    accounts: InMemoryAccounts
    censuses: list[Census] = field(default_factory=list)  # every census the engine asked for

    def account_versions(self) -> dict[str, str | None]:
        return {a.name: self.accounts.state(a).key_version for a in ACCOUNTS}

    def enabled(self, version: str) -> bool:
        return {v.version: v.enabled for v in self.vault.versions(KEY)}[version]

    def census(self, *extra: AccountRef, complete: bool = True) -> Callable[[], Census]:
        """A discovery of the key's accounts (the listed ones and ``extra``) as ARM shows them when it runs."""

        def discover() -> Census:
            found = Census(tuple(self.accounts.state(a) for a in (*ACCOUNTS, *extra)), complete, SEARCHED)
            self.censuses.append(found)
            return found

        return discover

    def break_glass(
        self,
        *,
        census: Callable[[], Census] | None,
        accept_breakage: bool = False,
        compromised: str = COMPROMISED,
        request_id: str = "bg-1",
    ) -> RotationOutcome:
        request = RotationRequest(
            request_id=request_id,
            key=KEY,
            trigger=Trigger.HTTP,
            force=True,
            compromised_version=compromised,
            accept_breakage=accept_breakage,
        )
        return self.engine.reconcile(request, census=census)


def make_world(*, rollout: Mapping[str, object] | None = None, update_seconds: float = 0.0) -> World:
    """The key's one version, fresh (not due), is the compromised one; the three listed accounts use it."""
    clock = FixedClock()
    vault = InMemoryKeyVault(clock)
    vault.add_version(KEY, version=COMPROMISED, created_on=NOW - 100 * DAY, expires_on=NOW + 100 * DAY)
    accounts = InMemoryAccounts(vault, update_seconds=update_seconds)
    for ref in ACCOUNTS:
        accounts.add(account(ref, key_version=COMPROMISED))
    item = {"key": KEY.id, "accounts": [a.id for a in ACCOUNTS], **({"rollout": rollout} if rollout else {})}
    settings = Settings.from_env(
        {"ROTATION_TARGETS": json.dumps([item]), "ROTATION_CONCURRENCY": "8", "ROTATION_APP_NAME": "test-app"}
    )
    return World(RotationEngine(vault, accounts, settings, clock=clock), vault, accounts)


def test_break_glass_moves_every_account_at_once_despite_a_rollout() -> None:
    world = make_world(rollout={"wave_size": 1}, update_seconds=0.05)

    outcome = world.break_glass(census=world.census())

    [created] = world.vault.created
    assert [(r.account, r.wave, r.status) for r in outcome.accounts] == [(a, 1, Status.SUCCEEDED) for a in ACCOUNTS]
    assert world.accounts.max_in_flight == 3  # one wave: the three updates ran together
    assert world.account_versions() == {a.name: created.version for a in ACCOUNTS}


def test_a_failing_account_halts_nothing_and_keeps_the_version_enabled() -> None:
    world = make_world(rollout={"wave_size": 1})
    world.accounts.fail(AOAI_1, "update_key_version", PermissionDenied("the account's identity cannot use the key"))

    outcome = world.break_glass(census=world.census())

    [created] = world.vault.created
    assert world.account_versions() == {"aoai-1": COMPROMISED, "aoai-2": created.version, "aoai-3": created.version}
    assert (outcome.status, outcome.reason, outcome.retryable) == (
        Status.FAILED,
        Reason.COMPROMISED_VERSION_IN_USE,
        False,
    )
    assert outcome.blast_radius is not None
    left = outcome.blast_radius["left"]
    assert isinstance(left, list) and [e["account"] for e in left] == [AOAI_1.id]
    assert world.vault.disabled == [] and world.enabled(COMPROMISED)


def test_the_version_is_disabled_once_nobody_is_left_on_it(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        outcome = world.break_glass(census=world.census())

    [created] = world.vault.created
    assert world.vault.disabled == [(KEY, COMPROMISED)] and not world.enabled(COMPROMISED)
    assert (outcome.status, outcome.reason, outcome.retryable, outcome.error) == (
        Status.SUCCEEDED,
        Reason.COMPROMISED_VERSION_DISABLED,
        False,
        None,
    )
    assert (outcome.created, outcome.to_version) == (True, created.version)
    assert outcome.blast_radius is not None
    assert outcome.blast_radius["version_state"] == "disabled"
    assert outcome.blast_radius["moved"] == [a.id for a in ACCOUNTS]
    assert outcome.to_dict()["blast_radius"] == dict(outcome.blast_radius)
    [disabled] = [r for r in caplog.records if getattr(r, "event", None) == Event.COMPROMISED_VERSION_DISABLED]
    assert (disabled.version, disabled.moved, disabled.left) == (COMPROMISED, 3, 0)  # type: ignore[attr-defined]


def test_an_unlisted_account_on_the_version_keeps_it_enabled_and_is_never_touched() -> None:
    world = make_world()
    world.accounts.add(account(ELSEWHERE, key_version=COMPROMISED))

    outcome = world.break_glass(census=world.census(ELSEWHERE))

    assert world.vault.disabled == [] and world.enabled(COMPROMISED)
    assert world.accounts.state(ELSEWHERE).key_version == COMPROMISED
    assert ELSEWHERE not in [a for a, _ in world.accounts.updates]
    assert (outcome.status, outcome.reason, outcome.retryable) == (
        Status.FAILED,
        Reason.COMPROMISED_VERSION_IN_USE,
        False,
    )
    assert outcome.blast_radius is not None
    assert outcome.blast_radius["version_state"] == "enabled"
    assert outcome.blast_radius["left"] == [{"account": ELSEWHERE.id, "movable": False, "why": NOT_OURS}]
    assert outcome.error is not None and "the version stays enabled" in outcome.error


def test_an_unlisted_account_on_the_version_loses_access_when_the_breakage_is_accepted() -> None:
    world = make_world()
    world.accounts.add(account(ELSEWHERE, key_version=COMPROMISED))

    outcome = world.break_glass(census=world.census(ELSEWHERE), accept_breakage=True)

    assert world.vault.disabled == [(KEY, COMPROMISED)]
    assert world.accounts.state(ELSEWHERE).key_version == COMPROMISED  # still never touched
    assert (outcome.status, outcome.reason) == (Status.SUCCEEDED, Reason.COMPROMISED_VERSION_DISABLED)
    assert outcome.error is not None and ELSEWHERE.id in outcome.error  # the account that loses access is named
    assert outcome.blast_radius is not None and outcome.blast_radius["version_state"] == "disabled"


def test_without_a_census_the_version_is_kept_unless_the_breakage_is_accepted() -> None:
    blind, accepted = make_world(), make_world()

    kept = blind.break_glass(census=None)
    disabled = accepted.break_glass(census=None, accept_breakage=True)

    assert blind.vault.disabled == [] and set(blind.account_versions().values()) == {kept.to_version}
    assert (kept.status, kept.reason, kept.retryable) == (Status.FAILED, Reason.COMPROMISED_VERSION_IN_USE, False)
    assert kept.blast_radius is not None
    assert kept.blast_radius["discovery"] == {"complete": False, "searched": "nothing: no discovery was given"}
    assert accepted.vault.disabled == [(KEY, COMPROMISED)]
    assert (disabled.status, disabled.reason) == (Status.SUCCEEDED, Reason.COMPROMISED_VERSION_DISABLED)


def test_an_incomplete_census_keeps_the_version() -> None:
    world = make_world()

    outcome = world.break_glass(census=world.census(complete=False))

    assert world.vault.disabled == []
    assert outcome.reason is Reason.COMPROMISED_VERSION_IN_USE


def test_no_version_is_created_when_a_newer_usable_one_is_the_target() -> None:
    world = make_world()
    world.vault.add_version(KEY, version=NEWER, created_on=NOW - 10 * DAY, expires_on=NOW + 100 * DAY)

    outcome = world.break_glass(census=world.census())

    assert world.vault.created == []
    assert (outcome.created, outcome.to_version) == (False, NEWER)
    assert world.account_versions() == {a.name: NEWER for a in ACCOUNTS}
    assert world.vault.disabled == [(KEY, COMPROMISED)] and world.enabled(NEWER)
    assert outcome.reason is Reason.COMPROMISED_VERSION_DISABLED


def test_a_new_version_is_created_when_the_compromised_one_is_the_newest() -> None:
    world = make_world()
    world.vault.add_version(KEY, version=NEWER, created_on=NOW - 150 * DAY, expires_on=NOW + 100 * DAY)  # older

    outcome = world.break_glass(census=world.census())

    [created] = world.vault.created
    assert created.version not in (COMPROMISED, NEWER)
    assert (outcome.created, outcome.to_version) == (True, created.version)
    assert world.account_versions() == {a.name: created.version for a in ACCOUNTS}
    assert world.vault.disabled == [(KEY, COMPROMISED)]


def test_an_account_moved_is_judged_by_its_result_not_by_a_census_that_lags_behind() -> None:
    world = make_world()
    before = Census(tuple(world.accounts.state(a) for a in ACCOUNTS), True, SEARCHED)  # every account on the version

    outcome = world.break_glass(census=lambda: before)

    assert world.vault.disabled == [(KEY, COMPROMISED)]
    assert outcome.reason is Reason.COMPROMISED_VERSION_DISABLED


def test_a_transient_account_failure_contains_nothing_and_the_next_delivery_does() -> None:
    world = make_world()
    busy = ConflictError(f"{AOAI_2.id} is busy with another operation")
    world.accounts.fail(AOAI_2, "update_key_version", *[busy] * 4)  # every attempt of the first delivery

    first = world.break_glass(census=world.census())

    [created] = world.vault.created
    assert (first.status, first.retryable, first.blast_radius) == (Status.FAILED, True, None)
    assert first.reason not in (Reason.COMPROMISED_VERSION_DISABLED, Reason.COMPROMISED_VERSION_IN_USE)
    assert world.censuses == [] and world.vault.disabled == []
    assert world.account_versions()["aoai-2"] == COMPROMISED

    again = world.break_glass(census=world.census())  # the queue delivers the same request again

    assert world.vault.created == [created]  # the first delivery's version is adopted
    assert world.account_versions() == {a.name: created.version for a in ACCOUNTS}
    assert (again.status, again.reason) == (Status.SUCCEEDED, Reason.COMPROMISED_VERSION_DISABLED)
    assert world.vault.disabled == [(KEY, COMPROMISED)]


def test_a_disable_refused_for_good_fails_the_request_for_good() -> None:
    world = make_world()
    world.vault.fail("disable_version", PermissionDenied("the identity lacks keys/update on vault kv-prod"))

    outcome = world.break_glass(census=world.census())

    assert world.vault.disabled == [] and world.enabled(COMPROMISED)
    assert (outcome.status, outcome.reason, outcome.retryable) == (Status.FAILED, Reason.PERMISSION_DENIED, False)
    assert outcome.blast_radius is not None
    assert outcome.blast_radius["version_state"] == "enabled"
    assert outcome.blast_radius["error"] == "PermissionDenied: the identity lacks keys/update on vault kv-prod"
    assert outcome.error is not None and "disabling the version failed" in outcome.error


def test_a_disable_that_fails_for_a_transient_reason_is_retryable() -> None:
    world = make_world()
    world.vault.fail("disable_version", *[TransientError("503 service unavailable")] * 4)  # outlasts the retries

    outcome = world.break_glass(census=world.census())

    assert world.vault.disabled == [] and world.enabled(COMPROMISED)
    assert (outcome.status, outcome.reason, outcome.retryable) == (Status.FAILED, Reason.TRANSIENT_FAILURE, True)


def test_a_disable_that_fails_once_is_retried() -> None:
    world = make_world()
    world.vault.fail("disable_version", TransientError("503 service unavailable"))

    outcome = world.break_glass(census=world.census())

    assert world.vault.disabled == [(KEY, COMPROMISED)]
    assert outcome.reason is Reason.COMPROMISED_VERSION_DISABLED


def test_a_listed_account_on_microsoft_managed_keys_does_not_keep_the_version_enabled() -> None:
    world = make_world()
    world.accounts.add(account(AOAI_3, key_version=None, key_source="Microsoft.CognitiveServices"))

    outcome = world.break_glass(census=world.census())

    assert world.vault.disabled == [(KEY, COMPROMISED)]
    assert outcome.blast_radius is not None and outcome.blast_radius["left"] == []
