// The rotation app and everything it owns in its own resource group: two user-assigned identities, the storage
// account (queues, lease blobs, ledger table, dead-letter container), monitoring, the Flex Consumption plan and
// Function App, and (optionally) the outcome-events topic and the failure alert.
//
// It must never put a secret in an app setting: storage, Application Insights and Event Grid are all reached by
// managed identity, and shared-key access to the storage account is off.

@description('Region of the app and its storage.')
param location string

@description('Tags for every resource; the Function App also gets azd-service-name.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('Name of the Function App; also ROTATION_APP_NAME and the provenance tag on created key versions.')
param appName string

@description('ROTATION_TARGETS: the keys and the accounts that use them, in the app\'s own format.')
param rotationTargets array

@description('ROTATION_SCHEDULE: NCRONTAB (six fields, UTC) of the sweep.')
param rotationSchedule string

@description('ROTATION_KEY_LIFETIME: ISO 8601 duration, the expiry given to each created version.')
param keyLifetime string

@description('ROTATION_RENEW_BEFORE: ISO 8601 duration, how long before expiry a version is replaced.')
param renewBefore string

@description('ROTATION_CONCURRENCY: how many accounts one worker updates at once.')
param concurrency int

@description('ROTATION_VERIFY_TIMEOUT: ISO 8601 duration, how long to wait for an account to report the new version.')
param verifyTimeout string

@description('ROTATION_FORCE_COOLDOWN: ISO 8601 duration, the least time between two forced rotations of one key over HTTP.')
param forceCooldown string

@description('Create an Event Grid custom topic for the outcome events (ROTATION_EVENTS_ENDPOINT).')
param outcomeEventsTopic bool

@description('Create a log alert on the rotation.failed event.')
param failureAlert bool

@description('E-mail address for the failure alert; empty for no notification (the alert still fires in the portal).')
param alertEmail string

@description('Highest number of instances the Flex Consumption plan may scale out to.')
param maximumInstanceCount int

var deploymentContainerName = 'app-package'
var locksContainerName = 'rotation-locks'
var deadLetterContainerName = 'key-events-deadletter'
var requestsQueueName = 'rotation-requests'
var poisonQueueName = 'rotation-requests-poison'
var keyEventsQueueName = 'key-events'
var ledgerTableName = 'rotationledger'

// Built-in role definition ids (Learn: "Azure built-in roles").
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7'

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-rotation-${resourceToken}'
  location: location
  tags: tags
}

// Event Grid's own identity for delivery to the queue and for dead-lettering; it holds no rights on keys or accounts.
resource keyEventsIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-keyevents-${resourceToken}'
  location: location
  tags: tags
}

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    retentionInDays: 30
    sku: {
      name: 'PerGB2018'
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the app has no VNet integration, so a default-deny firewall would lock the Functions host out of its own storage; access is identity-only (shared keys off) instead
  // checkov:skip=CKV_AZURE_59: public network access stays on for the same reason as CKV_AZURE_35; no anonymous or key-based access is possible
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource locksContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: locksContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource requestsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: requestsQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: poisonQueueName
}

resource keyEventsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: keyEventsQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

resource outcomeTopic 'Microsoft.EventGrid/topics@2025-02-15' = if (outcomeEventsTopic) {
  name: 'evgt-outcomes-${resourceToken}'
  location: location
  tags: tags
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// Every setting the code reads (DESIGN section 4). Flex Consumption takes the runtime from functionAppConfig, so
// FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION must not be set here. Nothing here is a secret.
var baseSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: appIdentity.properties.clientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storage.properties.primaryEndpoints.table
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: appIdentity.properties.clientId
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${appIdentity.properties.clientId};Authorization=AAD'
  }
  {
    name: 'ROTATION_APP_NAME'
    value: appName
  }
  {
    name: 'ROTATION_TARGETS'
    value: string(rotationTargets)
  }
  {
    name: 'ROTATION_SCHEDULE'
    value: rotationSchedule
  }
  {
    name: 'ROTATION_KEY_LIFETIME'
    value: keyLifetime
  }
  {
    name: 'ROTATION_RENEW_BEFORE'
    value: renewBefore
  }
  {
    name: 'ROTATION_CONCURRENCY'
    value: string(concurrency)
  }
  {
    name: 'ROTATION_VERIFY_TIMEOUT'
    value: verifyTimeout
  }
  {
    name: 'ROTATION_FORCE_COOLDOWN'
    value: forceCooldown
  }
]

// Set only when the topic exists: an unset ROTATION_EVENTS_ENDPOINT means "no outcome events".
var outcomeSettings = [
  {
    name: 'ROTATION_EVENTS_ENDPOINT'
    value: outcomeEventsTopic ? outcomeTopic.properties.endpoint : ''
  }
]

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: client certificates would break Event Grid's webhook delivery to the Event Grid trigger
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'rotation' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${appIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(baseSettings, outcomeEventsTopic ? outcomeSettings : [])
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: appIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appTelemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appIdentity.id, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appOutcomeSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (outcomeEventsTopic) {
  name: guid(outcomeTopic.id, appIdentity.id, eventGridDataSender)
  scope: outcomeTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource keyEventsDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, keyEventsIdentity.id, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: keyEventsIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource keyEventsQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyEventsQueue.id, keyEventsIdentity.id, storageQueueDataMessageSender)
  scope: keyEventsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: keyEventsIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource alertRecipients 'Microsoft.Insights/actionGroups@2023-01-01' = if (failureAlert && !empty(alertEmail)) {
  name: 'ag-rotation-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'cmkrotation'
    enabled: true
    emailReceivers: [
      {
        name: 'on-call'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Fires when the app logs the structured event rotation.failed (the worker or the poison handler gave up on a request).
resource failureAlertRule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (failureAlert) {
  name: 'alert-rotation-failed-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'CMK rotation failed (${appName})'
    description: 'A rotation request ended in rotation.failed. See docs/runbook.md, section "Failure reasons".'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: 'traces | where message startswith "rotation.failed" or tostring(customDimensions.event) == "rotation.failed"'
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
      actionGroups: empty(alertEmail) ? [] : [alertRecipients.id]
    }
  }
}

output appName string = site.name
output appId string = site.id
output defaultHostName string = site.properties.defaultHostName
output principalId string = appIdentity.properties.principalId
output clientId string = appIdentity.properties.clientId
output keyEventsIdentityId string = keyEventsIdentity.id
output storageAccountId string = storage.id
output storageAccountName string = storage.name
output deadLetterContainerName string = deadLetterContainer.name
output keyEventsQueueName string = keyEventsQueue.name
output outcomeEventsEndpoint string = outcomeEventsTopic ? outcomeTopic.properties.endpoint : ''
