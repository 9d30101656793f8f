// Entry point for `azd up`: the CMK rotation service in one resource group, plus the least-privilege role assignments
// and Key Vault event subscriptions it needs wherever the target keys and accounts live (other resource groups or
// subscriptions of the same tenant).
//
// What it grants, and nothing more (infra/README.md explains each choice):
//   the app's identity  - on each target KEY: a custom role (keys read, create, update) or Key Vault Crypto Officer;
//                       - on each target ACCOUNT: a custom role with accounts/read and accounts/write only;
//                       - on its own storage: Blob Data Owner, Queue Data Contributor, Table Data Contributor;
//                       - on its Application Insights: Monitoring Metrics Publisher (identity-based telemetry).
//   Event Grid's identity - send to the key-events queue, write to the dead-letter container.
// It must never put a secret in an app setting or an output, and never grant a role wider than one key or one account.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of the rotation app: one that offers the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('The keys to rotate: [{vaultId, keyName, location, accounts: [account resource ids], systemTopicName?, newVersions?}]. See infra/README.md.')
param targets array

@description('ROTATION_SCHEDULE: NCRONTAB (six fields, UTC) of the sweep.')
param rotationSchedule string = '0 0 3 * * *'

@description('ROTATION_KEY_LIFETIME: ISO 8601 duration, the expiry given to each created version.')
param keyLifetime string = 'P120D'

@description('ROTATION_RENEW_BEFORE: ISO 8601 duration, how long before expiry a version is replaced.')
param renewBefore string = 'P30D'

@description('ROTATION_CONCURRENCY: how many accounts one worker updates at once.')
@minValue(1)
param concurrency int = 8

@description('ROTATION_VERIFY_TIMEOUT: ISO 8601 duration, how long to wait for an account to report the new version.')
param verifyTimeout string = 'PT10M'

@description('ROTATION_FORCE_COOLDOWN: ISO 8601 duration, the least time between two forced rotations of one key over HTTP.')
param forceCooldown string = 'PT1H'

@description('How Event Grid delivers key events: AzureFunction (push to on_key_event) or StorageQueue (queue key-events).')
@allowed([
  'AzureFunction'
  'StorageQueue'
])
param keyEventDelivery string = 'AzureFunction'

@description('Create the key-event subscriptions. AzureFunction delivery needs the code deployed first: azure.yaml sets this after the first deploy.')
param subscribeKeyEvents bool = false

