"""The deployment's wiring, checked offline from the Bicep sources: settings, roles, events, storage, parameters.

The Bicep CLI cannot be downloaded here, so these tests read `infra/` as text with a small scanner that knows Bicep's
strings and comments, and cross-check it against what the code needs: every app setting the code reads is set, every
role it needs is assigned at the narrowest scope, and the Event Grid filter matches the event types the code handles.
They also run checkov over `infra/` and require zero failed checks, zero parse errors and a reason for every skip.

Two deployments, two owners: what `azd up` and `azd down` manage (`infra/main.bicep` and the modules it calls) stays in
the app's own resource group, because azd deletes every resource group its deployment touched; everything on the
customers' keys, accounts and vaults is the separate grants step (`infra/grants/main.bicep`), which azd never runs. The
key, account and discovery roles are derived from the SDK calls of the adapters and of discovery, so a role can hold
no action the code does not call; the Key Vault write that only retirement and break-glass make (``disable_version``)
is a role of its own, assigned only when the grants enable retirement or break-glass.

They must never call Azure or need the network.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from azure.keyvault.keys import KeyClient
from azure.mgmt.cognitiveservices.operations import AccountsOperations
from azure.mgmt.resourcegraph import ResourceGraphClient

from emulator.functions_worker import FunctionsWorker
from rotation import config
from rotation.accounts import AccountsSession
from rotation.events import KEY_EVENT_TYPES
from rotation.model import Retirement, UnmanagedPolicy
from rotation.storage import LEDGER_TABLE, LOCKS_CONTAINER, REQUESTS_QUEUE

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# Settings whose value only the deployment knows: the Azure cloud it runs in (environment().name: AzureCloud,
# AzureUSGovernment or AzureChinaCloud) and how the HTTP API authenticates (keys or entra). Named here explicitly, not
# only through config.SETTING_NAMES, so that the Bicep must set them whatever the Python side lists.
AZURE_CLOUD_SETTING = "ROTATION_AZURE_CLOUD"
HTTP_AUTH_SETTING = "ROTATION_HTTP_AUTH"
SETTINGS_FROM_THE_DEPLOYMENT = {AZURE_CLOUD_SETTING, HTTP_AUTH_SETTING}
# The values of environment().name in Bicep, one per Azure cloud.
AZURE_CLOUD_NAMES = {"AzureCloud", "AzureUSGovernment", "AzureChinaCloud"}
# Entra ID mode: the app roles of the API's app registration (docs/runbook.md), checked by the app from the
# X-MS-CLIENT-PRINCIPAL header that App Service authentication injects.
ENTRA_APP_ROLES = {"Rotations.Submit", "Rotations.Read"}

# The Python worker's switch that calls azure-monitor-opentelemetry's configure_azure_monitor at its start.
TELEMETRY_SETTING = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
# The app settings the code reads: rotation/config.py's names (DESIGN section 4), less ROTATION_EVENTS_KEY (a secret:
# the deployment publishes outcome events with the managed identity instead), plus the Functions host's identity-based
# storage and telemetry settings.
SETTINGS_THE_CODE_READS = {
    *(name for name in config.SETTING_NAMES if name != config.EVENTS_KEY),
    *SETTINGS_FROM_THE_DEPLOYMENT,
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    TELEMETRY_SETTING,
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

COGNITIVE_SERVICES_CONTRIBUTOR = "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"

# The data action each `KeyClient` method needs (Learn, "Azure Key Vault RBAC guide" and the Key Vault REST reference:
# get and list are keys/read, POST /keys/{name}/create is keys/create/action, PATCH is keys/update/action, ...). The
# methods the adapter does not call are here so that a new call is mapped, not guessed: the test below fails on any
# method the adapter calls that is missing from this table.
KEY_CLIENT_DATA_ACTIONS = {
    "get_key": "Microsoft.KeyVault/vaults/keys/read",
    "list_properties_of_key_versions": "Microsoft.KeyVault/vaults/keys/read",
    "list_properties_of_keys": "Microsoft.KeyVault/vaults/keys/read",
    "create_rsa_key": "Microsoft.KeyVault/vaults/keys/create/action",
    "create_key": "Microsoft.KeyVault/vaults/keys/create/action",
    "create_ec_key": "Microsoft.KeyVault/vaults/keys/create/action",
    "create_oct_key": "Microsoft.KeyVault/vaults/keys/create/action",
    "update_key_properties": "Microsoft.KeyVault/vaults/keys/update/action",
    "rotate_key": "Microsoft.KeyVault/vaults/keys/rotate/action",
    "get_key_rotation_policy": "Microsoft.KeyVault/vaults/keyrotationpolicies/read",
    "update_key_rotation_policy": "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
    "begin_delete_key": "Microsoft.KeyVault/vaults/keys/delete",
    "import_key": "Microsoft.KeyVault/vaults/keys/import/action",
    "backup_key": "Microsoft.KeyVault/vaults/keys/backup/action",
}
# The adapter's methods that only retirement (ROTATION_RETIREMENT own or all) and break-glass (a compromised version)
# call: their Key Vault calls belong to the key retirer role, which the grants assign only with retirement=true or
# breakGlass=true; every other method's to the key rotator role.
DISABLING_METHODS = {"disable_version"}
KEY_UPDATE = "Microsoft.KeyVault/vaults/keys/update/action"
# The app settings of retirement (rotation/config.py), wired like ROTATION_UNMANAGED.
RETIREMENT_SETTING = "ROTATION_RETIREMENT"
RETIRE_AFTER_SETTING = "ROTATION_RETIRE_AFTER"

# The ARM action each `CognitiveServicesManagementClient.accounts` method needs (Microsoft's provider operations list).
ACCOUNTS_ACTIONS = {
    "get": "Microsoft.CognitiveServices/accounts/read",
    "list": "Microsoft.CognitiveServices/accounts/read",  # discovery's fallback, per subscription
    "begin_update": "Microsoft.CognitiveServices/accounts/write",
    "begin_create": "Microsoft.CognitiveServices/accounts/write",
    "begin_delete": "Microsoft.CognitiveServices/accounts/delete",
    "list_keys": "Microsoft.CognitiveServices/accounts/listKeys/action",
    "regenerate_key": "Microsoft.CognitiveServices/accounts/regenerateKey/action",
}
# Polling a long-running account update reads .../locations/{region}/operationStatuses/{id}, outside the account.
# The action name is the provider operations list's; that ARM checks exactly it on that URL is unconfirmed.
OPERATION_STATUS_ACTION = "Microsoft.CognitiveServices/locations/operationresults/read"
ACCOUNTS_LONG_RUNNING = {"begin_update", "begin_create", "begin_delete"}
# The action each `ResourceGraphClient` method needs (Microsoft's provider operations list): `resources` is
# POST /providers/Microsoft.ResourceGraph/resources. That Resource Graph checks exactly this action is unconfirmed.
RESOURCE_GRAPH_ACTIONS = {"resources": "Microsoft.ResourceGraph/resources/read"}


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
NETWORK = INFRA / "modules" / "network.bicep"
MAIN = INFRA / "main.bicep"
GRANTS = INFRA / "grants" / "main.bicep"
KEY_ACCESS = INFRA / "grants" / "modules" / "key-access.bicep"
ACCOUNT_ACCESS = INFRA / "grants" / "modules" / "account-access.bicep"
OPERATION_STATUS_ACCESS = INFRA / "grants" / "modules" / "operation-status-access.bicep"
DISCOVERY_ACCESS = INFRA / "grants" / "modules" / "discovery-access.bicep"
KEY_EVENTS = INFRA / "grants" / "modules" / "key-events.bicep"
RUNBOOK = ROOT / "docs" / "runbook.md"


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


def test_telemetry_goes_through_opentelemetry_in_the_host_and_the_worker() -> None:
    """Learn, "Use OpenTelemetry with Azure Functions" (Python): host.json's telemetryMode, the worker's switch set to
    true, and azure-monitor-opentelemetry in requirements.txt, which the worker imports when the switch is on."""
    assert json.loads((ROOT / "host.json").read_text())["telemetryMode"] == "OpenTelemetry"
    bicep = (INFRA / "modules" / "app.bicep").read_text()
    assert re.search(rf"name: '{TELEMETRY_SETTING}'\s*value: 'true'", bicep)
    pins = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("azure-monitor-opentelemetry==") for line in pins)


def test_settings_reach_the_function_app() -> None:
    site = _blocks(APP)["site"]
    assert re.search(
        r"appSettings:\s*concat\(baseSettings,\s*outcomeEventsTopic \? outcomeSettings : \[\]\)", site.body
    )


def _wired_from_parameter(setting: str, param: str) -> str:
    """Check that app setting ``setting`` is wired like ROTATION_CONCURRENCY: an azd variable with a default in
    main.parameters.json, a string parameter ``param`` of main.bicep passed to app.bicep, and the app setting of that
    parameter; return the parameter's default in main.bicep."""
    declaration = re.fullmatch(rf"param {param} string = '([^']*)'", _param_declaration(MAIN, param)[0])
    assert declaration, param
    default = declaration.group(1)
    parameters = json.loads(_read(INFRA / "main.parameters.json"))["parameters"]
    assert parameters[param]["value"] == f"${{{setting}={default}}}"
    assert _value(_value(_blocks(MAIN)["app"].body, "params"), param) == param
    assert _param_declaration(APP, param)[0] == f"param {param} string"
    assert re.search(rf"name: '{setting}'\s*\n\s*value: {param}\s*\n", _strip_comments(_read(APP))), setting
    return default


