// Entry point for `azd up` and `azd down`: the CMK rotation service in ONE resource group, rg-<env>, and nothing else.
//
// It must never deploy anything outside that resource group: azd down deletes every resource group that a deployment
// touched (Azure/azure-dev#2916), so a role assignment or a system topic placed here in a vault's or an account's
// resource group would put the customer's key vaults and AI accounts at risk. Everything the app needs on the targets
// (the roles on each key and account, the operation-status read in each account subscription, discovery's reads, the
// vaults' Event Grid system topics and subscriptions, and the custom role definitions) is the separate, explicit step
// infra/grants/, which azd never runs (docs/runbook.md, section 1).
//
// Inside rg-<env> it grants, and nothing more (infra/README.md explains each choice):
//   the app's identity  - on its own storage: Blob Data Owner, Queue Data Contributor, Table Data Contributor;
//                       - on its Application Insights: Monitoring Metrics Publisher (identity-based telemetry).
//   Event Grid's identity - send to the key-events queue, write to the dead-letter container.
// It must never put a secret in an app setting or an output.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of the rotation app: one that offers the Flex Consumption plan (this list, from the azd Flex Consumption quickstart templates; check `az functionapp list-flexconsumption-locations`; infra/README.md, "Regions").')
// The one list of supported regions: ARM refuses any other location before it creates anything, naming this parameter
// and the allowed values, and azd offers only these in its location prompt.
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('The keys to rotate: [{vaultId, keyName, location, accounts: [account resource ids], systemTopicName?, newVersions?, rollout?}]. See infra/README.md.')
param targets array

@description('ROTATION_SCHEDULE: NCRONTAB (six fields, UTC) of the sweep.')
param rotationSchedule string = '0 0 3 * * *'

@description('ROTATION_KEY_LIFETIME: ISO 8601 duration, the expiry given to each created version.')
param keyLifetime string = 'P120D'

@description('ROTATION_RENEW_BEFORE: ISO 8601 duration, how long before expiry a version is replaced.')
param renewBefore string = 'P30D'

@description('ROTATION_CONCURRENCY: how many accounts one worker updates at once (ARM\'s rate-limit budget sets the pace).')
@minValue(1)
@maxValue(256)
param concurrency int = 64

@description('ROTATION_VERIFY_TIMEOUT: ISO 8601 duration, how long to wait for an account to report the new version.')
param verifyTimeout string = 'PT10M'

@description('ROTATION_FORCE_COOLDOWN: ISO 8601 duration, the least time between two forced rotations of one key over HTTP.')
param forceCooldown string = 'PT1H'

@description('ROTATION_DISCOVERY: where the app looks for accounts on a target key: tenant (every subscription its identity can read), off, /subscriptions/<id>,/subscriptions/<id>, or one management group /providers/Microsoft.Management/managementGroups/<id>. The grants give it the reads (infra/README.md).')
param discovery string = 'tenant'

@description('ROTATION_UNMANAGED: what happens to an account on a target key that ROTATION_TARGETS does not list: report (drift only) or enrol (rotated too; the grants then need unmanagedAccounts=enrol).')
@allowed([
  'report'
  'enrol'
])
param unmanagedAccounts string = 'report'

@description('ROTATION_RETIREMENT: which old key versions the sweep disables once no account has used them for retireAfter: off (none), own (only versions this app created) or all. own and all need the grants with retirement=true (keys/update/action on each target key).')
@allowed([
  'off'
  'own'
  'all'
])
param retirement string = 'off'

@description('ROTATION_RETIRE_AFTER: ISO 8601 duration, how long no account may have used an old version before the sweep disables it (the soak).')
param retireAfter string = 'P30D'

@description('Create an Event Grid custom topic for the outcome events (sets ROTATION_EVENTS_ENDPOINT).')
param outcomeEventsTopic bool = false

@description('Create the action group and the alert rules (docs/runbook.md, section "Alerts"); the workbook is always created.')
param alerts bool = true

@description('E-mail address the alerts notify; empty for none (they still fire in Azure Monitor).')
param alertEmail string = ''

@description('Highest number of instances the Flex Consumption plan may scale out to.')
param maximumInstanceCount int = 40

