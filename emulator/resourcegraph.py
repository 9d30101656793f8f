"""Azure Resource Graph's ``resources`` query, on ARM's listener: the one query the rotation service runs to find every
account with a customer-managed key, across subscriptions, in one call.

It speaks the wire protocol of ``POST /providers/Microsoft.ResourceGraph/resources`` (Microsoft's REST spec,
``resourcegraph.json``, stable 2019-04-01 to 2024-04-01) to the unmodified ``azure-mgmt-resourcegraph`` client. It
does not run KQL: it answers exactly one query, ``CMK_ACCOUNTS_QUERY``, and refuses any other with Resource Graph's
400 ``BadRequest``/``InvalidQuery``. What it does model are the parts a caller must survive::

    POST ──► ARM's front door: token (401), api-version (400, or 404 InvalidResourceType for a version
         │   Resource Graph lacks), action Microsoft.ResourceGraph/resources/read denied? (403 AuthorizationFailed)
         ├─► the user's quota: graph_quota queries per graph_window_seconds of real time (429 RateLimiting)
         ├─► the request: the one query, its scope (subscriptions, the one management group), its options (400)
         └─► rows as Resource Graph saw them graph_lag_seconds ago on the emulator clock, minus what the caller may
             not read (accounts/read denied: no rows), ordered by id, paged with $top / $skip / $skipToken

Resource Graph is a copy of ARM that lags it. ARM tells this module of every change to an account (``Arm.watch``) and
each change is kept as a (time, row) snapshot; a query answers with each account's latest snapshot at least
``graph_lag_seconds`` old. Every answer past authentication carries ``x-ms-user-quota-remaining`` and
``x-ms-user-quota-resets-after`` (Learn, "Guidance for throttled requests in Azure Resource Graph").

It must never answer a query other than ``CMK_ACCOUNTS_QUERY`` with rows, never show a row to an identity that may not
read accounts, and never charge the quota for a request ARM's front door refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from emulator.arm import ACTIONS, AccountKey, Arm
from emulator.http import HttpError, Request, Response

# The one query the emulator answers, compared after collapsing whitespace (``normalise``).
CMK_ACCOUNTS_QUERY = (
    "resources"
    " | where type =~ 'microsoft.cognitiveservices/accounts'"
    " | where properties.encryption.keySource =~ 'Microsoft.KeyVault'"
    " | project id, name, type, subscriptionId, resourceGroup, location,"
    " keyVaultUri = tostring(properties.encryption.keyVaultProperties.keyVaultUri),"
    " keyName = tostring(properties.encryption.keyVaultProperties.keyName),"
    " keyVersion = tostring(properties.encryption.keyVaultProperties.keyVersion)"
)
# The projected columns, in order; every one is a string (``tostring`` of a missing value is "").
COLUMNS = ("id", "name", "type", "subscriptionId", "resourceGroup", "location", "keyVaultUri", "keyName", "keyVersion")

# The stable api-versions of the spec (azure-rest-api-specs, specification/resourcegraph/.../stable). Another version
# gets ARM's 404 InvalidResourceType, as Azure answers (microsoft/ARI#306, azure-sdk-for-python#17932).
API_VERSIONS = ("2019-04-01", "2021-03-01", "2022-10-01", "2024-04-01")
# 2019-04-01 answers a table unless asked otherwise (its spec: "Query output in tabular format"); later versions
# default to an object array (the spec's ``"default": "objectArray"``).
TABLE_BY_DEFAULT = frozenset({"2019-04-01"})
# $top: the spec's maximum is 1000; without it a query returns at most 1000 records (Learn, "Working with large
# Azure resource data sets"; the 100 often quoted is the default of az graph query's --first, not of the REST API).
MAX_TOP = 1000

PATH = r"(?i)/providers/Microsoft\.ResourceGraph/resources"
INVALID_QUERY = (
    "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error "
    "before retrying."
)
THROTTLED = (
    "Client application has been throttled and should not attempt to repeat the request until an amount of time has "
    "elapsed. Please see https://aka.ms/resourcegraph-throttling for help."
)

Row = dict[str, str]


class BadQuery(ValueError):
    """A request Resource Graph answers 400 ``BadRequest``. ``code`` and ``detail`` are its one ``details`` entry."""

    def __init__(self, message: str, code: str, detail: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class QueryRequest:
    """A ``QueryRequest`` body, parsed and checked once. ``subscriptions`` None means every subscription."""

    subscriptions: tuple[str, ...] | None
    top: int | None
    skip: int | None
    skip_token: tuple[int, int] | None  # (offset, page size) decoded from $skipToken
    result_format: str


# Pure decisions -------------------------------------------------------------------------------------------------


def normalise(query: str) -> str:
    """The query with every run of whitespace (newlines included) as one space, and no leading or trailing space."""
    return " ".join(query.split())


def parse_request(body: Any, *, api_version: str, management_group: str) -> QueryRequest:
    """The request, or ``BadQuery`` naming what is wrong with it. Raises before anything is looked up."""
    if not isinstance(body, dict):
        raise _bad_content(f"The request body must be a JSON object (a QueryRequest); got {type(body).__name__}.")
    query = body.get("query")
    if not isinstance(query, str):
        raise _bad_content(f"Field 'query' must be a string; got {query!r}.")
    if normalise(query) != CMK_ACCOUNTS_QUERY:
        raise BadQuery(
            "The emulator runs only one Resource Graph query, emulator.resourcegraph.CMK_ACCOUNTS_QUERY (compared "
            f'after collapsing whitespace): "{CMK_ACCOUNTS_QUERY}". Got: "{normalise(query)}".',
            "InvalidQuery",
            INVALID_QUERY,
        )
    if body.get("facets"):
        raise _bad_content("Facets are not emulated; send the query without 'facets'.")
    subscriptions = _names(body, "subscriptions")
    for group in _names(body, "managementGroups") or ():
        if group.lower() != management_group.lower():
            raise BadQuery(
                f"The emulator has one management group, '{management_group}' (the tenant root group, named after "
                f"the tenant id), which holds every subscription; got '{group}'.",
                "ManagementGroupsContainInvalidIds",
                f"The provided management groups must be valid. Given: '{group}'.",
            )
    options = {} if body.get("options") is None else body["options"]
    if not isinstance(options, dict):
        raise _bad_content(f"Field 'options' must be an object (QueryRequestOptions); got {options!r}.")
    result_format = options.get("resultFormat", "table" if api_version in TABLE_BY_DEFAULT else "objectArray")
    if result_format not in ("table", "objectArray"):
        raise _bad_content(f'options.resultFormat must be "table" or "objectArray"; got {result_format!r}.')
    token = options.get("$skipToken")
    return QueryRequest(
        subscriptions=None if subscriptions is None else tuple(subscriptions),
        top=_whole(options, "$top", 1, MAX_TOP),
        skip=_whole(options, "$skip", 0, None),
        skip_token=None if token is None else decode_skip_token(token),
        result_format=result_format,
    )


def answer(rows: list[Row], request: QueryRequest) -> dict[str, Any]:
    """The ``QueryResponse`` for one page of ``rows`` (every matching row, in order).

    ``$top`` sets the page size and ``$skip`` the offset, each overriding what a ``$skipToken`` carries (the spec's
    QueryRequestOptions). ``resultTruncated`` is "false": Resource Graph sets it only when it cannot page, and the
    query projects ``id``, so it always can (Learn, "Guidance for pagination"; MicrosoftDocs/azure-docs#50606).
    """
    token_offset, token_top = request.skip_token or (0, MAX_TOP)
    offset = request.skip if request.skip is not None else token_offset
    top = request.top or token_top
    page = rows[offset : offset + top]
    body: dict[str, Any] = {"totalRecords": len(rows), "count": len(page), "resultTruncated": "false", "facets": []}
    if offset + top < len(rows):
        body["$skipToken"] = encode_skip_token(offset + top, top)
    if request.result_format == "table":
        body["data"] = {
            "columns": [{"name": column, "type": "string"} for column in COLUMNS],
            "rows": [[row[column] for column in COLUMNS] for row in page],
        }
    else:
        body["data"] = page
    return body


def row(account: dict[str, Any]) -> Row | None:
    """What ``CMK_ACCOUNTS_QUERY`` projects from an account's ARM JSON; None when its key source is not Key Vault.

    Resource Graph lower-cases ``type`` (the spec's examples) and ``resourceGroup`` (tomkerkhove/promitor#1492,
    Azure/azure-dev#119); ``id`` keeps ARM's casing.
    """
    encryption = account.get("properties", {}).get("encryption") or {}
    if str(encryption.get("keySource", "")).lower() != "microsoft.keyvault":
        return None
    settings = encryption.get("keyVaultProperties") or {}
    segments = account["id"].split("/")  # "", "subscriptions", {sub}, "resourceGroups", {rg}, "providers", ...
    return {
        "id": account["id"],
        "name": account["name"],
        "type": account["type"].lower(),
        "subscriptionId": segments[2],
        "resourceGroup": segments[4].lower(),
        "location": account["location"],
        "keyVaultUri": _tostring(settings.get("keyVaultUri")),
        "keyName": _tostring(settings.get("keyName")),
        "keyVersion": _tostring(settings.get("keyVersion")),
    }


def encode_skip_token(offset: int, top: int) -> str:
    """An opaque continuation token: the next page's offset and size, as the spec says a token captures."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset, "top": top}).encode()).decode()


def decode_skip_token(token: Any) -> tuple[int, int]:
    """(offset, page size) from a token ``encode_skip_token`` made; ``BadQuery`` for anything else."""
    try:
        fields = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset, top = fields["offset"], fields["top"]
        valid = all(type(value) is int for value in (offset, top)) and offset >= 0 and 1 <= top <= MAX_TOP
    except (AttributeError, binascii.Error, ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise BadQuery(
            f"The $skipToken {token!r} is not one the emulator gave: pass the $skipToken of the previous answer "
            "unchanged.",
            "InvalidSkipToken",
            f"The $skipToken {token!r} is invalid.",
        )
    return offset, top


def as_of(history: list[tuple[datetime, Row | None]], moment: datetime) -> Row | None:
    """The latest snapshot taken at or before ``moment``; None when there is none (or the account had no row)."""
    seen = [snapshot for taken, snapshot in history if taken <= moment]
    return seen[-1] if seen else None


def _bad_content(message: str) -> BadQuery:
    return BadQuery(message, "InvalidRequestContent", message)


def _names(body: dict[str, Any], field: str) -> list[str] | None:
    """A list of names in the body; None when it is missing or empty (both mean: not scoped by it)."""
    value = body.get(field)
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad_content(f"Field {field!r} must be a list of strings; got {value!r}.")
    return value


def _whole(options: dict[str, Any], field: str, minimum: int, maximum: int | None) -> int | None:
    value = options.get(field)
    if value is None:
        return None
    if type(value) is not int or value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}-{maximum}" if maximum is not None else f">= {minimum}"
        raise _bad_content(f"options.{field} must be a whole number {bound}; got {value!r}.")
    return value


def _tostring(value: Any) -> str:
    """KQL's ``tostring``: "" for a missing value, a string as it is, anything else as compact JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _hhmmss(seconds: float) -> str:
    whole = max(0, math.ceil(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


# The service ----------------------------------------------------------------------------------------------------


class ResourceGraph:
    """Resource Graph over the accounts of one ``Arm``, served on ARM's listener (``emulator.arm_url``).

    Its settings are ARM's (``arm.configure``, ``PUT /admin/arm/settings``): ``graph_quota``,
    ``graph_window_seconds`` and ``graph_lag_seconds``. Its one management group is the tenant root group, named after
    the tenant id (``management_group``), and holds every subscription.
    """

    def __init__(self, arm: Arm) -> None:
        self.arm = arm
        self.management_group = arm.tenant_id
        self._lock = threading.Lock()
        self._history: dict[AccountKey, list[tuple[datetime, Row | None]]] = {}
        self._windows: dict[str, tuple[float, int]] = {}  # identity -> (window start, queries in it), real time
        arm.watch(self._record)
        arm.service.route("POST", PATH, "graph.resources", self._resources)

    def rows(self, identity: str, subscriptions: Iterable[str] | None = None) -> list[Row]:
        """Every row the query gives ``identity`` now (every page, lag applied), ordered by id; None: every
        subscription."""
        if not self.arm.can(identity, ACTIONS["read"]):
            return []
        wanted = None if subscriptions is None else {subscription.lower() for subscription in subscriptions}
        moment = self.arm.clock.now() - timedelta(seconds=self.arm.graph_lag_seconds)
        with self._lock:
            found = [as_of(history, moment) for history in self._history.values()]
        rows = [r for r in found if r and (wanted is None or r["subscriptionId"].lower() in wanted)]
        return sorted(rows, key=lambda r: r["id"].lower())

    def _record(self, key: AccountKey, account: dict[str, Any] | None) -> None:
        snapshot = None if account is None else row(account)
        with self._lock:
            self._history.setdefault(key, []).append((self.arm.clock.now(), snapshot))

    # The route ------------------------------------------------------------------------------------------------
    def _resources(self, request: Request) -> Response:
        """Every answer carries the caller's quota headers, errors included, as Resource Graph adds them to each."""
        identity = request.identity or ""
        try:
            response = self._answer(request, identity)
        except HttpError as exc:
            exc.headers.update(self._quota_headers(identity))
            raise
        response.headers.update(self._quota_headers(identity))
        return response

    def _answer(self, request: Request, identity: str) -> Response:
        api_version = self.arm.api_version(request)
        if api_version not in API_VERSIONS:
            raise self.arm.service.error(
                404,
                "InvalidResourceType",
                "The resource type 'resources' could not be found in the namespace 'Microsoft.ResourceGraph' for api "
                f"version '{api_version}'. The supported api-versions are '{','.join(API_VERSIONS)}'.",
            )
        self.arm.authorize(request, ACTIONS["graph"])
        self._spend(identity)
        try:
            query = parse_request(request.json(), api_version=api_version, management_group=self.management_group)
        except BadQuery as exc:
            detail = {"code": exc.code, "message": exc.detail}
            raise HttpError(
                400, {"error": {"code": "BadRequest", "message": exc.message, "details": [detail]}}
            ) from exc
        return Response(200, answer(self.rows(identity, query.subscriptions), query))

    # The user's quota -----------------------------------------------------------------------------------------
    def _window(self, identity: str, now: float) -> tuple[float, int]:
        """The identity's current window (start, queries counted); a new one once the last has run out."""
        start, used = self._windows.get(identity, (now, 0))
        return (now, 0) if now - start >= self.arm.graph_window_seconds else (start, used)

    def _spend(self, identity: str) -> None:
        """Count one query; 429 ``RateLimiting`` (nothing counted) when the window's quota is spent."""
        with self._lock:
            now = time.monotonic()
            start, used = self._window(identity, now)
            if used >= self.arm.graph_quota:
                wait = max(1, math.ceil(start + self.arm.graph_window_seconds - now))
                detail = {"code": "RateLimiting", "message": THROTTLED}
                message = f"Identity '{identity}' sent {used} queries in {self.arm.graph_window_seconds:g} seconds."
                raise HttpError(
                    429,
                    {"error": {"code": "RateLimiting", "message": message, "details": [detail]}},
                    {"Retry-After": str(wait)},
                )
            self._windows[identity] = (start, used + 1)

    def _quota_headers(self, identity: str) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            start, used = self._window(identity, now)
        return {
            "x-ms-user-quota-remaining": str(max(0, self.arm.graph_quota - used)),
            "x-ms-user-quota-resets-after": _hhmmss(start + self.arm.graph_window_seconds - now),
        }
