// ml-connector: everything in one resource-group deployment (`azd up`, or `az deployment group create`).
//
// Layout follows Azure-Samples/functions-quickstart-python-azd-timer: this file wires small modules;
// app/api.bicep holds the Flex Consumption app and every app setting; app/rbac.bicep holds every
// role assignment. No secret value appears here: the four secrets are put into the vault after
// deployment (docs/deploy.md) and the app reads them through Key Vault references.
targetScope = 'resourceGroup'

// ---- deployment ----

@minLength(1)
@maxLength(64)
@description('azd environment name; seeds the unique suffix of every resource name.')
param environmentName string

@description('Region of all resources. Must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Object id of the person or pipeline deploying. Gets Key Vault Secrets Officer on the vault so it can run `az keyvault secret set`. Empty: no assignment.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal', 'Group'])
param principalType string = 'User'

@description('E-mail address that receives the operational alerts. Empty: alerts fire in Azure Monitor without notification.')
param alertEmail string = ''

@description('Application (client) id of the Entra app registration operators sign in to the console with (docs/deploy.md, "Operator sign-in"). Empty: no sign-in in front of the app; the operator routes still need the function key.')
param consoleClientId string = ''

@description('Object id of the Entra group allowed to sign in to the console; empty: whoever the app registration admits.')
param consoleAllowedGroupId string = ''

