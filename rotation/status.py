"""The fleet's state, read-only: each target key's versions and each account's version, state and drift.

One builder serves ``GET /api/status`` and the CLI's ``status``. It works on what a dry run sees (an observation and
its plan), so "drift" and "due" mean exactly what the worker would act on; it never writes.

Each target is read on its own (``observe``): a target that cannot be read (its vault unreachable, the identity
refused, or anything unexpected) is reported with its reason and error, and never hides the other targets' state.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from rotation.config import Settings
from rotation.engine import RotationEngine
from rotation.errors import RotationError
from rotation.log import Event, emit
from rotation.model import KeyRef, Observation, RotationPlan, RotationRequest, Target, Trigger
from rotation.plan import decide
from rotation.reasons import Reason

MAX_UNEXPECTED_DETAIL = 200


@dataclass(frozen=True)
class TargetFailure:
    """A target whose key could not be read: its reason and its error, safe to show (no secret, no traceback)."""

    key: KeyRef
    reason: Reason
    error: str

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key.id, "reason": self.reason.value, "error": self.error}


def observe(engine: RotationEngine, request: RotationRequest) -> Observation | TargetFailure:
    """``engine.gather(request)``, or why this one target could not be read: its ``RotationError``, or anything else
    it raised (a bug, or e.g. the ``ValueError`` an SDK raises for a host it refuses), reported as ``Error``."""
    try:
        return engine.gather(request, every_version=True)
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


def target_status(engine: RotationEngine, settings: Settings, target: Target, *, trigger: Trigger) -> dict[str, object]:
    """``key_status`` of one target read now; a target that cannot be read is ``failed_status``, never raised."""
    found = observe(engine, RotationRequest(request_id=f"status-{uuid.uuid4()}", key=target.key, trigger=trigger))
    if isinstance(found, TargetFailure):
        return failed_status(found)
    return key_status(found, decide(found, settings.renewal, app_name=settings.app_name))


def failed_status(failure: TargetFailure) -> dict[str, object]:
    """The status of a target that could not be read: its reason and error, and no versions or accounts."""
    return {**failure.to_dict(), "versions": [], "accounts": []}


def key_status(obs: Observation, plan: RotationPlan) -> dict[str, object]:
    """One key's status: its versions (newest first) and its accounts against the target version."""
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
        drift: bool | None = None
        if state is not None and (plan.create is not None or plan.target_version is not None):
            drift = plan.create is not None or state.key_version != plan.target_version
        accounts.append(
            {
                "account": account_plan.account.id,
                "key_version": state.key_version if state else None,
                "provisioning_state": state.provisioning_state if state else None,
                "drift": drift,
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
        "renews_at": iso(plan.renews_at),
        "days_until_renewal": _days(plan.renews_at, obs.now),
        "expires_on": iso(plan.expires_on),
        "days_until_expiry": _days(plan.expires_on, obs.now),
        "versions": versions,
        "accounts": accounts,
    }


def _days(moment: datetime | None, now: datetime) -> int | None:
    """Whole days from ``now`` to ``moment`` (negative once it has passed), as a version's ``days_left`` counts."""
    return None if moment is None else (moment - now).days


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
