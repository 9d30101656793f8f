"""The benchmark scenarios and their floors. Each floor is computed from the same numbers the lab is given (the
injected latencies, ARM's LRO settings and its token buckets), so a ratio to it says how much time the service adds.

    one key, 3 accounts      wall of one rotation    / the critical path of its dependent calls
    one key, 200 accounts    wall of one rotation    / max(critical path, ARM's buckets for the required calls)
                             and the naive peer's wall (a sequential loop with SDK defaults) / ours
    3 keys, 40 accounts each wall of reconciling all / max(one key's critical path, ARM's buckets)
    5 and 500 versions       a cold process's dry run with 500 versions / with 5
    cold import              ``import function_app`` less ``python -c pass``, with only requirements.txt installed
    event ack                ``on_key_event`` through the host stand-in and the real worker, its 99th percentile

The critical path of one rotation: Key Vault's list and create, then one account's GET, PATCH, the waits ARM's
``Retry-After`` asks for and the status polls, the final GET, and the reads while "Accepted" lingers (Azure's; the
service must read until it ends). The calls a rotation requires per account: one read, one write, the polls, one
final read and the lingering reads; ARM's reads bucket holds 250 and refills 25 a second, its writes bucket 200 and 10.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.keyvault.keys import KeyClient
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, KeyVaultProperties

import function_app
from bench.lab import ROOT, Lab
from emulator import Emulator
from emulator.arm import THROTTLE_LIMITS
from emulator.azurite import Azurite
from emulator.credential import EmulatorCredential
from emulator.functions_host import FunctionsHost
from rotation import cli
from rotation.app import RotationApp, configure
from rotation.config import Settings
from rotation.connection import AzureConnection
from rotation.engine import RotationEngine
from rotation.model import KeyRef, RotationRequest, Status, Trigger

# The scenario: seconds each call takes.
LATENCY = {
    "keyvault.list_versions": 0.08,
    "keyvault.get_key": 0.08,
    "keyvault.create_key": 0.25,
    "arm.get_account": 0.12,
    "arm.update_account": 0.35,
    "arm.operation_status": 0.08,
    "arm.operation_result": 0.08,
}
RETRY_AFTER = 1  # ARM's Retry-After on the operation's answers, seconds
LRO_POLLS = 1  # "InProgress" answers before "Succeeded"
LINGER = 2  # GETs still showing "Accepted" after the operation (the emulator's default, Azure's behaviour)
ARM = {"retry_after": RETRY_AFTER, "lro_polls": LRO_POLLS, "linger_accepted_reads": LINGER}


@dataclass
class Measured:
    """One scenario's samples (seconds, or the scenario's unit) and what a sample's calls looked like."""

    name: str
    samples: list[float]
    floor: float | None = None  # the computed floor, in the samples' unit
    unit: str = "s"
    target: str = ""
    calls: dict[str, float] = field(default_factory=dict)
    note: str = ""


def account_chain(update_latency: float = LATENCY["arm.update_account"]) -> float:
    """One account's dependent ARM calls and waits, from its read to its last lingering read. The waits are the
    ``Retry-After`` of each "InProgress" answer (azure-core polls the operation as soon as the PATCH is accepted)."""
    polls = LRO_POLLS + 1
    return (
        LATENCY["arm.get_account"]
        + update_latency
        + RETRY_AFTER * LRO_POLLS
        + LATENCY["arm.operation_status"] * polls
        + LATENCY["arm.get_account"] * (1 + LINGER)
    )


def rotation_floor(accounts: int, keys: int = 1, update_latency: float = LATENCY["arm.update_account"]) -> float:
    """The larger of one rotation's critical path and the time ARM's buckets need for every account's calls."""
    chain = LATENCY["keyvault.list_versions"] + LATENCY["keyvault.create_key"] + account_chain(update_latency)
    reads = keys * accounts * (1 + (LRO_POLLS + 1) + 1 + LINGER)
    writes = keys * accounts
    (read_burst, read_rate), (write_burst, write_rate) = THROTTLE_LIMITS["reads"], THROTTLE_LIMITS["writes"]
    buckets = max((reads - read_burst) / read_rate, (writes - write_burst) / write_rate, 0.0)
    return max(chain, buckets)


def seed(lab: Lab, vault: str, vault_url: str, accounts: int, *, tag: str) -> tuple[KeyRef, list[str]]:
    """A key due for renewal (it expires in 20 days) and ``accounts`` accounts on it, named after ``tag``."""
    name = f"cmk-{tag}"
    version = lab.key(vault, name, expires_in=timedelta(days=20))
    ids = lab.accounts(vault_url, name, version, [f"{tag}-{i:03}" for i in range(accounts)])
    return KeyRef.parse(f"{vault_url}/keys/{name}"), ids


