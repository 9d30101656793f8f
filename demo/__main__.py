"""``make demo``: the rotation service end to end on the local emulator and a real Azurite, in under a minute.

No Azure account and no Functions host: the demo drives the app's own trigger functions (``function_app.py``) through
``emulator.functions_host``, a stand-in for the host that follows host.json and hands every invocation, in wire format,
to the real Python worker (``emulator.functions_worker``), which decodes it and runs the function as in Azure.

The fleet spans two subscriptions: three accounts on the key in the first, one in the second, and one more in the
second that ROTATION_TARGETS does not list, which ``discover`` finds and every sweep reports as drift, untouched. It
goes on to a staged rollout halted by its canary and resumed, the retirement of old versions, and break-glass for a
compromised version: one every account can leave, and one the unlisted account keeps enabled.

Every step states what it expects; the demo stops with exit code 1 at the first expectation that fails. The trace
of the first rotation is printed from OpenTelemetry's SDK, as Application Insights would receive it in Azure.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import function_app
from emulator import Emulator
from emulator.azurite import Azurite
from emulator.fleet import FLEET_KEY, FLEET_SUBSCRIPTION, FLEET_UNMANAGED, FLEET_VAULT, seed_fleet
from emulator.functions_host import FunctionsHost
from rotation import cli
from rotation.app import RotationApp, configure
from rotation.connection import AzureConnection
from rotation.log import Event
from rotation.model import AccountRef
from rotation.telemetry import SpanName

KEY = FLEET_KEY
OTHER_KEY = "other-cmk"
UNMANAGED = FLEET_UNMANAGED  # on the key, in the second subscription, not in ROTATION_TARGETS


class ExpectationFailed(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise ExpectationFailed(what)
    print(f"   ok  {what}")


def step(title: str) -> None:
    print(f"\n== {title}")


def print_trace(spans: list[ReadableSpan], root: ReadableSpan) -> None:
    """The spans of ``root``'s trace as a tree, each with its duration and the account it is about."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        if span.context.trace_id == root.context.trace_id:
            children.setdefault(span.parent.span_id if span.parent else None, []).append(span)

    def show(span: ReadableSpan, depth: int) -> None:
        account = str((span.attributes or {}).get("account", "")).rsplit("/", 1)[-1]
        took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        print(f"   {'  ' * depth}{span.name:<{34 - 2 * depth}} {took:7.1f} ms  {account}")
        for child in sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time or 0):
            show(child, depth + 1)

    show(root, 0)


