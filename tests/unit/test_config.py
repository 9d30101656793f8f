"""Settings.from_env: defaults, and one test per error, each checking that the message names the setting and the fix."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from azure.core import AzureClouds
from azure.identity import AzureAuthorityHosts
from azure.mgmt.core.tools import get_arm_endpoints

from rotation.auth import HttpAuth
from rotation.clouds import AZURE_CHINA_CLOUD, AZURE_PUBLIC_CLOUD, AZURE_US_GOVERNMENT, CLOUDS, Cloud, cloud_of_host
from rotation.config import SETTING_NAMES, Settings, parse_schedule
from rotation.errors import ConfigError
from rotation.model import AccountRef, KeyRef, VersionSource
from tests.unit.factories import SUBSCRIPTION

KEY_URL = "https://kv-prod.vault.azure.net/keys/cmk"
ACCOUNT = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/aoai-1"
ACCOUNT_2 = ACCOUNT.replace("aoai-1", "aoai-2")
TARGETS = json.dumps([{"key": KEY_URL, "accounts": [ACCOUNT]}])
SECRET = "c2VjcmV0LWtleS12YWx1ZS10aGF0LW11c3Qtbm90LWxlYWs="


def settings(**env: str) -> Settings:
    return Settings.from_env({"ROTATION_TARGETS": TARGETS, **env})


def error_of(**env: str) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    return str(info.value)


def test_defaults() -> None:
    s = settings()
    assert s.key_lifetime == timedelta(days=120)
    assert s.renew_before == timedelta(days=30)
    assert s.verify_timeout == timedelta(minutes=10)
    assert (s.schedule, s.concurrency, s.app_name) == ("0 0 3 * * *", 64, "aoai-cmk-rotation")
    assert (s.events_endpoint, s.events_key, s.client_id) == (None, None, None)
    assert s.targets[0].key == KeyRef.parse(KEY_URL)
    assert s.targets[0].accounts == (AccountRef.parse(ACCOUNT),)
    assert s.target_for(KeyRef.parse("https://KV-PROD.vault.azure.net/keys/CMK/")) == s.targets[0]
    assert s.target_for(KeyRef.parse("https://kv-prod.vault.azure.net/keys/other")) is None


def test_every_setting_is_read() -> None:
    s = settings(
        ROTATION_KEY_LIFETIME="P90D",
        ROTATION_RENEW_BEFORE="P14DT12H",
        ROTATION_SCHEDULE="0 */30 * * * MON-FRI",
        ROTATION_EVENTS_ENDPOINT="https://topic.westeurope-1.eventgrid.azure.net/api/events",
        ROTATION_EVENTS_KEY=SECRET,
        ROTATION_CONCURRENCY="3",
        ROTATION_VERIFY_TIMEOUT="PT5M",
        ROTATION_APP_NAME="cmk-rotator.prod",
        AZURE_CLIENT_ID="11111111-2222-3333-4444-555555555555",
    )
    assert (s.key_lifetime, s.renew_before) == (timedelta(days=90), timedelta(days=14, hours=12))
    assert (s.schedule, s.concurrency, s.verify_timeout) == ("0 */30 * * * MON-FRI", 3, timedelta(minutes=5))
    assert s.events_key == SECRET
    assert SECRET not in repr(s)
    assert (s.app_name, s.client_id) == ("cmk-rotator.prod", "11111111-2222-3333-4444-555555555555")


def test_who_makes_new_versions_is_read_per_target() -> None:
    targets = [
        {"key": KEY_URL, "accounts": [ACCOUNT], "new_versions": "key_vault"},
        {"key": KEY_URL + "2", "accounts": [ACCOUNT_2]},
    ]
    s = settings(ROTATION_TARGETS=json.dumps(targets))
    assert [t.new_versions for t in s.targets] == [VersionSource.KEY_VAULT, VersionSource.SERVICE]
    assert s.targets[0].refuses_force() is not None and s.targets[1].refuses_force() is None


def test_blank_settings_mean_the_default() -> None:
    assert settings(ROTATION_KEY_LIFETIME="  ", ROTATION_CONCURRENCY="").concurrency == 64


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({}, ["ROTATION_TARGETS is not set", "JSON list"]),
        ({"ROTATION_TARGETS": "[{"}, ["ROTATION_TARGETS is not valid JSON", "line 1 column"]),
        ({"ROTATION_TARGETS": "[]"}, ["ROTATION_TARGETS must be a non-empty JSON list"]),
        ({"ROTATION_TARGETS": '{"key": 1}'}, ["non-empty JSON list"]),
        ({"ROTATION_TARGETS": '["x"]'}, ["ROTATION_TARGETS[0] must be an object"]),
        ({"ROTATION_TARGETS": json.dumps([{"key": KEY_URL, "acounts": [ACCOUNT]}])}, ["unknown field(s) 'acounts'"]),
        ({"ROTATION_TARGETS": json.dumps([{"accounts": [ACCOUNT]}])}, ["ROTATION_TARGETS[0].key must be a key URL"]),
        (
            {"ROTATION_TARGETS": json.dumps([{"key": "http://kv.vault.azure.net/keys/cmk", "accounts": [ACCOUNT]}])},
            ["ROTATION_TARGETS[0].key:", "'http://kv.vault.azure.net/keys/cmk'", "must use https"],
        ),
        ({"ROTATION_TARGETS": json.dumps([{"key": KEY_URL, "accounts": []}])}, ["ROTATION_TARGETS[0].accounts"]),
        (
            {"ROTATION_TARGETS": json.dumps([{"key": KEY_URL, "accounts": [ACCOUNT, "/subscriptions/x"]}])},
            ["ROTATION_TARGETS[0].accounts[1]:", "'/subscriptions/x'"],
        ),
        (
            {"ROTATION_TARGETS": json.dumps([{"key": KEY_URL, "accounts": [ACCOUNT], "vault_location": 3}])},
            ["ROTATION_TARGETS[0].vault_location"],
        ),
        (
            {"ROTATION_TARGETS": json.dumps([{"key": KEY_URL, "accounts": [ACCOUNT], "new_versions": "keyvault"}])},
            ["ROTATION_TARGETS[0].new_versions must be", '"key_vault"', "got '\"keyvault\"'"],
        ),
        (
            {"ROTATION_TARGETS": json.dumps([{"key": KEY_URL, "accounts": [ACCOUNT], "new_versions": ["service"]}])},
            ["ROTATION_TARGETS[0].new_versions must be", "got a list or an object"],
        ),
        (
            {"ROTATION_TARGETS": json.dumps([{"key": KEY_URL, "accounts": [ACCOUNT, ACCOUNT.upper()]}])},
            ["lists account", "twice under key"],
        ),
        (
            {
                "ROTATION_TARGETS": json.dumps(
                    [{"key": KEY_URL, "accounts": [ACCOUNT]}, {"key": KEY_URL + "2", "accounts": [ACCOUNT_2, ACCOUNT]}]
                )
            },
            ["under key https://kv-prod.vault.azure.net/keys/cmk and under key", "cmk2", "exactly one key"],
        ),
        (
            {
                "ROTATION_TARGETS": json.dumps(
                    [{"key": KEY_URL, "accounts": [ACCOUNT]}, {"key": KEY_URL + "/", "accounts": [ACCOUNT_2]}]
                )
            },
            ["lists key https://kv-prod.vault.azure.net/keys/cmk twice", "merge"],
        ),
    ],
)
def test_target_errors(env: dict[str, str], fragments: list[str]) -> None:
    message = error_of(**env)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        (
            {"ROTATION_KEY_LIFETIME": "120 days"},
            ["ROTATION_KEY_LIFETIME='120 days' is not an ISO 8601 duration", "P120D"],
        ),
        ({"ROTATION_KEY_LIFETIME": "P4M"}, ["ROTATION_KEY_LIFETIME='P4M' uses months or years", "in days"]),
        ({"ROTATION_KEY_LIFETIME": "P27D"}, ["ROTATION_KEY_LIFETIME='P27D' is shorter than 28 days"]),
        ({"ROTATION_RENEW_BEFORE": "PT0S"}, ["ROTATION_RENEW_BEFORE='PT0S' must be a positive duration"]),
        (
            {"ROTATION_KEY_LIFETIME": "P60D", "ROTATION_RENEW_BEFORE": "P60D"},
            ["ROTATION_RENEW_BEFORE='P60D' must be shorter than ROTATION_KEY_LIFETIME='P60D'"],
        ),
        ({"ROTATION_VERIFY_TIMEOUT": "10m"}, ["ROTATION_VERIFY_TIMEOUT='10m' is not an ISO 8601 duration"]),
        (
            {"ROTATION_VERIFY_TIMEOUT": "PT21M"},
            ["ROTATION_VERIFY_TIMEOUT='PT21M' is longer than PT20M", "functionTimeout"],
        ),
        ({"ROTATION_SCHEDULE": "0 3 * *"}, ["ROTATION_SCHEDULE='0 3 * *' has 4 fields", "'0 0 3 * * *'"]),
        ({"ROTATION_SCHEDULE": "0 0 25 * * *"}, ["the hour field '25' is invalid", "0 to 23"]),
        ({"ROTATION_SCHEDULE": "0 0 3 * FOO *"}, ["the month field 'FOO' is invalid"]),
        ({"ROTATION_SCHEDULE": "0 */0 * * * *"}, ["the minute field '*/0' is invalid"]),
        ({"ROTATION_SCHEDULE": "0 0 5-3 * * *"}, ["the hour field '5-3' is invalid"]),
        ({"ROTATION_CONCURRENCY": "0"}, ["ROTATION_CONCURRENCY='0' must be a whole number from 1 to 256"]),
        ({"ROTATION_CONCURRENCY": "eight"}, ["ROTATION_CONCURRENCY='eight'"]),
        (
            {"ROTATION_EVENTS_ENDPOINT": "http://topic/api/events"},
            ["ROTATION_EVENTS_ENDPOINT='http://topic/api/events'"],
        ),
        ({"AZURE_CLIENT_ID": "my-identity"}, ["AZURE_CLIENT_ID='my-identity' must be the client id (a GUID)"]),
        ({"ROTATION_APP_NAME": "has space"}, ["ROTATION_APP_NAME='has space'", "key tags"]),
    ],
)
def test_setting_errors(env: dict[str, str], fragments: list[str]) -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, **env)
    for fragment in fragments:
        assert fragment in message


def test_every_problem_is_reported_at_once() -> None:
    message = error_of(ROTATION_CONCURRENCY="0", ROTATION_KEY_LIFETIME="P1D")
    assert "ROTATION_TARGETS is not set" in message
    assert "ROTATION_CONCURRENCY='0'" in message
    assert "ROTATION_KEY_LIFETIME='P1D'" in message
    assert "ROTATION_RENEW_BEFORE='P30D' must be shorter than ROTATION_KEY_LIFETIME='P1D'" in message
    assert message.count("\n- ") == 4


def test_the_events_key_is_never_echoed() -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, ROTATION_EVENTS_KEY=SECRET)
    assert "ROTATION_EVENTS_KEY is set but ROTATION_EVENTS_ENDPOINT is not" in message
    assert SECRET not in message
    message = error_of(ROTATION_EVENTS_KEY=SECRET, ROTATION_EVENTS_ENDPOINT="ftp://x", ROTATION_CONCURRENCY="x")
    assert SECRET not in message


@pytest.mark.parametrize(
    "schedule", ["0 0 3 * * *", "0 */5 * * * *", "0 0 9-17 * * MON-FRI", "*/10 * * * *", "0 0 1,15 JAN,jul *"]
)
def test_valid_schedules(schedule: str) -> None:
    assert parse_schedule(schedule) == schedule


# Settings are checked with the rules of the code that will use them (issue 8): each case below passed validation, or
# raised something other than ConfigError, before; each now fails at start with a message naming the setting.


def targets_with_key(key_url: str) -> str:
    return json.dumps([{"key": key_url, "accounts": [ACCOUNT]}])


def messages(exc: BaseException | None) -> str:
    """The text of ``exc`` and of every exception chained behind it: what a logged traceback would show."""
    if exc is None:
        return ""
    return str(exc) + "\n" + messages(exc.__cause__) + messages(exc.__context__)


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("https://example..com/api/events", "empty label"),
        ("https://topic.westeurope-1.eventgrid.azure.net./api/events", "empty label"),
        ("https://[x/api", "is not a valid URL (Invalid IPv6 URL)"),
        ("https://[v1.x]/api/events", "IPv6 address"),
        ("https://-topic.westeurope-1.eventgrid.azure.net/api/events", "'-topic'"),
        ("https://topic_1.westeurope-1.eventgrid.azure.net/api/events", "'topic_1'"),
        (f"https://{'t' * 64}.eventgrid.azure.net/api/events", "is not 1-63 letters"),
        (f"https://{'t.' * 127}net/api/events", "at most 253"),
        ("https://\u2603.eventgrid.azure.net/api/events", "internationalised domain name"),
        ("https://topic.westeurope-1.eventgrid.azure.net:0/api/events", "port 0"),
        ("https://topic.westeurope-1.eventgrid.azure.net:99999/api/events", "Port out of range"),
        ("https://topic.westeurope-1.eventgrid.azure.net/api/events#top", "fragment"),
        ("https://topic.westeurope-1.eventgrid.azure.net/api/ev ents", "spaces or control characters"),
    ],
)
def test_an_events_endpoint_the_transport_would_refuse_is_refused_at_start(endpoint: str, fragment: str) -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, ROTATION_EVENTS_ENDPOINT=endpoint)
    assert "ROTATION_EVENTS_ENDPOINT=" in message
    assert fragment in message
    assert "https://<topic>.<region>-1.eventgrid.azure.net/api/events" in message


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://topic.westeurope-1.eventgrid.azure.net/api/events",
        "https://127.0.0.1:8443/api/events",
        "https://[::1]:8443/api/events",
        "https://t\u00f6pic.example/api/events",
    ],
)
def test_endpoints_the_transport_accepts_are_accepted(endpoint: str) -> None:
    assert settings(ROTATION_EVENTS_ENDPOINT=endpoint).events_endpoint == endpoint


@pytest.mark.parametrize(
    ("key_url", "fragment"),
    [
        ("https://kv..vault.azure.net/keys/k", "empty label"),
        ("https://[x/keys/k", "is not a valid URL"),
        ("https://kv-.vault.azure.net/keys/k", "'kv-'"),
    ],
)
def test_a_target_key_on_a_host_the_transport_would_refuse_is_refused(key_url: str, fragment: str) -> None:
    message = error_of(ROTATION_TARGETS=targets_with_key(key_url))
    assert "ROTATION_TARGETS[0].key:" in message
    assert fragment in message
    assert "https://<vault>.vault.azure.net/keys/<name>" in message


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "9" * 5000])
def test_concurrency_takes_ascii_digits_only(value: str) -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, ROTATION_CONCURRENCY=value)
    assert "ROTATION_CONCURRENCY=" in message
    assert "must be a whole number from 1 to 256" in message


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"ROTATION_KEY_LIFETIME": "P1000000000D"}, ["ROTATION_KEY_LIFETIME='P1000000000D'", "at most P3650D"]),
        ({"ROTATION_KEY_LIFETIME": "PT99999999999999999999S"}, ["ROTATION_KEY_LIFETIME=", "at most P3650D"]),
        ({"ROTATION_KEY_LIFETIME": "P3651D"}, ["ROTATION_KEY_LIFETIME='P3651D' is longer than P3650D", "e.g. P120D"]),
        ({"ROTATION_RENEW_BEFORE": "P1000000000D"}, ["ROTATION_RENEW_BEFORE='P1000000000D'", "at most P3650D"]),
        ({"ROTATION_RENEW_BEFORE": "P4000D"}, ["ROTATION_RENEW_BEFORE='P4000D' is longer than P3650D"]),
        ({"ROTATION_VERIFY_TIMEOUT": "P1000000000D"}, ["ROTATION_VERIFY_TIMEOUT='P1000000000D'", "at most PT20M"]),
    ],
)
def test_durations_that_overflow_or_exceed_their_maximum_are_refused(env: dict[str, str], fragments: list[str]) -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, **env)
    for fragment in fragments:
        assert fragment in message


def test_the_longest_key_lifetime_is_accepted() -> None:
    assert settings(ROTATION_KEY_LIFETIME="P3650D").key_lifetime == timedelta(days=3650)


def test_deeply_nested_targets_are_refused_at_any_depth() -> None:
    # Around the recursion limit json.loads may succeed while echoing the item would not: every depth is refused.
    for depth in [*range(950, 1050), 100_000]:
        message = error_of(ROTATION_TARGETS="[" * depth + "]" * depth)
        assert "ROTATION_TARGETS" in message
        assert "too deeply" in message or "ROTATION_TARGETS[0] must be an object" in message


def test_targets_larger_than_the_bound_are_refused_before_parsing() -> None:
    text = "[" + " " * (256 * 1024) + "]"
    message = error_of(ROTATION_TARGETS=text)
    assert f"ROTATION_TARGETS is {len(text)} bytes, more than the 256 KiB allowed" in message


def test_targets_with_a_number_too_long_for_int_are_refused() -> None:
    message = error_of(ROTATION_TARGETS="[1" + "0" * 5000 + "]")
    assert "ROTATION_TARGETS is not valid JSON" in message


def test_a_schedule_with_a_number_too_long_for_int_is_refused() -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, ROTATION_SCHEDULE="0 0 " + "9" * 5000 + " * * *")
    assert "ROTATION_SCHEDULE=" in message
    assert "the hour field" in message


def test_a_sas_token_pasted_into_the_events_endpoint_is_not_echoed() -> None:
    endpoint = "https://t.eventgrid.azure.net/api/events?sv=2022&sig=SECRET123"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ROTATION_TARGETS": TARGETS, "ROTATION_EVENTS_ENDPOINT": endpoint})
    message = str(info.value)
    assert "ROTATION_EVENTS_ENDPOINT='https://t.eventgrid.azure.net/api/events?sv=2022&sig=<redacted>'" in message
    assert "must not carry a query string" in message
    assert "ROTATION_EVENTS_KEY" in message  # where the secret belongs
    assert "SECRET123" not in messages(info.value)


def test_a_sas_token_in_a_target_key_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ROTATION_TARGETS": targets_with_key(KEY_URL + "?sig=SECRET123")})
    assert "must not carry a query string" in str(info.value)
    assert "SECRET123" not in messages(info.value)


def test_the_events_key_pasted_into_another_setting_is_not_echoed() -> None:
    key = "topic-key-" + "s3cr3t" * 4
    message = error_of(
        ROTATION_TARGETS=TARGETS,
        ROTATION_EVENTS_ENDPOINT="https://topic.westeurope-1.eventgrid.azure.net/api/events",
        ROTATION_EVENTS_KEY=key,
        ROTATION_SCHEDULE=key,
    )
    assert "ROTATION_SCHEDULE='<redacted>' has 1 fields" in message
    assert "s3cr3t" not in message


def test_a_long_value_is_clipped_in_the_message() -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, ROTATION_APP_NAME="x" * 100_000)
    assert "ROTATION_APP_NAME='" + "x" * 200 + "\u2026'" in message
    assert len(message) < 1000


# ROTATION_AZURE_CLOUD: one setting, everything cloud-specific derived from rotation/clouds.py.

CLOUD_VAULTS = {
    "AzureCloud": "https://kv-prod.vault.azure.net/keys/cmk",
    "AzureUSGovernment": "https://kv-prod.vault.usgovcloudapi.net/keys/cmk",
    "AzureChinaCloud": "https://kv-prod.vault.azure.cn/keys/cmk",
}


def test_the_cloud_defaults_to_the_public_cloud() -> None:
    s = settings()
    assert s.cloud is AZURE_PUBLIC_CLOUD
    assert (s.cloud.arm_endpoint, s.cloud.arm_scope) == (
        "https://management.azure.com",
        "https://management.azure.com/.default",
    )
    assert s.cloud.authority_host == AzureAuthorityHosts.AZURE_PUBLIC_CLOUD
    assert settings(ROTATION_AZURE_CLOUD="  ").cloud is AZURE_PUBLIC_CLOUD  # blank is unset, as for every setting


@pytest.mark.parametrize(
    ("name", "cloud", "arm", "scope", "authority", "vault"),
    [
        (
            "AzureCloud",
            AZURE_PUBLIC_CLOUD,
            "https://management.azure.com",
            "https://management.azure.com/.default",
            "login.microsoftonline.com",
            "vault.azure.net",
        ),
        (
            "AzureUSGovernment",
            AZURE_US_GOVERNMENT,
            "https://management.usgovcloudapi.net",
            "https://management.core.usgovcloudapi.net/.default",
            "login.microsoftonline.us",
            "vault.usgovcloudapi.net",
        ),
        (
            "AzureChinaCloud",
            AZURE_CHINA_CLOUD,
            "https://management.chinacloudapi.cn",
            "https://management.chinacloudapi.cn/.default",
            "login.chinacloudapi.cn",
            "vault.azure.cn",
        ),
    ],
)
def test_each_cloud_derives_its_endpoints_scope_authority_and_vault_suffix(
    name: str, cloud: Cloud, arm: str, scope: str, authority: str, vault: str
) -> None:
    s = Settings.from_env({"ROTATION_AZURE_CLOUD": name, "ROTATION_TARGETS": targets_with_key(CLOUD_VAULTS[name])})
    assert s.cloud is cloud and s.cloud.name == name
    assert (s.cloud.arm_endpoint, s.cloud.arm_scope, s.cloud.authority_host, s.cloud.vault_suffix) == (
        arm,
        scope,
        authority,
        vault,
    )
    assert s.targets[0].key == KeyRef.parse(CLOUD_VAULTS[name])


@pytest.mark.parametrize(
    ("cloud", "sdk_cloud", "authority"),
    [
        (AZURE_PUBLIC_CLOUD, AzureClouds.AZURE_PUBLIC_CLOUD, AzureAuthorityHosts.AZURE_PUBLIC_CLOUD),
        (AZURE_US_GOVERNMENT, AzureClouds.AZURE_US_GOVERNMENT, AzureAuthorityHosts.AZURE_GOVERNMENT),
        (AZURE_CHINA_CLOUD, AzureClouds.AZURE_CHINA_CLOUD, AzureAuthorityHosts.AZURE_CHINA),
    ],
)
def test_the_cloud_table_agrees_with_the_sdks(cloud: Cloud, sdk_cloud: AzureClouds, authority: str) -> None:
    """The management SDKs' own endpoint and scope for the cloud (azure-mgmt-core), and azure-identity's authority."""
    arm = get_arm_endpoints(sdk_cloud)
    assert cloud.arm_endpoint == arm["resource_manager"].rstrip("/")
    assert [cloud.arm_scope] == arm["credential_scopes"]
    assert cloud.authority_host == authority


def test_the_cloud_names_are_bicep_environment_names_and_nothing_else() -> None:
    assert list(CLOUDS) == ["AzureCloud", "AzureUSGovernment", "AzureChinaCloud"]
    assert SETTING_NAMES.count("ROTATION_AZURE_CLOUD") == 1 and SETTING_NAMES.count("ROTATION_HTTP_AUTH") == 1


@pytest.mark.parametrize("value", ["azurecloud", "AzureGermanCloud", "Public", "AzureCloud2", "USGov"])
def test_an_unknown_cloud_is_refused_naming_the_value_and_the_allowed_ones(value: str) -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, ROTATION_AZURE_CLOUD=value)
    assert f"ROTATION_AZURE_CLOUD={value!r}" in message
    assert "AzureCloud, AzureUSGovernment, AzureChinaCloud" in message
    assert message.count("\n- ") == 1, "one problem: the targets are not also reported as on the wrong cloud"


@pytest.mark.parametrize("app_cloud", list(CLOUD_VAULTS))
@pytest.mark.parametrize("key_cloud", list(CLOUD_VAULTS))
def test_a_key_on_another_clouds_vault_is_refused_naming_the_target_the_setting_and_the_fix(
    app_cloud: str, key_cloud: str
) -> None:
    targets = json.dumps(
        [
            {"key": CLOUD_VAULTS[app_cloud].replace("cmk", "first"), "accounts": [ACCOUNT]},
            {"key": CLOUD_VAULTS[key_cloud], "accounts": [ACCOUNT_2]},
        ]
    )
    if app_cloud == key_cloud:
        assert len(Settings.from_env({"ROTATION_TARGETS": targets, "ROTATION_AZURE_CLOUD": app_cloud}).targets) == 2
        return
    message = error_of(ROTATION_TARGETS=targets, ROTATION_AZURE_CLOUD=app_cloud)
    assert f"ROTATION_TARGETS[1].key {CLOUD_VAULTS[key_cloud]} is in a vault of {key_cloud}" in message
    assert f"ROTATION_AZURE_CLOUD is {app_cloud}" in message
    assert f"Set ROTATION_AZURE_CLOUD={key_cloud}" in message


def test_a_managed_hsm_key_follows_the_same_rule() -> None:
    key = "https://hsm-prod.managedhsm.usgovcloudapi.net/keys/cmk"
    message = error_of(ROTATION_TARGETS=targets_with_key(key))
    assert "in a vault of AzureUSGovernment" in message and "ROTATION_AZURE_CLOUD is AzureCloud" in message
    ok = Settings.from_env({"ROTATION_TARGETS": targets_with_key(key), "ROTATION_AZURE_CLOUD": "AzureUSGovernment"})
    assert ok.targets[0].key.id == key


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8443", "localhost:4443", "kv.privatelink.example", "vault.azure.net.evil.example", "kvvault.azure.cn"],
)
def test_a_host_of_no_known_cloud_is_not_refused_for_its_cloud(host: str) -> None:
    """The emulator's vaults (127.0.0.1) keep working in every cloud; only another cloud's suffix is refused, and a
    suffix counts only after a dot."""
    for cloud in CLOUD_VAULTS:
        env = {"ROTATION_TARGETS": targets_with_key(f"https://{host}/keys/cmk"), "ROTATION_AZURE_CLOUD": cloud}
        assert Settings.from_env(env).cloud.name == cloud


def test_a_vault_host_matches_its_suffix_in_any_case_and_with_a_trailing_dot() -> None:
    assert cloud_of_host("KV.VAULT.USGOVCLOUDAPI.NET") is AZURE_US_GOVERNMENT
    assert cloud_of_host("kv.vault.azure.cn.") is AZURE_CHINA_CLOUD
    assert cloud_of_host("vault.azure.net") is None  # the suffix itself is not a vault
    message = error_of(ROTATION_TARGETS=targets_with_key("https://KV.Vault.Azure.CN/keys/cmk"))
    assert "in a vault of AzureChinaCloud" in message


# ROTATION_HTTP_AUTH: Functions keys, or Entra ID app roles behind App Service authentication.


def test_http_auth_defaults_to_function_keys() -> None:
    assert settings().http_auth is HttpAuth.KEYS
    assert settings(ROTATION_HTTP_AUTH=" KEYS ").http_auth is HttpAuth.KEYS


@pytest.mark.parametrize("enabled", ["True", "true", "TRUE", " True "])
def test_entra_mode_is_accepted_when_app_service_authentication_is_on(enabled: str) -> None:
    assert settings(ROTATION_HTTP_AUTH="entra", WEBSITE_AUTH_ENABLED=enabled).http_auth is HttpAuth.ENTRA
    assert settings(ROTATION_HTTP_AUTH="Entra", WEBSITE_AUTH_ENABLED=enabled).http_auth is HttpAuth.ENTRA


@pytest.mark.parametrize("enabled", [None, "", "False", "false", "1", "yes", "Truee"])
def test_entra_mode_without_app_service_authentication_is_refused(enabled: str | None) -> None:
    env = {"ROTATION_HTTP_AUTH": "entra"} | ({} if enabled is None else {"WEBSITE_AUTH_ENABLED": enabled})
    message = error_of(ROTATION_TARGETS=TARGETS, **env)
    assert "ROTATION_HTTP_AUTH=entra needs App Service authentication" in message
    assert "WEBSITE_AUTH_ENABLED is not 'True'" in message
    assert "forge the X-MS-CLIENT-PRINCIPAL header" in message
    assert "ROTATION_HTTP_AUTH=keys" in message  # the other fix


@pytest.mark.parametrize("value", ["function", "aad", "entra-id", "none", "anonymous"])
def test_an_unknown_http_auth_is_refused_naming_the_value_and_the_allowed_ones(value: str) -> None:
    message = error_of(ROTATION_TARGETS=TARGETS, ROTATION_HTTP_AUTH=value, WEBSITE_AUTH_ENABLED="True")
    assert f"ROTATION_HTTP_AUTH={value!r} must be 'keys'" in message and "or 'entra'" in message
