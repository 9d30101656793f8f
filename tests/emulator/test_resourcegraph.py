"""Resource Graph in the emulator, driven by the real ``ResourceGraphClient`` over HTTPS on ARM's listener.

The SDK is what the rotation service will use; raw ``requests`` show what the SDK hides (headers, api-versions).
Bodies are checked against Microsoft's REST spec (``tests/specs/resourcegraph``, stable 2024-04-01). The spec types
``QueryResponse.data`` and each table cell as ``object``, which AutoRest reads as "any JSON" and JSON Schema as "a JSON
object only", so ``valid`` checks the envelope without ``data`` and a table's columns on their own; the spec's own
example answers pass the same check.

Sources: Learn "Guidance for throttled requests in Azure Resource Graph" (quota headers, 15 queries per 5 seconds);
Learn "Working with large Azure resource data sets" and the spec's ``$top`` maximum (1000 rows a page); Resource
Graph's error codes as captured in scautomation/AzureResourceGraph-Examples#2 (``BadRequest``/``InvalidQuery``),
rubrikinc/rubrik-sizing-scripts#87 (``ManagementGroupsContainInvalidIds``), Azure/azure-cli-extensions#3325
(``RateLimiting``) and microsoft/ARI#306 (``InvalidResourceType`` for an api-version it lacks).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, KeyVaultProperties
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from emulator import Emulator, FaultRule
from emulator.resourcegraph import CMK_ACCOUNTS_QUERY, COLUMNS
from tests.emulator.test_core import admin
from tests.swagger import RESOURCEGRAPH, example, validate

SUB1 = "00000000-0000-0000-0000-000000000001"
SUB2 = "00000000-0000-0000-0000-000000000002"
EXAMPLES = "resourcegraph/resource-manager/Microsoft.ResourceGraph/stable/2024-04-01/examples"
PATH = "/providers/Microsoft.ResourceGraph/resources"


def graph(emulator: Emulator, identity: str = "rotation-app") -> ResourceGraphClient:
    return ResourceGraphClient(
        emulator.credential(identity), base_url=emulator.arm_url, connection_verify=emulator.ca_bundle
    )


def query(emulator: Emulator, identity: str = "rotation-app", **options: Any) -> Any:
    """The query through the SDK, with ``QueryRequest`` fields (``subscriptions``, ...) and ``options``."""
    fields = {name: options.pop(name) for name in ("subscriptions", "management_groups") if name in options}
    request = QueryRequest(query=CMK_ACCOUNTS_QUERY, options=QueryRequestOptions(**options), **fields)
    return graph(emulator, identity).resources(request)


def post(
    emulator: Emulator, body: Any, *, api_version: str | None = "2024-04-01", identity: str = "rotation-app"
) -> requests.Response:
    """One raw POST with a token for ARM, as the SDK sends it."""
    token = emulator.credential(identity).get_token("https://management.azure.com/.default").token
    params = {} if api_version is None else {"api-version": api_version}
    return requests.post(
        emulator.arm_url + PATH,
        json=body,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        verify=emulator.ca_bundle,
        timeout=10,
    )


def valid(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` checked against the spec's ``QueryResponse`` (and ``Column`` for a table); returns it."""
    validate(RESOURCEGRAPH, "QueryResponse", {**body, "data": {}})
    if isinstance(body["data"], dict):
        validate(RESOURCEGRAPH, "Table", {**body["data"], "rows": []})
        assert all(isinstance(row, list) for row in body["data"]["rows"])
    else:
        assert all(isinstance(row, dict) for row in body["data"])
    return body


def encryption(vault_url: str, key: str, version: str) -> dict[str, Any]:
    return {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyName": key, "keyVersion": version, "keyVaultUri": vault_url + "/"},
    }


@pytest.fixture
def seeded(emulator: Emulator) -> tuple[Emulator, str, str]:
    """Two CMK accounts in subscription 1, one in subscription 2 (a group with capitals and a versionless key), and two
    accounts Resource Graph must not return (Microsoft-managed keys, and no encryption). Returns the vault URL and the
    key version the accounts use."""
    vault = emulator.add_vault("kv1")
    version = vault.create_key("cmk").version
    emulator.arm.add_account("aoai-b", encryption=encryption(vault.url, "cmk", version))
    emulator.arm.add_account("aoai-a", encryption=encryption(vault.url, "cmk", version))
    emulator.arm.add_account(
        "aoai-c", subscription_id=SUB2, resource_group="RG-Two", encryption=encryption(vault.url, "cmk", "")
    )
    emulator.arm.add_account("managed", encryption={"keySource": "Microsoft.CognitiveServices"})
    emulator.arm.add_account("plain", subscription_id=SUB2)
    return emulator, vault.url, version


