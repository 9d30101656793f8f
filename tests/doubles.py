"""In-memory twins of the two ports (rotation/ports.py) for tests: small services that keep state, not mocks.

``InMemoryKeyVault`` holds keys as lists of versions and creates RSA 2048 versions at the injected clock's time;
``InMemoryAccounts`` holds account encryption settings and applies updates the way ARM does (only the key version
changes; an account can linger in "Accepted"; an update to a version the vault lacks is rejected). Faults (409
conflicts, 429s, 403s ...) are scheduled per operation and raised as the real adapters raise them
(``rotation.errors``). Both record what was written, so tests can assert that nothing else was touched.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from rotation.errors import InvalidRequest, NotFound, RotationError
from rotation.model import (
    KEY_SOURCE_KEY_VAULT,
    SUPPORTED_KEY_TYPES,
    AccountEncryption,
    AccountRef,
    Clock,
    KeyRef,
    KeyVersion,
    normalize_vault_url,
    recency,
)


class InMemoryKeyVault:
    """Implements ``KeyVaultPort``. ``recovery_level`` is the vault's, reported on every version."""

    def __init__(self, clock: Clock, *, recovery_level: str = "Recoverable") -> None:
        self._clock = clock
        self._recovery_level = recovery_level
        self._keys: dict[KeyRef, list[KeyVersion]] = defaultdict(list)
        self._faults: dict[str, deque[RotationError]] = defaultdict(deque)
        self._lost_responses: deque[RotationError] = deque()
        self._late: deque[tuple[int, RotationError]] = deque()
        self._landing: list[tuple[int, KeyRef, KeyVersion]] = []
        self._lock = threading.Lock()
        self.created: list[KeyVersion] = []
        self.create_calls = 0
        self.reads: list[str] = []  # every read call by name: latest_version, list_versions, describe
        self.disabled: list[tuple[KeyRef, str]] = []  # every disable_version that took effect, in order

    def add_version(
        self,
        key: KeyRef,
        *,
        created_on: datetime,
        expires_on: datetime | None = None,
        not_before: datetime | None = None,
        enabled: bool = True,
        kty: str = "RSA",
        size: int = 2048,
        key_ops: Sequence[str] = ("wrapKey", "unwrapKey"),
        tags: Mapping[str, str] | None = None,
        version: str | None = None,
    ) -> KeyVersion:
        """Seed a version, as if someone had created it at ``created_on``."""
        stored = KeyVersion(
            version=version or uuid.uuid4().hex,
            enabled=enabled,
            created_on=created_on,
            not_before=not_before,
            expires_on=expires_on,
            kty=kty,
            size=size,
            key_ops=tuple(key_ops),
            tags=dict(tags or {}),
            recovery_level=self._recovery_level,
        )
        with self._lock:
            self._keys[key].append(stored)
        return stored

    def versions(self, key: KeyRef) -> list[KeyVersion]:
        with self._lock:
            return list(self._keys.get(key, []))

    def disable(self, key: KeyRef, version: str) -> None:
        """Someone disables ``version`` (in the portal, say)."""
        with self._lock:
            self._keys[key] = [replace(v, enabled=False) if v.version == version else v for v in self._keys[key]]

    def holds(self, vault_uri: str | None, key_name: str | None, version: str) -> bool:
        """True when the vault has ``version`` of the key named ``key_name`` at ``vault_uri``."""
        if not vault_uri or not key_name:
            return False
        key = KeyRef(normalize_vault_url(vault_uri), key_name)
        return any(v.version == version for v in self.versions(key))

    def fail(self, operation: str, *errors: RotationError) -> None:
        """The next calls of ``operation`` ("latest_version", "list_versions", "describe", "create_version" or
        "disable_version") raise ``errors``, in order."""
        self._faults[operation].extend(errors)

    def lose_create_response(self, error: RotationError) -> None:
        """The next create stores its version and then raises ``error``, like a response lost on the way back."""
        self._lost_responses.append(error)

    def land_late(self, error: RotationError, *, after_lists: int) -> None:
        """The next create raises ``error`` at once and its version appears only after ``after_lists`` more listings,
        like a create that Key Vault carries out after the client gave up waiting for its answer."""
        self._late.append((after_lists, error))

    def _fault(self, operation: str) -> None:
        with self._lock:
            queue = self._faults[operation]
            error = queue.popleft() if queue else None
        if error is not None:
            raise error

    def latest_version(self, key: KeyRef) -> KeyVersion | None:
        """The newest version (Key Vault's current), with its material; None for no version or a disabled one."""
        self._fault("latest_version")
        with self._lock:
            self.reads.append("latest_version")
        newest = max(self.versions(key), key=recency, default=None)
        return newest if newest is not None and newest.enabled else None

    def describe(self, key: KeyRef, version: KeyVersion) -> KeyVersion:
        """The stored version, material included (none for a disabled one)."""
        self._fault("describe")
        if not version.enabled or version.kty is not None:
            return version
        with self._lock:
            self.reads.append("describe")
        return next(v for v in self.versions(key) if v.version == version.version)

    def list_versions(self, key: KeyRef) -> list[KeyVersion]:
        self._fault("list_versions")
        with self._lock:
            self.reads.append("list_versions")
        with self._lock:
            landing, self._landing = self._landing, []
            for lists_left, target, version in landing:
                if lists_left <= 0:
                    self._keys[target].append(version)
                else:
                    self._landing.append((lists_left - 1, target, version))
        # Listing returns no key material: the engine reads it with ``describe`` where its decision needs it.
        return [replace(v, kty=None, size=None, key_ops=()) for v in self.versions(key)]

    def create_version(
        self, key: KeyRef, *, kty: str, key_ops: Sequence[str], expires_on: datetime, tags: Mapping[str, str]
    ) -> KeyVersion:
        self._fault("create_version")
        with self._lock:
            self.create_calls += 1
        if kty not in SUPPORTED_KEY_TYPES:
            raise InvalidRequest(f"kty {kty!r} is not RSA or RSA-HSM")
        if self._late:
            lists, error = self._late.popleft()
            late = KeyVersion(
                version=uuid.uuid4().hex,
                enabled=True,
                created_on=self._clock(),
                not_before=None,
                expires_on=expires_on,
                kty=kty,
                size=2048,
                key_ops=tuple(key_ops),
                tags=dict(tags),
                recovery_level=self._recovery_level,
            )
            with self._lock:
                self._landing.append((lists, key, late))
                self.created.append(late)
            raise error
        created = self.add_version(
            key, created_on=self._clock(), expires_on=expires_on, kty=kty, key_ops=key_ops, tags=tags
        )
        with self._lock:
            self.created.append(created)
            lost = self._lost_responses.popleft() if self._lost_responses else None
        if lost is not None:
            raise lost
        return created

    def disable_version(self, key: KeyRef, version: str) -> KeyVersion:
        """The port's disable: like the adapter, an empty version is refused and a missing one is ``NotFound``;
        recorded in ``disabled``."""
        self._fault("disable_version")
        if not (version.isascii() and version.isalnum()):
            raise InvalidRequest(f"cannot disable version {version!r} of {key.id}: name one existing version")
        if not any(v.version == version for v in self.versions(key)):
            raise NotFound(f"version {version} of {key.id} was not found while trying to disable it")
        self.disable(key, version)
        with self._lock:
            self.disabled.append((key, version))
        return next(v for v in self.versions(key) if v.version == version)


