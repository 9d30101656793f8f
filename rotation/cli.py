"""The operator CLI, ``python -m rotation``: the engine for one person at a terminal, with the app's own settings.

::

    status      per key: its versions (enabled, created, expires, days left), each account's version and
                provisioning state, and its drift: accounts on it the targets do not list (found by
                discovery, ROTATION_DISCOVERY), listed ones that left it, ones off the target version     reads
    plan        a dry run for every target (or --key): what would change and why                        reads
    preflight   what blocks a rotation: a vault without purge protection, a key that is not RSA 2048,
                an account without identity or on another key ...                                      reads
    rotate      reconcile one key now (--key; --force creates a version even if none is due, after a
                yes on the terminal or with --yes; --dry-run only plans)                                writes
    reconcile   reconcile every target                                                                  writes
    break-glass move every account off a compromised version (--key, --version), then disable it when
                none is left (or with --accept-breakage); shows who is on it first and asks, or --yes;
                --dry-run only shows that plan                                                          writes
    history     the Functions app's ledger: its latest requests (--key, --limit) and how each ended       reads
    discover    every account on a key (--key), across subscriptions, through Resource Graph or ARM;
                --write-targets / --write-azd put the key's entry into the app's and azd's target files  reads

Settings come from the environment, as in the Functions app (``Settings.from_env``); ``--targets FILE`` replaces
``ROTATION_TARGETS`` with a file in the same JSON format. Output is aligned plain-text tables; ``-o json`` (or
``--json``) and ``-o yaml`` print only JSON or YAML on stdout (``RotationPlan.to_dict`` and
``RotationOutcome.to_dict`` for plans and outcomes). While accounts are updated, each engine event (version created,
account updated, account failed) is one progress line on stderr, printed from the engine's ``on_event`` hook (never
from log records).

Azure is reached with ``DefaultAzureCredential`` (``AzureConnection.default``). ``--emulator FILE``, before the
command, reaches the local emulator instead, through the endpoints file ``python -m emulator --endpoints-file FILE``
writes (``rotation/local_emulator.py``): only this argument does, never a setting, so a deployed app cannot be pointed
at the emulator. A file that cannot be used is bad input (exit 2).

Every target is read, planned and reconciled on its own: a target that fails (its key or an account does not exist,
its vault cannot be reached, Azure refuses a request) is reported in the output, in every format, with its reason
and error, and the other targets are still reported, planned and reconciled. A target whose key cannot be read is one
line ``<key url>: FAILED (<reason>): <error>`` (in JSON its ``key``, ``reason`` and ``error``); a key that does not
exist is a blocked plan (``KeyNotFound``); an account that cannot be read is that account blocked
(``AccountUnreadable``, with the error), and the key's other accounts are still rotated.

Exit codes::

    0   every target is well (status, plan, preflight) or reconciled (rotate, reconcile)
    1   any target failed, is blocked or would fail: its key or an account does not exist or cannot be read, a plan
        or a preflight finding blocks, Azure refused a request (``rotate --key`` of a missing key too); for
        ``status`` and ``discover``, also a discovery that could not search everywhere it was asked to
    2   bad input or configuration of the command itself, before anything is read: a bad option, a bad key URL,
        ``--key`` outside the targets, a settings or ``--targets`` file that cannot be read or is invalid;
        one line ``error: ...``

A CLI run sends one request per key (a new uuid4, trigger ``cli``). When the Functions app's storage is configured
(``AzureWebJobsStorage``), ``rotate`` and ``reconcile`` hold the key's lock as the worker does.

Not checked: the role assignments of an account's identity on its key (the Key Vault data plane cannot list them).
This module must never print a traceback for bad input, never print a token, key material or connection string, and
never write anything in ``status``, ``plan``, ``preflight``, ``rotate --dry-run`` or ``break-glass --dry-run``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TextIO

from rotation.breakglass import BreakGlassPlan, Census, UnknownVersion
from rotation.config import TARGETS, Settings, parse_targets
from rotation.connection import AzureConnection
from rotation.discovery import AccountDiscovery, Discovery, DiscoveryPath
from rotation.engine import KEYS_AT_ONCE, RotationEngine, bounded_map
from rotation.errors import ConfigError, InvalidInput, RotationError, StorageUnavailable
from rotation.fleet import check_vault_id, with_app_target, with_azd_target
from rotation.log import LOGGER_NAME, Event, FieldValue, install_redaction
from rotation.model import (
    AccountAction,
    AccountEncryption,
    AccountRef,
    Clock,
    Finding,
    KeyRef,
    Observation,
    RotationOutcome,
    RotationPlan,
    RotationRequest,
    Scope,
    Severity,
    Status,
    Target,
    Trigger,
    iso,
    normalize_location,
    shown,
    system_clock,
)
from rotation.plan import decide
from rotation.preflight import preflight
from rotation.redact import clipped
from rotation.status import (
    TargetFailure,
    break_glass_plan,
    census,
    enrolments,
    fleet_status,
    observe,
    would_fail,
)
from rotation.storage import StorageAccount

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

PROG = "python -m rotation"
OUTPUTS = ("table", "json", "yaml")
MAX_HISTORY = 1000
ROLE_NOTE = (
    "not checked: whether each account's identity holds Key Vault Crypto Service Encryption User (or get, wrapKey "
    "and unwrapKey) on its key, because the Key Vault data plane cannot list role assignments; check with "
    "`az role assignment list --assignee <principal id> --scope <vault id>/keys/<key name>`"
)
STORAGE_SETTINGS = ("AzureWebJobsStorage", "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__blobServiceUri")


class _UsageError(Exception):
    """argparse's complaint about the command line: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _parser() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--targets", metavar="FILE", type=Path, help=f"a JSON file in the {TARGETS} format; replaces {TARGETS}"
    )
    common.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default="table",
        help="aligned text (the default), or only JSON or YAML on stdout",
    )
    common.add_argument("--json", dest="output", action="store_const", const="json", help="the same as -o json")
    parser = _Parser(
        prog=PROG,
        description="Rotate the customer-managed keys of Azure OpenAI accounts. Settings come from the environment, "
        f"as in the Functions app ({TARGETS}, ROTATION_KEY_LIFETIME, ROTATION_RENEW_BEFORE ...).",
        epilog="exit codes: 0 ok, 1 a target failed, is blocked or would fail (the others are still reported), "
        "2 bad input or configuration",
    )
    parser.add_argument(
        "--emulator",
        metavar="FILE",
        type=Path,
        help="reach the local emulator instead of Azure, through the endpoints file `python -m emulator "
        "--endpoints-file FILE` writes (for trying the CLI on this machine; give it before the command)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "status",
        parents=[common],
        help="each key's versions and each account's version and drift",
        description="Per key: every version (enabled, created, expires, days left), and each account's key version, "
        "provisioning state and drift from the target version. Reads only. Exits 1 when a target cannot be read or "
        "is blocked (the others are still reported).",
    )
    plan = commands.add_parser(
        "plan",
        parents=[common],
        help="dry run: what would change and why",
        description="A dry run for every target: what reconcile would do now, and why. Reads only. Exits 1 when a "
        "target cannot be read or a plan is blocked (the rotation would fail).",
    )
    plan.add_argument("--key", metavar="URL", help="only this key: https://<vault>.vault.azure.net/keys/<name>")
    rotate = commands.add_parser(
        "rotate",
        parents=[common],
        help="reconcile one key now",
        description="Reconcile one key: create a version if one is due (or with --force), point every account at "
        "the target version and verify that it reports it.",
    )
    rotate.add_argument("--key", metavar="URL", required=True, help="https://<vault>.vault.azure.net/keys/<name>")
    rotate.add_argument("--force", action="store_true", help="create a new version even if none is due")
    rotate.add_argument("--dry-run", action="store_true", help="only print the plan; change nothing")
    rotate.add_argument(
        "--yes", action="store_true", help="do not ask before --force creates a version (needed without a terminal)"
    )
    glass = commands.add_parser(
        "break-glass",
        parents=[common],
        help="move every account off a compromised version, then disable it",
        description="For a version believed compromised: every account on it (listed, enrolled, and found by "
        "discovery), and whether the service may move it; then, once confirmed, every account the service may touch "
        "moves at once (to a new version when the compromised one is the target), and the version is disabled only "
        "when discovery finds no account left on it, or with --accept-breakage. It is never deleted. Exits 1 when the "
        "version stays enabled or an account failed.",
    )
    glass.add_argument("--key", metavar="URL", required=True, help="https://<vault>.vault.azure.net/keys/<name>")
    glass.add_argument("--version", metavar="ID", required=True, help="the compromised version's id (32 hex digits)")
    glass.add_argument(
        "--accept-breakage",
        action="store_true",
        help="disable the version even while accounts the service may not move are on it: they lose access",
    )
    glass.add_argument(
        "--yes", action="store_true", help="do not ask before acting on the plan (needed without a terminal)"
    )
    glass.add_argument("--dry-run", action="store_true", help="only print the plan; change nothing")
    commands.add_parser(
        "reconcile",
        parents=[common],
        help="reconcile every target",
        description="Reconcile every target key and its accounts, as the timer sweep does. A target that fails does "
        "not stop the others; exits 1 when any failed.",
    )
    commands.add_parser(
        "preflight",
        parents=[common],
        help="what would block a rotation (run it before deploying)",
        description="Report what blocks a rotation: a vault without purge protection, a key that is not RSA or "
        "RSA-HSM 2048, an account without a managed identity or on another key, and warnings. Reads only. Exits 1 "
        f"when anything blocks. {ROLE_NOTE[0].upper()}{ROLE_NOTE[1:]}.",
    )
    history = commands.add_parser(
        "history",
        parents=[common],
        help="the ledger: the latest rotation requests and how each ended",
        description="The latest rotation requests of the Functions app, newest first, from its ledger (the storage "
        "account of AzureWebJobsStorage): trigger, status, reason, versions and error. Reads only; needs no "
        f"{TARGETS}.",
    )
    history.add_argument("--key", metavar="URL", help="only this key: https://<vault>.vault.azure.net/keys/<name>")
    history.add_argument(
        "--limit", metavar="N", type=_limit, default=20, help=f"at most N requests (1 to {MAX_HISTORY}; 20)"
    )
    discover = commands.add_parser(
        "discover",
        parents=[common],
        help="every account on a key, in every subscription the identity can read",
        description="List every Azure OpenAI account whose customer-managed key is this key, through Azure Resource "
        "Graph (every subscription the identity can read, or --subscription / --management-group), falling back to "
        "listing the accounts of the known subscriptions through ARM when Resource Graph cannot be used. Each account "
        "is read through ARM before it is listed. Reads only, unless --write-targets or --write-azd names a file to "
        f"write; needs no {TARGETS} (when set, accounts it does not list are marked unmanaged). Exits 1 when an "
        "account or a subscription could not be read.",
    )
    discover.add_argument("--key", metavar="URL", required=True, help="https://<vault>.vault.azure.net/keys/<name>")
    discover.add_argument(
        "--subscription", metavar="ID", action="append", default=[], help="search only this subscription (repeat)"
    )
    discover.add_argument("--management-group", metavar="NAME", help="search only this management group")
    discover.add_argument(
        "--write-targets",
        metavar="FILE",
        type=Path,
        help=f"write the key's entry, with the accounts found, into FILE in the {TARGETS} format (other keys kept)",
    )
    discover.add_argument(
        "--write-azd",
        metavar="FILE",
        type=Path,
        help="write the key's entry into FILE in azd's ROTATION_KEY_TARGETS format (infra/README.md); needs --vault-id",
    )
    discover.add_argument(
        "--vault-id",
        metavar="ID",
        help="the vault's ARM id, for --write-azd (az keyvault show --name <vault> --query id)",
    )
    return parser


