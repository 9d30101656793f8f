"""``python -m rotation`` in-process (``rotation.cli.main``) against the emulator, through the real SDKs.

Each test seeds the emulator, runs the CLI with the emulator's ``AzureConnection`` and checks what it printed, its
exit code, and what the emulator says happened (key versions, account versions, the call log). Bad input must exit 2
with one line on stderr, no traceback and no write.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.azurite import Azurite
from emulator.control import FaultRule
from emulator.core import Emulator
from rotation.cli import main
from rotation.connection import AzureConnection
from rotation.model import AccountRef, KeyRef, RotationRequest, Trigger
from rotation.storage import LedgerEntry, LedgerStatus, StorageAccount

CREATE = "keyvault.create_key"
UPDATE = "arm.update_account"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = '[{"key": "https://<vault>.vault.azure.net/keys/<name>", "accounts": ["/subscriptions/..."]}]'
ROLE_NOTE = "the Key Vault data plane cannot list role assignments"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class World:
    """Vault ``kv-cli`` with key ``cmk`` (due: it expires in 10 days) and two accounts that use it."""

    emulator: Emulator
    vault: Any
    first: str
    accounts: list[AccountRef]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.vault.url}/keys/cmk"

    def targets(self, key: str | None = None, accounts: list[str] | None = None) -> str:
        return json.dumps([{"key": key or self.key, "accounts": accounts or [a.id for a in self.accounts]}])

    def connection(self, *, trust_emulator_ca: bool = True) -> AzureConnection:
        """The emulator's connection; without its CA, TLS with every emulated service fails as it would with a host
        whose certificate this machine does not trust."""
        return AzureConnection(
            self.emulator.credential(),
            arm_endpoint=self.emulator.arm_url,
            ca_bundle=self.emulator.ca_bundle if trust_emulator_ca else None,
            verify_challenge_resource=False,
            polling_interval=0.05,
        )

    def run(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        connection: AzureConnection | None = None,
        inp: io.StringIO | None = None,
        err: io.StringIO | None = None,
    ) -> Result:
        out, err = io.StringIO(), err or io.StringIO()
        code = main(
            list(argv),
            env=self.env if env is None else env,
            connection=connection or self.connection(),
            clock=self.emulator.clock.now,
            out=out,
            err=err,
            inp=inp or io.StringIO(),  # no terminal
        )
        return Result(code, out.getvalue(), err.getvalue())

    def versions(self) -> list[str]:
        return [record.version for record in self.vault.versions("cmk")]

    def key_version(self, account: AccountRef) -> str:
        body = self.emulator.arm.account(account.resource_group, account.name)
        return str(body["properties"]["encryption"]["keyVaultProperties"]["keyVersion"])

    def writes(self) -> list[str]:
        """Every create and account update the emulator answered (challenges left out)."""
        return [
            c.operation for c in self.emulator.control.calls() if c.operation in (CREATE, UPDATE) and c.status != 401
        ]


def encryption(vault_url: str, version: str, key_name: str = "cmk") -> dict[str, Any]:
    return {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyVaultUri": vault_url, "keyName": key_name, "keyVersion": version},
    }


@pytest.fixture
def world(emulator: Emulator) -> World:
    vault = emulator.add_vault("kv-cli")
    first = vault.create_key("cmk", exp=emulator.clock.now() + timedelta(days=10)).version
    accounts = [
        AccountRef.parse(emulator.arm.add_account(name, encryption=encryption(vault.url, first))["id"])
        for name in ("aoai-1", "aoai-2")
    ]
    made = World(emulator, vault, first, accounts)
    made.env = {"ROTATION_TARGETS": made.targets()}
    return made


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.code == 2, result
    assert result.out == ""
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err


# Reading: status, plan, preflight ------------------------------------------------------------------------------------


def test_status_shows_each_version_and_each_accounts_drift(world: World) -> None:
    human = world.run("status")
    machine = world.run("status", "--json")

    assert human.code == 0 and machine.code == 0
    assert world.key in human.out and "a new version is due" in human.out and "Expiring" in human.out
    version_row = next(line for line in human.out.splitlines() if line.strip().startswith(world.first))
    assert version_row.split()[1] == "yes" and version_row.split()[-1] in ("9", "10")  # enabled, days left
    account_rows = [line for line in human.out.splitlines() if "rg-ai/aoai-" in line]
    assert len(account_rows) == 2 and all("Succeeded" in r and "yes: will be repointed" in r for r in account_rows)
    [report] = machine.json()["keys"]
    assert report["new_version_due"] is True and report["target_version"] is None
    assert [v["version"] for v in report["versions"]] == [world.first]
    assert report["versions"][0]["days_left"] in (9, 10) and report["versions"][0]["enabled"] is True
    assert [(a["key_version"], a["provisioning_state"], a["drift"]) for a in report["accounts"]] == [
        (world.first, "Succeeded", True)
    ] * 2
    # Expiring in 10 days and renewed 30 days before expiry: due for 20 days already.
    assert report["days_until_expiry"] in (9, 10) and report["days_until_renewal"] in (-21, -20)
    assert report["expires_on"][:10] == report["versions"][0]["expires"][:10]
    renews = next(line for line in human.out.splitlines() if line.strip().startswith("renews:"))
    assert "days ago (" not in renews and "days ago)" in renews.split("expires:")[0]
    assert any(f"(in {days} days)" in renews.split("expires:")[1] for days in (9, 10))
    assert world.writes() == []


def test_status_and_preflight_print_the_same_data_as_json_or_yaml(world: World) -> None:
    def steady(value: Any) -> Any:
        """The data without what differs from one run to the next (the clock's reading)."""
        if isinstance(value, dict):
            return {k: steady(v) for k, v in value.items() if k != "now"}
        return [steady(v) for v in value] if isinstance(value, list) else value

    # Every command prints through the same function; these two print the same data from one run to the next.
    for command in (["status"], ["preflight"]):
        as_json, as_yaml, long_form = (world.run(*command, *o) for o in (["--json"], ["-o", "yaml"], ["-o", "json"]))
        assert as_json.code == as_yaml.code == long_form.code, command
        assert steady(yaml.safe_load(as_yaml.out)) == steady(as_json.json()) == steady(long_form.json()), command
    assert world.writes() == []


def test_status_after_a_rotation_shows_no_drift(world: World) -> None:
    assert world.run("rotate", "--key", world.key).code == 0

    [report] = world.run("status", "--json").json()["keys"]

    new = world.versions()[-1]
    assert report["target_version"] == new and report["reason"] == "UpToDate"
    assert [v["version"] for v in report["versions"]] == [new, world.first]  # newest first
    assert [(a["key_version"], a["drift"]) for a in report["accounts"]] == [(new, False)] * 2
    assert "  no" in world.run("status").out


def test_plan_says_what_would_change_and_writes_nothing(world: World) -> None:
    human = world.run("plan")
    machine = world.run("plan", "--key", world.key, "--json")

    assert human.code == 0 and machine.code == 0
    assert "Expiring" in human.out and "create: RSA 2048" in human.out and "repoint" in human.out
    [plan] = machine.json()
    assert plan["key"] == world.key and plan["trigger"] == "cli" and plan["reason"] == "Expiring"
    assert plan["create"]["kty"] == "RSA" and plan["create"]["tags"]["rotation-trigger"] == "cli"
    assert [a["action"] for a in plan["accounts"]] == ["repoint", "repoint"]
    assert world.writes() == [] and world.versions() == [world.first]


def test_preflight_reports_purge_protection_key_type_and_identity(world: World) -> None:
    emulator = world.emulator
    purgeable = emulator.add_vault("kv-purgeable", purge_protection=False)
    purgeable_first = purgeable.create_key("cmk").version
    big = emulator.add_vault("kv-big")
    big_first = big.create_key("cmk", size=3072).version
    no_identity = emulator.arm.add_account("aoai-anon", identity=None, encryption=encryption(world.vault.url, "x"))
    on_purgeable = emulator.arm.add_account("aoai-p", encryption=encryption(purgeable.url, purgeable_first))
    on_big = emulator.arm.add_account("aoai-b", encryption=encryption(big.url, big_first))
    targets = [
        {"key": world.key, "accounts": [*[a.id for a in world.accounts], no_identity["id"]]},
        {"key": f"{purgeable.url}/keys/cmk", "accounts": [on_purgeable["id"]]},
        {"key": f"{big.url}/keys/cmk", "accounts": [on_big["id"]]},
    ]
    env = {"ROTATION_TARGETS": json.dumps(targets)}

    human = world.run("preflight", env=env)
    machine = world.run("preflight", "--json", env=env)

    assert human.code == 1 and machine.code == 1
    reports = {r["key"]: r for r in machine.json()}
    reasons = {key: [(f["reason"], f["severity"], f["account"]) for f in r["findings"]] for key, r in reports.items()}
    assert reasons == {
        world.key: [("AccountWithoutIdentity", "block", no_identity["id"])],
        f"{purgeable.url}/keys/cmk": [("PurgeProtectionDisabled", "block", None)],
        f"{big.url}/keys/cmk": [("KeyTypeUnsupported", "block", None)],
    }
    assert "rg-ai/aoai-anon" in human.out and "PurgeProtectionDisabled" in human.out
    assert human.out.rstrip().splitlines()[-1].startswith("note: not checked:") and ROLE_NOTE in human.out
    assert world.writes() == []


def test_preflight_of_healthy_targets_exits_0(world: World) -> None:
    result = world.run("preflight")

    assert result.code == 0 and f"{world.key}: ok" in result.out


# Writing: rotate, reconcile ------------------------------------------------------------------------------------------


def test_rotate_creates_one_version_repoints_every_account_and_shows_progress(world: World) -> None:
    result = world.run("rotate", "--key", world.key)

    assert result.code == 0, result.err
    assert len(world.versions()) == 2
    new = world.versions()[-1]
    assert all(world.key_version(a) == new for a in world.accounts)
    assert world.writes().count(CREATE) == 1
    progress = result.err.splitlines()
    assert f"cmk: created version {new} (Expiring)" in progress
    assert sorted(line for line in progress if " ok: " in line) == [
        f"cmk: rg-ai/aoai-{i} ok: reports {new} and Succeeded" for i in (1, 2)
    ]
    assert f"{world.key}: succeeded (Expiring)" in result.out
    assert f"version: {world.first} -> {new} (created)" in result.out


def test_progress_comes_from_the_engines_hook_not_from_its_log_records(world: World) -> None:
    service_log = logging.getLogger("rotation")
    service_log.disabled = True  # no rotation.* record is made at all
    try:
        result = world.run("rotate", "--key", world.key)
    finally:
        service_log.disabled = False

    assert result.code == 0, result.err
    new = world.versions()[-1]
    planned, created, *updated = result.err.splitlines()
    assert planned.startswith("cmk: Expiring: the current version ")
    assert created == f"cmk: created version {new} (Expiring)"
    assert sorted(updated) == [f"cmk: rg-ai/aoai-{i} ok: reports {new} and Succeeded" for i in (1, 2)]


def test_reconcile_after_a_rotation_changes_nothing(world: World) -> None:
    assert world.run("reconcile").code == 0
    world.emulator.control.reset_calls()

    again = world.run("reconcile", "--json")

    assert again.code == 0
    [outcome] = again.json()
    assert outcome["status"] == "skipped" and outcome["reason"] == "UpToDate" and outcome["trigger"] == "cli"
    assert world.writes() == [] and len(world.versions()) == 2


class Terminal(io.StringIO):
    """What the operator types, on a terminal."""

    def isatty(self) -> bool:
        return True


def test_force_asks_on_a_terminal_and_without_one_needs_yes(world: World) -> None:
    unasked = world.run("rotate", "--key", world.key, "--force")
    declined = world.run("rotate", "--key", world.key, "--force", inp=Terminal("n\n"))
    assert (unasked.code, declined.code) == (2, 2)
    assert "add --yes to confirm (there is no terminal to ask on)" in unasked.err
    assert "repoints its 2 accounts. Go ahead? [y/N]" in declined.err and "not confirmed" in declined.err
    assert world.writes() == [] and len(world.versions()) == 1

    confirmed = world.run("rotate", "--key", world.key, "--force", "--json", inp=Terminal("y\n"))

    assert confirmed.code == 0 and confirmed.json()["reason"] == "Forced" and len(world.versions()) == 2


def test_on_a_terminal_the_accounts_verified_are_one_live_line(world: World) -> None:
    # One account's update is refused: its failure keeps a line of its own.
    world.emulator.control.add_fault(FaultRule(operation="arm.update_account", path="/aoai-2$", status=403, times=None))

    result = world.run("reconcile", err=Terminal())

    assert result.code == 1
    assert "\r\x1b[K1/2 accounts verified, 1 failed" in result.err and result.err.endswith("failed\n")
    assert "ok: reports" not in result.err  # no line per verified account
    assert re.search(r"aoai-2 FAILED \(PermissionDenied\)", result.err)
    assert result.out.startswith(world.key)  # the report starts on a line of its own, on stdout


def test_rotate_dry_run_writes_nothing_and_force_creates_a_version_that_is_not_due(world: World) -> None:
    dry = world.run("rotate", "--key", world.key, "--dry-run", "--json")
    assert dry.code == 0 and dry.json()["create"] is not None and world.writes() == []
    assert world.run("rotate", "--key", world.key).code == 0  # no longer due afterwards

    forced = world.run("rotate", "--key", world.key, "--force", "--yes", "--json")

    assert forced.code == 0
    outcome = forced.json()
    assert outcome["reason"] == "Forced" and outcome["created"] is True and len(world.versions()) == 3
    assert all(world.key_version(a) == outcome["to_version"] for a in world.accounts)


def test_a_failed_rotation_exits_1_and_says_why(world: World) -> None:
    world.emulator.arm.deny("rotation-app", "write")

    result = world.run("rotate", "--key", world.key, "--json")

    assert result.code == 1
    outcome = result.json()
    assert outcome["status"] == "failed"
    assert {a["reason"] for a in outcome["accounts"]} == {"PermissionDenied"}
    failed_lines = [line for line in result.err.splitlines() if " FAILED (PermissionDenied): " in line]
    assert len(failed_lines) == 2 and all("Microsoft.CognitiveServices/accounts/write" in ln for ln in failed_lines)


def test_a_refused_read_reports_the_target_failed_on_one_line_and_exits_1(world: World) -> None:
    world.vault.deny("rotation-app")

    result = world.run("status")
    machine = world.run("status", "--json")

    assert result.code == 1 and result.err == ""
    [discovery, _, line, blank] = result.out.splitlines()
    assert discovery == "discovery: through Resource Graph (tenant)"
    assert blank == "" and line.startswith(
        f"{world.key}: FAILED (PermissionDenied): the function's identity lacks keys/list and keys/get on vault "
        f"{world.vault.url} (403 Forbidden: "
    )
    [report] = machine.json()["keys"]
    assert machine.code == 1 and report["reason"] == "PermissionDenied" and report["versions"] == []
    assert report["error"].startswith("the function's identity lacks keys/list")


def test_the_targets_file_replaces_the_setting(world: World, tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    path.write_text(world.targets(), encoding="utf-8")
    env = {"ROTATION_TARGETS": world.targets(key=f"{world.vault.url}/keys/not-this-one")}

    result = world.run("plan", "--targets", str(path), "--json", env=env)

    assert result.code == 0 and [p["key"] for p in result.json()] == [world.key]


# Bad input: exit 2, one line, no traceback, no write ----------------------------------------------------------------

BadInput = Callable[[World, Path], tuple[list[str], dict[str, str] | None, list[str]]]


BAD_INPUT: dict[str, BadInput] = {
    "a setting that is not JSON": lambda w, _: (["status"], {"ROTATION_TARGETS": "[{"}, ["ROTATION_TARGETS"]),
    "two bad settings at once": lambda w, _: (
        ["reconcile"],
        {**w.env, "ROTATION_KEY_LIFETIME": "P1D", "ROTATION_RENEW_BEFORE": "soon"},
        [
            "invalid app settings: (1) ROTATION_",
            "(2) ROTATION_",
            "ROTATION_KEY_LIFETIME",
            "ROTATION_RENEW_BEFORE='soon'",
        ],
    ),
    "no targets at all": lambda w, _: (["status"], {}, ["ROTATION_TARGETS is not set"]),
    "an http key URL": lambda w, _: (
        ["rotate", "--key", w.key.replace("https", "http")],
        None,
        ["must use https"],
    ),
    "a versioned key URL": lambda w, _: (["rotate", "--key", f"{w.key}/{w.first}"], None, ["names version"]),
    "a key outside the targets": lambda w, _: (
        ["rotate", "--key", f"{w.vault.url}/keys/other"],
        None,
        ["is not in ROTATION_TARGETS"],
    ),
    "a malformed account id": lambda w, _: (
        ["plan"],
        {"ROTATION_TARGETS": w.targets(accounts=["/subscriptions/x/accounts/y"])},
        ["is not a Cognitive Services account id"],
    ),
    "a missing --key": lambda w, _: (["rotate"], None, ["--key", "python -m rotation rotate --help"]),
    "an unknown command": lambda w, _: (["rotat"], None, ["invalid choice: 'rotat'"]),
    "an unknown option": lambda w, _: (["status", "--verbose"], None, ["unrecognized arguments: --verbose"]),
    "a targets file that does not exist": lambda w, tmp: (
        ["status", "--targets", str(tmp / "nope.json")],
        None,
        ["cannot be read (No such file or directory)"],
    ),
    "a targets file that is not JSON": lambda w, tmp: (
        ["status", "--targets", str(_file(tmp / "bad.json", "{not json"))],
        None,
        [f"--targets '{tmp / 'bad.json'}' is not valid JSON"],
    ),
}


def _file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(world: World, tmp_path: Path, case: str) -> None:
    argv, env, fragments = BAD_INPUT[case](world, tmp_path)

    result = world.run(*argv, env=env)

    assert_one_line_error(result, *fragments)
    assert world.writes() == [] and world.versions() == [world.first]


def test_a_bad_setting_never_echoes_the_events_key(world: World) -> None:
    secret = "topic-key-" + "s3cr3t" * 4
    env = {**world.env, "ROTATION_EVENTS_ENDPOINT": "http://topic.example", "ROTATION_EVENTS_KEY": secret}

    result = world.run("status", env=env)

    assert_one_line_error(result, "ROTATION_EVENTS_ENDPOINT")
    assert "s3cr3t" not in result.err


def test_help_exits_0_and_explains_what_preflight_cannot_check(world: World) -> None:
    top = world.run("--help")
    preflight = world.run("preflight", "--help")

    assert top.code == 0 and top.err == ""
    assert all(
        re.search(rf"^ {{4}}{c}\b", top.out, re.M) for c in ("status", "plan", "rotate", "reconcile", "preflight")
    )
    assert "exit codes: 0 ok, 1" in top.out
    assert preflight.code == 0 and "cannot list role assignments" in " ".join(preflight.out.split())


def test_python_m_rotation_runs_the_cli() -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "ROTATION_TARGETS": "[]"}

    done = subprocess.run(
        [sys.executable, "-m", "rotation", "status"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr
        == f"error: invalid app settings: (1) ROTATION_TARGETS must be a non-empty JSON list such as {EXAMPLE}\n"
    )


# The worker's lock ---------------------------------------------------------------------------------------------------


def test_rotate_waits_for_no_one_when_a_worker_holds_the_keys_lock(world: World, azurite: Azurite) -> None:
    env = {**world.env, "AzureWebJobsStorage": azurite.connection_string}
    lock = StorageAccount.from_settings(env).key_lock(KeyRef.parse(world.key))

    with lock:
        held = world.run("rotate", "--key", world.key, env=env)
    free = world.run("rotate", "--key", world.key, env=env)

    assert held.code == 1 and "another worker holds the lock" in held.err
    assert azurite.connection_string not in held.err + held.out
    assert free.code == 0 and len(world.versions()) == 2
    with StorageAccount.from_settings(env).key_lock(KeyRef.parse(world.key)):  # the CLI released it
        pass


def test_history_shows_the_apps_ledger_newest_first(world: World, azurite: Azurite) -> None:
    env = {"AzureWebJobsStorage": azurite.connection_string}  # no ROTATION_TARGETS: history reads only the ledger
    ledger = StorageAccount.from_settings(env).ledger()
    ledger.ensure()
    key = KeyRef.parse(world.key)
    now = world.emulator.clock.now()
    older = ledger.create(LedgerEntry.for_request(RotationRequest("req-older", key, Trigger.TIMER), at=now))
    ledger.transition(older, at=now, status=LedgerStatus.FAILED, reason="PermissionDenied", error="403 on keys/create")
    newer = RotationRequest("req-newer", key, Trigger.HTTP, force=True)
    entry = ledger.create(LedgerEntry.for_request(newer, at=now + timedelta(minutes=5)))
    ledger.transition(entry, at=now, status=LedgerStatus.SUCCEEDED, reason="Forced", from_version="v1", to_version="v2")

    table = world.run("history", "--key", world.key, env=env)
    machine = world.run("history", "--key", world.key, "--limit", "1", "--json", env=env)

    assert table.code == 0 and machine.code == 0
    rows = [line for line in table.out.splitlines() if "req-" in line and "->" in line]
    assert [row.split()[-1] for row in rows] == ["req-newer", "req-older"]
    assert "v1 -> v2" in rows[0] and "failed" in rows[1] and "req-older: 403 on keys/create" in table.out
    [only] = machine.json()
    assert (only["request_id"], only["status"], only["force"], only["to_version"]) == (
        "req-newer",
        "succeeded",
        True,
        "v2",
    )
    assert azurite.connection_string not in table.out + table.err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["history"], {}, "set AzureWebJobsStorage"),
        (["history", "--limit", "0"], {"AzureWebJobsStorage": "x"}, "must be a whole number from 1 to 1000"),
        (["history", "--key", "https://kv/keys"], {"AzureWebJobsStorage": "x"}, "not a Key Vault key URL"),
    ],
)
def test_history_refuses_bad_input_in_one_line(
    world: World, argv: list[str], env: dict[str, str], message: str
) -> None:
    result = world.run(*argv, env=env)
    assert (result.code, result.out) == (2, "") and message in result.err and "Traceback" not in result.err


