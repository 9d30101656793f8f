"""The Functions app's use cases: one method per trigger, with no ``azure.functions`` import.

    on_key_event   parse the event, check ROTATION_TARGETS, record and enqueue a request         (< 1 s)
    sweep          discover the accounts on the target keys; plan every target and report its drift; retire old
                   versions (ROTATION_RETIREMENT); enqueue the keys that are due or whose accounts are behind;
                   re-send stuck requests
    submit         validate an HTTP body; answer the plan (dry run) or record and enqueue      (202)
    request        the ledger row of one request
    fleet_status   every target's versions, accounts and drift, as the CLI's ``status -o json`` prints
    work           the queue worker: per-key lock, ledger row, ``reconcile``, outcome event
    give_up        the poison handler: mark the ledger row failed and emit a failure event

Every entry runs in one order: parse, validate, check the target, and only then write. A rejected input leaves no
trace but one clipped log line: no ledger row, lease, message, outcome event or ``rotation.failed``. Inputs from
outside (events, HTTP bodies, queue messages) are hints that name a key: anything not in ``ROTATION_TARGETS`` is
refused, and nothing outside the targets is ever written. Discovery (``ROTATION_DISCOVERY``) reads accounts beyond
them to report drift; only ``ROTATION_UNMANAGED=enrol`` lets the service rotate an account the targets do not list,
and then only one that ARM says uses a target key. One target's fault never stops another.

What leaves a method on purpose: ``Redeliver`` (a transient fault of storage or of the key's lease: the host delivers
the message or event again) and ``ConfigError`` (a bad setting). ``function_app.py`` catches anything else at the
edge, as a bug, and acknowledges it.

No request is lost: a ledger row is written before its queue message, so a row can exist without a message only when
the send failed; the sweep re-sends every ``queued`` or ``running`` row that nobody touched for ``repair_after`` and
whose key is not locked (a second copy of a request is harmless: the worker's lock and the final row make it a no-op).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from rotation.breakglass import TOKEN_PATTERN, UnknownVersion
from rotation.config import Settings
from rotation.connection import AzureConnection
from rotation.drift import Drift, DriftKind, drift_of
from rotation.engine import KEYS_AT_ONCE, RetrySettings, RotationEngine, bounded_map
from rotation.errors import (
    FinalStatus,
    InvalidInput,
    LedgerConflict,
    LockHeld,
    RotationError,
    StorageUnavailable,
    TransientError,
)
from rotation.events import EventRejected, parse_key_event
from rotation.log import Event, emit
from rotation.model import (
    KEY_VERSION_PATTERN,
    AccountAction,
    AccountEncryption,
    AccountRef,
    AccountResult,
    Clock,
    KeyRef,
    Observation,
    Retirement,
    RotationOutcome,
    RotationPlan,
    RotationRequest,
    Status,
    Target,
    Trigger,
    UnmanagedPolicy,
    VersionSource,
    event_request_id,
    request_id_for,
    system_clock,
)
from rotation.reasons import Reason
from rotation.redact import clipped, described, quoted
from rotation.retirement import Verdict, review
from rotation.status import (
    break_glass_plan,
    census,
    discover_targets,
    enrolled,
    enrolments,
    fleet_status,
    searched_everywhere,
    unmanaged_on,
)
from rotation.storage import (
    EVIDENCE_TABLE,
    LEDGER_TABLE,
    MAX_ACCOUNTS_JSON_CHARS,
    KeyLock,
    Ledger,
    LedgerEntry,
    LedgerStatus,
    RotationQueue,
    StorageAccount,
    VersionEvidence,
)
from rotation.telemetry import (
    SpanName,
    attributes,
    days_until_expiry,
    days_until_renewal,
    drift_accounts,
    fail,
    poison_messages,
    span,
)

if TYPE_CHECKING:
    from rotation.discovery import AccountDiscovery, Discovery
    from rotation.notify import OutcomePublisher

MAX_BODY_BYTES = 16 * 1024
# What the sweep reports as needing a person (each an ERROR event that the deployment's alerts match): a current
# version still current this long after it became due, and one this close to its expiry.
RENEWAL_OVERDUE_AFTER = timedelta(days=1)
EXPIRY_NEAR_WITHIN = timedelta(days=7)
_SUBMIT_FIELDS = frozenset({"key", "force", "dry_run", "compromised_version", "accept_breakage", "confirmation"})


@dataclass(frozen=True)
class Timings:
    """Every wait of the app, with production defaults; tests and the chaos suite pass shorter ones."""

    lock_held_delay: int = 30  # seconds before a request whose key is locked is seen again
    poison_retry_delay: int = 60  # seconds before the poison handler looks again at a request whose key is locked
    lease: int = 60  # seconds, the key lock's blob lease (Azure: 15-60)
    renew_every: float | None = None  # seconds between lease renewals; None: a third of the lease
    repair_after: timedelta = timedelta(minutes=15)  # an unfinished row untouched this long is re-sent by the sweep
    poison_alert_after: timedelta = timedelta(minutes=5)  # a poison message waiting this long is reported by the sweep


class Redeliver(TransientError):
    """Raised on purpose so the host delivers the input again: a transient fault of storage or of the key's lease,
    or a retryable failure that was recorded in the ledger."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, JSON body and headers. The trigger layer turns it into an ``HttpResponse``."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def error_answer(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    """The project's error format: ``{"error": {"code", "message"}}``."""
    return Answer(status, {"error": {"code": code, "message": message}}, dict(headers or {}))


@dataclass(frozen=True)
class SweepResult:
    enqueued: tuple[str, ...]  # request ids of keys that were due or drifting
    repaired: tuple[str, ...]  # request ids of stuck requests sent again
    failed: tuple[str, ...]  # key ids whose sweep failed (each logged with its reason)


@dataclass
class RotationApp:
    settings: Settings
    engine: RotationEngine
    queue: RotationQueue
    ledger: Ledger
    lock_for: Callable[[KeyRef], KeyLock]
    publisher: OutcomePublisher | None = None
    discovery: AccountDiscovery | None = None  # None: ROTATION_DISCOVERY=off
    evidence: VersionEvidence | None = None  # retirement's (ROTATION_RETIREMENT); None: no retirement
    clock: Clock = system_clock
    timings: Timings = field(default_factory=Timings)

    @classmethod
    def build(
        cls,
        env: Mapping[str, str],
        *,
        connection: AzureConnection | None = None,
        clock: Clock = system_clock,
        timings: Timings | None = None,
        retry: RetrySettings | None = None,
        ledger_table: str = LEDGER_TABLE,
        evidence_table: str = EVIDENCE_TABLE,
        storage_options: Mapping[str, Any] | None = None,
    ) -> RotationApp:
        """Everything from app settings; ``connection`` replaces the default (managed identity, public cloud), and
        ``timings``, ``retry`` (the engine's step retries) and ``storage_options`` (storage client keyword arguments,
        such as azure-core's retry settings) replace production defaults."""
        settings = Settings.from_env(env)
        connection = connection or AzureConnection.default(settings)
        storage = StorageAccount.from_settings(env, **(storage_options or {}))
        timings = timings or Timings()
        accounts = connection.accounts()
        engine = RotationEngine(connection.key_vault(), accounts, settings, clock=clock, retry=retry)
        discovery = None
        if settings.discovery is not None:
            discovery = connection.discovery(accounts, scope=settings.discovery, concurrency=settings.concurrency)

        def lock_for(key: KeyRef) -> KeyLock:
            return storage.key_lock(key, duration=timings.lease, renew_every=timings.renew_every)

        return cls(
            settings=settings,
            engine=engine,
            queue=storage.rotation_queue(),
            ledger=storage.ledger(table_name=ledger_table),
            evidence=storage.evidence(table_name=evidence_table),
            lock_for=lock_for,
            publisher=connection.publisher(settings),
            discovery=discovery,
            clock=clock,
            timings=timings,
        )

    # Event Grid --------------------------------------------------------------------------------------------------
    def on_key_event(self, *, event_id: object, event_type: object, subject: object, data: Any) -> str | None:
        """Record and enqueue a request for a target key's event; the request id, or None when it was ignored.
        The arguments are the event's fields as delivered: anything unusable is logged once and ignored.

        Duplicate deliveries of one event map to one request id: the ledger keeps one row, and the worker's lock and
        re-derived decision make a second queue message harmless. ``Redeliver`` when storage failed.
        """
        with span(SpanName.ON_KEY_EVENT, kind=SpanKind.CONSUMER, event_id=described(event_id)) as current:
            request_id = self._on_key_event(event_id, event_type, subject, data)
            current.set_attribute("request_id", request_id or "")
            return request_id

    def _on_key_event(self, event_id: object, event_type: object, subject: object, data: Any) -> str | None:
        try:
            event = parse_key_event(
                event_id=event_id,
                event_type=event_type,
                subject=subject,
                data=data,
                vault_suffix=self.settings.cloud.vault_suffix,
            )
            if self.settings.target_for(event.key) is None:
                raise EventRejected(f"key {event.key.id} is not in ROTATION_TARGETS")
            request = RotationRequest(
                request_id=event_request_id(event.event_id, event.key),
                key=event.key,
                trigger=event.trigger,
                requested_at=self.clock(),
                event_version=event.version,
            )
        except (EventRejected, InvalidInput) as exc:
            _refused(
                Event.EVENT_IGNORED,
                f"event {described(event_id)}",
                exc,
                event_id=described(event_id),
                event_type=described(event_type),
            )
            return None
        try:
            self._record_and_enqueue(request)
        except StorageUnavailable as exc:
            raise Redeliver(f"event {request.request_id} for {request.key.id} was not recorded: {exc}") from exc
        return request.request_id

    # Timer -------------------------------------------------------------------------------------------------------
    def sweep(self) -> SweepResult:
        """Discover the accounts on the target keys, report each key's drift, enqueue every target whose key is due or
        whose accounts are behind, then re-send stuck requests. A target that fails is logged
        (``rotation.sweep_failed``) and the others go on; so do they when discovery fails."""
        with span(SpanName.SWEEP, kind=SpanKind.CONSUMER, targets=len(self.settings.targets)):
            return self._sweep()

    def _sweep(self) -> SweepResult:
        found = discover_targets(self.discovery, self.settings.targets)
        swept = bounded_map(lambda t: self._sweep_one(t, found), self.settings.targets, workers=KEYS_AT_ONCE)
        enqueued = [found for found in swept if isinstance(found, str)]
        failed = [t.key.id for t, found in zip(self.settings.targets, swept, strict=True) if found is False]
        repaired = self._repair()
        self._watch_poison()
        return SweepResult(tuple(enqueued), tuple(repaired), tuple(failed))

    def _sweep_one(self, target: Target, found: Discovery | RotationError | None) -> str | bool:
        """One target's sweep: the request id it enqueued, True when nothing was due, False when it failed (logged:
        one target's fault never stops another)."""
        try:
            request_id = self._sweep_target(target, found)
        except Exception as exc:  # noqa: BLE001 - one target's fault never stops another; each is reported
            reason = exc.reason.value if isinstance(exc, RotationError) else type(exc).__name__
            emit(
                Event.SWEEP_FAILED,
                f"the sweep of this key failed: {clipped(str(exc), 500)}",
                key=target.key,
                reason=reason,
                level=logging.ERROR,
                exc_info=not isinstance(exc, RotationError),
            )
            return False
        return True if request_id is None else request_id

    def _sweep_target(self, target: Target, found: Discovery | RotationError | None) -> str | None:
        request = RotationRequest(
            request_id=str(uuid.uuid4()), key=target.key, trigger=Trigger.TIMER, requested_at=self.clock()
        )
        unmanaged = unmanaged_on(found, target)
        # Every version: an account that drifted onto an old one is reported with that version's expiry.
        obs = self.engine.gather(request, every_version=True, enrolled=enrolled(self.settings, unmanaged))
        plan = self.engine.plan(obs)
        self._report_due_dates(target, plan)
        self._report_drift(drift_of(target, obs, plan, unmanaged))
        if plan.blocked:  # nothing the worker could do; the finding is what an operator must fix
            emit(
                Event.SWEEP_BLOCKED,
                f"the key cannot be rotated: {plan.message}",
                key=target.key,
                reason=plan.reason,
                level=logging.ERROR,
            )
            return None
        self._retire(target, obs, plan, unmanaged if searched_everywhere(found) else None)
        drifting = any(a.action in (AccountAction.REPOINT, AccountAction.WAIT) for a in plan.accounts)
        if plan.create is None and not drifting:
            return None
        self._record_and_enqueue(request)
        return request.request_id

    def _report_due_dates(self, target: Target, plan: RotationPlan) -> None:
        """The key's days until renewal and expiry as metrics; an ERROR event when the renewal is overdue (the current
        version became due over ``RENEWAL_OVERDUE_AFTER`` ago: rotations have been failing) or the expiry is near.
        A key whose versions come from Key Vault's policy renews on the vault's schedule, so only its expiry counts."""
        now = self.clock()
        key = attributes(key=target.key.id)
        if plan.renews_at is not None:
            days_until_renewal.set(_days(plan.renews_at - now), key)
            if target.new_versions is VersionSource.SERVICE and now - plan.renews_at > RENEWAL_OVERDUE_AFTER:
                emit(
                    Event.RENEWAL_OVERDUE,
                    f"version {plan.current_version} became due for renewal at {plan.renews_at.isoformat()} and is "
                    "still the newest: the rotations since have failed (see rotation.failed and the ledger)",
                    key=target.key,
                    version=plan.current_version,
                    reason=plan.reason,
                    level=logging.ERROR,
                    days=_days(now - plan.renews_at),
                )
        if plan.expires_on is not None:
            left = plan.expires_on - now
            days_until_expiry.set(_days(left), key)
            if left < EXPIRY_NEAR_WITHIN:
                emit(
                    Event.EXPIRY_NEAR,
                    f"version {plan.current_version} expires at {plan.expires_on.isoformat()}; every account still on "
                    "it loses access to its data then",
                    key=target.key,
                    version=plan.current_version,
                    reason=plan.reason,
                    level=logging.ERROR,
                    days=_days(left),
                )

    def _report_drift(self, drift: Drift) -> None:
        """The key's drift as a metric per kind (0 included, so a gauge falls back once the drift is gone); when there
        is any, a WARNING event naming every account and a ``CmkRotation.Drift`` outcome event; an ERROR event for
        each unmanaged account the service does not rotate whose version expires within ``EXPIRY_NEAR_WITHIN``."""
        for kind, count in drift.counts().items():
            drift_accounts.set(count, attributes(key=drift.key.id, kind=kind.value))
        if not drift.found:
            return
        counts = drift.counts()
        emit(
            Event.DRIFT_FOUND,
            drift.summary(),
            key=drift.key,
            version=drift.target_version,
            level=logging.WARNING,
            unmanaged=counts.get(DriftKind.UNMANAGED),
            left=counts[DriftKind.LEFT],
            off_target=counts[DriftKind.OFF_TARGET],
            policy=self.settings.unmanaged.value,
        )
        self._publish("drift", {"key": drift.key.id, **drift.to_dict()})
        if self.settings.unmanaged is UnmanagedPolicy.ENROL:
            return  # the unmanaged accounts are rotated with the others: their expiry is the key's own alert
        for account in drift.expiring(EXPIRY_NEAR_WITHIN.days):
            emit(
                Event.UNMANAGED_EXPIRY_NEAR,
                f"the account is on key version {account.key_version}, which expires at "
                f"{account.expires_on.isoformat() if account.expires_on else '?'}, and ROTATION_TARGETS does not list "
                "it, so the service never repoints it: it loses access to its data then. Add it to the key's accounts "
                "in ROTATION_TARGETS, or set ROTATION_UNMANAGED=enrol",
                key=drift.key,
                account=account.account,
                version=account.key_version,
                level=logging.ERROR,
                days=account.days_until_expiry,
            )

    def _retire(
        self, target: Target, obs: Observation, plan: RotationPlan, unmanaged: Sequence[AccountEncryption] | None
    ) -> None:
        """Retirement (``ROTATION_RETIREMENT``): keep each old version's evidence (``rotation/retirement.py``) and
        disable those unused for ``ROTATION_RETIRE_AFTER``: each with a ledger row (reason ``Retired``), a
        ``rotation.version_retired`` record and a ``CmkRotation.Retired`` outcome event. Not while a worker holds the
        key: the evidence waits for the next sweep. A failure is reported (``rotation.sweep_failed``, step
        ``retirement``) and never stops the key's own sweep."""
        if self.settings.retirement is Retirement.OFF or self.evidence is None:
            return
        reviews = review(obs, plan, unmanaged, mode=self.settings.retirement, app_name=self.settings.app_name)
        try:
            if not reviews or self.lock_for(target.key).busy():
                return
            now, soak = self.clock(), self.settings.retire_after
            since = self.evidence.unused_since(target.key)
            for found in reviews:
                if found.verdict is Verdict.IN_USE and found.version in since:
                    self.evidence.seen_in_use(target.key, found.version)
                elif found.verdict is Verdict.UNUSED and found.version not in since:
                    self.evidence.seen_unused(target.key, found.version, at=now)
                elif found.verdict is Verdict.UNUSED and now - since[found.version] >= soak:
                    self.engine.retire(target.key, found.version)
                    self._record_retirement(target.key, found.version, since[found.version], now)
        except RotationError as exc:
            emit(
                Event.SWEEP_FAILED,
                f"retiring the key's old versions failed: {exc}",
                key=target.key,
                reason=exc.reason,
                level=logging.ERROR,
                step="retirement",
            )

    def _record_retirement(self, key: KeyRef, version: str, unused_since: datetime, now: datetime) -> None:
        entry = LedgerEntry(
            request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"retired:{key.folded_id}/{version}")),
            key=key,
            trigger=Trigger.TIMER,
            created_at=now,
            updated_at=now,
            status=LedgerStatus.SUCCEEDED,
            reason=Reason.RETIRED.value,
            from_version=version,
        )
        self.ledger.get_or_create(entry)
        emit(
            Event.VERSION_RETIRED,
            f"version {version} was disabled: no account has used it since {unused_since.isoformat()}, over "
            f"{self.settings.retire_after} ago (ROTATION_RETIRE_AFTER); it is not deleted, and can be enabled again",
            key=key,
            request_id=entry.request_id,
            version=version,
            reason=Reason.RETIRED,
            level=logging.WARNING,
            unused_since=unused_since.isoformat(),
        )
        self._publish("retired", {**entry.to_dict(), "unused_since": unused_since.isoformat()})

    def _watch_poison(self) -> None:
        """Report each poison queue's messages waiting longer than ``poison_alert_after``: as a metric, and as an
        ERROR event when there are any. The cut-off is wall time: the insertion times are the storage service's."""
        wait = self.timings.poison_alert_after
        try:
            waiting = self.queue.poison_waiting(inserted_before=datetime.now(UTC) - wait)
        except RotationError as exc:
            emit(
                Event.SWEEP_FAILED,
                f"the poison queues could not be read: {exc}",
                reason=exc.reason,
                level=logging.ERROR,
                step="poison",
            )
            return
        for queue, count in waiting.items():
            poison_messages.set(count, attributes(queue=queue))
            if count:
                emit(
                    Event.POISON_WAITING,
                    f"{count} message(s) have waited in {queue} for over {wait}: events or requests "
                    "that no delivery could handle (the runbook says how to read and replay them)",
                    level=logging.ERROR,
                    queue=queue,
                    messages=count,
                )

    def _repair(self) -> list[str]:
        """Send again every request that is still queued or running, untouched for ``repair_after``, on a key that
        nobody holds: its message was lost (a failed send) or its worker died and its message with it."""
        try:
            stuck = self.ledger.unfinished(updated_before=self.clock() - self.timings.repair_after)
        except RotationError as exc:
            emit(
                Event.SWEEP_FAILED,
                f"stuck requests could not be listed: {exc}",
                reason=exc.reason,
                level=logging.ERROR,
                step="repair",
            )
            return []
        repaired: list[str] = []
        for entry in stuck:
            if self.settings.target_for(entry.key) is None:
                continue  # the key left ROTATION_TARGETS: the service no longer acts on it
            request = RotationRequest(
                request_id=entry.request_id,
                key=entry.key,
                trigger=entry.trigger,
                force=entry.force,
                requested_at=entry.created_at,
                compromised_version=entry.compromised_version or None,
                accept_breakage=entry.accept_breakage,
            )
            try:
                if self.lock_for(entry.key).busy():
                    continue
                self.queue.enqueue(request)
            except RotationError as exc:
                emit(
                    Event.SWEEP_FAILED,
                    f"a stuck request could not be sent again: {exc}",
                    key=entry.key,
                    request_id=entry.request_id,
                    reason=exc.reason,
                    level=logging.ERROR,
                    step="repair",
                )
                continue
            emit(
                Event.REQUEST_REPAIRED,
                f"the request was {entry.status.value} since {entry.updated_at.isoformat()} with no worker; sent again",
                key=entry.key,
                request_id=entry.request_id,
                level=logging.WARNING,
                status=entry.status.value,
            )
            repaired.append(entry.request_id)
        return repaired

    # HTTP --------------------------------------------------------------------------------------------------------
    def submit(self, body: bytes, idempotency_key: str | None) -> Answer:
        """``POST /api/rotations``: 202 with the request (the same one for a repeated Idempotency-Key), or 200 with
        the plan for a dry run. Bad input is a 4xx that names the bad value; nothing is written for it. A forced
        request within ``ROTATION_FORCE_COOLDOWN`` of another is 429; storage that fails is 503, both with
        ``Retry-After``."""
        with span(SpanName.SUBMIT, kind=SpanKind.SERVER) as current:
            answer = self._submit(body, idempotency_key)
            current.set_attribute("http.response.status_code", answer.status)
            return answer

    def _submit(self, body: bytes, idempotency_key: str | None) -> Answer:
        parsed = self._submission(body, idempotency_key)
        if isinstance(parsed, Answer):
            return parsed
        request, dry_run, confirmation = parsed
        if request.compromised_version is not None:
            return self._break_glass(request, confirmation)
        if dry_run:
            try:
                return Answer(200, self.engine.dry_run(request, enrolled=self._enrolled(request.key)).to_dict())
            except RotationError as exc:
                return error_answer(502, exc.reason.value, str(exc))
        try:
            # A repeated Idempotency-Key is answered from its row, read before anything is written.
            entry = self.ledger.get(request.request_id) if idempotency_key is not None else None
            if entry is None:
                cooldown = self._force_cooldown(request)
                if cooldown is not None:
                    return cooldown
                entry, send = self._record(request, idempotency_key=idempotency_key)
            else:
                # Still queued: send again, the first send may have been lost.
                send = entry.status is LedgerStatus.QUEUED and entry.force == request.force
        except StorageUnavailable as exc:
            return _storage_answer(exc, None)
        if entry.force != request.force:
            return error_answer(
                422,
                "IdempotencyKeyReused",
                f"Idempotency-Key {quoted(idempotency_key, 80)} was first used with force={str(entry.force).lower()} "
                f"for request {entry.request_id}; use a new key for a different request",
            )
        return self._queued(entry, request, send=send)

    def _queued(self, entry: LedgerEntry, request: RotationRequest, *, send: bool) -> Answer:
        """202 with the request's row and status URL, once its message is sent (when ``send``)."""
        if send:
            try:
                self.queue.enqueue(request)
            except StorageUnavailable as exc:
                return _storage_answer(exc, request.request_id)
        location = f"/api/rotations/{request.request_id}"
        return Answer(202, {**entry.to_dict(), "status_url": location}, {"Location": location})

    def _break_glass(self, request: RotationRequest, confirmation: str | None) -> Answer:
        """A break-glass request (rotation/breakglass.py): without ``confirmation``, 200 with the plan and its token;
        with the plan's token, 202 (the same request for a repeated call); with any other, 409 and the fresh plan."""
        if confirmation is not None:
            # The token names the plan: a repeated confirmation is the same request, answered from its row.
            derived = uuid.uuid5(uuid.NAMESPACE_URL, f"break-glass:{request.key.folded_id}:{confirmation}")
            request = replace(request, request_id=str(derived))
            try:
                entry = self.ledger.get(request.request_id)
            except StorageUnavailable as exc:
                return _storage_answer(exc, None)
            if entry is not None and entry.describes(request):
                return self._queued(entry, request, send=entry.status is LedgerStatus.QUEUED)
        try:
            found, plan = break_glass_plan(self.engine, self.settings, self.discovery, request)
        except UnknownVersion as exc:
            return error_answer(404, "VersionNotFound", str(exc))
        except RotationError as exc:
            return error_answer(502, exc.reason.value, str(exc))
        if plan.blocked:
            return error_answer(409, "KeyBlocked", f"no new version can be created: {plan.message}")
        now = self.clock()
        answer = found.to_dict(at=now)
        if confirmation is None:
            return Answer(200, answer)
        refusal = found.refusal(confirmation, now)
        if refusal is not None:
            return Answer(409, {"error": {"code": "ConfirmationRefused", "message": refusal}, "plan": answer})
        try:
            entry, send = self._record(request)
        except StorageUnavailable as exc:
            return _storage_answer(exc, None)
        return self._queued(entry, request, send=send)

    def _submission(
        self, body: bytes, idempotency_key: str | None
    ) -> tuple[RotationRequest, bool, str | None] | Answer:
        """The request a POST body describes, whether it is a dry run and a break-glass confirmation, or the 4xx answer
        naming what is wrong."""
        if len(body) > MAX_BODY_BYTES:
            return error_answer(413, "BodyTooLarge", f"the body has {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            data = json.loads(body or b"null")
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            return error_answer(400, "InvalidJson", 'the body is not JSON; send {"key": "<key url>", "force": false}')
        if not isinstance(data, dict):
            return error_answer(
                400, "InvalidBody", 'the body must be a JSON object: {"key": "<key url>", "force": false}'
            )
        unknown = sorted(clipped(name, 40) for name in set(data) - _SUBMIT_FIELDS)
        if unknown:
            return error_answer(400, "UnknownField", f"unknown field(s) {unknown}; allowed: {sorted(_SUBMIT_FIELDS)}")
        flags = {name: data.get(name, False) for name in ("force", "dry_run", "accept_breakage")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                return error_answer(400, "InvalidField", f"{name} must be true or false, not {quoted(value, 40)}")
        break_glass = _break_glass_fields(data, flags)
        if isinstance(break_glass, Answer):
            return break_glass
        compromised, confirmation = break_glass
        if not isinstance(data.get("key"), str):
            return error_answer(
                400, "InvalidField", 'key is required: the versionless key URL, "https://<vault>/keys/<name>"'
            )
        try:
            key = KeyRef.parse(data["key"])
        except ValueError as exc:  # KeyRef.parse names the bad URL and the expected shape
            return error_answer(400, "InvalidKey", str(exc))
        target = self.settings.target_for(key)
        if target is None:
            return error_answer(
                403, "KeyNotAllowed", f"key {key.id} is not in ROTATION_TARGETS; the service never acts on it"
            )
        refusal = target.refuses_force() if flags["force"] or compromised else None
        if refusal is not None:
            return error_answer(409, "ForceNotAllowed", refusal)
        try:
            request_id = request_id_for(idempotency_key, key) if idempotency_key is not None else str(uuid.uuid4())
        except InvalidInput as exc:
            return error_answer(400, "InvalidIdempotencyKey", str(exc))
        request = RotationRequest(
            request_id=request_id,
            key=key,
            trigger=Trigger.HTTP,
            force=flags["force"] or compromised is not None,
            requested_at=self.clock(),
            compromised_version=compromised,
            accept_breakage=flags["accept_breakage"],
        )
        return request, flags["dry_run"], confirmation

    def _force_cooldown(self, request: RotationRequest) -> Answer | None:
        """429 when another forced request for the key is younger than ROTATION_FORCE_COOLDOWN (the caller has made sure
        this is not a repeat of a recorded request)."""
        cooldown = self.settings.force_cooldown
        if not request.force:
            return None
        now = self.clock()
        last = self.ledger.last_forced(request.key, since=now - cooldown)
        if last is None or last.request_id == request.request_id:
            return None
        wait = max(1, math.ceil((last.created_at + cooldown - now).total_seconds()))
        return error_answer(
            429,
            "ForceCooldown",
            f"key {request.key.id} was force-rotated by request {last.request_id} at {last.created_at.isoformat()}; "
            f"another forced rotation is allowed {wait} s from now (ROTATION_FORCE_COOLDOWN); a rotation that is "
            "due needs no force",
            {"Retry-After": str(wait)},
        )

    def request(self, request_id: str) -> Answer:
        """``GET /api/rotations/{id}``."""
        try:
            entry = self.ledger.get(request_id)
        except InvalidInput as exc:
            return error_answer(400, "InvalidRequestId", str(exc))  # the id is shown redacted and clipped
        except StorageUnavailable as exc:
            return _storage_answer(exc, None)
        if entry is None:
            return error_answer(404, "RequestNotFound", f"no rotation request {quoted(request_id, 140)} in the ledger")
        return Answer(200, entry.to_dict())

    def fleet_status(self) -> Answer:
        """``GET /api/status``: the CLI's ``status -o json``; a target that cannot be read is reported with its
        error, and a discovery that fails with its own."""
        report = fleet_status(self.engine, self.settings, self.discovery, trigger=Trigger.HTTP, evidence=self.evidence)
        return Answer(200, report)

    # Queue worker ------------------------------------------------------------------------------------------------
    def work(self, message: str | bytes) -> RotationOutcome | None:
        """Run one queued request under its key's lock. None when the message was not run (refused, the lock is
        held and the request was re-enqueued, or the request had already finished).

        ``Redeliver`` for a retryable failure (after recording it) and for a fault of storage or of the lease, so the
        queue delivers the message again (and, after ``maxDequeueCount``, to the poison queue).
        """
        request = self._queued_request(message)
        if request is None:
            return None
        try:
            with span(
                SpanName.WORK,
                kind=SpanKind.CONSUMER,
                traceparent=request.traceparent,
                key=request.key.id,
                request_id=request.request_id,
                trigger=request.trigger.value,
            ) as current:
                outcome = self._work(request)
                if outcome is not None and outcome.status is Status.FAILED:
                    fail(current, outcome.reason.value, outcome.error or outcome.message)
                return outcome
        except TransientError as exc:
            if isinstance(exc, Redeliver):
                raise
            raise Redeliver(
                f"request {request.request_id} for {request.key.id} will be delivered again: {exc}"
            ) from exc

    def _work(self, request: RotationRequest) -> RotationOutcome | None:
        lock = self.lock_for(request.key)
        try:
            lock.acquire()
        except LockHeld:
            self.queue.enqueue(request, delay=self.timings.lock_held_delay)
            emit(
                Event.LOCK_BUSY,
                f"the key is locked by another worker; the request is seen again in {self.timings.lock_held_delay} s",
                key=request.key,
                request_id=request.request_id,
            )
            return None
        try:
            entry = self._open_row(request)
            if entry is None:
                return None
            entry = self._update(entry, lambda e: {"status": LedgerStatus.RUNNING, "attempts": e.attempts + 1})
            if entry is None:
                return None
            outcome = self._reconcile(request, lock)
            lock.raise_if_lost()
            retry = outcome.status is Status.FAILED and outcome.retryable
            fields = _ledger_fields(outcome, final=not retry)
            stored = self._update(entry, lambda _: fields)
            if retry:
                raise Redeliver(outcome.error or outcome.message)
            if stored is not None:
                self._publish(outcome.status.value, outcome.to_dict())
            return outcome
        finally:
            lock.release()

    def _reconcile(self, request: RotationRequest, lock: KeyLock) -> RotationOutcome:
        try:
            target = self.settings.target_for(request.key)
            return self.engine.reconcile(
                request,
                enrolled=self._enrolled(request.key),
                before_write=lock.raise_if_lost,
                on_plan=self._publish_plan,
                census=partial(census, self.discovery, target) if request.compromised_version and target else None,
            )
        except RotationError as exc:
            return RotationOutcome.from_error(request, exc)
        except Exception as exc:  # noqa: BLE001 - a bug (logged with its traceback) must still end the request
            emit(
                Event.INTERNAL_ERROR,
                f"reconciling the key raised {type(exc).__name__}",
                key=request.key,
                request_id=request.request_id,
                level=logging.ERROR,
                exc_info=True,
            )
            return RotationOutcome.from_error(
                request, RotationError(f"internal error {type(exc).__name__}: {clipped(str(exc), 300)}")
            )

    def _enrolled(self, key: KeyRef) -> tuple[AccountRef, ...]:
        """The accounts ``key``'s rotation enrols (``status.enrolments``)."""
        target = self.settings.target_for(key)
        return () if target is None else enrolments(self.settings, self.discovery, [target]).get(target.key, ())

    def give_up(self, message: str | bytes, *, reason: str) -> None:
        """The poison handler: the request will not be retried again; mark it failed and say so.

        It never overrides a copy of the request that holds the key's lock: when the lock is held, the poison message
        goes back on the poison queue for ``poison_retry_delay`` and the handler looks again then (by which time the
        other copy has usually finished the row, and there is nothing left to do).
        """
        request = self._queued_request(message)
        if request is None:
            return
        try:
            with span(
                SpanName.GIVE_UP,
                kind=SpanKind.CONSUMER,
                traceparent=request.traceparent,
                key=request.key.id,
                request_id=request.request_id,
            ):
                self._give_up(request, reason)
        except TransientError as exc:
            if isinstance(exc, Redeliver):
                raise
            raise Redeliver(f"poison request {request.request_id} will be delivered again: {exc}") from exc

    def _give_up(self, request: RotationRequest, reason: str) -> None:
        lock = self.lock_for(request.key)
        try:
            lock.acquire()
        except LockHeld:
            self.queue.defer_poison(request, delay=self.timings.poison_retry_delay)
            emit(
                Event.POISON_DEFERRED,
                "the key is locked by a running copy of the request; the poison handler looks again in "
                f"{self.timings.poison_retry_delay} s",
                key=request.key,
                request_id=request.request_id,
            )
            return
        try:
            entry = self._open_row(request)
            if entry is None:
                return
            error = f"gave up after {entry.attempts} attempt(s): {reason}" + (
                f"; last error: {entry.error}" if entry.error else ""
            )
            lock.raise_if_lost()
            stored = self._update(entry, lambda _: {"status": LedgerStatus.FAILED, "error": error})
            if stored is None:
                return
            emit(
                Event.FAILED,
                f"the request failed for good: {clipped(error, 1000)}",
                key=request.key,
                request_id=request.request_id,
                level=logging.ERROR,
                why=error,
            )
            self._publish("failed", stored.to_dict())
        finally:
            lock.release()

    # Shared ------------------------------------------------------------------------------------------------------
    def _queued_request(self, message: str | bytes) -> RotationRequest | None:
        """The request a queue message carries, when it is valid, for a target, and not a forgery of another key's
        request id; None (logged once) otherwise. Reads only."""
        try:
            request = RotationRequest.from_message(message)
            if self.settings.target_for(request.key) is None:
                raise InvalidInput(f"key {request.key.id} is not in ROTATION_TARGETS; the service never acts on it")
            existing = self.ledger.get(request.request_id)
            if existing is not None and not existing.describes(request):
                raise InvalidInput(
                    f"request id {request.request_id} belongs to another request (of key {existing.key.id}), not to "
                    f"this one for {request.key.id}"
                )
        except InvalidInput as exc:
            _refused(Event.MESSAGE_REJECTED, "a rotation-requests message", exc)
            return None
        except StorageUnavailable as exc:
            raise Redeliver(f"a rotation-requests message could not be checked: {exc}") from exc
        if existing is not None and existing.status.final:
            emit(
                Event.DUPLICATE,
                f"the request is already {existing.status.value}",
                key=request.key,
                request_id=request.request_id,
                status=existing.status.value,
            )
            return None
        return request

    def _open_row(self, request: RotationRequest) -> LedgerEntry | None:
        """The request's unfinished row, created if missing; None when it is final (or, by a race, another key's)."""
        entry, _ = self.ledger.get_or_create(LedgerEntry.for_request(request, at=self.clock()))
        if not entry.describes(request) or entry.status.final:
            return None
        return entry

    def _update(self, entry: LedgerEntry, change: Callable[[LedgerEntry], Mapping[str, Any]]) -> LedgerEntry | None:
        """Apply ``change(row)`` to the row; when another writer changed it meanwhile, read it again and re-apply,
        unless it is final by now (None: the other writer finished the request)."""
        for _ in range(3):
            try:
                return self.ledger.transition(entry, at=self.clock(), **change(entry))
            except (FinalStatus, LedgerConflict):
                fresh = self.ledger.get(entry.request_id)
            if fresh is None or fresh.status.final:
                emit(
                    Event.LEDGER_FINISHED_ELSEWHERE,
                    "another writer finished the request",
                    key=entry.key,
                    request_id=entry.request_id,
                )
                return None
            entry = fresh
        raise LedgerConflict(f"request {entry.request_id} kept changing while it was being updated")

    def _record(self, request: RotationRequest, *, idempotency_key: str | None = None) -> tuple[LedgerEntry, bool]:
        """The request's row (created if new) and whether a queue message must be sent: for a new row, and again for
        a repeat of a still-queued request (its first send may have been lost)."""
        entry, created = self.ledger.get_or_create(
            LedgerEntry.for_request(request, at=self.clock(), idempotency_key=idempotency_key)
        )
        return entry, created or (entry.status is LedgerStatus.QUEUED and entry.force == request.force)

    def _record_and_enqueue(self, request: RotationRequest) -> LedgerEntry:
        entry, send = self._record(request)
        if send:
            self.queue.enqueue(request)
        return entry

    def _publish_plan(self, plan: RotationPlan) -> None:
        """Announce a plan that changes something: a version to create, or accounts to repoint."""
        if plan.create is not None or any(a.action is AccountAction.REPOINT for a in plan.accounts):
            self._publish("planned", plan.to_dict())

    def _publish(self, status: str, outcome: Mapping[str, Any]) -> None:
        if self.publisher is not None:
            self.publisher.publish(status, outcome)


_current: RotationApp | None = None
_current_lock = threading.Lock()


def current_app() -> RotationApp:
    """The process's ``RotationApp``, built from ``os.environ`` on first use (``ConfigError`` names a bad setting)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = RotationApp.build(os.environ)
        return _current


def configure(app: RotationApp | None) -> None:
    """Use ``app`` from now on (the demo and the tests pass one wired to the emulator); None rebuilds from settings."""
    global _current
    with _current_lock:
        _current = app


def _refused(
    event: Event, what: str, exc: Exception, *, event_id: str | None = None, event_type: str | None = None
) -> None:
    """The one log line of a refused input: what it was and why, clipped (the ids are ``described`` already)."""
    why = clipped(str(exc), 300)
    emit(event, f"{what} was refused: {why}", level=logging.WARNING, why=why, event_id=event_id, event_type=event_type)


def _break_glass_fields(data: Mapping[str, Any], flags: Mapping[str, bool]) -> tuple[str | None, str | None] | Answer:
    """A POST body's ``compromised_version`` (lower case, as Key Vault writes version ids) and ``confirmation`` (both
    None for an ordinary request), or the 400 answer naming what is wrong with them. A field sent as null is refused,
    as for ``force``: only an absent one is absent."""
    if "compromised_version" not in data:
        if flags["accept_breakage"] or "confirmation" in data:
            return error_answer(
                400,
                "InvalidField",
                "accept_breakage and confirmation belong to a break-glass request: name its compromised_version",
            )
        return None, None
    compromised, confirmation = data["compromised_version"], data.get("confirmation")
    if not isinstance(compromised, str) or KEY_VERSION_PATTERN.fullmatch(compromised) is None:
        return error_answer(
            400,
            "InvalidField",
            f"compromised_version must be a version id of the key (32 hex digits), not {quoted(compromised, 60)}",
        )
    if flags["force"] or flags["dry_run"]:
        return error_answer(
            400,
            "InvalidField",
            "a break-glass request (compromised_version) is always forced, and its first call, without a "
            "confirmation, is its dry run: send neither force nor dry_run",
        )
    if "confirmation" in data and not (isinstance(confirmation, str) and TOKEN_PATTERN.fullmatch(confirmation)):
        return error_answer(
            400,
            "InvalidConfirmation",
            f"confirmation {quoted(confirmation, 60)} is not a token this service issued: send the confirmation the "
            "plan (the same body without one) answered",
        )
    return compromised.lower(), confirmation


def _days(delta: timedelta) -> float:
    """A duration in days, to a tenth."""
    return round(delta.total_seconds() / 86400, 1)


def _storage_answer(exc: StorageUnavailable, request_id: str | None) -> Answer:
    """503 with Retry-After: the app's storage failed. When the request was recorded but not queued, the answer says
    so: the sweep sends it later, and a retry with the same Idempotency-Key finds it."""
    message = f"the app's storage failed; retry in a minute ({exc})"
    if request_id is not None:
        message = (
            f"request {request_id} was recorded but could not be queued; the timer sweep sends it later, or retry "
            f"with the same Idempotency-Key ({exc})"
        )
    emit(Event.STORAGE_UNAVAILABLE, message, request_id=request_id, level=logging.ERROR)
    return error_answer(503, "StorageUnavailable", message, {"Retry-After": "60"})


def _ledger_fields(outcome: RotationOutcome, *, final: bool) -> dict[str, Any]:
    return {
        "status": LedgerStatus(outcome.status.value) if final else LedgerStatus.QUEUED,
        "reason": outcome.reason.value,
        "from_version": outcome.from_version or "",
        "to_version": outcome.to_version or "",
        "accounts": _account_results(outcome.accounts),
        "error": outcome.error or "",
        "blast_radius": outcome.blast_radius,
    }


def _account_results(results: Sequence[AccountResult]) -> dict[str, Any]:
    """Each account's result for the ledger row. A fleet too large for one Table property keeps every failure it can
    (errors shortened) and counts the rest under ``"summary"``; the log and the outcome event carry every account."""
    full: dict[str, Any] = {r.account.id: r.to_dict() for r in results}
    if _json_chars(full) <= MAX_ACCOUNTS_JSON_CHARS:
        return full
    summary = {"summary": dict(Counter(r.status.value for r in results))}
    kept: dict[str, Any] = {}
    for r in results:
        if r.status is not Status.FAILED:
            continue
        entry = {"status": r.status.value, "reason": r.reason.value, "error": (r.error or "")[:200]}
        if _json_chars({**kept, r.account.id: entry, **summary}) > MAX_ACCOUNTS_JSON_CHARS:
            break
        kept[r.account.id] = entry
    return {**kept, **summary}


def _json_chars(value: Mapping[str, Any]) -> int:
    return len(json.dumps(value, sort_keys=True, separators=(",", ":")))
