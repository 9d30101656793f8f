"""Preflight: pure checks on the observation that block a rotation, or one account, or warn.

Key-level blockers stop the whole rotation (no create, no account update)::

    KeyNotFound              the key has no versions
    KeyDisabled              no version is enabled: someone switched the key off; creating one would undo that
    KeyTypeUnsupported       no enabled version is RSA/RSA-HSM 2048: this is not an Azure OpenAI CMK (a wrong key in
                             ROTATION_TARGETS must never get RSA versions added to it)
    PurgeProtectionDisabled  the recovery level contains "Purgeable": Azure OpenAI requires purge protection

(A *current* version that is disabled, not yet valid or the wrong type while older versions are fine is not a blocker:
the policy chain replaces it with a new version.)

Account-level blockers leave that account alone and report it failed; the other accounts proceed::

    AccountNotCustomerManaged  keySource is not Microsoft.KeyVault: never switch an account to or from CMK
    AccountUsesOtherKey        the account's CMK is another vault or key: never move an account between keys
    AccountWithoutIdentity     the account has no managed identity, so it could not reach any key
    AccountKindUnsupported     kind is not OpenAI or AIServices
    AccountUnreadable          reading the account failed

Warnings: CurrentHasNoExpiry, and RegionMismatch (only when the target gives ``vault_location``: the Key Vault data
plane does not report a vault's region). This module must never do I/O or read the clock.
"""

from __future__ import annotations

from collections.abc import Callable

from rotation.model import (
    KEY_SOURCE_KEY_VAULT,
    SUPPORTED_ACCOUNT_KINDS,
    AccountEncryption,
    Finding,
    Observation,
    Severity,
    Target,
    normalize_location,
    recency,
)
from rotation.policies import has_supported_shape
from rotation.reasons import Reason

KeyCheck = Callable[[Observation], Finding | None]
AccountCheck = Callable[[AccountEncryption, Target], Finding | None]


def _block(reason: Reason, message: str, account: AccountEncryption | None = None) -> Finding:
    return Finding(reason, message, Severity.BLOCK, account.account if account else None)


def _warn(reason: Reason, message: str, account: AccountEncryption | None = None) -> Finding:
    return Finding(reason, message, Severity.WARN, account.account if account else None)


def key_exists(obs: Observation) -> Finding | None:
    if not obs.versions:
        return _block(
            Reason.KEY_NOT_FOUND,
            f"key {obs.target.key.id} has no versions; create it (RSA 2048) or fix its URL in ROTATION_TARGETS",
        )
    return None


def key_enabled(obs: Observation) -> Finding | None:
    if not any(v.enabled for v in obs.versions):
        return _block(
            Reason.KEY_DISABLED,
            f"every version of key {obs.target.key.id} is disabled; re-enable the version the accounts use "
            "(the service will not add a version to a key someone switched off)",
        )
    return None


def key_type_supported(obs: Observation) -> Finding | None:
    if not any(v.enabled and has_supported_shape(v) for v in obs.versions):
        return _block(
            Reason.KEY_TYPE_UNSUPPORTED,
            f"no enabled version of key {obs.target.key.id} is RSA or RSA-HSM 2048, the only CMK Azure OpenAI "
            "supports; check that ROTATION_TARGETS names the right key",
        )
    return None


def purge_protected(obs: Observation) -> Finding | None:
    levels = [v for v in obs.versions if v.recovery_level]
    newest = max(levels, key=recency, default=None)
    if newest is not None and newest.recovery_level is not None and "Purgeable" in newest.recovery_level:
        return _block(
            Reason.PURGE_PROTECTION_DISABLED,
            f"vault {obs.target.key.vault_url} has recovery level {newest.recovery_level}: purge protection is off, "
            "and Azure OpenAI requires it; enable purge protection on the vault",
        )
    return None


def current_has_expiry(obs: Observation) -> Finding | None:
    current = obs.current
    if current is not None and current.expires_on is None:
        return _warn(
            Reason.CURRENT_HAS_NO_EXPIRY,
            f"the current version {current.version} has no expiry, so Key Vault sends no KeyNearExpiry event; "
            "only the timer sweep will renew it",
        )
    return None


