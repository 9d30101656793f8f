"""reconcile() against the in-memory twins of Key Vault and ARM: idempotency, healing, failures, retries, events."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import stamina

from rotation.config import Settings
from rotation.engine import CreateUnsettled, RetrySettings, RotationEngine, bounded_map
from rotation.errors import ConfigError, ConflictError, NotFound, OutcomeUnknown, PermissionDenied, TransientError
from rotation.log import LOGGER_NAME, Event, EventHook, FieldValue, render
from rotation.model import (
    TAG_APP,
    TAG_REASON,
    TAG_REQUEST_ID,
    TAG_TRIGGER,
    AccountAction,
    KeyRef,
    RotationOutcome,
    Status,
    Trigger,
)
from rotation.reasons import Reason
from tests.doubles import InMemoryAccounts, InMemoryKeyVault
from tests.unit.factories import AOAI_1, AOAI_2, AOAI_3, DAY, KEY, NOW, OTHER_KEY, FixedClock, account, request

ACCOUNTS = (AOAI_1, AOAI_2, AOAI_3)
EXPIRING_AT = NOW + 20 * DAY  # inside the 30-day renewal window


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    """Retries keep their attempts but never sleep."""
    with stamina.set_testing(True, attempts=4):
        yield


@dataclass
class World:
    engine: RotationEngine
    vault: InMemoryKeyVault
    accounts: InMemoryAccounts
    clock: FixedClock

    def versions(self) -> list[str]:
        return [v.version for v in self.vault.versions(KEY)]

    def account_versions(self) -> dict[str, str | None]:
        return {a.name: self.accounts.state(a).key_version for a in ACCOUNTS}

    def reconcile(
        self, trigger: Trigger = Trigger.TIMER, request_id: str = "req-1", *, force: bool = False
    ) -> RotationOutcome:
        return self.engine.reconcile(request(trigger, request_id=request_id, force=force))


def make_world(
    *,
    expires_on: datetime = EXPIRING_AT,
    recovery_level: str = "Recoverable",
    concurrency: int = 8,
    update_seconds: float = 0.0,
    on_event: EventHook | None = None,
    rollout: Mapping[str, object] | None = None,
) -> World:
    clock = FixedClock()
    vault = InMemoryKeyVault(clock, recovery_level=recovery_level)
    vault.add_version(KEY, version="v1", created_on=NOW - 100 * DAY, expires_on=expires_on)
    accounts = InMemoryAccounts(vault, update_seconds=update_seconds)
    for ref in ACCOUNTS:
        accounts.add(account(ref, key_version="v1"))
    settings = Settings.from_env(
        {
            "ROTATION_TARGETS": json.dumps(
                [{"key": KEY.id, "accounts": [a.id for a in ACCOUNTS], **({"rollout": rollout} if rollout else {})}]
            ),
            "ROTATION_CONCURRENCY": str(concurrency),
            "ROTATION_APP_NAME": "test-app",
        }
    )
    return World(RotationEngine(vault, accounts, settings, clock=clock, on_event=on_event), vault, accounts, clock)


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None, str | None]]:
    return [
        (r.event, getattr(r, "account", None), getattr(r, "version", None))  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == LOGGER_NAME
    ]


def test_a_due_key_is_rotated_and_every_account_converges(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        outcome = world.reconcile()

    [created] = world.vault.created
    assert created.tags == {TAG_REQUEST_ID: "req-1", TAG_TRIGGER: "timer", TAG_APP: "test-app", TAG_REASON: "Expiring"}
    assert created.expires_on == NOW + 120 * DAY
    assert (outcome.status, outcome.reason, outcome.created) == (Status.SUCCEEDED, Reason.EXPIRING, True)
    assert (outcome.from_version, outcome.to_version) == ("v1", created.version)
    assert world.account_versions() == {a.name: created.version for a in ACCOUNTS}
    assert [(r.account, r.action, r.status, r.from_version) for r in outcome.accounts] == [
        (a, AccountAction.REPOINT, Status.SUCCEEDED, "v1") for a in ACCOUNTS
    ]
    seen = events(caplog)
    assert seen[0] == ("rotation.planned", None, None)
    assert seen[1] == ("rotation.version_created", None, created.version)
    assert sorted(seen[2:5]) == sorted(("rotation.account_updated", a.id, created.version) for a in ACCOUNTS)
    assert seen[5] == ("rotation.completed", None, created.version)
    [completed] = [r for r in caplog.records if getattr(r, "event", "") == "rotation.completed"]
    assert (completed.request_id, completed.key, completed.reason) == ("req-1", KEY.id, "Expiring")  # type: ignore[attr-defined]
    assert json.loads(json.dumps(outcome.to_dict()))["accounts"][0]["status"] == "succeeded"


def test_a_second_run_creates_nothing_and_touches_nothing() -> None:
    world = make_world()
    world.reconcile(request_id="req-1")
    updates = list(world.accounts.updates)
    for trigger, request_id in [(Trigger.TIMER, "req-2"), (Trigger.KEY_NEW_VERSION_CREATED, "evt-1")]:
        outcome = world.reconcile(trigger, request_id)
        assert (outcome.status, outcome.reason, outcome.created) == (Status.SKIPPED, Reason.UP_TO_DATE, False)
    # A redelivery of the first request reports what that request did, and does nothing again.
    again = world.reconcile(Trigger.TIMER, "req-1")
    assert (again.status, again.reason, again.created) == (Status.SUCCEEDED, Reason.EXPIRING, True)
    assert {r.action for r in again.accounts} == {AccountAction.LEAVE}
    assert len(world.vault.created) == 1
    assert world.accounts.updates == updates


def test_key_new_version_created_never_creates_even_when_due() -> None:
    world = make_world()
    outcome = world.reconcile(Trigger.KEY_NEW_VERSION_CREATED, force=True)
    assert world.vault.created == []
    assert world.accounts.updates == []
    assert (outcome.status, outcome.reason) == (Status.SKIPPED, Reason.NO_TARGET_VERSION)


def test_a_crash_after_create_is_healed_by_the_same_request_without_a_second_version() -> None:
    world = make_world()
    # The earlier attempt of req-1 created the version and died before repointing any account.
    mine = world.vault.create_version(
        KEY,
        kty="RSA",
        key_ops=["wrapKey", "unwrapKey"],
        expires_on=NOW + 120 * DAY,
        tags={TAG_REQUEST_ID: "req-1", TAG_REASON: "Forced"},
    )
    outcome = world.reconcile(Trigger.HTTP, "req-1", force=True)
    assert world.versions() == ["v1", mine.version]
    assert (outcome.status, outcome.reason, outcome.created, outcome.to_version) == (
        Status.SUCCEEDED,
        Reason.FORCED,
        True,
        mine.version,
    )
    assert world.account_versions() == {a.name: mine.version for a in ACCOUNTS}


def test_a_crash_after_create_is_healed_by_our_own_new_version_event() -> None:
    world = make_world()
    mine = world.vault.create_version(
        KEY, kty="RSA", key_ops=["wrapKey"], expires_on=NOW + 120 * DAY, tags={TAG_REQUEST_ID: "req-1"}
    )
    outcome = world.reconcile(Trigger.KEY_NEW_VERSION_CREATED, "evt-1")
    assert len(world.vault.versions(KEY)) == 2
    assert (outcome.status, outcome.reason, outcome.created) == (Status.SUCCEEDED, Reason.ACCOUNTS_BEHIND, False)
    assert world.account_versions() == {a.name: mine.version for a in ACCOUNTS}


def test_a_lost_create_response_is_adopted_not_repeated(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()
    world.vault.lose_create_response(TransientError("connection reset after the create was sent"))
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        outcome = world.reconcile()
    [created] = world.vault.created
    assert outcome.to_version == created.version
    assert outcome.status is Status.SUCCEEDED
    assert "rotation.version_adopted" in [e for e, _, _ in events(caplog)]


def test_one_account_failing_does_not_stop_the_others() -> None:
    world = make_world()
    denied = PermissionDenied(
        f"the function's identity lacks Microsoft.CognitiveServices/accounts/write on {AOAI_2.id}"
    )
    world.accounts.fail(AOAI_2, "update_key_version", denied, denied)
    outcome = world.reconcile()
    new = outcome.to_version
    assert world.account_versions() == {"aoai-1": new, "aoai-2": "v1", "aoai-3": new}
    assert (outcome.status, outcome.retryable) == (Status.FAILED, False)
    failed = {r.account: r for r in outcome.accounts if r.status is Status.FAILED}
    assert list(failed) == [AOAI_2]
    assert failed[AOAI_2].reason is Reason.PERMISSION_DENIED
    assert "accounts/write" in (failed[AOAI_2].error or "")
    assert "1 of 3 accounts failed" in (outcome.error or "")
    # Permanent errors fail fast: one attempt, no retry.
    assert world.accounts.calls.count(("update_key_version", AOAI_2)) == 1


def test_the_hook_sees_every_event_the_engine_logs_with_its_prose_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[Event, str, dict[str, FieldValue]]] = []
    lock = threading.Lock()

    def hook(event: Event, message: str, fields: Mapping[str, FieldValue]) -> None:
        with lock:  # accounts are updated on several threads
            seen.append((event, message, dict(fields)))

    world = make_world(on_event=hook)
    denied = PermissionDenied(
        f"the function's identity lacks Microsoft.CognitiveServices/accounts/write on {AOAI_2.id}"
    )
    world.accounts.fail(AOAI_2, "update_key_version", denied)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        outcome = world.reconcile()

    logged = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert sorted(((render(e, m, f), f) for e, m, f in seen), key=repr) == sorted(
        ((r.getMessage(), _fields(r)) for r in logged), key=repr
    )
    [failed] = [(message, fields) for event, message, fields in seen if event is Event.ACCOUNT_FAILED]
    assert failed[0].startswith(f"account did not converge on {outcome.to_version}: ")
    assert (failed[1]["account"], failed[1]["reason"]) == (AOAI_2.id, "PermissionDenied")


def _fields(record: logging.LogRecord) -> dict[str, FieldValue]:
    """The record's own fields: what ``emit`` put in ``extra``."""
    standard = vars(logging.makeLogRecord({}))
    return {name: value for name, value in vars(record).items() if name not in standard and name != "message"}


