"""One target's fault never stops another (issue 8): the CLI and ``target_status`` against the emulator, real SDKs.

The fleet has four targets, three of them faulty in a different way, and one healthy::

    healthy      kv-cli/cmk            aoai-1, aoai-2 on it; due (expires in 10 days)
    key gone     kv-cli/absent         the key does not exist                         -> KeyNotFound, blocked
    account gone kv-two/cmk            aoai-two on it, and aoai-ghost, which does not exist
                                                                                      -> that account AccountUnreadable
    unreachable  nonexistent-vault.invalid/keys/k   the vault's name never resolves   -> failed at once, one line

Every command reports every target, text and JSON, exits 1, and ``reconcile`` still rotates what it can. The vault
whose name does not resolve fails without the engine's step retries (no ``stamina.retry_scheduled``); what it costs
is azure-core's own connection retries, so the time bound is loose.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from emulator.core import Emulator
from rotation.config import Settings
from rotation.engine import RotationEngine
from rotation.model import AccountRef, KeyRef, Target, Trigger
from rotation.status import target_status
from tests.functional.test_cli import CREATE, Result, World, encryption

UNRESOLVABLE = "nonexistent-vault.invalid"  # RFC 6761: .invalid never resolves
UNREACHABLE_KEY = f"https://{UNRESOLVABLE}/keys/k"
SECONDS = 30  # loose: azure-core's connection retries take about 5 s; the engine's step retries took over a minute
DNS_LINE = (
    f"{UNREACHABLE_KEY}: FAILED (Unreachable): cannot list key versions on {UNREACHABLE_KEY}: "
    f"the host name {UNRESOLVABLE} does not resolve ("
)


@dataclass
class Fleet:
    world: World
    two: Any  # the vault kv-two
    two_first: str
    two_account: AccountRef
    ghost: str  # the id of an account that does not exist

    @property
    def absent_key(self) -> str:
        return f"{self.world.vault.url}/keys/absent"

    @property
    def two_key(self) -> str:
        return f"{self.two.url}/keys/cmk"

    def run(self, *argv: str) -> tuple[Result, float]:
        started = time.monotonic()
        result = self.world.run(*argv)
        return result, time.monotonic() - started


def resolver_says_no(host: str) -> bool:
    """True when this machine's resolver answers that ``host`` does not exist (rather than "try again" or an address:
    a machine without a reachable DNS server cannot show a DNS failure that is not transient)."""
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as exc:
        return exc.errno != socket.EAI_AGAIN
    return False


@pytest.fixture
def fleet(emulator: Emulator) -> Fleet:
    if not resolver_says_no(UNRESOLVABLE):
        pytest.skip(f"this machine's resolver gives no definite answer for {UNRESOLVABLE}")
    vault = emulator.add_vault("kv-cli")
    first = vault.create_key("cmk", exp=emulator.clock.now() + timedelta(days=10)).version
    accounts = [
        AccountRef.parse(emulator.arm.add_account(name, encryption=encryption(vault.url, first))["id"])
        for name in ("aoai-1", "aoai-2")
    ]
    two = emulator.add_vault("kv-two")
    two_first = two.create_key("cmk", exp=emulator.clock.now() + timedelta(days=10)).version
    arm = emulator.arm
    two_account = AccountRef.parse(arm.add_account("aoai-two", encryption=encryption(two.url, two_first))["id"])
    on_absent = arm.add_account("aoai-absent", encryption=encryption(vault.url, "0" * 32, key_name="absent"))
    on_unreachable = arm.add_account("aoai-dns", encryption=encryption(f"https://{UNRESOLVABLE}", "1" * 32, "k"))
    ghost = emulator.arm.account_id("rg-ai", "aoai-ghost")
    world = World(emulator, vault, first, accounts)
    world.env = {
        "ROTATION_TARGETS": json.dumps(
            [
                {"key": world.key, "accounts": [a.id for a in accounts]},
                {"key": f"{vault.url}/keys/absent", "accounts": [on_absent["id"]]},
                {"key": f"{two.url}/keys/cmk", "accounts": [two_account.id, ghost]},
                {"key": UNREACHABLE_KEY, "accounts": [on_unreachable["id"]]},
            ]
        )
    }
    return Fleet(world, two, two_first, two_account, ghost)


@pytest.fixture
def retries(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The engine's step retries, as stamina logs them."""
    caplog.set_level(logging.WARNING, logger="stamina")
    return caplog


def scheduled_retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "stamina"]


# Reading: status, plan -----------------------------------------------------------------------------------------------


