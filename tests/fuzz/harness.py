"""What every fuzz family shares: the world the app runs in, what one case did, and the counters.

::

    World        one Emulator (vault fuzz-kv: keys fuzz-cmk and fuzz-cmk2 in ROTATION_TARGETS, other-cmk outside, and
                 fuzz-cmk-kv, which ``key_vault_target()`` describes as a ``new_versions: key_vault`` target for a
                 family that adds it) and the session's real Azurite; ``serving(family)`` builds a RotationApp for one
                 family, installs it with ``configure(app)``, and routes the app's log records to the recorder
    Observation  what one case did, read from the seams only: log records (the recorder), storage writes (the
                 ``CountingTransport`` handed to the storage clients through ``storage_options``), Key Vault and ARM
                 writes (the emulator's call log), and outcome events (the emulator's ``eventgrid.received``)
    Tally        one family's counters, how its cases ended, and the shortest offending inputs of each kind of problem;
                 printed at the end of the session

Counters (each must end at 0 in every profile)::

    uncaught         an exception left a function that must not raise it (any but Redeliver from a trigger, any from
                     an HTTP function or cli.main, any but ConfigError from the settings), or the trigger's edge
                     logged rotation.internal_error / rotation.config_error (the edge swallowed a bug), or the CLI
                     printed a traceback or exited with a code outside {0, 1, 2}
    redelivered      a trigger raised Redeliver: allowed by the contract, but with healthy storage and a healthy
                     emulator none of these inputs has a reason to. One caused by a broken connection to storage (an
                     idle keep-alive connection Azurite closed as it was reused) is storage that was not healthy: it
                     is listed under "ended", not counted
    rejected_writes  writes for an input that was refused (a refusal log line, a 4xx, a ConfigError, a CLI exit 2), and
                     any write at all in the settings and CLI families (those only read): storage requests other than
                     GET/HEAD (a conditional insert that storage refuses with 409 counts too: it is a write request),
                     Key Vault and ARM requests other than GET/HEAD, outcome events, rotation.failed records
    http_5xx         an HTTP answer of 500 or more
    secret_hits      a known secret (the topic key, the storage account key, the emulator's token header) or a
                     planted one (``PLANTED``, in the shapes of ``PLANTED_FORMS``) in a log record's message,
                     exception text or extra fields, an HTTP body or header, a storage write's body (ledger rows;
                     queue messages decoded), an outcome event, a ConfigError or the CLI's output
    unnamed          a refusal that does not say what was wrong: a 4xx without ``{"error": {"code", "message"}}`` or
                     whose message does not name the bad value (rules in test_http.py), a ConfigError line that names
                     no setting the case changed, a CLI exit 2 that is not exactly one line ``error: ...``, a refused
                     rotation-requests message whose only fault breaks the break-glass rules and whose reason does not
                     name the field; or bad input that was not refused: bad CLI input that did not exit 2, a
                     break-glass body the oracle refuses that got no 4xx, a message breaking the break-glass rules
                     that was accepted
    wrong_answer     an answer the oracle predicts exactly that came out otherwise: a break-glass body answered with
                     another status or code than predicted (test_http.py), a break-glass plan or refused confirmation
                     that is not its schema in docs/openapi.json, a plan that wrote, a confirmed break-glass that did
                     not record its one ledger row and queue one message that row describes, a repeat of it that
                     answered another request; a valid break-glass message refused; a CLI break-glass that stopped
                     for confirmation without its plan on stdout

This module never patches or mocks the code under test: the transport, the logging handler and the emulator's
control plane are the only seams.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import string
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport

import function_app
from emulator.azurite import ACCOUNT_KEY, Azurite
from emulator.core import Emulator
from emulator.credential import EmulatorCredential
from emulator.functions_host import FunctionsHost, InvocationFailed
from rotation.app import Redeliver, RotationApp, Timings, configure
from rotation.connection import AzureConnection
from rotation.model import KeyRef, RotationRequest, Trigger
from rotation.storage import POISON_QUEUE, REQUESTS_QUEUE, LedgerEntry, LedgerStatus
from tests.functional.wiring import QUICK_RETRIES, app_settings

EMULATOR_TOKEN_HEADER = (  # the first part of every token EmulatorCredential issues: a token in any output is a leak
    base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
)
COUNTERS = ("uncaught", "redelivered", "rejected_writes", "http_5xx", "secret_hits", "unnamed", "wrong_answer")
REFUSALS = ("rotation.event_ignored", "rotation.message_rejected")
EDGE_ERRORS = ("rotation.internal_error", "rotation.config_error")
# A rotation that ran and failed: a refused input must never produce one.
FAILURE_EVENTS = ("rotation.failed", "rotation.attempt_failed", "rotation.account_failed")
_SAMPLES = 3
_READS = ("GET", "HEAD")
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_FORMATTER = logging.Formatter()

KEY = "fuzz-cmk"
KEY2 = "fuzz-cmk2"
OTHER_KEY = "other-cmk"  # a real key in the same vault, not in ROTATION_TARGETS
KV_KEY = "fuzz-cmk-kv"  # a real key whose versions come from Key Vault: only in the targets of a family that adds it
# Ledger rows every family's table starts with: (request id, key name, final). Messages that reuse an id with the
# other key are forgeries; a queued row of the right key is run once and is final from then on.
SEEDS = (
    ("seed-t1-final", KEY, True),
    ("seed-t1-queued-0", KEY, False),
    ("seed-t1-queued-1", KEY, False),
    ("seed-t2-final", KEY2, True),
    ("seed-t2-queued-0", KEY2, False),
)


# --- counters ---------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """One family's counters; ``flag`` counts a problem and keeps the shortest few inputs that caused it."""

    family: str
    cases: int = 0
    accepted: int = 0
    rejected: int = 0
    not_delivered: int = 0  # inputs the Functions host itself refuses before any function runs (Event Grid only)
    accepted_writes: int = 0  # writes made for accepted inputs: proof that accepted cases ran for real
    counts: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # how cases ended (HTTP status and code, refusal ...)
    signatures: Counter[str] = field(default_factory=Counter)  # problems by counter and kind
    samples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    seconds: float = 0.0
    _started: float = field(default_factory=time.monotonic, repr=False)

    def flag(self, counter: str, case: object, detail: object, *, signature: str = "") -> None:
        """Count a problem. The shortest few inputs are kept per ``signature`` (what kind of problem it is), so
        one frequent cause does not hide another."""
        assert counter in COUNTERS, counter
        self.counts[counter] += 1
        self.signatures[f"{counter} {signature}".strip()] += 1
        kept = self.samples.setdefault(f"{counter} {signature}".strip(), [])
        kept.append((_clip(repr(case), 400), _clip(str(detail), 600)))
        kept.sort(key=lambda sample: len(sample[0]))
        del kept[_SAMPLES:]

    def verdict(self, rejected: bool, seen: Observation | None = None, case: object = None, how: str = "") -> None:
        """Count one case as rejected or accepted; a rejected one that wrote anything is flagged."""
        self.cases += 1
        import os

        if os.environ.get("FUZZ_TRACE") and self.cases % 500 == 0:
            print(f"[{self.family}] {self.cases} cases, {time.monotonic() - self._started:.1f}s", flush=True)
        writes = seen.writes() if seen is not None else []
        if rejected:
            self.rejected += 1
            if writes:
                self.flag("rejected_writes", case, writes, signature=how)
        else:
            self.accepted += 1
            self.accepted_writes += len(writes)

    def stop(self) -> None:
        self.seconds = time.monotonic() - self._started

    def problems(self) -> dict[str, int]:
        return {name: self.counts[name] for name in COUNTERS if self.counts[name]}

    def line(self) -> str:
        rate = self.cases / self.seconds if self.seconds else 0.0
        counters = " ".join(f"{name}={self.counts[name]}" for name in COUNTERS)
        extra = f" not_delivered={self.not_delivered}" if self.not_delivered else ""
        return (
            f"{self.family:<18} cases={self.cases:<6} accepted={self.accepted:<6} rejected={self.rejected:<6}"
            f" writes={self.accepted_writes:<6}{extra} "
            f"{counters} time={self.seconds:.1f}s rate={rate:.0f}/s"
        )

    def report(self) -> str:
        lines = [self.line(), "  ended: " + ", ".join(f"{kind} {n}" for kind, n in self.kinds.most_common(12))]
        for signature, kept in self.samples.items():
            lines.append(f"  {signature} ({self.signatures[signature]} cases), e.g.:")
            lines += [f"    {case}\n      -> {detail}" for case, detail in kept]
        return "\n".join(lines)


