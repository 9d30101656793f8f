"""The Functions app's state: the rotation queue, the per-key lock and the ledger, all in ``AzureWebJobsStorage``.

Everything lives in the storage account the Functions host already requires (Azurite locally)::

    queue  rotation-requests                      one JSON message per rotation request (base64 text, see below)
    queue  rotation-requests-poison               where the host moves a message after maxDequeueCount failures
    blob   rotation-locks/<vault host>/<key name> one lease per key: 60 s, renewed every 20 s while a worker holds it
    table  rotationledger                         one row per request, plus one index row per request (see Ledger)

A worker killed mid-rotation never releases its lease; the lease then expires ``duration`` seconds after its last
renewal and the next worker acquires it. Nothing here waits for that: ``KeyLock.acquire`` fails at once with
``LockHeld`` and the caller re-enqueues the request with a delay.

Errors; each class is a different next step for the caller::

    StorageError
    ├── InvalidInput      a bad value from outside (message, key id, Idempotency-Key, field): reject it, never retry
    ├── LockHeld          another worker holds the key's lease: re-enqueue the request with a delay
    ├── LockLost          the lease could not be renewed: stop writing, let the queue deliver the request again
    ├── RequestExists     the request id is already in the ledger: read that row (``Ledger.get_or_create`` does)
    ├── RequestNotFound   the ledger has no row for the request id
    ├── LedgerConflict    another writer changed the row since it was read (ETag): read it again and re-decide
    └── FinalStatus       the row is already succeeded, failed or skipped: nothing more to do for this request

azure-core errors that are not one of these (the account unreachable after azure-core's own retries, 403) propagate
unchanged.

This module must never log or store a token, an account key or a connection string; never wrap azure-core's HTTP
retries in a loop of its own; and never read the clock for a stored timestamp (callers pass ``at``/``created_at``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from types import TracebackType
from typing import Any, NotRequired, TypedDict
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableEntity, UpdateMode
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobLeaseClient, ContainerClient
from azure.storage.queue import QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from rotation.errors import InvalidRequest, NotFound, RotationError, TransientError

log = logging.getLogger("rotation")

REQUESTS_QUEUE = "rotation-requests"
LOCKS_CONTAINER = "rotation-locks"
LEDGER_TABLE = "rotationledger"

STATUSES = ("queued", "running", "succeeded", "failed", "skipped")
FINAL_STATUSES = frozenset({"succeeded", "failed", "skipped"})

MAX_ERROR_CHARS = 2000
"""Longer ``error`` texts are cut to this length (a Table string property holds at most 32 K characters)."""
MAX_ACCOUNTS_JSON_CHARS = 32_000
"""The most a row's ``accounts`` may take as compact JSON (a Table string property holds at most 32 K characters)."""
_MAX_VISIBILITY_TIMEOUT = 7 * 24 * 3600  # the queue's default message time-to-live; the delay must be shorter


class StorageError(RotationError):
    """Base class of this module's errors."""


class InvalidInput(StorageError, InvalidRequest, ValueError):
    """A value from outside is malformed; the message names it and says what a valid one looks like."""


class LockHeld(StorageError, TransientError):
    """Another worker holds the key's lease."""


class LockLost(StorageError, TransientError):
    """This worker's lease could not be renewed, so another worker may hold the key now."""


class RequestExists(StorageError):
    """The ledger already has a row for this request id."""


class RequestNotFound(StorageError, NotFound, LookupError):
    """The ledger has no row for this request id."""


class LedgerConflict(StorageError, TransientError):
    """The ledger row changed since it was read (its ETag no longer matches)."""


class FinalStatus(StorageError):
    """The ledger row is already in a final status and cannot change."""


# --- key ids -----------------------------------------------------------------------------------------------------

_KEY_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_KEY_VERSION = re.compile(r"[0-9A-Za-z]{1,64}")
_HOST = re.compile(r"[0-9a-z.-]{1,253}(:[0-9]{1,5})?")


