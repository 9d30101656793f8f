// What tells a person that the rotation service needs them: one action group, the log alerts on the app's own
// telemetry, and the workbook. Deployed by `azd up` into rg-<env>, next to the Application Insights component whose
// `traces` and `customMetrics` it queries. The Event Grid delivery alerts live with the system topics, in the grants
// (infra/grants/modules/key-events.bicep), and notify the action group created here (output actionGroupId).
//
// Page only when a person must act (docs/runbook.md, section "Alerts", says why each fires and what to do first):
//   severity 1  rotation.expiry_near; rotation.unmanaged_expiry_near; rotation.config_error or rotation.internal_error (no retry fixes them);
//   severity 2  rotation.failed (final: no retry can fix it, or the poison handler gave up); rotation.sweep_failed or
//               rotation.sweep_blocked; no rotation.sweep_completed for 25 hours; rotation.renewal_overdue;
//               rotation.poison_waiting; Event Grid dead-lettered or dropped key events (in the grants).
// It must never alert on rotation.attempt_failed (the queue delivers the request again) or rotation.account_failed
// (the reconcile's end decides), nor on anything else a retry fixes: tests/infra/test_alerts.py checks every query.
//
// The event names and custom dimensions are the app's (rotation/log.py `Event`, rotation/telemetry.py `MetricName`):
// with OpenTelemetry each rotation.* record reaches `traces` with customDimensions.event, key, reason, request_id, ...
// The alerts are stateless (autoMitigate false): each one is an occurrence that a person closes, never "resolved" by a
// quiet window. checkov's Bicep parser reads multi-line strings, so each query is written as it runs.

@description('Region of the alert rules and the workbook (the app\'s).')
param location string

@description('Tags for every resource.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('Name of the Function App, shown in the alerts\' and the workbook\'s names.')
param appName string

@description('Resource id of the app\'s Application Insights component: the alerts\' scope and the workbook\'s source.')
param appInsightsId string

@description('Create the action group and the alert rules.')
param alerts bool

@description('E-mail address the action group notifies; empty for none (the alerts still fire in Azure Monitor).')
param alertEmail string

