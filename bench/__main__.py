"""``make bench``: how a fleet rotation scales with ``ROTATION_CONCURRENCY``, as ratios against the serial run.

One key with 24 accounts on the local emulator; every ARM update and read is slowed by injected latency, as real ARM
is slow. For each concurrency the benchmark force-rotates the key (one new version, 24 accounts repointed and verified)
and reports the wall time relative to concurrency 1. Absolute times depend on the machine; the ratios should not.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from emulator import Emulator
from rotation.config import Settings
from rotation.connection import AzureConnection
from rotation.engine import RotationEngine
from rotation.model import KeyRef, RotationRequest, Status, Trigger

ACCOUNTS = 24
LATENCY = {"arm.update_account": 0.15, "arm.operation_status": 0.05, "arm.get_account": 0.05}
CONCURRENCY = (1, 2, 4, 8, 16)


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
        connection = AzureConnection(
            azure.credential(),
            arm_endpoint=azure.arm_url,
            ca_bundle=azure.ca_bundle,
            verify_challenge_resource=False,
            polling_interval=0.05,
        )
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


def main() -> None:
    print(f"Force-rotating one key with {ACCOUNTS} accounts; ARM latency per call: {LATENCY}")
    baseline = None
    for concurrency in CONCURRENCY:
        elapsed = rotate_once(concurrency)
        baseline = baseline or elapsed
        print(f"  concurrency {concurrency:>2}: {baseline / elapsed:5.2f}x the serial speed")


if __name__ == "__main__":
    main()
