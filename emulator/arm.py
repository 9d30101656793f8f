"""ARM for Microsoft.CognitiveServices accounts: the control plane the rotation service repoints accounts through.

It speaks ARM's wire protocol to the unmodified ``azure-mgmt-cognitiveservices`` client: bearer authentication (401
with ``WWW-Authenticate``), api-version checks, ARM's error format, paged lists with ``nextLink``, long-running
operations (``Azure-AsyncOperation``, ``Location``, ``Retry-After``), ``RequestConflict`` while an operation is in
flight, per-subscription token-bucket throttling (429 + ``Retry-After``) and the resource provider's checks on a
customer-managed key. Azure's quirks that the rotation service must survive are knobs a test turns::

    PATCH account ──► 202 Accepted ──► operationStatuses/{id}: InProgress for lro_polls (and lro_seconds on the clock)
         │ 409 RequestConflict while in flight                  └─► Succeeded (or Failed: fail_next_update,
         │ 400 on a bad key (validation="sync")                       a bad key with validation="async")
         ▼
    GET account ──► provisioningState "Accepted" for linger_accepted_reads more reads (default 2), then "Succeeded"

An update's properties show on the account as soon as the request is accepted (with provisioningState "Accepted");
a failed operation restores the account as it was. A failed create leaves the account in state "Failed".

By default it is at least as strict as Azure: "Accepted" lingers after an operation succeeded, a token for another
audience gets 401 ``InvalidAuthenticationTokenAudience``, a resource group nobody created gets 404
``ResourceGroupNotFound``, and each ARM action (``accounts/read``, ``accounts/write``, ``accounts/delete`` and the
operation status, ``locations/operationresults/read``) can be refused on its own, as a role assignment scoped to the
account refuses the status poll (authorised at subscription scope). A kinder behaviour is only ever an explicit
setting (``linger_accepted_reads=0``).

    request ──► route ──► token? (401 AuthenticationFailed) ──► audience? (401 InvalidAuthenticationTokenAudience)
            ──► fault rules ──► api-version (400) ──► throttling (429) ──► action denied? (403 AuthorizationFailed)
            ──► resource group exists? (404 ResourceGroupNotFound) ──► the resource provider

It must never take an action for a request it answers with an error (401, 403, 404, 409, 429, 400), never let one
subscription's throttling touch another's, and never check a customer-managed key when an account is seeded through
the Python or admin API (tests seed broken accounts on purpose). Tokens are read for their ``oid`` and ``aud`` only,
never logged.
"""

from __future__ import annotations

import copy
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from emulator.control import Clock, TokenBucket
from emulator.credential import claims_from_authorization
from emulator.http import HttpError, Request, Response, Service

if TYPE_CHECKING:
    from emulator.admin import AdminService
    from emulator.keyvault import Vault

PROVIDER = "Microsoft.CognitiveServices"
ACCOUNT_TYPE = f"{PROVIDER}/accounts"
KINDS = ("OpenAI", "AIServices")
IDENTITY_TYPES = ("None", "SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned")
KEY_SOURCES = ("Microsoft.CognitiveServices", "Microsoft.KeyVault")
SUPPORTED_KEY_TYPES = ("RSA", "RSA-HSM")
SUPPORTED_KEY_SIZE = 2048
DEFAULT_RESOURCE_GROUP = "rg-ai"

# ARM's regional token buckets per subscription (azure-facts §7): (burst, refill per second).
THROTTLE_LIMITS = {"reads": (250.0, 25.0), "writes": (200.0, 10.0), "deletes": (200.0, 10.0)}

# The audiences ARM accepts, in the order its 401 lists them (the message quoted in Azure-Samples/
# active-directory-dotnetcore-daemon-v2#145 and JetBrains/azure-tools-for-intellij#16). Compared without the slash.
ARM_AUDIENCES = (
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
)

# The ARM actions a request needs, by the short name ``deny`` also takes. The names are the provider's operations
# list (MicrosoftDocs/azure-docs articles/role-based-access-control/permissions/ai-machine-learning.md, section
# Microsoft.CognitiveServices). Polling ``locations/{loc}/operationStatuses/{id}`` or ``.../operationResults/{id}`` is
# authorised at subscription scope (azure-facts §10.7); the list names one action for it,
# ``locations/operationresults/read`` ("Read the status of an asynchronous operation"), so both polls need it. That ARM
# checks exactly this action for the ``operationStatuses`` URL is UNCONFIRMED.
ACTIONS = {
    "read": f"{PROVIDER}/accounts/read",
    "write": f"{PROVIDER}/accounts/write",
    "delete": f"{PROVIDER}/accounts/delete",
    "operations": f"{PROVIDER}/locations/operationresults/read",
    # A Resource Graph query (``resourcegraph.py``). Azure lets anyone query and only hides the rows the caller cannot
    # read; refusing the query itself is how a test makes Resource Graph unusable for one identity.
    "graph": "Microsoft.ResourceGraph/resources/read",
}

_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_ACCOUNT_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,63}")
_USER_ASSIGNED_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+",
    re.IGNORECASE,
)
_SEGMENT = r"[^/]+"
_SUBSCRIPTION = rf"(?i)/subscriptions/(?P<subscription>{_SEGMENT})"
_ACCOUNTS = r"/providers/Microsoft\.CognitiveServices/accounts"
_ACCOUNT = rf"{_SUBSCRIPTION}/resourceGroups/(?P<resource_group>{_SEGMENT}){_ACCOUNTS}/(?P<name>{_SEGMENT})"


def _operation_path(endpoint: str) -> str:
    return (
        rf"{_SUBSCRIPTION}/providers/Microsoft\.CognitiveServices/locations/(?P<location>{_SEGMENT})"
        rf"/(?P<endpoint>{endpoint})/(?P<operation_id>{_SEGMENT})"
    )


# Properties the resource provider computes; a PUT or PATCH that sends them changes nothing.
_READ_ONLY_PROPERTIES = frozenset(
    {
        "provisioningState",
        "endpoint",
        "endpoints",
        "internalId",
        "dateCreated",
        "capabilities",
        "callRateLimit",
        "quotaLimit",
        "isMigrated",
        "skuChangeInfo",
        "privateEndpointConnections",
        "deletionDate",
        "scheduledPurgeDate",
        "abusePenalty",
        "associatedProjects",
    }
)

Status = Literal["InProgress", "Succeeded", "Failed"]
Refusal = tuple[str, str]  # (ARM error code, message): why the resource provider refuses a request
AccountKey = tuple[str, str, str]  # (subscription, resource group, account name), lower case as ARM compares them