def test_discovery_settings_come_from_parameters_with_the_codes_defaults() -> None:
    """ROTATION_DISCOVERY and ROTATION_UNMANAGED, wired like ROTATION_CONCURRENCY: an azd variable with a default in
    main.parameters.json, a parameter of main.bicep passed to app.bicep, and the app setting of that parameter."""
    defaults = {
        param: _wired_from_parameter(setting, param)
        for setting, param in ((config.DISCOVERY, "discovery"), (config.UNMANAGED, "unmanagedAccounts"))
    }
    # Unset, the app discovers across the tenant and reports; the deployment's defaults mean the same.
    assert config.parse_discovery(defaults["discovery"]) == config.parse_discovery(None)
    assert defaults["unmanagedAccounts"] == UnmanagedPolicy.REPORT
    for path in (MAIN, APP):
        assert _param_declaration(path, "unmanagedAccounts")[1] == [policy.value for policy in UnmanagedPolicy]


def test_retirement_settings_come_from_parameters_with_the_codes_defaults() -> None:
    """ROTATION_RETIREMENT and ROTATION_RETIRE_AFTER, wired like ROTATION_UNMANAGED: an azd variable with a default in
    main.parameters.json, a parameter of main.bicep passed to app.bicep, and the app setting of that parameter. The
    deployment's defaults (off, P30D) mean what the settings' absence means to the app."""
    defaults = {
        setting: _wired_from_parameter(setting, param)
        for setting, param in ((RETIREMENT_SETTING, "retirement"), (RETIRE_AFTER_SETTING, "retireAfter"))
    }
    assert defaults == {RETIREMENT_SETTING: Retirement.OFF, RETIRE_AFTER_SETTING: "P30D"}
    for path in (MAIN, APP):
        assert _param_declaration(path, "retirement")[1] == [mode.value for mode in Retirement]
    # The code reads both, and the deployment's defaults parse to the code's own.
    assert {RETIREMENT_SETTING, RETIRE_AFTER_SETTING} <= set(config.SETTING_NAMES)
    unset = config.Settings.from_env({}, require_targets=False)
    deployed = config.Settings.from_env(defaults, require_targets=False)
    assert (deployed.retirement, deployed.retire_after) == (unset.retirement, unset.retire_after)


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


def test_azure_yaml_deploys_the_app_and_only_prints_the_grants_step() -> None:
    config = yaml.safe_load(_read(ROOT / "azure.yaml"))
    assert config["services"] == {"rotation": {"project": ".", "language": "python", "host": "function"}}
    # azd provisions infra/main.bicep only; infra/grants/main.bicep is never its module.
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    hooks = config["hooks"]
    assert set(hooks) == {"postdeploy", "predown"}
    for name, hook in hooks.items():
        for shell in ("posix", "windows"):
            for line in hook[shell]["run"].splitlines():
                # A hook may tell the operator what to run next; it must never run it (no provision, deploy, delete).
                assert re.match(r"\s*(echo|Write-Host)\s", line), (name, shell, line)
    assert "infra/grants/main.bicep" in hooks["postdeploy"]["posix"]["run"]
    assert "infra/grants/main.bicep" in hooks["postdeploy"]["windows"]["run"]
    assert "SUBSCRIBE_KEY_EVENTS" not in _read(INFRA / "main.parameters.json")


def _printed_grants_command() -> str:
    """The `az deployment sub create` command the post-deploy hook prints (posix), as one line."""
    script = yaml.safe_load(_read(ROOT / "azure.yaml"))["hooks"]["postdeploy"]["posix"]["run"]
    printed = [m.group(1) for m in re.finditer(r"^\s*echo '(.*)'\s*$", script, re.MULTILINE)]
    return " ".join(part.rstrip("\\ ").strip() for part in printed)


