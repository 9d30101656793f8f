"""The fleet's state, read-only: each target key's versions, each account's version and state, and the key's drift.

One builder serves ``GET /api/status`` and the CLI's ``status``. It works on what a dry run sees (an observation and
its plan), so "drift" and "due" mean exactly what the worker would act on; it never writes. With discovery on
(``ROTATION_DISCOVERY``), one discovery over every target key comes first, and each key's drift names the accounts on
it that ROTATION_TARGETS does not list; under ``ROTATION_UNMANAGED=enrol`` those are read and planned with the rest,
as the worker would.

Each target is read on its own (``observe``): a target that cannot be read (its vault unreachable, the identity
refused, or anything unexpected) is reported with its reason and error, and never hides the other targets' state.
A discovery that raises is reported the same way, and every key is still read.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from rotation.breakglass import BreakGlassPlan, Census, exposure
from rotation.config import Settings
from rotation.drift import Drift, drift_of, unmanaged_of
from rotation.engine import KEYS_AT_ONCE, RotationEngine, bounded_map
from rotation.errors import RotationError
from rotation.log import Event, emit
from rotation.model import (
    AccountEncryption,
    AccountRef,
    KeyRef,
    Observation,
    Retirement,
    RotationPlan,
    RotationRequest,
    Target,
    Trigger,
    UnmanagedPolicy,
    iso,
)
from rotation.plan import decide
from rotation.reasons import Reason
from rotation.retirement import review

if TYPE_CHECKING:
    from rotation.discovery import AccountDiscovery, Discovery
    from rotation.storage import VersionEvidence

MAX_UNEXPECTED_DETAIL = 200


@dataclass(frozen=True)
class TargetFailure:
    """A target whose key could not be read: its reason and its error, safe to show (no secret, no traceback)."""

    key: KeyRef
    reason: Reason
    error: str

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key.id, "reason": self.reason.value, "error": self.error}


def observe(
    engine: RotationEngine, request: RotationRequest, *, enrolled: Sequence[AccountRef] = ()
) -> Observation | TargetFailure:
    """``engine.gather(request)`` of every version, or why this one target could not be read: its ``RotationError``,
    or anything else it raised (a bug, or e.g. the ``ValueError`` an SDK raises for a host it refuses), reported as
    ``Error``."""
    try:
        return engine.gather(request, every_version=True, enrolled=enrolled)
    except RotationError as exc:
        return TargetFailure(request.key, exc.reason, str(exc))
    except Exception as exc:  # noqa: BLE001 - one target's surprise must not hide the other targets' state
        emit(
            Event.STATUS_FAILED,
            f"reading the key raised {type(exc).__name__}",
            key=request.key,
            level=logging.ERROR,
            exc_info=True,
        )
        return TargetFailure(request.key, Reason.ERROR, _unexpected(exc))


def _unexpected(exc: Exception) -> str:
    """An exception the service did not anticipate, shown safely: its class and the first line of its message, clipped
    (an SDK's message may echo its input, so no more of it)."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > MAX_UNEXPECTED_DETAIL:
        first = first[: MAX_UNEXPECTED_DETAIL - 1] + "…"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def discover_targets(discovery: AccountDiscovery | None, targets: Sequence[Target]) -> Discovery | RotationError | None:
    """One discovery of the accounts on every target key: None when discovery is off (or there is no target); the
    error, logged as ``rotation.discovery_failed`` and never raised, when it raised (a failure on one path, one
    subscription or one account is in the ``Discovery``, not here)."""
    if discovery is None or not targets:
        return None
    try:
        return discovery.discover(
            [t.key for t in targets], known_subscriptions={a.subscription_id for t in targets for a in t.accounts}
        )
    except RotationError as exc:
        emit(Event.DISCOVERY_FAILED, f"discovery failed: {exc}", reason=exc.reason, level=logging.ERROR)
        return exc
    except Exception as exc:  # noqa: BLE001 - a discovery's surprise must not hide the keys' own state
        emit(
            Event.DISCOVERY_FAILED,
            f"discovery raised {type(exc).__name__}",
            reason=Reason.ERROR,
            level=logging.ERROR,
            exc_info=True,
        )
        return RotationError(_unexpected(exc))


def unmanaged_on(found: Discovery | RotationError | None, target: Target) -> tuple[AccountEncryption, ...] | None:
    """The accounts ``found`` on ``target``'s key that it does not list; None when nothing was searched."""
    if found is None or isinstance(found, RotationError):
        return None
    return unmanaged_of(target, found.accounts.get(target.key, ()))


def searched_everywhere(found: Discovery | RotationError | None) -> bool:
    """The discovery searched everywhere it was asked to and nothing failed: no account on a key can be missing."""
    return found is not None and not isinstance(found, RotationError) and found.complete


def enrolled(settings: Settings, unmanaged: Sequence[AccountEncryption] | None) -> tuple[AccountRef, ...]:
    """The unmanaged accounts the service rotates too: all of them under ``ROTATION_UNMANAGED=enrol``, else none."""
    if settings.unmanaged is not UnmanagedPolicy.ENROL or not unmanaged:
        return ()
    return tuple(state.account for state in unmanaged)


def enrolments(
    settings: Settings, discovery: AccountDiscovery | None, targets: Sequence[Target]
) -> dict[KeyRef, tuple[AccountRef, ...]]:
    """Under ``ROTATION_UNMANAGED=enrol``, the accounts one discovery finds now on each target's key that it does not
    list (found afresh, never carried in a message: Azure's state decides), for the worker, the HTTP dry run and the
    CLI alike; nothing, and no discovery, otherwise."""
    if settings.unmanaged is not UnmanagedPolicy.ENROL:
        return {}
    found = discover_targets(discovery, targets)
    return {t.key: enrolled(settings, unmanaged_on(found, t)) for t in targets}


def census(discovery: AccountDiscovery | None, target: Target) -> Census:
    """A fresh discovery of the accounts on ``target``'s key, for break-glass; it searched nothing when discovery is
    off or failed (and is then incomplete)."""
    found = discover_targets(discovery, [target])
    if found is None:
        return Census((), False, "nothing: discovery is off (ROTATION_DISCOVERY=off)")
    if isinstance(found, RotationError):
        return Census((), False, f"nothing: discovery failed ({found})")
    return Census(found.accounts.get(target.key, ()), found.complete, found.summary(), tuple(found.account_failures))


def break_glass_plan(
    engine: RotationEngine, settings: Settings, discovery: AccountDiscovery | None, request: RotationRequest
) -> tuple[BreakGlassPlan, RotationPlan]:
    """What the break-glass ``request`` would do now (reads only), and its forced rotation's plan: the caller refuses a
    blocked one. ``UnknownVersion`` when the key has no such version; ``RotationError`` when the key cannot be read."""
    target = engine.target(request)
    found = census(discovery, target)
    obs = engine.gather(request, every_version=True, enrolled=enrolled(settings, unmanaged_of(target, found.accounts)))
    plan = engine.plan(obs)
    return exposure(obs, plan, found, unmanaged=settings.unmanaged), plan


def discovery_status(found: Discovery | RotationError | None) -> dict[str, object] | None:
    """How the status's unmanaged accounts were found: None when discovery is off."""
    if found is None:
        return None
    if isinstance(found, RotationError):
        return {"reason": found.reason.value, "error": str(found)}
    return found.to_dict()


def fleet_status(
    engine: RotationEngine,
    settings: Settings,
    discovery: AccountDiscovery | None,
    *,
    trigger: Trigger,
    evidence: VersionEvidence | None = None,
) -> dict[str, object]:
    """``GET /api/status`` and the CLI's ``status``: the discovery's summary and every target's ``target_status``,
    ``KEYS_AT_ONCE`` keys at a time. ``evidence``: retirement's, to say when each old version would be retired."""
    found = discover_targets(discovery, settings.targets)
    keys = bounded_map(
        lambda t: target_status(
            engine,
            settings,
            t,
            trigger=trigger,
            unmanaged=unmanaged_on(found, t),
            complete=searched_everywhere(found),
            evidence=evidence,
        ),
        settings.targets,
        workers=KEYS_AT_ONCE,
    )
    return {"discovery": discovery_status(found), "keys": keys}


def would_fail(report: Mapping[str, object]) -> bool:
    """A ``target_status`` whose key could not be read, or whose plan blocks the key or an account: reconciling it
    now would fail."""
    accounts = report["accounts"]
    assert isinstance(accounts, list)
    return "error" in report or bool(report.get("blocked")) or any(a["action"] == "blocked" for a in accounts)


def target_status(
    engine: RotationEngine,
    settings: Settings,
    target: Target,
    *,
    trigger: Trigger,
    unmanaged: Sequence[AccountEncryption] | None = None,
    complete: bool = False,
    evidence: VersionEvidence | None = None,
) -> dict[str, object]:
    """``key_status`` of one target read now, with its drift and, under ``ROTATION_RETIREMENT``, its retirement; a
    target that cannot be read is ``failed_status``, never raised. ``unmanaged``: discovery's accounts on the key that
    the target does not list (None: not searched); ``complete``: the discovery missed nothing."""
    request = RotationRequest(request_id=f"status-{uuid.uuid4()}", key=target.key, trigger=trigger)
    found = observe(engine, request, enrolled=enrolled(settings, unmanaged))
    if isinstance(found, TargetFailure):
        return failed_status(found)
    plan = decide(found, settings.renewal, app_name=settings.app_name)
    report = key_status(found, plan, drift_of(target, found, plan, unmanaged))
    if settings.retirement is not Retirement.OFF:
        report["retirement"] = retirement_status(settings, found, plan, unmanaged if complete else None, evidence)
    return report


def retirement_status(
    settings: Settings,
    obs: Observation,
    plan: RotationPlan,
    unmanaged: Sequence[AccountEncryption] | None,
    evidence: VersionEvidence | None,
) -> list[dict[str, object]] | dict[str, str]:
    """Each old version's retirement verdict (``rotation/retirement.py``), since when it has been unused (None
    without the app's storage, or before a sweep recorded it) and when the sweep would disable it; the error instead
    when the evidence cannot be read."""
    try:
        since = {} if evidence is None else evidence.unused_since(obs.target.key)
    except RotationError as exc:
        return {"reason": exc.reason.value, "error": str(exc)}
    return [
        {
            "version": r.version,
            "verdict": r.verdict.value,
            "why": r.why,
            "unused_since": iso(since.get(r.version)),
            "retire_at": iso(r.retire_at(since.get(r.version), settings.retire_after)),
        }
        for r in review(obs, plan, unmanaged, mode=settings.retirement, app_name=settings.app_name)
    ]


def failed_status(failure: TargetFailure) -> dict[str, object]:
    """The status of a target that could not be read: its reason and error, and no versions or accounts."""
    return {**failure.to_dict(), "versions": [], "accounts": [], "drift": None}


def key_status(obs: Observation, plan: RotationPlan, drift: Drift) -> dict[str, object]:
    """One key's status: its versions (newest first), its accounts against the target version, and its drift."""
    versions = [
        {
            "version": v.version,
            "enabled": v.enabled,
            "created": iso(v.created_on),
            "expires": iso(v.expires_on),
            "days_left": None if v.expires_on is None else (v.expires_on - obs.now).days,
            "kty": v.kty,
            "size": v.size,
        }
        for v in reversed(obs.versions)  # the engine lists them oldest first
    ]
    accounts = []
    for account_plan in plan.accounts:
        state = obs.accounts.get(account_plan.account)
        behind: bool | None = None
        if state is not None and (plan.create is not None or plan.target_version is not None):
            behind = plan.create is not None or state.key_version != plan.target_version
        accounts.append(
            {
                "account": account_plan.account.id,
                "key_version": state.key_version if state else None,
                "provisioning_state": state.provisioning_state if state else None,
                "drift": behind,
                "action": account_plan.action.value,
                "reason": account_plan.reason.value,
                "message": account_plan.message,
            }
        )
    return {
        "key": obs.target.key.id,
        "now": iso(obs.now),
        "reason": plan.reason.value,
        "message": plan.message,
        "current_version": plan.current_version,
        "target_version": plan.target_version,
        "new_version_due": plan.create is not None,
        "blocked": plan.blocked,
        "renews_at": iso(plan.renews_at),
        "days_until_renewal": _days(plan.renews_at, obs.now),
        "expires_on": iso(plan.expires_on),
        "days_until_expiry": _days(plan.expires_on, obs.now),
        "versions": versions,
        "accounts": accounts,
        "drift": drift.to_dict(),
    }


def _days(moment: datetime | None, now: datetime) -> int | None:
    """Whole days from ``now`` to ``moment`` (negative once it has passed), as a version's ``days_left`` counts."""
    return None if moment is None else (moment - now).days
