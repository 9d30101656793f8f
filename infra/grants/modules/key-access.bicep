// The rotation app's rights on one key, granted on the key itself (not the vault), and the same rights' counterpart on
// each account that uses the key. Part of the separate grants step (infra/grants/main.bicep), never of `azd up`:
// deployed into the vault's resource group, whatever subscription it is in.
//
// It must never grant more than the key: no vault-wide role, no secrets, no certificates, no purge or delete (in
// roleMode Custom; Key Vault Crypto Officer in BuiltIn mode is wider, see infra/README.md), and keys/update/action
// (disable) only through the separate key retirer role, only with retirement or break-glass. Every role assignment it
// creates is an output, so that the runbook's teardown can remove exactly these and nothing else.

@description('Name of the vault that holds the key.')
param vaultName string

@description('Name of the key to rotate.')
param keyName string

@description('Resource ids of the Azure OpenAI / AI services accounts that use this key.')
param accounts array

@description('Principal id of the rotation app\'s user-assigned identity.')
param principalId string

@description('Role definition id (a GUID) the app gets on the key: the custom key rotator role or Key Vault Crypto Officer.')
param keyRoleId string

@description('Whether the app may disable versions of the key (roleMode Custom with retirement or breakGlass): also give it the key retirer role (keys/update/action only) on the key.')
param disables bool

@description('Role definition id (a GUID) of the custom key retirer role; assigned only when disables is true (never in roleMode BuiltIn, whose Key Vault Crypto Officer already holds keys/update/action).')
param retirerRoleId string

@description('Role definition id (a GUID) the app gets on each account: the custom account-updater role or Cognitive Services Contributor.')
param accountRoleId string

@description('Also give each account\'s system-assigned identity Key Vault Crypto Service Encryption User on the key.')
param grantAccountsKeyAccess bool

// Key Vault Crypto Service Encryption User: read key metadata, wrap and unwrap; what an account needs to use its CMK.
var cryptoServiceEncryptionUser = 'e147488a-f6f5-4113-8e2d-b22465e65bf6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource key 'Microsoft.KeyVault/vaults/keys@2023-07-01' existing = {
  parent: vault
  name: keyName
}

resource keyRotator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(key.id, principalId, keyRoleId)
  scope: key
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'CMK rotation: read the key and its versions, create new versions.'
  }
}

// Only for retirement (ROTATION_RETIREMENT own or all) and break-glass: disabling an old or a compromised version
// (PATCH /keys/{name}/{version}) needs keys/update/action, which the key rotator role must not hold.
resource keyRetirer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (disables) {
  name: guid(key.id, principalId, retirerRoleId)
  scope: key
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', retirerRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'CMK rotation: disable old key versions that no account uses (ROTATION_RETIREMENT) and compromised ones no account is left on (break-glass).'
  }
}

resource account 'Microsoft.CognitiveServices/accounts@2025-06-01' existing = [for id in accounts: {
  name: last(split(id, '/'))
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
}]

resource accountKeyAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (id, i) in accounts: if (grantAccountsKeyAccess) {
  name: guid(key.id, toLower(id), cryptoServiceEncryptionUser)
  scope: key
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cryptoServiceEncryptionUser)
    principalId: account[i].identity.principalId
    principalType: 'ServicePrincipal'
    description: 'The account uses this key as its customer-managed key.'
  }
}]

module accountUpdater 'account-access.bicep' = [for id in accounts: {
  name: 'cmk-account-${uniqueString(toLower(id), principalId)}'
  scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
  params: {
    accountName: last(split(id, '/'))
    principalId: principalId
    roleId: accountRoleId
  }
}]

output keyRoleAssignmentId string = keyRotator.id
output keyRetirerRoleAssignmentId string = disables ? keyRetirer.id : ''
output accountRoleAssignments array = [for (id, i) in accounts: {
  account: id
  roleAssignmentId: accountUpdater[i].outputs.roleAssignmentId
}]
// The accounts' own access to their CMK: the teardown must leave these in place (without them the accounts' data
// becomes unreadable), so they are listed apart from the app's assignments.
output accountKeyAccessAssignmentIds array = [for (id, i) in accounts: grantAccountsKeyAccess ? accountKeyAccess[i].id : '']
