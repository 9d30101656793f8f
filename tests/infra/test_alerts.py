"""The alerts and the workbook, checked offline against the telemetry the app really emits.

Every KQL query the deployment or the runbook carries (the log alerts in `infra/modules/monitoring.bicep`, the
workbook `infra/modules/workbook.json`, the runbook's ```kusto blocks) may name only events of `rotation.log.Event`,
metrics of `rotation.telemetry.MetricName`, and custom dimensions that `emit` (or the metric's attributes) really
carries: a renamed event fails here, not silently in production. Each alert condition of issue 11 exists and matches
its events; nothing that a retry fixes (`rotation.attempt_failed`, `rotation.account_failed`, any WARNING) pages; and
the grants put the Event Grid delivery alerts and diagnostic settings on every system topic they create.

The Bicep is read with pycep, the parser checkov uses (the Bicep CLI cannot be downloaded here), so what these tests
see is what checkov scans. They must never call Azure or need the network.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from rotation.log import Event
from rotation.telemetry import MetricName
from tests.infra.test_bicep_wiring import APP, GRANTS, INFRA, KEY_EVENTS, MAIN, ROOT, RUNBOOK, _read

MONITORING = INFRA / "modules" / "monitoring.bicep"
WORKBOOK = INFRA / "modules" / "workbook.json"
LOG_MODULE = ROOT / "rotation" / "log.py"
TELEMETRY_MODULE = ROOT / "rotation" / "telemetry.py"

# The fields every `emit` may carry (rotation/log.py): the event, and its keyword-only identifiers.
BASE_FIELDS = {"event", "key", "request_id", "version", "account", "reason"}
# emit's own keywords that are not fields of the record.
EMIT_OPTIONS = {"level", "exc_info", "on_event", "stacklevel"}
# The events that mean a retry is coming, or that one account's outcome is not the end: never a page.
NEVER_PAGE = {Event.ATTEMPT_FAILED, Event.ACCOUNT_FAILED}
# The alerts of issue 11 (item 3) and the events each one matches; the absence alert matches the event it misses.
ALERT_EVENTS = {
    "finalFailureAlert": {Event.FAILED},
    "serviceBrokenAlert": {Event.CONFIG_ERROR, Event.INTERNAL_ERROR},
    "sweepAlert": {Event.SWEEP_FAILED, Event.SWEEP_BLOCKED},
    "sweepMissingAlert": {Event.SWEEP_COMPLETED},
    "renewalOverdueAlert": {Event.RENEWAL_OVERDUE},
    "expiryNearAlert": {Event.EXPIRY_NEAR},
    "unmanagedExpiryAlert": {Event.UNMANAGED_EXPIRY_NEAR},
    "poisonAlert": {Event.POISON_WAITING},
}
ABSENCE_ALERTS = {"sweepMissingAlert"}
# scheduledQueryRules accepts these windowSize values only, in minutes (the API's own error message, quoted in
# Azure/azure-rest-api-specs#21258 and hashicorp/terraform-provider-azurerm#18886); 25 hours is not among them.
WINDOW_MINUTES = {5, 10, 15, 30, 45, 60, 120, 180, 240, 300, 360, 1440, 2880}
# The metrics of Microsoft.EventGrid/systemTopics that mean an event was not delivered (Azure Monitor, "Supported
# metrics - Microsoft.EventGrid/systemTopics"): dead-lettered and dropped are final, failed attempts are retried.
EVENT_GRID_FINAL = {"DeadLetteredCount", "DroppedEventCount"}
EVENT_GRID_RETRIED = {"DeliveryAttemptFailCount"}


def _parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def _resource(parsed: dict[str, Any], symbol: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the resource's body, its wrapper with `condition` and `loop_type`) for a plain, conditional or looped one."""
    wrapper = parsed["resources"][symbol]["config"]
    body = wrapper["config"] if "config" in wrapper and ("condition" in wrapper or "loop_type" in wrapper) else wrapper
    return body, wrapper


# ---------------------------------------------------------------------------------------------------------------------
# What the app emits


