"""Opt-in smoke test against a real subscription: ``pytest -m azure`` (deselected by default; see docs/runbook.md).

What the offline suite cannot cover: real Key Vault, ARM and Entra. It needs ``az login`` (or any identity
``DefaultAzureCredential`` finds) and ``ROTATION_TARGETS`` naming ONE dedicated test key and its test account(s): it
creates a real key version and repoints the accounts. The identity needs the app's rights on them.
"""

from __future__ import annotations

import os
import uuid

import pytest

from rotation.config import Settings
from rotation.connection import AzureConnection
from rotation.engine import RotationEngine
from rotation.model import RotationRequest, Status, Trigger

pytestmark = pytest.mark.azure


def test_forced_rotation_converges_every_account_and_a_second_run_creates_nothing() -> None:
    if not os.environ.get("ROTATION_TARGETS"):
        pytest.fail("set ROTATION_TARGETS to one dedicated test key and its accounts (docs/runbook.md, section 6)")
    settings = Settings.from_env(os.environ)
    connection = AzureConnection.default(settings)
    accounts = connection.accounts()
    engine = RotationEngine(connection.key_vault(), accounts, settings)
    target = settings.targets[0]

    def request(trigger: Trigger, *, force: bool = False) -> RotationRequest:
        return RotationRequest(request_id=str(uuid.uuid4()), key=target.key, trigger=trigger, force=force)

    plan = engine.dry_run(request(Trigger.CLI))
    assert not plan.blocked, [f.to_dict() for f in plan.findings]

    outcome = engine.reconcile(request(Trigger.CLI, force=True))
    assert outcome.status is Status.SUCCEEDED, outcome.to_dict()
    assert outcome.created
    for account in target.accounts:
        state = accounts.get(account)
        assert (state.key_version, state.provisioning_state) == (outcome.to_version, "Succeeded")

    again = engine.reconcile(request(Trigger.TIMER))
    assert not again.created, again.to_dict()
    assert again.to_version == outcome.to_version
