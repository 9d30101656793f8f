"""Discovery's pure parts (rotation/discovery.py), and its two paths over in-memory twins: no I/O.

The rows Resource Graph answers are matched to keys by the rule ``AccountEncryption.uses`` applies to ARM's state (the
vault URL normalised, host and key name without case); the quota headers decide the wait before the next page; the
discovery confirms each find through the accounts port and falls back to its listing when the query fails.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from rotation import config
from rotation.config import Settings
from rotation.discovery import (
    MAX_QUOTA_WAIT,
    QUOTA_REMAINING,
    QUOTA_RESETS_AFTER,
    AccountDiscovery,
    Discovery,
    DiscoveryPath,
    GraphRow,
    ResourceGraph,
    accounts_on,
    by_key,
    parse_rows,
    quota_wait,
    resets_after,
)
from rotation.errors import ConfigError, InvalidRequest, PermissionDenied, RotationError, TransientError
from rotation.log import LOGGER_NAME, Event
from rotation.model import AccountRef, KeyRef, Scope, UnmanagedPolicy
from tests.doubles import InMemoryAccounts
from tests.unit.factories import AOAI_1, AOAI_2, AOAI_3, KEY, OTHER_KEY, SUBSCRIPTION, VAULT_URL, account

SUB2 = "00000000-0000-0000-0000-000000000002"
AOAI_4 = AccountRef(SUB2, "rg-two", "aoai-4")


def row(ref: AccountRef, vault_uri: str = VAULT_URL, key_name: str = "cmk") -> GraphRow:
    return GraphRow(ref.id, vault_uri, key_name)


class FakeGraph:
    """``GraphPort``'s twin: the rows it holds, or the error it raises; records the scopes it was asked for."""

    def __init__(self, rows: list[GraphRow] | None = None, error: RotationError | None = None) -> None:
        self._rows = rows or []
        self._error = error
        self.scopes: list[Scope] = []

    def rows(self, scope: Scope) -> list[GraphRow]:
        self.scopes.append(scope)
        if self._error is not None:
            raise self._error
        return list(self._rows)


# Matching rows to keys --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vault_uri", "key_name"),
    [
        (VAULT_URL, "cmk"),
        (VAULT_URL + "/", "cmk"),  # Azure stores the URI with a trailing slash
        ("https://KV-Prod.Vault.Azure.NET/", "CMK"),  # host and key name compare without case
        ("https://kv-prod.vault.azure.net:443", "cmk"),  # the default port
        (" https://kv-prod.vault.azure.net/ ", "Cmk"),
    ],
)
def test_a_row_names_a_key_by_its_normalised_vault_and_name(vault_uri: str, key_name: str) -> None:
    assert GraphRow(AOAI_1.id, vault_uri, key_name).names(KEY)


@pytest.mark.parametrize(
    ("vault_uri", "key_name"),
    [
        (VAULT_URL, "other"),
        ("https://kv-test.vault.azure.net/", "cmk"),
        ("https://kv-prod.vault.azure.net:8443/", "cmk"),
        ("http://kv-prod.vault.azure.net/", "cmk"),
        ("https://kv-prod.vault.azure.net/keys/cmk", "cmk"),  # a key URL is not a vault URL
        ("", ""),  # tostring of a missing value
        ("not a url", "cmk"),
    ],
)
def test_a_row_on_another_vault_or_key_or_with_no_vault_names_no_key(vault_uri: str, key_name: str) -> None:
    assert not GraphRow(AOAI_1.id, vault_uri, key_name).names(KEY)


def test_the_accounts_on_the_keys_are_each_named_once_in_the_rows_order() -> None:
    rows = [
        row(AOAI_2),
        row(AOAI_1, key_name="other"),
        row(AOAI_3, "https://kv-test.vault.azure.net/"),
        row(AOAI_2, key_name="CMK"),
        GraphRow("/not/an/account", VAULT_URL, "elsewhere"),  # on no key: never parsed
    ]
    assert accounts_on(rows, [KEY]) == [AOAI_2]
    assert accounts_on(rows, [KEY, OTHER_KEY]) == [AOAI_2, AOAI_1]
    assert accounts_on(rows, []) == []


def test_an_account_id_arm_never_gives_on_a_key_makes_the_answer_untrusted() -> None:
    with pytest.raises(InvalidRequest, match="an id ARM never gives"):
        accounts_on([GraphRow("/subscriptions/x/resourceGroups/rg/providers/Other/things/a", VAULT_URL, "cmk")], [KEY])


