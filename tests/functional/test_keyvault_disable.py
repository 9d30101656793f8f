"""``KeyVaultPort.disable_version``, retirement's one write to Key Vault: the real adapter (azure-keyvault-keys over
HTTPS to the emulator) and the in-memory twin, held to the same contract.

What it shows, each against the vault's own record: the named version is disabled and nothing else about it changes,
the other versions stay enabled, and a second call changes nothing; a missing version is ``NotFound``; an empty
version is refused before any request (Key Vault would take ``PATCH /keys/{name}/`` as the current version). Against
the emulator only: an identity without the ``update`` key permission gets ``PermissionDenied`` naming keys/update,
and the request was one PATCH of that version.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from emulator.core import Emulator
from rotation.connection import AzureConnection
from rotation.errors import InvalidRequest, NotFound, PermissionDenied
from rotation.model import KeyRef
from rotation.ports import KeyVaultPort
from tests.doubles import InMemoryKeyVault

IDENTITY = "rotation-app"  # the emulator credential's default identity
UPDATE = "keyvault.update_key"  # the emulator's name for PATCH /keys/{name}[/{version}]
TAGS = {"rotation-app": "rotation-test", "rotation-request-id": "req-1"}


@dataclass
class Vault:
    """One key ``cmk`` with three versions, oldest first, behind ``port``; ``enabled`` reads the vault's own record."""

    port: KeyVaultPort
    key: KeyRef
    versions: list[str]
    enabled: Callable[[str], bool]

    def state(self) -> dict[str, bool]:
        return {version: self.enabled(version) for version in self.versions}


def emulated(emulator: Emulator) -> Vault:
    vault = emulator.add_vault("kv-retire")
    expiry = emulator.clock.now() + timedelta(days=90)
    versions = [
        vault.create_key("cmk", exp=expiry, key_ops=["wrapKey", "unwrapKey"], tags=TAGS).version for _ in range(3)
    ]
    connection = AzureConnection(
        emulator.credential(IDENTITY),
        arm_endpoint=emulator.arm_url,
        ca_bundle=emulator.ca_bundle,
        verify_challenge_resource=False,
    )
    return Vault(
        connection.key_vault(),
        KeyRef.parse(f"{vault.url}/keys/cmk"),
        versions,
        lambda version: vault.get("cmk", version).enabled,
    )


def in_memory() -> Vault:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    double = InMemoryKeyVault(lambda: start + timedelta(days=100))
    key = KeyRef.parse("https://kv-retire.vault.azure.net/keys/cmk")
    versions = [
        double.add_version(key, created_on=start + timedelta(days=i), expires_on=start + timedelta(days=90), tags=TAGS)
        for i in range(3)
    ]
    return Vault(
        double,
        key,
        [v.version for v in versions],
        lambda version: next(v.enabled for v in double.versions(key) if v.version == version),
    )


@pytest.fixture(params=["emulator", "in-memory"])
def vault(request: pytest.FixtureRequest) -> Vault:
    if request.param == "emulator":
        return emulated(request.getfixturevalue("emulator"))
    return in_memory()


def test_disabling_a_version_leaves_it_disabled_and_every_other_version_enabled(vault: Vault) -> None:
    oldest, middle, newest = vault.versions

    disabled = vault.port.disable_version(vault.key, middle)

    assert vault.state() == {oldest: True, middle: False, newest: True}
    # What comes back is the version as the vault now holds it: the same version, disabled, its tags and expiry kept.
    assert disabled.version == middle and disabled.enabled is False
    assert dict(disabled.tags) == TAGS
    listed = {v.version: v for v in vault.port.list_versions(vault.key)}
    assert {version: v.enabled for version, v in listed.items()} == vault.state()
    assert listed[middle].expires_on == listed[oldest].expires_on is not None
    assert dict(listed[middle].tags) == TAGS


def test_disabling_a_disabled_version_again_changes_nothing(vault: Vault) -> None:
    oldest, middle, newest = vault.versions
    vault.port.disable_version(vault.key, oldest)

    again = vault.port.disable_version(vault.key, oldest)

    assert again.enabled is False
    assert vault.state() == {oldest: False, middle: True, newest: True}


def test_a_missing_version_is_not_found_and_nothing_is_disabled(vault: Vault) -> None:
    with pytest.raises(NotFound, match="cmk"):
        vault.port.disable_version(vault.key, "0" * 32)

    assert all(vault.state().values())


@pytest.mark.parametrize("version", ["", "../cmk", " "])
def test_a_version_that_names_no_single_version_is_refused(vault: Vault, version: str) -> None:
    """``PATCH /keys/cmk/`` would disable the current version, the one every account uses."""
    with pytest.raises(InvalidRequest, match="name one existing version"):
        vault.port.disable_version(vault.key, version)

    assert all(vault.state().values())


def test_the_adapter_sends_one_patch_of_that_version(emulator: Emulator) -> None:
    vault = emulated(emulator)
    emulator.control.reset_calls()

    vault.port.disable_version(vault.key, vault.versions[0])

    patches = [(c.method, c.path, c.identity) for c in emulator.control.calls(UPDATE) if c.status != 401]
    assert patches == [("PATCH", f"/keys/cmk/{vault.versions[0]}", IDENTITY)]
    assert {c.operation for c in emulator.control.calls() if c.status != 401} == {UPDATE}


def test_the_adapter_refuses_an_empty_version_without_calling_key_vault(emulator: Emulator) -> None:
    vault = emulated(emulator)
    emulator.control.reset_calls()

    with pytest.raises(InvalidRequest):
        vault.port.disable_version(vault.key, "")

    assert emulator.control.calls() == []


def test_an_identity_without_keys_update_is_denied_with_the_permission_named(emulator: Emulator) -> None:
    vault = emulated(emulator)
    emulator.vault("kv-retire").deny(IDENTITY, ["update"])

    with pytest.raises(PermissionDenied) as denied:
        vault.port.disable_version(vault.key, vault.versions[0])

    message = str(denied.value)
    assert "keys/update" in message and "Microsoft.KeyVault/vaults/keys/update/action" in message, message
    assert re.search(r"\(403 Forbidden: .*does not have keys update permission", message), message
    assert all(vault.state().values())
    # The reads need no update: the same identity still lists the versions.
    assert {v.version for v in vault.port.list_versions(vault.key)} == set(vault.versions)
