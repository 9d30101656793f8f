"""Break-glass for a compromised key version: who is on it, who may be moved, and whether it may be disabled. Pure.

When a version is believed compromised, every account must leave it now, and then it must be made unusable, without
taking down an account that still needs it. It takes two calls, so that nobody disables a version by accident:

    plan   ``exposure``: every account on the version (listed, enrolled, or found by discovery and not the service's
           to move), each with whether the service may move it, and what will become of the version. The plan's
           ``token`` confirms it.
    act    a rotation that moves every account the service may touch to a new version (or to the target,
           when that is newer than the compromised one), all at once: a rollout's waves are not waited for. Then
           ``blast_radius`` on a fresh discovery: the accounts moved, the accounts still on the version (or that
           may be: an account no one could read), and so whether it may be disabled: only when none is left and the
           discovery searched everywhere, or when the operator accepted the breakage.

The service never writes outside its mandate, even here: an account that ROTATION_TARGETS does not list is moved only
under ``ROTATION_UNMANAGED=enrol``; otherwise it is named, and it keeps the version enabled.

The confirmation token is not a credential (the caller already holds the role to rotate): it shows the caller saw
this plan, unchanged, within ``CONFIRM_WITHIN``. It is the time it was issued and a SHA-256 of that time and of what
the plan found (the key, the version and its state, where the accounts move to, each account on it and whether it can
be moved, the discovery's completeness, ``accept_breakage``). Nothing is stored between the two calls; a token for a
plan that has changed since (an account moved onto the version, a discovery that failed) or an older one is refused,
with the fresh plan.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rotation.errors import InvalidInput, RotationError
from rotation.model import (
    AccountAction,
    AccountEncryption,
    AccountRef,
    AccountResult,
    KeyRef,
    Observation,
    RotationPlan,
    Status,
    UnmanagedPolicy,
    iso,
)
from rotation.reasons import Reason

CONFIRM_WITHIN = timedelta(minutes=5)
TOKEN_PATTERN = re.compile(r"^([0-9]{10})\.([0-9a-f]{40})$")
NOT_OURS = (
    "ROTATION_TARGETS does not list it and ROTATION_UNMANAGED is report: the service may not repoint it (its owner "
    "must, or add it to the key's accounts)"
)


class UnknownVersion(InvalidInput):
    """The compromised version is not a version of the key."""


@dataclass(frozen=True)
class Census:
    """The accounts a discovery found on one key, in ARM's state, and whether it searched everywhere it was asked to
    (``complete``); ``searched`` says what it searched, or why it searched nothing. ``unreadable`` are accounts it
    named on some key but could not read: any of them may be on the version."""

    accounts: tuple[AccountEncryption, ...]
    complete: bool
    searched: str
    unreadable: tuple[AccountRef, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"complete": self.complete, "searched": self.searched}


@dataclass(frozen=True)
class Exposed:
    """An account on the compromised version (or that may be on it), whether the service may move it, and why."""

    account: AccountRef
    movable: bool
    why: str

    def to_dict(self) -> dict[str, object]:
        return {"account": self.account.id, "movable": self.movable, "why": self.why}


@dataclass(frozen=True)
class BreakGlassPlan:
    """The first call's answer: what a break-glass request would do now."""

    key: KeyRef
    version: str
    enabled: bool  # the version's state now
    accounts: tuple[Exposed, ...]  # every account on it, in the target's order, then the discovered ones
    census: Census
    accept_breakage: bool
    moves_to: str | None = None  # the version the accounts move to; None: a new one, created at once

    @property
    def stranded(self) -> tuple[Exposed, ...]:
        """The accounts on the version that the service may not (or cannot) move."""
        return tuple(e for e in self.accounts if not e.movable)

    @property
    def disables(self) -> bool:
        """Whether the version would be disabled once the movable accounts have left it."""
        return self.accept_breakage or (self.census.complete and not self.stranded)

    def outlook(self) -> str:
        """What will become of the version, in one sentence (the accounts are listed beside it)."""
        if not self.stranded and self.census.complete:
            return "disabled once every account on it has moved"
        why = _keeps(self.stranded, self.census, on="on it that the service may not move")
        if self.accept_breakage:
            return f"disabled once the movable accounts have moved, although {why}: those lose access to their data"
        return f"left enabled: {why}. Move them (or accept the breakage), then break glass again to disable it"

    def token(self, at: datetime) -> str:
        """The confirmation of this plan, issued at ``at``."""
        issued = int(at.timestamp())
        return f"{issued:010d}.{self._digest(issued)}"

    def refusal(self, token: str, now: datetime) -> str | None:
        """Why ``token`` does not confirm this plan at ``now``, or None when it does."""
        match = TOKEN_PATTERN.fullmatch(token)
        if match is None:
            return "the confirmation is not a token this service issued; ask for the plan again (a call without one)"
        issued = int(match.group(1))
        age = now - datetime.fromtimestamp(issued, UTC)
        if match.group(2) != self._digest(issued):
            return (
                "the plan has changed since the confirmation was issued (or it was issued for another key, version or "
                "accept_breakage): review the plan in this answer and confirm it with its token"
            )
        if not timedelta(seconds=-60) <= age <= CONFIRM_WITHIN:
            return (
                f"the confirmation was issued at {iso(datetime.fromtimestamp(issued, UTC))} and is valid for "
                f"{CONFIRM_WITHIN}; review the plan in this answer and confirm it with its token"
            )
        return None

    def _digest(self, issued: int) -> str:
        facts = [
            issued,
            self.key.folded_id,
            self.version.lower(),
            self.enabled,
            sorted([e.account.id.lower(), e.movable] for e in self.accounts),
            self.census.complete,
            self.accept_breakage,
            self.moves_to,
        ]
        return hashlib.sha256(json.dumps(facts, separators=(",", ":")).encode()).hexdigest()[:40]

    def to_dict(self, *, at: datetime | None = None) -> dict[str, object]:
        """The plan as ``POST /api/rotations`` answers it, with its token issued at ``at`` (none without)."""
        plan: dict[str, object] = {
            "key": self.key.id,
            "compromised_version": self.version,
            "version_enabled": self.enabled,
            "moves_to": self.moves_to or "a new version",
            "accounts": [e.to_dict() for e in self.accounts],
            "discovery": self.census.to_dict(),
            "accept_breakage": self.accept_breakage,
            "version_outlook": self.outlook(),
        }
        if at is not None:
            plan.update(confirmation=self.token(at), confirm_by=iso(at + CONFIRM_WITHIN))
        return plan


