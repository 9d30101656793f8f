"""The rotation service's vocabulary: identifiers, the observed world, the plan and the outcome, all frozen.

Identifiers (``KeyRef``, ``AccountRef``) are parsed and validated once, at the edge; everything downstream trusts them.
Bad input raises ``ConfigError`` naming the bad value and the expected shape. The ``Observation`` is the frozen
snapshot that ``decide`` reads, the ``RotationPlan`` is what it returns, and the ``RotationOutcome`` is what
``reconcile`` reports (its ``to_dict`` feeds the ledger, the HTTP API and outcome events).

This module must never do I/O and never read the clock: ``system_clock`` is the one place that calls ``datetime.now``,
and only callers that need the real time pass it in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from rotation.errors import ConfigError, RotationError, TransientError
from rotation.reasons import Reason

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime. Passed in everywhere; never read implicitly."""


def system_clock() -> datetime:
    """The real clock: the only call to ``datetime.now`` in the package."""
    return datetime.now(UTC)


KEY_NAME_PATTERN = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
ACCOUNT_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,63}$")
RESOURCE_GROUP_PATTERN = re.compile(r"^[-\w.()]{1,90}$")
GUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ARM_ACCOUNT_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]*)/resourceGroups/(?P<rg>[^/]*)"
    r"/providers/Microsoft\.CognitiveServices/accounts/(?P<name>[^/]*)/?$",
    re.IGNORECASE,
)
_ARM_ID_SHAPE = (
    "/subscriptions/<subscription-id>/resourceGroups/<group>/providers/Microsoft.CognitiveServices/accounts/<name>"
)
_KEY_URL_SHAPE = "https://<vault>.vault.azure.net/keys/<name>"

KEY_SOURCE_KEY_VAULT = "Microsoft.KeyVault"
SUPPORTED_ACCOUNT_KINDS = frozenset({"OpenAI", "AIServices"})
SUPPORTED_KEY_TYPES = frozenset({"RSA", "RSA-HSM"})
SUPPORTED_KEY_SIZE = 2048
PROVISIONING_SUCCEEDED = "Succeeded"
TERMINAL_PROVISIONING_STATES = frozenset({"Succeeded", "Failed", "Canceled"})

# Provenance tags on every version this service creates (DESIGN §3.2).
TAG_REQUEST_ID = "rotation-request-id"
TAG_TRIGGER = "rotation-trigger"
TAG_APP = "rotation-app"
TAG_REASON = "rotation-reason"


