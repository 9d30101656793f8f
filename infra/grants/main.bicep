// The grants: everything the rotation app needs OUTSIDE its own resource group, as one explicit deployment that azd
// never runs. Apply it after `azd up` (the Event Grid subscription to the on_key_event function can only be created once
// the code is deployed) with `az deployment sub create` (docs/runbook.md, section 1), and remove it with the commands
// in docs/runbook.md, section 7, which delete exactly what its outputs name, never a resource group.
//
// What it creates, and where:
//   subscription of this deployment - roleMode Custom only: the custom role definitions below, three, a fourth with
//                                      discovery and a fifth with retirement or breakGlass (tenant objects, assignable
//                                      in every target subscription and every subscription discovery searches; not in
//                                      any resource group);
//   each vault's resource group     - the app's role on each target KEY (and, roleMode Custom with retirement or
//                                      breakGlass, the key retirer role there too); optionally each account's Crypto
//                                      Service Encryption User on its key; the vault's Event Grid system topic and one
//                                      event subscription for the target keys, with the metric alerts on its
//                                      dead-lettered, dropped and failed deliveries and a diagnostic setting for its
//                                      DeliveryFailures log (to the app's Log Analytics workspace);
//   each account's resource group   - the app's role on each target ACCOUNT;
//   each account's subscription     - roleMode Custom only: the operation-status read, at subscription scope;
//   each subscription discovery     - unless discovery=false: discovery's read, at subscription scope; with
//   searches (every target account's  unmanagedAccounts=enrol also the account role there (a write on every account
//   subscription, and each one of     of the subscription, so that the app may update the ones it finds) and, in
//   discoverySubscriptionIds)          roleMode Custom, the operation-status read.
//
// Roles per mode (infra/README.md explains each):
//   Custom  - key: keys/read, keys/create/action (exactly what rotation/keyvault.py calls to rotate; never
//             keys/update/action, which would let a stolen identity disable or expire the version every account
//             uses); with retirement=true or breakGlass=true a separate key retirer role on each key:
//             keys/update/action only, the adapter's disable_version (retirement: ROTATION_RETIREMENT own or all;
//             break-glass: disabling a compromised version once no account is left on it);
//             account: accounts/read, accounts/write; subscription: locations/operationresults/read;
//             discovery (subscription): accounts/read, Microsoft.ResourceGraph/resources/read.
//   BuiltIn - key: Key Vault Crypto Officer (which already holds keys/update/action: retirement and breakGlass add
//             nothing); account: Cognitive Services Contributor; discovery (subscription): Reader (which also covers
//             the operation-status read there); enrol (subscription): Cognitive Services Contributor.
//
// Why the role definitions are here and not in infra/main.bicep: creating one needs roleDefinitions/write on every
// assignable scope (Owner or User Access Administrator on each target subscription), the same people and rights as the
// assignments; a definition cannot be deleted while it is assigned, so its life follows the assignments; and `azd up`
// then needs no right outside the app's own resource group.
//
// checkov's Bicep parser reads no lambda but `filter` and no `flatten`: the account ids are flattened with join/split.

targetScope = 'subscription'

@description('The same targets as the azd environment\'s ROTATION_KEY_TARGETS: [{vaultId, keyName, location, accounts, systemTopicName?, newVersions?}].')
param targets array

@description('Principal id of the rotation app\'s user-assigned identity (azd output ROTATION_IDENTITY_PRINCIPAL_ID).')
param principalId string

@description('Resource id of the rotation Function App (azd output AZURE_FUNCTION_APP_ID).')
param functionAppId string

@description('Resource id of the identity Event Grid delivers and dead-letters with (azd output ROTATION_KEY_EVENTS_IDENTITY_ID).')
param keyEventsIdentityId string

@description('Resource id of the app\'s storage account (azd output ROTATION_STORAGE_ACCOUNT_ID).')
param storageAccountId string

