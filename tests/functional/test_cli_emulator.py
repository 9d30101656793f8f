"""``python -m rotation --emulator FILE``: the CLI reaching the local emulator through its endpoints file alone, with
no ``connection=``, and the README's "Try every CLI command locally" block run as it stands.

The scene is ``python -m emulator --fleet``'s (``seed_fleet``): key ``aoai-cmk`` in vault ``contoso-cmk``, four
accounts in the targets across two subscriptions, and ``openai-unmanaged``, on the key but not in the targets. What it
shows: status and discover work from the file, with every token from the emulator's admin route; each file the CLI
must refuse exits 2 with one line naming the value, before anything is sent; an emulator that is gone is named; the
CLI needs no ``emulator`` package (the installed wheel has none) and the Functions app never loads the link;
``python -m emulator`` writes its files for the user only and removes the endpoints file when it stops.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from emulator.core import DEFAULT_SUBSCRIPTION, Emulator
from emulator.credential import DEFAULT_IDENTITY, claims_from_authorization
from emulator.fleet import FLEET_SUBSCRIPTION, FLEET_UNMANAGED, seed_fleet
from rotation.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
README_BLOCK = re.compile(r"<!-- try-locally:begin -->\s*```sh\n(.*?)```\s*<!-- try-locally:end -->", re.S)
AZURITE_PORTS = (10000, 10001, 10002)  # UseDevelopmentStorage=true, as the README's block uses


@dataclass
class Fleet:
    emulator: Emulator
    endpoints_file: Path
    targets: list[dict[str, Any]]

    @property
    def key(self) -> str:
        return str(self.targets[0]["key"])

    @property
    def env(self) -> dict[str, str]:
        return {"ROTATION_TARGETS": json.dumps(self.targets)}

    def run(self, *argv: str, endpoints_file: Path | None = None) -> tuple[int, str, str]:
        """The CLI in-process with ``--emulator`` and no ``connection=``."""
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["--emulator", str(endpoints_file or self.endpoints_file), *argv],
            env=self.env,
            clock=self.emulator.clock.now,
            out=out,
            err=err,
            inp=io.StringIO(),
        )
        return code, out.getvalue(), err.getvalue()

    def endpoints(self) -> dict[str, Any]:
        return dict(self.emulator.endpoints())


@pytest.fixture
def fleet(emulator: Emulator, tmp_path: Path) -> Fleet:
    targets = seed_fleet(emulator)
    endpoints_file = tmp_path / "emulator.json"
    endpoints_file.write_text(json.dumps(emulator.endpoints()), encoding="utf-8")
    return Fleet(emulator, endpoints_file, targets)


def account_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if f"rg-ai/{name} " in line)


# The CLI through the endpoints file ----------------------------------------------------------------------------------


def test_status_and_discover_work_from_the_endpoints_file_with_the_emulators_tokens(fleet: Fleet) -> None:
    status = fleet.run("status")
    discover = fleet.run("discover", "--key", fleet.key)

    assert status[0] == 0, status
    assert fleet.key in status[1] and "a new version is due" in status[1]
    for name in ("openai-east-1", "openai-east-2", "openai-east-3", "openai-west-1"):
        assert "yes: will be repointed" in account_line(status[1], name)
    assert discover[0] == 0, discover
    assert f"{fleet.key}: 5 accounts, through Resource Graph" in discover[1]
    unmanaged = account_line(discover[1], FLEET_UNMANAGED).split()
    assert (unmanaged[1], unmanaged[-1]) == (FLEET_SUBSCRIPTION, "UNMANAGED")
    assert account_line(discover[1], "openai-east-1").split()[1:2] == [DEFAULT_SUBSCRIPTION]
    calls = fleet.emulator.control.calls()
    assert any(call.operation == "admin.token" and call.status == 200 for call in calls)
    authenticated = {call.identity for call in calls if call.service != "admin" and call.status != 401}
    assert authenticated == {DEFAULT_IDENTITY}  # the identity of the admin route's tokens
    assert not [call for call in calls if call.method in ("PUT", "PATCH", "DELETE")]
    assert "eyJ" not in status[1] + status[2] + discover[1] + discover[2]  # no token (a JWT) printed


def refuse(case: str, endpoints: dict[str, Any], tmp_path: Path) -> tuple[Path, str]:
    """An endpoints file the CLI must refuse, and the value its error must name."""
    path = tmp_path / f"{case.replace(' ', '-')}.json"
    if case == "missing file":
        return path, str(path)
    if case == "a directory":
        return tmp_path, str(tmp_path)
    text, named = {
        "not JSON": ("{'admin': nope", "is not JSON"),
        "a JSON list": ("[]", "holds a JSON list"),
        "no arm": (json.dumps({k: v for k, v in endpoints.items() if k != "arm"}), "has no 'arm'"),
        "arm not text": (json.dumps({**endpoints, "arm": 443}), "'arm' must be"),
        "a remote arm": (json.dumps({**endpoints, "arm": "https://management.azure.com"}), "management.azure.com"),
        "a remote vault": (
            json.dumps({**endpoints, "vaults": {"contoso-cmk": "https://contoso-cmk.vault.azure.net"}}),
            "vaults.contoso-cmk 'https://contoso-cmk.vault.azure.net' is not on a loopback host",
        ),
        "http admin": (
            json.dumps({**endpoints, "admin": endpoints["admin"].replace("https:", "http:")}),
            f"admin '{endpoints['admin'].replace('https:', 'http:')}' must use https",
        ),
        "missing CA bundle": (
            json.dumps({**endpoints, "ca_bundle": str(tmp_path / "gone" / "ca.pem")}),
            f"ca_bundle '{tmp_path / 'gone' / 'ca.pem'}' does not exist",
        ),
    }[case]
    path.write_text(text, encoding="utf-8")
    return path, named


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "a directory",
        "not JSON",
        "a JSON list",
        "no arm",
        "arm not text",
        "a remote arm",
        "a remote vault",
        "http admin",
        "missing CA bundle",
    ],
)
def test_an_endpoints_file_that_cannot_be_used_exits_2_naming_the_value(
    fleet: Fleet, tmp_path: Path, case: str
) -> None:
    path, named = refuse(case, fleet.endpoints(), tmp_path)
    fleet.emulator.control.reset_calls()

    code, out, err = fleet.run("status", endpoints_file=path)

    assert (code, out) == (2, ""), err
    assert err.startswith(f"error: --emulator '{path}'") and err.count("\n") == 1, err
    assert named in err and "python -m emulator" in err and "Traceback" not in err
    assert fleet.emulator.eventgrid.topic_key not in err
    assert fleet.emulator.control.calls() == []  # refused before anything was sent


def test_an_emulator_that_is_gone_is_named_and_the_target_fails(fleet: Fleet, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = tmp_path / "gone.json"
    gone.write_text(json.dumps({**fleet.endpoints(), "admin": f"https://127.0.0.1:{port}"}), encoding="utf-8")

    code, out, err = fleet.run("status", endpoints_file=gone)

    assert code == 1, (out, err)
    failure = next(line for line in out.splitlines() if line.startswith(f"{fleet.key}: FAILED"))
    assert "(PermissionDenied)" in failure and f"https://127.0.0.1:{port}/admin/token did not answer" in failure
    assert "is `python -m emulator` still running?" in failure and "Traceback" not in out + err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing field 'scopes'"),
        ({"scopes": []}, "must be a non-empty list of scopes"),
        ({"scopes": [7]}, "must be a non-empty list of scopes"),
        ({"scopes": ["https://vault.azure.net/.default", "https://management.azure.com/.default"]}, "one resource"),
        ({"scopes": ["https://vault.azure.net/.default"], "identity": "someone"}, "Unknown token fields ['identity']"),
    ],
)
def test_the_token_route_refuses_what_is_not_one_resources_scopes(
    emulator: Emulator, body: dict[str, Any], message: str
) -> None:
    bad = requests.post(f"{emulator.admin_url}/admin/token", json=body, verify=emulator.ca_bundle, timeout=10)
    good = requests.post(
        f"{emulator.admin_url}/admin/token",
        json={"scopes": ["https://vault.azure.net/.default"]},
        verify=emulator.ca_bundle,
        timeout=10,
    )

    assert bad.status_code == 400 and message in bad.json()["error"]["message"]
    claims = claims_from_authorization(f"Bearer {good.json()['token']}")
    assert claims is not None and (claims["aud"], claims["oid"]) == ("https://vault.azure.net", DEFAULT_IDENTITY)
    assert good.json()["expires_on"] == claims["exp"]


def test_the_cli_needs_no_emulator_package_and_the_app_never_loads_the_link(fleet: Fleet, tmp_path: Path) -> None:
    installed = tmp_path / "site"  # only the rotation package, as `pip install .` gives it
    installed.mkdir()
    (installed / "rotation").symlink_to(ROOT / "rotation")
    env = {"PATH": os.environ.get("PATH", ""), **fleet.env}

    def python(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    no_emulator = python("-c", "import emulator", cwd=installed)
    discovered = python(
        "-m", "rotation", "--emulator", str(fleet.endpoints_file), "discover", "--key", fleet.key, cwd=installed
    )
    loaded = "sorted(m for m in sys.modules if m.startswith(('emulator', 'rotation.local_emulator')))"
    app = python("-c", f"import sys, function_app; print({loaded})", cwd=ROOT)

    assert "No module named 'emulator'" in no_emulator.stderr
    assert discovered.returncode == 0, discovered.stderr
    assert "UNMANAGED" in account_line(discovered.stdout, FLEET_UNMANAGED)
    assert (app.returncode, app.stdout) == (0, "[]\n"), app.stderr


# python -m emulator --------------------------------------------------------------------------------------------------


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    endpoints_file, targets_file = tmp_path / "emulator.json", tmp_path / "targets.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "--fleet",
            "--endpoints-file",
            str(endpoints_file),
            "--targets-file",
            str(targets_file),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, endpoints_file, targets_file
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def test_python_m_emulator_writes_its_files_for_the_user_only_and_removes_the_endpoints_file_when_it_stops(
    emulator_process: tuple[subprocess.Popen[str], Path, Path],
) -> None:
    process, endpoints_file, targets_file = emulator_process
    assert process.stdout is not None
    printed = json.loads(process.stdout.readline())  # the line comes once both files are written

    endpoints = json.loads(endpoints_file.read_text(encoding="utf-8"))
    [target] = json.loads(targets_file.read_text(encoding="utf-8"))
    endpoints_mode = endpoints_file.stat().st_mode & 0o777
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["--emulator", str(endpoints_file), "discover", "--key", target["key"]],
        env={"ROTATION_TARGETS": json.dumps([target])},
        out=out,
        err=err,
    )
    process.send_signal(signal.SIGTERM)
    stopped = process.wait(timeout=30)

    assert endpoints == printed and set(printed["vaults"]) == {"contoso-cmk"}
    assert endpoints_mode == 0o600 and (targets_file.stat().st_mode & 0o777) == 0o600
    assert not endpoints_file.exists()  # removed at the stop: its ports and CA are gone
    assert target["key"] == f"{printed['vaults']['contoso-cmk']}/keys/aoai-cmk"
    subscriptions = [account.split("/")[2] for account in target["accounts"]]
    assert subscriptions == [DEFAULT_SUBSCRIPTION] * 3 + [FLEET_SUBSCRIPTION]
    assert code == 0, err.getvalue()
    assert "UNMANAGED" in account_line(out.getvalue(), FLEET_UNMANAGED)
    assert stopped == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--targets-file", "targets.json"], "--targets-file writes the fleet's targets: add --fleet"),
        (["--endpoints-file", "missing/emulator.json"], "--endpoints-file missing/emulator.json: its folder"),
        (["--fleet", "--vault", "contoso-cmk"], "--fleet: vault 'contoso-cmk' already exists"),
    ],
)
def test_python_m_emulator_refuses_bad_options_with_argparses_error(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emulator", *argv],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (done.returncode, done.stdout) == (2, "")
    assert message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no file written


# The README ----------------------------------------------------------------------------------------------------------


def readme_block() -> str:
    match = README_BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md lost the <!-- try-locally:begin/end --> markers around its ```sh block"
    return match.group(1)


def test_the_readme_block_runs_every_cli_command_on_the_emulator() -> None:
    block = readme_block()
    for command in COMMANDS:
        assert f'python -m rotation --emulator "$emu" {command}' in block, f"the README's block never runs {command}"
    for port in AZURITE_PORTS:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"port {port} is in use: the README's block starts Azurite on its default ports; stop it")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATION_", "AzureWebJobsStorage"))}

    process = subprocess.Popen(  # a session of its own: whatever the block leaves running is killed with it
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the block stopped everything it started
            os.killpg(process.pid, signal.SIGKILL)

    assert process.returncode == 0, f"the README's block failed:\n{out[-3000:]}\n{err[-3000:]}"
    assert "Traceback" not in out + err and "eyJ" not in out + err  # no token (a JWT) printed
    assert "UNMANAGED" in account_line(out, FLEET_UNMANAGED) and FLEET_SUBSCRIPTION in account_line(
        out, FLEET_UNMANAGED
    )
    assert "succeeded (Forced)" in out and "no requests in the ledger" in out
    assert re.search(rf"rg-ai/{FLEET_UNMANAGED}\s+repoint\s+succeeded", out), out
    assert "succeeded (CompromisedVersionDisabled)" in out and re.search(r"compromised version \w+: disabled", out)
