"""The emulated Key Vault data plane, driven by the real ``KeyClient`` and checked on the wire against the REST spec."""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.keyvault.keys import (
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from azure.keyvault.keys._shared import http_challenge_cache

from emulator import Emulator, EmulatorCredential, FaultRule
from emulator.keyvault import KEY_PERMISSIONS, KeyNotFoundError, Vault
from tests.swagger import KEYVAULT, example, validate

EXAMPLES = "keyvault/data-plane/Microsoft.KeyVault/stable"
API = "2025-07-01"
CHALLENGE = (
    'Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", '
    'resource="https://vault.azure.net"'
)


@pytest.fixture(autouse=True)
def _forget_challenges() -> None:
    """The SDK caches Key Vault's challenge per host and port for the whole process (azure-facts §3.4). A later
    emulator may get a port an earlier one had, and its first request would then skip the 401 these tests count."""
    http_challenge_cache.clear()


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[Emulator]:
    """One emulator for the table-driven tests that only read state or are refused (starting one takes ~0.4 s)."""
    with Emulator() as emu:
        yield emu


def shared_vault(emulator: Emulator, name: str, **settings: Any) -> Vault:
    existing: Vault | None = emulator.vaults.get(name)
    return existing if existing is not None else emulator.add_vault(name, **settings)


def client(emulator: Emulator, vault: Vault, identity: str = "rotation-app", **kwargs: Any) -> KeyClient:
    return KeyClient(
        vault.url,
        emulator.credential(identity),
        verify_challenge_resource=False,
        connection_verify=emulator.ca_bundle,
        **kwargs,
    )


def https(
    emulator: Emulator, url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    try:
        with urllib.request.urlopen(request, context=context) as response:
            text = response.read()
            return response.status, dict(response.headers), json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, dict(exc.headers), json.loads(text) if text else None


def raw(
    emulator: Emulator,
    vault: Vault,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: bool = True,
    api_version: str | None = API,
    identity: str = "rotation-app",
) -> tuple[int, dict[str, str], Any]:
    """One request to the vault as the wire sees it: a bearer token from the emulator's credential, no SDK."""
    url = vault.url + path
    if api_version is not None:
        url += ("&" if "?" in path else "?") + f"api-version={api_version}"
    headers = {}
    if token:
        headers["Authorization"] = (
            "Bearer " + emulator.credential(identity).get_token("https://vault.azure.net/.default").token
        )
    return https(emulator, url, method, body, headers)


def admin(emulator: Emulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _, answer = https(emulator, emulator.admin_url + path, method, body)
    return status, answer


def statuses(emulator: Emulator, operation: str) -> list[int]:
    return [call.status for call in emulator.control.calls(operation)]


def shape_matches_example(body: dict[str, Any], sample: dict[str, Any]) -> None:
    """Every field the spec example shows is present, at every level, with the same JSON type."""
    for name, value in sample.items():
        assert name in body, (name, body)
        if isinstance(value, dict) and name != "tags":
            shape_matches_example(body[name], value)
        else:
            assert type(body[name]) is type(value), (name, body[name], value)


def reported_versions(emulator: Emulator) -> list[str]:
    """The versions the vaults reported as new, in order: the ``KeyNewVersionCreated`` events Event Grid published."""
    return [
        e.event_grid["data"]["Version"]
        for e in emulator.eventgrid.published
        if e.event_grid["eventType"] == "Microsoft.KeyVault.KeyNewVersionCreated"
    ]


# The challenge --------------------------------------------------------------------------------------------------
def test_a_request_without_a_token_is_challenged_and_never_acted_on(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-challenge")
    vault.create_key("cmk")
    for path in ("/keys/cmk/create", "/keys/fresh/create", "/keys/cmk/rotate"):
        status, headers, body = raw(emulator, vault, "POST", path, token=False)
        assert status == 401
        assert headers["WWW-Authenticate"] == CHALLENGE
        validate(KEYVAULT, "KeyVaultError", body)
        assert body["error"]["code"] == "Unauthorized"
    assert vault.key_names() == ["cmk"]
    assert len(vault.versions("cmk")) == 1

    created = client(emulator, vault).create_rsa_key("fresh")
    assert statuses(emulator, "keyvault.create_key") == [401, 401, 401, 200]  # 2 raw challenges, then the SDK
    assert [r.version for r in vault.versions("fresh")] == [created.properties.version]


class ManagementTokens:
    """A credential with a classic bug: whatever Key Vault's challenge asks for, it hands out an ARM token."""

    def __init__(self, identity: str = "rotation-app") -> None:
        self.inner = EmulatorCredential(identity)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.inner.get_token("https://management.azure.com/.default")


def test_a_token_for_another_audience_gets_401_akv10022_and_is_never_acted_on(emulator: Emulator) -> None:
    """Key Vault accepts only tokens for https://vault.azure.net (azure-facts §10.9). Its answer to an ARM token, as
    captured in Azure/go-autorest#525 and crossplane-contrib/provider-azure#346: 401 ``Unauthorized``
    "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com/." with the
    usual challenge (Learn, "Authentication, requests and responses")."""
    vault = emulator.add_vault("kv-audience")
    vault.create_key("cmk")
    keys = KeyClient(
        vault.url, ManagementTokens(), verify_challenge_resource=False, connection_verify=emulator.ca_bundle
    )
    with pytest.raises(ClientAuthenticationError) as caught:
        keys.create_rsa_key("cmk")
    assert caught.value.status_code == 401 and caught.value.error is not None
    assert caught.value.error.code == "Unauthorized"
    assert caught.value.error.message == (
        "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com."
    )
    # the bodiless first try is challenged, the SDK answers with its (wrong) token once, and gives up
    assert statuses(emulator, "keyvault.create_key") == [401, 401]
    assert len(vault.versions("cmk")) == 1 and reported_versions(emulator) == [vault.latest("cmk").version]

    arm_token = EmulatorCredential().get_token("https://management.azure.com/.default").token
    status, headers, body = https(
        emulator, f"{vault.url}/keys/cmk?api-version={API}", headers={"Authorization": f"Bearer {arm_token}"}
    )
    assert status == 401 and headers["WWW-Authenticate"] == CHALLENGE
    validate(KEYVAULT, "KeyVaultError", body)
    assert body["error"]["code"] == "Unauthorized"
    # Entra ID v1 tokens can carry the resource with a trailing slash; Key Vault's own audience is accepted either way
    slashed = EmulatorCredential().get_token("https://vault.azure.net//.default").token
    status, _, body = https(
        emulator, f"{vault.url}/keys/cmk?api-version={API}", headers={"Authorization": f"Bearer {slashed}"}
    )
    assert status == 200, body


# Create ---------------------------------------------------------------------------------------------------------
def test_create_makes_real_rsa_keys_and_new_versions_of_an_existing_name(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-create")
    keys = client(emulator, vault)
    expires = datetime(2031, 1, 1, tzinfo=UTC)
    first = keys.create_rsa_key(
        "cmk", size=2048, key_operations=["wrapKey", "unwrapKey"], expires_on=expires, tags={"by": "test"}
    )
    second = keys.create_rsa_key("cmk")

    assert len(first.key.n) == 256 and first.key.e == b"\x01\x00\x01"
    assert first.key.n != second.key.n
    assert first.key_operations == ["wrapKey", "unwrapKey"]
    assert first.properties.expires_on == expires and first.properties.tags == {"by": "test"}
    assert first.id == f"{vault.url}/keys/cmk/{first.properties.version}"
    assert re.fullmatch(r"[0-9a-f]{32}", first.properties.version)
    assert second.key_operations == ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
    assert [r.version for r in vault.versions("cmk")] == [first.properties.version, second.properties.version]
    assert reported_versions(emulator) == [first.properties.version, second.properties.version]

    sample = example(f"{EXAMPLES}/7.5/examples/CreateKey-example.json")
    status, _, body = raw(emulator, vault, "POST", "/keys/CreateSoftKeyTest/create", sample["parameters"]["parameters"])
    assert status == 200
    validate(KEYVAULT, "KeyBundle", body)
    shape_matches_example(body, sample["responses"]["200"]["body"])
    assert body["tags"] == sample["parameters"]["parameters"]["tags"]
    assert body["attributes"]["recoveryLevel"] == "Recoverable" and body["attributes"]["recoverableDays"] == 90
    assert body["attributes"]["created"] == body["attributes"]["updated"]
    assert abs(body["attributes"]["created"] - emulator.clock.timestamp()) <= 2
    assert len(reported_versions(emulator)) == 3


def test_concurrent_creates_each_make_one_version(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-concurrent")
    keys = client(emulator, vault)
    keys.create_rsa_key("cmk")
    with ThreadPoolExecutor(max_workers=6) as pool:
        made = list(pool.map(lambda _: keys.create_rsa_key("cmk").properties.version, range(6)))
    assert len(set(made)) == 6
    assert len(vault.versions("cmk")) == 7


@pytest.mark.parametrize(
    ("body", "name", "message"),
    [
        ({"kty": "RSA"}, "bad_name", "Key name 'bad_name' is invalid"),
        ({"kty": "RSA"}, "k" * 128, "is invalid; use 1-127 letters"),
        ({"kty": "RSA", "key_size": 1024}, "cmk", "Key size 1024 is invalid for RSA"),
        ({"kty": "RSA", "key_size": "2048"}, "cmk", "Key size '2048' is invalid"),
        ({"kty": "RSA", "key_size": 2048.0}, "cmk", "Key size 2048.0 is invalid"),
        ({"kty": "RSA", "public_exponent": 65537.0}, "cmk", "Public exponent 65537.0 is not supported"),
        ({"kty": "EC"}, "cmk", "Key type 'EC' is not emulated"),
        ({"kty": "oct-HSM"}, "cmk", "Key type 'oct-HSM' is not emulated"),
        ({"kty": "DSA"}, "cmk", "Key type 'DSA' is invalid"),
        ({"kty": "RSA-HSM"}, "cmk", "needs a premium vault; vault 'kv-bad' has SKU 'standard'"),
        ({"kty": "RSA", "key_ops": ["fly"]}, "cmk", "key_ops ['fly'] are invalid"),
        ({"kty": "RSA", "public_exponent": 17}, "cmk", "Public exponent 17 is not supported"),
        ({"kty": "RSA", "attributes": {"exp": "soon"}}, "cmk", "exp must be epoch seconds"),
        ({"kty": "RSA", "tags": {"n": 1}}, "cmk", "tags must be an object of string values"),
        ({"kty": "RSA", "attributes": []}, "cmk", "'attributes' must be a JSON object"),
        ({"key_size": 2048}, "cmk", "needs 'kty'"),
        (["RSA"], "cmk", "The create request body must be a JSON object"),
    ],
)
def test_bad_create_parameters_get_400_naming_the_value(
    shared_emulator: Emulator, body: Any, name: str, message: str
) -> None:
    emulator = shared_emulator
    vault = shared_vault(emulator, "kv-bad")
    status, _, answer = raw(emulator, vault, "POST", f"/keys/{name}/create", body)
    assert status == 400, answer
    validate(KEYVAULT, "KeyVaultError", answer)
    assert answer["error"]["code"] == "BadParameter"
    assert message in answer["error"]["message"]
    assert vault.key_names() == []


def test_sdk_sees_400_for_bad_names_sizes_and_hsm_in_a_standard_vault(emulator: Emulator) -> None:
    standard = emulator.add_vault("kv-standard")
    premium = emulator.add_vault("kv-premium", sku="premium")
    keys = client(emulator, standard)
    for call, fragment in [
        (lambda: keys.create_rsa_key("no_underscores"), "no_underscores"),
        (lambda: keys.create_rsa_key("cmk", size=1024), "1024"),
        (lambda: keys.create_rsa_key("cmk", hardware_protected=True), "premium"),
    ]:
        with pytest.raises(HttpResponseError) as caught:
            call()
        assert caught.value.status_code == 400 and fragment in str(caught.value.message)
    hsm = client(emulator, premium).create_rsa_key("cmk", hardware_protected=True)
    assert hsm.key_type == "RSA-HSM" and premium.latest("cmk").hsm


# Get --------------------------------------------------------------------------------------------------------------
def test_get_latest_and_by_version(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-get")
    old = vault.create_key("cmk", tags={"n": "1"})
    new = vault.create_key("cmk")
    keys = client(emulator, vault)
    assert keys.get_key("cmk").properties.version == new.version
    assert keys.get_key("cmk", old.version).properties.tags == {"n": "1"}

    sample = example(f"{EXAMPLES}/7.5/examples/GetKey-example.json")["responses"]["200"]["body"]
    for path, version in [("/keys/cmk/", new), ("/keys/cmk", new), (f"/keys/cmk/{old.version}", old)]:
        status, _, body = raw(emulator, vault, "GET", path)
        assert status == 200
        validate(KEYVAULT, "KeyBundle", body)
        assert body["key"]["kid"] == version.kid
        shape_matches_example({**body, "tags": body.get("tags", {})}, sample)


def test_unknown_keys_and_versions_are_404_key_not_found(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-missing")
    vault.create_key("cmk")
    keys = client(emulator, vault)
    with pytest.raises(ResourceNotFoundError) as caught:
        keys.get_key("missing")
    assert "A key with (name/id) missing was not found in this key vault" in str(caught.value.message)
    with pytest.raises(ResourceNotFoundError):
        keys.rotate_key("missing")
    with pytest.raises(ResourceNotFoundError):
        keys.get_key_rotation_policy("missing")
    for method, path in [
        ("GET", "/keys/cmk/0123456789abcdef0123456789abcdef"),
        ("PATCH", "/keys/missing/"),
        ("GET", "/keys/missing/versions"),
        ("PUT", "/keys/missing/rotationpolicy"),
    ]:
        status, _, body = raw(emulator, vault, method, path, {} if method in ("PATCH", "PUT") else None)
        assert status == 404, (method, path, body)
        validate(KEYVAULT, "KeyVaultError", body)
        assert body["error"]["code"] == "KeyNotFound"
    with pytest.raises(KeyNotFoundError, match="no key 'cmk/nope'"):
        vault.get("cmk", "nope")


# List versions ----------------------------------------------------------------------------------------------------
def test_list_versions_pages_across_next_links(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-list")
    made = [vault.create_key("cmk", tags={"i": str(i)}).version for i in range(30)]
    listed = [p.version for p in client(emulator, vault).list_properties_of_key_versions("cmk", max_page_size=7)]
    assert listed == made
    assert statuses(emulator, "keyvault.list_versions").count(200) == 5  # 7 + 7 + 7 + 7 + 2

    status, _, page = raw(emulator, vault, "GET", "/keys/cmk/versions?maxresults=7")
    assert status == 200
    validate(KEYVAULT, "KeyListResult", page)
    shape_matches_example(page, {"value": [], "nextLink": ""})
    assert all("key" not in item and set(item) == {"kid", "attributes", "tags"} for item in page["value"])
    assert page["nextLink"].startswith(f"{vault.url}/keys/cmk/versions?api-version={API}&$skiptoken=")
    assert page["nextLink"].endswith("&maxresults=7")
    seen = [item["kid"] for item in page["value"]]
    while "nextLink" in page:
        token = emulator.credential().get_token("https://vault.azure.net/.default").token
        status, _, page = https(emulator, page["nextLink"], headers={"Authorization": f"Bearer {token}"})
        assert status == 200
        validate(KEYVAULT, "KeyListResult", page)
        seen += [item["kid"] for item in page["value"]]
    assert seen == [f"{vault.url}/keys/cmk/{v}" for v in made]

    status, _, page = raw(emulator, vault, "GET", "/keys/cmk/versions")
    assert len(page["value"]) == 25 and "nextLink" in page
    for query, message in [
        ("maxresults=0", "maxresults '0' is invalid"),
        ("maxresults=26", "maxresults '26' is invalid"),
        ("maxresults=many", "maxresults 'many' is invalid"),
        ("$skiptoken=forged", "was not issued by this vault"),
    ]:
        status, _, body = raw(emulator, vault, "GET", f"/keys/cmk/versions?{query}")
        assert status == 400 and message in body["error"]["message"], body


def test_list_keys_gives_one_versionless_item_per_key(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-keys")
    for name in ("b-key", "a-key", "b-key"):
        vault.create_key(name)
    assert sorted(p.name for p in client(emulator, vault).list_properties_of_keys()) == ["a-key", "b-key"]
    status, _, page = raw(emulator, vault, "GET", "/keys?maxresults=1")
    assert status == 200
    validate(KEYVAULT, "KeyListResult", page)
    assert page["value"][0]["kid"] == f"{vault.url}/keys/a-key" and "nextLink" in page


# Update -----------------------------------------------------------------------------------------------------------
def test_update_changes_one_version(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-update")
    old = vault.create_key("cmk")
    latest = vault.create_key("cmk")
    emulator.clock.advance(timedelta(hours=1))
    expires = datetime(2032, 6, 1, tzinfo=UTC)
    updated = client(emulator, vault).update_key_properties(
        "cmk", old.version, enabled=False, expires_on=expires, tags={"state": "retired"}
    )
    assert (updated.properties.enabled, updated.properties.expires_on) == (False, expires)
    assert updated.properties.tags == {"state": "retired"}
    stored = vault.get("cmk", old.version)
    assert not stored.enabled and stored.updated >= old.updated + 3600 and stored.n == old.n
    assert vault.latest("cmk") == latest

    sample = example(f"{EXAMPLES}/2025-06-01/examples/UpdateKey-example.json")
    status, _, body = raw(emulator, vault, "PATCH", "/keys/cmk/", sample["parameters"]["parameters"])
    assert status == 200
    validate(KEYVAULT, "KeyBundle", body)
    shape_matches_example(body, sample["responses"]["200"]["body"])
    assert body["key"]["kid"] == latest.kid
    assert body["key"]["key_ops"] == ["decrypt", "encrypt"]
    assert (body["attributes"]["enabled"], body["attributes"]["nbf"], body["attributes"]["exp"]) == (
        False,
        631180800,
        662716800,
    )
    status, _, body = raw(emulator, vault, "PATCH", "/keys/cmk/", {"attributes": {"enabled": "no"}})
    assert status == 400 and "enabled must be true or false; got 'no'" in body["error"]["message"]
    assert reported_versions(emulator) == [old.version, latest.version]  # updates are not new versions


# Rotate and the rotation policy ----------------------------------------------------------------------------------
def test_rotate_makes_a_version_like_the_latest_expiring_per_policy(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-rotate", sku="premium")
    vault.create_key("cmk", kty="RSA-HSM", size=3072, key_ops=["wrapKey", "unwrapKey"], tags={"request": "r1"})
    keys = client(emulator, vault)
    unpolicied = keys.rotate_key("cmk")
    assert unpolicied.properties.expires_on is None and unpolicied.key_type == "RSA-HSM"
    assert unpolicied.key_operations == ["wrapKey", "unwrapKey"] and len(unpolicied.key.n) == 384
    assert unpolicied.properties.tags is None or unpolicied.properties.tags == {}

    keys.update_key_rotation_policy("cmk", KeyRotationPolicy(expires_in="P90D"))
    rotated = keys.rotate_key("cmk")
    assert rotated.properties.expires_on - rotated.properties.created_on == timedelta(days=90)
    status, _, body = raw(emulator, vault, "POST", "/keys/cmk/rotate")
    assert status == 200
    validate(KEYVAULT, "KeyBundle", body)
    shape_matches_example(
        body,
        {
            k: v
            for k, v in example(f"{EXAMPLES}/2025-06-01/examples/RotateKey-example.json")["responses"]["200"][
                "body"
            ].items()
            if k != "tags"
        },
    )
    assert len(vault.versions("cmk")) == 4
    assert reported_versions(emulator) == [r.version for r in vault.versions("cmk")]


def test_rotation_policy_defaults_then_round_trips_the_spec_example(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-policy")
    vault.create_key("cmk")
    keys = client(emulator, vault)
    default = keys.get_key_rotation_policy("cmk")
    assert default.expires_in is None
    assert [(a.action, a.time_before_expiry) for a in default.lifetime_actions] == [
        (KeyRotationPolicyAction.notify, "P30D")
    ]

    sample = example(f"{EXAMPLES}/2025-07-01/examples/UpdateKeyRotationPolicy-example.json")
    status, _, body = raw(emulator, vault, "PUT", "/keys/cmk/rotationpolicy", sample["parameters"]["keyRotationPolicy"])
    assert status == 200
    validate(KEYVAULT, "KeyRotationPolicy", body)
    expected = sample["responses"]["200"]["body"]
    shape_matches_example(body, expected)
    assert body["id"] == f"{vault.url}/keys/cmk/rotationpolicy"
    assert body["lifetimeActions"] == expected["lifetimeActions"]
    assert body["attributes"]["expiryTime"] == "P2Y"
    status, _, fetched = raw(emulator, vault, "GET", "/keys/cmk/rotationpolicy")
    assert fetched == body
    validate(KEYVAULT, "KeyRotationPolicy", fetched)
    shape_matches_example(
        fetched,
        example(f"{EXAMPLES}/2025-06-01/examples/GetKeyRotationPolicy-example.json")["responses"]["200"]["body"],
    )

    emulator.clock.advance(timedelta(minutes=5))
    policy = keys.update_key_rotation_policy(
        "cmk",
        KeyRotationPolicy(
            expires_in="P120D",
            lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P30D")],
        ),
    )
    assert policy.expires_in == "P120D" and policy.lifetime_actions[0].time_before_expiry == "P30D"
    assert policy.updated_on - policy.created_on >= timedelta(minutes=5)
    with pytest.raises(HttpResponseError) as caught:
        keys.update_key_rotation_policy("cmk", KeyRotationPolicy(expires_in="P10D"))
    assert caught.value.status_code == 400 and "at least 28 days" in str(caught.value.message)


def test_a_policy_without_notify_gets_the_default_notify_and_an_empty_one_restores_the_default(
    emulator: Emulator,
) -> None:
    """Key Vault stores its default Notify (``timeBeforeExpiry`` P30D) with a policy sent without one, and answers
    with it (azure-sdk-for-js recordings: ``PUT /rotationpolicy`` with only a Rotate action answers Rotate + Notify
    P30D; azure-facts §10.10). ``lifetimeActions: []`` restores the default actions (Java SDK
    ``KeyRotationPolicyProperties``: "reset the key rotation policy to its default values by setting lifetimeActions
    to an empty array")."""
    vault = emulator.add_vault("kv-notify")
    vault.create_key("cmk")
    keys = client(emulator, vault)
    policy = keys.update_key_rotation_policy(
        "cmk",
        KeyRotationPolicy(
            lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P2M")]
        ),
    )
    assert [(a.action, a.time_after_create, a.time_before_expiry) for a in policy.lifetime_actions] == [
        (KeyRotationPolicyAction.rotate, "P2M", None),
        (KeyRotationPolicyAction.notify, None, "P30D"),
    ]
    status, _, fetched = raw(emulator, vault, "GET", "/keys/cmk/rotationpolicy")
    assert status == 200
    validate(KEYVAULT, "KeyRotationPolicy", fetched)
    assert fetched["lifetimeActions"] == [
        {"trigger": {"timeAfterCreate": "P2M"}, "action": {"type": "Rotate"}},
        {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}},
    ]
    assert vault.notify_before("cmk") == timedelta(days=30)

    notify_early = [KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P45D")]
    policy = keys.update_key_rotation_policy("cmk", KeyRotationPolicy(expires_in="P90D", lifetime_actions=notify_early))
    assert [(a.action, a.time_before_expiry) for a in policy.lifetime_actions] == [
        (KeyRotationPolicyAction.notify, "P45D")
    ]
    assert vault.notify_before("cmk") == timedelta(days=45)

    status, _, reset = raw(emulator, vault, "PUT", "/keys/cmk/rotationpolicy", {"lifetimeActions": []})
    assert status == 200
    assert reset["lifetimeActions"] == [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]
    assert reset["attributes"]["created"] <= reset["attributes"]["updated"]
    assert vault.notify_before("cmk") == timedelta(days=30)


def test_notify_before_follows_the_policy_and_counts_months_back_from_the_expiry(emulator: Emulator) -> None:
    """``Vault.notify_before``: how long before ``exp`` Event Grid's ``KeyNearExpiry`` is due (Learn, "Configure
    cryptographic key auto-rotation": notification time can be set in days, months or years before expiry)."""
    vault = emulator.add_vault("kv-notify-month")
    vault.create_key("cmk", exp=datetime(2031, 3, 31, tzinfo=UTC))
    assert vault.notify_before("cmk") == timedelta(days=30)  # the default policy
    vault.set_rotation_policy("cmk", [("Notify", "timeBeforeExpiry", "P1M")], "P1Y")
    assert vault.notify_before("cmk") == timedelta(days=31)  # one month before 2031-03-31 is 2031-02-28
    with pytest.raises(KeyNotFoundError):
        vault.notify_before("missing")


def test_the_rotate_action_fires_on_the_emulator_clock_once_per_trigger(emulator: Emulator) -> None:
    """A policy's Rotate action is Key Vault's scheduled rotation (Learn, "Configure cryptographic key
    auto-rotation": "Automatically renew at a given time after creation"): when the clock passes ``timeAfterCreate``
    after the latest version's creation, the vault makes one new version as ``rotate`` does, and Event Grid hears
    ``KeyNewVersionCreated``. The new version starts the next period."""
    vault = emulator.add_vault("kv-autorotate")
    first = vault.create_key("cmk", key_ops=["wrapKey", "unwrapKey"])
    vault.create_key("manual")  # no Rotate action: never rotated by the vault
    keys = client(emulator, vault)
    keys.update_key_rotation_policy(
        "cmk",
        KeyRotationPolicy(
            expires_in="P90D",
            lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")],
        ),
    )
    assert vault.rotation_due("cmk") == datetime.fromtimestamp(first.created, UTC) + timedelta(days=30)
    emulator.clock.advance(timedelta(days=29))
    assert len(vault.versions("cmk")) == 1
    emulator.clock.advance(timedelta(days=1, seconds=5))
    rotated = vault.versions("cmk")
    assert len(rotated) == 2 and rotated[-1].key_ops == ["wrapKey", "unwrapKey"]
    assert rotated[-1].exp == rotated[-1].created + 90 * 86400  # as rotate makes it: exp = now + expiryTime
    assert reported_versions(emulator) == [first.version, vault.latest("manual").version, rotated[-1].version]
    emulator.clock.advance(timedelta(days=1))
    emulator.clock.advance(timedelta(days=1))
    assert len(vault.versions("cmk")) == 2  # that trigger has fired; the next is 30 days after the new version
    assert keys.get_key("cmk").properties.version == rotated[-1].version
    emulator.clock.advance(timedelta(days=400))  # one advance rotates once, however far it goes
    assert len(vault.versions("cmk")) == 3 and len(vault.versions("manual")) == 1


def test_a_rotate_action_before_expiry_fires_when_the_clock_nears_exp(emulator: Emulator) -> None:
    """ "Automatically renew at a given time before expiry. It requires 'Expiry Time' set on rotation policy and
    'Expiration Date' set on the key" (Learn, "Configure cryptographic key auto-rotation")."""
    vault = emulator.add_vault("kv-autorotate-exp")
    now = emulator.clock.now()
    vault.create_key("cmk", exp=now + timedelta(days=60))
    vault.create_key("no-exp")
    for name in ("cmk", "no-exp"):
        vault.set_rotation_policy(name, [("Rotate", "timeBeforeExpiry", "P30D")], "P90D")
    assert vault.rotation_due("no-exp") is None
    emulator.clock.advance(timedelta(days=29))
    assert len(vault.versions("cmk")) == 1
    emulator.clock.advance(timedelta(days=2))
    latest = vault.latest("cmk")
    assert len(vault.versions("cmk")) == 2 and latest.exp == latest.created + 90 * 86400
    assert len(vault.versions("no-exp")) == 1


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"attributes": {"expiryTime": "P27D"}}, "expiryTime 'P27D' is too short"),
        ({"attributes": {"expiryTime": "ninety days"}}, "expiryTime 'ninety days' is not an ISO 8601 duration"),
        ({"attributes": {"expiryTime": 90}}, "expiryTime must be an ISO 8601 duration string"),
        ({"attributes": {"expiryTime": "P99999999Y"}}, "expiryTime 'P99999999Y' is too long"),
        ({"attributes": {"expiryTime": "-P30D"}}, "must be a positive duration"),
        (
            {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}] * 2},
            "more than one 'Rotate' action",
        ),
        (
            {
                "lifetimeActions": [
                    {"trigger": {"timeAfterCreate": "P30D", "timeBeforeExpiry": "P30D"}, "action": {"type": "Rotate"}}
                ]
            },
            "needs exactly one of timeAfterCreate or timeBeforeExpiry",
        ),
        ({"lifetimeActions": [{"trigger": {}, "action": {"type": "Notify"}}]}, "needs exactly one of"),
        (
            {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Notify"}}]},
            "timeAfterCreate only applies to Rotate",
        ),
        ({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Delete"}}]}, "got 'Delete'"),
        (
            {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P1D"}, "action": {"type": "Rotate"}}]},
            "at least 7 days",
        ),
        (
            {
                "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P60D"}, "action": {"type": "rotate"}}],
                "attributes": {"expiryTime": "P30D"},
            },
            "must be shorter than expiryTime",
        ),
        ({"lifetimeActions": [{}, {}, {}]}, "at most two"),
        ({"lifetimeActions": "rotate"}, "lifetimeActions must be a list"),
    ],
)
def test_bad_rotation_policies_get_400(shared_emulator: Emulator, policy: dict[str, Any], message: str) -> None:
    emulator = shared_emulator
    vault = shared_vault(emulator, "kv-badpolicy")
    if not vault.key_names():
        vault.create_key("cmk")
    status, _, body = raw(emulator, vault, "PUT", "/keys/cmk/rotationpolicy", policy)
    assert status == 400, body
    validate(KEYVAULT, "KeyVaultError", body)
    assert body["error"]["code"] == "BadParameter" and message in body["error"]["message"]
    assert vault.rotation_policy("cmk").created is None  # nothing was stored


# Access -----------------------------------------------------------------------------------------------------------
FORBIDDEN_HELP = "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"


def test_a_denied_identity_gets_403_on_every_operation(emulator: Emulator) -> None:
    """Key Vault's access-policy refusal, as captured in public logs (for example in the AzureSignTool and Terraform
    issue trackers): 403 ``Forbidden``, innererror ``AccessDenied``, "The user, group or application
    'appid=...;oid=...;iss=https://sts.windows.net/<tenant>/' does not have keys get permission on key vault
    '<vault>;location=<region>'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?..."."""
    vault = emulator.add_vault("kv-access")
    vault.create_key("cmk")
    vault.deny("intruder")
    assert not vault.has_access("intruder") and vault.has_access("rotation-app")
    assert vault.denied("intruder") == list(KEY_PERMISSIONS)
    intruder = client(emulator, vault, "intruder")
    with pytest.raises(HttpResponseError) as caught:
        intruder.get_key("cmk")
    assert caught.value.status_code == 403 and caught.value.error is not None
    assert caught.value.error.message == (
        "The user, group or application 'appid=intruder;oid=intruder;iss=https://sts.windows.net/"
        f"{emulator.tenant_id}/' does not have keys get permission on key vault 'kv-access;location=eastus'. "
        f"{FORBIDDEN_HELP}"
    )
    assert caught.value.error.innererror == {"code": "AccessDenied"}
    with pytest.raises(HttpResponseError) as caught:
        intruder.create_rsa_key("cmk")
    assert caught.value.status_code == 403 and "keys create permission" in str(caught.value.message)
    status, _, body = raw(emulator, vault, "POST", "/keys/cmk/rotate", identity="intruder")
    assert status == 403
    validate(KEYVAULT, "KeyVaultError", body)
    assert body["error"]["code"] == "Forbidden"
    assert len(vault.versions("cmk")) == 1
    assert client(emulator, vault).get_key("cmk").name == "cmk"

    vault.allow("intruder")
    assert intruder.get_key("cmk").name == "cmk"
    assert vault.denied("intruder") == [] and vault.describe()["denied"] == {}


@pytest.mark.parametrize(
    ("method", "path", "body", "permission"),
    [
        ("GET", "/keys", None, "list"),
        ("GET", "/keys/cmk/versions", None, "list"),
        ("GET", "/keys/cmk/", None, "get"),
        ("POST", "/keys/cmk/create", {"kty": "RSA"}, "create"),
        ("PATCH", "/keys/cmk/", {"tags": {"a": "b"}}, "update"),
        ("POST", "/keys/cmk/rotate", None, "rotate"),
        ("GET", "/keys/cmk/rotationpolicy", None, "getrotationpolicy"),
        ("PUT", "/keys/cmk/rotationpolicy", {"lifetimeActions": []}, "setrotationpolicy"),
    ],
)
def test_each_operation_needs_its_own_key_permission(
    shared_emulator: Emulator, method: str, path: str, body: Any, permission: str
) -> None:
    """Key Vault's permissions are per operation: the access-policy key permissions (ARM ``KeyPermissions``; Learn,
    "Configure cryptographic key auto-rotation": rotation needs 'Rotate', 'Set Rotation Policy' and 'Get Rotation
    Policy'). Taking one away refuses exactly the operations that need it, naming it."""
    emulator = shared_emulator
    vault = shared_vault(emulator, "kv-perms")
    if not vault.key_names():
        vault.create_key("cmk")
    identity = f"no-{permission}"
    vault.deny(identity, [permission])
    status, _, answer = raw(emulator, vault, method, path, body, identity=identity)
    assert status == 403, answer
    validate(KEYVAULT, "KeyVaultError", answer)
    assert (
        f"does not have keys {permission} permission on key vault 'kv-perms;location=eastus'"
        in (answer["error"]["message"])
    )
    reads = {"list": "/keys", "get": "/keys/cmk/", "getrotationpolicy": "/keys/cmk/rotationpolicy"}
    for needs, read in reads.items():
        if needs != permission:  # every other permission is still held
            assert raw(emulator, vault, "GET", read, identity=identity)[0] == 200
    assert len(vault.versions("cmk")) == 1


def test_a_role_that_can_list_and_get_but_not_create(emulator: Emulator) -> None:
    """A reader: list and get keys, read the rotation policy, but make no version and change nothing."""
    vault = emulator.add_vault("kv-reader")
    vault.create_key("cmk")
    vault.deny("reader", ["create", "update", "rotate", "setrotationpolicy"])
    assert vault.can("reader", "get") and vault.can("reader", "LIST") and not vault.can("reader", "create")
    assert vault.has_access("reader")  # get, wrapKey and unwrapKey: what a customer-managed key needs
    reader = client(emulator, vault, "reader")
    assert [p.name for p in reader.list_properties_of_keys()] == ["cmk"]
    assert [p.version for p in reader.list_properties_of_key_versions("cmk")] == [vault.latest("cmk").version]
    assert reader.get_key("cmk").name == "cmk"
    assert reader.get_key_rotation_policy("cmk").lifetime_actions[0].action == KeyRotationPolicyAction.notify
    for call, permission in [
        (lambda: reader.create_rsa_key("cmk"), "create"),
        (lambda: reader.rotate_key("cmk"), "rotate"),
        (lambda: reader.update_key_properties("cmk", enabled=False), "update"),
        (lambda: reader.update_key_rotation_policy("cmk", KeyRotationPolicy(expires_in="P90D")), "setrotationpolicy"),
    ]:
        with pytest.raises(HttpResponseError) as caught:
            call()
        assert caught.value.status_code == 403
        assert f"does not have keys {permission} permission" in str(caught.value.message)
    assert len(vault.versions("cmk")) == 1 and vault.latest("cmk").enabled

    vault.allow("reader", "create")
    assert reader.create_rsa_key("cmk").name == "cmk"
    assert vault.denied("reader") == ["update", "rotate", "setrotationpolicy"]
    vault.deny("reader", ["wrapKey"])
    assert not vault.has_access("reader")  # ARM's customer-managed-key check now refuses this identity
    with pytest.raises(ValueError, match=r"Key permissions \['fly'\] are invalid"):
        vault.deny("reader", ["fly"])
    with pytest.raises(ValueError, match="are invalid"):
        vault.deny("reader", [])


# Throttling and faults --------------------------------------------------------------------------------------------
def test_a_create_over_the_limit_gets_429_without_retry_after_and_the_sdk_does_not_retry_it(emulator: Emulator) -> None:
    """The one public capture of a real Key Vault 429 (vcsjones/AzureSignTool#219, 2023; azure-facts §10.8) has code
    ``Throttled``, "Request was not processed because too many requests were received. Reason:
    VaultRequestTypeLimitReached", and no ``Retry-After``. Without it azure-core does not retry a POST
    (``RetryPolicy._is_method_retryable``: POST only on 500, 503 and 504), so the create fails at once."""
    vault = emulator.add_vault("kv-throttle")
    vault.set_throttle(create_per_10s=10)
    for _ in range(10):
        vault.admit("create", hsm=False, size=2048)
    status, headers, body = raw(emulator, vault, "POST", "/keys/cmk/create", {"kty": "RSA"})
    assert status == 429 and "Retry-After" not in headers
    validate(KEYVAULT, "KeyVaultError", body)
    assert body["error"]["code"] == "Throttled"
    assert body["error"]["message"].startswith(
        "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"
    )
    assert "limit of 10 software key create requests" in body["error"]["message"]

    with pytest.raises(HttpResponseError) as caught:
        client(emulator, vault).create_rsa_key("cmk")
    assert caught.value.status_code == 429
    assert statuses(emulator, "keyvault.create_key") == [429, 401, 429]  # no retry
    assert vault.key_names() == []
    assert vault.throttle_limits()["send_retry_after"] is False


def test_a_vault_that_sends_retry_after_lets_the_sdk_retry_a_throttled_create(emulator: Emulator) -> None:
    """The kinder vault, on request only: ``set_throttle(send_retry_after=True)`` adds ``Retry-After``."""
    vault = emulator.add_vault("kv-throttle")
    vault.set_throttle(create_per_10s=10, send_retry_after=True)
    for _ in range(10):
        vault.admit("create", hsm=False, size=2048)
    status, headers, _ = raw(emulator, vault, "POST", "/keys/cmk/create", {"kty": "RSA"})
    assert status == 429 and int(headers["Retry-After"]) == 1
    assert vault.key_names() == []

    started = time.monotonic()
    created = client(emulator, vault).create_rsa_key("cmk")
    assert time.monotonic() - started >= 0.9  # the SDK slept for Retry-After before retrying
    assert statuses(emulator, "keyvault.create_key") == [429, 401, 429, 200]
    assert [r.version for r in vault.versions("cmk")] == [created.properties.version]


def test_other_operations_are_weighted_by_key_size_and_hsm_gets_half(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-weights", sku="premium")
    vault.create_key("big", size=3072)
    vault.create_key("hsm", kty="RSA-HSM")
    vault.set_throttle(other_per_10s=8)
    assert [raw(emulator, vault, "GET", "/keys/big")[0] for _ in range(3)] == [200, 200, 429]  # cost 4 of 8
    assert [raw(emulator, vault, "GET", "/keys/hsm")[0] for _ in range(5)] == [200, 200, 200, 200, 429]  # 4 for HSM
    assert vault.throttle_limits() == {"create_per_10s": 20.0, "other_per_10s": 8.0, "send_retry_after": False}
    with pytest.raises(ValueError, match="other_per_10s must be a positive number; got 0"):
        vault.set_throttle(other_per_10s=0)
    with pytest.raises(ValueError, match="send_retry_after must be true or false; got 1"):
        vault.set_throttle(send_retry_after=1)  # type: ignore[arg-type]


def test_fault_rules_give_503s_409s_and_dropped_connections_that_the_sdk_retries(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-faults")
    vault.create_key("cmk")
    keys = client(emulator, vault, retry_backoff_factor=0.01)
    emulator.control.add_fault(FaultRule(operation="keyvault.get_key", status=503))
    assert keys.get_key("cmk").name == "cmk"
    assert statuses(emulator, "keyvault.get_key") == [401, 503, 200]

    emulator.control.add_fault(FaultRule(operation="keyvault.get_key", drop=True))
    assert keys.get_key("cmk").name == "cmk"
    assert statuses(emulator, "keyvault.get_key")[3:] == [0, 200]

    conflict = {"error": {"code": "Conflict", "message": "The key is being modified."}}
    emulator.control.add_fault(FaultRule(operation="keyvault.create_key", status=409, body=conflict))
    with pytest.raises(ResourceExistsError):
        keys.create_rsa_key("cmk")
    assert len(vault.versions("cmk")) == 1


def test_a_create_can_take_effect_and_then_answer_500(emulator: Emulator) -> None:
    """Act, then fail (``FaultRule(act_first=True)``): the version is made and its answer is a 500. Key Vault's
    create takes no idempotency token (azure-facts §9.6), so a client that retries (azure-core retries a POST on
    500) makes a second version; with retries off, as the rotation service creates, exactly one new version exists
    and only a re-read finds it."""
    vault = emulator.add_vault("kv-act-first")
    vault.create_key("cmk")
    keys = client(emulator, vault)
    emulator.control.add_fault(FaultRule(operation="keyvault.create_key", status=500, act_first=True))
    with pytest.raises(HttpResponseError) as caught:
        keys.create_rsa_key("cmk", tags={"request": "r1"}, retry_total=0)
    assert caught.value.status_code == 500
    assert statuses(emulator, "keyvault.create_key") == [401, 500]
    versions = vault.versions("cmk")
    assert len(versions) == 2 and versions[-1].tags == {"request": "r1"}
    assert reported_versions(emulator) == [r.version for r in versions]  # and Event Grid heard of it
    assert [p.tags for p in keys.list_properties_of_key_versions("cmk")][-1] == {"request": "r1"}


def test_a_create_can_take_effect_and_then_drop_the_connection(emulator: Emulator) -> None:
    """The same with the answer lost on the way back: the client sees a dropped connection, the vault has the one
    new version."""
    vault = emulator.add_vault("kv-act-drop")
    vault.create_key("cmk")
    keys = client(emulator, vault)
    emulator.control.add_fault(FaultRule(operation="keyvault.create_key", drop=True, act_first=True))
    with pytest.raises(ServiceResponseError):
        keys.create_rsa_key("cmk", tags={"request": "r2"}, retry_total=0)
    assert statuses(emulator, "keyvault.create_key") == [401, 0]
    versions = vault.versions("cmk")
    assert len(versions) == 2 and versions[-1].tags == {"request": "r2"}
    assert reported_versions(emulator) == [r.version for r in versions]


# Vault settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "level", "days"),
    [
        ({"soft_delete": True, "purge_protection": True, "retention_days": 90}, "Recoverable", 90),
        ({"soft_delete": True, "purge_protection": False, "retention_days": 90}, "Recoverable+Purgeable", 90),
        ({"soft_delete": True, "purge_protection": True, "retention_days": 30}, "CustomizedRecoverable", 30),
        ({"soft_delete": True, "purge_protection": False, "retention_days": 7}, "CustomizedRecoverable+Purgeable", 7),
    ],
)
def test_recovery_level_follows_the_vault_settings(
    shared_emulator: Emulator, settings: dict[str, Any], level: str, days: int
) -> None:
    emulator = shared_emulator
    vault = shared_vault(emulator, "kv-level-" + "-".join(str(int(v)) for v in settings.values()), **settings)
    vault.create_key("cmk")
    properties = client(emulator, vault).get_key("cmk").properties
    assert (properties.recovery_level.value, properties.recoverable_days) == (level, days)
    assert (vault.recovery_level, vault.recoverable_days) == (level, days)


def test_invalid_vault_settings_are_refused(emulator: Emulator) -> None:
    for name, settings, message in [
        ("kv_bad", {}, "Vault name 'kv_bad' is invalid"),
        ("kv-ok", {"sku": "gold"}, "Vault SKU 'gold' is invalid"),
        ("kv-ok", {"retention_days": 3}, "retention_days 3 is invalid"),
        ("kv-ok", {"retention_days": 91}, "retention_days 91 is invalid"),
    ]:
        with pytest.raises(ValueError, match=message):
            emulator.add_vault(name, **settings)
    status, answer = admin(emulator, "POST", "/admin/vaults", {"name": "kv-ok", "sku": "gold"})
    assert status == 400 and "Vault SKU 'gold' is invalid" in answer["error"]["message"]


def test_soft_delete_cannot_be_turned_off(emulator: Emulator) -> None:
    """Learn, "Soft-delete will be enabled on all key vaults": "In February 2025, Microsoft will enable soft-delete
    protection on all key vaults, and users will no longer be able to opt out of or turn off soft-delete." So a
    vault is never plain ``Purgeable``; purge protection stays a choice (azure-facts §3.3)."""
    for purge_protection in (True, False):
        with pytest.raises(ValueError, match="soft_delete=False is refused: Azure enables soft delete on every key"):
            emulator.add_vault("kv-no-sd", soft_delete=False, purge_protection=purge_protection)
    status, answer = admin(emulator, "POST", "/admin/vaults", {"name": "kv-no-sd", "soft_delete": False})
    assert status == 400 and "no longer lets it be turned off" in answer["error"]["message"]
    assert emulator.vaults == {}

    status, described = admin(emulator, "POST", "/admin/vaults", {"name": "kv-purgeable", "purge_protection": False})
    assert status == 201
    assert (described["soft_delete"], described["recovery_level"], described["recoverable_days"]) == (
        True,
        "Recoverable+Purgeable",
        90,
    )


def test_api_version_is_mandatory_and_checked(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-version")
    vault.create_key("cmk")
    status, _, body = raw(emulator, vault, "GET", "/keys/cmk", api_version=None)
    assert status == 400
    validate(KEYVAULT, "KeyVaultError", body)
    assert (
        body["error"]["code"] == "BadParameter"
        and "'api-version' query parameter is required" in body["error"]["message"]
    )
    status, _, body = raw(emulator, vault, "GET", "/keys/cmk", api_version="2016-10-01")
    assert status == 400 and "api-version '2016-10-01' is not supported" in body["error"]["message"]
    for accepted in ("2025-07-01", "2025-06-01", "7.6", "7.4"):
        assert raw(emulator, vault, "GET", "/keys/cmk", api_version=accepted)[0] == 200
    for api_version in ("7.4", "2025-06-01"):
        assert client(emulator, vault, api_version=api_version).get_key("cmk").name == "cmk"


# Admin routes -----------------------------------------------------------------------------------------------------
def test_admin_describes_seeds_and_changes_keys(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-admin", purge_protection=False)
    status, created = admin(
        emulator,
        "POST",
        "/admin/vaults/kv-admin/keys",
        {"name": "cmk", "exp": "2030-01-01T00:00:00Z", "tags": {"a": "b"}},
    )
    assert status == 201
    assert (
        created["exp"] == int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
        and created["kid"] == vault.latest("cmk").kid
    )
    status, created = admin(emulator, "POST", "/admin/vaults/kv-admin/keys", {"name": "cmk", "nbf": 1700000000})
    assert status == 201 and created["nbf"] == 1700000000

    status, described = admin(emulator, "GET", "/admin/vaults/kv-admin")
    assert status == 200
    assert described["recovery_level"] == "Recoverable+Purgeable"
    assert described["arm_id"] == (
        f"/subscriptions/{emulator.subscription_id}/resourceGroups/rg-keys/providers/Microsoft.KeyVault/vaults/kv-admin"
    )
    assert described["keys"] == {"cmk": [r.version for r in vault.versions("cmk")]}
    assert described["url"] == vault.url

    version = vault.versions("cmk")[0].version
    status, changed = admin(
        emulator, "PATCH", f"/admin/vaults/kv-admin/keys/cmk/{version}", {"enabled": False, "exp": None}
    )
    assert status == 200 and changed["enabled"] is False and changed["exp"] is None
    assert not vault.get("cmk", version).enabled and vault.get("cmk", version).exp is None

    status, _ = admin(emulator, "POST", "/admin/vaults/kv-admin/access", {"identity": "intruder", "allowed": False})
    assert status == 200
    with pytest.raises(HttpResponseError) as caught:
        client(emulator, vault, "intruder").get_key("cmk")
    assert caught.value.status_code == 403
    assert admin(emulator, "POST", "/admin/vaults/kv-admin/access", {"identity": "intruder", "allowed": True})[1] == {
        "identity": "intruder",
        "allowed": True,
        "denied": [],
    }
    assert vault.has_access("intruder")
    status, answer = admin(
        emulator,
        "POST",
        "/admin/vaults/kv-admin/access",
        {"identity": "reader", "allowed": False, "permissions": ["create", "Rotate"]},
    )
    assert status == 200 and answer == {"identity": "reader", "allowed": False, "denied": ["create", "rotate"]}
    assert vault.can("reader", "get") and not vault.can("reader", "rotate")
    assert admin(emulator, "GET", "/admin/vaults/kv-admin")[1]["denied"] == {"reader": ["create", "rotate"]}
    status, answer = admin(
        emulator,
        "POST",
        "/admin/vaults/kv-admin/access",
        {"identity": "reader", "allowed": True, "permissions": ["rotate"]},
    )
    assert answer["denied"] == ["create"]

    status, limits = admin(emulator, "PUT", "/admin/vaults/kv-admin/throttle", {"create_per_10s": 5})
    assert status == 200 and limits == {"create_per_10s": 5.0, "other_per_10s": 4000.0, "send_retry_after": False}
    status, limits = admin(emulator, "PUT", "/admin/vaults/kv-admin/throttle", {"send_retry_after": True})
    assert status == 200 and limits == {"create_per_10s": 5.0, "other_per_10s": 4000.0, "send_retry_after": True}


def test_admin_bad_input_gets_a_clear_400_or_404(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-admin")
    vault.create_key("cmk")
    keys = "/admin/vaults/kv-admin/keys"
    cases = [
        ("POST", keys, {}, 400, "Missing field 'name'"),
        ("POST", keys, {"name": "cmk", "size": "big"}, 400, "Field 'size' must be an integer; got 'big'"),
        ("POST", keys, {"name": "cmk", "kty": "EC"}, 400, "Key type 'EC' is not emulated"),
        ("POST", keys, {"name": "cmk", "exp": "tomorrow"}, 400, "Field 'exp' is not an ISO 8601 datetime: 'tomorrow'"),
        ("POST", keys, {"name": "cmk", "exp": "2030-01-01T00:00:00"}, 400, "needs a UTC offset"),
        ("POST", keys, {"name": "cmk", "colour": "red"}, 400, "Unknown fields ['colour']"),
        ("POST", keys, {"name": "c_m_k"}, 400, "Key name 'c_m_k' is invalid"),
        ("POST", "/admin/vaults/kv-admin/access", {"identity": "x"}, 400, "Missing field 'allowed'"),
        ("POST", "/admin/vaults/kv-admin/access", {"identity": 5, "allowed": True}, 400, "'identity' must be a string"),
        (
            "POST",
            "/admin/vaults/kv-admin/access",
            {"identity": "x", "allowed": False, "permissions": ["fly"]},
            400,
            "Key permissions ['fly'] are invalid",
        ),
        (
            "POST",
            "/admin/vaults/kv-admin/access",
            {"identity": "x", "allowed": False, "permissions": "create"},
            400,
            "'permissions' must be",
        ),
        ("PUT", "/admin/vaults/kv-admin/throttle", {"send_retry_after": "yes"}, 400, "'send_retry_after' must be"),
        ("PUT", "/admin/vaults/kv-admin/throttle", {"create_per_10s": -1}, 400, "must be a positive number; got -1"),
        (
            "PUT",
            "/admin/vaults/kv-admin/throttle",
            {"other_per_10s": "x"},
            400,
            "'other_per_10s' must be an integer or a number",
        ),
        ("PATCH", f"{keys}/cmk/nope", {"enabled": False}, 404, "no key 'cmk/nope'"),
        (
            "PATCH",
            f"{keys}/cmk/{vault.latest('cmk').version}",
            {"enabled": "no"},
            400,
            "'enabled' must be true or false",
        ),
        ("GET", "/admin/vaults/kv-nowhere", None, 404, "Unknown vault 'kv-nowhere'; known: ['kv-admin']"),
    ]
    for method, path, body, expected, message in cases:
        status, answer = admin(emulator, method, path, body)
        assert status == expected, (path, body, answer)
        assert message in answer["error"]["message"], (message, answer)
    assert len(vault.versions("cmk")) == 1 and vault.latest("cmk").enabled


def test_state_api_is_safe_under_concurrent_use(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-threads")
    record = vault.create_key("cmk")
    errors: list[BaseException] = []

    def flip(enabled: bool) -> None:
        try:
            for _ in range(50):
                vault.update_key("cmk", record.version, enabled=enabled)
                vault.describe()
        except BaseException as exc:  # noqa: BLE001 -- collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [r.version for r in vault.versions("cmk")] == [record.version]


def test_a_disabled_version_is_listed_but_never_returned(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv-disabled")
    record = vault.create_key("cmk")
    vault.update_key("cmk", record.version, enabled=False)
    client = KeyClient(
        vault.url, emulator.credential(), verify_challenge_resource=False, connection_verify=emulator.ca_bundle
    )

    for version in (None, record.version):
        with pytest.raises(HttpResponseError) as refused:
            client.get_key("cmk", version)
        assert refused.value.status_code == 403
        assert refused.value.error is not None and refused.value.error.message == (
            "Operation get is not allowed on a disabled key."
        )
        assert refused.value.error.innererror == {"code": "KeyDisabled"}
    (listed,) = client.list_properties_of_key_versions("cmk")
    assert (listed.version, listed.enabled) == (record.version, False)