def console() -> NoReturn:
    """The installed command, ``cmk-rotation`` (``pip install .``), and ``python -m rotation``."""
    install_redaction()  # as in the Functions app: no SAS signature in a library's debug line
    raise SystemExit(main())


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    connection: AzureConnection | None = None,
    clock: Clock | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    inp: TextIO | None = None,
) -> int:
    """Run one command; return the exit code. ``env`` defaults to ``os.environ``, ``connection`` to the one
    ``--emulator FILE`` describes, else ``AzureConnection.default`` (the demo and the tests pass the emulator's),
    ``out``/``err``/``inp`` to stdout/stderr/stdin."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    inp = sys.stdin if inp is None else inp
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except _UsageError as exc:  # argparse quotes the arguments it refuses: redacted, clipped, on one line
        err.write(f"error: {' '.join(clipped(str(exc), 500).split())}\n")
        return EXIT_BAD_INPUT
    environment = os.environ if env is None else env
    progress = _Progress(err)
    try:
        local = None
        if args.emulator is not None:  # checked even beside ``connection``: a bad file is bad input
            from rotation.local_emulator import emulator_connection

            local = emulator_connection(args.emulator)
        settings = _settings(environment, args.targets, require_targets=args.command not in ("discover", "history"))
        azure = connection or local or AzureConnection.default(settings)
        now = clock or system_clock
        accounts = azure.accounts()
        engine = RotationEngine(azure.key_vault(), accounts, settings, clock=now, on_event=progress)
        run = _Run(settings, engine, azure, progress, environment, now, out, err, inp, args.output)
        return COMMANDS[args.command](run, args)
    except ConfigError as exc:
        progress.finish()
        err.write(f"error: {_one_line(exc)}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        progress.finish()
        err.write("interrupted; run the same command again: every step is safe to repeat\n")
        return EXIT_INTERRUPTED


@dataclass(frozen=True)
class _Run:
    settings: Settings
    engine: RotationEngine
    azure: AzureConnection
    progress: _Progress
    env: Mapping[str, str]
    clock: Clock
    out: TextIO
    err: TextIO
    inp: TextIO
    output: str  # one of OUTPUTS

    def request(self, key: KeyRef, *, force: bool = False) -> RotationRequest:
        return RotationRequest(str(uuid.uuid4()), key, Trigger.CLI, force=force, requested_at=self.clock())

    @property
    def structured(self) -> bool:
        """JSON or YAML on stdout, and nothing else there."""
        return self.output != "table"

    def print_data(self, value: object) -> None:
        self.progress.finish()
        if self.output == "yaml":
            import yaml

            self.out.write(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
        else:
            self.out.write(json.dumps(value, indent=2) + "\n")

    def print(self, lines: Sequence[str]) -> None:
        self.progress.finish()
        self.out.write("".join(line + "\n" for line in lines))


def _settings(env: Mapping[str, str], targets_file: Path | None, *, require_targets: bool = True) -> Settings:
    """The app settings from ``env``; with ``--targets FILE``, the file's content replaces ROTATION_TARGETS."""
    if targets_file is None:
        return Settings.from_env(env, require_targets=require_targets)
    where = f"--targets {shown(str(targets_file))}"
    try:
        text = targets_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{where} cannot be read ({why}); give a UTF-8 JSON file in the {TARGETS} format") from exc
    try:
        parse_targets(text.strip() or None)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(TARGETS, where, 1)) from exc
    return Settings.from_env({**env, TARGETS: text})