@description('Custom: least-privilege custom roles (needs Owner or User Access Administrator on every target subscription). BuiltIn: Key Vault Crypto Officer and Cognitive Services Contributor (wider; see infra/README.md).')
@allowed([
  'Custom'
  'BuiltIn'
])
param roleMode string = 'Custom'

@description('Create each vault\'s system topic and the event subscription. false: no Event Grid at all; the daily sweep alone rotates.')
param keyEvents bool = true

@description('How Event Grid delivers key events: AzureFunction (push to on_key_event) or StorageQueue (queue key-events).')
@allowed([
  'AzureFunction'
  'StorageQueue'
])
param keyEventDelivery string = 'AzureFunction'

@description('Event Grid delivery attempts before dead-lettering (1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes Event Grid retries an event before dead-lettering it (1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('Also give each target account\'s system-assigned identity Key Vault Crypto Service Encryption User on its key.')
param grantAccountsKeyAccess bool = false

@description('The key-events queue in the app\'s storage account (infra/modules/app.bicep).')
param keyEventsQueueName string = 'key-events'

@description('The dead-letter container in the app\'s storage account (infra/modules/app.bicep).')
param deadLetterContainerName string = 'key-events-deadletter'

@description('Create the metric alerts on each system topic: dead-lettered and dropped key events page, failed delivery attempts show (docs/runbook.md, section "Alerts").')
param deliveryAlerts bool = true

@description('The app\'s action group, which the dead-lettered and dropped alerts notify (azd output ROTATION_ACTION_GROUP_ID); empty: the alerts notify no one.')
param actionGroupId string = ''

@description('The app\'s Log Analytics workspace, which receives each system topic\'s DeliveryFailures log (azd output ROTATION_LOG_ANALYTICS_ID); empty: no diagnostic setting.')
param logAnalyticsId string = ''

@description('Give the app discovery\'s read (ROTATION_DISCOVERY) in every subscription of a target account and of discoverySubscriptionIds. false: ROTATION_DISCOVERY=off, no discovery right at all.')
param discovery bool = true

@description('With discovery: more subscription ids (GUIDs) to search beyond the target accounts\' own, e.g. those of ROTATION_DISCOVERY\'s list, or of its management group or tenant. Discovery sees nothing in a subscription without this read.')
param discoverySubscriptionIds array = []

@description('The app\'s ROTATION_UNMANAGED. enrol: with discovery, also the account role (and in Custom mode the operation-status read) in every subscription discovery searches, so the app may update the accounts it finds there.')
@allowed([
  'report'
  'enrol'
])
param unmanagedAccounts string = 'report'

@description('For the app\'s ROTATION_RETIREMENT own or all: give the app keys/update/action on each target key, so that the sweep may disable old versions no account uses. roleMode Custom: a separate key retirer role with only that action; BuiltIn: nothing more (Key Vault Crypto Officer holds it). false (default), and breakGlass false too: the app cannot disable or expire any version.')
param retirement bool = false

@description('For break-glass (POST /api/rotations with compromised_version, or python -m rotation break-glass): give the app keys/update/action on each target key, so that it may disable the compromised version once no account is left on it. roleMode Custom: the same key retirer role as retirement, with only that action; BuiltIn: nothing more (Key Vault Crypto Officer holds it). false (default): break-glass still moves the accounts off the version, but cannot disable it: Key Vault refuses, the version stays enabled and a person must disable it.')
param breakGlass bool = false

var appName = last(split(functionAppId, '/'))
var custom = roleMode == 'Custom'
// Whether the app may disable key versions (keys/update/action): retirement's sweep and break-glass are its only uses.
var disables = retirement || breakGlass
var tags = {
  'cmk-rotation-app': appName
}

// Built-in role definition ids (Learn, "Azure built-in roles").
// Key Vault Crypto Officer: Microsoft.KeyVault/vaults/keys/* and keyrotationpolicies/* (every key operation).
var keyVaultCryptoOfficer = '14b46e9e-c2b7-41b4-b07b-48a6ebf60603'
// Cognitive Services Contributor: Microsoft.CognitiveServices/* (keys, deployments, delete, ...).
var cognitiveServicesContributor = '25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68'
// Reader: */read (every resource of the scope, secrets excepted).
var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

