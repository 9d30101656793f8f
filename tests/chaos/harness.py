"""The chaos harness: runs one schedule against the real app, settles it, and checks the invariants.

::

    World (one per session)   one emulator, the session's Azurite, one vault, a bystander key and account,
                              a warm worker process in reserve
    Run (one per schedule)    a fresh key, fresh accounts, a fresh ledger table, the fixed Functions queues emptied;
                              the app built by ``wiring.build_chaos_app`` and installed with ``configure``;
                              steps run in order (a concurrent step on threads); a sampler watches the accounts
        settle                faults, latency and blips cleared; Event Grid's failed deliveries sent again; the
                              queues pumped, the poison handler run, a final sweep and pump (until nothing is left)
        check                 invariants 1-7 (3 and 7 are also checked while the schedule runs: 3 after every step
                              and every 10 ms by a sampler thread)

The harness fast-forwards time where Azure would make it wait, and says so where it does:

- A worker process killed while it holds its key's blob lease would block the key for Azure's shortest lease (15 s).
  The harness breaks that lease (``BlobLeaseClient.break_lease(lease_break_period=0)``) once no worker of the step is
  alive: the lease expiring, fast-forwarded. The same is done when settling for a lease left by a failed release.
- A message whose delivery failed is visible again at once (the host would wait host.json's ``visibilityTimeout``),
  and the message a killed process had received is made visible again at once (its visibility timeout, expired).
- Event Grid's retry of a delivery that failed (Redeliver) happens when the schedule settles, not 10 s later.
- The clock moves only when an ``advance`` step says so: the emulator's clock, which the app reads too.

One wait is real: a call a client gave up on (the ``timeout`` action) is still carried out by the emulator, late;
before settling and before the next schedule, the harness waits until every such call has landed (under 2 s).

It never patches the code under test: the app is built by ``RotationApp.build`` with injected timings, the triggers are
``function_app``'s own functions invoked through ``emulator.functions_host`` and the real Python worker (a function's
exception reaches the harness as the worker's ``InvocationFailed``, with the exception's type by name), storage blips
come from the transport the storage clients are given, and Key Vault and ARM faults are the emulator's fault rules.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.data.tables import TableServiceClient
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, KeyVaultProperties
from azure.storage.blob import BlobClient, BlobLeaseClient
from azure.storage.queue import QueueClient, QueueMessage

import function_app
from emulator.azurite import Azurite
from emulator.control import FaultRule
from emulator.core import Emulator
from emulator.eventgrid import KEY_NEAR_EXPIRY, KEY_NEW_VERSION_CREATED
from emulator.functions_host import FunctionsHost, InvocationFailed
from rotation.app import configure
from rotation.errors import InvalidInput, StorageUnavailable
from rotation.events import KEY_EVENT_TYPES
from rotation.model import TAG_REQUEST_ID, TAG_TRIGGER, KeyRef, RotationRequest, event_request_id
from rotation.reasons import Reason
from rotation.storage import LOCKS_CONTAINER, POISON_QUEUE, REQUESTS_QUEUE, Ledger, LedgerEntry
from rotation.storage.lock import lock_blob_name
from tests.chaos.processes import ProcessPool
from tests.chaos.schedule import Action, Schedule, Step
from tests.chaos.transport import BlipTransport
from tests.chaos.wiring import READ_TIMEOUT, build_chaos_app

log = logging.getLogger("tests.chaos")

RESOURCE_GROUP = "rg-ai"
VAULT = "chaos-kv"
BYSTANDER_KEY = "bystander-cmk"
BYSTANDER_ACCOUNT = "chaos-bystander"
APP_IDENTITY = "chaos-app"
PROCESS_IDENTITY = "chaos-process"
HARNESS_IDENTITY = "chaos-harness"
MAX_DEQUEUE = 5  # host.json extensions.queues.maxDequeueCount
SCHEDULE = "0 0 3 * * *"  # ROTATION_SCHEDULE, the app setting the timer's %ROTATION_SCHEDULE% resolves to
RENEW_BEFORE = timedelta(days=30)  # ROTATION_RENEW_BEFORE's default, which the app runs with
KEY_LIFETIME = timedelta(days=120)  # ROTATION_KEY_LIFETIME's default
DAY = timedelta(days=1)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
STEP_TIMEOUT = 90.0  # seconds a step's threads may take before the schedule counts as hung
SETTLE_ROUNDS = 6
PUMP_LIMIT = 400  # deliveries in one settle pump before it counts as a livelock
TIMED_OUT = READ_TIMEOUT + 0.5  # the latency of a call the client gives up on (the emulator answers it late)
IN_USE = Reason.COMPROMISED_VERSION_IN_USE.value  # a break-glass request's outcome when its version stays enabled

INVARIANTS = {
    0: "the harness's own checks: no step hangs, no HTTP answer outside the documented ones, no lease left held by a "
    "worker that returned (without a failed release), the harness itself never fails",
    1: "at most one new version per key per due period (+1 per accepted forced or break-glass request)",
    2: "every target account converges on the target version and Succeeded",
    3: "never an account on a disabled, expired, not-yet-valid or non-RSA-2048 version (nor the unmanaged account on "
    "a disabled one); a version break-glass reports disabled is disabled, with no account left on it",
    4: "nothing outside the targets written (Key Vault: the key's new versions, and disabling an old version by "
    "retirement or one a break-glass request named)",
    5: "every accepted request ends succeeded, failed or skipped",
    6: "our own KeyNewVersionCreated never creates a version",
    7: "no exception leaves a trigger except Redeliver",
}


@dataclass(frozen=True)
class Violation:
    invariant: int
    detail: str

    def __str__(self) -> str:
        return f"invariant {self.invariant} ({INVARIANTS[self.invariant]}): {self.detail}"


@dataclass
class Counters:
    schedules: int = 0
    violations: int = 0
    seconds: float = 0.0
    steps: int = 0
    process_schedules: int = 0
    kills: int = 0
    leases_broken: int = 0
    faults: int = 0
    blips: int = 0
    events: int = 0
    http: int = 0
    deliveries: int = 0
    versions_created: int = 0
    versions_retired: int = 0
    advances: int = 0
    break_glass_plans: int = 0
    break_glass_requests: int = 0
    break_glass_refused: int = 0
    break_glass_disabled: int = 0
    break_glass_in_use: int = 0
    slowest: tuple[float, int] = (0.0, -1)
    durations: list[float] = field(default_factory=list)

    def add(self, result: RunResult) -> None:
        self.schedules += 1
        self.violations += len(result.violations)
        self.seconds += result.seconds
        self.slowest = max(self.slowest, (result.seconds, result.seed))
        self.durations.append(result.seconds)
        for name in (
            "steps",
            "kills",
            "leases_broken",
            "faults",
            "blips",
            "events",
            "http",
            "deliveries",
            "versions_created",
            "versions_retired",
            "advances",
            "break_glass_plans",
            "break_glass_requests",
            "break_glass_refused",
            "break_glass_disabled",
            "break_glass_in_use",
        ):
            setattr(self, name, getattr(self, name) + getattr(result, name))
        self.process_schedules += int(result.kills > 0 or result.processes > 0)

    def summary(self) -> str:
        mean = self.seconds / self.schedules if self.schedules else 0.0
        median = statistics.median(self.durations) if self.durations else 0.0
        return (
            f"chaos: {self.schedules} schedules, {self.violations} invariant violations, "
            f"total {self.seconds:.1f} s, mean {mean:.3f} s per schedule (median {median:.3f} s, slowest "
            f"{self.slowest[0]:.2f} s, seed {self.slowest[1]})\n"
            f"chaos: {self.steps} steps, {self.deliveries} queue deliveries, {self.events} events, {self.http} HTTP "
            f"requests, {self.faults} fault rules, {self.blips} storage blips, {self.process_schedules} schedules with "
            f"worker processes, {self.kills} workers killed at a step boundary, {self.leases_broken} leases broken "
            f"(expiry fast-forwarded), {self.advances} clock advances, {self.versions_created} versions created and "
            f"{self.versions_retired} retired by the app\n"
            f"chaos: {self.break_glass_plans} break-glass plans, {self.break_glass_requests} break-glass requests "
            f"({self.break_glass_refused} confirmations refused), {self.break_glass_disabled} versions disabled by "
            f"break-glass, {self.break_glass_in_use} compromised versions kept enabled (in use)"
        )


@dataclass
class RunResult:
    seed: int
    violations: list[Violation]
    seconds: float
    steps: int = 0
    processes: int = 0
    kills: int = 0
    leases_broken: int = 0
    faults: int = 0
    blips: int = 0
    events: int = 0
    http: int = 0
    deliveries: int = 0
    versions_created: int = 0
    versions_retired: int = 0
    advances: int = 0
    break_glass_plans: int = 0  # 200 answers to a break-glass POST
    break_glass_requests: int = 0  # the schedule's break-glass ledger rows (accepted confirmations)
    break_glass_refused: int = 0  # 409 ConfirmationRefused
    break_glass_disabled: int = 0  # versions a break-glass request disabled
    break_glass_in_use: int = 0  # compromised versions a break-glass request kept enabled (CompromisedVersionInUse)
    notes: list[str] = field(default_factory=list)


class RecordCollector(logging.Handler):
    """Keeps the app's WARNING and ERROR records of the running schedule (the ``rotation`` logger)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._lock_records:
            taken, self.records = self.records, []
        return taken


