"""The emulator's shared core: start and stop, the admin API's generic controls, and bad input."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

from azure.storage.queue import QueueClient

from emulator import Emulator
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


def test_azurite_starts_on_free_ports_and_serves_queues() -> None:
    with Azurite() as storage:
        queue = QueueClient.from_connection_string(storage.connection_string, "smoke")
        queue.create_queue()
        queue.send_message("hello")
        assert [m.content for m in queue.receive_messages()] == ["hello"]
