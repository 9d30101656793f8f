"""Event Grid in the local Azure: Key Vault system events, their delivery to subscribers, and a custom topic.

What it does
    * Emits the Key Vault system events the rotation service consumes, in the published schema (azure-facts §4):
      ``Microsoft.KeyVault.KeyNewVersionCreated`` whenever the emulated vault makes a key version (REST create,
      rotate, or the Python API), and ``KeyNearExpiry`` / ``KeyExpired`` for the CURRENT (latest) version of each
      key when the emulator clock crosses ``exp - 30 days`` / ``exp``. Each expiry notice fires at most once per
      version; a new version starts afresh. A key seeded already inside the window (or already expired) gets its
      notice(s) on the next clock advance or ``scan()``, not at creation: real Key Vault fires on crossing into the
      window, and the emulator notices the crossing the next time it looks. When one advance crosses both
      thresholds, NearExpiry is emitted before Expired.
    * Delivers every event to the matching subscriptions (``subscribe``) in either schema, at least once and with no
      order promised, like Event Grid: one event per delivery, retries on the published schedule (10 s, 30 s, 1 min,
      5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then every 12 h) multiplied by ``retry_scale`` (default 0.01, so the first
      retry comes after 0.1 s), up to ``max_attempts``. Only 200-204 count as success; 400, 401 and 413 are not
      retried. Events that are given up on land in ``dead_letters`` with Event Grid's dead-letter fields. Options
      ``duplicate``, ``delay`` and ``shuffle`` reproduce at-least-once, late and out-of-order delivery on purpose.
      Delivery runs on ONE background worker thread, in due-time order, never on the thread that created the key.
      ``retry_scale`` and ``delay`` are real seconds: advancing the emulator clock does not hurry deliveries.
    * Serves a custom topic at ``emulator.topic_url`` (``POST /api/events?api-version=2018-01-01``) that the real
      ``EventGridPublisherClient`` publishes to, in the Event Grid or the CloudEvents 1.0 schema (chosen by the
      request's ``Content-Type``, as the SDK sets it). What arrives is kept in ``received``; it is not forwarded to
      subscriptions (those belong to the vaults' system topics).

Endpoints a subscription can point at
    * a webhook: an ``http``/``https`` URL on a loopback host (anything else is refused). POSTed with
      ``aeg-event-type: Notification``, ``aeg-subscription-name``, ``aeg-delivery-count`` and a JSON ARRAY holding one
      event; ``Content-Type: application/json`` for the Event Grid schema, ``application/cloudevents-batch+json;
      charset=utf-8`` for CloudEvents. ``https`` webhooks are verified against the emulator's CA bundle. Each attempt
      waits at most ``response_timeout`` seconds (Event Grid's 30 s by default). The subscription validation
      handshakes (``SubscriptionValidation`` event, CloudEvents ``OPTIONS``) are not emulated.
    * a storage queue ``{"connection_string": ..., "queue": ...}`` (Azurite): one message per event whose text is the
      event's JSON (one object, not an array) BASE64-ENCODED. That is what Event Grid writes today (reported in
      MicrosoftDocs/azure-docs#102923; the older "plain text" note in the docs is outdated) and what the Functions
      queue trigger decodes with its default ``messageEncoding: base64``. A ``QueueClient`` reading these messages
      needs ``message_decode_policy=TextBase64DecodePolicy()``. The queue must exist, as in Azure; a missing queue is
      a failed attempt that is retried.
    * a Python callable that receives the event dict (in-process tests). Returning counts as 200; raising as a failure.

Trusting the emulator from ``azure-eventgrid`` 4.22.1
    The public ``EventGridPublisherClient`` drops constructor keyword arguments for basic topics (azure-facts §4.3),
    so ``connection_verify=`` given to the constructor is ignored and the TLS handshake fails. Pass it to each call,
    ``client.send(events, connection_verify=emulator.ca_bundle)``, or set ``REQUESTS_CA_BUNDLE`` for the process.

Authentication on the custom topic: ``aeg-sas-key`` equal to ``topic_key``, or an ``aeg-sas-token`` made by
``azure.eventgrid.generate_sas`` for this endpoint with the topic key and a future expiry (checked against the
emulator clock). Entra ID bearer tokens are not emulated. Anything else gets 401 ``Unauthorized``.

What it must never do: deliver on a request thread, block the clock's caller on a subscriber, put a key, SAS token
or connection string into an error, a delivery record or an admin answer, or emit an expiry notice twice for the same
version.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import http.client
import ipaddress
import itertools
import json
import random
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from emulator.control import Clock
from emulator.http import HttpError, Request, Response, Service

if TYPE_CHECKING:
    from emulator.admin import AdminService
    from emulator.keyvault import Vault


EVENT_GRID_SCHEMA = "EventGridSchema"
CLOUD_EVENT_SCHEMA = "CloudEventSchemaV1_0"
SCHEMAS = (EVENT_GRID_SCHEMA, CLOUD_EVENT_SCHEMA)

KEY_NEW_VERSION_CREATED = "Microsoft.KeyVault.KeyNewVersionCreated"
KEY_NEAR_EXPIRY = "Microsoft.KeyVault.KeyNearExpiry"
KEY_EXPIRED = "Microsoft.KeyVault.KeyExpired"
NEAR_EXPIRY_LEAD = timedelta(days=30)  # fixed by Key Vault (azure-facts §4.1)

RETRY_SCHEDULE = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600)  # seconds, then every 12 h (azure-facts §5)
RETRY_AFTER_SCHEDULE = 43200
NOT_RETRIED = frozenset({400, 401, 413})
MAX_ATTEMPTS_LIMIT = 30
TOPIC_API_VERSION = "2018-01-01"

EVENT_GRID_CONTENT_TYPE = "application/json"
CLOUD_EVENTS_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
_REQUIRED_FIELDS = {
    EVENT_GRID_SCHEMA: ("id", "subject", "eventType", "eventTime", "data", "dataVersion"),
    CLOUD_EVENT_SCHEMA: ("id", "source", "type", "specversion"),
}
_QUEUE_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_SUBSCRIPTION_FIELDS = frozenset(
    {
        "webhook",
        "queue",
        "schema",
        "event_types",
        "subject_begins_with",
        "subject_ends_with",
        "duplicate",
        "delay",
        "shuffle",
        "max_attempts",
    }
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class PublishedEvent:
    """One system event, kept in both delivery schemas."""

    event_grid: dict[str, Any]
    cloud_event: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.event_grid["id"])

    @property
    def event_type(self) -> str:
        return str(self.event_grid["eventType"])

    @property
    def subject(self) -> str:
        return str(self.event_grid["subject"])

    def in_schema(self, schema: str) -> dict[str, Any]:
        return self.cloud_event if schema == CLOUD_EVENT_SCHEMA else self.event_grid


@dataclass(frozen=True)
class WebhookEndpoint:
    url: str

    def describe(self) -> dict[str, Any]:
        split = urlsplit(self.url)
        return {"webhook": f"{split.scheme}://{split.netloc}{split.path}"}  # the query may carry a function key


@dataclass(frozen=True)
class QueueEndpoint:
    connection_string: str = field(repr=False)
    queue: str

    def describe(self) -> dict[str, Any]:
        return {"queue": self.queue}


@dataclass(frozen=True)
class CallbackEndpoint:
    callback: Callable[[dict[str, Any]], Any]

    def describe(self) -> dict[str, Any]:
        return {"callback": getattr(self.callback, "__qualname__", type(self.callback).__name__)}


Endpoint = WebhookEndpoint | QueueEndpoint | CallbackEndpoint


@dataclass(frozen=True)
class Subscription:
    id: str
    endpoint: Endpoint
    schema: str
    event_types: tuple[str, ...] | None
    subject_begins_with: str | None
    subject_ends_with: str | None
    duplicate: int
    delay: float
    shuffle: bool
    max_attempts: int

    def matches(self, event: PublishedEvent) -> bool:
        """Event Grid's filters: event types exactly (case-insensitive), subject prefix and suffix case-insensitive."""
        if self.event_types is not None and event.event_type.lower() not in {t.lower() for t in self.event_types}:
            return False
        subject = event.subject.lower()
        if self.subject_begins_with and not subject.startswith(self.subject_begins_with.lower()):
            return False
        return not (self.subject_ends_with and not subject.endswith(self.subject_ends_with.lower()))

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.endpoint.describe(),
            "schema": self.schema,
            "event_types": None if self.event_types is None else list(self.event_types),
            "subject_begins_with": self.subject_begins_with,
            "subject_ends_with": self.subject_ends_with,
            "duplicate": self.duplicate,
            "delay": self.delay,
            "shuffle": self.shuffle,
            "max_attempts": self.max_attempts,
        }


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt. ``status`` is the HTTP status (200 for a callback that returned), None when no answer."""

    subscription_id: str
    event_id: str
    copy: int  # 0 for the event itself, 1..duplicate for the extra copies
    attempt: int  # 1 for the first try
    status: int | None
    outcome: str  # "delivered", "retrying" or "dead-lettered"
    error: str | None
    at: datetime

    def describe(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription_id,
            "event_id": self.event_id,
            "copy": self.copy,
            "attempt": self.attempt,
            "status": self.status,
            "outcome": self.outcome,
            "error": self.error,
            "at": _iso(self.at),
        }


@dataclass(frozen=True)
class DeadLetter:
    """An event Event Grid gave up on, with the fields a dead-letter blob carries (azure-facts §5)."""

    subscription_id: str
    event: dict[str, Any]
    dead_letter_reason: str  # "MaxDeliveryAttemptsExceeded" or "NonRetriableResponse"
    delivery_attempts: int
    last_delivery_outcome: str
    publish_time: datetime
    last_delivery_attempt_time: datetime

    def describe(self) -> dict[str, Any]:
        return {
            "subscriptionId": self.subscription_id,
            "event": self.event,
            "deadLetterReason": self.dead_letter_reason,
            "deliveryAttempts": self.delivery_attempts,
            "lastDeliveryOutcome": self.last_delivery_outcome,
            "publishTime": _iso(self.publish_time),
            "lastDeliveryAttemptTime": _iso(self.last_delivery_attempt_time),
        }


@dataclass(order=True)
class _Attempt:
    due: float  # time.monotonic()
    seq: int
    subscription: Subscription = field(compare=False)
    event: dict[str, Any] = field(compare=False)
    copy: int = field(compare=False)
    number: int = field(compare=False)
    published: datetime = field(compare=False)


class TopicService(Service):
    """The custom topic's data plane: ``POST /api/events``, Event Grid's error format."""

    name = "eventgrid"

    def __init__(self, eventgrid: EventGrid) -> None:
        super().__init__()
        self.eventgrid = eventgrid
        self.route("POST", "/api/events", "eventgrid.publish", self._publish)

    def bad_request(self, message: str) -> HttpError:
        return self.error(400, "BadRequest", message)

    def authenticate(self, request: Request) -> Response | None:
        key = request.headers.get("aeg-sas-key")
        token = request.headers.get("aeg-sas-token")
        if key is not None and hmac.compare_digest(key.encode(), self.eventgrid.topic_key.encode()):
            return None
        if token is not None and self.eventgrid.sas_token_is_valid(token):
            return None
        if key is not None:
            problem = "The aeg-sas-key header does not match the topic's key."
        elif token is not None:
            problem = "The aeg-sas-token is not signed with the topic's key, is for another endpoint, or has expired."
        else:
            problem = "Send the topic key in the aeg-sas-key header or a SAS token in aeg-sas-token."
        return Response(401, self.error(401, "Unauthorized", problem).body)

    def _publish(self, request: Request) -> Response:
        version = request.query.get("api-version")
        if version != TOPIC_API_VERSION:
            raise self.bad_request(
                f"Unsupported api-version {version!r}; this topic accepts api-version={TOPIC_API_VERSION}."
            )
        content_type = (request.headers.get("Content-Type") or "").lower()
        schema = CLOUD_EVENT_SCHEMA if content_type.startswith("application/cloudevents") else EVENT_GRID_SCHEMA
        events = request.json()
        if not isinstance(events, list) or not events:
            raise self.bad_request(f"The body must be a non-empty JSON array of events; got {json.dumps(events)[:40]}.")
        for index, event in enumerate(events):
            self._check(index, event, schema)
        self.eventgrid.record_received(schema, events)
        return Response(200)

    def _check(self, index: int, event: Any, schema: str) -> None:
        if not isinstance(event, dict):
            raise self.bad_request(f"Event {index} must be a JSON object; got {type(event).__name__}.")
        required = _REQUIRED_FIELDS[schema]
        missing = [name for name in required if event.get(name) is None]
        if missing:
            raise self.bad_request(
                f"Event {index} ({schema}) is missing required field(s) {missing}; every event needs {list(required)}."
            )
        wrong = [name for name in required if name != "data" and not isinstance(event[name], str)]
        if wrong:
            raise self.bad_request(f"Event {index} ({schema}): field(s) {wrong} must be strings.")
        if schema == CLOUD_EVENT_SCHEMA and event["specversion"] != "1.0":
            raise self.bad_request(f"Event {index}: specversion {event['specversion']!r} is not supported; use '1.0'.")


class EventGrid:
    def __init__(self, clock: Clock, *, vaults: Callable[[], Iterable[Vault]], ca_bundle: str) -> None:
        """``vaults()`` lists the vaults whose keys the expiry scan watches; ``ca_bundle`` verifies HTTPS webhooks."""
        self.clock = clock
        self._vaults = vaults
        self.ca_bundle = ca_bundle
        self.topic_url = ""  # set when the emulator starts listening
        self.topic_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.topic_service = TopicService(self)
        self.retry_scale = 0.01  # multiplies Event Grid's retry schedule; 1.0 is the real timing
        self.response_timeout = 30.0  # seconds a webhook may take to answer
        self.random = random.Random()  # noqa: S311 -- shuffles deliveries; seed it for a reproducible order
        self.published: list[PublishedEvent] = []
        self.received: list[dict[str, Any]] = []  # {"schema": ..., "event": {...}} per custom-topic event
        self.deliveries: list[Delivery] = []
        self.dead_letters: list[DeadLetter] = []
        self._subscriptions: dict[str, Subscription] = {}
        self._queue_clients: dict[str, QueueClient] = {}
        self._expiry_notices: set[tuple[str, str, str, str]] = set()  # (vault, key, version, event type)
        self._lock = threading.Lock()
        self._pending = threading.Condition(self._lock)
        self._heap: list[_Attempt] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._stopping = False
        self._worker: threading.Thread | None = None
        clock.on_advance(lambda before, after: self.scan())

    # Key Vault system events ---------------------------------------------------------------------------------
    def key_version_created(self, vault: Any, record: Any) -> PublishedEvent:
        """Emit ``KeyNewVersionCreated`` for a version the vault just made. Called by the vault, never blocks."""
        event = self._key_event(vault, record, KEY_NEW_VERSION_CREATED)
        self._publish([event])
        return event

    def scan(self) -> list[PublishedEvent]:
        """Emit the NearExpiry/Expired notices now due for each key's current version; returns what was emitted."""
        now = self.clock.timestamp()
        lead = int(NEAR_EXPIRY_LEAD.total_seconds())
        candidates: list[tuple[Any, Any, str]] = []
        for vault in list(self._vaults()):  # read the vaults without holding our lock
            for name in vault.key_names():
                record = vault.latest(name)
                if record is None or record.exp is None:
                    continue
                for event_type, threshold in ((KEY_NEAR_EXPIRY, record.exp - lead), (KEY_EXPIRED, record.exp)):
                    if now >= threshold:
                        candidates.append((vault, record, event_type))
        due: list[PublishedEvent] = []
        with self._lock:
            for vault, record, event_type in candidates:
                notice = (vault.name, record.name, record.version, event_type)
                if notice not in self._expiry_notices:
                    self._expiry_notices.add(notice)
                    due.append(self._key_event(vault, record, event_type))
        self._publish(due)
        return due

    def _key_event(self, vault: Any, record: Any, event_type: str) -> PublishedEvent:
        event_id = str(uuid.uuid4())
        time_ = _iso(self.clock.now())
        data = {
            "Id": record.kid,
            "VaultName": vault.name,
            "ObjectType": "Key",
            "ObjectName": record.name,
            "Version": record.version,
            "NBF": record.nbf,
            "EXP": record.exp,
        }
        return PublishedEvent(
            event_grid={
                "id": event_id,
                "topic": vault.arm_id,
                "subject": record.name,
                "eventType": event_type,
                "eventTime": time_,
                "data": data,
                "dataVersion": "1",
                "metadataVersion": "1",
            },
            cloud_event={
                "id": event_id,
                "source": vault.arm_id,
                "specversion": "1.0",
                "type": event_type,
                "subject": record.name,
                "time": time_,
                "data": dict(data),
            },
        )

    # Custom topic --------------------------------------------------------------------------------------------
    def record_received(self, schema: str, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self.received.extend({"schema": schema, "event": event} for event in events)

    def sas_token_is_valid(self, token: str) -> bool:
        """A token from ``azure.eventgrid.generate_sas``: signed with the topic key, for this topic, not expired."""
        unsigned, separator, signature = token.rpartition("&s=")
        if not separator:
            return False
        digest = hmac.new(base64.b64decode(self.topic_key), unsigned.encode("ascii", "replace"), hashlib.sha256)
        if not hmac.compare_digest(unquote(signature).encode(), base64.b64encode(digest.digest())):
            return False
        fields = parse_qs(unsigned)
        resource = fields.get("r", [""])[0].lower()
        if not self.topic_url or not resource.startswith(self.topic_url.lower()):
            return False
        try:
            expiry = datetime.fromisoformat(fields.get("e", [""])[0])
        except ValueError:
            return False
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)
        return expiry > self.clock.now()

    # Subscriptions -------------------------------------------------------------------------------------------
    def subscribe(
        self,
        *,
        endpoint: str | Mapping[str, Any] | Callable[[dict[str, Any]], Any],
        schema: str = EVENT_GRID_SCHEMA,
        event_types: list[str] | None = None,
        subject_begins_with: str | None = None,
        subject_ends_with: str | None = None,
        duplicate: int = 0,
        delay: float = 0.0,
        shuffle: bool = False,
        max_attempts: int = MAX_ATTEMPTS_LIMIT,
    ) -> Subscription:
        """Subscribe ``endpoint`` (a loopback webhook URL, a storage queue or a callable) to the system events.

        Raises ``ValueError`` naming the bad argument and what it should be.
        """
        target = _endpoint(endpoint)
        if schema not in SCHEMAS:
            raise ValueError(f"Unknown schema {schema!r}; use one of {list(SCHEMAS)}.")
        if event_types is not None:
            if not isinstance(event_types, list) or not event_types:
                raise ValueError(
                    f"event_types must be a non-empty list of event types, or null for all; got {event_types!r}."
                )
            if not all(isinstance(t, str) and t for t in event_types):
                raise ValueError(
                    f"event_types must hold event type names such as {KEY_NEAR_EXPIRY!r}; got {event_types!r}."
                )
        for name, value in (("subject_begins_with", subject_begins_with), ("subject_ends_with", subject_ends_with)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string; got {value!r}.")
        if isinstance(duplicate, bool) or not isinstance(duplicate, int) or duplicate < 0:
            raise ValueError(f"duplicate (extra copies of each event) must be a whole number >= 0; got {duplicate!r}.")
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ValueError(f"delay must be a number of seconds >= 0; got {delay!r}.")
        if not isinstance(shuffle, bool):
            raise ValueError(f"shuffle must be true or false; got {shuffle!r}.")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 30:
            raise ValueError(
                f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}; got {max_attempts!r}."
            )
        subscription = Subscription(
            id=uuid.uuid4().hex,
            endpoint=target,
            schema=schema,
            event_types=None if event_types is None else tuple(event_types),
            subject_begins_with=subject_begins_with,
            subject_ends_with=subject_ends_with,
            duplicate=duplicate,
            delay=float(delay),
            shuffle=shuffle,
            max_attempts=max_attempts,
        )
        queue_client = _queue_client(target) if isinstance(target, QueueEndpoint) else None
        with self._lock:
            self._subscriptions[subscription.id] = subscription
            if queue_client is not None:
                self._queue_clients[subscription.id] = queue_client
        return subscription

    def unsubscribe(self, subscription_id: str) -> None:
        """Delete a subscription; its pending deliveries are dropped. Raises ``KeyError`` for an unknown id."""
        with self._lock:
            if subscription_id not in self._subscriptions:
                raise KeyError(f"Unknown subscription {subscription_id!r}; known: {sorted(self._subscriptions)}.")
            del self._subscriptions[subscription_id]
            self._heap = [a for a in self._heap if a.subscription.id != subscription_id]
            heapq.heapify(self._heap)
            queue_client = self._queue_clients.pop(subscription_id, None)
            self._pending.notify_all()
        if queue_client is not None:
            queue_client.close()

    @property
    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self._subscriptions.values())

    # Delivery ------------------------------------------------------------------------------------------------
    def _publish(self, events: list[PublishedEvent]) -> None:
        if not events:
            return
        published = self.clock.now()
        with self._lock:
            self.published.extend(events)
            for subscription in self._subscriptions.values():
                copies = [
                    (event, copy)
                    for event in events
                    if subscription.matches(event)
                    for copy in range(subscription.duplicate + 1)
                ]
                if subscription.shuffle:
                    self.random.shuffle(copies)
                due = time.monotonic() + subscription.delay
                for event, copy in copies:
                    attempt = _Attempt(
                        due, next(self._seq), subscription, event.in_schema(subscription.schema), copy, 1, published
                    )
                    heapq.heappush(self._heap, attempt)
            if self._heap:
                self._start_worker()
                self._pending.notify_all()

    def _start_worker(self) -> None:  # called with the lock held
        if self._worker is None or not self._worker.is_alive():
            self._stopping = False
            self._worker = threading.Thread(target=self._run, name="eventgrid-delivery", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (not self._heap or self._heap[0].due > time.monotonic()):
                    self._pending.wait(None if not self._heap else self._heap[0].due - time.monotonic())
                if self._stopping:
                    return
                attempt = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                self._attempt(attempt)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._pending.notify_all()

    def _attempt(self, attempt: _Attempt) -> None:
        subscription = attempt.subscription
        status, error = self._send(subscription, attempt.event, attempt.number)
        now = self.clock.now()
        if error is None and status is not None and 200 <= status <= 204:
            outcome = "delivered"
        elif status in NOT_RETRIED or attempt.number >= subscription.max_attempts:
            outcome = "dead-lettered"
        else:
            outcome = "retrying"
        last = error or f"HTTP {status}"
        with self._lock:
            self.deliveries.append(
                Delivery(
                    subscription.id, str(attempt.event["id"]), attempt.copy, attempt.number, status, outcome, error, now
                )
            )
            if outcome == "dead-lettered":
                reason = "NonRetriableResponse" if status in NOT_RETRIED else "MaxDeliveryAttemptsExceeded"
                self.dead_letters.append(
                    DeadLetter(subscription.id, attempt.event, reason, attempt.number, last, attempt.published, now)
                )
            elif outcome == "retrying" and subscription.id in self._subscriptions and not self._stopping:
                step = (
                    RETRY_SCHEDULE[attempt.number - 1]
                    if attempt.number <= len(RETRY_SCHEDULE)
                    else RETRY_AFTER_SCHEDULE
                )
                attempt.due = time.monotonic() + step * self.retry_scale
                attempt.seq = next(self._seq)
                attempt.number += 1
                heapq.heappush(self._heap, attempt)

    def _send(self, subscription: Subscription, event: dict[str, Any], number: int) -> tuple[int | None, str | None]:
        """Try one delivery; (HTTP status or None, a description of the failure or None)."""
        target = subscription.endpoint
        if isinstance(target, CallbackEndpoint):
            try:
                target.callback(json.loads(json.dumps(event)))  # a copy, as if off the wire: `published` stays intact
            except Exception as exc:  # noqa: BLE001 -- a failing subscriber is a failed delivery, to be retried
                return None, f"{type(exc).__name__}: {exc}"
            return 200, None
        if isinstance(target, QueueEndpoint):
            with self._lock:
                client = self._queue_clients.get(subscription.id)
            if client is None:
                return None, "the subscription was deleted"
            try:
                client.send_message(json.dumps(event))
            except HttpResponseError as exc:
                return exc.status_code, f"storage answered {exc.status_code} {exc.reason}"
            except AzureError as exc:
                return None, f"storage unreachable: {type(exc).__name__}"
            return 201, None
        return self._post(subscription, target.url, event, number)

    def _post(
        self, subscription: Subscription, url: str, event: dict[str, Any], number: int
    ) -> tuple[int | None, str | None]:
        split = urlsplit(url)
        path = (split.path or "/") + (f"?{split.query}" if split.query else "")
        connection: http.client.HTTPConnection
        if split.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_bundle)
            connection = http.client.HTTPSConnection(split.netloc, timeout=self.response_timeout, context=context)
        else:
            connection = http.client.HTTPConnection(split.netloc, timeout=self.response_timeout)
        body = json.dumps([event]).encode()
        content_type = (
            CLOUD_EVENTS_CONTENT_TYPE if subscription.schema == CLOUD_EVENT_SCHEMA else EVENT_GRID_CONTENT_TYPE
        )
        headers = {
            "Content-Type": content_type,
            "aeg-event-type": "Notification",
            "aeg-subscription-name": subscription.id.upper(),
            "aeg-delivery-count": str(number - 1),  # earlier attempts, as Event Grid counts them
        }
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status, None
        except (OSError, http.client.HTTPException) as exc:
            return None, f"webhook unreachable: {type(exc).__name__}: {exc}"
        finally:
            connection.close()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no delivery is scheduled or running; ``TimeoutError`` names what is still pending."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._heap or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"Event Grid still has {len(self._heap)} scheduled and {self._in_flight} running deliveries "
                        f"after {timeout} s."
                    )
                self._pending.wait(left)

    def stop(self) -> None:
        """Stop delivering: pending deliveries are dropped, queue clients closed. Safe to call twice."""
        with self._lock:
            self._stopping = True
            self._heap.clear()
            self._pending.notify_all()
            worker, self._worker = self._worker, None
            clients = list(self._queue_clients.values())
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=5)
        for client in clients:
            client.close()

    # Admin API -----------------------------------------------------------------------------------------------
    def register_admin(self, admin: AdminService) -> None:
        def add(request: Request) -> Response:
            data = admin.body(request)
            unknown = sorted(set(data) - _SUBSCRIPTION_FIELDS)
            if unknown:
                raise admin.bad_request(
                    f"Unknown subscription fields {unknown}; allowed: {sorted(_SUBSCRIPTION_FIELDS)}."
                )
            if ("webhook" in data) == ("queue" in data):
                raise admin.bad_request(
                    'Give exactly one endpoint: {"webhook": "http://127.0.0.1:<port>/..."} or '
                    '{"queue": {"connection_string": "...", "queue": "<name>"}}.'
                )
            endpoint = admin.field(data, "webhook", str) if "webhook" in data else admin.field(data, "queue", dict)
            try:
                subscription = self.subscribe(
                    endpoint=endpoint,
                    schema=admin.field(data, "schema", str, EVENT_GRID_SCHEMA),
                    event_types=admin.field(data, "event_types", list, None),
                    subject_begins_with=admin.field(data, "subject_begins_with", str, None),
                    subject_ends_with=admin.field(data, "subject_ends_with", str, None),
                    duplicate=admin.field(data, "duplicate", int, 0),
                    delay=admin.field(data, "delay", (int, float), 0.0),
                    shuffle=admin.field(data, "shuffle", bool, False),
                    max_attempts=admin.field(data, "max_attempts", int, MAX_ATTEMPTS_LIMIT),
                )
            except ValueError as exc:
                raise admin.bad_request(str(exc)) from exc
            return Response(201, subscription.describe())

        def remove(request: Request, subscription_id: str) -> Response:
            try:
                self.unsubscribe(subscription_id)
            except KeyError as exc:
                raise admin.error(404, "NotFound", str(exc.args[0])) from exc
            return Response(204)

        def listed(request: Request) -> Response:
            return Response(200, {"subscriptions": [s.describe() for s in self.subscriptions]})

        def published(request: Request) -> Response:
            schema = request.query.get("schema", EVENT_GRID_SCHEMA)
            if schema not in SCHEMAS:
                raise admin.bad_request(f"Unknown schema {schema!r}; use one of {list(SCHEMAS)}.")
            with self._lock:
                events = [event.in_schema(schema) for event in self.published]
            return Response(200, {"schema": schema, "events": events})

        def received(request: Request) -> Response:
            with self._lock:
                return Response(200, {"events": list(self.received)})

        def deliveries(request: Request) -> Response:
            with self._lock:
                return Response(200, {"deliveries": [d.describe() for d in self.deliveries]})

        def dead_letters(request: Request) -> Response:
            with self._lock:
                return Response(200, {"dead_letters": [d.describe() for d in self.dead_letters]})

        def scan(request: Request) -> Response:
            return Response(200, {"emitted": [event.event_grid for event in self.scan()]})

        base = "/admin/eventgrid"
        admin.route("GET", f"{base}/subscriptions", "admin.eventgrid_subscriptions", listed)
        admin.route("POST", f"{base}/subscriptions", "admin.eventgrid_subscribe", add)
        admin.route("DELETE", f"{base}/subscriptions/(?P<subscription_id>[^/]+)", "admin.eventgrid_unsubscribe", remove)
        admin.route("GET", f"{base}/published", "admin.eventgrid_published", published)
        admin.route("GET", f"{base}/received", "admin.eventgrid_received", received)
        admin.route("GET", f"{base}/deliveries", "admin.eventgrid_deliveries", deliveries)
        admin.route("GET", f"{base}/dead-letters", "admin.eventgrid_dead_letters", dead_letters)
        admin.route("POST", f"{base}/scan", "admin.eventgrid_scan", scan)