def test_conflicts_are_retried_until_the_account_is_free() -> None:
    world = make_world()
    busy = ConflictError(f"{AOAI_1.id} is busy with another operation")
    world.accounts.fail(AOAI_1, "update_key_version", busy, busy)
    outcome = world.reconcile()
    assert outcome.status is Status.SUCCEEDED
    assert world.accounts.calls.count(("update_key_version", AOAI_1)) == 3
    assert world.accounts.state(AOAI_1).key_version == outcome.to_version


def test_conflicts_that_outlast_the_retries_fail_the_account_as_retryable() -> None:
    world = make_world()
    busy = ConflictError(f"{AOAI_1.id} is busy with another operation")
    world.accounts.fail(AOAI_1, "update_key_version", *[busy] * 4)
    outcome = world.reconcile()
    [failed] = [r for r in outcome.accounts if r.status is Status.FAILED]
    assert (failed.account, failed.reason) == (AOAI_1, Reason.CONFLICT)
    assert (outcome.status, outcome.retryable) == (Status.FAILED, True)


def test_verify_waits_for_a_lingering_accepted_state() -> None:
    world = make_world()
    world.accounts.linger(AOAI_1, 2)
    outcome = world.reconcile()
    assert outcome.status is Status.SUCCEEDED
    assert world.accounts.state(AOAI_1).provisioning_state == "Succeeded"
    # gather (fresh: the update trusts it), the read-back after the update, two polls
    assert world.accounts.calls.count(("get", AOAI_1)) == 1 + 3