def test_rows_are_read_from_an_object_array_only() -> None:
    data = [{"id": AOAI_1.id, "name": "aoai-1", "keyVaultUri": VAULT_URL + "/", "keyName": "cmk", "keyVersion": ""}]
    assert parse_rows(data) == [GraphRow(AOAI_1.id, VAULT_URL + "/", "cmk")]
    assert parse_rows([]) == []
    with pytest.raises(InvalidRequest, match="dict data, not the requested object array"):
        parse_rows({"columns": [], "rows": []})  # a table
    for bad in ([{"id": AOAI_1.id, "keyVaultUri": VAULT_URL}], [["id", "uri", "name"]], [{"id": 1, "a": 2}]):
        with pytest.raises(InvalidRequest, match="without the query's id, keyVaultUri and keyName"):
            parse_rows(bad)


def test_each_key_gets_the_accounts_arm_says_use_it_sorted_by_id() -> None:
    states = [
        account(AOAI_3),
        account(AOAI_1, key=OTHER_KEY),
        account(AOAI_2, vault_uri="https://KV-PROD.vault.azure.net/"),
        account(AccountRef(SUBSCRIPTION, "rg-ai", "managed"), key_source="Microsoft.CognitiveServices"),
    ]
    third = KeyRef.parse(f"{VAULT_URL}/keys/unused")
    found = by_key([KEY, OTHER_KEY, third], states)
    assert {key: [s.account for s in found[key]] for key in found} == {
        KEY: [AOAI_2, AOAI_3],
        OTHER_KEY: [AOAI_1],
        third: [],
    }


# The quota --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:00:03", 3.0), ("00:00:00", 0.0), ("01:02:03", 3723.0), ("00:00:01.5", 1.5), (" 00:00:05 ", 5.0)],
)
def test_the_quota_reset_is_hh_mm_ss(text: str, seconds: float) -> None:
    assert resets_after(text) == seconds


@pytest.mark.parametrize(
    "text",
    [None, "", "3", "00:03", "00:60:00", "00:00:60", "aa:bb:cc", "\u0660\u0660:\u0660\u0660:\u0660\u0663", "-1:00:00"],
)
def test_a_missing_or_malformed_quota_reset_is_none(text: str | None) -> None:
    assert resets_after(text) is None


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({QUOTA_REMAINING: "0", QUOTA_RESETS_AFTER: "00:00:02"}, 2.0),
        ({QUOTA_REMAINING: "1", QUOTA_RESETS_AFTER: "00:00:02"}, 0.0),  # one query left: send it
        ({QUOTA_REMAINING: "0"}, 0.0),  # no reset to wait for: azure-core's 429 retry takes over
        ({QUOTA_REMAINING: "0", QUOTA_RESETS_AFTER: "soon"}, 0.0),
        ({QUOTA_REMAINING: "0", QUOTA_RESETS_AFTER: "02:00:00"}, MAX_QUOTA_WAIT),  # cut, as a Retry-After is
        ({QUOTA_RESETS_AFTER: "00:00:02"}, 0.0),  # no quota reported (another cloud, an older API)
        ({QUOTA_REMAINING: "none", QUOTA_RESETS_AFTER: "00:00:02"}, 0.0),
        ({QUOTA_REMAINING: "-1", QUOTA_RESETS_AFTER: "00:00:02"}, 2.0),
    ],
)
def test_the_next_page_waits_only_when_no_quota_is_left(headers: dict[str, str], wait: float) -> None:
    assert quota_wait(headers) == wait


# Scope and settings -----------------------------------------------------------------------------------------------


def test_a_scope_is_subscriptions_or_a_management_group_or_the_tenant() -> None:
    assert str(Scope()) == "tenant"
    assert str(Scope(management_group="Production")) == "management group Production"
    scope = Scope(subscriptions=(SUB2, SUBSCRIPTION.upper(), SUBSCRIPTION))
    assert scope.subscriptions == (SUBSCRIPTION, SUB2)
    assert str(scope) == f"subscriptions {SUBSCRIPTION}, {SUB2}"
    with pytest.raises(ConfigError, match="not both"):
        Scope(subscriptions=(SUBSCRIPTION,), management_group="Production")
    with pytest.raises(ConfigError, match="GUIDs"):
        Scope(subscriptions=("prod",))
    for bad in (" ", "Prod Group", "x" * 91):
        with pytest.raises(ConfigError, match=r"management group id .* is invalid"):
            Scope(management_group=bad)