def main() -> int:
    started = time.monotonic()
    spans = InMemorySpanExporter()  # in Azure, the worker's azure-monitor-opentelemetry exports them instead
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    with Emulator() as azure, Azurite() as storage:
        targets = seed_fleet(azure)  # the fleet `python -m emulator --fleet` seeds
        vault = azure.vaults[FLEET_VAULT]
        [current] = vault.versions(KEY)
        other = vault.create_key(OTHER_KEY, exp=datetime.now(UTC) + timedelta(days=200))
        encryption = {"keyName": OTHER_KEY, "keyVersion": other.version, "keyVaultUri": vault.url}
        azure.arm.add_account(
            "openai-other-key", encryption={"keySource": "Microsoft.KeyVault", "keyVaultProperties": encryption}
        )
        names = [(AccountRef.parse(a).subscription_id, AccountRef.parse(a).name) for a in targets[0]["accounts"]]
        unmanaged = azure.arm.account_id("rg-ai", UNMANAGED, subscription_id=FLEET_SUBSCRIPTION)
        env = {
            "AzureWebJobsStorage": storage.connection_string,
            "ROTATION_TARGETS": json.dumps(targets),
            "ROTATION_SCHEDULE": "0 0 3 * * *",
        }
        connection = AzureConnection(
            azure.credential(),
            arm_endpoint=azure.arm_url,
            ca_bundle=azure.ca_bundle,
            verify_challenge_resource=False,
            polling_interval=0.1,
        )
        app = RotationApp.build(env, connection=connection, clock=azure.clock.now)  # the emulator's: it can move
        app.queue.ensure()
        app.ledger.ensure()
        configure(app)
        host = FunctionsHost(function_app.app, storage.connection_string, app_settings=env)
        key_events: list[dict[str, Any]] = []
        azure.eventgrid.subscribe(endpoint=key_events.append)

        def versions() -> list[str]:
            return [v.version for v in vault.versions(KEY)]

        def version_of(subscription: str, name: str) -> str:
            props = azure.arm.account("rg-ai", name, subscription_id=subscription)["properties"]
            expect(props["provisioningState"] == "Succeeded", f"{name} is Succeeded")
            return str(props["encryption"]["keyVaultProperties"]["keyVersion"])

        def account_versions() -> set[str]:
            return {version_of(sub, name) for sub, name in names}

        drift: list[logging.LogRecord] = []
        watch = logging.Handler()
        watch.emit = lambda record: (
            drift.append(record) if getattr(record, "event", None) == Event.DRIFT_FOUND else None
        )
        logging.getLogger("rotation").addHandler(watch)
        logging.getLogger("stamina").addHandler(logging.NullHandler())  # the verify step's waits, not news

        print(f"Seeded vault {vault.url} with key {KEY} (expires in 20 days), {len(names)} accounts on it in two")
        print(f"subscriptions, {UNMANAGED} on it that ROTATION_TARGETS does not list, and one account on {OTHER_KEY}.")
        print(f"Storage: Azurite. Emulator CA: {azure.ca_bundle}")

        step("0. discover: which accounts use the key, across subscriptions?")
        found = io.StringIO()
        cli.main(["discover", "--key", f"{vault.url}/keys/{KEY}"], env=env, connection=connection, out=found)
        print("   " + found.getvalue().rstrip().replace("\n", "\n   "))
        rows = [line for line in found.getvalue().splitlines() if "rg-ai/" in line]
        expect(len(rows) == 5, "discover found all five accounts on the key, in both subscriptions")
        marked = [line for line in rows if line.rstrip().endswith("UNMANAGED")]
        expect(len(marked) == 1 and UNMANAGED in marked[0], f"only {UNMANAGED} is marked UNMANAGED")

        step("1. Key Vault sends KeyNearExpiry: on_key_event -> queue -> rotation_worker")
        azure.eventgrid.scan()
        azure.eventgrid.wait_idle()
        near = [e for e in key_events if e["eventType"] == "Microsoft.KeyVault.KeyNearExpiry"]
        expect(len(near) == 1, "the emulator's Event Grid delivered one KeyNearExpiry event")
        host.deliver_events("on_key_event", near)
        host.pump("rotation_worker")
        expect(len(versions()) == 2, "exactly one new key version was created")
        new_version = versions()[-1]
        expect(account_versions() == {new_version}, f"all four accounts are verified on {new_version[:8]}…")
        finished = list(spans.get_finished_spans())
        (event_span,) = [s for s in finished if s.name == SpanName.ON_KEY_EVENT]
        in_trace = [s.name for s in finished if s.context.trace_id == event_span.context.trace_id]
        expect(
            in_trace.count(SpanName.WORK) == 1 and in_trace.count(SpanName.UPDATE_ACCOUNT) == 4,
            "one trace runs from the event through the queue to each account's update:",
        )
        print_trace(finished, event_span)

        step("2. The same event is delivered again")
        host.deliver_events("on_key_event", near)
        host.pump("rotation_worker")
        expect(len(versions()) == 2, "no new version")

        step("3. Our own KeyNewVersionCreated event arrives")
        azure.eventgrid.wait_idle()
        created = [e for e in key_events if e["eventType"] == "Microsoft.KeyVault.KeyNewVersionCreated"]
        ours = [e for e in created if e["data"]["Version"] == new_version]
        expect(len(ours) == 1, "Key Vault announced the version the service created")
        host.deliver_events("on_key_event", ours)
        host.pump("rotation_worker")
        expect(len(versions()) == 2, "KeyNewVersionCreated created no version")

        step("4. A manual forced rotation, POSTed twice with one Idempotency-Key")
        body = json.dumps({"key": f"{vault.url}/keys/{KEY}", "force": True}).encode()
        headers = {"Idempotency-Key": "change-4711", "Content-Type": "application/json"}
        answers = [host.http("submit_rotation", "POST", "/api/rotations", body=body, headers=headers) for _ in range(2)]
        ids = {json.loads(a.get_body())["request_id"] for a in answers}
        expect([a.status_code for a in answers] == [202, 202], "both POSTs were accepted (202)")
        expect(len(ids) == 1, "both POSTs name the same request")
        host.pump("rotation_worker")
        host.pump("rotation_worker")
        expect(len(versions()) == 3, "the forced rotation created exactly one version")
        forced_version = versions()[-1]
        expect(account_versions() == {forced_version}, "all four accounts are verified on the forced version")
        (request_id,) = ids
        row = json.loads(
            host.http(
                "get_rotation", "GET", f"/api/rotations/{request_id}", route_params={"request_id": request_id}
            ).get_body()
        )
        expect(row["status"] == "succeeded", f"GET /api/rotations/{request_id[:8]}… says succeeded")

        step("5. The timer sweep")
        host.fire_timer("rotation_sweep")
        expect(host.pump("rotation_worker") == 0, "the sweep found nothing due and enqueued nothing")
        expect(len(versions()) == 3, "no new version")
        expect(
            len(drift) == 1 and unmanaged in drift[-1].getMessage(),
            f"the sweep reported {UNMANAGED} as drift (rotation.drift_found):",
        )
        print(f"   {drift[-1].getMessage()}")
        expect(version_of(FLEET_SUBSCRIPTION, UNMANAGED) == current.version, f"{UNMANAGED} was never touched")
        other_props = azure.arm.account("rg-ai", "openai-other-key")["properties"]["encryption"]["keyVaultProperties"]
        expect(other_props["keyVersion"] == other.version, f"the account on {OTHER_KEY} was never touched")
        expect(len(vault.versions(OTHER_KEY)) == 1, f"{OTHER_KEY} has no new version")

        step("6. A staged rollout, 100 days later: the canary's identity cannot use the key")
        staged = [{**targets[0], "rollout": {"wave_size": 2}}]  # the canary (the first account), then two waves
        settings = {
            "ROTATION_TARGETS": json.dumps(staged),
            "ROTATION_RETIREMENT": "own",
            "ROTATION_RETIRE_AFTER": "P1D",
        }
        app = RotationApp.build({**env, **settings}, connection=connection, clock=azure.clock.now)
        configure(app)
        canary = names[0][1]
        principal = azure.arm.identity_principal("rg-ai", canary)
        vault.deny(str(principal), ["wrapKey"])  # ARM refuses to point the canary at the key: KeyVaultAccessDenied
        azure.clock.advance(timedelta(days=100))  # the forced version is due for renewal now
        before = account_versions()
        host.fire_timer("rotation_sweep")
        host.pump("rotation_worker")
        [halted] = [e for e in app.ledger.list_requests() if e.status == "failed"]
        expect(halted.reason == "HaltedAfterFailure", f"the rollout halted: {halted.error[:96]}…")
        expect(account_versions() == before, "no account moved: all still work on the version they had")
        rollout_version = versions()[-1]
        vault.allow(str(principal))
        host.fire_timer("rotation_sweep")  # the cause is fixed: the sweep sees the accounts behind and resumes
        host.pump("rotation_worker")
        expect(account_versions() == {rollout_version}, "the resumed rollout converged every wave, canary first")
        expect(len(versions()) == 4, "on the version the halted run created: none more")

        step("7. Retirement of the service's own old versions, after a day unused")
        old, left = versions()[1:3]  # unused since the rollout's first sweep; and the one the rollout moved off
        azure.clock.advance(timedelta(days=1, minutes=1))
        host.fire_timer("rotation_sweep")

        def retired() -> list[str]:
            return sorted(e.from_version for e in app.ledger.list_requests() if e.reason == "Retired")

        def enabled(version: str) -> bool:
            return next(v.enabled for v in vault.versions(KEY) if v.version == version)

        expect(retired() == [old] and not enabled(old), f"{old[:8]}…, unused for a day, was disabled (ledger: Retired)")
        expect(enabled(left), f"{left[:8]}…, which the accounts left only at the resumed rollout, waits its own day")
        azure.clock.advance(timedelta(days=1, minutes=1))
        host.fire_timer("rotation_sweep")
        expect(retired() == sorted([old, left]) and not enabled(left), f"a day later {left[:8]}… was disabled too")
        expect(enabled(current.version), f"the first version stays: {UNMANAGED} still uses it, and it is not ours")
        expect(enabled(rollout_version), "the target stays enabled; nothing was deleted")

        step("8. Break-glass: the current version is believed compromised")
        key_url = f"{vault.url}/keys/{KEY}"

        def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            answer = host.http("submit_rotation", "POST", "/api/rotations", body=json.dumps(body).encode())
            return answer.status_code, json.loads(answer.get_body())

        def break_glass(version: str) -> tuple[dict[str, Any], dict[str, Any]]:
            """The plan, then its confirmation, then the worker: the plan and the ledger row."""
            status, plan = post({"key": key_url, "compromised_version": version})
            expect(
                status == 200 and len(versions()) == len(known), "the first call answered the plan, writing nothing:"
            )
            for account in plan["accounts"]:
                name, movable = account["account"].rsplit("/", 1)[-1], "movable" if account["movable"] else "stays"
                print(f"     {name:<18} {movable:<8} {account['why'][:80]}")
            print(f"     the version: {plan['version_outlook'][:100]}")
            status, accepted = post(
                {"key": key_url, "compromised_version": version, "confirmation": plan["confirmation"]}
            )
            expect(status == 202, "the second call, with the plan's confirmation, was accepted (202)")
            host.pump("rotation_worker")
            return plan, next(e for e in app.ledger.list_requests() if e.request_id == accepted["request_id"]).to_dict()

        known = versions()
        plan, row = break_glass(rollout_version)
        expect(len(plan["accounts"]) == 4 and all(a["movable"] for a in plan["accounts"]), "all four accounts may move")
        expect(len(versions()) == len(known) + 1, "one new version was created at once")
        glass_version = versions()[-1]
        expect(account_versions() == {glass_version}, "all four moved in one go, whatever the rollout's waves")
        expect(
            not enabled(rollout_version) and row["reason"] == "CompromisedVersionDisabled",
            f"nobody is left on {rollout_version[:8]}…: it was disabled (ledger: CompromisedVersionDisabled)",
        )

        step("9. Break-glass for the first version, which the unlisted account still uses")
        known = versions()
        plan, row = break_glass(current.version)
        [stranded] = plan["accounts"]
        expect(
            UNMANAGED in stranded["account"] and not stranded["movable"],
            f"the plan names {UNMANAGED}, not ours to move",
        )
        expect(len(versions()) == len(known), "no version was created: the accounts are on a newer one already")
        expect(
            enabled(current.version) and row["reason"] == "CompromisedVersionInUse",
            f"the version stays enabled while {UNMANAGED} uses it (ledger: CompromisedVersionInUse):",
        )
        print(f"     {row['error'][:110]}…")
        expect(version_of(FLEET_SUBSCRIPTION, UNMANAGED) == current.version, f"{UNMANAGED} was never touched")

        step("10. Final status and ledger")
        cli.main(["status"], env={**env, **settings}, connection=connection, clock=azure.clock.now)
        print()
        for entry in app.ledger.list_requests():
            print(
                f"  {entry.created_at:%m-%d %H:%M}  {entry.trigger:<22} {entry.status:<10} {entry.reason:<18} "
                f"{(entry.from_version or '-')[:8]:<9} -> {(entry.to_version or '-')[:8]:<9} {entry.request_id}"
            )
    print(f"\nDemo passed in {time.monotonic() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ExpectationFailed as exc:
        print(f"\nDEMO FAILED: expected that {exc}", file=sys.stderr)
        sys.exit(1)