def test_a_transient_read_error_while_verifying_is_retried() -> None:
    world = make_world()
    world.accounts.linger(AOAI_1, 1)
    # Reads: gather, the update's read-back ("Accepted"), a verify read that fails with 503, a verify read that
    # passes.
    world.accounts.fail(AOAI_1, "get", None, None, TransientError("503 service unavailable"))
    outcome = world.reconcile()
    assert {r.account: r.status for r in outcome.accounts}[AOAI_1] is Status.SUCCEEDED
    assert world.accounts.calls.count(("get", AOAI_1)) == 4


def test_verify_gives_up_at_its_deadline() -> None:
    world = make_world()
    world.accounts.linger(AOAI_1, 10)
    outcome = world.reconcile()
    [failed] = [r for r in outcome.accounts if r.status is Status.FAILED]
    assert (failed.account, failed.reason, outcome.retryable) == (AOAI_1, Reason.VERIFY_TIMED_OUT, True)
    assert "provisioningState=Accepted" in (failed.error or "")


def test_an_account_already_on_the_target_but_provisioning_is_waited_for() -> None:
    world = make_world(expires_on=NOW + 100 * DAY)
    world.accounts.add(account(AOAI_2, key_version="v1", state="Accepted"))
    world.accounts.linger(AOAI_2, 1)  # gather sees "Accepted", the first verify read "Succeeded"
    outcome = world.reconcile()
    assert world.accounts.updates == []
    by_account = {r.account: (r.action, r.status) for r in outcome.accounts}
    assert by_account[AOAI_2] == (AccountAction.WAIT, Status.SUCCEEDED)
    assert by_account[AOAI_1] == (AccountAction.LEAVE, Status.SKIPPED)
    assert outcome.status is Status.SUCCEEDED


