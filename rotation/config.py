"""App settings (DESIGN §4), parsed and validated once at start into a frozen ``Settings``.

Every problem is collected and reported together; each line names the setting, the bad value and how to fix it.
Each setting is checked with the rules of the code that will use it (the HTTP transport's for URLs, ``int`` and
``timedelta``'s limits for numbers and durations), so a setting that passes never fails later at run time, and no
value, however large or odd, raises anything but ``ConfigError``.

A value is echoed only redacted and clipped (``rotation.redact``), so a SAS token pasted into a URL setting is not
repeated; ``ROTATION_EVENTS_KEY`` is a secret: it is never echoed, in errors or in ``repr``, even where it was pasted
into another setting. This module must never read ``os.environ`` itself (callers pass the mapping) and never touch the
network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar
from urllib.parse import urlsplit

import isodate

from rotation import auth
from rotation.auth import HttpAuth
from rotation.clouds import AZURE_CLOUD_SETTING, CLOUDS, DEFAULT_CLOUD, Cloud, cloud_of_host
from rotation.errors import ConfigError
from rotation.hosts import split_https_url
from rotation.model import (
    GUID_PATTERN,
    AccountRef,
    KeyRef,
    RenewalPolicy,
    Retirement,
    Rollout,
    Scope,
    Target,
    UnmanagedPolicy,
    VersionSource,
    normalize_location,
)
from rotation.redact import REDACTED, clipped, redacted

TARGETS = "ROTATION_TARGETS"
KEY_LIFETIME = "ROTATION_KEY_LIFETIME"
RENEW_BEFORE = "ROTATION_RENEW_BEFORE"
SCHEDULE = "ROTATION_SCHEDULE"
EVENTS_ENDPOINT = "ROTATION_EVENTS_ENDPOINT"
EVENTS_KEY = "ROTATION_EVENTS_KEY"
CONCURRENCY = "ROTATION_CONCURRENCY"
VERIFY_TIMEOUT = "ROTATION_VERIFY_TIMEOUT"
FORCE_COOLDOWN = "ROTATION_FORCE_COOLDOWN"
APP_NAME = "ROTATION_APP_NAME"
CLIENT_ID = "AZURE_CLIENT_ID"
AZURE_CLOUD = AZURE_CLOUD_SETTING  # ROTATION_AZURE_CLOUD: rotation/clouds.py
HTTP_AUTH = auth.HTTP_AUTH_SETTING  # ROTATION_HTTP_AUTH: rotation/auth.py
DISCOVERY = "ROTATION_DISCOVERY"
UNMANAGED = "ROTATION_UNMANAGED"
RETIREMENT = "ROTATION_RETIREMENT"
RETIRE_AFTER = "ROTATION_RETIRE_AFTER"
# Every setting Settings.from_env reads: the public interface, documented in the README.
SETTING_NAMES = (
    TARGETS,
    KEY_LIFETIME,
    RENEW_BEFORE,
    SCHEDULE,
    EVENTS_ENDPOINT,
    EVENTS_KEY,
    CONCURRENCY,
    VERIFY_TIMEOUT,
    FORCE_COOLDOWN,
    APP_NAME,
    CLIENT_ID,
    AZURE_CLOUD,
    HTTP_AUTH,
    DISCOVERY,
    UNMANAGED,
    RETIREMENT,
    RETIRE_AFTER,
)

DEFAULT_KEY_LIFETIME = timedelta(days=120)
DEFAULT_RENEW_BEFORE = timedelta(days=30)
DEFAULT_SCHEDULE = "0 0 3 * * *"
DEFAULT_CONCURRENCY = 64  # accounts in flight per key; ARM's budget, not this, sets the pace (rotation/pacing.py)
DEFAULT_VERIFY_TIMEOUT = timedelta(minutes=10)
DEFAULT_FORCE_COOLDOWN = timedelta(hours=1)
MAX_FORCE_COOLDOWN = timedelta(days=7)
DEFAULT_APP_NAME = "aoai-cmk-rotation"
DEFAULT_RETIRE_AFTER = timedelta(days=30)
MIN_RETIRE_AFTER = timedelta(days=1)
MIN_KEY_LIFETIME = timedelta(days=28)  # Key Vault's minimum expiryTime for a rotation policy
MAX_KEY_LIFETIME = timedelta(days=3650)  # ten years; also the bound of ROTATION_RENEW_BEFORE
MAX_CONCURRENCY = 256
MAX_VERIFY_TIMEOUT = timedelta(minutes=20)  # leaves room for the other steps within functionTimeout (30 minutes)
MIN_EVENTS_KEY = 16  # a topic key has 44 characters; anything this short is a mistake, not a key
MAX_TARGETS_BYTES = 256 * 1024  # far above any real list; refused before parsing
MAX_WAVE_SIZE = 1000  # accounts in one wave of a rollout after its canary

_APP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TARGET_FIELDS = frozenset({"key", "accounts", "vault_location", "new_versions", "rollout"})
_ROLLOUT_FIELDS = frozenset({"canary", "wave_size"})
_MANAGEMENT_GROUP_SCOPE = "/providers/Microsoft.Management/managementGroups/"
_DISCOVERY_FIX = (
    "use tenant (every subscription the app's identity can read), off, subscription scopes such as "
    f"/subscriptions/<id>,/subscriptions/<id>, or one management group, {_MANAGEMENT_GROUP_SCOPE}<id>"
)
_TARGETS_EXAMPLE = '[{"key": "https://<vault>.vault.azure.net/keys/<name>", "accounts": ["/subscriptions/..."]}]'
_EVENTS_ENDPOINT_FIX = (
    "use the topic endpoint, e.g. https://<topic>.<region>-1.eventgrid.azure.net/api/events, and put an access key in "
    f"{EVENTS_KEY} (or leave it out to use the app's identity)"
)

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Settings:
    targets: tuple[Target, ...]
    key_lifetime: timedelta = DEFAULT_KEY_LIFETIME
    renew_before: timedelta = DEFAULT_RENEW_BEFORE
    schedule: str = DEFAULT_SCHEDULE
    events_endpoint: str | None = None
    events_key: str | None = field(default=None, repr=False)
    concurrency: int = DEFAULT_CONCURRENCY
    verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT
    force_cooldown: timedelta = DEFAULT_FORCE_COOLDOWN  # the least time between two forced rotations of one key
    client_id: str | None = None
    app_name: str = DEFAULT_APP_NAME
    cloud: Cloud = DEFAULT_CLOUD  # ROTATION_AZURE_CLOUD: where ARM, Entra ID and the vaults are
    http_auth: HttpAuth = HttpAuth.KEYS  # ROTATION_HTTP_AUTH: Functions keys, or Entra ID app roles
    discovery: Scope | None = None  # ROTATION_DISCOVERY: where accounts on the target keys are searched; None: off
    unmanaged: UnmanagedPolicy = UnmanagedPolicy.REPORT  # ROTATION_UNMANAGED: what happens to the ones not listed
    retirement: Retirement = Retirement.OFF  # ROTATION_RETIREMENT: which old versions the sweep may disable
    retire_after: timedelta = DEFAULT_RETIRE_AFTER  # ROTATION_RETIRE_AFTER: how long unused before that

    @property
    def renewal(self) -> RenewalPolicy:
        return RenewalPolicy(key_lifetime=self.key_lifetime, renew_before=self.renew_before)

    def target_for(self, key: KeyRef) -> Target | None:
        """The configured target for ``key``, or None: keys outside ROTATION_TARGETS are never acted on."""
        return next((t for t in self.targets if _same_key(t.key, key)), None)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, require_targets: bool = True) -> Settings:
        """Parse the app settings in ``env``; raise one ``ConfigError`` listing every problem. Without
        ``require_targets`` (the CLI's ``discover``, which helps write them), a missing ``ROTATION_TARGETS`` is no
        targets; a present one is still checked."""
        problems: list[str] = []

        def check(parse: Callable[[], T]) -> T | None:
            try:
                return parse()
            except ConfigError as exc:
                problems.append(str(exc))
                return None

        def setting(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        cloud = check(lambda: parse_cloud(setting(AZURE_CLOUD)))
        # With a bad cloud name, that one problem is reported, not one per target on the "wrong" cloud.
        optional = not require_targets and setting(TARGETS) is None
        targets = () if optional else check(lambda: parse_targets(setting(TARGETS), cloud=cloud))
        http_auth = check(lambda: auth.http_auth(env))
        lifetime = check(lambda: _key_lifetime(setting(KEY_LIFETIME)))
        renew_before = check(lambda: _renew_before(setting(RENEW_BEFORE)))
        verify_timeout = check(lambda: _verify_timeout(setting(VERIFY_TIMEOUT)))
        force_cooldown = check(lambda: _force_cooldown(setting(FORCE_COOLDOWN)))
        schedule = check(lambda: parse_schedule(setting(SCHEDULE) or DEFAULT_SCHEDULE))
        endpoint = check(lambda: _events_endpoint(setting(EVENTS_ENDPOINT)))
        events_key = setting(EVENTS_KEY)
        concurrency = check(lambda: _concurrency(setting(CONCURRENCY)))
        client_id = check(lambda: _client_id(setting(CLIENT_ID)))
        app_name = check(lambda: _app_name(setting(APP_NAME) or DEFAULT_APP_NAME))
        discovery = check(lambda: parse_discovery(setting(DISCOVERY)))
        unmanaged = check(lambda: _unmanaged(setting(UNMANAGED)))
        retirement = check(lambda: _retirement(setting(RETIREMENT)))
        retire_after = check(lambda: _retire_after(setting(RETIRE_AFTER)))

        if lifetime is not None and lifetime < MIN_KEY_LIFETIME:
            problems.append(
                f"{KEY_LIFETIME}={_shown(str(setting(KEY_LIFETIME)))} is shorter than 28 days (P28D), Key Vault's "
                "minimum key lifetime; use e.g. P90D or the default P120D"
            )
        if lifetime is not None and renew_before is not None and renew_before >= lifetime:
            problems.append(
                f"{RENEW_BEFORE}={_shown(_iso(renew_before))} must be shorter than "
                f"{KEY_LIFETIME}={_shown(_iso(lifetime))}, or every new version would be due at once; "
                "e.g. P30D before a P120D lifetime"
            )
        if events_key is not None and (len(events_key) < MIN_EVENTS_KEY or any(c.isspace() for c in events_key)):
            problems.append(
                f"{EVENTS_KEY} is not an Event Grid topic access key (those are 44 characters of base64, without "
                "spaces); copy key1 or key2 of the topic, or remove the setting to publish with the app's identity"
            )
            events_key = None  # too short to be searched for in the other messages without garbling them
        if events_key is not None and setting(EVENTS_ENDPOINT) is None:
            problems.append(
                f"{EVENTS_KEY} is set but {EVENTS_ENDPOINT} is not; set the topic endpoint or remove the key"
            )
        if problems:
            if events_key is not None:  # pasted into another setting by mistake: still never shown
                problems = [problem.replace(events_key, REDACTED) for problem in problems]
            raise ConfigError("invalid app settings:\n- " + "\n- ".join(problems))
        assert targets is not None and lifetime is not None and renew_before is not None
        assert verify_timeout is not None and schedule is not None and concurrency is not None
        assert force_cooldown is not None and retirement is not None and retire_after is not None
        assert app_name is not None and cloud is not None and http_auth is not None and unmanaged is not None
        return cls(
            targets=targets,
            key_lifetime=lifetime,
            renew_before=renew_before,
            schedule=schedule,
            events_endpoint=endpoint,
            events_key=events_key,
            concurrency=concurrency,
            verify_timeout=verify_timeout,
            force_cooldown=force_cooldown,
            client_id=client_id,
            app_name=app_name,
            cloud=cloud,
            http_auth=http_auth,
            discovery=discovery,
            unmanaged=unmanaged,
            retirement=retirement,
            retire_after=retire_after,
        )


def _same_key(a: KeyRef, b: KeyRef) -> bool:
    return a.vault_url == b.vault_url and a.name.lower() == b.name.lower()


def _iso(value: timedelta) -> str:
    return str(isodate.duration_isoformat(value))


def _shown(value: str) -> str:
    """A setting's value quoted for an error message: redacted and clipped, so no secret pasted into it is echoed."""
    return repr(clipped(value))


def parse_cloud(text: str | None) -> Cloud:
    """Parse ROTATION_AZURE_CLOUD: exactly one of Bicep's ``environment().name`` values; AzureCloud when unset."""
    if text is None:
        return DEFAULT_CLOUD
    cloud = CLOUDS.get(text)
    if cloud is None:
        allowed = ", ".join(CLOUDS)
        raise ConfigError(
            f"{AZURE_CLOUD}={_shown(text)} is not an Azure cloud this app knows; use one of {allowed} (exactly as "
            f"Bicep's environment().name or 'az cloud show --query name' spells it), or leave it out for AzureCloud"
        )
    return cloud


def parse_targets(text: str | None, *, cloud: Cloud | None = None) -> tuple[Target, ...]:
    """Parse ROTATION_TARGETS: a JSON list of {"key": url, "accounts": [arm ids], optional "vault_location" and
    "new_versions" ("service", the default, or "key_vault")}.

    With ``cloud``, a key on a vault of another Azure cloud (its DNS suffix says so) is refused: the app's identity and
    its ARM client are in ``cloud``. A host of no known cloud (an emulator, an IP address) is not refused."""
    if text is None:
        raise ConfigError(f"{TARGETS} is not set; set it to a JSON list such as {_TARGETS_EXAMPLE}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TARGETS_BYTES:
        raise ConfigError(
            f"{TARGETS} is {size} bytes, more than the {MAX_TARGETS_BYTES // 1024} KiB allowed; list each key once "
            "with all of its accounts, and split the keys between two apps if there are still too many"
        )
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{TARGETS} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"expected a list such as {_TARGETS_EXAMPLE}"
        ) from exc
    except RecursionError as exc:
        raise ConfigError(
            f"{TARGETS} nests JSON lists or objects too deeply to parse; expected a list such as {_TARGETS_EXAMPLE}"
        ) from exc
    except ValueError as exc:  # e.g. a number with more digits than int() converts
        raise ConfigError(
            f"{TARGETS} is not valid JSON ({clipped(str(exc), 80)}); expected a list such as {_TARGETS_EXAMPLE}"
        ) from exc
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{TARGETS} must be a non-empty JSON list such as {_TARGETS_EXAMPLE}")
    targets = tuple(_target(i, item, cloud) for i, item in enumerate(raw))
    _check_unique(targets)
    return targets


def _target(index: int, item: object, cloud: Cloud | None) -> Target:
    where = f"{TARGETS}[{index}]"
    if not isinstance(item, dict):
        # A list is not echoed: it may nest too deeply for json.dumps (loads stopped short of the recursion limit).
        got = "a list" if isinstance(item, list) else _shown(json.dumps(item))
        raise ConfigError(f'{where} must be an object with "key" and "accounts", got {got}')
    unknown = sorted(set(item) - TARGET_FIELDS)
    if unknown:
        raise ConfigError(
            f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; allowed: key, accounts, vault_location, "
            "new_versions, rollout"
        )
    key_text = item.get("key")
    if not isinstance(key_text, str):
        raise ConfigError(f"{where}.key must be a key URL string such as https://<vault>.vault.azure.net/keys/<name>")
    # The URL is checked as the transport will read it before KeyRef.parse, which would let an empty DNS label through
    # and raise a bare ValueError from urlsplit. KeyRef.parse and AccountRef.parse echo their input unredacted: their
    # errors are redacted here, and not chained.
    split_https_url(
        key_text.strip(),
        what=f"{where}.key: key URL {_shown(key_text)}",
        fix="expected https://<vault>.vault.azure.net/keys/<name>",
    )
    try:
        key = KeyRef.parse(key_text)
    except ConfigError as exc:
        raise ConfigError(f"{where}.key: {redacted(str(exc))}") from None
    _check_cloud(where, key, cloud)
    accounts_raw = item.get("accounts")
    if not isinstance(accounts_raw, list) or not accounts_raw or not all(isinstance(a, str) for a in accounts_raw):
        raise ConfigError(f"{where}.accounts must be a non-empty list of account ARM id strings")
    accounts: list[AccountRef] = []
    for j, arm_id in enumerate(accounts_raw):
        try:
            accounts.append(AccountRef.parse(arm_id))
        except ConfigError as exc:
            raise ConfigError(f"{where}.accounts[{j}]: {redacted(str(exc))}") from None
    location = item.get("vault_location")
    if location is not None and (not isinstance(location, str) or not normalize_location(location)):
        raise ConfigError(f'{where}.vault_location must be an Azure region name such as "eastus", or be left out')
    sources = [source.value for source in VersionSource]
    new_versions = item.get("new_versions", VersionSource.SERVICE.value)
    if new_versions not in sources:
        got = "a list or an object" if isinstance(new_versions, (list, dict)) else _shown(json.dumps(new_versions))
        raise ConfigError(
            f'{where}.new_versions must be "service" (the service creates new versions, the default) or "key_vault" '
            f"(the vault's own rotation policy creates them and the service only repoints the accounts), got {got}"
        )
    return Target(
        key=key,
        accounts=tuple(accounts),
        vault_location=normalize_location(location) if location else None,
        new_versions=VersionSource(new_versions),
        rollout=None if item.get("rollout") is None else _rollout(f"{where}.rollout", item["rollout"], accounts),
    )


def _rollout(where: str, item: object, accounts: list[AccountRef]) -> Rollout:
    """A target's ``rollout``: ``{"canary": [account ids], "wave_size": n}``, both optional; each canary must be
    one of the target's accounts (ids compared without case, as ARM does)."""
    example = '{"canary": ["/subscriptions/.../accounts/<name>"], "wave_size": 10}'
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be an object such as {example}, or be left out (every account at once)")
    unknown = sorted(set(item) - _ROLLOUT_FIELDS)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; allowed: canary, wave_size")
    size = item.get("wave_size", 1)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_WAVE_SIZE:
        raise ConfigError(
            f"{where}.wave_size must be a whole number from 1 to {MAX_WAVE_SIZE} (accounts per wave after the "
            f"canary), got {_shown(json.dumps(size))}"
        )
    canary_raw = item.get("canary", [])
    if not isinstance(canary_raw, list) or not all(isinstance(a, str) for a in canary_raw):
        raise ConfigError(f"{where}.canary must be a list of account ARM ids of this target, or be left out")
    listed = {account.id.lower(): account for account in accounts}
    canary: list[AccountRef] = []
    for j, arm_id in enumerate(canary_raw):
        try:
            account = listed.get(AccountRef.parse(arm_id).id.lower())
        except ConfigError as exc:
            raise ConfigError(f"{where}.canary[{j}]: {redacted(str(exc))}") from None
        if account is None:
            raise ConfigError(f"{where}.canary[{j}] {_shown(arm_id)} is not one of this target's accounts")
        canary.append(account)
    return Rollout(canary=tuple(dict.fromkeys(canary)), wave_size=size)


def _check_cloud(where: str, key: KeyRef, cloud: Cloud | None) -> None:
    """A key of another cloud's vault is refused: the app's token and ARM client would be for the wrong cloud."""
    owner = cloud_of_host(urlsplit(key.vault_url).hostname or "")
    if cloud is None or owner is None or owner is cloud:
        return
    raise ConfigError(
        f"{where}.key {key.id} is in a vault of {owner.name} (*.{owner.vault_suffix}), but {AZURE_CLOUD} is "
        f"{cloud.name} (vaults *.{cloud.vault_suffix}): one app signs in to one cloud. Set {AZURE_CLOUD}={owner.name} "
        f"if the app runs in {owner.name}, or list only keys of {cloud.name} vaults"
    )


def _check_unique(targets: tuple[Target, ...]) -> None:
    keys: dict[str, str] = {}
    owners: dict[str, str] = {}
    for target in targets:
        folded_key = target.key.id.lower()
        if folded_key in keys:
            raise ConfigError(f"{TARGETS} lists key {target.key.id} twice; merge its accounts into one entry")
        keys[folded_key] = target.key.id
        for account in target.accounts:
            folded = account.id.lower()
            owner = owners.get(folded)
            if owner == target.key.id:
                raise ConfigError(f"{TARGETS} lists account {account.id} twice under key {owner}; list it once")
            if owner is not None:
                raise ConfigError(
                    f"{TARGETS} lists account {account.id} under key {owner} and under key {target.key.id}; "
                    "an account uses exactly one key, so list it under that key only"
                )
            owners[folded] = target.key.id


def _key_lifetime(text: str | None) -> timedelta:
    return _duration(
        KEY_LIFETIME, text, DEFAULT_KEY_LIFETIME, MAX_KEY_LIFETIME, "ten years, the longest lifetime a new version gets"
    )


def _renew_before(text: str | None) -> timedelta:
    return _duration(
        RENEW_BEFORE, text, DEFAULT_RENEW_BEFORE, MAX_KEY_LIFETIME, f"it must be shorter than {KEY_LIFETIME}"
    )


def _verify_timeout(text: str | None) -> timedelta:
    return _duration(
        VERIFY_TIMEOUT,
        text,
        DEFAULT_VERIFY_TIMEOUT,
        MAX_VERIFY_TIMEOUT,
        "a worker waits this long per account on top of its other steps and must finish within host.json's "
        "functionTimeout (30 minutes)",
    )


def _force_cooldown(text: str | None) -> timedelta:
    return _duration(
        FORCE_COOLDOWN,
        text,
        DEFAULT_FORCE_COOLDOWN,
        MAX_FORCE_COOLDOWN,
        "a forced rotation that is refused for longer is better made by the CLI, which has no cooldown",
    )


def _duration(name: str, text: str | None, default: timedelta, maximum: timedelta, why_maximum: str) -> timedelta:
    """An ISO 8601 duration in days, hours, minutes or seconds, positive and at most ``maximum``."""
    if text is None:
        return default
    try:
        value = isodate.parse_duration(text)
    except (ValueError, ArithmeticError) as exc:  # ISO8601Error is a ValueError; P1000000000D overflows timedelta
        raise ConfigError(
            f"{name}={_shown(text)} is not an ISO 8601 duration of at most {_iso(maximum)} ({why_maximum}); "
            f"write e.g. {_iso(default)}"
        ) from exc
    if not isinstance(value, timedelta):
        raise ConfigError(
            f"{name}={_shown(text)} uses months or years, which have no fixed length; write it in days, e.g. P90D"
        )
    if value <= timedelta(0):
        raise ConfigError(f"{name}={_shown(text)} must be a positive duration, e.g. {_iso(default)}")
    if value > maximum:
        raise ConfigError(
            f"{name}={_shown(text)} is longer than {_iso(maximum)}: {why_maximum}; write e.g. {_iso(default)}"
        )
    return value


def _concurrency(text: str | None) -> int:
    if text is None:
        return DEFAULT_CONCURRENCY
    # ASCII digits only ('²'.isdigit() is True, but int('²') fails), and no more of them than the maximum has.
    digits = text.isascii() and text.isdigit() and len(text) <= len(str(MAX_CONCURRENCY))
    if not digits or not 1 <= int(text) <= MAX_CONCURRENCY:
        raise ConfigError(
            f"{CONCURRENCY}={_shown(text)} must be a whole number from 1 to {MAX_CONCURRENCY} "
            f"(default {DEFAULT_CONCURRENCY})"
        )
    return int(text)


def parse_discovery(text: str | None) -> Scope | None:
    """``ROTATION_DISCOVERY``: ``tenant`` (the default), ``off``, subscription scopes separated by commas, or one
    management group scope."""
    if text is None or text.lower() == "tenant":
        return Scope()
    if text.lower() == "off":
        return None
    items = [item.strip() for item in text.split(",")]
    if len(items) == 1 and items[0].lower().startswith(_MANAGEMENT_GROUP_SCOPE.lower()):
        return _scope(text, lambda: Scope(management_group=items[0][len(_MANAGEMENT_GROUP_SCOPE) :]))
    subscriptions = [item[len("/subscriptions/") :] for item in items if item.lower().startswith("/subscriptions/")]
    if len(subscriptions) != len(items):
        raise ConfigError(f"{DISCOVERY}={_shown(text)} is not a discovery scope; {_DISCOVERY_FIX}")
    return _scope(text, lambda: Scope(tuple(subscriptions)))


def _scope(text: str, build: Callable[[], Scope]) -> Scope:
    try:
        return build()
    except ConfigError as exc:
        raise ConfigError(f"{DISCOVERY}={_shown(text)}: {exc}; {_DISCOVERY_FIX}") from exc


def _unmanaged(text: str | None) -> UnmanagedPolicy:
    return _member(
        UNMANAGED,
        text,
        UnmanagedPolicy.REPORT,
        f"report (the default: accounts on a target key that {TARGETS} does not list are reported as drift) or "
        "enrol (they are rotated too)",
    )


def _retirement(text: str | None) -> Retirement:
    return _member(
        RETIREMENT,
        text,
        Retirement.OFF,
        "off (the default: old versions stay enabled), own (disable old versions this app created, once no account "
        f"has used them for {RETIRE_AFTER}) or all (any old version, whoever created it)",
    )


def _member(name: str, text: str | None, default: E, must_be: str) -> E:
    """``text`` as a member of ``default``'s enum, in any case; ``default`` when unset."""
    if text is None:
        return default
    try:
        return type(default)(text.lower())
    except ValueError:
        raise ConfigError(f"{name}={_shown(text)} must be {must_be}") from None


def _retire_after(text: str | None) -> timedelta:
    value = _duration(
        RETIRE_AFTER, text, DEFAULT_RETIRE_AFTER, MAX_KEY_LIFETIME, "a version unused for longer has long expired"
    )
    if value < MIN_RETIRE_AFTER:
        raise ConfigError(
            f"{RETIRE_AFTER}={_shown(str(text))} is shorter than a day (P1D): the evidence that no account uses a "
            f"version must span at least one daily sweep; write e.g. {_iso(DEFAULT_RETIRE_AFTER)}"
        )
    return value


def _events_endpoint(text: str | None) -> str | None:
    if text is None:
        return None
    split_https_url(text, what=f"{EVENTS_ENDPOINT}={_shown(text)}", fix=_EVENTS_ENDPOINT_FIX)
    return text


def _client_id(text: str | None) -> str | None:
    if text is not None and not GUID_PATTERN.fullmatch(text):
        raise ConfigError(f"{CLIENT_ID}={_shown(text)} must be the client id (a GUID) of a user-assigned identity")
    return text


def _app_name(text: str) -> str:
    if not _APP_NAME_PATTERN.fullmatch(text):
        raise ConfigError(
            f"{APP_NAME}={_shown(text)} must be 1-64 letters, digits, '.', '_' or '-' (it is written into key tags)"
        )
    return text


# NCRONTAB fields: (name, lowest, highest, names accepted in place of numbers).
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day-of-week", 0, 6, {d: i for i, d in enumerate(_DAYS)}),
)
# Numbers and names are at most 3 characters (59, "MON"), which also keeps int() away from absurdly long digit strings.
_CRON_ITEM = re.compile(r"^(?P<base>\*|[A-Za-z0-9]{1,3}(?:-[A-Za-z0-9]{1,3})?)(?:/(?P<step>[0-9]{1,3}))?$")