TALLIES: dict[str, Tally] = {}


def tally(family: str) -> Tally:
    """A fresh tally for ``family``, registered for the session's summary."""
    TALLIES[family] = Tally(family)
    return TALLIES[family]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# --- secrets ----------------------------------------------------------------------------------------------------


def _token(rng: random.Random, size: int = 32) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(size))


_rng = random.Random(8)  # fixed: the planted secrets are fake, and the same in every run
_SIG, _JWT_HEAD, _JWT_BODY, _JWT_SIG, _PASSWORD, _CODE = (_token(_rng) for _ in range(6))
_JWT = f"eyJ{_JWT_HEAD}.eyJ{_JWT_BODY}.{_JWT_SIG}"
_ACCOUNT_KEY = base64.b64encode(_rng.randbytes(64)).decode()  # 88 characters, "==" at the end, like a real one
_TOPIC_KEY = _token(_rng, 43) + "="  # the shape of an Event Grid topic key
PLANTED = (
    ("planted sig", _SIG),
    ("planted JWT", _JWT),
    ("planted password", _PASSWORD),
    ("planted code", _CODE),
    ("planted AccountKey", _ACCOUNT_KEY),
    ("planted topic key", _TOPIC_KEY),
)
"""Fake secrets the strategies plant in inputs, always in one of the shapes below, which ``rotation.redact`` is
documented to recognise; a planted secret is never mutated afterwards, so it keeps its shape."""
PLANTED_FORMS = (
    f"sv=2022-11-02&sr=b&sig={_SIG}",
    f"Bearer {_JWT}",
    _JWT,
    f"Password={_PASSWORD}",
    f"code={_CODE}",
    f"AccountKey={_ACCOUNT_KEY}",
    _TOPIC_KEY,
)
"""A planted secret as free text: each begins at a word boundary and ends at the end of the text."""
PLANTED_URL_PARTS = (
    ("", f"?sv=2022-11-02&sr=b&sig={_SIG}"),
    ("", f"?code={_CODE}"),
    (f"admin:{_PASSWORD}@", ""),
)
"""(user info, query) that carry a planted secret in a URL."""


