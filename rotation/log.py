"""The rotation service's events: one vocabulary (``Event``) and one function (``emit``) for every ``rotation.*`` log
record, whichever module logs it.

``emit`` writes one stdlib record on the ``rotation`` logger. Its ``extra`` carries ``event`` and the keyed fields
(``key``, ``request_id``, ``version``, ``account``, ``reason`` and each event's own, None values left out), so tests
assert on them, and Application Insights stores them as custom dimensions once OpenTelemetry forwards them. The Python
worker, without it, forwards only the formatted text; so the text stands on its own, in one format::

    <event>: [key_url=<key url>] [account=<account id>] [reason=<reason>] [request=<request id>]: <prose>

    rotation.failed: key_url=https://kv.vault.azure.net/keys/cmk reason=PermissionDenied request=0b6c...: creating
    a version failed: ...
    rotation.sweep_completed: 2 enqueued, 0 stuck requests sent again, 0 targets failed

The event name always comes first, then, in this order, those of the four fields the record has (a value with a space
in it, or an empty one, is JSON-quoted), then ``: `` and the prose. A record with none of them is ``<event>: <prose>``.
The key's label is ``key_url``, not ``key``: ``redacted`` treats ``key=...`` as a secret (a Functions key), and the
``RedactingFilter`` on the root's handlers would blank it. The text is built here and nowhere else: a caller passes the
prose and the fields, never a formatted line, and no module but this one names a ``rotation.*`` event in a string (a
unit test scans the source).

Callers pass only identifiers, versions, reasons and error messages: this module must never be given a token, key
material or a connection string, and never formats arbitrary objects into a record.

The engine's events also reach an optional hook (``RotationEngine(on_event=...)``, an ``EventHook``): ``emit`` calls
it after logging with the event, the prose and the same fields. The CLI prints its progress lines from it, so nothing
reads log records to follow a rotation.

Other libraries' records are not so careful: with DEBUG logging and a SAS connection string, urllib3 logs each request
line with its live ``sig=``. ``install_redaction`` puts a ``RedactingFilter`` on the loggers that do that, so their
records are rewritten through ``rotation.redact.redacted`` before any handler sees them. A logger's filter applies
only to records logged on that very logger, not to those of its children, hence the list of names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from enum import StrEnum

from rotation.model import AccountRef, KeyRef
from rotation.reasons import Reason
from rotation.redact import redacted

LOGGER_NAME = "rotation"
logger = logging.getLogger(LOGGER_NAME)

FieldValue = str | int | float | bool | None

# Loggers that write request URLs or headers: urllib3's request lines, azure-core's HTTP logging policies. A filter on
# a logger sees only that logger's own records, so each is named; the root's handlers get the filter too, which covers
# every record that propagates to them (the Functions worker's handler among them).
REDACTED_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3",
    "azure",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.core.pipeline.policies._universal",
)


class Event(StrEnum):
    """Every ``rotation.*`` event the service logs. Each comment says when, and at which level. The values are the
    public interface: the runbook's queries and the Bicep alert match them."""

    # The engine (rotation/engine.py): one reconcile, or one dry run, of one key.
    # INFO: a plan was decided, before anything is carried out (dry_run=true for a dry run: sweep, HTTP, CLI).
    PLANNED = "rotation.planned"
    # INFO: the engine created the key's new version.
    VERSION_CREATED = "rotation.version_created"
    # INFO: a version tagged with this request id (an earlier attempt created it) was adopted instead of creating one.
    VERSION_ADOPTED = "rotation.version_adopted"
    # INFO: an account reports the target version and Succeeded.
    ACCOUNT_UPDATED = "rotation.account_updated"
    # INFO: a reconcile ended succeeded or skipped.
    COMPLETED = "rotation.completed"
    # WARNING: one account did not converge; the others go on, and the reconcile's end says what follows.
    ACCOUNT_FAILED = "rotation.account_failed"
    # WARNING: a reconcile (or its create) failed in a way a retry can fix; the queue delivers the request again (and
    # after host.json's maxDequeueCount the poison handler gives up with rotation.failed). Never an alert.
    ATTEMPT_FAILED = "rotation.attempt_failed"
    # ERROR: a final failure, the page: a reconcile failed in a way no retry can fix, or the poison handler gave up
    # on a request after its last delivery.
    FAILED = "rotation.failed"
    # WARNING: a break-glass request (rotation/breakglass.py) disabled the compromised version, its blast radius in
    # the fields; ERROR when the operator accepted the breakage of accounts still on it, each named.
    COMPROMISED_VERSION_DISABLED = "rotation.compromised_version_disabled"

    # The adapters.
    # WARNING: ARM refused the status URL of an account update; the accepted update stands, the verify re-reads it.
    OPERATION_STATUS_FORBIDDEN = "rotation.operation_status_forbidden"
    # WARNING: an outcome CloudEvent was not published; the rotation is unaffected, its ledger row is the record.
    PUBLISH_FAILED = "rotation.publish_failed"

    # Discovery (rotation/discovery.py): which accounts use the target keys, across subscriptions. Reads only.
    # WARNING: Resource Graph could not be used (its reason); the accounts are listed through ARM per subscription.
    DISCOVERY_FALLBACK = "rotation.discovery_fallback"
    # INFO: a discovery's summary: the path it took, what it searched, the accounts found per key and what failed.
    DISCOVERY_COMPLETED = "rotation.discovery_completed"
    # ERROR: a discovery raised instead of answering (the sweep and the status go on without its accounts).
    DISCOVERY_FAILED = "rotation.discovery_failed"

    # The app's storage (rotation/storage): the key's lock, the ledger, the queue.
    # INFO: the worker (or the CLI, or the poison handler) took the key's lease.
    LOCK_ACQUIRED = "rotation.lock_acquired"
    # INFO: the key's lease was released.
    LOCK_RELEASED = "rotation.lock_released"
    # WARNING: releasing the key's lease failed; the lease expires by itself.
    LOCK_RELEASE_FAILED = "rotation.lock_release_failed"
    # WARNING: a renewal of the key's lease failed and is retried (the lease cannot have expired yet).
    LOCK_RENEWAL_FAILED = "rotation.lock_renewal_failed"
    # ERROR: the key's lease is lost (renewal refused, or none confirmed for 3/4 of it); the holder writes nothing more.
    LOCK_LOST = "rotation.lock_lost"
    # INFO: a request's ledger row was created (queued).
    LEDGER_CREATED = "rotation.ledger_created"
    # INFO: a request's ledger row changed (running, queued again, or final).
    LEDGER_UPDATED = "rotation.ledger_updated"
    # INFO: a request was put on the rotation-requests queue (with its delay).
    ENQUEUED = "rotation.enqueued"

    # The app's use cases (rotation/app.py) and the triggers (function_app.py).
    # WARNING: a key event (Event Grid, or the key-events queue) was refused before anything was written.
    EVENT_IGNORED = "rotation.event_ignored"
    # WARNING: a rotation-requests (or poison) message was refused before anything was written.
    MESSAGE_REJECTED = "rotation.message_rejected"
    # INFO: a queued request whose ledger row is already final was acknowledged without running.
    DUPLICATE = "rotation.duplicate"
    # INFO: the key's lease is held by another worker; the request is queued again with a delay.
    LOCK_BUSY = "rotation.lock_busy"
    # INFO: another writer finished the request's ledger row meanwhile; this one leaves it alone.
    LEDGER_FINISHED_ELSEWHERE = "rotation.ledger_finished_elsewhere"
    # INFO: the poison handler found the key locked by a running copy of the request; it looks again later.
    POISON_DEFERRED = "rotation.poison_deferred"
    # WARNING: the sweep sent again a request left queued or running, untouched, on a key nobody holds.
    REQUEST_REPAIRED = "rotation.request_repaired"
    # ERROR: the sweep found a key that cannot be rotated until someone fixes a finding (e.g. KeyDisabled).
    SWEEP_BLOCKED = "rotation.sweep_blocked"
    # ERROR: the sweep could not check one target, or could not list or send again the stuck requests.
    SWEEP_FAILED = "rotation.sweep_failed"
    # INFO: the timer sweep's summary; ERROR when a target failed. Its absence for 25 hours is an alert.
    SWEEP_COMPLETED = "rotation.sweep_completed"
    # ERROR: the sweep found a key whose current version became due more than a day ago and is still current.
    RENEWAL_OVERDUE = "rotation.renewal_overdue"
    # ERROR: the sweep found a key whose current version expires within 7 days.
    EXPIRY_NEAR = "rotation.expiry_near"
    # WARNING: the sweep (or the status) found drift on a key: accounts on it that ROTATION_TARGETS does not list,
    # listed accounts that left it, or accounts on another version than the target (rotation/drift.py), each named.
    DRIFT_FOUND = "rotation.drift_found"
    # ERROR: an account on a target key that ROTATION_TARGETS does not list (and the service does not enrol) is on a
    # version that expires within 7 days: it loses access to its data then unless someone repoints it.
    UNMANAGED_EXPIRY_NEAR = "rotation.unmanaged_expiry_near"
    # WARNING: the sweep disabled an old version of a key that no account had used for ROTATION_RETIRE_AFTER
    # (rotation/retirement.py); its ledger row has reason Retired.
    VERSION_RETIRED = "rotation.version_retired"
    # ERROR: the sweep found messages waiting in a poison queue (key-events-poison, rotation-requests-poison) for
    # more than 5 minutes: events or requests that no delivery could handle.
    POISON_WAITING = "rotation.poison_waiting"
    # ERROR: the app's storage failed during an HTTP request, which was answered 503.
    STORAGE_UNAVAILABLE = "rotation.storage_unavailable"
    # ERROR, with the traceback: reading one target for a status raised something unexpected; the others are read.
    STATUS_FAILED = "rotation.status_failed"
    # ERROR: a trigger cannot run with the app's settings (the message is delivered again where it would be lost).
    CONFIG_ERROR = "rotation.config_error"
    # ERROR, with the traceback: a bug; a trigger, an HTTP request or a reconcile raised something unexpected.
    INTERNAL_ERROR = "rotation.internal_error"


