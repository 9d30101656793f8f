"""The fleet's two descriptions, kept in step by the CLI's ``discover``: the app's ``ROTATION_TARGETS`` and azd's
``ROTATION_KEY_TARGETS`` (``infra/README.md``), from one list of the accounts on a key.

    ROTATION_TARGETS       [{"key": <key url>, "accounts": [ids], "vault_location"?, "new_versions"?}]
    ROTATION_KEY_TARGETS   [{"vaultId": <vault ARM id>, "keyName", "location", "accounts": [ids],
                             "systemTopicName"?, "newVersions"?}]

Each function returns the whole list with the key's entry replaced (or added): its accounts are the discovered ones,
and what else the entry held (a location, a system topic, ``new_versions``) is kept. Pure: reading and writing the
files is the CLI's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from rotation.errors import ConfigError
from rotation.model import KeyRef, shown

_VAULT_ID = re.compile(
    r"/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\.KeyVault/vaults/(?P<name>[^/]+)",
    re.IGNORECASE,
)


def with_app_target(targets: Sequence[Mapping[str, Any]], key: KeyRef, accounts: Sequence[str]) -> list[dict[str, Any]]:
    """``ROTATION_TARGETS`` with ``key``'s entry listing ``accounts``."""
    entry = {"key": key.id, "accounts": sorted(accounts, key=str.lower)}
    kept = []
    for target in targets:
        if _is_key(target.get("key"), key):
            entry = {**target, **entry}
        else:
            kept.append(dict(target))
    return [*kept, entry]


def with_azd_target(
    targets: Sequence[Mapping[str, Any]], key: KeyRef, vault_id: str, location: str, accounts: Sequence[str]
) -> list[dict[str, Any]]:
    """azd's ``ROTATION_KEY_TARGETS`` with ``key``'s entry (its vault's ARM id and region) listing ``accounts``."""
    check_vault_id(key, vault_id)
    entry = {
        "vaultId": vault_id,
        "keyName": key.name,
        "location": location,
        "accounts": sorted(accounts, key=str.lower),
    }
    kept = []
    for target in targets:
        same_vault = str(target.get("vaultId", "")).lower() == vault_id.lower()
        if same_vault and str(target.get("keyName", "")).lower() == key.name.lower():
            entry = {**target, **entry}
        else:
            kept.append(dict(target))
    return [*kept, entry]


def check_vault_id(key: KeyRef, vault_id: str) -> None:
    """``ConfigError`` unless ``vault_id`` is the ARM id of ``key``'s vault (by name, when its host names it)."""
    match = _VAULT_ID.fullmatch(vault_id)
    vault_name = _vault_name(key)
    if match is None or (vault_name is not None and match["name"].lower() != vault_name.lower()):
        raise ConfigError(
            f"--vault-id {shown(vault_id)} is not the ARM id of vault {vault_name or key.vault_host!r}; give "
            f"/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.KeyVault/vaults/{vault_name or '<vault>'} "
            f"(az keyvault show --name {vault_name or '<vault>'} --query id)"
        )


def _vault_name(key: KeyRef) -> str | None:
    """The vault's name, the first label of its host; None for a host that is an IP address (the local emulator)."""
    host = urlsplit(key.vault_url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.split(".", 1)[0]
    return None


def _is_key(url: object, key: KeyRef) -> bool:
    if not isinstance(url, str):
        return False
    try:
        other = KeyRef.parse(url)
    except ConfigError:
        return False  # not a key URL: an entry of its own, kept as it is
    return other.vault_url == key.vault_url and other.name.lower() == key.name.lower()
