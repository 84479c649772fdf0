// Key Vault (RBAC mode, no access policies) holding tally's secrets. The
// container app reads them by reference (keyVaultUrl + the user-assigned
// identity); their values never appear in the app's definition.

@description('Name of the vault (3-24 characters).')
param name string

@description('Region.')
param location string

@description('Tags for the resources.')
param tags object = {}

@description('Application Insights component whose connection string is stored as a secret.')
param appInsightsName string

@description('Stripe secret API key (sk_...). Empty: no secret is created and tally runs without Stripe.')
@secure()
param stripeApiKey string = ''

@description('Stripe webhook signing secret (whsec_...). Empty: no secret is created.')
@secure()
param stripeWebhookSecret string = ''

@description('Names of the vault secrets: { appInsights, stripeApiKey, stripeWebhook } (main.bicep passes the same object to the container app).')
param secretNames object

@description('Days a deleted vault is kept (7-90). `azd down --purge` skips the wait.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 7

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    publicNetworkAccess: 'Enabled'
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource appInsightsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: secretNames.appInsights
  properties: {
    value: appInsights.properties.ConnectionString
    contentType: 'text/plain'
  }
}

resource stripeApiKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(stripeApiKey)) {
  parent: vault
  name: secretNames.stripeApiKey
  properties: {
    value: stripeApiKey
    contentType: 'text/plain'
  }
}

resource stripeWebhookSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(stripeWebhookSecret)) {
  parent: vault
  name: secretNames.stripeWebhook
  properties: {
    value: stripeWebhookSecret
    contentType: 'text/plain'
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