def shown(value: str, limit: int = 200) -> str:
    """A user-supplied value quoted for an error message, cut to ``limit`` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def normalize_vault_url(text: str) -> str:
    """``https://Host[:port][/]`` -> ``https://host[:port]`` (lowercase host, no default port, no trailing slash).

    Raises ``ConfigError`` when ``text`` is not an https URL of a vault (no path other than ``/``).
    """
    parts = urlsplit(text.strip())
    if parts.scheme.lower() != "https":
        raise ConfigError(
            f"vault URL {shown(text)} must use https (Key Vault only accepts TLS), e.g. https://<vault>.vault.azure.net"
        )
    _check_authority(text, parts.hostname, parts.username, parts.query, parts.fragment)
    if parts.path not in ("", "/"):
        raise ConfigError(f"vault URL {shown(text)} has a path {shown(parts.path)}; give only https://<vault host>")
    return "https://" + _host_port(text)


def normalize_location(location: str) -> str:
    """Azure region names compare without case and spaces: "East US" == "eastus"."""
    return "".join(location.split()).lower()


def _check_authority(text: str, host: str | None, user: str | None, query: str, fragment: str) -> None:
    if not host:
        raise ConfigError(f"URL {shown(text)} has no host; expected {_KEY_URL_SHAPE}")
    if user is not None or query or fragment:
        raise ConfigError(
            f"URL {shown(text)} must not carry credentials, a query or a fragment; expected {_KEY_URL_SHAPE}"
        )


def _host_port(text: str) -> str:
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"URL {shown(text)} has an invalid port; expected {_KEY_URL_SHAPE}") from exc
    host = (parts.hostname or "").lower()
    return host if port in (None, 443) else f"{host}:{port}"


class Trigger(StrEnum):
    """What asked for a reconcile. ``KEY_NEW_VERSION_CREATED`` never creates a version (DESIGN §3.1)."""

    KEY_NEAR_EXPIRY = "KeyNearExpiry"
    KEY_EXPIRED = "KeyExpired"
    KEY_NEW_VERSION_CREATED = "KeyNewVersionCreated"
    TIMER = "timer"
    HTTP = "http"
    CLI = "cli"


@dataclass(frozen=True)
class KeyRef:
    """A versionless Key Vault key: ``vault_url`` normalised (``https://host[:port]``), ``name`` as in the vault."""

    vault_url: str
    name: str

    @classmethod
    def parse(cls, text: str) -> KeyRef:
        """Parse ``https://<vault>/keys/<name>`` (optional trailing slash). Versioned URLs and http are rejected."""
        parts = urlsplit(text.strip())
        if parts.scheme.lower() != "https":
            raise ConfigError(
                f"key URL {shown(text)} must use https (Key Vault only accepts TLS); expected {_KEY_URL_SHAPE}"
            )
        _check_authority(text, parts.hostname, parts.username, parts.query, parts.fragment)
        path = parts.path[:-1] if parts.path.endswith("/") else parts.path
        segments = path.split("/")
        if len(segments) == 4 and segments[1] == "keys" and segments[3]:
            raise ConfigError(
                f"key URL {shown(text)} names version {shown(segments[3])}; give the versionless key URL "
                f"{_KEY_URL_SHAPE}: the service chooses and creates versions itself"
            )
        if len(segments) != 3 or segments[0] != "" or segments[1] != "keys":
            raise ConfigError(f"key URL {shown(text)} is not a Key Vault key URL; expected {_KEY_URL_SHAPE}")
        name = segments[2]
        if not KEY_NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"key name {shown(name)} in {shown(text)} is invalid; "
                "Key Vault key names are 1-127 letters, digits and '-'"
            )
        return cls(vault_url="https://" + _host_port(text), name=name)

    @property
    def id(self) -> str:
        return f"{self.vault_url}/keys/{self.name}"

    @property
    def vault_host(self) -> str:
        """The vault's host (and port, if not 443): used for lock and ledger names."""
        return self.vault_url.removeprefix("https://")

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class AccountRef:
    """A Cognitive Services (Azure OpenAI / AI services) account, from its ARM resource id."""

    subscription_id: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, arm_id: str) -> AccountRef:
        """Parse ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/{name}``.

        Segment names and the provider are matched case-insensitively, as ARM does.
        """
        match = _ARM_ACCOUNT_ID.fullmatch(arm_id.strip())
        if match is None:
            raise ConfigError(
                f"account id {shown(arm_id)} is not a Cognitive Services account id; expected {_ARM_ID_SHAPE}"
            )
        sub, rg, name = match["sub"], match["rg"], match["name"]
        if not GUID_PATTERN.fullmatch(sub):
            raise ConfigError(f"subscription id {shown(sub)} in account id {shown(arm_id)} is not a GUID")
        if not RESOURCE_GROUP_PATTERN.fullmatch(rg) or rg.endswith("."):
            raise ConfigError(
                f"resource group {shown(rg)} in account id {shown(arm_id)} is invalid; use 1-90 letters, digits, "
                "'_', '-', '.', '(' or ')', not ending in '.'"
            )
        if not ACCOUNT_NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"account name {shown(name)} in account id {shown(arm_id)} is invalid; use 2-64 characters, "
                "letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        return cls(subscription_id=sub.lower(), resource_group=rg, name=name)

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.CognitiveServices/accounts/{self.name}"
        )

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class KeyVersion:
    """One version of a key, as listed. ``kty``/``size`` are None when unknown (disabled versions carry no key)."""

    version: str
    enabled: bool
    created_on: datetime
    not_before: datetime | None
    expires_on: datetime | None
    kty: str | None
    size: int | None
    key_ops: tuple[str, ...]
    tags: Mapping[str, str]
    recovery_level: str | None
    latest: bool = False  # Key Vault's current version (what GET /keys/{name} returns); breaks ties in created_on