@dataclass(frozen=True)
class Secrets:
    """Strings that must never appear in anything the app shows or stores; each is searched whole and, when long,
    by its first and last 16 characters (a secret cut short is still a leak)."""

    named: tuple[tuple[str, str], ...]

    def needles(self) -> Iterator[tuple[str, str]]:
        for name, value in self.named:
            yield name, value
            if len(value) >= 32:
                yield name, value[:16]
                yield name, value[-16:]

    def found(self, texts: Iterable[str]) -> list[str]:
        """The names of the secrets in ``texts``."""
        text = "\n".join(texts)
        return sorted({name for name, needle in self.needles() if needle in text})


def record_text(record: logging.LogRecord) -> str:
    """Everything a log handler could ship: the formatted message, the exception text and the extra fields."""
    try:
        parts = [record.getMessage()]
    except Exception as exc:  # noqa: BLE001 -- a record whose arguments do not fit its format is still scanned
        parts = [f"{record.msg} {record.args} ({type(exc).__name__})"]
    if record.exc_info:
        parts.append(_FORMATTER.formatException(record.exc_info))
    parts += [f"{name}={value}" for name, value in record.__dict__.items() if name not in _STANDARD_ATTRIBUTES]
    return "\n".join(parts)


def event_name(record: logging.LogRecord) -> str:
    """The record's event: its ``event`` field, or the name before the first ':' of its message."""
    named = getattr(record, "event", None)
    return named if isinstance(named, str) else str(record.msg).split(":", 1)[0]


# --- the seams --------------------------------------------------------------------------------------------------


@dataclass
class Write:
    method: str
    url: str
    body: str
    status: int | None = None  # the storage service's answer; None when the request failed to get one


