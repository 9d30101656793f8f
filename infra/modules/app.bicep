// The rotation app and everything it owns in its own resource group: two user-assigned identities, the storage
// account (queues, lease blobs, ledger table, dead-letter container), monitoring, the Flex Consumption plan and
// Function App, and (optionally) the outcome-events topic. The alerts and the workbook are modules/monitoring.bicep.
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

@description('ROTATION_CONCURRENCY: how many accounts one worker updates at once (ARM\'s rate-limit budget sets the pace).')
param concurrency int

@description('ROTATION_VERIFY_TIMEOUT: ISO 8601 duration, how long to wait for an account to report the new version.')
param verifyTimeout string

@description('ROTATION_DISCOVERY: where the app looks for accounts on a target key: tenant, off, /subscriptions/<id>,/subscriptions/<id>, or one management group /providers/Microsoft.Management/managementGroups/<id>.')
param discovery string

@description('ROTATION_UNMANAGED: what happens to an account on a target key that ROTATION_TARGETS does not list: report (drift only) or enrol (rotated too).')
@allowed([
  'report'
  'enrol'
])
param unmanagedAccounts string

@description('ROTATION_RETIREMENT: which old key versions the sweep disables once unused for retireAfter: off, own (only versions this app created) or all.')
@allowed([
  'off'
  'own'
  'all'
])
param retirement string

@description('ROTATION_RETIRE_AFTER: ISO 8601 duration, how long no account may have used an old version before the sweep disables it.')
param retireAfter string

@description('ROTATION_FORCE_COOLDOWN: ISO 8601 duration, the least time between two forced rotations of one key over HTTP.')
param forceCooldown string

@description('Create an Event Grid custom topic for the outcome events (ROTATION_EVENTS_ENDPOINT).')
param outcomeEventsTopic bool

@description('Highest number of instances the Flex Consumption plan may scale out to.')
param maximumInstanceCount int

@description('Private networking: VNet integration of the app, storage reached only through private endpoints (modules/network.bicep).')
param vnetEnabled bool

@description('With vnetEnabled: address space of the app\'s virtual network (at least a /26).')
param vnetAddressPrefix string

@description('With vnetEnabled: the app subnet (a /27, delegated to Microsoft.App/environments) and the private-endpoint subnet.')
param vnetSubnetPrefixes object

@description('With vnetEnabled: a NAT gateway with one static public IP address for all outbound traffic of the app.')
param natGateway bool

@description('ROTATION_HTTP_AUTH: keys (function keys) or entra (App Service authentication with Microsoft Entra ID in front of the HTTP API).')
@allowed([
  'keys'
  'entra'
])
param httpAuth string

@description('With httpAuth entra: the client id of the API\'s app registration (docs/runbook.md, "Entra ID for the HTTP API").')
param entraClientId string

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
  // checkov:skip=CKV_AZURE_35: the firewall denies by default only with vnetEnabled (then the app reaches storage through its private endpoints); without VNet integration a default-deny firewall would lock the Functions host out of its own storage, and access is identity-only (shared keys off) instead
  // checkov:skip=CKV_AZURE_59: the public endpoint stays on even with vnetEnabled, behind a default-deny firewall, so that Event Grid (a trusted Azure service) can still deliver key events to the queue and write dead-letters; no anonymous or key-based access is possible
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
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
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
    // The Python worker configures azure-monitor-opentelemetry (requirements.txt) before it loads function_app.py, so
    // the rotation.* records keep their dimensions; host.json's telemetryMode puts the host's in the same format.
    name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY'
    value: 'true'
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
  {
    name: 'ROTATION_DISCOVERY'
    value: discovery
  }
  {
    name: 'ROTATION_UNMANAGED'
    value: unmanagedAccounts
  }
  {
    // own or all also need the grants' retirement=true: keys/update/action on each target key (infra/README.md).
    name: 'ROTATION_RETIREMENT'
    value: retirement
  }
  {
    name: 'ROTATION_RETIRE_AFTER'
    value: retireAfter
  }
  {
    // AzureCloud, AzureUSGovernment or AzureChinaCloud: the app derives its ARM endpoint, token scopes and authority.
    name: 'ROTATION_AZURE_CLOUD'
    value: environment().name
  }
  {
    // keys or entra; in entra mode the app refuses to serve unless App Service authentication (below) is on.
    name: 'ROTATION_HTTP_AUTH'
    value: httpAuth
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
    // Flex Consumption routes all outbound traffic through the integrated subnet; vnetRouteAllEnabled is not used there.
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : null
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

// Private networking (vnetEnabled): the VNet, the storage private endpoints and their DNS zones, optionally a NAT gateway.
module network 'network.bicep' = if (vnetEnabled) {
  name: 'rotation-network'
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: vnetSubnetPrefixes.app
    privateEndpointSubnetPrefix: vnetSubnetPrefixes.privateEndpoints
    storageAccountId: storage.id
    natGateway: natGateway
  }
}

