"""The emulator's shared core: start and stop, the admin API's generic controls, and bad input."""

from __future__ import annotations

import ast
import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient

import emulator as emulator_package
from emulator import Emulator, FaultRule
from emulator.azurite import Azurite


def admin(emulator: Emulator, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(emulator.admin_url + path, data=data, method=method)
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    try:
        with urllib.request.urlopen(request, context=context) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_starts_and_stops_cleanly_and_frees_its_ports() -> None:
    with Emulator() as emu:
        vault = emu.add_vault("kv-core")
        ports = [int(url.rsplit(":", 1)[1].split("/")[0]) for url in (emu.admin_url, emu.arm_url, vault.url)]
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free again: binding would fail if a listener still held it


def test_admin_reports_endpoints(emulator: Emulator) -> None:
    emulator.add_vault("kv-a")
    status, body = admin(emulator, "GET", "/admin/endpoints")
    assert status == 200
    assert body["vaults"]["kv-a"].startswith("https://127.0.0.1:")
    assert body["ca_bundle"] == emulator.ca_bundle


def test_clock_advances_over_admin(emulator: Emulator) -> None:
    before = emulator.clock.now()
    status, _ = admin(emulator, "POST", "/admin/clock/advance", {"by": "P30D"})
    assert status == 200
    assert (emulator.clock.now() - before).days == 30


def test_bad_admin_input_gets_a_clear_400(emulator: Emulator) -> None:
    cases = [
        ({"by": "thirty days"}, "/admin/clock/advance", "not an ISO 8601 duration"),
        ({"by": -5}, "/admin/clock/advance", "must not be negative"),
        ({"status": "x"}, "/admin/faults", "'status' must be an integer"),
        ({"path": "(", "status": 500}, "/admin/faults", "Bad fault rule"),
        ({"status": 503, "colour": "red"}, "/admin/faults", "Unknown fault rule fields ['colour']"),
        ({"status": 503, "times": 0}, "/admin/faults", "times must be at least 1"),
    ]
    for body, path, message in cases:
        status, answer = admin(emulator, "POST", path, body)
        assert status == 400, (body, answer)
        assert message in answer["error"]["message"]
    status, answer = admin(emulator, "POST", "/admin/faults", raw=b"{not json")
    assert status == 400 and "not valid JSON" in answer["error"]["message"]
    status, answer = admin(emulator, "GET", "/admin/nothing-here")
    assert status == 404


def test_fault_rules_and_call_log_over_admin(emulator: Emulator) -> None:
    status, _ = admin(emulator, "POST", "/admin/faults", {"path": "^/admin/clock$", "status": 429, "retry_after": 1})
    assert status == 201
    assert admin(emulator, "GET", "/admin/clock")[0] == 429  # the rule fires once
    assert admin(emulator, "GET", "/admin/clock")[0] == 200
    assert emulator.control.counters()["admin.clock"] == 2


def test_an_act_first_fault_acts_then_answers_with_the_fault(emulator: Emulator) -> None:
    """``act_first``: the request is carried out, then the answer is the fault (here over the admin API, whose
    clock advance is an observable effect); a dropped answer is recorded with status 0."""
    before = emulator.clock.now()
    rule = {"path": "^/admin/clock/advance$", "status": 500, "act_first": True}
    assert admin(emulator, "POST", "/admin/faults", rule)[0] == 201
    status, answer = admin(emulator, "POST", "/admin/clock/advance", {"by": 3600})
    assert status == 500 and answer["error"]["code"] == "InjectedFault"
    assert (emulator.clock.now() - before).total_seconds() >= 3600  # the advance took effect

    emulator.control.add_fault(FaultRule(path="^/admin/clock/advance$", drop=True, act_first=True))
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        admin(emulator, "POST", "/admin/clock/advance", {"by": 3600})
    assert (emulator.clock.now() - before).total_seconds() >= 7200
    assert [c.status for c in emulator.control.calls("admin.clock_advance")] == [500, 0]


def test_the_emulator_modules_import_one_another_in_one_direction() -> None:
    """No import circles (issue 9): every ``emulator`` module's imports of other ``emulator`` modules, including the
    ones only made for type checking, form a graph without cycles."""
    package = Path(emulator_package.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "emulator":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emulator."):
                imported.add(node.module.split(".")[1])  # type: ignore[union-attr]
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("emulator.")}
        graph[path.stem] = imported & {p.stem for p in package.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    circles = sorted(module for module in graph if reaches(module, module, set()))
    assert circles == [], f"modules on an import circle: {circles}"


def test_azurite_starts_on_free_ports_and_serves_queues() -> None:
    with Azurite() as storage:
        queue = QueueClient.from_connection_string(storage.connection_string, "smoke")
        queue.create_queue()
        queue.send_message("hello")
        assert [m.content for m in queue.receive_messages()] == ["hello"]
