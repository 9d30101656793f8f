"""``FunctionsHost`` on one of the test apps in ``tests/function/apps``, in a process of its own: the worker keeps
one function app per process, and the test process's worker runs ``function_app.py``.

Run as ``python -m tests.function.host_probe '<job JSON>'``; prints one JSON line. The job's ``action``:

    start         start the worker on ``app``: {"functions": [...]} or {"error": <type>, "message": <text>}
    concurrency   send ``holds`` (seconds) to ``queue`` on Azurite (``storage``) and pump the ``hold`` function
                  once: {"invoked", "most" (invocations running at once), "seconds"}
    return_value  deliver one Event Grid event to ``returns_a_value``: {"error": <type>, "message": <text>}
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError

from emulator.functions_host import FunctionsHost, InvocationFailed
from emulator.functions_worker import ROOT, FunctionsWorker, WorkerError

APPS = Path(__file__).resolve().parent / "apps"


def run(job: dict[str, Any]) -> dict[str, Any]:
    directory = APPS / job["app"]
    try:
        worker = FunctionsWorker.start(directory)
    except WorkerError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    if job["action"] == "start":
        return {"functions": sorted(worker.functions)}
    host = FunctionsHost(
        worker.app,
        job.get("storage", "UseDevelopmentStorage=true"),
        app_directory=directory,
        host_json=ROOT / "host.json",  # the project's host settings, on an app the test controls
        app_settings={"PROBE_QUEUE": job.get("queue", "")},
    )
    if job["action"] == "return_value":
        event = {"id": "e-1", "subject": "s", "eventType": "t", "eventTime": "2024-05-01T00:00:00Z", "data": {}}
        try:
            host.deliver_events("returns_a_value", [event])
        except InvocationFailed as failure:
            return {"error": failure.exception_type, "message": failure.message}
        return {"error": None}
    queue = host.queue(job["queue"])
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    for hold in job["holds"]:
        queue.send_message(str(hold))
    started = time.monotonic()
    invoked = host.pump("hold")
    probe = sys.modules["function_app"]
    return {"invoked": invoked, "most": probe.most, "seconds": time.monotonic() - started}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
