"""Structured events of the rotation engine: one stdlib log record per meaningful step, with keyed fields.

Each record's message is the stable event name (``rotation.planned`` ...) followed by prose, and its ``extra`` carries
``event``, ``key``, ``request_id`` and, when they apply, ``version``, ``account``, ``reason`` and a few step fields, so
Application Insights stores them as custom dimensions and tests assert on them instead of on text. Callers pass only
identifiers, versions, reasons and error messages: this module must never be given a token, key material or a
connection string, and never formats arbitrary objects into a record.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from rotation.model import AccountRef, KeyRef
from rotation.reasons import Reason

LOGGER_NAME = "rotation"
logger = logging.getLogger(LOGGER_NAME)

FieldValue = str | int | bool | None


class Event(StrEnum):
    PLANNED = "rotation.planned"
    VERSION_CREATED = "rotation.version_created"
    VERSION_ADOPTED = "rotation.version_adopted"
    ACCOUNT_UPDATED = "rotation.account_updated"
    COMPLETED = "rotation.completed"
    FAILED = "rotation.failed"


def emit(
    event: Event,
    message: str,
    *,
    key: KeyRef,
    request_id: str,
    version: str | None = None,
    account: AccountRef | None = None,
    reason: Reason | None = None,
    level: int = logging.INFO,
    **fields: FieldValue,
) -> None:
    """Log ``event`` with its keyed fields in ``extra`` (None values are left out)."""
    extra: dict[str, FieldValue] = {
        "event": event.value,
        "key": key.id,
        "request_id": request_id,
        "version": version,
        "account": account.id if account else None,
        "reason": reason.value if reason else None,
        **fields,
    }
    logger.log(level, "%s: %s", event.value, message, extra={k: v for k, v in extra.items() if v is not None})
