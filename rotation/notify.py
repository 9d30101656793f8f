"""Outcome events: each final state of a rotation request, published as a CloudEvent to an Event Grid topic.

The events are for alerting and compliance evidence (README, "Outcome events"). Publishing is best effort: a failure
is logged as ``rotation.publish_failed`` and never fails the rotation, whose truth is the ledger row.

Event types: ``CmkRotation.Planned`` (the plan, before acting), ``CmkRotation.Succeeded``, ``CmkRotation.Failed``,
``CmkRotation.Skipped``. ``source`` is ``/aoai-cmk-rotation/<app name>``, ``subject`` the key's URL, and ``data`` the
plan or the outcome as the HTTP API shows them (request id, key, trigger, reason, versions, per-account actions or
results, error). No tokens or keys.

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

log = logging.getLogger("rotation")

EVENT_TYPES = {
    "planned": "CmkRotation.Planned",
    "succeeded": "CmkRotation.Succeeded",
    "failed": "CmkRotation.Failed",
    "skipped": "CmkRotation.Skipped",
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
        self._client = EventGridPublisherClient(endpoint, credential, **{"retry_total": 3, **client_kwargs})
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
        except AzureError as exc:
            log.warning(
                "rotation.publish_failed",
                extra={"request_id": outcome.get("request_id"), "status": status, "error": detail(exc)},
            )
            return False
        return True
