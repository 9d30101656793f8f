"""When the key needs a new version: an ordered chain of small pure policies, cert-manager style.

Each policy looks at the key's current (newest) version at ``now`` and returns ``(reason, message)`` or None. The first
hit wins, so the order carries meaning: an explicit force first, then a version that cannot be used at all, then expiry,
then the renewal window. Time rules (DESIGN §3.1)::

    created ──────────────── exp - renew_before ─────── exp
       │      fresh                   │  Expiring        │  Expired
    (no exp: due at created + key_lifetime - renew_before: LifetimeElapsed)

This module also says which versions are usable and which is the target. It must never read the clock, do I/O, or
decide anything about accounts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from rotation.model import SUPPORTED_KEY_SIZE, SUPPORTED_KEY_TYPES, KeyVersion, RenewalPolicy, recency
from rotation.reasons import Reason


@dataclass(frozen=True)
class PolicyInput:
    current: KeyVersion
    now: datetime
    renewal: RenewalPolicy
    force: bool


PolicyHit = tuple[Reason, str]
Policy = Callable[[PolicyInput], PolicyHit | None]


def renewal_due_at(version: KeyVersion, renewal: RenewalPolicy) -> datetime:
    """When ``version`` becomes due: ``exp - renew_before``, or ``created + key_lifetime - renew_before`` if no exp."""
    if version.expires_on is not None:
        return version.expires_on - renewal.renew_before
    return version.created_on + renewal.key_lifetime - renewal.renew_before


def is_due(version: KeyVersion, now: datetime, renewal: RenewalPolicy) -> bool:
    return now >= renewal_due_at(version, renewal)


def is_valid_at(version: KeyVersion, now: datetime) -> bool:
    """Key Vault's validity window: ``nbf <= now < exp``."""
    started = version.not_before is None or version.not_before <= now
    return started and (version.expires_on is None or now < version.expires_on)


def has_supported_shape(version: KeyVersion) -> bool:
    """RSA or RSA-HSM, 2048 bits: the only keys Azure OpenAI documents for CMK."""
    return version.kty in SUPPORTED_KEY_TYPES and version.size == SUPPORTED_KEY_SIZE


def is_usable(version: KeyVersion, now: datetime) -> bool:
    """An account may point at it now: enabled, valid now, RSA/RSA-HSM 2048."""
    return version.enabled and is_valid_at(version, now) and has_supported_shape(version)


def select_target(versions: Iterable[KeyVersion], now: datetime, renewal: RenewalPolicy) -> KeyVersion | None:
    """The newest (by ``created_on``) version that is usable now and not due, or None."""
    candidates = [v for v in versions if is_usable(v, now) and not is_due(v, now, renewal)]
    return max(candidates, key=recency, default=None)


def forced(i: PolicyInput) -> PolicyHit | None:
    if i.force:
        return Reason.FORCED, "a new version was requested (force=true, or break-glass)"
    return None


def current_disabled(i: PolicyInput) -> PolicyHit | None:
    if not i.current.enabled:
        return Reason.CURRENT_DISABLED, f"the current version {i.current.version} is disabled"
    return None


def current_not_yet_valid(i: PolicyInput) -> PolicyHit | None:
    nbf = i.current.not_before
    if nbf is not None and i.now < nbf:
        return Reason.CURRENT_NOT_YET_VALID, f"the current version {i.current.version} is not valid before {_at(nbf)}"
    return None


def expired(i: PolicyInput) -> PolicyHit | None:
    exp = i.current.expires_on
    if exp is not None and i.now >= exp:
        return Reason.EXPIRED, f"the current version {i.current.version} expired at {_at(exp)}"
    return None


def current_wrong_type(i: PolicyInput) -> PolicyHit | None:
    if i.current.kty not in SUPPORTED_KEY_TYPES:
        shown = i.current.kty or "unknown"
        return Reason.CURRENT_WRONG_TYPE, f"the current version {i.current.version} has key type {shown}, not RSA"
    return None


def current_wrong_size(i: PolicyInput) -> PolicyHit | None:
    if i.current.size != SUPPORTED_KEY_SIZE:
        shown = i.current.size or "unknown"
        return (
            Reason.CURRENT_WRONG_SIZE,
            f"the current version {i.current.version} is {shown} bits, not {SUPPORTED_KEY_SIZE}",
        )
    return None


def expiring(i: PolicyInput) -> PolicyHit | None:
    exp = i.current.expires_on
    if exp is not None and is_due(i.current, i.now, i.renewal):
        due = renewal_due_at(i.current, i.renewal)
        return (
            Reason.EXPIRING,
            f"the current version {i.current.version} expires at {_at(exp)}; renewal was due {_at(due)}",
        )
    return None


def lifetime_elapsed(i: PolicyInput) -> PolicyHit | None:
    if i.current.expires_on is None and is_due(i.current, i.now, i.renewal):
        due = renewal_due_at(i.current, i.renewal)
        return (
            Reason.LIFETIME_ELAPSED,
            f"the current version {i.current.version} has no expiry and was created {_at(i.current.created_on)}; "
            f"by the configured lifetime it was due {_at(due)}",
        )
    return None


POLICY_CHAIN: tuple[Policy, ...] = (
    forced,
    current_disabled,
    current_not_yet_valid,
    expired,
    current_wrong_type,
    current_wrong_size,
    expiring,
    lifetime_elapsed,
)


def needs_new_version(i: PolicyInput, chain: Iterable[Policy] = POLICY_CHAIN) -> PolicyHit | None:
    """The first policy hit in ``chain``, or None when the current version is fresh and usable."""
    for policy in chain:
        hit = policy(i)
        if hit is not None:
            return hit
    return None


def _at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