def test_the_discovery_setting_names_the_scope_or_turns_discovery_off() -> None:
    def discovery(value: str | None) -> Scope | None:
        env = {} if value is None else {config.DISCOVERY: value}
        return Settings.from_env(env, require_targets=False).discovery

    assert discovery(None) == Scope() and discovery("TENANT") == Scope()
    assert discovery("off") is None
    assert discovery(f"/subscriptions/{SUB2}, /Subscriptions/{SUBSCRIPTION}") == Scope((SUBSCRIPTION, SUB2))
    group = "/providers/Microsoft.Management/managementGroups/Production"
    assert discovery(group) == Scope(management_group="Production")
    for bad, says in (
        ("everything", "is not a discovery scope"),
        (f"{SUBSCRIPTION}", "is not a discovery scope"),  # a bare id: the scope's prefix is required
        (f"/subscriptions/{SUBSCRIPTION},{group}", "is not a discovery scope"),
        ("/subscriptions/prod", "GUIDs"),
        (group + "x/y z", "management group id"),
    ):
        with pytest.raises(ConfigError, match=rf"ROTATION_DISCOVERY=.*{says}.*use tenant"):
            discovery(bad)


def test_the_unmanaged_setting_is_report_or_enrol() -> None:
    def unmanaged(env: dict[str, str]) -> UnmanagedPolicy:
        return Settings.from_env(env, require_targets=False).unmanaged

    assert unmanaged({}) is UnmanagedPolicy.REPORT
    assert unmanaged({config.UNMANAGED: "Enrol"}) is UnmanagedPolicy.ENROL
    with pytest.raises(ConfigError, match=r"ROTATION_UNMANAGED='enroll' must be report .* or enrol"):
        unmanaged({config.UNMANAGED: "enroll"})


def test_page_size_and_concurrency_are_bounded() -> None:
    for size in (0, 1001):
        with pytest.raises(ConfigError, match="page size must be 1 to 1000"):
            ResourceGraph(object(), page_size=size)
    with pytest.raises(ConfigError, match="concurrency must be at least 1"):
        AccountDiscovery(FakeGraph(), InMemoryAccounts(), concurrency=0)


# The two paths, over the twins ------------------------------------------------------------------------------------


def test_resource_graph_finds_are_confirmed_by_arm(caplog: pytest.LogCaptureFixture) -> None:
    arm = InMemoryAccounts()
    moved = AccountRef(SUBSCRIPTION, "rg-ai", "moved")
    gone = AccountRef(SUBSCRIPTION, "rg-ai", "gone")
    for state in (account(AOAI_2), account(AOAI_1), account(AOAI_4), account(moved, key=OTHER_KEY)):
        arm.add(state)
    arm.fail(AOAI_3, "get", PermissionDenied(f"the identity lacks accounts/read on {AOAI_3.id}"))
    graph = FakeGraph([row(a) for a in (AOAI_1, AOAI_2, AOAI_3, AOAI_4, moved, gone)])

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        found = AccountDiscovery(graph, arm, scope=Scope(management_group="mg")).discover([KEY, OTHER_KEY, KEY])

    assert (found.path, found.searched, found.fallback_reason) == (
        DiscoveryPath.RESOURCE_GRAPH,
        "management group mg",
        None,
    )
    assert [s.account for s in found.accounts[KEY]] == [AOAI_1, AOAI_2, AOAI_4]
    assert [s.account for s in found.accounts[OTHER_KEY]] == [moved]  # ARM's word over Resource Graph's lagging row
    assert list(found.account_failures) == [AOAI_3]  # gone (404) is dropped, not a failure
    assert found.subscription_failures == {}
    assert arm.updates == [] and {operation for operation, _ in arm.calls} == {"get"}
    assert graph.scopes == [Scope(management_group="mg")]
    [summary] = [r for r in caplog.records if getattr(r, "event", "") == Event.DISCOVERY_COMPLETED]
    assert summary.getMessage() == (
        f"rotation.discovery_completed: 4 accounts on 2 keys through resource_graph (management group mg) "
        f"[{KEY.id}: 3; {OTHER_KEY.id}: 1]; failed: account {AOAI_3.id} (PermissionDenied)"
    )
    assert not [r for r in caplog.records if getattr(r, "event", "") == Event.DISCOVERY_FALLBACK]


