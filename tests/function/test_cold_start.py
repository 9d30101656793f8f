"""What ``import function_app`` loads: the worker imports it when it starts (a cold start), before any trigger runs.

The Key Vault, Resource Manager and Event Grid SDKs are imported by the adapters that use them, when they are first
built, so the import, and ``on_key_event``'s first invocation, which needs only storage, never pay for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAZY = [
    "azure.keyvault.keys",
    "azure.mgmt.cognitiveservices",
    "azure.eventgrid",
    "azure.mgmt.resourcegraph",
    "rotation.keyvault",
    "rotation.accounts",
    "rotation.notify",
    "rotation.discovery",
]


def test_importing_the_app_loads_no_sdk_a_trigger_may_not_need() -> None:
    script = f"import json, sys; import function_app; print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
