"""The accounts adapter: reads an Azure OpenAI account's encryption settings and points it at another key version.

The update sends ``properties.encryption`` and nothing else: the same vault, the same key name and the same
``identityClientId`` as the account already has, with only ``keyVersion`` changed. It never moves an account to another
vault or key, never reverts it to Microsoft-managed keys, and never touches any other property.

ARM's update is a long-running operation. The poller follows ``Azure-AsyncOperation`` and sleeps what the service's
``Retry-After`` says; ``polling_interval`` is only the fallback when no header is sent (the SDK's default is 30 s).
After the operation, the account's ``provisioningState`` may still say ``Accepted``: that is the engine's verify step.
The account the update returns is the one the poller read after the operation (ARM's final GET for a PATCH), so no
second read follows it. If ARM refuses the poll itself (403: the status URL is authorised at subscription scope), or
the operation outlasts ``operation_timeout``, the update stands and the account is read instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.core.polling.base_polling import OperationFailed
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from rotation.azure_errors import detail, translate
from rotation.errors import InvalidRequest, TransientError
from rotation.log import Event, emit
from rotation.model import AccountEncryption, AccountRef

if TYPE_CHECKING:  # the SDK itself is imported on first use: a trigger that never reads ARM never loads it
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
    from azure.mgmt.cognitiveservices.models import Account

KEY_SOURCE_KEY_VAULT = "Microsoft.KeyVault"
DEFAULT_CONNECTIONS = 10  # requests' and azure-core's default pool
# Client options that configure the HTTP connection: they go to the transport this adapter builds.
_CONNECTION_OPTIONS = frozenset(
    {"connection_timeout", "read_timeout", "connection_verify", "connection_cert", "connection_data_block_size"}
)
_READ = "Microsoft.CognitiveServices/accounts/read"
_WRITE = "Microsoft.CognitiveServices/accounts/write"


class AccountsAdapter:
    """``AccountsPort`` over ``azure-mgmt-cognitiveservices``. One management client per subscription.

    ``base_url`` and ``credential_scopes`` choose the cloud's Resource Manager and the audience of its tokens
    (``rotation.clouds``); the SDK would otherwise take both from azure-core's ``azure_cloud`` setting, the public
    cloud by default, and a token for the public cloud's audience is refused by a sovereign cloud's ARM."""

    def __init__(
        self,
        credential: TokenCredential,
        *,
        base_url: str | None = None,
        credential_scopes: Sequence[str] | None = None,
        polling_interval: float = 5.0,
        operation_timeout: float = 600.0,
        connections: int = DEFAULT_CONNECTIONS,
        **client_kwargs: Any,
    ) -> None:
        """``connections``: the HTTP connections kept open per subscription's client, at least the number of accounts
        updated at once (``ROTATION_CONCURRENCY``): with fewer, each extra thread opens a TLS connection per call and
        throws it away (urllib3's "Connection pool is full")."""
        self._credential = credential
        self._base_url = base_url
        self._operation_timeout = operation_timeout
        self._connections = max(connections, DEFAULT_CONNECTIONS)
        self._client_kwargs: dict[str, Any] = {
            "polling_interval": polling_interval,
            "retry_total": 4,
            "retry_backoff_factor": 0.8,
            "retry_backoff_max": 30,
            **client_kwargs,
        }
        if credential_scopes is not None:  # None: the SDK's, for its cloud_setting (the public cloud by default)
            self._client_kwargs["credential_scopes"] = list(credential_scopes)
        self._clients: dict[str, CognitiveServicesManagementClient] = {}
        self._lock = threading.Lock()

    def _client(self, account: AccountRef) -> CognitiveServicesManagementClient:
        with self._lock:
            client = self._clients.get(account.subscription_id)
            if client is None:
                from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient

                options = {k: v for k, v in self._client_kwargs.items() if k not in _CONNECTION_OPTIONS}
                client = CognitiveServicesManagementClient(
                    self._credential,
                    account.subscription_id,
                    base_url=self._base_url,
                    transport=self._transport(),
                    **options,
                )
                self._clients[account.subscription_id] = client
            return client

    def _transport(self) -> RequestsTransport:
        """azure-core's requests transport, as it builds its own (urllib3's retries off: azure-core retries), with a
        pool of ``connections``."""
        session = requests.Session()
        adapter = HTTPAdapter(
            pool_maxsize=self._connections, max_retries=Retry(total=False, redirect=False, raise_on_status=False)
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        options = {k: v for k, v in self._client_kwargs.items() if k in _CONNECTION_OPTIONS}
        return RequestsTransport(session=session, session_owner=True, **options)

    def get(self, account: AccountRef) -> AccountEncryption:
        try:
            found = self._client(account).accounts.get(account.resource_group, account.name)
        except AzureError as exc:
            raise translate(
                exc, action="read the account", resource=account.id, permission=f"{_READ} on {account.id}"
            ) from exc
        return _to_model(account, found)

    def update_key_version(self, current: AccountEncryption, version: str) -> AccountEncryption:
        """Point ``current.account`` at ``version`` of the key it already uses; wait for the operation to end."""
        if current.key_source != KEY_SOURCE_KEY_VAULT or not current.key_vault_uri or not current.key_name:
            raise InvalidRequest(
                f"{current.account.id} does not use a customer-managed key; the rotation service never enables one"
            )
        from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, KeyVaultProperties

        account = current.account
        body = Account(
            properties=AccountProperties(
                encryption=Encryption(
                    key_source=KEY_SOURCE_KEY_VAULT,
                    key_vault_properties=KeyVaultProperties(
                        key_vault_uri=current.key_vault_uri,
                        key_name=current.key_name,
                        key_version=version,
                        identity_client_id=current.identity_client_id,
                    ),
                )
            )
        )
        action = f"point it at key version {version}"
        permission = f"{_WRITE} on {account.id}"
        try:
            poller = self._client(account).accounts.begin_update(account.resource_group, account.name, body)
        except AzureError as exc:
            raise translate(exc, action=action, resource=account.id, permission=permission) from exc
        try:
            # Bounded: an operation still running after this is left to the engine's verify step (its own deadline).
            updated = poller.result(timeout=self._operation_timeout)
            if poller.done() and isinstance(updated, Account):
                return _to_model(account, updated)  # the poller's final GET of the account: no read of our own
        except HttpResponseError as exc:
            if isinstance(exc.__cause__, OperationFailed):
                # The operation ran and failed. Azure reports some causes (a key it cannot reach yet) only this way, so
                # the engine may retry it, a bounded number of times.
                raise TransientError(
                    f"{account.id}: the operation to {action} failed: {_operation_error(exc)}"
                ) from exc
            if exc.status_code not in (401, 403):
                raise translate(exc, action=action, resource=account.id, permission=permission) from exc
            # ARM authorises the operation's status URL at subscription scope, which a role on the account alone may
            # not cover. The update was accepted; the account itself tells whether it took (the engine's verify).
            emit(
                Event.OPERATION_STATUS_FORBIDDEN,
                f"ARM refused the status of the update to version {version} ({detail(exc)}); the update was accepted, "
                "and reading the account verifies it",
                account=account,
                version=version,
                level=logging.WARNING,
                error=detail(exc),
            )
        except AzureError as exc:
            raise translate(exc, action=action, resource=account.id, permission=permission) from exc
        return self.get(account)


def _operation_error(exc: HttpResponseError) -> str:
    """``code: message`` from a failed operation's status body (``{"status": "Failed", "error": {...}}``)."""
    response: Any = exc.response  # an azure.core HttpResponse; the typed base lacks ``json``
    try:
        error = response.json().get("error") if response is not None else None
    except ValueError:
        error = None
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    return detail(exc)


def _to_model(ref: AccountRef, account: Account) -> AccountEncryption:
    properties = account.properties
    encryption = properties.encryption if properties is not None else None
    vault = encryption.key_vault_properties if encryption is not None else None
    identity = account.identity
    identity_type = str(identity.type) if identity is not None and identity.type else None
    return AccountEncryption(
        account=ref,
        kind=str(account.kind or ""),
        location=str(account.location or ""),
        identity_type=None if identity_type in (None, "None") else identity_type,
        key_source=None if encryption is None else str(encryption.key_source),
        key_vault_uri=None if vault is None else vault.key_vault_uri,
        key_name=None if vault is None else vault.key_name,
        key_version=None if vault is None else vault.key_version,
        identity_client_id=None if vault is None else vault.identity_client_id,
        provisioning_state=None if properties is None else str(properties.provisioning_state),
    )
