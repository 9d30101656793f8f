"""A stand-in for the Azure Functions host, for the demo and the tests (Core Tools cannot be installed here).

::

    caller ──► FunctionsHost ─────────────────────────────────────► FunctionsWorker (the real Python worker)
               request(method, url, headers, body)                  every invocation, wire TypedData in and out
                 /api/<route>                 HTTP trigger: routes, methods, function keys, RpcHttp in and out
                 /runtime/webhooks/eventgrid  Event Grid extension: system key, handshakes, one invocation per event
               pump(name)                     queue extension: host.json batch, visibility, dequeue count, poison
               fire_timer(name)               timer extension: NCRONTAB from the app setting, TimerInfo JSON
               deliver_events / deliver_message / deliver_received / http   conveniences for tests

Nothing here calls a Python function or converts an input: the worker (``emulator.functions_worker``) indexes
``function_app.py``, decodes each invocation's ``TypedData`` and runs the function, as in Azure. This module does the
host's side: it reads ``host.json`` and the bindings the worker reported (the raw bindings, as the host sees them),
builds each invocation's input and trigger metadata the way the host serialises them
(``GrpcMessageConversionExtensions.ToRpc``: strings as ``string``, a ``long`` or a date as ``json``, an HTTP request
as ``RpcHttp`` with the body as bytes, because the worker reports ``RawHttpBodyBytes`` and ``RpcHttpBodyOnly``), and
does with the outcome what the host's extensions do. Each behaviour names its source where it is implemented.

Options that make tests faster than Azure (a shorter ``visibility_timeout`` or ``max_dequeue_count``, a receive lease)
exist only as explicit constructor or call arguments; every default is Azure's or ``host.json``'s.

Not emulated: scale-out and the singleton lock of the timer, dynamic concurrency, the queue listener's polling loop
(``pump`` drains what is visible, then returns), retry policies, function timeouts, keys stored in blob storage (keys
are generated per ``FunctionsHost``), the timer's status blob (kept in memory per ``FunctionsHost``), EasyAuth, CORS,
HTTP cookies and proxies.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import azure.functions as func
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage, TextBase64DecodePolicy, TextBase64EncodePolicy
from croniter import CroniterError, croniter

from emulator.functions_worker import ROOT, FunctionsWorker, InvocationFailed, WorkerError, WorkerFunction

__all__ = [
    "FunctionsHost",
    "HostConfigurationError",
    "HostKeys",
    "Invocation",
    "InvocationFailed",
    "QueueOptions",
    "WorkerError",
]

log = logging.getLogger("emulator.functions_host")

LISTENER_VISIBILITY = timedelta(minutes=10)
"""How long the queue listener hides a message it received while the function runs; it renews that every half
(``QueueListener._visibilityTimeout`` in azure-sdk-for-net, sdk/storage/.../Shared/Queues/QueueListener.cs)."""
POISON_SUFFIX = "-poison"
NET_MIN_DATETIME = "0001-01-01T00:00:00"  # default(DateTime), as Json.NET writes it: a timer status never recorded
PUBLIC_CLOUD_ORIGIN = "eventgrid.azure.net"
EVENT_GRID_ORIGINS = (PUBLIC_CLOUD_ORIGIN, "eventgrid.azure.us", "eventgrid.azure.eaglex.ic.gov",
                      "eventgrid.azure.microsoft.scloud", "eventgrid.azure.cn")  # fmt: skip
_SETTING = re.compile(r"%([^%]+)%")
_ROUTE_PARAMETER = re.compile(r"^\{(?P<all>\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::[^}?]*)?(?P<optional>\?)?\}$")
_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<f>\d+))?$")


class HostConfigurationError(ValueError):
    """host.json or an app setting a binding refers to is missing or malformed; the message names it."""


class ScheduleError(ValueError):
    """The expression is not an NCRONTAB expression; the message says why."""


@dataclass(frozen=True)
class Schedule:
    """A timer trigger's NCRONTAB schedule (https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer
    #ncrontab-expressions): ``{second} {minute} {hour} {day} {month} {day-of-week}``, or five fields without seconds.
    croniter evaluates it with NCrontab's rule that a day must match both the day and the day-of-week fields. Times are
    UTC, as the host's are unless ``WEBSITE_TIME_ZONE`` is set."""

    expression: str

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise ScheduleError(f"{expression!r} has {len(fields)} fields; NCRONTAB needs 6 (or 5)")
        schedule = cls(" ".join(fields))
        try:
            schedule.next_after(datetime.now(UTC))
        except (CroniterError, ValueError) as exc:
            raise ScheduleError(f"{expression!r}: {exc}") from exc
        return schedule

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (an aware datetime), in UTC."""
        six = len(self.expression.split()) == 6
        it = croniter(self.expression, moment.astimezone(UTC), second_at_beginning=six, day_or=False)
        following: datetime = it.get_next(datetime)
        return following.astimezone(UTC)


# --- host.json ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` of host.json, with the extension's defaults for what it leaves out
    (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#hostjson-settings)."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    max_polling_interval: timedelta = timedelta(minutes=1)
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, section: Mapping[str, Any]) -> QueueOptions:
        batch_size = int(section.get("batchSize", cls.batch_size))
        # the documented default: N * batchSize / 2, N being the number of vCPUs
        threshold = int(section.get("newBatchThreshold", (os.cpu_count() or 1) * batch_size // 2))
        options = cls(
            batch_size=batch_size,
            new_batch_threshold=threshold,
            max_dequeue_count=int(section.get("maxDequeueCount", cls.max_dequeue_count)),
            visibility_timeout=_timespan(section.get("visibilityTimeout", "00:00:00"), "visibilityTimeout"),
            max_polling_interval=_timespan(section.get("maxPollingInterval", "00:01:00"), "maxPollingInterval"),
            message_encoding=str(section.get("messageEncoding", cls.message_encoding)).lower(),
        )
        if options.batch_size < 1 or options.max_dequeue_count < 1 or options.new_batch_threshold < 0:
            raise HostConfigurationError(f"host.json extensions.queues is out of range: {dict(section)}")
        if options.message_encoding not in ("base64", "none"):
            raise HostConfigurationError(f"host.json messageEncoding {options.message_encoding!r}: use base64 or none")
        return options

    @property
    def concurrency(self) -> int:
        """The most invocations one queue function runs at once: a batch is fetched whenever no more than
        ``new_batch_threshold`` are running (``QueueListener.WaitForNewBatchThreshold``)."""
        return self.batch_size + self.new_batch_threshold


@dataclass(frozen=True)
class HostJson:
    queues: QueueOptions
    route_prefix: str = "api"

    @classmethod
    def load(cls, path: Path) -> HostJson:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise HostConfigurationError(f"{path} cannot be read as JSON: {exc}") from exc
        extensions = document.get("extensions") or {}
        http = extensions.get("http") or {}
        return cls(
            queues=QueueOptions.from_host_json(extensions.get("queues") or {}),
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
        )


def _timespan(text: object, name: str) -> timedelta:
    """A .NET TimeSpan as host.json writes it: ``[d.]hh:mm:ss[.fffffff]``."""
    match = _TIMESPAN.fullmatch(str(text))
    if match is None:
        raise HostConfigurationError(f"host.json {name} {text!r} is not a TimeSpan like 00:01:00")
    fraction = float(f"0.{match['f']}") if match["f"] else 0.0
    return timedelta(
        days=int(match["days"] or 0), hours=int(match["h"]), minutes=int(match["m"]), seconds=int(match["s"]) + fraction
    )


# --- keys -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostKeys:
    """The host's keys (https://learn.microsoft.com/azure/azure-functions/function-keys-how-to): the master key (admin:
    every route), host keys (any function), one ``default`` key per function, and system keys, one per extension
    webhook, named ``<extension>_extension`` (azure-functions-host DefaultScriptWebHookProvider.GetKeyName)."""

    master: str
    host: Mapping[str, str]
    functions: Mapping[str, Mapping[str, str]]
    system: Mapping[str, str]

    @classmethod
    def generate(cls, functions: Iterator[str] | list[str]) -> HostKeys:
        def key() -> str:
            return secrets.token_urlsafe(40)

        return cls(
            master=key(),
            host={"default": key()},
            functions={name: {"default": key()} for name in functions},
            system={"eventgrid_extension": key()},
        )

    def function_key(self, name: str) -> str:
        return self.functions[name]["default"]

    @property
    def eventgrid_extension(self) -> str:
        return self.system["eventgrid_extension"]

    def level(self, key: str | None, function: str | None = None) -> tuple[str, str] | None:
        """(level, key name) of ``key``: ``admin`` for the master key, ``function`` for a host key or a key of
        ``function``, ``system`` for a system key (azure-functions-host, Security/Authorization/AuthUtility.cs)."""
        if not key:
            return None
        if hmac.compare_digest(key, self.master):
            return "admin", "_master"
        for name, value in self.host.items():
            if hmac.compare_digest(key, value):
                return "function", name
        for name, value in (self.functions.get(function) or {}).items() if function else ():
            if hmac.compare_digest(key, value):
                return "function", name
        for name, value in self.system.items():
            if hmac.compare_digest(key, value):
                return "system", name
        return None


# --- what the host sent -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """One invocation as the host sent it to the worker (``TypedData`` messages), and how it ended."""

    function: str
    inputs: Mapping[str, Any]
    trigger_metadata: Mapping[str, Any]
    failure: InvocationFailed | None = None


@dataclass
class TimerStatus:
    """The timer's ``ScheduleStatus`` (None: ``default(DateTime)``, never recorded)."""

    last: datetime | None
    next: datetime
    last_updated: datetime | None

    def to_json(self) -> dict[str, str]:
        return {"Last": _net_date(self.last), "Next": _net_date(self.next), "LastUpdated": _net_date(self.last_updated)}


