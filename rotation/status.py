"""The fleet's state, read-only: each target key's versions and each account's version, state and drift.

One builder serves ``GET /api/status`` and the CLI's ``status``. It gathers and decides like a dry run, so "drift" and
"due" mean exactly what the worker would act on; it never writes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from rotation.config import Settings
from rotation.engine import RotationEngine
from rotation.errors import RotationError
from rotation.model import AccountAction, RotationRequest, Target, Trigger, recency
from rotation.plan import decide


def key_status(engine: RotationEngine, settings: Settings, target: Target, *, trigger: Trigger) -> dict[str, Any]:
    """A JSON-ready view of one target. A key that cannot be read is reported with its error, not raised."""
    request = RotationRequest(request_id=f"status-{uuid.uuid4()}", key=target.key, trigger=trigger)
    try:
        observation = engine.gather(request)
    except RotationError as exc:
        return {"key": target.key.id, "reason": exc.reason.value, "error": str(exc), "versions": [], "accounts": []}
    plan = decide(observation, settings.renewal, app_name=settings.app_name)
    now = observation.now
    actions = {a.account: a for a in plan.accounts}
    accounts = []
    for ref in target.accounts:
        state = observation.accounts.get(ref)
        action = actions.get(ref)
        accounts.append(
            {
                "account": ref.id,
                "key_version": state.key_version if state else None,
                "provisioning_state": state.provisioning_state if state else None,
                "action": action.action.value if action else None,
                "reason": action.reason.value if action else None,
                "drift": action is not None and action.action in (AccountAction.REPOINT, AccountAction.WAIT),
            }
        )
    return {
        "key": target.key.id,
        "current_version": plan.current_version,
        "target_version": plan.target_version,
        "due": plan.create is not None,
        "blocked": plan.blocked,
        "reason": plan.reason.value,
        "message": plan.message,
        "versions": [
            {
                "version": v.version,
                "enabled": v.enabled,
                "created_on": v.created_on.isoformat(),
                "expires_on": v.expires_on.isoformat() if v.expires_on else None,
                "days_left": _days_left(v.expires_on, now),
            }
            for v in sorted(observation.versions, key=recency, reverse=True)
        ],
        "accounts": accounts,
        "findings": [f.to_dict() for f in plan.findings],
    }


def _days_left(expires_on: datetime | None, now: datetime) -> int | None:
    return None if expires_on is None else (expires_on - now).days
