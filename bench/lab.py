"""The benchmarks' Azure: the project's emulator in its own OS process, seeded and tuned over its admin API.

In its own process the emulator's work (TLS, JSON, key generation) never competes with the client being measured for
the interpreter lock, as Azure's never does. Every call it answers is recorded; ``calls`` reads them back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from emulator.credential import EmulatorCredential
from rotation.connection import AzureConnection

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Lab:
    endpoints: Mapping[str, Any]
    session: requests.Session

    def admin(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = f"{self.endpoints['admin']}/admin{path}"
        # verify given each time: requests prefers REQUESTS_CA_BUNDLE from the environment to a session's own.
        response = self.session.request(method, url, json=body, timeout=120, verify=self.endpoints["ca_bundle"])
        if response.status_code >= 400:
            raise RuntimeError(f"admin {method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def connection(self, **options: Any) -> AzureConnection:
        return AzureConnection(
            EmulatorCredential(),
            arm_endpoint=self.endpoints["arm"],
            ca_bundle=self.endpoints["ca_bundle"],
            verify_challenge_resource=False,
            **options,
        )

    def vault(self, name: str) -> str:
        return str(self.admin("POST", "/vaults", {"name": name})["url"])

    def key(self, vault: str, name: str, *, expires_in: timedelta) -> str:
        """A new version of key ``name`` in ``vault``; its version id."""
        exp = (datetime.now(UTC) + expires_in).isoformat()
        return str(self.admin("POST", f"/vaults/{vault}/keys", {"name": name, "exp": exp})["version"])

    def accounts(self, vault_url: str, key: str, version: str, names: list[str]) -> list[str]:
        """Accounts named ``names`` on ``version`` of ``key``; their ARM ids."""
        encryption = {
            "keySource": "Microsoft.KeyVault",
            "keyVaultProperties": {"keyName": key, "keyVersion": version, "keyVaultUri": vault_url},
        }
        return [str(self.admin("POST", "/arm/accounts", {"name": n, "encryption": encryption})["id"]) for n in names]

    def latency(self, latencies: Mapping[str, float]) -> None:
        for operation, seconds in latencies.items():
            self.admin("PUT", "/latency", {"operation": operation, "seconds": seconds})

    def arm(self, **settings: Any) -> None:
        """ARM's settings; ``throttle_scale`` also refills every token bucket, so each sample starts alike."""
        self.admin("PUT", "/arm/settings", settings)

    def calls(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/calls")["calls"])

    def reset_calls(self) -> None:
        self.admin("DELETE", "/calls")


@contextmanager
def lab(*, arm_throttle_scale: float = 1.0) -> Iterator[Lab]:
    """``python -m emulator`` as a child process, until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--arm-throttle-scale", str(arm_throttle_scale)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator exited with {process.wait()} before it was ready")
        endpoints = json.loads(line)
        yield Lab(endpoints, requests.Session())
    finally:
        process.terminate()
        process.wait(timeout=30)
