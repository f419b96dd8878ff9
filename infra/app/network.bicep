// Private networking, as in Azure-Samples' Flex Consumption quickstarts (their `vnetEnabled` design):
// one virtual network with a subnet the function app integrates with (outbound) and a subnet for
// private endpoints. Storage (blob, queue, table) and Key Vault each get a private endpoint and a
// private DNS zone linked to the network, so the app resolves their usual host names
// (<account>.blob.core.windows.net, <vault>.vault.azure.net) to private addresses, while both
// resources refuse public network access (app/storage.bicep, app/keyvault.bicep).
// Inbound, the app stays public over HTTPS: Basware and BC must reach its webhook routes.
// Deployed by main.bicep only when vnetEnabled is true (the default).
//
// Sources: https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan (VNet integration),
// https://learn.microsoft.com/azure/private-link/private-endpoint-dns (zone names),
// https://learn.microsoft.com/azure/azure-functions/functions-networking-options.
param vnetName string
param location string
param tags object = {}
param storageAccountName string
param keyVaultName string
@description('Address space of the network; the two subnets are its first two /24s.')
param addressPrefix string = '10.0.0.0/16'

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

var appSubnetName = 'app'
var privateEndpointSubnetName = 'private-endpoints'

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: cidrSubnet(addressPrefix, 24, 1)
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
      {
        // Flex Consumption integrates with a subnet delegated to Microsoft.App/environments; a /24
        // leaves room for every instance the plan may scale to.
        name: appSubnetName
        properties: {
          addressPrefix: cidrSubnet(addressPrefix, 24, 2)
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
    ]
  }
}

// One private endpoint per storage service and one for the vault. groupId is the sub-resource;
// zone is its private DNS zone (private-endpoint-dns page above).
var endpoints = [
  {
    name: 'blob'
    serviceId: storageAccount.id
    groupId: 'blob'
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    name: 'queue'
    serviceId: storageAccount.id
    groupId: 'queue'
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    name: 'table'
    serviceId: storageAccount.id
    groupId: 'table'
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    name: 'vault'
    serviceId: vault.id
    groupId: 'vault'
    // Azure public cloud's zone for Key Vault; sovereign clouds use their own (page above).
    zone: 'privatelink.vaultcore.azure.net'
  }
]

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for endpoint in endpoints: {
  name: endpoint.zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (endpoint, i) in endpoints: {
  parent: zones[i]
  name: '${vnetName}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for endpoint in endpoints: {
  name: 'pe-${endpoint.name}-${vnetName}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: '${vnet.id}/subnets/${privateEndpointSubnetName}'
    }
    privateLinkServiceConnections: [
      {
        name: '${endpoint.name}-connection'
        properties: {
          privateLinkServiceId: endpoint.serviceId
          groupIds: [
            endpoint.groupId
          ]
        }
      }
    ]
  }
}]

// Registers each endpoint's private address in its zone (the A record the app resolves).
resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.name
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]

output vnetId string = vnet.id
output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'
