// The user-assigned identity tally runs as. It exists before the container
// app, so its Key Vault, registry, storage and PostgreSQL rights can be
// granted first and the app starts with them in place.

@description('Name of the identity.')
param name string

@description('Region.')
param location string

@description('Tags for the resource.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