@description('Upper bound of Flex instances per scale group. 40 is the lowest Flex Consumption accepts (learn.microsoft.com/azure/azure-functions/flex-consumption-plan). BC\'s limits do not depend on it: bcMaxConcurrentRequests bounds the requests of all instances together (shared/clients/budget.py).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('BC requests in flight at once from every instance together (BC_MAX_CONCURRENT_REQUESTS): BC processes 5 per principal and queues 95 more. Why 10: shared/clients/budget.py.')
@minValue(1)
@maxValue(100)
param bcMaxConcurrentRequests int = 10

@description('True (default): a virtual network, with storage and Key Vault reachable only through private endpoints (app/network.bicep). False: a quick trial without the network, with storage and Key Vault on public endpoints (identity-only). See docs/deploy.md "Network".')
param vnetEnabled bool = true

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Concurrent HTTP invocations per instance. HTTP routes only enqueue or answer operators, so one instance takes them all.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('How long Log Analytics keeps logs (the audit trail itself lives in the audit table).')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

// ---- connector settings (README.md, "Settings"; shared/core/settings.py reads them) ----

@allowed(['EU', 'US', 'AU', 'CA'])
param baswareRegion string = 'EU'

@description('Basware API base URL. Empty: the regional host built into the app (only EU has one; US/AU/CA must set it).')
param baswareApiUrl string = ''

@description('Basware token endpoint. Empty: {BASWARE_API_URL}/v1/tokens.')
param baswareTokenUrl string = ''

@minLength(1)
@description('Basware API client id (the secret goes to Key Vault as basware-client-secret).')
param baswareClientId string

@description('Basware OAuth scopes. Empty: the full default set below.')
param baswareScopes string = ''

@minLength(1)
@description('Entra tenant id of the Business Central environment.')
param bcTenantId string

@minLength(1)
@description('Business Central environment name, e.g. Production.')
param bcEnvironment string

@minLength(1)
@description('Default BC company id (GET .../api/v2.0/companies).')
param bcCompanyId string

@minLength(1)
@description('Entra app (client) id registered in BC (the secret goes to Key Vault as bc-client-secret).')
param bcClientId string

@description('BC API host. Empty: https://api.businesscentral.dynamics.com.')
param bcApiUrl string = ''

@description('Entra authority host. Empty: this cloud\'s login endpoint.')
param bcAuthorityUrl string = ''

@description('{"<basware companyCode>": "<BC company id>"}. Empty: every company code -> bcCompanyId.')
param companyMap object = {}

@description('[{"dimension": "DEPARTMENT", "basware_field": "costCenterCode", "target": "costCenter"}, ...]')
param dimensionMap array = []

@description('{"<basware taxCode>": "<BC tax code>"}. Empty: codes pass through unchanged.')
param taxCodeMap object = {}

@allowed(['post', 'draft'])
param postMode string = 'post'

@description('Allowed BC-vs-Basware gross difference. Empty: 0.01.')
param totalTolerance string = ''
@description('Report partial payments and reversals from BC\'s analytics vendorLedgerEntries API (the tenant must offer it): true or false')
param bcPartialPayments string = 'false'

@description('Basware attachment categories copied onto the BC invoice (ORIGINALIMAGE, ATTACHMENT, EXPORTEDEMAIL; CONFIDENTIAL to include confidential ones; NONE). Empty: ORIGINALIMAGE. The Basware tenant must have OpenApi.SendInvoiceAttachments enabled.')
param attachmentCategories string = ''

@description('true: an invoice whose original image Basware cannot give fails the transfer instead of posting without it.')
param attachmentRequired bool = false
@description('Seconds BC may still commit a request the connector gave up on (BC_LATE_COMMIT_WINDOW_SECONDS)')
param bcLateCommitWindowSeconds string = ''

@description('Six-field NCRONTAB schedules (UTC: Flex has no WEBSITE_TIME_ZONE). Empty: the defaults below.')
param pollSchedule string = ''
param masterdataSchedule string = ''
param paymentSchedule string = ''
param poSyncSchedule string = ''
param subscriptionSchedule string = ''
param retentionSchedule string = ''

@minValue(1)
@description('Days finished jobs and audit rows are kept.')
param retentionDays int = 400

// ---- names and defaults ----

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = { 'azd-env-name': environmentName }
var functionAppName = 'func-mlc-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
// The blob containers the app's identity may use, each granted on its own (app/rbac.bicep):
// the Flex deployment package and the Functions host's own two containers.
var appBlobContainers = [
  deploymentContainerName
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

// The app's defaults (shared/core/settings.py DEFAULT_SCHEDULES), set explicitly so the portal shows
// what runs. The app would use the same defaults with the settings unset (shared/core/settings.py
// timer_schedule).
var defaultSchedules = {
  POLL_SCHEDULE: '0 */5 * * * *'
  MASTERDATA_SCHEDULE: '0 0 * * * *'
  PAYMENT_SCHEDULE: '0 */15 * * * *'
  PO_SYNC_SCHEDULE: '0 30 * * * *'
  SUBSCRIPTION_SCHEDULE: '0 0 */12 * * *'
  RETENTION_SCHEDULE: '0 15 3 * * *'
}
var defaultBaswareScopes = 'accountingDocuments.read accountingDocuments.write vendors.write accounts.write costCenters.write lists.write projects.write matchingOrders.write matchingOrderLines.write requestStatus.read subscriptions.read subscriptions.write'
var defaultBcApiUrl = 'https://api.businesscentral.dynamics.com'
var defaultTotalTolerance = '0.01'
var defaultBcLateCommitWindowSeconds = '960'

// Queues and tables the code uses (shared/store/storage.py), created up front so no
// trigger or poison handler waits for a first write. `<queue>-poison` is where the runtime moves a
// message after maxDequeueCount failures; each has a dead-letter trigger.
var appQueues = [
  'invoice-transfers'
  'invoice-transfers-poison'
  'basware-callbacks'
  'basware-callbacks-poison'
  'payment-checks'
  'payment-checks-poison'
  'masterdata-imports'
  'masterdata-imports-poison'
]
var appTables = [
  'jobs'
  'audit'
  'syncstate'
]

// ---- resources ----

// The app's only identity: storage, Key Vault references, the Key Vault client and Entra-authenticated
// App Insights ingestion all use it. Its roles are in app/rbac.bicep.
resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-mlc-${resourceToken}'
  location: location
  tags: tags
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'stmlc${resourceToken}'
    location: location
    tags: tags
    blobContainerNames: appBlobContainers
    vnetEnabled: vnetEnabled
    queueNames: appQueues
    tableNames: appTables
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv-mlc-${resourceToken}'
    location: location
    tags: tags
    vnetEnabled: vnetEnabled
  }
}

