"""Discovery: every Cognitive Services account whose customer-managed key is one of the given keys, across
subscriptions, including accounts nobody listed in ``ROTATION_TARGETS`` (DESIGN §7.3).

::

    Resource Graph   one query (ACCOUNTS_QUERY) over the scope: the configured subscriptions, one management group,
    │                or the tenant (every subscription the identity can read); paged by $skipToken, each page sent
    │                only when the caller's quota allows it (x-ms-user-quota-remaining / -resets-after)
    │     rows on a key ─► each account read through ARM, because Resource Graph lags ARM by minutes: reported only
    │                      when ARM says it uses one of the keys; gone (404) or moved to another key: dropped; a read
    │                      that fails: that account's failure, the others go on
    │
    └─ any RotationError (403, 400, unreachable, throttled past azure-core's retries, an answer of another shape)
       ─► ARM listing, GET /subscriptions/{id}/providers/Microsoft.CognitiveServices/accounts per subscription: the
          configured subscriptions, or else the ones the caller knows (its targets' accounts). ARM's list is current,
          so nothing is read twice. A listing that fails is that subscription's failure, the others go on.

What the fallback cannot search: without configured subscriptions it lists only the known ones. Listing every
subscription the identity can read needs the Subscriptions API, and a management group's subscriptions need the
Management Groups API; the service uses neither, so an account in any other subscription stays unseen until Resource
Graph answers again.

Discovery must never write: it sends Resource Graph's one query and ARM reads, nothing else. It decides nothing about
what it finds either (drift, enrolment): the result says which path served, why, what it searched and what failed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, cast

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError

from rotation.azure_errors import translate
from rotation.config import DEFAULT_CONCURRENCY
from rotation.engine import each
from rotation.errors import ConfigError, InvalidRequest, NotFound, RotationError
from rotation.log import Event, emit
from rotation.model import AccountEncryption, AccountRef, KeyRef, Scope, normalize_vault_url
from rotation.ports import AccountsPort
from rotation.redact import described, redacted

if TYPE_CHECKING:  # the SDK itself is imported on first use: a trigger that never discovers never loads it
    from azure.core.pipeline import PipelineResponse
    from azure.mgmt.resourcegraph import ResourceGraphClient
    from azure.mgmt.resourcegraph.models import QueryRequest, QueryResponse


# The one query: every account whose key source is Key Vault, with the columns discovery reads. Its text is the
# emulator's CMK_ACCOUNTS_QUERY (a test compares the two after collapsing whitespace): the emulator answers no other.
ACCOUNTS_QUERY = (
    "resources"
    " | where type =~ 'microsoft.cognitiveservices/accounts'"
    " | where properties.encryption.keySource =~ 'Microsoft.KeyVault'"
    " | project id, name, type, subscriptionId, resourceGroup, location,"
    " keyVaultUri = tostring(properties.encryption.keyVaultProperties.keyVaultUri),"
    " keyName = tostring(properties.encryption.keyVaultProperties.keyName),"
    " keyVersion = tostring(properties.encryption.keyVaultProperties.keyVersion)"
)
MAX_PAGE_SIZE = 1000  # Resource Graph's largest $top (its REST spec)
MAX_QUOTA_WAIT = 60.0  # seconds; a longer (or absurd) quota reset is cut to this, as a Retry-After is
QUOTA_REMAINING = "x-ms-user-quota-remaining"
QUOTA_RESETS_AFTER = "x-ms-user-quota-resets-after"
_GRAPH_READ = "Microsoft.ResourceGraph/resources/read"
_HH_MM_SS = re.compile(r"([0-9]+):([0-5][0-9]):([0-5][0-9](?:\.[0-9]+)?)")


class DiscoveryPath(StrEnum):
    """Which source named the accounts."""

    RESOURCE_GRAPH = "resource_graph"  # Resource Graph's rows, each confirmed by an ARM read
    ARM = "arm"  # ARM's listing per subscription: Resource Graph could not be used


@dataclass(frozen=True)
class GraphRow:
    """The columns of one ``ACCOUNTS_QUERY`` row that discovery reads (``tostring`` of a missing value is "")."""

    id: str
    key_vault_uri: str
    key_name: str

    def names(self, key: KeyRef) -> bool:
        """The row's key is ``key``: the same rule as ``AccountEncryption.uses`` (the vault URL normalised, its host
        and the key's name compared without case)."""
        try:
            vault_url = normalize_vault_url(self.key_vault_uri)
        except ConfigError:
            return False
        return vault_url == key.vault_url and self.key_name.lower() == key.name.lower()


