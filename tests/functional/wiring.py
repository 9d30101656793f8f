"""How the Functions app's tests wire a ``RotationApp``: the emulator's endpoints, a real Azurite, the real SDK clients.

The same function builds the app in the test process and in the worker processes of ``worker_process.py``, so every
process talks to the same emulator (by its ``endpoints()`` JSON) and the same Azurite (by connection string). It builds
what ``RotationApp.build`` builds in Azure, with three test-only choices made through the app's own seams: the
emulator's credential, ARM endpoint and CA bundle (``AzureConnection``); step retries that wait milliseconds instead of
seconds (``RetrySettings``); and shorter waits (``Timings``: a lease of at least Azure's 15 s, and the delays). It
never patches or mocks the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from emulator.credential import EmulatorCredential
from rotation.app import RotationApp, Timings
from rotation.connection import AzureConnection
from rotation.engine import RetrySettings
from rotation.model import Clock, system_clock
from rotation.storage import EVIDENCE_TABLE, LEDGER_TABLE

QUICK_RETRIES = RetrySettings(
    attempts=2,
    step_timeout=timedelta(seconds=20),
    wait_initial=timedelta(milliseconds=20),
    wait_max=timedelta(milliseconds=100),
    poll_initial=timedelta(milliseconds=50),
    poll_max=timedelta(milliseconds=200),
)


def app_settings(
    endpoints: Mapping[str, Any], storage_connection_string: str, targets: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """The app settings a deployment would have: storage, targets, the sweep's schedule (the deployment's default),
    and the emulator's topic for outcome events."""
    return {
        "AzureWebJobsStorage": storage_connection_string,
        "ROTATION_TARGETS": json.dumps(list(targets)),
        "ROTATION_SCHEDULE": "0 0 3 * * *",
        "ROTATION_VERIFY_TIMEOUT": "PT20S",
        "ROTATION_EVENTS_ENDPOINT": endpoints["topic"],
        "ROTATION_EVENTS_KEY": endpoints["topic_key"],
    }


def build_app(
    endpoints: Mapping[str, Any],
    storage_connection_string: str,
    targets: Sequence[Mapping[str, Any]],
    *,
    identity: str = "rotation-app",
    lock_duration: int = 60,
    ledger_table: str = LEDGER_TABLE,
    timings: Timings | None = None,
    settings: Mapping[str, str] | None = None,
    evidence_table: str = EVIDENCE_TABLE,
    clock: Clock = system_clock,
) -> RotationApp:
    """A ``RotationApp`` on the emulator and Azurite; ``identity`` is the oid the emulator's call log records, and
    ``settings`` add to (or replace) the app settings."""
    env = {**app_settings(endpoints, storage_connection_string, targets), **(settings or {})}
    connection = AzureConnection(
        EmulatorCredential(identity),
        arm_endpoint=endpoints["arm"],
        ca_bundle=endpoints["ca_bundle"],
        verify_challenge_resource=False,
        polling_interval=0.05,
    )
    app = RotationApp.build(
        env,
        connection=connection,
        retry=QUICK_RETRIES,
        timings=timings or Timings(lease=lock_duration),
        ledger_table=ledger_table,
        evidence_table=evidence_table,
        clock=clock,
    )
    app.queue.ensure()
    app.ledger.ensure()
    return app
