"""``make bench``: two measurements, reported as ratios (absolute times depend on the machine; ratios should not).

1. How a fleet rotation scales with ``ROTATION_CONCURRENCY``. One key with 24 accounts on the local emulator; every
   ARM update and read is slowed by injected latency, as real ARM is slow. For each concurrency the key is force-rotated
   (one new version, 24 accounts repointed and verified); the speed is reported relative to concurrency 1.
2. How much of its one-second budget ``on_key_event`` uses: Event Grid waits 30 s, the design asks for well under 1 s.
   Events go through the app's own trigger (``emulator.functions_host``: the Event Grid webhook and the real Python
   worker) into a real Azurite; the median and the 95th percentile are reported as fractions of 1 s.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import function_app
from emulator import Emulator
from emulator.azurite import Azurite
from emulator.functions_host import FunctionsHost
from rotation.app import RotationApp, configure
from rotation.config import Settings
from rotation.connection import AzureConnection
from rotation.engine import RotationEngine
from rotation.model import KeyRef, RotationRequest, Status, Trigger

ACCOUNTS = 24
LATENCY = {"arm.update_account": 0.15, "arm.operation_status": 0.05, "arm.get_account": 0.05}
CONCURRENCY = (1, 2, 4, 8, 16)


def _connection(azure: Emulator) -> AzureConnection:
    return AzureConnection(
        azure.credential(),
        arm_endpoint=azure.arm_url,
        ca_bundle=azure.ca_bundle,
        verify_challenge_resource=False,
        polling_interval=0.05,
    )


def rotate_once(concurrency: int) -> float:
    with Emulator(arm_throttle_scale=100) as azure:
        vault = azure.add_vault("bench")
        key = vault.create_key("cmk", exp=datetime.now(UTC) + timedelta(days=90))
        encryption = {
            "keySource": "Microsoft.KeyVault",
            "keyVaultProperties": {"keyName": "cmk", "keyVersion": key.version, "keyVaultUri": vault.url},
        }
        accounts = [azure.arm.add_account(f"acct-{i:02}", encryption=encryption)["id"] for i in range(ACCOUNTS)]
        for operation, seconds in LATENCY.items():
            azure.control.set_latency(operation, seconds)
        settings = Settings.from_env(
            {
                "ROTATION_TARGETS": json.dumps([{"key": f"{vault.url}/keys/cmk", "accounts": accounts}]),
                "ROTATION_CONCURRENCY": str(concurrency),
            }
        )
        connection = _connection(azure)
        engine = RotationEngine(connection.key_vault(), connection.accounts(), settings)
        request = RotationRequest(
            request_id=str(uuid.uuid4()), key=KeyRef.parse(f"{vault.url}/keys/cmk"), trigger=Trigger.CLI, force=True
        )
        started = time.perf_counter()
        outcome = engine.reconcile(request)
        elapsed = time.perf_counter() - started
        if outcome.status is not Status.SUCCEEDED or len(vault.versions("cmk")) != 2:
            raise SystemExit(f"the benchmark's rotation did not succeed: {outcome.to_dict()}")
        return elapsed


def event_handling_times(events: int = 200) -> list[float]:
    """Seconds ``on_key_event`` took for each of ``events`` distinct KeyNearExpiry deliveries."""
    with Emulator() as azure, Azurite() as storage:
        vault = azure.add_vault("bench")
        key = vault.create_key("cmk", exp=datetime.now(UTC) + timedelta(days=20))
        encryption = {
            "keySource": "Microsoft.KeyVault",
            "keyVaultProperties": {"keyName": "cmk", "keyVersion": key.version, "keyVaultUri": vault.url},
        }
        account = azure.arm.add_account("acct", encryption=encryption)["id"]
        env = {
            "AzureWebJobsStorage": storage.connection_string,
            "ROTATION_TARGETS": json.dumps([{"key": f"{vault.url}/keys/cmk", "accounts": [account]}]),
        }
        app = RotationApp.build(env, connection=_connection(azure))
        app.queue.ensure()
        app.ledger.ensure()
        configure(app)
        host = FunctionsHost(function_app.app, storage.connection_string)
        template = {
            "topic": vault.arm_id,
            "subject": "cmk",
            "eventType": "Microsoft.KeyVault.KeyNearExpiry",
            "eventTime": datetime.now(UTC).isoformat(),
            "data": {
                "Id": key.kid,
                "VaultName": "bench",
                "ObjectType": "Key",
                "ObjectName": "cmk",
                "Version": key.version,
                "NBF": None,
                "EXP": key.exp,
            },
            "dataVersion": "1",
            "metadataVersion": "1",
        }
        times = []
        for _ in range(events):
            event = {**template, "id": str(uuid.uuid4())}
            started = time.perf_counter()
            host.deliver_events("on_key_event", [event])
            times.append(time.perf_counter() - started)
        configure(None)
        return times


def main() -> None:
    print(f"Force-rotating one key with {ACCOUNTS} accounts; ARM latency per call: {LATENCY}")
    baseline = None
    for concurrency in CONCURRENCY:
        elapsed = rotate_once(concurrency)
        baseline = baseline or elapsed
        print(f"  concurrency {concurrency:>2}: {baseline / elapsed:5.2f}x the serial speed")
    times = sorted(event_handling_times())
    median, p95 = statistics.median(times), times[int(len(times) * 0.95)]
    print(f"on_key_event, {len(times)} events: median {median:.3f} and p95 {p95:.3f} of its 1 s budget")


if __name__ == "__main__":
    main()