// Private endpoints and DNS for storage and Key Vault, and the subnet the app integrates with.
module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  params: {
    vnetName: 'vnet-mlc-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-mlc-${resourceToken}'
    appInsightsName: 'appi-mlc-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  params: {
    storageAccountName: storage.outputs.name
    blobContainerNames: appBlobContainers
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    appPrincipalId: appIdentity.properties.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  // Roles and private endpoints first: the platform reads the deployment container and resolves
  // Key Vault references with the identity, over the network, as soon as the app exists.
  dependsOn: [rbac, network]
  params: {
    name: functionAppName
    planName: 'plan-mlc-${resourceToken}'
    location: location
    tags: tags
    identityId: appIdentity.id
    identityClientId: appIdentity.properties.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    maximumInstanceCount: maximumInstanceCount
    bcMaxConcurrentRequests: bcMaxConcurrentRequests
    instanceMemoryMB: instanceMemoryMB
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    baswareRegion: baswareRegion
    baswareApiUrl: baswareApiUrl
    baswareTokenUrl: baswareTokenUrl
    baswareClientId: baswareClientId
    baswareScopes: empty(baswareScopes) ? defaultBaswareScopes : baswareScopes
    bcTenantId: bcTenantId
    bcEnvironment: bcEnvironment
    bcCompanyId: bcCompanyId
    bcClientId: bcClientId
    bcApiUrl: empty(bcApiUrl) ? defaultBcApiUrl : bcApiUrl
    bcAuthorityUrl: empty(bcAuthorityUrl) ? environment().authentication.loginEndpoint : bcAuthorityUrl
    companyMap: empty(companyMap) ? { '*': bcCompanyId } : companyMap
    dimensionMap: dimensionMap
    taxCodeMap: taxCodeMap
    postMode: postMode
    totalTolerance: empty(totalTolerance) ? defaultTotalTolerance : totalTolerance
    attachmentCategories: empty(attachmentCategories) ? 'ORIGINALIMAGE' : attachmentCategories
    attachmentRequired: attachmentRequired
    bcPartialPayments: bcPartialPayments
    bcLateCommitWindowSeconds: empty(bcLateCommitWindowSeconds) ? defaultBcLateCommitWindowSeconds : bcLateCommitWindowSeconds
    pollSchedule: empty(pollSchedule) ? defaultSchedules.POLL_SCHEDULE : pollSchedule
    masterdataSchedule: empty(masterdataSchedule) ? defaultSchedules.MASTERDATA_SCHEDULE : masterdataSchedule
    paymentSchedule: empty(paymentSchedule) ? defaultSchedules.PAYMENT_SCHEDULE : paymentSchedule
    poSyncSchedule: empty(poSyncSchedule) ? defaultSchedules.PO_SYNC_SCHEDULE : poSyncSchedule
    subscriptionSchedule: empty(subscriptionSchedule) ? defaultSchedules.SUBSCRIPTION_SCHEDULE : subscriptionSchedule
    retentionSchedule: empty(retentionSchedule) ? defaultSchedules.RETENTION_SCHEDULE : retentionSchedule
    retentionDays: retentionDays
  }
}

// Entra ID sign-in for the console and the records routes; the webhook routes stay anonymous.
module auth 'app/auth.bicep' = if (!empty(consoleClientId)) {
  name: 'auth'
  params: {
    functionAppName: api.outputs.name
    clientId: consoleClientId
    tenantId: tenant().tenantId
    allowedGroupId: consoleAllowedGroupId
  }
}

module diagnostics 'app/diagnostics.bicep' = {
  name: 'diagnostics'
  params: {
    functionAppName: api.outputs.name
    keyVaultName: keyVault.outputs.name
    workspaceId: monitoring.outputs.workspaceId
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    alertEmail: alertEmail
    namePrefix: 'mlc-${resourceToken}'
  }
}

// ---- outputs (azd stores them in the environment; docs/deploy.md uses them) ----

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_NAME string = api.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_APP_IDENTITY_CLIENT_ID string = appIdentity.properties.clientId
@description('Register this in Basware as notificationWebhookURL (POST /v1/subscriptions).')
output BASWARE_WEBHOOK_URL string = api.outputs.baswareWebhookUrl
@description('The app registers this with BC itself (BC_NOTIFICATION_URL); shown for reference.')
output BC_NOTIFICATION_URL string = api.outputs.bcNotificationUrl
