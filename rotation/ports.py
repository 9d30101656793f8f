"""The two narrow contracts the engine acts through: Key Vault keys and Cognitive Services accounts.

The real adapters (``rotation/keyvault.py``, ``rotation/accounts.py``) and the in-memory doubles in ``tests/doubles.py``
implement them. Implementations translate every service failure into ``rotation.errors`` (chained with
``raise ... from exc``): ``TransientError`` for 429/5xx/connection/LRO failures, ``ConflictError`` for ARM 409
RequestConflict, ``PermissionDenied`` for 401/403, ``NotFound`` for 404, ``InvalidRequest`` for 400. They must never
retry at the step level themselves (the engine does) and never return partial results.

ARM's updates are long-running operations, so the accounts are read and written ``async``: an ``AccountsSession`` lives
on one event loop (one ``gather`` or ``reconcile`` of the engine), where waiting on an operation holds no thread.
"""

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from rotation.model import AccountEncryption, AccountRef, KeyRef, KeyVersion


class KeyVaultPort(Protocol):
    def latest_version(self, key: KeyRef) -> KeyVersion | None:
        """Key Vault's current version of ``key``, with its key material (``kty``, ``size``, ``key_ops``); None when
        the key does not exist or its current version is disabled (Key Vault returns no disabled key)."""
        ...

    def list_versions(self, key: KeyRef) -> list[KeyVersion]:
        """Every version of ``key``; ``[]`` when the key does not exist. Listing returns no key material: ``kty``,
        ``size`` and ``key_ops`` are filled only where already known (see ``describe``). Order is unspecified."""
        ...

    def describe(self, key: KeyRef, version: KeyVersion) -> KeyVersion:
        """``version`` with its key material; a disabled version as it is (Key Vault returns no disabled key)."""
        ...

    def create_version(
        self, key: KeyRef, *, kty: str, key_ops: Sequence[str], expires_on: datetime, tags: Mapping[str, str]
    ) -> KeyVersion:
        """Create a new RSA 2048 version of ``key`` (``kty`` is "RSA" or "RSA-HSM"). Not idempotent."""
        ...

    def disable_version(self, key: KeyRef, version: str) -> KeyVersion:
        """Disable one existing ``version`` of ``key`` and return it as read back (``enabled`` False). Idempotent: an
        already disabled version stays disabled. Only retirement calls it. ``NotFound`` when the version does not
        exist; ``InvalidRequest`` for an empty version (Key Vault would update the current version instead). It never
        deletes, expires or purges, and changes nothing but ``enabled``."""
        ...


class AccountsSession(Protocol):
    async def get(self, account: AccountRef) -> AccountEncryption:
        """Read the account's encryption settings and provisioning state."""
        ...

    async def update_key_version(self, current: AccountEncryption, version: str) -> AccountEncryption:
        """Send only ``properties.encryption`` with ``version`` (keeping keyVaultUri, keyName and identityClientId of
        ``current``), wait for the long-running operation, and return the state read back."""
        ...

    async def list(self, subscription_id: str) -> list[AccountEncryption]:
        """Every account of the subscription with its encryption settings and provisioning state, as ARM lists it
        now (every page). Reads only."""
        ...


class AccountsPort(Protocol):
    def session(self) -> AbstractAsyncContextManager[AccountsSession]:
        """A session for one event loop, entered with ``async with``; it is closed when the block ends."""
        ...
