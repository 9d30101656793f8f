"""The ``Emulator``: one local Azure made of HTTPS listeners that share a clock, a control plane and a CA.

    Emulator
    ├── vaults      one listener per vault        https://127.0.0.1:<port>      (Key Vault data plane)
    ├── arm         one listener                  https://127.0.0.1:<port>      (Microsoft.CognitiveServices)
    │   └── resource_graph  on ARM's listener     <arm>/providers/Microsoft.ResourceGraph/resources
    ├── eventgrid   system events + a custom topic https://127.0.0.1:<port>/api/events
    └── admin       one listener                  https://127.0.0.1:<port>/admin/...  (the same controls over HTTP)

Use it as a context manager in tests, or run ``python -m emulator`` for another process to drive it over the admin API.

This is the one module that knows every service. Each service gets only what it uses (the clock, a callback for new
key versions, a vault lookup), so the modules import one another in one direction:
``credential`` ← ``control`` ← ``http`` ← ``keyvault`` ← ``arm``, ``eventgrid``, ``admin`` ← ``core``, with
``resourcegraph`` between ``arm`` and ``core``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from emulator import keyvault
from emulator.admin import AdminService
from emulator.arm import Arm
from emulator.control import Clock, Control
from emulator.credential import DEFAULT_IDENTITY, TENANT_ID, EmulatorCredential
from emulator.eventgrid import EventGrid
from emulator.http import Listener, Service
from emulator.keyvault import Vault
from emulator.resourcegraph import ResourceGraph
from emulator.tls import Tls

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
DEFAULT_RESOURCE_GROUP = "rg-keys"
DEFAULT_LOCATION = "eastus"


class Emulator:
    def __init__(
        self,
        *,
        subscription_id: str = DEFAULT_SUBSCRIPTION,
        tenant_id: str = TENANT_ID,
        location: str = DEFAULT_LOCATION,
        arm_throttle_scale: float = 1.0,
        state_dir: Path | None = None,
    ) -> None:
        self.subscription_id = subscription_id
        self.tenant_id = tenant_id
        self.location = location
        self._own_dir = state_dir is None
        self.state_dir = Path(tempfile.mkdtemp(prefix="azure-emulator-")) if state_dir is None else state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = Clock()
        self.control = Control(self.clock)
        self._tls = Tls(self.state_dir)
        self.ca_bundle = str(self._tls.ca_bundle)
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._started = False
        self.vaults: dict[str, Vault] = {}
        self.arm = Arm(
            self.clock,
            subscription_id=subscription_id,
            tenant_id=tenant_id,
            location=location,
            vault_by_url=self.vault_by_url,
            vault_resource_groups=lambda: [(v.subscription_id, v.resource_group) for v in list(self.vaults.values())],
            throttle_scale=arm_throttle_scale,
        )
        self.resource_graph = ResourceGraph(self.arm)  # on ARM's listener, as Azure serves it on ARM's endpoint
        self.eventgrid = EventGrid(
            self.clock,
            vaults=lambda: list(self.vaults.values()),
            ca_bundle=self.ca_bundle,
            topic_id=f"/subscriptions/{subscription_id}/resourceGroups/rg-events/providers/Microsoft.EventGrid/topics/"
            "emulator-topic",
        )
        self.admin = AdminService(self.clock, self.control, endpoints=self.endpoints, add_vault=self.add_vault)
        self.arm.register_admin(self.admin)
        self.eventgrid.register_admin(self.admin)
        keyvault.register_admin(self.admin, self.vaults)
        self.arm_url = ""
        self.topic_url = ""
        self.admin_url = ""

    # Life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> Emulator:
        with self._lock:
            if self._started:
                return self
            self.arm_url = self.arm.url = self._listen(self.arm.service)
            self.topic_url = self.eventgrid.topic_url = self._listen(self.eventgrid.topic_service) + "/api/events"
            self.admin_url = self._listen(self.admin)
            self._started = True
            return self

    def stop(self) -> None:
        with self._lock:
            self.eventgrid.stop()
            for listener in self._listeners:
                listener.stop()
            self._listeners.clear()
            self._started = False
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self, service: Service) -> str:
        listener = Listener(service, self.control, self._tls.server_context())
        listener.start()
        self._listeners.append(listener)
        return listener.url

    # Key Vault -----------------------------------------------------------------------------------------------
    def add_vault(
        self,
        name: str,
        *,
        location: str | None = None,
        resource_group: str = DEFAULT_RESOURCE_GROUP,
        sku: str = "standard",
        soft_delete: bool = True,
        purge_protection: bool = True,
        retention_days: int = 90,
    ) -> Vault:
        """Create a vault and start its listener. Returns the ``Vault``; its ``url`` is what a KeyClient uses."""
        with self._lock:
            if name in self.vaults:
                raise ValueError(f"vault {name!r} already exists.")
            vault = Vault(
                name,
                clock=self.clock,
                subscription_id=self.subscription_id,
                tenant_id=self.tenant_id,
                on_new_version=self.eventgrid.key_version_created,
                location=location or self.location,
                resource_group=resource_group,
                sku=sku,
                soft_delete=soft_delete,
                purge_protection=purge_protection,
                retention_days=retention_days,
            )
            vault.url = self._listen(vault.service)
            self.vaults[name] = vault
            return vault

    def vault(self, name: str) -> Vault:
        try:
            return self.vaults[name]
        except KeyError:
            raise KeyError(f"unknown vault {name!r}; known: {sorted(self.vaults)}") from None

    def vault_by_url(self, url: str) -> Vault | None:
        """The vault a ``keyVaultUri`` or key id points at, matched on scheme, host and port."""
        wanted = url.rstrip("/").split("/keys/")[0].rstrip("/").lower()
        for vault in self.vaults.values():
            if vault.url.lower() == wanted:
                return vault
        return None

    # Clients -------------------------------------------------------------------------------------------------
    def credential(self, identity: str = DEFAULT_IDENTITY) -> EmulatorCredential:
        return EmulatorCredential(identity)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every Azure SDK client needs to talk to the emulator."""
        return {"connection_verify": self.ca_bundle}

    def endpoints(self) -> dict[str, Any]:
        return {
            "admin": self.admin_url,
            "arm": self.arm_url,
            "topic": self.topic_url,
            "topic_key": self.eventgrid.topic_key,
            "vaults": {name: v.url for name, v in self.vaults.items()},
            "ca_bundle": self.ca_bundle,
            "subscription_id": self.subscription_id,
            "tenant_id": self.tenant_id,
        }