def exposure(obs: Observation, plan: RotationPlan, census: Census, *, unmanaged: UnmanagedPolicy) -> BreakGlassPlan:
    """The break-glass plan of ``obs.request`` from its forced plan (``plan``: every account the service rotates, each
    to be repointed or blocked) and the discovery's ``census`` of the key. ``UnknownVersion`` when the compromised
    version is not one of the key's."""
    request = obs.request
    version = (request.compromised_version or "").lower()
    found = next((v for v in obs.versions if v.version.lower() == version), None)
    if found is None:
        raise UnknownVersion(
            f"key {request.key.id} has no version {request.compromised_version}; name one of its versions "
            "(az keyvault key list-versions)"
        )
    accounts: list[Exposed] = []
    for planned in plan.accounts:
        state = obs.accounts.get(planned.account)
        if state is None:
            unread = f"could not be read, so it may be on the version ({obs.unreadable.get(planned.account)})"
            accounts.append(Exposed(planned.account, False, unread))
        elif (state.key_version or "").lower() == version and state.uses(request.key):
            movable = planned.action is AccountAction.REPOINT
            why = f"moves to {'a new version' if plan.create else plan.target_version}" if movable else planned.message
            accounts.append(Exposed(planned.account, movable, why))
    accounts += _found_beyond({p.account for p in plan.accounts}, version, census, unmanaged)
    moves_to = None if plan.create else plan.target_version
    return BreakGlassPlan(
        request.key, found.version, found.enabled, tuple(accounts), census, request.accept_breakage, moves_to
    )