var vaultIds = [for t in targets: toLower(t.vaultId)]
var vaultScopes = [for t in targets: format('/subscriptions/{0}', toLower(split(t.vaultId, '/')[2]))]
// Every target account id, flattened without `flatten` or `join` (checkov cannot read them): the JSON text of the
// nested array, e.g. [["/subscriptions/a/...","..."],[]], stripped of brackets and quotes and split at the commas (an
// ARM resource id holds none of [ ] " ,); the empty strings that empty account lists leave are filtered out.
var accountsPerTarget = [for t in targets: t.accounts]
var accountIds = filter(split(replace(replace(replace(string(accountsPerTarget), '[', ''), ']', ''), '"', ''), ','), id => !empty(id))
var accountSubscriptionIds = [for id in accountIds: toLower(split(id, '/')[2])]
var accountScopes = [for s in accountSubscriptionIds: format('/subscriptions/{0}', s)]
// The subscriptions discovery searches with the app's read: every target account's, and the extra ones; none when
// discovery is off. With enrol the app may update any account found there, so its write follows them.
var extraSubscriptionIds = [for s in discoverySubscriptionIds: toLower(s)]
var searchedSubscriptionIds = discovery ? concat(accountSubscriptionIds, extraSubscriptionIds) : []
var searchedScopes = [for s in searchedSubscriptionIds: format('/subscriptions/{0}', s)]
var enrol = discovery && unmanagedAccounts == 'enrol'
var operationStatusSubscriptionIds = enrol ? searchedSubscriptionIds : accountSubscriptionIds
var assignableScopes = union([subscription().id], vaultScopes, accountScopes, searchedScopes)