@description('Event Grid delivery attempts before dead-lettering (1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes Event Grid retries an event before dead-lettering it (1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('Role of the app on each key: Custom (keys read, create, update only) or CryptoOfficer (the built-in role).')
@allowed([
  'Custom'
  'CryptoOfficer'
])
param keyRole string = 'Custom'

@description('Also give each target account\'s system-assigned identity Key Vault Crypto Service Encryption User on its key.')
param grantAccountsKeyAccess bool = false

@description('Subscription ids that hold target accounts but no target vault; the custom roles must be assignable there.')
param additionalSubscriptionIds array = []

@description('Create an Event Grid custom topic for the outcome events (sets ROTATION_EVENTS_ENDPOINT).')
param outcomeEventsTopic bool = false

@description('Create a log alert on the rotation.failed event.')
param failureAlert bool = true

@description('E-mail address notified by the failure alert; empty for none.')
param alertEmail string = ''

@description('Highest number of instances the Flex Consumption plan may scale out to.')
param maximumInstanceCount int = 40

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = 'func-rotation-${resourceToken}'

// Key Vault Crypto Officer (built-in): every key operation except managing permissions.
var keyVaultCryptoOfficer = '14b46e9e-c2b7-41b4-b07b-48a6ebf60603'

var vaultIds = [for t in targets: toLower(t.vaultId)]
var vaultScopes = [for t in targets: format('/subscriptions/{0}', split(t.vaultId, '/')[2])]
var additionalScopes = [for id in additionalSubscriptionIds: format('/subscriptions/{0}', id)]
var assignableScopes = union([subscription().id], vaultScopes, additionalScopes)

// ROTATION_TARGETS in the app's own format (DESIGN section 4).
var rotationTargets = [for t in targets: {
  key: format('https://{0}{1}/keys/{2}', last(split(t.vaultId, '/')), environment().suffixes.keyvaultDns, t.keyName)
  accounts: t.accounts
  vault_location: t.location
  new_versions: contains(t, 'newVersions') ? t.newVersions : 'service'
}]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

// Narrower than Key Vault Crypto Officer: no delete, purge, backup, restore, import, crypto operations or rotation
// policy. Reading covers get and list versions; create/action is POST /keys/{name}/create; update/action is PATCH.
resource keyRotatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (keyRole == 'Custom') {
  name: guid(subscription().id, environmentName, 'cmk-rotation-key-rotator')
  properties: {
    roleName: 'CMK rotation key rotator (${environmentName}, ${resourceToken})'
    description: 'Read a Key Vault key, create new versions and update version attributes and tags. Nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.KeyVault/vaults/keys/read'
          'Microsoft.KeyVault/vaults/keys/create/action'
          'Microsoft.KeyVault/vaults/keys/update/action'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

// Cognitive Services Contributor (Microsoft.CognitiveServices/*) would also allow listing and regenerating the
// account's API keys, managing deployments and deleting the account. Repointing the CMK needs only read and write.
resource accountUpdaterRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'cmk-rotation-account-updater')
  properties: {
    roleName: 'CMK rotation account updater (${environmentName}, ${resourceToken})'
    description: 'Read an Azure OpenAI / AI services account and update its properties (the CMK key version). Nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.CognitiveServices/accounts/read'
          'Microsoft.CognitiveServices/accounts/write'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

module app 'modules/app.bicep' = {
  name: 'rotation-app'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    appName: appName
    rotationTargets: rotationTargets
    rotationSchedule: rotationSchedule
    keyLifetime: keyLifetime
    renewBefore: renewBefore
    concurrency: concurrency
    verifyTimeout: verifyTimeout
    forceCooldown: forceCooldown
    outcomeEventsTopic: outcomeEventsTopic
    failureAlert: failureAlert
    alertEmail: alertEmail
    maximumInstanceCount: maximumInstanceCount
  }
}

module keyAccess 'modules/key-access.bicep' = [for (t, i) in targets: {
  name: 'cmk-key-access-${i}-${resourceToken}'
  scope: resourceGroup(split(t.vaultId, '/')[2], split(t.vaultId, '/')[4])
  params: {
    vaultName: last(split(t.vaultId, '/'))
    keyName: t.keyName
    accounts: t.accounts
    principalId: app.outputs.principalId
    keyRoleId: keyRole == 'Custom' ? keyRotatorRole.name : keyVaultCryptoOfficer
    accountRoleId: accountUpdaterRole.name
    grantAccountsKeyAccess: grantAccountsKeyAccess
  }
}]

// One system topic and one subscription per vault (the first target of each vault), however many keys it holds.
module keyEvents 'modules/key-events.bicep' = [for (t, i) in targets: if (indexOf(vaultIds, toLower(t.vaultId)) == i) {
  name: 'cmk-key-events-${i}-${resourceToken}'
  scope: resourceGroup(split(t.vaultId, '/')[2], split(t.vaultId, '/')[4])
  params: {
    vaultId: t.vaultId
    location: t.location
    systemTopicName: contains(t, 'systemTopicName') ? t.systemTopicName : format('evgt-{0}', last(split(t.vaultId, '/')))
    subscriptionName: '${appName}-key-events'
    targets: targets
    tags: tags
    deliveryIdentityId: app.outputs.keyEventsIdentityId
    delivery: keyEventDelivery
    createSubscription: subscribeKeyEvents || keyEventDelivery == 'StorageQueue'
    functionAppId: app.outputs.appId
    storageAccountId: app.outputs.storageAccountId
    keyEventsQueueName: app.outputs.keyEventsQueueName
    deadLetterContainerName: app.outputs.deadLetterContainerName
    maxDeliveryAttempts: maxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
  }
}]

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.appName
output ROTATION_APP_NAME string = app.outputs.appName
output ROTATION_IDENTITY_PRINCIPAL_ID string = app.outputs.principalId
output ROTATION_IDENTITY_CLIENT_ID string = app.outputs.clientId
output ROTATION_HTTP_ENDPOINT string = 'https://${app.outputs.defaultHostName}/api'
output ROTATION_STORAGE_ACCOUNT string = app.outputs.storageAccountName
output KEY_EVENTS_DEADLETTER_CONTAINER string = app.outputs.deadLetterContainerName
output ROTATION_EVENTS_ENDPOINT string = app.outputs.outcomeEventsEndpoint
