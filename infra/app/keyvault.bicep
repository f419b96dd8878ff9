// The vault for the connector's four secrets. The template creates no secret: an operator puts them
// in after deployment (docs/deploy.md), named after their settings in kebab case
// (shared/core/secrets.py `kebab`):
//   basware-client-secret, basware-webhook-secret, bc-client-secret, bc-client-state
// The app reads them through Key Vault references (app/api.bicep) and, because KEY_VAULT_URL is set,
// directly with its managed identity; both need Key Vault Secrets User (app/rbac.bicep).
param name string
param location string
param tags object = {}

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
    // Flex instances without VNet integration reach the vault over its public endpoint; every
    // call still needs an Entra token with a data role.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