def _targets(run: _Run, key_text: str | None) -> tuple[Target, ...]:
    """Every configured target, or only the one of ``--key``; a key outside the targets is bad input."""
    if key_text is None:
        return run.settings.targets
    key = KeyRef.parse(key_text)
    target = run.settings.target_for(key)
    if target is None:
        raise ConfigError(
            f"key {key.id} is not in {TARGETS}; the service acts only on configured targets: add it there (or to "
            "the --targets file) with its accounts"
        )
    return (target,)


def _observe(run: _Run, targets: Sequence[Target], *, force: bool = False) -> list[Observation | TargetFailure]:
    """Gather each target's key and accounts (reads only; enrolled ones too, as the app would), each on its own: a
    target that cannot be read is returned as its failure. A key that does not exist is an observation without
    versions (its plan is blocked), an account that cannot be read is in ``unreadable`` (that account is blocked)."""
    extra = enrolments(run.settings, _discovery(run), targets)
    return bounded_map(
        lambda target: observe(run.engine, run.request(target.key, force=force), enrolled=extra.get(target.key, ())),
        targets,
        workers=KEYS_AT_ONCE,
    )


def _discovery(run: _Run) -> AccountDiscovery | None:
    """Discovery as the app runs it (``ROTATION_DISCOVERY``), on the engine's connection; None when it is off."""
    if run.settings.discovery is None:
        return None
    return run.azure.discovery(scope=run.settings.discovery, concurrency=run.settings.concurrency)


def _plan(run: _Run, obs: Observation) -> RotationPlan:
    return decide(obs, run.settings.renewal, app_name=run.settings.app_name)


def _would_fail(plan: RotationPlan) -> bool:
    """The plan is blocked, or leaves an account blocked: reconciling it now would fail."""
    return plan.blocked or any(a.action is AccountAction.BLOCKED for a in plan.accounts)


# Commands ------------------------------------------------------------------------------------------------------------


