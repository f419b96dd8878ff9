// The function app on Flex Consumption, and every app setting the code reads (README.md "Settings"),
// in one place: `appSettings` (always set) and `optionalAppSettings` (set only when given).
// tests/unit/test_infra.py checks these against shared/core/settings.py SETTING_NAMES.
param name string
param planName string
param location string
param tags object = {}
@description('Resource id of the app\'s user-assigned identity.')
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param appInsightsName string
param keyVaultName string
param maximumInstanceCount int
@description('BC requests in flight from all instances together (shared/clients/budget.py).')
param bcMaxConcurrentRequests int
param instanceMemoryMB int
param httpPerInstanceConcurrency int
@description('Subnet for outbound VNet integration (app/network.bicep). Empty: no integration (vnetEnabled false).')
param virtualNetworkSubnetId string = ''

// Connector settings; main.bicep has already replaced empty values with the app's defaults.
param baswareRegion string
param baswareApiUrl string
param baswareTokenUrl string
param baswareClientId string
param baswareScopes string
param bcTenantId string
param bcEnvironment string
param bcCompanyId string
param bcClientId string
param bcApiUrl string
param bcAuthorityUrl string
param companyMap object
param dimensionMap array
param taxCodeMap object
param postMode string
param totalTolerance string
param attachmentCategories string
param attachmentRequired bool
@description('Report partial payments and reversals from BC\'s analytics vendorLedgerEntries API (the tenant must offer it): true or false')
param bcPartialPayments string = 'false'
param bcLateCommitWindowSeconds string
param pollSchedule string
param masterdataSchedule string
param paymentSchedule string
param poSyncSchedule string
param subscriptionSchedule string
param retentionSchedule string
param retentionDays int

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

// ---- Concurrency budget ----
// BC's limits (5 requests processed per principal, 95 queued, 429 past 100) hold across every
// instance because each BC request leases one of BC_MAX_CONCURRENT_REQUESTS slots in the app's
// table storage, and each instance's BC client lets at most 5 through at once. The reasoning, and
// why the instance count (at least 40 on Flex) cannot be the bound, is in shared/clients/budget.py.
resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Outbound through the virtual network: storage and Key Vault resolve to their private
    // endpoints there. Inbound stays public (HTTPS only) for the Basware and BC webhooks.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    // Key Vault references resolve with the user-assigned identity (the default would be a
    // system-assigned identity, which this app does not have).
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            // The HTTP routes only enqueue or read tables, except health and admin/masterdata/sync,
            // which go through the same 5-slot BC client. A high per-instance concurrency keeps
            // HTTP traffic on few instances.
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      // Flex sets the runtime here, not with FUNCTIONS_WORKER_RUNTIME or FUNCTIONS_EXTENSION_VERSION
      // (both are deprecated on Flex).
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No publishing with a user name and password: deployments authenticate with Entra ID (azd, az,
// Core Tools all do). https://learn.microsoft.com/azure/app-service/configure-basic-auth-disable
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

var baseUrl = 'https://${functionApp.properties.defaultHostName}'
var baswareWebhookUrl = '${baseUrl}/api/basware/webhook'
var bcNotificationUrl = '${baseUrl}/api/bc/notifications'

// Always set. The four secrets are Key Vault references; their values never pass through ARM.
var appSettings = {
  // Host and app storage through the managed identity (the code reads the same settings:
  // shared/core/settings.py, shared/store/storage.py). No AzureWebJobsStorage connection string exists.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table

  // The app reads secrets from the vault by kebab-case name when this is set (shared/core/secrets.py).
  KEY_VAULT_URL: vault.properties.vaultUri
  // shared/core/secrets.py uses DefaultAzureCredential, which picks a user-assigned identity only when
  // told its client id. Without this the vault client finds no identity and start-up fails.
  AZURE_CLIENT_ID: identityClientId

  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  // Entra-authenticated ingestion (App Insights has local auth disabled).
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'

  BASWARE_REGION: baswareRegion
  BASWARE_CLIENT_ID: baswareClientId
  BASWARE_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=basware-client-secret)'
  BASWARE_WEBHOOK_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=basware-webhook-secret)'
  BASWARE_SCOPES: baswareScopes

  BC_TENANT_ID: bcTenantId
  BC_ENVIRONMENT: bcEnvironment
  BC_COMPANY_ID: bcCompanyId
  BC_CLIENT_ID: bcClientId
  BC_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=bc-client-secret)'
  BC_API_URL: bcApiUrl
  BC_AUTHORITY_URL: bcAuthorityUrl
  BC_NOTIFICATION_URL: bcNotificationUrl
  BC_CLIENT_STATE: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=bc-client-state)'

  COMPANY_MAP: string(companyMap)
  DIMENSION_MAP: string(dimensionMap)
  TAX_CODE_MAP: string(taxCodeMap)
  POST_MODE: postMode
  TOTAL_TOLERANCE: totalTolerance
  ATTACHMENT_CATEGORIES: attachmentCategories
  ATTACHMENT_REQUIRED: string(attachmentRequired)
  BC_PARTIAL_PAYMENTS: bcPartialPayments
  BC_LATE_COMMIT_WINDOW_SECONDS: bcLateCommitWindowSeconds
  BC_MAX_CONCURRENT_REQUESTS: string(bcMaxConcurrentRequests)

  POLL_SCHEDULE: pollSchedule
  MASTERDATA_SCHEDULE: masterdataSchedule
  PAYMENT_SCHEDULE: paymentSchedule
  PO_SYNC_SCHEDULE: poSyncSchedule
  SUBSCRIPTION_SCHEDULE: subscriptionSchedule
  RETENTION_SCHEDULE: retentionSchedule
  RETENTION_DAYS: string(retentionDays)
}

// Set only when given; otherwise the app derives them (regional host, {BASWARE_API_URL}/v1/tokens).
var optionalAppSettings = union(
  empty(baswareApiUrl) ? {} : { BASWARE_API_URL: baswareApiUrl },
  empty(baswareTokenUrl) ? {} : { BASWARE_TOKEN_URL: baswareTokenUrl }
)

// A separate config resource (not siteConfig.appSettings) so that BC_NOTIFICATION_URL can use the
// app's own host name. It replaces the whole set, so settings removed here disappear from Azure too.
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(appSettings, optionalAppSettings)
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
output baswareWebhookUrl string = baswareWebhookUrl
output bcNotificationUrl string = bcNotificationUrl