class InMemoryAccounts:
    """Implements ``AccountsPort``. With ``vault``, an update to a version the vault does not hold is rejected.

    ``update_seconds`` is how long an update's operation takes; ``max_in_flight`` records the most concurrent updates.
    ``calls`` records every call, failed ones included; ``updates`` only the applied ones.
    """

    def __init__(self, vault: InMemoryKeyVault | None = None, *, update_seconds: float = 0.0) -> None:
        self._vault = vault
        self._update_seconds = update_seconds
        self._in_flight = 0
        self.max_in_flight = 0
        self.calls: list[tuple[str, AccountRef]] = []
        self._states: dict[AccountRef, AccountEncryption] = {}
        self._faults: dict[tuple[AccountRef, str], deque[RotationError | None]] = defaultdict(deque)
        self._lingering: dict[AccountRef, int] = {}
        self._lock = threading.Lock()
        self.updates: list[tuple[AccountRef, str]] = []
        self.listings: list[str] = []  # every subscription listed, failed listings included
        self._listing_faults: dict[str, RotationError] = {}

    def add(self, state: AccountEncryption) -> None:
        with self._lock:
            self._states[state.account] = state

    def state(self, account: AccountRef) -> AccountEncryption:
        with self._lock:
            return self._states[account]

    def fail(self, account: AccountRef, operation: str, *errors: RotationError | None) -> None:
        """The next calls of ``operation`` ("get" or "update_key_version") on ``account`` raise ``errors`` in order
        (None lets that call through)."""
        self._faults[(account, operation)].extend(errors)

    def linger(self, account: AccountRef, reads: int) -> None:
        """While "Accepted" (now, or after its next update), the account stays so for ``reads`` reads, then turns
        "Succeeded"; an update while it lingers still applies (the double does not model conflicts on its own)."""
        self._lingering[account] = reads

    def _fault(self, account: AccountRef, operation: str) -> None:
        with self._lock:
            self.calls.append((operation, account))
            queue = self._faults[(account, operation)]
            error = queue.popleft() if queue else None
        if error is not None:
            raise error

    def get(self, account: AccountRef) -> AccountEncryption:
        self._fault(account, "get")
        with self._lock:
            state = self._states.get(account)
            if state is None:
                raise NotFound(f"account {account.id} was not found")
            if state.provisioning_state == "Accepted":
                left = self._lingering.get(account, 0)
                if left > 0:
                    self._lingering[account] = left - 1
                else:
                    state = replace(state, provisioning_state="Succeeded")
                    self._states[account] = state
            return state

    def session(self) -> _Session:
        return _Session(self)

    def listed(self, subscription_id: str) -> list[AccountEncryption]:
        """Every account of the subscription, as ARM's list shows them (faults per subscription: ``fail_listing``)."""
        with self._lock:
            self.listings.append(subscription_id.lower())
            error = self._listing_faults.pop(subscription_id.lower(), None)
            if error is not None:
                raise error
            return [s for a, s in self._states.items() if a.subscription_id == subscription_id.lower()]

    def fail_listing(self, subscription_id: str, error: RotationError) -> None:
        """The next listing of ``subscription_id`` raises ``error``."""
        with self._lock:
            self._listing_faults[subscription_id.lower()] = error

    async def update_key_version(self, current: AccountEncryption, version: str) -> AccountEncryption:
        account = current.account
        self._fault(account, "update_key_version")
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            await asyncio.sleep(self._update_seconds)  # the long-running operation
            self._apply(current, version)
        finally:
            with self._lock:
                self._in_flight -= 1
        return self.get(account)

    def _apply(self, current: AccountEncryption, version: str) -> None:
        account = current.account
        with self._lock:
            state = self._states.get(account)
            if state is None:
                raise NotFound(f"account {account.id} was not found")
            if self._vault is not None and not self._vault.holds(current.key_vault_uri, current.key_name, version):
                raise InvalidRequest(f"key version {version} of {current.key_name} does not exist in the vault")
            lingering = self._lingering.get(account, 0) > 0
            self._states[account] = replace(
                state,
                key_source=KEY_SOURCE_KEY_VAULT,
                key_vault_uri=current.key_vault_uri,
                key_name=current.key_name,
                key_version=version,
                identity_client_id=current.identity_client_id,
                provisioning_state="Accepted" if lingering else "Succeeded",
            )
            self.updates.append((account, version))


class _Session:
    """``InMemoryAccounts.session()``: the same accounts, read and updated from the engine's event loop."""

    def __init__(self, accounts: InMemoryAccounts) -> None:
        self._accounts = accounts

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def get(self, account: AccountRef) -> AccountEncryption:
        return self._accounts.get(account)

    async def update_key_version(self, current: AccountEncryption, version: str) -> AccountEncryption:
        return await self._accounts.update_key_version(current, version)

    async def list(self, subscription_id: str) -> list[AccountEncryption]:
        return self._accounts.listed(subscription_id)
