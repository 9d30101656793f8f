"""``reconcile``: gather -> decide -> act -> verify for one key, through the two ports only.

::

    gather   list the key's versions; read every target account (one event loop)    no writes
    decide   rotation.plan.decide on the frozen Observation                          pure
    act      create the version (or adopt one tagged with this request id), then
             update each account that must be repointed (one event loop), one wave of
             the target's rollout at a time                                          the only writes
    verify   re-read each account until keyVersion == target and Succeeded,
             with a deadline ("Accepted" lingers after the operation completes);
             a failed account of a wave halts the later waves (HaltedAfterFailure)

``retire`` (the sweep's retirement) disables one old version: the only other write, with break-glass's.

A break-glass request (``compromised_version``, rotation/breakglass.py) is a forced reconcile whose accounts converge
all at once (the rollout's waves are not waited for), followed by ``contain``: a fresh discovery (the caller's
``census``), the accounts still on the compromised version, and its disabling only when none is left (or the operator
accepted the breakage). Its outcome carries the blast radius.

Each account's read, update and verify is a coroutine on one event loop (``asyncio.run`` in the calling thread), at most
ROTATION_CONCURRENCY at once: waiting on ARM's operations and between verify reads holds no thread, and ARM's own rate
limit headers pace the requests (``rotation.pacing``).

Safe to run any number of times and after a crash at any line: the decision is re-derived from Azure's state, and a
version created by an earlier attempt of the same request is adopted, not created again (DESIGN §3.2). The caller holds
the per-key lock.

Errors: a key-level step (listing versions, creating a version) that still fails after its retries raises its
``RotationError`` (the class tells the caller what to do; ``RotationOutcome.from_error`` builds the ledger row). An
account-level failure never stops the other accounts of its wave (with a rollout, it halts the later waves): it is
recorded in the outcome, which is ``failed`` and ``retryable`` when every failure is transient. Step retries use
stamina with the explicit predicate ``is_transient`` and bounded attempts and time. They re-run a whole step,
re-reading Azure first where the step writes, for what azure-core's HTTP retries cannot fix: a 409 conflict, an
operation that ran and failed, a create (sent with azure-core's retries off), or a throttle or outage that outlasted
azure-core's own few retries. Anything that is not a
``RotationError`` is a bug and propagates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import stamina

from rotation.breakglass import BlastRadius, Census, blast_radius
from rotation.config import Settings
from rotation.errors import ConfigError, OutcomeUnknown, PermanentError, RotationError, TransientError
from rotation.log import Event, EventHook, emit
from rotation.model import (
    TAG_REQUEST_ID,
    TERMINAL_PROVISIONING_STATES,
    AccountAction,
    AccountEncryption,
    AccountPlan,
    AccountRef,
    AccountResult,
    Clock,
    KeyRef,
    KeyVersion,
    Observation,
    RotationOutcome,
    RotationPlan,
    RotationRequest,
    Status,
    Target,
    VersionSource,
    VersionSpec,
    recency,
    system_clock,
)
from rotation.plan import TERMINAL_FAILURE_STATES, decide, may_create
from rotation.policies import has_supported_shape, is_due, is_usable, is_valid_at
from rotation.ports import AccountsPort, AccountsSession, KeyVaultPort
from rotation.reasons import Reason
from rotation.telemetry import SpanName, account_updates, attributes, duration, in_context, rotations, span

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class RetrySettings:
    """Bounds of the step-level retries (409 conflict, 429/5xx, LRO failure) and of the verify polling."""

    attempts: int = 6
    step_timeout: timedelta = timedelta(minutes=2)
    wait_initial: timedelta = timedelta(seconds=1)
    wait_max: timedelta = timedelta(seconds=30)
    # The verify step's reads: "Accepted" lingers for a read or two after the operation (azure-facts 1.7), so the first
    # waits are short, jittered by as much again, and grow to poll_max for an account that takes its time.
    poll_initial: timedelta = timedelta(milliseconds=100)
    poll_max: timedelta = timedelta(seconds=30)
    # How long a create whose outcome is unknown is awaited (the versions listed again) before the request goes back
    # to the queue; nothing is created again meanwhile. Longer than Key Vault takes to land a create it answered late.
    create_settle: timedelta = timedelta(seconds=90)
    # How old the snapshot's read of an account may be for its update to go without reading it again (the engine's
    # clock). ARM has no conditional update, so this bounds the time in which someone's move of the account to another
    # key could be undone; an older snapshot, and every retry, reads the account first.
    fresh_for: timedelta = timedelta(seconds=5)


# Keys the CLI's commands and the sweep work on at once; each key updates up to ROTATION_CONCURRENCY accounts at once.
KEYS_AT_ONCE = 4


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int) -> list[R]:
    """``fn`` over ``items`` on at most ``workers`` threads, results in order, each call in the caller's context (its
    current span). The first exception is raised once every call has ended."""
    work = list(items)
    if len(work) <= 1:
        return [in_context(fn)(item) for item in work]
    with ThreadPoolExecutor(max_workers=min(workers, len(work))) as pool:
        futures = [pool.submit(in_context(fn), item) for item in work]
        return [f.result() for f in futures]


async def each(read: Callable[[T], Awaitable[R]], items: Sequence[T], *, at_once: int) -> list[R | RotationError]:
    """``read`` of every item on the running event loop, at most ``at_once`` at a time, results in order; a
    ``RotationError`` is that item's result and never stops the others."""
    limit = asyncio.Semaphore(at_once)

    async def one(item: T) -> R | RotationError:
        async with limit:
            try:
                return await read(item)
            except RotationError as exc:
                return exc

    return list(await asyncio.gather(*(one(item) for item in items)))


