// The rotation app's right to repoint one account at a new key version: the custom account-updater role, assigned on
// the account alone. Deployed into the account's resource group.
//
// It must never assign a role at the resource group or subscription, and never a built-in role such as Cognitive
// Services Contributor, which would also allow listing the account's API keys and managing deployments.

@description('Name of the Azure OpenAI / AI services account.')
param accountName string

@description('Principal id of the rotation app\'s user-assigned identity.')
param principalId string

@description('Role definition id (a GUID) of the custom account-updater role.')
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
