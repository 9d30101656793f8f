"""``decide``: the pure step from an ``Observation`` to a ``RotationPlan``.

::

    preflight ── key blocked? ──────────────► plan: nothing to do but report the blocker
        │ no
    adopt a fresh version tagged with this request id (an earlier attempt created it)?
        │ no
    policy chain ── hit? ── trigger is KeyNewVersionCreated, or the key's versions come from Key Vault's policy?
        │                          │ yes: never create (our own echo, or not ours to make)
        │                          │ no
        │                          └──► create a version (RSA 2048, kty of the newest good version, provenance tags)
    target = the version to be created, or the newest usable, not-due version (for a key whose versions come from
             Key Vault's policy: the newest usable version, due or not; when it is due is the vault's business)
        │
    per target account: blocked (preflight) | repoint | wait (has the target, not Succeeded) | leave,
                        and its wave of the target's rollout (rotation/rollout.py)

Accounts are planned only from the target's own list, and only an account that already uses this key in this vault
can be repointed or waited for. The chain's first policy, ``forced``, hits for ``force=true`` and for a break-glass
request whose compromised version would otherwise be the target (``_forced``). This module must never read the clock
or do I/O: ``now`` comes from the observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rotation.model import (
    PROVISIONING_SUCCEEDED,
    TAG_APP,
    TAG_REASON,
    TAG_REQUEST_ID,
    TAG_TRIGGER,
    AccountAction,
    AccountPlan,
    AccountRef,
    Finding,
    KeyVersion,
    Observation,
    RenewalPolicy,
    RotationPlan,
    RotationRequest,
    Severity,
    Target,
    Trigger,
    VersionSource,
    VersionSpec,
    recency,
)
from rotation.policies import (
    PolicyInput,
    has_supported_shape,
    is_due,
    is_usable,
    needs_new_version,
    renewal_due_at,
    select_target,
)
from rotation.preflight import preflight
from rotation.reasons import Reason
from rotation.rollout import waves_of

DEFAULT_KEY_OPS = ("wrapKey", "unwrapKey")


def decide(obs: Observation, renewal: RenewalPolicy, *, app_name: str) -> RotationPlan:
    """Plan what to do for ``obs.request`` on the snapshot ``obs``; no side effects."""
    request = obs.request
    findings = preflight(obs)
    current = obs.current
    current_version = current.version if current else None
    renews_at = renewal_due_at(current, renewal) if current else None
    expires_on = current.expires_on if current else None
    key_blocker = next((f for f in findings if f.severity is Severity.BLOCK and f.account is None), None)
    if key_blocker is not None or current is None:
        reason = key_blocker.reason if key_blocker else Reason.KEY_NOT_FOUND
        message = key_blocker.message if key_blocker else f"key {request.key.id} has no versions"
        accounts = tuple(
            AccountPlan(a, AccountAction.LEAVE, reason, "the key is blocked; nothing is changed", _version_of(obs, a))
            for a in obs.target.accounts
        )
        return RotationPlan(
            request, reason, message, findings, current_version, None, None, False, accounts, renews_at, expires_on
        )

    adopted = _adoptable(obs, renewal)
    hit = None if adopted else needs_new_version(PolicyInput(current, obs.now, renewal, _forced(obs, renewal)))
    create = None
    if hit is not None and may_create(request, obs.target):
        create = _version_spec(obs, renewal, hit[0], app_name)
    if create is not None:
        target = None
    elif obs.target.new_versions is VersionSource.KEY_VAULT:
        target = max((v for v in obs.versions if is_usable(v, obs.now)), key=recency, default=None)
    else:
        target = select_target(obs.versions, obs.now, renewal)
    target_version = target.version if target else None

    waves = waves_of(obs.target)
    accounts = tuple(
        replace(_plan_account(obs, a, findings, target_version, create is not None), wave=waves[a])
        for a in obs.target.accounts
    )
    reason, message = _summary(obs, hit, create, adopted, target_version, accounts)
    return RotationPlan(
        request=request,
        reason=reason,
        message=message,
        findings=findings,
        current_version=current_version,
        target_version=target_version,
        create=create,
        adopted=adopted is not None,
        accounts=accounts,
        renews_at=renews_at,
        expires_on=expires_on,
    )


def _forced(obs: Observation, renewal: RenewalPolicy) -> bool:
    """Whether the request forces a new version. A break-glass request does so only when the accounts would otherwise
    converge on the compromised version (or on none): when a newer version is the target, they move to it."""
    request = obs.request
    if request.compromised_version is None:
        return request.force
    target = select_target(obs.versions, obs.now, renewal)
    return target is None or target.version.lower() == request.compromised_version.lower()


def may_create(request: RotationRequest, target: Target) -> bool:
    """Our own ``KeyNewVersionCreated`` echo never creates; nor does anything for a key whose policy makes versions."""
    return request.trigger is not Trigger.KEY_NEW_VERSION_CREATED and target.new_versions is VersionSource.SERVICE


def _adoptable(obs: Observation, renewal: RenewalPolicy) -> KeyVersion | None:
    """The newest usable, not-due version that carries this request's id: created by an earlier attempt."""
    mine = [
        v
        for v in obs.versions
        if v.tags.get(TAG_REQUEST_ID) == obs.request.request_id
        and is_usable(v, obs.now)
        and not is_due(v, obs.now, renewal)
    ]
    return max(mine, key=recency, default=None)


