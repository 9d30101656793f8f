"""The rotation service's vocabulary: identifiers, the observed world, the plan and the outcome, all frozen.

Identifiers (``KeyRef``, ``AccountRef``) are parsed and validated once, at the edge; everything downstream trusts them.
Bad input raises ``ConfigError`` naming the bad value and the expected shape. The ``Observation`` is the frozen
snapshot that ``decide`` reads, the ``RotationPlan`` is what it returns, and the ``RotationOutcome`` is what
``reconcile`` reports (its ``to_dict`` feeds the ledger, the HTTP API and outcome events).

This module must never do I/O and never read the clock: ``system_clock`` is the one place that calls ``datetime.now``,
and only callers that need the real time pass it in.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import SplitResult

from rotation.errors import ConfigError, InvalidInput, RotationError, TransientError
from rotation.hosts import split_https_url
from rotation.reasons import Reason
from rotation.redact import clipped, quoted

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
KEY_VERSION_PATTERN = re.compile(r"^[0-9a-fA-F]{32}$")  # Key Vault's version ids: 32 hex digits
REQUEST_ID_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$")  # a UUID fits; a token (with dots) does not
MAX_MESSAGE_BYTES = 4096
# W3C Trace Context's traceparent: version 00, a trace id and a parent id (neither all zeros), flags.
TRACEPARENT_PATTERN = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
"""The largest rotation-requests message accepted; ours take about 300 bytes."""
MAX_IDEMPOTENCY_KEY = 200
_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d3c52-7a8e-5b0f-9c4d-2e6a1b9f0c37")
# Event ids live in a namespace of their own: no Idempotency-Key can name an event's request (and so queue an HTTP
# copy of a KeyNewVersionCreated request, which may create a version where the event may not).
_EVENT_NAMESPACE = uuid.UUID("0b3e8f61-2c4d-5a7e-8f19-6d2c4b7a9e05")

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


def iso(moment: datetime | None) -> str | None:
    """``moment`` as the API and the ledger show times: ISO 8601 with ``Z`` for UTC; None stays None."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def shown(value: str, limit: int = 200) -> str:
    """A user-supplied value quoted for an error message: redacted (a secret pasted into it is not repeated) and cut
    to ``limit`` characters."""
    return quoted(value, limit)


def normalize_vault_url(text: str) -> str:
    """``https://Host[:port][/]`` -> ``https://host[:port]`` (lowercase host, no default port, no trailing slash).

    Raises ``ConfigError`` when ``text`` is not an https URL of a vault (no path other than ``/``).
    """
    parts = split_https_url(text.strip(), what=f"vault URL {shown(text)}", fix="give https://<vault>.vault.azure.net")
    if parts.path not in ("", "/"):
        raise ConfigError(f"vault URL {shown(text)} has a path {shown(parts.path)}; give only https://<vault host>")
    return "https://" + _host_port(parts)


def normalize_location(location: str) -> str:
    """Azure region names compare without case and spaces: "East US" == "eastus"."""
    return "".join(location.split()).lower()


def _host_port(parts: SplitResult) -> str:
    """``host[:port]`` of an URL ``split_https_url`` accepted: lower case, brackets kept for IPv6, no default port."""
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port in (None, 443) else f"{host}:{parts.port}"


class Trigger(StrEnum):
    """What asked for a reconcile. ``KEY_NEW_VERSION_CREATED`` never creates a version (DESIGN §3.1)."""

    KEY_NEAR_EXPIRY = "KeyNearExpiry"
    KEY_EXPIRED = "KeyExpired"
    KEY_NEW_VERSION_CREATED = "KeyNewVersionCreated"
    TIMER = "timer"
    HTTP = "http"
    CLI = "cli"


class VersionSource(StrEnum):
    """Who makes a target key's new versions. ``KEY_VAULT``: the vault's own rotation policy does, and the service
    only repoints and verifies the accounts (for teams that keep Key Vault's auto-rotation)."""

    SERVICE = "service"
    KEY_VAULT = "key_vault"


