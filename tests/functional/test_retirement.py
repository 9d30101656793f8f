"""Evidence-gated retirement end to end: the timer sweep through the real Python worker, the emulator's Key Vault,
ARM and Resource Graph, Azurite for the ledger and the evidence. The app runs on the emulator's clock, which the test
moves forward a day at a time.

The key ``cmk`` has four versions, oldest first: ``v0`` (another app's), ``v1`` and ``v2`` (this app's) and ``v3``
(the target). The listed accounts are on ``v3``; an account in a second subscription that the targets do not list
is on ``v2``. With ``ROTATION_RETIREMENT=own`` and a one-day soak, the sweep disables exactly ``v1``, and ``v2`` only
once the unmanaged account has left it for a full day; never ``v3``, never ``v0``, never one in use.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient

import function_app
from emulator.azurite import Azurite
from emulator.core import Emulator
from emulator.functions_host import FunctionsHost
from rotation import cli
from rotation.app import RotationApp, configure
from rotation.connection import AzureConnection
from rotation.log import Event
from rotation.model import TAG_APP
from tests.function.test_openapi import assert_documented
from tests.functional.conftest import empty_queues, repoint
from tests.functional.wiring import app_settings, build_app

APP = "aoai-cmk-rotation"  # ROTATION_APP_NAME's default: the tag of this app's versions
SUB2 = "00000000-0000-0000-0000-000000000002"
DAY = timedelta(days=1)


def cmk(vault: Any, version: str) -> dict[str, Any]:
    return {
        "keySource": "Microsoft.KeyVault",
        "keyVaultProperties": {"keyName": "cmk", "keyVersion": version, "keyVaultUri": vault.url},
    }


@dataclass
class Scene:
    emulator: Emulator
    vault: Any
    app: RotationApp
    host: FunctionsHost
    versions: dict[str, str]  # v0 .. v3 -> the version id
    unmanaged: str  # its ARM id
    env: dict[str, str]  # the app settings (without the retirement's)

    def connection(self) -> AzureConnection:
        return AzureConnection(
            self.emulator.credential(),
            arm_endpoint=self.emulator.arm_url,
            ca_bundle=self.emulator.ca_bundle,
            verify_challenge_resource=False,
        )

    def sweep(self, *, after: timedelta = timedelta()) -> None:
        self.emulator.clock.advance(after)
        self.host.fire_timer("rotation_sweep")

    def enabled(self) -> dict[str, bool]:
        by_id = {r.version: r.enabled for r in self.vault.versions("cmk")}
        return {name: by_id[version] for name, version in self.versions.items()}


@pytest.fixture
def scene(emulator: Emulator, azurite: Azurite) -> Iterator[Scene]:
    vault = emulator.add_vault("kv-retire", purge_protection=True)
    versions = {}
    for name, tags in (("v0", {TAG_APP: "another-app"}), ("v1", {TAG_APP: APP}), ("v2", {TAG_APP: APP}), ("v3", {})):
        tags = tags or {TAG_APP: APP}
        versions[name] = vault.create_key("cmk", exp=emulator.clock.now() + 300 * DAY, tags=tags).version
        emulator.clock.advance(DAY)  # created a day apart, oldest first
    listed = [emulator.arm.add_account(f"aoai-{i}", encryption=cmk(vault, versions["v3"]))["id"] for i in (1, 2)]
    unmanaged = emulator.arm.add_account("aoai-team-b", subscription_id=SUB2, encryption=cmk(vault, versions["v2"]))
    targets = [{"key": f"{vault.url}/keys/cmk", "accounts": listed}]
    tables = f"ledger{uuid.uuid4().hex[:12]}", f"evidence{uuid.uuid4().hex[:12]}"
    settings = {"ROTATION_RETIREMENT": "own", "ROTATION_RETIRE_AFTER": "P1D"}
    app = build_app(
        emulator.endpoints(),
        azurite.connection_string,
        targets,
        ledger_table=tables[0],
        evidence_table=tables[1],
        settings=settings,
        clock=emulator.clock.now,
    )
    env = app_settings(emulator.endpoints(), azurite.connection_string, targets)
    host = FunctionsHost(function_app.app, azurite.connection_string, app_settings={**env, **settings})
    empty_queues(host)
    configure(app)
    try:
        yield Scene(emulator, vault, app, host, versions, unmanaged["id"], env)
    finally:
        configure(None)
        empty_queues(host)
        for table in tables:
            TableClient.from_connection_string(azurite.connection_string, table).delete_table()


def retired(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.version for r in caplog.records if getattr(r, "event", None) == Event.VERSION_RETIRED]  # type: ignore[attr-defined]


def test_retirement_disables_exactly_the_versions_that_qualify_once_the_soak_has_passed(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    all_enabled = dict.fromkeys(scene.versions, True)
    with caplog.at_level(logging.INFO, logger="rotation"):
        scene.sweep()  # the evidence begins: v1 is unused; v2 is in use; v0 is another app's; v3 is the target
        assert scene.enabled() == all_enabled

        scene.sweep(after=DAY + timedelta(minutes=1))  # v1 has been unused for a day
        assert scene.enabled() == {**all_enabled, "v1": False}
        assert retired(caplog) == [scene.versions["v1"]]

        # The unmanaged account leaves v2: its soak starts now, so the next sweep within a day keeps it.
        repoint(scene.emulator, scene.unmanaged, scene.vault.url, "cmk", scene.versions["v3"])
        scene.sweep(after=timedelta(hours=1))
        scene.sweep(after=timedelta(hours=12))
        assert scene.enabled() == {**all_enabled, "v1": False}

        scene.sweep(after=timedelta(hours=13))
        assert scene.enabled() == {**all_enabled, "v1": False, "v2": False}

    assert retired(caplog) == [scene.versions["v1"], scene.versions["v2"]]
    rows = [e for e in scene.app.ledger.list_requests() if e.reason == "Retired"]
    assert sorted(e.from_version for e in rows) == sorted([scene.versions["v1"], scene.versions["v2"]])
    assert {e.status for e in rows} == {"succeeded"}
    events = [e for e in scene.emulator.eventgrid.received if e["event"]["type"] == "CmkRotation.Retired"]
    assert sorted(e["event"]["data"]["from_version"] for e in events) == sorted(
        [scene.versions["v1"], scene.versions["v2"]]
    )
    # Nothing that still works was disabled, and nothing was deleted.
    assert len(scene.vault.versions("cmk")) == 4 and scene.enabled()["v3"] and scene.enabled()["v0"]


def test_the_status_says_why_each_version_is_kept_and_when_one_is_retired(scene: Scene) -> None:
    scene.sweep()

    answer = scene.host.http("fleet_status", "GET", "/api/status")
    [key] = assert_documented(answer, "fleet_status")["keys"]
    retirement = {scene_name(scene, r["version"]): r for r in key["retirement"]}

    assert {name: r["verdict"] for name, r in retirement.items()} == {"v2": "in_use", "v1": "unused", "v0": "kept"}
    assert retirement["v1"]["retire_at"] is not None and retirement["v1"]["unused_since"] is not None
    assert retirement["v0"]["why"] == f"not created by {APP} (ROTATION_RETIREMENT=own)"

    # The CLI shows the same (its evidence is the default table's, which this test does not use: no date).
    out = io.StringIO()
    env = {**scene.env, "ROTATION_RETIREMENT": "own", "ROTATION_RETIRE_AFTER": "P1D"}
    assert cli.main(["status"], env=env, connection=scene.connection(), out=out) == 0
    lines = [line.strip() for line in out.getvalue().splitlines() if line.strip().startswith("retire ")]
    assert lines[0] == f"retire {scene.versions['v2'][:8]}: in_use: 1 accounts use it"
    assert lines[1] == f"retire {scene.versions['v1'][:8]}: unused: no account uses it"


def test_without_a_complete_discovery_nothing_is_retired(scene: Scene) -> None:
    scene.emulator.arm.deny("rotation-app", "graph")  # the fallback lists only the targets' subscription: narrowed

    scene.sweep()
    scene.sweep(after=2 * DAY)

    assert all(scene.enabled().values())


def scene_name(scene: Scene, version: str) -> str:
    return next(name for name, v in scene.versions.items() if v == version)