# The query, its scope and its formats ----------------------------------------------------------------------------


def test_the_query_finds_every_cmk_account_across_subscriptions(seeded: tuple[Emulator, str, str]) -> None:
    emulator, vault_url, version = seeded
    spread = CMK_ACCOUNTS_QUERY.replace(" | ", "\n|  ").replace(", ", ",\n\t")  # whitespace does not matter
    answer = graph(emulator).resources(QueryRequest(query=f"  {spread}\n"))
    assert (answer.total_records, answer.count, answer.result_truncated, answer.skip_token) == (3, 3, "false", None)
    assert answer.data == [
        {
            "id": f"/subscriptions/{SUB1}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/{name}",
            "name": name,
            "type": "microsoft.cognitiveservices/accounts",
            "subscriptionId": SUB1,
            "resourceGroup": "rg-ai",
            "location": "eastus",
            "keyVaultUri": vault_url + "/",
            "keyName": "cmk",
            "keyVersion": version,
        }
        for name in ("aoai-a", "aoai-b")  # ordered by id
    ] + [
        {
            "id": f"/subscriptions/{SUB2}/resourceGroups/RG-Two/providers/Microsoft.CognitiveServices/accounts/aoai-c",
            "name": "aoai-c",
            "type": "microsoft.cognitiveservices/accounts",
            "subscriptionId": SUB2,
            "resourceGroup": "rg-two",  # Resource Graph lower-cases the group, not the id
            "location": "eastus",
            "keyVaultUri": vault_url + "/",
            "keyName": "cmk",
            "keyVersion": "",
        }
    ]
    response = post(emulator, {"query": CMK_ACCOUNTS_QUERY})
    assert response.status_code == 200
    assert valid(response.json())["data"] == answer.data
    assert [(c.service, c.method, c.path, c.status, c.identity) for c in emulator.control.calls("graph.resources")] == [
        ("arm", "POST", PATH, 200, "rotation-app")
    ] * 2


def test_the_spec_examples_pass_the_same_check() -> None:
    for name in ("ResourcesBasicQuery", "ResourcesFirstPageQuery", "ResourcesNextPageQuery", "ResourcesMgBasicQuery"):
        valid(example(f"{EXAMPLES}/{name}.json")["responses"]["200"]["body"])


def test_subscriptions_limit_the_rows(seeded: tuple[Emulator, str, str]) -> None:
    emulator, _, _ = seeded
    assert [row["name"] for row in query(emulator, subscriptions=[SUB2]).data] == ["aoai-c"]
    assert [row["name"] for row in query(emulator, subscriptions=[SUB1.upper(), SUB2]).data] == [
        "aoai-a",
        "aoai-b",
        "aoai-c",
    ]
    nowhere = query(emulator, subscriptions=["00000000-0000-0000-0000-00000000000f"])
    assert (nowhere.total_records, nowhere.count, nowhere.data) == (0, 0, [])
    assert [row["name"] for row in emulator.resource_graph.rows("rotation-app", [SUB2.upper()])] == ["aoai-c"]


def test_the_one_management_group_holds_every_subscription(seeded: tuple[Emulator, str, str]) -> None:
    emulator, _, _ = seeded
    root = emulator.resource_graph.management_group
    assert root == emulator.tenant_id  # the tenant root group is named after the tenant
    assert query(emulator, management_groups=[root.upper()]).total_records == 3
    with pytest.raises(HttpResponseError) as raised:
        query(emulator, management_groups=[root, "ProductionMG"])
    assert raised.value.status_code == 400 and raised.value.error.code == "BadRequest"
    assert "'ProductionMG'" in raised.value.error.message
    body = post(emulator, {"query": CMK_ACCOUNTS_QUERY, "managementGroups": ["ProductionMG"]}).json()
    validate(RESOURCEGRAPH, "ErrorResponse", body)
    assert body["error"]["details"] == [
        {
            "code": "ManagementGroupsContainInvalidIds",
            "message": "The provided management groups must be valid. Given: 'ProductionMG'.",
        }
    ]


