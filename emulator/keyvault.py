"""Key Vault data plane (keys). SKELETON: the Key Vault helper fills this in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emulator.http import Service

if TYPE_CHECKING:
    from emulator.admin import AdminService
    from emulator.core import Emulator


class KeyVaultService(Service):
    name = "keyvault"

    def __init__(self, vault: Vault) -> None:
        super().__init__()
        self.vault = vault


class Vault:
    def __init__(
        self,
        emulator: Emulator,
        name: str,
        *,
        location: str,
        resource_group: str,
        sku: str,
        soft_delete: bool,
        purge_protection: bool,
        retention_days: int,
    ) -> None:
        self.emulator = emulator
        self.name = name
        self.location = location
        self.resource_group = resource_group
        self.sku = sku
        self.soft_delete = soft_delete
        self.purge_protection = purge_protection
        self.retention_days = retention_days
        self.url = ""
        self.service = KeyVaultService(self)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url}


def register_admin(admin: AdminService) -> None:
    pass