def _emit_calls() -> Iterator[tuple[str | None, set[str]]]:
    """(event member name, or None when the event is a variable; the record's field names) for every emit() call."""
    for path in [*sorted((ROOT / "rotation").rglob("*.py")), ROOT / "function_app.py"]:
        for node in ast.walk(ast.parse(_read(path))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name != "emit" or not node.args:
                continue
            first = node.args[0]
            member = (
                first.attr if isinstance(first, ast.Attribute) and getattr(first.value, "id", "") == "Event" else None
            )
            yield member, {kw.arg for kw in node.keywords if kw.arg is not None} - EMIT_OPTIONS


def _fields_by_event() -> tuple[dict[str, set[str]], set[str]]:
    """Field names per event value, and those of calls whose event is a variable (they may be any event's)."""
    per_event: dict[str, set[str]] = {}
    anywhere: set[str] = set()
    for member, fields in _emit_calls():
        if member is None:
            anywhere |= fields
        else:
            per_event.setdefault(Event[member].value, set()).update(fields)
    return per_event, anywhere


def _metric_attributes() -> dict[str, set[str]]:
    """Each metric's attributes, from rotation/telemetry.py's docstring table (`name  kind  {a, b}`)."""
    docstring = ast.get_docstring(ast.parse(_read(TELEMETRY_MODULE))) or ""
    table = {
        m.group(1): {a.strip() for a in m.group(2).split(",")}
        for m in re.finditer(r"^\s*(rotation\.\S+)\s+\w+\s+\{([^}]*)\}", docstring, re.MULTILINE)
    }
    assert set(table) == {m.value for m in MetricName}, set(table) ^ {m.value for m in MetricName}
    return table


def _event_levels() -> dict[str, str]:
    """Each event's level as rotation/log.py documents it: the word that opens the comment above its member."""
    levels: dict[str, str] = {}
    comment: list[str] = []
    for line in _read(LOG_MODULE).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
            continue
        member = re.match(r"([A-Z_]+) = \"(rotation\.[a-z_]+)\"", stripped)
        if member:
            # A section heading may come first; the member's own comment starts with its level.
            levels[member.group(2)] = next(m.group(1) for c in comment if (m := re.match(r"(INFO|WARNING|ERROR)\b", c)))
        comment = []
    assert set(levels) == {e.value for e in Event}, {e.value for e in Event} - set(levels)
    return levels


# ---------------------------------------------------------------------------------------------------------------------
# Every query, wherever it lives


def _alert_queries() -> dict[str, str]:
    parsed = _parse(MONITORING)
    queries = {}
    for symbol, resource in parsed["resources"].items():
        if resource["type"] == "Microsoft.Insights/scheduledQueryRules":
            body, _ = _resource(parsed, symbol)
            [condition] = body["properties"]["criteria"]["allOf"]
            queries[symbol] = condition["query"]
    return queries


def _workbook() -> dict[str, Any]:
    return json.loads(_read(WORKBOOK))


def _workbook_queries() -> dict[str, str]:
    return {item["name"]: item["content"]["query"] for item in _workbook()["items"] if item["type"] == 3}


def _runbook_queries() -> list[str]:
    return re.findall(r"```kusto\n(.*?)```", _read(RUNBOOK), re.DOTALL)


def _all_queries() -> list[tuple[str, str]]:
    found = [(f"monitoring.bicep {name}", q) for name, q in _alert_queries().items()]
    found += [(f"workbook.json {name}", q) for name, q in _workbook_queries().items()]
    found += [(f"runbook block {i}", q) for i, q in enumerate(_runbook_queries())]
    return found


def _table(query: str) -> str:
    """The table a query starts from (after its `let` statements and comments)."""
    for line in query.splitlines():
        line = line.split("//")[0].strip()
        if line and not line.startswith("let "):
            return line.split()[0]
    raise AssertionError(query)


def _names(query: str) -> set[str]:
    """Every "rotation...." string literal in the query (not the "rotation." prefix itself)."""
    return set(re.findall(r"\"(rotation\.[a-z_.]*[a-z_])\"", query))


def _dimensions(query: str) -> set[str]:
    return set(re.findall(r"customDimensions\.(\w+)", query)) | set(
        re.findall(r"customDimensions\[[\"'](\w+)[\"']\]", query)
    )


def test_every_query_is_found() -> None:
    assert set(_alert_queries()) == set(ALERT_EVENTS)
    assert len(_workbook_queries()) >= 6
    assert len(_runbook_queries()) >= 4
    # No other Bicep file carries a log query (the old single alert in app.bicep is gone).
    for path in INFRA.rglob("*.bicep"):
        if path != MONITORING:
            assert "query:" not in _read(path), path


def test_queries_name_only_events_and_metrics_the_app_emits() -> None:
    events, metrics = {e.value for e in Event}, {m.value for m in MetricName}
    for where, query in _all_queries():
        table = _table(query)
        assert table in {"traces", "customMetrics", "AegDeliveryFailureLogs"}, (where, table)
        names = _names(query)
        if table == "traces":
            assert names <= events, (where, names - events)
        elif table == "customMetrics":
            assert names <= metrics, (where, names - metrics)
            assert names, where
        else:
            assert not names, where


def test_queries_use_only_custom_dimensions_the_app_emits() -> None:
    per_event, anywhere = _fields_by_event()
    every_field = BASE_FIELDS | anywhere | set().union(*per_event.values())
    attributes = _metric_attributes()
    for where, query in _all_queries():
        used = _dimensions(query)
        if _table(query) == "traces":
            named = _names(query)
            # A query on given events may use their own fields; one on all events, any event's.
            allowed = (
                BASE_FIELDS | anywhere | set().union(*(per_event.get(e, set()) for e in named))
                if named
                else every_field
            )
            assert used <= allowed, (where, used - allowed)
        elif _table(query) == "customMetrics":
            allowed = set().union(*(attributes[m] for m in _names(query)))
            assert used <= allowed, (where, used - allowed)
        else:
            assert not used, where


# ---------------------------------------------------------------------------------------------------------------------
# The alerts


def test_each_alert_condition_exists_and_matches_its_events() -> None:
    queries = _alert_queries()
    for symbol, expected in ALERT_EVENTS.items():
        assert _names(queries[symbol]) == {e.value for e in expected}, symbol
        assert re.search(r"tostring\(customDimensions\.event\)\s*(==|in)", queries[symbol]), symbol


def test_nothing_a_retry_fixes_pages() -> None:
    levels = _event_levels()
    for where, query in _all_queries():
        if where.startswith("monitoring.bicep"):
            assert not _names(query) & {e.value for e in NEVER_PAGE}, where
    for symbol, query in _alert_queries().items():
        if symbol in ABSENCE_ALERTS:
            continue
        for name in _names(query):
            # Only ERROR records page: a WARNING is what the service logs for a failure a retry fixes.
            assert levels[name] == "ERROR", (symbol, name, levels[name])
    assert {levels[e.value] for e in NEVER_PAGE} == {"WARNING"}


def test_alerts_page_stateless_through_the_action_group() -> None:
    parsed = _parse(MONITORING)
    for symbol in ALERT_EVENTS:
        body, wrapper = _resource(parsed, symbol)
        assert wrapper["condition"] == "alerts", symbol
        props = body["properties"]
        assert body["kind"] == "LogAlert"
        assert props["scopes"] == ["appInsightsId"], symbol
        assert props["severity"] in (1, 2), symbol
        assert props["autoMitigate"] is False, symbol  # an occurrence a person closes, never "resolved" by quiet
        assert props["actions"]["actionGroups"] == ["actionGroup.id"], symbol
        assert 'section \\"Alerts\\"' in json.dumps(props["description"]) or "${runbook}" in props["description"]
        [condition] = props["criteria"]["allOf"]
        assert (condition["timeAggregation"], condition["operator"], condition["threshold"]) == (
            "Count",
            "GreaterThan",
            0,
        )
        window = _minutes(props["windowSize"])
        assert window in WINDOW_MINUTES, (symbol, props["windowSize"])
        assert 1 <= _minutes(props["evaluationFrequency"]) <= min(window, 1440), symbol
        # Each dimension the alert splits by is a column the query makes.
        for dimension in condition.get("dimensions", []):
            assert re.search(rf"\b{dimension['name']}\s*=", condition["query"]), (symbol, dimension["name"])
    group, wrapper = _resource(parsed, "actionGroup")
    assert wrapper["condition"] == "alerts"
    assert group["location"] == "global"
    assert len(group["properties"]["groupShortName"]) <= 12
    assert "alertEmail" in json.dumps(group["properties"]["emailReceivers"])  # no e-mail: an empty list


def test_the_missing_sweep_alert_fires_on_absence_over_25_hours() -> None:
    body, _ = _resource(_parse(MONITORING), "sweepMissingAlert")
    props = body["properties"]
    query = props["criteria"]["allOf"][0]["query"]
    # A log alert fires on rows: the query returns one row when no sweep completed since ago(25h), read from the last
    # two days (overrideQueryTimeRange's maximum), in an app that logged something before that (not a new one).
    assert props["overrideQueryTimeRange"] == "P2D"
    assert "ago(25h)" in query and "ago(2d)" in query
    assert re.search(r"countif\(.*\"rotation\.sweep_completed\"", query)
    assert re.search(r"\|\s*where completed == 0 and oldest < since", query)
    assert props["muteActionsDuration"] == "PT24H"


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", duration)
    assert match, duration
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return days * 1440 + hours * 60 + minutes


def test_the_runbook_lists_every_alert_and_no_longer_pages_on_every_failure() -> None:
    runbook = _read(RUNBOOK)
    section = runbook[runbook.index("### Alerts") :]
    section = section[: section.index("\n## ")]
    for events in ALERT_EVENTS.values():
        for event in events:
            assert f"`{event.value}`" in section, event
    for metric in EVENT_GRID_FINAL | EVENT_GRID_RETRIED:
        assert f"`{metric}`" in section, metric
    assert "fires on any `rotation.failed`" not in runbook


def test_the_app_module_no_longer_holds_the_alert() -> None:
    text = _read(APP)
    assert "scheduledQueryRules" not in text and "actionGroups" not in text
    assert not re.search(r"\bfailureAlert\b", text + _read(MAIN) + _read(INFRA / "main.parameters.json"))
    parsed = _parse(MAIN)
    params = parsed["modules"]["monitoring"]["config"]["params"]
    assert params["appInsightsId"] == "app.outputs.appInsightsId"
    assert params["alerts"] == "alerts" and params["alertEmail"] == "alertEmail"
    assert _parse(APP)["outputs"]["appInsightsId"]["value"] == "appInsights.id"
    mapped = json.loads(_read(INFRA / "main.parameters.json"))["parameters"]
    assert mapped["alerts"]["value"] == "${ROTATION_ALERTS=true}"


# ---------------------------------------------------------------------------------------------------------------------
# The workbook


def test_the_workbook_is_a_shared_workbook_on_app_insights() -> None:
    body, _ = _resource(_parse(MONITORING), "workbook")
    assert body["kind"] == "shared"
    props = body["properties"]
    assert props["category"] == "workbook"
    assert props["sourceId"] == "appInsightsId"
    assert props["version"] == "Notebook/1.0"
    assert json.dumps(props["serializedData"]).count("workbook.json") == 1
    workbook = _workbook()
    assert workbook["version"] == "Notebook/1.0"
    names = [item["name"] for item in workbook["items"]]
    assert len(names) == len(set(names))
    for item in workbook["items"]:
        assert item["type"] in (1, 3), item["name"]
        if item["type"] == 3:
            content = item["content"]
            assert content["version"] == "KqlItem/1.0"
            assert content["queryType"] == 0  # Logs
            assert content["resourceType"] == "microsoft.insights/components"


def test_the_workbook_shows_per_key_state_outcomes_accounts_versions_and_paging_events() -> None:
    queries = _workbook_queries()
    shown = {name for q in queries.values() for name in _names(q)}
    assert {MetricName.DAYS_UNTIL_RENEWAL, MetricName.DAYS_UNTIL_EXPIRY, MetricName.ACCOUNT_UPDATES} <= shown
    assert {Event.COMPLETED, Event.FAILED, Event.ATTEMPT_FAILED, Event.VERSION_CREATED} <= shown
    # The "events that page" table shows exactly the events the alerts fire on.
    paging = {e.value for symbol, events in ALERT_EVENTS.items() if symbol not in ABSENCE_ALERTS for e in events}
    assert any(_names(q) == paging for q in queries.values()), paging
    for query in queries.values():
        if _table(query) == "traces" or MetricName.ACCOUNT_UPDATES in _names(query):
            assert "customDimensions.key" in query


# ---------------------------------------------------------------------------------------------------------------------
# Event Grid, in the grants


def test_every_system_topic_gets_delivery_alerts_and_a_diagnostic_setting() -> None:
    parsed = _parse(KEY_EVENTS)
    metrics = parsed["variables"]["deliveryMetrics"]["value"]
    assert {m["metric"] for m in metrics} == EVENT_GRID_FINAL | EVENT_GRID_RETRIED
    for m in metrics:
        final = m["metric"] in EVENT_GRID_FINAL
        assert m["page"] is final and (m["severity"] in (1, 2)) is final, m
    alert, wrapper = _resource(parsed, "deliveryAlert")
    assert wrapper["loop_type"]["detail"]["array_name"] == "deliveryMetrics"
    assert wrapper["condition"] == "deliveryAlerts"
    assert alert["location"] == "global"
    props = alert["properties"]
    assert props["scopes"] == ["systemTopic.id"]
    [criterion] = props["criteria"]["allOf"]
    assert criterion["metricNamespace"] == "Microsoft.EventGrid/systemTopics"
    assert criterion["metricName"] == "m.metric"
    assert (criterion["operator"], criterion["threshold"], criterion["timeAggregation"]) == ("GreaterThan", 0, "Total")
    # Only this app's subscription, on a topic others may share.
    assert criterion["dimensions"] == [
        {"name": "EventSubscriptionName", "operator": "Include", "values": ["subscriptionName"]}
    ]
    actions = json.dumps(props["actions"])
    assert '"m.page"' in actions and '"actionGroupId": "actionGroupId"' in actions
    logs, _ = _resource(parsed, "deliveryFailureLogs")
    assert logs["scope"] == "systemTopic"
    assert logs["properties"]["workspaceId"] == "logAnalyticsId"
    assert logs["properties"]["logs"] == [{"category": "DeliveryFailures", "enabled": True}]
    # The subscription still dead-letters to the app's container (what DeadLetteredCount counts).
    subscription, _ = _resource(parsed, "keyEvents")
    dead_letter = subscription["properties"]["deadLetterWithResourceIdentity"]["deadLetterDestination"]
    assert dead_letter["properties"]["blobContainerName"] == "deadLetterContainerName"
    outputs = parsed["outputs"]
    assert "deliveryAlert[i].id" in json.dumps(outputs["deliveryAlertIds"])
    assert "deliveryFailureLogs.id" in json.dumps(outputs["diagnosticSettingId"])


def test_the_grants_wire_the_apps_action_group_and_workspace_to_every_topic() -> None:
    grants = _parse(GRANTS)
    call = grants["modules"]["keyEventsAccess"]["config"]
    assert call["loop_type"]["detail"]["array_name"] == "targets"  # one module, so one topic, per vault
    params = call["config"]["params"]
    assert params["actionGroupId"] == "actionGroupId"
    assert params["logAnalyticsId"] == "logAnalyticsId"
    assert params["deliveryAlerts"] == "deliveryAlerts"
    assert "keyEventsAccess[i].outputs.deliveryAlertIds" in json.dumps(grants["outputs"]["deliveryAlertIds"])
    assert "keyEventsAccess[i].outputs.diagnosticSettingId" in json.dumps(
        grants["outputs"]["deliveryDiagnosticSettingIds"]
    )
    # The values come from the azd environment: main.bicep outputs them, the runbook's grants commands pass them.
    outputs = _parse(MAIN)["outputs"]
    assert outputs["ROTATION_ACTION_GROUP_ID"]["value"] == "monitoring.outputs.actionGroupId"
    assert outputs["ROTATION_LOG_ANALYTICS_ID"]["value"] == "app.outputs.logAnalyticsId"
    assert _parse(APP)["outputs"]["logAnalyticsId"]["value"] == "logAnalytics.id"
    runbook = _read(RUNBOOK)
    commands = [
        line
        for block in re.findall(r"```sh\n(.*?)```", runbook, re.DOTALL)
        for line in re.sub(r"\\\n\s*", " ", block).splitlines()
        if "az deployment sub" in line and "infra/grants/" in line
    ]
    assert len(commands) >= 2
    for command in commands:
        assert 'actionGroupId="$(azd env get-value ROTATION_ACTION_GROUP_ID)"' in command
        assert 'logAnalyticsId="$(azd env get-value ROTATION_LOG_ANALYTICS_ID)"' in command
    # The teardown removes what the grants created next to the topics.
    assert "properties.outputs.deliveryAlertIds" in runbook
    assert "properties.outputs.deliveryDiagnosticSettingIds" in runbook


@pytest.mark.parametrize("path", [MONITORING, KEY_EVENTS, GRANTS, MAIN, APP], ids=lambda p: p.name)
def test_checkov_parser_reads_the_monitoring_files(path: Path) -> None:
    """checkov scans only what pycep parses: every resource of these files must come out of it."""
    parsed = _parse(path)
    declared = set(re.findall(r"^resource\s+(\w+)\s", _read(path), re.MULTILINE))
    assert declared <= set(parsed.get("resources", {})), declared - set(parsed.get("resources", {}))
