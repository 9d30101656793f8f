// Key Vault -> Event Grid for one vault: the vault's system topic and one subscription that hands the key events of
// the target keys to the rotation app, with an explicit retry policy and dead-lettering. Part of the separate grants
// step (infra/grants/main.bicep), never of `azd up`: deployed into the vault's resource group (a system topic must live
// in its source's subscription and region). Its outputs name what it created, for the runbook's teardown.
//
// It must never subscribe to secret or certificate events, and never drop an undeliverable event silently: Event
// Grid's default is to drop it after 24 hours, so every subscription dead-letters to the app's storage account, and
// metric alerts on the topic page the app's action group when an event of this subscription is dead-lettered or
// dropped (a final failure), and show failed delivery attempts (which Event Grid retries) without paging. The topic's
// DeliveryFailures log goes to the app's Log Analytics workspace (table AegDeliveryFailureLogs).

@description('Region of the vault; the system topic must be in the same region.')
param location string

@description('Name of the vault\'s system topic. A vault may have only one: to reuse an existing topic, give its name.')
param systemTopicName string

@description('Name of the event subscription; unique per rotation app.')
param subscriptionName string

@description('Resource id of the vault.')
param vaultId string

@description('All rotation targets; the subscription delivers events only for the keys of this vault (at most 25).')
param targets array

@description('Tags for the system topic.')
param tags object

@description('Resource id of the user-assigned identity Event Grid uses to deliver and to dead-letter.')
param deliveryIdentityId string

@description('AzureFunction: push to the on_key_event trigger. StorageQueue: write to the key-events queue.')
@allowed([
  'AzureFunction'
  'StorageQueue'
])
param delivery string


@description('Resource id of the rotation Function App.')
param functionAppId string

@description('Resource id of the rotation app\'s storage account (queue destination and dead-letter container).')
param storageAccountId string

@description('Queue that receives the key events when delivery is StorageQueue.')
param keyEventsQueueName string

@description('Blob container that receives the events Event Grid could not deliver.')
param deadLetterContainerName string

@description('Delivery attempts before an event is dead-lettered (1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int

@description('Minutes an event is retried before it is dead-lettered (1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int

@description('Resource id of the app\'s action group the delivery alerts notify (azd output ROTATION_ACTION_GROUP_ID); empty: they notify no one.')
param actionGroupId string

@description('Resource id of the app\'s Log Analytics workspace for the topic\'s DeliveryFailures log (azd output ROTATION_LOG_ANALYTICS_ID); empty: no diagnostic setting.')
param logAnalyticsId string

@description('Create the delivery alerts.')
param deliveryAlerts bool

var targetsInVault = filter(targets, t => toLower(t.vaultId) == toLower(vaultId))
var keyNames = [for t in targetsInVault: t.keyName]

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${deliveryIdentityId}': {}
    }
  }
  properties: {
    source: vaultId
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

var deliveryIdentity = {
  type: 'UserAssigned'
  userAssignedIdentity: deliveryIdentityId
}

var functionDestination = {
  endpointType: 'AzureFunction'
  properties: {
    resourceId: '${functionAppId}/functions/on_key_event'
    maxEventsPerBatch: 1
    preferredBatchSizeInKilobytes: 64
  }
}

var queueDelivery = {
  identity: deliveryIdentity
  destination: {
    endpointType: 'StorageQueue'
    properties: {
      resourceId: storageAccountId
      queueName: keyEventsQueueName
      queueMessageTimeToLiveInSeconds: -1
    }
  }
}

resource keyEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: delivery == 'AzureFunction' ? functionDestination : null
    deliveryWithResourceIdentity: delivery == 'StorageQueue' ? queueDelivery : null
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.KeyNearExpiry'
        'Microsoft.KeyVault.KeyExpired'
        'Microsoft.KeyVault.KeyNewVersionCreated'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'subject'
          values: keyNames
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: deliveryIdentity
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

// Metrics of Microsoft.EventGrid/systemTopics (Azure Monitor "Supported metrics"): each counts events per
// EventSubscriptionName, so each alert watches this app's subscription only, on a topic that others may share.
// DeadLetteredCount and DroppedEventCount are final (retries are over): they page. DeliveryAttemptFailCount counts
// attempts Event Grid retries (a cold start, a deployment): severity 3 and no action, a dead-letter pages if they last.
var deliveryMetrics = [
  {
    name: 'dead-lettered'
    metric: 'DeadLetteredCount'
    severity: 2
    page: true
    description: 'Event Grid dead-lettered key events of this subscription to the app\'s key-events-deadletter container after its retries. See docs/runbook.md, section "Alerts".'
  }
  {
    name: 'dropped'
    metric: 'DroppedEventCount'
    severity: 2
    page: true
    description: 'Event Grid dropped key events of this subscription (not even dead-lettered). See docs/runbook.md, section "Alerts".'
  }
  {
    name: 'delivery-failed'
    metric: 'DeliveryAttemptFailCount'
    severity: 3
    page: false
    description: 'Event Grid failed to deliver key events of this subscription and retries them (no page: a dead-letter pages). See docs/runbook.md, section "Alerts".'
  }
]

resource deliveryAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = [for m in deliveryMetrics: if (deliveryAlerts) {
  name: '${systemTopicName}-${subscriptionName}-${m.name}'
  location: 'global'
  tags: tags
  properties: {
    description: m.description
    severity: m.severity
    enabled: true
    scopes: [
      systemTopic.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    autoMitigate: false
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: m.metric
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: m.metric
          dimensions: [
            {
              name: 'EventSubscriptionName'
              operator: 'Include'
              values: [
                subscriptionName
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: (m.page && !empty(actionGroupId)) ? [
      {
        actionGroupId: actionGroupId
      }
    ] : []
  }
}]

// Why a delivery failed (AegDeliveryFailureLogs), next to the app's telemetry. A diagnostic setting is an extension of
// the topic: deleting a topic the grants created deletes it; on a topic the grants reuse, the teardown deletes it.
resource deliveryFailureLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsId)) {
  name: subscriptionName
  scope: systemTopic
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        category: 'DeliveryFailures'
        enabled: true
      }
    ]
  }
}

output systemTopicId string = systemTopic.id
output eventSubscriptionId string = keyEvents.id
output deliveryAlertIds array = [for (m, i) in deliveryMetrics: deliveryAlerts ? deliveryAlert[i].id : '']
output diagnosticSettingId string = empty(logAnalyticsId) ? '' : deliveryFailureLogs.id