def _runbook_grants_commands() -> list[str]:
    """Every `az deployment sub create|what-if` command for the grants in the runbook's shell blocks, as one line."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", _read(RUNBOOK), re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line for line in joined.splitlines() if "az deployment" in line and "infra/grants/" in line]
    return commands


def test_the_grants_commands_pass_the_grants_params_from_the_azd_environment() -> None:
    params = _params(GRANTS)
    required = {name for name, has_default in params.items() if not has_default}
    azd_values = set(re.findall(r"^output (\w+) ", _strip_comments(_read(MAIN)), re.MULTILINE))
    azd_values |= {"AZURE_ENV_NAME", "AZURE_SUBSCRIPTION_ID", "AZURE_LOCATION", "ROTATION_KEY_TARGETS"}
    commands = [_printed_grants_command(), *_runbook_grants_commands()]
    assert len(commands) >= 3, commands  # the hook's, the runbook's what-if and create
    passed_by_each = {frozenset(re.findall(r"\s(\w+)=", c.split("--parameters", 1)[1])) for c in commands}
    assert len(passed_by_each) == 1, passed_by_each  # the same parameters (the alerts' action group among them)
    for command in commands:
        assert "--template-file infra/grants/main.bicep" in command, command
        passed = set(re.findall(r"\s(\w+)=", command.split("--parameters", 1)[1]))
        assert passed <= set(params), passed - set(params)
        assert required <= passed, required - passed
        assert set(re.findall(r"azd env get-value (\w+)", command)) <= azd_values, command
        # The same targets as the app's ROTATION_TARGETS setting, from the same azd environment value.
        assert 'targets="$(azd env get-value ROTATION_KEY_TARGETS)"' in command


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


def _sdk_method_calls(source: Path | ast.AST, methods: set[str], receiver: str | None = None) -> set[str]:
    """Names of the `methods` that `source` (a file, or a node of one) calls as `<anything>.<method>(` (or
    `<...>.<receiver>.<method>(`)."""
    called = set()
    for node in ast.walk(ast.parse(_read(source)) if isinstance(source, Path) else source):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods:
            owner = node.func.value
            if receiver is None or (isinstance(owner, ast.Attribute) and owner.attr == receiver):
                called.add(node.func.attr)
    return called


def _public_methods(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))}


def test_only_the_two_adapters_call_key_vault_and_arm() -> None:
    """So that scanning rotation/keyvault.py and rotation/accounts.py finds every call the app makes. Discovery also
    queries Resource Graph (rotation/discovery.py), and reaches the accounts through the accounts adapter."""
    for path in (ROOT / "rotation").glob("*.py"):
        source = _read(path)
        assert ("azure.keyvault" in source) == (path.name == "keyvault.py"), path.name
        assert ("azure.mgmt.cognitiveservices" in source) == (path.name == "accounts.py"), path.name
        assert ("azure.mgmt.resourcegraph" in source) == (path.name == "discovery.py"), path.name
        assert "azure.mgmt" not in source.replace("azure.mgmt.cognitiveservices", "").replace(
            "azure.mgmt.resourcegraph", ""
        ), path.name


def _key_vault_calls_per_adapter_method() -> dict[str, set[str]]:
    """The `KeyClient` methods each method of `KeyVaultAdapter` calls (nothing outside its methods calls one)."""
    tree = ast.parse(_read(ROOT / "rotation" / "keyvault.py"))
    (adapter,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KeyVaultAdapter"]
    key_client_methods = _public_methods(KeyClient)
    per_method = {
        n.name: _sdk_method_calls(n, key_client_methods) for n in adapter.body if isinstance(n, ast.FunctionDef)
    }
    assert set().union(*per_method.values()) == _sdk_method_calls(tree, key_client_methods)
    return per_method


def test_the_key_role_has_exactly_the_data_actions_of_the_adapters_key_vault_calls() -> None:
    key_client_methods = _public_methods(KeyClient)
    assert set(KEY_CLIENT_DATA_ACTIONS) <= key_client_methods, set(KEY_CLIENT_DATA_ACTIONS) - key_client_methods
    per_method = _key_vault_calls_per_adapter_method()
    called = set().union(*per_method.values())
    assert called, "found no KeyClient call in rotation/keyvault.py"
    assert called <= set(KEY_CLIENT_DATA_ACTIONS), f"map {sorted(called - set(KEY_CLIENT_DATA_ACTIONS))} to an action"
    rotating = set().union(*(calls for method, calls in per_method.items() if method not in DISABLING_METHODS))
    needed = {KEY_CLIENT_DATA_ACTIONS[method] for method in rotating}
    role = _blocks(GRANTS)["keyRotatorRole"]
    assert set(_strings(_value(role.body, "dataActions"))) == needed
    assert _strings(_value(role.body, "actions")) == []
    assert needed == {"Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/create/action"}
    # What a stolen identity would need to disable or expire the version every account uses: no rotation call needs
    # it, so the key rotator role never holds it (the key retirer role below does, only where the grants enable
    # retirement or break-glass).
    assert KEY_UPDATE not in needed


def test_the_key_retirer_role_has_exactly_the_data_actions_of_the_adapters_disable_call() -> None:
    """Retirement and break-glass disable a version with the same adapter call, so one role serves both."""
    per_method = _key_vault_calls_per_adapter_method()
    assert set(per_method) >= DISABLING_METHODS, DISABLING_METHODS - set(per_method)
    retiring = set().union(*(per_method[method] for method in DISABLING_METHODS))
    assert retiring == {"update_key_properties"}, retiring
    role = _blocks(GRANTS)["keyRetirerRole"]
    assert set(_strings(_value(role.body, "dataActions"))) == {KEY_CLIENT_DATA_ACTIONS[m] for m in retiring}
    assert set(_strings(_value(role.body, "dataActions"))) == {KEY_UPDATE}
    assert _strings(_value(role.body, "actions")) == []
    # The one PATCH sends only `enabled=False`: never an expiry, operations, tags or a release policy.
    tree = ast.parse(_read(ROOT / "rotation" / "keyvault.py"))
    patches = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in retiring
    ]
    assert len(patches) == 1, [ast.unparse(p) for p in patches]
    (patch,) = patches
    assert [(k.arg, ast.literal_eval(k.value)) for k in patch.keywords] == [("enabled", False)], ast.unparse(patch)
    assert len(patch.args) == 2, ast.unparse(patch)  # the key's name and one version, never the current by omission


def test_the_key_retirer_role_is_defined_and_assigned_on_each_key_only_with_retirement_or_break_glass() -> None:
    assert _param_declaration(GRANTS, "retirement")[0] == "param retirement bool = false"
    assert _param_declaration(GRANTS, "breakGlass")[0] == "param breakGlass bool = false"
    # One variable holds the condition, written once: retirement's sweep and break-glass are the only disables.
    code = re.sub(r"'(?:[^'\\]|\\.)*'", "''", _strip_comments(_read(GRANTS))).splitlines()  # no strings either
    assert [line for line in code if re.search(r"\bbreakGlass\b", line)] == [
        "param breakGlass bool = false",
        "var disables = retirement || breakGlass",
    ]
    assert [line for line in code if re.search(r"\bretirement\b", line)] == [
        "param retirement bool = false",
        "var disables = retirement || breakGlass",
    ]
    assert _head(GRANTS, "keyRetirerRole").startswith("if (custom && disables)")
    # The role's name (its guid seed) is unchanged, so deployed definitions and assignments are kept, not duplicated.
    assert _value(_blocks(GRANTS)["keyRetirerRole"].body, "name") == "guid(functionAppId, 'cmk-rotation-key-retirer')"
    params = _value(_blocks(GRANTS)["keyAccess"].body, "params")
    # In BuiltIn mode Key Vault Crypto Officer already holds keys/update/action: nothing more is assigned.
    assert _value(params, "disables") == "custom && disables"
    assert _value(params, "retirerRoleId") == "keyRetirerRole.name"
    assert _param_declaration(KEY_ACCESS, "disables")[0] == "param disables bool"
    assignments = {a.symbol: a for a in _role_assignments(KEY_ACCESS)}
    retirer = assignments["keyRetirer"]
    assert _head(KEY_ACCESS, "keyRetirer").startswith("if (disables)")
    assert _value(retirer.body, "scope") == "key"
    assert _value(retirer.body, "principalId") == "principalId"
    assert _role_id(retirer, {}) == "retirerRoleId"
    # The key rotator role's assignment is unconditional and never the retirer role.
    assert _head(KEY_ACCESS, "keyRotator") == "{"
    assert _role_id(assignments["keyRotator"], {}) == "keyRoleId"
    outputs = dict(re.findall(r"^output (\w+) \w+ = (.+)$", _strip_comments(_read(KEY_ACCESS)), re.MULTILINE))
    assert outputs["keyRetirerRoleAssignmentId"] == "disables ? keyRetirer.id : ''"
    # The role definition is named for the teardown exactly when it exists.
    grants_outputs = dict(re.findall(r"^output (\w+) \w+ = (.+)$", _strip_comments(_read(GRANTS)), re.MULTILINE))
    assert "disables ? [keyRetirerRole.id] : []" in grants_outputs["customRoleDefinitionIds"]


def test_the_account_roles_have_exactly_the_actions_of_the_adapters_arm_calls() -> None:
    accounts_methods = _public_methods(AccountsOperations)
    assert set(ACCOUNTS_ACTIONS) <= accounts_methods, set(ACCOUNTS_ACTIONS) - accounts_methods
    called = _sdk_method_calls(ROOT / "rotation" / "accounts.py", accounts_methods, receiver="accounts")
    assert called, "found no accounts.<method>( call in rotation/accounts.py"
    assert called <= set(ACCOUNTS_ACTIONS), f"map {sorted(called - set(ACCOUNTS_ACTIONS))} to an action"
    blocks = _blocks(GRANTS)
    on_the_account = blocks["accountUpdaterRole"]
    assert set(_strings(_value(on_the_account.body, "actions"))) == {ACCOUNTS_ACTIONS[m] for m in called}
    assert _strings(_value(on_the_account.body, "dataActions")) == []
    # A long-running call is polled at a subscription-level URL: its one action is a role of its own.
    assert called & ACCOUNTS_LONG_RUNNING
    operation_status = blocks["operationStatusRole"]
    assert _strings(_value(operation_status.body, "actions")) == [OPERATION_STATUS_ACTION]
    assert _strings(_value(operation_status.body, "dataActions")) == []


def _session_methods_used(path: Path) -> set[str]:
    """The accounts adapter's session methods that `path` calls or hands on (`arm.get`), on the `arm` of an
    `async with <...>.session() as arm`."""
    methods = _public_methods(AccountsSession)
    used = set()
    for node in ast.walk(ast.parse(_read(path))):
        if not isinstance(node, ast.AsyncWith):
            continue
        for item in node.items:
            if not ast.unparse(item.context_expr).endswith(".session()"):
                continue
            session = item.optional_vars
            assert isinstance(session, ast.Name), ast.unparse(item)
            used |= {
                n.attr
                for statement in node.body
                for n in ast.walk(statement)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == session.id
            } & methods
    return used


def _accounts_calls_of_session_method(method: str) -> set[str]:
    """The `AccountsOperations` methods that the adapter's `AccountsSession.<method>` calls as `accounts.<m>(`."""
    tree = ast.parse(_read(ROOT / "rotation" / "accounts.py"))
    (session,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == AccountsSession.__name__]
    (body,) = [n for n in session.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == method]
    return _sdk_method_calls(body, _public_methods(AccountsOperations), receiver="accounts")


