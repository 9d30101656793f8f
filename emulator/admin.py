"""The admin HTTP API: the same controls as the Python API, for another process (the demo, multi-process tests).

Every route lives under ``/admin``. Bad input gets a 400 whose message names the bad field and what it should be.
Each emulated service adds its own routes through ``register_admin(admin)`` (``Emulator`` calls it); the generic ones
are here. The service gets only what its routes use: the clock, the control plane, and two callables.

``POST /admin/token`` hands out the tokens ``EmulatorCredential`` issues in-process, for a process that cannot import
this package: the operator CLI's ``--emulator`` (``rotation/local_emulator.py``), installed from a wheel without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import isodate

from emulator.control import Clock, Control, FaultRule
from emulator.credential import EmulatorCredential
from emulator.http import HttpError, Request, Response, Service


class AdminService(Service):
    name = "admin"

    def __init__(
        self,
        clock: Clock,
        control: Control,
        *,
        endpoints: Callable[[], dict[str, Any]],
        add_vault: Callable[..., Any],
    ) -> None:
        """``endpoints()`` describes the emulator; ``add_vault(name, **settings)`` adds a vault and returns it."""
        super().__init__()
        self.clock = clock
        self.control = control
        self._endpoints_of = endpoints
        self._add_vault_to = add_vault
        self.route("GET", "/admin/endpoints", "admin.endpoints", self._endpoints)
        self.route("GET", "/admin/clock", "admin.clock", self._clock)
        self.route("POST", "/admin/clock/advance", "admin.clock_advance", self._advance)
        self.route("GET", "/admin/faults", "admin.faults", self._faults)
        self.route("POST", "/admin/faults", "admin.add_fault", self._add_fault)
        self.route("DELETE", "/admin/faults", "admin.clear_faults", self._clear_faults)
        self.route("PUT", "/admin/latency", "admin.latency", self._latency)
        self.route("GET", "/admin/calls", "admin.calls", self._calls)
        self.route("DELETE", "/admin/calls", "admin.reset_calls", self._reset_calls)
        self.route("GET", "/admin/counters", "admin.counters", self._counters)
        self.route("POST", "/admin/vaults", "admin.add_vault", self._add_vault)
        self.route("POST", "/admin/token", "admin.token", self._token)

    # Helpers the components use too -------------------------------------------------------------------------
    def body(self, request: Request) -> dict[str, Any]:
        data = request.json()
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise self.bad_request(f"The body must be a JSON object; got {type(data).__name__}.")
        return data

    def field(
        self,
        data: dict[str, Any],
        name: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        *,
        hint: str = "",
    ) -> Any:
        """``data[name]`` checked against ``kind``; a clear 400 when it is missing or of the wrong type."""
        if name not in data or data[name] is None:
            if default is ...:
                raise self.bad_request(f"Missing field {name!r}.{' ' + hint if hint else ''}")
            return default
        value = data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.bad_request(f"Field {name!r} must be {_names(kinds)}; got {value!r}.")
        if not isinstance(value, kinds):
            raise self.bad_request(f"Field {name!r} must be {_names(kinds)}; got {value!r}.")
        return value

    def duration(self, data: dict[str, Any], name: str, default: Any = ..., *, hint: str = "") -> timedelta:
        """A duration given as seconds (a number) or ISO 8601 (``"P30D"``)."""
        value = self.field(data, name, (int, float, str), default, hint=hint)
        if isinstance(value, timedelta):
            return value
        if isinstance(value, str):
            try:
                parsed = isodate.parse_duration(value)
            except (isodate.ISO8601Error, ValueError) as exc:
                raise self.bad_request(f"Field {name!r} is not an ISO 8601 duration: {value!r}.") from exc
            if not isinstance(parsed, timedelta):
                raise self.bad_request(f"Field {name!r} must use days or smaller units, not years or months.")
            return parsed
        return timedelta(seconds=value)

    def lookup(self, what: str, table: dict[str, Any], name: str) -> Any:
        if name not in table:
            raise self.error(404, "NotFound", f"Unknown {what} {name!r}; known: {sorted(table)}.")
        return table[name]

    # Generic routes ------------------------------------------------------------------------------------------
    def _endpoints(self, request: Request) -> Response:
        return Response(200, self._endpoints_of())

    def _clock(self, request: Request) -> Response:
        return Response(200, {"now": self.clock.now().isoformat()})

    def _advance(self, request: Request) -> Response:
        delta = self.duration(self.body(request), "by", hint='For example {"by": "P30D"} or {"by": 3600}.')
        if delta < timedelta():
            raise self.bad_request(f"Field 'by' must not be negative; got {delta}.")
        return Response(200, {"now": self.clock.advance(delta).isoformat()})

    def _faults(self, request: Request) -> Response:
        return Response(200, {"faults": [rule.to_dict() for rule in self.control.faults]})

    def _add_fault(self, request: Request) -> Response:
        data = self.body(request)
        known = {"method", "path", "operation", "status", "retry_after", "drop", "times", "body", "act_first"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise self.bad_request(f"Unknown fault rule fields {unknown}; allowed: {sorted(known)}.")
        try:
            rule = FaultRule(
                method=self.field(data, "method", str, None),
                path=self.field(data, "path", str, None),
                operation=self.field(data, "operation", str, None),
                status=self.field(data, "status", int, 503),
                retry_after=self.field(data, "retry_after", (int, float), None),
                drop=self.field(data, "drop", bool, False),
                times=self._times(data),
                body=data.get("body"),
                act_first=self.field(data, "act_first", bool, False),
            )
        except (ValueError, TypeError, re.error) as exc:
            raise self.bad_request(f"Bad fault rule: {exc}") from exc
        self.control.add_fault(rule)
        return Response(201, rule.to_dict())

    def _times(self, data: dict[str, Any]) -> int | None:
        times = data.get("times", 1)  # null means: every matching request, until the rules are cleared
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
            raise self.bad_request(f"Field 'times' must be a whole number or null; got {times!r}.")
        return times

    def _clear_faults(self, request: Request) -> Response:
        self.control.clear_faults()
        return Response(204)

    def _latency(self, request: Request) -> Response:
        data = self.body(request)
        operation = self.field(
            data, "operation", str, hint='Use an operation name such as "keyvault.create_key" or "*".'
        )
        seconds = self.field(data, "seconds", (int, float))
        try:
            self.control.set_latency(operation, float(seconds))
        except ValueError as exc:
            raise self.bad_request(str(exc)) from exc
        return Response(200, {"operation": operation, "seconds": seconds})

    def _calls(self, request: Request) -> Response:
        calls = self.control.calls(request.query.get("operation"))
        return Response(
            200,
            {
                "calls": [
                    {
                        "at": c.at.isoformat(),
                        "service": c.service,
                        "operation": c.operation,
                        "method": c.method,
                        "path": c.path,
                        "status": c.status,
                        "identity": c.identity,
                    }
                    for c in calls
                ]
            },
        )

    def _reset_calls(self, request: Request) -> Response:
        self.control.reset_calls()
        return Response(204)

    def _counters(self, request: Request) -> Response:
        return Response(200, dict(self.control.counters()))

    def _add_vault(self, request: Request) -> Response:
        data = self.body(request)
        name = self.field(data, "name", str)
        try:
            vault = self._add_vault_to(
                name,
                location=self.field(data, "location", str, None),
                resource_group=self.field(data, "resource_group", str, "rg-keys"),
                sku=self.field(data, "sku", str, "standard"),
                soft_delete=self.field(data, "soft_delete", bool, True),
                purge_protection=self.field(data, "purge_protection", bool, True),
                retention_days=self.field(data, "retention_days", int, 90),
            )
        except ValueError as exc:
            raise self.bad_request(str(exc)) from exc
        return Response(201, vault.describe())

    def _token(self, request: Request) -> Response:
        """A token of the default identity for ``scopes`` (one resource), as ``EmulatorCredential`` issues it."""
        data = self.body(request)
        unknown = sorted(set(data) - {"scopes"})
        if unknown:
            raise self.bad_request(f"Unknown token fields {unknown}; allowed: ['scopes'].")
        hint = 'For example {"scopes": ["https://management.azure.com/.default"]}.'
        scopes = self.field(data, "scopes", list, hint=hint)
        if not scopes or not all(isinstance(scope, str) and scope.strip() for scope in scopes):
            raise self.bad_request(f"Field 'scopes' must be a non-empty list of scopes; got {scopes!r}. {hint}")
        try:
            token = EmulatorCredential().get_token_info(*scopes)
        except ValueError as exc:  # scopes of two resources
            raise self.bad_request(str(exc)) from exc
        return Response(200, {"token": token.token, "expires_on": token.expires_on})


def _names(kinds: tuple[type, ...]) -> str:
    words = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "an object",
        list: "a list",
    }
    return " or ".join(words.get(k, k.__name__) for k in kinds)


__all__ = ["AdminService", "HttpError"]