def test_status_reports_every_target_with_its_reason_and_error(fleet: Fleet, retries: pytest.LogCaptureFixture) -> None:
    human, elapsed = fleet.run("status")
    machine, _ = fleet.run("status", "--json")

    assert human.code == 1 and machine.code == 1 and human.err == "" and machine.err == ""
    assert elapsed < SECONDS and scheduled_retries(retries) == []
    lines = human.out.splitlines()
    [failed] = [line for line in lines if "FAILED" in line]  # one line for the target, nothing more
    assert failed.startswith(DNS_LINE) and lines[lines.index(failed) + 1] == ""
    assert "a new version is due" in human.out and len([ln for ln in lines if "rg-ai/aoai-" in ln]) == 5
    assert f"  target: none  (KeyNotFound: key {fleet.absent_key} has no versions" in human.out
    [blocked] = [line for line in lines if line.startswith("  blocked: ")]
    assert blocked.startswith(f"  blocked: AccountUnreadable: account {fleet.ghost} could not be read: ")
    assert "was not found" in blocked

    reports = {r["key"]: r for r in machine.json()["keys"]}
    assert list(reports) == [fleet.world.key, fleet.absent_key, fleet.two_key, UNREACHABLE_KEY]
    assert reports[fleet.world.key]["reason"] == "Expiring" and reports[fleet.world.key]["new_version_due"] is True
    assert reports[fleet.absent_key]["reason"] == "KeyNotFound" and reports[fleet.absent_key]["versions"] == []
    accounts = {a["account"]: a for a in reports[fleet.two_key]["accounts"]}
    assert accounts[fleet.two_account.id]["action"] == "repoint"
    assert (accounts[fleet.ghost]["action"], accounts[fleet.ghost]["reason"]) == ("blocked", "AccountUnreadable")
    assert "was not found" in accounts[fleet.ghost]["message"]
    unreachable = reports[UNREACHABLE_KEY]
    assert unreachable == {
        "key": UNREACHABLE_KEY,
        "reason": "Unreachable",
        "error": unreachable["error"],
        "versions": [],
        "accounts": [],
        "drift": None,
    }
    assert unreachable["error"].startswith(DNS_LINE.split(": FAILED (Unreachable): ", 1)[1])
    assert "private DNS zone" in unreachable["error"]
    assert fleet.world.writes() == []


def test_plan_plans_the_healthy_targets_and_reports_the_others(fleet: Fleet) -> None:
    human, _ = fleet.run("plan")
    machine, _ = fleet.run("plan", "--json")

    assert human.code == 1 and machine.code == 1
    assert any(line.startswith(DNS_LINE) for line in human.out.splitlines())
    assert "create: RSA 2048" in human.out and "block: KeyNotFound" in human.out
    plans = {p["key"]: p for p in machine.json()}
    assert plans[fleet.world.key]["create"] is not None and plans[fleet.world.key]["blocked"] is False
    assert (plans[fleet.absent_key]["blocked"], plans[fleet.absent_key]["reason"]) == (True, "KeyNotFound")
    actions = {a["account"]: (a["action"], a["reason"]) for a in plans[fleet.two_key]["accounts"]}
    assert actions == {
        fleet.two_account.id: ("repoint", "AccountBehind"),
        fleet.ghost: ("blocked", "AccountUnreadable"),
    }
    assert set(plans[UNREACHABLE_KEY]) == {"key", "reason", "error"}
    assert plans[UNREACHABLE_KEY]["reason"] == "Unreachable"
    assert fleet.world.writes() == []


def test_status_of_a_host_whose_certificate_is_not_trusted_fails_at_once_with_one_line(
    fleet: Fleet, retries: pytest.LogCaptureFixture
) -> None:
    world = fleet.world
    world.env = {"ROTATION_TARGETS": world.targets()}
    started = time.monotonic()

    result = world.run("status", connection=world.connection(trust_emulator_ca=False))

    assert time.monotonic() - started < SECONDS and scheduled_retries(retries) == []
    assert result.code == 1 and result.err == ""
    # Discovery's own reads fail the same way, and say so above the key's one line.
    [discovery, graph, subscription, _, line, blank] = result.out.splitlines()
    assert discovery.startswith("discovery: through ARM's account listing (subscriptions ")
    assert graph.startswith("  Resource Graph could not be used: ") and "CERTIFICATE_VERIFY_FAILED" in graph
    assert subscription.startswith("  FAILED subscription ") and "(Unreachable)" in subscription
    assert blank == ""
    expected = f"{world.key}: FAILED (Unreachable): cannot list key versions on {world.key}: TLS with 127.0.0.1 "
    assert line.startswith(expected)
    assert "CERTIFICATE_VERIFY_FAILED" in line and "CA bundle" in line