def test_object_array_and_table_formats(seeded: tuple[Emulator, str, str]) -> None:
    emulator, _, _ = seeded
    objects = query(emulator).data  # objectArray is the default since 2021-03-01 (the SDK sends 2021-03-01)
    table = query(emulator, result_format="table").data
    assert table["columns"] == [{"name": column, "type": "string"} for column in COLUMNS]
    assert [dict(zip(COLUMNS, row, strict=True)) for row in table["rows"]] == objects
    body = valid(post(emulator, {"query": CMK_ACCOUNTS_QUERY, "options": {"resultFormat": "table"}}).json())
    assert body["data"] == table
    old = post(emulator, {"query": CMK_ACCOUNTS_QUERY, "subscriptions": [SUB1]}, api_version="2019-04-01").json()
    assert set(old["data"]) == {"columns", "rows"}  # 2019-04-01 answers a table unless asked otherwise
    response = post(emulator, {"query": CMK_ACCOUNTS_QUERY, "options": {"resultFormat": "csv"}})
    assert response.status_code == 400 and "resultFormat" in response.json()["error"]["message"]


# Paging -----------------------------------------------------------------------------------------------------------


def test_top_and_skip_token_page_through_every_row_once(emulator: Emulator) -> None:
    vault = emulator.add_vault("kv1")
    version = vault.create_key("cmk").version
    for index in (3, 0, 4, 1, 2):
        emulator.arm.add_account(f"acct{index}", encryption=encryption(vault.url, "cmk", version))
    pages = [query(emulator, top=2)]
    while pages[-1].skip_token:
        pages.append(query(emulator, skip_token=pages[-1].skip_token))  # the token carries the page size
    assert [page.count for page in pages] == [2, 2, 1]
    assert {page.total_records for page in pages} == {5}
    assert [row["name"] for page in pages for row in page.data] == [f"acct{i}" for i in range(5)]
    assert query(emulator, skip_token=pages[0].skip_token, top=3).count == 3  # $top overrides the token's page size
    assert [r["name"] for r in query(emulator, skip_token=pages[0].skip_token, skip=4).data] == ["acct4"]
    assert [r["name"] for r in query(emulator, top=1, skip=1).data] == ["acct1"]

    first = valid(post(emulator, {"query": CMK_ACCOUNTS_QUERY, "options": {"$top": 2, "$skip": 0}}).json())
    shape = example(f"{EXAMPLES}/ResourcesFirstPageQuery.json")["responses"]["200"]["body"]
    assert set(first) == set(shape) and first["resultTruncated"] == "false"
    response = post(emulator, {"query": CMK_ACCOUNTS_QUERY, "options": {"$top": 1001}})
    assert response.status_code == 400 and "$top must be a whole number 1-1000" in response.json()["error"]["message"]


def test_a_skip_token_the_emulator_did_not_give_gets_a_400_naming_it(emulator: Emulator) -> None:
    with pytest.raises(HttpResponseError) as raised:
        query(emulator, skip_token="not-a-token")
    assert raised.value.status_code == 400 and raised.value.error.code == "BadRequest"
    assert "'not-a-token'" in raised.value.error.message
    spec_token = example(f"{EXAMPLES}/ResourcesNextPageQuery.json")["parameters"]["query"]["options"]["$skipToken"]
    body = post(emulator, {"query": CMK_ACCOUNTS_QUERY, "options": {"$skipToken": spec_token}}).json()
    validate(RESOURCEGRAPH, "ErrorResponse", body)
    assert spec_token in body["error"]["message"] and body["error"]["details"][0]["code"] == "InvalidSkipToken"


# Refusals ---------------------------------------------------------------------------------------------------------


