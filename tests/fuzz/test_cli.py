"""Family 7: the CLI. Argument lists fed to ``rotation.cli.main(argv, env=..., connection=..., out=..., err=...)``
with the app's settings (storage connection string and topic key included) and the emulator's connection.

Only commands that read are run: ``status``, ``plan``, ``preflight``, ``rotate --dry-run``, and invalid argument lists.
A generated list that could write is made safe before it runs: ``reconcile`` becomes ``status``, and a list that
holds ``rotate`` gets ``--dry-run`` at its end (a dry run, or an error). Any write the emulator still sees is counted
(``rejected_writes``): these commands must never write.

Arguments: the commands (and near misses), their options (and abbreviations, ``--opt=value`` forms, unknown ones),
``--key`` with a target key, a key outside the targets, a URL that is not a key's or that carries a planted secret,
``--targets`` with a valid file, one with a planted secret, invalid JSON, not UTF-8, too deep, too large, empty, a
directory or a missing path; and junk tokens (lone surrogates included, as ``sys.argv`` holds undecodable bytes;
never NUL, which no argv can hold).

Every run must exit 0, 1 or 2 without raising and without a traceback in its output; exit 2 prints exactly one line
(no newline or carriage return inside), ``error: ...``, on stderr and nothing on stdout; and an argument list known
to be bad (a junk token, a key outside the targets or not a key URL, a targets file that cannot be used) must exit 2,
unless it asks for help.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotation.cli import main
from tests.fuzz.harness import KEY, KEY2, OTHER_KEY, PLANTED_URL_PARTS, Tally, World, check_secrets, tally
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import planted, secret_url, weighted

COMMANDS = ["status", "plan", "preflight", "rotate"]
NEAR_MISSES = ["", "statu", "STATUS", "Plan", "reconcile", "rotate-key", "help", "-", "--", "status "]
FLAGS = ["--json", "--force", "--dry-run", "--yes", "--js", "--dry", "--forc", "-o", "yaml"]
BAD_OPTIONS = ["--nope", "-x", "--json=1", "-j", "---json", "--dry-run=yes"]
HELP = ("-h", "--help", "--he", "--h")


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


@st.composite
def argument_lists(
    draw: st.DrawFn,
    world: World,
    targets_files: dict[str, tuple[Path, bool]],
    endpoints_files: dict[str, tuple[str, bool]],
) -> tuple[list[str], bool]:
    """An argument list and whether it is known to be bad input. For ``--key`` and ``--targets`` the last one given
    counts, as argparse keeps the last value."""
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
    for _ in range(draw(st.integers(0, 3))):
        option = draw(st.sampled_from(["--key", "--targets", "--emulator", "flag", "flag", "bad", "junk"]))
        if option == "--key":
            kind = draw(st.sampled_from(["good", "good", "bad", "secret"]))
            if kind == "good":
                value = draw(st.sampled_from(good_keys))
            elif kind == "bad":
                value = draw(st.sampled_from(bad_keys) | junk)  # "" too: --key= with no value
            else:
                value = draw(secret_url(world.key_url(KEY)) | planted)
            last["--key"] = kind != "good"
            argv += draw(st.sampled_from([["--key", value], [f"--key={value}"], ["--k", value]]))
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
        elif option == "bad":
            argv.append(draw(st.sampled_from(BAD_OPTIONS)))
            bad = True
        else:
            argv.insert(draw(st.integers(0, len(argv))), draw(junk))
            bad = True
    if draw(st.sampled_from([False] * 9 + [True])):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(HELP)))
    return safe(argv), bad or any(last.values())


def safe(argv: list[str]) -> list[str]:
    """The same list, unable to write: ``reconcile`` becomes ``status``, and ``rotate`` gets ``--dry-run``."""
    argv = ["status" if token == "reconcile" else token for token in argv]
    if "rotate" in argv and "--dry-run" not in argv:
        argv.append("--dry-run")
    return argv


def judge_cli(
    family: Tally, world: World, argv: list[str], bad: bool, seen: Any, outcome: tuple[int, str, str] | BaseException
) -> None:
    if isinstance(outcome, BaseException):
        family.flag("uncaught", argv, f"{type(outcome).__name__}: {outcome}", signature=type(outcome).__name__)
        family.verdict(False)
        return
    code, out, err = outcome
    seen.shown += [out, err]
    family.kinds[f"exit {code}"] += 1
    if code not in (0, 1, 2) or "Traceback (most recent call last)" in out + err:
        family.flag("uncaught", argv, f"exit {code}: {(out + err)[-600:]}", signature=f"exit {code}")
    lines = re.split(r"\r\n|\r|\n", err.removesuffix("\n"))  # a line ends at a newline or carriage return
    if code == 2 and (len(lines) != 1 or not lines[0].startswith("error: ") or out):
        family.flag("unnamed", argv, f"exit 2 with stderr {err[:300]!r} and stdout {out[:100]!r}")
    asks_for_help = any(token.startswith(HELP) for token in argv)
    if bad and not asks_for_help and code != 2:
        family.flag("unnamed", argv, f"bad input exited {code}: {(err or out)[:300]!r}", signature=f"exit {code}")
    family.verdict(code == 2)
    if seen.writes():
        family.flag("rejected_writes", argv, seen.writes())
    check_secrets(family, world.secrets, argv, seen, f"exit {code}")


def test_cli_arguments(world: World, tmp_path_factory: pytest.TempPathFactory) -> None:
    family = tally("cli")
    targets_files = files(tmp_path_factory.mktemp("cli-targets"), world)
    endpoints_files = emulator_files(tmp_path_factory.mktemp("cli-emulator"), world, targets_files)
    env = dict(world.env)
    with world.capturing():

        @settings(max_examples=budget("cli"))
        @given(case=argument_lists(world, targets_files, endpoints_files))
        def run(case: tuple[list[str], bool]) -> None:
            argv, bad = case
            out, err = io.StringIO(), io.StringIO()
            with world.observe() as seen:
                try:
                    code = main(argv, env=env, connection=world.connection, out=out, err=err)
                    outcome: tuple[int, str, str] | BaseException = (code, out.getvalue(), err.getvalue())
                except (Exception, SystemExit) as exc:  # noqa: BLE001 -- counted: nothing may leave cli.main
                    outcome = exc
            judge_cli(family, world, argv, bad, seen, outcome)

        run()
    family.stop()
    assert family.accepted and family.rejected, family.line()
    assert not family.problems(), family.report()
