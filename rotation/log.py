"""Structured events of the rotation engine: one stdlib log record per meaningful step, with keyed fields.

Each record's message is the stable event name (``rotation.planned`` ...) followed by prose, and its ``extra`` carries
``event``, ``key``, ``request_id`` and, when they apply, ``version``, ``account``, ``reason`` and a few step fields, so
Application Insights stores them as custom dimensions and tests assert on them instead of on text. Callers pass only
identifiers, versions, reasons and error messages: this module must never be given a token, key material or a
connection string, and never formats arbitrary objects into a record.

Other libraries' records are not so careful: with DEBUG logging and a SAS connection string, urllib3 logs each request
line with its live ``sig=``. ``install_redaction`` puts a ``RedactingFilter`` on the loggers that do that, so their
records are rewritten through ``rotation.redact.redacted`` before any handler sees them. A logger's filter applies
only to records logged on that very logger, not to those of its children, hence the list of names.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from rotation.model import AccountRef, KeyRef
from rotation.reasons import Reason
from rotation.redact import redacted

LOGGER_NAME = "rotation"
logger = logging.getLogger(LOGGER_NAME)

FieldValue = str | int | bool | None

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
