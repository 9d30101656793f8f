"""Drift (DESIGN §7.3): how a target key's accounts, listed or found, differ from what the service keeps them on.

::

    unmanaged    on the key (discovery found it, ARM confirmed it) but not listed in ROTATION_TARGETS
    left         listed, but ARM says it no longer uses the key (another key, or Microsoft-managed keys)
    off_target   on the key, listed or not, on a version other than the target

An unmanaged or off-target account is reported with its version and that version's days to expiry: an unmanaged
account the service does not rotate loses access to its data when its version expires, whichever version it is.

The target is the version the plan repoints to, or, while a new one is still to be created (or none may be), the
key's current version. Pure: it reads a gather's observation, its plan and a discovery's accounts, and decides
nothing; the sweep and the status report it, and ``ROTATION_UNMANAGED`` says whether unmanaged accounts are also
rotated (``enrolled``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rotation.model import AccountEncryption, AccountRef, KeyRef, Observation, RotationPlan, Target, iso


class DriftKind(StrEnum):
    UNMANAGED = "unmanaged"
    LEFT = "left"
    OFF_TARGET = "off_target"


@dataclass(frozen=True)
class OnVersion:
    """An account on the key: the version it uses, and when that one expires."""

    account: AccountRef
    key_version: str | None
    managed: bool  # listed in ROTATION_TARGETS (the service repoints it) or not
    expires_on: datetime | None  # None: the version has no expiry, or it is not among the key's versions
    days_until_expiry: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "account": self.account.id,
            "key_version": self.key_version,
            "managed": self.managed,
            "expires_on": iso(self.expires_on),
            "days_until_expiry": self.days_until_expiry,
        }


@dataclass(frozen=True)
class Drift:
    """One key's drift. ``unmanaged`` is None when nobody searched for such accounts (discovery is off)."""

    key: KeyRef
    target_version: str | None
    unmanaged: tuple[OnVersion, ...] | None
    left: tuple[AccountRef, ...]
    off_target: tuple[OnVersion, ...]

    def counts(self) -> dict[DriftKind, int]:
        """Accounts of each kind; unmanaged only when it was searched for."""
        counts = {DriftKind.LEFT: len(self.left), DriftKind.OFF_TARGET: len(self.off_target)}
        return counts if self.unmanaged is None else {DriftKind.UNMANAGED: len(self.unmanaged), **counts}

    @property
    def found(self) -> bool:
        return any(self.counts().values())

    def expiring(self, within_days: int) -> tuple[OnVersion, ...]:
        """The unmanaged accounts whose version expires within ``within_days`` (or has expired)."""
        return tuple(
            a for a in self.unmanaged or () if a.days_until_expiry is not None and a.days_until_expiry < within_days
        )

    def summary(self) -> str:
        """One line naming every drifting account: what an operator reads in the log."""
        parts = []
        if self.unmanaged:
            parts.append(f"not in ROTATION_TARGETS: {_described(self.unmanaged)}")
        if self.left:
            parts.append("listed but no longer on the key: " + ", ".join(a.id for a in self.left))
        behind = [a for a in self.off_target if a.managed]  # the unmanaged ones are named above, with their version
        if behind:
            parts.append(f"not on the target version {self.target_version or '(none)'}: {_described(behind)}")
        return "; ".join(parts) if parts else "no drift"

    def to_dict(self) -> dict[str, object]:
        return {
            "target_version": self.target_version,
            "unmanaged": None if self.unmanaged is None else [a.to_dict() for a in self.unmanaged],
            "left": [a.id for a in self.left],
            "off_target": [a.to_dict() for a in self.off_target],
        }


def unmanaged_of(target: Target, discovered: Iterable[AccountEncryption]) -> tuple[AccountEncryption, ...]:
    """The discovered accounts on ``target``'s key that its configuration does not list (ids compared without case,
    as ARM compares them)."""
    listed = {account.id.lower() for account in target.accounts}
    return tuple(s for s in discovered if s.uses(target.key) and s.account.id.lower() not in listed)


def drift_of(
    target: Target, obs: Observation, plan: RotationPlan, unmanaged: Sequence[AccountEncryption] | None
) -> Drift:
    """``target``'s drift (``target`` as configured: the observation may hold enrolled accounts too). ``unmanaged``
    is ``unmanaged_of``'s answer, None when discovery is off. A listed account that could not be read is none of
    these: its failure is reported on its own."""
    reference = plan.target_version or (obs.current.version if obs.current else None)
    expiries = {v.version: v.expires_on for v in obs.versions}

    def on_version(state: AccountEncryption, *, managed: bool) -> OnVersion:
        expires_on = expiries.get(state.key_version) if state.key_version else None
        days = None if expires_on is None else (expires_on - obs.now).days
        return OnVersion(state.account, state.key_version, managed, expires_on, days)

    states = [obs.accounts[a] for a in target.accounts if a in obs.accounts]
    listed = [on_version(state, managed=True) for state in states if state.uses(target.key)]
    found: list[OnVersion] | None = None
    if unmanaged is not None:  # an enrolled account's state is the observation's, which is newer
        newest = [obs.accounts.get(state.account, state) for state in unmanaged]
        found = [on_version(state, managed=False) for state in newest if state.uses(target.key)]
    return Drift(
        key=target.key,
        target_version=reference,
        unmanaged=None if found is None else tuple(found),
        left=tuple(state.account for state in states if not state.uses(target.key)),
        # Without any version (the key does not exist) there is nothing to be off.
        off_target=tuple(a for a in listed + (found or []) if reference is not None and a.key_version != reference),
    )


def _described(accounts: Iterable[OnVersion]) -> str:
    return ", ".join(f"{a.account.id} ({_on(a)})" for a in accounts)


def _on(account: OnVersion) -> str:
    version = account.key_version or "no version"
    days = account.days_until_expiry
    if days is None:
        return f"on {version}"
    return f"on {version}, which " + (f"expires in {days} days" if days >= 0 else f"expired {-days} days ago")