class CountingTransport(RequestsTransport):
    """azure-core's own requests transport, remembering every request that is not a read (storage writes)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes: list[Write] = []
        self._lock = threading.Lock()

    def send(self, request: Any, **kwargs: Any) -> Any:
        if request.method in _READS:
            return super().send(request, **kwargs)
        write = Write(request.method, request.url, _body_text(request))
        with self._lock:
            self.writes.append(write)
        response = super().send(request, **kwargs)
        write.status = response.status_code
        return response


def _body_text(request: Any) -> str:
    body = getattr(request, "body", None)
    if body is None:
        body = getattr(request, "content", None)
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    # A queue message travels base64-encoded inside XML: scan its text too.
    for encoded in re.findall(r"<MessageText>(.*?)</MessageText>", text, flags=re.DOTALL):
        with suppress(ValueError):
            text += "\n" + base64.b64decode(encoded).decode("utf-8", "replace")
    return text


class Recorder(logging.Handler):
    """Keeps every record it is handed, until ``clear``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Observation:
    """What one case did."""

    records: list[logging.LogRecord] = field(default_factory=list)
    storage_writes: list[Write] = field(default_factory=list)
    emulator_writes: list[Any] = field(default_factory=list)  # emulator.control.Call
    outcome_events: list[dict[str, Any]] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # what the case's caller saw: HTTP bodies, CLI output, errors

    def named(self, *names: str) -> list[logging.LogRecord]:
        return [r for r in self.records if event_name(r) in names]

    @property
    def refusals(self) -> int:
        return len(self.named(*REFUSALS))

    def writes(self) -> list[str]:
        """Every write, described; empty when the case wrote nothing."""
        return [
            *(f"storage {w.method} {w.url} -> {w.status}" for w in self.storage_writes),
            *(f"{c.operation} {c.method} {c.path}" for c in self.emulator_writes),
            *(f"outcome event {e.get('type')}" for e in self.outcome_events),
            *(f"log {record_text(r)[:200]}" for r in self.named(*FAILURE_EVENTS)),
        ]

    def texts(self) -> Iterator[tuple[str, str]]:
        """(where, text) of everything the case showed or stored."""
        for record in self.records:
            if not record.name.startswith("emulator"):
                yield f"log {event_name(record)}", record_text(record)
        for write in self.storage_writes:
            yield "storage write", write.url + "\n" + write.body
        for event in self.outcome_events:
            yield "outcome event", json.dumps(event)
        for text in self.shown:
            yield "answer", text


def judge_trigger(
    tally: Tally, secrets: Secrets, case: object, seen: Observation, error: BaseException | None, *, inputs: int = 1
) -> None:
    """The verdict on one delivery of ``inputs`` events or messages to a trigger function. ``error`` is what the
    delivery raised: the worker's ``InvocationFailed`` (the function's exception by type name, with its traceback),
    or an exception object itself."""
    if _redelivered(error) and _connection_fault(error):
        tally.kinds["redelivered: a storage connection fault"] += 1
    elif _redelivered(error):
        tally.flag("redelivered", case, error)
    elif isinstance(error, InvocationFailed):
        for failure in error.failures:
            kind = failure.exception_type
            tally.flag("uncaught", case, f"{kind}: {failure.message}", signature=kind)
    elif error is not None:
        tally.flag("uncaught", case, f"{type(error).__name__}: {error}", signature=type(error).__name__)
    for record in seen.named(*EDGE_ERRORS):
        tally.flag("uncaught", case, record_text(record), signature=event_name(record))
    rejected = seen.refusals >= inputs
    how = "accepted" if not seen.refusals else "some refused, some accepted"
    for record in seen.named(*REFUSALS)[:1] if rejected else ():
        how = "refused: " + _gist(str(getattr(record, "why", "")))
    tally.kinds[how] += 1
    tally.verdict(rejected, seen, case, how)
    check_secrets(tally, secrets, case, seen, how)


_BROKEN_CONNECTION = re.compile(r"\b(ServiceRequestError|ServiceResponseError|\w*ConnectionError|Connection\w*Error)\b")


def _redelivered(error: BaseException | None) -> bool:
    """The trigger raised ``Redeliver`` (every failure of the delivery, when the worker reported it)."""
    if isinstance(error, InvocationFailed):
        return all(f.exception_type == "Redeliver" for f in error.failures)
    return isinstance(error, Redeliver)


def _connection_fault(error: BaseException | None) -> bool:
    """True when ``error`` was caused by a connection to a service that broke (azure-core's ServiceRequestError or
    ServiceResponseError, or the OS's ConnectionError), not by any answer. For the worker's ``InvocationFailed`` that is
    read from the traceback it reported, chained causes included."""
    if isinstance(error, InvocationFailed):
        return all(_BROKEN_CONNECTION.search(f.stack_trace) for f in error.failures)
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (ServiceRequestError, ServiceResponseError, ConnectionError)):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _gist(why: str) -> str:
    """A refusal's reason without its values (quoted text, even when clipped before its closing quote; URLs; numbers;
    lists), so refusals group by kind and no value, secret or not, reaches the summary."""
    gist = re.sub(r"'[^']*(?:'|$)|\"[^\"]*(?:\"|$)|https?://\S+|\b\d+\b|\[[^]]*(?:]|$)|\{[^}]*(?:}|$)", "…", why)
    return " ".join(gist.split()[:7])