def recency(version: KeyVersion) -> tuple[datetime, bool, str]:
    """The one order of versions, oldest first. ``created_on`` has whole seconds, so two versions created in one
    second tie; Key Vault's current version then wins, and the version id settles the rest, so every run picks the
    same "newest" version and accounts are never flipped between two."""
    return version.created_on, version.latest, version.version


@dataclass(frozen=True)
class AccountEncryption:
    """An account's encryption settings and provisioning state, as read from ARM."""

    account: AccountRef
    kind: str
    location: str
    identity_type: str | None
    key_source: str | None
    key_vault_uri: str | None
    key_name: str | None
    key_version: str | None
    identity_client_id: str | None
    provisioning_state: str | None

    def uses(self, key: KeyRef) -> bool:
        """True when the account's CMK is ``key`` in the same vault (any version). Never True for Microsoft keys."""
        if self.key_source != KEY_SOURCE_KEY_VAULT or not self.key_vault_uri or not self.key_name:
            return False
        try:
            vault_url = normalize_vault_url(self.key_vault_uri)
        except ConfigError:
            return False
        return vault_url == key.vault_url and self.key_name.lower() == key.name.lower()

    def converged_on(self, version: str) -> bool:
        return self.key_version == version and self.provisioning_state == PROVISIONING_SUCCEEDED


@dataclass(frozen=True)
class RotationRequest:
    """One request to reconcile one key. ``request_id`` ends up in provenance tags, so it is checked here."""

    request_id: str
    key: KeyRef
    trigger: Trigger
    force: bool = False
    requested_at: datetime | None = None
    event_version: str | None = None

    def __post_init__(self) -> None:
        if not self.request_id or len(self.request_id) > 256 or not self.request_id.isprintable():
            raise ConfigError(f"request id {shown(self.request_id)} must be 1-256 printable characters")


@dataclass(frozen=True)
class Target:
    """One entry of ROTATION_TARGETS: a key, the accounts that use it, and optionally the vault's region."""

    key: KeyRef
    accounts: tuple[AccountRef, ...]
    vault_location: str | None = None


@dataclass(frozen=True)
class RenewalPolicy:
    """cert-manager's duration/renewBefore: the lifetime given to new versions and the lead time before expiry."""

    key_lifetime: timedelta
    renew_before: timedelta


@dataclass(frozen=True)
class Observation:
    """Everything ``decide`` may look at, read once by the engine's gather step. No live handles."""

    request: RotationRequest
    target: Target
    versions: tuple[KeyVersion, ...]
    accounts: Mapping[AccountRef, AccountEncryption]
    unreadable: Mapping[AccountRef, RotationError]
    now: datetime

    @property
    def current(self) -> KeyVersion | None:
        """The key's current version: the newest by ``created_on`` (what Key Vault returns for the bare key)."""
        return max(self.versions, key=recency, default=None)


class Severity(StrEnum):
    BLOCK = "block"
    WARN = "warn"


@dataclass(frozen=True)
class Finding:
    """A preflight result: blocking or a warning, about the key (``account`` None) or one account."""

    reason: Reason
    message: str
    severity: Severity
    account: AccountRef | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "reason": self.reason.value,
            "message": self.message,
            "severity": self.severity.value,
            "account": self.account.id if self.account else None,
        }