@dataclass(frozen=True)
class KeyRef:
    """A versionless Key Vault key: ``vault_url`` normalised (``https://host[:port]``), ``name`` as in the vault."""

    vault_url: str
    name: str

    @classmethod
    def parse(cls, text: str) -> KeyRef:
        """Parse ``https://<vault>/keys/<name>`` (optional trailing slash). Versioned URLs and http are rejected."""
        parts = split_https_url(text.strip(), what=f"key URL {shown(text)}", fix=f"expected {_KEY_URL_SHAPE}")
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
        return cls(vault_url="https://" + _host_port(parts), name=name)

    @property
    def id(self) -> str:
        return f"{self.vault_url}/keys/{self.name}"

    @property
    def vault_host(self) -> str:
        """The vault's host (and port, if not 443): used for lock and ledger names."""
        return self.vault_url.removeprefix("https://")

    @property
    def folded_id(self) -> str:
        """The id with the name in lower case. Key Vault names are case-insensitive, so two spellings of one key
        share one lock, one ledger partition and one request id per Idempotency-Key."""
        return f"{self.vault_url}/keys/{self.name.lower()}"

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
    """One request to reconcile one key, checked when it is made.

    It crosses the queue as one JSON message: ``to_message`` writes it and ``from_message`` reads it back with the same
    rules, so a message that ``from_message`` accepts is exactly one that ``to_message`` could have written. The
    ``request_id`` ends up in provenance tags and Table keys, and ``event_version`` is a Key Vault version id.
    ``traceparent`` is the W3C trace context of the span that sent the message (``RotationQueue`` sets it), so the
    worker continues the sender's trace; it is telemetry, not part of the request's identity.
    """

    request_id: str
    key: KeyRef
    trigger: Trigger
    force: bool = False
    requested_at: datetime | None = None
    event_version: str | None = None
    traceparent: str | None = field(default=None, compare=False)
    # Break-glass (rotation/breakglass.py): the version believed compromised, which the request moves every account it
    # may touch off and then disables; always forced. ``accept_breakage`` disables it even while accounts remain.
    compromised_version: str | None = None
    accept_breakage: bool = False

    def __post_init__(self) -> None:
        check_request_id(self.request_id)
        if not isinstance(self.key, KeyRef) or not isinstance(self.trigger, Trigger):
            raise InvalidInput("a rotation request needs a KeyRef and a Trigger")
        if not isinstance(self.force, bool):
            raise InvalidInput(f"rotation request field 'force' must be true or false, got {quoted(self.force)}")
        if self.requested_at is not None and (
            not isinstance(self.requested_at, datetime) or self.requested_at.utcoffset() is None
        ):
            raise InvalidInput(
                "rotation request field 'requested_at' must be a time with a UTC offset, "
                f"got {quoted(self.requested_at)}"
            )
        if self.event_version is not None and (
            not isinstance(self.event_version, str) or KEY_VERSION_PATTERN.fullmatch(self.event_version) is None
        ):
            raise InvalidInput(
                f"rotation request field 'event_version' must be a Key Vault version id (32 hex digits) or null, "
                f"got {quoted(self.event_version)}"
            )
        if self.traceparent is not None and (
            not isinstance(self.traceparent, str) or TRACEPARENT_PATTERN.fullmatch(self.traceparent) is None
        ):
            raise InvalidInput(
                "rotation request field 'traceparent' must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>) or "
                f"absent, got {quoted(self.traceparent)}"
            )
        if self.compromised_version is not None and (
            not isinstance(self.compromised_version, str)
            or KEY_VERSION_PATTERN.fullmatch(self.compromised_version) is None
        ):
            raise InvalidInput(
                "rotation request field 'compromised_version' must be a Key Vault version id (32 hex digits) or "
                f"absent, got {quoted(self.compromised_version)}"
            )
        if not isinstance(self.accept_breakage, bool):
            raise InvalidInput(
                f"rotation request field 'accept_breakage' must be true or false, got {quoted(self.accept_breakage)}"
            )
        if self.compromised_version is not None and not self.force:
            raise InvalidInput("a break-glass request (compromised_version) is always forced: set force to true")
        if self.accept_breakage and self.compromised_version is None:
            raise InvalidInput("accept_breakage applies only to a break-glass request: name its compromised_version")

    def to_message(self) -> str:
        """The queue message: compact JSON, the same fields ``from_message`` reads."""
        return json.dumps(
            {
                "request_id": self.request_id,
                "key": self.key.id,
                "trigger": self.trigger.value,
                "force": self.force,
                "requested_at": None if self.requested_at is None else self.requested_at.isoformat(),
                "event_version": self.event_version,
                "traceparent": self.traceparent,
                **(
                    {"compromised_version": self.compromised_version, "accept_breakage": self.accept_breakage}
                    if self.compromised_version is not None
                    else {}
                ),
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_message(cls, body: str | bytes) -> RotationRequest:
        """The request in a queue message body (JSON text, as the trigger hands it over: already base64-decoded).

        Raises ``InvalidInput`` naming what is wrong, for anything ``to_message`` would not have written: too large,
        not UTF-8, not JSON (or nested too deep for the parser), missing or unknown fields, a bad value in any field.
        """
        size = len(body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body)
        if size > MAX_MESSAGE_BYTES:
            raise InvalidInput(f"rotation request has {size} bytes; the limit is {MAX_MESSAGE_BYTES}")
        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"rotation request is not UTF-8 text (byte {exc.start}); enqueue JSON text") from exc
        try:
            fields = json.loads(body, object_pairs_hook=_unique_fields)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
            raise InvalidInput(
                f"rotation request is not JSON, or repeats a field ({clipped(str(exc), 120)}); enqueue a JSON object"
            ) from exc
        if not isinstance(fields, dict):
            raise InvalidInput(f"rotation request must be a JSON object, got {type(fields).__name__}")
        glass = ("compromised_version" in fields, "accept_breakage" in fields)
        if glass[0] != glass[1] or (glass[0] and fields["compromised_version"] is None):
            raise InvalidInput(
                "rotation request fields 'compromised_version' (a version id) and 'accept_breakage' come together, in "
                "a break-glass request only"
            )
        missing = [name for name in _MESSAGE_REQUIRED if name not in fields]
        unknown = sorted(name[:40] for name in fields if name not in _MESSAGE_REQUIRED + _MESSAGE_OPTIONAL)
        if missing or unknown:
            raise InvalidInput(
                f"rotation request is missing {missing} or has unknown fields {unknown}; "
                f"fields: {', '.join(_MESSAGE_REQUIRED + _MESSAGE_OPTIONAL)}"
            )
        return cls(
            request_id=_text_field(fields, "request_id"),
            key=_key_field(fields["key"]),
            trigger=_trigger_field(fields["trigger"]),
            force=fields["force"],
            requested_at=_time_field(fields["requested_at"]),
            event_version=fields.get("event_version"),
            traceparent=fields.get("traceparent"),
            compromised_version=fields.get("compromised_version"),
            accept_breakage=fields.get("accept_breakage", False),
        )


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's fields; a name that appears twice is refused (``to_message`` never writes one twice)."""
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise ValueError("a field appears twice")
    return fields


_MESSAGE_REQUIRED = ("request_id", "key", "trigger", "force", "requested_at")
_MESSAGE_OPTIONAL = ("event_version", "traceparent", "compromised_version", "accept_breakage")


def _text_field(fields: Mapping[str, Any], name: str) -> str:
    value = fields[name]
    if not isinstance(value, str):
        raise InvalidInput(f"rotation request field {name!r} must be text, got {type(value).__name__}")
    return value


def _key_field(value: object) -> KeyRef:
    if not isinstance(value, str):
        raise InvalidInput(f"rotation request field 'key' must be a key URL, got {type(value).__name__}")
    try:
        return KeyRef.parse(value)
    except ConfigError as exc:
        raise InvalidInput(f"rotation request field 'key': {exc}") from exc


def _trigger_field(value: object) -> Trigger:
    if isinstance(value, str) and value in Trigger.__members__.values():
        return Trigger(value)
    raise InvalidInput(
        f"rotation request field 'trigger' must be one of {', '.join(t.value for t in Trigger)}, got {quoted(value)}"
    )


def _time_field(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise InvalidInput(
            "rotation request field 'requested_at' must be an ISO 8601 time with a UTC offset, such as "
            f"'2025-01-31T12:00:00+00:00', got {quoted(value)}"
        )
    return moment


def check_request_id(request_id: object) -> str:
    """``request_id`` if it is 1-64 letters, digits or '-' starting with a letter or digit (a UUID fits; a token, with
    its dots, does not); ``InvalidInput`` naming it otherwise."""
    if not isinstance(request_id, str) or REQUEST_ID_PATTERN.fullmatch(request_id) is None:
        raise InvalidInput(
            f"request id {quoted(request_id)} is not valid; use 1-64 letters, digits or '-' starting with a letter or "
            "digit (a UUID, for example)"
        )
    return request_id


def request_id_for(idempotency_key: str, key: KeyRef) -> str:
    """The request id for an ``Idempotency-Key`` on a request for ``key``; the same inputs give the same id: a UUIDv5
    of ``<folded key id>|<idempotency key>``, so a retried POST finds the request its first attempt created, and the
    same header sent for two keys names two requests. ``InvalidInput`` for a value that is not 1-200 printable ASCII
    characters."""
    return _derived_id(_IDEMPOTENCY_NAMESPACE, idempotency_key, key, what="Idempotency-Key")


def event_request_id(event_id: str, key: KeyRef) -> str:
    """The request id of a Key Vault event about ``key``: every delivery of the event names the same request, and no
    ``Idempotency-Key`` names it (another UUIDv5 namespace). ``InvalidInput`` as for ``request_id_for``."""
    return _derived_id(_EVENT_NAMESPACE, event_id, key, what="event id")


def _derived_id(namespace: uuid.UUID, text: str, key: KeyRef, *, what: str) -> str:
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_IDEMPOTENCY_KEY:
        size = f"{len(text)} characters" if isinstance(text, str) else "no text"
        raise InvalidInput(
            f"{what} must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters; got {size}. "
            "Send a short unique token such as a UUID."
        )
    for position, char in enumerate(text):
        if not " " <= char <= "~":
            raise InvalidInput(
                f"{what} has the non-printable or non-ASCII character {char!r} at position {position}; "
                "use printable ASCII only, such as a UUID."
            )
    return str(uuid.uuid5(namespace, f"{key.folded_id}|{text}"))


@dataclass(frozen=True)
class Scope:
    """Where Resource Graph searches: the configured subscriptions, or one management group, or neither (the tenant:
    every subscription the identity can read). Subscription ids are GUIDs, kept in lower case and sorted."""

    subscriptions: tuple[str, ...] = ()
    management_group: str | None = None

    def __post_init__(self) -> None:
        if self.subscriptions and self.management_group is not None:
            raise ConfigError("discovery searches the configured subscriptions or one management group, not both")
        bad = [shown(s) for s in self.subscriptions if not GUID_PATTERN.fullmatch(s)]
        if bad:
            raise ConfigError(f"discovery's subscriptions must be subscription ids (GUIDs); not: {', '.join(bad)}")
        # A management group id has the characters and length of a resource group name (Learn, "management groups").
        if self.management_group is not None and not RESOURCE_GROUP_PATTERN.fullmatch(self.management_group):
            raise ConfigError(
                f"management group id {shown(self.management_group)} is invalid; use its id (1-90 letters, digits, "
                "'-', '_', '.', '(' or ')'), not its display name"
            )
        object.__setattr__(self, "subscriptions", tuple(sorted({s.lower() for s in self.subscriptions})))

    def __str__(self) -> str:
        if self.subscriptions:
            return "subscriptions " + ", ".join(self.subscriptions)
        if self.management_group is not None:
            return f"management group {self.management_group}"
        return "tenant"


@dataclass(frozen=True)
class Rollout:
    """A target's staged rollout (DESIGN §7.4): the ``canary`` accounts first (none named: the first listed account),
    verified, then the others in waves of ``wave_size``, each verified before the next; the first account that fails
    halts it."""

    canary: tuple[AccountRef, ...] = ()
    wave_size: int = 1


class Retirement(StrEnum):
    """Which old versions of a target key the sweep may disable once unused for the soak (``ROTATION_RETIREMENT``)."""

    OFF = "off"  # none: old versions stay enabled
    OWN = "own"  # only versions this app created (tagged rotation-app with its ROTATION_APP_NAME)
    ALL = "all"  # any old version, whoever created it


class UnmanagedPolicy(StrEnum):
    """What the service does with an account that discovery finds on a target key but ROTATION_TARGETS does not list
    (``ROTATION_UNMANAGED``)."""

    REPORT = "report"  # drift only: reported on every sweep and in the status, never written to
    ENROL = "enrol"  # rotated with the key's listed accounts


@dataclass(frozen=True)
class Target:
    """One entry of ROTATION_TARGETS: a key, the accounts that use it, optionally the vault's region, and who makes
    the key's new versions."""

    key: KeyRef
    accounts: tuple[AccountRef, ...]
    vault_location: str | None = None
    new_versions: VersionSource = VersionSource.SERVICE
    rollout: Rollout | None = None  # None: every account at once, one wave

    def refuses_force(self) -> str | None:
        """Why a forced rotation of this key is refused (its versions come from Key Vault's policy), or None."""
        if self.new_versions is VersionSource.SERVICE:
            return None
        return (
            f"new versions of key {self.key.id} come from Key Vault's rotation policy (new_versions=key_vault), so "
            "the service never creates one: rotate the key in Key Vault (az keyvault key rotate) and the service "
            "repoints the accounts, or ask without force to converge them now"
        )


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
    wave: int = 1  # the rollout's wave, 1 the canary (rotation/rollout.py); every account is in wave 1 without one


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
    renews_at: datetime | None = None  # when the current version is (or became) due for renewal
    expires_on: datetime | None = None  # when the current version expires; None: no expiry, or no version

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
            "renews_at": None if self.renews_at is None else self.renews_at.isoformat(),
            "expires_on": None if self.expires_on is None else self.expires_on.isoformat(),
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
                    "wave": a.wave,
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
    wave: int = 1

    def to_dict(self) -> dict[str, object]:
        return {
            "account": self.account.id,
            "action": self.action.value,
            "status": self.status.value,
            "reason": self.reason.value,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "error": self.error,
            "wave": self.wave,
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
    blast_radius: Mapping[str, object] | None = None  # a break-glass request's report (breakglass.BlastRadius)

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
            **({"blast_radius": dict(self.blast_radius)} if self.blast_radius is not None else {}),
        }
