// The rotation app's right to repoint one account at a new key version, assigned on the account alone. Part of the
// separate grants step (infra/grants/main.bicep); deployed into the account's resource group.
//
// It must never assign a role at the resource group or subscription. The role is the custom account-updater role
// (accounts/read and accounts/write), or, in roleMode BuiltIn, Cognitive Services Contributor, which also allows
// listing and regenerating the account's API keys and managing deployments (infra/README.md).

@description('Name of the Azure OpenAI / AI services account.')
param accountName string

@description('Principal id of the rotation app\'s user-assigned identity.')
param principalId string

@description('Role definition id (a GUID): the custom account-updater role or Cognitive Services Contributor.')
param roleId string

resource account 'Microsoft.CognitiveServices/accounts@2025-06-01' existing = {
  name: accountName
}

resource accountUpdater 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, roleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'CMK rotation: read the account and update its encryption settings.'
  }
}

output roleAssignmentId string = accountUpdater.id
