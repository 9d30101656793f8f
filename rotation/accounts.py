"""The accounts adapter: reads an Azure OpenAI account's encryption settings and points it at another key version.

The update sends ``properties.encryption`` and nothing else: the same vault, the same key name and the same
``identityClientId`` as the account already has, with only ``keyVersion`` changed. It never moves an account to another
vault or key, never reverts it to Microsoft-managed keys, and never touches any other property.

Reads, listings and updates go through an ``AccountsSession``: the SDK's async client on one event loop, where ARM's
long-running operations are followed by ``asyncio`` and wait without holding a thread. The poller follows
``Azure-AsyncOperation`` and sleeps what the service's ``Retry-After`` says; ``polling_interval`` is only the fallback
when no header is sent (the SDK's default is 30 s). Every request of a session is paced by its subscription's
``rotation.pacing.Budget``, which the answers' rate limit headers keep current. After the operation, the account's
``provisioningState`` may still say ``Accepted``: that is the engine's verify step. The account the update returns is
the one the poller read after the operation (ARM's final GET for a PATCH), so no second read follows it. If ARM refuses
the poll itself (403: the status URL is authorised at subscription scope), or the operation outlasts
``operation_timeout``, the update stands and the account is read instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.polling.base_polling import OperationFailed

from rotation.azure_errors import detail, translate
from rotation.errors import ConfigError, InvalidRequest, RotationError, TransientError
from rotation.log import Event, emit
from rotation.model import AccountEncryption, AccountRef
from rotation.pacing import ArmPacing, Budget

if TYPE_CHECKING:  # the SDK itself is imported on first use: a trigger that never reads ARM never loads it
    from azure.mgmt.cognitiveservices.aio import CognitiveServicesManagementClient as AsyncClient
    from azure.mgmt.cognitiveservices.models import Account

KEY_SOURCE_KEY_VAULT = "Microsoft.KeyVault"
_READ = "Microsoft.CognitiveServices/accounts/read"
_WRITE = "Microsoft.CognitiveServices/accounts/write"


class AccountsAdapter:
    """``AccountsPort`` over ``azure-mgmt-cognitiveservices``'s async client: a session per event loop, and one
    ``Budget`` per subscription that every session's requests share (the CLI reconciles several keys at once).

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
        **client_kwargs: Any,
    ) -> None:
        self._credential = credential
        self._base_url = base_url
        self._operation_timeout = operation_timeout
        self._client_kwargs: dict[str, Any] = {
            "polling_interval": polling_interval,
            "retry_total": 4,
            "retry_backoff_factor": 0.8,
            "retry_backoff_max": 30,
            **client_kwargs,
        }
        if credential_scopes is not None:  # None: the SDK's, for its cloud_setting (the public cloud by default)
            self._client_kwargs["credential_scopes"] = list(credential_scopes)
        self._budgets: dict[str, Budget] = {}
        self._lock = threading.Lock()

    def _budget(self, subscription_id: str) -> Budget:
        with self._lock:
            return self._budgets.setdefault(subscription_id, Budget())

    def session(self) -> AccountsSession:
        """The async clients for one event loop; use it as ``async with adapter.session() as arm``."""
        return AccountsSession(self)


