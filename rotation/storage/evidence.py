"""Retirement's evidence: since when each old version of a target key has been unused by every account (DESIGN §7.5).

::

    table rotationevidence   partition <the key's ledger partition>   RowKey <version>   unused_since

A row is written by the first sweep that finds the version unused (``rotation/retirement.py``: UNUSED) and is kept,
with that first time, as long as every later sweep finds it unused or cannot tell; the first sweep that finds an
account on it deletes the row, so the soak starts again. Retirement disables a version only once its row is older
than ``ROTATION_RETIRE_AFTER``. Raises ``StorageUnavailable`` for any fault of the storage service.
This module must never read the clock (callers pass ``at``).
"""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient

from rotation.model import KeyRef
from rotation.storage.ledger import ledger_partition
from rotation.storage.service import unavailable

EVIDENCE_TABLE = "rotationevidence"


class VersionEvidence:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def ensure(self) -> None:
        """Create the table if it does not exist."""
        with unavailable("create the evidence table"), suppress(ResourceExistsError):
            self._table.create_table()

    def unused_since(self, key: KeyRef) -> dict[str, datetime]:
        """Each recorded version of ``key`` and since when it has been unused."""
        with unavailable(f"read the evidence of {key.id}"):
            try:
                rows = self._table.query_entities("PartitionKey eq @p", parameters={"p": ledger_partition(key)})
                return {row["RowKey"]: row["unused_since"] for row in rows}
            except ResourceNotFoundError:
                return {}

    def seen_unused(self, key: KeyRef, version: str, *, at: datetime) -> None:
        """Record that ``version`` was unused ``at``; an earlier record stands (it is when the soak began)."""
        row = {"PartitionKey": ledger_partition(key), "RowKey": version, "unused_since": at}
        with unavailable(f"record the evidence of {key.id} version {version}"), suppress(ResourceExistsError):
            try:
                self._table.create_entity(row)
            except ResourceNotFoundError:  # a fresh storage account has no table yet
                self.ensure()
                self._table.create_entity(row)

    def seen_in_use(self, key: KeyRef, version: str) -> None:
        """Forget ``version``'s record: an account uses it, so its soak has to start again."""
        with unavailable(f"reset the evidence of {key.id} version {version}"), suppress(ResourceNotFoundError):
            self._table.delete_entity(ledger_partition(key), version)