def test_an_unreadable_account_fails_alone() -> None:
    world = make_world()
    world.accounts.fail(AOAI_3, "get", NotFound(f"{AOAI_3.id} was not found"))
    outcome = world.reconcile()
    by_account = {r.account: (r.status, r.reason) for r in outcome.accounts}
    assert by_account[AOAI_3] == (Status.FAILED, Reason.ACCOUNT_UNREADABLE)
    assert by_account[AOAI_1] == (Status.SUCCEEDED, Reason.ACCOUNT_BEHIND)
    assert outcome.status is Status.FAILED


def test_an_account_on_another_key_is_never_touched() -> None:
    world = make_world()
    world.accounts.add(account(AOAI_2, key=KeyRef.parse("https://kv-prod.vault.azure.net/keys/other")))
    outcome = world.reconcile()
    assert AOAI_2 not in [a for a, _ in world.accounts.updates]
    assert world.accounts.state(AOAI_2).key_name == "other"
    assert {r.account: r.reason for r in outcome.accounts}[AOAI_2] is Reason.ACCOUNT_USES_OTHER_KEY


def test_key_level_errors_raise_for_the_caller_to_route() -> None:
    world = make_world()
    world.vault.fail("list_versions", PermissionDenied("the function's identity lacks keys/list on vault kv-prod"))
    with pytest.raises(PermissionDenied, match="keys/list"):
        world.reconcile()
    world.vault.fail("list_versions", TransientError("503"), TransientError("503"))
    assert world.reconcile().status is Status.SUCCEEDED


def test_a_failed_create_raises_and_touches_no_account(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()
    world.vault.fail("create_version", PermissionDenied("the function's identity lacks keys/create on vault kv-prod"))
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME), pytest.raises(PermissionDenied):
        world.reconcile()
    assert world.accounts.updates == []
    assert world.vault.created == []
    [failed] = [r for r in caplog.records if getattr(r, "event", "") == "rotation.failed"]
    assert failed.reason == "PermissionDenied"  # type: ignore[attr-defined]
    assert failed.levelno == logging.ERROR


def test_a_blocked_key_fails_without_writing() -> None:
    world = make_world(recovery_level="Recoverable+Purgeable")
    outcome = world.reconcile(force=True)
    assert (outcome.status, outcome.reason, outcome.retryable) == (
        Status.FAILED,
        Reason.PURGE_PROTECTION_DISABLED,
        False,
    )
    assert "purge protection" in (outcome.error or "")
    assert world.vault.created == [] and world.accounts.updates == []
    assert {r.status for r in outcome.accounts} == {Status.SKIPPED}


def test_keys_outside_the_targets_are_refused() -> None:
    world = make_world()
    with pytest.raises(ConfigError, match="not in ROTATION_TARGETS"):
        world.engine.reconcile(request(key=KeyRef.parse("https://kv-prod.vault.azure.net/keys/other")))
    assert world.accounts.calls == []


def test_dry_run_gathers_and_decides_only() -> None:
    world = make_world()
    plan = world.engine.dry_run(request())
    assert plan.reason is Reason.EXPIRING and plan.create is not None
    assert world.vault.created == [] and world.accounts.updates == []


def test_account_updates_run_concurrently_within_the_bound() -> None:
    world = make_world(concurrency=2, update_seconds=0.05)
    outcome = world.reconcile()
    assert world.accounts.max_in_flight == 2
    assert world.account_versions() == {a.name: outcome.to_version for a in ACCOUNTS}


def test_a_lost_lock_stops_the_create() -> None:
    world = make_world()

    def lock_lost() -> None:
        raise TransientError("the lock on the key was lost")

    with pytest.raises(TransientError, match="lock"):
        world.engine.reconcile(request(Trigger.TIMER, request_id="req-1"), before_write=lock_lost)

    assert world.versions() == ["v1"]  # nothing was created
    assert world.account_versions() == {"aoai-1": "v1", "aoai-2": "v1", "aoai-3": "v1"}


