// Storage for the Functions host, the deployment package, and the connector's queues and tables.
// Identity only: shared keys are off, so no connection string with a key exists anywhere.
param name string
param location string
param tags object = {}
@description('Blob containers: the deployment package\'s and the Functions host\'s (app/rbac.bicep grants each one).')
param blobContainerNames array
@description('True: reachable only through the private endpoints of app/network.bicep.')
param vnetEnabled bool = true
@description('Every queue the app uses, poison queues included.')
param queueNames array
param tableNames array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    // Private by default: the app reaches blob, queue and table through private endpoints
    // (app/network.bicep), and nothing on the internet reaches the account, not even with a
    // valid token. vnetEnabled false (a quick trial) leaves the endpoints public, with every
    // request still needing an Entra token with a data role.
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

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// Created here, not by the host on first use, so that each can carry its own role assignment
// (app/rbac.bicep): Flex Consumption runs the app from a zip in the deployment container, and the
// Functions host keeps timer schedules, singleton locks and its host lease in azure-webjobs-hosts
// and function keys in azure-webjobs-secrets
// (https://learn.microsoft.com/azure/azure-functions/storage-considerations).
resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in blobContainerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

output name string = account.name
output id string = account.id