@dataclass(frozen=True)
class Discovery:
    """What one discovery found, and how.

    ``accounts`` has every key asked about (an empty tuple when no account uses it), each with the accounts ARM says
    use it, in ARM's state, sorted by account id. ``account_failures`` are accounts Resource Graph named on a key
    whose ARM read failed (they may or may not still use it); ``subscription_failures`` are subscriptions whose ARM
    listing failed (the fallback). ``fallback_reason`` is Resource Graph's error, None when it served. ``searched``
    is the scope: ``"tenant"``, ``"management group <id>"``, ``"subscriptions <id>, ..."``, or, for a fallback that
    knew none, ``"no subscription"``.
    """

    path: DiscoveryPath
    searched: str
    accounts: Mapping[KeyRef, tuple[AccountEncryption, ...]]
    account_failures: Mapping[AccountRef, RotationError] = field(default_factory=dict)
    subscription_failures: Mapping[str, RotationError] = field(default_factory=dict)
    fallback_reason: str | None = None
    narrowed: bool = False  # the fallback listed only the known subscriptions in place of a tenant or management group

    @property
    def complete(self) -> bool:
        """It searched everywhere it was asked to, and nothing failed: no account on a key can be missing."""
        return not (self.narrowed or self.account_failures or self.subscription_failures)

    def to_dict(self) -> dict[str, object]:
        """How the accounts were found, and what failed (the accounts themselves are the caller's to show)."""
        return {
            "path": self.path.value,
            "searched": self.searched,
            "fallback_reason": self.fallback_reason,
            "failures": [
                {"account": account.id, "reason": exc.reason.value, "error": str(exc)}
                for account, exc in self.account_failures.items()
            ]
            + [
                {"subscription": subscription, "reason": exc.reason.value, "error": str(exc)}
                for subscription, exc in self.subscription_failures.items()
            ],
        }

    def summary(self) -> str:
        """One line: what was found where, and every failure by account or subscription with its reason."""
        found = sum(len(states) for states in self.accounts.values())
        per_key = "; ".join(f"{key.id}: {len(states)}" for key, states in self.accounts.items())
        text = f"{found} accounts on {len(self.accounts)} keys through {self.path} ({self.searched})"
        text += f" [{per_key}]" if per_key else ""
        failures = [f"account {a.id} ({e.reason})" for a, e in self.account_failures.items()]
        failures += [f"subscription {s} ({e.reason})" for s, e in self.subscription_failures.items()]
        return text + (f"; failed: {', '.join(failures)}" if failures else "")


# Pure decisions -------------------------------------------------------------------------------------------------


def parse_rows(data: object) -> list[GraphRow]:
    """The rows of an ``objectArray`` answer. ``InvalidRequest`` for any other shape: Resource Graph is then not
    usable, and discovery falls back to ARM."""
    if not isinstance(data, list):
        raise InvalidRequest(f"Resource Graph answered {type(data).__name__} data, not the requested object array")
    return [_row(item) for item in data]


def _row(item: object) -> GraphRow:
    if isinstance(item, dict):
        account_id, vault_uri, key_name = item.get("id"), item.get("keyVaultUri"), item.get("keyName")
        if isinstance(account_id, str) and isinstance(vault_uri, str) and isinstance(key_name, str):
            return GraphRow(account_id, vault_uri, key_name)
    raise InvalidRequest(
        f"Resource Graph answered a row without the query's id, keyVaultUri and keyName: {described(item)}"
    )


def accounts_on(rows: Iterable[GraphRow], keys: Sequence[KeyRef]) -> list[AccountRef]:
    """The accounts of the rows that name one of ``keys``, each once, in the rows' order. ``InvalidRequest`` when such
    a row's id is not a Cognitive Services account id (Resource Graph's answer is then not trusted)."""
    found: dict[AccountRef, None] = {}
    for row in rows:
        if not any(row.names(key) for key in keys):
            continue
        try:
            found[AccountRef.parse(row.id)] = None
        except ConfigError as exc:
            raise InvalidRequest(
                f"Resource Graph named an account on a target key by an id ARM never gives: {exc}"
            ) from exc
    return list(found)