// The key role: exactly the data actions of the Key Vault calls in rotation/keyvault.py but disable_version's
// (tests/infra checks it): list_properties_of_key_versions and get_key need keys/read; create_rsa_key
// (POST /keys/{name}/create) needs keys/create/action. Nothing else: no update (disable, expire: the key retirer role
// below, only with retirement or breakGlass), delete, purge, backup, import, crypto, rotation policy.
resource keyRotatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (custom) {
  name: guid(functionAppId, 'cmk-rotation-key-rotator')
  properties: {
    roleName: 'CMK rotation key rotator (${appName})'
    description: 'Read a Key Vault key and its versions, and create new versions. Nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.KeyVault/vaults/keys/read'
          'Microsoft.KeyVault/vaults/keys/create/action'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

// Retirement and break-glass (only with retirement=true or breakGlass=true): the one data action of the adapter's
// disable_version, update_key_properties (PATCH /keys/{name}/{version}), which the retirement sweep
// (ROTATION_RETIREMENT own or all) calls on old versions no account uses and break-glass on a compromised version once
// no account is left on it. Kept out of the key rotator role so that a deployment with neither never holds it. With it
// a stolen identity could disable the version every account uses; that is why it is off by default and a role of its
// own (tests/infra checks both roles against the adapter). Its name (the guid seed) stays 'cmk-rotation-key-retirer',
// from when retirement alone used it, so that deployed definitions and their assignments are updated, not duplicated.
resource keyRetirerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (custom && disables) {
  name: guid(functionAppId, 'cmk-rotation-key-retirer')
  properties: {
    roleName: 'CMK rotation key retirer (${appName})'
    description: 'Update a Key Vault key version\'s attributes: the rotation app disables old versions no account uses (retirement) and a compromised version no account is left on (break-glass). Nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
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
resource accountUpdaterRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (custom) {
  name: guid(functionAppId, 'cmk-rotation-account-updater')
  properties: {
    roleName: 'CMK rotation account updater (${appName})'
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

// The read of an account update's operation status, which ARM authorises at subscription scope (operationStatuses
// URLs are not under the account). The action name is Microsoft's provider operations list entry for Cognitive
// Services ("locations/operationresults/read"); that ARM checks exactly this action on the operationStatuses URL is
// UNCONFIRMED (no deployment was possible). If the app still logs rotation.operation_status_forbidden with this role
// assigned, the action differs: the app then verifies by re-reading the account, and only the failure reason is lost.
resource operationStatusRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (custom) {
  name: guid(functionAppId, 'cmk-rotation-operation-status')
  properties: {
    roleName: 'CMK rotation operation status reader (${appName})'
    description: 'Read the status of asynchronous Cognitive Services operations (the outcome of an account update). Nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.CognitiveServices/locations/operationresults/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

// Discovery: exactly the actions of the calls in rotation/discovery.py (tests/infra checks it): Resource Graph's
// resources query (POST /providers/Microsoft.ResourceGraph/resources; Microsoft.ResourceGraph/resources/read, from
// Microsoft's provider operations list) and the accounts adapter's get and list (accounts/read). Resource Graph shows
// only what the caller may read, so it is assigned in every subscription discovery searches. That Resource Graph
// checks exactly these two actions (and not */read) is UNCONFIRMED (no deployment was possible): if discovery finds
// nothing where accounts exist, the app logs rotation.discovery_fallback or the ARM listing's failure.
resource discoveryReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (custom && discovery) {
  name: guid(functionAppId, 'cmk-rotation-discovery-reader')
  properties: {
    roleName: 'CMK rotation discovery reader (${appName})'
    description: 'Find the Azure OpenAI / AI services accounts that use a key: read accounts and query Resource Graph. Nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.CognitiveServices/accounts/read'
          'Microsoft.ResourceGraph/resources/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

module keyAccess 'modules/key-access.bicep' = [for (t, i) in targets: {
  name: 'cmk-key-access-${uniqueString(functionAppId, toLower(t.vaultId), t.keyName)}'
  scope: resourceGroup(split(t.vaultId, '/')[2], split(t.vaultId, '/')[4])
  params: {
    vaultName: last(split(t.vaultId, '/'))
    keyName: t.keyName
    accounts: t.accounts
    principalId: principalId
    keyRoleId: custom ? keyRotatorRole.name : keyVaultCryptoOfficer
    disables: custom && disables
    retirerRoleId: keyRetirerRole.name
    accountRoleId: custom ? accountUpdaterRole.name : cognitiveServicesContributor
    grantAccountsKeyAccess: grantAccountsKeyAccess
  }
}]

// One assignment per subscription that holds a target account, or with enrol per subscription discovery searches
// (the first occurrence of each subscription deploys it).
module operationStatusAccess 'modules/operation-status-access.bicep' = [for (s, i) in operationStatusSubscriptionIds: if (custom && indexOf(operationStatusSubscriptionIds, s) == i) {
  name: 'cmk-operation-status-${uniqueString(functionAppId, s)}'
  scope: subscription(s)
  params: {
    principalId: principalId
    roleId: operationStatusRole.name
  }
}]

// Discovery's read, and with enrol the account role, per subscription discovery searches (none with discovery=false).
module discoveryAccess 'modules/discovery-access.bicep' = [for (s, i) in searchedSubscriptionIds: if (indexOf(searchedSubscriptionIds, s) == i) {
  name: 'cmk-discovery-${uniqueString(functionAppId, s)}'
  scope: subscription(s)
  params: {
    principalId: principalId
    readerRoleId: custom ? discoveryReaderRole.name : reader
    enrol: enrol
    accountRoleId: custom ? accountUpdaterRole.name : cognitiveServicesContributor
  }
}]

// One system topic and one subscription per vault (the first target of each vault), however many keys it holds.
module keyEventsAccess 'modules/key-events.bicep' = [for (t, i) in targets: if (keyEvents && indexOf(vaultIds, toLower(t.vaultId)) == i) {
  name: 'cmk-key-events-${uniqueString(functionAppId, toLower(t.vaultId))}'
  scope: resourceGroup(split(t.vaultId, '/')[2], split(t.vaultId, '/')[4])
  params: {
    vaultId: t.vaultId
    location: t.location
    systemTopicName: contains(t, 'systemTopicName') ? t.systemTopicName : format('evgt-{0}', last(split(t.vaultId, '/')))
    subscriptionName: '${appName}-key-events'
    targets: targets
    tags: tags
    deliveryIdentityId: keyEventsIdentityId
    delivery: keyEventDelivery
    functionAppId: functionAppId
    storageAccountId: storageAccountId
    keyEventsQueueName: keyEventsQueueName
    deadLetterContainerName: deadLetterContainerName
    maxDeliveryAttempts: maxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    deliveryAlerts: deliveryAlerts
    actionGroupId: actionGroupId
    logAnalyticsId: logAnalyticsId
  }
}]

// What the teardown removes (docs/runbook.md, section 7). Empty strings stand for instances that were not deployed.
output roleMode string = roleMode
output keyRoleAssignments array = [for (t, i) in targets: {
  key: '${t.vaultId}/keys/${t.keyName}'
  roleAssignmentId: keyAccess[i].outputs.keyRoleAssignmentId
}]
// With retirement or breakGlass in roleMode Custom: the key retirer role on each key ('' elsewhere).
output keyRetirerRoleAssignments array = [for (t, i) in targets: {
  key: '${t.vaultId}/keys/${t.keyName}'
  roleAssignmentId: keyAccess[i].outputs.keyRetirerRoleAssignmentId
}]
output accountRoleAssignments array = [for (t, i) in targets: {
  key: '${t.vaultId}/keys/${t.keyName}'
  accounts: keyAccess[i].outputs.accountRoleAssignments
}]
output operationStatusRoleAssignmentIds array = [for (s, i) in operationStatusSubscriptionIds: (custom && indexOf(operationStatusSubscriptionIds, s) == i) ? operationStatusAccess[i].outputs.roleAssignmentId : '']
output discoveryRoleAssignmentIds array = [for (s, i) in searchedSubscriptionIds: indexOf(searchedSubscriptionIds, s) == i ? discoveryAccess[i].outputs.readerRoleAssignmentId : '']
// With enrol: the account role at each searched subscription ('' elsewhere).
output unmanagedAccountRoleAssignmentIds array = [for (s, i) in searchedSubscriptionIds: indexOf(searchedSubscriptionIds, s) == i ? discoveryAccess[i].outputs.accountRoleAssignmentId : '']
output eventSubscriptionIds array = [for (t, i) in targets: (keyEvents && indexOf(vaultIds, toLower(t.vaultId)) == i) ? keyEventsAccess[i].outputs.eventSubscriptionId : '']
// Only the topics this step created (no systemTopicName given); a topic named in systemTopicName was the vault's own.
output createdSystemTopicIds array = [for (t, i) in targets: (keyEvents && indexOf(vaultIds, toLower(t.vaultId)) == i && !contains(t, 'systemTopicName')) ? keyEventsAccess[i].outputs.systemTopicId : '']
output customRoleDefinitionIds array = custom ? concat([keyRotatorRole.id, accountUpdaterRole.id, operationStatusRole.id], discovery ? [discoveryReaderRole.id] : [], disables ? [keyRetirerRole.id] : []) : []
// The metric alert rules next to each system topic (ids, '' where not created), and each topic's diagnostic setting.
output deliveryAlertIds array = [for (t, i) in targets: (keyEvents && indexOf(vaultIds, toLower(t.vaultId)) == i) ? keyEventsAccess[i].outputs.deliveryAlertIds : []]
output deliveryDiagnosticSettingIds array = [for (t, i) in targets: (keyEvents && indexOf(vaultIds, toLower(t.vaultId)) == i) ? keyEventsAccess[i].outputs.diagnosticSettingId : '']
// Not removed by the teardown: the accounts need them to read their own data (see modules/key-access.bicep).
output accountKeyAccessAssignments array = [for (t, i) in targets: {
  key: '${t.vaultId}/keys/${t.keyName}'
  roleAssignmentIds: keyAccess[i].outputs.accountKeyAccessAssignmentIds
}]
