"""The CLI's link to the local emulator: ``python -m rotation --emulator FILE`` reaches the emulator that
``python -m emulator --endpoints-file FILE`` runs, so a new user can try every command on a laptop.

::

    FILE ──► EmulatorEndpoints.read: admin, arm and ca_bundle (and topic, vaults), every URL https on a loopback host
               │
               ▼
    AzureConnection(EmulatorTokenCredential(admin), arm_endpoint=arm, ca_bundle=..., verify_challenge_resource=False)
               │
               └─ get_token(scopes) ── POST <admin>/admin/token over HTTPS, trusting ca_bundle ──► the emulator's token

Only the CLI's ``--emulator`` argument leads here: no environment variable or app setting does, and neither
``function_app.py`` nor ``RotationApp.build`` imports this module, so a deployed app can never be pointed at the
emulator. A file that cannot be read, is not the emulator's JSON, names an endpoint that is not https on 127.0.0.1,
::1 or localhost, or a CA bundle that does not exist is a ``ConfigError`` naming the value and the fix (the CLI's exit
code 2), before anything is sent. The ``emulator`` package is never imported (the installed wheel does not hold it):
its tokens come over its admin API. This module never prints or logs a token, and never reads the file's topic key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from rotation.connection import AzureConnection
from rotation.errors import ConfigError
from rotation.hosts import split_https_url
from rotation.model import shown

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MAX_FILE_BYTES = 64 * 1024  # the emulator's file is under 1 KiB with a few vaults
_FIX = "give the file `python -m emulator --endpoints-file FILE` writes while it runs"


@dataclass(frozen=True)
class EmulatorEndpoints:
    """What the CLI uses of the emulator's endpoints file, checked."""

    admin: str
    arm: str
    ca_bundle: str

    @classmethod
    def read(cls, path: Path) -> EmulatorEndpoints:
        """The endpoints in ``path``; ``ConfigError`` naming the file, the bad value and the fix otherwise."""
        where = f"--emulator {shown(str(path))}"
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{where} cannot be read ({exc.strerror or type(exc).__name__}); {_FIX}") from exc
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"{where} is larger than {MAX_FILE_BYTES // 1024} KiB, so not the emulator's; {_FIX}")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            why = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise ConfigError(f"{where} is not JSON ({why}); {_FIX}") from exc
        if not isinstance(data, dict):
            raise ConfigError(
                f"{where} holds a JSON {type(data).__name__}, not the emulator's endpoints object; {_FIX}"
            )
        vaults = data.get("vaults", {})
        if not isinstance(vaults, dict):
            raise ConfigError(f"{where}: 'vaults' must be an object of vault names and URLs; {_FIX}")
        urls = {name: _text(data, name, where) for name in ("admin", "arm")}
        if "topic" in data:
            urls["topic"] = _text(data, "topic", where)
        urls.update({f"vaults.{name}": _text(vaults, name, where) for name in vaults})
        for name, url in urls.items():
            _check_loopback_https(url, f"{where}: {name} {shown(url)}")
        ca_bundle = _text(data, "ca_bundle", where)
        if not Path(ca_bundle).is_file():
            raise ConfigError(
                f"{where}: ca_bundle {shown(ca_bundle)} does not exist; the emulator deletes its CA when it stops: "
                "start `python -m emulator --endpoints-file FILE` again and give the new file"
            )
        return cls(urls["admin"], urls["arm"], ca_bundle)


def emulator_connection(path: Path) -> AzureConnection:
    """The ``AzureConnection`` to the emulator of the endpoints file ``path``: its ARM endpoint and CA bundle, Key
    Vault's challenge check off (the emulator's vaults are on 127.0.0.1, not *.vault.azure.net), and its tokens."""
    endpoints = EmulatorEndpoints.read(path)
    return AzureConnection(
        EmulatorTokenCredential(endpoints.admin, ca_bundle=endpoints.ca_bundle),
        arm_endpoint=endpoints.arm,
        ca_bundle=endpoints.ca_bundle,
        verify_challenge_resource=False,
    )


class EmulatorTokenCredential:
    """A ``TokenCredential`` whose tokens come from the emulator's ``POST /admin/token`` (the unsigned tokens its own
    ``EmulatorCredential`` issues), over HTTPS trusting ``ca_bundle``. When the emulator does not answer or refuses,
    it raises ``ClientAuthenticationError``, as every credential does (the adapters report it as
    ``PermissionDenied``), naming the emulator's URL and never a token."""

    def __init__(self, admin_url: str, *, ca_bundle: str, timeout: float = 10.0) -> None:
        self._url = admin_url.rstrip("/") + "/admin/token"
        self._ca_bundle = ca_bundle
        self._timeout = timeout

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        where = f"the emulator's token endpoint {self._url}"
        try:
            response = requests.post(
                self._url, json={"scopes": list(scopes)}, verify=self._ca_bundle, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise ClientAuthenticationError(
                f"{where} did not answer ({type(exc).__name__}); is `python -m emulator` still running?"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        token, expires_on = body.get("token"), body.get("expires_on")
        if response.status_code != 200 or not isinstance(token, str) or not isinstance(expires_on, int):
            error = body.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            detail = f": {shown(message)}" if isinstance(message, str) else ""
            raise ClientAuthenticationError(
                f"{where} gave no token for {list(scopes)} (HTTP {response.status_code}{detail})"
            )
        return AccessToken(token, expires_on)

    def close(self) -> None:
        """Nothing to release: each token is one request."""


def _text(data: dict[str, Any], name: str, where: str) -> str:
    """``data[name]``, a string that is not empty; ``ConfigError`` naming it otherwise."""
    value = data.get(name)
    if value is None:
        raise ConfigError(f"{where} has no {name!r}; {_FIX}")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {name!r} must be a URL or path as text; got {shown(value)}; {_FIX}")
    return value


def _check_loopback_https(url: str, what: str) -> None:
    """``url`` is https on a loopback host: the emulator listens only on this machine, and only over TLS."""
    fix = f"the emulator listens only on this machine (127.0.0.1, ::1 or localhost) over https: {_FIX}"
    parts = split_https_url(url, what=what, fix=fix)
    if (parts.hostname or "").lower() not in LOOPBACK_HOSTS:
        raise ConfigError(f"{what} is not on a loopback host; {fix}")