@dataclass
class World:
    """What every schedule of the session shares."""

    emulator: Emulator
    azurite: Azurite
    vault: Any
    host: FunctionsHost
    bystander_version: str
    bystander_account_id: str
    bystander_events: list[Any]
    harness_arm: CognitiveServicesManagementClient
    processes: ProcessPool
    records: RecordCollector

    @classmethod
    def start(cls, emulator: Emulator, azurite: Azurite) -> World:
        # Throttling is a fault the schedules inject on purpose; the emulator's own token buckets would only add
        # seconds-long Retry-After waits as a thousand schedules run back to back.
        emulator.arm.configure(lro_unattended_seconds=0.2, throttle_scale=1000)
        vault = emulator.add_vault(VAULT, purge_protection=True)
        vault.set_throttle(create_per_10s=1e6, other_per_10s=1e7)
        published = len(emulator.eventgrid.published)
        bystander = vault.create_key(BYSTANDER_KEY)  # no expiry: it never becomes due and never expires
        account = emulator.arm.add_account(
            BYSTANDER_ACCOUNT, resource_group=RESOURCE_GROUP, encryption=_cmk(vault, bystander)
        )
        harness_arm = CognitiveServicesManagementClient(
            emulator.credential(HARNESS_IDENTITY),
            emulator.subscription_id,
            base_url=emulator.arm_url,
            connection_verify=emulator.ca_bundle,
            polling_interval=0,
            retry_total=0,
        )
        records = RecordCollector()
        logging.getLogger("rotation").addHandler(records)
        return cls(
            emulator=emulator,
            azurite=azurite,
            vault=vault,
            host=FunctionsHost(
                function_app.app,
                azurite.connection_string,
                max_dequeue_count=MAX_DEQUEUE,
                app_settings={"ROTATION_SCHEDULE": SCHEDULE},
            ),
            bystander_version=bystander.version,
            bystander_account_id=account["id"],
            bystander_events=list(emulator.eventgrid.published[published:]),
            harness_arm=harness_arm,
            processes=ProcessPool(),
            records=records,
        )

    def close(self) -> None:
        self.processes.close()
        logging.getLogger("rotation").removeHandler(self.records)
        self.harness_arm.close()

    def empty_queues(self) -> None:
        for name in (REQUESTS_QUEUE, POISON_QUEUE):
            queue = self.host.queue(name)
            try:
                queue.clear_messages()
            except AzureError:
                queue.create_queue()


def redelivery(failure: InvocationFailed) -> bool:
    """True when the function raised ``Redeliver`` on purpose (every failure of the delivery did)."""
    return all(f.exception_type == "Redeliver" for f in failure.failures)


def _cmk(vault: Any, record: Any) -> dict[str, Any]:
    return {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyName": record.name, "keyVersion": record.version, "keyVaultUri": vault.url},
    }


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def unusable(record: Any, now: int) -> str | None:
    """Why an account must not point at ``record`` at ``now`` (epoch seconds), or None when it may."""
    if record is None:
        return "a version the key does not have"
    if not record.enabled:
        return "a disabled version"
    if record.nbf is not None and now < record.nbf:
        return "a version not yet valid"
    if record.exp is not None and now >= record.exp:
        return "an expired version"
    if record.kty not in ("RSA", "RSA-HSM") or record.size != 2048:
        return f"a {record.kty} {record.size} version"
    return None


def is_due(record: Any, now: int) -> bool:
    if record.exp is not None:
        return now >= record.exp - int(RENEW_BEFORE.total_seconds())
    return now >= record.created + int((KEY_LIFETIME - RENEW_BEFORE).total_seconds())


def expected_target(records: list[Any], latest: str, now: int) -> Any | None:
    """The version every account must end on: the newest usable version that is not due (DESIGN §3.3), with Key
    Vault's ``created`` seconds tied by which one Key Vault calls current, then by version id."""
    candidates = [r for r in records if unusable(r, now) is None and not is_due(r, now)]
    return max(candidates, key=lambda r: (r.created, r.version == latest, r.version), default=None)


