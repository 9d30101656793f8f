"""Evidence-gated retirement (DESIGN §7.5): which old versions of a target key the sweep may disable, and when.

::

    each enabled version of the key, on every sweep (with ROTATION_RETIREMENT own or all)
    │
    ├── the target, newer than it, or the key is rotating (a version is to be created)   KEPT
    ├── another app's (ROTATION_RETIREMENT=own: no rotation-app tag with ROTATION_APP_NAME)  KEPT
    ├── a listed account, or one discovery found, points at it                             IN_USE   (evidence reset)
    ├── discovery is off or failed, or an account could not be read                        UNKNOWN  (evidence kept)
    └── otherwise                                                                         UNUSED   (evidence: since)
                                                   │
                    unused since at least ROTATION_RETIRE_AFTER (the ledger's evidence) ──► disabled

A version is never deleted or purged, and never disabled on a guess: UNUSED needs every listed account read and a
discovery that searched everywhere it was asked to without a failure. The evidence is the first sweep that found the
version unused, kept until a sweep finds an account on it. Pure: the sweep (``rotation/app.py``) reads the evidence
and acts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotation.model import TAG_APP, AccountEncryption, Observation, Retirement, RotationPlan


class Verdict(StrEnum):
    UNUSED = "unused"  # retirable once unused for the soak
    IN_USE = "in_use"  # an account points at it: the evidence starts again
    UNKNOWN = "unknown"  # nobody can tell this sweep: the evidence stands
    KEPT = "kept"  # never retired: the target, newer, another app's, or the key is rotating


@dataclass(frozen=True)
class Review:
    """One version's verdict, and why in words."""

    version: str
    verdict: Verdict
    why: str

    def retire_at(self, unused_since: datetime | None, soak: timedelta) -> datetime | None:
        """When an UNUSED version may be disabled, given the evidence (None: not yet recorded, now is its start)."""
        if self.verdict is not Verdict.UNUSED:
            return None
        return None if unused_since is None else unused_since + soak


def review(
    obs: Observation,
    plan: RotationPlan,
    unmanaged: Sequence[AccountEncryption] | None,
    *,
    mode: Retirement,
    app_name: str,
) -> list[Review]:
    """Every enabled version of the key but the target, newest first, with its verdict. ``unmanaged`` is discovery's
    accounts on the key that the target does not list, None when discovery is off or did not search everywhere."""
    target = next((v for v in obs.versions if v.version == plan.target_version), None)
    in_use: dict[str, int] = {}
    states = {**{s.account: s for s in unmanaged or ()}, **obs.accounts}  # an enrolled account's newest state
    for state in states.values():
        if state.uses(obs.target.key) and state.key_version:
            in_use[state.key_version] = in_use.get(state.key_version, 0) + 1
    blind = None
    if unmanaged is None:
        blind = "discovery is off or did not search everywhere, so an account outside the targets could use it"
    elif obs.unreadable:
        blind = f"{len(obs.unreadable)} listed accounts could not be read"
    found = []
    for version in sorted(obs.versions, key=lambda v: v.created_on or datetime.min, reverse=True):
        if not version.enabled or version is target:
            continue
        if target is None or plan.create is not None:
            verdict, why = Verdict.KEPT, "the key is rotating: versions are retired only next to a settled target"
        elif version.created_on is None or target.created_on is None or version.created_on >= target.created_on:
            verdict, why = Verdict.KEPT, f"not older than the target {target.version}"
        elif mode is Retirement.OWN and version.tags.get(TAG_APP) != app_name:
            verdict, why = Verdict.KEPT, f"not created by {app_name} (ROTATION_RETIREMENT=own)"
        elif version.version in in_use:
            verdict, why = Verdict.IN_USE, f"{in_use[version.version]} accounts use it"
        elif blind is not None:
            verdict, why = Verdict.UNKNOWN, blind
        else:
            verdict, why = Verdict.UNUSED, "no account uses it"
        found.append(Review(version.version, verdict, why))
    return found