def test_a_lock_lost_after_the_create_stops_the_account_updates() -> None:
    world = make_world()
    allowed = iter([True])

    def lock_check() -> None:
        if not next(allowed, False):
            raise TransientError("the lock on the key was lost")

    outcome = world.engine.reconcile(request(Trigger.TIMER, request_id="req-1"), before_write=lock_check)

    assert len(world.versions()) == 2  # the create ran while the lock was held
    assert world.account_versions() == {"aoai-1": "v1", "aoai-2": "v1", "aoai-3": "v1"}
    assert (outcome.status, outcome.retryable) == (Status.FAILED, True)
    assert all(r.status is Status.FAILED for r in outcome.accounts)


# --- what changed while the rotation ran ---------------------------------------------------------------------------


def test_a_tagged_version_that_is_no_longer_usable_is_not_adopted() -> None:
    world = make_world()
    busy = ConflictError("busy")
    for ref in ACCOUNTS:
        world.accounts.fail(ref, "update_key_version", *[busy] * 4)  # every attempt of the first delivery
    first = world.reconcile(request_id="req-1")
    assert (first.status, first.retryable) == (Status.FAILED, True)
    (tagged,) = world.vault.created
    world.vault.disable(KEY, tagged.version)  # an operator disables it before the request is delivered again

    again = world.reconcile(request_id="req-1")

    assert again.status is Status.SUCCEEDED
    assert again.to_version not in ("v1", tagged.version)
    assert set(world.account_versions().values()) == {again.to_version}


def test_an_account_moved_to_another_key_during_the_rotation_is_left_there() -> None:
    world = make_world()

    def someone_moves_aoai_2() -> None:  # runs before the create, which takes long enough to age the snapshot
        world.accounts.add(account(AOAI_2, key=OTHER_KEY, key_version="o1"))
        world.clock.now += RetrySettings().fresh_for + timedelta(seconds=1)

    outcome = world.engine.reconcile(request(Trigger.TIMER, request_id="req-1"), before_write=someone_moves_aoai_2)

    assert world.accounts.state(AOAI_2).key_name == OTHER_KEY.name
    assert world.accounts.state(AOAI_2).key_version == "o1"
    results = {r.account: r for r in outcome.accounts}
    assert (results[AOAI_2].status, results[AOAI_2].reason) == (Status.FAILED, Reason.ACCOUNT_USES_OTHER_KEY)
    assert "no longer uses" in (results[AOAI_2].error or "")
    assert ("update_key_version", AOAI_2) not in world.accounts.calls


def test_a_fresh_snapshot_is_trusted_and_a_stale_one_read_again_before_the_update() -> None:
    fresh, stale = make_world(), make_world()

    def slow_create() -> None:
        stale.clock.now += RetrySettings().fresh_for + timedelta(seconds=1)

    fresh.reconcile()
    stale.engine.reconcile(request(Trigger.TIMER, request_id="req-1"), before_write=slow_create)

    for world, reads in ((fresh, 1), (stale, 2)):  # the snapshot's read (and the re-read), then the read-back
        assert set(world.account_versions().values()) == {world.vault.created[0].version}
        assert world.accounts.calls.count(("get", AOAI_1)) == reads + 1


def test_a_lock_lost_between_create_retries_creates_nothing_more() -> None:
    world = make_world()
    world.vault.fail("create_version", TransientError("503 service unavailable"))
    checks = iter([None])  # the first check passes; the lease is gone by the retry

    def lock_check() -> None:
        if next(checks, "lost") == "lost":
            raise TransientError("the lock on the key was lost")

    with pytest.raises(TransientError, match="lock"):
        world.engine.reconcile(request(Trigger.TIMER, request_id="req-1"), before_write=lock_check)

    assert world.vault.created == []


def test_an_account_that_could_not_be_read_for_a_transient_reason_is_retryable() -> None:
    world = make_world()
    world.accounts.fail(AOAI_2, "get", *[TransientError("429 too many requests")] * 10)

    outcome = world.reconcile()

    assert (outcome.status, outcome.retryable) == (Status.FAILED, True)
    failed = {r.account: r for r in outcome.accounts if r.status is Status.FAILED}
    assert list(failed) == [AOAI_2] and "429" in (failed[AOAI_2].error or "")


