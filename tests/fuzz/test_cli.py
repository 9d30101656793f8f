"""Family 7: the CLI. Argument lists fed to ``rotation.cli.main(argv, env=..., connection=..., out=..., err=...,
inp=...)`` with the app's settings (storage connection string and topic key included), the emulator's connection, and
an input that is not a terminal.

Only commands that read are run: ``status``, ``plan``, ``preflight``, ``rotate --dry-run``, ``break-glass`` without
``--yes`` (it refuses to act, before it reads, since no terminal can confirm; with ``--dry-run`` it reads and prints its
plan), and invalid argument lists. A generated list that
could write is made safe before it runs: ``reconcile`` becomes ``status``, a list that holds ``rotate`` gets
``--dry-run`` at its end (a dry run, or an error), and ``--yes`` (and its abbreviations) is taken out of a
``break-glass`` list unless its version is not a version id (refused before anything is read). Any write the emulator
still sees is counted (``rejected_writes``): these commands must never write.

Arguments: the commands (and near misses), their options (and abbreviations, ``--opt=value`` forms, unknown ones),
``--key`` with a target key, a key outside the targets, a URL that is not a key's or that carries a planted secret,
``--targets`` with a valid file, one with a planted secret, invalid JSON, not UTF-8, too deep, too large, empty, a
directory or a missing path; and junk tokens (lone surrogates included, as ``sys.argv`` holds undecodable bytes;
never NUL, which no argv can hold). ``break-glass`` (about one list in nine) gets ``--key`` with a target key and
``--version`` (either may be left out) with a version the key has (as the emulator's vault lists them now, in either
case), one it lacks (another key's, or random hex), or one that is not a version id (short, long, not hex, blank, a
planted secret), as ``--version V``, ``--version=V`` or ``--vers V``; and ``--accept-breakage`` or ``--yes`` (or their
abbreviations) besides the other options.

Every run must exit 0, 1 or 2 without raising and without a traceback in its output; exit 2 prints exactly one line
(no newline or carriage return inside), ``error: ...``, on stderr and nothing on stdout; and an argument list known
to be bad (a junk token, a key outside the targets or not a key URL, a targets file that cannot be used; for
``break-glass`` also a missing ``--key`` or ``--version``, a version that is not 32 hex digits or one the key does not
have) must exit 2, unless it asks for help. A ``break-glass`` refused for want of ``--yes`` must not have got there
with a version that is not a version id (``unnamed``): that is refused first.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotation.cli import main
from rotation.model import KEY_VERSION_PATTERN, KeyRef
from tests.fuzz.harness import KEY, KEY2, OTHER_KEY, PLANTED_URL_PARTS, Tally, World, check_secrets, tally
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import current, planted, secret_url, versions_valid, weighted

COMMANDS = ["status", "plan", "preflight", "rotate", "break-glass"]
NEAR_MISSES = ["", "statu", "STATUS", "Plan", "reconcile", "rotate-key", "help", "-", "--", "status "]
FLAGS = ["--json", "--force", "--dry-run", "--yes", "--js", "--dry", "--forc", "-o", "yaml"]
GLASS_FLAGS = ["--accept-breakage", "--accept", "--acc", "--yes", "--y", "--ye"]
BAD_OPTIONS = ["--nope", "-x", "--json=1", "-j", "---json", "--dry-run=yes"]
HELP = ("-h", "--help", "--he", "--h")
UNCONFIRMED = "add --yes to confirm"  # break-glass's one line on stderr when no terminal confirms its plan
VERSIONS_BAD = [
    "",
    " ",
    "abc",
    "g" * 32,
    "a" * 31,
    "a" * 33,
    "0x" + "a" * 30,
    " " + "a" * 32,
    "a" * 32 + " ",
    "a" * 32 + "\n",
    "\u0663" * 32,
    "-" + "a" * 31,
    "a" * 5000,
]
"""--version values that are not version ids (never NUL, which no argv holds)."""


@dataclass(frozen=True)
class Args:
    """One case: the argument list, whether it is known to be bad input, and the compromised version it names (the
    last ``--version`` given to ``break-glass``), if any."""

    argv: list[str]
    bad: bool
    version: str | None = None


def files(root: Path, world: World) -> dict[str, tuple[str, bool]]:
    """Targets files: (path, usable)."""
    secret_key = world.targets[0]["key"] + PLANTED_URL_PARTS[0][1]
    contents: dict[str, bytes | None] = {
        "valid.json": json.dumps(world.targets).encode(),
        "secret.json": json.dumps([{**world.targets[0], "key": secret_key}]).encode(),
        "invalid.json": b"not json",
        "empty.json": b"",
        "latin1.json": '[{"key": "é"}]'.encode("latin-1"),
        "deep.json": b"[" * 100_000,
        "huge.json": b"[" + b"1," * 200_000 + b"1]",
        "object.json": b'{"key": "x"}',
    }
    found: dict[str, tuple[str, bool]] = {}
    for name, content in contents.items():
        path = root / name
        if content is not None:
            path.write_bytes(content)
        found[name] = (str(path), name == "valid.json")
    found["directory"] = (str(root), False)
    found["missing"] = (str(root / "missing.json"), False)
    found["no value"] = ("", False)
    return found


def emulator_files(root: Path, world: World, targets_files: dict[str, tuple[str, bool]]) -> dict[str, tuple[str, bool]]:
    """``--emulator`` files: (path, usable). The emulator's own endpoints; the same naming a remote ARM; and every
    targets file, none of which is an endpoints file."""
    endpoints = world.emulator.endpoints()
    contents = {"endpoints.json": endpoints, "remote.json": {**endpoints, "arm": "https://management.azure.com"}}
    found = {f"targets {name}": (path, False) for name, (path, _) in targets_files.items()}
    for name, content in contents.items():
        (root / name).write_text(json.dumps(content))
        found[name] = (str(root / name), name == "endpoints.json")
    return found


def glass_versions(world: World, key: str) -> st.SearchStrategy[str]:
    """``--version`` values for ``break-glass --key key``: one the key has (either case), one it lacks, or junk."""
    has = current(lambda: world.key_versions(KeyRef.parse(key).name), fallback=world.versions[KEY])
    others = [version for name, version in world.versions.items() if name != KeyRef.parse(key).name]
    return weighted(
        (4, has),
        (1, has.map(str.upper)),
        (1, st.sampled_from(others) | versions_valid),
        (2, st.sampled_from(VERSIONS_BAD) | planted),
    )


@st.composite
def argument_lists(
    draw: st.DrawFn,
    world: World,
    targets_files: dict[str, tuple[str, bool]],
    endpoints_files: dict[str, tuple[str, bool]],
) -> Args:
    """An argument list and whether it is known to be bad input. For ``--key``, ``--targets`` and ``--version`` the
    last one given counts, as argparse keeps the last value."""
    bad = False
    last: dict[str, bool] = {}  # option -> its last value is bad
    junk = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=12) | st.sampled_from(
        ["\udcff", "a\udc80", "é", " ", "\t"]
    )
    good_keys = [world.key_url(KEY), world.key_url(KEY2), world.key_url(KEY.upper()) + "/"]
    bad_keys = [
        world.key_url(OTHER_KEY),
        world.key_url("missing-cmk"),
        f"{world.key_url(KEY)}/{world.versions[KEY]}",
        world.key_url(KEY).replace("https://", "http://"),
        "https://kv..vault.azure.net/keys/k",
        "not a url",
        "",
    ]
    command = draw(weighted((8, st.sampled_from(COMMANDS)), (1, st.sampled_from(NEAR_MISSES))))
    bad |= command in NEAR_MISSES and command != "reconcile"
    argv = [command]
    key: str | None = None  # the last --key given
    version: str | None = None  # the last --version given (break-glass)
    options = ["--key", "--targets", "--emulator", "flag", "flag", "bad", "junk"]
    if command == "break-glass":
        key = draw(st.sampled_from([world.key_url(KEY), world.key_url(KEY2), world.key_url(KEY2) + "/"]))
        version = draw(glass_versions(world, key))
        given = draw(st.sampled_from(["both"] * 8 + ["no --key", "no --version"]))
        if given == "no --key":
            key = None
        else:
            argv += ["--key", key]
        if given == "no --version":
            version = None
        else:
            argv += draw(st.sampled_from([["--version", version], [f"--version={version}"], ["--vers", version]]))
        options += ["glass", "glass", "--version"]
    for _ in range(draw(st.integers(0, 3))):
        option = draw(st.sampled_from(options))
        if option == "--key":
            kind = draw(st.sampled_from(["good", "good", "bad", "secret"]))
            if kind == "good":
                value = draw(st.sampled_from(good_keys))
            elif kind == "bad":
                value = draw(st.sampled_from(bad_keys) | junk)  # "" too: --key= with no value
            else:
                value = draw(secret_url(world.key_url(KEY)) | planted)
            last["--key"] = kind != "good"
            key = value
            argv += draw(st.sampled_from([["--key", value], [f"--key={value}"], ["--k", value]]))
        elif option == "--version":
            version = draw(glass_versions(world, key if key is not None and _is_key(key) else world.key_url(KEY)))
            argv += [f"--version={version}"]
        elif option == "--targets":
            name = draw(st.sampled_from(sorted(targets_files)))
            path, usable = targets_files[name]
            last["--targets"] = not usable
            argv += draw(st.sampled_from([["--targets", path], [f"--targets={path}"]]))
        elif option == "--emulator":  # a global option: before the command (after it, argparse refuses it)
            path, usable = endpoints_files[draw(st.sampled_from(sorted(endpoints_files)))]
            last.setdefault("--emulator", not usable)  # each is put first, so the first drawn is the last given
            argv = ["--emulator", path, *argv]
        elif option == "flag":
            argv.append(draw(st.sampled_from(FLAGS)))
        elif option == "glass":
            argv.append(draw(st.sampled_from(GLASS_FLAGS)))
        elif option == "bad":
            argv.append(draw(st.sampled_from(BAD_OPTIONS)))
            bad = True
        else:
            argv.insert(draw(st.integers(0, len(argv))), draw(junk))
            bad = True
    if draw(st.sampled_from([False] * 9 + [True])):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(HELP)))
    if command == "break-glass":
        bad |= key is None or version is None or _lacks(world, key, version)
    not_a_version = version is not None and KEY_VERSION_PATTERN.fullmatch(version) is None
    return Args(safe(argv, keep_yes=not_a_version), bad or any(last.values()), version)


def _is_key(text: str) -> bool:
    try:
        KeyRef.parse(text)
    except ValueError:
        return False
    return True


def _lacks(world: World, key: str, version: str) -> bool:
    """True when ``version`` is not a version of ``key`` (any key outside the targets is bad input anyway). The CLI
    asks the vault for the target's key as the targets spell it, whatever the case of ``--key``."""
    if KEY_VERSION_PATTERN.fullmatch(version) is None or not _is_key(key):
        return True
    folded = KeyRef.parse(key).folded_id
    names = [KeyRef.parse(t["key"]).name for t in world.targets if KeyRef.parse(t["key"]).folded_id == folded]
    return not names or version.lower() not in {v.lower() for v in world.key_versions(names[0])}