def test_the_discovery_role_has_exactly_the_actions_of_discoverys_calls() -> None:
    discovery = ROOT / "rotation" / "discovery.py"
    graph_methods = _public_methods(ResourceGraphClient)
    assert set(RESOURCE_GRAPH_ACTIONS) <= graph_methods, set(RESOURCE_GRAPH_ACTIONS) - graph_methods
    graph_called = _sdk_method_calls(discovery, graph_methods)
    assert graph_called, "found no ResourceGraphClient call in rotation/discovery.py"
    assert graph_called <= set(RESOURCE_GRAPH_ACTIONS), f"map {sorted(graph_called - set(RESOURCE_GRAPH_ACTIONS))}"
    session_used = _session_methods_used(discovery)
    assert session_used, "found no use of the accounts session in rotation/discovery.py"
    arm_called = set().union(*(_accounts_calls_of_session_method(method) for method in session_used))
    assert arm_called, session_used
    assert arm_called <= set(ACCOUNTS_ACTIONS), f"map {sorted(arm_called - set(ACCOUNTS_ACTIONS))} to an action"
    needed = {RESOURCE_GRAPH_ACTIONS[m] for m in graph_called} | {ACCOUNTS_ACTIONS[m] for m in arm_called}
    role = _blocks(GRANTS)["discoveryReaderRole"]
    assert set(_strings(_value(role.body, "actions"))) == needed
    assert _strings(_value(role.body, "dataActions")) == []
    # Discovery must never write (rotation/discovery.py): reads only, and the one a refused query names.
    assert all(action.endswith("/read") for action in needed), needed
    assert RESOURCE_GRAPH_ACTIONS["resources"] in _read(discovery)


def test_custom_roles_exist_only_in_custom_mode_and_the_built_in_mode_names_its_roles() -> None:
    blocks = _blocks(GRANTS)
    text = _strip_comments(_read(GRANTS))
    declaration = re.search(r"@allowed\((\[[^\]]*\])\)\s*param roleMode string = 'Custom'$", text, re.MULTILINE)
    assert declaration and _strings(declaration.group(1)) == ["Custom", "BuiltIn"]
    definitions = {b.symbol for b in blocks.values() if b.target.startswith("Microsoft.Authorization/roleDefinitions@")}
    assert definitions == {
        "keyRotatorRole",
        "accountUpdaterRole",
        "operationStatusRole",
        "discoveryReaderRole",
        "keyRetirerRole",
    }
    conditions = {"discoveryReaderRole": "if (custom && discovery)", "keyRetirerRole": "if (custom && disables)"}
    for symbol in definitions:
        condition = conditions.get(symbol, "if (custom)")
        assert _head(GRANTS, symbol).startswith(condition), symbol
        assert _value(blocks[symbol].body, "assignableScopes") == "assignableScopes"
    variables = _vars(GRANTS)
    assert variables["keyVaultCryptoOfficer"] == KEY_VAULT_CRYPTO_OFFICER
    assert variables["cognitiveServicesContributor"] == COGNITIVE_SERVICES_CONTRIBUTOR
    assert variables["reader"] == READER
    params = _value(blocks["keyAccess"].body, "params")
    assert _value(params, "keyRoleId") == "custom ? keyRotatorRole.name : keyVaultCryptoOfficer"
    assert _value(params, "accountRoleId") == "custom ? accountUpdaterRole.name : cognitiveServicesContributor"
    # No built-in role is wide enough at subscription scope to stand in for the operation-status read without
    # reading or writing far more: in BuiltIn mode that assignment is left out (the app then verifies by re-reading;
    # with discovery, Reader on the subscription covers it).
    assert "if (custom && indexOf(operationStatusSubscriptionIds, s) == i)" in _head(GRANTS, "operationStatusAccess")
    assert _value(_value(blocks["operationStatusAccess"].body, "params"), "roleId") == "operationStatusRole.name"
    discovery = _value(blocks["discoveryAccess"].body, "params")
    assert _value(discovery, "readerRoleId") == "custom ? discoveryReaderRole.name : reader"
    assert _value(discovery, "accountRoleId") == "custom ? accountUpdaterRole.name : cognitiveServicesContributor"


