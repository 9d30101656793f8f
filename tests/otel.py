"""OpenTelemetry's SDK with in-memory exporters, in the place of the Azure Monitor distro.

In Azure the Python worker calls ``configure_azure_monitor`` before it loads ``function_app.py``: that installs the
global tracer, meter and logger providers and puts OpenTelemetry's ``LoggingHandler`` on the root logger. ``capture``
does the same with the SDK's in-memory exporters instead of Azure Monitor's, so a test reads what Application Insights
would receive: spans, metric points, and log records with their attributes (the custom dimensions). The global
providers can be set once per process; the handler is added for the test and removed after it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@dataclass
class Telemetry:
    spans_exporter: InMemorySpanExporter
    logs_exporter: InMemoryLogRecordExporter
    metric_reader: InMemoryMetricReader
    logger_provider: LoggerProvider

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans_exporter.get_finished_spans() if name is None or s.name == name]

    def logs(self) -> list[ReadableLogRecord]:
        return list(self.logs_exporter.get_finished_logs())

    def points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """Each data point of metric ``name`` (cumulative since the process started): its attributes and value
        (a histogram's: its sum)."""
        data = self.metric_reader.get_metrics_data()
        found: list[tuple[dict[str, Any], float]] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        found.append((dict(point.attributes or {}), value if value is not None else point.sum))
        return found


_installed: Telemetry | None = None


def _install() -> Telemetry:
    global _installed
    if _installed is None:
        spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        logs = InMemoryLogRecordExporter()
        logger_provider = LoggerProvider()
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
        _logs.set_logger_provider(logger_provider)
        _installed = Telemetry(spans, logs, reader, logger_provider)
    return _installed


@contextmanager
def capture() -> Iterator[Telemetry]:
    """The process's in-memory telemetry, emptied, with the root logger forwarding records at INFO and above to it
    for the duration (as the distro's handler does in the worker)."""
    telemetry = _install()
    telemetry.spans_exporter.clear()
    telemetry.logs_exporter.clear()
    handler = LoggingHandler(level=logging.INFO, logger_provider=telemetry.logger_provider)
    root = logging.getLogger()
    rotation = logging.getLogger("rotation")
    level = rotation.level
    root.addHandler(handler)
    rotation.setLevel(logging.INFO)
    try:
        yield telemetry
    finally:
        root.removeHandler(handler)
        rotation.setLevel(level)
