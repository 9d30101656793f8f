"""Fixtures for the trigger tests: the app's functions behind ``emulator.functions_host`` (and the real Python worker),
wired to a real Azurite.

``rotation`` installs a ``RotationApp`` with ``configure(app)`` (and resets with ``configure(None)``) whose targets are
the key variants of Microsoft's sample events (vault ``sample-kv``) and one key on the emulator. Event and bad-input
tests never reach Key Vault or ARM: they stop at the queue and the ledger, which each test reads back from Azurite.
Each test gets its own ledger table, and the shared request queue is emptied around it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from azure.data.tables import TableClient

import function_app
from emulator.azurite import Azurite
from emulator.core import Emulator
from emulator.functions_host import FunctionsHost
from rotation.app import RotationApp, configure
from rotation.storage import REQUESTS_QUEUE
from tests.functional.wiring import app_settings, build_app

SAMPLE_VAULT = "https://sample-kv.vault.azure.net"
SAMPLE_KEY = f"{SAMPLE_VAULT}/keys/newsecret"  # the samples' object name, as a key
SAMPLE_ACCOUNT = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-ai"
    "/providers/Microsoft.CognitiveServices/accounts/sample-openai"
)


@dataclass
class Rotation:
    app: RotationApp
    host: FunctionsHost
    emulator_key: str

    def queued(self) -> list[str]:
        """The text of every message on the rotation queue (read without taking them)."""
        return [m.content for m in self.host.queue(REQUESTS_QUEUE).peek_messages(max_messages=32)]


@pytest.fixture(scope="module")
def emulator_vault() -> Iterator[tuple[Emulator, str]]:
    with Emulator() as emulator:
        vault = emulator.add_vault("contoso-cmk")
        record = vault.create_key("aoai-cmk")
        emulator.arm.add_account(
            "openai-east-1",
            encryption={
                "keySource": "Microsoft.KeyVault",
                "keyVaultProperties": {"keyName": "aoai-cmk", "keyVersion": record.version, "keyVaultUri": vault.url},
            },
        )
        yield emulator, f"{vault.url}/keys/aoai-cmk"


@pytest.fixture
def rotation(emulator_vault: tuple[Emulator, str], azurite: Azurite) -> Iterator[Rotation]:
    emulator, key = emulator_vault
    account = emulator.arm.account("rg-ai", "openai-east-1")["id"]
    targets = [{"key": SAMPLE_KEY, "accounts": [SAMPLE_ACCOUNT]}, {"key": key, "accounts": [account]}]
    table = f"ledger{uuid.uuid4().hex[:12]}"
    app = build_app(emulator.endpoints(), azurite.connection_string, targets, ledger_table=table)
    settings = app_settings(emulator.endpoints(), azurite.connection_string, targets)
    host = FunctionsHost(function_app.app, azurite.connection_string, app_settings=settings)
    host.queue(REQUESTS_QUEUE).clear_messages()
    configure(app)
    try:
        yield Rotation(app, host, key)
    finally:
        configure(None)
        host.queue(REQUESTS_QUEUE).clear_messages()
        TableClient.from_connection_string(azurite.connection_string, table).delete_table()