def test_custom_roles_are_assignable_in_every_subscription_of_a_target_vault_or_account_or_of_discovery() -> None:
    lines = set(_strip_comments(_read(GRANTS)).splitlines())
    assert "var assignableScopes = union([subscription().id], vaultScopes, accountScopes, searchedScopes)" in lines
    assert "var accountScopes = [for s in accountSubscriptionIds: format('/subscriptions/{0}', s)]" in lines
    assert "var searchedScopes = [for s in searchedSubscriptionIds: format('/subscriptions/{0}', s)]" in lines
    assert "var accountSubscriptionIds = [for id in accountIds: toLower(split(id, '/')[2])]" in lines
    assert (
        "var vaultScopes = [for t in targets: format('/subscriptions/{0}', toLower(split(t.vaultId, '/')[2]))]" in lines
    )
    for symbol in ("operationStatusAccess", "discoveryAccess"):
        assert _value(_blocks(GRANTS)[symbol].body, "scope") == "subscription(s)", symbol


def test_discoverys_read_is_assigned_in_every_searched_subscription_only_when_discovery_is_on() -> None:
    lines = set(_strip_comments(_read(GRANTS)).splitlines())
    assert _param_declaration(GRANTS, "discovery")[0] == "param discovery bool = true"
    assert _param_declaration(GRANTS, "discoverySubscriptionIds")[0] == "param discoverySubscriptionIds array = []"
    # Every target account's subscription and the extra ones; none with discovery=false.
    assert "var extraSubscriptionIds = [for s in discoverySubscriptionIds: toLower(s)]" in lines
    searched = "var searchedSubscriptionIds = discovery ? concat(accountSubscriptionIds, extraSubscriptionIds) : []"
    assert searched in lines
    head = "[for (s, i) in searchedSubscriptionIds: if (indexOf(searchedSubscriptionIds, s) == i) {"
    assert _head(GRANTS, "discoveryAccess") == head
    assert _blocks(GRANTS)["discoveryAccess"].target == "modules/discovery-access.bicep"
    # In the module, at its subscription (its target scope, no scope of its own): the read, always.
    assert "targetScope = 'subscription'" in _strip_comments(_read(DISCOVERY_ACCESS))
    read = {a.symbol: a for a in _role_assignments(DISCOVERY_ACCESS)}["discoveryReader"]
    assert _head(DISCOVERY_ACCESS, "discoveryReader") == "{"
    assert _role_id(read, {}) == "readerRoleId"
    assert not re.search(r"^\s*scope:", read.body, re.MULTILINE)


def test_enrol_widens_the_account_write_and_the_operation_status_read_only_under_enrol() -> None:
    declaration, allowed = _param_declaration(GRANTS, "unmanagedAccounts")
    assert declaration == "param unmanagedAccounts string = 'report'"
    assert allowed == [policy.value for policy in UnmanagedPolicy]
    lines = set(_strip_comments(_read(GRANTS)).splitlines())
    assert f"var enrol = discovery && unmanagedAccounts == '{UnmanagedPolicy.ENROL}'" in lines
    # The operation-status read follows the write: every searched subscription with enrol, else the accounts' own.
    assert "var operationStatusSubscriptionIds = enrol ? searchedSubscriptionIds : accountSubscriptionIds" in lines
    assert _head(GRANTS, "operationStatusAccess").startswith("[for (s, i) in operationStatusSubscriptionIds:")
    assert _value(_value(_blocks(GRANTS)["discoveryAccess"].body, "params"), "enrol") == "enrol"
    # In the module, everything but the read is under enrol: the account role, at the subscription.
    beyond_the_read = {a.symbol: a for a in _role_assignments(DISCOVERY_ACCESS) if a.symbol != "discoveryReader"}
    assert set(beyond_the_read) == {"unmanagedAccountUpdater"}
    for symbol, assignment in beyond_the_read.items():
        assert _head(DISCOVERY_ACCESS, symbol).startswith("if (enrol)"), symbol
        assert _role_id(assignment, {}) == "accountRoleId"
    outputs = dict(re.findall(r"^output (\w+) \w+ = (.+)$", _strip_comments(_read(DISCOVERY_ACCESS)), re.MULTILINE))
    assert outputs["accountRoleAssignmentId"] == "enrol ? unmanagedAccountUpdater.id : ''"


def test_key_and_account_roles_are_assigned_on_the_key_and_on_each_account() -> None:
    key_assignments = {a.symbol: a for a in _role_assignments(KEY_ACCESS)}
    assert _value(key_assignments["keyRotator"].body, "scope") == "key"
    assert _value(key_assignments["keyRotator"].body, "principalId") == "principalId"
    assert _value(key_assignments["accountKeyAccess"].body, "scope") == "key"
    assert _role_id(key_assignments["accountKeyAccess"], _vars(KEY_ACCESS)) == KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER
    (account_assignment,) = _role_assignments(ACCOUNT_ACCESS)
    assert _value(account_assignment.body, "scope") == "account"
    assert _value(_blocks(KEY_ACCESS)["accountUpdater"].body, "roleId") == "accountRoleId"


def test_no_role_is_assigned_wider_than_a_resource_but_the_operation_status_read_and_discovery() -> None:
    for path in INFRA.rglob("*.bicep"):
        for assignment in _role_assignments(path):
            assert _value(assignment.body, "principalType") == "'ServicePrincipal'"
            if path in {OPERATION_STATUS_ACCESS, DISCOVERY_ACCESS}:  # below, and the discovery tests above
                continue
            scope = _value(assignment.body, "scope")
            assert scope not in {"rg", "resourceGroup()", "subscription()"}, (path.name, assignment.symbol)
    # The one exception: the operation-status read, at the subscription (a module with that target scope and no
    # `scope:` of its own), holding only the custom operation-status role.
    (assignment,) = _role_assignments(OPERATION_STATUS_ACCESS)
    assert "targetScope = 'subscription'" in _strip_comments(_read(OPERATION_STATUS_ACCESS))
    assert not re.search(r"^\s*scope:", assignment.body, re.MULTILINE)
    assert _role_id(assignment, {}) == "roleId"


# ---------------------------------------------------------------------------------------------------------------------
# What azd manages, and what it must not


