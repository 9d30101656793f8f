"""A rotation worker in its own OS process, for the multi-process tests in ``test_app.py``.

Run as ``python -m tests.functional.worker_process``. The first stdin line is a JSON object: ``endpoints`` (the
emulator's ``endpoints()``), ``storage`` (Azurite's connection string), ``targets``, ``identity`` (the oid the
emulator's call log records), ``lock_duration``, ``ledger_table``, and what to do: ``message`` (a queue message's
text, handed to the ``rotation_worker`` function) or ``pump`` (a visibility timeout: receive from the real queue, as
the host does).

The worker builds its own ``RotationApp`` with ``tests.functional.wiring.build_app``, prints ``{"event": "ready"}``,
waits for a ``go`` line, runs the function and prints ``{"event": "done"}`` (or ``"raised"``). Every ``rotation.*``
log record is printed as it happens, as one JSON line with its wall-clock time, so the test can see when this
process held the key's lock. It never touches the emulator's control plane: it is only a client, like a Functions
instance.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import function_app
from emulator.functions_host import FunctionsHost
from rotation.app import configure
from tests.functional.wiring import build_app


def say(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"at": time.time(), **record}) + "\n")
    sys.stdout.flush()


class ReportEvents(logging.Handler):
    """Prints each ``rotation`` log record's event name (the engine's ``event`` field, or the message's name)."""

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "event", None) or str(record.msg).split(":")[0]
        say({"event": name, "request_id": getattr(record, "request_id", None)})


def main() -> int:
    job = json.loads(sys.stdin.readline())
    app = build_app(
        job["endpoints"],
        job["storage"],
        job["targets"],
        identity=job["identity"],
        lock_duration=job["lock_duration"],
        ledger_table=job["ledger_table"],
    )
    configure(app)
    host = FunctionsHost(function_app.app, job["storage"])
    rotation_log = logging.getLogger("rotation")
    rotation_log.setLevel(logging.INFO)
    rotation_log.addHandler(ReportEvents())
    say({"event": "ready"})
    if sys.stdin.readline().strip() != "go":
        return 2
    try:
        if "message" in job:
            host.deliver_message("rotation_worker", job["message"], message_id="handed-over")
        else:
            host.pump("rotation_worker", visibility_timeout=job["pump"], max_messages=1)
    except Exception as exc:  # noqa: BLE001 -- reported to the test, which decides
        say({"event": "raised", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    say({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
