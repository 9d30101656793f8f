"""A rotation worker in its own OS process, which the chaos harness kills at a step boundary.

Run as ``python -m tests.chaos.worker_process``. The process imports everything first and prints ``{"event":
"warm"}``, so the harness can keep one spare process warm while other schedules run (a spawn costs about a second).
Then it reads one JSON line, the job: ``endpoints`` (the emulator's ``endpoints()``), ``storage`` (Azurite's
connection string), ``targets``, ``settings`` (extra app settings), ``identity`` (the oid the emulator's call log
records), ``ledger_table``, ``clock_offset`` (seconds the emulator's clock is ahead of this machine's), ``message`` (a
``rotation-requests`` message's text, handed to the ``rotation_worker`` function as the host would) and ``stop_at``.

``stop_at`` names a step boundary: a ``rotation.*`` event (``rotation.lock_acquired``, ``rotation.ledger_updated``,
``rotation.planned``, ``rotation.version_created``, ``rotation.account_updated``, ``rotation.completed``) or null.
When the worker logs that event, the thread that logged it prints ``{"event": "stopped"}`` and blocks for good, so the
SIGKILL the harness sends next lands exactly at that boundary (nothing after the event has run on that thread). Every
``rotation`` record is also printed as one JSON line. At the end the process prints ``done``, or ``raised`` with the
exception's class.

The process never touches the emulator's control plane: it is only a client, like a Functions instance.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import function_app
from emulator.functions_host import FunctionsHost, InvocationFailed
from rotation.app import configure
from tests.chaos.wiring import build_chaos_app

_out = threading.Lock()


def say(record: dict[str, Any]) -> None:
    with _out:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class StopAtBoundary(logging.Handler):
    """Prints each ``rotation`` record's event name; blocks the logging thread for good at ``stop_at``."""

    def __init__(self, stop_at: str | None) -> None:
        super().__init__(level=logging.INFO)
        self.stop_at = stop_at

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "event", None) or str(record.msg).split(":")[0]
        say({"event": name, "request_id": getattr(record, "request_id", None), "level": record.levelname})
        if name == self.stop_at:
            say({"event": "stopped", "at": name})
            threading.Event().wait()  # the harness kills the process here


def main() -> int:
    say({"event": "warm"})
    line = sys.stdin.readline()
    if not line.strip():
        return 2
    job = json.loads(line)
    offset = timedelta(seconds=job["clock_offset"])
    app = build_chaos_app(
        job["endpoints"],
        job["storage"],
        job["targets"],
        identity=job["identity"],
        ledger_table=job["ledger_table"],
        clock=lambda: datetime.now(UTC) + offset,
        settings=job["settings"],
    )
    configure(app)
    host = FunctionsHost(function_app.app, job["storage"])
    rotation_log = logging.getLogger("rotation")
    rotation_log.setLevel(logging.INFO)
    rotation_log.addHandler(StopAtBoundary(job["stop_at"]))
    say({"event": "ready"})
    try:
        host.deliver_message("rotation_worker", job["message"], message_id="handed-over")
    except InvocationFailed as failure:  # reported to the harness, which judges it (only Redeliver may leave)
        say({"event": "raised", "error": failure.exception_type, "detail": failure.message[:300]})
        return 1
    except Exception as exc:  # noqa: BLE001 -- reported to the harness, which judges it (only Redeliver may leave)
        say({"event": "raised", "error": type(exc).__name__, "detail": str(exc)[:300]})
        return 1
    say({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
