"""Event Grid in the local Azure: Key Vault system events, their delivery to subscribers, and a custom topic.

At least as strict as Azure by default; every kinder behaviour is an explicit option (``validate=False``,
``data_variant=``). Sources are named where each rule lives; azure-facts means /work/shared/docs/azure-facts.md.

What it does
    * Emits the Key Vault system events the rotation service consumes, in the published schema (azure-facts §4):
      ``Microsoft.KeyVault.KeyNewVersionCreated`` whenever the emulated vault makes a key version (REST create,
      rotate, or the Python API), and ``KeyNearExpiry`` / ``KeyExpired`` for the CURRENT (latest) version of each
      key when the emulator clock crosses ``exp - notify_before`` / ``exp``. ``notify_before`` is the key's rotation
      policy Notify ``timeBeforeExpiry`` (P30D by default; azure-facts §10.10, ``Vault.notify_before``). Each expiry
      notice fires at most once per version; a new version starts afresh. A key seeded already inside the window (or
      already expired) gets its notice(s) on the next clock advance or ``scan()``, not at creation: real Key Vault
      fires on crossing into the window, and the emulator notices the crossing the next time it looks. When one
      advance crosses both thresholds, NearExpiry is emitted before Expired.
    * ``data`` follows the schema (SPEC-EGKV @294a072a, ``KeyVaultKeyNewVersionCreatedEventData``): PascalCase, ``NBF``
      and ``EXP`` numbers, and a key without ``nbf`` or ``exp`` OMITS the field (the schema types them ``number`` and
      requires neither, so ``null`` would break it). Microsoft's own samples show other shapes; a subscription can ask
      for one by name (``data_variant``, ``DATA_VARIANTS``) so tests can run the service against each.
    * Delivers every event to the matching subscriptions (``subscribe``) in either schema, at least once and with no
      order promised, like Event Grid: one event per delivery, retries on the published schedule (10 s, 30 s, 1 min,
      5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then every 12 h), never sooner than the status's minimum (503: 30 s,
      408: 2 min, 401 and 404 from a storage queue: 5 min), all multiplied by ``retry_scale`` (default 0.01, so the
      first retry comes after 0.1 s). A delivery stops at the first limit hit: ``max_attempts`` (1-30, default 30)
      or the event's time to live ``event_ttl`` (1-1440 minutes, default 1440), which is measured on the same scaled
      clock (``event_ttl`` x 60 x ``retry_scale`` real seconds from publication) and checked only when the next
      attempt comes due. Only 200-204 count as success. A webhook's 400, 401, 403 and 413 and a storage queue's 400,
      403 and 413 are not retried (EG-DR, the "retry doesn't happen" table). What is given up on lands in
      ``dead_letters`` with Event Grid's own words: ``deadLetterReason`` and ``lastDeliveryOutcome`` (see
      ``DeadLetterReason`` and ``DeliveryOutcome``). Options ``duplicate``, ``delay`` and ``shuffle`` reproduce
      at-least-once, late and out-of-order delivery on purpose. Delivery runs on ONE background worker thread, in
      due-time order, never on the thread that created the key. ``retry_scale`` and ``delay`` are real seconds:
      advancing the emulator clock does not hurry deliveries.
    * Serves a custom topic at ``emulator.topic_url`` (``POST /api/events?api-version=2018-01-01``) that the real
      ``EventGridPublisherClient`` publishes to, in the Event Grid or the CloudEvents 1.0 schema (chosen by the
      request's ``Content-Type``, as the SDK sets it). What arrives is kept in ``received``; it is not forwarded to
      subscriptions (those belong to the vaults' system topics).

Endpoints a subscription can point at
    * a webhook: an ``http``/``https`` URL on a loopback host (anything else is refused). Creating the subscription
      runs Event Grid's validation handshake first, and the subscription exists only if it succeeds (EG-VAL,
      EG-VALCE, azure-facts §5). For the Event Grid schema that is a POST of a
      ``Microsoft.EventGrid.SubscriptionValidationEvent`` with ``aeg-event-type: SubscriptionValidation``, answered
      within ``response_timeout`` by 200 and ``{"validationResponse": <data.validationCode>}``. For CloudEvents it is
      an ``OPTIONS`` with ``WebHook-Request-Origin: eventgrid.azure.net``, answered 200-204 with
      ``WebHook-Allowed-Origin`` equal to that origin or ``*``. A failure raises ``ValueError`` with Event Grid's
      message ("The attempt to validate the provided endpoint ... failed"). ``validate=False`` skips the handshake
      for endpoints that cannot answer it. Each event is then POSTed as a JSON ARRAY holding one event, with
      ``aeg-event-type: Notification``, ``aeg-subscription-name`` (upper case), ``aeg-delivery-count`` (earlier
      attempts), ``aeg-metadata-version`` (``1``, or the CloudEvents spec version), ``aeg-data-version`` (Event Grid
      schema only) and ``aeg-output-event-id`` (azure-docs
      ``articles/event-grid/includes/event-grid-message-headers.md``). ``Content-Type`` is ``application/json`` for
      the Event Grid schema, ``application/cloudevents-batch+json; charset=utf-8`` for CloudEvents. ``https``
      webhooks are verified against the emulator's CA bundle. Each attempt waits at most ``response_timeout``
      seconds (Event Grid's 30 s by default).
    * a storage queue ``{"connection_string": ..., "queue": ...}`` (Azurite): one message per event whose text is the
      event's JSON (one object, not an array) BASE64-ENCODED. That is what Event Grid writes today (reported in
      MicrosoftDocs/azure-docs#102923; the older "plain text" note in the docs is outdated) and what the Functions
      queue trigger decodes with its default ``messageEncoding: base64``. A ``QueueClient`` reading these messages
      needs ``message_decode_policy=TextBase64DecodePolicy()``. The queue must exist, as in Azure; a missing queue is
      a failed attempt (``NotFound``) that is retried. Event Grid does not validate queue endpoints.
    * a Python callable that receives the event dict (in-process tests; no handshake). Returning counts as 200;
      raising as a failure (``GenericError``).

Trusting the emulator from ``azure-eventgrid`` 4.22.1
    The public ``EventGridPublisherClient`` drops constructor keyword arguments for basic topics (azure-facts §4.3),
    so ``connection_verify=`` given to the constructor is ignored and the TLS handshake fails. Pass it to each call,
    ``client.send(events, connection_verify=emulator.ca_bundle)``, or set ``REQUESTS_CA_BUNDLE`` for the process.

Authentication on the custom topic, in this order: ``aeg-sas-key`` equal to ``topic_key``; an ``aeg-sas-token`` made
by ``azure.eventgrid.generate_sas`` for this endpoint with the topic key and a future expiry (checked against the
emulator clock); or an Entra ID bearer token (``EventGridPublisherClient(endpoint, credential)`` asks for
``https://eventgrid.azure.net/.default``) whose audience is ``https://eventgrid.azure.net`` and whose ``oid`` may send
(the "EventGrid Data Sender" role: every identity may unless ``deny``-ed). Everything else gets 401 ``Unauthorized``
in Event Grid's error format, a denied identity included: Event Grid answers a principal without the role with 401,
not 403 (Azure/azure-sdk-for-net#22831 quotes the answer; the message here follows it).

What it must never do: deliver on a request thread, block the clock's caller on a subscriber, put a key, SAS token,
bearer token or connection string into an error, a delivery record or an admin answer, or emit an expiry notice
twice for the same version.
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
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from azure.core.exceptions import AzureError, HttpResponseError, ServiceResponseTimeoutError
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
SUBSCRIPTION_VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"

RETRY_SCHEDULE = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600)  # seconds, then every 12 h (azure-facts §5)
RETRY_AFTER_SCHEDULE = 43200
MAX_ATTEMPTS_LIMIT = 30
EVENT_TTL_LIMIT = 1440  # minutes: the retry policy's eventTimeToLiveInMinutes is 1-1440, default 1440 (EG-DR)
# "Retry doesn't happen" (EG-DR, current Learn page; the 2023 text @2ccf6fd4 also marks 403 "Not retried").
NOT_RETRIED_WEBHOOK = frozenset({400, 401, 403, 413})
NOT_RETRIED_AZURE_RESOURCE = frozenset({400, 403, 413})
# The minimum wait before the next attempt after these answers (EG-DR "Failure codes"); the schedule's own step
# applies when it is longer. 401 and 404 wait 5 minutes only for Azure resource endpoints (here: storage queues).
MIN_RETRY_WEBHOOK = {408: 120, 503: 30}
MIN_RETRY_AZURE_RESOURCE = {401: 300, 404: 300, 408: 120, 503: 30}

TOPIC_API_VERSION = "2018-01-01"
EVENT_GRID_AUDIENCE = "https://eventgrid.azure.net"  # the only token audience the topic accepts (azure-facts §4.3)
WEBHOOK_ORIGIN = "eventgrid.azure.net"  # WebHook-Request-Origin of the CloudEvents handshake (azure-facts §5, EXT-EG)
# The portal's and ARM's words when the handshake fails (azure-docs articles/event-grid/troubleshoot-errors.md).
VALIDATION_FAILED = (
    "The attempt to validate the provided endpoint {url} failed. For more details, visit https://aka.ms/esvalidation"
)

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
        "event_ttl",
        "validate",
        "data_variant",
    }
)

# The shapes of Key Vault event ``data`` Microsoft has published. "spec" is the default; the rest on request.
DATA_VARIANTS = {
    "spec": "the schema (SPEC-EGKV @294a072a): PascalCase, NBF/EXP numbers, a missing nbf/exp omitted",
    "string-dates": "NBF and EXP as strings of epoch seconds, as in the spec examples (@2f9736e6) and the docs",
    "camel-case": "camelCase names id, vaultName, objectType, objectName, version, nbf, exp (SPEC-EGKV @1370afed, "
    "the 2020 docs @38285e00)",
    "docs-sample": 'the current docs sample exactly (EG-KV @05b33ddd): "ObjectName " with a trailing space, a Version '
    "with a leading space, NBF/EXP strings",
    "null-dates": "the schema, but a missing nbf/exp sent as null (what a serializer of nullable fields writes)",
}
_CAMEL_CASE = {
    "Id": "id",
    "VaultName": "vaultName",
    "ObjectType": "objectType",
    "ObjectName": "objectName",
    "Version": "version",
    "NBF": "nbf",
    "EXP": "exp",
}


class DeadLetterReason(StrEnum):
    """``deadLetterReason``: why Event Grid gave up on an event."""

    MAX_DELIVERY_ATTEMPTS_EXCEEDED = "MaxDeliveryAttemptsExceeded"  # EG-DR dead-letter sample
    TIME_TO_LIVE_EXCEEDED = "TimeToLiveExceeded"  # the retry policy's TTL; no public sample found (UNCONFIRMED)
    # A 400 from the endpoint, not retried: the value in a captured dead letter (Stack Overflow 52173869, 2018).
    UNDELIVERABLE_DUE_TO_HTTP_BAD_REQUEST = "UndeliverableDueToHttpBadRequest"
    # 401, 403 or 413, not retried. Inferred: Event Grid's namespace dead letters say "Undeliverable due to client
    # error", and basic topics "UndeliverableDueToProbationCausedByClientError" (Azure/azure-sdk-for-net#26198).
    UNDELIVERABLE_DUE_TO_CLIENT_ERROR = "UndeliverableDueToClientError"


class DeliveryOutcome(StrEnum):
    """``lastDeliveryOutcome``: the result of the last attempt, in Event Grid's words (EG-DR @2ccf6fd4 table)."""

    BAD_REQUEST = "BadRequest"  # 400
    UNAUTHORIZED = "Unauthorized"  # 401
    FORBIDDEN = "Forbidden"  # 403
    NOT_FOUND = "NotFound"  # 404
    TIMED_OUT = "TimedOut"  # no answer within response_timeout, or 408 (Stack Overflow 52173869)
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"  # 413 (the table names it for Service Bus and Event Hubs)
    BUSY = "Busy"  # 429 or 503: "Destination server is busy"
    SOCKET_ERROR = "SocketError"  # refused, reset, TLS failure
    RESOLUTION_ERROR = "ResolutionError"  # the host name does not resolve
    GENERIC_ERROR = "GenericError"  # any other failure (AegDeliveryFailureLogs, MicrosoftDocs/azure-docs#60595)
    ABORTED = "Aborted"  # "aborted by Event Grid after a time interval": TTL expired before any attempt