class AccountAction(StrEnum):
    REPOINT = "repoint"  # update the account to the target version, then verify
    WAIT = "wait"  # the account has the target version; verify until Succeeded
    LEAVE = "leave"  # nothing to do
    BLOCKED = "blocked"  # a preflight finding forbids touching this account


@dataclass(frozen=True)
class AccountPlan:
    account: AccountRef
    action: AccountAction
    reason: Reason
    message: str
    from_version: str | None


@dataclass(frozen=True)
class VersionSpec:
    """The version to create: RSA 2048 of ``kty``, with the provenance ``tags``."""

    kty: str
    key_ops: tuple[str, ...]
    expires_on: datetime
    tags: Mapping[str, str]


@dataclass(frozen=True)
class RotationPlan:
    """What ``decide`` concluded. ``target_version`` is None when a version is still to be created (``create``)."""

    request: RotationRequest
    reason: Reason
    message: str
    findings: tuple[Finding, ...]
    current_version: str | None
    target_version: str | None
    create: VersionSpec | None
    adopted: bool
    accounts: tuple[AccountPlan, ...]

    @property
    def blocked(self) -> bool:
        """True when a key-level preflight finding blocks the whole rotation."""
        return any(f.severity is Severity.BLOCK and f.account is None for f in self.findings)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARN)

    def to_dict(self) -> dict[str, object]:
        return {
            "request_id": self.request.request_id,
            "key": self.request.key.id,
            "trigger": self.request.trigger.value,
            "reason": self.reason.value,
            "message": self.message,
            "blocked": self.blocked,
            "current_version": self.current_version,
            "target_version": self.target_version,
            "create": None
            if self.create is None
            else {
                "kty": self.create.kty,
                "key_ops": list(self.create.key_ops),
                "expires_on": self.create.expires_on.isoformat(),
                "tags": dict(self.create.tags),
            },
            "adopted": self.adopted,
            "findings": [f.to_dict() for f in self.findings],
            "accounts": [
                {
                    "account": a.account.id,
                    "action": a.action.value,
                    "reason": a.reason.value,
                    "message": a.message,
                    "from_version": a.from_version,
                }
                for a in self.accounts
            ],
        }


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class AccountResult:
    account: AccountRef
    action: AccountAction
    status: Status
    reason: Reason
    from_version: str | None
    to_version: str | None
    error: str | None = None
    retryable: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "account": self.account.id,
            "action": self.action.value,
            "status": self.status.value,
            "reason": self.reason.value,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "error": self.error,
        }


@dataclass(frozen=True)
class RotationOutcome:
    """The result of one reconcile. ``from_version`` is the key's current version before acting; ``to_version`` the
    version accounts were converged on. ``retryable`` is True when every failure is transient (re-enqueue)."""

    request_id: str
    key: KeyRef
    trigger: Trigger
    status: Status
    reason: Reason
    message: str
    from_version: str | None
    to_version: str | None
    created: bool
    accounts: tuple[AccountResult, ...] = ()
    warnings: tuple[Finding, ...] = ()
    error: str | None = None
    retryable: bool = False

    @classmethod
    def from_error(cls, request: RotationRequest, error: RotationError) -> RotationOutcome:
        """The outcome of a request whose key-level step raised (for the ledger and the poison handler)."""
        return cls(
            request_id=request.request_id,
            key=request.key,
            trigger=request.trigger,
            status=Status.FAILED,
            reason=error.reason,
            message=str(error),
            from_version=None,
            to_version=None,
            created=False,
            error=str(error),
            retryable=isinstance(error, TransientError),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "key": self.key.id,
            "trigger": self.trigger.value,
            "status": self.status.value,
            "reason": self.reason.value,
            "message": self.message,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "created": self.created,
            "accounts": [a.to_dict() for a in self.accounts],
            "warnings": [w.to_dict() for w in self.warnings],
            "error": self.error,
            "retryable": self.retryable,
        }