def _key_parts(key_id: object) -> tuple[str, str]:
    """``(vault host, key name)``, both lower case, from the versionless ``https://<vault host>/keys/<name>``.

    Key Vault names are case-insensitive, so the lock and the ledger partition use the lower-case form: two spellings
    of one key must share one lock. The default port ``:443`` is dropped for the same reason.
    """
    example = "https://<vault>.vault.azure.net/keys/<key name>"
    if not isinstance(key_id, str):
        raise InvalidInput(f"key id must be a string like {example}, got {type(key_id).__name__}")
    parts = urlsplit(key_id)
    segments = parts.path.removesuffix("/").split("/")
    host = parts.netloc.lower().removesuffix(":443")
    if len(segments) == 4 and segments[1] == "keys":
        raise InvalidInput(f"key id {key_id[:300]!r} names a version; use the versionless key URL {example}")
    valid = (
        parts.scheme == "https"
        and _HOST.fullmatch(host) is not None
        and not parts.query
        and not parts.fragment
        and len(segments) == 3
        and segments[:2] == ["", "keys"]
        and _KEY_NAME.fullmatch(segments[2]) is not None
    )
    if not valid:
        raise InvalidInput(f"key id {key_id[:300]!r} is not a Key Vault key URL; use {example}")
    return host, segments[2].lower()


def _canonical_key(key_id: str) -> str:
    host, name = _key_parts(key_id)
    return f"https://{host}/keys/{name}"


def lock_blob_name(key_id: str) -> str:
    """The lock blob's name for a key: ``<vault host>/<key name>`` (lower case)."""
    host, name = _key_parts(key_id)
    return f"{host}/{name}"


def ledger_partition(key_id: str) -> str:
    """The ledger's PartitionKey for a key.

    Table keys may not contain ``/ \\ # ?`` (and a vault host may carry ``:port``), so the partition is the unpadded
    URL-safe base64 of the canonical key URL ``https://<vault host>/keys/<key name>`` (lower case, no version). The
    alphabet is ``A-Z a-z 0-9 - _``, and the result is always longer than the index partition's name ``requests``, so
    the two never collide.
    """
    return urlsafe_b64encode(_canonical_key(key_id).encode()).decode().rstrip("=")


# --- Idempotency-Key ---------------------------------------------------------------------------------------------

_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d3c52-7a8e-5b0f-9c4d-2e6a1b9f0c37")
_MAX_IDEMPOTENCY_KEY = 200


def request_id_for(idempotency_key: str, key_id: str) -> str:
    """The request id for an ``Idempotency-Key`` header on a POST for ``key_id``; the same inputs give the same id.

    The id is a UUIDv5 of ``<canonical key URL>|<idempotency key>``, so the same header sent for two keys names two
    requests, and a retried POST finds the request its first attempt created.
    """
    if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= _MAX_IDEMPOTENCY_KEY:
        size = f"{len(idempotency_key)} characters" if isinstance(idempotency_key, str) else "no text"
        raise InvalidInput(
            f"Idempotency-Key must be 1-{_MAX_IDEMPOTENCY_KEY} printable ASCII characters; got {size}. "
            "Send a short unique token such as a UUID."
        )
    for position, char in enumerate(idempotency_key):
        if not " " <= char <= "~":
            raise InvalidInput(
                f"Idempotency-Key has the non-printable or non-ASCII character {char!r} at position {position}; "
                "use printable ASCII only, such as a UUID."
            )
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{_canonical_key(key_id)}|{idempotency_key}"))


# --- queue messages ----------------------------------------------------------------------------------------------


class RotationRequestMessage(TypedDict):
    """One message on the rotation queue."""

    request_id: str
    key: str
    trigger: str
    force: bool
    requested_at: str
    event_version: NotRequired[str | None]


_REQUEST_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
_TRIGGER = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_REQUIRED_FIELDS = ("request_id", "key", "trigger", "force", "requested_at")
_OPTIONAL_FIELDS = ("event_version",)


def _check_request_id(request_id: object) -> str:
    if not isinstance(request_id, str) or _REQUEST_ID.fullmatch(request_id) is None:
        shown = repr(request_id[:140]) if isinstance(request_id, str) else type(request_id).__name__
        raise InvalidInput(
            f"request id {shown} is not valid; use 1-128 letters, digits, '.', '_' or '-' starting with a letter or "
            "digit (a UUID, for example)"
        )
    return request_id


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, got {value!r}; pass e.g. clock.now() in UTC")
    return value


