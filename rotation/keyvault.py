"""The Key Vault adapter: reads a key's versions, creates new RSA-2048 versions, and disables an old version for
retirement. Nothing else.

It never deletes, expires or purges anything, and it never touches a secret or a certificate. It disables a version
only through ``disable_version``, which only retirement calls (``ROTATION_RETIREMENT``, off by default): one named,
existing version, never the current one by omission (an empty version is refused, since ``PATCH /keys/{name}/``
would update the current version), and nothing but ``enabled`` is sent. That PATCH is the one call that needs
``keys/update`` (``Microsoft.KeyVault/vaults/keys/update/action``), which the grants' custom roles give only with
``retirement=true`` (in roleMode BuiltIn, Key Vault Crypto Officer always holds it).

Why ``create_version`` turns azure-core's retries off: ``POST /keys/{name}/create`` takes no idempotency token, and
azure-core retries a POST on 500/503/504 and on any answer with ``Retry-After``, so one call could create two versions.
With retries off, a failed create surfaces as an error; the engine then re-reads the versions, adopts the one tagged
with its request id if the create did land, and only otherwise creates again. A create whose outcome is unknown (its
answer lost, or a server error that can follow the work) raises ``OutcomeUnknown``: the engine then waits for the
version to show up rather than creating another.

Listing versions returns no key material (type, size, operations). It is read only where the engine needs it
(``describe``: the versions its decision looks at, newest first) and for the current version (``latest_version``, one
call that answers the common case without listing at all), so a key with 500 versions costs what one with 5 does. Key
material is immutable, so it is read once per version and process, and cached. Key Vault refuses to return a disabled
version's key (403 ``KeyDisabled``), so only enabled versions are read.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError, ServiceResponseError

from rotation.azure_errors import translate
from rotation.errors import InvalidRequest, OutcomeUnknown
from rotation.model import KeyRef, KeyVersion, recency

if TYPE_CHECKING:  # the SDK itself is imported on first use: a trigger that never reads Key Vault never loads it
    from azure.keyvault.keys import KeyClient, KeyProperties, KeyVaultKey

RSA_SIZE = 2048
RSA, RSA_HSM = "RSA", "RSA-HSM"  # azure.keyvault.keys.KeyType's values
_VERSION = re.compile(r"[0-9A-Za-z]+")  # a version id (32 hex digits in Key Vault); never empty, never a path


class KeyVaultAdapter:
    """``KeyVaultPort`` over ``azure-keyvault-keys``. One ``KeyClient`` per vault, built on first use."""

    def __init__(
        self,
        credential: TokenCredential,
        *,
        verify_challenge_resource: bool = True,
        **client_kwargs: Any,
    ) -> None:
        self._credential = credential
        self._client_kwargs = {
            "verify_challenge_resource": verify_challenge_resource,
            "retry_total": 4,
            "retry_backoff_factor": 0.8,
            "retry_backoff_max": 30,
            **client_kwargs,
        }
        self._clients: dict[str, KeyClient] = {}
        self._material: dict[str, _Material] = {}
        self._lock = threading.Lock()

    def _client(self, key: KeyRef) -> KeyClient:
        with self._lock:
            client = self._clients.get(key.vault_url)
            if client is None:
                from azure.keyvault.keys import KeyClient

                client = KeyClient(key.vault_url, self._credential, **self._client_kwargs)
                self._clients[key.vault_url] = client
            return client

    def latest_version(self, key: KeyRef) -> KeyVersion | None:
        """Key Vault's current version with its material; None when the key does not exist or that version is
        disabled."""
        try:
            current = self._client(key).get_key(key.name)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if _key_disabled(exc):
                return None
            raise self._read_error(exc, key) from exc
        except AzureError as exc:
            raise self._read_error(exc, key) from exc
        return _to_model(current.properties, self._remember(current), latest=True)

    def list_versions(self, key: KeyRef) -> list[KeyVersion]:
        """Every version of ``key``, oldest first (``recency``), with the material already known; ``[]`` when the key
        does not exist."""
        client = self._client(key)
        try:
            properties = list(client.list_properties_of_key_versions(key.name, max_page_size=25))
            latest = self._current_if_tied(client, key, properties)
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise self._read_error(exc, key, "list key versions") from exc
        with self._lock:
            known = [(p, self._material.get(str(p.version), _Material())) for p in properties]
        return sorted((_to_model(p, m, latest=p.version == latest) for p, m in known), key=recency)

    def describe(self, key: KeyRef, version: KeyVersion) -> KeyVersion:
        """``version`` with its key material, read once per process; a disabled version as it is."""
        if not version.enabled or version.kty is not None:
            return version
        with self._lock:
            material = self._material.get(version.version)
        if material is None:
            try:
                material = self._remember(self._client(key).get_key(key.name, version.version))
            except AzureError as exc:
                raise self._read_error(exc, key) from exc
        return replace(version, kty=material.kty, size=material.size, key_ops=material.key_ops)

    @staticmethod
    def _read_error(exc: AzureError, key: KeyRef, action: str = "read the key") -> Exception:
        return translate(
            exc,
            action=action,
            resource=key.id,
            permission=f"keys/list and keys/get on vault {key.vault_url}",
        )

    def _current_if_tied(self, client: KeyClient, key: KeyRef, properties: list[KeyProperties]) -> str | None:
        """Key Vault's current version, asked for only when the newest versions share a ``created`` second (only Key
        Vault knows which of them is newer); None when there is no tie. Key Vault refuses to return a disabled
        version, and that refusal says the current version is one of the tied disabled ones."""
        created = [p.created_on for p in properties if p.created_on is not None]
        if len(created) < 2 or created.count(max(created)) < 2:
            return None
        try:
            current = client.get_key(key.name)
        except HttpResponseError as exc:
            if _key_disabled(exc):
                newest = max(created)
                disabled = [str(p.version) for p in properties if p.created_on == newest and not p.enabled]
                return max(disabled, default=None)
            raise
        self._remember(current)
        return current.properties.version

    def create_version(
        self, key: KeyRef, *, kty: str, key_ops: Sequence[str], expires_on: datetime, tags: Mapping[str, str]
    ) -> KeyVersion:
        """Create one RSA-2048 version (RSA-HSM when ``kty`` is ``RSA-HSM``) and confirm its size."""
        if kty not in (RSA, RSA_HSM):
            raise InvalidRequest(f"cannot create a {kty!r} version of {key.id}: only RSA and RSA-HSM are supported")
        client = self._client(key)
        try:
            created = client.create_rsa_key(
                key.name,
                size=RSA_SIZE,
                hardware_protected=kty == RSA_HSM,
                key_operations=list(key_ops),
                expires_on=expires_on,
                tags=dict(tags),
                retry_total=0,  # see the module docstring
            )
        except AzureError as exc:
            error = translate(
                exc, action="create a key version", resource=key.id, permission=f"keys/create on vault {key.vault_url}"
            )
            if _may_have_landed(exc):
                raise OutcomeUnknown(f"{error}; the version may have been created all the same") from exc
            raise error from exc
        material = self._remember(created)
        if material.size != RSA_SIZE:
            raise InvalidRequest(
                f"Key Vault created version {created.properties.version} of {key.id} with {material.size} bits"
            )
        return _to_model(created.properties, material, latest=True)

    def disable_version(self, key: KeyRef, version: str) -> KeyVersion:
        """Disable ``version`` of ``key`` (``PATCH /keys/{name}/{version}`` with only ``enabled: false``) and return it
        as Key Vault answers. Setting ``enabled`` is idempotent, so azure-core's retries stay on. ``latest`` is False:
        the answer does not say whether the version is Key Vault's current one (retirement never disables that)."""
        if not _VERSION.fullmatch(version):
            raise InvalidRequest(f"cannot disable version {version!r} of {key.id}: name one existing version")
        try:
            updated = self._client(key).update_key_properties(key.name, version, enabled=False)
        except AzureError as exc:
            raise translate(
                exc,
                action=f"disable version {version}",
                resource=key.id,
                permission=f"keys/update (Microsoft.KeyVault/vaults/keys/update/action) on key {key.id}",
            ) from exc
        return _to_model(updated.properties, self._remember(updated), latest=False)

    def _remember(self, key: KeyVaultKey) -> _Material:
        material = _Material.of(key)
        with self._lock:
            self._material[str(key.properties.version)] = material
        return material


