"""The ledger: one Table row per rotation request, who asked, what was decided, what happened (DESIGN §3.5).

::

    partition  <base64url of the key's folded id>   RowKey <request id>   the request's row (status, versions ...)
    partition  requests                             RowKey <request id>   an index row naming the key's partition

One key's history is a single-partition query. The HTTP status endpoint only knows the request id, so each request
also has an index row: a lookup is two point reads instead of a scan. The index row is written first and never
changes, so it also makes a request id unique across all keys.

Every write is conditional (insert, or replace if the ETag still matches), so two writers never overwrite each other.
Raises ``RequestExists``, ``RequestNotFound``, ``LedgerConflict``, ``FinalStatus`` and ``StorageUnavailable``; a field
that cannot be stored raises ``ValueError`` (a bug: every value comes from a checked ``RotationRequest`` or outcome).
This module must never store a token, an account key or a connection string: errors are redacted before they are
stored, and never read the clock (callers pass ``at``).
"""

from __future__ import annotations

import json
from base64 import urlsafe_b64encode
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from rotation.errors import FinalStatus, LedgerConflict, RequestExists, RequestNotFound
from rotation.log import Event, emit
from rotation.model import KeyRef, RotationRequest, Trigger, check_request_id
from rotation.redact import redacted
from rotation.storage.service import unavailable

LEDGER_TABLE = "rotationledger"
MAX_ERROR_CHARS = 2000
"""Longer ``error`` texts are cut to this length (a Table string property holds at most 32 K characters)."""
MAX_ACCOUNTS_JSON_CHARS = 32_000
"""The most a row's ``accounts`` may take as compact JSON (a Table string property holds at most 32 K characters)."""
_INDEX_PARTITION = "requests"


class LedgerStatus(StrEnum):
    QUEUED = "queued"  # recorded; a queue message will run it
    RUNNING = "running"  # a worker holds the key's lock and is reconciling it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing was due and nothing drifted

    @property
    def final(self) -> bool:
        return self in (LedgerStatus.SUCCEEDED, LedgerStatus.FAILED, LedgerStatus.SKIPPED)


def ledger_partition(key: KeyRef) -> str:
    """The key's PartitionKey: the unpadded URL-safe base64 of its folded id.

    Table keys may not contain ``/ \\ # ?`` (and a vault host may carry ``:port``); the alphabet ``A-Z a-z 0-9 - _``
    has none, and the result is always longer than the index partition's name ``requests``, so the two never collide.
    """
    return urlsafe_b64encode(key.folded_id.encode()).decode().rstrip("=")


@dataclass(frozen=True)
class LedgerEntry:
    """One rotation request as the ledger stores it.

    ``accounts`` maps each account's resource id to its outcome (any JSON value). ``etag`` is set by the ledger and
    must come from the latest ``create``/``get``/``transition`` for a ``transition`` to succeed.
    """

    request_id: str
    key: KeyRef
    trigger: Trigger
    created_at: datetime
    updated_at: datetime
    status: LedgerStatus = LedgerStatus.QUEUED
    reason: str = ""
    from_version: str = ""
    to_version: str = ""
    accounts: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""
    attempts: int = 0
    idempotency_key: str | None = None
    force: bool = False  # the request asked for a new version whether or not one is due
    compromised_version: str = ""  # a break-glass request's (rotation/breakglass.py); "" for any other
    accept_breakage: bool = False
    blast_radius: Mapping[str, Any] = field(default_factory=dict)  # a break-glass request's report, once it ran
    etag: str | None = None

    @classmethod
    def for_request(cls, request: RotationRequest, *, at: datetime, idempotency_key: str | None = None) -> LedgerEntry:
        """The new, queued row of ``request``."""
        return cls(
            request_id=request.request_id,
            key=request.key,
            trigger=request.trigger,
            created_at=at,
            updated_at=at,
            idempotency_key=idempotency_key,
            force=request.force,
            compromised_version=request.compromised_version or "",
            accept_breakage=request.accept_breakage,
        )

    def to_dict(self) -> dict[str, Any]:
        """The row as ``GET /api/rotations/{id}``, the outcome events and the CLI's ``history`` show it."""
        return {
            "request_id": self.request_id,
            "key": self.key.id,
            "trigger": self.trigger.value,
            "status": self.status.value,
            "reason": self.reason,
            "from_version": self.from_version or None,
            "to_version": self.to_version or None,
            "accounts": dict(self.accounts),
            "error": self.error or None,
            "attempts": self.attempts,
            "force": self.force,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            **(self._break_glass() if self.compromised_version else {}),
        }

    def _break_glass(self) -> dict[str, Any]:
        return {
            "compromised_version": self.compromised_version,
            "accept_breakage": self.accept_breakage,
            "blast_radius": dict(self.blast_radius) or None,
        }

    def describes(self, request: RotationRequest) -> bool:
        """True when this row is ``request``'s: the same id for the same key and mode (a forged message may reuse an
        id)."""
        return (
            self.request_id == request.request_id
            and self.key.folded_id == request.key.folded_id
            and self.compromised_version.lower() == (request.compromised_version or "").lower()
            and self.accept_breakage == request.accept_breakage
        )


