// The rotation app's discovery rights in one subscription (ROTATION_DISCOVERY, rotation/discovery.py). Part of the
// separate grants step (infra/grants/main.bicep); deployed at the scope of each subscription discovery searches.
//
// Why at the subscription: discovery looks for accounts nobody listed, so no account or resource group is known
// beforehand. Resource Graph returns only the resources the caller can read, so without this read an account on a
// target key in this subscription is silently left out; ARM's fallback lists the whole subscription
// (GET /subscriptions/{id}/providers/Microsoft.CognitiveServices/accounts), which is refused without it.
// It must assign only the discovery read, and with enrol the account role, never more: in roleMode Custom the read is
// accounts/read and Resource Graph's resources/read; in BuiltIn it is Reader (every resource of the subscription).

targetScope = 'subscription'

@description('Principal id of the rotation app\'s user-assigned identity.')
param principalId string

@description('Role definition id (a GUID): the custom discovery reader role or Reader.')
param readerRoleId string

@description('ROTATION_UNMANAGED=enrol: also assign the account role here, so that the app may update every account discovery finds in this subscription.')
param enrol bool

@description('Role definition id (a GUID) of the account role: the custom account-updater role or Cognitive Services Contributor.')
param accountRoleId string

resource discoveryReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, readerRoleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'CMK rotation: find the accounts that use a target key (Resource Graph and ARM reads).'
  }
}

resource unmanagedAccountUpdater 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enrol) {
  name: guid(subscription().id, principalId, accountRoleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', accountRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'CMK rotation (ROTATION_UNMANAGED=enrol): update the encryption settings of every account it finds on a target key.'
  }
}

output readerRoleAssignmentId string = discoveryReader.id
output accountRoleAssignmentId string = enrol ? unmanagedAccountUpdater.id : ''