@dataclass(frozen=True)
class BlastRadius:
    """A break-glass request's report: the accounts it moved off the version, those still on it (or that may be),
    and the version's final state. ``failure`` is why disabling it failed."""

    version: str
    moved: tuple[AccountRef, ...]
    left: tuple[Exposed, ...]
    census: Census
    accept_breakage: bool
    disabled: bool = False
    failure: RotationError | None = None

    @property
    def disables(self) -> bool:
        """Whether the version may be disabled: no account is left on it and the discovery searched everywhere, or the
        operator accepted the breakage."""
        return self.accept_breakage or (self.census.complete and not self.left)

    def summary(self) -> str:
        moved = f"{_accounts(len(self.moved))} moved off version {self.version}"
        if self.disabled:
            if not self.left:
                return f"{moved}; the version is disabled"
            return f"{moved}; the version is disabled. The breakage was accepted: {_named(self.left)} lose access"
        if self.failure is not None:
            return f"{moved}; disabling the version failed, so it is still enabled: {self._failed()}"
        return f"{moved}; the version stays enabled: {_keeps(self.left, self.census)}"

    def to_dict(self) -> dict[str, object]:
        return {
            "compromised_version": self.version,
            "version_state": "disabled" if self.disabled else "enabled",
            "accept_breakage": self.accept_breakage,
            "moved": [a.id for a in self.moved],
            "left": [e.to_dict() for e in self.left],
            "discovery": self.census.to_dict(),
            "error": None if self.failure is None else self._failed(),
        }

    def _failed(self) -> str:
        return f"{self.failure.reason}: {self.failure}" if self.failure else ""


def blast_radius(
    version: str,
    results: Sequence[AccountResult],
    census: Census,
    *,
    accept_breakage: bool,
    unmanaged: UnmanagedPolicy,
) -> BlastRadius:
    """Who a break-glass rotation moved off ``version`` and who is still on it: an account it rotated counts by its
    verified result (Resource Graph may lag behind a move), any other by the discovery's ``census`` taken after it."""
    version = version.lower()
    moved, left = [], []
    for r in results:
        on = (r.from_version or "").lower() == version
        unread = r.reason is Reason.ACCOUNT_UNREADABLE
        if on and r.status is Status.SUCCEEDED:
            moved.append(r.account)
        elif r.status is not Status.SUCCEEDED and (on or unread):
            where = "may be on the version (it could not be read)" if unread else "is still on it"
            left.append(Exposed(r.account, True, f"{where}: {r.status.value} ({r.reason.value}): {r.error or ''}"))
    left += _found_beyond({r.account for r in results}, version, census, unmanaged)
    return BlastRadius(version, tuple(moved), tuple(left), census, accept_breakage)


def _found_beyond(rotated: set[AccountRef], version: str, census: Census, unmanaged: UnmanagedPolicy) -> list[Exposed]:
    """The accounts the discovery found on ``version`` (or could not read) that the request does not rotate."""
    why = NOT_OURS if unmanaged is UnmanagedPolicy.REPORT else "discovered after the rotation began; not moved yet"
    ours = {a.id.lower() for a in rotated}  # ARM compares ids without case, and so does every list of accounts here
    found = [
        Exposed(s.account, False, why)
        for s in census.accounts
        if s.account.id.lower() not in ours and (s.key_version or "").lower() == version
    ]
    unread = "discovery could not read it, so it may be on the version"
    return found + [Exposed(a, False, unread) for a in census.unreadable if a.id.lower() not in ours]


def _keeps(left: Sequence[Exposed], census: Census, *, on: str | None = None) -> str:
    """Why the version cannot simply be disabled: the accounts ``left`` on it, each named (or, with ``on``, only
    counted: the plan lists them beside it), and a discovery that did not search everywhere."""
    count = f"{_accounts(len(left))} {'is' if len(left) == 1 else 'are'} {on or 'still on it'}"
    reasons = [count if on else f"{count}: {_named(left)}"] if left else []
    if not census.complete:
        reasons.append(f"the discovery did not search everywhere, so another account may be on it ({census.searched})")
    return "; and ".join(reasons)


def _accounts(count: int) -> str:
    return f"{count} account{'' if count == 1 else 's'}"


def _named(accounts: Sequence[Exposed]) -> str:
    return "; ".join(f"{e.account.id} ({e.why})" for e in accounts)