def engine(lab: Lab, targets: list[dict[str, Any]]) -> RotationEngine:
    """The service's engine with its production settings, on the lab."""
    settings = Settings.from_env({"ROTATION_TARGETS": json.dumps(targets)})
    connection = lab.connection()
    return RotationEngine(connection.key_vault(), connection.accounts(), settings)


def call_counts(lab: Lab, accounts: int) -> dict[str, float]:
    """A sample's calls: Key Vault's (challenges aside); ARM's per account, in all and by kind (the account's reads,
    its PATCH, the operation's polls); and ARM's throttled answers."""
    calls = [c for c in lab.calls() if c["status"] not in (401, 429)]
    by_service = Counter(c["service"] for c in calls)
    arm = Counter(c["operation"] for c in calls if c["service"] == "arm")
    per_account = {
        "arm_per_account": by_service["arm"],
        "get": arm["arm.get_account"],
        "patch": arm["arm.update_account"],
        "polls": arm["arm.operation_status"] + arm["arm.operation_result"],
    }
    return {
        "keyvault": by_service["keyvault"],
        **{name: round(count / max(accounts, 1), 2) for name, count in per_account.items()},
        "throttled": sum(c["status"] == 429 for c in lab.calls()),
    }


def rotations(lab: Lab, vault: str, vault_url: str, accounts: int, samples: int) -> Measured:
    """One due key with ``accounts`` accounts, rotated ``samples`` times (a fresh key and fleet each time)."""
    walls: list[float] = []
    counts: dict[str, float] = {}
    for n in range(samples):
        key, ids = seed(lab, vault, vault_url, accounts, tag=f"a{accounts}s{n}-{uuid.uuid4().hex[:4]}")
        rotation = engine(lab, [{"key": key.id, "accounts": ids}])
        lab.arm(throttle_scale=1.0, **ARM)  # full buckets for every sample
        lab.reset_calls()
        started = time.perf_counter()
        outcome = rotation.reconcile(RotationRequest(str(uuid.uuid4()), key, Trigger.TIMER))
        walls.append(time.perf_counter() - started)
        if outcome.status is not Status.SUCCEEDED:
            raise SystemExit(f"a benchmark rotation failed: {outcome.error}")
        counts = call_counts(lab, accounts)
    return Measured(
        f"one key, {accounts} accounts",
        walls,
        rotation_floor(accounts),
        target="≤ 1.15x floor" if accounts <= 3 else "≤ 1.2x floor",
        calls=counts,
    )


def naive_peer(lab: Lab, vault: str, vault_url: str, accounts: int) -> float:
    """What Microsoft's samples do, one account after another with the SDKs' defaults: create a version, then for each
    account read it and update it, waiting on each operation. No verify, no lock, no ledger."""
    key, ids = seed(lab, vault, vault_url, accounts, tag=f"naive-{uuid.uuid4().hex[:4]}")
    credential = EmulatorCredential()
    verify = lab.endpoints["ca_bundle"]
    keys = KeyClient(key.vault_url, credential, verify_challenge_resource=False, connection_verify=verify)
    subscription = ids[0].split("/")[2]
    arm = CognitiveServicesManagementClient(
        credential, subscription, base_url=lab.endpoints["arm"], connection_verify=verify
    )
    lab.arm(throttle_scale=1.0, **ARM)
    started = time.perf_counter()
    version = keys.create_rsa_key(key.name, size=2048).properties.version
    for account_id in ids:
        parts = account_id.split("/")
        resource_group, name = parts[4], parts[8]
        current = arm.accounts.get(resource_group, name)
        vault_properties = current.properties.encryption.key_vault_properties
        body = Account(
            properties=AccountProperties(
                encryption=Encryption(
                    key_source="Microsoft.KeyVault",
                    key_vault_properties=KeyVaultProperties(
                        key_vault_uri=vault_properties.key_vault_uri,
                        key_name=vault_properties.key_name,
                        key_version=version,
                    ),
                )
            )
        )
        arm.accounts.begin_update(resource_group, name, body).result()
    return time.perf_counter() - started