def parse_schedule(text: str) -> str:
    """Validate an NCRONTAB expression: 6 fields (with seconds, as Azure Functions uses) or 5 fields."""
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ConfigError(
            f"{SCHEDULE}={_shown(text)} has {len(fields)} fields; use an NCRONTAB expression with 6 fields "
            "'{second} {minute} {hour} {day} {month} {day-of-week}', e.g. '0 0 3 * * *' (daily at 03:00 UTC)"
        )
    specs = _CRON_FIELDS if len(fields) == 6 else _CRON_FIELDS[1:]
    for value, (name, low, high, names) in zip(fields, specs, strict=True):
        for item in value.split(","):
            if not _cron_item_ok(item, low, high, names):
                raise ConfigError(
                    f"{SCHEDULE}={_shown(text)}: the {name} field {_shown(value)} is invalid; use *, a number from "
                    f"{low} to {high}, a range a-b, a list a,b or a step */n"
                )
    return " ".join(fields)


def _cron_item_ok(item: str, low: int, high: int, names: Mapping[str, int]) -> bool:
    match = _CRON_ITEM.fullmatch(item)
    if match is None or (match["step"] is not None and int(match["step"]) == 0):
        return False
    if match["base"] == "*":
        return True
    bounds = [_cron_value(part, names) for part in match["base"].split("-")]
    return all(b is not None and low <= b <= high for b in bounds) and bounds == sorted(bounds, key=lambda b: b or 0)


def _cron_value(text: str, names: Mapping[str, int]) -> int | None:
    if text.isdigit():
        return int(text)
    return names.get(text.upper())
