// Private networking of the rotation app (vnetEnabled=true), in the app's own resource group and nothing outside it:
// a virtual network with two subnets, private endpoints for the app's storage account (blob, queue, table) with their
// private DNS zones linked to the network, and optionally a NAT gateway with one static public IP address.
//
//   app subnet  (/27)  - delegated to Microsoft.App/environments: the Flex Consumption plan's VNet integration. Flex
//                        routes ALL outbound traffic of the app through it (vnetRouteAllEnabled is not used on Flex), so
//                        with the NAT gateway every outbound call leaves from the one static address below.
//   pe subnet   (/27)  - the storage private endpoints; also room for a private endpoint of a target vault, which the
//                        vault's owner creates (docs/runbook.md, "Private networking and firewalled vaults").
//
// It must never create anything in another resource group: a vault's private endpoint and any peering belong to the
// vault's owner. Host names come from environment(), so the zones are right in every Azure cloud.

@description('Region of the network; Flex Consumption VNet integration needs the app and the network in one region.')
param location string

@description('Tags for every resource.')
param tags object

@description('Short unique suffix for resource names.')
param resourceToken string

@description('Address space of the virtual network. Must not overlap a network you peer it with.')
param addressPrefix string

@description('Prefix of the app subnet, inside addressPrefix: a /27 (Flex Consumption uses up to 27 addresses for its gateways).')
param appSubnetPrefix string

@description('Prefix of the private-endpoint subnet, inside addressPrefix (a /27 leaves room for vault endpoints).')
param privateEndpointSubnetPrefix string

@description('Resource id of the app\'s storage account, reached through private endpoints.')
param storageAccountId string

@description('Create a NAT gateway with a static public IP address for all outbound traffic of the app.')
param natGateway bool

// The storage services the Functions host and the app use (AzureWebJobsStorage: blobs, queues, tables).
var storageServices = [
  'blob'
  'queue'
  'table'
]

resource natPublicIp 'Microsoft.Network/publicIPAddresses@2023-11-01' = if (natGateway) {
  name: 'pip-nat-${resourceToken}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAddressVersion: 'IPv4'
    publicIPAllocationMethod: 'Static'
    idleTimeoutInMinutes: 4
  }
}

resource nat 'Microsoft.Network/natGateways@2023-11-01' = if (natGateway) {
  name: 'ng-${resourceToken}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 4
    publicIpAddresses: [
      {
        id: natPublicIp.id
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: 'vnet-${resourceToken}'
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
        // No underscore in the name: Flex Consumption refuses subnets whose names contain one.
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          natGateway: natGateway ? {
            id: nat.id
          } : null
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource storageDnsZones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for service in storageServices: {
  name: 'privatelink.${service}.${environment().suffixes.storage}'
  location: 'global'
  tags: tags
}]

resource storageDnsLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (service, i) in storageServices: {
  parent: storageDnsZones[i]
  name: 'link-${vnet.name}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource storageEndpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for service in storageServices: {
  name: 'pe-${service}-${resourceToken}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: vnet.properties.subnets[1].id
    }
    privateLinkServiceConnections: [
      {
        name: 'storage-${service}'
        properties: {
          privateLinkServiceId: storageAccountId
          groupIds: [
            service
          ]
        }
      }
    ]
  }
}]

resource storageEndpointDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (service, i) in storageServices: {
  parent: storageEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: service
        properties: {
          privateDnsZoneId: storageDnsZones[i].id
        }
      }
    ]
  }
}]

output vnetId string = vnet.id
output vnetName string = vnet.name
output appSubnetId string = vnet.properties.subnets[0].id
output privateEndpointSubnetId string = vnet.properties.subnets[1].id
output natPublicIpAddress string = natGateway ? natPublicIp.properties.ipAddress : ''
