"""The service's traces and metrics, through the OpenTelemetry API only.

Nothing here configures an exporter. In Azure the Python worker does it before it loads ``function_app.py``: with
``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`` it calls ``azure.monitor.opentelemetry.configure_azure_monitor``
(the connection string from ``APPLICATIONINSIGHTS_CONNECTION_STRING``), which installs the global tracer, meter and
logger providers; ``host.json``'s ``"telemetryMode": "OpenTelemetry"`` puts the host's own telemetry in the same
format. The tests install the SDK's providers with in-memory exporters, and the demo a console exporter. Without any
provider (the CLI, a unit test) every call here is a no-op of the API.

Traces: one per request. A trigger (``on_key_event``, ``submit``, ``sweep``) starts a span; the queue message it sends
carries that span's W3C ``traceparent`` (``RotationRequest.traceparent``, set by ``RotationQueue`` at send time); the
worker's ``work`` span continues that trace, and the engine's ``gather``, ``create``, ``update_account`` and
``verify`` spans nest under it. Attributes use the ledger's names: ``key``, ``request_id``, ``account``, ``reason``.

Logs: the ``rotation.*`` records of ``rotation.log.emit`` reach Application Insights through the distro's logging
handler, with their ``extra`` fields (``event``, ``key``, ``reason`` ...) as custom dimensions and inside the span that
was current when they were logged.

Metrics (the names are the public interface, like the events': the Bicep alerts and workbook query them)::

    rotation.key.days_until_renewal   gauge      {key}                       from every sweep
    rotation.key.days_until_expiry    gauge      {key}                       from every sweep
    rotation.poison.messages          gauge      {queue}                     from every sweep
    rotation.drift.accounts           gauge      {key, kind}                 from every sweep: unmanaged, left,
                                                                             off_target (unmanaged: discovery on)
    rotation.rotations                counter    {key, status, reason}       every reconcile's end
    rotation.account_updates          counter    {key, account, status, reason}  every account a reconcile acted on
    rotation.duration                 histogram  {key, status}, seconds      every reconcile
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import TypeVar

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Attributes = Mapping[str, str | int | float | bool | None]
T = TypeVar("T")

INSTRUMENTATION = "rotation"


class SpanName(StrEnum):
    """Every span the service starts."""

    ON_KEY_EVENT = "rotation.on_key_event"  # a key event (Event Grid, or the key-events queue) is recorded
    SUBMIT = "rotation.submit"  # POST /api/rotations
    SWEEP = "rotation.sweep"  # the timer sweep
    WORK = "rotation.work"  # the queue worker runs one request (continues the trace of its message)
    GIVE_UP = "rotation.give_up"  # the poison handler ends one request
    GATHER = "rotation.gather"  # the key's versions and accounts are read
    CREATE = "rotation.create"  # a new version is created (or adopted)
    UPDATE_ACCOUNT = "rotation.update_account"  # one account is repointed
    VERIFY = "rotation.verify"  # one account is read until it reports the target version


class MetricName(StrEnum):
    """Every metric the service records (the module docstring gives their kinds and attributes)."""

    DAYS_UNTIL_RENEWAL = "rotation.key.days_until_renewal"
    DAYS_UNTIL_EXPIRY = "rotation.key.days_until_expiry"
    POISON_MESSAGES = "rotation.poison.messages"
    DRIFT_ACCOUNTS = "rotation.drift.accounts"
    ROTATIONS = "rotation.rotations"
    ACCOUNT_UPDATES = "rotation.account_updates"
    DURATION = "rotation.duration"


_tracer = trace.get_tracer(INSTRUMENTATION)
_meter = metrics.get_meter(INSTRUMENTATION)
_propagator = TraceContextTextMapPropagator()

days_until_renewal = _meter.create_gauge(
    MetricName.DAYS_UNTIL_RENEWAL, unit="d", description="days until the key's current version is due for renewal"
)
days_until_expiry = _meter.create_gauge(
    MetricName.DAYS_UNTIL_EXPIRY, unit="d", description="days until the key's current version expires"
)
poison_messages = _meter.create_gauge(
    MetricName.POISON_MESSAGES, unit="{message}", description="messages waiting in a poison queue"
)
drift_accounts = _meter.create_gauge(
    MetricName.DRIFT_ACCOUNTS, unit="{account}", description="accounts drifting from a target key, by kind"
)
rotations = _meter.create_counter(MetricName.ROTATIONS, unit="{rotation}", description="reconciles, by outcome")
account_updates = _meter.create_counter(
    MetricName.ACCOUNT_UPDATES, unit="{account}", description="accounts a reconcile acted on, by outcome"
)
duration = _meter.create_histogram(MetricName.DURATION, unit="s", description="how long one reconcile took")


def attributes(**values: str | int | float | bool | None) -> dict[str, str | int | float | bool]:
    """The given attributes without their None values (OpenTelemetry refuses None)."""
    return {name: value for name, value in values.items() if value is not None}


@contextmanager
def span(
    name: SpanName,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    traceparent: str | None = None,
    **values: str | int | float | bool | None,
) -> Iterator[Span]:
    """A span named ``name``, current inside the block, child of the current span, or of ``traceparent`` (the trace
    a queue message carries) when one is given. An exception that leaves the block marks it failed."""
    parent = None if traceparent is None else _propagator.extract({"traceparent": traceparent})
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes(**values)) as current:
        yield current


def fail(current: Span, reason: str, description: str) -> None:
    """Mark ``current`` failed with ``reason`` when the failure does not leave its block as an exception."""
    current.set_attribute("reason", reason)
    current.set_status(Status(StatusCode.ERROR, description))


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, for a queue message; None outside a recorded span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def in_context(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` bound to a copy of the caller's context (the current span among it), to run on a pool thread, which
    would otherwise start with an empty one. One copy per call: a context runs on one thread at a time."""
    ctx = contextvars.copy_context()
    return lambda *args: ctx.run(fn, *args)