# Writing: reconcile, rotate ------------------------------------------------------------------------------------------


def test_reconcile_rotates_every_account_it_can_and_reports_the_rest(fleet: Fleet) -> None:
    world = fleet.world

    result, elapsed = fleet.run("reconcile", "--json")

    assert result.code == 1 and elapsed < SECONDS
    outcomes = {o["key"]: o for o in result.json()}
    assert list(outcomes) == [world.key, fleet.absent_key, fleet.two_key, UNREACHABLE_KEY]
    healthy = outcomes[world.key]
    assert (healthy["status"], healthy["created"]) == ("succeeded", True)
    assert all(world.key_version(a) == healthy["to_version"] for a in world.accounts)
    assert (outcomes[fleet.absent_key]["status"], outcomes[fleet.absent_key]["reason"]) == ("failed", "KeyNotFound")
    two = outcomes[fleet.two_key]
    results = {a["account"]: (a["status"], a["reason"]) for a in two["accounts"]}
    assert results == {
        fleet.two_account.id: ("succeeded", "AccountBehind"),
        fleet.ghost: ("failed", "AccountUnreadable"),
    }
    assert world.key_version(fleet.two_account) == two["to_version"] != fleet.two_first
    unreachable = outcomes[UNREACHABLE_KEY]
    assert (unreachable["status"], unreachable["reason"], unreachable["retryable"]) == ("failed", "Unreachable", False)
    assert f"the host name {UNRESOLVABLE} does not resolve" in unreachable["error"]
    assert [line for line in result.err.splitlines() if line.startswith("k: FAILED")] == [
        f"k: FAILED (Unreachable): {unreachable['error']}"
    ]
    creates = [c for c in world.emulator.control.calls(CREATE) if c.status == 200]
    assert len(creates) == 2 and world.vault.key_names() == ["cmk"]  # one per rotated key; none for "absent"


def test_rotate_of_a_missing_key_fails_with_the_reason_and_writes_nothing(fleet: Fleet) -> None:
    result, _ = fleet.run("rotate", "--key", fleet.absent_key, "--json")
    text, _ = fleet.run("rotate", "--key", fleet.absent_key)

    assert result.code == 1 and text.code == 1
    outcome = result.json()
    assert (outcome["status"], outcome["reason"], outcome["created"]) == ("failed", "KeyNotFound", False)
    assert f"key {fleet.absent_key} has no versions" in outcome["error"]
    assert f"{fleet.absent_key}: failed (KeyNotFound)" in text.out
    assert fleet.world.writes() == []


def test_rotate_with_a_missing_account_rotates_the_others_and_reports_it(fleet: Fleet) -> None:
    result, _ = fleet.run("rotate", "--key", fleet.two_key)

    assert result.code == 1
    new = fleet.two.versions("cmk")[-1].version
    assert new != fleet.two_first and fleet.world.key_version(fleet.two_account) == new
    assert f"cmk: rg-ai/aoai-two ok: reports {new} and Succeeded" in result.err.splitlines()
    ghost_row = next(line for line in result.out.splitlines() if "rg-ai/aoai-ghost" in line)
    assert ghost_row.split()[1:4] == ["blocked", "failed", "AccountUnreadable"]
    assert f"error: 1 of 2 accounts failed: aoai-ghost: {fleet.ghost} was not found while trying to read" in result.out


# GET /api/status's builder -------------------------------------------------------------------------------------------


def test_target_status_reports_anything_one_target_raises_and_still_reads_the_others(fleet: Fleet) -> None:
    """A key URL the settings would refuse (an empty DNS label), built directly to reach the SDK: the transport raises
    a ValueError (urllib3's LocationParseError), not an azure-core error."""
    world = fleet.world
    settings = Settings.from_env({"ROTATION_TARGETS": world.targets()})
    malformed = Target(KeyRef(vault_url="https://kv..invalid", name="k"), (fleet.two_account,))
    settings = replace(settings, targets=(malformed, *settings.targets))
    connection = world.connection()
    engine = RotationEngine(connection.key_vault(), connection.accounts(), settings, clock=world.emulator.clock.now)

    broken, healthy = (target_status(engine, settings, t, trigger=Trigger.HTTP) for t in settings.targets)

    assert broken == {
        "key": "https://kv..invalid/keys/k",
        "reason": "Error",
        "error": broken["error"],
        "versions": [],
        "accounts": [],
        "drift": None,
    }
    assert str(broken["error"]).startswith("LocationParseError: Failed to parse: ")
    assert len(str(broken["error"])) <= len("LocationParseError: ") + 200
    assert healthy["key"] == world.key and healthy["reason"] == "Expiring"