def _validated_request(message: object) -> RotationRequestMessage:
    if not isinstance(message, Mapping):
        raise InvalidInput(f"a rotation request must be a JSON object, got {type(message).__name__}")
    missing = [name for name in _REQUIRED_FIELDS if name not in message]
    if missing:
        raise InvalidInput(f"rotation request is missing {', '.join(missing)}; required: {', '.join(_REQUIRED_FIELDS)}")
    unknown = sorted(str(name) for name in message if name not in _REQUIRED_FIELDS + _OPTIONAL_FIELDS)
    if unknown:
        raise InvalidInput(
            f"rotation request has unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(_REQUIRED_FIELDS + _OPTIONAL_FIELDS)}"
        )
    request_id = _check_request_id(message["request_id"])
    key = message["key"]
    _key_parts(key)
    trigger = message["trigger"]
    if not isinstance(trigger, str) or _TRIGGER.fullmatch(trigger) is None:
        raise InvalidInput(
            f"rotation request field 'trigger' must be a name such as 'KeyNearExpiry' or 'http', got {trigger!r}"
        )
    force = message["force"]
    if not isinstance(force, bool):
        raise InvalidInput(f"rotation request field 'force' must be true or false, got {force!r}")
    requested_at = message["requested_at"]
    try:
        parsed = datetime.fromisoformat(requested_at) if isinstance(requested_at, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidInput(
            f"rotation request field 'requested_at' must be an ISO 8601 time with a UTC offset, such as "
            f"'2025-01-31T12:00:00+00:00', got {requested_at!r}"
        )
    validated = RotationRequestMessage(
        request_id=request_id, key=key, trigger=trigger, force=force, requested_at=requested_at
    )
    if "event_version" in message:
        version = message["event_version"]
        if version is not None and (not isinstance(version, str) or _KEY_VERSION.fullmatch(version) is None):
            raise InvalidInput(
                f"rotation request field 'event_version' must be a Key Vault key version (letters and digits) or "
                f"null, got {version!r}"
            )
        validated["event_version"] = version
    return validated


def encode_request(message: Mapping[str, Any]) -> str:
    """The queue text (JSON) for a rotation request; raises ``InvalidInput`` naming the first bad field."""
    return json.dumps(_validated_request(message), separators=(",", ":"), sort_keys=True)


def decode_request(text: str | bytes) -> RotationRequestMessage:
    """The rotation request in a queue message body (as the trigger hands it over: JSON text, already base64-decoded).

    Raises ``InvalidInput`` naming what is wrong; the poison handler and the worker both use it.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"rotation request is not UTF-8 text (byte {exc.start}); enqueue JSON text") from exc
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"rotation request is not JSON ({exc.msg} at character {exc.pos}); enqueue a JSON object"
        ) from exc
    return _validated_request(message)


# --- the queue ---------------------------------------------------------------------------------------------------

_QUEUE_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,54}[a-z0-9]")


class RotationQueue:
    """The queue the triggers write rotation requests to and the worker reads them from.

    Raises ``InvalidInput`` for a bad message or delay; azure-core errors propagate.
    """

    def __init__(
        self, account_url: str, credential: Any = None, *, queue_name: str = REQUESTS_QUEUE, **client_kwargs: Any
    ) -> None:
        self._bind(QueueServiceClient(account_url, credential=credential, **client_kwargs), queue_name)

    @classmethod
    def from_connection_string(
        cls, conn_str: str, *, queue_name: str = REQUESTS_QUEUE, **client_kwargs: Any
    ) -> RotationQueue:
        queue = cls.__new__(cls)
        queue._bind(QueueServiceClient.from_connection_string(conn_str, **client_kwargs), queue_name)
        return queue

    def _bind(self, service: QueueServiceClient, queue_name: str) -> None:
        if _QUEUE_NAME.fullmatch(queue_name) is None:
            raise InvalidInput(
                f"queue name {queue_name!r} is not valid; use 3-56 lower-case letters, digits and single hyphens "
                "(the host appends '-poison' for the poison queue)"
            )
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        # The Functions host's queue trigger decodes message text as base64 by default (host.json
        # extensions.queues.messageEncoding = "base64"), so the text goes on the wire base64-encoded.
        self._requests = service.get_queue_client(
            queue_name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )
        self._poison = service.get_queue_client(self.poison_queue_name)

    def ensure(self) -> None:
        """Create the queue and its poison queue if they do not exist."""
        for queue in (self._requests, self._poison):
            with suppress(ResourceExistsError):
                queue.create_queue()

    def enqueue(self, message: Mapping[str, Any], *, visibility_timeout: int = 0) -> None:
        """Put a rotation request on the queue, hidden for ``visibility_timeout`` seconds (a delayed retry)."""
        text = encode_request(message)
        if isinstance(visibility_timeout, bool) or not isinstance(visibility_timeout, int):
            raise InvalidInput(f"visibility_timeout must be whole seconds, got {visibility_timeout!r}")
        if not 0 <= visibility_timeout < _MAX_VISIBILITY_TIMEOUT:
            raise InvalidInput(
                f"visibility_timeout must be 0 to {_MAX_VISIBILITY_TIMEOUT - 1} seconds (less than the message's "
                f"7-day time to live), got {visibility_timeout}"
            )
        try:
            self._requests.send_message(text, visibility_timeout=visibility_timeout)
        except ResourceNotFoundError:
            # A fresh storage account has no queue yet: create it once, then send.
            self.ensure()
            self._requests.send_message(text, visibility_timeout=visibility_timeout)
        log.info(
            "rotation.enqueued",
            extra={"request_id": message["request_id"], "key": message["key"], "delay": visibility_timeout},
        )


# --- the per-key lock --------------------------------------------------------------------------------------------


class KeyLock:
    """A blob lease that lets one worker at a time rotate a key; use it as a context manager.

    ``acquire`` raises ``LockHeld`` at once when another worker holds the lease. While held, a daemon thread renews
    the lease every ``renew_every`` seconds (default: a third of ``duration``). If storage refuses a renewal, or none
    has got through for three quarters of ``duration``, ``lost`` turns true (and ``rotation.lock_lost`` is logged
    once the renewer notices); call ``raise_if_lost()`` before each write.
    """

    def __init__(
        self, locks: ContainerClient, key_id: str, *, duration: int = 60, renew_every: float | None = None
    ) -> None:
        if isinstance(duration, bool) or not isinstance(duration, int) or not 15 <= duration <= 60:
            raise InvalidInput(f"lock duration must be 15-60 whole seconds (Azure's lease limits), got {duration!r}")
        interval = duration / 3 if renew_every is None else renew_every
        if not 0 < interval <= duration / 2:
            raise InvalidInput(
                f"renew_every must be more than 0 and at most half of duration ({duration}), got {interval!r}"
            )
        self.key_id = key_id
        self.blob_name = lock_blob_name(key_id)
        self._container = locks
        self._blob = locks.get_blob_client(self.blob_name)
        self._lease = BlobLeaseClient(self._blob)
        self._duration = duration
        self._renew_every = interval
        self._held = False
        self._renewed_at = 0.0  # time.monotonic() of the last acquire or renewal that storage confirmed
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._renewer: threading.Thread | None = None

    @classmethod
    def from_connection_string(
        cls,
        conn_str: str,
        key_id: str,
        *,
        container_name: str = LOCKS_CONTAINER,
        duration: int = 60,
        renew_every: float | None = None,
        **client_kwargs: Any,
    ) -> KeyLock:
        container = ContainerClient.from_connection_string(conn_str, container_name, **client_kwargs)
        return cls(container, key_id, duration=duration, renew_every=renew_every)

    @property
    def held(self) -> bool:
        """True between a successful ``acquire`` and ``release`` (even if the lease was since lost)."""
        return self._held

    @property
    def lost(self) -> bool:
        """True once storage refused a renewal, or no renewal got through for so long that the lease may have
        expired (a renewal can hang for minutes inside the storage client's own retries): another worker may hold
        the key now."""
        if self._lost.is_set():
            return True
        return self._held and time.monotonic() - self._renewed_at >= self._duration * 3 / 4  # a quarter as margin

    def raise_if_lost(self) -> None:
        """Raise ``LockLost`` when the lease may no longer be ours; call it before every write."""
        if self.lost:
            raise LockLost(f"the lock on {self.key_id} was lost (renewal failed); stop and let the queue retry")

    def acquire(self) -> None:
        """Take the key's lease and start renewing it; ``LockHeld`` if another worker has it."""
        if self._held:
            raise RuntimeError(f"this KeyLock already holds {self.blob_name}")
        try:
            self._take_lease()
        except ResourceNotFoundError:
            self._create_lock_blob()
            self._take_lease()
        self._renewed_at = time.monotonic()
        self._held = True
        self._stop.clear()
        self._lost.clear()
        self._renewer = threading.Thread(target=self._renew, name=f"lock-renewer {self.blob_name}", daemon=True)
        self._renewer.start()
        log.info("rotation.lock_acquired", extra={"key": self.key_id, "lock": self.blob_name})

    def release(self) -> None:
        """Stop renewing and release the lease. A failed release is logged: the lease then simply expires."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if not self._held:
            return
        self._held = False
        try:
            self._lease.release()
        except HttpResponseError as exc:
            log.warning(
                "rotation.lock_release_failed",
                extra={"key": self.key_id, "lock": self.blob_name, "error": _service_error(exc)},
            )
            return
        log.info("rotation.lock_released", extra={"key": self.key_id, "lock": self.blob_name})

    def __enter__(self) -> KeyLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def _take_lease(self) -> None:
        try:
            self._lease.acquire(lease_duration=self._duration)
        except ResourceExistsError as exc:
            if getattr(exc, "error_code", None) != "LeaseAlreadyPresent":
                raise
            raise LockHeld(f"another worker holds the lock on {self.key_id}; retry after it finishes") from exc

    def _create_lock_blob(self) -> None:
        try:
            self._create_empty_blob()
        except ResourceNotFoundError:  # the container is missing too
            with suppress(ResourceExistsError):
                self._container.create_container()
            self._create_empty_blob()

    def _create_empty_blob(self) -> None:
        with suppress(ResourceExistsError):  # another worker created it first
            self._blob.upload_blob(b"", overwrite=False)

    def _renew(self) -> None:
        """Renew until released. Storage refusing the renewal (the lease was broken or taken) loses the lock at once;
        a failure to reach storage is retried as long as the lease cannot have expired yet."""
        while not self._stop.wait(self._renew_every):
            error: Exception
            try:
                self._lease.renew()
                self._renewed_at = time.monotonic()
                continue
            except HttpResponseError as exc:
                refused = exc.status_code is not None and exc.status_code < 500
                error = exc
            except Exception as exc:  # noqa: BLE001 -- a renewer that dies quietly is exactly the failure to report
                refused = False
                error = exc
            if refused or self.lost:
                log.error(
                    "rotation.lock_lost",
                    extra={"key": self.key_id, "lock": self.blob_name, "error": _service_error(error)},
                )
                self._lost.set()  # after the event, so whoever sees the flag can also find the event
                return
            log.warning(
                "rotation.lock_renewal_failed",
                extra={"key": self.key_id, "lock": self.blob_name, "error": _service_error(error)},
            )


def _service_error(exc: BaseException) -> str:
    """The service's error code (or the exception's class) and first message line; never headers, so no secrets."""
    code = getattr(exc, "error_code", None)
    first_line = (str(exc).splitlines() or [""])[0]
    return _redacted(f"{code or type(exc).__name__}: {first_line}")[:300]


# --- the ledger --------------------------------------------------------------------------------------------------

_INDEX_PARTITION = "requests"
_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|sig|code|key|password|secret)=[^;&\s\"']+"),
    re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
)


def _redacted(text: str) -> str:
    """``text`` with anything shaped like a key, signature, token or password replaced by ``<redacted>``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_redact_match, text)
    return text


