// PostgreSQL Flexible Server for tally's ledger, rollups and alert state.
// Microsoft Entra authentication only: no password exists. The container
// app's user-assigned identity is the Entra administrator; tally signs in
// as that identity with a token (TALLY_DATABASE_AUTH=azure).

@description('Name of the server (lowercase letters, digits and hyphens).')
param name string

@description('Region.')
param location string

@description('Tags for the resources.')
param tags object = {}

@description('Compute size. Standard_B1ms (1 vCore, 2 GiB, Burstable) is the cheapest.')
param skuName string = 'Standard_B1ms'

@description('Tier matching skuName.')
@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param skuTier string = 'Burstable'

@description('Storage in GiB (32 is the smallest).')
@minValue(32)
param storageSizeGB int = 32

@description('PostgreSQL major version.')
@allowed([
  '16'
  '17'
])
param version string = '16'

@description('Days of point-in-time backups (7 is the smallest and is included in the price up to the server\'s storage size).')
@minValue(7)
@maxValue(35)
param backupRetentionDays int = 7

@description('Object (principal) id of the identity made Entra administrator.')
param administratorPrincipalId string

@description('Name of that identity; it is also the PostgreSQL role tally signs in as.')
param administratorPrincipalName string

@description('Open the server to connections from Azure services (firewall rule 0.0.0.0). Container Apps without a virtual network have no fixed outbound address, so this is how the app reaches the server; sign-in still needs an Entra token of an administrator or a role created for it.')
param allowAzureServices bool = true

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: version
    createMode: 'Default'
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Disabled'
    }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
    network: {
      publicNetworkAccess: 'Enabled'
    }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: subscription().tenantId
    }
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: 'tally'
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

// The server takes one change at a time: the firewall rule and the
// administrator wait for the database (and each other).
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (allowAzureServices) {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
  dependsOn: [
    database
  ]
}

resource entraAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: server
  name: administratorPrincipalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: administratorPrincipalName
    tenantId: subscription().tenantId
  }
  dependsOn: [
    database
    allowAzure
  ]
}

output id string = server.id
output name string = server.name
output fqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