# Order matters: once the key is missing, the later checks have nothing to say.
KEY_CHECKS: tuple[KeyCheck, ...] = (key_exists, key_enabled, key_type_supported, purge_protected)
KEY_WARNINGS: tuple[KeyCheck, ...] = (current_has_expiry,)


def customer_managed(state: AccountEncryption, target: Target) -> Finding | None:
    if state.key_source != KEY_SOURCE_KEY_VAULT:
        return _block(
            Reason.ACCOUNT_NOT_CUSTOMER_MANAGED,
            f"account {state.account.id} uses key source {state.key_source or 'none'}, not {KEY_SOURCE_KEY_VAULT}; "
            f"the service never switches an account to a customer-managed key: configure {target.key.id} on it "
            "first, or remove it from ROTATION_TARGETS",
            state,
        )
    return None


def uses_target_key(state: AccountEncryption, target: Target) -> Finding | None:
    if not state.uses(target.key):
        return _block(
            Reason.ACCOUNT_USES_OTHER_KEY,
            f"account {state.account.id} uses key {state.key_name!r} in vault {state.key_vault_uri!r}, not "
            f"{target.key.id}; the service never moves an account to another key: list it under its own key",
            state,
        )
    return None


def has_identity(state: AccountEncryption, target: Target) -> Finding | None:
    if state.identity_type in (None, "", "None"):
        return _block(
            Reason.ACCOUNT_WITHOUT_IDENTITY,
            f"account {state.account.id} has no managed identity, so it cannot reach {target.key.id}; "
            "enable a system- or user-assigned identity with wrap/unwrap rights on the key",
            state,
        )
    return None


def supported_kind(state: AccountEncryption, target: Target) -> Finding | None:
    if state.kind not in SUPPORTED_ACCOUNT_KINDS:
        return _block(
            Reason.ACCOUNT_KIND_UNSUPPORTED,
            f"account {state.account.id} is of kind {state.kind!r}; only OpenAI and AIServices accounts are rotated",
            state,
        )
    return None


def same_region(state: AccountEncryption, target: Target) -> Finding | None:
    if target.vault_location and normalize_location(state.location) != target.vault_location:
        return _warn(
            Reason.REGION_MISMATCH,
            f"account {state.account.id} is in {state.location} but the vault is in {target.vault_location}; "
            "Azure OpenAI requires the vault in the account's region",
            state,
        )
    return None


ACCOUNT_CHECKS: tuple[AccountCheck, ...] = (customer_managed, uses_target_key, has_identity, supported_kind)
ACCOUNT_WARNINGS: tuple[AccountCheck, ...] = (same_region,)


def check_key(obs: Observation) -> tuple[Finding, ...]:
    """Key-level findings: at most one blocker (the first), then the warnings."""
    blocker = next((f for check in KEY_CHECKS if (f := check(obs)) is not None), None)
    if blocker is not None:
        return (blocker,)
    return tuple(f for check in KEY_WARNINGS if (f := check(obs)) is not None)


def check_account(state: AccountEncryption, target: Target) -> tuple[Finding, ...]:
    """Account-level findings: at most one blocker (the first), then the warnings."""
    blocker = next((f for check in ACCOUNT_CHECKS if (f := check(state, target)) is not None), None)
    warnings = tuple(f for check in ACCOUNT_WARNINGS if (f := check(state, target)) is not None)
    return ((blocker,) if blocker else ()) + warnings


def preflight(obs: Observation) -> tuple[Finding, ...]:
    """Every finding for the observation: the key's, then each target account's in target order."""
    findings = list(check_key(obs))
    for account in obs.target.accounts:
        state = obs.accounts.get(account)
        if state is not None:
            findings.extend(check_account(state, obs.target))
        else:
            error = obs.unreadable.get(account)
            findings.append(
                Finding(
                    Reason.ACCOUNT_UNREADABLE,
                    f"account {account.id} could not be read: {error if error else 'no state was gathered'}",
                    Severity.BLOCK,
                    account,
                )
            )
    return tuple(findings)