def _key_disabled(exc: HttpResponseError) -> bool:
    """Key Vault's refusal to return a disabled version's key."""
    inner = getattr(exc.error, "innererror", None) or {}
    return exc.status_code == 403 and inner.get("code") == "KeyDisabled"


def _may_have_landed(exc: AzureError) -> bool:
    """True when the create was sent and may have taken effect although it failed: its answer was lost (a read
    timeout, a connection dropped after sending), or a server error that can follow the work. A 429 or 503 is a
    refusal before any work, and a connection that never opened (``ServiceRequestError``) sent nothing."""
    if isinstance(exc, ServiceResponseError):
        return True
    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    return status in (408, 500, 502, 504)


@dataclass(frozen=True)
class _Material:
    """What listing versions does not return: the key type, the modulus size and the permitted operations."""

    kty: str | None = None
    size: int | None = None
    key_ops: tuple[str, ...] = ()

    @classmethod
    def of(cls, key: KeyVaultKey) -> _Material:
        n = getattr(key.key, "n", None)  # JsonWebKey sets its fields dynamically
        return cls(
            kty=str(getattr(key.key_type, "value", key.key_type)),
            size=int.from_bytes(n, "big").bit_length() if n else None,
            key_ops=tuple(str(getattr(op, "value", op)) for op in key.key_operations or ()),
        )


def _to_model(p: KeyProperties, material: _Material, *, latest: bool) -> KeyVersion:
    level = p.recovery_level
    return KeyVersion(
        version=str(p.version),
        enabled=bool(p.enabled),
        created_on=p.created_on or datetime.fromtimestamp(0, UTC),  # Key Vault always sets it
        not_before=p.not_before,
        expires_on=p.expires_on,
        kty=material.kty,
        size=material.size,
        key_ops=material.key_ops,
        tags=dict(p.tags or {}),
        recovery_level=None if level is None else str(getattr(level, "value", level)),
        latest=latest,
    )
