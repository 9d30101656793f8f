"""The Functions app's use cases: one method per trigger, with no ``azure.functions`` import.

    on_key_event   parse the event, check ROTATION_TARGETS, record and enqueue a request         (< 1 s)
    sweep          plan every target; enqueue the keys that are due or whose accounts drift
    submit         validate an HTTP body; answer the plan (dry run) or record and enqueue      (202)
    request        the ledger row of one request
    fleet_status   every target's versions and accounts, as the CLI's ``status --json`` prints
    work           the queue worker: per-key lock, ledger row, ``reconcile``, outcome event
    give_up        the poison handler: mark the ledger row failed and emit a failure event

Triggers only parse, check and enqueue; ``work`` does the slow part under the key's lock, so duplicate events, retries,
a racing timer and a racing HTTP request all funnel into one serialised ``reconcile`` that re-derives its decision from
Azure's state. Inputs from outside (events, HTTP bodies, queue messages) are hints that name a key: anything not in
``ROTATION_TARGETS`` is refused, and nothing outside the targets is ever read or written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rotation.config import Settings
from rotation.connection import AzureConnection
from rotation.engine import RotationEngine
from rotation.errors import ConfigError, RotationError
from rotation.events import EventRejected, parse_key_event
from rotation.model import (
    AccountAction,
    AccountResult,
    Clock,
    KeyRef,
    RotationOutcome,
    RotationPlan,
    RotationRequest,
    Status,
    Trigger,
    system_clock,
)
from rotation.notify import OutcomePublisher
from rotation.status import target_status
from rotation.storage import (
    FINAL_STATUSES,
    MAX_ACCOUNTS_JSON_CHARS,
    InvalidInput,
    KeyLock,
    Ledger,
    LedgerEntry,
    LockHeld,
    RotationQueue,
    StorageAccount,
    decode_request,
    request_id_for,
)

log = logging.getLogger("rotation")

LOCK_HELD_DELAY = 30  # seconds before a request whose key is locked is seen again
MAX_BODY_BYTES = 16 * 1024
_SUBMIT_FIELDS = frozenset({"key", "force", "dry_run"})


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, JSON body and headers. The trigger layer turns it into an ``HttpResponse``."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}})


@dataclass
class RotationApp:
    settings: Settings
    engine: RotationEngine
    queue: RotationQueue
    ledger: Ledger
    lock_for: Callable[[str], KeyLock]
    publisher: OutcomePublisher | None = None
    clock: Clock = system_clock

    @classmethod
    def build(
        cls,
        env: Mapping[str, str],
        *,
        connection: AzureConnection | None = None,
        clock: Clock = system_clock,
    ) -> RotationApp:
        """Everything from app settings; ``connection`` replaces the default (managed identity, public cloud)."""
        settings = Settings.from_env(env)
        connection = connection or AzureConnection.default(settings)
        try:
            storage = StorageAccount.from_settings(env)
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from exc
        engine = RotationEngine(connection.key_vault(), connection.accounts(), settings, clock=clock)
        return cls(
            settings=settings,
            engine=engine,
            queue=storage.rotation_queue(),
            ledger=storage.ledger(),
            lock_for=storage.key_lock,
            publisher=connection.publisher(settings),
            clock=clock,
        )

    # Event Grid --------------------------------------------------------------------------------------------------
    def on_key_event(self, *, event_id: object, event_type: object, subject: object, data: Any) -> str | None:
        """Record and enqueue a request for a target key's event; the request id, or None when it was ignored.
        The arguments are the event's fields as delivered: anything unusable is logged and ignored.

        Duplicate deliveries of one event map to one request id: the ledger keeps one row, and the worker's lock and
        re-derived decision make a second queue message harmless.
        """
        try:
            event = parse_key_event(event_id=event_id, event_type=event_type, subject=subject, data=data)
        except EventRejected as exc:
            fields = {"event_id": str(event_id)[:100], "event_type": str(event_type)[:100], "why": str(exc)}
            log.info("rotation.event_ignored", extra=fields)
            return None
        if self.settings.target_for(event.key) is None:
            log.warning(
                "rotation.event_ignored",
                extra={"event_id": event.event_id, "key": event.key.id, "why": "the key is not in ROTATION_TARGETS"},
            )
            return None
        try:
            request_id = request_id_for(f"event-{event.event_id}", event.key.id)
        except InvalidInput as exc:  # an id Event Grid never sends: too long, or not printable ASCII
            log.warning("rotation.event_ignored", extra={"event_id": event.event_id[:100], "why": str(exc)})
            return None
        request = RotationRequest(
            request_id=request_id,
            key=event.key,
            trigger=event.trigger,
            requested_at=self.clock(),
            event_version=event.version,
        )
        self._record_and_enqueue(request)
        return request.request_id

    # Timer -------------------------------------------------------------------------------------------------------
    def sweep(self) -> list[str]:
        """Enqueue every target whose key is due or whose accounts drift; the request ids."""
        enqueued: list[str] = []
        for target in self.settings.targets:
            request = RotationRequest(
                request_id=str(uuid.uuid4()), key=target.key, trigger=Trigger.TIMER, requested_at=self.clock()
            )
            try:
                plan = self.engine.dry_run(request)
            except RotationError as exc:
                log.error("rotation.sweep_failed", extra={"key": target.key.id, "reason": exc.reason.value})
                continue
            if plan.blocked:  # nothing the worker could do; the finding is what an operator must fix
                log.error("rotation.sweep_blocked", extra={"key": target.key.id, "reason": plan.reason.value})
                continue
            drifting = any(a.action in (AccountAction.REPOINT, AccountAction.WAIT) for a in plan.accounts)
            if plan.create is None and not drifting:
                continue
            self._record_and_enqueue(request)
            enqueued.append(request.request_id)
        return enqueued

    # HTTP --------------------------------------------------------------------------------------------------------
    def submit(self, body: bytes, idempotency_key: str | None) -> Answer:
        """``POST /api/rotations``: 202 with the request (the same one for a repeated Idempotency-Key), or 200 with
        the plan for a dry run. Bad input is a 4xx that names the bad value; nothing is written for it."""
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "BodyTooLarge", f"the body has {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            data = json.loads(body or b"null")
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            return _error(400, "InvalidJson", 'the body is not JSON; send {"key": "<key url>", "force": false}')
        if not isinstance(data, dict):
            return _error(400, "InvalidBody", 'the body must be a JSON object: {"key": "<key url>", "force": false}')
        unknown = sorted(set(data) - _SUBMIT_FIELDS)
        if unknown:
            return _error(400, "UnknownField", f"unknown field(s) {unknown}; allowed: {sorted(_SUBMIT_FIELDS)}")
        flags = {name: data.get(name, False) for name in ("force", "dry_run")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                return _error(400, "InvalidField", f"{name} must be true or false, not {json.dumps(value)[:40]}")
        if not isinstance(data.get("key"), str):
            return _error(
                400, "InvalidField", 'key is required: the versionless key URL, "https://<vault>/keys/<name>"'
            )
        try:
            key = KeyRef.parse(data["key"])
        except ValueError as exc:  # KeyRef.parse names the bad URL and the expected shape
            return _error(400, "InvalidKey", str(exc))
        if self.settings.target_for(key) is None:
            return _error(
                403, "KeyNotAllowed", f"key {key.id} is not in ROTATION_TARGETS; the service never acts on it"
            )
        try:
            request_id = request_id_for(idempotency_key, key.id) if idempotency_key is not None else str(uuid.uuid4())
        except InvalidInput as exc:
            return _error(400, "InvalidIdempotencyKey", str(exc))
        request = RotationRequest(
            request_id=request_id, key=key, trigger=Trigger.HTTP, force=flags["force"], requested_at=self.clock()
        )
        if flags["dry_run"]:
            try:
                return Answer(200, self.engine.dry_run(request).to_dict())
            except RotationError as exc:
                return _error(502, exc.reason.value, str(exc))
        entry = self._record_and_enqueue(request, idempotency_key=idempotency_key)
        if entry.force != request.force:
            return _error(
                422,
                "IdempotencyKeyReused",
                f"Idempotency-Key {idempotency_key!r} was first used with force={str(entry.force).lower()} for "
                f"request {entry.request_id}; use a new key for a different request",
            )
        location = f"/api/rotations/{request.request_id}"
        return Answer(202, {**_row(entry), "status_url": location}, {"Location": location})

    def request(self, request_id: str) -> Answer:
        """``GET /api/rotations/{id}``."""
        try:
            entry = self.ledger.get(request_id)
        except InvalidInput as exc:
            return _error(400, "InvalidRequestId", str(exc))
        if entry is None:
            return _error(404, "RequestNotFound", f"no rotation request {request_id!r} in the ledger")
        return Answer(200, _row(entry))

    def fleet_status(self) -> Answer:
        """``GET /api/status``: the CLI's ``status --json``."""
        keys = [target_status(self.engine, self.settings, t, trigger=Trigger.HTTP) for t in self.settings.targets]
        return Answer(200, {"keys": keys})

    # Queue worker ------------------------------------------------------------------------------------------------
    def work(self, message: str | bytes) -> RotationOutcome | None:
        """Run one queued request under its key's lock. None when the message was not run (malformed, the lock is
        held and the request was re-enqueued, or the request had already finished).

        Raises ``RotationError`` for a retryable failure, after recording it, so the queue delivers the message again
        (and, after ``maxDequeueCount``, to the poison queue).
        """
        try:
            fields = decode_request(message)
            request = _request(fields)
        except InvalidInput as exc:
            log.error("rotation.message_rejected", extra={"why": str(exc)})
            return None
        lock = self.lock_for(request.key.id)
        try:
            lock.acquire()
        except LockHeld:
            self.queue.enqueue(fields, visibility_timeout=LOCK_HELD_DELAY)
            log.info("rotation.lock_busy", extra={"key": request.key.id, "request_id": request.request_id})
            return None
        try:
            entry, _ = self.ledger.get_or_create(self._entry(request))
            if entry.status in FINAL_STATUSES:
                log.info("rotation.duplicate", extra={"request_id": request.request_id, "status": entry.status})
                return None
            entry = self.ledger.transition(entry, at=self.clock(), status="running", attempts=entry.attempts + 1)
            try:
                outcome = self.engine.reconcile(request, before_write=lock.raise_if_lost, on_plan=self._publish_plan)
            except RotationError as exc:
                outcome = RotationOutcome.from_error(request, exc)
            lock.raise_if_lost()
            retry = outcome.status == "failed" and outcome.retryable
            self.ledger.transition(entry, at=self.clock(), **_ledger_fields(outcome, final=not retry))
            if retry:
                raise RotationRetry(outcome.error or outcome.message)
            self._publish(outcome.status.value, outcome.to_dict())
            return outcome
        finally:
            lock.release()

    def give_up(self, message: str | bytes, *, reason: str) -> None:
        """The poison handler: the request will not be retried again; mark it failed and say so."""
        try:
            request = _request(decode_request(message))
        except InvalidInput as exc:
            log.error("rotation.message_rejected", extra={"why": str(exc)})
            return
        entry, _ = self.ledger.get_or_create(self._entry(request))
        if entry.status in FINAL_STATUSES:
            return
        error = f"gave up after {entry.attempts} attempt(s): {reason}" + (
            f"; last error: {entry.error}" if entry.error else ""
        )
        entry = self.ledger.transition(entry, at=self.clock(), status="failed", error=error)
        log.error(
            "rotation.failed",
            extra={"event": "rotation.failed", "key": request.key.id, "request_id": request.request_id, "why": error},
        )
        self._publish("failed", _row(entry))

    # Shared ------------------------------------------------------------------------------------------------------
    def _entry(self, request: RotationRequest, *, idempotency_key: str | None = None) -> LedgerEntry:
        now = self.clock()
        return LedgerEntry(
            request_id=request.request_id,
            key=request.key.id,
            trigger=request.trigger.value,
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
            force=request.force,
        )

    def _record_and_enqueue(self, request: RotationRequest, *, idempotency_key: str | None = None) -> LedgerEntry:
        entry, created = self.ledger.get_or_create(self._entry(request, idempotency_key=idempotency_key))
        if created or (entry.status == "queued" and entry.force == request.force):
            self.queue.enqueue(_message(request))  # a repeat of a queued request re-sends: the first send may be lost
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