// Entra ID mode (httpAuth entra): App Service authentication validates the caller's token before the host sees the
// request and answers 401 without one; the app then checks the app role (Rotations.Submit or Rotations.Read) from the
// X-MS-CLIENT-PRINCIPAL header it injects. The API's app registration is the deployer's (docs/runbook.md).
var openIdIssuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'

resource siteAuth 'Microsoft.Web/sites/config@2024-04-01' = if (httpAuth == 'entra') {
  // checkov:skip=CKV_AZURE_13: checkov reads this authsettingsV2 config as a whole site; it IS the site's authentication, and the site resource above is checked on its own
  // checkov:skip=CKV_AZURE_63: a site check (HTTP logging) applied to the authsettingsV2 config resource, which has no such property; the platform's HTTP logs go to Log Analytics through siteDiagnostics
  // checkov:skip=CKV_AZURE_65: a site check (detailed error messages) applied to the authsettingsV2 config resource, which has no such property
  // checkov:skip=CKV_AZURE_66: a site check (failed request tracing) applied to the authsettingsV2 config resource, which has no such property
  // checkov:skip=CKV_AZURE_80: a site check (.NET framework version) applied to the authsettingsV2 config resource; the app is Python on Flex Consumption
  // checkov:skip=CKV_AZURE_88: a site check (Azure Files storage) applied to the authsettingsV2 config resource; Flex Consumption deploys from a blob container
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: entraClientId
          openIdIssuer: openIdIssuer
        }
        validation: {
          allowedAudiences: [
            'api://${entraClientId}'
          ]
        }
      }
    }
  }
}

// Diagnostic settings: the platform's own logs and metrics of the app and its storage, to the Log Analytics workspace.
resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-${logAnalytics.name}'
  scope: site
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

var storageLogs = [
  {
    category: 'StorageRead'
    enabled: true
  }
  {
    category: 'StorageWrite'
    enabled: true
  }
  {
    category: 'StorageDelete'
    enabled: true
  }
]

var storageMetrics = [
  {
    category: 'Transaction'
    enabled: true
  }
]

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-${logAnalytics.name}'
  scope: blobService
  properties: {
    workspaceId: logAnalytics.id
    logs: storageLogs
    metrics: storageMetrics
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-${logAnalytics.name}'
  scope: queueService
  properties: {
    workspaceId: logAnalytics.id
    logs: storageLogs
    metrics: storageMetrics
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-${logAnalytics.name}'
  scope: tableService
  properties: {
    workspaceId: logAnalytics.id
    logs: storageLogs
    metrics: storageMetrics
  }
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

output appName string = site.name
output appInsightsId string = appInsights.id
output logAnalyticsId string = logAnalytics.id
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
output vnetId string = vnetEnabled ? network.outputs.vnetId : ''
output natPublicIpAddress string = vnetEnabled && natGateway ? network.outputs.natPublicIpAddress : ''
