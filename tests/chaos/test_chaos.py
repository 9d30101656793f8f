"""The chaos suite: randomized schedules against the Functions app, each checked against the service's invariants.

Each schedule (``schedule.py``) takes a fresh key with fresh accounts on the session's one emulator and Azurite (half
of them rolled out in stages: a canary, then waves of one or two; a third retiring unused old versions after a day),
and throws at it duplicate and reordered Key Vault events, sweeps, HTTP requests, workers racing on threads, worker
processes killed at step boundaries, clock advances into the next due period (and two days within one), versions
added by someone else, break-glass for a compromised version (confirmed at once, twice, later or never), and
faults: 409, 429 (with and without Retry-After), 500 and 503 and dropped connections from Key Vault and ARM, latency,
calls that time out (answered after the client's read timeout, and carried out anyway), slow and lingering ARM
operations, and storage blips. Then it settles (faults cleared; queues pumped; poison handler; a final sweep and pump)
and ``harness.Run.check`` checks:

1. at most one new version per key per due period (versions the app created carry ``rotation-request-id``), plus one
   per accepted forced or break-glass request;
2. every target account ends on the target version (the newest usable version that is not due) and Succeeded;
3. never an account on a disabled, expired, not-yet-valid or non-RSA-2048 version, nor the unmanaged account on a
   disabled one, at any observation point (after every step, and every few milliseconds by a sampler thread); and a
   break-glass row that reports its version disabled names a version the vault has disabled, with no account left;
4. nothing outside the targets written: in the emulator's call log the app wrote only its key's versions and its
   accounts (Resource Graph's query is a POST, but a read), and disabled only versions retirement may disable or a
   break-glass request named; the bystander key and account stay as they were; no account moved off its key;
5. every accepted request (ledger rows, HTTP 202s, break-glass confirmations, recorded events) ends succeeded, failed
   or skipped;
6. no version the app created carries ``rotation-trigger: KeyNewVersionCreated``;
7. no exception leaves a trigger except ``rotation.app.Redeliver`` (nor does one reach a trigger's edge, which logs
   ``rotation.internal_error``; nor is an HTTP answer a 500).

and the harness's own checks (reported as "invariant 0"): no step hangs, no HTTP answer falls outside the documented
ones (a break-glass plan names the unmanaged account on its version; a repeated confirmation is the same request), no
worker that returned leaves its key's lease held (unless it logged a failed release).

Profiles: ``CHAOS_SCHEDULES`` schedules, seeds ``CHAOS_FIRST_SEED`` (0) on: 25 by default, which ``make test`` runs;
``make chaos`` runs 1,000. ``CHAOS_SEED=<n>`` replays one seed, ``CHAOS_VERBOSE=1`` prints every schedule's actions
and step times, ``CHAOS_KIND=<kind>`` (for example ``break_glass``) runs only the schedules with an action of that
kind (``CHAOS_SCHEDULES`` of them). A failing schedule prints its seed, its actions and its violations; the counters
are printed at the end.
"""

from __future__ import annotations

import itertools
import os

from tests.chaos.harness import Counters, World, run_schedules
from tests.chaos.schedule import Schedule, generate

SHORT_PROFILE = 25


def _schedules() -> list[Schedule]:
    if os.environ.get("CHAOS_SEED", "").strip():
        return [generate(int(os.environ["CHAOS_SEED"]))]
    count = int(os.environ.get("CHAOS_SCHEDULES", "").strip() or SHORT_PROFILE)
    first = int(os.environ.get("CHAOS_FIRST_SEED", "").strip() or 0)
    kind = os.environ.get("CHAOS_KIND", "").strip()
    if not kind:
        return [generate(seed) for seed in range(first, first + count)]
    # Only the schedules (from the first seed on) with at least one action of that kind.
    chosen: list[Schedule] = []
    for seed in itertools.count(first):
        schedule = generate(seed)
        if any(a.kind == kind for step in schedule.steps for a in step.actions):
            chosen.append(schedule)
            if len(chosen) == count:
                return chosen
        if seed - first > 1000 * count:
            raise ValueError(f"CHAOS_KIND={kind!r}: no schedule has an action of that kind")
    return chosen


def test_randomized_schedules_keep_every_invariant(chaos_world: World) -> None:
    counters = Counters()
    failures: list[str] = []
    schedules = _schedules()
    verbose = bool(os.environ.get("CHAOS_VERBOSE"))
    for schedule, result in run_schedules(chaos_world, schedules):
        counters.add(result)
        print(f"chaos seed {schedule.seed}: {result.seconds:.2f} s, {len(result.violations)} violations", flush=True)
        if verbose:
            print(schedule.describe(), *(f"  - {note}" for note in result.notes), sep="\n", flush=True)
        if result.violations:
            report = "\n".join(
                [
                    f"chaos seed {schedule.seed} failed; replay with CHAOS_SEED={schedule.seed}",
                    schedule.describe(),
                    *(f"  ! {v}" for v in result.violations),
                ]
            )
            print(report, flush=True)
            failures.append(report)
    print(counters.summary(), flush=True)
    if len(schedules) >= SHORT_PROFILE:  # every profile kills worker processes at a step boundary (seed 1 of each 25)
        assert counters.kills > 0, "no worker process was killed at a step boundary"
    assert counters.violations == 0, f"{counters.violations} invariant violations:\n" + "\n\n".join(failures)