def _status_command(run: _Run, args: argparse.Namespace) -> int:
    evidence = StorageAccount.from_settings(run.env).evidence() if _has_storage(run.env) else None
    report = fleet_status(run.engine, run.settings, _discovery(run), trigger=Trigger.CLI, evidence=evidence)
    keys = _rows(report["keys"])
    if run.structured:
        run.print_data(report)
    else:
        run.print(
            _render_discovery_status(report["discovery"])
            + [line for key in keys for line in (_render_failure(key) if "error" in key else _render_status(key))]
        )
    discovered = report["discovery"]
    unsearched = isinstance(discovered, Mapping) and ("error" in discovered or discovered["failures"])
    return EXIT_FAILED if unsearched or any(would_fail(key) for key in keys) else EXIT_OK


def _plan_command(run: _Run, args: argparse.Namespace) -> int:
    return _dry_run(run, _targets(run, args.key), single=False)


def _rotate_command(run: _Run, args: argparse.Namespace) -> int:
    targets = _targets(run, args.key)
    refusal = next((why for t in targets if args.force and (why := t.refuses_force())), None)
    if refusal is not None:
        raise ConfigError(f"--force: {refusal}")
    if args.dry_run:
        return _dry_run(run, targets, single=True, force=args.force)
    question = (
        f"--force creates a new version of {targets[0].key.id} now, whatever its expiry, and repoints its "
        f"{len(targets[0].accounts)} accounts"
    )
    if args.force and not args.yes and not _confirmed(run, question):
        return EXIT_BAD_INPUT
    return _reconcile(run, targets, single=True, force=args.force)


def _confirmed(run: _Run, question: str) -> bool:
    """The operator's yes to ``question``, asked on the terminal; without one, a refusal that names ``--yes``."""
    if not run.inp.isatty():
        run.err.write(f"error: {question}: add --yes to confirm (there is no terminal to ask on); nothing was done\n")
        return False
    run.err.write(f"{question}. Go ahead? [y/N] ")
    run.err.flush()
    if run.inp.readline().strip().lower() in ("y", "yes"):
        return True
    run.err.write("not confirmed; nothing was done\n")
    return False


def _break_glass_command(run: _Run, args: argparse.Namespace) -> int:
    """Break-glass (rotation/breakglass.py): the plan, the operator's yes (or --yes), then the rotation and the
    containment, as the worker runs them (under the key's lock when the app's storage is configured). --dry-run only
    shows the plan. Without a terminal to ask on and without --yes, nothing is read."""
    (target,) = _targets(run, args.key)
    refusal = target.refuses_force()
    if refusal is not None:
        raise ConfigError(f"break-glass: {refusal}")
    try:
        request = replace(
            run.request(target.key, force=True),
            compromised_version=args.version.lower(),
            accept_breakage=args.accept_breakage,
        )
    except InvalidInput as exc:
        raise ConfigError(f"--version {shown(args.version)}: {exc}") from exc
    if not (args.dry_run or args.yes or run.inp.isatty()):
        run.err.write(
            "error: break-glass acts on the plan it shows: add --yes to confirm (there is no terminal to ask on), or "
            "--dry-run to see the plan only; nothing was done\n"
        )
        return EXIT_BAD_INPUT
    discovery = _discovery(run)
    try:
        found, plan = break_glass_plan(run.engine, run.settings, discovery, request)
    except UnknownVersion as exc:
        raise ConfigError(f"--version: {exc}") from exc
    except RotationError as exc:
        run.print(_render_failure(TargetFailure(target.key, exc.reason, str(exc)).to_dict()))
        return EXIT_FAILED
    if plan.blocked:
        run.err.write(f"error: no new version can be created: {plan.message}; nothing was done\n")
        return EXIT_FAILED
    if args.dry_run:
        if run.structured:
            run.print_data(found.to_dict())
        else:
            run.print(_render_break_glass(found))
        return EXIT_OK
    if not run.structured:
        run.print(_render_break_glass(found))
    movable = len(found.accounts) - len(found.stranded)
    then = "disabled" if found.disables else "left enabled"
    question = f"break-glass moves {movable} accounts off version {found.version} now, then the version is {then}"
    if not args.yes and not _confirmed(run, question):
        return EXIT_BAD_INPUT
    extra = enrolments(run.settings, discovery, [target]).get(target.key, ())
    with _records_off_stderr():
        outcome = _reconcile_key(run, request, extra, census=partial(census, discovery, target))
    if run.structured:
        run.print_data(outcome.to_dict())
    else:
        run.print(_render_outcome(outcome))
    return EXIT_FAILED if outcome.status is Status.FAILED else EXIT_OK


def _reconcile_command(run: _Run, args: argparse.Namespace) -> int:
    return _reconcile(run, run.settings.targets, single=False)


def _preflight_command(run: _Run, args: argparse.Namespace) -> int:
    reports: list[dict[str, object]] = []
    lines: list[str] = []
    failed = False
    for found in _observe(run, run.settings.targets):
        if isinstance(found, TargetFailure):
            reports.append(found.to_dict())
            lines += _render_failure(found.to_dict())
            failed = True
            continue
        findings = preflight(found)
        blocked = any(f.severity is Severity.BLOCK for f in findings)
        reports.append({"key": found.target.key.id, "blocked": blocked, "findings": [f.to_dict() for f in findings]})
        lines += _render_findings(found.target, findings)
        failed = failed or blocked
    if run.structured:
        run.print_data(reports)
    else:
        run.print([*lines, f"note: {ROLE_NOTE}"])
    return EXIT_FAILED if failed else EXIT_OK