class Ledger:
    """The table of rotation requests."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    @classmethod
    def from_connection_string(cls, conn_str: str, *, table_name: str = LEDGER_TABLE, **client_kwargs: Any) -> Ledger:
        return cls(TableClient.from_connection_string(conn_str, table_name, **client_kwargs))

    @property
    def table_name(self) -> str:
        return self._table.table_name

    def ensure(self) -> None:
        """Create the table if it does not exist."""
        with unavailable("create the ledger table"), suppress(ResourceExistsError):
            self._table.create_table()

    def create(self, entry: LedgerEntry) -> LedgerEntry:
        """Insert a new request; ``RequestExists`` if the request id is already taken. Returns it with its ETag."""
        row = _to_row(entry)
        index = {"PartitionKey": _INDEX_PARTITION, "RowKey": entry.request_id, "key_partition": row["PartitionKey"]}
        with unavailable(f"record request {entry.request_id}"):
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
            with unavailable(f"read request {entry.request_id}"):
                if self._index_partition(entry.request_id) != ledger_partition(entry.key):
                    raise
        with unavailable(f"record request {entry.request_id}"):
            try:
                return self._insert_row(entry, _to_row(entry)), True
            except RequestExists:
                found = self.get(entry.request_id)
                if found is None:
                    raise
                return found, False

    def get(self, request_id: str) -> LedgerEntry | None:
        """The request's row, found by its id alone, or None. ``InvalidInput`` for an id that cannot be one."""
        check_request_id(request_id)
        with unavailable(f"read request {request_id}"):
            partition = self._index_partition(request_id)
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
        status: LedgerStatus | None = None,
        reason: str | None = None,
        from_version: str | None = None,
        to_version: str | None = None,
        accounts: Mapping[str, Any] | None = None,
        error: str | None = None,
        attempts: int | None = None,
        blast_radius: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        """Change the row ``entry`` was read from, if nobody else changed it since; returns the stored result.

        Arguments left as None keep their value. ``LedgerConflict`` when the ETag changed, ``FinalStatus`` when the row
        is already succeeded/failed/skipped, ``RequestNotFound`` when it is gone.
        """
        if entry.etag is None:
            raise ValueError(f"ledger entry {entry.request_id} has no ETag; read it with get() or create() first")
        if entry.status.final:
            raise FinalStatus(f"request {entry.request_id} is already {entry.status}; start a new request instead")
        changes: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "from_version": from_version,
            "to_version": to_version,
            "accounts": accounts,
            "error": error,
            "attempts": attempts,
            "blast_radius": blast_radius,
        }
        updated = replace(entry, updated_at=at, **{name: value for name, value in changes.items() if value is not None})
        row = _to_row(updated)
        with unavailable(f"update request {entry.request_id}"):
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
        emit(
            Event.LEDGER_UPDATED,
            f"the request is {stored.status.value}",
            key=entry.key,
            request_id=entry.request_id,
            reason=stored.reason or None,
            status=stored.status.value,
        )
        return stored

    def list_requests(self, key: KeyRef | None = None, *, limit: int = 50) -> list[LedgerEntry]:
        """The newest ``limit`` requests, for one key or for all, newest first (by ``created_at``).

        The sort happens here (RowKeys are request ids, not times), so this reads the key's whole partition, or the
        whole table when ``key`` is None: fine for a ledger that grows by a few rows per key per rotation.
        """
        if key is None:
            return self._query("PartitionKey ne @index", {}, limit)
        return self._query("PartitionKey eq @partition", {"partition": ledger_partition(key)}, limit)

    def unfinished(self, *, updated_before: datetime, limit: int = 100) -> list[LedgerEntry]:
        """Requests still ``queued`` or ``running`` that nobody updated since ``updated_before``: the sweep's
        candidates for repair (their message may be lost, or their worker dead)."""
        return self._query(
            "PartitionKey ne @index and (status eq 'queued' or status eq 'running') and updated_at lt @before",
            {"before": updated_before},
            limit,
        )

    def last_forced(self, key: KeyRef, *, since: datetime) -> LedgerEntry | None:
        """The newest forced request for ``key`` created at or after ``since``, or None (the force cooldown)."""
        found = self._query(
            "PartitionKey eq @partition and force eq true and created_at ge @since",
            {"partition": ledger_partition(key), "since": since},
            1,
        )
        return found[0] if found else None

    def _query(self, query: str, parameters: dict[str, Any], limit: int) -> list[LedgerEntry]:
        with unavailable("read the ledger"):
            try:
                rows = list(self._table.query_entities(query, parameters={"index": _INDEX_PARTITION, **parameters}))
            except ResourceNotFoundError:
                return []
        entries = sorted((_from_row(row) for row in rows), key=lambda e: (e.created_at, e.request_id), reverse=True)
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
        emit(
            Event.LEDGER_CREATED,
            f"the request is recorded as {entry.status.value} (trigger {entry.trigger.value})",
            key=entry.key,
            request_id=entry.request_id,
            status=entry.status.value,
            trigger=entry.trigger.value,
        )
        return replace(entry, error=row["error"], etag=metadata["etag"])

    def _index_partition(self, request_id: str) -> str | None:
        try:
            index = self._table.get_entity(_INDEX_PARTITION, request_id)
        except ResourceNotFoundError:
            return None
        return str(index["key_partition"])