@description('Private networking: VNet integration of the app, its storage reached through private endpoints and closed to other networks (docs/runbook.md, "Private networking and firewalled vaults").')
param vnetEnabled bool = false

@description('With vnetEnabled: address space of the app\'s virtual network; must not overlap a network you peer it with.')
param vnetAddressPrefix string = '10.42.0.0/24'

@description('With vnetEnabled: the app subnet (a /27, for Flex Consumption VNet integration), inside vnetAddressPrefix.')
param vnetAppSubnetPrefix string = '10.42.0.0/27'

@description('With vnetEnabled: the private-endpoint subnet (storage, and room for vault endpoints), inside vnetAddressPrefix.')
param vnetPrivateEndpointSubnetPrefix string = '10.42.0.32/27'

@description('With vnetEnabled: a NAT gateway with one static public IP address for all outbound traffic of the app (for vault firewalls that allow addresses).')
param natGateway bool = false

@description('ROTATION_HTTP_AUTH: keys (function keys in x-functions-key) or entra (Microsoft Entra ID tokens, checked by App Service authentication).')
@allowed([
  'keys'
  'entra'
])
param httpAuth string = 'keys'

@description('With httpAuth entra: the client id of the API\'s app registration, with app roles Rotations.Submit and Rotations.Read (docs/runbook.md).')
param entraClientId string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = 'func-rotation-${resourceToken}'

// ROTATION_TARGETS in the app's own format (DESIGN section 4).
var rotationTargets = [for t in targets: {
  key: format('https://{0}{1}/keys/{2}', last(split(t.vaultId, '/')), environment().suffixes.keyvaultDns, t.keyName)
  accounts: t.accounts
  vault_location: t.location
  new_versions: contains(t, 'newVersions') ? t.newVersions : 'service'
  rollout: contains(t, 'rollout') ? t.rollout : null
}]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
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
    discovery: discovery
    unmanagedAccounts: unmanagedAccounts
    retirement: retirement
    retireAfter: retireAfter
    outcomeEventsTopic: outcomeEventsTopic
    maximumInstanceCount: maximumInstanceCount
    vnetEnabled: vnetEnabled
    vnetAddressPrefix: vnetAddressPrefix
    vnetSubnetPrefixes: {
      app: vnetAppSubnetPrefix
      privateEndpoints: vnetPrivateEndpointSubnetPrefix
    }
    natGateway: vnetEnabled && natGateway
    httpAuth: httpAuth
    entraClientId: entraClientId
  }
}

// The action group, the log alerts on the app's telemetry and the workbook (the grants add the Event Grid alerts).
module monitoring 'modules/monitoring.bicep' = {
  name: 'rotation-monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    appName: appName
    appInsightsId: app.outputs.appInsightsId
    alerts: alerts
    alertEmail: alertEmail
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.appName
output ROTATION_APP_NAME string = app.outputs.appName
output ROTATION_IDENTITY_PRINCIPAL_ID string = app.outputs.principalId
output ROTATION_IDENTITY_CLIENT_ID string = app.outputs.clientId
output ROTATION_HTTP_ENDPOINT string = 'https://${app.outputs.defaultHostName}/api'
output ROTATION_STORAGE_ACCOUNT string = app.outputs.storageAccountName
output AZURE_FUNCTION_APP_ID string = app.outputs.appId
output ROTATION_KEY_EVENTS_IDENTITY_ID string = app.outputs.keyEventsIdentityId
output ROTATION_STORAGE_ACCOUNT_ID string = app.outputs.storageAccountId
output KEY_EVENTS_DEADLETTER_CONTAINER string = app.outputs.deadLetterContainerName
output ROTATION_EVENTS_ENDPOINT string = app.outputs.outcomeEventsEndpoint
// For the grants: the Event Grid alerts notify this action group ('' with alerts=false), and the system topics send
// their DeliveryFailures logs to this workspace.
output ROTATION_ACTION_GROUP_ID string = monitoring.outputs.actionGroupId
output ROTATION_LOG_ANALYTICS_ID string = app.outputs.logAnalyticsId
output ROTATION_VNET_ID string = app.outputs.vnetId
output ROTATION_OUTBOUND_IP string = app.outputs.natPublicIpAddress
