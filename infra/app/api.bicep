// The function app on Flex Consumption, and every app setting the code reads (spec.md section 2),
// in one place: `appSettings` (always set) and `optionalAppSettings` (set only when given).
// tests/test_infra.py checks these against shared/core/settings.py SETTING_NAMES.
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
param instanceMemoryMB int
param httpPerInstanceConcurrency int

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

// ---- How the app stays inside Business Central's per-principal limits ----
// BC allows one principal (our Entra app) 5 requests in processing at once and 6,000 requests per
// sliding 5 minutes; extra requests wait in a server-side queue (up to 100 connections), beyond that
// BC answers 429 (reference/bc-api.md 6.5). Flex Consumption has no setting that caps a whole app
// at 5 concurrent outbound calls, so the limit is enforced in three layers:
//
// 1. Per instance, the hard cap: the app builds one BC client per worker process
//    (shared/core/runtime.py) and that client lets at most 5 requests through at once
//    (shared/clients/http.py, a BoundedSemaphore(5)). Python runs one worker process per instance, because
//    this template does not set FUNCTIONS_WORKER_PROCESS_COUNT. So one instance never has more than
//    5 BC requests in flight, however many invocations it runs.
// 2. Per queue function and instance: host.json `extensions.queues` batchSize 4 + newBatchThreshold 2
//    means at most 6 messages of one queue run at once on an instance, and a sixth one waits on the
//    client's semaphore, not in BC. batchSize is also Flex's scale target for Storage queues
//    (desired instances = backlog / batchSize), so instances are added only for a backlog: invoices
//    arrive one webhook at a time and keep each queue function on a single instance.
// 3. Across instances: `maximumInstanceCount` sits at 40, the lowest value Microsoft documented for
//    Flex (reference/peers-and-conventions.md C.3). It bounds a burst, but only loosely. Flex scales
//    each queue function on its own instances (the HTTP routes share one group), so a backlog of
//    160 messages could run 40 instances x 5 = 200 BC requests.
//
// Beyond the budget the design degrades, it does not break: BC queues the extra requests instead of
// failing them, and a 429 is retried with backoff that honours Retry-After (shared/clients/http.py). The
// queue then redelivers after visibilityTimeout, and after maxDequeueCount the job is dead-lettered
// and can be replayed. Jobs are idempotent (spec.md 1.1), and app/alerts.bicep alerts on repeated
// 429s. For the rate budget, 6,000 requests per 5 minutes is 20 a second, which one instance with 5
// requests in flight reaches only if BC answers in under 250 ms.
//
// A strict global cap needs a cross-instance limiter in shared/clients/http.py, for example five blob leases
// in this storage account. Lowering `maximumInstanceCount` narrows a burst but cannot get to 5: newer
// Microsoft pages are reported to allow values down to 1 (not verified here; main.bicep accepts it
// so it can be tried), but the cap applies per scale group, and each queue function is its own group.
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
    // Key Vault references resolve with the user-assigned identity (the default would be a
    // system-assigned identity, which this app does not have).
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
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