def test_an_account_whose_last_update_failed_on_the_target_version_is_updated_again() -> None:
    world = make_world(expires_on=NOW + 100 * DAY)  # fresh: no new version
    world.accounts.add(account(AOAI_1, key_version="v1", state="Failed"))

    outcome = world.reconcile()

    assert outcome.status is Status.SUCCEEDED
    assert world.accounts.state(AOAI_1).provisioning_state == "Succeeded"
    assert ("update_key_version", AOAI_1) in world.accounts.calls


def test_a_create_whose_answer_was_lost_is_awaited_and_adopted_not_repeated(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()
    world.vault.land_late(OutcomeUnknown("read timed out after the create was sent"), after_lists=2)

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        outcome = world.reconcile()

    [created] = world.vault.created
    assert world.vault.create_calls == 1
    assert (outcome.status, outcome.to_version) == (Status.SUCCEEDED, created.version)
    assert set(world.account_versions().values()) == {created.version}
    assert "rotation.version_adopted" in [e for e, _, _ in events(caplog)]


def test_a_create_that_does_not_show_up_is_left_to_the_next_delivery_not_repeated() -> None:
    world = make_world()
    world.vault.land_late(OutcomeUnknown("gateway timeout after the create was sent"), after_lists=100)

    with pytest.raises(CreateUnsettled, match="next delivery looks again") as raised:
        world.reconcile()

    assert world.vault.create_calls == 1  # never sent again within the delivery
    assert RotationOutcome.from_error(request(Trigger.TIMER), raised.value).retryable  # the queue delivers it again
    assert world.account_versions() == dict.fromkeys(("aoai-1", "aoai-2", "aoai-3"), "v1")


def history(world: World, count: int, *, expires_in: timedelta) -> None:
    """``count`` older versions of the key, each created a day before the next, all expiring ``expires_in`` from now."""
    for n in range(count):
        world.vault.add_version(
            KEY, version=f"old{n:04d}", created_on=NOW - (200 + n) * DAY, expires_on=NOW + expires_in
        )


@pytest.mark.parametrize("older", [5, 500])
def test_a_healthy_key_is_read_in_one_call_however_many_versions_it_has(older: int) -> None:
    world = make_world(expires_on=NOW + 90 * DAY)  # v1, the newest: usable and not due
    history(world, older, expires_in=60 * DAY)
    plan = world.engine.dry_run(request(Trigger.TIMER))
    assert (plan.current_version, plan.target_version, plan.create) == ("v1", "v1", None)
    assert world.vault.reads == ["latest_version"]


@pytest.mark.parametrize("older", [5, 500])
def test_a_due_key_is_decided_from_its_current_version_alone(older: int) -> None:
    world = make_world()  # v1, the newest, is due
    history(world, older, expires_in=10 * DAY)  # every older one is due too
    outcome = world.reconcile()
    assert outcome.status is Status.SUCCEEDED and outcome.created
    # Only the create's own look for an earlier attempt's version lists; no older version's material is ever read.
    assert world.vault.reads == ["latest_version", "list_versions"]


def test_an_older_version_that_is_not_due_is_found_when_no_version_may_be_created() -> None:
    world = make_world()  # v1, the newest, is due; KeyNewVersionCreated never creates
    world.vault.add_version(KEY, version="long", created_on=NOW - 150 * DAY, expires_on=NOW + 300 * DAY)
    history(world, 20, expires_in=10 * DAY)
    plan = world.engine.dry_run(request(Trigger.KEY_NEW_VERSION_CREATED))
    assert (plan.create, plan.target_version) == (None, "long")
    assert world.vault.reads == ["latest_version", "list_versions", "describe", "describe"]


def test_a_newest_version_of_the_wrong_type_does_not_hide_an_older_rsa_one() -> None:
    world = make_world(expires_on=NOW + 90 * DAY)
    world.vault.add_version(KEY, version="ec", created_on=NOW - DAY, kty="EC", size=None)
    plan = world.engine.dry_run(request(Trigger.TIMER))
    assert not plan.blocked  # an older RSA version exists: the policy chain replaces the EC one
    assert plan.reason is Reason.CURRENT_WRONG_TYPE and plan.create is not None


def test_bounded_map_runs_workers_calls_at_once_and_keeps_the_order() -> None:
    together = threading.Barrier(3, timeout=10)  # broken unless three calls are in flight at the same moment
    running, most = 0, 0
    lock = threading.Lock()

    def call(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        if n < 3:
            together.wait()
        with lock:
            running -= 1
        return n * n

    assert bounded_map(call, range(9), workers=3) == [n * n for n in range(9)]
    assert most == 3


# Staged rollout --------------------------------------------------------------------------------------------------


def test_a_rollout_converges_the_canary_then_each_wave_in_order() -> None:
    world = make_world(rollout={"canary": [AOAI_3.id], "wave_size": 1})

    outcome = world.reconcile()

    [created] = world.vault.created
    assert outcome.status is Status.SUCCEEDED
    assert [(r.account, r.wave) for r in outcome.accounts] == [(AOAI_1, 2), (AOAI_2, 3), (AOAI_3, 1)]
    assert [a for a, _ in world.accounts.updates] == [AOAI_3, AOAI_1, AOAI_2]  # canary, wave 2, wave 3
    assert world.account_versions() == {a.name: created.version for a in ACCOUNTS}


def test_a_failed_canary_halts_the_rollout_and_the_next_request_resumes_without_repeating_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world(rollout={"wave_size": 1})
    denied = PermissionDenied("the account's identity cannot use the new version")
    world.accounts.fail(AOAI_1, "update_key_version", denied)

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        halted = world.reconcile()

    [created] = world.vault.created
    assert (halted.status, halted.reason, halted.retryable) == (Status.FAILED, Reason.HALTED_AFTER_FAILURE, False)
    assert halted.error is not None and halted.error.startswith("the rollout halted after wave 1 of 3 (the canary): ")
    assert [(r.account, r.status, r.reason) for r in halted.accounts] == [
        (AOAI_1, Status.FAILED, Reason.PERMISSION_DENIED),
        (AOAI_2, Status.SKIPPED, Reason.HALTED_AFTER_FAILURE),
        (AOAI_3, Status.SKIPPED, Reason.HALTED_AFTER_FAILURE),
    ]
    assert world.account_versions() == {a.name: "v1" for a in ACCOUNTS}  # nobody moved: all on the working version
    [failed] = [r for r in caplog.records if getattr(r, "event", None) == Event.FAILED]
    assert (failed.reason, failed.halted_after_wave) == (Reason.HALTED_AFTER_FAILURE, 1)  # type: ignore[attr-defined]

    resumed = world.reconcile(request_id="req-2")  # the cause is gone (the fault was one call)

    assert resumed.status is Status.SUCCEEDED and world.vault.created == [created]  # the version is reused
    assert world.account_versions() == {a.name: created.version for a in ACCOUNTS}
    assert [a for a, _ in world.accounts.updates] == [AOAI_1, AOAI_2, AOAI_3]


def test_a_resumed_rollout_never_touches_a_wave_that_converged() -> None:
    world = make_world(rollout={"wave_size": 1})
    busy = PermissionDenied("refused")
    world.accounts.fail(AOAI_2, "update_key_version", busy)
    first = world.reconcile()
    [created] = world.vault.created
    assert first.reason is Reason.HALTED_AFTER_FAILURE and first.error is not None
    assert "halted after wave 2 of 3:" in first.error
    assert world.account_versions() == {"aoai-1": created.version, "aoai-2": "v1", "aoai-3": "v1"}

    resumed = world.reconcile(request_id="req-2")

    assert [(r.account, r.action) for r in resumed.accounts] == [
        (AOAI_1, AccountAction.LEAVE),
        (AOAI_2, AccountAction.REPOINT),
        (AOAI_3, AccountAction.REPOINT),
    ]
    assert [a for a, _ in world.accounts.updates] == [AOAI_1, AOAI_2, AOAI_3]  # aoai-1 once, in the first run


def test_a_blocked_account_fails_without_halting_the_rollout() -> None:
    world = make_world(rollout={"wave_size": 1})
    world.accounts.add(account(AOAI_1, key=OTHER_KEY))  # the canary moved to another key: blocked, never written

    outcome = world.reconcile()

    [created] = world.vault.created
    assert outcome.reason is not Reason.HALTED_AFTER_FAILURE and outcome.status is Status.FAILED
    assert [(r.account, r.status) for r in outcome.accounts] == [
        (AOAI_1, Status.FAILED),
        (AOAI_2, Status.SUCCEEDED),
        (AOAI_3, Status.SUCCEEDED),
    ]
    assert world.account_versions()["aoai-3"] == created.version
