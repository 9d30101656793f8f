"""Key Vault's data plane for keys: one ``Vault`` per emulated vault, served over HTTPS by a ``KeyVaultService``.

The unmodified ``azure.keyvault.keys.KeyClient`` talks to it. What is emulated, with the wire shapes of the
2025-07-01 REST spec (``tests/specs/keyvault``):

    POST  /keys/{name}/create           new key, or a new version of an existing one (real RSA key material)
    GET   /keys/{name}[/[{version}]]    a version, or the latest one
    PATCH /keys/{name}[/[{version}]]    key_ops, enabled / nbf / exp, tags
    GET   /keys/{name}/versions         paged KeyItems (maxresults 1..25, $skiptoken in an absolute nextLink)
    GET   /keys                         paged KeyItems, one per key name
    POST  /keys/{name}/rotate           a new version, exp = now + the rotation policy's expiryTime
    GET   /keys/{name}/rotationpolicy   Key Vault's default policy until one is set
    PUT   /keys/{name}/rotationpolicy   validated as the spec describes; a policy without Notify gets the default one

It is at least as strict as Azure by default; each kinder behaviour is an explicit option. Around every operation,
in this order:

    1. the bearer challenge: no token, 401 + WWW-Authenticate, never acted on; a token for another audience than
       https://vault.azure.net, 401 AKV10022 + WWW-Authenticate
    2. the mandatory ``api-version``
    3. the caller's permission for this operation (access-policy names: get, list, create, update, rotate,
       getrotationpolicy, setrotationpolicy ...): 403 Forbidden naming the missing permission
    4. throttling: token buckets per vault with Key Vault's published limits per 10 s, weighted by key size; a
       throttled request costs nothing and gets 429 *without* Retry-After, as the one public capture of a real
       Key Vault 429 shows (``set_throttle(send_retry_after=True)`` sends it)

Fault rules from ``emulator.control`` run after step 1 and before the handler; they are how a test produces a 409 or
a 5xx (``act_first``: the work is done, then the answer is lost).

Soft delete is always on (Azure no longer lets a vault turn it off); purge protection is a setting. A rotation
policy's Rotate action is carried out on the emulator's clock: on each ``clock.advance`` past a key's trigger the
vault rotates the key once, as ``POST /rotate`` does.

Python API for tests and the other emulated services: ``Vault.create_key``, ``versions``, ``latest``, ``get``,
``key_names``, ``update_key``, ``rotate_key``, ``rotation_policy``, ``set_rotation_policy``, ``notify_before``,
``rotation_due``, ``deny`` / ``allow`` / ``can`` / ``has_access`` / ``denied``, ``set_throttle``. Every new
version, however it was made, is reported to the ``on_new_version`` callback the vault was made with (the emulator
hands it Event Grid's ``key_version_created``).

Never emulated: deletion and recovery, EC and oct keys, cryptographic operations (wrap, sign ...), import, backup,
release policies and RBAC role assignments. This module never keeps private key material: only n and e.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import isodate
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.control import Clock, TokenBucket
from emulator.credential import claims_from_authorization
from emulator.http import HttpError, Request, Response, Service

if TYPE_CHECKING:
    from emulator.admin import AdminService

KEY_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
VAULT_NAME = re.compile(r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]")
RSA_TYPES = ("RSA", "RSA-HSM")
NOT_EMULATED_TYPES = ("EC", "EC-HSM", "oct", "oct-HSM")
RSA_SIZES = (2048, 3072, 4096)
PUBLIC_EXPONENTS = (65537, 3)
KEY_OPERATIONS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export")
DEFAULT_KEY_OPERATIONS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
API_VERSIONS = re.compile(r"2025-07-01|2025-06-01|7\.\d+(-preview)?")
PAGE_MAX = 25
MAX_TAGS = 15
MIN_EXPIRY_TIME = timedelta(days=28)
MIN_ROTATE_TRIGGER = timedelta(days=7)

# Key Vault's published limits per vault per 10 s (software, HSM); other operations are weighted by key size.
CREATE_PER_10S = 20.0
OTHER_PER_10S = 4000.0
HSM_SHARE = 0.5
OTHER_COST_BY_SIZE = {2048: 1.0, 3072: 4.0, 4096: 8.0}

CHALLENGE_RESOURCE = "https://vault.azure.net"
AUDIENCE = CHALLENGE_RESOURCE  # the only token audience Key Vault accepts (azure-facts §10.9)

# Key Vault's access-policy key permissions (ARM ``KeyPermissions``); RBAC data actions map onto the same operations.
KEY_PERMISSIONS = (
    "get",
    "list",
    "create",
    "update",
    "import",
    "delete",
    "recover",
    "backup",
    "restore",
    "decrypt",
    "encrypt",
    "unwrapKey",
    "wrapKey",
    "verify",
    "sign",
    "purge",
    "release",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
)
CMK_PERMISSIONS = ("get", "wrapKey", "unwrapKey")  # what a service's identity needs to use a customer-managed key
FORBIDDEN_HELP = "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
SOFT_DELETE_ALWAYS_ON = (
    "soft_delete=False is refused: Azure enables soft delete on every key vault and no longer lets it be turned "
    "off (since February 2025; Learn: 'Soft-delete will be enabled on all key vaults'). Leave soft_delete on; "
    "use purge_protection=False for a vault whose deleted keys can be purged."
)
NOT_FOUND_HELP = (
    "If you recently deleted this key you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


class KeyNotFoundError(KeyError):
    """No key (or no such version of it) in the vault."""

    def __init__(self, vault: str, name: str, version: str | None = None) -> None:
        self.key_id = name if not version else f"{name}/{version}"
        self.message = f"A key with (name/id) {self.key_id} was not found in this key vault. {NOT_FOUND_HELP}"
        super().__init__(f"vault {vault!r} has no key {self.key_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidKeyParameterError(ValueError):
    """A parameter Key Vault would reject with 400 BadParameter; the message names the value and the fix."""


@dataclass(frozen=True)
class KeyRecord:
    """One version of a key as the vault stores it (public part only). Times are epoch seconds."""

    name: str
    version: str
    kty: str
    size: int
    key_ops: list[str]
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int
    tags: dict[str, str]
    n: bytes
    e: bytes
    vault_url: str = field(default="", repr=False)

    @property
    def kid(self) -> str:
        return f"{self.vault_url}/keys/{self.name}/{self.version}"

    @property
    def hsm(self) -> bool:
        return self.kty.endswith("-HSM")


@dataclass(frozen=True)
class RotationPolicy:
    """A key's rotation policy. ``created``/``updated`` are None for Key Vault's default (never stored) policy."""

    lifetime_actions: tuple[tuple[str, str, str], ...]  # (action type, trigger name, ISO 8601 duration)
    expiry_time: str | None = None
    created: int | None = None
    updated: int | None = None


DEFAULT_ROTATION_POLICY = RotationPolicy(lifetime_actions=(("Notify", "timeBeforeExpiry", "P30D"),))


class ThrottledError(Exception):
    """A request over the vault's limit; ``retry_after`` whole seconds (at least 1) until a token is back.

    The message starts as Key Vault's does (vcsjones/AzureSignTool#219) and adds which limit was reached.
    """

    def __init__(self, category: str, limit: float, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached "
            f"(the vault's limit of {limit:g} {category} requests per 10 seconds was reached)."
        )


class Vault:
    """One vault: its settings, its keys (every version), rotation policies, access and throttling. Thread-safe."""

    def __init__(
        self,
        name: str,
        *,
        clock: Clock,
        subscription_id: str,
        tenant_id: str,
        on_new_version: Callable[[Vault, KeyRecord], object],
        location: str,
        resource_group: str,
        sku: str,
        purge_protection: bool,
        retention_days: int,
        soft_delete: bool = True,
    ) -> None:
        """A vault with soft delete on (``soft_delete=False`` raises ``ValueError``: Azure refuses it)."""
        if not VAULT_NAME.fullmatch(name):
            raise ValueError(
                f"Vault name {name!r} is invalid: use 3-24 letters, digits and single hyphens, "
                "starting with a letter and ending with a letter or digit."
            )
        if sku not in ("standard", "premium"):
            raise ValueError(f"Vault SKU {sku!r} is invalid; use 'standard' or 'premium'.")
        if soft_delete is not True:
            raise ValueError(SOFT_DELETE_ALWAYS_ON)
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) or not 7 <= retention_days <= 90:
            raise ValueError(f"retention_days {retention_days} is invalid; soft delete keeps 7 to 90 days.")
        self.clock = clock
        self.subscription_id = subscription_id
        self.tenant_id = tenant_id
        self._on_new_version = on_new_version
        self.name = name
        self.location = location
        self.resource_group = resource_group
        self.sku = sku
        self.soft_delete = True  # always: see SOFT_DELETE_ALWAYS_ON
        self.purge_protection = purge_protection
        self.retention_days = retention_days
        self.url = ""
        self._lock = threading.RLock()
        self._keys: dict[str, list[KeyRecord]] = {}
        self._policies: dict[str, RotationPolicy] = {}
        self._denied: dict[str, set[str]] = {}  # identity (oid) -> the key permissions it lacks
        self._auto_rotated: set[tuple[str, str]] = set()  # (key, version) whose Rotate trigger has fired
        self._limits: dict[str, float] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.send_retry_after = False
        self.set_throttle(create_per_10s=CREATE_PER_10S, other_per_10s=OTHER_PER_10S)
        self.service = KeyVaultService(self)
        clock.on_advance(self._rotate_due_keys)

    # Settings --------------------------------------------------------------------------------------------------
    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{self.name}"
        )

    @property
    def recovery_level(self) -> str:
        """``Recoverable`` or ``CustomizedRecoverable`` (retention under 90 days), ``+Purgeable`` without purge
        protection (azure-facts §3.3). Never plain ``Purgeable``: soft delete is always on."""
        level = "Recoverable" if self.retention_days >= 90 else "CustomizedRecoverable"
        return level if self.purge_protection else f"{level}+Purgeable"

    @property
    def recoverable_days(self) -> int:
        return self.retention_days

    # Keys ------------------------------------------------------------------------------------------------------
    def create_key(
        self,
        name: str,
        *,
        kty: str = "RSA",
        size: int = 2048,
        key_ops: list[str] | None = None,
        enabled: bool = True,
        nbf: int | datetime | None = None,
        exp: int | datetime | None = None,
        tags: dict[str, str] | None = None,
        public_exponent: int = 65537,
    ) -> KeyRecord:
        """Create a key, or a new version of it. Raises ``InvalidKeyParameterError`` for what Key Vault rejects."""
        _check_key_name(name)
        self._check_kty(kty)
        if type(size) is not int or size not in RSA_SIZES:
            raise InvalidKeyParameterError(f"Key size {size!r} is invalid for RSA; use one of {list(RSA_SIZES)}.")
        if type(public_exponent) is not int or public_exponent not in PUBLIC_EXPONENTS:
            raise InvalidKeyParameterError(
                f"Public exponent {public_exponent!r} is not supported; use 65537 (or 3 for legacy keys)."
            )
        operations = _check_key_ops(list(DEFAULT_KEY_OPERATIONS) if key_ops is None else key_ops)
        not_before, expires = _epoch(nbf, "nbf"), _epoch(exp, "exp")
        checked_tags = _check_tags({} if tags is None else tags)
        if not isinstance(enabled, bool):
            raise InvalidKeyParameterError(f"enabled must be true or false; got {enabled!r}.")
        return self._add_version(
            name, kty, size, operations, enabled, not_before, expires, checked_tags, public_exponent
        )

    def rotate_key(self, name: str) -> KeyRecord:
        """What ``POST /keys/{name}/rotate`` does: a new version like the latest, expiring per the rotation policy.

        The new version keeps the latest one's type, size, exponent and key_ops; it carries no tags.
        """
        latest = self.latest(name)
        policy = self.rotation_policy(name)
        exponent = int.from_bytes(latest.e, "big")
        return self._add_version(
            name, latest.kty, latest.size, list(latest.key_ops), True, None, None, {}, exponent, policy.expiry_time
        )

    def _add_version(
        self,
        name: str,
        kty: str,
        size: int,
        key_ops: list[str],
        enabled: bool,
        nbf: int | None,
        exp: int | None,
        tags: dict[str, str],
        public_exponent: int,
        expiry_time: str | None = None,
    ) -> KeyRecord:
        """Generate the key pair, store the new version (exp = created + ``expiry_time`` when given), report it."""
        numbers = rsa.generate_private_key(public_exponent=public_exponent, key_size=size).public_key().public_numbers()
        moment = self.clock.now()
        if expiry_time is not None:
            exp = int((moment + isodate.parse_duration(expiry_time)).timestamp())
        record = KeyRecord(
            name=name,
            version=secrets.token_hex(16),
            kty=kty,
            size=size,
            key_ops=key_ops,
            enabled=enabled,
            nbf=nbf,
            exp=exp,
            created=int(moment.timestamp()),
            updated=int(moment.timestamp()),
            tags=tags,
            n=numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
            e=numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"),
            vault_url=self.url,
        )
        with self._lock:
            self._keys.setdefault(name, []).append(record)
        self._on_new_version(self, record)
        return record

    def versions(self, name: str) -> list[KeyRecord]:
        """Every version of ``name`` in creation order. Raises ``KeyNotFoundError`` (a ``KeyError``)."""
        with self._lock:
            if name not in self._keys:
                raise KeyNotFoundError(self.name, name)
            return list(self._keys[name])

    def latest(self, name: str) -> KeyRecord:
        return self.versions(name)[-1]

    def get(self, name: str, version: str | None = None) -> KeyRecord:
        """One version of ``name``; the latest when ``version`` is None or empty."""
        if not version:
            return self.latest(name)
        for record in self.versions(name):
            if record.version == version:
                return record
        raise KeyNotFoundError(self.name, name, version)

    def key_names(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def update_key(
        self,
        name: str,
        version: str | None = None,
        *,
        enabled: bool | None = None,
        nbf: int | datetime | EllipsisType | None = ...,
        exp: int | datetime | EllipsisType | None = ...,
        tags: dict[str, str] | None = None,
        key_ops: list[str] | None = None,
    ) -> KeyRecord:
        """Change one version (the latest when ``version`` is None). ``nbf``/``exp``: ``...`` keeps, None clears."""
        changes: dict[str, Any] = {}
        if enabled is not None:
            if not isinstance(enabled, bool):
                raise InvalidKeyParameterError(f"enabled must be true or false; got {enabled!r}.")
            changes["enabled"] = enabled
        if not isinstance(nbf, EllipsisType):
            changes["nbf"] = _epoch(nbf, "nbf")
        if not isinstance(exp, EllipsisType):
            changes["exp"] = _epoch(exp, "exp")
        if tags is not None:
            changes["tags"] = _check_tags(tags)
        if key_ops is not None:
            changes["key_ops"] = _check_key_ops(key_ops)
        with self._lock:
            current = self.get(name, version)
            updated = replace(current, updated=self.clock.timestamp(), **changes)
            chain = self._keys[name]
            chain[chain.index(current)] = updated
            return updated

    # Rotation policy -------------------------------------------------------------------------------------------
    def rotation_policy(self, name: str) -> RotationPolicy:
        """The key's effective policy: the stored one, or Key Vault's default (Notify 30 days before expiry)."""
        with self._lock:
            self.versions(name)
            return self._policies.get(name, DEFAULT_ROTATION_POLICY)

    def set_rotation_policy(
        self, name: str, lifetime_actions: list[tuple[str, str, str]], expiry_time: str | None = None
    ) -> RotationPolicy:
        """Validate and store a policy as Key Vault stores it. ``lifetime_actions``: (``Rotate``|``Notify``, trigger
        name, ISO duration).

        Key Vault adds its default Notify (``timeBeforeExpiry`` P30D) to a policy sent without one, so an empty list
        restores the default actions; ``expiryTime`` is kept as sent (azure-facts §10.10; the Notify action in the
        azure-sdk-for-js recordings of ``PUT /rotationpolicy`` with a Rotate action only).
        """
        now = self.clock.now()
        expires_in = None if expiry_time is None else _parse_duration(expiry_time, "expiryTime", now)
        if expires_in is not None and expires_in < MIN_EXPIRY_TIME:
            raise InvalidKeyParameterError(f"expiryTime {expiry_time!r} is too short; it must be at least 28 days.")
        seen: set[str] = set()
        for action, trigger, duration in lifetime_actions:
            if action not in ("Rotate", "Notify") or trigger not in ("timeAfterCreate", "timeBeforeExpiry"):
                raise InvalidKeyParameterError(
                    f"Lifetime action ({action!r}, {trigger!r}) is invalid; the action is 'Rotate' or 'Notify' and "
                    "the trigger 'timeAfterCreate' or 'timeBeforeExpiry'."
                )
            if action in seen:
                raise InvalidKeyParameterError(f"lifetimeActions has more than one {action!r} action; at most one.")
            seen.add(action)
            span = _parse_duration(duration, trigger, now)
            if trigger == "timeAfterCreate" and action != "Rotate":
                raise InvalidKeyParameterError(f"timeAfterCreate only applies to Rotate, not to {action!r}.")
            if action == "Rotate" and span < MIN_ROTATE_TRIGGER:
                raise InvalidKeyParameterError(f"The Rotate trigger {trigger}={duration!r} must be at least 7 days.")
            if trigger == "timeBeforeExpiry" and expires_in is not None and span >= expires_in:
                raise InvalidKeyParameterError(
                    f"timeBeforeExpiry {duration!r} must be shorter than expiryTime {expiry_time!r}."
                )
        stored = tuple(lifetime_actions)
        if "Notify" not in seen:
            stored += DEFAULT_ROTATION_POLICY.lifetime_actions
        stamp = self.clock.timestamp()
        with self._lock:
            self.versions(name)
            previous = self._policies.get(name)
            created = stamp if previous is None or previous.created is None else previous.created
            policy = RotationPolicy(stored, expiry_time, created, stamp)
            self._policies[name] = policy
            return policy

    def notify_before(self, name: str) -> timedelta:
        """How long before the latest version's ``exp`` Key Vault sends ``KeyNearExpiry``: the effective policy's
        Notify ``timeBeforeExpiry`` (P30D by default), measured back from that ``exp`` (or from now without one)."""
        policy = self.rotation_policy(name)
        latest = self.latest(name)
        duration = next((d for action, _, d in policy.lifetime_actions if action == "Notify"), None)
        if duration is None:  # every stored policy has a Notify; kept for policies built by hand
            duration = DEFAULT_ROTATION_POLICY.lifetime_actions[0][2]
        anchor = self.clock.now() if latest.exp is None else datetime.fromtimestamp(latest.exp, UTC)
        span: timedelta = anchor - (anchor - isodate.parse_duration(duration))
        return span

    def rotation_due(self, name: str) -> datetime | None:
        """When the policy's Rotate action fires for the latest version; None without a Rotate action, or for
        ``timeBeforeExpiry`` when the latest version has no ``exp``."""
        rotate = next((a for a in self.rotation_policy(name).lifetime_actions if a[0] == "Rotate"), None)
        if rotate is None:
            return None
        _, trigger, duration = rotate
        latest = self.latest(name)
        due: datetime
        if trigger == "timeAfterCreate":
            due = datetime.fromtimestamp(latest.created, UTC) + isodate.parse_duration(duration)
        elif latest.exp is None:
            return None
        else:
            due = datetime.fromtimestamp(latest.exp, UTC) - isodate.parse_duration(duration)
        return due

    def _rotate_due_keys(self, before: datetime, after: datetime) -> None:
        """The clock moved to ``after``: rotate each key whose Rotate trigger has been reached, once per trigger.

        A trigger belongs to the latest version, so the new version starts the next period; one advance rotates a
        key at most once, however far it goes.
        """
        due: list[str] = []
        with self._lock:
            for name in sorted(self._policies):
                moment = self.rotation_due(name)
                version = self.latest(name).version
                if moment is not None and moment <= after and (name, version) not in self._auto_rotated:
                    self._auto_rotated.add((name, version))
                    due.append(name)
        for name in due:
            self.rotate_key(name)

    # Access and throttling -------------------------------------------------------------------------------------
    def deny(self, identity: str, permissions: Iterable[str] | str | None = None) -> None:
        """Take key ``permissions`` (access-policy names, default: all of them) from ``identity`` (a token's oid).

        An operation that needs one of them gets 403 naming it, until ``allow``. For example
        ``deny("app", ["create", "rotate"])`` leaves an identity that can list and get keys but not make versions.
        """
        taken = _check_permissions(permissions)
        with self._lock:
            self._denied.setdefault(identity, set()).update(taken)

    def allow(self, identity: str, permissions: Iterable[str] | str | None = None) -> None:
        """Give ``permissions`` (default: all) back to ``identity``."""
        given = _check_permissions(permissions)
        with self._lock:
            remaining = self._denied.get(identity, set()) - given
            if remaining:
                self._denied[identity] = remaining
            else:
                self._denied.pop(identity, None)

    def can(self, identity: str | None, permission: str) -> bool:
        """Whether ``identity`` holds the key ``permission`` (every identity holds every one unless denied)."""
        (canonical,) = _check_permissions(permission)
        with self._lock:
            return canonical not in self._denied.get(identity or "", set())

    def denied(self, identity: str | None) -> list[str]:
        """The key permissions ``identity`` lacks, in Key Vault's order."""
        with self._lock:
            lacking = self._denied.get(identity or "", set())
        return [p for p in KEY_PERMISSIONS if p in lacking]

    def has_access(self, identity: str | None) -> bool:
        """Whether ``identity`` can use a key of this vault as a customer-managed key: get, wrapKey and unwrapKey
        (what ARM's encryption check asks)."""
        return all(self.can(identity, permission) for permission in CMK_PERMISSIONS)

    def set_throttle(
        self,
        *,
        create_per_10s: float | None = None,
        other_per_10s: float | None = None,
        send_retry_after: bool | None = None,
    ) -> None:
        """Set the software-key limits per 10 s (defaults 20 creates, 4,000 others); HSM keys get half of each.

        Other operations cost 1 for 2048-bit keys, 4 for 3072 and 8 for 4096 (Key Vault's weighting). Each bucket
        starts full; setting a limit refills it. A throttled request gets 429 without ``Retry-After`` by default,
        as the one public capture of a real Key Vault 429 shows (vcsjones/AzureSignTool#219; azure-facts §10.8);
        azure-core then does not retry a POST. ``send_retry_after=True`` is the kinder vault that sends it.
        """
        if send_retry_after is not None:
            if not isinstance(send_retry_after, bool):
                raise ValueError(f"send_retry_after must be true or false; got {send_retry_after!r}.")
            self.send_retry_after = send_retry_after
        for category, limit in (("create", create_per_10s), ("other", other_per_10s)):
            if limit is None:
                continue
            if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
                raise ValueError(f"{category}_per_10s must be a positive number; got {limit!r}.")
            with self._lock:
                for hsm, share in (("software", 1.0), ("hsm", HSM_SHARE)):
                    capacity = max(1.0, float(limit) * share)
                    self._limits[f"{category} {hsm}"] = capacity
                    self._buckets[f"{category} {hsm}"] = TokenBucket(capacity, capacity / 10)

    def throttle_limits(self) -> dict[str, float | bool]:
        with self._lock:
            return {
                "create_per_10s": self._limits["create software"],
                "other_per_10s": self._limits["other software"],
                "send_retry_after": self.send_retry_after,
            }

    def admit(self, category: str, *, hsm: bool, size: int) -> None:
        """Take a token for one request (``create`` or ``other``); raise ``ThrottledError`` when the bucket is empty."""
        bucket_name = f"{category} {'hsm' if hsm else 'software'}"
        with self._lock:
            bucket, limit = self._buckets[bucket_name], self._limits[bucket_name]
        cost = 1.0 if category == "create" else min(OTHER_COST_BY_SIZE.get(size, 1.0), limit)
        allowed, _, retry_after = bucket.take(cost)
        if not allowed:
            raise ThrottledError(f"{'HSM' if hsm else 'software'} key {category}", limit, retry_after)

    # Describing ------------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        with self._lock:
            keys = {name: [r.version for r in chain] for name, chain in sorted(self._keys.items())}
            identities = sorted(self._denied)
        return {
            "name": self.name,
            "url": self.url,
            "location": self.location,
            "resource_group": self.resource_group,
            "sku": self.sku,
            "soft_delete": self.soft_delete,
            "purge_protection": self.purge_protection,
            "retention_days": self.retention_days,
            "recovery_level": self.recovery_level,
            "recoverable_days": self.recoverable_days,
            "arm_id": self.arm_id,
            "throttle": self.throttle_limits(),
            "denied": {identity: self.denied(identity) for identity in identities},
            "keys": keys,
        }

    def _check_kty(self, kty: Any) -> None:
        if kty in NOT_EMULATED_TYPES:
            raise InvalidKeyParameterError(
                f"Key type {kty!r} is not emulated: this emulator creates RSA and RSA-HSM keys only."
            )
        if kty not in RSA_TYPES:
            raise InvalidKeyParameterError(
                f"Key type {kty!r} is invalid; use one of {list(RSA_TYPES + NOT_EMULATED_TYPES)}."
            )
        if kty == "RSA-HSM" and self.sku != "premium":
            raise InvalidKeyParameterError(
                f"Key type 'RSA-HSM' needs a premium vault; vault {self.name!r} has SKU {self.sku!r}. "
                "Create an RSA key or use a premium vault."
            )


class KeyVaultService(Service):
    """The REST routes of one vault. Handlers translate between JSON and the ``Vault``'s Python API."""

    name = "keyvault"

    def __init__(self, vault: Vault) -> None:
        super().__init__()
        self.vault = vault
        key = r"/keys/(?P<name>[^/]+)"
        self.route("GET", r"/keys/?", "keyvault.list_keys", self._list_keys)
        self.route("POST", key + r"/create", "keyvault.create_key", self._create_key)
        self.route("POST", key + r"/rotate", "keyvault.rotate_key", self._rotate_key)
        self.route("GET", key + r"/versions", "keyvault.list_versions", self._list_versions)
        self.route("GET", key + r"/rotationpolicy", "keyvault.get_rotation_policy", self._get_rotation_policy)
        self.route("PUT", key + r"/rotationpolicy", "keyvault.update_rotation_policy", self._put_rotation_policy)
        self.route("GET", key + r"(?:/(?P<version>[^/]*))?", "keyvault.get_key", self._get_key)
        self.route("PATCH", key + r"(?:/(?P<version>[^/]*))?", "keyvault.update_key", self._update_key)

    def authenticate(self, request: Request) -> Response | None:
        """401 + the challenge for a request without a readable token, or with a token for another audience.

        The audience message is Key Vault's (Azure/go-autorest#525, crossplane-contrib/provider-azure#346):
        ``AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com/.``
        A trailing slash on the audience is accepted.
        """
        header = request.headers.get("Authorization") or ""
        if not header.startswith("Bearer "):
            message = "AKV10000: Request is missing a Bearer or PoP token."
        elif request.identity is None:
            message = "The bearer token could not be read: it is not a JWT with an 'oid' claim."
        elif request.audience != AUDIENCE:
            found = (claims_from_authorization(header) or {}).get("aud")
            message = f"AKV10022: Invalid audience. Expected {AUDIENCE}, found: {found if found else ''}."
        else:
            return None
        challenge = (
            f'Bearer authorization="https://login.microsoftonline.com/{self.vault.tenant_id}", '
            f'resource="{CHALLENGE_RESOURCE}"'
        )
        return Response(401, {"error": {"code": "Unauthorized", "message": message}}, {"WWW-Authenticate": challenge})

    # The checks every operation runs ---------------------------------------------------------------------------
    def _admit(self, request: Request, permission: str, category: str, *, hsm: bool = False, size: int = 2048) -> str:
        """Check api-version, access and throttling in that order; return the api-version."""
        api_version = request.query.get("api-version")
        if not api_version:
            raise self.bad_request(
                "The 'api-version' query parameter is required (there is no default); "
                "for example ?api-version=2025-07-01."
            )
        if not API_VERSIONS.fullmatch(api_version):
            raise self.bad_request(
                f"The api-version {api_version!r} is not supported; use 2025-07-01, 2025-06-01 or 7.x (such as 7.6)."
            )
        if not self.vault.can(request.identity, permission):
            raise self._forbidden(request, permission)
        try:
            self.vault.admit(category, hsm=hsm, size=size)
        except ThrottledError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if self.vault.send_retry_after else {}
            raise self.error(429, "Throttled", str(exc), headers) from exc
        return api_version

    def _forbidden(self, request: Request, permission: str) -> HttpError:
        """Key Vault's access-policy refusal, naming the caller and the missing permission, with ``AccessDenied``.

        Real answers read "The user, group or application 'appid=...;oid=...;iss=https://sts.windows.net/<tenant>/'
        does not have keys get permission on key vault '<vault>;location=<region>'. For help resolving this issue,
        please see https://go.microsoft.com/fwlink/?linkid=2125287" (AzureSignTool and Terraform issue logs).
        The emulator's tokens carry no ``appid``; the oid stands in for it.
        """
        claims = claims_from_authorization(request.headers.get("Authorization")) or {}
        oid = request.identity
        appid = claims.get("appid") or claims.get("azp") or oid
        tenant = claims.get("tid") or self.vault.tenant_id
        caller = f"appid={appid};oid={oid};iss=https://sts.windows.net/{tenant}/"
        message = (
            f"The user, group or application '{caller}' does not have keys {permission} permission on key vault "
            f"'{self.vault.name};location={self.vault.location}'. {FORBIDDEN_HELP}"
        )
        body = {"error": {"code": "Forbidden", "message": message, "innererror": {"code": "AccessDenied"}}}
        return HttpError(403, body)

    def _admit_for_key(self, request: Request, permission: str, name: str) -> str:
        """``_admit`` for an operation on an existing key: throttled by that key's type and size."""
        try:
            latest = self.vault.latest(name)
        except KeyNotFoundError:
            return self._admit(request, permission, "other")
        return self._admit(request, permission, "other", hsm=latest.hsm, size=latest.size)

    def _object(self, value: Any, what: str) -> dict[str, Any]:
        try:
            return _object(value, what)
        except InvalidKeyParameterError as exc:
            raise self.bad_request(str(exc)) from exc

    def _key_not_found(self, exc: KeyNotFoundError) -> HttpError:
        return self.error(404, "KeyNotFound", exc.message)

    # Handlers --------------------------------------------------------------------------------------------------
    def _create_key(self, request: Request, name: str) -> Response:
        body = request.json()
        kty = body.get("kty") if isinstance(body, dict) else None
        self._admit(request, "create", "create", hsm=kty == "RSA-HSM")  # every create costs 1, whatever the size
        data = self._object(body, "The create request body")
        if "kty" not in data:
            raise self.bad_request("The create request needs 'kty' (the key type), for example \"RSA\".")
        attributes = self._object(data.get("attributes"), "'attributes'")
        try:
            record = self.vault.create_key(
                name,
                kty=data["kty"],
                size=2048 if data.get("key_size") is None else data["key_size"],
                key_ops=data.get("key_ops"),
                enabled=True if attributes.get("enabled") is None else attributes["enabled"],
                nbf=attributes.get("nbf"),
                exp=attributes.get("exp"),
                tags=data.get("tags"),
                public_exponent=65537 if data.get("public_exponent") is None else data["public_exponent"],
            )
        except InvalidKeyParameterError as exc:
            raise self.bad_request(str(exc)) from exc
        return Response(200, self._bundle(record))

    def _get_key(self, request: Request, name: str, version: str | None = None) -> Response:
        self._admit_for_key(request, "get", name)
        try:
            record = self.vault.get(name, version)
        except KeyNotFoundError as exc:
            raise self._key_not_found(exc) from exc
        if not record.enabled:  # Key Vault refuses to return a disabled version; listing still shows it
            raise HttpError(
                403,
                {
                    "error": {
                        "code": "Forbidden",
                        "message": "Operation get is not allowed on a disabled key.",
                        "innererror": {"code": "KeyDisabled"},
                    }
                },
            )
        return Response(200, self._bundle(record))

    def _update_key(self, request: Request, name: str, version: str | None = None) -> Response:
        self._admit_for_key(request, "update", name)
        data = self._object(request.json(), "The update request body")
        attributes = self._object(data.get("attributes"), "'attributes'")
        try:
            record = self.vault.update_key(
                name,
                version,
                enabled=attributes.get("enabled"),
                nbf=attributes.get("nbf", ...),
                exp=attributes.get("exp", ...),
                tags=data.get("tags"),
                key_ops=data.get("key_ops"),
            )
        except KeyNotFoundError as exc:
            raise self._key_not_found(exc) from exc
        except InvalidKeyParameterError as exc:
            raise self.bad_request(str(exc)) from exc
        return Response(200, self._bundle(record))

    def _rotate_key(self, request: Request, name: str) -> Response:
        try:
            latest = self.vault.latest(name)
        except KeyNotFoundError as exc:
            self._admit(request, "rotate", "create")
            raise self._key_not_found(exc) from exc
        self._admit(request, "rotate", "create", hsm=latest.hsm, size=latest.size)
        try:
            return Response(200, self._bundle(self.vault.rotate_key(name)))
        except KeyNotFoundError as exc:
            raise self._key_not_found(exc) from exc

    def _list_versions(self, request: Request, name: str) -> Response:
        api_version = self._admit_for_key(request, "list", name)
        try:
            records = self.vault.versions(name)
        except KeyNotFoundError as exc:
            raise self._key_not_found(exc) from exc
        items = [self._item(record.kid, record) for record in records]
        return Response(200, self._page(request, api_version, f"/keys/{name}/versions", items))

    def _list_keys(self, request: Request) -> Response:
        api_version = self._admit(request, "list", "other")
        items = []
        for name in self.vault.key_names():
            latest = self.vault.latest(name)
            items.append(self._item(f"{self.vault.url}/keys/{name}", latest))
        return Response(200, self._page(request, api_version, "/keys", items))

    def _get_rotation_policy(self, request: Request, name: str) -> Response:
        self._admit_for_key(request, "getrotationpolicy", name)
        try:
            return Response(200, self._policy(name, self.vault.rotation_policy(name)))
        except KeyNotFoundError as exc:
            raise self._key_not_found(exc) from exc

    def _put_rotation_policy(self, request: Request, name: str) -> Response:
        self._admit_for_key(request, "setrotationpolicy", name)
        data = self._object(request.json(), "The rotation policy body")
        attributes = self._object(data.get("attributes"), "'attributes'")
        expiry_time = attributes.get("expiryTime")
        try:
            if expiry_time is not None and not isinstance(expiry_time, str):
                raise InvalidKeyParameterError(f"expiryTime must be an ISO 8601 duration string; got {expiry_time!r}.")
            actions = _lifetime_actions(data.get("lifetimeActions"))
            policy = self.vault.set_rotation_policy(name, actions, expiry_time)
        except KeyNotFoundError as exc:
            raise self._key_not_found(exc) from exc
        except InvalidKeyParameterError as exc:
            raise self.bad_request(str(exc)) from exc
        return Response(200, self._policy(name, policy))

    # JSON shapes -----------------------------------------------------------------------------------------------
    def _attributes(self, record: KeyRecord) -> dict[str, Any]:
        attributes: dict[str, Any] = {"enabled": record.enabled}
        if record.nbf is not None:
            attributes["nbf"] = record.nbf
        if record.exp is not None:
            attributes["exp"] = record.exp
        attributes.update(
            created=record.created,
            updated=record.updated,
            recoveryLevel=self.vault.recovery_level,
            recoverableDays=self.vault.recoverable_days,
        )
        return attributes

    def _bundle(self, record: KeyRecord) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "key": {
                "kid": record.kid,
                "kty": record.kty,
                "key_ops": list(record.key_ops),
                "n": _b64url(record.n),
                "e": _b64url(record.e),
            },
            "attributes": self._attributes(record),
        }
        if record.tags:
            bundle["tags"] = dict(record.tags)
        return bundle

    def _item(self, kid: str, record: KeyRecord) -> dict[str, Any]:
        item: dict[str, Any] = {"kid": kid, "attributes": self._attributes(record)}
        if record.tags:
            item["tags"] = dict(record.tags)
        return item

    def _policy(self, name: str, policy: RotationPolicy) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if policy.expiry_time is not None:
            attributes["expiryTime"] = policy.expiry_time
        if policy.created is not None:
            attributes["created"] = policy.created
        if policy.updated is not None:
            attributes["updated"] = policy.updated
        return {
            "id": f"{self.vault.url}/keys/{name}/rotationpolicy",
            "lifetimeActions": [
                {"trigger": {trigger: duration}, "action": {"type": action}}
                for action, trigger, duration in policy.lifetime_actions
            ],
            "attributes": attributes,
        }

    def _page(self, request: Request, api_version: str, path: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        raw_max = request.query.get("maxresults")
        try:
            page_size = PAGE_MAX if raw_max is None else int(raw_max)
        except ValueError:
            page_size = 0
        if not 1 <= page_size <= PAGE_MAX:
            raise self.bad_request(f"maxresults {raw_max!r} is invalid; use a whole number from 1 to {PAGE_MAX}.")
        offset = self._offset(request.query.get("$skiptoken"))
        body: dict[str, Any] = {"value": items[offset : offset + page_size]}
        if offset + page_size < len(items):
            token = _b64url(json.dumps({"offset": offset + page_size}).encode())
            body["nextLink"] = (
                f"{self.vault.url}{path}?api-version={api_version}&$skiptoken={token}&maxresults={page_size}"
            )
        return body

    def _offset(self, token: str | None) -> int:
        if token is None:
            return 0
        try:
            offset = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["offset"]
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise self.bad_request(f"The $skiptoken {token!r} was not issued by this vault; follow nextLink.") from exc
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise self.bad_request(f"The $skiptoken {token!r} was not issued by this vault; follow nextLink.")
        return offset


# Validation helpers ------------------------------------------------------------------------------------------------
def _check_permissions(permissions: Iterable[str] | str | None) -> set[str]:
    """Key Vault's key permission names, case-insensitive (``wrapkey`` is ``wrapKey``); None means all of them."""
    if permissions is None:
        return set(KEY_PERMISSIONS)
    given = [permissions] if isinstance(permissions, str) else list(permissions)
    canonical = {p.lower(): p for p in KEY_PERMISSIONS}
    unknown = [p for p in given if not isinstance(p, str) or p.lower() not in canonical]
    if unknown or not given:
        raise ValueError(
            f"Key permissions {unknown or given!r} are invalid; use some of {list(KEY_PERMISSIONS)} (or none for all)."
        )
    return {canonical[p.lower()] for p in given}


def _check_key_name(name: Any) -> None:
    if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
        raise InvalidKeyParameterError(
            f"Key name {name!r} is invalid; use 1-127 letters, digits and hyphens (^[0-9a-zA-Z-]+$)."
        )


def _check_key_ops(key_ops: Any) -> list[str]:
    if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
        raise InvalidKeyParameterError(f"key_ops must be a list of operation names; got {key_ops!r}.")
    unknown = [op for op in key_ops if op not in KEY_OPERATIONS]
    if unknown:
        raise InvalidKeyParameterError(f"key_ops {unknown} are invalid; use any of {list(KEY_OPERATIONS)}.")
    return list(key_ops)


def _check_tags(tags: Any) -> dict[str, str]:
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InvalidKeyParameterError(f"tags must be an object of string values; got {tags!r}.")
    if len(tags) > MAX_TAGS:
        raise InvalidKeyParameterError(f"A key can have at most {MAX_TAGS} tags; got {len(tags)}.")
    return dict(tags)


def _epoch(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidKeyParameterError(f"{what} {value.isoformat()!r} has no time zone; give an aware datetime.")
        return int(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidKeyParameterError(f"{what} must be epoch seconds (an integer); got {value!r}.")
    return value


def _parse_duration(value: Any, what: str, now: datetime) -> timedelta:
    """The length of ``value`` (years and months included) counted from ``now``."""
    if not isinstance(value, str):
        raise InvalidKeyParameterError(f"{what} must be an ISO 8601 duration such as 'P90D'; got {value!r}.")
    try:
        duration = isodate.parse_duration(value)
    except (isodate.ISO8601Error, ValueError) as exc:
        raise InvalidKeyParameterError(f"{what} {value!r} is not an ISO 8601 duration (such as 'P90D').") from exc
    try:
        span: timedelta = (now + duration) - now
    except (ValueError, OverflowError) as exc:
        raise InvalidKeyParameterError(f"{what} {value!r} is too long; keep it within a few years.") from exc
    if span <= timedelta():
        raise InvalidKeyParameterError(f"{what} {value!r} must be a positive duration.")
    return span


def _lifetime_actions(value: Any) -> list[tuple[str, str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidKeyParameterError(f"lifetimeActions must be a list; got {value!r}.")
    if len(value) > 2:
        raise InvalidKeyParameterError(f"lifetimeActions has {len(value)} items; at most two (one Rotate, one Notify).")
    actions = []
    for item in value:
        action = item.get("action") if isinstance(item, dict) else None
        kind = action.get("type") if isinstance(action, dict) else None
        canonical = {"rotate": "Rotate", "notify": "Notify"}.get(kind.lower()) if isinstance(kind, str) else None
        if canonical is None:
            raise InvalidKeyParameterError(
                f"Lifetime action {item!r} needs action.type 'Rotate' or 'Notify'; got {kind!r}."
            )
        trigger = item.get("trigger")
        given = (
            [k for k in ("timeAfterCreate", "timeBeforeExpiry") if trigger.get(k) is not None]
            if isinstance(trigger, dict)
            else []
        )
        if len(given) != 1 or not isinstance(trigger, dict):
            raise InvalidKeyParameterError(
                f"The {canonical} trigger {trigger!r} needs exactly one of timeAfterCreate or timeBeforeExpiry."
            )
        actions.append((canonical, given[0], trigger[given[0]]))
    return actions


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidKeyParameterError(f"{what} must be a JSON object; got {value!r}.")
    return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# Admin routes ------------------------------------------------------------------------------------------------------
def register_admin(admin: AdminService, vaults: Mapping[str, Vault]) -> None:
    """Add /admin/vaults/{name}/... : describe, seed a key, deny or allow (some of) an identity's permissions,
    throttle, change a version."""
    vault_path = r"/admin/vaults/(?P<vault>[^/]+)"

    def find(name: str) -> Vault:
        vault: Vault = admin.lookup("vault", dict(vaults), name)
        return vault

    def describe(request: Request, vault: str) -> Response:
        return Response(200, find(vault).describe())

    def create_key(request: Request, vault: str) -> Response:
        target = find(vault)
        data = admin.body(request)
        _only(admin, data, {"name", "kty", "size", "key_ops", "enabled", "nbf", "exp", "tags"})
        try:
            record = target.create_key(
                admin.field(data, "name", str, hint='For example {"name": "cmk"}.'),
                kty=admin.field(data, "kty", str, "RSA"),
                size=admin.field(data, "size", int, 2048),
                key_ops=admin.field(data, "key_ops", list, None),
                enabled=admin.field(data, "enabled", bool, True),
                nbf=_admin_time(admin, data, "nbf"),
                exp=_admin_time(admin, data, "exp"),
                tags=admin.field(data, "tags", dict, None),
            )
        except InvalidKeyParameterError as exc:
            raise admin.bad_request(str(exc)) from exc
        return Response(201, _summary(record))

    def access(request: Request, vault: str) -> Response:
        target = find(vault)
        data = admin.body(request)
        _only(admin, data, {"identity", "allowed", "permissions"})
        identity = admin.field(data, "identity", str, hint="Give the caller's object id (the token's oid).")
        allowed = admin.field(data, "allowed", bool, hint="true to allow, false to deny.")
        permissions = admin.field(data, "permissions", list, None, hint='For example ["create", "rotate"].')
        try:
            if allowed:
                target.allow(identity, permissions)
            else:
                target.deny(identity, permissions)
        except ValueError as exc:
            raise admin.bad_request(str(exc)) from exc
        denied = target.denied(identity)
        return Response(200, {"identity": identity, "allowed": not denied, "denied": denied})

    def throttle(request: Request, vault: str) -> Response:
        target = find(vault)
        data = admin.body(request)
        _only(admin, data, {"create_per_10s", "other_per_10s", "send_retry_after"})
        try:
            target.set_throttle(
                create_per_10s=admin.field(data, "create_per_10s", (int, float), None),
                other_per_10s=admin.field(data, "other_per_10s", (int, float), None),
                send_retry_after=admin.field(data, "send_retry_after", bool, None),
            )
        except ValueError as exc:
            raise admin.bad_request(str(exc)) from exc
        return Response(200, target.throttle_limits())

    def update_key(request: Request, vault: str, key: str, version: str) -> Response:
        target = find(vault)
        data = admin.body(request)
        _only(admin, data, {"enabled", "nbf", "exp", "tags"})
        try:
            record = target.update_key(
                key,
                version,
                enabled=admin.field(data, "enabled", bool, None),
                nbf=_admin_time(admin, data, "nbf") if "nbf" in data else ...,
                exp=_admin_time(admin, data, "exp") if "exp" in data else ...,
                tags=admin.field(data, "tags", dict, None),
            )
        except KeyNotFoundError as exc:
            raise admin.error(404, "KeyNotFound", f"{exc} Known keys: {target.key_names()}.") from exc
        except InvalidKeyParameterError as exc:
            raise admin.bad_request(str(exc)) from exc
        return Response(200, _summary(record))

    admin.route("GET", vault_path, "admin.vault", describe)
    admin.route("POST", vault_path + "/keys", "admin.vault_create_key", create_key)
    admin.route("POST", vault_path + "/access", "admin.vault_access", access)
    admin.route("PUT", vault_path + "/throttle", "admin.vault_throttle", throttle)
    admin.route("PATCH", vault_path + r"/keys/(?P<key>[^/]+)/(?P<version>[^/]+)", "admin.vault_update_key", update_key)


def _only(admin: AdminService, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise admin.bad_request(f"Unknown fields {unknown}; allowed: {sorted(allowed)}.")


def _admin_time(admin: AdminService, data: dict[str, Any], name: str) -> int | datetime | None:
    """Epoch seconds, or an ISO 8601 datetime with a UTC offset."""
    value = admin.field(data, name, (int, str), None, hint="Give epoch seconds or an ISO 8601 datetime.")
    if not isinstance(value, str):
        return value  # type: ignore[no-any-return]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise admin.bad_request(
            f"Field {name!r} is not an ISO 8601 datetime: {value!r}; for example '2030-01-01T00:00:00Z'."
        ) from exc
    if moment.tzinfo is None:
        raise admin.bad_request(f"Field {name!r} ({value!r}) needs a UTC offset, for example '2030-01-01T00:00:00Z'.")
    return moment.astimezone(UTC)


def _summary(record: KeyRecord) -> dict[str, Any]:
    return {
        "kid": record.kid,
        "name": record.name,
        "version": record.version,
        "kty": record.kty,
        "size": record.size,
        "key_ops": list(record.key_ops),
        "enabled": record.enabled,
        "nbf": record.nbf,
        "exp": record.exp,
        "created": record.created,
        "updated": record.updated,
        "tags": dict(record.tags),
    }