def test_any_other_query_gets_a_400_that_quotes_the_supported_one(emulator: Emulator) -> None:
    with pytest.raises(HttpResponseError) as raised:
        graph(emulator).resources(QueryRequest(query="Resources | project id, name | limit 3"))
    assert raised.value.status_code == 400 and raised.value.error.code == "BadRequest"
    assert f'"{CMK_ACCOUNTS_QUERY}"' in raised.value.error.message
    body = post(emulator, {"query": CMK_ACCOUNTS_QUERY.replace("=~", "==")}).json()
    validate(RESOURCEGRAPH, "ErrorResponse", body)
    assert body["error"]["details"] == [
        {
            "code": "InvalidQuery",
            "message": "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and "
            "fix the error before retrying.",
        }
    ]
    for bad in (None, [], {"subscriptions": [SUB1]}, {"query": CMK_ACCOUNTS_QUERY, "subscriptions": SUB1}):
        response = post(emulator, bad)
        assert response.status_code == 400, bad
        validate(RESOURCEGRAPH, "ErrorResponse", response.json())


def test_api_versions_are_those_of_the_stable_spec(emulator: Emulator) -> None:
    for version in ("2019-04-01", "2021-03-01", "2022-10-01", "2024-04-01"):
        assert post(emulator, {"query": CMK_ACCOUNTS_QUERY, "subscriptions": [SUB1]}, api_version=version).ok
    response = post(emulator, {"query": CMK_ACCOUNTS_QUERY}, api_version="2020-04-01-preview")
    assert response.status_code == 404 and response.json()["error"] == {
        "code": "InvalidResourceType",
        "message": "The resource type 'resources' could not be found in the namespace 'Microsoft.ResourceGraph' for "
        "api version '2020-04-01-preview'. The supported api-versions are "
        "'2019-04-01,2021-03-01,2022-10-01,2024-04-01'.",
    }
    assert post(emulator, {}, api_version="latest").json()["error"]["code"] == "InvalidApiVersionParameter"
    assert post(emulator, {}, api_version=None).json()["error"]["code"] == "MissingApiVersionParameter"
    unauthenticated = requests.post(emulator.arm_url + PATH, json={}, verify=emulator.ca_bundle, timeout=10)
    assert unauthenticated.status_code == 401 and "WWW-Authenticate" in unauthenticated.headers


def test_fault_rules_apply_to_the_query(emulator: Emulator) -> None:
    emulator.control.add_fault(FaultRule(operation="graph.resources", status=503, times=1))
    assert post(emulator, {"query": CMK_ACCOUNTS_QUERY}).status_code == 503
    assert post(emulator, {"query": CMK_ACCOUNTS_QUERY}).status_code == 200


# Quota, authorization, lag ------------------------------------------------------------------------------------


def test_every_answer_carries_the_user_quota_and_a_spent_quota_gets_429(emulator: Emulator) -> None:
    fresh = post(emulator, {"query": CMK_ACCOUNTS_QUERY}).headers
    assert (fresh["x-ms-user-quota-remaining"], fresh["x-ms-user-quota-resets-after"]) == ("14", "00:00:05")
    settings = admin(emulator, "PUT", "/admin/arm/settings", {"graph_quota": 3, "graph_window_seconds": 60})[1]
    assert (settings["graph_quota"], settings["graph_window_seconds"], settings["graph_lag_seconds"]) == (3, 60, 0)
    remaining = [post(emulator, {"query": "x"}).headers["x-ms-user-quota-remaining"] for _ in range(2)]
    assert remaining == ["1", "0"]  # a refused query counts too; the first one above opened the window
    throttled = post(emulator, {"query": CMK_ACCOUNTS_QUERY})
    assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert throttled.headers["x-ms-user-quota-remaining"] == "0"
    assert re.fullmatch(r"00:00:[0-5]\d|00:01:00", throttled.headers["x-ms-user-quota-resets-after"])
    body = throttled.json()
    validate(RESOURCEGRAPH, "ErrorResponse", body)
    assert body["error"]["code"] == "RateLimiting" and body["error"]["details"][0]["code"] == "RateLimiting"
    assert "resourcegraph-throttling" in body["error"]["details"][0]["message"]
    assert post(emulator, {"query": CMK_ACCOUNTS_QUERY}, identity="someone-else").status_code == 200  # per user
    with pytest.raises(ValueError, match="graph_quota must be a whole number >= 1"):
        emulator.arm.configure(graph_quota=0)
    assert admin(emulator, "PUT", "/admin/arm/settings", {"graph_window_seconds": 0})[0] == 400


