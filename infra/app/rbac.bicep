// Every role assignment of the deployment, each scoped to the one resource it is for, and each
// with the reason it is needed. The app's identity gets data-plane roles only (no Owner or
// Contributor anywhere), and blob access only on the three containers the platform and the host
// use, nothing account-wide on blobs. The identity can still write the deployment container,
// because Flex Consumption deploys a new package with it. Built-in roles:
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage
param storageAccountName string
@description('The blob containers the app\'s identity may read and write (deployment package, host containers).')
param blobContainerNames array
param keyVaultName string
param appInsightsName string
@description('Principal id of the app\'s user-assigned identity.')
param appPrincipalId string
@description('Optional: whoever deploys, so they can set the vault\'s secrets. Empty: no assignment.')
param deployerPrincipalId string = ''
@allowed(['User', 'ServicePrincipal', 'Group'])
param deployerPrincipalType string = 'User'

// Built-in role definition ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // per container: deployment package, host blobs
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // queue triggers, enqueue, poison queues
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // jobs, audit, syncstate
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6' // read secrets (Key Vault references and KEY_VAULT_URL)
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Entra-authenticated App Insights ingestion
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // deployer only: `az keyvault secret set`

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for containerName in blobContainerNames: {
  parent: blobService
  name: containerName
}]

// Blob, per container (Azure RBAC allows container scope for blob data roles; the account and
// queue/table roles below cannot be narrower without listing every queue and table):
// - the deployment container: Flex Consumption reads the app's zip from it with this identity,
//   and a deployment writes the new zip there;
// - azure-webjobs-hosts: the host's lease, singleton locks and the timers' schedule status
//   (use_monitor), so a timer runs on one instance at a time;
// - azure-webjobs-secrets: the host's function keys (the ?code= of the HTTP routes).
// Contributor, not Owner: Owner adds only POSIX ACL management, which a storage account without
// hierarchical namespace does not have. The containers exist (app/storage.bicep), so the host
// never needs the account-level right to create one.
resource appBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in blobContainerNames: {
  name: guid(blobContainers[i].id, appPrincipalId, storageBlobDataContributor)
  scope: blobContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Queues, account-wide: the four job queues and their poison queues (triggers read, the webhook
// and timers enqueue, the runtime moves failures to -poison).
resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, appPrincipalId, storageQueueDataContributor)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Tables, account-wide: jobs, audit and syncstate (job leases, the audit trail, sync cursors).
resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, appPrincipalId, storageTableDataContributor)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The vault: read the four secrets, through Key Vault references and directly (KEY_VAULT_URL).
resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// App Insights accepts Entra-authenticated telemetry only (local auth disabled).
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// An RBAC vault refuses secret writes even to subscription Owners without a data role, so the
// deployer gets Secrets Officer on this vault only, to run the `az keyvault secret set` steps.
resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}
