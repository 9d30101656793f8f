"""The few exceptions of the rotation service; each class means a different next step for the caller.

::

    RotationError                    base; `reason` is the Reason string for logs, ledger and events
     ├── TransientError              retry later (429, 5xx, connection, lingering provisioning)
     │    ├── ConflictError          ARM 409 RequestConflict: another operation is in flight; back off, retry
     │    ├── OutcomeUnknown         a write was sent but its answer was lost: it may have taken effect; look first
     │    ├── LockHeld               another worker holds the key's lease: re-enqueue the request with a delay
     │    ├── LockLost               the lease could not be renewed: stop writing, let the queue deliver it again
     │    ├── LedgerConflict         another writer changed the ledger row since it was read: read it again
     │    └── StorageUnavailable     the app's storage (queue, lease, ledger) could not be reached or refused
     ├── PermanentError              do not retry; a human must fix something
     │    ├── PermissionDenied       401/403: grant the named permission
     │    ├── NotFound               404: the vault, key or account does not exist
     │    │    └── RequestNotFound   the ledger has no row for the request id
     │    └── InvalidRequest         400/validation: the request or resource is malformed
     │         └── InvalidInput      a bad value from outside (event, message, HTTP body or header): refuse it,
     │                               write nothing, never retry
     ├── RequestExists               the request id is already in the ledger: read that row instead
     ├── FinalStatus                 the ledger row is already succeeded, failed or skipped: nothing more to do
     └── ConfigError                 a bad setting (CLI exit code 2, HTTP 503)

Adapters raise these chained with ``raise ... from exc``. Messages say what to fix and never contain a secret (token,
key, connection string). This module must never catch or swallow anything.
"""

from typing import ClassVar

from rotation.reasons import Reason


class RotationError(Exception):
    """Base of every error the rotation service raises on purpose."""

    reason: ClassVar[Reason] = Reason.ERROR


class TransientError(RotationError):
    """A step failed for a reason that may go away: retry it (429, 5xx, connection reset, LRO failure).

    ``retry_after`` is the server's Retry-After in seconds, when it sent one; the engine waits that long.
    """

    reason: ClassVar[Reason] = Reason.TRANSIENT_FAILURE

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConflictError(TransientError):
    """ARM 409 RequestConflict: another operation on the resource is in flight. Back off and retry."""

    reason: ClassVar[Reason] = Reason.CONFLICT


class OutcomeUnknown(TransientError):
    """A write was sent, and its answer was lost or was a server error that may follow the work (a read timeout, a
    dropped connection, 500, 502, 504): it may have taken effect. Look before writing again."""


class PermanentError(RotationError):
    """A step failed and retrying will not help until a human fixes something."""


class PermissionDenied(PermanentError):
    """401/403: the function's identity lacks a permission; the message names it."""

    reason: ClassVar[Reason] = Reason.PERMISSION_DENIED


class NotFound(PermanentError):
    """404: the vault, key or account does not exist (or is invisible to the function's identity)."""

    reason: ClassVar[Reason] = Reason.NOT_FOUND


class InvalidRequest(PermanentError):
    """400 or a validation failure: the request or the resource is malformed."""

    reason: ClassVar[Reason] = Reason.INVALID_REQUEST


class ConfigError(RotationError, ValueError):
    """A bad setting or input; the message names the setting or value and how to fix it (CLI exit code 2).
    A ``ValueError`` too, so parsing code can catch bad values the usual way."""

    reason: ClassVar[Reason] = Reason.CONFIG_ERROR


class InvalidInput(InvalidRequest, ValueError):
    """A value from outside (an event, a queue message, an HTTP body or header) is malformed; the message names it
    and says what a valid one looks like. Nothing is written for it and it is never retried."""


class LockHeld(TransientError):
    """Another worker holds the key's lease."""


class LockLost(TransientError):
    """This worker's lease could not be renewed, so another worker may hold the key now."""


class LedgerConflict(TransientError):
    """The ledger row changed since it was read (its ETag no longer matches)."""


class StorageUnavailable(TransientError):
    """The app's storage account (queue, lease or ledger) could not be reached, or refused the call."""


class RequestNotFound(NotFound, LookupError):
    """The ledger has no row for this request id."""


class RequestExists(RotationError):
    """The ledger already has a row for this request id."""


class FinalStatus(RotationError):
    """The ledger row is already in a final status and cannot change."""