def _azd_deployment_files() -> list[Path]:
    """infra/main.bicep and every module it calls, transitively: what `azd up` deploys and `azd down` removes."""
    files, queue = [], [MAIN]
    while queue:
        path = queue.pop()
        files.append(path)
        queue += [(path.parent / b.target).resolve() for b in _blocks(path).values() if b.kind == "module"]
    return files


def test_azd_deploys_nothing_outside_the_apps_resource_group() -> None:
    blocks = _blocks(MAIN)
    assert "targetScope = 'subscription'" in _strip_comments(_read(MAIN))
    # At subscription scope, only the app's own resource group and modules inside it: no role definition, no
    # assignment, no resource in a resource group azd did not create.
    resources = {b.symbol: b.target for b in blocks.values() if b.kind == "resource"}
    assert resources == {"rg": "Microsoft.Resources/resourceGroups@2024-03-01"}
    assert _value(blocks["rg"].body, "name") == "'rg-${environmentName}'"
    for module in (b for b in blocks.values() if b.kind == "module"):
        assert _value(module.body, "scope") == "rg", module.symbol
    files = _azd_deployment_files()
    assert files[0] == MAIN
    assert {APP, NETWORK} <= set(files), files
    # Every module azd deploys is one of infra/modules/, never a grants module.
    assert all(f.parent == INFRA / "modules" for f in files[1:]), files
    for path in files[1:]:
        text = _strip_comments(_read(path))
        assert "targetScope" not in text, path.name  # a resource-group module: it deploys where its caller puts it
        for block in _blocks(path).values():
            scope = re.search(r"^\s*scope:\s*(.+)$", block.body, re.MULTILINE)
            # Only extension resources on its own resources (role assignments on its storage, for example).
            assert not scope or scope.group(1) in _blocks(path), (path.name, block.symbol, scope.group(1))
    for path in files:
        text = _strip_comments(_read(path))
        # Nothing addresses another resource group, subscription, management group or the tenant as a scope.
        assert not re.search(r"\bresourceGroup\(\s*[^)\s]", text), path.name
        assert not re.search(r"\bsubscription\(\s*[^)\s]", text), path.name
        assert not re.search(r"\bmanagementGroup\(|scope:\s*tenant\(\)", text), path.name
        assert "grants/" not in text, path.name


def test_the_grants_never_carry_the_azd_environment_tag() -> None:
    """azd finds an environment's resource groups by their azd-env-name tag: nothing the grants create may bear it."""
    for path in (INFRA / "grants").rglob("*.bicep"):
        assert "azd-env-name" not in _read(path), path.name


def test_every_grant_is_named_in_an_output_for_the_teardown() -> None:
    """The runbook removes exactly what the grants deployment's outputs name; so every resource it creates is named."""
    outputs = {
        KEY_ACCESS: {"keyRotator", "keyRetirer", "accountKeyAccess", "accountUpdater"},
        ACCOUNT_ACCESS: {"accountUpdater"},
        OPERATION_STATUS_ACCESS: {"operationStatusReader"},
        DISCOVERY_ACCESS: {"discoveryReader", "unmanagedAccountUpdater"},
        # The custom role definitions and the modules above.
        GRANTS: {
            "keyRotatorRole",
            "accountUpdaterRole",
            "operationStatusRole",
            "discoveryReaderRole",
            "keyRetirerRole",
            "keyAccess",
            "operationStatusAccess",
            "discoveryAccess",
            "keyEventsAccess",
        },
        # The system topic, its subscription, and (from the alerts work) its delivery alerts and diagnostic setting.
        KEY_EVENTS: {"systemTopic", "keyEvents", "deliveryAlert", "deliveryFailureLogs"},
    }
    for path, symbols in outputs.items():
        text = _strip_comments(_read(path))
        created = set(re.findall(r"^(?:resource|module)\s+(\w+)\s+'[^']+'\s+=", text, re.MULTILINE))  # not `existing`
        assert created == symbols, (path.name, created)
        output_lines = "\n".join(re.findall(r"^output .*(?:\n(?!output ).*)*", text, re.MULTILINE))
        for symbol in symbols:
            assert re.search(rf"\b{symbol}(\[i\])?\.(id|outputs)\b", output_lines), (path.name, symbol)
    grants_outputs = set(re.findall(r"^output (\w+) ", _strip_comments(_read(GRANTS)), re.MULTILINE))
    assert grants_outputs == {
        "roleMode",
        "keyRoleAssignments",
        "keyRetirerRoleAssignments",
        "accountRoleAssignments",
        "operationStatusRoleAssignmentIds",
        "discoveryRoleAssignmentIds",
        "unmanagedAccountRoleAssignmentIds",
        "eventSubscriptionIds",
        "createdSystemTopicIds",
        "customRoleDefinitionIds",
        "accountKeyAccessAssignments",
        "deliveryAlertIds",
        "deliveryDiagnosticSettingIds",
    }
    runbook = _read(RUNBOOK)
    read_by_the_runbook = set(re.findall(r"properties\.outputs\.(\w+)", runbook))
    assert read_by_the_runbook <= grants_outputs, read_by_the_runbook - grants_outputs
    # The teardown reads every output that names something to remove.
    assert grants_outputs - read_by_the_runbook == {"roleMode", "accountKeyAccessAssignments"}
    # The accounts' own access to their key stays: removing it would make their data unreadable.
    assert "accountKeyAccessAssignments" not in "\n".join(
        line for line in runbook.splitlines() if re.search(r"\baz .*\bdelete\b", line)
    )


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
    # The grants take the app's queue and container names as parameters whose defaults are app.bicep's names.
    params = _value(_blocks(GRANTS)["keyEventsAccess"].body, "params")
    assert _value(params, "deadLetterContainerName") == "deadLetterContainerName"
    assert _value(params, "keyEventsQueueName") == "keyEventsQueueName"
    grants_text = _strip_comments(_read(GRANTS))
    for name in ("deadLetterContainerName", "keyEventsQueueName"):
        assert f"param {name} string = '{_vars(APP)[name]}'" in grants_text, name


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
    assert _object_keys("{" + entry + "}") == config.TARGET_FIELDS  # every field of a target reaches the app
    assert "format('https://{0}{1}/keys/{2}'" in entry
    assert "environment().suffixes.keyvaultDns" in entry


# ---------------------------------------------------------------------------------------------------------------------
# Private networking (vnetEnabled, natGateway)


def _head(path: Path, symbol: str) -> str:
    """What follows the `=` of a resource or module declaration, e.g. `if (vnetEnabled) {` or `[for ...`."""
    match = re.search(rf"^(?:resource|module) {symbol} '[^']+' = (.*)$", _strip_comments(_read(path)), re.MULTILINE)
    assert match, f"{path.name} declares no {symbol}"
    return match.group(1)


def _param_declaration(path: Path, name: str) -> tuple[str, list[str] | None]:
    """A parameter's declaration line and its @allowed values (None without @allowed)."""
    text = _strip_comments(_read(path))
    match = re.search(rf"^param {name} .*$", text, re.MULTILINE)
    assert match, f"{path.name} has no param {name}"
    # The decorators are the lines between the previous declaration (or blank line) and this one.
    before = text[: match.start()]
    decorators = before[max(before.rfind("\nparam "), before.rfind("\n\n")) :]
    allowed = re.search(r"@allowed\(\s*(\[[^\]]*\])\s*\)", decorators)
    return match.group(0), _strings(allowed.group(1)) if allowed else None