def _history_command(run: _Run, args: argparse.Namespace) -> int:
    """The ledger's latest rows, for one key or all; a storage account that cannot be read is one line and exit 1."""
    key = None if args.key is None else KeyRef.parse(args.key)
    if not _has_storage(run.env):
        raise ConfigError(
            "history reads the app's ledger in its storage account: set AzureWebJobsStorage (a connection string) or "
            "AzureWebJobsStorage__accountName, as in the Functions app"
        )
    ledger = StorageAccount.from_settings(run.env).ledger()  # ConfigError: the settings are not usable
    try:
        rows = [entry.to_dict() for entry in ledger.list_requests(key, limit=args.limit)]
    except StorageUnavailable as exc:
        run.err.write(f"error: the ledger could not be read: {_one_line(exc)}\n")
        return EXIT_FAILED
    if run.structured:
        run.print_data(rows)
        return EXIT_OK
    table = [
        (
            _short_time(row["created_at"]),
            str(row["key"]).rsplit("/", 1)[-1],
            row["trigger"],
            row["status"],
            row["reason"] or "-",
            f"{row['from_version'] or '-'} -> {row['to_version'] or '-'}",
            row["request_id"],
        )
        for row in rows
    ]
    headers = ("CREATED", "KEY", "TRIGGER", "STATUS", "REASON", "VERSIONS", "REQUEST")
    run.print(_table(headers, table, indent="") if rows else ["no requests in the ledger"])
    run.print([f"{row['request_id']}: {clipped(str(row['error']), 300)}" for row in rows if row["error"]])
    return EXIT_OK


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_HISTORY):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_HISTORY}; got {shown(text)}")
    return int(text)


def _discover_command(run: _Run, args: argparse.Namespace) -> int:
    """Every account on ``--key``; then, when asked, the key's entry in the app's and azd's target files. Everything
    the command line names is checked, and both files read, before Azure is; nothing is written after a failure."""
    key = KeyRef.parse(args.key)
    scope = Scope(tuple(args.subscription), args.management_group)
    if args.write_azd is not None and args.vault_id is None:
        raise ConfigError("--write-azd needs --vault-id: azd's targets name the vault by its ARM id")
    if args.vault_id is not None:
        check_vault_id(key, args.vault_id)
    app_targets = _json_list(args.write_targets)
    azd_targets = _json_list(args.write_azd)
    target = run.settings.target_for(key)
    known = sorted({a.subscription_id for t in run.settings.targets for a in t.accounts})
    discovery = run.azure.discovery(scope=scope, concurrency=run.settings.concurrency).discover(
        [key], known_subscriptions=known
    )
    found = discovery.accounts[key]
    report = _discovery_report(key, discovery, found, None if target is None else set(target.accounts))
    failed = bool(discovery.account_failures or discovery.subscription_failures)
    ids = [state.account.id for state in found]
    wrote: list[str] = []
    if not failed and ids and args.write_targets is not None:
        _write_json(args.write_targets, with_app_target(app_targets, key, ids))
        wrote.append(f"{args.write_targets} ({TARGETS})")
    if not failed and ids and args.write_azd is not None:
        _write_json(args.write_azd, with_azd_target(azd_targets, key, args.vault_id, _region(found), ids))
        wrote.append(f"{args.write_azd} (azd's ROTATION_KEY_TARGETS)")
    report["wrote"] = wrote
    if run.structured:
        run.print_data(report)
    else:
        run.print(_render_discovery(report))
    if (args.write_targets or args.write_azd) and not wrote:
        why = "an account or a subscription could not be read" if failed else "no account uses the key"
        run.err.write(f"nothing written: {why}\n")
    return EXIT_FAILED if failed else EXIT_OK


def _discovery_report(
    key: KeyRef, discovery: Discovery, found: Sequence[AccountEncryption], listed: set[AccountRef] | None
) -> dict[str, object]:
    return {
        "key": key.id,
        **discovery.to_dict(),
        "accounts": [
            {
                "id": state.account.id,
                "subscription": state.account.subscription_id,
                "key_version": state.key_version,
                "provisioning_state": state.provisioning_state,
                "location": state.location,
                "listed": None if listed is None else state.account in listed,
            }
            for state in found
        ],
    }


def _render_discovery(report: Mapping[str, Any]) -> list[str]:
    accounts = report["accounts"]
    lines = [f"{report['key']}: {len(accounts)} accounts, through {_through(report)}"]
    if report["fallback_reason"]:
        lines.append(f"  Resource Graph could not be used: {report['fallback_reason']}")
    if accounts:
        marks = {None: "", True: "listed", False: "UNMANAGED"}
        rows = [
            [
                _account_label(a["id"]),
                a["subscription"],
                str(a["key_version"] or "-"),
                str(a["provisioning_state"] or "-"),
                marks[a["listed"]],
            ]
            for a in accounts
        ]
        lines += _table(["ACCOUNT", "SUBSCRIPTION", "KEY VERSION", "STATE", "TARGETS"], rows)
    lines += _discovery_failures(report)
    lines += [f"wrote {what}" for what in report["wrote"]]
    return lines


def _through(discovery: Mapping[str, Any]) -> str:
    """``Discovery.to_dict``'s path and scope, in words."""
    path = "Resource Graph" if discovery["path"] == DiscoveryPath.RESOURCE_GRAPH else "ARM's account listing"
    return f"{path} ({discovery['searched']})"


def _discovery_failures(discovery: Mapping[str, Any]) -> list[str]:
    return [
        f"  FAILED {f.get('account') or 'subscription ' + str(f['subscription'])} ({f['reason']}): {f['error']}"
        for f in _rows(discovery["failures"])
    ]


def _region(found: Sequence[AccountEncryption]) -> str:
    """The accounts' one region (a customer-managed key must be in the account's region, so the vault's too)."""
    regions = {normalize_location(state.location) for state in found if state.location}
    if len(regions) != 1:
        raise ConfigError(
            f"the accounts on the key are in {len(regions)} regions ({', '.join(sorted(regions)) or 'none'}); "
            "a customer-managed key must be in the account's region: write the azd target by hand"
        )
    return regions.pop()


