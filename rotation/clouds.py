"""The Azure clouds the service runs in, chosen by one app setting: ``ROTATION_AZURE_CLOUD``.

Its values are the names Bicep's ``environment().name`` and ``az cloud list`` give (the Bicep sets the setting from
``environment().name``), and everything cloud-specific is derived from it here, once::

    ROTATION_AZURE_CLOUD  AzureCloud (default)       AzureUSGovernment                AzureChinaCloud
    ARM endpoint          management.azure.com       management.usgovcloudapi.net     management.chinacloudapi.cn
    ARM token scope       management.azure.com       management.core.usgovcloudapi.net management.chinacloudapi.cn
    Entra ID authority    login.microsoftonline.com  login.microsoftonline.us         login.chinacloudapi.cn
    Key Vault suffix      vault.azure.net            vault.usgovcloudapi.net          vault.azure.cn
    Managed HSM suffix    managedhsm.azure.net       managedhsm.usgovcloudapi.net     managedhsm.azure.cn
    storage suffix        core.windows.net           core.usgovcloudapi.net           core.chinacloudapi.cn

Sources: the ARM endpoint and scope are azure-mgmt-core's ``get_arm_endpoints`` (what the management SDKs use for
``cloud_setting``; US Government ARM accepts both ``management.core.usgovcloudapi.net`` and
``management.usgovcloudapi.net`` as the token audience); the authority hosts are ``azure.identity.AzureAuthorityHosts``;
the DNS suffixes are azure-cli's cloud table (``keyvault_dns``, ``mhsm_dns``, ``storage_endpoint``). A unit test keeps
the table equal to the two SDKs.

Key Vault needs nothing more: its client takes the token scope from the vault's own 401 challenge. The storage suffix
is what ``AzureWebJobsStorage__accountName`` expands to. Event Grid topic endpoints are given whole
(``ROTATION_EVENTS_ENDPOINT``), so no suffix is needed for them.

This module is pure: no I/O, no environment reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

AZURE_CLOUD_SETTING = "ROTATION_AZURE_CLOUD"


@dataclass(frozen=True)
class Cloud:
    """One Azure cloud: its name as ``ROTATION_AZURE_CLOUD`` spells it, and what the clients need to reach it."""

    name: str  # Bicep's environment().name
    arm_endpoint: str  # Resource Manager, no trailing slash
    arm_scope: str  # the token scope for Resource Manager
    authority_host: str  # Entra ID, for azure-identity's ``authority=``
    vault_suffix: str  # Key Vault DNS suffix, without the leading dot
    managed_hsm_suffix: str  # Managed HSM DNS suffix, without the leading dot
    storage_suffix: str  # storage endpoint suffix: <account>.<service>.<suffix>

    @property
    def key_service_suffixes(self) -> tuple[str, str]:
        """The DNS suffixes a key URL of this cloud ends with: Key Vault's and Managed HSM's."""
        return (self.vault_suffix, self.managed_hsm_suffix)

    def owns_host(self, host: str) -> bool:
        """Whether ``host`` (without a port) is a Key Vault or Managed HSM of this cloud."""
        folded = host.lower().rstrip(".")
        return any(folded.endswith("." + suffix) for suffix in self.key_service_suffixes)


AZURE_PUBLIC_CLOUD = Cloud(
    name="AzureCloud",
    arm_endpoint="https://management.azure.com",
    arm_scope="https://management.azure.com/.default",
    authority_host="login.microsoftonline.com",
    vault_suffix="vault.azure.net",
    managed_hsm_suffix="managedhsm.azure.net",
    storage_suffix="core.windows.net",
)
AZURE_US_GOVERNMENT = Cloud(
    name="AzureUSGovernment",
    arm_endpoint="https://management.usgovcloudapi.net",
    arm_scope="https://management.core.usgovcloudapi.net/.default",
    authority_host="login.microsoftonline.us",
    vault_suffix="vault.usgovcloudapi.net",
    managed_hsm_suffix="managedhsm.usgovcloudapi.net",
    storage_suffix="core.usgovcloudapi.net",
)
AZURE_CHINA_CLOUD = Cloud(
    name="AzureChinaCloud",
    arm_endpoint="https://management.chinacloudapi.cn",
    arm_scope="https://management.chinacloudapi.cn/.default",
    authority_host="login.chinacloudapi.cn",
    vault_suffix="vault.azure.cn",
    managed_hsm_suffix="managedhsm.azure.cn",
    storage_suffix="core.chinacloudapi.cn",
)
DEFAULT_CLOUD = AZURE_PUBLIC_CLOUD
# Every cloud by its exact name (ROTATION_AZURE_CLOUD is matched exactly, as Bicep writes it).
CLOUDS: Mapping[str, Cloud] = MappingProxyType(
    {cloud.name: cloud for cloud in (AZURE_PUBLIC_CLOUD, AZURE_US_GOVERNMENT, AZURE_CHINA_CLOUD)}
)


def cloud_of_host(host: str) -> Cloud | None:
    """The cloud whose Key Vault or Managed HSM suffix ``host`` ends with; None for any other host (an emulator, an
    IP address): such a host is not refused for its cloud, only the suffix of another cloud is."""
    return next((cloud for cloud in CLOUDS.values() if cloud.owns_host(host)), None)