class AccountsSession:
    """``AccountsPort.session()``: reads and updates on the SDK's async clients, one per subscription, closed when the
    session ends. Its requests take their turn in the adapter's per-subscription ``Budget``."""

    def __init__(self, adapter: AccountsAdapter) -> None:
        self._adapter = adapter
        self._credential = _AsyncCredential(adapter._credential)
        self._clients: dict[str, AsyncClient] = {}

    async def __aenter__(self) -> AccountsSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def _client(self, subscription_id: str) -> AsyncClient:
        client = self._clients.get(subscription_id)
        if client is None:
            from azure.mgmt.cognitiveservices.aio import CognitiveServicesManagementClient as AsyncClient

            client = AsyncClient(
                self._credential,
                subscription_id,
                base_url=self._adapter._base_url,
                per_retry_policies=[ArmPacing(self._adapter._budget(subscription_id))],
                **self._adapter._client_kwargs,
            )
            self._clients[subscription_id] = client
        return client

    async def get(self, account: AccountRef) -> AccountEncryption:
        try:
            found = await self._client(account.subscription_id).accounts.get(account.resource_group, account.name)
        except AzureError as exc:
            raise _read_failed(exc, account) from exc
        return _to_model(account, found)

    async def update_key_version(self, current: AccountEncryption, version: str) -> AccountEncryption:
        """Point ``current.account`` at ``version`` of the key it already uses; wait for the operation to end."""
        from azure.mgmt.cognitiveservices.models import Account

        account = current.account
        action = f"point it at key version {version}"
        permission = f"{_WRITE} on {account.id}"
        body = _repointed(current, version)
        try:
            poller = await self._client(account.subscription_id).accounts.begin_update(
                account.resource_group, account.name, body
            )
        except AzureError as exc:
            raise translate(exc, action=action, resource=account.id, permission=permission) from exc
        try:
            # Bounded: an operation still running after this is left to the engine's verify step (its own deadline).
            updated = await asyncio.wait_for(poller.result(), self._adapter._operation_timeout)
            if isinstance(updated, Account):
                return _to_model(account, updated)  # the poller's final GET of the account: no read of our own
        except TimeoutError:
            pass
        except HttpResponseError as exc:
            _operation_failed(exc, account, version, action, permission)
        except AzureError as exc:
            raise translate(exc, action=action, resource=account.id, permission=permission) from exc
        return await self.get(account)

    async def list(self, subscription_id: str) -> list[AccountEncryption]:
        """Every account of the subscription as ARM lists it now (all pages; discovery's fallback when Resource Graph
        cannot be used). ARM's list is current, unlike Resource Graph, so its states need no second read."""
        subscription = subscription_id.lower()
        scope = f"/subscriptions/{subscription}"
        try:
            return [_listed(found) async for found in self._client(subscription).accounts.list()]
        except AzureError as exc:
            raise translate(exc, action="list the accounts", resource=scope, permission=f"{_READ} on {scope}") from exc


class _AsyncCredential:
    """The service's one credential, for the async clients: the token comes from the synchronous credential (cached
    there; a refresh runs on a worker thread, never on the event loop)."""

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)

    async def close(self) -> None:
        """The synchronous credential outlives the session: Key Vault, storage and later sessions use it too."""

    async def __aenter__(self) -> _AsyncCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _repointed(current: AccountEncryption, version: str) -> Account:
    """The update's body: ``properties.encryption`` of ``current`` with ``keyVersion`` = ``version``, nothing else."""
    if current.key_source != KEY_SOURCE_KEY_VAULT or not current.key_vault_uri or not current.key_name:
        raise InvalidRequest(
            f"{current.account.id} does not use a customer-managed key; the rotation service never enables one"
        )
    from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, KeyVaultProperties

    return Account(
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


def _read_failed(exc: AzureError, account: AccountRef) -> RotationError:
    return translate(exc, action="read the account", resource=account.id, permission=f"{_READ} on {account.id}")


def _operation_failed(exc: HttpResponseError, account: AccountRef, version: str, action: str, permission: str) -> None:
    """An update accepted by ARM whose operation then failed, or whose status ARM refused to show. Raises the
    ``RotationError`` the engine acts on; returns when the update stands and reading the account must tell."""
    if isinstance(exc.__cause__, OperationFailed):
        # The operation ran and failed. Azure reports some causes (a key it cannot reach yet) only this way, so the
        # engine may retry it, a bounded number of times.
        raise TransientError(f"{account.id}: the operation to {action} failed: {_operation_error(exc)}") from exc
    if exc.status_code not in (401, 403):
        raise translate(exc, action=action, resource=account.id, permission=permission) from exc
    # ARM authorises the operation's status URL at subscription scope, which a role on the account alone may not
    # cover. The update was accepted; the account itself tells whether it took (the engine's verify).
    emit(
        Event.OPERATION_STATUS_FORBIDDEN,
        f"ARM refused the status of the update to version {version} ({detail(exc)}); the update was accepted, "
        "and reading the account verifies it",
        account=account,
        version=version,
        level=logging.WARNING,
        error=detail(exc),
    )


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


def _listed(account: Account) -> AccountEncryption:
    """A listed account, its id parsed as the rest of the service holds it."""
    try:
        ref = AccountRef.parse(str(account.id))
    except ConfigError as exc:  # never seen from ARM; named rather than taken for a bad setting
        raise InvalidRequest(f"ARM listed an account whose id is not a Cognitive Services account's: {exc}") from exc
    return _to_model(ref, account)


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