class Run:
    """One schedule, from a fresh key to the checked invariants."""

    def __init__(self, world: World, schedule: Schedule) -> None:
        self.world = world
        self.schedule = schedule
        self.seed = schedule.seed
        self.setup = schedule.setup
        self.emulator = world.emulator
        self.vault = world.vault
        self.host = world.host
        self.rng = random.Random(schedule.seed)
        suffix = uuid.uuid4().hex[:6]
        self.key = f"cmk-{schedule.seed}-{suffix}"
        self.key_url = f"{self.vault.url}/keys/{self.key}"
        self.key_ref = KeyRef.parse(self.key_url)
        self.accounts = [f"aoai-{schedule.seed}-{suffix}-{n}" for n in range(self.setup.accounts)]
        self.account_ids: list[str] = []
        self.ledger_table = f"chaos{schedule.seed}x{suffix}"
        self.violations: list[Violation] = []
        self._seen: set[tuple[int, str]] = set()
        self._violations_lock = threading.Lock()
        self.result = RunResult(schedule.seed, self.violations, 0.0)
        self.http_accepted: set[str] = set()
        self.events_accepted: set[str] = set()
        self.pending_events: list[tuple[dict[str, Any], str]] = []
        self.due_periods = 0
        # (version, created at, every version's enabled state just after) of the versions someone else added
        self.foreign: list[tuple[str, int, dict[str, bool]]] = []
        self.unmanaged = f"{self.key}-unmanaged"  # on the key, not in the targets: discovery finds it, nobody moves it
        self.plans: dict[int, tuple[dict[str, Any], str]] = {}  # break-glass plans to confirm later: (body, token)
        self.latency_ops: set[str] = set()
        self.timeouts: list[threading.Timer] = []
        self.late_until = 0.0  # time.monotonic() by which every request a client gave up on has been carried out
        self.release_failures = 0
        self.transport = BlipTransport(schedule.seed, rate=0.0)
        self._stop_sampling = threading.Event()
        self._lock = threading.Lock()
        self._published_from = 0
        self.requests_queue = self.host.queue(REQUESTS_QUEUE)
        self.poison_queue = self.host.queue(POISON_QUEUE)
        self.ledger = Ledger.from_connection_string(world.azurite.connection_string, table_name=self.ledger_table)
        self.lock_blob = BlobClient.from_connection_string(
            world.azurite.connection_string, LOCKS_CONTAINER, lock_blob_name(self.key_ref)
        )

    # -- the whole run ----------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        started = time.monotonic()
        self.world.records.take()
        sampler = threading.Thread(target=self._sample, daemon=True, name=f"chaos-sampler-{self.seed}")
        try:
            self._set_up()
            sampler.start()
            self.result.notes.append(f"set up in {time.monotonic() - started:.2f} s")
            for number, step in enumerate(self.schedule.steps, 1):
                began = time.monotonic()
                self._step(number, step)
                self.result.notes.append(f"step {number} took {time.monotonic() - began:.2f} s")
                self.result.steps += 1
                self._observe(f"after step {number}")
                self._collect_records()
            began = time.monotonic()
            self.settle()
            self.result.notes.append(f"settling took {time.monotonic() - began:.2f} s")
            self._observe("after settling")
            self._stop_sampling.set()
            sampler.join(timeout=10)
            self._collect_records()
            self.check()
        finally:
            self._stop_sampling.set()
            self._tear_down()
        self.result.seconds = time.monotonic() - started
        self.result.blips = self.transport.blips
        return self.result

    def violation(self, invariant: int, detail: str) -> None:
        with self._violations_lock:
            if (invariant, detail) in self._seen:
                return
            self._seen.add((invariant, detail))
            self.violations.append(Violation(invariant, detail))

    def _set_up(self) -> None:
        world, setup, now = self.world, self.setup, self.emulator.clock.now()
        self.emulator.control.clear_faults()
        self.emulator.control.reset_calls()
        self.emulator.arm.configure(
            lro_polls=1, lro_seconds=0, linger_accepted_reads=0, retry_after=0, validation=setup.validation
        )
        world.empty_queues()
        self._published_from = len(self.emulator.eventgrid.published)
        on: list[Any]
        if setup.initial == "due":
            current = self.vault.create_key(self.key, exp=now + 20 * DAY, key_ops=["wrapKey", "unwrapKey"])
            on = [current] * setup.accounts
            self.due_periods = 1
        elif setup.initial == "fresh":
            current = self.vault.create_key(self.key, exp=now + 100 * DAY)
            on = [current] * setup.accounts
        elif setup.initial == "drifted":  # some accounts still on an older, due version; the newest is fresh
            old = self.vault.create_key(self.key, exp=now + 25 * DAY)
            current = self.vault.create_key(self.key, exp=now + 100 * DAY)
            on = [old if self.rng.random() < 0.5 else current for _ in range(setup.accounts)]
            on[0] = old
        else:  # bad_latest: the accounts are on a usable (due) version, and the newest version cannot be used
            old = self.vault.create_key(self.key, exp=now + 25 * DAY)
            self.vault.create_key(self.key, **_flawed(setup.bad_kind, now))
            on = [old] * setup.accounts
            self.due_periods = 1
        for name, record in zip(self.accounts, on, strict=True):
            body = self.emulator.arm.add_account(
                name, resource_group=RESOURCE_GROUP, encryption=_cmk(self.vault, record)
            )
            self.account_ids.append(body["id"])
        # An account on the key that the targets do not list: discovery reports it, and invariant 4 holds it untouched.
        self.emulator.arm.add_account(self.unmanaged, resource_group=RESOURCE_GROUP, encryption=_cmk(self.vault, on[0]))
        self.emulator.eventgrid.scan()  # Key Vault notices what is near expiry now
        self.app = build_chaos_app(
            self.emulator.endpoints(),
            world.azurite.connection_string,
            self.targets,
            identity=APP_IDENTITY,
            ledger_table=self.ledger_table,
            clock=self.emulator.clock.now,
            settings=self.app_settings,
            storage_retries=setup.storage_retries,
            transport=self.transport,
        )
        self.app.queue.ensure()
        self.app.ledger.ensure()
        configure(self.app)
        self.transport.rate = setup.blip_rate

    @property
    def targets(self) -> list[dict[str, Any]]:
        rollout = {} if self.setup.wave_size is None else {"rollout": {"wave_size": self.setup.wave_size}}
        return [{"key": self.key_url, "accounts": self.account_ids, **rollout}]

    @property
    def app_settings(self) -> dict[str, str]:
        retirement = {"ROTATION_RETIREMENT": "all", "ROTATION_RETIRE_AFTER": "P1D"} if self.setup.retirement else {}
        return {
            "ROTATION_CONCURRENCY": str(self.setup.concurrency),
            "ROTATION_FORCE_COOLDOWN": self.setup.cooldown,
            **retirement,
        }

    def _tear_down(self) -> None:
        self.transport.rate = 0.0
        configure(None)
        self.emulator.control.clear_faults()
        self._wait_for_late_requests()
        self.world.empty_queues()
        try:
            TableServiceClient.from_connection_string(self.world.azurite.connection_string).delete_table(
                self.ledger_table
            )
        except AzureError as exc:
            self.result.notes.append(f"the ledger table was not deleted: {exc}")

    # -- steps ------------------------------------------------------------------------------------------------------
    def _step(self, number: int, step: Step) -> None:
        kills_before = self.result.kills
        if not step.concurrent:
            self._act(step.actions[0], number)
        else:
            threads = [
                threading.Thread(
                    target=self._act, args=(a, number), name=f"chaos-{self.seed}-{number}-{n}", daemon=True
                )
                for n, a in enumerate(step.actions)
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + STEP_TIMEOUT
            for thread in threads:
                thread.join(timeout=max(0.1, deadline - time.monotonic()))
            hung = [t.name for t in threads if t.is_alive()]
            if hung:
                self.violation(0, f"step {number} ({step}) did not finish within {STEP_TIMEOUT:.0f} s: {hung}")
        if self.result.kills > kills_before:
            # Every worker of the step has returned or been killed: a lease still held belongs to a dead process.
            self._break_lease("a killed worker process")

    def _act(self, act: Action, number: int) -> None:
        handler: Callable[[Action], None] = getattr(self, f"_do_{act.kind}")
        try:
            handler(act)
        except Exception as exc:
            self.violation(0, f"step {number} {act}: the harness itself failed with {type(exc).__name__}: {exc}")
            log.exception("chaos seed %s step %s %s failed", self.seed, number, act)

    def _do_event(self, act: Action) -> None:
        pick = random.Random(act.get("pick"))
        what = act.get("what")
        ours = [e for e in self.emulator.eventgrid.published[self._published_from :] if self._is_ours(e)]
        if what == "bystander":
            pool = self.world.bystander_events
        else:
            wanted = {"near_expiry": KEY_NEAR_EXPIRY, "new_version": KEY_NEW_VERSION_CREATED}.get(what)
            pool = [e for e in ours if wanted is None or e.event_type == wanted] or ours
        if not pool:
            return
        chosen = [pick.choice(pool) for _ in range(act.get("count"))]
        copies = [e for e in chosen for _ in range(act.get("copies"))]
        pick.shuffle(copies)
        for event in copies:
            payload = json.loads(json.dumps(event.in_schema(act.get("schema"))))
            self._deliver_event(payload, act.get("via"))

    def _is_ours(self, event: Any) -> bool:
        data = event.event_grid.get("data", {})
        return data.get("VaultName") == VAULT and data.get("ObjectName") == self.key

    def _deliver_event(self, payload: dict[str, Any], via: str) -> bool:
        """Event Grid's delivery of one event; False when the app asked for a redelivery (sent again on settling)."""
        with self._lock:
            self.result.events += 1
        try:
            if via == "queue":
                self.host.deliver_message("on_queued_key_event", json.dumps(payload))
            else:
                self.host.deliver_events("on_key_event", [payload])
        except InvocationFailed as failure:
            if not redelivery(failure):
                self.violation(7, f"{via} delivery of event {payload.get('id')} failed: {failure}")
            with self._lock:
                self.pending_events.append((payload, via))
            return False
        except Exception as exc:  # noqa: BLE001 -- invariant 7
            self.violation(7, f"{via} delivery of event {payload.get('id')} raised {type(exc).__name__}: {exc}")
            return False
        data = payload.get("data") or {}
        event_type = payload.get("type") or payload.get("eventType")
        if data.get("ObjectName") == self.key and event_type in KEY_EVENT_TYPES:
            with self._lock:
                self.events_accepted.add(event_request_id(payload["id"], self.key_ref))
        return True

    def _do_post(self, act: Action) -> None:
        bystander = act.get("bystander")
        key = f"{self.vault.url}/keys/{BYSTANDER_KEY}" if bystander else self.key_url
        body = {"key": key, "force": act.get("force"), "dry_run": act.get("dry_run")}
        idempotency = act.get("idempotency")
        headers = {"Idempotency-Key": f"chaos-{self.seed}-{idempotency}"} if idempotency else {}
        status, answer = self._http(
            "submit_rotation", "POST", "/api/rotations", body=json.dumps(body).encode(), headers=headers
        )
        expected = {403} if bystander else {200, 502} if act.get("dry_run") else {202, 422, 429, 503}
        if status not in expected:
            self.violation(0, f"POST {body} answered {status} {answer}; expected one of {sorted(expected)}")
        if status == 202:
            with self._lock:
                self.http_accepted.add(answer["request_id"])

    def _do_break_glass(self, act: Action) -> None:
        """Break-glass's first call (the plan, which writes nothing), then its confirmation at once, twice, later (a
        ``confirm`` step) or never."""
        version = self._compromised(act)
        missing = act.get("version") == "missing"
        body = {"key": self.key_url, "compromised_version": version.upper() if act.get("upper") else version}
        status, answer = self._http("submit_rotation", "POST", "/api/rotations", body=json.dumps(body).encode())
        # 404: the key lacks the version; 502: Key Vault or ARM could not be read for the plan; 409: no version can be
        # created (KeyBlocked). Nothing else (a plan reads no storage).
        expected = {404, 502} if missing else {200, 409, 502}
        if status not in expected or (status == 409 and _code(answer) != "KeyBlocked"):
            self.violation(0, f"break-glass plan {body} answered {status} {answer}; expected one of {sorted(expected)}")
        if status != 200:
            self.result.notes.append(f"break-glass plan of {version}: {status} {_code(answer)}")
            return
        exposed = [
            f"{str(a.get('account')).rsplit('/', 1)[-1]} {a.get('movable')}" for a in answer.get("accounts") or []
        ]
        self.result.notes.append(f"break-glass plan of {version}: {exposed}; {answer.get('version_outlook')}")
        with self._lock:
            self.result.break_glass_plans += 1
        token = self._plan_token(body, answer)
        if token is None:
            return
        fault = act.get("disable_fault")
        if fault is not None:  # lands on the PATCH that disables the version (or on a retirement's, if one comes first)
            self.emulator.control.add_fault(
                FaultRule(
                    operation="keyvault.update_key",
                    status=fault or 503,
                    drop=fault == 0,
                    retry_after=0.01 if fault == 429 else None,
                    times=act.get("times"),
                    act_first=act.get("acted"),
                )
            )
            self.result.faults += 1
        confirm = act.get("confirm")
        if confirm == "later":
            self.plans[act.get("pick")] = (body, token)
        elif confirm in ("now", "twice"):
            first = self._confirm(body, token)
            if confirm == "twice":
                again = self._confirm(body, token)
                if first[0] == 202 and (again[0] not in (202, 503) or (again[0] == 202 and again[1] != first[1])):
                    self.violation(
                        0, f"a repeated break-glass confirmation of {body} answered {again}, the first {first}"
                    )

    def _do_confirm(self, act: Action) -> None:
        """A break-glass plan's confirmation, some steps after the plan; when refused, the fresh plan's, once."""
        found = self.plans.pop(act.get("plan"), None)
        if found is None:
            return  # the plan's call answered no plan
        body, token = found
        status, answer = self._confirm(body, token)
        if status == 409 and _code(answer) == "ConfirmationRefused":
            fresh = self._plan_token(body, answer.get("plan"))
            if fresh is not None:
                self._confirm(body, fresh)

    def _confirm(self, body: dict[str, Any], token: str) -> tuple[int, str | None]:
        """Break-glass's second call: the status, and the request id of a 202."""
        confirmed = {**body, "confirmation": token}
        status, answer = self._http("submit_rotation", "POST", "/api/rotations", body=json.dumps(confirmed).encode())
        # 202: queued (or the same request again); 409: the plan changed or the token is too old (with the fresh
        # plan), or no version can be created; 502: Key Vault or ARM could not be read; 503: storage failed.
        code = _code(answer) if status == 409 else None
        if status not in (202, 409, 502, 503) or code not in (None, "ConfirmationRefused", "KeyBlocked"):
            self.violation(0, f"break-glass confirmation of {body} answered {status} {answer}")
            return status, None
        if code == "ConfirmationRefused":
            with self._lock:
                self.result.break_glass_refused += 1
            self._plan_token(body, answer.get("plan"))  # the fresh plan, which must be a plan
        self.result.notes.append(f"break-glass confirmation of {body['compromised_version']}: {status} {code or ''}")
        if status != 202:
            return status, None
        request_id = answer.get("request_id")
        named = str(answer.get("compromised_version") or "")
        if not isinstance(request_id, str) or named.lower() != body["compromised_version"].lower():
            self.violation(0, f"break-glass confirmation of {body} answered 202 with {answer}")
            return status, None
        with self._lock:
            self.http_accepted.add(request_id)
        return status, request_id

    def _plan_token(self, body: dict[str, Any], plan: Any) -> str | None:
        """A break-glass plan's confirmation token, after checking that the plan names the version, and names the
        unmanaged account when it is on it and the discovery searched everywhere (it can never be moved)."""
        token = plan.get("confirmation") if isinstance(plan, dict) else None
        version = body["compromised_version"].lower()
        if not isinstance(token, str) or str(plan.get("compromised_version", "")).lower() != version:
            self.violation(0, f"break-glass plan of {body} is not a plan with a confirmation: {plan}")
            return None
        encryption = self.emulator.arm.account(RESOURCE_GROUP, self.unmanaged)["properties"]["encryption"]
        on_it = encryption["keyVaultProperties"]["keyVersion"].lower() == version
        named = {
            str(a.get("account", "")).rsplit("/", 1)[-1].lower(): a.get("movable")
            for a in plan.get("accounts") or []
            if isinstance(a, dict)
        }
        complete = (plan.get("discovery") or {}).get("complete") is True
        if on_it and complete and named.get(self.unmanaged.lower(), True) is not False:
            self.violation(
                0, f"break-glass plan of {body} does not name the unmanaged account on it as not movable: {plan}"
            )
        return token

    def _compromised(self, act: Action) -> str:
        """The version a break_glass step names, picked now: the target the accounts must end on (else the newest),
        the newest, one a target account is on, the unmanaged account's, an older one, or one the key lacks."""
        what, pick = act.get("version"), act.get("pick")
        records = self.vault.versions(self.key)
        latest = self.vault.latest(self.key)
        if what == "missing":
            return f"{random.Random(pick).getrandbits(128):032x}"
        if what == "target":
            target = expected_target(records, latest.version, self.emulator.clock.timestamp())
            return (target or latest).version
        if what == "unmanaged":
            encryption = self.emulator.arm.account(RESOURCE_GROUP, self.unmanaged)["properties"]["encryption"]
            return str(encryption["keyVaultProperties"]["keyVersion"])
        if what == "in_use":
            pool = sorted({r.version for r in self._account_versions() if r is not None})
        elif what == "older":
            pool = [r.version for r in records if r.version != latest.version]
        else:
            pool = []
        return pool[pick % len(pool)] if pool else latest.version

    def _do_get(self, act: Action) -> None:
        what = act.get("what")
        if what == "status":
            status, answer = self._http("fleet_status", "GET", "/api/status")
            expected = {200}
        else:
            known = sorted(self.http_accepted | self.events_accepted)
            request_id = str(uuid.uuid4())
            if what == "known" and known:
                request_id = known[act.get("pick") % len(known)]
            status, answer = self._http(
                "get_rotation", "GET", f"/api/rotations/{request_id}", route_params={"request_id": request_id}
            )
            expected = {200, 503} if request_id in known else {404, 503}
        if status not in expected:
            self.violation(0, f"GET {what} answered {status} {answer}; expected one of {sorted(expected)}")

    def _http(self, function: str, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        with self._lock:
            self.result.http += 1
        try:
            response = self.host.http(function, method, url, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- invariant 7
            self.violation(7, f"{method} {url} raised {type(exc).__name__}: {exc}")
            return 0, None
        answer = json.loads(response.get_body() or b"null")
        if response.status_code == 500:
            self.violation(7, f"{method} {url} answered 500 (an exception reached the trigger): {answer}")
        return response.status_code, answer

    def _do_sweep(self, act: Action) -> None:
        self._invoke("rotation_sweep", lambda: self.host.fire_timer("rotation_sweep"))

    def _invoke(self, name: str, call: Callable[[], None]) -> bool:
        """Run one trigger invocation; True when it returned, False when it asked for a redelivery."""
        try:
            call()
        except InvocationFailed as failure:
            if not redelivery(failure):
                self.violation(7, f"{name} failed: {failure}")
            return False
        except Exception as exc:  # noqa: BLE001 -- invariant 7
            self.violation(7, f"{name} raised {type(exc).__name__}: {exc}")
            return False
        return True

    def _do_pump(self, act: Action) -> None:
        self.pump(self.requests_queue, "rotation_worker", act.get("n"), batch=act.get("batch"))

    def _do_poison(self, act: Action) -> None:
        self.pump(self.poison_queue, "rotation_poison", act.get("n"), batch=1)

    def pump(self, queue: QueueClient, function: str, limit: int, *, batch: int = 4) -> int:
        """Deliver up to ``limit`` visible messages of ``queue`` to ``function``, as the host's queue extension does:
        delete on success; on failure make it visible again (at once: the visibility timeout, fast-forwarded), and
        after ``MAX_DEQUEUE`` deliveries move it to ``<queue>-poison``, unless the queue is itself a poison queue,
        which has none (QueueListenerFactory.CreatePoisonQueueReference): its message is delivered again."""
        delivered = 0
        while delivered < limit:
            messages = list(queue.receive_messages(max_messages=min(batch, limit - delivered), visibility_timeout=60))
            if not messages:
                break
            for message in messages:
                delivered += 1
                self._deliver(queue, function, message)
        with self._lock:
            self.result.deliveries += delivered
        return delivered

    def _deliver(self, queue: QueueClient, function: str, message: QueueMessage) -> None:
        ok = self._invoke(function, lambda: self.host.deliver_received(function, message))
        self._finish_message(queue, message, ok)

    def _finish_message(self, queue: QueueClient, message: QueueMessage, ok: bool) -> None:
        if ok:
            queue.delete_message(message)
        elif (message.dequeue_count or 0) >= MAX_DEQUEUE and not queue.queue_name.endswith("-poison"):
            self.host.queue(f"{queue.queue_name}-poison").send_message(message.content)
            queue.delete_message(message)
        else:
            queue.update_message(message, visibility_timeout=0)

    def _do_process(self, act: Action) -> None:
        message = self._unfinished_message(act.get("pick"))
        if message is None:  # nothing left to do: ask for a rotation over HTTP, as an operator would
            body = json.dumps({"key": self.key_url}).encode()
            status, answer = self._http("submit_rotation", "POST", "/api/rotations", body=body)
            if status == 202:
                with self._lock:
                    self.http_accepted.add(answer["request_id"])
            message = self._unfinished_message(act.get("pick"))
        if message is None:
            self.result.notes.append(f"{act}: no message to hand over")
            return
        worker = self.world.processes.take()
        self.world.processes.prewarm()  # the next process loads while this one works
        with self._lock:
            self.result.processes += 1
        offset = (self.emulator.clock.now() - datetime.now(UTC)).total_seconds()
        worker.start(
            {
                "endpoints": self.emulator.endpoints(),
                "storage": self.world.azurite.connection_string,
                "targets": self.targets,
                "settings": self.app_settings,
                "identity": PROCESS_IDENTITY,
                "ledger_table": self.ledger_table,
                "clock_offset": offset,
                "message": message.content,
                "stop_at": act.get("stop_at"),
            }
        )
        line = worker.wait_for({"stopped", "done", "raised"}, timeout=30)
        killed = worker.kill() and (line is None or line.get("event") == "stopped")
        worker.drain_lines()
        self.result.notes.append(f"{act}: the worker process {'was killed at' if killed else 'ended with'} {line}")
        if killed:
            with self._lock:
                self.result.kills += 1
        if line is None and killed:
            self.violation(0, f"{act}: the worker process reached no step boundary in 30 s: {worker.seen[-5:]}")
        elif line is None:
            self.violation(0, f"{act}: the worker process died: {worker.stderr_tail[-2000:]}")
        for seen in worker.seen:
            if seen.get("event") == "rotation.internal_error":
                self.violation(7, f"{act}: the worker process logged rotation.internal_error")
            if seen.get("event") == "raised" and seen.get("error") != "Redeliver":
                self.violation(7, f"{act}: rotation_worker raised {seen.get('error')}: {seen.get('detail')}")
        done = line is not None and line.get("event") == "done"
        # Killed or asked to redeliver: the message is seen again (its visibility timeout, fast-forwarded).
        self._finish_message(self.requests_queue, message, done)

    def _unfinished_message(self, pick: int) -> QueueMessage | None:
        """One visible message (chosen by ``pick``) of a request that is not finished yet, received for a worker
        process; the others are made visible again."""
        messages = list(self.requests_queue.receive_messages(max_messages=32, visibility_timeout=60))
        unfinished = []
        for message in messages:
            try:
                entry = self.ledger.get(RotationRequest.from_message(message.content).request_id)
            except (InvalidInput, StorageUnavailable):
                continue
            if entry is None or not entry.status.final:
                unfinished.append(message)
        chosen = unfinished[pick % len(unfinished)] if unfinished else None
        for message in messages:
            if message is not chosen:
                self.requests_queue.update_message(message, visibility_timeout=0)
        return chosen

    def _do_fault(self, act: Action) -> None:
        status = act.get("status")
        self.emulator.control.add_fault(
            FaultRule(
                operation=act.get("operation"),
                status=status or 503,
                drop=status == 0,
                retry_after=act.get("retry_after"),
                times=act.get("times"),
            )
        )
        self.result.faults += 1

    def _do_latency(self, act: Action) -> None:
        self.emulator.control.set_latency(act.get("operation"), act.get("seconds"))
        self.latency_ops.add(act.get("operation"))

    def _do_timeout(self, act: Action) -> None:
        """For ``window`` seconds, ``operation`` answers after the client's read timeout. The client gives up (a
        ``ServiceResponseError``); the emulator carries the request out anyway, late, as a slow service would."""
        operation, control = act.get("operation"), self.emulator.control
        control.set_latency(operation, TIMED_OUT)
        self.latency_ops.add(operation)
        timer = threading.Timer(act.get("window"), control.set_latency, args=(operation, 0))
        timer.daemon = True
        timer.start()
        with self._lock:
            self.timeouts.append(timer)
            self.late_until = max(self.late_until, time.monotonic() + act.get("window") + TIMED_OUT + 0.1)

    def _wait_for_late_requests(self) -> None:
        """Let every request a client gave up on reach the emulator's handler before anything is judged."""
        for timer in self.timeouts:
            timer.cancel()
        for operation in self.latency_ops:
            self.emulator.control.set_latency(operation, 0)
        time.sleep(max(0.0, self.late_until - time.monotonic()))

    def _do_lro(self, act: Action) -> None:
        self.emulator.arm.configure(**dict(act.params))

    def _do_blips(self, act: Action) -> None:
        self.transport.rate = act.get("rate")

    def _do_clear(self, act: Action) -> None:
        self.emulator.control.clear_faults()

    def _do_portal(self, act: Action) -> None:
        now = self.emulator.clock.now()
        kind = act.get("version")
        params = {"fresh": {"exp": now + 100 * DAY}, "due": {"exp": now + 10 * DAY}}.get(kind) or _flawed(kind, now)
        record = self.vault.create_key(self.key, **params)
        then = {r.version: r.enabled for r in self.vault.versions(self.key)}
        with self._lock:
            self.foreign.append((record.version, record.created, then))

    def _do_drift(self, act: Action) -> None:
        name = self.accounts[act.get("pick") % len(self.accounts)]
        current = self.emulator.arm.account(RESOURCE_GROUP, name)["properties"]["encryption"]["keyVaultProperties"]
        now = self.emulator.clock.timestamp()
        older = [
            r.version
            for r in self.vault.versions(self.key)
            if r.version != current["keyVersion"] and unusable(r, now) is None
        ]
        if not older:
            return
        version = older[act.get("pick") % len(older)]
        update = Account(
            properties=AccountProperties(
                encryption=Encryption(
                    key_source="Microsoft.KeyVault",
                    key_vault_properties=KeyVaultProperties(
                        key_name=self.key, key_version=version, key_vault_uri=self.vault.url
                    ),
                )
            )
        )
        try:
            self.world.harness_arm.accounts.begin_update(RESOURCE_GROUP, name, update).result()
        except (HttpResponseError, AzureError) as exc:
            self.result.notes.append(f"drift of {name} was refused: {type(exc).__name__}")

    def _do_age(self, act: Action) -> None:
        """Two days pass within the due period, then a sweep (a retiring schedule's soak of one day elapses): only
        while no version an account needs, nor the newest, comes due or expires in them."""
        now = self.emulator.clock.timestamp()
        later = now + 2 * 86400
        records = [self.vault.latest(self.key), *(r for r in self._account_versions() if r is not None)]
        if any(is_due(r, later) or (r.exp is not None and r.exp <= later) for r in records):
            return
        self.emulator.clock.advance(timedelta(days=2))
        self._do_sweep(act)

    def _do_advance(self, act: Action) -> None:
        """The next due period: settle, check convergence, then move the clock to 25 days before the target version
        expires (5 days past its renewal time), so Key Vault sends KeyNearExpiry and the target must be replaced."""
        self.settle()
        self._observe("before advancing the clock")
        target = self._check_converged("before advancing the clock")
        self._check_finished("before advancing the clock")
        if target is None:
            return
        now = self.emulator.clock.timestamp()
        moment = target.exp - 25 * 86400 if target.exp is not None else target.created + 91 * 86400
        for record in self._account_versions():
            if record is not None and record.exp is not None:
                moment = min(moment, record.exp - 86400)
        if moment <= now:
            return
        self.emulator.clock.advance(timedelta(seconds=moment - now))
        self.due_periods += 1
        self.result.advances += 1
        # Restore what settling cleared: the schedule's chaos goes on with the setup's blip rate.
        self.transport.rate = self.setup.blip_rate

    # -- settling ---------------------------------------------------------------------------------------------------
    def settle(self) -> None:
        """Clear the faults, then let the app finish everything it accepted: Event Grid redelivers what failed, the
        queues are pumped, the poison handler runs, and a final sweep and pump repeat until nothing is left."""
        self.transport.rate = 0.0
        self.emulator.control.clear_faults()
        self._wait_for_late_requests()
        self.emulator.arm.configure(lro_polls=1, lro_seconds=0, linger_accepted_reads=0, validation="sync")
        pending, self.pending_events = self.pending_events, []
        for payload, via in pending:
            for _ in range(3):
                if self._deliver_event(payload, via):
                    break
        for round_ in range(SETTLE_ROUNDS):
            delivered = self._pump_all(self.requests_queue, "rotation_worker")
            delivered += self._pump_all(self.poison_queue, "rotation_poison")
            if round_ > 0 and delivered == 0:
                return
            self._invoke("rotation_sweep", lambda: self.host.fire_timer("rotation_sweep"))
        self.violation(2, f"the schedule did not settle within {SETTLE_ROUNDS} rounds of sweep and pump")

    def _pump_all(self, queue: QueueClient, function: str) -> int:
        total = 0
        while total < PUMP_LIMIT:
            self._break_lease(None)
            delivered = self.pump(queue, function, 32, batch=32)
            if delivered == 0:
                return total
            total += delivered
        self.violation(2, f"{function} still had messages after {PUMP_LIMIT} deliveries while settling")
        return total

    def _break_lease(self, cause: str | None) -> None:
        """Break the key's lease when it is held and no worker is running: the lease's expiry, fast-forwarded.

        ``cause`` names the reason it may be held (a killed process); while settling (None), a lease may be left only
        by a release that failed (``rotation.lock_release_failed``), which the app logs.
        """
        blob = self.lock_blob
        try:
            if blob.get_blob_properties().lease.state != "leased":
                return
        except AzureError:
            return
        if cause is None:
            self._collect_records()
            if self.release_failures == 0:
                self.violation(0, "a worker left its key's lease held after it returned, with no failed release logged")
            self.release_failures = max(0, self.release_failures - 1)
        BlobLeaseClient(blob).break_lease(lease_break_period=0)
        with self._lock:
            self.result.leases_broken += 1

    # -- observing --------------------------------------------------------------------------------------------------
    def _sample(self) -> None:
        while not self._stop_sampling.wait(0.01):
            self._observe("while running")

    def _account_versions(self) -> list[Any]:
        """The version record each target account points at now (None for a version the key lacks)."""
        encryption = [
            self.emulator.arm.account(RESOURCE_GROUP, name)["properties"].get("encryption") or {}
            for name in self.accounts
        ]
        records = {r.version: r for r in self.vault.versions(self.key)}  # read after the accounts: versions only grow
        return [records.get((e.get("keyVaultProperties") or {}).get("keyVersion")) for e in encryption]

    def _observe(self, where: str) -> None:
        """Invariant 3, and that an account is never moved off its key (part of 4), at this instant.

        A version is judged enabled or not as it was read before the accounts (break-glass disables a version
        milliseconds after its accounts left it: a version read disabled before an account was read on it was
        disabled while the account used it), and by everything else as read after them (versions only grow)."""
        enabled = {r.version: r.enabled for r in self.vault.versions(self.key)}
        accounts = [self.emulator.arm.account(RESOURCE_GROUP, name) for name in self.accounts]
        unmanaged = self.emulator.arm.account(RESOURCE_GROUP, self.unmanaged)
        records = {
            r.version: replace(r, enabled=enabled.get(r.version, r.enabled)) for r in self.vault.versions(self.key)
        }
        now = self.emulator.clock.timestamp()
        # The unmanaged account is never the app's to move: it may end on an expired version, never a disabled one.
        properties = (unmanaged["properties"].get("encryption") or {}).get("keyVaultProperties") or {}
        record = records.get(str(properties.get("keyVersion")))
        if record is not None and not record.enabled:
            self.violation(
                3, f"{where}: the unmanaged account {self.unmanaged} is on a disabled version {record.version}"
            )
        for name, account in zip(self.accounts, accounts, strict=True):
            encryption = account["properties"].get("encryption") or {}
            properties = encryption.get("keyVaultProperties") or {}
            if (
                encryption.get("keySource") != "Microsoft.KeyVault"
                or str(properties.get("keyName", "")).lower() != self.key.lower()
                or str(properties.get("keyVaultUri", "")).rstrip("/").lower() != self.vault.url.lower()
            ):
                self.violation(4, f"{where}: account {name} was moved off the target key: {encryption}")
                continue
            version = properties.get("keyVersion")
            problem = unusable(records.get(version), now)
            if problem is not None:
                state = account["properties"].get("provisioningState")
                self.violation(3, f"{where}: account {name} is on {problem} ({version}, {state})")

    def _collect_records(self) -> None:
        for record in self.world.records.take():
            message = record.getMessage()
            if message.startswith("rotation.internal_error"):
                self.violation(7, f"the app logged {message[:500]}")
            elif message.startswith("rotation.lock_release_failed"):
                self.release_failures += 1

    # -- the invariants after settling ------------------------------------------------------------------------------
    def check(self) -> None:
        self._check_converged("after settling")
        self._check_finished("after settling")
        records = self.vault.versions(self.key)
        created = [r for r in records if TAG_REQUEST_ID in r.tags]
        rows = self.ledger.list_requests(self.key_ref, limit=10_000)
        glass = [e for e in rows if e.compromised_version]
        named = {e.compromised_version.lower() for e in glass}
        disabled = {r.version.lower() for r in records if not r.enabled} & self._disabled_by_app()
        self.result.versions_created = len(created)
        self.result.versions_retired = len(disabled - named)
        self.result.break_glass_requests = len(glass)
        self.result.break_glass_disabled = len(disabled & named)
        self.result.break_glass_in_use = len(
            {e.compromised_version.lower() for e in glass if e.reason == IN_USE} - disabled
        )
        # 1. one version per due period, one more per accepted forced request (a break-glass request is forced)
        forced = {e.request_id for e in rows if e.force or e.compromised_version}
        periods = self.due_periods + self._foreign_due_periods(records)
        if len(created) > periods + len(forced):
            listed = ", ".join(f"{r.version} ({r.tags.get(TAG_TRIGGER)} {r.tags.get(TAG_REQUEST_ID)})" for r in created)
            self.violation(
                1,
                f"{len(created)} versions created for {periods} due period(s) and {len(forced)} forced or break-glass "
                f"request(s): {listed}",
            )
        for entry in glass:  # and a break-glass request, like any forced one, creates at most one
            mine = [r.version for r in created if r.tags.get(TAG_REQUEST_ID) == entry.request_id]
            if len(mine) > 1:
                self.violation(1, f"break-glass request {entry.request_id} created {len(mine)} versions: {mine}")
        self._check_break_glass(glass, records)
        # 6. our own KeyNewVersionCreated never creates
        for record in created:
            if record.tags.get(TAG_TRIGGER) == "KeyNewVersionCreated":
                self.violation(6, f"version {record.version} was created for a KeyNewVersionCreated request")
        self._check_writes(named)
        self._check_bystander()

    def _foreign_due_periods(self, records: list[Any]) -> int:
        """Versions someone else added that opened a due period: one that cannot serve as the target, added right
        after a version that was usable and not due (the key was at rest, and now needs a new version). Each version
        is judged as it was then: enabled or not as it was just after the version was added (retirement or break-glass
        may have disabled it since)."""
        order = [r.version for r in records]
        by_version = {r.version: r for r in records}
        periods = 0
        for version, at, then in self.foreign:
            record = replace(by_version[version], enabled=then[version])
            index = order.index(version)
            if index == 0 or (unusable(record, at) is None and not is_due(record, at)):
                continue
            before = by_version[order[index - 1]]
            before = replace(before, enabled=then.get(before.version, before.enabled))
            if unusable(before, at) is None and not is_due(before, at):
                periods += 1
        return periods

    def _disabled_by_app(self) -> set[str]:
        """The versions of the schedule's key (in lower case) that the app sent a PATCH for: retirement's and
        break-glass's, which disable it."""
        prefix = f"/keys/{self.key.lower()}/"
        return {
            call.path.rstrip("/").lower()[len(prefix) :]
            for call in self.emulator.control.calls("keyvault.update_key")
            if call.identity in (APP_IDENTITY, PROCESS_IDENTITY) and call.path.lower().startswith(prefix)
        }

    def _check_break_glass(self, glass: list[LedgerEntry], records: list[Any]) -> None:
        """Invariant 3 on the break-glass rows: one that reports its version disabled names a version the vault has
        disabled and no account left on it; and none accepts a breakage nobody asked for (the schedules never do)."""
        by_version = {r.version.lower(): r for r in records}
        for entry in glass:
            radius = dict(entry.blast_radius)
            self.result.notes.append(
                f"break-glass request {entry.request_id} for {entry.compromised_version}: {entry.status.value} "
                f"{entry.reason}, version {radius.get('version_state')}, moved {len(radius.get('moved') or [])}, "
                f"left {len(radius.get('left') or [])}"
            )
            if entry.accept_breakage:
                self.violation(3, f"break-glass request {entry.request_id} accepts breakage nobody asked for")
            if radius.get("version_state") != "disabled":
                continue
            version = str(radius.get("compromised_version") or "").lower()
            record = by_version.get(version)
            if version != entry.compromised_version.lower() or record is None or record.enabled:
                state = "missing" if record is None else "enabled" if record.enabled else "disabled"
                self.violation(
                    3,
                    f"break-glass request {entry.request_id} for {entry.compromised_version} reports version "
                    f"{version or None} disabled; the vault has it {state}",
                )
            if radius.get("left"):
                self.violation(
                    3,
                    f"break-glass request {entry.request_id} disabled {entry.compromised_version} with accounts left "
                    f"on it: {radius.get('left')}",
                )

    def _check_converged(self, where: str) -> Any | None:
        """Invariant 2: every account on the target version and Succeeded; the target, or None."""
        records = self.vault.versions(self.key)
        now = self.emulator.clock.timestamp()
        target = expected_target(records, self.vault.latest(self.key).version, now)
        if target is None:
            self.violation(
                2, f"{where}: the key has no usable version that is not due: {[_brief(r, now) for r in records]}"
            )
            return None
        for name in self.accounts:
            properties = self.emulator.arm.account(RESOURCE_GROUP, name)["properties"]
            version = properties["encryption"]["keyVaultProperties"]["keyVersion"]
            state = properties.get("provisioningState")
            if (version, state) != (target.version, "Succeeded"):
                self.violation(
                    2, f"{where}: account {name} reports {version} {state}, not the target {target.version} Succeeded"
                )
        return target

    def _check_finished(self, where: str) -> None:
        """Invariant 5: every ledger row, every 202 and every recorded event ends succeeded, failed or skipped."""
        rows = {e.request_id: e for e in self.ledger.list_requests(self.key_ref, limit=10_000)}
        for entry in rows.values():
            if not entry.status.final:
                self.violation(5, f"{where}: request {entry.request_id} ({entry.trigger}) is still {entry.status}")
        for kind, ids in (("HTTP 202", self.http_accepted), ("recorded event", self.events_accepted)):
            for request_id in sorted(ids):
                entry = rows.get(request_id) or self.ledger.get(request_id)
                if entry is None:
                    self.violation(5, f"{where}: the {kind} request {request_id} has no ledger row")
                elif not entry.status.final:
                    self.violation(5, f"{where}: the {kind} request {request_id} is still {entry.status}")

    def _check_writes(self, compromised: set[str]) -> None:
        """Invariant 4: the app's writes (in process or in a worker process) reach only the key and its accounts;
        Key Vault's PATCH of a version (disabling it) only by retirement, or of a version a break-glass request named
        (``compromised``, in lower case)."""
        allowed_accounts = {account_id.lower() for account_id in self.account_ids}
        for call in self.emulator.control.calls():
            if call.identity not in (APP_IDENTITY, PROCESS_IDENTITY) or call.method not in WRITE_METHODS:
                continue
            path = call.path.rstrip("/").lower()
            if call.service == "keyvault":
                ok = call.operation == "keyvault.create_key" and path == f"/keys/{self.key.lower()}/create"
                # Retirement disables an old version of the schedule's key, break-glass the version it was named, and
                # nothing else (invariant 3 checks that no account was ever on a disabled version).
                prefix = f"/keys/{self.key.lower()}/"
                disables = call.operation == "keyvault.update_key" and path.startswith(prefix)
                ok = ok or (disables and (self.setup.retirement or path[len(prefix) :] in compromised))
            elif call.service == "arm":
                # Resource Graph's query is a POST that only reads (discovery, on every sweep).
                ok = call.operation == "graph.resources" or (
                    call.operation == "arm.update_account" and path in allowed_accounts
                )
            else:
                ok = call.service == "eventgrid"  # the outcome events' topic
            if not ok:
                self.violation(4, f"{call.identity} wrote {call.method} {call.path} ({call.operation}, {call.status})")

    def _check_bystander(self) -> None:
        versions = [r.version for r in self.vault.versions(BYSTANDER_KEY)]
        if versions != [self.world.bystander_version]:
            self.violation(4, f"the bystander key has versions {versions}")
        properties = self.emulator.arm.account(RESOURCE_GROUP, BYSTANDER_ACCOUNT)["properties"]
        version = properties["encryption"]["keyVaultProperties"]["keyVersion"]
        if (version, properties.get("provisioningState")) != (self.world.bystander_version, "Succeeded"):
            self.violation(4, f"the bystander account reports {version} {properties.get('provisioningState')}")


def _code(answer: Any) -> str | None:
    """The error code of an error answer (``{"error": {"code", "message"}}``), or None."""
    error = answer.get("error") if isinstance(answer, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _flawed(kind: str, now: datetime) -> dict[str, Any]:
    """A version no account may use: disabled, not yet valid, expired, or RSA 3072."""
    return {
        "disabled": {"enabled": False, "exp": now + 100 * DAY},
        "not_yet_valid": {"nbf": now + DAY, "exp": now + 100 * DAY},
        "expired": {"exp": now - DAY},
        "rsa3072": {"size": 3072, "exp": now + 100 * DAY},
    }[kind]


def _brief(record: Any, now: int) -> str:
    flaw = unusable(record, now) or ("due" if is_due(record, now) else "usable")
    return f"{record.version[:8]} {flaw}"


def run_schedules(world: World, schedules: Iterable[Schedule]) -> Iterable[tuple[Schedule, RunResult]]:
    """Each schedule's result, in order; the next worker process is started while earlier schedules run."""
    upcoming = list(schedules)
    for index, schedule in enumerate(upcoming):
        if any(s.uses_processes for s in upcoming[index : index + 3]):
            world.processes.prewarm()
        yield schedule, Run(world, schedule).run()
