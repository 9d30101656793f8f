"""Schedules: what the chaos harness does to one fresh key and its accounts, generated from a seed alone.

A schedule is a ``Setup`` (the key's starting state and the app's settings) and a list of steps. A step is one action,
or several run at once on threads (printed ``[a | b | c]``). Everything random is drawn here from
``random.Random(seed)`` before anything runs, so ``CHAOS_SEED=<n>`` replays the same actions; what a step picks at run
time (which of the events Key Vault has emitted so far, which message a process gets) comes from the action's own
``pick`` number. Thread and process timing is not replayed exactly: a failure names its seed and actions, and a
replay of the seed runs the same actions again under new timing.

Action vocabulary (``Action.kind``)::

    event     Key Vault events for the key (or the bystander key) as emitted so far, picked, duplicated and shuffled,
              delivered to on_key_event (webhook, either schema) or on_queued_key_event (storage queue)
    post      POST /api/rotations: force, dry_run, an Idempotency-Key from a small pool (repeats and reuse), or the
              bystander key (403)
    get       GET /api/rotations/{id} (known or unknown id) or GET /api/status
    sweep     the timer trigger
    pump      the queue trigger on rotation-requests for up to n messages (redelivery and poison as the host does)
    poison    the poison trigger on rotation-requests-poison for up to n messages
    process   a worker in its own OS process gets one queued message and is SIGKILLed at a step boundary
    fault     an emulator fault rule: 409, 429 with or without Retry-After, 500, 503, or a dropped connection, on a
              Key Vault or ARM operation, once, a few times or until cleared
    latency   an emulator latency on one operation
    timeout   for a moment, one operation answers later than the client's read timeout (the client gives up; the
              emulator still carries the request out, late), while a worker runs in the same step
    lro       ARM's long-running-operation settings: polls, seconds, lingering "Accepted" reads, sync/async validation
    blips     the storage transport's blip rate (ServiceRequestError before the request is sent)
    clear     clear every fault rule
    portal    someone else adds a version: fresh, due, disabled, not yet valid, expired, or RSA 3072
    drift     someone points a target account back at an older usable version
    advance   settle, check, then move the clock until the target version is due (the next due period)
    break_glass
              POST /api/rotations with a compromised_version: the current target, the newest version, one a target
              account or the unmanaged account is on, an older one, or (rarely) one the key lacks (404), sometimes
              spelled in upper case; then mostly its confirmation at once (sometimes twice: the same request), or
              later (a ``confirm`` step), or never; sometimes with a fault on Key Vault's PATCH that disables it.
              Never ``accept_breakage``: an account left on a disabled version would break invariant 3 on purpose
    confirm   the confirmation of an earlier break_glass plan, one to three steps later: the plan may have changed
              meanwhile, or the clock moved past its 5 minutes (409 ConfirmationRefused, then the fresh plan's)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

STOP_POINTS = (
    "rotation.lock_acquired",
    "rotation.ledger_updated",
    "rotation.planned",
    "rotation.version_created",
    "rotation.account_updated",
    "rotation.completed",
    None,
)
FAULT_OPERATIONS = (
    "keyvault.create_key",
    "keyvault.list_versions",
    "keyvault.get_key",
    "arm.get_account",
    "arm.update_account",
    "arm.operation_status",
)
TIMEOUT_OPERATIONS = ("keyvault.create_key", "keyvault.list_versions", "arm.get_account", "arm.update_account")
# A fault that never stops is only put on operations whose failure ends a delivery quickly (no verify wait).
ALWAYS_OK = ("keyvault.create_key", "keyvault.list_versions", "arm.update_account")
FAULT_STATUSES = (409, 429, 429, 500, 503, 0)  # 0: drop the connection
PORTAL_KINDS = ("fresh", "fresh", "due", "disabled", "not_yet_valid", "expired", "rsa3072")  # 3072 bits: 0.25 s to make
CONCURRENT_KINDS = ("event", "post", "get", "sweep", "pump", "pump", "pump", "portal")
# Which version a break_glass step names (resolved when it runs, harness.Run._compromised), and how it confirms.
COMPROMISED = ("target", "newest", "in_use", "older", "unmanaged", "missing")
COMPROMISED_WEIGHTS = (35, 15, 15, 12, 18, 5)
CONFIRM_MODES = ("now", "twice", "later", "never")
CONFIRM_WEIGHTS = (62, 13, 17, 8)
DISABLE_FAULTS = (503, 500, 429, 0)  # on keyvault.update_key, the PATCH that disables the compromised version


@dataclass(frozen=True)
class Action:
    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return f"{self.kind}({inner})"


def action(kind: str, **params: Any) -> Action:
    return Action(kind, tuple(params.items()))


@dataclass(frozen=True)
class Step:
    actions: tuple[Action, ...]

    @property
    def concurrent(self) -> bool:
        return len(self.actions) > 1

    def __str__(self) -> str:
        return " | ".join(map(str, self.actions)).join("[]") if self.concurrent else str(self.actions[0])


@dataclass(frozen=True)
class Setup:
    accounts: int  # target accounts on the key
    initial: str  # due | fresh | bad_latest | drifted
    bad_kind: str  # the latest version's flaw when initial is bad_latest
    concurrency: int  # ROTATION_CONCURRENCY
    cooldown: str  # ROTATION_FORCE_COOLDOWN
    validation: str  # ARM's check of a customer-managed key: sync (400) or async (a Failed operation)
    blip_rate: float  # the storage transport's starting blip rate
    storage_retries: int  # the storage clients' retry_total
    processes: bool  # whether the schedule runs worker processes
    wave_size: int | None  # the target's staged rollout (a canary, then waves of this size); None: all at once
    retirement: bool  # ROTATION_RETIREMENT=all with a one-day soak: the sweep disables old versions nobody uses


@dataclass(frozen=True)
class Schedule:
    seed: int
    setup: Setup
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def uses_processes(self) -> bool:
        return any(a.kind == "process" for s in self.steps for a in s.actions)

    def describe(self) -> str:
        lines = [f"seed {self.seed}: {self.setup}"]
        lines += [f"  {n:2d}. {step}" for n, step in enumerate(self.steps, 1)]
        return "\n".join(lines)


def generate(seed: int) -> Schedule:
    """The schedule of ``seed``: deterministic, cheap, and free of I/O."""
    rng = random.Random(seed)
    setup = Setup(
        accounts=rng.randint(2, 4),
        initial=rng.choices(("due", "fresh", "bad_latest", "drifted"), weights=(60, 12, 12, 16))[0],
        bad_kind=rng.choice(("disabled", "not_yet_valid", "expired", "rsa3072")),
        concurrency=rng.choice((1, 2, 8)),
        cooldown=rng.choice(("PT1H", "PT1S")),
        validation=rng.choice(("sync", "sync", "async")),
        blip_rate=rng.choice((0.0, 0.0, 0.02, 0.08)),
        storage_retries=rng.choice((0, 1)),
        # About 8% of schedules run worker processes (a spawn costs about a second): a seeded 5%, and every 25th, so
        # the short profile has at least one.
        processes=rng.random() < 0.05 or seed % 25 == 1,
        wave_size=rng.choice((None, None, 1, 2)),
        retirement=rng.random() < 0.3,
    )
    steps: list[Step] = []
    advanced = False
    confirms: list[tuple[int, Action]] = []  # (position, confirm action) of the break_glass steps confirmed later
    for _ in range(rng.randint(4, 10)):
        if rng.random() < 0.3:
            steps.append(
                Step(tuple(_random_action(rng, rng.choice(CONCURRENT_KINDS)) for _ in range(rng.randint(2, 3))))
            )
            continue
        kind = rng.choices(
            (
                "event",
                "post",
                "get",
                "sweep",
                "pump",
                "poison",
                "fault",
                "latency",
                "timeout",
                "lro",
                "blips",
                "clear",
                "portal",
                "drift",
                "advance",
                "age",
                "break_glass",
            ),
            weights=(18, 12, 3, 9, 20, 3, 12, 3, 2, 4, 3, 3, 4, 3, 2, 3, 3),
        )[0]
        if kind == "advance":
            if advanced:
                kind = "sweep"
            advanced = True
        if kind == "timeout":  # the moment of slowness meets work that makes the call: a worker racing it
            steps.append(Step((_random_action(rng, kind), action("pump", n=rng.randint(1, 3), batch=1))))
            continue
        step = Step((_random_action(rng, kind),))
        steps.append(step)
        if kind == "break_glass" and step.actions[0].get("confirm") == "later":
            confirms.append((len(steps) + rng.randint(1, 3), action("confirm", plan=step.actions[0].get("pick"))))
    for position, confirm in sorted(confirms, key=lambda c: c[0], reverse=True):
        steps.insert(min(position, len(steps)), Step((confirm,)))
    if seed % 25 == 13 and not any(a.kind == "break_glass" for step in steps for a in step.actions):
        # Every 25th schedule breaks glass, so the short profile does too (a seeded one in about 7 does anyway).
        glass = _random_action(rng, "break_glass")
        position = rng.randint(0, len(steps))
        steps.insert(position, Step((glass,)))
        if glass.get("confirm") == "later":
            steps.insert(
                min(position + rng.randint(2, 4), len(steps)), Step((action("confirm", plan=glass.get("pick")),))
            )
    if setup.processes:
        for _ in range(rng.choice((1, 1, 2))):
            process = _random_action(rng, "process")
            position = rng.randint(0, len(steps) // 2)  # early, while there is work to interrupt
            if rng.random() < 0.4:  # racing threads in the same step
                companions = tuple(_random_action(rng, "pump") for _ in range(rng.randint(1, 2)))
                steps.insert(position, Step((process, *companions)))
            else:
                steps.insert(position, Step((process,)))
    return Schedule(seed, setup, tuple(steps))


def _random_action(rng: random.Random, kind: str) -> Action:
    pick = rng.randrange(1 << 30)
    if kind == "event":
        return action(
            "event",
            what=rng.choices(("any", "near_expiry", "new_version", "bystander"), weights=(60, 15, 20, 5))[0],
            count=rng.randint(1, 2),
            copies=rng.choice((1, 1, 2, 3)),
            schema=rng.choice(("EventGridSchema", "CloudEventSchemaV1_0")),
            via=rng.choice(("webhook", "webhook", "queue")),
            pick=pick,
        )
    if kind == "post":
        return action(
            "post",
            force=rng.random() < 0.3,
            dry_run=rng.random() < 0.15,
            idempotency=rng.choice((None, None, "a", "b")),
            bystander=rng.random() < 0.05,
        )
    if kind == "get":
        return action("get", what=rng.choice(("known", "unknown", "status")), pick=pick)
    if kind in ("sweep", "clear", "advance", "age"):
        return action(kind)
    if kind == "pump":
        return action("pump", n=rng.randint(1, 6), batch=rng.randint(1, 4))
    if kind == "poison":
        return action("poison", n=rng.randint(1, 3))
    if kind == "process":
        return action("process", stop_at=rng.choice(STOP_POINTS), pick=pick)
    if kind == "fault":
        operation = rng.choice(FAULT_OPERATIONS)
        status = rng.choice(FAULT_STATUSES)
        if status == 409 and operation.startswith("keyvault."):
            status = rng.choice((409, 503))  # Key Vault never answers 409 itself; a fault rule still can
        retry_after = rng.choice((None, 0.01, 0.02)) if status in (429, 503) else None
        times: int | None = rng.choice((1, 1, 2, 3))
        if operation in ALWAYS_OK and rng.random() < 0.15:
            times = None
        return action("fault", operation=operation, status=status, retry_after=retry_after, times=times)
    if kind == "latency":
        return action(
            "latency",
            operation=rng.choice((*FAULT_OPERATIONS, "arm.operation_result", "keyvault.list_versions")),
            seconds=rng.choice((0.01, 0.03, 0.1)),
        )
    if kind == "timeout":
        return action("timeout", operation=rng.choice(TIMEOUT_OPERATIONS), window=rng.choice((0.2, 0.4)))
    if kind == "lro":
        return action(
            "lro",
            lro_polls=rng.randint(0, 3),
            lro_seconds=rng.choice((0, 0, 0.1, 0.3)),
            linger_accepted_reads=rng.randint(0, 3),
            validation=rng.choice(("sync", "async")),
        )
    if kind == "blips":
        return action("blips", rate=rng.choice((0.0, 0.05, 0.15)))
    if kind == "portal":
        return action("portal", version=rng.choice(PORTAL_KINDS))
    if kind == "drift":
        return action("drift", pick=pick)
    if kind == "break_glass":
        fault = rng.choice(DISABLE_FAULTS) if rng.random() < 0.25 else None
        return action(
            "break_glass",
            version=rng.choices(COMPROMISED, weights=COMPROMISED_WEIGHTS)[0],
            upper=rng.random() < 0.1,
            confirm=rng.choices(CONFIRM_MODES, weights=CONFIRM_WEIGHTS)[0],
            disable_fault=fault,
            # 4 failures outlast one delivery's retries: the request fails (retryable) and its redelivery disables it
            times=rng.choice((1, 2, 4)) if fault is not None else None,
            acted=fault is not None and rng.random() < 0.4,  # the PATCH takes effect, and its answer is lost
            pick=pick,  # also names the plan for a later confirm step
        )
    raise ValueError(f"unknown action kind {kind!r}")
