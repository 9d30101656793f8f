"""The Functions app on the emulator and a real Azurite, wired as ``function_app.py`` runs it in Azure.

``fleet`` seeds a vault whose key ``aoai-cmk`` expires in 20 days (so it is due: renew-before is 30 days), three
accounts on it and one bystander account on another key, builds a ``RotationApp`` for it, installs it with
``configure(app)`` and resets with ``configure(None)`` afterwards. The Functions queues are shared by every test of the
session's Azurite, so they are emptied before and after each test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, KeyVaultProperties

import function_app
from emulator.azurite import Azurite
from emulator.core import Emulator
from emulator.functions_host import FunctionsHost
from rotation.app import RotationApp, configure
from rotation.model import AccountRef
from rotation.storage import REQUESTS_QUEUE, LedgerEntry
from tests.functional.wiring import app_settings, build_app

KEY = "aoai-cmk"
OTHER_KEY = "other-cmk"
ACCOUNT_NAMES = ("openai-east-1", "openai-east-2", "openai-east-3")
BYSTANDER = "openai-other-key"


@dataclass
class Fleet:
    emulator: Emulator
    vault: Any
    storage: str
    targets: list[dict[str, Any]]
    app: RotationApp
    host: FunctionsHost
    initial_version: str
    bystander_version: str
    ledger_table: str

    @property
    def key_id(self) -> str:
        return f"{self.vault.url}/keys/{KEY}"

    def versions(self) -> list[str]:
        return [v.version for v in self.vault.versions(KEY)]

    def new_versions(self) -> list[str]:
        return [v for v in self.versions() if v != self.initial_version]

    def accounts(self) -> dict[str, tuple[str, str]]:
        """Each target account's (keyVersion, provisioningState), as ARM stores it."""
        found = {}
        for name in ACCOUNT_NAMES:
            properties = self.emulator.arm.account("rg-ai", name)["properties"]
            found[name] = (
                properties["encryption"]["keyVaultProperties"]["keyVersion"],
                properties["provisioningState"],
            )
        return found

    def repoint(self, name: str, key: str, version: str) -> None:
        """Someone else (another identity, through ARM) points account ``name`` at ``key``'s ``version``."""
        repoint(self.emulator, self.emulator.arm.account_id("rg-ai", name), self.vault.url, key, version)

    def assert_converged(self, version: str) -> None:
        assert self.accounts() == dict.fromkeys(ACCOUNT_NAMES, (version, "Succeeded"))
        bystander = self.emulator.arm.account("rg-ai", BYSTANDER)["properties"]["encryption"]["keyVaultProperties"]
        assert bystander["keyVersion"] == self.bystander_version
        assert len(self.vault.versions(OTHER_KEY)) == 1

    def pump(self, function: str = "rotation_worker", *, rounds: int = 10, one_at_a_time: bool = False) -> int:
        """Deliver the function's visible messages until none are left; the number of invocations. The host runs up
        to host.json's batchSize + newBatchThreshold of them at once; ``one_at_a_time`` delivers them one by one, for
        a test about what a delivery finds of the one before (concurrent ones would find the key locked and come back
        after the app's lock-held delay)."""
        total = 0
        for _ in range(rounds * (32 if one_at_a_time else 1)):
            invoked = self.host.pump(function, max_messages=1 if one_at_a_time else 100)
            if invoked == 0:
                return total
            total += invoked
        raise AssertionError(f"{function} still had messages after {rounds} rounds")

    def row(self, request_id: str) -> LedgerEntry:
        entry = self.app.ledger.get(request_id)
        assert entry is not None, f"request {request_id} is not in the ledger"
        return entry

    def outcome_events(self) -> list[dict[str, Any]]:
        """The CloudEvents the app published to the emulator's custom topic."""
        return [r["event"] for r in self.emulator.eventgrid.received]


def repoint(emulator: Emulator, account_id: str, vault_url: str, key: str, version: str) -> None:
    """Someone else (another identity, through ARM) points the account at ``key``'s ``version`` in ``vault_url``."""
    account = AccountRef.parse(account_id)
    arm = CognitiveServicesManagementClient(
        emulator.credential("someone"),
        account.subscription_id,
        base_url=emulator.arm_url,
        connection_verify=emulator.ca_bundle,
        polling_interval=0,
    )
    properties = KeyVaultProperties(key_name=key, key_version=version, key_vault_uri=vault_url)
    encryption = Encryption(key_source="Microsoft.KeyVault", key_vault_properties=properties)
    arm.accounts.begin_update(
        account.resource_group, account.name, Account(properties=AccountProperties(encryption=encryption))
    ).result()


def empty_queues(host: FunctionsHost) -> None:
    for name in (REQUESTS_QUEUE, f"{REQUESTS_QUEUE}-poison"):
        host.queue(name).clear_messages()


@pytest.fixture
def fleet(emulator: Emulator, azurite: Azurite) -> Iterator[Fleet]:
    vault = emulator.add_vault("contoso-cmk", purge_protection=True)
    now = datetime.now(UTC)
    current = vault.create_key(KEY, exp=now + timedelta(days=20), key_ops=["wrapKey", "unwrapKey"])
    other = vault.create_key(OTHER_KEY, exp=now + timedelta(days=200))

    def cmk(record: Any) -> dict[str, Any]:
        return {
            "keySource": "Microsoft.KeyVault",
            "keyVaultProperties": {"keyName": record.name, "keyVersion": record.version, "keyVaultUri": vault.url},
        }

    accounts = [emulator.arm.add_account(name, encryption=cmk(current))["id"] for name in ACCOUNT_NAMES]
    emulator.arm.add_account(BYSTANDER, encryption=cmk(other))
    targets = [{"key": f"{vault.url}/keys/{KEY}", "accounts": accounts}]
    # A table of its own: a later emulator may reuse a port, and so a key URL, that an earlier test's rows name.
    table = f"ledger{uuid.uuid4().hex[:12]}"
    app = build_app(emulator.endpoints(), azurite.connection_string, targets, ledger_table=table)
    settings = app_settings(emulator.endpoints(), azurite.connection_string, targets)
    host = FunctionsHost(function_app.app, azurite.connection_string, app_settings=settings)
    empty_queues(host)
    configure(app)
    try:
        yield Fleet(
            emulator, vault, azurite.connection_string, targets, app, host, current.version, other.version, table
        )
    finally:
        configure(None)
        empty_queues(host)
        TableClient.from_connection_string(azurite.connection_string, table).delete_table()
