"""The small fleet ``python -m emulator --fleet`` seeds, and the demo too (the module docstring of ``__main__``
draws it): one key on four listed accounts in two subscriptions, and one account on it that the targets do not list."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from emulator.core import Emulator

FLEET_VAULT = "contoso-cmk"
FLEET_KEY = "aoai-cmk"
FLEET_SUBSCRIPTION = "00000000-0000-0000-0000-000000000002"  # the fleet's second one, beside the emulator's default
FLEET_ACCOUNTS = ("openai-east-1", "openai-east-2", "openai-east-3")  # in the default subscription
FLEET_OTHER_ACCOUNT = "openai-west-1"  # in FLEET_SUBSCRIPTION
FLEET_UNMANAGED = "openai-unmanaged"  # in FLEET_SUBSCRIPTION, on the key but not in the targets


def seed_fleet(emulator: Emulator) -> list[dict[str, Any]]:
    """Seed the fleet (drawn in ``emulator/__main__.py``); return its ``ROTATION_TARGETS`` (the 4 listed accounts)."""
    vault = emulator.add_vault(FLEET_VAULT, purge_protection=True)
    key = vault.create_key(
        FLEET_KEY, size=2048, key_ops=["wrapKey", "unwrapKey"], exp=emulator.clock.now() + timedelta(days=20)
    )
    encryption = {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyVaultUri": vault.url, "keyName": FLEET_KEY, "keyVersion": key.version},
    }
    listed = [emulator.arm.add_account(name, encryption=encryption)["id"] for name in FLEET_ACCOUNTS]
    listed.append(
        emulator.arm.add_account(FLEET_OTHER_ACCOUNT, encryption=encryption, subscription_id=FLEET_SUBSCRIPTION)["id"]
    )
    emulator.arm.add_account(FLEET_UNMANAGED, encryption=encryption, subscription_id=FLEET_SUBSCRIPTION)
    return [{"key": f"{vault.url}/keys/{FLEET_KEY}", "accounts": listed}]