def _endpoint(endpoint: Any) -> Endpoint:
    if isinstance(endpoint, str):
        return WebhookEndpoint(_loopback_url(endpoint))
    if isinstance(endpoint, Mapping):
        connection_string, queue = endpoint.get("connection_string"), endpoint.get("queue")
        extra = sorted(set(endpoint) - {"connection_string", "queue"})
        if extra or not isinstance(connection_string, str) or not isinstance(queue, str):
            raise ValueError(
                'A queue endpoint is {"connection_string": "<storage connection string>", "queue": "<queue name>"}'
                f"; got the fields {sorted(endpoint)}."
            )
        if not _QUEUE_NAME.fullmatch(queue):
            raise ValueError(
                f"Queue name {queue!r} is not valid: use 3-63 lowercase letters, digits and single hyphens, "
                "starting and ending with a letter or digit."
            )
        return QueueEndpoint(connection_string, queue)
    if callable(endpoint):
        return CallbackEndpoint(endpoint)
    raise ValueError(
        "endpoint must be a webhook URL, a queue {connection_string, queue} or a callable; "
        f"got {type(endpoint).__name__}."
    )


def _loopback_url(url: str) -> str:
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(f"Webhook {url.split('?')[0]!r} must be an http:// or https:// URL with a host.")
    host = split.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"Webhook host {host!r} is not a loopback address; "
            "the emulator only delivers to 127.0.0.1, ::1 or localhost."
        )
    try:
        split.port  # noqa: B018 -- urlsplit checks the port only when asked
    except ValueError as exc:
        raise ValueError(f"Webhook {url.split('?')[0]!r} has a bad port: {exc}.") from exc
    return url


def _queue_client(target: QueueEndpoint) -> QueueClient:
    try:
        return QueueClient.from_connection_string(
            target.connection_string,
            target.queue,
            message_encode_policy=TextBase64EncodePolicy(),
            retry_total=0,  # Event Grid's own schedule retries; azure-core must not add its own
        )
    except ValueError as exc:
        raise ValueError(
            "The queue endpoint's connection_string is not a storage connection string "
            "(expected AccountName=...;AccountKey=...;QueueEndpoint=...)."
        ) from exc