var runbook = 'docs/runbook.md, section "Alerts"'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (alerts) {
  name: 'ag-rotation-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'cmkrotation'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'on-call'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// a. A final failure: rotation.failed is logged only when no retry can fix the failure, or when the poison handler
// gave up on a request after its last delivery. One alert per key and reason.
resource finalFailureAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerts) {
  name: 'alert-rotation-failed-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation failed (${appName})'
    description: 'A rotation ended in rotation.failed: no retry can fix it, or the poison handler gave up after the last delivery. See ${runbook}.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: '''
traces
| where tostring(customDimensions.event) == "rotation.failed"
| extend key = tostring(customDimensions.key), reason = tostring(customDimensions.reason), request_id = tostring(customDimensions.request_id)
| project timestamp, key, reason, request_id, message
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'key'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'reason'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// The service is broken: a setting it cannot run with, or a bug. No retry fixes either; every trigger keeps failing.
resource serviceBrokenAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerts) {
  name: 'alert-rotation-broken-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation service broken: bad setting or bug (${appName})'
    description: 'The app logged rotation.config_error (a setting it cannot run with) or rotation.internal_error (a bug, with its traceback). See ${runbook}.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    autoMitigate: false
    // Every trigger fails the same way until someone fixes it: one notification an hour is enough.
    muteActionsDuration: 'PT1H'
    criteria: {
      allOf: [
        {
          query: '''
traces
| where tostring(customDimensions.event) in ("rotation.config_error", "rotation.internal_error")
| extend event = tostring(customDimensions.event), reason = tostring(customDimensions.reason)
| project timestamp, event, reason, message
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'event'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// b. The sweep could not check a target, or found a key that cannot be rotated until someone fixes a finding. The
// sweep logs them once per run and key, so a problem that stays pages once a day.
resource sweepAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerts) {
  name: 'alert-rotation-sweep-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation sweep failed or found a blocked key (${appName})'
    description: 'The sweep logged rotation.sweep_failed (a target could not be checked) or rotation.sweep_blocked (a key cannot be rotated until a finding is fixed). See ${runbook}.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: '''
traces
| where tostring(customDimensions.event) in ("rotation.sweep_failed", "rotation.sweep_blocked")
| extend event = tostring(customDimensions.event), key = tostring(customDimensions.key), reason = tostring(customDimensions.reason)
| project timestamp, event, key, reason, message
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'event'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'key'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// c. No completed sweep for 25 hours (the sweep runs daily). A log alert fires on rows, so the query returns one row
// when there is no rotation.sweep_completed record. 25 hours is no allowed windowSize (5, 10, 15, 30, 45, 60, 120,
// 180, 240, 300, 360, 1440 or 2880 minutes), so the rule reads the last 2 days (overrideQueryTimeRange, at most P2D)
// and the query filters ago(25h) itself. It stays quiet for an app younger than 25 hours: it fires only if the app
// already logged something more than 25 hours ago. It fires hourly while true; the actions are muted for a day.
resource sweepMissingAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerts) {
  name: 'alert-rotation-no-sweep-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation: no completed sweep in 25 hours (${appName})'
    description: 'No rotation.sweep_completed record in the last 25 hours: the timer sweep, the backstop of every rotation, has stopped (or the app\'s telemetry lost its dimensions). See ${runbook}.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: false
    muteActionsDuration: 'PT24H'
    criteria: {
      allOf: [
        {
          query: '''
let since = ago(25h);
traces
| where timestamp > ago(2d)
| summarize completed = countif(tostring(customDimensions.event) == "rotation.sweep_completed" and timestamp > since), oldest = min(timestamp)
| where completed == 0 and oldest < since
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// d. A key whose current version became due more than a day ago and is still current (the sweep logs it daily).
resource renewalOverdueAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerts) {
  name: 'alert-rotation-renewal-overdue-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation: key renewal overdue (${appName})'
    description: 'The sweep logged rotation.renewal_overdue: a key\'s current version has been due for renewal for more than a day and is still current. See ${runbook}.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: '''
traces
| where tostring(customDimensions.event) == "rotation.renewal_overdue"
| extend key = tostring(customDimensions.key), days = tostring(customDimensions.days)
| project timestamp, key, days, message
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'key'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// d. A key whose current version expires within 7 days: once it expires, the accounts can wrap no new data.
resource expiryNearAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerts) {
  name: 'alert-rotation-expiry-near-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation: key expires within 7 days (${appName})'
    description: 'The sweep logged rotation.expiry_near: a key\'s current version expires within 7 days and has not been replaced. See ${runbook}.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: '''
traces
| where tostring(customDimensions.event) == "rotation.expiry_near"
| extend key = tostring(customDimensions.key), days = tostring(customDimensions.days)
| project timestamp, key, days, message
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'key'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// d2. An account on a target key that ROTATION_TARGETS does not list (so the service never repoints it) whose version
// expires within 7 days: once it expires, that account loses access to its data.
resource unmanagedExpiryAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerts) {
  name: 'alert-rotation-unmanaged-expiry-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation: an unmanaged account\'s key version expires within 7 days (${appName})'
    description: 'The sweep logged rotation.unmanaged_expiry_near: an account on a target key that ROTATION_TARGETS does not list is on a version that expires within 7 days. See ${runbook}.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: '''
traces
| where tostring(customDimensions.event) == "rotation.unmanaged_expiry_near"
| extend key = tostring(customDimensions.key), account = tostring(customDimensions.account), days = tostring(customDimensions.days)
| project timestamp, key, account, days, message
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'account'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// e. Messages waiting in a poison queue for more than 5 minutes: events or requests that no delivery could handle.
resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (alerts) {
  name: 'alert-rotation-poison-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation: messages waiting in a poison queue (${appName})'
    description: 'The sweep logged rotation.poison_waiting: a poison queue (key-events-poison, rotation-requests-poison) has held messages for more than 5 minutes. See ${runbook}.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: '''
traces
| where tostring(customDimensions.event) == "rotation.poison_waiting"
| extend queue = tostring(customDimensions.queue), messages = tostring(customDimensions.messages)
| project timestamp, queue, messages, message
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'queue'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// Per key: days until renewal and expiry, last outcome, accounts updated, versions created, alert-worthy events.
// The definition is workbook.json (Azure Workbooks' Notebook/1.0 format), readable and checked by tests/infra.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appName, 'cmk-rotation-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'CMK rotation (${appName})'
    category: 'workbook'
    sourceId: appInsightsId
    version: 'Notebook/1.0'
    serializedData: loadTextContent('workbook.json')
  }
}

output actionGroupId string = alerts ? actionGroup.id : ''
output workbookId string = workbook.id