def test_a_failed_query_falls_back_to_listing_the_known_subscriptions(caplog: pytest.LogCaptureFixture) -> None:
    arm = InMemoryAccounts()
    for state in (account(AOAI_1), account(AOAI_2, key=OTHER_KEY), account(AOAI_4)):
        arm.add(state)
    refused = TransientError("query the accounts on Resource Graph (tenant) failed with 429: RateLimiting: slow down")

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        found = AccountDiscovery(FakeGraph(error=refused), arm).discover(
            [KEY, OTHER_KEY], known_subscriptions=[SUB2, SUBSCRIPTION.upper()]
        )

    assert (found.path, found.searched) == (DiscoveryPath.ARM, f"subscriptions {SUBSCRIPTION}, {SUB2}")
    assert found.fallback_reason == str(refused)
    assert {key: [s.account for s in states] for key, states in found.accounts.items()} == {
        KEY: [AOAI_1, AOAI_4],
        OTHER_KEY: [AOAI_2],
    }
    assert sorted(arm.listings) == [SUBSCRIPTION, SUB2] and arm.calls == []  # listed, never read again
    assert found.narrowed and not found.complete  # the tenant was asked for; only the known subscriptions were listed
    [fallback] = [r for r in caplog.records if getattr(r, "event", "") == Event.DISCOVERY_FALLBACK]
    assert (fallback.levelno, fallback.reason, fallback.searched) == (
        logging.WARNING,
        "TransientFailure",
        f"subscriptions {SUBSCRIPTION}, {SUB2}",
    )
    assert str(refused) in fallback.getMessage()


def test_the_fallback_lists_the_configured_subscriptions_and_reports_each_failed_listing() -> None:
    arm = InMemoryAccounts()
    arm.add(account(AOAI_1))
    arm.add(account(AOAI_4))
    arm.fail_listing(SUB2, PermissionDenied(f"the identity lacks accounts/read on /subscriptions/{SUB2}"))
    discovery = AccountDiscovery(
        FakeGraph(error=PermissionDenied("no graph")), arm, scope=Scope(subscriptions=(SUBSCRIPTION, SUB2))
    )

    found = discovery.discover([KEY], known_subscriptions=["00000000-0000-0000-0000-00000000000f"])

    assert sorted(arm.listings) == [SUBSCRIPTION, SUB2]  # the configured ones, not the known one
    assert [s.account for s in found.accounts[KEY]] == [AOAI_1]
    assert list(found.subscription_failures) == [SUB2]
    assert not found.narrowed and not found.complete  # searched as configured, but one listing failed
    assert found.summary().endswith(f"; failed: subscription {SUB2} (PermissionDenied)")


def test_a_fallback_that_knows_no_subscription_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        found = AccountDiscovery(FakeGraph(error=PermissionDenied("no graph")), InMemoryAccounts()).discover([KEY])
    assert found == Discovery(
        DiscoveryPath.ARM,
        "no subscription",
        {KEY: ()},
        fallback_reason="no graph",
        subscription_failures={},
        narrowed=True,
    )
    assert not found.complete
    [fallback] = [r for r in caplog.records if getattr(r, "event", "") == Event.DISCOVERY_FALLBACK]
    assert fallback.getMessage() == (
        "rotation.discovery_fallback: reason=PermissionDenied: Resource Graph could not be used for the tenant "
        "(no graph); no subscription is configured or known, so ARM has none to list"
    )


def test_a_known_subscription_that_is_not_an_id_is_refused_before_anything_is_read() -> None:
    graph = FakeGraph()
    with pytest.raises(ConfigError, match="GUIDs"):
        AccountDiscovery(graph, InMemoryAccounts()).discover([KEY], known_subscriptions=["prod"])
    assert graph.scopes == []


def test_an_untrusted_answer_falls_back_too() -> None:
    arm = InMemoryAccounts()
    arm.add(replace(account(AOAI_1), key_name="CMK"))
    bad = GraphRow("/subscriptions/x/resourceGroups/rg/providers/Other/things/a", VAULT_URL, "cmk")

    found = AccountDiscovery(FakeGraph([bad]), arm).discover([KEY], known_subscriptions=[SUBSCRIPTION])

    assert found.path is DiscoveryPath.ARM and "an id ARM never gives" in (found.fallback_reason or "")
    assert [s.account for s in found.accounts[KEY]] == [AOAI_1]