def is_transient(exc: Exception) -> bool | float:
    """The retry predicate: only ``TransientError`` (and its ``ConflictError``) is worth another attempt, except
    ``CreateUnsettled``, which only the queue's next delivery may retry; when the server sent Retry-After, that is the
    wait (stamina takes a returned number as the backoff)."""
    if not isinstance(exc, TransientError) or isinstance(exc, CreateUnsettled):
        return False
    return True if exc.retry_after is None else exc.retry_after


class CreateUnsettled(TransientError):
    """A create's outcome stayed unknown for ``create_settle``: no version tagged with the request appeared. The request
    goes back to the queue, whose next delivery looks again before it creates; the step retries never create again."""


class _NotYetListed(TransientError):
    """The version of a create whose outcome is unknown is not listed (yet)."""


class AccountMoved(PermanentError):
    """The account stopped using this key while the rotation ran; it is never moved back."""

    reason = Reason.ACCOUNT_USES_OTHER_KEY


class _StillProvisioning(TransientError):
    """The account has not reported the target version and Succeeded yet; keep reading until the deadline (a
    transient error while reading is retried within the same deadline)."""

    reason = Reason.VERIFY_TIMED_OUT


class RotationEngine:
    def __init__(
        self,
        vault: KeyVaultPort,
        accounts: AccountsPort,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        retry: RetrySettings | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        """``on_event``, when given, is called with each event the engine logs (its name, prose and fields), from
        the thread that logs it (the accounts' events from the event loop's, the caller's); it must not raise. The
        CLI prints progress from it."""
        self._vault = vault
        self._accounts = accounts
        self._settings = settings
        self._clock = clock
        bounds = retry or RetrySettings()
        step: dict[str, Any] = {
            "attempts": bounds.attempts,
            "timeout": bounds.step_timeout,
            "wait_initial": bounds.wait_initial,
            "wait_max": bounds.wait_max,
        }
        self._step = stamina.RetryingCaller(**step).on(is_transient)  # Key Vault's steps
        self._async_step = stamina.AsyncRetryingCaller(**step).on(is_transient)  # ARM's, on the event loop
        self._async_poll = stamina.AsyncRetryingCaller(
            attempts=None,
            timeout=settings.verify_timeout,
            wait_initial=bounds.poll_initial,
            wait_max=bounds.poll_max,
            wait_jitter=bounds.poll_initial,
        ).on(is_transient)
        self._settle = stamina.RetryingCaller(
            attempts=None,
            timeout=bounds.create_settle,
            wait_initial=bounds.wait_initial,
            wait_max=bounds.poll_max,
        ).on(is_transient)
        self._create_settle = bounds.create_settle
        self._fresh_for = bounds.fresh_for
        self._on_event = on_event

    def target(self, request: RotationRequest, enrolled: Sequence[AccountRef] = ()) -> Target:
        """The configured target of the request's key, with the ``enrolled`` accounts it does not list (discovered on
        the key, under ``ROTATION_UNMANAGED=enrol``) after its own; a key outside ROTATION_TARGETS is refused."""
        target = self._settings.target_for(request.key)
        if target is None:
            raise ConfigError(f"key {request.key.id} is not in ROTATION_TARGETS; the service never acts on it")
        if request.compromised_version is not None:
            target = replace(target, rollout=None)  # break-glass: every account leaves the version at once
        listed = {account.id.lower() for account in target.accounts}
        extra = tuple(a for a in dict.fromkeys(enrolled) if a.id.lower() not in listed)
        return replace(target, accounts=target.accounts + extra) if extra else target

    def gather(
        self, request: RotationRequest, *, every_version: bool = False, enrolled: Sequence[AccountRef] = ()
    ) -> Observation:
        """Read the key's versions and every target account (``enrolled`` ones too) into one frozen snapshot. No
        writes. The versions are those the decision needs (``_versions``); ``every_version`` lists them all."""
        return asyncio.run(
            self._in_session(lambda arm: self._gather(arm, request, every_version=every_version, enrolled=enrolled))
        )

    async def _in_session(self, work: Callable[[AccountsSession], Awaitable[R]]) -> R:
        async with self._accounts.session() as arm:
            return await work(arm)

    async def _gather(
        self,
        arm: AccountsSession,
        request: RotationRequest,
        *,
        every_version: bool,
        enrolled: Sequence[AccountRef] = (),
    ) -> Observation:
        target = self.target(request, enrolled)
        with span(SpanName.GATHER, key=request.key.id, request_id=request.request_id, accounts=len(target.accounts)):
            # Key Vault (on a worker thread) and ARM are read at the same time: neither read depends on the other.
            reading_versions = asyncio.ensure_future(
                asyncio.to_thread(self._versions, request, target, every_version=every_version)
            )
            reads = await each(
                lambda account: self._async_step(arm.get, account), target.accounts, at_once=self._settings.concurrency
            )
            versions = await reading_versions
            states: dict[AccountRef, AccountEncryption] = {}
            unreadable: dict[AccountRef, RotationError] = {}
            for account, found in zip(target.accounts, reads, strict=True):
                if isinstance(found, RotationError):
                    unreadable[account] = found
                else:
                    states[account] = found
        return Observation(
            request=request,
            target=target,
            versions=tuple(sorted(versions, key=recency)),
            accounts=states,
            unreadable=unreadable,
            now=self._clock(),
        )

    def _versions(self, request: RotationRequest, target: Target, *, every_version: bool) -> list[KeyVersion]:
        """The versions the decision needs, at a cost that does not grow with the key's history.

        Key Vault's current version (one call, with its material) settles the common cases, and no older version can
        matter: when it is usable and not due (or, for a ``key_vault`` target, usable), it is the target; when it is
        usable but due and a version may be created, the new one will be. A forced request always lists (a version an
        earlier attempt created must be found to be adopted, even if someone made a newer one since). Otherwise every
        version is listed, without material, and ``_described`` reads the material of the few the decision needs."""
        now = self._clock()
        follows_vault = target.new_versions is VersionSource.KEY_VAULT
        if not every_version and not request.force:
            latest = self._step(self._vault.latest_version, request.key)
            decides = latest is not None and (
                follows_vault or may_create(request, target) or not is_due(latest, now, self._settings.renewal)
            )
            if latest is not None and decides and is_usable(latest, now):
                return [latest]
        listed = self._step(self._vault.list_versions, request.key)
        return self._described(request, listed, follows_vault=follows_vault)

    def _described(
        self, request: RotationRequest, listed: list[KeyVersion], *, follows_vault: bool
    ) -> list[KeyVersion]:
        """``listed`` with the material the decision needs, read newest first: of the newest enabled version (the
        policy chain's current), of each version that could be the target by its listed dates (enabled, valid, and
        not due unless the key follows the vault) until one has a usable shape, of enabled versions until one has a
        usable shape at all (preflight's KeyTypeUnsupported), and of the enabled versions tagged with this request (an
        earlier attempt's create, to be adopted). Whatever is older is never looked at and stays without material."""
        now, renewal = self._clock(), self._settings.renewal
        versions = sorted(listed, key=recency, reverse=True)
        shape_seen = False
        for i, version in enumerate(versions):
            if not version.enabled:
                continue
            candidate = is_valid_at(version, now) and (follows_vault or not is_due(version, now, renewal))
            if shape_seen and not candidate:
                continue
            versions[i] = self._step(self._vault.describe, request.key, version)
            shape_seen = shape_seen or has_supported_shape(versions[i])
            if candidate and has_supported_shape(versions[i]):
                break
        for i, version in enumerate(versions):
            if version.enabled and version.kty is None and version.tags.get(TAG_REQUEST_ID) == request.request_id:
                versions[i] = self._step(self._vault.describe, request.key, version)
        return versions[::-1]

    def dry_run(self, request: RotationRequest, *, enrolled: Sequence[AccountRef] = ()) -> RotationPlan:
        """Gather and decide only: what ``reconcile`` would do now."""
        return self.plan(self.gather(request, enrolled=enrolled))

    def plan(self, obs: Observation) -> RotationPlan:
        """Decide on a gathered observation, as a dry run (``rotation.planned`` with ``dry_run``)."""
        plan = decide(obs, self._settings.renewal, app_name=self._settings.app_name)
        self._planned(plan, dry_run=True)
        return plan

    def retire(self, key: KeyRef, version: str) -> KeyVersion:
        """Disable ``version`` of ``key``: retirement's one write (``rotation/retirement.py`` decides it), retried
        like every Key Vault step (disabling twice is harmless). Never deletes or purges."""
        return self._step(self._vault.disable_version, key, version)

    def reconcile(
        self,
        request: RotationRequest,
        *,
        enrolled: Sequence[AccountRef] = (),
        before_write: Callable[[], None] = lambda: None,
        on_plan: Callable[[RotationPlan], None] = lambda plan: None,
        census: Callable[[], Census] | None = None,
    ) -> RotationOutcome:
        """Bring the key and its accounts (``enrolled`` ones too) to the decided state; see the module docstring for
        what raises.

        ``before_write`` runs before every write (the create, each account update) and may raise to stop them: the
        worker passes its lock's ``raise_if_lost``, so a worker that lost its key's lease writes nothing more.
        ``on_plan`` receives the plan before anything is carried out (the worker publishes it as an outcome event).
        Both run on the event loop's thread, the caller's. ``census``, for a break-glass request, discovers the accounts
        on the key once its accounts have converged (on a worker thread); without it, nothing beyond the rotated
        accounts is known, and the compromised version is disabled only if the operator accepted the breakage.
        """
        return asyncio.run(
            self._in_session(lambda arm: self._reconcile(arm, request, enrolled, before_write, on_plan, census))
        )

    async def _reconcile(
        self,
        arm: AccountsSession,
        request: RotationRequest,
        enrolled: Sequence[AccountRef],
        before_write: Callable[[], None],
        on_plan: Callable[[RotationPlan], None],
        census: Callable[[], Census] | None,
    ) -> RotationOutcome:
        started = time.perf_counter()
        step = "gather"
        try:
            obs = await self._gather(arm, request, every_version=False, enrolled=enrolled)
            plan = decide(obs, self._settings.renewal, app_name=self._settings.app_name)
            self._planned(plan, dry_run=False)
            on_plan(plan)
            if plan.blocked:
                untouched = tuple(self._result(a, Status.SKIPPED, a.reason, None) for a in plan.accounts)
                return self._finish(plan, None, created=False, results=untouched, started=started)
            to_version = plan.target_version
            if plan.create is not None:
                step = "create"
                # Nothing else runs on the loop meanwhile, so the create (Key Vault's client is synchronous) runs here.
                to_version = self._create_or_adopt(request, plan.create, plan.reason, before_write).version
        except RotationError as exc:
            self._key_step_failed(request, step, exc, started)
            raise
        results = await self._converge(arm, obs, plan, to_version, before_write)
        created = plan.create is not None or plan.adopted
        failed = [r for r in results if r.status is Status.FAILED]
        radius = None
        if request.compromised_version is not None and not (failed and all(r.retryable for r in failed)):
            radius = await self._contain(obs, results, census, before_write)
        return self._finish(plan, to_version, created=created, results=results, started=started, radius=radius)

    async def _contain(
        self,
        obs: Observation,
        results: Sequence[AccountResult],
        census: Callable[[], Census] | None,
        before_write: Callable[[], None],
    ) -> BlastRadius:
        """Break-glass's end: who is still on the compromised version, and its disabling when it may be. A retry can
        fix a failed disable (``BlastRadius.failure``): the next delivery finds the accounts moved and disables it."""
        request = obs.request
        asked = (request.compromised_version or "").lower()
        # The version's id as Key Vault lists it (a forced gather lists every version): the request may spell it in
        # another case.
        version = next((v.version for v in obs.versions if v.version.lower() == asked), asked)
        found = await asyncio.to_thread(census) if census else Census((), False, "nothing: no discovery was given")
        radius = blast_radius(
            version, results, found, accept_breakage=request.accept_breakage, unmanaged=self._settings.unmanaged
        )
        if not radius.disables:
            return radius
        try:
            before_write()
            self._step(self._vault.disable_version, request.key, version)
        except RotationError as exc:
            return replace(radius, failure=exc)
        radius = replace(radius, disabled=True)
        emit(
            Event.COMPROMISED_VERSION_DISABLED,
            radius.summary(),
            key=request.key,
            request_id=request.request_id,
            version=version,
            level=logging.ERROR if radius.left else logging.WARNING,
            moved=len(radius.moved),
            left=len(radius.left),
            accept_breakage=request.accept_breakage,
            on_event=self._on_event,
        )
        return radius

    def _create_or_adopt(
        self, request: RotationRequest, spec: VersionSpec, reason: Reason, before_write: Callable[[], None]
    ) -> KeyVersion:
        """Create the version, retried; each attempt first adopts a usable version tagged with this request id, so a
        create whose response was lost (or that azure-core sent twice) is never repeated. The lock is checked before
        every attempt to create, however long the retries take."""

        def mine() -> KeyVersion | None:
            now, renewal = self._clock(), self._settings.renewal
            tagged = [
                self._vault.describe(request.key, v)
                for v in self._vault.list_versions(request.key)
                if v.tags.get(TAG_REQUEST_ID) == request.request_id and v.enabled
            ]
            tagged = [v for v in tagged if is_usable(v, now) and not is_due(v, now, renewal)]
            return max(tagged, key=recency, default=None)

        def attempt() -> tuple[KeyVersion, bool]:
            found = mine()
            if found is not None:
                return found, True
            before_write()
            try:
                created = self._vault.create_version(
                    request.key, kty=spec.kty, key_ops=spec.key_ops, expires_on=spec.expires_on, tags=spec.tags
                )
            except OutcomeUnknown as exc:
                return self._await_create(request, mine, exc), True
            return created, False

        with span(SpanName.CREATE, key=request.key.id, request_id=request.request_id, reason=reason.value):
            version, adopted = self._step(attempt)
        event = Event.VERSION_ADOPTED if adopted else Event.VERSION_CREATED
        emit(
            event,
            f"version {version.version} expires {spec.expires_on.isoformat()}",
            key=request.key,
            request_id=request.request_id,
            version=version.version,
            reason=reason,
            on_event=self._on_event,
        )
        return version

    def _await_create(
        self, request: RotationRequest, mine: Callable[[], KeyVersion | None], cause: OutcomeUnknown
    ) -> KeyVersion:
        """The version of a create whose outcome is unknown, once it is listed; ``CreateUnsettled`` when it has not
        appeared within ``create_settle``. Key Vault takes no idempotency token, so creating again now could make two
        versions: only the queue's next delivery, a minute later, may create again (after looking once more)."""

        def look() -> KeyVersion:
            found = mine()
            if found is None:
                raise _NotYetListed(f"no version of {request.key.id} is tagged with request {request.request_id} yet")
            return found

        try:
            return self._settle(look)
        except _NotYetListed as exc:
            raise CreateUnsettled(
                f"creating a version of {request.key.id} may have succeeded ({cause}), but none tagged with request "
                f"{request.request_id} appeared within {self._create_settle}; the request goes back to the queue, "
                "whose next delivery looks again before it creates"
            ) from exc

    async def _converge(
        self,
        arm: AccountsSession,
        obs: Observation,
        plan: RotationPlan,
        to_version: str | None,
        before_write: Callable[[], None],
    ) -> tuple[AccountResult, ...]:
        """Each wave's accounts at once (at most ``concurrency``), one wave after the other; after a wave in which an
        account the rollout acted on failed, the later waves are left as they are (``HaltedAfterFailure``). An
        account that is blocked (or could not be read) fails without halting: nothing was tried on it."""
        at_once = asyncio.Semaphore(self._settings.concurrency)

        async def carry_out(account_plan: AccountPlan) -> AccountResult:
            state = obs.accounts.get(account_plan.account)
            if account_plan.action is AccountAction.BLOCKED or state is None:
                unreadable = obs.unreadable.get(account_plan.account)  # a transient read failure is worth a retry
                return self._result(
                    account_plan,
                    Status.FAILED,
                    account_plan.reason,
                    None,
                    account_plan.message if unreadable is None else str(unreadable),
                    retryable=isinstance(unreadable, TransientError),
                )
            if account_plan.action is AccountAction.LEAVE or to_version is None:
                return self._result(account_plan, Status.SKIPPED, account_plan.reason, to_version)
            async with at_once:
                return await self._converge_account(arm, obs, account_plan, state, to_version, before_write)

        results: dict[AccountRef, AccountResult] = {}
        halted: AccountResult | None = None
        for wave in sorted({p.wave for p in plan.accounts}):
            members = [p for p in plan.accounts if p.wave == wave]
            if halted is not None:
                why = f"the rollout halted after wave {halted.wave}: {halted.account.id} failed ({halted.reason})"
                for p in members:
                    results[p.account] = self._result(p, Status.SKIPPED, Reason.HALTED_AFTER_FAILURE, None, why)
                continue
            for p, result in zip(members, await asyncio.gather(*(carry_out(p) for p in members)), strict=True):
                results[p.account] = result
                acted = p.action in (AccountAction.REPOINT, AccountAction.WAIT) and p.account in obs.accounts
                if halted is None and acted and result.status is Status.FAILED:
                    halted = result
        return tuple(results[p.account] for p in plan.accounts)

    async def _converge_account(
        self,
        arm: AccountsSession,
        obs: Observation,
        plan: AccountPlan,
        state: AccountEncryption,
        version: str,
        before_write: Callable[[], None],
    ) -> AccountResult:
        request = obs.request
        stale = self._clock() - obs.now > self._fresh_for

        async def update() -> AccountEncryption:
            # The update must never undo someone's move of the account to another key or vault, and ARM offers no
            # conditional update (docs/architecture.md). So the account is read again unless the snapshot's read is
            # fresh, and before every retry. The lock is checked before every attempt.
            nonlocal stale
            fresh = await arm.get(plan.account) if stale else state
            stale = True
            if fresh.key_version == version and fresh.provisioning_state not in TERMINAL_FAILURE_STATES:
                return fresh  # already on its way (or there): verify waits for Succeeded
            if not fresh.uses(request.key):
                raise AccountMoved(
                    f"account {plan.account.id} no longer uses {request.key.id} (now {fresh.key_vault_uri} "
                    f"{fresh.key_name}); it was left alone"
                )
            before_write()
            return await arm.update_key_version(fresh, version)

        key, request_id, account = request.key.id, request.request_id, plan.account.id
        try:
            if plan.action is AccountAction.REPOINT:
                with span(SpanName.UPDATE_ACCOUNT, key=key, request_id=request_id, account=account, version=version):
                    state = await self._async_step(update)
            with span(SpanName.VERIFY, key=key, request_id=request_id, account=account, version=version):
                await self._verify(arm, state, version)
        except RotationError as exc:
            emit(
                Event.ACCOUNT_FAILED,
                f"account did not converge on {version}: {exc}",
                key=request.key,
                request_id=request.request_id,
                version=version,
                account=plan.account,
                reason=exc.reason,
                level=logging.WARNING,
                step=plan.action.value,
                on_event=self._on_event,
            )
            return self._result(
                plan, Status.FAILED, exc.reason, version, str(exc), retryable=isinstance(exc, TransientError)
            )
        emit(
            Event.ACCOUNT_UPDATED,
            f"account reports {version} and Succeeded",
            key=request.key,
            request_id=request.request_id,
            version=version,
            account=plan.account,
            reason=plan.reason,
            action=plan.action.value,
            from_version=plan.from_version,
            on_event=self._on_event,
        )
        return self._result(plan, Status.SUCCEEDED, plan.reason, version)

    async def _verify(self, arm: AccountsSession, state: AccountEncryption, version: str) -> None:
        """Re-read until the account reports ``version`` and Succeeded; fail fast if it settled on anything else."""

        async def read() -> AccountEncryption:
            current = await arm.get(state.account)
            if current.converged_on(version) or current.provisioning_state in TERMINAL_PROVISIONING_STATES:
                return current
            raise _StillProvisioning(
                f"account {state.account.id} still reports keyVersion={current.key_version} "
                f"provisioningState={current.provisioning_state} after {self._settings.verify_timeout}; "
                f"expected {version} and Succeeded (ROTATION_VERIFY_TIMEOUT bounds the wait)"
            )

        if not state.converged_on(version):
            state = await self._async_poll(read)
        if not state.converged_on(version):
            raise TransientError(
                f"account {state.account.id} settled on keyVersion={state.key_version} "
                f"provisioningState={state.provisioning_state} instead of {version}; the next run repoints it"
            )

    @staticmethod
    def _result(
        plan: AccountPlan,
        status: Status,
        reason: Reason,
        to_version: str | None,
        error: str | None = None,
        *,
        retryable: bool = False,
    ) -> AccountResult:
        return AccountResult(
            plan.account, plan.action, status, reason, plan.from_version, to_version, error, retryable, plan.wave
        )

    def _planned(self, plan: RotationPlan, *, dry_run: bool) -> None:
        emit(
            Event.PLANNED,
            plan.message,
            key=plan.request.key,
            request_id=plan.request.request_id,
            version=plan.target_version,
            reason=plan.reason,
            trigger=plan.request.trigger.value,
            create=plan.create is not None,
            blocked=plan.blocked,
            accounts=len(plan.accounts),
            dry_run=dry_run,
            on_event=self._on_event,
        )

    def _finish(
        self,
        plan: RotationPlan,
        to_version: str | None,
        *,
        created: bool,
        results: tuple[AccountResult, ...],
        started: float,
        radius: BlastRadius | None = None,
    ) -> RotationOutcome:
        request = plan.request
        failed = [r for r in results if r.status is Status.FAILED]
        left = [r for r in results if r.reason is Reason.HALTED_AFTER_FAILURE]
        acted = created or any(r.status is Status.SUCCEEDED for r in results) or bool(radius and radius.disabled)
        error: str | None = None
        reason, halted_after = plan.reason, None
        retryable = bool(failed) and all(r.retryable for r in failed)
        if plan.blocked:
            status, error = Status.FAILED, plan.message
        elif failed:
            status = Status.FAILED
            error = f"{len(failed)} of {len(results)} accounts failed: " + "; ".join(
                f"{r.account.name}: {r.error}" for r in failed
            )
            if left:
                reason, halted_after = Reason.HALTED_AFTER_FAILURE, min(r.wave for r in left) - 1
                error = (
                    f"the rollout halted after wave {halted_after} of {max(r.wave for r in results)}"
                    f"{' (the canary)' if halted_after == 1 else ''}: {error}; the {len(left)} accounts of the later "
                    "waves were not touched and stay on their working version"
                )
        else:
            status = Status.SUCCEEDED if acted else Status.SKIPPED
        if radius is not None:  # break-glass: the compromised version's fate is the outcome
            if radius.disabled:
                reason = Reason.COMPROMISED_VERSION_DISABLED
            else:
                status, retryable = Status.FAILED, isinstance(radius.failure, TransientError)
                reason = radius.failure.reason if radius.failure else Reason.COMPROMISED_VERSION_IN_USE
            error = radius.summary() if error is None else f"{radius.summary()}. {error}"
            if radius.disabled and not (failed or radius.left):
                error = None
        outcome = RotationOutcome(
            request_id=request.request_id,
            key=request.key,
            trigger=request.trigger,
            status=status,
            reason=reason,
            message=plan.message,
            from_version=plan.current_version,
            to_version=to_version,
            created=created,
            accounts=results,
            warnings=plan.warnings,
            error=error,
            retryable=retryable,
            blast_radius=None if radius is None else radius.to_dict(),
        )
        if status is not Status.FAILED:
            event, level = Event.COMPLETED, logging.INFO
        elif outcome.retryable:
            event, level = Event.ATTEMPT_FAILED, logging.WARNING
        else:
            event, level = Event.FAILED, logging.ERROR
        emit(
            event,
            error or plan.message,
            key=request.key,
            request_id=request.request_id,
            version=to_version,
            reason=reason,
            level=level,
            status=status.value,
            created_version=created,
            retryable=outcome.retryable,
            halted_after_wave=halted_after,
            on_event=self._on_event,
        )
        self._measure(outcome, time.perf_counter() - started)
        return outcome

    def _key_step_failed(self, request: RotationRequest, step: str, exc: RotationError, started: float) -> None:
        """Report a key-level step (``gather``: listing the versions; ``create``) that raised after its retries: a
        warning when a retry can fix it (the queue delivers the request again), the final failure otherwise."""
        retryable = isinstance(exc, TransientError)
        emit(
            Event.ATTEMPT_FAILED if retryable else Event.FAILED,
            f"{'reading the key' if step == 'gather' else 'creating a version'} failed: {exc}",
            key=request.key,
            request_id=request.request_id,
            reason=exc.reason,
            level=logging.WARNING if retryable else logging.ERROR,
            step=step,
            retryable=retryable,
            on_event=self._on_event,
        )
        self._measure(RotationOutcome.from_error(request, exc), time.perf_counter() - started)

    @staticmethod
    def _measure(outcome: RotationOutcome, seconds: float) -> None:
        """The reconcile's metrics: its outcome, its duration, and each account it acted on."""
        key = outcome.key.id
        rotations.add(1, attributes(key=key, status=outcome.status.value, reason=outcome.reason.value))
        duration.record(seconds, attributes(key=key, status=outcome.status.value))
        for r in outcome.accounts:
            if r.action is not AccountAction.LEAVE or r.status is Status.FAILED:
                account_updates.add(
                    1, attributes(key=key, account=r.account.id, status=r.status.value, reason=r.reason.value)
                )
