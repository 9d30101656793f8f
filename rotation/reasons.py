"""The machine-readable reasons of the rotation service: one Enum, one string per reason.

The same string goes to logs, the ledger, the HTTP API and outcome events, so an operator can grep for it. Each member
says in its comment when it is used. This module must never hold logic: it is a vocabulary, imported everywhere.
"""

from enum import StrEnum


class Reason(StrEnum):
    # Policy chain (rotation/policies.py), in the order the chain tries them: why a new version is needed.
    FORCED = "Forced"  # the request asked for a new version (force=true, break-glass)
    CURRENT_DISABLED = "CurrentDisabled"  # the key's newest version is disabled
    CURRENT_NOT_YET_VALID = "CurrentNotYetValid"  # the newest version's nbf is in the future
    EXPIRED = "Expired"  # the newest version's exp has passed
    CURRENT_WRONG_TYPE = "CurrentWrongType"  # the newest version is not RSA or RSA-HSM
    CURRENT_WRONG_SIZE = "CurrentWrongSize"  # the newest version is not 2048 bits
    EXPIRING = "Expiring"  # now >= exp - renew_before
    LIFETIME_ELAPSED = "LifetimeElapsed"  # no exp, and now >= created + lifetime - renew_before

    # Decision when no new version is needed.
    UP_TO_DATE = "UpToDate"  # the key is fresh and every account points at the target version
    ACCOUNTS_BEHIND = "AccountsBehind"  # the key is fresh, some accounts must be repointed or waited for
    ADOPTED = "AdoptedVersion"  # a version tagged with this request id exists (an earlier attempt created it)
    NO_TARGET_VERSION = "NoTargetVersion"  # no version is usable and fresh, and this trigger may not create one

    # Preflight, key level: block the whole rotation.
    KEY_NOT_FOUND = "KeyNotFound"  # the key has no versions
    KEY_DISABLED = "KeyDisabled"  # no version of the key is enabled
    KEY_TYPE_UNSUPPORTED = "KeyTypeUnsupported"  # no enabled version is RSA/RSA-HSM 2048: not an AOAI CMK
    PURGE_PROTECTION_DISABLED = "PurgeProtectionDisabled"  # the recovery level contains "Purgeable"

    # Preflight, account level: block that account; the others proceed.
    ACCOUNT_NOT_CUSTOMER_MANAGED = "AccountNotCustomerManaged"  # keySource is not Microsoft.KeyVault
    ACCOUNT_USES_OTHER_KEY = "AccountUsesOtherKey"  # the account's CMK is another vault or key
    ACCOUNT_WITHOUT_IDENTITY = "AccountWithoutIdentity"  # the account has no managed identity
    ACCOUNT_KIND_UNSUPPORTED = "AccountKindUnsupported"  # kind is not OpenAI or AIServices
    ACCOUNT_UNREADABLE = "AccountUnreadable"  # reading the account failed during gather

    # Preflight warnings: reported, never blocking.
    CURRENT_HAS_NO_EXPIRY = "CurrentHasNoExpiry"  # no exp: Key Vault sends no KeyNearExpiry event
    REGION_MISMATCH = "RegionMismatch"  # the configured vault_location differs from the account's region

    # Per-account plan and result.
    ACCOUNT_BEHIND = "AccountBehind"  # the account points at another version of this key: repoint
    ACCOUNT_PROVISIONING = "AccountProvisioning"  # the account has the target version but is not Succeeded: wait
    ACCOUNT_UP_TO_DATE = "AccountUpToDate"  # the account has the target version and is Succeeded: leave alone
    VERIFY_TIMED_OUT = "VerifyTimedOut"  # the account did not report the target version and Succeeded in time
    RETIRED = "Retired"  # the sweep disabled an old version that no account had used for ROTATION_RETIRE_AFTER
    HALTED_AFTER_FAILURE = "HaltedAfterFailure"  # an account of an earlier wave failed: this one was left as it was

    # Break-glass (rotation/breakglass.py): what became of the compromised version.
    COMPROMISED_VERSION_DISABLED = "CompromisedVersionDisabled"  # every account was off it (or breakage accepted)
    COMPROMISED_VERSION_IN_USE = "CompromisedVersionInUse"  # an account is (or may be) still on it: kept enabled

    # Errors (rotation/errors.py): the reason of a step that raised.
    PERMISSION_DENIED = "PermissionDenied"
    NOT_FOUND = "NotFound"
    INVALID_REQUEST = "InvalidRequest"
    CONFLICT = "Conflict"
    UNREACHABLE = "Unreachable"  # a host name that does not resolve, or a TLS certificate that is not trusted
    TRANSIENT_FAILURE = "TransientFailure"
    CONFIG_ERROR = "ConfigError"
    ERROR = "Error"