def _json_list(path: Path | None) -> list[dict[str, Any]]:
    """The JSON list of objects in ``path``; [] when there is no such file yet."""
    if path is None or not path.exists():
        return []
    where = shown(str(path))
    try:
        value = json.loads(path.read_text(encoding="utf-8") or "[]")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{where} cannot be read as JSON ({type(exc).__name__}); fix it or give a new file") from exc
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{where} is not a JSON list of targets; fix it or give a new file")
    return value


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


COMMANDS = {
    "status": _status_command,
    "plan": _plan_command,
    "rotate": _rotate_command,
    "reconcile": _reconcile_command,
    "break-glass": _break_glass_command,
    "preflight": _preflight_command,
    "discover": _discover_command,
    "history": _history_command,
}


def _dry_run(run: _Run, targets: Sequence[Target], *, single: bool, force: bool = False) -> int:
    plans = [
        found if isinstance(found, TargetFailure) else _plan(run, found)
        for found in _observe(run, targets, force=force)
    ]
    if run.structured:
        run.print_data(plans[0].to_dict() if single else [p.to_dict() for p in plans])
    else:
        run.print(
            [
                line
                for plan in plans
                for line in (_render_failure(plan.to_dict()) if isinstance(plan, TargetFailure) else _render_plan(plan))
            ]
        )
    would_fail = any(isinstance(p, TargetFailure) or _would_fail(p) for p in plans)
    return EXIT_FAILED if would_fail else EXIT_OK


def _reconcile(run: _Run, targets: Sequence[Target], *, single: bool, force: bool = False) -> int:
    """Reconcile the keys, ``KEYS_AT_ONCE`` at a time; a key that fails (or cannot be read, or has an account that
    cannot) is reported and does not stop the others. Only a problem of the command itself (its storage settings)
    stops them all."""
    extra = enrolments(run.settings, _discovery(run), targets)
    with _records_off_stderr():
        outcomes = bounded_map(
            lambda t: _reconcile_key(run, run.request(t.key, force=force), extra.get(t.key, ())),
            targets,
            workers=KEYS_AT_ONCE,
        )
    if run.structured:
        run.print_data(outcomes[0].to_dict() if single else [o.to_dict() for o in outcomes])
    else:
        run.print([line for outcome in outcomes for line in _render_outcome(outcome)])
    return EXIT_FAILED if any(o.status is Status.FAILED for o in outcomes) else EXIT_OK


def _reconcile_key(
    run: _Run, request: RotationRequest, extra: Sequence[AccountRef], census: Callable[[], Census] | None = None
) -> RotationOutcome:
    """The outcome of reconciling one key (a break-glass request's with its ``census``); a ``RotationError`` of this
    key is its outcome, never raised (only a ``ConfigError`` of the command's own settings is)."""
    try:
        with _key_lock(run.env, request.key) as still_held:
            return run.engine.reconcile(request, enrolled=extra, before_write=still_held, census=census)
    except ConfigError:
        raise
    except RotationError as exc:
        run.progress.line(f"{request.key.name}: FAILED ({exc.reason.value}): {_one_line(exc)}")
        return RotationOutcome.from_error(request, exc)


def _has_storage(env: Mapping[str, str]) -> bool:
    """Whether the app's storage account (``AzureWebJobsStorage``, in any of its forms) is configured."""
    return any(env.get(name, "").strip() for name in STORAGE_SETTINGS)


@contextlib.contextmanager
def _key_lock(env: Mapping[str, str], key: KeyRef) -> Iterator[Callable[[], None]]:
    """Hold the key's lock in the app's storage, as the worker does, when ``AzureWebJobsStorage`` is configured.
    Yields the check to run before each write (it raises ``LockLost`` once the lease is gone)."""
    if not _has_storage(env):
        yield lambda: None
        return
    lock = StorageAccount.from_settings(env).key_lock(key)  # ConfigError: the settings are not usable
    lock.acquire()  # LockHeld when the worker is rotating this key right now; StorageUnavailable
    try:
        yield lock.raise_if_lost
    finally:
        lock.release()


# Progress ------------------------------------------------------------------------------------------------------------


