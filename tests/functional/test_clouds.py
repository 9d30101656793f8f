"""Sovereign clouds from one setting (``ROTATION_AZURE_CLOUD``), with the real SDKs over HTTPS against the emulator.

The emulator's ARM is set to accept only the token audiences of US Government ARM, exactly as that ARM lists them in
its 401 ``InvalidAuthenticationTokenAudience`` (quoted in stephaneey/azure-apim-extension#93). An app whose setting
says ``AzureUSGovernment`` rotates a key end to end there: its accounts client asks for a token of the US Government
ARM audience, and ARM takes it. The same app with the default (public) cloud is refused by that ARM and writes no
account. The emulator's vaults listen on 127.0.0.1, which belongs to no cloud, so the targets pass in every cloud;
Key Vault's own challenge names the scope, whatever the cloud.

``AzureConnection.default`` is checked without the network: the clients it builds for each cloud carry the cloud's
ARM endpoint, ARM scope and Entra ID authority.
"""

from __future__ import annotations

import json
import uuid

import pytest
from azure.identity import DefaultAzureCredential, EnvironmentCredential

from rotation.clouds import AZURE_CHINA_CLOUD, AZURE_PUBLIC_CLOUD, AZURE_US_GOVERNMENT, Cloud
from rotation.config import Settings
from rotation.connection import AzureConnection
from rotation.engine import RotationEngine
from rotation.model import AccountRef, RotationOutcome, RotationRequest, Status, Trigger
from tests.functional.test_engine_emulator import APP, FAST, UPDATE, Scene, scene

__all__ = ["scene"]

# The audiences US Government ARM accepts, in the order its 401 lists them (stephaneey/azure-apim-extension#93).
US_GOVERNMENT_ARM_AUDIENCES = (
    "https://management.core.usgovcloudapi.net/",
    "https://management.core.usgovcloudapi.net",
    "https://management.usgovcloudapi.net/",
    "https://management.usgovcloudapi.net",
)
PUBLIC_ARM_SCOPE = "https://management.azure.com/.default"


def settings_for(scene: Scene, cloud: str | None) -> Settings:
    env = {
        "ROTATION_TARGETS": json.dumps([{"key": scene.key.id, "accounts": [a.id for a in scene.accounts]}]),
        "ROTATION_APP_NAME": APP,
        "ROTATION_VERIFY_TIMEOUT": "PT20S",
    }
    return Settings.from_env(env | ({} if cloud is None else {"ROTATION_AZURE_CLOUD": cloud}))


def reconcile_in(scene: Scene, settings: Settings, connection: AzureConnection) -> RotationOutcome:
    engine = RotationEngine(
        connection.key_vault(), connection.accounts(), settings, clock=scene.emulator.clock.now, retry=FAST
    )
    return engine.reconcile(RotationRequest(str(uuid.uuid4()), scene.key, Trigger.TIMER))


def emulator_connection(scene: Scene, settings: Settings, credential: object) -> AzureConnection:
    """What ``AzureConnection.default(settings)`` builds, with the emulator's credential, ARM endpoint and CA: the
    cloud (and so the ARM token scope) comes from the settings."""
    return AzureConnection(
        credential,  # type: ignore[arg-type]
        cloud=settings.cloud,
        arm_endpoint=scene.emulator.arm_url,
        ca_bundle=scene.emulator.ca_bundle,
        verify_challenge_resource=False,
        polling_interval=0.05,
    )


def test_a_us_government_app_rotates_against_an_arm_that_takes_only_us_government_tokens(scene: Scene) -> None:
    scene.emulator.arm.audiences = US_GOVERNMENT_ARM_AUDIENCES
    settings = settings_for(scene, "AzureUSGovernment")
    credential = scene.emulator.credential()

    outcome = reconcile_in(scene, settings, emulator_connection(scene, settings, credential))

    assert outcome.status is Status.SUCCEEDED and outcome.to_version is not None
    for account in scene.accounts:
        assert (scene.key_version(account), scene.state(account)) == (outcome.to_version, "Succeeded")
    arm_scopes = {scopes for scopes in credential.requests if "vault" not in scopes[0]}
    assert arm_scopes == {("https://management.core.usgovcloudapi.net/.default",)}


def test_the_public_cloud_default_is_refused_by_that_arm_and_writes_no_account(scene: Scene) -> None:
    scene.emulator.arm.audiences = US_GOVERNMENT_ARM_AUDIENCES
    settings = settings_for(scene, None)
    credential = scene.emulator.credential()

    outcome = reconcile_in(scene, settings, emulator_connection(scene, settings, credential))

    assert settings.cloud is AZURE_PUBLIC_CLOUD
    assert outcome.status is Status.FAILED and outcome.error is not None
    assert "InvalidAuthenticationTokenAudience" in outcome.error
    assert scene.statuses(UPDATE) == []
    assert (PUBLIC_ARM_SCOPE,) in credential.requests


@pytest.mark.parametrize("cloud", [AZURE_PUBLIC_CLOUD, AZURE_US_GOVERNMENT, AZURE_CHINA_CLOUD], ids=lambda c: c.name)
def test_the_default_connection_uses_the_clouds_arm_endpoint_scope_and_authority(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No request is sent: the clients are built and inspected. A service principal from the environment is the one
    credential of the chain that takes ``authority`` (managed identity needs none), so it is the one checked."""
    monkeypatch.setenv("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47")
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-secret")
    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)
    account = f"/subscriptions/{uuid.UUID(int=0)}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/aoai"
    targets = [{"key": f"https://kv.{cloud.vault_suffix}/keys/cmk", "accounts": [account]}]
    settings = Settings.from_env({"ROTATION_TARGETS": json.dumps(targets), "ROTATION_AZURE_CLOUD": cloud.name})

    connection = AzureConnection.default(settings)

    assert connection.cloud is cloud
    assert isinstance(connection.credential, DefaultAzureCredential)
    environment = next(c for c in connection.credential.credentials if isinstance(c, EnvironmentCredential))
    assert environment._credential._authority == f"https://{cloud.authority_host}"  # type: ignore[union-attr]
    arm = connection.accounts().session()._client(AccountRef.parse(account))
    assert arm._client._base_url == cloud.arm_endpoint
    assert arm._config.credential_scopes == [cloud.arm_scope]