def _outcome_of_status(status: int) -> DeliveryOutcome:
    return {
        400: DeliveryOutcome.BAD_REQUEST,
        401: DeliveryOutcome.UNAUTHORIZED,
        403: DeliveryOutcome.FORBIDDEN,
        404: DeliveryOutcome.NOT_FOUND,
        408: DeliveryOutcome.TIMED_OUT,
        413: DeliveryOutcome.PAYLOAD_TOO_LARGE,
        429: DeliveryOutcome.BUSY,
        503: DeliveryOutcome.BUSY,
    }.get(status, DeliveryOutcome.GENERIC_ERROR)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key_event_data(data: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """Key Vault event ``data`` in the shape ``variant`` names (``DATA_VARIANTS``); ``data`` is the spec shape."""
    shaped = dict(data)
    if variant == "spec":
        return shaped
    if variant == "null-dates":
        return {**shaped, "NBF": shaped.get("NBF"), "EXP": shaped.get("EXP")}
    if variant in ("string-dates", "docs-sample"):
        for name in ("NBF", "EXP"):
            if shaped.get(name) is not None:
                shaped[name] = str(shaped[name])
        if variant == "string-dates":
            return shaped
        return {
            ("ObjectName " if name == "ObjectName" else name): (f" {value}" if name == "Version" else value)
            for name, value in shaped.items()
        }
    if variant == "camel-case":
        return {_CAMEL_CASE.get(name, name): value for name, value in shaped.items()}
    raise ValueError(f"Unknown data_variant {variant!r}; use one of {sorted(DATA_VARIANTS)}.")


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

    def in_schema(self, schema: str, data_variant: str = "spec") -> dict[str, Any]:
        """The event as a subscription with ``schema`` and ``data_variant`` receives it (a copy when reshaped)."""
        event = self.cloud_event if schema == CLOUD_EVENT_SCHEMA else self.event_grid
        if data_variant == "spec":
            return event
        return {**event, "data": key_event_data(event["data"], data_variant)}


@dataclass(frozen=True)
class WebhookEndpoint:
    url: str

    def describe(self) -> dict[str, Any]:
        return {"webhook": self.safe_url}

    @property
    def safe_url(self) -> str:
        split = urlsplit(self.url)
        return f"{split.scheme}://{split.netloc}{split.path}"  # the query may carry a function key


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
    event_ttl: int = EVENT_TTL_LIMIT  # minutes
    validation: str | None = None  # "Succeeded" (handshake answered), "Skipped" (validate=False), None (not a webhook)
    data_variant: str = "spec"

    @property
    def name(self) -> str:
        """The name Event Grid sends in ``aeg-subscription-name`` and dead-letter blob paths: upper case."""
        return self.id.upper()

    def matches(self, event: PublishedEvent) -> bool:
        """Event Grid's filters: event types exactly (case-insensitive), subject prefix and suffix case-insensitive."""
        if self.event_types is not None and event.event_type.lower() not in {t.lower() for t in self.event_types}:
            return False
        subject = event.subject.lower()
        if self.subject_begins_with and not subject.startswith(self.subject_begins_with.lower()):
            return False
        return not (self.subject_ends_with and not subject.endswith(self.subject_ends_with.lower()))

    def not_retried(self, status: int | None) -> bool:
        """An answer Event Grid does not retry for this kind of endpoint (EG-DR)."""
        if isinstance(self.endpoint, WebhookEndpoint):
            return status in NOT_RETRIED_WEBHOOK
        return isinstance(self.endpoint, QueueEndpoint) and status in NOT_RETRIED_AZURE_RESOURCE

    def next_wait(self, attempt: int, status: int | None) -> float:
        """Seconds (unscaled) before the attempt after ``attempt``: the schedule's step, or the status's minimum."""
        step = RETRY_SCHEDULE[attempt - 1] if attempt <= len(RETRY_SCHEDULE) else RETRY_AFTER_SCHEDULE
        minimums = MIN_RETRY_AZURE_RESOURCE if isinstance(self.endpoint, QueueEndpoint) else MIN_RETRY_WEBHOOK
        return float(max(step, minimums.get(status or 0, 0)))

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
            "event_ttl": self.event_ttl,
            "validation": self.validation,
            "data_variant": self.data_variant,
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
    result: str = "Delivered"  # Event Grid's word for this attempt: "Delivered" or a DeliveryOutcome

    def describe(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription_id,
            "event_id": self.event_id,
            "copy": self.copy,
            "attempt": self.attempt,
            "status": self.status,
            "outcome": self.outcome,
            "result": self.result,
            "error": self.error,
            "at": _iso(self.at),
        }


@dataclass(frozen=True)
class DeadLetter:
    """An event Event Grid gave up on, with the fields a dead-letter blob carries (EG-DR "Dead-letter event")."""

    subscription_id: str
    event: dict[str, Any]
    dead_letter_reason: DeadLetterReason
    delivery_attempts: int
    last_delivery_outcome: DeliveryOutcome
    publish_time: datetime
    last_delivery_attempt_time: datetime
    last_http_status_code: int | None = None  # in captured dead letters when the endpoint answered

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "subscriptionId": self.subscription_id,
            "event": self.event,
            "deadLetterReason": str(self.dead_letter_reason),
            "deliveryAttempts": self.delivery_attempts,
            "lastDeliveryOutcome": str(self.last_delivery_outcome),
            "publishTime": _iso(self.publish_time),
            "lastDeliveryAttemptTime": _iso(self.last_delivery_attempt_time),
        }
        if self.last_http_status_code is not None:
            described["lastHttpStatusCode"] = self.last_http_status_code
        return described


