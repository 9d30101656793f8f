"""The rotation-requests queue: triggers put ``RotationRequest`` messages on it and the worker takes them off.

::

    rotation-requests          one message per request: ``RotationRequest.to_message()``, base64 on the wire
    rotation-requests-poison   where the host moves a message after maxDequeueCount failed deliveries
    key-events-poison          the same for Event Grid's storage-queue delivery (key-events); only watched here

Each message carries the W3C ``traceparent`` of the span that sent it, so the worker continues the sender's trace.

The Functions host's queue trigger decodes message text as base64 by default (host.json
``extensions.queues.messageEncoding``), so the text goes on the wire base64-encoded, on both queues.

Raises ``StorageUnavailable`` when storage cannot be reached or refuses the message; nothing else.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import replace
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from rotation.log import Event, emit
from rotation.model import RotationRequest
from rotation.storage.service import unavailable
from rotation.telemetry import current_traceparent

REQUESTS_QUEUE = "rotation-requests"
POISON_QUEUE = f"{REQUESTS_QUEUE}-poison"
KEY_EVENTS_QUEUE = "key-events"  # Event Grid's storage-queue delivery, read by function_app.on_queued_key_event
PEEK_LIMIT = 32  # the most messages one peek returns
MAX_DELAY = 7 * 24 * 3600 - 1  # a message lives 7 days by default: a longer delay would never be seen


class RotationQueue:
    """The two queues of rotation requests, on one queue service."""

    def __init__(
        self, service: QueueServiceClient, *, name: str = REQUESTS_QUEUE, key_events: str = KEY_EVENTS_QUEUE
    ) -> None:
        self._requests = self._client(service, name)
        self._poison = self._client(service, f"{name}-poison")  # the host's name for the poison queue
        # Only peeked, and read as they are: a poison message may be anything (the host poisons what is not base64).
        self._watched = tuple(service.get_queue_client(f"{q}-poison") for q in (name, key_events))

    @classmethod
    def from_connection_string(
        cls, conn_str: str, *, name: str = REQUESTS_QUEUE, key_events: str = KEY_EVENTS_QUEUE, **client_kwargs: Any
    ) -> RotationQueue:
        service = QueueServiceClient.from_connection_string(conn_str, **client_kwargs)
        return cls(service, name=name, key_events=key_events)

    @staticmethod
    def _client(service: QueueServiceClient, name: str) -> QueueClient:
        return service.get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )

    def ensure(self) -> None:
        """Create both queues if they do not exist."""
        with unavailable("create the rotation queues"):
            for queue in (self._requests, self._poison):
                with suppress(ResourceExistsError):
                    queue.create_queue()

    def enqueue(self, request: RotationRequest, *, delay: int = 0) -> None:
        """Put ``request`` on the queue, hidden for ``delay`` whole seconds (a delayed retry)."""
        self._send(self._requests, request, delay)
        emit(
            Event.ENQUEUED,
            f"the request is queued, visible in {delay} s",
            key=request.key,
            request_id=request.request_id,
            delay=delay,
        )

    def defer_poison(self, request: RotationRequest, *, delay: int) -> None:
        """Put ``request`` back on the poison queue, hidden for ``delay`` seconds: the poison handler looks again
        later, when the copy of the request that holds the key's lock has finished."""
        self._send(self._poison, request, delay)

    def _send(self, queue: QueueClient, request: RotationRequest, delay: int) -> None:
        if not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"delay must be 0-{MAX_DELAY} seconds, got {delay}")
        text = replace(request, traceparent=current_traceparent() or request.traceparent).to_message()
        with unavailable(f"queue request {request.request_id} on {queue.queue_name}"):
            try:
                queue.send_message(text, visibility_timeout=delay)
            except ResourceNotFoundError:  # a fresh storage account has no queue yet: create it once, then send
                self.ensure()
                queue.send_message(text, visibility_timeout=delay)

    def poison_waiting(self, *, inserted_before: datetime) -> dict[str, int]:
        """Per poison queue (the requests' and the key events'), how many visible messages were inserted before
        ``inserted_before``; a peek sees at most ``PEEK_LIMIT`` of them. A queue that does not exist holds none.

        A message the poison handler deferred is invisible, and one it has not picked up yet is recent: neither is
        counted. What is left is a message nothing handles (the key events') or a handler that is not running."""
        waiting: dict[str, int] = {}
        for queue in self._watched:
            with unavailable(f"peek {queue.queue_name}"):
                try:
                    peeked = queue.peek_messages(max_messages=PEEK_LIMIT)
                except ResourceNotFoundError:
                    peeked = []
            waiting[queue.queue_name] = sum(
                1 for m in peeked if m.inserted_on is not None and m.inserted_on < inserted_before
            )
        return waiting
