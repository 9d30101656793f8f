"""``rotation.fleet``: the app's and azd's target lists, with one key's entry replaced by what discovery found."""

from __future__ import annotations

import pytest

from rotation.errors import ConfigError
from rotation.fleet import with_app_target, with_azd_target
from rotation.model import KeyRef

KEY = KeyRef.parse("https://kv-prod.vault.azure.net/keys/cmk")
SUB = "00000000-0000-0000-0000-000000000001"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-keys/providers/Microsoft.KeyVault/vaults/kv-prod"
A = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/a"
B = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/B"
OTHER = {"key": "https://kv-other.vault.azure.net/keys/cmk", "accounts": [A]}


def test_the_keys_entry_is_added_after_the_others() -> None:
    assert with_app_target([OTHER], KEY, [B, A]) == [OTHER, {"key": KEY.id, "accounts": [A, B]}]


def test_the_keys_entry_is_replaced_and_keeps_its_other_fields() -> None:
    existing = {"key": "https://KV-PROD.vault.azure.net/keys/CMK", "accounts": [A], "new_versions": "key_vault"}
    assert with_app_target([existing, OTHER], KEY, [A, B]) == [
        OTHER,
        {"key": KEY.id, "accounts": [A, B], "new_versions": "key_vault"},
    ]


def test_an_entry_that_is_not_a_key_url_is_kept_as_it_is() -> None:
    odd = {"key": "not a url", "accounts": []}
    assert with_app_target([odd], KEY, [A])[0] == odd


def test_azds_entry_carries_the_vault_id_and_region_and_keeps_the_system_topic() -> None:
    existing = {"vaultId": VAULT_ID.upper(), "keyName": "CMK", "location": "x", "accounts": [], "systemTopicName": "t"}
    assert with_azd_target([existing], KEY, VAULT_ID, "swedencentral", [B, A]) == [
        {
            "vaultId": VAULT_ID,
            "keyName": "cmk",
            "location": "swedencentral",
            "accounts": [A, B],
            "systemTopicName": "t",
        }
    ]


@pytest.mark.parametrize(
    "vault_id",
    [
        VAULT_ID.replace("kv-prod", "kv-other"),
        f"/subscriptions/{SUB}/resourceGroups/rg-keys/providers/Microsoft.KeyVault/managedHSMs/kv-prod",
        "kv-prod",
    ],
)
def test_a_vault_id_of_another_vault_or_shape_is_refused_naming_the_fix(vault_id: str) -> None:
    with pytest.raises(ConfigError, match="az keyvault show --name kv-prod --query id"):
        with_azd_target([], KEY, vault_id, "swedencentral", [A])