def test_break_glass_shows_who_is_on_the_version_asks_moves_them_and_disables_it_only_when_told(world: World) -> None:
    world.emulator.arm.add_account("aoai-unlisted", encryption=encryption(world.vault.url, world.first))
    glass = ("break-glass", "--key", world.key, "--version", world.first)

    unasked = world.run(*glass)
    planned = world.run(*glass, "--dry-run")

    assert_one_line_error(unasked, "add --yes to confirm (there is no terminal to ask on), or --dry-run")
    assert planned.code == 0 and "rg-ai/aoai-unlisted  no       ROTATION_TARGETS does not list it" in planned.out
    assert "  the version: left enabled: 1 account is on it that the service may not move." in planned.out
    assert world.writes() == []

    kept = world.run(*glass, inp=Terminal("y\n"))

    assert kept.code == 1 and f"compromised version {world.first}: enabled" in kept.out
    assert "LEFT ON IT" in kept.out and "(CompromisedVersionInUse)" in kept.out
    new = world.versions()[-1]
    assert len(world.versions()) == 2 and all(world.key_version(a) == new for a in world.accounts)
    assert {r.version: r.enabled for r in world.vault.versions("cmk")}[world.first]

    accepted = world.run(*glass, "--accept-breakage", "--yes", "--json")

    assert accepted.code == 0, accepted
    outcome = accepted.json()
    assert (outcome["reason"], outcome["blast_radius"]["version_state"]) == ("CompromisedVersionDisabled", "disabled")
    assert [e["account"].rsplit("/", 1)[-1] for e in outcome["blast_radius"]["left"]] == ["aoai-unlisted"]
    assert len(world.versions()) == 2  # the accounts were already on a newer version: none is created
    assert not {r.version: r.enabled for r in world.vault.versions("cmk")}[world.first]


@pytest.mark.parametrize(
    ("version", "fragment"),
    [("not-a-version", "must be a Key Vault version id (32 hex digits)"), ("0" * 32, "has no version 000")],
)
def test_break_glass_refuses_a_bad_version_in_one_line(world: World, version: str, fragment: str) -> None:
    result = world.run("break-glass", "--key", world.key, "--version", version, "--yes")
    assert_one_line_error(result, fragment)
    assert world.writes() == []
