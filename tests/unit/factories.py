"""Builders for the unit tests: one key, a few accounts, versions and observations at a fixed instant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rotation.errors import RotationError
from rotation.model import (
    AccountEncryption,
    AccountRef,
    KeyRef,
    KeyVersion,
    Observation,
    RenewalPolicy,
    RotationRequest,
    Target,
    Trigger,
    VersionSource,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
RENEWAL = RenewalPolicy(key_lifetime=timedelta(days=120), renew_before=timedelta(days=30))
VAULT_URL = "https://kv-prod.vault.azure.net"
KEY = KeyRef.parse(f"{VAULT_URL}/keys/cmk")
OTHER_KEY = KeyRef.parse(f"{VAULT_URL}/keys/other")
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"


def account_ref(name: str) -> AccountRef:
    return AccountRef(SUBSCRIPTION, "rg-ai", name)


AOAI_1 = account_ref("aoai-1")
AOAI_2 = account_ref("aoai-2")
AOAI_3 = account_ref("aoai-3")


@dataclass
class FixedClock:
    """A clock that stands still until a test moves it."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def version(
    name: str = "v1",
    *,
    created: datetime = NOW - 10 * DAY,
    expires: datetime | None = NOW + 100 * DAY,
    not_before: datetime | None = None,
    enabled: bool = True,
    kty: str | None = "RSA",
    size: int | None = 2048,
    tags: Mapping[str, str] | None = None,
    recovery_level: str | None = "Recoverable",
    latest: bool = False,
) -> KeyVersion:
    return KeyVersion(
        version=name,
        enabled=enabled,
        created_on=created,
        not_before=not_before,
        expires_on=expires,
        kty=kty,
        size=size,
        key_ops=("wrapKey", "unwrapKey"),
        tags=dict(tags or {}),
        recovery_level=recovery_level,
        latest=latest,
    )


def account(
    ref: AccountRef = AOAI_1,
    *,
    key_version: str | None = "v1",
    key: KeyRef = KEY,
    vault_uri: str | None = None,
    kind: str = "OpenAI",
    location: str = "eastus",
    identity: str | None = "SystemAssigned",
    key_source: str | None = "Microsoft.KeyVault",
    state: str | None = "Succeeded",
) -> AccountEncryption:
    return AccountEncryption(
        account=ref,
        kind=kind,
        location=location,
        identity_type=identity,
        key_source=key_source,
        key_vault_uri=vault_uri if vault_uri is not None else key.vault_url + "/",
        key_name=key.name,
        key_version=key_version,
        identity_client_id=None,
        provisioning_state=state,
    )


def request(
    trigger: Trigger = Trigger.TIMER, *, force: bool = False, request_id: str = "req-1", key: KeyRef = KEY
) -> RotationRequest:
    return RotationRequest(request_id=request_id, key=key, trigger=trigger, force=force)


def observe(
    versions: Iterable[KeyVersion],
    accounts: Iterable[AccountEncryption] = (),
    *,
    req: RotationRequest | None = None,
    targets: Iterable[AccountRef] | None = None,
    vault_location: str | None = None,
    new_versions: VersionSource = VersionSource.SERVICE,
    unreadable: Mapping[AccountRef, RotationError] | None = None,
    now: datetime = NOW,
) -> Observation:
    states = {a.account: a for a in accounts}
    target_accounts = tuple(targets) if targets is not None else tuple(states) + tuple(unreadable or {})
    return Observation(
        request=req or request(),
        target=Target(KEY, target_accounts, vault_location, new_versions),
        versions=tuple(sorted(versions, key=lambda v: v.created_on)),
        accounts=states,
        unreadable=dict(unreadable or {}),
        now=now,
    )
