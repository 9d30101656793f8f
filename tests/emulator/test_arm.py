"""ARM (Microsoft.CognitiveServices accounts) in the emulator, driven by the real ``CognitiveServicesManagementClient``.

Each behaviour is checked twice where it matters: through the SDK (what the rotation service sees) and as raw JSON
over HTTPS with a bearer token, validated against Microsoft's REST spec (``tests/specs``). The spec's references to
ARM's ``common-types`` (the ``id``/``name``/``type``/``etag`` of ``AzureEntityResource``) accept anything in the copy,
so those fields are compared with the spec's examples instead.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import (
    Account,
    AccountProperties,
    Encryption,
    Identity,
    KeyVaultProperties,
    Sku,
)

from emulator import Emulator
from emulator.arm import InvalidAccount
from emulator.control import FaultRule
from tests.emulator.test_core import admin
from tests.swagger import COGNITIVE, example, validate

EXAMPLES = "cognitiveservices/resource-manager/Microsoft.CognitiveServices/stable"
API = "api-version=2025-09-01"
RG = "rg-ai"


def client(emulator: Emulator, identity: str = "rotation-app", **kwargs: Any) -> CognitiveServicesManagementClient:
    return CognitiveServicesManagementClient(
        emulator.credential(identity),
        emulator.subscription_id,
        base_url=emulator.arm_url,
        connection_verify=emulator.ca_bundle,
        polling_interval=0,
        retry_backoff_factor=0.01,
        **kwargs,
    )


def arm(
    emulator: Emulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: bool = True,
    query: str = API,
    raw: bytes | None = None,
    scope: str = "https://management.azure.com/.default",
) -> tuple[int, dict[str, str], Any]:
    """One raw ARM request over HTTPS: (status, headers with lower-case names, parsed JSON or None). The token is for
    ``scope``: its ``aud`` is the scope without ``/.default``."""
    url = f"{emulator.arm_url}{path}" + (f"?{query}" if query else "")
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        bearer = emulator.credential().get_token(scope).token
        request.add_header("Authorization", f"Bearer {bearer}")
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    try:
        with urllib.request.urlopen(request, context=context) as response:
            status, headers, text = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, text = exc.code, exc.headers, exc.read()
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(text) if text else None


def account_path(name: str, resource_group: str = RG, subscription: str | None = None) -> str:
    sub = subscription or "00000000-0000-0000-0000-000000000001"
    return f"/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Microsoft.CognitiveServices/accounts/{name}"


def cmk(vault_url: str, key: str, version: str, client_id: str | None = None) -> Account:
    """The update the rotation service sends: only ``properties.encryption``."""
    settings = KeyVaultProperties(
        key_name=key, key_version=version, key_vault_uri=vault_url + "/", identity_client_id=client_id
    )
    return Account(
        properties=AccountProperties(
            encryption=Encryption(key_source="Microsoft.KeyVault", key_vault_properties=settings)
        )
    )


def key_version(emulator: Emulator, name: str) -> str | None:
    encryption = emulator.arm.account(RG, name)["properties"].get("encryption") or {}
    return (encryption.get("keyVaultProperties") or {}).get("keyVersion")


@pytest.fixture
def seeded(emulator: Emulator) -> tuple[Emulator, Any, Any]:
    """A vault ``kv1`` with key ``cmk`` and an OpenAI account ``aoai1`` already using its first version."""
    vault = emulator.add_vault("kv1")
    first = vault.create_key("cmk")
    emulator.arm.add_account(
        "aoai1",
        tags={"team": "ai"},
        encryption={
            "keySource": "Microsoft.KeyVault",
            "keyVaultProperties": {"keyName": "cmk", "keyVersion": first.version, "keyVaultUri": vault.url + "/"},
        },
    )
    return emulator, vault, first


# Create, read, list, delete ------------------------------------------------------------------------------------


def test_create_get_and_delete_with_the_sdk_and_raw_json_that_matches_the_spec(emulator: Emulator) -> None:
    emulator.arm.add_resource_group(RG)
    accounts = client(emulator).accounts
    created = accounts.begin_create(
        RG,
        "aoai-new",
        Account(
            kind="OpenAI",
            sku=Sku(name="S0"),
            location="eastus",
            tags={"owner": "rotation"},
            identity=Identity(type="SystemAssigned"),
            properties=AccountProperties(custom_sub_domain_name="aoai-new"),
        ),
    ).result()
    assert created.properties.provisioning_state == "Accepted"  # the poller's final GET: "Accepted" lingers
    assert created.identity.principal_id and created.identity.tenant_id == emulator.tenant_id
    assert created.id == emulator.arm.account_id(RG, "aoai-new")
    assert created.properties.custom_sub_domain_name == "aoai-new"

    status, _, body = arm(emulator, "GET", account_path("aoai-new"))
    assert status == 200
    validate(COGNITIVE, "Account", body)
    expected = example(f"{EXAMPLES}/2025-09-01/examples/GetAccount.json")["responses"]["200"]["body"]
    assert set(expected) <= set(body)  # id, name, type, location, sku, kind, tags, etag, properties
    assert set(expected["properties"]) <= set(body["properties"])  # endpoint, provisioningState
    assert body["type"] == expected["type"] and body["etag"].startswith('W/"datetime')
    assert emulator.arm.identity_principal(RG, "aoai-new") == created.identity.principal_id

    status, _, _ = arm(emulator, "PUT", account_path("aoai-new"), {"kind": "OpenAI", "sku": {"name": "S0"}})
    assert status == 400  # a PUT without location

    accounts.begin_delete(RG, "aoai-new").result()
    with pytest.raises(ResourceNotFoundError):
        accounts.get(RG, "aoai-new")
    status, _, _ = arm(emulator, "DELETE", account_path("aoai-new"))
    assert status == 204  # deleting what is gone is not an error
    assert emulator.control.counters()["arm.create_account"] == 2


def test_a_missing_account_gets_arms_not_found_format(emulator: Emulator) -> None:
    emulator.arm.add_resource_group(RG)
    with pytest.raises(ResourceNotFoundError) as raised:
        client(emulator).accounts.get(RG, "nope")
    assert raised.value.error.code == "ResourceNotFound"
    status, _, body = arm(emulator, "GET", account_path("nope"))
    assert status == 404
    assert body["error"]["message"].startswith(
        "The Resource 'Microsoft.CognitiveServices/accounts/nope' under resource group 'rg-ai' was not found."
    )


def test_a_resource_group_nobody_created_gets_resource_group_not_found(emulator: Emulator) -> None:
    """ARM answers 404 ``ResourceGroupNotFound`` "Resource group '<rg>' could not be found." for any request in a group
    that does not exist (the wording as captured in Azure/azure-powershell#14556, Azure/azure-cli#20316 and
    skyplane-project/skyplane#409), and ``ResourceNotFound`` only when the group exists but the account does not."""
    body = {"kind": "OpenAI", "sku": {"name": "S0"}, "location": "eastus", "identity": {"type": "SystemAssigned"}}
    path = account_path("aoai1", "rg-nowhere")
    for method, payload in (("GET", None), ("PATCH", {"tags": {}}), ("PUT", body), ("DELETE", None)):
        status, _, answer = arm(emulator, method, path, payload)
        assert (status, answer) == (
            404,
            {"error": {"code": "ResourceGroupNotFound", "message": "Resource group 'rg-nowhere' could not be found."}},
        ), method
    by_group = path.rsplit("/", 1)[0]
    assert arm(emulator, "GET", by_group)[2]["error"]["code"] == "ResourceGroupNotFound"
    accounts = client(emulator).accounts
    with pytest.raises(ResourceNotFoundError) as raised:
        accounts.get("rg-nowhere", "aoai1")
    assert raised.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError):
        list(accounts.list_by_resource_group("rg-nowhere"))
    assert list(accounts.list()) == []  # the subscription list is not in a group
    with pytest.raises(KeyError):
        emulator.arm.account("rg-nowhere", "aoai1")  # the PUT created nothing

    emulator.arm.add_resource_group("rg-nowhere")  # now it exists (and group names ignore case)
    assert arm(emulator, "GET", account_path("aoai1", "RG-NOWHERE"))[2]["error"]["code"] == "ResourceNotFound"
    assert arm(emulator, "GET", by_group)[0] == 200
    assert arm(emulator, "DELETE", path)[0] == 204  # deleting a missing account in a group that exists
    assert arm(emulator, "PUT", path, body)[0] == 201