def safe(argv: list[str], *, keep_yes: bool = False) -> list[str]:
    """The same list, unable to write: ``reconcile`` becomes ``status``, ``rotate`` gets ``--dry-run``, and a
    ``break-glass`` list loses ``--yes`` (and its abbreviations) unless ``keep_yes``."""
    argv = ["status" if token == "reconcile" else token for token in argv]
    if "rotate" in argv and "--dry-run" not in argv:
        argv.append("--dry-run")
    if "break-glass" in argv and not keep_yes:
        argv = [token for token in argv if not _says_yes(token)]
    return argv


def _says_yes(token: str) -> bool:
    """``--yes`` as argparse reads it: the option, an abbreviation of it (``--y``, ``--ye``), with ``=value`` or not."""
    name = token.split("=", 1)[0]
    return len(name) >= 3 and "--yes".startswith(name)


def judge_cli(
    family: Tally,
    world: World,
    argv: list[str],
    bad: bool,
    seen: Any,
    outcome: tuple[int, str, str] | BaseException,
    version: str | None = None,
) -> None:
    if isinstance(outcome, BaseException):
        family.flag("uncaught", argv, f"{type(outcome).__name__}: {outcome}", signature=type(outcome).__name__)
        family.verdict(False)
        return
    code, out, err = outcome
    seen.shown += [out, err]
    lines = re.split(r"\r\n|\r|\n", err.removesuffix("\n"))  # a line ends at a newline or carriage return
    unconfirmed = code == 2 and "break-glass" in argv and len(lines) == 1 and UNCONFIRMED in lines[0]
    family.kinds[f"exit {code}" + (" (break-glass unconfirmed)" if unconfirmed else "")] += 1
    if code not in (0, 1, 2) or "Traceback (most recent call last)" in out + err:
        family.flag("uncaught", argv, f"exit {code}: {(out + err)[-600:]}", signature=f"exit {code}")
    if code == 2 and (len(lines) != 1 or not lines[0].startswith("error: ") or out):
        family.flag("unnamed", argv, f"exit 2 with stderr {err[:300]!r} and stdout {out[:100]!r}")
    asks_for_help = any(token.startswith(HELP) for token in argv)
    if bad and not asks_for_help and code != 2:
        family.flag("unnamed", argv, f"bad input exited {code}: {(err or out)[:300]!r}", signature=f"exit {code}")
    # The refusal to act unconfirmed comes before anything is read, so a version the key lacks may meet it; a version
    # that is not a version id may not (it is refused first).
    if unconfirmed and (version is None or KEY_VERSION_PATTERN.fullmatch(version) is None):
        family.flag("unnamed", argv, f"bad input reached the confirmation: {err[:300]!r}", signature="unconfirmed")
    family.verdict(code == 2)
    if seen.writes():
        family.flag("rejected_writes", argv, seen.writes())
    check_secrets(family, world.secrets, argv, seen, f"exit {code}")


def test_cli_arguments(world: World, tmp_path_factory: pytest.TempPathFactory) -> None:
    family = tally("cli")
    targets_files = files(tmp_path_factory.mktemp("cli-targets"), world)
    endpoints_files = emulator_files(tmp_path_factory.mktemp("cli-emulator"), world, targets_files)
    env = dict(world.env)
    with world.roomy_resource_graph(), world.capturing():

        @settings(max_examples=budget("cli"))
        @given(case=argument_lists(world, targets_files, endpoints_files))
        def run(case: Args) -> None:
            out, err, no_terminal = io.StringIO(), io.StringIO(), io.StringIO()
            with world.observe() as seen:
                try:
                    code = main(case.argv, env=env, connection=world.connection, out=out, err=err, inp=no_terminal)
                    outcome: tuple[int, str, str] | BaseException = (code, out.getvalue(), err.getvalue())
                except (Exception, SystemExit) as exc:  # noqa: BLE001 -- counted: nothing may leave cli.main
                    outcome = exc
            judge_cli(family, world, case.argv, case.bad, seen, outcome, case.version)

        run()
    family.stop()
    assert family.accepted and family.rejected, family.line()
    assert not family.problems(), family.report()
