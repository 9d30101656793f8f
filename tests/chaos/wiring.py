"""How the chaos suite wires a ``RotationApp``: ``RotationApp.build`` with every wait made injectable and short.

The same function builds the app in the test process and in ``worker_process.py``, so every worker talks to the same
emulator (by its ``endpoints()`` JSON), the same Azurite (by connection string) and the same per-schedule ledger table.
What differs from production goes only through the app's own seams, never a patch:

    AzureConnection   the emulator's credential, ARM endpoint and CA; no polling sleep; a short wait on one ARM
                      operation before the verify step takes over; azure-core retries once, with a tiny backoff,
                      and a call unanswered after a second has timed out
    RetrySettings     the engine's step retries and verify polling wait milliseconds
    Timings           no delay for a request whose key is locked or a poison message that must wait; Azure's shortest
                      lease (15 s); the sweep repairs any unfinished request at once (repair_after 0)
    storage_options   the storage clients retry at most once with no backoff, and may carry the blip transport
    clock             the emulator's clock, so "due" and "expired" mean the same to the app and to the emulator
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from emulator.credential import EmulatorCredential
from rotation.app import RotationApp, Timings
from rotation.connection import AzureConnection
from rotation.engine import RetrySettings

TIMINGS = Timings(lock_held_delay=0, poison_retry_delay=0, lease=15, repair_after=timedelta(0))
RETRY = RetrySettings(
    attempts=2,
    step_timeout=timedelta(seconds=3),
    wait_initial=timedelta(milliseconds=1),
    wait_max=timedelta(milliseconds=20),
    poll_initial=timedelta(milliseconds=5),
    poll_max=timedelta(milliseconds=20),
    create_settle=timedelta(seconds=3),  # longer than a late create takes to land (TIMED_OUT in harness.py)
)
# read_timeout: a Key Vault or ARM call that has not answered in a second has timed out (the chaos suite's "timeout"
# action makes one operation answer later than that, while the emulator still carries the request out).
READ_TIMEOUT = 1.0
AZURE_CLIENT_OPTIONS: Mapping[str, Any] = {
    "retry_total": 1,
    "retry_backoff_factor": 0.01,
    "retry_backoff_max": 0.05,
    "read_timeout": READ_TIMEOUT,
}
# Blob and queue clients take ExponentialRetry's arguments, the table client azure-core's: each ignores the others'.
STORAGE_RETRY: Mapping[str, Any] = {
    "initial_backoff": 0,
    "increment_base": 0,
    "random_jitter_range": 0,
    "retry_backoff_factor": 0.0,
}
VERIFY_TIMEOUT = "PT5S"
OPERATION_TIMEOUT = 0.2  # seconds on one ARM operation before the engine's verify step takes over


def app_settings(
    endpoints: Mapping[str, Any],
    storage_connection_string: str,
    targets: Sequence[Mapping[str, Any]],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": storage_connection_string,
        "ROTATION_TARGETS": json.dumps(list(targets)),
        "ROTATION_VERIFY_TIMEOUT": VERIFY_TIMEOUT,
        "ROTATION_EVENTS_ENDPOINT": endpoints["topic"],
        "ROTATION_EVENTS_KEY": endpoints["topic_key"],
        **(extra or {}),
    }


def build_chaos_app(
    endpoints: Mapping[str, Any],
    storage_connection_string: str,
    targets: Sequence[Mapping[str, Any]],
    *,
    identity: str,
    ledger_table: str,
    clock: Callable[[], datetime],
    settings: Mapping[str, str] | None = None,
    storage_retries: int = 1,
    transport: Any = None,
) -> RotationApp:
    """A ``RotationApp`` on the emulator and Azurite with the chaos suite's short waits; ``identity`` is the oid the
    emulator's call log records, ``transport`` an azure-core transport for the storage clients (the blip seam)."""
    connection = AzureConnection(
        EmulatorCredential(identity),
        arm_endpoint=endpoints["arm"],
        ca_bundle=endpoints["ca_bundle"],
        verify_challenge_resource=False,
        polling_interval=0.0,
        operation_timeout=OPERATION_TIMEOUT,
        client_options=AZURE_CLIENT_OPTIONS,
    )
    storage_options: dict[str, Any] = {**STORAGE_RETRY, "retry_total": storage_retries}
    if transport is not None:
        storage_options["transport"] = transport
    app = RotationApp.build(
        app_settings(endpoints, storage_connection_string, targets, settings),
        connection=connection,
        clock=clock,
        timings=TIMINGS,
        retry=RETRY,
        ledger_table=ledger_table,
        storage_options=storage_options,
    )
    return app