def by_key(keys: Sequence[KeyRef], states: Iterable[AccountEncryption]) -> dict[KeyRef, tuple[AccountEncryption, ...]]:
    """Each key's accounts among ``states``, by ARM's word (``AccountEncryption.uses``), sorted by account id."""
    ordered = sorted(states, key=lambda state: state.account.id.lower())
    return {key: tuple(state for state in ordered if state.uses(key)) for key in keys}


def resets_after(text: str | None) -> float | None:
    """Seconds in ``x-ms-user-quota-resets-after`` (``hh:mm:ss``, Learn's "Guidance for throttled requests in Azure
    Resource Graph"); None when it is missing or malformed."""
    match = _HH_MM_SS.fullmatch(text.strip()) if text else None
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def quota_wait(headers: Mapping[str, str]) -> float:
    """Seconds to wait before the next page: the quota's reset when an answer says none is left, else 0. A reset
    past ``MAX_QUOTA_WAIT`` is cut to it; without a readable reset nothing waits (a 429 is then retried by
    azure-core after its Retry-After)."""
    remaining = headers.get(QUOTA_REMAINING)
    try:
        left = int(remaining) if remaining is not None else None
    except ValueError:
        left = None
    if left is None or left > 0:
        return 0.0
    wait = resets_after(headers.get(QUOTA_RESETS_AFTER))
    return 0.0 if wait is None else min(wait, MAX_QUOTA_WAIT)


# Resource Graph -------------------------------------------------------------------------------------------------


class GraphPort(Protocol):
    def rows(self, scope: Scope) -> list[GraphRow]:
        """Every row of ``ACCOUNTS_QUERY`` over ``scope``, every page; raises ``RotationError``, never returns part."""
        ...


class ResourceGraph:
    """``GraphPort`` over ``azure-mgmt-resourcegraph``'s synchronous client, at ARM's endpoint
    (``{arm}/providers/Microsoft.ResourceGraph/resources`` in every cloud).

    Pages are ``page_size`` rows (None: Resource Graph's maximum, 1000). Each answer carries the caller's quota; when
    it says none is left and another page is due, the next page waits the quota's reset (``sleep``), so a long listing
    is not sent into a 429. azure-core still retries a 429 after its Retry-After, a bounded number of times."""

    def __init__(
        self,
        credential: TokenCredential,
        *,
        base_url: str | None = None,
        credential_scopes: Sequence[str] | None = None,
        page_size: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **client_kwargs: Any,
    ) -> None:
        page_size = MAX_PAGE_SIZE if page_size is None else page_size
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ConfigError(f"Resource Graph's page size must be 1 to {MAX_PAGE_SIZE}; got {page_size}")
        self._credential = credential
        self._base_url = base_url
        self._page_size = page_size
        self._sleep = sleep
        self._client_kwargs: dict[str, Any] = {
            "retry_total": 4,
            "retry_backoff_factor": 0.8,
            "retry_backoff_max": 30,
            **client_kwargs,
        }
        if credential_scopes is not None:  # None: the SDK's, for its cloud_setting (the public cloud by default)
            self._client_kwargs["credential_scopes"] = list(credential_scopes)

    def rows(self, scope: Scope) -> list[GraphRow]:
        from azure.mgmt.resourcegraph import ResourceGraphClient

        try:
            with ResourceGraphClient(self._credential, base_url=self._base_url, **self._client_kwargs) as client:
                return self._pages(client, scope)
        except AzureError as exc:
            raise translate(
                exc,
                action="query the accounts with a customer-managed key",
                resource=f"Resource Graph ({scope})",
                permission=f"{_GRAPH_READ} on the {scope}",
            ) from exc

    def _pages(self, client: ResourceGraphClient, scope: Scope) -> list[GraphRow]:
        rows: list[GraphRow] = []
        token: str | None = None
        while True:
            answer, headers = cast(
                "tuple[QueryResponse, MutableMapping[str, str]]",
                client.resources(self._request(scope, token), cls=_with_headers),
            )
            rows += parse_rows(answer.data)
            token = answer.skip_token
            if not token:
                return rows
            wait = quota_wait(headers)
            if wait > 0:
                self._sleep(wait)

    def _request(self, scope: Scope, skip_token: str | None) -> QueryRequest:
        from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions, ResultFormat

        return QueryRequest(
            query=ACCOUNTS_QUERY,
            subscriptions=list(scope.subscriptions) or None,
            management_groups=None if scope.management_group is None else [scope.management_group],
            options=QueryRequestOptions(
                top=self._page_size, skip_token=skip_token, result_format=ResultFormat.OBJECT_ARRAY
            ),
        )


