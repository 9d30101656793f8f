"""How the service reaches Azure: one credential, and the options every SDK client is built with.

In Azure this is ``DefaultAzureCredential`` (the app's user-assigned identity when ``AZURE_CLIENT_ID`` is set) against
the cloud ``ROTATION_AZURE_CLOUD`` names (``rotation/clouds.py``): its Entra ID authority for the credential, its
Resource Manager endpoint and token scope for the accounts client and for discovery's Resource Graph (served at the
same endpoint). Key Vault needs neither: its client takes the scope from the vault's challenge. Locally the demo and
the tests build an ``AzureConnection`` themselves, with the emulator's credential, ARM endpoint and CA bundle, and hand
it to the CLI or the Functions app; the CLI's ``--emulator FILE`` builds one from the emulator's endpoints file
(``rotation/local_emulator.py``). There is no setting that points a deployed app anywhere else.

Client tuning lives here, once: azure-core's HTTP retries are set through client keyword arguments (never wrapped in a
second loop), and ARM polling sleeps what ``Retry-After`` says, falling back to ``polling_interval``, never to the
SDK's default 30 s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.core.credentials import AzureKeyCredential, TokenCredential

from rotation.clouds import DEFAULT_CLOUD, Cloud
from rotation.config import DEFAULT_CONCURRENCY, Settings

if TYPE_CHECKING:  # each adapter, and its SDK, is imported when it is built: on_key_event needs none of them
    from rotation.accounts import AccountsAdapter
    from rotation.discovery import AccountDiscovery
    from rotation.keyvault import KeyVaultAdapter
    from rotation.model import Scope
    from rotation.notify import OutcomePublisher


@dataclass(frozen=True)
class AzureConnection:
    credential: TokenCredential = field(repr=False)
    arm_endpoint: str | None = None  # None: the Resource Manager of ``cloud``
    ca_bundle: str | None = None  # a CA bundle to trust (the emulator's); None: the system's
    verify_challenge_resource: bool = True  # Key Vault's check that the challenge names *.vault.azure.net
    polling_interval: float = 5.0  # seconds between ARM polls when the service sends no Retry-After
    operation_timeout: float = 600.0  # longest wait on one ARM operation before the verify step takes over
    client_options: Mapping[str, Any] = field(default_factory=dict)  # e.g. azure-core's retry_total, for every client
    cloud: Cloud = DEFAULT_CLOUD  # the ARM token scope (and, without arm_endpoint, the ARM endpoint) come from it

    @classmethod
    def default(cls, settings: Settings) -> AzureConnection:
        """Managed identity in Azure, developer sign-in (Azure CLI, VS Code ...) on a workstation, in the cloud of
        ``ROTATION_AZURE_CLOUD``. (Managed identity needs no authority; a service principal from the environment and
        the shared token cache use it. The Azure CLI signs in to its own active cloud: ``az cloud set``.)"""
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(
            authority=settings.cloud.authority_host, managed_identity_client_id=settings.client_id
        )
        return cls(credential, cloud=settings.cloud)

    def _transport(self) -> dict[str, Any]:
        verify = {} if self.ca_bundle is None else {"connection_verify": self.ca_bundle}
        return {**verify, **self.client_options}

    def key_vault(self) -> KeyVaultAdapter:
        from rotation.keyvault import KeyVaultAdapter

        return KeyVaultAdapter(
            self.credential, verify_challenge_resource=self.verify_challenge_resource, **self._transport()
        )

    def accounts(self) -> AccountsAdapter:
        from rotation.accounts import AccountsAdapter

        return AccountsAdapter(
            self.credential,
            base_url=self.arm_endpoint or self.cloud.arm_endpoint,
            credential_scopes=(self.cloud.arm_scope,),
            polling_interval=self.polling_interval,
            operation_timeout=self.operation_timeout,
            **self._transport(),
        )

    def discovery(
        self,
        accounts: AccountsAdapter | None = None,
        *,
        scope: Scope | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        page_size: int | None = None,
    ) -> AccountDiscovery:
        """Discovery of the accounts on the target keys (``rotation/discovery.py``): Resource Graph at this
        connection's Resource Manager (the same endpoint serves it in every cloud), with ARM's token scope; ARM through
        ``accounts`` (pass the engine's adapter to share its per-subscription budgets; a new one when None).
        ``scope`` None searches the tenant; ``page_size`` None asks Resource Graph for its maximum."""
        from rotation.discovery import AccountDiscovery, ResourceGraph

        graph = ResourceGraph(
            self.credential,
            base_url=self.arm_endpoint or self.cloud.arm_endpoint,
            credential_scopes=(self.cloud.arm_scope,),
            page_size=page_size,
            **self._transport(),
        )
        return AccountDiscovery(graph, accounts or self.accounts(), scope=scope, concurrency=concurrency)

    def publisher(self, settings: Settings) -> OutcomePublisher | None:
        """The outcome-events publisher, when ``ROTATION_EVENTS_ENDPOINT`` is set: the topic key if one is given,
        the app's identity otherwise."""
        if settings.events_endpoint is None:
            return None
        from rotation.notify import OutcomePublisher

        credential: AzureKeyCredential | TokenCredential = (
            AzureKeyCredential(settings.events_key) if settings.events_key else self.credential
        )
        return OutcomePublisher(settings.events_endpoint, credential, app_name=settings.app_name, **self._transport())