def test_a_vault_or_a_seeded_account_makes_its_resource_group_exist(emulator: Emulator) -> None:
    emulator.add_vault("kv1", resource_group="rg-keys")
    emulator.arm.add_account("seeded", resource_group="rg-seeded")
    assert emulator.arm.resource_group_exists("RG-KEYS") and emulator.arm.resource_group_exists("rg-seeded")
    assert not emulator.arm.resource_group_exists("rg-keys", subscription_id="00000000-0000-0000-0000-000000000002")
    assert arm(emulator, "GET", account_path("nope", "rg-keys"))[2]["error"]["code"] == "ResourceNotFound"
    assert arm(emulator, "GET", account_path("nope", "rg-seeded"))[2]["error"]["code"] == "ResourceNotFound"
    status, created = admin(emulator, "POST", "/admin/arm/resource-groups", {"name": "rg-admin"})
    assert (status, created) == (201, {"name": "rg-admin", "subscription_id": emulator.subscription_id})
    assert arm(emulator, "GET", account_path("nope", "rg-admin"))[2]["error"]["code"] == "ResourceNotFound"
    with pytest.raises(ValueError, match="resource group name"):
        emulator.arm.add_resource_group("bad/name")


def test_list_by_subscription_and_resource_group_pages_with_next_link(emulator: Emulator) -> None:
    for index in range(5):
        emulator.arm.add_account(f"acct{index}", kind="AIServices" if index % 2 else "OpenAI")
    emulator.arm.add_account("other", resource_group="rg-other", identity=None)
    emulator.arm.page_size = 2
    accounts = client(emulator).accounts
    assert sorted(a.name for a in accounts.list()) == ["acct0", "acct1", "acct2", "acct3", "acct4", "other"]
    assert sorted(a.name for a in accounts.list_by_resource_group("RG-AI")) == [f"acct{i}" for i in range(5)]
    assert emulator.control.counters()["arm.list_accounts"] == 3  # 6 accounts, 2 a page

    path = "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.CognitiveServices/accounts"
    status, _, page = arm(emulator, "GET", path)
    assert status == 200
    validate(COGNITIVE, "AccountListResult", page)
    shape = example(f"{EXAMPLES}/2025-06-01/examples/ListAccountsBySubscription.json")["responses"]["200"]["body"]
    assert set(shape["value"][0]) <= set(page["value"][0])
    assert len(page["value"]) == 2 and page["nextLink"].startswith(emulator.arm_url + path)
    status, _, last = arm(emulator, "GET", path, query=page["nextLink"].split("?", 1)[1].replace("$", "%24"))
    assert status == 200 and len(last["value"]) == 2 and "nextLink" in last
    status, _, body = arm(emulator, "GET", path, query=f"{API}&$skipToken=abc")
    assert status == 400 and "abc" in body["error"]["message"]


# Long-running updates -------------------------------------------------------------------------------------------


