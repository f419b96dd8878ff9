// The vault for the connector's four secrets. The template creates no secret: an operator puts them
// in after deployment (docs/deploy.md), named after their settings in kebab case
// (shared/core/secrets.py `kebab`):
//   basware-client-secret, basware-webhook-secret, bc-client-secret, bc-client-state
// The app reads them through Key Vault references (app/api.bicep) and, because KEY_VAULT_URL is set,
// directly with its managed identity; both need Key Vault Secrets User (app/rbac.bicep).
param name string
param location string
param tags object = {}
@description('True: reachable only through the private endpoint of app/network.bicep.')
param vnetEnabled bool = true

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Access by Azure RBAC only: no access policies to drift out of sight.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // A deleted vault or secret cannot be purged before its retention ends. Note: this also keeps
    // the vault *name* reserved for 90 days after `azd down`.
    enablePurgeProtection: true
    // Private by default: the app reaches the vault through its private endpoint
    // (app/network.bicep). An operator setting secrets from outside opens it briefly for one
    // address (docs/deploy.md step 4); the next deployment closes it again.
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: vnetEnabled ? {
      defaultAction: 'Deny'
      bypass: 'None'
    } : {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