def _with_headers(
    response: PipelineResponse[Any, Any], answer: QueryResponse, _: object
) -> tuple[QueryResponse, MutableMapping[str, str]]:
    """The SDK's ``cls`` hook: the page with its answer's headers (the SDK's third argument is always empty)."""
    return answer, response.http_response.headers


# Discovery ------------------------------------------------------------------------------------------------------


class AccountDiscovery:
    """Finds the accounts on a set of keys: Resource Graph first, every find confirmed by ARM; ARM's listing when
    Resource Graph cannot be used. ARM is read on one event loop per discovery, at most ``concurrency`` requests at
    once, each paced by its subscription's budget (``rotation.pacing``, through ``accounts``)."""

    def __init__(
        self,
        graph: GraphPort,
        accounts: AccountsPort,
        *,
        scope: Scope | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"discovery's concurrency must be at least 1; got {concurrency}")
        self._graph = graph
        self._accounts = accounts
        self._scope = scope or Scope()
        self._concurrency = concurrency

    def discover(self, keys: Iterable[KeyRef], *, known_subscriptions: Iterable[str] = ()) -> Discovery:
        """The accounts on each of ``keys``. ``known_subscriptions`` (the subscriptions of the targets' accounts) are
        what the ARM fallback lists when no subscriptions are configured. Raises ``ConfigError`` for a known
        subscription that is not a subscription id; otherwise every failure is in the result."""
        wanted = tuple(dict.fromkeys(keys))
        known = Scope(tuple(known_subscriptions)).subscriptions  # checked and in lower case, before anything is read
        try:
            named = accounts_on(self._graph.rows(self._scope), wanted)
        except RotationError as exc:
            found = self._listed(wanted, known, exc)
        else:
            found = asyncio.run(self._confirmed(wanted, named))
        emit(
            Event.DISCOVERY_COMPLETED,
            found.summary(),
            path=found.path.value,
            searched=found.searched,
            accounts=sum(len(states) for states in found.accounts.values()),
            failures=len(found.account_failures) + len(found.subscription_failures),
        )
        return found

    async def _confirmed(self, keys: Sequence[KeyRef], named: Sequence[AccountRef]) -> Discovery:
        """Resource Graph's finds as ARM has them now: an account gone (404) or on another key is dropped."""
        async with self._accounts.session() as arm:
            reads = await each(arm.get, named, at_once=self._concurrency)
        states = [read for read in reads if isinstance(read, AccountEncryption)]
        failures = {
            account: read
            for account, read in zip(named, reads, strict=True)
            if isinstance(read, RotationError) and not isinstance(read, NotFound)
        }
        return Discovery(
            DiscoveryPath.RESOURCE_GRAPH, str(self._scope), by_key(keys, states), account_failures=failures
        )

    def _listed(self, keys: Sequence[KeyRef], known: tuple[str, ...], cause: RotationError) -> Discovery:
        """The fallback: every account of the configured (or else known) subscriptions, as ARM lists it."""
        subscriptions = self._scope.subscriptions or known
        searched = str(Scope(subscriptions)) if subscriptions else "no subscription"
        reason = redacted(str(cause))
        instead = (
            f"listing the accounts of the {searched} through ARM instead"
            if subscriptions
            else "no subscription is configured or known, so ARM has none to list"
        )
        emit(
            Event.DISCOVERY_FALLBACK,
            f"Resource Graph could not be used for the {self._scope} ({reason}); {instead}",
            reason=cause.reason,
            level=logging.WARNING,
            searched=searched,
        )
        listings = asyncio.run(self._listings(subscriptions))
        states = [state for listing in listings if not isinstance(listing, RotationError) for state in listing]
        failures = {
            s: listing for s, listing in zip(subscriptions, listings, strict=True) if isinstance(listing, RotationError)
        }
        return Discovery(
            DiscoveryPath.ARM,
            searched,
            by_key(keys, states),
            subscription_failures=failures,
            fallback_reason=reason,
            narrowed=not self._scope.subscriptions,
        )

    async def _listings(self, subscriptions: Sequence[str]) -> list[list[AccountEncryption] | RotationError]:
        async with self._accounts.session() as arm:
            return await each(arm.list, subscriptions, at_once=self._concurrency)