def test_begin_update_end_to_end_merges_the_patch(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, vault, first = seeded
    second = vault.create_key("cmk")
    accounts = client(emulator).accounts
    started = time.monotonic()
    updated = accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", second.version)).result()
    assert time.monotonic() - started < 0.5  # Retry-After 0 and polling_interval 0: no waiting
    assert updated.properties.encryption.key_vault_properties.key_version == second.version
    assert updated.properties.provisioning_state == "Accepted"  # the poller's final GET: "Accepted" lingers
    assert updated.tags == {"team": "ai"}  # a PATCH changes only what it sends
    assert updated.properties.endpoint == "https://aoai1.openai.azure.com/"
    calls = [c.operation for c in emulator.control.calls()]
    assert calls == ["arm.update_account", "arm.operation_status", "arm.operation_status", "arm.get_account"]

    patch = cmk(vault.url, "cmk", first.version).serialize()
    status, headers, body = arm(emulator, "PATCH", account_path("aoai1"), patch)
    assert status == 202
    validate(COGNITIVE, "Account", body)
    assert body["properties"]["provisioningState"] == "Accepted"
    documented = example(f"{EXAMPLES}/2025-06-01/examples/UpdateAccount.json")["responses"]["202"]["headers"]
    assert {name.lower() for name in documented} <= set(headers)
    assert "/locations/eastus/operationStatuses/" in headers["azure-asyncoperation"]
    assert "/locations/eastus/operationResults/" in headers["location"]
    assert headers["retry-after"] == "0" and "x-ms-ratelimit-remaining-subscription-writes" in headers

    results = headers["location"].removeprefix(emulator.arm_url)
    status, headers_1, _ = arm(emulator, "GET", results.split("?")[0])
    assert status == 202 and "location" in headers_1  # still in progress: one poll answers InProgress
    status, _, operation = arm(
        emulator, "GET", headers["azure-asyncoperation"].removeprefix(emulator.arm_url).split("?")[0]
    )
    assert status == 200 and operation["status"] == "Succeeded"
    assert set(operation) == {"id", "name", "status", "startTime", "endTime"}
    status, _, done = arm(emulator, "GET", results.split("?")[0])
    assert status == 200 and done["properties"]["encryption"]["keyVaultProperties"]["keyVersion"] == first.version


def test_the_sdk_honours_retry_after_between_polls(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, vault, _ = seeded
    emulator.arm.configure(retry_after=1, lro_polls=1)  # azure-core polls at once, then waits Retry-After
    second = vault.create_key("cmk")
    started = time.monotonic()
    client(emulator).accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", second.version)).result()
    assert 0.9 <= time.monotonic() - started < 3
    assert key_version(emulator, "aoai1") == second.version


def test_an_operation_can_last_on_the_emulator_clock(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, vault, first = seeded
    emulator.arm.configure(lro_polls=0, lro_seconds=600)
    second = vault.create_key("cmk")
    poller = client(emulator).accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", second.version))
    time.sleep(0.2)
    assert not poller.done()
    assert emulator.arm.account(RG, "aoai1")["properties"]["provisioningState"] == "Accepted"
    emulator.clock.advance(timedelta(seconds=600))
    assert poller.result(timeout=5).properties.provisioning_state == "Accepted"  # lingering, by default
    assert emulator.arm.account(RG, "aoai1")["properties"]["provisioningState"] == "Succeeded"
    assert key_version(emulator, "aoai1") == second.version != first.version


def test_a_failed_operation_raises_with_its_code_and_leaves_the_account_as_it_was(
    seeded: tuple[Emulator, Any, Any],
) -> None:
    emulator, vault, first = seeded
    second = vault.create_key("cmk")
    emulator.arm.fail_next_update("aoai1", "InternalServerError", "The update could not be applied.")
    poller = client(emulator).accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", second.version))
    with pytest.raises(HttpResponseError) as raised:
        poller.result()
    assert raised.value.error.code == "InternalServerError"
    account = emulator.arm.account(RG, "aoai1")
    assert key_version(emulator, "aoai1") == first.version
    assert account["properties"]["provisioningState"] == "Succeeded"
    updated = client(emulator).accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", second.version)).result()
    assert updated.properties.encryption.key_vault_properties.key_version == second.version  # only the next one


def test_accepted_lingers_after_the_operation_succeeded_by_default(seeded: tuple[Emulator, Any, Any]) -> None:
    """Azure reports "Accepted" even after a create or update operation completed, so a client must re-read until the
    state leaves it (azure-facts §1.7: terraform-provider-azurerm issue #13924 / PR #13925 made Accepted a pending
    state, PR #31751 added a waiter after updates). By default the poller's final GET and the caller's next GET both
    still say "Accepted"; a list shows it too without using a read up."""
    emulator, vault, _ = seeded
    assert emulator.arm.linger_accepted_reads == 2 and emulator.arm.settings()["linger_accepted_reads"] == 2
    second = vault.create_key("cmk")
    accounts = client(emulator).accounts
    poller = accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", second.version))
    result = poller.result()
    assert poller.status() == "Succeeded"  # the operation itself succeeded...
    assert result.properties.provisioning_state == "Accepted"  # ...and the poller's final GET still says Accepted
    assert result.properties.encryption.key_vault_properties.key_version == second.version
    assert [a.properties.provisioning_state for a in accounts.list_by_resource_group(RG)] == ["Accepted"]
    assert accounts.get(RG, "aoai1").properties.provisioning_state == "Accepted"
    assert accounts.get(RG, "aoai1").properties.provisioning_state == "Succeeded"
    assert emulator.arm.account(RG, "aoai1")["properties"]["provisioningState"] == "Succeeded"  # stored, no linger


def test_no_lingering_accepted_is_an_explicit_kinder_option(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, vault, _ = seeded
    emulator.arm.configure(linger_accepted_reads=0)
    second = vault.create_key("cmk")
    accounts = client(emulator).accounts
    result = accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", second.version)).result()
    assert result.properties.provisioning_state == "Succeeded"
    assert accounts.get(RG, "aoai1").properties.provisioning_state == "Succeeded"


def test_writes_during_an_operation_in_flight_get_request_conflict(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, vault, first = seeded
    emulator.arm.lro_polls = 3
    status, headers, _ = arm(emulator, "PATCH", account_path("aoai1"), {"tags": {"team": "platform"}})
    assert status == 202
    accounts = client(emulator).accounts
    with pytest.raises(ResourceExistsError) as raised:
        accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", first.version))
    assert raised.value.error.code == "RequestConflict"
    assert raised.value.error.message == (
        f"Cannot modify resource with id '{emulator.arm.account_id(RG, 'aoai1')}' because the resource entity "
        "provisioning state is not terminal. Please wait for the provisioning state to become terminal and then "
        "retry the request."
    )
    status, _, _ = arm(emulator, "DELETE", account_path("aoai1"))
    assert status == 409
    status_url = headers["azure-asyncoperation"].removeprefix(emulator.arm_url).split("?")[0]
    answers = [arm(emulator, "GET", status_url)[2]["status"] for _ in range(4)]
    assert answers == ["InProgress", "InProgress", "InProgress", "Succeeded"]
    assert accounts.get(RG, "aoai1").tags == {"team": "platform"}
    assert arm(emulator, "DELETE", account_path("aoai1"))[0] == 200


def test_an_operation_nobody_polls_still_ends(seeded: tuple[Emulator, Any, Any]) -> None:
    """Azure runs an operation whether or not its client is still there (a worker killed mid-update)."""
    emulator = seeded[0]
    emulator.arm.configure(lro_polls=100, lro_unattended_seconds=0.3)
    assert arm(emulator, "PATCH", account_path("aoai1"), {"tags": {"team": "platform"}})[0] == 202
    assert arm(emulator, "PATCH", account_path("aoai1"), {"tags": {"team": "security"}})[0] == 409
    time.sleep(0.4)
    assert arm(emulator, "PATCH", account_path("aoai1"), {"tags": {"team": "security"}})[0] == 202


def _converged(emulator: Emulator, version: str, reads: int = 10) -> list[str]:
    """The provisioning states the SDK reads until the account reports ``version`` and Succeeded (a client's verify)."""
    states = []
    for _ in range(reads):
        account = client(emulator).accounts.get(RG, "aoai1")
        states.append(account.properties.provisioning_state)
        if account.properties.encryption.key_vault_properties.key_version == version and states[-1] == "Succeeded":
            return states
        time.sleep(0.1)
    raise AssertionError(f"aoai1 never reported {version} and Succeeded: {states}")


def test_a_patch_can_take_effect_and_then_answer_500(seeded: tuple[Emulator, Any, Any]) -> None:
    """An answer lost on the way back: the update is accepted and its operation runs, but the client sees a 500
    (``FaultRule(act_first=True)``; emulator/README.md "Faults"). azure-core retries a PATCH on 500 (azure-facts §2),
    and the retry meets the first request's operation still in flight: 409 ``RequestConflict``."""
    emulator, vault, first = seeded
    emulator.arm.configure(lro_unattended_seconds=0.3)  # nobody knows the operation's URL, so nobody polls it
    second = vault.create_key("cmk")
    emulator.control.add_fault(FaultRule(operation="arm.update_account", status=500, act_first=True))
    status, _, body = arm(emulator, "PATCH", account_path("aoai1"), cmk(vault.url, "cmk", second.version).serialize())
    assert (status, body["error"]["code"]) == (500, "InjectedFault")
    assert key_version(emulator, "aoai1") == second.version  # it took effect all the same
    assert _converged(emulator, second.version)[-1] == "Succeeded"

    third = vault.create_key("cmk")
    emulator.control.add_fault(FaultRule(operation="arm.update_account", status=500, act_first=True))
    with pytest.raises(ResourceExistsError) as raised:
        client(emulator).accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", third.version))
    assert raised.value.error.code == "RequestConflict"
    assert [c.status for c in emulator.control.calls("arm.update_account")] == [500, 500, 409]
    assert _converged(emulator, third.version)[-1] == "Succeeded"  # the lost update still lands
    assert third.version != first.version


def test_a_patch_can_take_effect_and_then_drop_the_connection(seeded: tuple[Emulator, Any, Any]) -> None:
    """The same with the connection dropped: azure-core does not retry a PATCH on a connection error (azure-facts §2),
    so the SDK raises, yet the account ends on the new key version once its operation has run."""
    emulator, vault, first = seeded
    emulator.arm.configure(lro_unattended_seconds=0.3)
    second = vault.create_key("cmk")
    emulator.control.add_fault(FaultRule(operation="arm.update_account", drop=True, act_first=True))
    with pytest.raises(AzureError) as raised:
        client(emulator).accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", second.version))
    assert not isinstance(raised.value, HttpResponseError)  # no answer at all
    assert [c.status for c in emulator.control.calls("arm.update_account")] == [0]
    states = _converged(emulator, second.version)
    assert states[0] == "Accepted" and states[-1] == "Succeeded" and key_version(emulator, "aoai1") != first.version


# The resource provider's checks on a customer-managed key -----------------------------------------------------


def _scenario(emulator: Emulator, case: str) -> tuple[Account, str]:
    """Set up one broken CMK update for account ``aoai1`` in ``rg-ai``; return the update and the expected code.

    There is no "soft delete off" case: Azure no longer lets a vault turn soft delete off, and neither does the
    emulated vault, so ``KeyVaultSoftDeleteRequired`` cannot happen."""
    location = "westus" if case == "other region" else None
    vault = emulator.add_vault("kv1", purge_protection=case != "no purge protection", location=location)
    now = emulator.clock.timestamp()
    record = vault.create_key(
        "cmk",
        enabled=case != "disabled",
        exp=now + 60 if case == "expired" else None,
        nbf=now + 3600 if case == "not yet valid" else None,
        size=3072 if case == "3072 bits" else 2048,
    )
    identity = {"no identity": None, "user-assigned only": "UserAssigned", "wrong client id": "UserAssigned"}
    emulator.arm.add_account("aoai1", identity=identity.get(case, "SystemAssigned"))
    if case == "expired":
        emulator.clock.advance(timedelta(seconds=61))
    if case == "access denied":
        vault.deny(emulator.arm.identity_principal(RG, "aoai1"))
    version = {"unknown version": "0" * 32}.get(case, record.version)
    key = "other-key" if case == "unknown key" else "cmk"
    url = "https://127.0.0.1:1" if case == "unknown vault" else vault.url
    client_id = "00000000-0000-0000-0000-00000000dead" if case == "wrong client id" else None
    codes = {
        "unknown vault": "KeyVaultNotFound",
        "unknown key": "KeyVaultKeyNotFound",
        "unknown version": "KeyVaultKeyNotFound",
        "disabled": "KeyVaultKeyVersionDisabled",
        "expired": "KeyVaultKeyExpired",
        "not yet valid": "KeyVaultKeyNotYetValid",
        "3072 bits": "KeyVaultKeyNotSupported",
        "no purge protection": "KeyVaultPurgeProtectionRequired",
        "other region": "KeyVaultRegionMismatch",
        "no identity": "ManagedIdentityRequired",
        "user-assigned only": "ManagedIdentityRequired",
        "wrong client id": "UserAssignedIdentityNotFound",
        "access denied": "KeyVaultAccessDenied",
    }
    return cmk(url, key, version, client_id), codes[case]


CASES = [
    "unknown vault",
    "unknown key",
    "unknown version",
    "disabled",
    "expired",
    "not yet valid",
    "3072 bits",
    "no purge protection",
    "other region",
    "no identity",
    "user-assigned only",
    "wrong client id",
    "access denied",
]


@pytest.mark.parametrize("case", CASES)
def test_each_bad_key_is_refused_synchronously_with_a_clear_code(emulator: Emulator, case: str) -> None:
    update, code = _scenario(emulator, case)
    before = emulator.arm.account(RG, "aoai1")
    with pytest.raises(HttpResponseError) as raised:
        client(emulator).accounts.begin_update(RG, "aoai1", update)
    assert raised.value.status_code == 400
    assert raised.value.error.code == code
    assert any(word in raised.value.error.message for word in ("aoai1", "kv1", "cmk", "127.0.0.1:1"))
    assert emulator.arm.account(RG, "aoai1") == before


@pytest.mark.parametrize("case", ["expired", "access denied"])
def test_a_bad_key_can_surface_as_a_failed_operation(emulator: Emulator, case: str) -> None:
    update, code = _scenario(emulator, case)
    emulator.arm.validation = "async"
    before = emulator.arm.account(RG, "aoai1")
    poller = client(emulator).accounts.begin_update(RG, "aoai1", update)
    with pytest.raises(HttpResponseError) as raised:
        poller.result()
    assert raised.value.error.code == code
    after = emulator.arm.account(RG, "aoai1")
    assert after["properties"] == before["properties"]


def test_a_user_assigned_identity_is_used_through_its_client_id(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv1")
    record = vault.create_key("cmk")
    identity_id = (
        f"/subscriptions/{emulator.subscription_id}/resourceGroups/{RG}"
        "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cmk-reader"
    )
    emulator.arm.add_account("aoai1", identity="UserAssigned", user_assigned_identities=[identity_id])
    ids = emulator.arm.user_assigned_identity(identity_id)
    assert emulator.arm.identity_principal(RG, "aoai1") == ids["principalId"]
    accounts = client(emulator).accounts
    got = accounts.get(RG, "aoai1").identity.user_assigned_identities[identity_id]
    assert (got.principal_id, got.client_id) == (ids["principalId"], ids["clientId"])
    vault.deny(ids["principalId"])
    with pytest.raises(HttpResponseError) as raised:
        accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", record.version, ids["clientId"]))
    assert raised.value.error.code == "KeyVaultAccessDenied" and ids["principalId"] in raised.value.error.message
    vault.allow(ids["principalId"])
    updated = accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", record.version, ids["clientId"])).result()
    assert updated.properties.encryption.key_vault_properties.identity_client_id == ids["clientId"]


def test_an_empty_key_version_and_identity_client_id_are_accepted_as_terraform_sends_them(
    seeded: tuple[Emulator, Any, Any],
) -> None:
    """Terraform sends ``keyVersion: ""`` for a versionless key and ``identityClientId: ""`` without a user-assigned
    identity, and Azure accepts both (azure-facts §10.13, hashicorp/terraform-provider-azurerm
    cognitive_account_customer_managed_key_resource.go). The account stores them as sent; the key check resolves a
    versionless key to its latest version, which must be usable, and the system-assigned identity is the one used."""
    emulator, vault, first = seeded
    emulator.arm.configure(lro_polls=0)  # a GET ends the operation: the raw PATCH below is never polled
    terraform = {
        "properties": {
            "encryption": {
                "keySource": "Microsoft.KeyVault",
                "keyVaultProperties": {
                    "keyName": "cmk",
                    "keyVersion": "",
                    "keyVaultUri": vault.url + "/",
                    "identityClientId": "",
                },
            }
        }
    }
    status, _, body = arm(emulator, "PATCH", account_path("aoai1"), terraform)
    assert status == 202, body
    validate(COGNITIVE, "Account", body)
    stored = emulator.arm.account(RG, "aoai1")["properties"]["encryption"]["keyVaultProperties"]
    assert (stored["keyVersion"], stored["identityClientId"]) == ("", "")
    got = _converged_kvp(emulator)
    assert (got.key_version, got.identity_client_id) == ("", "")

    latest = vault.create_key("cmk", enabled=False)  # a versionless key follows the latest version: it must be usable
    with pytest.raises(HttpResponseError) as raised:
        client(emulator).accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", "", client_id=""))
    assert raised.value.error.code == "KeyVaultKeyVersionDisabled"
    assert f"The latest version '{latest.version}' of key 'cmk' (keyVersion is empty)" in raised.value.error.message
    vault.update_key("cmk", latest.version, enabled=True)
    updated = client(emulator).accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", "", client_id="")).result()
    assert updated.properties.encryption.key_vault_properties.key_version == ""

    emulator.arm.add_account("uai-only", identity="UserAssigned")
    status, _, body = arm(emulator, "PATCH", account_path("uai-only"), terraform)
    assert (status, body["error"]["code"]) == (400, "ManagedIdentityRequired")  # "" names no identity to use
    for field, value in (("keyName", ""), ("keyVaultUri", ""), ("keyVersion", 1), ("identityClientId", False)):
        bad = json.loads(json.dumps(terraform))
        bad["properties"]["encryption"]["keyVaultProperties"][field] = value
        status, _, body = arm(emulator, "PATCH", account_path("aoai1"), bad)
        assert (status, body["error"]["code"]) == (400, "InvalidEncryption"), field
        assert f"keyVaultProperties.{field} must be" in body["error"]["message"]
    assert first.version != latest.version


def _converged_kvp(emulator: Emulator) -> Any:
    """The key vault properties the SDK reads once ``aoai1`` has left "Accepted"."""
    for _ in range(10):
        account = client(emulator).accounts.get(RG, "aoai1")
        if account.properties.provisioning_state != "Accepted":
            return account.properties.encryption.key_vault_properties
        time.sleep(0.05)
    raise AssertionError("aoai1 stayed Accepted")


def test_moving_back_to_microsoft_managed_keys_is_allowed(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, _, _ = seeded
    revert = Account(properties=AccountProperties(encryption=Encryption(key_source="Microsoft.CognitiveServices")))
    client(emulator).accounts.begin_update(RG, "aoai1", revert).result()
    assert emulator.arm.account(RG, "aoai1")["properties"]["encryption"] == {"keySource": "Microsoft.CognitiveServices"}


def test_a_create_is_checked_like_an_update(emulator: Emulator) -> None:
    emulator.arm.add_resource_group(RG)
    vault = emulator.add_vault("kv1")
    record = vault.create_key("cmk")
    body = cmk(vault.url, "cmk", record.version).serialize()
    body.update({"kind": "OpenAI", "sku": {"name": "S0"}, "location": "eastus", "identity": {"type": "None"}})
    status, _, answer = arm(emulator, "PUT", account_path("with-cmk"), body)
    assert (status, answer["error"]["code"]) == (400, "ManagedIdentityRequired")
    body["kind"] = "Face"
    status, _, answer = arm(emulator, "PUT", account_path("with-cmk"), body)
    assert status == 400 and "'Face'" in answer["error"]["message"] and "OpenAI" in answer["error"]["message"]
    body.update({"kind": "AIServices", "identity": {"type": "SystemAssigned"}})
    status, headers, answer = arm(emulator, "PUT", account_path("with-cmk"), body)
    assert status == 201 and answer["properties"]["provisioningState"] == "Creating"
    assert "azure-asyncoperation" in headers
    assert emulator.arm.account(RG, "with-cmk")["properties"]["encryption"]["keyVaultProperties"]["keyName"] == "cmk"
    with pytest.raises(ResourceNotFoundError):
        client(emulator).accounts.get(RG, "never-created")
    assert [c.operation for c in emulator.control.calls()].count("arm.create_account") == 3


def test_a_create_that_fails_asynchronously_leaves_a_failed_account(emulator: Emulator) -> None:
    emulator.arm.configure(validation="async", lro_polls=0)
    emulator.arm.add_resource_group(RG)
    vault = emulator.add_vault("kv1")
    body = cmk(vault.url, "missing-key", "0" * 32).serialize()
    body.update({"kind": "OpenAI", "sku": {"name": "S0"}, "location": "eastus", "identity": {"type": "SystemAssigned"}})
    status, headers, _ = arm(emulator, "PUT", account_path("doomed"), body)
    assert status == 201 and "location" not in headers  # a PUT is tracked through Azure-AsyncOperation only
    _, _, operation = arm(emulator, "GET", headers["azure-asyncoperation"].removeprefix(emulator.arm_url).split("?")[0])
    assert operation["status"] == "Failed" and operation["error"]["code"] == "KeyVaultKeyNotFound"
    assert emulator.arm.account(RG, "doomed")["properties"]["provisioningState"] == "Failed"


def test_bad_request_bodies_get_a_400_naming_the_problem(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, _, _ = seeded
    path = account_path("aoai1")
    cases = [
        (b"{not json", "InvalidRequestContent", "not valid JSON"),
        (b"[1]", "InvalidRequestContent", "must be a JSON object"),
        (b'{"location": "westus"}', "PropertyChangeNotAllowed", "cannot change to 'westus'"),
        (b'{"kind": "AIServices"}', "PropertyChangeNotAllowed", "The kind of account 'aoai1'"),
        (b'{"sku": {}}', "InvalidSku", "Field 'sku'"),
        (b'{"tags": {"a": 1}}', "InvalidTags", "Field 'tags'"),
        (b'{"properties": []}', "InvalidRequestContent", "Field 'properties' must be an object"),
        (b'{"properties": {"encryption": "cmk"}}', "InvalidEncryption", "properties.encryption must be an object"),
        (
            b'{"properties": {"encryption": {"keyVaultProperties": {"keyName": "cmk"}}}}',
            "InvalidEncryption",
            "keyVaultProperties.keyVaultUri",
        ),
        (b'{"identity": {"type": "Both"}}', "InvalidIdentity", "got 'Both'"),
        (b'{"identity": {"type": "UserAssigned"}}', "InvalidIdentity", "needs identity.userAssignedIdentities"),
        (
            b'{"identity": {"type": "UserAssigned", "userAssignedIdentities": {"/x": {}}}}',
            "InvalidIdentity",
            "'/x' is not the ARM id",
        ),
    ]
    before = emulator.arm.account(RG, "aoai1")
    for raw, code, message in cases:
        status, _, body = arm(emulator, "PATCH", path, raw=raw)
        assert (status, body["error"]["code"]) == (400, code), (raw, body)
        assert message in body["error"]["message"], (raw, body)
    assert emulator.arm.account(RG, "aoai1") == before


# The front door: authentication, authorization, api-version, throttling ------------------------------------------


def test_a_request_without_a_token_gets_a_401_challenge(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, _, _ = seeded
    status, headers, body = arm(emulator, "GET", account_path("aoai1"), token=False)
    assert status == 401
    assert body["error"]["code"] == "AuthenticationFailed"
    challenge = headers["www-authenticate"]
    assert challenge.startswith(f'Bearer authorization_uri="https://login.microsoftonline.com/{emulator.tenant_id}"')
    assert 'error="invalid_token"' in challenge and "error_description=" in challenge


def test_a_token_for_another_audience_gets_401_invalid_authentication_token_audience(
    seeded: tuple[Emulator, Any, Any],
) -> None:
    """ARM accepts a token only for itself (azure-facts §10.9); the code and the message are ARM's, as captured in
    Azure-Samples/active-directory-dotnetcore-daemon-v2#145 and JetBrains/azure-tools-for-intellij#16."""
    emulator, _, _ = seeded
    status, headers, body = arm(emulator, "GET", account_path("aoai1"), scope="https://vault.azure.net/.default")
    assert status == 401
    assert body == {
        "error": {
            "code": "InvalidAuthenticationTokenAudience",
            "message": "The access token has been obtained for wrong audience or resource 'https://vault.azure.net'. "
            "It should exactly match with one of the allowed audiences 'https://management.core.windows.net/',"
            "'https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.",
        }
    }
    assert 'error="invalid_token"' in headers["www-authenticate"]
    status, _, _ = arm(emulator, "PATCH", account_path("aoai1"), {"tags": {"x": "y"}}, scope="https://x/.default")
    assert status == 401 and emulator.arm.account(RG, "aoai1")["tags"] == {"team": "ai"}  # nothing done
    for scope in (
        "https://management.azure.com/.default",
        "https://management.azure.com//.default",  # aud "https://management.azure.com/"
        "https://management.core.windows.net/.default",
        "https://management.core.windows.net//.default",
    ):
        assert arm(emulator, "GET", account_path("aoai1"), scope=scope)[0] == 200, scope
    wrong = client(emulator, credential_scopes=["https://eventgrid.azure.net/.default"]).accounts
    with pytest.raises(ClientAuthenticationError) as raised:
        wrong.get(RG, "aoai1")
    assert raised.value.error.code == "InvalidAuthenticationTokenAudience"


def test_a_denied_identity_gets_403_authorization_failed(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, vault, first = seeded
    emulator.arm.deny("rotation-app", "write")
    accounts = client(emulator).accounts
    assert accounts.get(RG, "aoai1").name == "aoai1"  # reads are still allowed
    with pytest.raises(HttpResponseError) as raised:
        accounts.begin_update(RG, "aoai1", cmk(vault.url, "cmk", first.version))
    assert raised.value.status_code == 403 and raised.value.error.code == "AuthorizationFailed"
    assert raised.value.error.message == (
        "The client 'rotation-app' with object id 'rotation-app' does not have authorization to perform action "
        f"'Microsoft.CognitiveServices/accounts/write' over scope '{emulator.arm.account_id(RG, 'aoai1')}' or the "
        "scope is invalid. If access was recently granted, please refresh your credentials."
    )
    assert client(emulator, "someone-else").accounts.begin_update(RG, "aoai1", Account(tags={})).result().tags == {}
    emulator.arm.allow("rotation-app")
    assert accounts.begin_update(RG, "aoai1", Account(tags={"a": "b"})).result().tags == {"a": "b"}


def test_each_arm_action_is_authorised_on_its_own(seeded: tuple[Emulator, Any, Any]) -> None:
    """ARM authorises one action per request: ``accounts/read`` (get, list), ``accounts/write`` (PUT, PATCH),
    ``accounts/delete``, and for the operation status polls ``locations/operationresults/read``, the one such action
    in the provider's operations list (MicrosoftDocs/azure-docs articles/role-based-access-control/permissions/
    ai-machine-learning.md; which action ARM checks on ``operationStatuses`` is UNCONFIRMED). The polls are
    authorised at subscription scope (azure-facts §10.7), so a role on the account alone is refused them."""
    emulator, _, _ = seeded
    emulator.arm.configure(lro_polls=0)  # the account's own GET ends the operation; nobody can poll it
    emulator.arm.deny("rotation-app", "operations")
    accounts = client(emulator).accounts
    poller = accounts.begin_update(RG, "aoai1", Account(tags={"team": "platform"}))
    with pytest.raises(HttpResponseError) as raised:
        poller.result()
    assert raised.value.status_code == 403 and raised.value.error.code == "AuthorizationFailed"
    status_path = next(c.path for c in emulator.control.calls("arm.operation_status"))
    assert raised.value.error.message == (
        "The client 'rotation-app' with object id 'rotation-app' does not have authorization to perform action "
        f"'Microsoft.CognitiveServices/locations/operationresults/read' over scope '{status_path}' or the scope is "
        "invalid. If access was recently granted, please refresh your credentials."
    )
    assert accounts.get(RG, "aoai1").tags == {"team": "platform"}  # the update stands; reading the account still works
    results_path = status_path.replace("/operationStatuses/", "/operationResults/")
    assert arm(emulator, "GET", results_path)[0] == 403

    emulator.arm.allow("rotation-app")
    for action, method, operation in (
        ("read", "GET", "accounts/read"),
        ("Microsoft.CognitiveServices/accounts/delete", "DELETE", "accounts/delete"),
        ("MICROSOFT.COGNITIVESERVICES/ACCOUNTS/WRITE", "PATCH", "accounts/write"),
    ):
        emulator.arm.deny("rotation-app", action)
        status, _, body = arm(emulator, method, account_path("aoai1"), {"tags": {}} if method == "PATCH" else None)
        assert (status, body["error"]["code"]) == (403, "AuthorizationFailed"), action
        assert f"action 'Microsoft.CognitiveServices/{operation}' over scope '{account_path('aoai1')}'" in str(body)
        assert arm(emulator, "GET", status_path)[0] == 200  # the poll is another action
        emulator.arm.allow("rotation-app")
    emulator.arm.deny("rotation-app")  # "*": every action
    assert {arm(emulator, "GET", path)[0] for path in (account_path("aoai1"), status_path)} == {403}
    with pytest.raises(ValueError, match='action must be "read", "write", "delete", "operations", "\\*"'):
        emulator.arm.deny("rotation-app", "Microsoft.CognitiveServices/accounts/listKeys/action")


def test_api_version_is_required_and_checked(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, _, _ = seeded
    status, _, body = arm(emulator, "GET", account_path("aoai1"), query="")
    assert (status, body["error"]["code"]) == (400, "MissingApiVersionParameter")
    status, _, body = arm(emulator, "GET", account_path("aoai1"), query="api-version=latest")
    assert (status, body["error"]["code"]) == (400, "InvalidApiVersionParameter") and "latest" in str(body)
    path = account_path("aoai1").replace("Microsoft.CognitiveServices", "microsoft.cognitiveservices")
    assert arm(emulator, "GET", path, query="api-version=2023-05-01")[0] == 200  # ARM matches case-insensitively


def test_throttling_answers_429_with_retry_after_that_the_sdk_honours(seeded: tuple[Emulator, Any, Any]) -> None:
    emulator, _, _ = seeded
    emulator.arm.set_throttle_scale(0.02)  # reads: a burst of 5, 0.5 a second; writes: 4, 0.2 a second
    remaining = [arm(emulator, "GET", account_path("aoai1"))[1]["x-ms-ratelimit-remaining-subscription-reads"]]
    remaining += [arm(emulator, "GET", account_path("aoai1"))[1]["x-ms-ratelimit-remaining-subscription-reads"]]
    assert remaining == ["4", "3"]
    for _ in range(3):
        arm(emulator, "GET", account_path("aoai1"))
    status, headers, body = arm(emulator, "GET", account_path("aoai1"))
    assert (status, body["error"]["code"]) == (429, "TooManyRequests")
    assert int(headers["retry-after"]) >= 1 and headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    other = account_path("x", subscription="00000000-0000-0000-0000-000000000002")
    assert arm(emulator, "GET", other)[0] == 404  # another subscription has its own buckets

    for _ in range(4):
        assert arm(emulator, "PATCH", account_path("aoai1"), {"tags": {"n": "1"}})[0] in (202, 409)
    status, headers, _ = arm(emulator, "PATCH", account_path("aoai1"), {"tags": {"thrown": "away"}})
    assert status == 429 and headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
    assert emulator.arm.account(RG, "aoai1")["tags"] != {"thrown": "away"}  # a throttled request does nothing

    while arm(emulator, "GET", account_path("aoai1"))[0] != 429:  # empty the bucket again, however slow this machine
        pass
    started = time.monotonic()
    assert client(emulator).accounts.get(RG, "aoai1").name == "aoai1"  # azure-core waits Retry-After, then retries
    assert time.monotonic() - started >= 0.9
    assert [c.status for c in emulator.control.calls("arm.get_account")][-2:] == [429, 200]


# The Python API and the admin API --------------------------------------------------------------------------------


def test_python_api_rejects_bad_input_clearly(emulator: Emulator) -> None:
    with pytest.raises(InvalidAccount, match="Kind 'Face' is not supported"):
        emulator.arm.add_account("a1", kind="Face")
    with pytest.raises(InvalidAccount, match=r"identity\.type must be one of"):
        emulator.arm.add_account("a1", identity="Both")
    with pytest.raises(InvalidAccount, match="keySource must be one of"):
        emulator.arm.add_account("a1", encryption={"keySource": "Vault"})
    emulator.arm.add_account("a1", identity=None)
    assert emulator.arm.identity_principal(RG, "a1") is None
    with pytest.raises(InvalidAccount, match="already exists"):
        emulator.arm.add_account("A1")
    with pytest.raises(ValueError, match="lro_polls must be a whole number >= 0; got -1"):
        emulator.arm.lro_polls = -1
    with pytest.raises(ValueError, match="validation must be"):
        emulator.arm.configure(validation="later")
    with pytest.raises(KeyError, match="No account 'nope'"):
        emulator.arm.account(RG, "nope")


def test_admin_api_seeds_reads_and_steers_accounts(emulator: Emulator) -> None:
    status, body = admin(emulator, "POST", "/admin/arm/accounts", {"name": "a1", "identity": "None", "tags": {}})
    assert status == 201 and "identity" not in body and body["properties"]["provisioningState"] == "Succeeded"
    status, body = admin(emulator, "GET", "/admin/arm/accounts/rg-ai/a1")
    assert status == 200 and body["name"] == "a1"
    status, settings = admin(emulator, "PUT", "/admin/arm/settings", {"lro_polls": 0, "page_size": 7})
    assert status == 200 and settings["lro_polls"] == 0 and settings["page_size"] == 7
    assert emulator.arm.page_size == 7
    status, _ = admin(emulator, "POST", "/admin/arm/accounts/rg-ai/a1/fail-next-update", {"code": "X", "message": "y"})
    assert status == 204
    poller = client(emulator).accounts.begin_update(RG, "a1", Account(tags={"k": "v"}))
    with pytest.raises(HttpResponseError, match="X"):
        poller.result()
    status, _ = admin(emulator, "POST", "/admin/arm/deny", {"identity": "rotation-app", "action": "read"})
    assert status == 204
    with pytest.raises(HttpResponseError, match="AuthorizationFailed"):
        client(emulator).accounts.get(RG, "a1")
    assert admin(emulator, "POST", "/admin/arm/allow", {"identity": "rotation-app"})[0] == 204
    assert client(emulator).accounts.get(RG, "a1").name == "a1"
    assert admin(emulator, "POST", "/admin/arm/deny", {"identity": "rotation-app", "action": "operations"})[0] == 204
    with pytest.raises(HttpResponseError, match="locations/operationresults/read"):
        client(emulator).accounts.begin_update(RG, "a1", Account(tags={"k": "w"})).result()


def test_bad_admin_input_gets_a_clear_400(emulator: Emulator) -> None:
    cases = [
        ("POST", "/admin/arm/accounts", {}, "Missing field 'name'"),
        ("POST", "/admin/arm/accounts", {"name": "a", "colour": "red"}, "Unknown account fields ['colour']"),
        ("POST", "/admin/arm/accounts", {"name": "a", "kind": 3}, "'kind' must be a string"),
        ("POST", "/admin/arm/accounts", {"name": "a", "kind": "Face"}, "Kind 'Face' is not supported"),
        ("POST", "/admin/arm/accounts", {"name": "a", "encryption": "cmk"}, "'encryption' must be an object"),
        ("PUT", "/admin/arm/settings", {"lro_polls": "2"}, "lro_polls must be a whole number >= 0; got '2'"),
        ("PUT", "/admin/arm/settings", {"page_size": 0}, "page_size must be a whole number >= 1"),
        ("PUT", "/admin/arm/settings", {"lro_seconds": -1}, "lro_seconds must be a number of seconds >= 0"),
        ("PUT", "/admin/arm/settings", {"throttle_scale": 0}, "throttle_scale must be a positive number"),
        ("PUT", "/admin/arm/settings", {"retry_after": True}, "retry_after must be a whole number"),
        ("PUT", "/admin/arm/settings", {"speed": 1}, "Unknown ARM settings ['speed']"),
        ("POST", "/admin/arm/deny", {"identity": "x", "action": "all"}, 'action must be "read"'),
        ("POST", "/admin/arm/resource-groups", {}, "Missing field 'name'"),
        ("POST", "/admin/arm/resource-groups", {"name": "rg."}, "does not end in '.'"),
        ("POST", "/admin/arm/resource-groups", {"name": "rg", "location": "x"}, "Unknown resource group fields"),
    ]
    for method, path, body, message in cases:
        status, answer = admin(emulator, method, path, body)
        assert status == 400, (body, answer)
        assert message in answer["error"]["message"], (message, answer)
    assert emulator.arm.page_size == 100 and emulator.arm.lro_polls == 1  # nothing half-applied
    emulator.arm.add_account("a1")
    status, answer = admin(emulator, "POST", "/admin/arm/accounts/rg-ai/a1/fail-next-update", {"code": "X"})
    assert status == 400 and "Missing field 'message'" in answer["error"]["message"]
    status, answer = admin(emulator, "POST", "/admin/arm/accounts/rg-ai/nope/fail-next-update", {"code": "X"})
    assert status == 404 and "nope" in answer["error"]["message"]
    status, answer = admin(emulator, "POST", "/admin/arm/accounts", {"name": "a1"})
    assert status == 409 and "already exists" in answer["error"]["message"]
