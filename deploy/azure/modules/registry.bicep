// Azure Container Registry for tally's image (azd pushes to it). No admin
// user: the container app pulls with its identity (AcrPull, roles.bicep).

@description('Name of the registry (5-50 letters and digits).')
param name string

@description('Region.')
param location string

@description('Tags for the resource.')
param tags object = {}

@description('Tier. Basic is the cheapest (10 GiB included).')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param skuName string = 'Basic'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    adminUserEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

output id string = registry.id
output name string = registry.name
output loginServer string = registry.properties.loginServer