class InvalidAccount(ValueError):
    """A request or a seeded account that ARM would refuse. ``code`` is ARM's error code; str() is the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _region(location: str) -> str:
    """ARM compares regions without case or spaces: "East US" is "eastus"."""
    return location.replace(" ", "").lower()


def _etag(moment: datetime) -> str:
    return f"W/\"datetime'{_utc(moment).replace(':', '%3A')}'\""


# Settings ------------------------------------------------------------------------------------------------------


class _Setting:
    """An ``Arm`` attribute a test may change at any time; a bad value fails where it is set, naming the setting."""

    def __init__(self, check: Callable[[Any], str | None]) -> None:
        self.check = check
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else instance.__dict__[self.name]

    def __set__(self, instance: Any, value: Any) -> None:
        problem = self.check(value)
        if problem is not None:
            raise ValueError(f"{self.name} must be {problem}; got {value!r}.")
        instance.__dict__[self.name] = value


def _whole(minimum: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        return None if ok else f"a whole number >= {minimum}"

    return check


def _seconds(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    return None if ok else "a number of seconds >= 0"


def _positive(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return None if ok else "a positive number"


def _validation_mode(value: Any) -> str | None:
    return None if value in ("sync", "async") else '"sync" or "async"'


SETTINGS = (
    "lro_polls",
    "lro_seconds",
    "lro_unattended_seconds",
    "retry_after",
    "linger_accepted_reads",
    "validation",
    "page_size",
    "graph_quota",
    "graph_window_seconds",
    "graph_lag_seconds",
)


# State ---------------------------------------------------------------------------------------------------------


@dataclass
class _Operation:
    id: str
    subscription: str
    location: str
    account: AccountKey
    started: datetime
    restore: dict[str, Any] | None  # the account before the operation; None for a create
    failure: Refusal | None  # (code, message) the operation ends with, or None to succeed
    polls: int = 0
    status: Status = "InProgress"
    ended: datetime | None = None
    started_monotonic: float = dataclass_field(default_factory=time.monotonic)

    def describe(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": f"/subscriptions/{self.subscription}/providers/{PROVIDER}/locations/{self.location}"
            f"/operationStatuses/{self.id}",
            "name": self.id,
            "status": self.status,
            "startTime": _utc(self.started),
        }
        if self.ended is not None:
            body["endTime"] = _utc(self.ended)
        if self.status == "Failed" and self.failure is not None:
            body["error"] = {"code": self.failure[0], "message": self.failure[1]}
        return body


@dataclass
class _Account:
    key: AccountKey
    subscription: str
    body: dict[str, Any]  # the ARM JSON, provisioningState included
    operation: _Operation | None = None  # in flight
    linger: int = 0  # how many more reads still show "Accepted" after a finished operation

    @property
    def id(self) -> str:
        return str(self.body["id"])


# The REST service ----------------------------------------------------------------------------------------------


class ArmService(Service):
    name = "arm"

    def __init__(self, arm: Arm) -> None:
        super().__init__()
        self.arm = arm

    def bad_request(self, message: str) -> HttpError:
        return self.error(400, "InvalidRequestContent", message)

    def not_found(self, path: str) -> HttpError:
        return self.error(404, "InvalidResourceType", f"No resource type is registered at {path}.")

    def authenticate(self, request: Request) -> Response | None:
        """401 without a readable token, or with a token for another audience (azure-facts §10.9); None to go on."""
        if request.identity is None:
            description = "The access token is missing or could not be read."
            return self._unauthenticated("AuthenticationFailed", f"Authentication failed. {description}", description)
        if request.audience in {audience.rstrip("/") for audience in self.arm.audiences}:
            return None
        raw = (claims_from_authorization(request.headers.get("Authorization")) or {}).get("aud")
        audience = raw if isinstance(raw, str) else ""
        allowed = ",".join(f"'{accepted}'" for accepted in self.arm.audiences)
        return self._unauthenticated(
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource '{audience}'. "
            f"It should exactly match with one of the allowed audiences {allowed}.",
            "The access token is from the wrong audience or resource.",
        )

    def _unauthenticated(self, code: str, message: str, description: str) -> Response:
        tenant = self.arm.tenant_id
        return Response(
            401,
            {"error": {"code": code, "message": message}},
            {
                "WWW-Authenticate": f'Bearer authorization_uri="https://login.microsoftonline.com/{tenant}", '
                f'error="invalid_token", error_description="{description}"'
            },
        )


class Arm:
    """Cognitive Services accounts behind one ARM endpoint, with the knobs tests use to reproduce Azure's behaviour.

    Settings (attributes; assigning a bad value raises ``ValueError``):
    ``lro_polls`` status polls answered "InProgress" before an operation ends (default 1);
    ``lro_seconds`` emulator-clock seconds an operation lasts at least (default 0);
    ``lro_unattended_seconds`` real seconds after which an operation nobody polls ends anyway, as Azure runs it
    whether or not a client is still there (default 5);
    ``retry_after`` the ``Retry-After`` seconds on LRO answers (default 0);
    ``linger_accepted_reads`` GETs of the account still showing "Accepted" after an operation succeeded (lists show
    it too without using one up). The default, 2, is Azure's observed behaviour made deterministic: the poller's own
    final GET and the first GET the caller makes itself both still say "Accepted", as Terraform saw after create and
    update operations had completed (azure-facts §1.7: terraform-provider-azurerm #13924, PR #31751). A client must
    therefore re-read until the state leaves "Accepted", not trust one read after the operation. 0 is the kinder
    option (the account says "Succeeded" as soon as the operation does);
    ``validation`` "sync" (a bad key is a 400) or "async" (a Failed operation), default "sync";
    ``page_size`` accounts per list page (default 100);
    ``graph_quota`` Resource Graph queries one identity may send per window (default 15) and
    ``graph_window_seconds`` the window's length in real seconds (default 5), Learn's published example;
    ``graph_lag_seconds`` emulator-clock seconds before an account's change shows in Resource Graph (default 0).
    """

    lro_polls = _Setting(_whole(0))
    lro_seconds = _Setting(_seconds)
    lro_unattended_seconds = _Setting(_seconds)
    retry_after = _Setting(_whole(0))
    linger_accepted_reads = _Setting(_whole(0))
    validation = _Setting(_validation_mode)
    page_size = _Setting(_whole(1))
    graph_quota = _Setting(_whole(1))
    graph_window_seconds = _Setting(_positive)
    graph_lag_seconds = _Setting(_seconds)

    def __init__(
        self,
        clock: Clock,
        *,
        subscription_id: str,
        tenant_id: str,
        location: str,
        vault_by_url: Callable[[str], Vault | None],
        vault_resource_groups: Callable[[], Iterable[tuple[str, str]]] = tuple,
        throttle_scale: float = 1.0,
    ) -> None:
        """``vault_by_url`` finds the emulated vault a ``keyVaultUri`` points at (None when there is none);
        ``vault_resource_groups`` lists the (subscription, resource group) of every vault, groups that exist too."""
        self.clock = clock
        self.subscription_id = subscription_id
        self.tenant_id = tenant_id
        self.location = location
        self._vault_by_url = vault_by_url
        self.url = ""  # set when the emulator starts listening
        # The token audiences this ARM accepts: the public cloud's. A sovereign cloud's ARM accepts only its own, so a
        # client that asks for the public scope gets InvalidAuthenticationTokenAudience there.
        self.audiences: tuple[str, ...] = ARM_AUDIENCES
        self.service = ArmService(self)
        self.lro_polls = 1
        self.lro_seconds = 0
        self.lro_unattended_seconds = 5
        self.retry_after = 0
        self.linger_accepted_reads = 2
        self.validation = "sync"
        self.page_size = 100
        self.graph_quota = 15
        self.graph_window_seconds = 5
        self.graph_lag_seconds = 0
        self._watchers: list[Callable[[AccountKey, dict[str, Any] | None], None]] = []
        self._lock = threading.RLock()
        self._accounts: dict[AccountKey, _Account] = {}
        self._operations: dict[str, _Operation] = {}
        self._failures: dict[str, Refusal] = {}  # account name (lower case) -> (code, message)
        self._denied: dict[str, set[str]] = {}  # identity -> ARM actions in lower case, or "*"
        self._resource_groups: set[tuple[str, str]] = set()  # (subscription, resource group), lower case
        self._vault_resource_groups = vault_resource_groups
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._throttle_scale = 1.0
        self.set_throttle_scale(throttle_scale)
        self._routes()

    # Python API ------------------------------------------------------------------------------------------------
    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change several settings at once (all or none); returns them all. Unknown names raise ``ValueError``."""
        unknown = sorted(set(settings) - set(SETTINGS) - {"throttle_scale"})
        if unknown:
            raise ValueError(f"Unknown ARM settings {unknown}; known: {sorted((*SETTINGS, 'throttle_scale'))}.")
        for name, value in settings.items():
            problem = _positive(value) if name == "throttle_scale" else type(self).__dict__[name].check(value)
            if problem is not None:
                raise ValueError(f"{name} must be {problem}; got {value!r}.")
        with self._lock:
            for name, value in settings.items():
                if name == "throttle_scale":
                    self.set_throttle_scale(value)
                else:
                    setattr(self, name, value)
            return self.settings()

    def settings(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in SETTINGS}
        values["throttle_scale"] = self._throttle_scale
        return values

    def set_throttle_scale(self, scale: float) -> None:
        """Multiply ARM's limits by ``scale`` (tests use a tiny one); every bucket starts full again."""
        problem = _positive(scale)
        if problem is not None:
            raise ValueError(f"throttle_scale must be {problem}; got {scale!r}.")
        with self._lock:
            self._throttle_scale = float(scale)
            self._buckets.clear()

    def fail_next_update(self, account_name: str, code: str, message: str) -> None:
        """Make the next accepted update (PATCH) of ``account_name`` end as a Failed operation with this error."""
        if not code or not message:
            raise ValueError("fail_next_update needs a non-empty error code and message.")
        with self._lock:
            self._failures[account_name.lower()] = (code, message)

    def deny(self, identity: str, action: str = "*") -> None:
        """Answer ``identity``'s requests that need ``action`` with 403 ``AuthorizationFailed``, naming the action.

        ``action`` is a short name, "read" (``accounts/read``: get and list), "write" (``accounts/write``: PUT and
        PATCH), "delete" (``accounts/delete``) or "operations" (``locations/operationresults/read``: the status
        polls, authorised at subscription scope, so a role on the account alone lacks it), "graph"
        (``Microsoft.ResourceGraph/resources/read``: a Resource Graph query); or the full action name
        (``Microsoft.CognitiveServices/accounts/write``, any case); or "*" for all of them.
        """
        wanted = action if action == "*" else ACTIONS.get(action, action).lower()
        if wanted != "*" and wanted not in {name.lower() for name in ACTIONS.values()}:
            raise ValueError(
                f'action must be "read", "write", "delete", "operations", "*" or one of {list(ACTIONS.values())} '
                f'("graph" is short for {ACTIONS["graph"]}); got {action!r}.'
            )
        with self._lock:
            self._denied.setdefault(identity, set()).add(wanted)

    def allow(self, identity: str) -> None:
        """Undo every ``deny`` of ``identity``."""
        with self._lock:
            self._denied.pop(identity, None)

    def can(self, identity: str, action: str) -> bool:
        """Whether ``identity`` holds ``action`` (a full ARM action name): true unless ``deny`` refused it."""
        with self._lock:
            denied = self._denied.get(identity, set())
            return "*" not in denied and action.lower() not in denied

    def watch(self, callback: Callable[[AccountKey, dict[str, Any] | None], None]) -> None:
        """Call ``callback(key, account JSON)`` after every change to a stored account (None: deleted), under ARM's
        lock and in order, so a reader that lags ARM (Resource Graph) can keep its own history. The JSON is ARM's own:
        the callback reads what it needs and neither keeps nor changes it."""
        with self._lock:
            self._watchers.append(callback)

    def _changed(self, account: _Account, *, deleted: bool = False) -> None:
        for callback in self._watchers:
            callback(account.key, None if deleted else account.body)

    def add_resource_group(self, name: str, *, subscription_id: str | None = None) -> None:
        """Make resource group ``name`` exist (idempotent). Seeding an account, or a vault, makes its group exist too;
        any other group answers 404 ``ResourceGroupNotFound``, as ARM does."""
        if not isinstance(name, str) or not re.fullmatch(r"[-\w._()]{1,90}", name) or name.endswith("."):
            raise ValueError(
                f"A resource group name has 1-90 letters, digits, '-', '_', '.', '(' or ')' and does not end in '.'; "
                f"got {name!r}."
            )
        with self._lock:
            self._resource_groups.add(((subscription_id or self.subscription_id).lower(), name.lower()))

    def resource_group_exists(self, name: str, *, subscription_id: str | None = None) -> bool:
        key = ((subscription_id or self.subscription_id).lower(), name.lower())
        with self._lock:
            if key in self._resource_groups:
                return True
        return key in {(sub.lower(), rg.lower()) for sub, rg in self._vault_resource_groups()}

    def account_id(self, resource_group: str, name: str, *, subscription_id: str | None = None) -> str:
        subscription = subscription_id or self.subscription_id
        return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{ACCOUNT_TYPE}/{name}"

    def add_account(
        self,
        name: str,
        *,
        resource_group: str = DEFAULT_RESOURCE_GROUP,
        kind: str = "OpenAI",
        location: str | None = None,
        identity: str | None = "SystemAssigned",
        user_assigned_identities: list[str] | None = None,
        encryption: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        subscription_id: str | None = None,
    ) -> dict[str, Any]:
        """Seed a provisioned account (state "Succeeded") and return its ARM JSON.

        ``identity`` is an ARM identity type or None. A user-assigned type uses ``user_assigned_identities`` (ARM ids)
        or, when not given, one identity named ``{name}-identity`` in the account's resource group. ``encryption`` is
        the JSON of ``properties.encryption``; its shape is checked but the key is not (seed broken accounts freely).
        Raises ``InvalidAccount`` (a ``ValueError``) for bad input or an account that already exists.
        """
        subscription = subscription_id or self.subscription_id
        identity_spec: dict[str, Any] | None = None
        if identity is not None:
            identity_spec = {"type": identity}
            if "UserAssigned" in identity:
                ids = user_assigned_identities or [
                    f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
                    f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}-identity"
                ]
                identity_spec["userAssignedIdentities"] = {arm_id: {} for arm_id in ids}
        request: dict[str, Any] = {
            "location": location or self.location,
            "kind": kind,
            "sku": {"name": "S0"},
            "identity": identity_spec,
            "properties": {} if encryption is None else {"encryption": encryption},
        }
        if tags is not None:
            request["tags"] = tags
        with self._lock:
            key = (subscription.lower(), resource_group.lower(), name.lower())
            if key in self._accounts:
                raise InvalidAccount("AccountAlreadyExists", f"Account {name!r} already exists in {resource_group!r}.")
            body = self._new_account(subscription, resource_group, name, request, existing=None)
            body["properties"]["provisioningState"] = "Succeeded"
            self._accounts[key] = _Account(key, subscription, body)
            self._resource_groups.add(key[:2])
            self._changed(self._accounts[key])
            return copy.deepcopy(body)

    def account(self, resource_group: str, name: str, *, subscription_id: str | None = None) -> dict[str, Any]:
        """The account's stored ARM JSON (a copy; lingering "Accepted" reads are not shown). ``KeyError`` if unknown."""
        with self._lock:
            return copy.deepcopy(self._stored(resource_group, name, subscription_id).body)

    def identity_principal(self, resource_group: str, name: str, *, subscription_id: str | None = None) -> str | None:
        """The principal id the account reaches Key Vault with: the system-assigned one, else its only user-assigned
        one; None when it has no identity (or several user-assigned ones and no system-assigned one)."""
        with self._lock:
            identity = self._stored(resource_group, name, subscription_id).body.get("identity")
        if not identity:
            return None
        if "principalId" in identity:
            return str(identity["principalId"])
        assigned = list(identity.get("userAssignedIdentities", {}).values())
        return str(assigned[0]["principalId"]) if len(assigned) == 1 else None

    @staticmethod
    def user_assigned_identity(resource_id: str) -> dict[str, str]:
        """The principal and client ids of a user-assigned identity: the same ids on every account that uses it."""
        canonical = resource_id.lower()
        return {
            "principalId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"principal:{canonical}")),
            "clientId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"client:{canonical}")),
        }

    def _stored(self, resource_group: str, name: str, subscription_id: str | None) -> _Account:
        subscription = subscription_id or self.subscription_id
        account = self._accounts.get((subscription.lower(), resource_group.lower(), name.lower()))
        if account is None:
            known = sorted(f"{rg}/{n}" for (_, rg, n) in self._accounts)
            raise KeyError(f"No account {name!r} in resource group {resource_group!r}; known: {known}.")
        self._observe(account)
        return account

    # Routes ----------------------------------------------------------------------------------------------------
    def _routes(self) -> None:
        route = self.service.route
        read, write, delete = "reads", "writes", "deletes"
        route("GET", _ACCOUNT, "arm.get_account", self._guard(read, "read", self._get_account))
        route("PUT", _ACCOUNT, "arm.create_account", self._guard(write, "write", self._create_account))
        route("PATCH", _ACCOUNT, "arm.update_account", self._guard(write, "write", self._update_account))
        route("DELETE", _ACCOUNT, "arm.delete_account", self._guard(delete, "delete", self._delete_account))
        route("GET", _SUBSCRIPTION + _ACCOUNTS, "arm.list_accounts", self._guard(read, "read", self._list))
        route(
            "GET",
            rf"{_SUBSCRIPTION}/resourceGroups/(?P<resource_group>{_SEGMENT}){_ACCOUNTS}",
            "arm.list_accounts_by_rg",
            self._guard(read, "read", self._list),
        )
        poll = self._guard(read, "operations", self._poll)
        route("GET", _operation_path("operationStatuses"), "arm.operation_status", poll)
        route("GET", _operation_path("operationResults"), "arm.operation_result", poll)

    def _guard(self, bucket: str, action: str, handler: Callable[..., Response]) -> Callable[..., Response]:
        """What ARM's front door does before the resource provider sees a request: api-version, throttling, RBAC
        (``action`` is a key of ``ACTIONS``) and, for a request in a resource group, that the group exists."""

        def guarded(request: Request, **groups: str) -> Response:
            api_version = self.api_version(request)
            remaining = self._take(groups["subscription"], bucket)
            try:
                self.authorize(request, ACTIONS[action])
                if "resource_group" in groups:
                    self._require_resource_group(groups["subscription"], groups["resource_group"])
                response = handler(request, api_version=api_version, **groups)
            except HttpError as exc:
                exc.headers[f"x-ms-ratelimit-remaining-subscription-{bucket}"] = remaining
                raise
            response.headers[f"x-ms-ratelimit-remaining-subscription-{bucket}"] = remaining
            return response

        return guarded

    def api_version(self, request: Request) -> str:
        """The request's ``api-version``; 400 when it is missing or not a date (ARM's own check, before any RP's)."""
        api_version = request.query.get("api-version")
        if not api_version:
            raise self.service.error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not _API_VERSION.fullmatch(api_version):
            raise self.service.error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{api_version}' is invalid. Use a date such as '2025-09-01'.",
            )
        return api_version

    def _take(self, subscription: str, bucket: str) -> str:
        """Spend one token of the subscription's bucket; a 429 (nothing done) when it is empty."""
        with self._lock:
            key = (subscription.lower(), bucket)
            if key not in self._buckets:
                burst, rate = THROTTLE_LIMITS[bucket]
                self._buckets[key] = TokenBucket(burst * self._throttle_scale, rate * self._throttle_scale)
            limiter = self._buckets[key]
        allowed, remaining, wait = limiter.take()
        header = f"x-ms-ratelimit-remaining-subscription-{bucket}"
        if not allowed:
            seconds = max(1, math.ceil(wait))
            raise self.service.error(
                429,
                "TooManyRequests",
                f"The request is being throttled: subscription '{subscription}' ran out of {bucket} "
                f"({limiter.capacity:g} burst, {limiter.rate:g} per second). Retry after {seconds} seconds.",
                {"Retry-After": str(seconds), header: "0"},
            )
        return str(remaining)

    def authorize(self, request: Request, action: str) -> None:
        """403 when ``action`` is denied to the caller; the message is ARM's, naming the action and the scope."""
        identity = request.identity or ""
        if not self.can(identity, action):
            raise self.service.error(
                403,
                "AuthorizationFailed",
                f"The client '{identity}' with object id '{identity}' does not have authorization to perform action "
                f"'{action}' over scope '{request.path}' or the scope is invalid. If access was recently granted, "
                "please refresh your credentials.",
            )

    def _require_resource_group(self, subscription: str, resource_group: str) -> None:
        if not self.resource_group_exists(resource_group, subscription_id=subscription):
            raise self.service.error(
                404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found."
            )

    # Handlers --------------------------------------------------------------------------------------------------
    def _get_account(self, request: Request, *, api_version: str, **ids: str) -> Response:
        with self._lock:
            account = self._find(**ids)
            body = copy.deepcopy(account.body)
            if account.linger > 0:
                account.linger -= 1
                body["properties"]["provisioningState"] = "Accepted"
        return Response(200, body)

    def _list(
        self, request: Request, *, api_version: str, subscription: str, resource_group: str | None = None
    ) -> Response:
        token = request.query.get("$skipToken", "0")
        if not token.isdigit():
            raise self.service.error(400, "InvalidSkipToken", f"The $skipToken {token!r} is not one this list gave.")
        start = int(token)
        with self._lock:
            accounts = [
                account
                for (sub, rg, _), account in self._accounts.items()
                if sub == subscription.lower() and (resource_group is None or rg == resource_group.lower())
            ]
            for account in accounts:
                self._observe(account)
            accounts.sort(key=lambda a: a.id.lower())
            page = accounts[start : start + self.page_size]
            value = []
            for account in page:
                body = copy.deepcopy(account.body)
                if account.linger > 0:
                    body["properties"]["provisioningState"] = "Accepted"
                value.append(body)
            more = start + self.page_size < len(accounts)
        result: dict[str, Any] = {"value": value}
        if more:
            result["nextLink"] = (
                f"{self.url}{request.path}?api-version={api_version}&$skipToken={start + self.page_size}"
            )
        return Response(200, result)

    def _create_account(
        self, request: Request, *, api_version: str, subscription: str, resource_group: str, name: str
    ) -> Response:
        spec = self._object(request.json(), "The request body")
        if not _ACCOUNT_NAME.fullmatch(name):
            raise self.service.error(
                400,
                "InvalidResourceName",
                f"Account name {name!r} is invalid: use 2-64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit.",
            )
        with self._lock:
            key = (subscription.lower(), resource_group.lower(), name.lower())
            existing = self._accounts.get(key)
            if existing is not None:
                self._observe(existing)
                self._refuse_if_busy(existing)
            try:
                body = self._new_account(
                    subscription, resource_group, name, spec, existing=None if existing is None else existing.body
                )
            except InvalidAccount as exc:
                raise self.service.error(400, exc.code, exc.message) from exc
            failure = self._check_encryption(body) if "encryption" in body["properties"] else None
            if failure is not None and self.validation == "sync":
                raise self.service.error(400, *failure)
            body["properties"]["provisioningState"] = "Accepted" if existing else "Creating"
            account = existing or _Account(key, subscription, body)
            operation = self._start(account, body, failure, restore=None if existing is None else existing.body)
            self._accounts[key] = account
            headers = self._operation_headers(operation, api_version, location_header=False)
            return Response(200 if existing else 201, copy.deepcopy(body), headers)

    def _update_account(self, request: Request, *, api_version: str, **ids: str) -> Response:
        patch = self._object(request.json(), "The request body")
        with self._lock:
            account = self._find(**ids)
            self._observe(account)
            self._refuse_if_busy(account)
            try:
                body = self._patched(account.body, patch)
            except InvalidAccount as exc:
                raise self.service.error(400, exc.code, exc.message) from exc
            sent = patch.get("properties") or {}
            failure = self._check_encryption(body) if "encryption" in sent else None
            if failure is not None and self.validation == "sync":
                raise self.service.error(400, *failure)
            failure = failure or self._failures.pop(ids["name"].lower(), None)
            body["properties"]["provisioningState"] = "Accepted"
            operation = self._start(account, body, failure, restore=account.body)
            headers = self._operation_headers(operation, api_version, location_header=True)
            return Response(202, copy.deepcopy(body), headers)

    def _delete_account(
        self, request: Request, *, api_version: str, subscription: str, resource_group: str, name: str
    ) -> Response:
        with self._lock:
            key = (subscription.lower(), resource_group.lower(), name.lower())
            account = self._accounts.get(key)
            if account is None:
                return Response(204)
            self._observe(account)
            self._refuse_if_busy(account)
            del self._accounts[key]
            self._changed(account, deleted=True)
        return Response(200)

    def _poll(
        self, request: Request, *, api_version: str, subscription: str, location: str, endpoint: str, operation_id: str
    ) -> Response:
        with self._lock:
            operation = self._operations.get(operation_id)
            if operation is None or operation.subscription.lower() != subscription.lower():
                raise self.service.error(
                    404, "OperationNotFound", f"No operation {operation_id!r} in subscription '{subscription}'."
                )
            self._settle(operation, polled=True)
            headers = {} if operation.status != "InProgress" else {"Retry-After": str(self.retry_after)}
            if endpoint == "operationStatuses":
                return Response(200, operation.describe(), headers)
            if operation.status == "InProgress":
                headers.update(self._operation_headers(operation, api_version, location_header=True))
                return Response(202, None, headers)
            if operation.status == "Failed" and operation.failure is not None:
                raise self.service.error(400, *operation.failure)
            account = self._accounts.get(operation.account)
            return Response(204) if account is None else Response(200, copy.deepcopy(account.body))

    # Operations ------------------------------------------------------------------------------------------------
    def _start(
        self, account: _Account, body: dict[str, Any], failure: Refusal | None, *, restore: dict[str, Any] | None
    ) -> _Operation:
        operation = _Operation(
            id=str(uuid.uuid4()),
            subscription=account.subscription,
            location=_region(body["location"]),
            account=account.key,
            started=self.clock.now(),
            restore=copy.deepcopy(restore),
            failure=failure,
        )
        account.body = body
        account.operation = operation
        account.linger = 0
        self._operations[operation.id] = operation
        self._changed(account)
        return operation

    def _settle(self, operation: _Operation, *, polled: bool) -> None:
        """End the operation once it has answered "InProgress" ``lro_polls`` times and lasted ``lro_seconds``."""
        if operation.status != "InProgress":
            return
        if polled:
            operation.polls += 1
        enough_polls = operation.polls > self.lro_polls if polled else operation.polls >= self.lro_polls
        enough_polls |= time.monotonic() - operation.started_monotonic >= self.lro_unattended_seconds
        now = self.clock.now()
        if not enough_polls or now - operation.started < timedelta(seconds=self.lro_seconds):
            return
        operation.ended = now
        account = self._accounts[operation.account]
        account.operation = None
        if operation.failure is None:
            operation.status = "Succeeded"
            account.body["properties"]["provisioningState"] = "Succeeded"
            account.linger = self.linger_accepted_reads
        else:
            operation.status = "Failed"
            if operation.restore is None:
                account.body["properties"]["provisioningState"] = "Failed"
            else:
                account.body = operation.restore
        account.body["etag"] = _etag(now)
        self._changed(account)

    def _observe(self, account: _Account) -> None:
        if account.operation is not None:
            self._settle(account.operation, polled=False)

    def _refuse_if_busy(self, account: _Account) -> None:
        if account.operation is not None:
            raise self.service.error(
                409,
                "RequestConflict",
                f"Cannot modify resource with id '{account.id}' because the resource entity provisioning state is not "
                "terminal. Please wait for the provisioning state to become terminal and then retry the request.",
            )

    def _operation_headers(self, operation: _Operation, api_version: str, *, location_header: bool) -> dict[str, str]:
        base = f"{self.url}/subscriptions/{operation.subscription}/providers/{PROVIDER}/locations/"
        query = f"{operation.id}?api-version={api_version}"
        headers = {
            "Azure-AsyncOperation": f"{base}{operation.location}/operationStatuses/{query}",
            "Retry-After": str(self.retry_after),
        }
        if location_header:
            headers["Location"] = f"{base}{operation.location}/operationResults/{query}"
        return headers

    def _find(self, *, subscription: str, resource_group: str, name: str) -> _Account:
        account = self._accounts.get((subscription.lower(), resource_group.lower(), name.lower()))
        if account is None:
            raise self.service.error(
                404,
                "ResourceNotFound",
                f"The Resource '{ACCOUNT_TYPE}/{name}' under resource group '{resource_group}' was not found. "
                "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        self._observe(account)
        return account

    def _object(self, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.service.error(
                400, "InvalidRequestContent", f"{what} must be a JSON object; got {type(value).__name__}."
            )
        return value

    # The account's shape ---------------------------------------------------------------------------------------
    def _new_account(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        spec: dict[str, Any],
        *,
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The ARM JSON a PUT of ``spec`` gives (replacing ``existing``). Raises ``InvalidAccount``."""
        location = spec.get("location")
        if not isinstance(location, str) or not location.strip():
            raise InvalidAccount("LocationRequired", "The account needs a 'location', for example \"eastus\".")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise InvalidAccount(
                "InvalidKind", f"Kind {kind!r} is not supported here; use one of {list(KINDS)} (field 'kind')."
            )
        sku = _sku(spec.get("sku"))
        if sku is None:
            raise InvalidAccount("SkuRequired", 'The account needs a \'sku\' such as {"name": "S0"}.')
        if existing is not None:
            if _region(existing["location"]) != _region(location):
                raise InvalidAccount(
                    "InvalidResourceLocation",
                    f"Account {name!r} already exists in location '{existing['location']}'; it cannot move to "
                    f"'{location}'. Delete it first or keep its location.",
                )
            if existing["kind"] != kind:
                raise InvalidAccount(
                    "CannotChangeKind", f"Account {name!r} is of kind {existing['kind']!r}; it cannot become {kind!r}."
                )
        now = self.clock.now()
        properties = _writable(_properties(spec.get("properties")))
        if "encryption" in properties:
            properties["encryption"] = _encryption(properties["encryption"])
        previous = existing["properties"] if existing is not None else {}
        subdomain = properties.get("customSubDomainName") or name.lower()
        host = "openai.azure.com" if kind == "OpenAI" else "cognitiveservices.azure.com"
        properties.update(
            {
                "endpoint": previous.get("endpoint", f"https://{subdomain}.{host}/"),
                "internalId": previous.get("internalId", uuid.uuid4().hex),
                "dateCreated": previous.get("dateCreated", _utc(now)),
                "provisioningState": "Creating",
            }
        )
        body: dict[str, Any] = {
            "id": self.account_id(resource_group, name, subscription_id=subscription),
            "name": name,
            "type": ACCOUNT_TYPE,
            "location": location,
            "kind": kind,
            "sku": sku,
            "etag": _etag(now),
            "properties": properties,
        }
        tags = _tags(spec.get("tags"))
        if tags is not None:
            body["tags"] = tags
        identity = self._identity(spec.get("identity"), None if existing is None else existing.get("identity"))
        if identity is not None:
            body["identity"] = identity
        return body

    def _patched(self, current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        """The account after a PATCH: only the sent parts change; each sent property is replaced as a whole."""
        body = copy.deepcopy(current)
        moved = "location" in patch and _region(str(patch["location"])) != _region(current["location"])
        for fixed, changed in (("location", moved), ("kind", "kind" in patch and patch["kind"] != current["kind"])):
            if changed:
                raise InvalidAccount(
                    "PropertyChangeNotAllowed",
                    f"The {fixed} of account {current['name']!r} is {current[fixed]!r} and cannot change to "
                    f"{patch[fixed]!r}.",
                )
        if "sku" in patch:
            sku = _sku(patch["sku"])
            if sku is None:
                raise InvalidAccount(
                    "InvalidSku", f'Field \'sku\' must be like {{"name": "S0"}}; got {patch["sku"]!r}.'
                )
            body["sku"] = sku
        if "tags" in patch:
            body["tags"] = _tags(patch["tags"]) or {}
        if "identity" in patch:
            identity = self._identity(patch["identity"], current.get("identity"))
            body.pop("identity", None)
            if identity is not None:
                body["identity"] = identity
        properties = _writable(_properties(patch.get("properties")))
        if "encryption" in properties:
            properties["encryption"] = _encryption(properties["encryption"])
        body["properties"].update(properties)
        body["etag"] = _etag(self.clock.now())
        return body

    def _identity(self, spec: Any, previous: dict[str, Any] | None) -> dict[str, Any] | None:
        if spec is None:
            return None
        if not isinstance(spec, dict) or spec.get("type") not in IDENTITY_TYPES:
            got = spec.get("type") if isinstance(spec, dict) else spec
            raise InvalidAccount(
                "InvalidIdentity", f"identity.type must be one of {list(IDENTITY_TYPES)}; got {got!r}."
            )
        kind = spec["type"]
        if kind == "None":
            return None
        identity: dict[str, Any] = {"type": kind}
        if kind.startswith("SystemAssigned"):
            kept = previous.get("principalId") if previous else None
            identity["principalId"] = kept or str(uuid.uuid4())
            identity["tenantId"] = self.tenant_id
        assigned = spec.get("userAssignedIdentities")
        if kind.endswith("UserAssigned"):
            if not isinstance(assigned, dict) or not assigned:
                raise InvalidAccount(
                    "InvalidIdentity",
                    f"identity.type {kind!r} needs identity.userAssignedIdentities: an object whose keys are the "
                    "ARM ids of user-assigned identities.",
                )
            bad = [arm_id for arm_id in assigned if not _USER_ASSIGNED_ID.fullmatch(arm_id)]
            if bad:
                raise InvalidAccount(
                    "InvalidIdentity",
                    f"{bad[0]!r} is not the ARM id of a user-assigned identity (/subscriptions/{{sub}}/resourceGroups/"
                    "{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}).",
                )
            identity["userAssignedIdentities"] = {arm_id: self.user_assigned_identity(arm_id) for arm_id in assigned}
        elif assigned:
            raise InvalidAccount(
                "InvalidIdentity", f"identity.userAssignedIdentities is given but identity.type is {kind!r}."
            )
        return identity

    # The resource provider's checks on a customer-managed key -------------------------------------------------
    def _check_encryption(self, account: dict[str, Any]) -> Refusal | None:
        """Why the RP refuses the account's encryption settings, as (code, message); None when they are usable."""
        encryption = account["properties"]["encryption"]
        if encryption["keySource"] != "Microsoft.KeyVault":
            return None
        settings = encryption["keyVaultProperties"]
        name = account["name"]
        principal = _principal(account, settings.get("identityClientId"))
        if isinstance(principal, tuple):
            return principal
        vault = self._vault_by_url(settings["keyVaultUri"])
        if vault is None:
            return "KeyVaultNotFound", f"keyVaultUri '{settings['keyVaultUri']}' does not point at a known key vault."
        if not vault.purge_protection:
            return (
                "KeyVaultPurgeProtectionRequired",
                f"Key vault '{vault.name}' must have purge protection enabled to hold a customer-managed key.",
            )
        if _region(vault.location) != _region(account["location"]):
            return (
                "KeyVaultRegionMismatch",
                f"Key vault '{vault.name}' is in '{vault.location}' but account '{name}' is in "
                f"'{account['location']}'; the vault and the account must be in the same region.",
            )
        if not vault.has_access(principal):
            return (
                "KeyVaultAccessDenied",
                f"The managed identity '{principal}' of account '{name}' has no access to keys in vault "
                f"'{vault.name}'. Grant it get, wrapKey and unwrapKey (or the Key Vault Crypto Service Encryption "
                "User role).",
            )
        return _check_key(vault, settings["keyName"], settings["keyVersion"], self.clock.timestamp())

    # Admin API -------------------------------------------------------------------------------------------------
    def register_admin(self, admin: AdminService) -> None:
        """``POST /admin/arm/accounts`` (like ``add_account``), ``GET /admin/arm/accounts/{rg}/{name}``,
        ``POST /admin/arm/accounts/{rg}/{name}/fail-next-update`` {code, message}, ``PUT /admin/arm/settings``
        (like ``configure``), ``POST /admin/arm/deny`` {identity, action?}, ``POST /admin/arm/allow`` {identity} and
        ``POST /admin/arm/resource-groups`` {name, subscription_id?} (like ``add_resource_group``)."""
        account_path = r"/admin/arm/accounts/(?P<resource_group>[^/]+)/(?P<name>[^/]+)"

        def add_account(request: Request) -> Response:
            data = admin.body(request)
            known = {
                "name",
                "resource_group",
                "kind",
                "location",
                "identity",
                "user_assigned_identities",
                "encryption",
                "tags",
                "subscription_id",
            }
            unknown = sorted(set(data) - known)
            if unknown:
                raise admin.bad_request(f"Unknown account fields {unknown}; allowed: {sorted(known)}.")
            identity = admin.field(data, "identity", str, "SystemAssigned", hint='Use "None" for no identity.')
            assigned = admin.field(data, "user_assigned_identities", list, None)
            if assigned is not None and not all(isinstance(item, str) for item in assigned):
                raise admin.bad_request(
                    f"Field 'user_assigned_identities' must be a list of ARM ids; got {assigned!r}."
                )
            try:
                body = self.add_account(
                    admin.field(data, "name", str),
                    resource_group=admin.field(data, "resource_group", str, DEFAULT_RESOURCE_GROUP),
                    kind=admin.field(data, "kind", str, "OpenAI"),
                    location=admin.field(data, "location", str, None),
                    identity=None if identity == "None" else identity,
                    user_assigned_identities=assigned,
                    encryption=admin.field(data, "encryption", dict, None),
                    tags=admin.field(data, "tags", dict, None),
                    subscription_id=admin.field(data, "subscription_id", str, None),
                )
            except InvalidAccount as exc:
                raise admin.error(409 if exc.code == "AccountAlreadyExists" else 400, exc.code, exc.message) from exc
            return Response(201, body)

        def get_account(request: Request, resource_group: str, name: str) -> Response:
            try:
                return Response(200, self.account(resource_group, name))
            except KeyError as exc:
                raise admin.error(404, "NotFound", str(exc.args[0])) from exc

        def put_settings(request: Request) -> Response:
            data = admin.body(request)
            try:
                return Response(200, self.configure(**data))
            except ValueError as exc:
                raise admin.bad_request(str(exc)) from exc

        def fail_next_update(request: Request, resource_group: str, name: str) -> Response:
            get_account(request, resource_group, name)
            data = admin.body(request)
            code = admin.field(data, "code", str, hint='For example {"code": "InternalError", "message": "..."}.')
            message = admin.field(data, "message", str)
            try:
                self.fail_next_update(name, code, message)
            except ValueError as exc:
                raise admin.bad_request(str(exc)) from exc
            return Response(204)

        def deny(request: Request) -> Response:
            data = admin.body(request)
            try:
                self.deny(admin.field(data, "identity", str), admin.field(data, "action", str, "*"))
            except ValueError as exc:
                raise admin.bad_request(str(exc)) from exc
            return Response(204)

        def allow(request: Request) -> Response:
            self.allow(admin.field(admin.body(request), "identity", str))
            return Response(204)

        def add_resource_group(request: Request) -> Response:
            data = admin.body(request)
            unknown = sorted(set(data) - {"name", "subscription_id"})
            if unknown:
                raise admin.bad_request(f"Unknown resource group fields {unknown}; allowed: name, subscription_id.")
            name = admin.field(data, "name", str)
            subscription = admin.field(data, "subscription_id", str, self.subscription_id)
            try:
                self.add_resource_group(name, subscription_id=subscription)
            except ValueError as exc:
                raise admin.bad_request(str(exc)) from exc
            return Response(201, {"name": name, "subscription_id": subscription})

        admin.route("POST", "/admin/arm/accounts", "admin.arm_add_account", add_account)
        admin.route("GET", account_path, "admin.arm_account", get_account)
        admin.route("POST", account_path + "/fail-next-update", "admin.arm_fail_next_update", fail_next_update)
        admin.route("PUT", "/admin/arm/settings", "admin.arm_settings", put_settings)
        admin.route("POST", "/admin/arm/deny", "admin.arm_deny", deny)
        admin.route("POST", "/admin/arm/allow", "admin.arm_allow", allow)
        admin.route("POST", "/admin/arm/resource-groups", "admin.arm_add_resource_group", add_resource_group)


# Pure helpers ----------------------------------------------------------------------------------------------------


def _properties(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidAccount("InvalidRequestContent", f"Field 'properties' must be an object; got {value!r}.")
    return value


def _writable(properties: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in properties.items() if k not in _READ_ONLY_PROPERTIES}


def _sku(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    return copy.deepcopy(value)


def _tags(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidAccount("InvalidTags", f"Field 'tags' must be an object of strings; got {value!r}.")
    return dict(value)


def _encryption(value: Any) -> dict[str, Any]:
    """``properties.encryption`` checked for shape and normalised as ARM stores it. Raises ``InvalidAccount``."""
    if not isinstance(value, dict):
        raise InvalidAccount("InvalidEncryption", f"properties.encryption must be an object; got {value!r}.")
    source = value.get("keySource", "Microsoft.KeyVault")  # the spec's default
    if source not in KEY_SOURCES:
        raise InvalidAccount(
            "InvalidEncryption", f"properties.encryption.keySource must be one of {list(KEY_SOURCES)}; got {source!r}."
        )
    if source == "Microsoft.CognitiveServices":
        return {"keySource": source}
    settings = value.get("keyVaultProperties")
    if not isinstance(settings, dict):
        raise InvalidAccount(
            "InvalidEncryption",
            "keySource 'Microsoft.KeyVault' needs properties.encryption.keyVaultProperties with keyName, keyVersion "
            f"and keyVaultUri; got {settings!r}.",
        )
    normalised: dict[str, str] = {}
    for field in ("keyName", "keyVersion", "keyVaultUri", "identityClientId"):
        given = settings.get(field)
        optional = field in ("keyVersion", "identityClientId")
        if given is None and optional:
            continue
        if not isinstance(given, str) or (not optional and not given):
            kind = "a string" if optional else "a non-empty string"
            raise InvalidAccount("InvalidEncryption", f"keyVaultProperties.{field} must be {kind}; got {given!r}.")
        normalised[field] = given  # "" is kept as sent: a versionless key, or no user-assigned identity
    normalised.setdefault("keyVersion", "")
    return {"keySource": source, "keyVaultProperties": normalised}


def _principal(account: dict[str, Any], client_id: str | None) -> str | Refusal:
    """The principal id the account reaches Key Vault with, or why it has none."""
    name = account["name"]
    identity = account.get("identity") or {}
    assigned: dict[str, dict[str, str]] = identity.get("userAssignedIdentities", {})
    if client_id:
        for ids in assigned.values():
            if ids["clientId"].lower() == client_id.lower():
                return ids["principalId"]
        known = sorted(ids["clientId"] for ids in assigned.values())
        return (
            "UserAssignedIdentityNotFound",
            f"keyVaultProperties.identityClientId '{client_id}' matches none of the user-assigned identities of "
            f"account '{name}' (their clientIds: {known}). Use the clientId of one of them.",
        )
    if "principalId" in identity:
        return str(identity["principalId"])
    if assigned:
        return (
            "ManagedIdentityRequired",
            f"Account '{name}' has only user-assigned identities; set keyVaultProperties.identityClientId to the "
            "clientId of the one that may use the key.",
        )
    return (
        "ManagedIdentityRequired",
        f"Account '{name}' has no managed identity, so it cannot reach Key Vault. Give it a system-assigned or "
        "user-assigned identity first.",
    )


def _check_key(vault: Any, key_name: str, version: str, now: int) -> Refusal | None:
    """Why this key version cannot be an account's customer-managed key; None when it can.

    An empty ``version`` is a versionless key (Terraform sends ``keyVersion: ""``, Azure accepts it; azure-facts
    §10.13): it resolves as Key Vault resolves a versionless key id, to the key's latest version, and that version must
    pass every check (enabled, valid now, RSA 2048). A disabled latest version is refused, never skipped.
    """
    try:
        vault.versions(key_name)
    except KeyError:
        return "KeyVaultKeyNotFound", f"Key '{key_name}' was not found in vault '{vault.name}'."
    try:
        record = vault.get(key_name, version)  # the latest version when ``version`` is ""
    except KeyError:
        return "KeyVaultKeyNotFound", f"Key '{key_name}' in vault '{vault.name}' has no version '{version}'."
    label = f"Version '{record.version}' of key '{key_name}'"
    if not version:
        label = f"The latest version '{record.version}' of key '{key_name}' (keyVersion is empty)"
    if not record.enabled:
        return "KeyVaultKeyVersionDisabled", f"{label} is disabled. Enable it or use an enabled version."
    if record.nbf is not None and now < record.nbf:
        return "KeyVaultKeyNotYetValid", f"{label} is not valid before {_utc(_from_epoch(record.nbf))}."
    if record.exp is not None and now >= record.exp:
        return "KeyVaultKeyExpired", f"{label} expired at {_utc(_from_epoch(record.exp))}. Use a version valid now."
    if record.kty not in SUPPORTED_KEY_TYPES or record.size != SUPPORTED_KEY_SIZE:
        return (
            "KeyVaultKeyNotSupported",
            f"{label} is {record.kty} {record.size}; only RSA or RSA-HSM keys of size 2048 are supported.",
        )
    return None


def _from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