def test_private_networking_is_an_option_passed_to_the_app() -> None:
    assert _param_declaration(MAIN, "vnetEnabled")[0] == "param vnetEnabled bool = false"
    assert _param_declaration(MAIN, "natGateway")[0] == "param natGateway bool = false"
    params = _value(_blocks(MAIN)["app"].body, "params")
    assert _value(params, "vnetEnabled") == "vnetEnabled"
    # A NAT gateway only exists on the app's subnet, so it needs the VNet.
    assert _value(params, "natGateway") == "vnetEnabled && natGateway"
    assert _head(APP, "network").startswith("if (vnetEnabled)")
    assert _blocks(APP)["network"].target == "network.bicep"
    parameters = json.loads(_read(INFRA / "main.parameters.json"))["parameters"]
    assert parameters["vnetEnabled"]["value"] == "${VNET_ENABLED=false}"
    assert parameters["natGateway"]["value"] == "${NAT_GATEWAY=false}"


def test_the_app_joins_a_subnet_delegated_to_flex_consumption() -> None:
    site = _blocks(APP)["site"]
    assert _value(site.body, "virtualNetworkSubnetId") == "vnetEnabled ? network.outputs.appSubnetId : null"
    # Flex Consumption routes all outbound traffic through the subnet; these site properties are deprecated there.
    for path in INFRA.rglob("*.bicep"):
        text = _strip_comments(_read(path))
        for deprecated in ("vnetRouteAllEnabled", "vnetContentShareEnabled", "WEBSITE_VNET_ROUTE_ALL"):
            assert deprecated not in text, (path.name, deprecated)
    network = _strip_comments(_read(NETWORK))
    subnets = re.findall(r"^\s*name: '([^']+)'\n\s*properties: \{\n\s*addressPrefix:", network, re.MULTILINE)
    assert subnets == ["app", "private-endpoints"]
    assert all("_" not in name for name in subnets)  # Flex Consumption refuses subnet names with an underscore
    assert "serviceName: 'Microsoft.App/environments'" in network
    assert "output appSubnetId string = vnet.properties.subnets[0].id" in network


def test_storage_is_reached_through_private_endpoints_and_closed_with_the_vnet() -> None:
    network = _blocks(NETWORK)
    services = _strings(re.search(r"^var storageServices = (\[[^\]]*\])", _strip_comments(_read(NETWORK)), re.M)[1])
    # Every storage service the app's settings point at has an endpoint and a zone.
    used = {name.split("__")[1].removesuffix("ServiceUri") for name in SETTINGS_FOR_STORAGE_CLIENTS}
    assert set(services) == used == {"blob", "queue", "table"}
    assert _head(NETWORK, "storageDnsZones").startswith("[for service in storageServices:")
    zone = _value(network["storageDnsZones"].body, "name")
    assert zone == "'privatelink.${service}.${environment().suffixes.storage}'"
    assert _value(network["storageDnsLinks"].body, "parent") == "storageDnsZones[i]"
    assert "id: vnet.id" in _value(network["storageDnsLinks"].body, "virtualNetwork")
    endpoint = network["storageEndpoints"].body
    assert _value(endpoint, "privateLinkServiceId") == "storageAccountId"
    assert _strings(_value(endpoint, "groupIds")) == [] and "service" in _value(endpoint, "groupIds")
    assert "vnet.properties.subnets[1].id" in _value(endpoint, "subnet")
    assert _value(network["storageEndpointDns"].body, "privateDnsZoneId") == "storageDnsZones[i].id"
    assert _value(_value(_blocks(APP)["network"].body, "params"), "storageAccountId") == "storage.id"
    # With the VNet the firewall denies by default; trusted Azure services (Event Grid's delivery and dead-letters)
    # still pass.
    acls = _value(_blocks(APP)["storage"].body, "networkAcls")
    assert "defaultAction: vnetEnabled ? 'Deny' : 'Allow'" in acls
    assert "bypass: 'AzureServices'" in acls


def test_the_nat_gateway_gives_the_app_one_static_outbound_address() -> None:
    network = _blocks(NETWORK)
    for symbol in ("natPublicIp", "nat"):
        assert _head(NETWORK, symbol).startswith("if (natGateway)"), symbol
    assert _value(network["natPublicIp"].body, "publicIPAllocationMethod") == "'Static'"
    assert "id: natPublicIp.id" in _value(network["nat"].body, "publicIpAddresses")
    assert re.search(r"natGateway: natGateway \? \{\s*id: nat\.id\s*\} : null", network["vnet"].body)
    outputs = dict(re.findall(r"^output (\w+) \w+ = (.+)$", _strip_comments(_read(MAIN)), re.MULTILINE))
    assert outputs["ROTATION_OUTBOUND_IP"] == "app.outputs.natPublicIpAddress"


def test_the_runbook_explains_private_networking_and_no_longer_allows_outbound_addresses() -> None:
    runbook = _read(RUNBOOK)
    assert "### Private networking and firewalled vaults" in runbook
    assert "privatelink.vaultcore.azure.net" in runbook
    assert "az network private-endpoint create" in runbook
    # Flex Consumption has no static outbound addresses without VNet integration and a NAT gateway: the runbook no
    # longer tells the vault owner to allow them, and says why.
    assert not re.search(r"(?i)allow[^.(]*\(for the accounts\) and the app's outbound\s+addresses", runbook)
    assert "no fixed outbound addresses" in runbook
    assert "ROTATION_OUTBOUND_IP" in runbook


# ---------------------------------------------------------------------------------------------------------------------
# Diagnostic settings


def _diagnostic_settings(path: Path) -> dict[str, Block]:
    """The diagnostic settings of `path`, by the symbol of the resource they are scoped to."""
    return {
        _value(b.body, "scope"): b
        for b in _blocks(path).values()
        if b.target.startswith("Microsoft.Insights/diagnosticSettings@")
    }


def test_the_app_and_its_storage_send_their_logs_and_metrics_to_log_analytics() -> None:
    settings = _diagnostic_settings(APP)
    assert {"site", "blobService", "queueService", "tableService"} <= set(settings)
    for scope in ("site", "blobService", "queueService", "tableService"):
        assert _value(settings[scope].body, "workspaceId") == "logAnalytics.id", scope
    site = settings["site"].body
    assert "categoryGroup: 'allLogs'" in _value(site, "logs")
    assert "category: 'AllMetrics'" in _value(site, "metrics")
    text = _strip_comments(_read(APP))
    logs = _balanced(text, text.index("[", re.search(r"^var storageLogs\s*=", text, re.M).end() - 1))
    metrics = _balanced(text, text.index("[", re.search(r"^var storageMetrics\s*=", text, re.M).end() - 1))
    assert set(re.findall(r"category: '(\w+)'", logs)) == {"StorageRead", "StorageWrite", "StorageDelete"}
    assert set(re.findall(r"category: '(\w+)'", metrics)) == {"Transaction"}
    for scope in ("blobService", "queueService", "tableService"):
        assert _value(settings[scope].body, "logs") == "storageLogs", scope
        assert _value(settings[scope].body, "metrics") == "storageMetrics", scope