def check_secrets(tally: Tally, secrets: Secrets, case: object, seen: Observation, how: str = "") -> None:
    """Flag the case once if any text it showed or stored holds a secret; the signature says where, and ``how`` the
    case ended."""
    texts = list(seen.texts())
    if not secrets.found(text for _, text in texts):
        return
    leaks = [(where, secrets.found([text]), text) for where, text in texts if secrets.found([text])]
    where = sorted({w for w, _, _ in leaks})
    signature = f"in {', '.join(where)}" + (f" ({how})" if how else "")
    tally.flag("secret_hits", case, [(w, names, text) for w, names, text in leaks[:2]], signature=signature)


# --- the world --------------------------------------------------------------------------------------------------


@dataclass
class Served:
    """One family's app and the transport its storage clients send through."""

    app: RotationApp
    transport: CountingTransport
    host: FunctionsHost


@dataclass
class World:
    emulator: Emulator
    azurite: Azurite
    vault: Any
    targets: list[dict[str, Any]]
    accounts: dict[str, str]  # account name -> ARM id
    versions: dict[str, str]  # key name -> its one version
    connection: AzureConnection
    env: dict[str, str]
    secrets: Secrets
    recorder: Recorder = field(default_factory=Recorder)

    @classmethod
    def create(cls, emulator: Emulator, azurite: Azurite) -> World:
        """Keys that are not due (they expire in 100 days; renew-before is 30), so an accepted request is cheap: it
        reads, decides there is nothing to do, and records that."""
        vault = emulator.add_vault("fuzz-kv", purge_protection=True)
        now = datetime.now(UTC)
        records = {
            name: vault.create_key(name, exp=now + timedelta(days=days), key_ops=["wrapKey", "unwrapKey"])
            for name, days in ((KEY, 100), (KEY2, 100), (OTHER_KEY, 200), (KV_KEY, 100))
        }

        def cmk(record: Any) -> dict[str, Any]:
            return {
                "keySource": "Microsoft.KeyVault",
                "keyVaultProperties": {"keyName": record.name, "keyVersion": record.version, "keyVaultUri": vault.url},
            }

        accounts = {
            name: emulator.arm.add_account(name, encryption=cmk(records[key]))["id"]
            for name, key in (
                ("openai-fuzz-1", KEY),
                ("openai-fuzz-2", KEY2),
                ("openai-other", OTHER_KEY),
                ("openai-fuzz-kv", KV_KEY),
            )
        }
        targets = [
            {"key": f"{vault.url}/keys/{KEY}", "accounts": [accounts["openai-fuzz-1"]]},
            {"key": f"{vault.url}/keys/{KEY2}", "accounts": [accounts["openai-fuzz-2"]]},
        ]
        endpoints = emulator.endpoints()
        env = app_settings(endpoints, azurite.connection_string, targets)
        connection = AzureConnection(
            EmulatorCredential("rotation-app"),
            arm_endpoint=endpoints["arm"],
            ca_bundle=endpoints["ca_bundle"],
            verify_challenge_resource=False,
            polling_interval=0.05,
        )
        secrets = Secrets(
            (
                ("ROTATION_EVENTS_KEY", endpoints["topic_key"]),
                ("storage AccountKey", ACCOUNT_KEY),
                ("emulator token", EMULATOR_TOKEN_HEADER),
                *PLANTED,
            )
        )
        return cls(
            emulator,
            azurite,
            vault,
            targets,
            accounts,
            {name: record.version for name, record in records.items()},
            connection,
            env,
            secrets,
        )

    # Keys as the generators spell them -------------------------------------------------------------------------
    def key_url(self, name: str = KEY) -> str:
        return f"{self.vault.url}/keys/{name}"

    def key_versions(self, name: str) -> list[str]:
        """The ids of every version the vault holds of key ``name`` now, oldest first; [] for a key it does not
        have. The name is looked up as the emulator's Key Vault looks it up: with its case (Key Vault's own names
        ignore case), so ``FUZZ-CMK`` has no versions here. Families that rotate (a forced or break-glass request)
        add versions, so a generator or an oracle asks here rather than trusting ``versions``."""
        return [record.version for record in self.vault.versions(name)] if name in self.vault.key_names() else []

    def key_vault_target(self) -> dict[str, Any]:
        """A ROTATION_TARGETS entry for ``KV_KEY`` with ``new_versions: key_vault``: the service never creates its
        versions, so ``force`` and break-glass are refused for it (409 ForceNotAllowed)."""
        return {"key": self.key_url(KV_KEY), "accounts": [self.accounts["openai-fuzz-kv"]], "new_versions": "key_vault"}

    # Apps ------------------------------------------------------------------------------------------------------
    def build(
        self, *, ledger_table: str, transport: CountingTransport, env: dict[str, str] | None = None
    ) -> RotationApp:
        """``RotationApp.build`` as ``tests.functional.wiring.build_app`` calls it, with the counting transport."""
        return RotationApp.build(
            self.env if env is None else env,
            connection=self.connection,
            retry=QUICK_RETRIES,
            timings=Timings(lease=60),
            ledger_table=ledger_table,
            storage_options={"transport": transport},
        )

    @contextmanager
    def serving(self, family: str, settings: dict[str, str] | None = None) -> Iterator[Served]:
        """A RotationApp for ``family`` with its own ledger table (seeded with ``SEEDS``), installed as the process's
        app, its records routed to the recorder; the queues are emptied afterwards. ``settings`` add to the world's."""
        transport = CountingTransport()
        table = "fuzz" + re.sub(r"[^a-z0-9]", "", family) + uuid.uuid4().hex[:8]
        app = self.build(ledger_table=table, transport=transport, env={**self.env, **(settings or {})})
        app.queue.ensure()
        app.ledger.ensure()
        now = datetime.now(UTC)
        for request_id, name, final in SEEDS:
            request = RotationRequest(request_id, KeyRef.parse(self.key_url(name)), Trigger.HTTP, requested_at=now)
            entry = app.ledger.create(LedgerEntry.for_request(request, at=now))
            if final:
                app.ledger.transition(entry, at=now, status=LedgerStatus.SUCCEEDED, reason="Seeded")
        host = FunctionsHost(function_app.app, self.azurite.connection_string)
        configure(app)
        try:
            with self.capturing():
                yield Served(app, transport, host)
        finally:
            configure(None)
            for queue in (REQUESTS_QUEUE, POISON_QUEUE):
                host.queue(queue).clear_messages()

    @contextmanager
    def roomy_resource_graph(self, quota: int = 100_000) -> Iterator[None]:
        """Resource Graph's per-identity quota raised to ``quota`` queries per window while the block runs (the
        emulator's control plane, ``arm.configure``). Every break-glass plan asks discovery, and at Learn's 15 queries
        per 5 s most would wait out a 429's Retry-After: realistic, and too slow for a fuzz family."""
        saved = self.emulator.arm.settings()["graph_quota"]
        self.emulator.arm.configure(graph_quota=quota)
        try:
            yield
        finally:
            self.emulator.arm.configure(graph_quota=saved)

    @contextmanager
    def capturing(self) -> Iterator[Recorder]:
        """Route every ``rotation`` record (INFO and up) to the recorder only, and other loggers' records that reach
        the root logger (WARNING and up) to it as well. ``rotation`` stops propagating meanwhile, so pytest's own
        capture does not keep a hundred thousand cases' records."""
        rotation = logging.getLogger("rotation")
        root = logging.getLogger()
        saved = rotation.level, rotation.propagate
        rotation.setLevel(logging.INFO)
        rotation.propagate = False
        rotation.addHandler(self.recorder)
        root.addHandler(self.recorder)
        try:
            yield self.recorder
        finally:
            root.removeHandler(self.recorder)
            rotation.removeHandler(self.recorder)
            rotation.setLevel(saved[0])
            rotation.propagate = saved[1]
            self.recorder.records.clear()

    @contextmanager
    def observe(self, transport: CountingTransport | None = None) -> Iterator[Observation]:
        """Observe one case: the records, writes and outcome events between entering and leaving."""
        self.recorder.records.clear()
        if transport is not None:
            transport.writes.clear()
        self.emulator.control.reset_calls()
        published = len(self.emulator.eventgrid.received)
        seen = Observation()
        try:
            yield seen
        finally:
            seen.records = list(self.recorder.records)
            seen.storage_writes = list(transport.writes) if transport is not None else []
            seen.emulator_writes = [
                c
                for c in self.emulator.control.calls()
                if c.method not in _READS and c.operation.startswith(("keyvault.", "arm."))
            ]
            seen.outcome_events = [r["event"] for r in self.emulator.eventgrid.received[published:]]
