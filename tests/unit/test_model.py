"""Identifier parsing (every bad value named in the error), account/key matching and the outcome's JSON form."""

from __future__ import annotations

import json

import pytest

from rotation.clouds import CLOUDS, Cloud
from rotation.errors import ConfigError, ConflictError, InvalidInput, PermissionDenied
from rotation.events import parse_key_event
from rotation.model import AccountRef, KeyRef, RotationOutcome, RotationRequest, Status, Trigger
from rotation.reasons import Reason
from tests.unit.factories import KEY, SUBSCRIPTION, account, request

ARM_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/aoai-1"


@pytest.mark.parametrize(
    ("text", "vault_url", "name"),
    [
        ("https://kv-prod.vault.azure.net/keys/cmk", "https://kv-prod.vault.azure.net", "cmk"),
        ("https://kv-prod.vault.azure.net/keys/cmk/", "https://kv-prod.vault.azure.net", "cmk"),
        ("  https://KV-Prod.Vault.Azure.NET/keys/Cmk-2 ", "https://kv-prod.vault.azure.net", "Cmk-2"),
        ("HTTPS://kv-prod.vault.azure.net:443/keys/cmk", "https://kv-prod.vault.azure.net", "cmk"),
        ("https://vault.localhost:8443/keys/cmk", "https://vault.localhost:8443", "cmk"),
    ],
)
def test_key_urls_are_normalised(text: str, vault_url: str, name: str) -> None:
    key = KeyRef.parse(text)
    assert (key.vault_url, key.name) == (vault_url, name)
    assert key.id == f"{vault_url}/keys/{name}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("http://kv-prod.vault.azure.net/keys/cmk", "must use https"),
        ("https://kv-prod.vault.azure.net/keys/cmk/0123abcd", "names version '0123abcd'"),
        ("https://kv-prod.vault.azure.net/secrets/cmk", "not a Key Vault key URL"),
        ("https://kv-prod.vault.azure.net/keys/", "not a Key Vault key URL"),
        ("https://kv-prod.vault.azure.net/keys/cmk_1", "key name 'cmk_1'"),
        ("https://kv-prod.vault.azure.net/keys/cmk?x=1", "query"),
        ("https://user:pw@kv-prod.vault.azure.net/keys/cmk", "user name or password"),
        ("https:///keys/cmk", "no host"),
        ("https://kv-prod.vault.azure.net:99999/keys/cmk", "Port out of range"),
        ("kv-prod/keys/cmk", "must use https"),
    ],
)
def test_bad_key_urls_are_named_in_the_error(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyRef.parse(text)
    assert fragment in str(info.value)
    assert "https://<vault>" in str(info.value) or "key name" in str(info.value)


def test_account_ids_parse_case_insensitively() -> None:
    ref = AccountRef.parse(ARM_ID)
    assert ref == AccountRef(SUBSCRIPTION, "rg-ai", "aoai-1")
    assert ref.id == ARM_ID
    lower = ARM_ID.replace("Microsoft.CognitiveServices", "microsoft.cognitiveservices").replace(
        "resourceGroups", "RESOURCEGROUPS"
    )
    assert AccountRef.parse(lower + "/") == ref


@pytest.mark.parametrize(
    ("arm_id", "fragment"),
    [
        (ARM_ID.replace("Microsoft.CognitiveServices", "Microsoft.Storage"), "not a Cognitive Services account id"),
        (ARM_ID.replace(SUBSCRIPTION, "sub-1"), "subscription id 'sub-1'"),
        (ARM_ID.replace("aoai-1", "a"), "account name 'a'"),
        (ARM_ID.replace("aoai-1", "-aoai"), "account name '-aoai'"),
        (ARM_ID.replace("aoai-1", "x" * 65), "2-64 characters"),
        (ARM_ID.replace("rg-ai", "rg."), "resource group 'rg.'"),
        (ARM_ID + "/deployments/gpt", "not a Cognitive Services account id"),
        ("aoai-1", "expected /subscriptions/"),
    ],
)
def test_bad_account_ids_are_named_in_the_error(arm_id: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        AccountRef.parse(arm_id)
    assert fragment in str(info.value)


def test_account_uses_only_its_own_key_in_its_own_vault() -> None:
    assert account().uses(KEY)
    assert account(vault_uri="https://KV-PROD.vault.azure.net/").uses(KEY)
    assert not account(vault_uri="https://kv-other.vault.azure.net/").uses(KEY)
    assert not account(key=KeyRef.parse("https://kv-prod.vault.azure.net/keys/other")).uses(KEY)
    assert not account(key_source="Microsoft.CognitiveServices").uses(KEY)
    assert not account(vault_uri="http://kv-prod.vault.azure.net/").uses(KEY)


@pytest.mark.parametrize("request_id", ["", "x" * 257, "line\nbreak"])
def test_request_ids_are_checked(request_id: str) -> None:
    with pytest.raises(InvalidInput, match="request id"):
        RotationRequest(request_id=request_id, key=KEY, trigger=Trigger.HTTP)


def test_outcome_from_error_says_whether_to_retry() -> None:
    transient = RotationOutcome.from_error(request(), ConflictError("busy"))
    assert (transient.status, transient.reason, transient.retryable) == (Status.FAILED, Reason.CONFLICT, True)
    permanent = RotationOutcome.from_error(request(), PermissionDenied("lacks keys/create on vault X"))
    assert (permanent.reason, permanent.retryable, permanent.error) == (
        Reason.PERMISSION_DENIED,
        False,
        "lacks keys/create on vault X",
    )
    assert json.loads(json.dumps(permanent.to_dict()))["reason"] == "PermissionDenied"


@pytest.mark.parametrize("cloud", CLOUDS.values(), ids=lambda cloud: cloud.name)
def test_an_event_naming_only_its_vault_is_read_in_the_apps_cloud(cloud: Cloud) -> None:
    event = parse_key_event(
        event_id="e-1",
        event_type="Microsoft.KeyVault.KeyNearExpiry",
        subject="cmk",
        data={"VaultName": "kv-prod", "ObjectType": "Key", "ObjectName": "cmk"},
        vault_suffix=cloud.vault_suffix,
    )
    assert event.key.id == f"https://kv-prod.{cloud.vault_suffix}/keys/cmk"
