"""Every preflight reason: key-level and account-level blockers, and the two warnings."""

from __future__ import annotations

import pytest

from rotation.errors import PermissionDenied
from rotation.model import AccountEncryption, Finding, KeyVersion, Severity
from rotation.preflight import preflight
from rotation.reasons import Reason
from tests.unit.factories import AOAI_1, AOAI_2, DAY, NOW, OTHER_KEY, account, observe, version


def reasons(findings: tuple[Finding, ...], severity: Severity) -> list[Reason]:
    return [f.reason for f in findings if f.severity is severity]


def test_a_healthy_key_and_account_have_no_findings() -> None:
    assert preflight(observe([version()], [account()])) == ()


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ([], Reason.KEY_NOT_FOUND),
        ([version("a", enabled=False), version("b", enabled=False, created=NOW - DAY)], Reason.KEY_DISABLED),
        ([version(kty="EC")], Reason.KEY_TYPE_UNSUPPORTED),
        ([version(size=4096)], Reason.KEY_TYPE_UNSUPPORTED),
        ([version(recovery_level="Recoverable+Purgeable")], Reason.PURGE_PROTECTION_DISABLED),
        ([version(recovery_level="Purgeable")], Reason.PURGE_PROTECTION_DISABLED),
        ([version(recovery_level="CustomizedRecoverable+Purgeable")], Reason.PURGE_PROTECTION_DISABLED),
    ],
)
def test_key_blockers(versions: list[KeyVersion], expected: Reason) -> None:
    findings = preflight(observe(versions, [account()]))
    assert reasons(findings, Severity.BLOCK) == [expected]
    blocker = findings[0]
    assert blocker.account is None
    assert "kv-prod.vault.azure.net" in blocker.message


@pytest.mark.parametrize("level", ["Recoverable", "Recoverable+ProtectedSubscription", "CustomizedRecoverable", None])
def test_protected_or_unknown_recovery_levels_do_not_block(level: str | None) -> None:
    assert preflight(observe([version(recovery_level=level)], [account()])) == ()


def test_an_older_good_version_keeps_the_key_rotatable() -> None:
    # The current version is disabled / the wrong size, but an older one is a valid CMK: not a key-level blocker,
    # the policy chain replaces the current version instead.
    versions = [version("old", created=NOW - 20 * DAY), version("new", created=NOW - DAY, size=3072)]
    assert reasons(preflight(observe(versions, [account()])), Severity.BLOCK) == []
    versions = [version("old", created=NOW - 20 * DAY), version("new", created=NOW - DAY, enabled=False)]
    assert reasons(preflight(observe(versions, [account()])), Severity.BLOCK) == []


@pytest.mark.parametrize(
    ("state", "expected", "fragment"),
    [
        (account(key_source="Microsoft.CognitiveServices"), Reason.ACCOUNT_NOT_CUSTOMER_MANAGED, "key source"),
        (account(key_source=None), Reason.ACCOUNT_NOT_CUSTOMER_MANAGED, "none"),
        (account(key=OTHER_KEY), Reason.ACCOUNT_USES_OTHER_KEY, "'other'"),
        (account(vault_uri="https://kv-other.vault.azure.net/"), Reason.ACCOUNT_USES_OTHER_KEY, "kv-other"),
        (account(vault_uri="not a url"), Reason.ACCOUNT_USES_OTHER_KEY, "not a url"),
        (account(identity=None), Reason.ACCOUNT_WITHOUT_IDENTITY, "no managed identity"),
        (account(identity="None"), Reason.ACCOUNT_WITHOUT_IDENTITY, "no managed identity"),
        (account(kind="TextAnalytics"), Reason.ACCOUNT_KIND_UNSUPPORTED, "TextAnalytics"),
    ],
)
def test_account_blockers(state: AccountEncryption, expected: Reason, fragment: str) -> None:
    findings = preflight(observe([version()], [state]))
    assert reasons(findings, Severity.BLOCK) == [expected]
    assert findings[0].account == AOAI_1
    assert fragment in findings[0].message
    assert AOAI_1.id in findings[0].message


@pytest.mark.parametrize("identity", ["SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned"])
@pytest.mark.parametrize("kind", ["OpenAI", "AIServices"])
def test_supported_identities_and_kinds(identity: str, kind: str) -> None:
    assert preflight(observe([version()], [account(identity=identity, kind=kind)])) == ()


def test_vault_uri_is_compared_normalised() -> None:
    state = account(vault_uri="https://KV-PROD.vault.azure.net:443/")
    assert preflight(observe([version()], [state])) == ()


def test_only_the_bad_account_is_blocked() -> None:
    findings = preflight(observe([version()], [account(AOAI_1), account(AOAI_2, identity=None)]))
    assert [(f.account, f.reason) for f in findings] == [(AOAI_2, Reason.ACCOUNT_WITHOUT_IDENTITY)]


def test_an_unreadable_account_is_blocked_with_the_read_error() -> None:
    error = PermissionDenied("the function's identity lacks Microsoft.CognitiveServices/accounts/read")
    findings = preflight(observe([version()], [account(AOAI_1)], unreadable={AOAI_2: error}))
    assert [(f.account, f.reason) for f in findings] == [(AOAI_2, Reason.ACCOUNT_UNREADABLE)]
    assert "accounts/read" in findings[0].message


def test_no_expiry_warns() -> None:
    findings = preflight(observe([version(expires=None)], [account()]))
    assert reasons(findings, Severity.WARN) == [Reason.CURRENT_HAS_NO_EXPIRY]
    assert reasons(findings, Severity.BLOCK) == []


def test_region_mismatch_warns_only_when_the_vault_location_is_configured() -> None:
    state = account(location="West Europe")
    assert preflight(observe([version()], [state])) == ()
    assert preflight(observe([version()], [state], vault_location="westeurope")) == ()
    findings = preflight(observe([version()], [state], vault_location="eastus"))
    assert reasons(findings, Severity.WARN) == [Reason.REGION_MISMATCH]
    assert "West Europe" in findings[0].message
    assert "eastus" in findings[0].message
