"""A function app the host conformance tests control, for what function_app.py cannot show on demand: how many
invocations the host runs at once, and what the real worker does with a value returned without a ``$return`` binding.
``tests/function/host_probe.py`` runs it in a process of its own (the worker keeps one function app per process)."""

from __future__ import annotations

import threading
import time

import azure.functions as func

app = func.FunctionApp()
running = 0
most = 0  # the most invocations of ``hold`` that ran at once
_lock = threading.Lock()


@app.queue_trigger(arg_name="message", queue_name="%PROBE_QUEUE%", connection="AzureWebJobsStorage")
def hold(message: func.QueueMessage) -> None:
    """Runs for as many seconds as its message says."""
    global running, most
    with _lock:
        running += 1
        most = max(most, running)
    try:
        time.sleep(float(message.get_body()))
    finally:
        with _lock:
            running -= 1


@app.event_grid_trigger(arg_name="event")
def returns_a_value(event: func.EventGridEvent) -> str:
    return event.id  # no $return binding: the real worker fails the invocation