def fitted_radius(radius: Mapping[str, object], limit: int) -> dict[str, object]:
    """A break-glass ``radius`` (``BlastRadius.to_dict``) in at most ``limit`` characters of compact JSON, for a row:
    when it is longer, as many accounts as fit, those left first (they are what an operator must act on), and the full
    counts in ``left_total`` and ``moved_total``. The outcome event and the log carry every account."""
    full = dict(radius)
    if _chars(full) <= limit:
        return full
    left, moved = list(_items(full["left"])), list(_items(full["moved"]))
    cut: dict[str, object] = {**full, "left": [], "moved": [], "left_total": len(left), "moved_total": len(moved)}
    for name, items in (("left", left), ("moved", moved)):
        kept: list[object] = []
        for item in items:
            if _chars({**cut, name: [*kept, item]}) > limit:
                break
            kept.append(item)
        cut[name] = kept
    return cut


def _items(value: object) -> Sequence[object]:
    return value if isinstance(value, list) else []


def _chars(value: Mapping[str, object]) -> int:
    return len(_compact(value))


def _compact(value: Mapping[str, object]) -> str:
    """JSON as a row stores it."""
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))


def _to_row(entry: LedgerEntry) -> dict[str, Any]:
    """The table row for ``entry``; ``error`` is redacted and cut to MAX_ERROR_CHARS."""
    accounts = _compact(entry.accounts)
    if len(accounts) > MAX_ACCOUNTS_JSON_CHARS:
        raise ValueError(
            f"ledger accounts take {len(accounts)} characters as JSON, more than {MAX_ACCOUNTS_JSON_CHARS}; "
            "store a shorter outcome per account"
        )
    error = redacted(entry.error)
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 14] + " …[truncated]"
    row: dict[str, Any] = {
        "PartitionKey": ledger_partition(entry.key),
        "RowKey": check_request_id(entry.request_id),
        "key": entry.key.id,
        "request_id": entry.request_id,
        "trigger": entry.trigger.value,
        "reason": entry.reason[:200],
        "status": LedgerStatus(entry.status).value,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
        "from_version": entry.from_version,
        "to_version": entry.to_version,
        "accounts": accounts,
        "error": error,
        "attempts": entry.attempts,
        "force": entry.force,
    }
    if entry.idempotency_key is not None:  # only shown, never compared (the request id is derived from it)
        row["idempotency_key"] = redacted(entry.idempotency_key)
    if entry.compromised_version:
        radius = json.dumps(
            fitted_radius(entry.blast_radius, MAX_ACCOUNTS_JSON_CHARS), sort_keys=True, separators=(",", ":")
        )
        row.update(
            compromised_version=entry.compromised_version, accept_breakage=entry.accept_breakage, blast_radius=radius
        )
    return row


def _from_row(row: TableEntity) -> LedgerEntry:
    return LedgerEntry(
        request_id=row["request_id"],
        key=KeyRef.parse(row["key"]),
        trigger=Trigger(row["trigger"]),
        created_at=datetime.combine(row["created_at"].date(), row["created_at"].timetz()),
        updated_at=datetime.combine(row["updated_at"].date(), row["updated_at"].timetz()),
        status=LedgerStatus(row["status"]),
        reason=row.get("reason", ""),
        from_version=row.get("from_version", ""),
        to_version=row.get("to_version", ""),
        accounts=json.loads(row.get("accounts") or "{}"),
        error=row.get("error", ""),
        attempts=int(row.get("attempts", 0)),
        idempotency_key=row.get("idempotency_key"),
        force=bool(row.get("force", False)),
        compromised_version=row.get("compromised_version", ""),
        accept_breakage=bool(row.get("accept_breakage", False)),
        blast_radius=json.loads(row.get("blast_radius") or "{}"),
        etag=row.metadata["etag"],
    )
