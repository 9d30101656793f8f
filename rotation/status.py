"""The fleet's state, read-only: each target key's versions and each account's version, state and drift.

One builder serves ``GET /api/status`` and the CLI's ``status``. It works on what a dry run sees (an observation and
its plan), so "drift" and "due" mean exactly what the worker would act on; it never writes.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from rotation.config import Settings
from rotation.engine import RotationEngine
from rotation.errors import RotationError
from rotation.model import Observation, RotationPlan, RotationRequest, Target, Trigger
from rotation.plan import decide


def target_status(engine: RotationEngine, settings: Settings, target: Target, *, trigger: Trigger) -> dict[str, object]:
    """``key_status`` of one target read now; a key that cannot be read is reported with its error, not raised."""
    request = RotationRequest(request_id=f"status-{uuid.uuid4()}", key=target.key, trigger=trigger)
    try:
        observation = engine.gather(request)
    except RotationError as exc:
        return {"key": target.key.id, "reason": exc.reason.value, "error": str(exc), "versions": [], "accounts": []}
    return key_status(observation, decide(observation, settings.renewal, app_name=settings.app_name))


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
        "versions": versions,
        "accounts": accounts,
    }


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