# ---------------------------------------------------------------------------------------------------------------------
# Sovereign clouds

# Public-cloud host names whose sovereign counterparts differ (vault.azure.net is vault.usgovcloudapi.net in Azure
# Government and vault.azure.cn in Azure China, and so on): infra must derive them from environment().
PUBLIC_CLOUD_HOSTS = re.compile(
    r"(?i)\b(?:[\w-]+\.)*(?:azure\.net|azure\.com|windows\.net|azurewebsites\.net|microsoftonline\.com|azure-api\.net"
    r"|vaultcore\.azure\.net|applicationinsights\.azure\.com)\b"
)


def test_no_public_cloud_host_is_hard_coded_in_infra() -> None:
    for path in INFRA.rglob("*.bicep"):
        hosts = [m.group(0) for s in _strings(_strip_comments(_read(path))) for m in PUBLIC_CLOUD_HOSTS.finditer(s)]
        assert not hosts, (path.relative_to(INFRA).as_posix(), hosts)
    for path in INFRA.rglob("*.json"):
        document = json.loads(_read(path))
        document.pop("$schema", None)  # the schema's address is no endpoint the deployment calls
        hosts = PUBLIC_CLOUD_HOSTS.findall(json.dumps(document))
        assert not hosts, (path.relative_to(INFRA).as_posix(), hosts)
    # The key URLs, the storage zones and the sign-in issuer come from environment().
    assert "environment().suffixes.keyvaultDns" in _strip_comments(_read(MAIN))
    assert "environment().suffixes.storage" in _strip_comments(_read(NETWORK))
    assert "environment().authentication.loginEndpoint" in _strip_comments(_read(APP))


def test_the_app_learns_its_cloud_from_the_deployment() -> None:
    text = _strip_comments(_read(APP))
    assert re.search(rf"name: '{AZURE_CLOUD_SETTING}'\s*\n\s*value: environment\(\)\.name\s*\n", text)
    # Whatever the Python side accepts for the setting must cover every value environment().name can have.
    accepted = {value for value in vars(config).values() if isinstance(value, str) and value in AZURE_CLOUD_NAMES}
    if AZURE_CLOUD_SETTING in config.SETTING_NAMES:
        assert accepted == AZURE_CLOUD_NAMES or not accepted, accepted


# ---------------------------------------------------------------------------------------------------------------------
# Supported regions


def test_the_location_must_be_a_flex_consumption_region() -> None:
    declaration, allowed = _param_declaration(MAIN, "location")
    assert declaration == "param location string"
    assert allowed, "main.bicep's location has no @allowed list of Flex Consumption regions"
    assert allowed == sorted(set(allowed)) and all(re.fullmatch(r"[a-z0-9]+", r) for r in allowed), allowed
    # The one list: nowhere else in infra/ names regions.
    assert _read(MAIN).count("@allowed([\n  'australiaeast'") == 1
    # Every default and every example region is in it.
    location = json.loads(_read(INFRA / "main.parameters.json"))["parameters"]["location"]["value"]
    default = re.fullmatch(r"\$\{AZURE_LOCATION(?:=(\w+))?\}", location)
    assert default, location
    assert default.group(1) is None or default.group(1) in allowed
    for example in re.findall(r"AZURE_LOCATION[ =](\w+)", _read(RUNBOOK) + _read(ROOT / "README.md")):
        assert example in allowed, example
    # infra/README.md documents the same list, with its source.
    readme = _read(INFRA / "README.md")
    section = readme[readme.index("## Regions") :]
    section = section[: section.find("\n## ", 4)] if "\n## " in section[4:] else section
    assert set(re.findall(r"`([a-z0-9]+)`", section)) >= set(allowed)
    assert "list-flexconsumption-locations" in section


# ---------------------------------------------------------------------------------------------------------------------
# Entra ID mode of the HTTP API


def test_entra_mode_puts_app_service_authentication_in_front_of_the_api() -> None:
    declaration, allowed = _param_declaration(MAIN, "httpAuth")
    assert declaration == "param httpAuth string = 'keys'" and allowed == ["keys", "entra"]
    assert _param_declaration(MAIN, "entraClientId")[0] == "param entraClientId string = ''"
    params = _value(_blocks(MAIN)["app"].body, "params")
    assert _value(params, "httpAuth") == "httpAuth"
    assert _value(params, "entraClientId") == "entraClientId"
    # The setting is always set, so the app knows which mode it is in.
    text = _strip_comments(_read(APP))
    assert re.search(rf"name: '{HTTP_AUTH_SETTING}'\s*\n\s*value: httpAuth\s*\n", text)
    auth = _blocks(APP)["siteAuth"]
    assert auth.target.startswith("Microsoft.Web/sites/config@")
    assert _head(APP, "siteAuth").startswith("if (httpAuth == 'entra')")
    assert _value(auth.body, "parent") == "site"
    assert _value(auth.body, "name") == "'authsettingsV2'"
    # platform.enabled makes the platform enforce it (and set WEBSITE_AUTH_ENABLED, which the app requires).
    assert "enabled: true" in _value(auth.body, "platform")
    validation = _value(auth.body, "globalValidation")
    assert "requireAuthentication: true" in validation
    assert "unauthenticatedClientAction: 'Return401'" in validation
    provider = _value(_value(auth.body, "identityProviders"), "azureActiveDirectory")
    assert _value(provider, "clientId") == "entraClientId"
    assert _value(provider, "openIdIssuer") == "openIdIssuer"
    assert _strings(_value(provider, "allowedAudiences")) == ["api://${entraClientId}"]
    issuer = re.search(r"^var openIdIssuer = (.+)$", text, re.MULTILINE)
    assert issuer and issuer.group(1) == "'${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'"
    parameters = json.loads(_read(INFRA / "main.parameters.json"))["parameters"]
    assert parameters["httpAuth"]["value"] == "${ROTATION_HTTP_AUTH=keys}"


def test_the_runbook_registers_the_api_with_its_two_app_roles() -> None:
    runbook = _read(RUNBOOK)
    section = runbook[runbook.index("### Entra ID for the HTTP API") :]
    section = section[: section.index("\n## ")]
    assert set(re.findall(r'"value": "(Rotations\.\w+)"', section)) == ENTRA_APP_ROLES
    assert "az ad app create" in section and "WEBSITE_AUTH_ENABLED" in section
    assert "azd env set ROTATION_HTTP_AUTH entra" in section
    # The roles the code checks, once it names them, are the runbook's.
    code = "\n".join(_read(p) for p in [ROOT / "function_app.py", *(ROOT / "rotation").glob("*.py")])
    named = set(re.findall(r"[\"'](Rotations\.\w+)[\"']", code))
    assert not named or named == ENTRA_APP_ROLES, named


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