def several_keys(lab: Lab, vault: str, vault_url: str, samples: int, *, keys: int = 3, accounts: int = 40) -> Measured:
    """``keys`` due keys of ``accounts`` accounts each, with 1 s of update latency, reconciled by the CLI's
    ``reconcile`` (every target), as an operator would."""
    update_latency = 1.0
    lab.latency({"arm.update_account": update_latency})
    walls: list[float] = []
    try:
        for n in range(samples):
            targets = []
            for k in range(keys):
                key, ids = seed(lab, vault, vault_url, accounts, tag=f"k{k}s{n}-{uuid.uuid4().hex[:4]}")
                targets.append({"key": key.id, "accounts": ids})
            lab.arm(throttle_scale=1.0, **ARM)
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = cli.main(
                    ["reconcile"], env={"ROTATION_TARGETS": json.dumps(targets)}, connection=lab.connection()
                )
            walls.append(time.perf_counter() - started)
            if code != cli.EXIT_OK:
                raise SystemExit(f"the CLI's reconcile of several keys exited with {code}")
    finally:
        lab.latency({"arm.update_account": LATENCY["arm.update_account"]})
    return Measured(
        f"{keys} keys, {accounts} accounts each (CLI reconcile)",
        walls,
        rotation_floor(accounts, keys, update_latency),
        target="≤ 1.2x floor",
    )


def versions_ratio(lab: Lab, vault: str, vault_url: str, samples: int) -> Measured:
    """A cold process's dry run of a key with 500 versions, over one with 5."""
    targets = {}
    for count in (5, 500):
        name = f"history-{count}"
        for _ in range(count):
            lab.key(vault, name, expires_in=timedelta(days=20))
        current = lab.key(vault, name, expires_in=timedelta(days=90))  # the current one, not due
        targets[count] = {"key": f"{vault_url}/keys/{name}", "accounts": lab.accounts(vault_url, name, current, [name])}
    ratios = []
    for _ in range(samples):
        five, many = (_cold_dry_run(lab, targets[n]) for n in (5, 500))
        ratios.append(many / five)
    return Measured("gather, 500 versions / 5", ratios, 1.0, unit="x", target="≤ 1.5x")


def _cold_dry_run(lab: Lab, target: dict[str, Any]) -> float:
    """Seconds a new process takes for one dry run of ``target`` (its clients and caches cold)."""
    script = (
        "import json, sys, time, uuid\n"
        "from bench.lab import Lab\n"
        "import requests\n"
        "from bench.scenarios import engine\n"
        "from rotation.model import KeyRef, RotationRequest, Trigger\n"
        "endpoints, target = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "rotation = engine(Lab(endpoints, requests.Session()), [target])\n"
        "started = time.perf_counter()\n"
        "rotation.dry_run(RotationRequest(str(uuid.uuid4()), KeyRef.parse(target['key']), Trigger.TIMER))\n"
        "print(time.perf_counter() - started)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(dict(lab.endpoints)), json.dumps(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def cold_import(samples: int, runtime: Path) -> Measured:
    """``import function_app`` less ``python -c pass`` in ``runtime``, a virtualenv with only requirements.txt."""
    python = str(runtime / "bin" / "python")

    def timed(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([python, "-c", code], cwd=ROOT, check=True, env={"PYTHONDONTWRITEBYTECODE": "1"})
        return time.perf_counter() - started

    extra = [timed("import function_app") - timed("pass") for _ in range(samples)]
    return Measured("cold import of function_app", extra, None, target="≤ 0.6 s above python -c pass")


def event_ack(events: int = 200) -> Measured:
    """Seconds ``on_key_event`` takes per distinct KeyNearExpiry delivery, through the host stand-in (the Event Grid
    webhook) and the real Python worker into a real Azurite; the emulator in this process (it is not in the path)."""
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
            "ROTATION_SCHEDULE": "0 0 3 * * *",
        }
        connection = AzureConnection(
            azure.credential(), arm_endpoint=azure.arm_url, ca_bundle=azure.ca_bundle, verify_challenge_resource=False
        )
        app = RotationApp.build(env, connection=connection)
        app.queue.ensure()
        app.ledger.ensure()
        configure(app)
        host = FunctionsHost(function_app.app, storage.connection_string, app_settings=env)
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
            started = time.perf_counter()
            host.deliver_events("on_key_event", [{**template, "id": str(uuid.uuid4())}])
            times.append(time.perf_counter() - started)
        configure(None)
    p99 = statistics.quantiles(times, n=100)[98]
    return Measured(
        f"on_key_event ack ({events} events)",
        [t * 1000 for t in times],
        None,
        unit="ms",
        target="p99 < 100 ms",
        note=f"p99 {p99 * 1000:.0f} ms",
    )