class _Progress:
    """The engine's ``on_event`` hook: the events an operator follows (version created or adopted, account updated
    or failed) as one line each on ``stream``, as they happen. On a terminal, the accounts verified are one live line
    instead (``12/40 accounts verified, 0 failed``), rewritten in place, and a failure still gets a line of its own.
    Lines are written one at a time (keys are reconciled on several threads); a stream that cannot be written to never
    stops a rotation."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._live = _is_terminal(stream)
        self._total = self._verified = self._failed = 0
        self._shown = False  # the live line is on the screen, without its newline

    def __call__(self, event: Event, message: str, fields: Mapping[str, FieldValue]) -> None:
        line = _progress_line(event, message, fields)
        with self._lock:
            if self._live and event is Event.PLANNED and not fields.get("dry_run", False):
                self._total += int(str(fields.get("accounts") or 0))
            if self._live and event is Event.ACCOUNT_UPDATED:
                self._verified += 1
                line = None
            if self._live and event is Event.ACCOUNT_FAILED:
                self._failed += 1
            self._write(line)

    def line(self, text: str) -> None:
        """A line of its own (a key that failed), above the live line."""
        with self._lock:
            self._write(text)

    def _write(self, line: str | None) -> None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: the stream is closed
            if line is not None:
                self._stream.write(("\r\x1b[K" if self._shown else "") + line + "\n")
                self._shown = False
            if self._live and self._total:
                self._stream.write(f"\r\x1b[K{self._verified}/{self._total} accounts verified, {self._failed} failed")
                self._shown = True
            self._stream.flush()

    def finish(self) -> None:
        """End the live line, so that what is printed next starts on a line of its own."""
        with self._lock, contextlib.suppress(OSError, ValueError):
            if self._shown:
                self._stream.write("\n")
                self._stream.flush()
                self._shown = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


def _progress_line(event: Event, message: str, fields: Mapping[str, FieldValue]) -> str | None:
    name = str(fields.get("key", "")).rsplit("/", 1)[-1]
    account = fields.get("account")
    version = fields.get("version")
    reason = fields.get("reason")
    if event is Event.PLANNED and not fields.get("dry_run", False):
        return f"{name}: {reason}: {message}"
    if event is Event.VERSION_CREATED:
        return f"{name}: created version {version} ({reason})"
    if event is Event.VERSION_ADOPTED:
        return f"{name}: adopted version {version}, created for this request by an earlier attempt"
    if event is Event.ACCOUNT_UPDATED and account:
        return f"{name}: {_account_label(str(account))} ok: reports {version} and Succeeded"
    if event is Event.ACCOUNT_FAILED and account:
        return f"{name}: {_account_label(str(account))} FAILED ({reason}): {message}"
    return None


@contextlib.contextmanager
def _records_off_stderr() -> Iterator[None]:
    """While keys are reconciled, the service's log records, and stamina's (``stamina.retry_scheduled`` for every
    wait of the verify step), stay off stderr, where the progress lines are: without a handler of their own on these
    loggers, Python's last-resort handler would print each warning there."""
    loggers = [logging.getLogger(name) for name in (LOGGER_NAME, "stamina")]
    handler = logging.NullHandler()
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


# Rendering -----------------------------------------------------------------------------------------------------------


def _render_failure(failure: Mapping[str, object]) -> list[str]:
    """A target whose key could not be read (``TargetFailure.to_dict``): one line."""
    return [f"{failure['key']}: FAILED ({failure['reason']}): {' '.join(str(failure['error']).split())}", ""]


def _render_discovery_status(discovery: object) -> list[str]:
    """Where the status's unmanaged accounts were searched for, and what failed: a line or a few."""
    if not isinstance(discovery, Mapping):
        return ["discovery: off (ROTATION_DISCOVERY=off): accounts outside the targets are not searched for", ""]
    if "path" not in discovery:
        return [f"discovery: FAILED ({discovery['reason']}): {discovery['error']}", ""]
    lines = [f"discovery: through {_through(discovery)}"]
    if discovery["fallback_reason"]:
        lines.append(f"  Resource Graph could not be used: {discovery['fallback_reason']}")
    return [*lines, *_discovery_failures(discovery), ""]


def _render_status(report: Mapping[str, object]) -> list[str]:
    target = report["target_version"] or ("a new version is due" if report["new_version_due"] else "none")
    versions = _rows(report["versions"])
    accounts = _rows(report["accounts"])
    return [
        str(report["key"]),
        f"  target: {target}  ({report['reason']}: {report['message']})",
        f"  renews: {_short_time(report['renews_at'])} ({_in_days(report['days_until_renewal'])})  "
        f"expires: {_short_time(report['expires_on'])} ({_in_days(report['days_until_expiry'])})",
        *_table(
            ("VERSION", "ENABLED", "CREATED", "EXPIRES", "DAYS LEFT"),
            [
                (
                    str(v["version"]),
                    "yes" if v["enabled"] else "no",
                    _short_time(v["created"]),
                    _short_time(v["expires"]),
                    _days_left(v["days_left"]),
                )
                for v in versions
            ],
        ),
        *_table(
            ("ACCOUNT", "KEY VERSION", "STATE", "DRIFT"),
            [
                (
                    _account_label(str(a["account"])),
                    str(a["key_version"] or "-"),
                    str(a["provisioning_state"] or "-"),
                    _drift(a),
                )
                for a in accounts
            ],
        ),
        *[f"  blocked: {a['reason']}: {a['message']}" for a in accounts if a["action"] == AccountAction.BLOCKED],
        *_render_drift(report["drift"]),
        *_render_retirement(report.get("retirement")),
        "",
    ]


def _render_retirement(retirement: object) -> list[str]:
    """Each old version's retirement (``ROTATION_RETIREMENT``), one line each: its verdict, why, and when."""
    if isinstance(retirement, Mapping):
        return [f"  retirement: FAILED ({retirement['reason']}): {retirement['error']}"]
    lines = []
    for r in _rows(retirement or []):
        when = f"; retired at {_short_time(r['retire_at'])}" if r["retire_at"] else ""
        lines.append(f"  retire {str(r['version'])[:8]}: {r['verdict']}: {r['why']}{when}")
    return lines


def _render_drift(drift: object) -> list[str]:
    """The key's drift (``Drift.to_dict``): a line per kind that has accounts."""
    if not isinstance(drift, Mapping):
        return []
    lines = []
    if drift["unmanaged"] is None:
        lines.append("  unmanaged: not searched (ROTATION_DISCOVERY=off, or discovery failed)")
    elif drift["unmanaged"]:
        unmanaged = _rows(drift["unmanaged"])  # in any subscription: named in full
        lines.append("  unmanaged (not in the targets): " + ", ".join(_on_version(a, full=True) for a in unmanaged))
    if drift["left"]:
        lines.append("  left the key (listed, now on another key): " + ", ".join(map(_account_label, drift["left"])))
    behind = [a for a in _rows(drift["off_target"]) if a["managed"]]
    if behind:
        lines.append("  off the target version: " + ", ".join(_on_version(a) for a in behind))
    return lines


def _on_version(account: Mapping[str, object], *, full: bool = False) -> str:
    name = str(account["account"]) if full else _account_label(str(account["account"]))
    version = str(account["key_version"] or "-")
    return f"{name} on {version[:8]} (expiry {_in_days(account['days_until_expiry'])})"


