"""Discovery with the real SDKs (azure-mgmt-resourcegraph, azure-mgmt-cognitiveservices) over HTTPS to the emulator.

The scene: one vault with keys ``cmk`` and ``other``; three accounts on ``cmk`` in two subscriptions (one spelled with
a trailing slash and the key name in capitals), one account on ``other`` and one with Microsoft-managed keys. What it
shows, against the emulator's own call log: Resource Graph finds the accounts across both subscriptions, in pages and
within the caller's quota; every find is read through ARM, which drops what Resource Graph still shows after a move or
a deletion (its lag) and reports a read that fails; a refused or denied query falls back to ARM's listing of the
known subscriptions, which finds the same accounts; and nothing is ever written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, KeyVaultProperties

from emulator.control import FaultRule
from emulator.core import Emulator
from emulator.resourcegraph import CMK_ACCOUNTS_QUERY
from rotation.connection import AzureConnection
from rotation.discovery import ACCOUNTS_QUERY, AccountDiscovery, Discovery, DiscoveryPath, ResourceGraph
from rotation.errors import PermissionDenied
from rotation.log import LOGGER_NAME, Event
from rotation.model import AccountRef, KeyRef, Scope
from rotation.reasons import Reason

SUB1 = "00000000-0000-0000-0000-000000000001"  # the emulator's default subscription
SUB2 = "00000000-0000-0000-0000-000000000002"
IDENTITY = "rotation-app"  # the emulator credential's default identity
READS = {("POST", "graph.resources"), ("GET", "arm.get_account"), ("GET", "arm.list_accounts")}


def encryption(vault_url: str, key: str, version: str) -> dict[str, Any]:
    return {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyVaultUri": vault_url, "keyName": key, "keyVersion": version},
    }


@dataclass
class Scene:
    emulator: Emulator
    vault: Any
    cmk: KeyRef
    other: KeyRef
    versions: dict[str, str]

    def add(self, name: str, key: str = "cmk", *, subscription_id: str = SUB1, **seed: Any) -> AccountRef:
        seed.setdefault("encryption", encryption(self.vault.url, key, self.versions[key]))
        body = self.emulator.arm.add_account(name, subscription_id=subscription_id, **seed)
        return AccountRef.parse(body["id"])

    def connection(self) -> AzureConnection:
        return AzureConnection(
            self.emulator.credential(),
            arm_endpoint=self.emulator.arm_url,
            ca_bundle=self.emulator.ca_bundle,
            polling_interval=0.05,
        )

    def discover(self, *, known: tuple[str, ...] = (), **options: Any) -> Discovery:
        return self.connection().discovery(**options).discover([self.cmk, self.other], known_subscriptions=known)

    def only_reads(self) -> None:
        """Discovery wrote nothing: every call it made is the query or an ARM read."""
        calls = {(call.method, call.operation) for call in self.emulator.control.calls() if call.status != 401}
        assert calls <= READS, calls - READS

    def someone(self, account: AccountRef) -> CognitiveServicesManagementClient:
        """Another identity's ARM client, for the account's subscription."""
        return CognitiveServicesManagementClient(
            self.emulator.credential("someone"),
            account.subscription_id,
            base_url=self.emulator.arm_url,
            connection_verify=self.emulator.ca_bundle,
            polling_interval=0,
        )

    def move(self, account: AccountRef, key: str) -> None:
        """Someone points ``account`` at another key (before discovery runs; the call log is reset after)."""
        settings = KeyVaultProperties(key_vault_uri=self.vault.url, key_name=key, key_version=self.versions[key])
        body = Account(
            properties=AccountProperties(
                encryption=Encryption(key_source="Microsoft.KeyVault", key_vault_properties=settings)
            )
        )
        self.someone(account).accounts.begin_update(account.resource_group, account.name, body).result()

    def delete(self, account: AccountRef) -> None:
        self.someone(account).accounts.begin_delete(account.resource_group, account.name).result()


@pytest.fixture
def scene(emulator: Emulator) -> Scene:
    vault = emulator.add_vault("kv1")
    versions = {name: vault.create_key(name).version for name in ("cmk", "other")}
    made = Scene(
        emulator, vault, KeyRef.parse(f"{vault.url}/keys/cmk"), KeyRef.parse(f"{vault.url}/keys/other"), versions
    )
    made.add("aoai-b")
    made.add("aoai-a")
    made.add(
        "aoai-c",
        subscription_id=SUB2,
        resource_group="RG-Two",
        encryption=encryption(vault.url + "/", "CMK", versions["cmk"]),
    )
    made.add("aoai-other", "other")
    made.add("managed", encryption={"keySource": "Microsoft.CognitiveServices"})
    return made


def names(found: Discovery, key: KeyRef) -> list[str]:
    return [state.account.name for state in found.accounts[key]]


def test_the_query_is_the_one_the_emulator_answers() -> None:
    assert " ".join(ACCOUNTS_QUERY.split()) == " ".join(CMK_ACCOUNTS_QUERY.split())


def test_resource_graph_finds_the_accounts_across_subscriptions_and_arm_confirms_each(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        found = scene.discover()

    assert (found.path, found.searched, found.fallback_reason) == (DiscoveryPath.RESOURCE_GRAPH, "tenant", None)
    assert names(found, scene.cmk) == ["aoai-a", "aoai-b", "aoai-c"]  # sorted by id; SUB2's comes last
    assert names(found, scene.other) == ["aoai-other"]
    [c] = [state for state in found.accounts[scene.cmk] if state.account.subscription_id == SUB2]
    assert (c.key_name, c.key_version, c.provisioning_state) == ("CMK", scene.versions["cmk"], "Succeeded")
    assert (found.account_failures, found.subscription_failures) == ({}, {})
    control = scene.emulator.control
    assert [call.status for call in control.calls("graph.resources")] == [200]
    assert sorted(call.path.rsplit("/", 1)[-1] for call in control.calls("arm.get_account") if call.status == 200) == [
        "aoai-a",
        "aoai-b",
        "aoai-c",
        "aoai-other",
    ]
    assert control.calls("arm.list_accounts") == []
    scene.only_reads()
    [summary] = [r for r in caplog.records if getattr(r, "event", "") == Event.DISCOVERY_COMPLETED]
    fields = [getattr(summary, name) for name in ("path", "searched", "accounts", "failures")]
    assert (summary.levelno, fields) == (logging.INFO, ["resource_graph", "tenant", 4, 0])


def test_a_configured_scope_limits_the_search(scene: Scene) -> None:
    only_two = scene.discover(scope=Scope(subscriptions=(SUB2.upper(),)))
    assert (only_two.searched, names(only_two, scene.cmk), names(only_two, scene.other)) == (
        f"subscriptions {SUB2}",
        ["aoai-c"],
        [],
    )
    group = scene.emulator.resource_graph.management_group
    in_group = scene.discover(scope=Scope(management_group=group))
    assert (in_group.searched, names(in_group, scene.cmk)) == (
        f"management group {group}",
        ["aoai-a", "aoai-b", "aoai-c"],
    )
    scene.only_reads()


def test_pages_are_followed_until_no_skip_token_is_left(scene: Scene) -> None:
    for index in range(4):
        scene.add(f"aoai-paged-{index}")

    found = scene.discover(page_size=2)

    assert names(found, scene.cmk) == ["aoai-a", "aoai-b", *(f"aoai-paged-{i}" for i in range(4)), "aoai-c"]
    assert names(found, scene.other) == ["aoai-other"]
    assert [call.status for call in scene.emulator.control.calls("graph.resources")] == [200] * 4  # 8 rows, 2 a page
    scene.only_reads()


def test_a_listing_longer_than_the_quota_waits_for_its_reset_instead_of_a_429(scene: Scene) -> None:
    scene.emulator.arm.configure(graph_quota=2, graph_window_seconds=1)
    for index in range(2):
        scene.add(f"aoai-paged-{index}")
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    emulator = scene.emulator
    graph = ResourceGraph(
        emulator.credential(), base_url=emulator.arm_url, page_size=1, sleep=sleep, connection_verify=emulator.ca_bundle
    )
    found = AccountDiscovery(graph, scene.connection().accounts()).discover([scene.cmk, scene.other])

    assert names(found, scene.cmk) == ["aoai-a", "aoai-b", "aoai-paged-0", "aoai-paged-1", "aoai-c"]
    assert names(found, scene.other) == ["aoai-other"]
    assert [call.status for call in scene.emulator.control.calls("graph.resources")] == [200] * 6  # no 429
    assert len(waits) == 2 and all(0 < wait <= 1 for wait in waits)  # after pages 2 and 4, each the window's rest
    scene.only_reads()


def test_a_denied_query_falls_back_to_listing_the_known_subscriptions(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    scene.emulator.arm.deny(IDENTITY, "graph")

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        found = scene.discover(known=(SUB2, SUB1.upper(), SUB1))

    assert (found.path, found.searched) == (DiscoveryPath.ARM, f"subscriptions {SUB1}, {SUB2}")
    assert found.fallback_reason is not None and "Microsoft.ResourceGraph/resources/read" in found.fallback_reason
    assert "403" in found.fallback_reason
    assert names(found, scene.cmk) == ["aoai-a", "aoai-b", "aoai-c"]
    assert names(found, scene.other) == ["aoai-other"]
    control = scene.emulator.control
    assert [call.status for call in control.calls("graph.resources")] == [403]
    assert sorted(call.path.split("/")[2] for call in control.calls("arm.list_accounts")) == [SUB1, SUB2]
    assert control.calls("arm.get_account") == []  # ARM's list is current: no second read
    scene.only_reads()
    [fallback] = [r for r in caplog.records if getattr(r, "event", "") == Event.DISCOVERY_FALLBACK]
    assert (fallback.levelno, fallback.reason) == (logging.WARNING, Reason.PERMISSION_DENIED.value)
    assert found.fallback_reason in fallback.getMessage()


def test_a_refused_query_falls_back_to_the_configured_subscriptions_and_reports_a_failed_listing(
    scene: Scene,
) -> None:
    control = scene.emulator.control
    control.add_fault(FaultRule(operation="graph.resources", status=400, times=None))
    control.add_fault(FaultRule(operation="arm.list_accounts", path=SUB2, status=403, times=None))

    found = scene.discover(scope=Scope(subscriptions=(SUB1, SUB2)), known=(SUB1,))

    assert (found.path, found.searched) == (DiscoveryPath.ARM, f"subscriptions {SUB1}, {SUB2}")
    assert found.fallback_reason is not None and "rejected with 400" in found.fallback_reason
    assert names(found, scene.cmk) == ["aoai-a", "aoai-b"]  # aoai-c's subscription could not be listed
    assert list(found.subscription_failures) == [SUB2]
    failure = found.subscription_failures[SUB2]
    assert isinstance(failure, PermissionDenied) and f"/subscriptions/{SUB2}" in str(failure)
    assert [call.status for call in control.calls("graph.resources")] == [400]  # a 400 is not retried
    scene.only_reads()


def test_arm_drops_what_resource_graph_still_shows_and_reports_a_read_that_fails(scene: Scene) -> None:
    emulator = scene.emulator
    moved = scene.add("aoai-moved")
    gone = scene.add("aoai-gone", subscription_id=SUB2)
    broken = scene.add("aoai-broken")
    emulator.arm.configure(graph_lag_seconds=60)
    emulator.clock.advance(timedelta(seconds=120))  # Resource Graph has caught up with the seeding...
    scene.move(moved, "other")  # ...but not with these two changes
    scene.delete(gone)
    rows = {row["name"]: row["keyName"] for row in emulator.resource_graph.rows(IDENTITY)}
    assert (rows["aoai-moved"], rows["aoai-gone"]) == ("cmk", "cmk")
    emulator.control.reset_calls()
    emulator.control.add_fault(FaultRule(operation="arm.get_account", path="/aoai-broken$", status=403, times=None))

    found = scene.discover()

    assert found.path is DiscoveryPath.RESOURCE_GRAPH
    assert names(found, scene.cmk) == ["aoai-a", "aoai-b", "aoai-c"]
    assert names(found, scene.other) == ["aoai-moved", "aoai-other"]  # ARM's word: it uses ``other`` now
    assert list(found.account_failures) == [broken]
    failure = found.account_failures[broken]
    assert isinstance(failure, PermissionDenied) and broken.id in str(failure)
    assert "failed: account " + broken.id + " (PermissionDenied)" in found.summary()
    scene.only_reads()


def test_an_answer_discovery_cannot_read_is_a_reason_to_fall_back(scene: Scene) -> None:
    body = {"totalRecords": 1, "count": 1, "resultTruncated": "false", "data": {"columns": [], "rows": []}}
    scene.emulator.control.add_fault(FaultRule(operation="graph.resources", status=200, body=body))

    found = scene.discover(known=(SUB1, SUB2))

    assert found.path is DiscoveryPath.ARM and found.fallback_reason is not None
    assert "not the requested object array" in found.fallback_reason
    assert names(found, scene.cmk) == ["aoai-a", "aoai-b", "aoai-c"]