def _version_spec(obs: Observation, renewal: RenewalPolicy, reason: Reason, app_name: str) -> VersionSpec:
    """RSA 2048 like the newest enabled good version (same kty and key_ops), expiring after the key lifetime."""
    good = [v for v in obs.versions if v.enabled and has_supported_shape(v)]
    reference = max(good, key=recency)
    return VersionSpec(
        kty=reference.kty or "RSA",
        key_ops=reference.key_ops or DEFAULT_KEY_OPS,
        expires_on=obs.now + renewal.key_lifetime,
        tags={
            TAG_REQUEST_ID: obs.request.request_id,
            TAG_TRIGGER: obs.request.trigger.value,
            TAG_APP: app_name,
            TAG_REASON: reason.value,
        },
    )


def _version_of(obs: Observation, account: AccountRef) -> str | None:
    state = obs.accounts.get(account)
    return state.key_version if state else None


# An account whose last update ended like this keeps its keyVersion but never turns Succeeded by waiting.
TERMINAL_FAILURE_STATES = frozenset({"Failed", "Canceled"})


def _plan_account(
    obs: Observation,
    account: AccountRef,
    findings: Sequence[Finding],
    target_version: str | None,
    creating: bool,
) -> AccountPlan:
    state = obs.accounts.get(account)
    from_version = state.key_version if state else None
    blocker = next((f for f in findings if f.account == account and f.severity is Severity.BLOCK), None)
    if blocker is not None or state is None:
        reason = blocker.reason if blocker else Reason.ACCOUNT_UNREADABLE
        message = blocker.message if blocker else f"account {account.id} was not read"
        return AccountPlan(account, AccountAction.BLOCKED, reason, message, from_version)
    if creating:
        return AccountPlan(
            account, AccountAction.REPOINT, Reason.ACCOUNT_BEHIND, "repoint to the new version", from_version
        )
    if target_version is None:
        return AccountPlan(
            account, AccountAction.LEAVE, Reason.NO_TARGET_VERSION, "no version to converge on", from_version
        )
    if state.key_version != target_version:
        message = f"points at {state.key_version or 'no version'}; repoint to {target_version}"
        return AccountPlan(account, AccountAction.REPOINT, Reason.ACCOUNT_BEHIND, message, from_version)
    if state.provisioning_state in TERMINAL_FAILURE_STATES:  # the last update failed: send it again
        message = f"has {target_version} but is {state.provisioning_state}; send the update again"
        return AccountPlan(account, AccountAction.REPOINT, Reason.ACCOUNT_BEHIND, message, from_version)
    if state.provisioning_state != PROVISIONING_SUCCEEDED:
        message = f"has {target_version} but is {state.provisioning_state or 'in an unknown state'}; wait for Succeeded"
        return AccountPlan(account, AccountAction.WAIT, Reason.ACCOUNT_PROVISIONING, message, from_version)
    return AccountPlan(
        account, AccountAction.LEAVE, Reason.ACCOUNT_UP_TO_DATE, f"already on {target_version}", from_version
    )


def _summary(
    obs: Observation,
    hit: tuple[Reason, str] | None,
    create: VersionSpec | None,
    adopted: KeyVersion | None,
    target_version: str | None,
    accounts: Sequence[AccountPlan],
) -> tuple[Reason, str]:
    if create is not None and hit is not None:
        return hit[0], f"{hit[1]}; a new version will be created"
    if adopted is not None:
        original = adopted.tags.get(TAG_REASON, "")
        reason = next((r for r in Reason if r.value == original), Reason.ADOPTED)
        return reason, f"version {adopted.version} was created for this request by an earlier attempt; adopting it"
    by_vault = obs.target.new_versions is VersionSource.KEY_VAULT
    if target_version is None:
        why = f"{hit[1]}, and " if hit else ""
        if by_vault:
            return Reason.NO_TARGET_VERSION, (
                f"{why}no version is usable; new versions of this key come from Key Vault's rotation policy "
                "(new_versions=key_vault): rotate it in Key Vault and the service repoints the accounts"
            )
        return Reason.NO_TARGET_VERSION, (
            f"{why}no version is usable and fresh; a {obs.request.trigger.value} request never creates one, "
            "so the next timer sweep or KeyNearExpiry event will"
        )
    never = (
        "new versions of this key come from Key Vault's rotation policy"
        if by_vault
        else (f"a {obs.request.trigger.value} request never creates a version")
    )
    suppressed = f" ({hit[1]}; {never})" if hit else ""
    if any(a.action in (AccountAction.REPOINT, AccountAction.WAIT) for a in accounts):
        return Reason.ACCOUNTS_BEHIND, f"converge accounts on {target_version}{suppressed}"
    return Reason.UP_TO_DATE, f"every account is on {target_version}{suppressed}"
