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
    PUT   /keys/{name}/rotationpolicy   validated as the spec describes

Around every operation, in this order: the bearer challenge (a request without a token gets 401 + WWW-Authenticate
and is never acted on), the mandatory ``api-version``, access (a denied identity gets 403), and throttling (token
buckets per vault with Key Vault's published limits per 10 s, weighted by key size; a throttled request costs
nothing and gets 429 + Retry-After). Fault rules from ``emulator.control`` run before the handler; they are how a
test produces a 409 or a 5xx.

Python API for tests and the other emulated services: ``Vault.create_key``, ``versions``, ``latest``, ``get``,
``key_names``, ``update_key``, ``rotate_key``, ``deny`` / ``allow`` / ``has_access``, ``set_throttle``. Every new
version, however it was made, is reported to the ``on_new_version`` callback the vault was made with (the emulator
hands it Event Grid's ``key_version_created``).

Never emulated: deletion and recovery, EC and oct keys, cryptographic operations (wrap, sign ...), import, backup,
release policies, and Key Vault's own scheduled rotation. This module never keeps private key material: only n and e.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import isodate
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.control import Clock, TokenBucket
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
    """A request over the vault's limit; ``retry_after`` whole seconds (at least 1)."""

    def __init__(self, category: str, limit: float, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"Request was not processed because too many requests were received. Reason: the vault's limit of "
            f"{limit:g} {category} requests per 10 seconds was reached. Retry after {self.retry_after} seconds."
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
        soft_delete: bool,
        purge_protection: bool,
        retention_days: int,
    ) -> None:
        if not VAULT_NAME.fullmatch(name):
            raise ValueError(
                f"Vault name {name!r} is invalid: use 3-24 letters, digits and single hyphens, "
                "starting with a letter and ending with a letter or digit."
            )
        if sku not in ("standard", "premium"):
            raise ValueError(f"Vault SKU {sku!r} is invalid; use 'standard' or 'premium'.")
        if soft_delete and not 7 <= retention_days <= 90:
            raise ValueError(f"retention_days {retention_days} is invalid; soft delete keeps 7 to 90 days.")
        if purge_protection and not soft_delete:
            raise ValueError("purge_protection needs soft_delete: Key Vault only protects soft-deleted keys.")
        self.clock = clock
        self.subscription_id = subscription_id
        self.tenant_id = tenant_id
        self._on_new_version = on_new_version
        self.name = name
        self.location = location
        self.resource_group = resource_group
        self.sku = sku
        self.soft_delete = soft_delete
        self.purge_protection = purge_protection
        self.retention_days = retention_days
        self.url = ""
        self._lock = threading.RLock()
        self._keys: dict[str, list[KeyRecord]] = {}
        self._policies: dict[str, RotationPolicy] = {}
        self._denied: set[str] = set()
        self._limits: dict[str, float] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.set_throttle(create_per_10s=CREATE_PER_10S, other_per_10s=OTHER_PER_10S)
        self.service = KeyVaultService(self)

    # Settings --------------------------------------------------------------------------------------------------
    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{self.name}"
        )

    @property
    def recovery_level(self) -> str:
        if not self.soft_delete:
            return "Purgeable"
        level = "Recoverable" if self.retention_days >= 90 else "CustomizedRecoverable"
        return level if self.purge_protection else f"{level}+Purgeable"

    @property
    def recoverable_days(self) -> int:
        return self.retention_days if self.soft_delete else 0

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
        with self._lock:
            self.versions(name)
            return self._policies.get(name, DEFAULT_ROTATION_POLICY)

    def set_rotation_policy(
        self, name: str, lifetime_actions: list[tuple[str, str, str]], expiry_time: str | None = None
    ) -> RotationPolicy:
        """Validate and store a policy. ``lifetime_actions``: (``Rotate``|``Notify``, trigger name, ISO duration)."""
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
        stamp = self.clock.timestamp()
        with self._lock:
            self.versions(name)
            previous = self._policies.get(name)
            created = stamp if previous is None or previous.created is None else previous.created
            policy = RotationPolicy(tuple(lifetime_actions), expiry_time, created, stamp)
            self._policies[name] = policy
            return policy

    # Access and throttling -------------------------------------------------------------------------------------
    def deny(self, identity: str) -> None:
        """Every key operation by ``identity`` (a token's oid) gets 403 until ``allow``."""
        with self._lock:
            self._denied.add(identity)

    def allow(self, identity: str) -> None:
        with self._lock:
            self._denied.discard(identity)

    def has_access(self, identity: str | None) -> bool:
        """Identities are allowed unless denied."""
        with self._lock:
            return identity not in self._denied

    def set_throttle(self, *, create_per_10s: float | None = None, other_per_10s: float | None = None) -> None:
        """Set the software-key limits per 10 s (defaults 20 creates, 4,000 others); HSM keys get half of each.

        Other operations cost 1 for 2048-bit keys, 4 for 3072 and 8 for 4096 (Key Vault's weighting). Each bucket
        starts full; setting a limit refills it.
        """
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

    def throttle_limits(self) -> dict[str, float]:
        with self._lock:
            return {"create_per_10s": self._limits["create software"], "other_per_10s": self._limits["other software"]}

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
        header = request.headers.get("Authorization") or ""
        if header.startswith("Bearer ") and request.identity is not None:
            return None
        message = (
            "AKV10000: Request is missing a Bearer or PoP token."
            if not header.startswith("Bearer ")
            else "AKV10022: The bearer token has no readable 'oid' claim."
        )
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
        if not self.vault.has_access(request.identity):
            location = f"{self.vault.name};location={self.vault.location}"
            raise self.error(
                403,
                "Forbidden",
                f"The user, group or application 'oid={request.identity}' does not have keys {permission} permission "
                f"on key vault '{location}'. For help resolving this issue, please see "
                "https://go.microsoft.com/fwlink/?linkid=2125287",
            )
        try:
            self.vault.admit(category, hsm=hsm, size=size)
        except ThrottledError as exc:
            raise self.error(429, "Throttled", str(exc), {"Retry-After": str(exc.retry_after)}) from exc
        return api_version

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
        self._admit_for_key(request, "get", name)
        try:
            return Response(200, self._policy(name, self.vault.rotation_policy(name)))
        except KeyNotFoundError as exc:
            raise self._key_not_found(exc) from exc

    def _put_rotation_policy(self, request: Request, name: str) -> Response:
        self._admit_for_key(request, "update", name)
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
    """Add /admin/vaults/{name}/... : describe, seed a key, deny or allow an identity, throttle, change a version."""
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
        _only(admin, data, {"identity", "allowed"})
        identity = admin.field(data, "identity", str, hint="Give the caller's object id (the token's oid).")
        allowed = admin.field(data, "allowed", bool, hint="true to allow, false to deny.")
        if allowed:
            target.allow(identity)
        else:
            target.deny(identity)
        return Response(200, {"identity": identity, "allowed": target.has_access(identity)})

    def throttle(request: Request, vault: str) -> Response:
        target = find(vault)
        data = admin.body(request)
        _only(admin, data, {"create_per_10s", "other_per_10s"})
        try:
            target.set_throttle(
                create_per_10s=admin.field(data, "create_per_10s", (int, float), None),
                other_per_10s=admin.field(data, "other_per_10s", (int, float), None),
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
