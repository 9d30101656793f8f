"""Staged rollout (DESIGN §7.4): which wave each of a target's accounts is in.

::

    wave 1        the canary: the target's ``rollout.canary`` accounts, or its first listed account
    wave 2, 3 …   the other accounts in their listed order, ``rollout.wave_size`` at a time; enrolled accounts
                  (discovered, not listed) come after the listed ones

Without a rollout every account is in wave 1, at once. The engine converges one wave at a time and halts at the first
wave with a failed account, so the waves after it are not touched. Nothing here remembers a position: a resumed
rollout finds each converged wave's accounts already on the target (nothing to do) and carries on at the first wave
that is not, so it never repeats one. Pure: no I/O.
"""

from __future__ import annotations

from rotation.model import AccountRef, Target


def waves_of(target: Target) -> dict[AccountRef, int]:
    """The wave (1 = the canary) of each of the target's accounts (enrolled ones follow the listed ones in it)."""
    if target.rollout is None:
        return dict.fromkeys(target.accounts, 1)
    canary = set(target.rollout.canary or target.accounts[:1])
    rest = [a for a in target.accounts if a not in canary]
    size = target.rollout.wave_size
    return {**{a: 1 for a in target.accounts if a in canary}, **{a: 2 + i // size for i, a in enumerate(rest)}}