@dataclass(order=True)
class _Attempt:
    due: float  # time.monotonic()
    seq: int
    subscription: Subscription = field(compare=False)
    event: dict[str, Any] = field(compare=False)
    copy: int = field(compare=False)
    number: int = field(compare=False)
    published: datetime = field(compare=False)
    expires: float = field(compare=False)  # time.monotonic() when the event's time to live runs out
    last_outcome: DeliveryOutcome | None = field(compare=False, default=None)
    last_status: int | None = field(compare=False, default=None)
    last_at: datetime | None = field(compare=False, default=None)


@dataclass(frozen=True)
class _Answer:
    """What one HTTP exchange with a webhook gave: a status and headers and body, or why there was none."""

    status: int | None
    headers: Mapping[str, str]
    body: bytes
    error: str | None
    outcome: DeliveryOutcome | None  # None for a 200-204


class TopicService(Service):
    """The custom topic's data plane: ``POST /api/events``, Event Grid's error format."""

    name = "eventgrid"

    def __init__(self, eventgrid: EventGrid) -> None:
        super().__init__()
        self.eventgrid = eventgrid
        self.route("POST", "/api/events", "eventgrid.publish", self._publish)
        self.route("GET", "/eventsubscriptions/[^/]+/validate", "eventgrid.validate", self._manual_validation)

    def bad_request(self, message: str) -> HttpError:
        return self.error(400, "BadRequest", message)

    def authenticate(self, request: Request) -> Response | None:
        if request.path != "/api/events":
            return None
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
        elif request.headers.get("Authorization") is not None:
            refused = self._bearer_problem(request)
            if refused is None:
                return None
            problem = refused
        else:
            problem = (
                "Send the topic key in the aeg-sas-key header, a SAS token in aeg-sas-token, or an Entra ID token "
                f"for {EVENT_GRID_AUDIENCE} in Authorization."
            )
        return Response(401, self.error(401, "Unauthorized", problem).body)

    def _bearer_problem(self, request: Request) -> str | None:
        """Why a bearer token may not publish here, or None when it may (azure-facts §4.3, §10.9)."""
        identity = request.identity
        if identity is None:
            return "The Authorization header does not hold a bearer token with a readable 'oid' claim."
        audience = request.audience
        if audience != EVENT_GRID_AUDIENCE:
            return (
                f"The access token's audience {audience!r} is not valid for Event Grid; request a token for the "
                f"scope {EVENT_GRID_AUDIENCE}/.default."
            )
        if not self.eventgrid.has_access(identity):
            now = self.eventgrid.clock.now().astimezone(UTC)
            hour = now.hour % 12 or 12
            stamp = f"{now.month}/{now.day}/{now.year} {hour}:{now:%M:%S} {'PM' if now.hour >= 12 else 'AM'}"
            report = f"{uuid.uuid4()}:0:{stamp} (UTC)"  # as in the quoted answer: "7/19/2021 7:55:30 PM (UTC)"
            return (
                "The principal associated with access token presented with the incoming request does not have "
                f"permission to send data to {self.eventgrid.topic_id}. Report '{report}' to our forums for "
                "assistance or raise a support ticket."
            )
        return None

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

    def _manual_validation(self, request: Request) -> Response:
        raise self.bad_request(
            "Manual validation through validationUrl is not emulated: answer the SubscriptionValidation POST with "
            '200 and {"validationResponse": <validationCode>}, or subscribe with validate=False.'
        )

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
    def __init__(
        self,
        clock: Clock,
        *,
        vaults: Callable[[], Iterable[Vault]],
        ca_bundle: str,
        topic_id: str,
    ) -> None:
        """``vaults()`` lists the vaults whose keys the expiry scan watches; ``ca_bundle`` verifies HTTPS webhooks;
        ``topic_id`` is the custom topic's ARM id (named in Event Grid's 401 for a principal without the role)."""
        self.clock = clock
        self._vaults = vaults
        self.ca_bundle = ca_bundle
        self.topic_id = topic_id
        self.topic_url = ""  # set when the emulator starts listening
        self.topic_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.topic_service = TopicService(self)
        self.retry_scale = 0.01  # multiplies Event Grid's retry schedule and the events' time to live; 1.0 is real
        self.response_timeout = 30.0  # seconds a webhook may take to answer a delivery or the validation handshake
        self.random = random.Random()  # noqa: S311 -- shuffles deliveries; seed it for a reproducible order
        self.published: list[PublishedEvent] = []
        self.received: list[dict[str, Any]] = []  # {"schema": ..., "event": {...}} per custom-topic event
        self.deliveries: list[Delivery] = []
        self.dead_letters: list[DeadLetter] = []
        self._subscriptions: dict[str, Subscription] = {}
        self._queue_clients: dict[str, QueueClient] = {}
        self._expiry_notices: set[tuple[str, str, str, str]] = set()  # (vault, key, version, event type)
        self._denied: set[str] = set()
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
        """Emit the NearExpiry/Expired notices now due for each key's current version; returns what was emitted.

        NearExpiry is due at ``exp`` minus the key's policy Notify ``timeBeforeExpiry`` (``Vault.notify_before``,
        P30D unless the policy says otherwise; azure-facts §10.10).
        """
        now = self.clock.timestamp()
        candidates: list[tuple[Any, Any, str]] = []
        for vault in list(self._vaults()):  # read the vaults without holding our lock
            for name in vault.key_names():
                record = vault.latest(name)
                if record is None or record.exp is None:
                    continue
                lead = vault.notify_before(name).total_seconds()
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
        data: dict[str, Any] = {
            "Id": record.kid,
            "VaultName": vault.name,
            "ObjectType": "Key",
            "ObjectName": record.name,
            "Version": record.version,
        }
        # NBF and EXP are numbers in the schema and required by nothing: a key without one omits it.
        data.update({name: value for name, value in (("NBF", record.nbf), ("EXP", record.exp)) if value is not None})
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

    def deny(self, identity: str) -> None:
        """Take the "EventGrid Data Sender" role from ``identity`` (a token's oid): its publishes get 401."""
        with self._lock:
            self._denied.add(identity)

    def allow(self, identity: str) -> None:
        with self._lock:
            self._denied.discard(identity)

    def has_access(self, identity: str | None) -> bool:
        """Identities may send unless denied (the emulator's convention: no role assignments to make)."""
        with self._lock:
            return identity is not None and identity not in self._denied

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
        event_ttl: int = EVENT_TTL_LIMIT,
        validate: bool = True,
        data_variant: str = "spec",
    ) -> Subscription:
        """Subscribe ``endpoint`` (a loopback webhook URL, a storage queue or a callable) to the system events.

        A webhook must pass Event Grid's validation handshake first (``validate=False`` skips it; queues and
        callables have none). ``event_ttl`` is in minutes (1-1440). ``data_variant`` names a shape of ``data``
        from ``DATA_VARIANTS``. Raises ``ValueError`` naming the bad argument and what it should be, or saying why
        the handshake failed; a failed handshake creates nothing.
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
        if isinstance(event_ttl, bool) or not isinstance(event_ttl, int) or not 1 <= event_ttl <= EVENT_TTL_LIMIT:
            raise ValueError(
                f"event_ttl (the event's time to live) must be a whole number of minutes from 1 to {EVENT_TTL_LIMIT}; "
                f"got {event_ttl!r}."
            )
        if not isinstance(validate, bool):
            raise ValueError(f"validate must be true or false; got {validate!r}.")
        if data_variant not in DATA_VARIANTS:
            raise ValueError(f"Unknown data_variant {data_variant!r}; use one of {sorted(DATA_VARIANTS)}.")
        validation = None
        if isinstance(target, WebhookEndpoint):
            validation = "Succeeded" if validate else "Skipped"
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
            event_ttl=event_ttl,
            validation=validation,
            data_variant=data_variant,
        )
        queue_client = _queue_client(target) if isinstance(target, QueueEndpoint) else None
        if isinstance(target, WebhookEndpoint) and validate:
            self._validate(subscription, target)  # before it exists: nothing is delivered to an unvalidated endpoint
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

    def _validate(self, subscription: Subscription, target: WebhookEndpoint) -> None:
        """Event Grid's handshake for a new webhook subscription; ``ValueError`` with Event Grid's words if it fails."""
        if subscription.schema == CLOUD_EVENT_SCHEMA:
            # CloudEvents 1.0 abuse protection (EG-VALCE): OPTIONS, consent is the WebHook-Allowed-Origin header.
            answer = self._http("OPTIONS", target.url, None, {"WebHook-Request-Origin": WEBHOOK_ORIGIN})
            allowed = answer.headers.get("webhook-allowed-origin")
            if answer.outcome is None and allowed in (WEBHOOK_ORIGIN, "*"):
                return
            why = answer.error or (
                f"the OPTIONS request got {answer.status} with WebHook-Allowed-Origin {allowed!r}; the endpoint must "
                f"answer 200 with WebHook-Allowed-Origin: {WEBHOOK_ORIGIN} (or *)"
            )
        else:
            code = str(uuid.uuid4())
            event = self._validation_event(subscription, code)
            headers = self._headers(subscription, event, "SubscriptionValidation", attempt=1)
            answer = self._http("POST", target.url, json.dumps([event]).encode(), headers)
            try:
                reply = json.loads(answer.body) if answer.body else None
            except ValueError:
                reply = None
            if answer.status == 200 and isinstance(reply, dict) and reply.get("validationResponse") == code:
                return
            why = answer.error or (
                f"the SubscriptionValidation POST got {answer.status} and {answer.body[:80]!r}; the endpoint must "
                'answer 200 with {"validationResponse": "<data.validationCode>"} within '
                f"{self.response_timeout:g} s"
            )
        raise ValueError(f"{VALIDATION_FAILED.format(url=target.safe_url)} ({why}).")

    def _validation_event(self, subscription: Subscription, code: str) -> dict[str, Any]:
        """A ``SubscriptionValidationEvent`` shaped like EG-VAL's sample (azure-facts §5)."""
        now = self.clock.now()
        base = self.topic_url.removesuffix("/api/events")
        token = secrets.token_urlsafe(12)
        validation_url = (
            f"{base}/eventsubscriptions/{subscription.name.lower()}/validate?id={code}"
            f"&t={quote(_iso(now))}&apiVersion=2018-05-01-preview&token={token}"
        )
        return {
            "id": str(uuid.uuid4()),
            "topic": self.topic_id.split("/resourceGroups/")[0],
            "subject": "",
            "data": {"validationCode": code, "validationUrl": validation_url},
            "eventType": SUBSCRIPTION_VALIDATION_EVENT,
            "eventTime": _iso(now),
            "metadataVersion": "1",
            "dataVersion": "1",
        }

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
                started = time.monotonic()
                due = started + subscription.delay
                expires = started + subscription.event_ttl * 60 * self.retry_scale  # TTL on the scaled schedule
                for event, copy in copies:
                    body = event.in_schema(subscription.schema, subscription.data_variant)
                    attempt = _Attempt(due, next(self._seq), subscription, body, copy, 1, published, expires)
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
        if time.monotonic() >= attempt.expires:  # TTL is checked only when an attempt comes due (EG-DR)
            with self._lock:
                self.dead_letters.append(
                    DeadLetter(
                        subscription.id,
                        attempt.event,
                        DeadLetterReason.TIME_TO_LIVE_EXCEEDED,
                        attempt.number - 1,
                        attempt.last_outcome or DeliveryOutcome.ABORTED,
                        attempt.published,
                        attempt.last_at or self.clock.now(),
                        attempt.last_status,
                    )
                )
            return
        status, error, result = self._send(subscription, attempt.event, attempt.number)
        now = self.clock.now()
        reason: DeadLetterReason | None = None
        if result is None:
            outcome = "delivered"
        elif subscription.not_retried(status):
            outcome = "dead-lettered"
            reason = (
                DeadLetterReason.UNDELIVERABLE_DUE_TO_HTTP_BAD_REQUEST
                if status == 400
                else DeadLetterReason.UNDELIVERABLE_DUE_TO_CLIENT_ERROR
            )
        elif attempt.number >= subscription.max_attempts:
            outcome = "dead-lettered"
            reason = DeadLetterReason.MAX_DELIVERY_ATTEMPTS_EXCEEDED
        else:
            outcome = "retrying"
        event_id = str(attempt.event["id"])
        with self._lock:
            self.deliveries.append(
                Delivery(
                    subscription.id,
                    event_id,
                    attempt.copy,
                    attempt.number,
                    status,
                    outcome,
                    error,
                    now,
                    "Delivered" if result is None else str(result),
                )
            )
            if reason is not None and result is not None:
                self.dead_letters.append(
                    DeadLetter(
                        subscription.id, attempt.event, reason, attempt.number, result, attempt.published, now, status
                    )
                )
            elif outcome == "retrying" and subscription.id in self._subscriptions and not self._stopping:
                attempt.due = time.monotonic() + subscription.next_wait(attempt.number, status) * self.retry_scale
                attempt.seq = next(self._seq)
                attempt.number += 1
                attempt.last_outcome, attempt.last_status, attempt.last_at = result, status, now
                heapq.heappush(self._heap, attempt)

    def _send(
        self, subscription: Subscription, event: dict[str, Any], number: int
    ) -> tuple[int | None, str | None, DeliveryOutcome | None]:
        """Try one delivery: (HTTP status or None, a description of the failure, Event Grid's word for it or None)."""
        target = subscription.endpoint
        if isinstance(target, CallbackEndpoint):
            try:
                target.callback(json.loads(json.dumps(event)))  # a copy, as if off the wire: `published` stays intact
            except Exception as exc:  # noqa: BLE001 -- a failing subscriber is a failed delivery, to be retried
                return None, f"{type(exc).__name__}: {exc}", DeliveryOutcome.GENERIC_ERROR
            return 200, None, None
        if isinstance(target, QueueEndpoint):
            with self._lock:
                client = self._queue_clients.get(subscription.id)
            if client is None:
                return None, "the subscription was deleted", DeliveryOutcome.NOT_FOUND
            try:
                client.send_message(json.dumps(event))
            except HttpResponseError as exc:
                status = exc.status_code or 0
                return status, f"storage answered {status} {exc.reason}", _outcome_of_status(status)
            except ServiceResponseTimeoutError:
                return None, "storage did not answer in time", DeliveryOutcome.TIMED_OUT
            except AzureError as exc:
                return None, f"storage unreachable: {type(exc).__name__}", DeliveryOutcome.SOCKET_ERROR
            return 201, None, None
        headers = self._headers(subscription, event, "Notification", attempt=number)
        answer = self._http("POST", target.url, json.dumps([event]).encode(), headers)
        return answer.status, answer.error, answer.outcome

    def _headers(
        self, subscription: Subscription, event: dict[str, Any], event_type: str, *, attempt: int
    ) -> dict[str, str]:
        """The headers Event Grid sends a webhook (azure-docs articles/event-grid/includes/event-grid-message-headers.md
        lists them)."""
        cloud_event = subscription.schema == CLOUD_EVENT_SCHEMA
        headers = {
            "Content-Type": CLOUD_EVENTS_CONTENT_TYPE if cloud_event else EVENT_GRID_CONTENT_TYPE,
            "aeg-event-type": event_type,
            "aeg-subscription-name": subscription.name,
            "aeg-delivery-count": str(attempt - 1),  # earlier attempts, as Event Grid counts them
            "aeg-metadata-version": str(event.get("specversion") if cloud_event else event.get("metadataVersion")),
            "aeg-output-event-id": str(event.get("id")),
        }
        if not cloud_event:  # "For cloud event schema, it doesn't apply."
            headers["aeg-data-version"] = str(event.get("dataVersion"))
        return headers

    def _http(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> _Answer:
        """One exchange with a webhook, bounded by ``response_timeout``; failures are described, never raised."""
        split = urlsplit(url)
        path = (split.path or "/") + (f"?{split.query}" if split.query else "")
        connection: http.client.HTTPConnection
        if split.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_bundle)
            connection = http.client.HTTPSConnection(split.netloc, timeout=self.response_timeout, context=context)
        else:
            connection = http.client.HTTPConnection(split.netloc, timeout=self.response_timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers))
            response = connection.getresponse()
            payload = response.read()
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
            status = response.status
            outcome = None if 200 <= status <= 204 else _outcome_of_status(status)
            return _Answer(status, answer_headers, payload, None, outcome)
        except TimeoutError as exc:
            return _Answer(None, {}, b"", f"webhook timed out: {exc}", DeliveryOutcome.TIMED_OUT)
        except socket.gaierror as exc:
            return _Answer(None, {}, b"", f"webhook unreachable: {exc}", DeliveryOutcome.RESOLUTION_ERROR)
        except (OSError, http.client.HTTPException) as exc:
            error = f"webhook unreachable: {type(exc).__name__}: {exc}"
            return _Answer(None, {}, b"", error, DeliveryOutcome.SOCKET_ERROR)
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
                    event_ttl=admin.field(data, "event_ttl", int, EVENT_TTL_LIMIT),
                    validate=admin.field(data, "validate", bool, True),
                    data_variant=admin.field(data, "data_variant", str, "spec"),
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

        def access(request: Request) -> Response:
            data = admin.body(request)
            unknown = sorted(set(data) - {"identity", "allowed"})
            if unknown:
                raise admin.bad_request(f"Unknown fields {unknown}; allowed: ['allowed', 'identity'].")
            identity = admin.field(data, "identity", str, hint="Give the caller's object id (the token's oid).")
            allowed = admin.field(data, "allowed", bool, hint="true to allow, false to deny.")
            if allowed:
                self.allow(identity)
            else:
                self.deny(identity)
            return Response(200, {"identity": identity, "allowed": self.has_access(identity)})

        base = "/admin/eventgrid"
        admin.route("GET", f"{base}/subscriptions", "admin.eventgrid_subscriptions", listed)
        admin.route("POST", f"{base}/subscriptions", "admin.eventgrid_subscribe", add)
        admin.route("DELETE", f"{base}/subscriptions/(?P<subscription_id>[^/]+)", "admin.eventgrid_unsubscribe", remove)
        admin.route("GET", f"{base}/published", "admin.eventgrid_published", published)
        admin.route("GET", f"{base}/received", "admin.eventgrid_received", received)
        admin.route("GET", f"{base}/deliveries", "admin.eventgrid_deliveries", deliveries)
        admin.route("GET", f"{base}/dead-letters", "admin.eventgrid_dead_letters", dead_letters)
        admin.route("POST", f"{base}/scan", "admin.eventgrid_scan", scan)
        admin.route("POST", f"{base}/access", "admin.eventgrid_access", access)


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