def _redact_match(match: re.Match[str]) -> str:
    name, equals, _ = match.group(0).partition("=")
    return f"{name}=<redacted>" if equals else "<redacted>"


@dataclass(frozen=True)
class LedgerEntry:
    """One rotation request as the ledger stores it (DESIGN §3.5).

    ``accounts`` maps each account's resource id to its outcome (any JSON value). ``etag`` is set by the ledger and
    must come from the latest ``create``/``get``/``transition`` for a ``transition`` to succeed.
    """

    request_id: str
    key: str
    trigger: str
    created_at: datetime
    updated_at: datetime
    status: str = "queued"
    reason: str = ""
    from_version: str = ""
    to_version: str = ""
    accounts: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""
    attempts: int = 0
    idempotency_key: str | None = None
    force: bool = False  # the request asked for a new version whether or not one is due
    etag: str | None = None


class Ledger:
    """The table of rotation requests: who asked, what was decided, what happened.

    Layout: each request's row lives in its key's partition (``ledger_partition(key)``) under RowKey = request id, so
    one key's history is a single-partition query. The HTTP status endpoint only knows the request id, so each
    request also has an index row in partition ``requests`` (RowKey = request id) naming the key's partition: a lookup
    is two point reads instead of a scan of the whole table. The index row is written first and never changes, so it
    also makes a request id unique across all keys.

    Every write is conditional (insert, or replace if the ETag still matches), so two workers never overwrite each
    other. Raises ``InvalidInput``, ``RequestExists``, ``RequestNotFound``, ``LedgerConflict`` and ``FinalStatus``
    (see the module docstring); other azure-core errors propagate.
    """

    def __init__(
        self, endpoint: str, credential: Any = None, *, table_name: str = LEDGER_TABLE, **client_kwargs: Any
    ) -> None:
        self._table = TableClient(endpoint, _table_name(table_name), credential=credential, **client_kwargs)

    @classmethod
    def from_connection_string(cls, conn_str: str, *, table_name: str = LEDGER_TABLE, **client_kwargs: Any) -> Ledger:
        ledger = cls.__new__(cls)
        ledger._table = TableClient.from_connection_string(conn_str, _table_name(table_name), **client_kwargs)
        return ledger

    @property
    def table_name(self) -> str:
        return self._table.table_name

    def ensure(self) -> None:
        """Create the table if it does not exist."""
        with suppress(ResourceExistsError):
            self._table.create_table()

    def create(self, entry: LedgerEntry) -> LedgerEntry:
        """Insert a new request; ``RequestExists`` if the request id is already taken. Returns it with its ETag."""
        row = _to_row(entry)
        index = {
            "PartitionKey": _INDEX_PARTITION,
            "RowKey": entry.request_id,
            "key_partition": row["PartitionKey"],
            "key": entry.key,
        }
        try:
            self._insert(index)
        except ResourceExistsError as exc:
            raise RequestExists(f"request {entry.request_id} already exists in the ledger") from exc
        return self._insert_row(entry, row)

    def get_or_create(self, entry: LedgerEntry) -> tuple[LedgerEntry, bool]:
        """The existing row for ``entry.request_id`` and False, or ``entry`` newly created and True.

        Also completes a create that stopped between the index row and the request's row.
        """
        try:
            return self.create(entry), True
        except RequestExists:
            existing = self.get(entry.request_id)
            if existing is not None:
                return existing, False
            if self._index_partition(entry.request_id) != ledger_partition(entry.key):
                raise
        try:
            return self._insert_row(entry, _to_row(entry)), True
        except RequestExists:
            found = self.get(entry.request_id)
            if found is None:
                raise
            return found, False

    def get(self, request_id: str) -> LedgerEntry | None:
        """The request's row, found by its id alone, or None."""
        partition = self._index_partition(_check_request_id(request_id))
        if partition is None:
            return None
        try:
            return _from_row(self._table.get_entity(partition, request_id))
        except ResourceNotFoundError:
            return None

    def transition(
        self,
        entry: LedgerEntry,
        *,
        at: datetime,
        status: str | None = None,
        reason: str | None = None,
        from_version: str | None = None,
        to_version: str | None = None,
        accounts: Mapping[str, Any] | None = None,
        error: str | None = None,
        attempts: int | None = None,
    ) -> LedgerEntry:
        """Change the row ``entry`` was read from, if nobody else changed it since; returns the stored result.

        Arguments left as None keep their value. ``LedgerConflict`` when the ETag changed, ``FinalStatus`` when the row
        is already succeeded/failed/skipped, ``RequestNotFound`` when it is gone.
        """
        if entry.etag is None:
            raise InvalidInput(f"ledger entry {entry.request_id} has no ETag; read it with get() or create() first")
        if entry.status in FINAL_STATUSES:
            raise FinalStatus(f"request {entry.request_id} is already {entry.status}; start a new request instead")
        changes: dict[str, Any] = {
            name: value
            for name, value in {
                "status": status,
                "reason": reason,
                "from_version": from_version,
                "to_version": to_version,
                "accounts": accounts,
                "error": error,
                "attempts": attempts,
            }.items()
            if value is not None
        }
        updated = replace(entry, updated_at=_aware(at, "at"), **changes)
        row = _to_row(updated)
        try:
            metadata = self._table.update_entity(
                row, mode=UpdateMode.REPLACE, etag=entry.etag, match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError as exc:
            raise LedgerConflict(
                f"request {entry.request_id} changed since it was read; read it again and decide again"
            ) from exc
        except ResourceNotFoundError as exc:
            raise RequestNotFound(f"request {entry.request_id} is not in the ledger") from exc
        stored = replace(updated, error=row["error"], etag=metadata["etag"])
        log.info(
            "rotation.ledger_updated",
            extra={"request_id": entry.request_id, "key": entry.key, "status": stored.status, "reason": stored.reason},
        )
        return stored

    def list_requests(self, key: str | None = None, *, limit: int = 50) -> list[LedgerEntry]:
        """The newest ``limit`` requests, for one key or for all, newest first (by ``created_at``).

        The sort happens here (RowKeys are request ids, not times), so this reads the key's whole partition, or the
        whole table when ``key`` is None: fine for a ledger that grows by a few rows per key per rotation.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be 1-1000, got {limit!r}")
        if key is None:
            query, parameters = "PartitionKey ne @index", {"index": _INDEX_PARTITION}
        else:
            query, parameters = "PartitionKey eq @partition", {"partition": ledger_partition(key)}
        try:
            entries = [_from_row(row) for row in self._table.query_entities(query, parameters=parameters)]
        except ResourceNotFoundError:
            return []
        entries.sort(key=lambda e: (e.created_at, e.request_id), reverse=True)
        return entries[:limit]

    def _insert(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._table.create_entity(row)
        except ResourceNotFoundError:
            # A fresh storage account has no table yet: create it once, then insert.
            self.ensure()
            return self._table.create_entity(row)

    def _insert_row(self, entry: LedgerEntry, row: dict[str, Any]) -> LedgerEntry:
        try:
            metadata = self._insert(row)
        except ResourceExistsError as exc:
            raise RequestExists(f"request {entry.request_id} already exists in the ledger") from exc
        log.info(
            "rotation.ledger_created",
            extra={"request_id": entry.request_id, "key": entry.key, "status": entry.status, "trigger": entry.trigger},
        )
        return replace(entry, error=row["error"], etag=metadata["etag"])

    def _index_partition(self, request_id: str) -> str | None:
        try:
            index = self._table.get_entity(_INDEX_PARTITION, request_id)
        except ResourceNotFoundError:
            return None
        return str(index["key_partition"])


def _table_name(name: str) -> str:
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", name) is None:
        raise InvalidInput(f"table name {name!r} is not valid; use 3-63 letters and digits, starting with a letter")
    return name


def _to_row(entry: LedgerEntry) -> dict[str, Any]:
    """The table row for ``entry``, after checking each field; ``error`` is redacted and cut to MAX_ERROR_CHARS."""
    _check_request_id(entry.request_id)
    if entry.status not in STATUSES:
        raise InvalidInput(f"ledger status {entry.status!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(entry.trigger, str) or _TRIGGER.fullmatch(entry.trigger) is None:
        raise InvalidInput(
            f"ledger trigger must be a trigger name such as 'KeyNearExpiry' or 'http', got {entry.trigger!r}"
        )
    for name in ("reason", "from_version", "to_version", "error"):
        if not isinstance(getattr(entry, name), str):
            raise InvalidInput(f"ledger field {name!r} must be text, got {getattr(entry, name)!r}")
    if len(entry.reason) > 200 or len(entry.from_version) > 64 or len(entry.to_version) > 64:
        raise InvalidInput("ledger reason must be at most 200 characters and versions at most 64")
    if isinstance(entry.attempts, bool) or not isinstance(entry.attempts, int) or not 0 <= entry.attempts < 2**31:
        raise InvalidInput(f"ledger attempts must be a whole number from 0, got {entry.attempts!r}")
    try:
        accounts = json.dumps(dict(entry.accounts), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"ledger accounts must map account ids to JSON values: {exc}") from exc
    if len(accounts) > MAX_ACCOUNTS_JSON_CHARS:
        raise InvalidInput(
            f"ledger accounts take {len(accounts)} characters as JSON, more than {MAX_ACCOUNTS_JSON_CHARS}; "
            "store a shorter outcome per account"
        )
    error = _redacted(entry.error)
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 14] + " …[truncated]"
    row: dict[str, Any] = {
        "PartitionKey": ledger_partition(entry.key),
        "RowKey": entry.request_id,
        "key": entry.key,
        "request_id": entry.request_id,
        "trigger": entry.trigger,
        "reason": entry.reason,
        "status": entry.status,
        "created_at": _aware(entry.created_at, "created_at"),
        "updated_at": _aware(entry.updated_at, "updated_at"),
        "from_version": entry.from_version,
        "to_version": entry.to_version,
        "accounts": accounts,
        "error": error,
        "attempts": entry.attempts,
        "force": bool(entry.force),
    }
    if entry.idempotency_key is not None:
        request_id_for(entry.idempotency_key, entry.key)  # validates the header value
        row["idempotency_key"] = entry.idempotency_key
    return row


def _from_row(row: TableEntity) -> LedgerEntry:
    return LedgerEntry(
        request_id=row["request_id"],
        key=row["key"],
        trigger=row["trigger"],
        created_at=datetime.combine(row["created_at"].date(), row["created_at"].timetz()),
        updated_at=datetime.combine(row["updated_at"].date(), row["updated_at"].timetz()),
        status=row["status"],
        reason=row.get("reason", ""),
        from_version=row.get("from_version", ""),
        to_version=row.get("to_version", ""),
        accounts=json.loads(row.get("accounts") or "{}"),
        error=row.get("error", ""),
        attempts=int(row.get("attempts", 0)),
        idempotency_key=row.get("idempotency_key"),
        force=bool(row.get("force", False)),
        etag=row.metadata["etag"],
    )


# --- where the account is ----------------------------------------------------------------------------------------

# Azurite's documented, public development account: "UseDevelopmentStorage=true" means exactly this.
_DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")


@dataclass(frozen=True)
class StorageAccount:
    """The storage account behind ``AzureWebJobsStorage``, reached by connection string or by managed identity.

    Build it with ``from_settings(os.environ)``; then ``rotation_queue()``, ``key_lock(key_id)`` and ``ledger()``.
    The connection string is kept out of ``repr``.
    """

    connection_string: str | None = field(default=None, repr=False)
    blob_url: str | None = None
    queue_url: str | None = None
    table_url: str | None = None
    client_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], *, name: str = "AzureWebJobsStorage") -> StorageAccount:
        """Read the Functions host's connection settings.

        ``<name>`` is a connection string (``UseDevelopmentStorage=true`` means local Azurite). Otherwise the
        identity-based form: ``<name>__accountName`` (public-cloud URLs are derived), or ``<name>__blobServiceUri``,
        ``__queueServiceUri`` and ``__tableServiceUri``; ``<name>__clientId`` picks a user-assigned identity.
        """
        conn = settings.get(name, "").strip()
        if conn:
            if conn.replace(" ", "").lower() == "usedevelopmentstorage=true":
                conn = _DEVELOPMENT_STORAGE
            return cls(connection_string=conn)
        account = settings.get(f"{name}__accountName", "").strip()
        if account and _ACCOUNT_NAME.fullmatch(account) is None:
            raise InvalidInput(
                f"{name}__accountName {account[:40]!r} is not a storage account name (3-24 lower-case letters/digits)"
            )
        urls: dict[str, str] = {}
        for service in ("blob", "queue", "table"):
            url = settings.get(f"{name}__{service}ServiceUri", "").strip()
            if not url and account:
                url = f"https://{account}.{service}.core.windows.net"
            if not url.startswith("https://"):
                raise InvalidInput(
                    f"no storage account configured for the {service} service: set {name} to a connection string, "
                    f"or {name}__accountName (or {name}__{service}ServiceUri as an https:// URL) for managed identity"
                )
            urls[service] = url.rstrip("/")
        client_id = settings.get(f"{name}__clientId", "").strip() or None
        return cls(blob_url=urls["blob"], queue_url=urls["queue"], table_url=urls["table"], client_id=client_id)

    @cached_property
    def credential(self) -> TokenCredential | None:
        """``DefaultAzureCredential`` for the identity-based form; None with a connection string."""
        if self.connection_string is not None:
            return None
        return DefaultAzureCredential(managed_identity_client_id=self.client_id)

    def rotation_queue(self, **kwargs: Any) -> RotationQueue:
        if self.connection_string is not None:
            return RotationQueue.from_connection_string(self.connection_string, **kwargs)
        return RotationQueue(str(self.queue_url), self.credential, **kwargs)

    def ledger(self, **kwargs: Any) -> Ledger:
        if self.connection_string is not None:
            return Ledger.from_connection_string(self.connection_string, **kwargs)
        return Ledger(str(self.table_url), self.credential, **kwargs)

    @cached_property
    def _locks(self) -> ContainerClient:
        if self.connection_string is not None:
            return ContainerClient.from_connection_string(self.connection_string, LOCKS_CONTAINER)
        return ContainerClient(str(self.blob_url), LOCKS_CONTAINER, credential=self.credential)

    def key_lock(self, key_id: str, *, duration: int = 60) -> KeyLock:
        return KeyLock(self._locks, key_id, duration=duration)
