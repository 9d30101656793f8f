"""Properties of decide() over generated observations: the safety rules hold whatever the world looks like."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from rotation.model import (
    TAG_REQUEST_ID,
    AccountAction,
    AccountEncryption,
    AccountRef,
    KeyVersion,
    Observation,
    RotationRequest,
    Target,
    Trigger,
)
from rotation.plan import decide
from rotation.policies import is_usable
from tests.unit.factories import KEY, NOW, RENEWAL, account_ref

POOL = tuple(account_ref(f"aoai-{i}") for i in range(5))
OFFSETS = st.integers(min_value=-400, max_value=400).map(lambda days: timedelta(days=days))


@st.composite
def key_versions(draw: st.DrawFn, index: int) -> KeyVersion:
    created = NOW - timedelta(days=draw(st.integers(0, 400)), seconds=index)
    expires = draw(st.none() | st.integers(1, 200).map(lambda d: created + timedelta(days=d)))
    return KeyVersion(
        version=f"v{index}",
        enabled=draw(st.booleans()),
        created_on=created,
        not_before=draw(st.none() | OFFSETS.map(lambda o: NOW + o)),
        expires_on=expires,
        kty=draw(st.sampled_from(["RSA", "RSA-HSM", "EC", None])),
        size=draw(st.sampled_from([2048, 2048, 3072, None])),
        key_ops=("wrapKey", "unwrapKey"),
        tags=draw(st.sampled_from([{}, {TAG_REQUEST_ID: "req-1"}, {TAG_REQUEST_ID: "req-0"}])),
        recovery_level=draw(st.sampled_from(["Recoverable", "Recoverable+Purgeable", None])),
    )


@st.composite
def account_states(draw: st.DrawFn, ref: AccountRef, versions: list[str]) -> AccountEncryption:
    return AccountEncryption(
        account=ref,
        kind=draw(st.sampled_from(["OpenAI", "AIServices", "TextAnalytics"])),
        location=draw(st.sampled_from(["eastus", "westeurope"])),
        identity_type=draw(st.sampled_from(["SystemAssigned", "UserAssigned", None])),
        key_source=draw(
            st.sampled_from(["Microsoft.KeyVault", "Microsoft.KeyVault", "Microsoft.CognitiveServices", None])
        ),
        key_vault_uri=draw(
            st.sampled_from(
                [
                    "https://kv-prod.vault.azure.net/",
                    "https://KV-PROD.vault.azure.net",
                    "https://kv-other.vault.azure.net/",
                    "http://kv-prod.vault.azure.net/",
                    None,
                ]
            )
        ),
        key_name=draw(st.sampled_from(["cmk", "CMK", "other", None])),
        key_version=draw(st.sampled_from([*versions, "unknown", None])),
        identity_client_id=None,
        provisioning_state=draw(st.sampled_from(["Succeeded", "Accepted", "Failed", None])),
    )


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    versions = [draw(key_versions(i)) for i in range(draw(st.integers(0, 5)))]
    names = [v.version for v in versions]
    states = {ref: draw(account_states(ref, names)) for ref in POOL if draw(st.booleans())}
    targets = tuple(ref for ref in POOL if draw(st.booleans()))
    req = RotationRequest(
        request_id="req-1", key=KEY, trigger=draw(st.sampled_from(list(Trigger))), force=draw(st.booleans())
    )
    return Observation(
        request=req,
        target=Target(KEY, targets, draw(st.sampled_from([None, "eastus"]))),
        versions=tuple(sorted(versions, key=lambda v: v.created_on)),
        accounts=states,
        unreadable={},
        now=draw(st.sampled_from([NOW, NOW + timedelta(days=45), NOW - timedelta(days=200)])),
    )


@settings(max_examples=150, deadline=None)
@given(observations())
def test_key_new_version_created_never_plans_a_create(obs: Observation) -> None:
    plan = decide(obs, RENEWAL, app_name="app")
    if obs.request.trigger is Trigger.KEY_NEW_VERSION_CREATED:
        assert plan.create is None


@settings(max_examples=150, deadline=None)
@given(observations())
def test_only_target_accounts_on_this_key_are_ever_touched(obs: Observation) -> None:
    plan = decide(obs, RENEWAL, app_name="app")
    assert [a.account for a in plan.accounts] == list(obs.target.accounts)
    for planned in plan.accounts:
        if planned.action in (AccountAction.REPOINT, AccountAction.WAIT):
            state = obs.accounts[planned.account]
            assert state.key_source == "Microsoft.KeyVault"
            assert state.uses(KEY)
            assert not plan.blocked


@settings(max_examples=150, deadline=None)
@given(observations())
def test_the_target_is_always_usable_and_the_plan_is_coherent(obs: Observation) -> None:
    plan = decide(obs, RENEWAL, app_name="app")
    if plan.target_version is not None:
        target = next(v for v in obs.versions if v.version == plan.target_version)
        assert is_usable(target, obs.now)
        assert plan.create is None
    if plan.create is not None:
        assert plan.create.kty in ("RSA", "RSA-HSM")
        assert plan.create.expires_on == obs.now + RENEWAL.key_lifetime
    if plan.target_version is None and plan.create is None:
        assert all(a.action in (AccountAction.LEAVE, AccountAction.BLOCKED) for a in plan.accounts)
