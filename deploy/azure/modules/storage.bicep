// The Parquet lake: a StorageV2 account reachable only with Entra tokens
// (shared keys off, so no connection string or account key exists to leak),
// one private container, and the lifecycle policy kept in
// ../lake-lifecycle-policy.json (the same file `az storage account
// management-policy create` takes).

@description('Name of the storage account (3-24 lowercase letters and digits).')
param name string

@description('Region.')
param location string

@description('Tags for the resources.')
param tags object = {}

@description('Replication. Standard_LRS is the cheapest; the lifecycle policy\'s archive tier needs LRS, GRS or RA-GRS.')
@allowed([
  'Standard_LRS'
  'Standard_GRS'
  'Standard_RAGRS'
])
param skuName string = 'Standard_LRS'

@description('Container of the lake. lake-lifecycle-policy.json names its prefixes as <container>/<prefix>/<signal>/: change both together.')
param containerName string = 'telemetry'

@description('Days a deleted blob can be restored (0: blob soft delete off).')
@minValue(0)
@maxValue(365)
param deleteRetentionDays int = 7

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: deleteRetentionDays > 0
      days: deleteRetentionDays > 0 ? deleteRetentionDays : null
    }
  }
}

resource lakeContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

// Hot -> cool (30 days) -> archive (90) -> delete (365 for telemetry, 7 years
// for usage). The rules' prefixes start with the container name.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: loadJsonContent('../lake-lifecycle-policy.json')
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output containerName string = lakeContainer.name