def _drift(account: Mapping[str, object]) -> str:
    action = account["action"]
    if action == AccountAction.BLOCKED:
        return f"blocked: {account['reason']}"
    if action == AccountAction.REPOINT:
        return "yes: will be repointed"
    if action == AccountAction.WAIT:
        return "no: waiting for Succeeded"
    return "no" if account["drift"] is False else "-"


def _render_plan(plan: RotationPlan) -> list[str]:
    lines = [f"{plan.request.key.id}: {plan.reason.value}", f"  {plan.message}"]
    if plan.create is not None:
        lines.append(
            f"  create: {plan.create.kty} 2048, expires {_short_time(iso(plan.create.expires_on))}, "
            f"key_ops {','.join(plan.create.key_ops)}"
        )
    lines.append(f"  target: {plan.target_version or ('the new version' if plan.create else 'none')}")
    staged = any(a.wave > 1 for a in plan.accounts)  # a rollout: each account's wave, in the order they go
    ordered = sorted(plan.accounts, key=lambda a: a.wave) if staged else plan.accounts
    lines += _table(
        ("WAVE", "ACCOUNT", "ACTION", "REASON", "DETAIL")[0 if staged else 1 :],
        [
            ((str(a.wave),) if staged else ())
            + (_account_label(a.account.id), a.action.value, a.reason.value, a.message)
            for a in ordered
        ],
    )
    lines += [f"  {f.severity.value}: {f.reason.value}: {f.message}" for f in plan.findings]
    return [*lines, ""]


def _render_outcome(outcome: RotationOutcome) -> list[str]:
    created = " (created)" if outcome.created else ""
    lines = [
        f"{outcome.key.id}: {outcome.status.value} ({outcome.reason.value})",
        f"  {outcome.message}",
        f"  version: {outcome.from_version or '-'} -> {outcome.to_version or '-'}{created}",
    ]
    staged = any(a.wave > 1 for a in outcome.accounts)
    lines += _table(
        ("WAVE", "ACCOUNT", "ACTION", "RESULT", "REASON", "FROM", "TO")[0 if staged else 1 :],
        [
            ((str(a.wave),) if staged else ())
            + (
                _account_label(a.account.id),
                a.action.value,
                a.status.value,
                a.reason.value,
                a.from_version or "-",
                a.to_version or "-",
            )
            for a in (sorted(outcome.accounts, key=lambda a: a.wave) if staged else outcome.accounts)
        ],
    )
    lines += [f"  warn: {w.reason.value}: {w.message}" for w in outcome.warnings]
    if outcome.blast_radius is not None:
        radius = outcome.blast_radius
        lines.append(f"  compromised version {radius['compromised_version']}: {radius['version_state']}")
        lines += _exposed("LEFT ON IT", _rows(radius["left"]))
    if outcome.error:
        lines.append(f"  error: {outcome.error}")
    return [*lines, ""]


def _render_break_glass(plan: BreakGlassPlan) -> list[str]:
    state = "enabled" if plan.enabled else "disabled"
    lines = [
        f"{plan.key.id}: break-glass for version {plan.version} ({state})",
        f"  moves to: {plan.moves_to or 'a new version, created at once'}",
        f"  discovery: {'complete' if plan.census.complete else 'incomplete'}: {plan.census.searched}",
    ]
    lines += _exposed("ON THE VERSION", [e.to_dict() for e in plan.accounts]) or ["  no account is on the version"]
    return [*lines, f"  the version: {plan.outlook()}", ""]


def _exposed(title: str, accounts: Sequence[Mapping[str, object]]) -> list[str]:
    """Break-glass's accounts on the compromised version (``Exposed.to_dict``): whether each may move, and why."""
    rows = [(_account_label(str(a["account"])), "yes" if a["movable"] else "no", str(a["why"])) for a in accounts]
    return _table((title, "MOVABLE", "WHY"), rows)


def _render_findings(target: Target, findings: Sequence[Finding]) -> list[str]:
    blocking = sum(f.severity is Severity.BLOCK for f in findings)
    summary = "ok" if not findings else f"{blocking} blocking, {len(findings) - blocking} warning(s)"
    rows = [
        (f.severity.value, _account_label(f.account.id) if f.account else "key", f.reason.value, f.message)
        for f in findings
    ]
    return [f"{target.key.id}: {summary}", *_table(("SEVERITY", "SUBJECT", "REASON", "MESSAGE"), rows), ""]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Plain aligned columns; nothing when there are no rows."""
    if not rows:
        return []
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]


def _rows(value: object) -> list[Mapping[str, object]]:
    return [row for row in value if isinstance(row, Mapping)] if isinstance(value, list) else []


def _account_label(account_id: str) -> str:
    """``<resource group>/<name>``: short, and unambiguous within one subscription."""
    try:
        ref = AccountRef.parse(account_id)
    except ConfigError:
        return account_id
    return f"{ref.resource_group}/{ref.name}"


def _short_time(text: object) -> str:
    """``2026-06-01T12:00:00Z`` -> ``2026-06-01 12:00Z``; ``-`` for none."""
    return "-" if not isinstance(text, str) else f"{text[:10]} {text[11:16]}Z"


def _days_left(days: object) -> str:
    if not isinstance(days, int):
        return "-"
    return "expired" if days < 0 else str(days)


def _in_days(days: object) -> str:
    if not isinstance(days, int):
        return "-"
    return f"in {days} days" if days >= 0 else f"{-days} days ago"


def _one_line(exc: BaseException) -> str:
    """An error message on one line: a multi-line list of problems becomes ``head (1) problem (2) problem``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    items = [f"({number}) {line.removeprefix('- ')}" for number, line in enumerate(lines[1:], 1)]
    return " ".join([lines[0], *items])