# What the engine's hook receives: the event, its prose, and the fields of the record (``event`` included).
EventHook = Callable[[Event, str, Mapping[str, FieldValue]], None]

# The fields the text carries after the event name, in this order, with their labels there. No label may be a name
# that rotation.redact treats as a secret's (key, code, sig, token ...): the redaction would blank its value.
_TEXT_FIELDS = (("key", "key_url"), ("account", "account"), ("reason", "reason"), ("request_id", "request"))


def emit(
    event: Event,
    message: str,
    *,
    key: KeyRef | str | None = None,
    request_id: str | None = None,
    version: str | None = None,
    account: AccountRef | None = None,
    reason: Reason | str | None = None,
    level: int = logging.INFO,
    exc_info: bool = False,
    on_event: EventHook | None = None,
    **fields: FieldValue,
) -> None:
    """Log ``event`` at ``level``: its text ``<event>: key_url=... account=... reason=... request=...: <message>``
    (the fields it has), and its fields in ``extra`` (None values are left out). ``exc_info`` adds the traceback of the
    exception being handled. ``on_event`` (the engine's hook) is then called with the event, ``message`` and the
    same fields; it must not raise."""
    extra: dict[str, FieldValue] = {
        "event": event.value,
        "key": key.id if isinstance(key, KeyRef) else key,
        "request_id": request_id,
        "version": version,
        "account": account.id if account else None,
        "reason": reason.value if isinstance(reason, Reason) else reason,
        **fields,
    }
    dimensions = {name: value for name, value in extra.items() if value is not None}
    logger.log(level, render(event, message, dimensions), extra=dimensions, exc_info=exc_info, stacklevel=2)
    if on_event is not None:
        on_event(event, message, dimensions)


def render(event: Event, message: str, fields: Mapping[str, FieldValue]) -> str:
    """The record's self-contained text (the module docstring's format), from the prose and the record's fields."""
    shown = [f"{label}={_value(fields[name])}" for name, label in _TEXT_FIELDS if fields.get(name) is not None]
    return ": ".join([event.value, *([" ".join(shown)] if shown else []), message])


def _value(value: FieldValue) -> str:
    """An identifier as is; one with whitespace in it, or an empty one, JSON-quoted, so the text still parses."""
    shown = str(value)
    return json.dumps(shown) if not shown or any(c.isspace() for c in shown) else shown


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (``msg % args``) through ``redacted`` and clears its ``args``; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a filter runs in the caller's logging call and must never raise into it
            message = f"{record.msg} (arguments dropped: they do not match the format)"
        record.msg = redacted(message)
        record.args = ()
        return True


_REDACTING_FILTER = RedactingFilter()


def install_redaction() -> None:
    """Attach the ``RedactingFilter`` to each of ``REDACTED_LOGGERS`` and to the root logger's handlers present now;
    calling it again adds nothing."""
    for name in REDACTED_LOGGERS:
        logging.getLogger(name).addFilter(_REDACTING_FILTER)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_REDACTING_FILTER)