def test_an_identity_denied_the_graph_action_gets_403_and_can_fall_back_to_arm(
    seeded: tuple[Emulator, str, str],
) -> None:
    emulator, _, _ = seeded
    emulator.arm.deny("rotation-app", "graph")
    with pytest.raises(HttpResponseError) as raised:
        query(emulator)
    assert raised.value.status_code == 403 and raised.value.error.code == "AuthorizationFailed"
    assert raised.value.error.message == (
        "The client 'rotation-app' with object id 'rotation-app' does not have authorization to perform action "
        f"'Microsoft.ResourceGraph/resources/read' over scope '{PATH}' or the scope is invalid. If access was "
        "recently granted, please refresh your credentials."
    )
    refused = post(emulator, {"query": CMK_ACCOUNTS_QUERY})
    assert refused.status_code == 403 and refused.headers["x-ms-user-quota-remaining"] == "15"  # nothing charged
    assert query(emulator, "someone-else").total_records == 3
    arm = CognitiveServicesManagementClient(
        emulator.credential(), SUB2, base_url=emulator.arm_url, connection_verify=emulator.ca_bundle
    )
    assert sorted(account.name for account in arm.accounts.list()) == ["aoai-c", "plain"]  # the fallback works
    emulator.arm.allow("rotation-app")
    emulator.arm.deny("rotation-app", "Microsoft.ResourceGraph/resources/read")
    assert post(emulator, {"query": CMK_ACCOUNTS_QUERY}).status_code == 403


def test_rows_are_hidden_from_an_identity_that_may_not_read_accounts(seeded: tuple[Emulator, str, str]) -> None:
    emulator, _, _ = seeded
    emulator.arm.deny("rotation-app", "read")
    hidden = query(emulator)
    assert (hidden.total_records, hidden.count, hidden.data) == (0, 0, [])
    assert query(emulator, "someone-else").total_records == 3


def test_arm_lists_accounts_by_subscription_for_any_subscription_the_emulator_holds(
    seeded: tuple[Emulator, str, str],
) -> None:
    emulator, _, _ = seeded
    for subscription, names in ((SUB1, ["aoai-a", "aoai-b", "managed"]), (SUB2, ["aoai-c", "plain"])):
        arm = CognitiveServicesManagementClient(
            emulator.credential(), subscription, base_url=emulator.arm_url, connection_verify=emulator.ca_bundle
        )
        assert sorted(account.name for account in arm.accounts.list()) == names


def test_changes_reach_resource_graph_after_the_lag(seeded: tuple[Emulator, str, str]) -> None:
    emulator, vault_url, first = seeded
    second = emulator.vault("kv1").create_key("cmk").version
    arm = CognitiveServicesManagementClient(
        emulator.credential(), SUB1, base_url=emulator.arm_url, connection_verify=emulator.ca_bundle, polling_interval=0
    )
    settings = KeyVaultProperties(key_name="cmk", key_version=second, key_vault_uri=vault_url + "/")
    move = Account(
        properties=AccountProperties(
            encryption=Encryption(key_source="Microsoft.KeyVault", key_vault_properties=settings)
        )
    )

    def versions() -> dict[str, str]:
        return {row["name"]: row["keyVersion"] for row in query(emulator).data}

    arm.accounts.begin_update("rg-ai", "aoai-a", move).result()
    assert versions()["aoai-a"] == second  # no lag by default

    emulator.arm.configure(graph_lag_seconds=300)
    emulator.clock.advance(timedelta(seconds=301))  # what exists now has been in Resource Graph for a while
    arm.accounts.begin_update("rg-ai", "aoai-b", move).result()
    emulator.arm.add_account("aoai-new", encryption=encryption(vault_url, "cmk", second))
    assert versions() == {"aoai-a": second, "aoai-b": first, "aoai-c": ""}  # the old key; the new account unseen
    emulator.clock.advance(timedelta(seconds=299))
    assert versions()["aoai-b"] == first
    emulator.clock.advance(timedelta(seconds=2))
    assert versions() == {"aoai-a": second, "aoai-b": second, "aoai-c": "", "aoai-new": second}

    arm.accounts.begin_delete("rg-ai", "aoai-new").result()
    assert "aoai-new" in versions()  # a deletion lags too
    emulator.clock.advance(timedelta(seconds=301))
    assert "aoai-new" not in versions()
