"""The deployment's wiring, checked offline from the Bicep sources: settings, roles, events, storage, parameters.

The Bicep CLI cannot be downloaded here, so these tests read `infra/` as text with a small scanner that knows Bicep's
strings and comments, and cross-check it against what the code needs: every app setting the code reads is set, every
role it needs is assigned at the narrowest scope, and the Event Grid filter matches the event types the code handles.
They also run checkov over `infra/` and require zero failed checks, zero parse errors and a reason for every skip.

They must never call Azure or need the network.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from emulator.functions_worker import FunctionsWorker
from rotation import config
from rotation.events import KEY_EVENT_TYPES
from rotation.storage import LEDGER_TABLE, LOCKS_CONTAINER, REQUESTS_QUEUE

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# The app settings the code reads: rotation/config.py's names (DESIGN section 4), less ROTATION_EVENTS_KEY (a secret:
# the deployment publishes outcome events with the managed identity instead), plus the Functions host's identity-based
# storage and telemetry settings.
SETTINGS_THE_CODE_READS = {
    *(name for name in config.SETTING_NAMES if name != config.EVENTS_KEY),
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Read by rotation/storage.py (StorageAccount.from_settings), which cannot derive endpoints for every cloud by itself.
SETTINGS_FOR_STORAGE_CLIENTS = {
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
}
# Flex Consumption rejects these (the runtime comes from functionAppConfig), and a connection string would be a secret.
SETTINGS_FORBIDDEN = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    config.EVENTS_KEY,
}
SETTINGS_FORBIDDEN_WORDS = ("AccountKey", "SharedAccessSignature", "SECRET", "PASSWORD", "AzureWebJobsStorage\b")

# The Functions host moves a message to "<queue>-poison" after the queue's max dequeue count.
POISON_QUEUE = f"{REQUESTS_QUEUE}-poison"
# The Event Grid trigger's function name in function_app.py (DESIGN section 2).
EVENT_GRID_FUNCTION = "on_key_event"

# Built-in role definition ids (Learn, "Azure built-in roles").
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_QUEUE_DATA_MESSAGE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"

# What the engine does on Key Vault (get, list versions, create, update) and on ARM (get, patch the account).
KEY_DATA_ACTIONS = {
    "Microsoft.KeyVault/vaults/keys/read",
    "Microsoft.KeyVault/vaults/keys/create/action",
    "Microsoft.KeyVault/vaults/keys/update/action",
}
ACCOUNT_ACTIONS = {"Microsoft.CognitiveServices/accounts/read", "Microsoft.CognitiveServices/accounts/write"}


# ---------------------------------------------------------------------------------------------------------------------
# A small Bicep scanner: enough to find blocks, keys and string lists without confusing strings, comments and braces.


@dataclass(frozen=True)
class Block:
    kind: str  # resource | module
    symbol: str
    target: str  # resource type with api version, or module path
    body: str  # the text between the outer braces


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _strip_comments(text: str) -> str:
    """The text with // and /* */ comments blanked out (strings are kept, quotes inside comments are ignored)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            end = _string_end(text, i)
            out.append(text[i:end])
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end == -1 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i)
            i = n if end == -1 else end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _string_end(text: str, start: int) -> int:
    """Index just past the single-quoted string that starts at `start` (Bicep escapes a quote as \\')."""
    if text.startswith("'''", start):
        return text.index("'''", start + 3) + 3
    i = start + 1
    while text[i] != "'":
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _balanced(text: str, open_at: int) -> str:
    """The text inside the bracket pair that opens at `open_at`, skipping brackets inside strings."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    stack = [pairs[text[open_at]]]
    i = open_at + 1
    while stack:
        c = text[i]
        if c == "'":
            i = _string_end(text, i)
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c == stack[-1]:
            stack.pop()
        i += 1
    return text[open_at + 1 : i - 1]


_BLOCK_HEAD = re.compile(r"^(resource|module)\s+(\w+)\s+'([^']+)'[^=\n]*=", re.MULTILINE)


def _blocks(path: Path) -> dict[str, Block]:
    text = _strip_comments(_read(path))
    found: dict[str, Block] = {}
    for head in _BLOCK_HEAD.finditer(text):
        body = _balanced(text, text.index("{", head.end()))
        found[head.group(2)] = Block(kind=head.group(1), symbol=head.group(2), target=head.group(3), body=body)
    return found


def _value(body: str, key: str) -> str:
    """The raw value of the first `key:` in `body` (one line, or a bracketed block)."""
    match = re.search(rf"^\s*'?{re.escape(key)}'?\s*:\s*", body, re.MULTILINE)
    assert match, f"no {key!r} in block"
    start = match.end()
    if body[start] in "{[":
        return body[start] + _balanced(body, start) + {"{": "}", "[": "]"}[body[start]]
    return body[start : body.index("\n", start)].strip()


def _strings(text: str) -> list[str]:
    return re.findall(r"'((?:[^'\\]|\\.)*)'", text)


def _vars(path: Path) -> dict[str, str]:
    """Variables whose value is one string literal, e.g. role ids and container names."""
    text = _strip_comments(_read(path))
    return dict(re.findall(r"^var\s+(\w+)\s*=\s*'([^']*)'\s*$", text, re.MULTILINE))


def _params(path: Path) -> dict[str, bool]:
    """Parameter name -> whether it has a default."""
    text = _strip_comments(_read(path))
    return {
        m.group(1): m.group(2) is not None for m in re.finditer(r"^param\s+(\w+)\s+\w+(\s*=.*)?$", text, re.MULTILINE)
    }


def _object_keys(block_text: str) -> set[str]:
    """Top-level keys of an object literal given with its braces."""
    inner = block_text[1:-1]
    keys, depth, i = set(), 0, 0
    line_start = True
    while i < len(inner):
        c = inner[i]
        if c == "'":
            i = _string_end(inner, i)
            continue
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        elif c == "\n":
            line_start = True
            i += 1
            continue
        if line_start and depth == 0 and not c.isspace():
            match = re.match(r"'?([\w-]+)'?\s*:", inner[i:])
            if match:
                keys.add(match.group(1))
            line_start = False
        i += 1
    return keys


APP = INFRA / "modules" / "app.bicep"
MAIN = INFRA / "main.bicep"
KEY_ACCESS = INFRA / "modules" / "key-access.bicep"
ACCOUNT_ACCESS = INFRA / "modules" / "account-access.bicep"
KEY_EVENTS = INFRA / "modules" / "key-events.bicep"


def _app_setting_names() -> set[str]:
    text = _strip_comments(_read(APP))
    names = set()
    for var in ("baseSettings", "outcomeSettings"):
        start = text.index("[", re.search(rf"^var {var}\s*=", text, re.MULTILINE).end() - 1)
        names |= set(re.findall(r"name:\s*'([^']+)'", _balanced(text, start)))
    return names


def _role_assignments(path: Path) -> list[Block]:
    return [b for b in _blocks(path).values() if b.target.startswith("Microsoft.Authorization/roleAssignments@")]


def _role_id(assignment: Block, variables: dict[str, str]) -> str:
    ref = re.search(r"roleDefinitions',\s*(\w+)\)", assignment.body)
    assert ref, f"{assignment.symbol} does not name its role through subscriptionResourceId"
    return variables.get(ref.group(1), ref.group(1))


# ---------------------------------------------------------------------------------------------------------------------
# App settings


def test_every_setting_the_code_reads_is_set_by_the_bicep() -> None:
    missing = SETTINGS_THE_CODE_READS - _app_setting_names()
    assert not missing, f"app.bicep does not set {sorted(missing)}"


def test_no_app_setting_is_unknown_forbidden_or_secret() -> None:
    names = _app_setting_names()
    assert names <= SETTINGS_THE_CODE_READS | SETTINGS_FOR_STORAGE_CLIENTS, names - SETTINGS_THE_CODE_READS
    assert not names & SETTINGS_FORBIDDEN
    for name in names:
        assert not any(re.search(word, name) for word in SETTINGS_FORBIDDEN_WORDS), name


def test_settings_reach_the_function_app() -> None:
    site = _blocks(APP)["site"]
    assert re.search(
        r"appSettings:\s*concat\(baseSettings,\s*outcomeEventsTopic \? outcomeSettings : \[\]\)", site.body
    )


def test_storage_is_reached_by_the_user_assigned_identity_without_keys() -> None:
    text = _strip_comments(_read(APP))
    assert re.search(r"name: 'AzureWebJobsStorage__credential'\s*\n\s*value: 'managedidentity'", text)
    assert re.search(r"name: 'AzureWebJobsStorage__clientId'\s*\n\s*value: appIdentity\.properties\.clientId", text)
    assert re.search(r"name: 'AZURE_CLIENT_ID'\s*\n\s*value: appIdentity\.properties\.clientId", text)
    assert re.search(r"Authorization=AAD'", text)
    storage = _blocks(APP)["storage"]
    assert _value(storage.body, "allowSharedKeyAccess") == "false"
    assert _value(storage.body, "allowBlobPublicAccess") == "false"
    assert _value(_blocks(APP)["appInsights"].body, "DisableLocalAuth") == "true"
    for path in INFRA.rglob("*.bicep"):
        source = _strip_comments(_read(path))
        assert not re.search(r"listKeys|listkeys|AccountKey=|SharedAccessKey", source), path


def test_outputs_hold_no_secret() -> None:
    for path in INFRA.rglob("*.bicep"):
        for line in re.findall(r"^output .*$", _strip_comments(_read(path)), re.MULTILINE):
            assert not re.search(r"(?i)key\b|secret|password|ConnectionString", line.replace("KEY_EVENTS", "")), line


# ---------------------------------------------------------------------------------------------------------------------
# Flex Consumption


def test_the_app_runs_on_flex_consumption_with_python_311() -> None:
    blocks = _blocks(APP)
    plan = blocks["plan"]
    assert _strings(_value(plan.body, "sku")) == ["FC1", "FlexConsumption"]
    site = blocks["site"]
    runtime = _value(site.body, "runtime")
    assert _strings(runtime) == ["python", "3.11"]
    assert "'UserAssignedIdentity'" in _value(site.body, "authentication")
    assert _value(site.body, "httpsOnly") == "true"
    assert "'azd-service-name': 'rotation'" in _value(site.body, "tags")


def test_azure_yaml_deploys_the_tagged_service_and_subscribes_after_deploy() -> None:
    config = yaml.safe_load(_read(ROOT / "azure.yaml"))
    assert config["services"] == {"rotation": {"project": ".", "language": "python", "host": "function"}}
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    for shell in ("posix", "windows"):
        script = config["hooks"]["postdeploy"][shell]["run"]
        assert "azd env set SUBSCRIBE_KEY_EVENTS true" in script
        assert "azd provision --no-prompt" in script
    assert "${SUBSCRIBE_KEY_EVENTS=false}" in _read(INFRA / "main.parameters.json")


# ---------------------------------------------------------------------------------------------------------------------
# Storage the code binds to


def test_queues_containers_and_table_exist() -> None:
    names = {
        (b.target.split("@")[0].rsplit("/", 1)[-1], _vars(APP).get(_value(b.body, "name"), _value(b.body, "name")))
        for b in _blocks(APP).values()
        if b.target.startswith("Microsoft.Storage/storageAccounts/") and b.target.count("/") == 3
    }
    for expected in (
        ("queues", REQUESTS_QUEUE),
        ("queues", POISON_QUEUE),
        ("containers", LOCKS_CONTAINER),
        ("tables", LEDGER_TABLE),
    ):
        assert expected in names, f"app.bicep creates no {expected[0][:-1]} {expected[1]!r}"


# ---------------------------------------------------------------------------------------------------------------------
# Roles


def test_the_app_identity_has_exactly_its_storage_and_telemetry_roles() -> None:
    variables = _vars(APP)
    granted = {
        (_role_id(a, variables), _value(a.body, "scope"))
        for a in _role_assignments(APP)
        if _value(a.body, "principalId") == "appIdentity.properties.principalId"
    }
    assert granted == {
        (STORAGE_BLOB_DATA_OWNER, "storage"),
        (STORAGE_QUEUE_DATA_CONTRIBUTOR, "storage"),
        (STORAGE_TABLE_DATA_CONTRIBUTOR, "storage"),
        (MONITORING_METRICS_PUBLISHER, "appInsights"),
        ("d5a91429-5739-47e2-a06b-3470a27159e7", "outcomeTopic"),  # EventGrid Data Sender, only with the topic
    }


def test_event_grid_identity_may_only_send_to_its_queue_and_write_dead_letters() -> None:
    variables = _vars(APP)
    granted = {
        (_role_id(a, variables), _value(a.body, "scope"))
        for a in _role_assignments(APP)
        if _value(a.body, "principalId") == "keyEventsIdentity.properties.principalId"
    }
    assert granted == {
        (STORAGE_BLOB_DATA_CONTRIBUTOR, "deadLetterContainer"),
        (STORAGE_QUEUE_DATA_MESSAGE_SENDER, "keyEventsQueue"),
    }


def test_custom_key_role_is_narrower_than_crypto_officer_and_covers_the_engine() -> None:
    role = _blocks(MAIN)["keyRotatorRole"]
    assert set(_strings(_value(role.body, "dataActions"))) == KEY_DATA_ACTIONS
    assert _strings(_value(role.body, "actions")) == []
    assert "keyVaultCryptoOfficer" in _value(_blocks(MAIN)["keyAccess"].body, "keyRoleId")
    assert _vars(MAIN)["keyVaultCryptoOfficer"] == KEY_VAULT_CRYPTO_OFFICER


def test_custom_account_role_allows_only_read_and_write() -> None:
    role = _blocks(MAIN)["accountUpdaterRole"]
    assert set(_strings(_value(role.body, "actions"))) == ACCOUNT_ACTIONS
    assert _strings(_value(role.body, "dataActions")) == []


def test_key_and_account_roles_are_assigned_on_the_key_and_on_each_account() -> None:
    key_assignments = {a.symbol: a for a in _role_assignments(KEY_ACCESS)}
    assert _value(key_assignments["keyRotator"].body, "scope") == "key"
    assert _value(key_assignments["keyRotator"].body, "principalId") == "principalId"
    assert _value(key_assignments["accountKeyAccess"].body, "scope") == "key"
    assert _role_id(key_assignments["accountKeyAccess"], _vars(KEY_ACCESS)) == KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER
    (account_assignment,) = _role_assignments(ACCOUNT_ACCESS)
    assert _value(account_assignment.body, "scope") == "account"
    assert _value(_blocks(KEY_ACCESS)["accountUpdater"].body, "roleId") == "accountRoleId"
    assert _value(_blocks(MAIN)["keyAccess"].body, "accountRoleId") == "accountUpdaterRole.name"


def test_no_role_is_assigned_wider_than_a_resource() -> None:
    for path in INFRA.rglob("*.bicep"):
        for assignment in _role_assignments(path):
            scope = _value(assignment.body, "scope")
            assert scope not in {"rg", "resourceGroup()", "subscription()"}, (path.name, assignment.symbol)
            assert _value(assignment.body, "principalType") == "'ServicePrincipal'"


# ---------------------------------------------------------------------------------------------------------------------
# Key Vault events


def test_event_subscription_filter_matches_the_event_types_the_code_handles() -> None:
    subscription = _blocks(KEY_EVENTS)["keyEvents"]
    assert set(_strings(_value(subscription.body, "includedEventTypes"))) == set(KEY_EVENT_TYPES)


def test_event_subscription_targets_the_event_grid_function_or_the_key_events_queue() -> None:
    text = _strip_comments(_read(KEY_EVENTS))
    assert f"'${{functionAppId}}/functions/{EVENT_GRID_FUNCTION}'" in text
    assert "endpointType: 'StorageQueue'" in text
    body = _blocks(KEY_EVENTS)["keyEvents"].body
    assert _value(body, "destination") == "delivery == 'AzureFunction' ? functionDestination : null"
    assert _value(body, "deliveryWithResourceIdentity") == "delivery == 'StorageQueue' ? queueDelivery : null"
    assert _value(_blocks(APP)["keyEventsQueue"].body, "name") == "keyEventsQueueName"


def test_the_key_events_queue_is_the_one_a_function_reads() -> None:
    queued = FunctionsWorker.start().function("on_queued_key_event").trigger  # as the host sees it
    assert _vars(APP)["keyEventsQueueName"] == queued["queueName"]


def test_event_subscription_retries_explicitly_and_dead_letters() -> None:
    body = _blocks(KEY_EVENTS)["keyEvents"].body
    retry = _value(body, "retryPolicy")
    assert "maxDeliveryAttempts: maxDeliveryAttempts" in retry
    assert "eventTimeToLiveInMinutes: eventTimeToLiveInMinutes" in retry
    dead_letter = _value(body, "deadLetterWithResourceIdentity")
    assert "endpointType: 'StorageBlob'" in dead_letter
    assert "blobContainerName: deadLetterContainerName" in dead_letter
    assert _value(_blocks(MAIN)["keyEvents"].body, "deadLetterContainerName") == "app.outputs.deadLetterContainerName"


def test_system_topic_is_the_vaults() -> None:
    topic = _blocks(KEY_EVENTS)["systemTopic"]
    assert _value(topic.body, "topicType") == "'Microsoft.KeyVault.vaults'"
    assert _value(topic.body, "source") == "vaultId"


# ---------------------------------------------------------------------------------------------------------------------
# Parameters and module calls (what the Bicep compiler would catch)


def test_every_module_call_passes_the_required_params_and_no_unknown_one() -> None:
    for path in INFRA.rglob("*.bicep"):
        for block in _blocks(path).values():
            if block.kind != "module":
                continue
            params = _params(path.parent / block.target)
            passed = _object_keys(_value(block.body, "params"))
            assert passed <= set(params), (block.symbol, passed - set(params))
            required = {name for name, has_default in params.items() if not has_default}
            assert required <= passed, (block.symbol, required - passed)


def test_parameters_file_maps_every_required_param_and_only_known_ones() -> None:
    mapped = set(json.loads(_read(INFRA / "main.parameters.json"))["parameters"])
    params = _params(MAIN)
    assert mapped <= set(params), mapped - set(params)
    assert {name for name, has_default in params.items() if not has_default} <= mapped


def test_deployment_outputs_the_app_name_principal_id_and_http_endpoint() -> None:
    outputs = dict(re.findall(r"^output (\w+) \w+ = (.+)$", _strip_comments(_read(MAIN)), re.MULTILINE))
    assert outputs["AZURE_FUNCTION_APP_NAME"] == "app.outputs.appName"
    assert outputs["ROTATION_IDENTITY_PRINCIPAL_ID"] == "app.outputs.principalId"
    assert outputs["ROTATION_HTTP_ENDPOINT"] == "'https://${app.outputs.defaultHostName}/api'"


def test_rotation_targets_setting_has_the_apps_format() -> None:
    text = _strip_comments(_read(MAIN))
    start = text.index("[", re.search(r"^var rotationTargets\s*=", text, re.MULTILINE).end() - 1)
    entry = _balanced(text, text.index("{", start))
    assert _object_keys("{" + entry + "}") == {"key", "accounts", "vault_location", "new_versions"}
    assert "format('https://{0}{1}/keys/{2}'" in entry
    assert "environment().suffixes.keyvaultDns" in entry


# ---------------------------------------------------------------------------------------------------------------------
# checkov


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, object]:
    command = [sys.executable, "-m", "checkov.main", "-d", str(INFRA), "--framework", "bicep", "--skip-download"]
    result = subprocess.run([*command, "--output", "json"], capture_output=True, text=True, timeout=120)
    assert result.stdout, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert isinstance(report, dict), report
    return report


def test_checkov_parses_every_bicep_file_and_finds_no_failed_check(checkov_report: dict[str, object]) -> None:
    summary = checkov_report["summary"]
    assert isinstance(summary, dict)
    assert summary["parsing_errors"] == 0
    results = checkov_report["results"]
    assert isinstance(results, dict)
    assert summary["failed"] == 0, [(c["check_id"], c["resource"], c["file_path"]) for c in results["failed_checks"]]
    assert summary["resource_count"] >= 10


def test_every_checkov_skip_gives_its_reason_in_place(checkov_report: dict[str, object]) -> None:
    results = checkov_report["results"]
    assert isinstance(results, dict)
    for skipped in results["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "")
        assert len(reason.strip()) > 20, skipped["check_id"]
