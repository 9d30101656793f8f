// The rotation app's right to read the status of its own account updates in one subscription. Part of the separate
// grants step (infra/grants/main.bicep); deployed at the scope of each subscription that holds a target account.
//
// Why at the subscription: ARM answers an account update with an Azure-AsyncOperation URL under
// /subscriptions/{id}/providers/Microsoft.CognitiveServices/locations/{region}/operationStatuses/{id}, which is not
// under the account, so a role on the account does not cover it; without this read the resource provider's reason
// for a failed update (e.g. KeyVaultAccessDenied) is lost. It is the narrowest scope Azure allows for that URL.
// It must assign only the custom operation-status role, whose single action is that read: never a built-in role.

targetScope = 'subscription'

@description('Principal id of the rotation app\'s user-assigned identity.')
param principalId string

@description('Role definition id (a GUID) of the custom operation-status reader role.')
param roleId string

resource operationStatusReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'CMK rotation: read the status of the account updates this app started (nothing else).'
  }
}

output roleAssignmentId string = operationStatusReader.id
