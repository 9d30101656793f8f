"""A stand-in for the Azure Functions host's wiring, for the demo and the tests (Core Tools cannot be installed here).

It does what the host does between the wire and a Python function, using the ``azure.functions`` library's own
converters: Event Grid JSON becomes an ``EventGridEvent`` or ``CloudEvent``; a queue message read from (real) Azurite
becomes a ``QueueMessage`` with the host's metadata; an HTTP request becomes an ``HttpRequest``. It pumps the queues
like the queue extension: a function that returns has its message deleted; one that raises leaves it to reappear, and
after ``max_dequeue_count`` deliveries the message moves to ``<queue>-poison``.

It calls the functions registered on the app's ``FunctionApp`` and never patches them. ``get_functions()`` may be
called only once per ``FunctionApp`` (a second call raises ``ValueError``), so ``registered_functions`` reads it once
per app and process, as the host does, and every ``FunctionsHost`` of that app shares the result.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.queue import QueueMessageInConverter
from azure.functions.timer import TimerRequestConverter
from azure.storage.queue import QueueClient, QueueMessage, TextBase64DecodePolicy, TextBase64EncodePolicy

log = logging.getLogger("emulator.functions_host")

_registered: weakref.WeakKeyDictionary[func.FunctionApp, dict[str, func.Function]] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def registered_functions(app: func.FunctionApp) -> Mapping[str, func.Function]:
    """The app's functions by name, from its one allowed ``get_functions()`` call."""
    with _registered_lock:
        if app not in _registered:
            _registered[app] = {f.get_function_name(): f for f in app.get_functions()}
        return _registered[app]


class FunctionsHost:
    def __init__(self, app: func.FunctionApp, storage_connection_string: str, *, max_dequeue_count: int = 5) -> None:
        self._functions = registered_functions(app)
        self._connection = storage_connection_string
        self.max_dequeue_count = max_dequeue_count

    def function(self, name: str) -> Any:
        return self._functions[name].get_user_function()

    def trigger(self, name: str) -> dict[str, Any]:
        """The trigger binding's metadata, as the host reads it from the function's bindings."""
        return next(b.get_dict_repr() for b in self._functions[name].get_bindings() if b.type.endswith("Trigger"))

    # Event Grid ------------------------------------------------------------------------------------------------
    def deliver_events(self, name: str, payload: str | bytes | list[Mapping[str, Any]]) -> None:
        """An Event Grid webhook POST: the body is an array, and the host invokes the function once per event."""
        events = json.loads(payload) if isinstance(payload, (str, bytes)) else payload
        for event in events:
            decoded = EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata=None)
            self.function(name)(decoded)

    # Timer -----------------------------------------------------------------------------------------------------
    def fire_timer(self, name: str, *, past_due: bool = False) -> None:
        """A timer tick, in the JSON the host sends (``Schedule``, ``ScheduleStatus``, ``IsPastDue``)."""
        payload = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None, "IsPastDue": past_due}
        self.function(name)(
            TimerRequestConverter.decode(meta.Datum(json.dumps(payload), "json"), trigger_metadata=None)
        )

    # HTTP ------------------------------------------------------------------------------------------------------
    def http(
        self,
        name: str,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        route_params: Mapping[str, str] | None = None,
    ) -> func.HttpResponse:
        methods = [str(getattr(m, "value", m)) for m in self.trigger(name).get("methods") or []]
        if methods and method.upper() not in methods:  # the host answers a wrong method itself
            return func.HttpResponse(
                json.dumps({"error": {"code": "MethodNotAllowed", "message": f"{method} is not allowed"}}),
                status_code=405,
                mimetype="application/json",
            )
        request = func.HttpRequest(
            method=method.upper(),
            url=url,
            body=body,
            headers=dict(headers or {}),
            route_params=dict(route_params or {}),
        )
        response: func.HttpResponse = self.function(name)(request)
        return response

    # Queues ----------------------------------------------------------------------------------------------------
    def queue(self, queue_name: str) -> QueueClient:
        return QueueClient.from_connection_string(
            self._connection,
            queue_name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )

    def deliver_message(
        self,
        name: str,
        text: str,
        *,
        message_id: str = "00000000-0000-0000-0000-000000000000",
        dequeue_count: int = 1,
        inserted_on: datetime | None = None,
        expires_on: datetime | None = None,
        next_visible_on: datetime | None = None,
        pop_receipt: str = "",
    ) -> None:
        """Invoke a queue-triggered function with one message's text (already base64-decoded, as the host hands it
        over) and the host's metadata; whatever the function raises propagates, as it would to the host."""
        metadata = {
            "Id": meta.Datum(message_id, "string"),
            "DequeueCount": meta.Datum(str(dequeue_count), "json"),
            "InsertionTime": meta.Datum(_iso(inserted_on), "string"),
            "ExpirationTime": meta.Datum(_iso(expires_on), "string"),
            "NextVisibleTime": meta.Datum(_iso(next_visible_on), "string"),
            "PopReceipt": meta.Datum(pop_receipt, "string"),
        }
        decoded = QueueMessageInConverter.decode(meta.Datum(text, "string"), trigger_metadata=metadata)
        self.function(name)(decoded)

    def deliver_received(self, name: str, message: QueueMessage) -> None:
        """``deliver_message`` for a message received from the queue, with its id, dequeue count and times."""
        self.deliver_message(
            name,
            message.content,
            message_id=message.id,
            dequeue_count=message.dequeue_count or 1,
            inserted_on=message.inserted_on,
            expires_on=message.expires_on,
            next_visible_on=message.next_visible_on,
            pop_receipt=message.pop_receipt or "",
        )

    def pump(self, name: str, *, visibility_timeout: int = 1, max_messages: int = 100) -> int:
        """Deliver the visible messages of the function's queue, once each; the number of invocations."""
        queue_name = self.trigger(name)["queueName"]
        queue = self.queue(queue_name)
        invoked = 0
        for message in queue.receive_messages(max_messages=32, visibility_timeout=visibility_timeout):
            if invoked >= max_messages:
                break
            invoked += 1
            try:
                self.deliver_received(name, message)
            except Exception as exc:  # noqa: BLE001 -- the host logs a failed invocation and redelivers
                log.info("invocation of %s failed: %s", name, exc)
                if (message.dequeue_count or 0) >= self.max_dequeue_count:
                    self.queue(f"{queue_name}-poison").send_message(message.content)
                    queue.delete_message(message)
                continue
            queue.delete_message(message)
        return invoked


def _iso(value: datetime | None) -> str:
    return (value or datetime.now(UTC)).isoformat()