@dataclass
class _Lease:
    """A received message the listener keeps hidden while its function runs, renewing the visibility every half."""

    queue: QueueClient
    message: QueueMessage
    visibility: timedelta
    pop_receipt: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.pop_receipt = self.message.pop_receipt or ""
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.message.id}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        interval = max(self.visibility.total_seconds() / 2, 0.5)
        while not self._stop.wait(interval):
            with self._lock:
                try:
                    updated = self.queue.update_message(
                        self.message.id, self.pop_receipt, visibility_timeout=_seconds(self.visibility)
                    )
                except HttpResponseError as exc:
                    log.info("renewing the visibility of message %s failed: %s", self.message.id, exc)
                    return
                self.pop_receipt = updated.pop_receipt or self.pop_receipt

    def end(self) -> str:
        """Stop renewing; the current pop receipt."""
        self._stop.set()
        self._thread.join()
        return self.pop_receipt


class FunctionsHost:
    """The host for the app the process's worker indexed. ``app`` must be that app (``function_app.app``)."""

    def __init__(
        self,
        app: func.FunctionApp,
        storage_connection_string: str,
        *,
        app_directory: Path = ROOT,
        host_json: Path | None = None,
        app_settings: Mapping[str, str] | None = None,
        max_dequeue_count: int | None = None,
        visibility_timeout: timedelta | None = None,
        base_url: str = "http://localhost:7071",
    ) -> None:
        """``app_directory`` holds ``function_app.py`` (and ``host.json``, unless ``host_json`` names another);
        ``app_settings`` resolve ``%NAME%`` in bindings (default: ``os.environ``, read at each use).
        ``max_dequeue_count`` and ``visibility_timeout`` override host.json's, for tests that cannot wait 60 s per
        failed delivery; leave them None for the host.json behaviour."""
        self.worker = FunctionsWorker.start(app_directory)
        if self.worker.app is not app:
            raise WorkerError(
                "this process's worker indexed another FunctionApp than the one given: the worker keeps one app per "
                f"process ({self.worker.app_directory / 'function_app.py'})"
            )
        self._connection = storage_connection_string
        self.settings = HostJson.load(host_json or app_directory / "host.json")
        overrides: dict[str, Any] = {}
        if max_dequeue_count is not None:
            overrides["max_dequeue_count"] = max_dequeue_count
        if visibility_timeout is not None:
            overrides["visibility_timeout"] = visibility_timeout
        self.queue_options = replace(self.settings.queues, **overrides)
        self._app_settings = app_settings
        self.base_url = base_url.rstrip("/")
        self.keys = HostKeys.generate(list(self.worker.functions))
        self.invocations: deque[Invocation] = deque(maxlen=200)
        self._timers: dict[str, TimerStatus] = {}
        self._timer_lock = threading.Lock()

    # -- what the worker reported ----------------------------------------------------------------------------------
    @property
    def functions(self) -> Mapping[str, WorkerFunction]:
        return self.worker.functions

    def trigger(self, name: str) -> dict[str, Any]:
        """The function's trigger binding, from the raw bindings the worker reported."""
        return self.worker.function(name).trigger

    def _trigger_of(self, name: str, kind: str) -> dict[str, Any]:
        trigger = self.trigger(name)
        if str(trigger.get("type", "")).lower() != kind.lower():
            raise ValueError(f"{name} is a {trigger.get('type')} function, not {kind}")
        return trigger

    @property
    def max_dequeue_count(self) -> int:
        return self.queue_options.max_dequeue_count

    def setting(self, text: str) -> str:
        """``text`` with every ``%NAME%`` replaced by the app setting (the host's name resolver); a missing setting
        is a HostConfigurationError with the host's wording."""
        settings = os.environ if self._app_settings is None else self._app_settings

        def resolve(match: re.Match[str]) -> str:
            value = settings.get(match[1])
            if value is None:
                raise HostConfigurationError(f"'%{match[1]}%' does not resolve to a value.")
            return value

        return _SETTING.sub(resolve, text)

    # -- invoking --------------------------------------------------------------------------------------------------
    def _invoke(self, name: str, inputs: Mapping[str, Any], metadata: Mapping[str, Any]) -> Any:
        try:
            value = self.worker.invoke(name, inputs, metadata)
        except InvocationFailed as failure:
            self.invocations.append(Invocation(name, inputs, metadata, failure))
            log.info("Executed 'Functions.%s' (Failed): %s: %s", name, failure.exception_type, failure.message)
            raise
        self.invocations.append(Invocation(name, inputs, metadata))
        return value

    def _typed(self, **value: Any) -> Any:
        return self.worker.protos.TypedData(**value)

    def _json(self, value: Any) -> Any:
        return self._typed(json=json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def _sys(self, name: str) -> Any:
        """The ``sys`` binding data every trigger carries."""
        return self._json(
            {"MethodName": f"Functions.{name}", "UtcNow": _net_date(_now()), "RandGuid": str(uuid.uuid4())}
        )

    # -- HTTP ------------------------------------------------------------------------------------------------------
    def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> func.HttpResponse:
        """One HTTP request to the host, routed as the host routes it: ``/<routePrefix>/<route>`` to an HTTP
        function, ``/runtime/webhooks/eventgrid`` to the Event Grid extension. A path no route matches, or a method
        the matching routes do not accept, is 404 with an empty body (azure-functions-host#10098)."""
        headers = dict(headers or {})
        parts = urlsplit(url)
        segments = [unquote(s) for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
        query = parse_qs(parts.query, keep_blank_values=True)
        if [s.lower() for s in segments[:2]] == ["runtime", "webhooks"] and len(segments) == 3:
            return self._webhook(segments[2].lower(), method, query, headers, body)[0]
        prefix = [s for s in self.settings.route_prefix.split("/") if s]
        if [s.lower() for s in segments[: len(prefix)]] != [p.lower() for p in prefix]:
            return _empty(404)
        route = segments[len(prefix) :]
        matches = []
        for name, function in self.functions.items():
            trigger = function.trigger
            if str(trigger.get("type", "")).lower() != "httptrigger":
                continue
            params = _match_route(str(trigger.get("route") or name), route)
            if params is not None:
                matches.append((name, trigger, params))
        accepting = [m for m in matches if _accepts(m[1], method)]
        if not accepting:
            return _empty(404)
        name, _, params = max(accepting, key=lambda m: _literal_segments(str(m[1].get("route") or m[0])))
        return self._serve_http(name, method, parts.path, parts.query, headers, body, params)

    def http(
        self,
        name: str,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        route_params: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> func.HttpResponse:
        """A request to the HTTP function ``name``, sent with its function key (``key`` sends another; "" none) unless
        ``headers`` or the URL already carry one. Route parameters come from the URL and the function's route, or
        are ``route_params`` as given. A method the function does not accept is 404 with an empty body, as in
        ``request``."""
        trigger = self._trigger_of(name, "httpTrigger")
        parts = urlsplit(url)
        if not _accepts(trigger, method):
            return _empty(404)
        if route_params is None:
            segments = [unquote(s) for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
            prefix = [s for s in self.settings.route_prefix.split("/") if s]
            params = _match_route(str(trigger.get("route") or name), segments[len(prefix) :])
            if params is None:
                return _empty(404)
        else:
            params = dict(route_params)
        headers = dict(headers or {})
        has_key = any(k.lower() == "x-functions-key" for k in headers) or "code" in parse_qs(parts.query)
        if not has_key and key != "":
            headers["x-functions-key"] = key or self.keys.function_key(name)
        return self._serve_http(name, method, parts.path, parts.query, headers, body, params)

    def _serve_http(
        self,
        name: str,
        method: str,
        path: str,
        query_string: str,
        headers: Mapping[str, str],
        body: bytes,
        params: Mapping[str, str],
    ) -> func.HttpResponse:
        """Authorise with the route's ``authLevel``, then invoke with an ``RpcHttp`` and answer with the ``RpcHttp``
        the function returned; a failed invocation is 500 with an empty body."""
        trigger = self.trigger(name)
        query = parse_qs(query_string, keep_blank_values=True)
        if not self._authorized(str(trigger.get("authLevel") or "function"), name, headers, query):
            return _empty(401)
        protos = self.worker.protos
        rpc = protos.RpcHttp(
            method=method.upper(),
            url=self.base_url + path + (f"?{query_string}" if query_string else ""),
            # GrpcMessageConversionExtensions.ToRpcHttp: header names lower-cased; a query value that is empty is left
            # out (the worker does not ask for nullable values); repeated values joined by commas (StringValues)
            headers={k.lower(): v for k, v in headers.items()},
            query={k: ",".join(v) for k, v in query.items() if ",".join(v)},
            params=dict(params),
        )
        if body:  # RawHttpBodyBytes: the body as bytes, whatever its content type
            rpc.body.CopyFrom(self._typed(bytes=body))
        binding = str(trigger.get("name"))
        try:
            value = self._invoke(name, {binding: self._typed(http=rpc)}, {})
        except InvocationFailed:
            return _empty(500)
        return _http_response(value)

    def _authorized(
        self, level: str, function: str | None, headers: Mapping[str, str], query: Mapping[str, list[str]]
    ) -> bool:
        """The key comes from the ``x-functions-key`` header or the ``code`` query parameter."""
        level = level.lower()
        if level == "anonymous":
            return True
        key = next((v for k, v in headers.items() if k.lower() == "x-functions-key"), None)
        key = key or next(iter(query.get("code") or []), None)
        granted = self.keys.level(key, function)
        if granted is None:
            return False
        if granted[0] == "admin":
            return True
        if level.startswith("system:"):
            return granted == ("system", level.split(":", 1)[1])
        return granted[0] == level

    # -- Event Grid ------------------------------------------------------------------------------------------------
    def eventgrid_url(self, name: str) -> str:
        """The webhook URL an Event Grid subscription to ``name`` uses (``code`` is the system key)."""
        return f"/runtime/webhooks/eventgrid?functionName={name}&code={self.keys.eventgrid_extension}"

    def deliver_events(
        self, name: str, payload: str | bytes | list[Mapping[str, Any]], *, event_type: str = "Notification"
    ) -> func.HttpResponse:
        """Event Grid's POST to the webhook with the system key. Returns the 2xx answer; when an invocation failed
        (the answer is 500), raises the first ``InvocationFailed`` with every failure in its ``failures``."""
        body = payload if isinstance(payload, bytes) else (payload if isinstance(payload, str) else json.dumps(payload))
        data = body.encode() if isinstance(body, str) else body
        query = {"functionName": [name], "code": [self.keys.eventgrid_extension]}
        response, failures = self._webhook("eventgrid", "POST", query, {"aeg-event-type": event_type}, data)
        if failures:
            failures[0].failures = failures
            raise failures[0]
        if not 200 <= response.status_code < 300:
            raise ValueError(f"the Event Grid webhook answered {response.status_code}: {response.get_body()!r}")
        return response

    def _webhook(
        self, extension: str, method: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> tuple[func.HttpResponse, list[InvocationFailed]]:
        """``/runtime/webhooks/{extension}``: the system key ``<extension>_extension`` or the master key
        (azure-functions-host AuthorizationOptionsExtensions, policy ExtensionWebhookInvoke), then the extension's
        handler. Only the Event Grid extension is here (azure-sdk-for-net
        sdk/eventgrid/Microsoft.Azure.WebJobs.Extensions.EventGrid: Config/EventGridExtensionConfigProvider.cs and
        TriggerBinding/HttpRequestProcessor.cs)."""
        if not self._authorized(f"system:{extension}_extension", None, headers, query):
            return _empty(401), []
        if extension != "eventgrid":
            return _empty(404), []
        name = (query.get("functionName") or [""])[0]
        function = self.functions.get(name)
        if function is None or str(function.trigger.get("type", "")).lower() != "eventgridtrigger":
            return func.HttpResponse(f"cannot find function: '{name}'", status_code=404), []
        lowered = {k.lower(): v for k, v in headers.items()}
        if method.upper() == "OPTIONS":  # the CloudEvents abuse-protection handshake
            origin = lowered.get("webhook-request-origin")
            allowed = origin if origin in EVENT_GRID_ORIGINS else PUBLIC_CLOUD_ORIGIN
            return func.HttpResponse(status_code=200, headers={"WebHook-Allowed-Origin": allowed}), []
        event_type = (lowered.get("aeg-event-type") or "").lower()
        try:
            document = json.loads(body)
        except ValueError:
            return _empty(500), []  # Json.NET's parse error is an unhandled exception in the webhook
        if event_type == "subscriptionvalidation":
            try:
                if isinstance(document, list):
                    code = document[0]["data"]["validationCode"]
                else:  # a CloudEvent: its data is encoded twice
                    data = document["data"]
                    code = (json.loads(data) if isinstance(data, str) else data)["validationCode"]
            except (LookupError, TypeError, ValueError):
                return _empty(500), []
            answer = json.dumps({"validationResponse": code})
            return func.HttpResponse(answer, status_code=200), []
        if event_type == "notification":
            if isinstance(document, dict):
                document = [document]
            if not isinstance(document, list):
                return _empty(500), []
            failures = self._dispatch_events(name, document)
            if failures:  # every event was invoked; one failure fails the whole delivery, so Event Grid retries it
                return func.HttpResponse(f"Exception while executing function: Functions.{name}", status_code=500), (
                    failures
                )
            return func.HttpResponse(status_code=202), []
        return _empty(202 if event_type == "unsubscribe" else 400), []

    def _dispatch_events(self, name: str, events: list[Any]) -> list[InvocationFailed]:
        """One invocation per event, all at once (single dispatch, ``Task.WhenAll``); the failures, in event order."""
        binding = str(self.trigger(name).get("name"))

        def one(event: Any) -> InvocationFailed | None:
            metadata = {"sys": self._sys(name)}
            if isinstance(event, dict) and "data" in event:  # the binding data contract: {"data": event["data"]}
                metadata["data"] = self._json(event["data"])
            try:
                self._invoke(name, {binding: self._json(event)}, metadata)
            except InvocationFailed as failure:
                return failure
            return None

        if len(events) == 1:
            outcomes = [one(events[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(len(events), 16), thread_name_prefix="eventgrid") as pool:
                outcomes = list(pool.map(one, events))
        return [o for o in outcomes if o is not None]

    # -- timers ----------------------------------------------------------------------------------------------------
    def timer_schedule(self, name: str) -> Schedule:
        """The function's NCRONTAB schedule, ``%NAME%`` resolved from the app settings."""
        expression = str(self._trigger_of(name, "timerTrigger").get("schedule", ""))
        resolved = self.setting(expression)
        try:
            return Schedule.parse(resolved)
        except ScheduleError as exc:
            raise HostConfigurationError(
                f"The schedule expression '{resolved}' was not recognized as a valid cron expression or timespan "
                f"string ({name}: {expression}; {exc})."
            ) from exc

    def timer_status(self, name: str) -> TimerStatus:
        """The schedule status the next tick carries. Before the first tick: Last and LastUpdated never recorded,
        Next the schedule's next occurrence (TimerListener.StartAsync)."""
        with self._timer_lock:
            if name not in self._timers:
                self._timers[name] = TimerStatus(None, self.timer_schedule(name).next_after(_now()), None)
            return replace(self._timers[name])

    def timer_info(self, name: str, *, past_due: bool = False) -> dict[str, Any]:
        """The TimerInfo JSON of the next tick: ``Schedule`` (a CronSchedule serialises as ``{"AdjustForDST": true}``),
        ``ScheduleStatus`` (null unless ``useMonitor``), ``IsPastDue``."""
        trigger = self._trigger_of(name, "timerTrigger")
        monitored = trigger.get("useMonitor", True) is not False
        status = self.timer_status(name).to_json() if monitored else None
        return {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status, "IsPastDue": past_due}

    def fire_timer(self, name: str, *, past_due: bool = False) -> None:
        """One tick of the timer: the scheduled occurrence in ``ScheduleStatus.Next`` has come, or, ``past_due``, the
        listener found it missed and invokes now. The status then moves on as TimerListener.InvokeJobFunction moves
        it, whether the invocation failed or not; a failure is raised (the host only logs it)."""
        self.timer_status(name)  # the listener's status, initialised at its start
        payload = self.timer_info(name, past_due=past_due)
        binding = str(self.trigger(name).get("name"))
        try:
            self._invoke(name, {binding: self._json(payload)}, {"sys": self._sys(name)})
        finally:
            with self._timer_lock:
                status = self._timers[name]
                moment = _now() if past_due else status.next
                self._timers[name] = TimerStatus(moment, self.timer_schedule(name).next_after(moment), moment)

    # -- queues ----------------------------------------------------------------------------------------------------
    def queue(self, queue_name: str) -> QueueClient:
        """A client of the queue encoding as host.json's ``messageEncoding`` (base64) does, for tests to send with."""
        return QueueClient.from_connection_string(
            self._connection,
            queue_name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )

    def _raw_queue(self, queue_name: str) -> QueueClient:
        return QueueClient.from_connection_string(self._connection, queue_name)

    def deliver_message(
        self,
        name: str,
        body: str | bytes,
        *,
        message_id: str = "00000000-0000-0000-0000-000000000000",
        dequeue_count: int = 1,
        inserted_on: datetime | None = None,
        expires_on: datetime | None = None,
        next_visible_on: datetime | None = None,
        pop_receipt: str | None = None,
    ) -> None:
        """Invoke a queue function with one message (its text, already decoded as the host hands it over, or bytes)
        and the host's trigger metadata, without a queue: a direct delivery. A failure raises ``InvocationFailed``."""
        trigger = self._trigger_of(name, "queueTrigger")
        now = _now()
        text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        metadata = {
            "QueueTrigger": self._typed(string=text),
            "DequeueCount": self._json(dequeue_count),  # a long: Json.NET text
            "Id": self._typed(string=message_id),
            "PopReceipt": self._typed(string=pop_receipt if pop_receipt is not None else uuid.uuid4().hex),
            "InsertionTime": self._json(_net_date(inserted_on or now)),  # a DateTimeOffset: a JSON string
            "ExpirationTime": self._json(_net_date(expires_on or now + timedelta(days=7))),
            "NextVisibleTime": self._json(_net_date(next_visible_on or now + LISTENER_VISIBILITY)),
            "sys": self._sys(name),
        }
        data = self._typed(string=body) if isinstance(body, str) else self._typed(bytes=body)
        self._invoke(name, {str(trigger.get("name")): data}, metadata)

    def deliver_received(self, name: str, message: QueueMessage, *, text: str | None = None) -> None:
        """``deliver_message`` for a message a client received: its id, dequeue count and times, and its ``text`` (by
        default its content, as the client decoded it)."""
        self.deliver_message(
            name,
            message.content if text is None else text,
            message_id=message.id,
            dequeue_count=message.dequeue_count or 1,
            inserted_on=message.inserted_on,
            expires_on=message.expires_on,
            next_visible_on=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )

    def pump(self, name: str, *, visibility_timeout: int | None = None, max_messages: int = 100) -> int:
        """Run the function's queue listener until no message is visible and none is running: the number of
        invocations. As the queue extension (QueueListener.cs and QueueProcessor.cs in azure-sdk-for-net
        sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Common/src/Shared/Queues):

        - messages are received ``batchSize`` at a time and hidden for 10 minutes (renewed every half) while they
          run, up to ``batchSize + newBatchThreshold`` at once; ``visibility_timeout`` (seconds) shortens that hiding,
          for a test whose worker process dies on purpose;
        - a message whose dequeue count is already above ``maxDequeueCount`` (its workers died) goes to
          ``<queue>-poison`` without an invocation; so does a body that is not valid base64 (the extension's
          MessageDecodingFailed handler, QueueServiceClientProvider.cs);
        - a success deletes the message; a failure at ``maxDequeueCount`` moves it to ``<queue>-poison`` (created if
          missing), an earlier one hides it for ``visibilityTimeout``; a queue that is itself ``*-poison`` has no
          poison queue, and a failed message stays hidden until its receive hiding ends.

        ``max_messages`` caps the invocations of this call."""
        trigger = self._trigger_of(name, "queueTrigger")
        queue_name = self.setting(str(trigger.get("queueName")))
        options = self.queue_options
        lease = timedelta(seconds=visibility_timeout) if visibility_timeout is not None else LISTENER_VISIBILITY
        queue = self._raw_queue(queue_name)
        poison = None if queue_name.endswith(POISON_SUFFIX) else self._raw_queue(queue_name + POISON_SUFFIX)
        invoked = 0
        running: set[Future[None]] = set()
        started: list[Future[None]] = []
        with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix=f"queue-{queue_name}") as pool:
            while invoked < max_messages:
                try:
                    batch = list(
                        queue.receive_messages(
                            max_messages=min(options.batch_size, max_messages - invoked),
                            visibility_timeout=_seconds(lease),
                        )
                    )
                except ResourceNotFoundError:
                    batch = []
                if not batch:
                    if not running:
                        break
                    _, running = wait(running, return_when=FIRST_COMPLETED)  # a failure may show its message again
                    continue
                for message in batch:
                    text = _decoded(message.content or "", options.message_encoding)
                    if text is None:
                        log.warning(
                            "Message decoding has failed! Check MessageEncoding settings. MessageId=%s.", message.id
                        )
                        self._poison(queue, poison, message)
                        continue
                    if (message.dequeue_count or 0) > options.max_dequeue_count:
                        self._poison(queue, poison, message)
                        continue
                    invoked += 1
                    started.append(pool.submit(self._process, name, queue, poison, message, text, lease))
                    running.add(started[-1])
                while len(running) > options.new_batch_threshold:
                    _, running = wait(running, return_when=FIRST_COMPLETED)
        for done in started:
            done.result()  # a storage error while completing a message is the listener's, not a failed invocation
        return invoked

    def _process(
        self,
        name: str,
        queue: QueueClient,
        poison: QueueClient | None,
        message: QueueMessage,
        text: str,
        lease: timedelta,
    ) -> None:
        hidden = _Lease(queue, message, lease)
        try:
            self.deliver_received(name, message, text=text)
        except InvocationFailed:
            receipt = hidden.end()
            if poison is None:
                return  # no poison queue: the message stays hidden (QueueProcessor.CompleteProcessingMessageAsync)
            if (message.dequeue_count or 0) >= self.queue_options.max_dequeue_count:
                self._poison(queue, poison, message, receipt)
            else:
                _tolerant(
                    lambda: queue.update_message(
                        message.id, receipt, visibility_timeout=_seconds(self.queue_options.visibility_timeout)
                    )
                )
            return
        except BaseException:
            hidden.end()
            raise
        receipt = hidden.end()
        _tolerant(lambda: queue.delete_message(message.id, receipt))

    def _poison(
        self, queue: QueueClient, poison: QueueClient | None, message: QueueMessage, receipt: str | None = None
    ) -> None:
        """Copy the message (its text as stored) to the poison queue, creating it if missing, and delete it."""
        if poison is None:
            return
        log.warning(
            "Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
            self.queue_options.max_dequeue_count,
            poison.queue_name,
        )
        try:
            poison.send_message(message.content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                poison.create_queue()
            poison.send_message(message.content)
        _tolerant(lambda: queue.delete_message(message.id, receipt or message.pop_receipt))


# --- helpers ----------------------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _seconds(span: timedelta) -> int:
    return max(int(span.total_seconds()), 0)


def _net_date(moment: datetime | None) -> str:
    """A date as Json.NET writes a DateTimeOffset (ISO 8601 with its offset); None is ``default(DateTime)``."""
    return NET_MIN_DATETIME if moment is None else moment.astimezone(UTC).isoformat()


def _decoded(content: str, encoding: str) -> str | None:
    """The message text the function gets: base64-decoded (as .NET's Convert.FromBase64String, which skips white
    space) and read as UTF-8 with replacement characters; None when it is not base64."""
    if encoding == "none":
        return content
    try:
        raw = base64.b64decode("".join(content.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.decode("utf-8", "replace")


def _tolerant(call: Callable[[], Any]) -> None:
    """A delete or visibility update the extension lets pass: the pop receipt no longer matches (another listener
    took the message), or the message or queue is gone."""
    try:
        call()
    except ResourceNotFoundError:
        pass
    except HttpResponseError as exc:
        if exc.status_code not in (400, 404, 409):
            raise


def _empty(status: int) -> func.HttpResponse:
    return func.HttpResponse(status_code=status)


def _accepts(trigger: Mapping[str, Any], method: str) -> bool:
    methods = [str(m).upper() for m in trigger.get("methods") or []]
    return not methods or method.upper() in methods


def _literal_segments(template: str) -> int:
    return sum(1 for part in template.strip("/").split("/") if not part.startswith("{"))


def _match_route(template: str, segments: list[str]) -> dict[str, str] | None:
    """The route parameters when ``segments`` match the route template (literals case-insensitive, ``{name}``,
    ``{name:constraint}``, ``{name?}``, ``{*name}``), else None."""
    parts = [p for p in template.strip("/").split("/") if p]
    params: dict[str, str] = {}
    for index, part in enumerate(parts):
        parameter = _ROUTE_PARAMETER.fullmatch(part)
        if parameter is None:
            if index >= len(segments) or segments[index].lower() != part.lower():
                return None
            continue
        if parameter["all"]:
            params[parameter["name"]] = "/".join(segments[index:])
            return params
        if index >= len(segments) or segments[index] == "":
            if parameter["optional"]:
                continue
            return None
        params[parameter["name"]] = segments[index]
    return params if len(segments) <= len(parts) else None


def _http_response(value: Any) -> func.HttpResponse:
    """The host's answer from the function's ``$return``: an ``RpcHttp`` (status, headers, body), or a plain value
    written as the body of a 200."""
    if value is None:
        return _empty(204)
    if value.WhichOneof("data") != "http":
        return func.HttpResponse(_typed_bytes(value), status_code=200)
    rpc = value.http
    headers = dict(rpc.headers)
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    mimetype, charset = None, None
    if content_type:
        mimetype, _, parameters = content_type.partition(";")
        found = re.search(r"charset=([^;\s]+)", parameters)
        charset = found[1] if found else None
    return func.HttpResponse(
        _typed_bytes(rpc.body),
        status_code=int(rpc.status_code or 200),
        headers=headers,
        mimetype=(mimetype or "").strip() or None,
        charset=charset,
    )


def _typed_bytes(value: Any) -> bytes:
    kind = value.WhichOneof("data")
    if kind in ("bytes", "stream"):
        return bytes(getattr(value, kind))
    if kind in ("string", "json"):
        return str(getattr(value, kind)).encode()
    if kind is None:
        return b""
    return str(getattr(value, kind)).encode()
