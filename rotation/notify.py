"""Outcome events: each final state of a rotation request, published as a CloudEvent to an Event Grid topic.

The events are for alerting and compliance evidence (README, "Outcome events"). Publishing is best effort: a failure
of any kind (an ``AzureError``, or a ``ValueError`` the transport raises for a URL it cannot send to) is logged as
``rotation.publish_failed`` and never fails the rotation, whose truth is the ledger row.

Event types: ``CmkRotation.Planned`` (the plan, before acting), ``CmkRotation.Succeeded``, ``CmkRotation.Failed``,
``CmkRotation.Skipped``, ``CmkRotation.Drift`` (a sweep found drift on a key) and ``CmkRotation.Retired`` (a sweep
disabled an old version). ``source`` is
``/aoai-cmk-rotation/<app name>``, ``subject`` the key's URL, and ``data`` the plan, the outcome or the drift as the
HTTP API shows them (request id, key, trigger, reason, versions, per-account actions or results, error; a drift's
unmanaged, left and off-target accounts). No tokens or keys.

azure-eventgrid's public ``EventGridPublisherClient`` drops constructor keyword arguments for basic topics, and
per-call ones also leak into every CloudEvent as unknown attributes (a warning per event). So this module uses the
basic-topic client the public one wraps (``azure.eventgrid._legacy``, pinned with the package), which takes transport
and retry options at construction like every other Azure SDK client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.exceptions import AzureError
from azure.core.messaging import CloudEvent
from azure.eventgrid._legacy import EventGridPublisherClient

from rotation.azure_errors import detail
from rotation.config import EVENTS_ENDPOINT
from rotation.errors import ConfigError
from rotation.log import Event, emit
from rotation.redact import clipped

EVENT_TYPES = {
    "planned": "CmkRotation.Planned",
    "succeeded": "CmkRotation.Succeeded",
    "failed": "CmkRotation.Failed",
    "skipped": "CmkRotation.Skipped",
    "drift": "CmkRotation.Drift",
    "retired": "CmkRotation.Retired",
}


class OutcomePublisher:
    def __init__(
        self,
        endpoint: str,
        credential: AzureKeyCredential | TokenCredential,
        *,
        app_name: str,
        **client_kwargs: Any,
    ) -> None:
        """Raises ``ConfigError`` when the client cannot be built (config.py has validated ``endpoint`` already)."""
        try:
            self._client = EventGridPublisherClient(endpoint, credential, **{"retry_total": 3, **client_kwargs})
        except ValueError as exc:  # the SDK refuses a credential it cannot use with ValueError
            raise ConfigError(
                f"{EVENTS_ENDPOINT}={clipped(endpoint)!r}: the outcome-events client cannot be built "
                f"({type(exc).__name__}: {clipped(str(exc))}); set it to the topic endpoint "
                "https://<topic>.<region>-1.eventgrid.azure.net/api/events, with the topic key or the app's identity"
            ) from exc
        self._source = f"/aoai-cmk-rotation/{app_name}"

    def publish(self, status: str, outcome: Mapping[str, Any]) -> bool:
        """Publish one outcome; True when the topic accepted it. Never raises for a publishing failure."""
        event = CloudEvent(
            source=self._source,
            type=EVENT_TYPES[status],
            subject=str(outcome.get("key", "")),
            data=dict(outcome),
        )
        try:
            self._client.send([event])
        except Exception as exc:  # noqa: BLE001 - best effort: whatever publishing raises must not fail the rotation
            error = clipped(" ".join((detail(exc) if isinstance(exc, AzureError) else str(exc)).split()))
            emit(
                Event.PUBLISH_FAILED,
                f"the {status} outcome was not published ({type(exc).__name__}: {error}); the rotation is unaffected "
                "and its ledger row is the record",
                key=_identifier(outcome.get("key")),
                request_id=_identifier(outcome.get("request_id")),
                level=logging.WARNING,
                status=status,
                error_class=type(exc).__name__,
                error=error,
            )
            return False
        return True


def _identifier(value: object) -> str | None:
    """An outcome's ``key`` or ``request_id`` for the log: the string the outcome holds, or None."""
    return value if isinstance(value, str) and value else None
