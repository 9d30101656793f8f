"""``discover``: every account on a key across subscriptions, through Resource Graph or ARM's listing, and the key's
entry written into the app's and azd's target files. In-process CLI, the emulator, the real SDKs."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from emulator.core import Emulator
from emulator.credential import DEFAULT_IDENTITY
from rotation.cli import main
from rotation.connection import AzureConnection
from rotation.model import AccountRef

OTHER_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000b2"
VAULT_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-keys/providers/Microsoft.KeyVault/vaults/"
    "kv-fleet"
)


def encryption(vault_url: str, version: str, key_name: str = "cmk") -> dict[str, Any]:
    return {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyVaultUri": vault_url, "keyName": key_name, "keyVersion": version},
    }


@dataclass
class Fleet:
    """Key ``cmk``: ``listed`` (in ROTATION_TARGETS) and ``unmanaged`` in the emulator's subscription, ``elsewhere``
    in another; plus an account on another key and one with Microsoft-managed keys."""

    emulator: Emulator
    key: str
    listed: AccountRef
    unmanaged: AccountRef
    elsewhere: AccountRef

    def run(self, *argv: str, targets: bool = True, **settings: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        env = {"ROTATION_TARGETS": json.dumps([{"key": self.key, "accounts": [self.listed.id]}])} if targets else {}
        env.update(settings)
        connection = AzureConnection(
            self.emulator.credential(),
            arm_endpoint=self.emulator.arm_url,
            ca_bundle=self.emulator.ca_bundle,
            verify_challenge_resource=False,
        )
        code = main(list(argv), env=env, connection=connection, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    def writes(self) -> list[str]:
        return [c.operation for c in self.emulator.control.calls() if c.method in ("PUT", "PATCH", "DELETE")]


@pytest.fixture
def fleet(emulator: Emulator) -> Fleet:
    vault = emulator.add_vault("kv-fleet")
    version = vault.create_key("cmk", exp=emulator.clock.now() + timedelta(days=60)).version
    other = vault.create_key("other", exp=emulator.clock.now() + timedelta(days=60)).version

    def add(name: str, **seed: Any) -> AccountRef:
        seed.setdefault("encryption", encryption(vault.url, version))
        return AccountRef.parse(emulator.arm.add_account(name, **seed)["id"])

    made = Fleet(
        emulator,
        f"{vault.url}/keys/cmk",
        add("aoai-listed"),
        add("aoai-unmanaged"),
        add("aoai-elsewhere", subscription_id=OTHER_SUBSCRIPTION),
    )
    add("aoai-other-key", encryption=encryption(vault.url, other, "other"))
    add("aoai-microsoft-keys", encryption={"keySource": "Microsoft.CognitiveServices"})
    emulator.control.reset_calls()
    return made


def test_resource_graph_finds_every_account_on_the_key_in_every_subscription(fleet: Fleet) -> None:
    code, out, err = fleet.run("discover", "--key", fleet.key, "--json")

    assert code == 0, err
    report = json.loads(out)
    assert (report["path"], report["searched"], report["fallback_reason"]) == ("resource_graph", "tenant", None)
    found = {a["id"]: a["listed"] for a in report["accounts"]}
    assert found == {fleet.listed.id: True, fleet.unmanaged.id: False, fleet.elsewhere.id: False}
    assert {a["subscription"] for a in report["accounts"]} == {fleet.listed.subscription_id, OTHER_SUBSCRIPTION}
    assert fleet.writes() == []


def test_the_table_marks_the_accounts_the_targets_do_not_list(fleet: Fleet) -> None:
    code, out, _ = fleet.run("discover", "--key", fleet.key)

    assert code == 0
    assert out.splitlines()[0].endswith("3 accounts, through Resource Graph (tenant)")
    line = next(line for line in out.splitlines() if "aoai-unmanaged" in line)
    assert "UNMANAGED" in line


def test_without_resource_graph_it_lists_the_known_subscriptions_through_arm_and_says_why(fleet: Fleet) -> None:
    fleet.emulator.arm.deny(DEFAULT_IDENTITY, "graph")

    code, out, err = fleet.run("discover", "--key", fleet.key, "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["path"] == "arm" and "AuthorizationFailed" in report["fallback_reason"]
    # Only the targets' subscription is known: the account in the other one cannot be found this way.
    assert {a["id"] for a in report["accounts"]} == {fleet.listed.id, fleet.unmanaged.id}

    code, out, _ = fleet.run(
        "discover", "--key", fleet.key, "--json", "--subscription", OTHER_SUBSCRIPTION, "--subscription",
        fleet.listed.subscription_id,
    )  # fmt: skip
    assert code == 0
    assert {a["id"] for a in json.loads(out)["accounts"]} == {fleet.listed.id, fleet.unmanaged.id, fleet.elsewhere.id}


def test_it_writes_the_same_fleet_for_the_app_and_for_azd(fleet: Fleet, tmp_path: Path) -> None:
    targets, azd = tmp_path / "targets.json", tmp_path / "azd.json"
    kept = {"key": "https://kv-kept.vault.azure.net/keys/k", "accounts": [fleet.listed.id]}
    targets.write_text(json.dumps([kept]))

    code, out, err = fleet.run(
        "discover", "--key", fleet.key, "--write-targets", str(targets), "--write-azd", str(azd), "--vault-id",
        VAULT_ID, targets=False,
    )  # fmt: skip

    assert code == 0, err
    found = sorted([fleet.listed.id, fleet.unmanaged.id, fleet.elsewhere.id], key=str.lower)
    assert json.loads(targets.read_text()) == [kept, {"key": fleet.key, "accounts": found}]
    assert json.loads(azd.read_text()) == [
        {"vaultId": VAULT_ID, "keyName": "cmk", "location": "eastus", "accounts": found}
    ]
    assert f"wrote {targets}" in out and f"wrote {azd}" in out
    assert fleet.writes() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--write-azd", "azd.json"], "--write-azd needs --vault-id"),
        (["--vault-id", "kv-fleet"], "is not the ARM id of vault"),
        (["--subscription", "not-a-guid"], "subscription ids (GUIDs)"),
        (["--write-targets", "."], "cannot be read as JSON"),
    ],
)
def test_bad_arguments_exit_2_before_anything_is_read(fleet: Fleet, argv: list[str], message: str) -> None:
    code, out, err = fleet.run("discover", "--key", fleet.key, *argv)

    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err
    assert [c.operation for c in fleet.emulator.control.calls() if c.status != 401] == []


def test_status_names_the_unmanaged_accounts_as_drift_and_says_when_nothing_was_searched(fleet: Fleet) -> None:
    code, out, err = fleet.run("status")
    _, as_json, _ = fleet.run("status", "-o", "json")

    assert (code, err) == (0, "") and out.startswith("discovery: through Resource Graph (tenant)\n")
    [line] = [line for line in out.splitlines() if line.startswith("  unmanaged")]
    assert fleet.unmanaged.id in line and fleet.elsewhere.id in line and fleet.listed.id not in line
    report = json.loads(as_json)
    assert report["discovery"]["path"] == "resource_graph"
    [key] = report["keys"]
    assert sorted(a["account"] for a in key["drift"]["unmanaged"]) == sorted([fleet.unmanaged.id, fleet.elsewhere.id])
    assert [a["account"] for a in key["accounts"]] == [fleet.listed.id]  # reported, not enrolled

    _, enrolled, _ = fleet.run("status", "-o", "json", ROTATION_UNMANAGED="enrol")
    [key] = json.loads(enrolled)["keys"]
    assert {a["account"] for a in key["accounts"]} == {fleet.listed.id, fleet.unmanaged.id, fleet.elsewhere.id}

    code, out, _ = fleet.run("status", ROTATION_DISCOVERY="off")
    assert code == 0 and out.startswith("discovery: off")
    assert "  unmanaged: not searched" in out and fleet.unmanaged.id not in out
    assert fleet.writes() == []


def test_under_enrol_a_forced_rotation_repoints_the_unmanaged_accounts_too(fleet: Fleet) -> None:
    code, out, _ = fleet.run("rotate", "--key", fleet.key, "--force", "--yes", "-o", "json", ROTATION_UNMANAGED="enrol")

    outcome = json.loads(out)
    assert code == 0 and outcome["status"] == "succeeded"
    moved = {a["account"] for a in outcome["accounts"] if a["status"] == "succeeded"}
    assert moved == {fleet.listed.id, fleet.unmanaged.id, fleet.elsewhere.id}
    for account in (fleet.listed, fleet.unmanaged, fleet.elsewhere):
        found = fleet.emulator.arm.account(
            account.resource_group, account.name, subscription_id=account.subscription_id
        )
        assert found["properties"]["encryption"]["keyVaultProperties"]["keyVersion"] == outcome["to_version"]