class RotationRetry(RotationError):
    """A transient failure was recorded; raising lets the queue deliver the request again."""


def _message(request: RotationRequest) -> dict[str, Any]:
    requested_at = request.requested_at or system_clock()
    return {
        "request_id": request.request_id,
        "key": request.key.id,
        "trigger": request.trigger.value,
        "force": request.force,
        "requested_at": requested_at.isoformat(),
        "event_version": request.event_version,
    }


def _request(fields: Mapping[str, Any]) -> RotationRequest:
    """The request a decoded queue message describes; ``InvalidInput`` when its key or trigger is not ours."""
    try:
        return RotationRequest(
            request_id=fields["request_id"],
            key=KeyRef.parse(fields["key"]),
            trigger=Trigger(fields["trigger"]),
            force=fields["force"],
            requested_at=datetime.fromisoformat(fields["requested_at"]),
            event_version=fields.get("event_version"),
        )
    except ValueError as exc:
        raise InvalidInput(f"the queue message describes no valid request: {exc}") from exc


def _ledger_fields(outcome: RotationOutcome, *, final: bool) -> dict[str, Any]:
    return {
        "status": outcome.status.value if final else "queued",
        "reason": outcome.reason.value,
        "from_version": outcome.from_version or "",
        "to_version": outcome.to_version or "",
        "accounts": _account_results(outcome.accounts),
        "error": outcome.error or "",
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


def _row(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "request_id": entry.request_id,
        "key": entry.key,
        "trigger": entry.trigger,
        "status": entry.status,
        "reason": entry.reason,
        "from_version": entry.from_version or None,
        "to_version": entry.to_version or None,
        "accounts": dict(entry.accounts),
        "error": entry.error or None,
        "attempts": entry.attempts,
        "created_at": entry.created_at.isoformat(),
        "updated_at": entry.updated_at.isoformat(),
    }
