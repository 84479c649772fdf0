// tally on Azure: one container app with its identity, registry, Key Vault,
// Blob Storage lake, PostgreSQL Flexible Server (Entra sign-in only), Log
// Analytics + Application Insights and a workbook. Deployed into one
// resource group by `azd up` (azure.yaml at the repository root) or
// `az deployment group create -f deploy/azure/main.bicep`.
targetScope = 'resourceGroup'

@description('Name of the environment (azd: AZURE_ENV_NAME); goes into resource names and the azd-env-name tag.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Region of every resource (azd: AZURE_LOCATION).')
@minLength(1)
param location string = resourceGroup().location

@description('Object id of whoever runs the deployment (azd: AZURE_PRINCIPAL_ID): may manage the vault\'s secrets and read the lake. Empty: no rights are given.')
param principalId string = ''

@description('Kind of principalId: User, or ServicePrincipal for a pipeline.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Image to run (azd: SERVICE_TALLY_IMAGE_NAME). Empty: keep the running image, or a placeholder on the first run.')
param image string = ''

@description('Whether the container app exists already (azd: SERVICE_TALLY_RESOURCE_EXISTS).')
param tallyExists bool = false

@description('Stripe secret API key; stored in Key Vault only. Empty: tally runs without Stripe.')
@secure()
param stripeApiKey string = ''

@description('Stripe webhook signing secret; stored in Key Vault only.')
@secure()
param stripeWebhookSecret string = ''

// Sizes. The defaults are the cheapest that run tally; see deploy/azure/README.md.
@description('PostgreSQL compute size.')
param postgresSkuName string = 'Standard_B1ms'

@description('PostgreSQL tier matching postgresSkuName.')
@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param postgresSkuTier string = 'Burstable'

@description('PostgreSQL storage in GiB.')
@minValue(32)
param postgresStorageSizeGB int = 32

@description('PostgreSQL major version.')
@allowed([
  '16'
  '17'
])
param postgresVersion string = '16'

@description('Container registry tier.')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param registrySku string = 'Basic'

@description('Lake storage replication.')
@allowed([
  'Standard_LRS'
  'Standard_GRS'
  'Standard_RAGRS'
])
param storageSku string = 'Standard_LRS'

@description('vCPU per replica.')
param containerCpu string = '0.5'

@description('Memory per replica (2 GiB per vCPU).')
param containerMemory string = '1Gi'

@description('Replicas always running (at least 1).')
@minValue(1)
param minReplicas int = 1

@description('Most replicas under load.')
@minValue(1)
param maxReplicas int = 3

@description('Log Analytics daily ingestion cap in GB (-1: none).')
param logAnalyticsDailyQuotaGb int = 1

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// The lake's container and prefix. lake-lifecycle-policy.json's rules match
// '<container>/<prefix>/<signal>/': change them together.
var lakeContainer = 'telemetry'
var lakePrefix = 'tally'

var secretNames = {
  appInsights: 'applicationinsights-connection-string'
  stripeApiKey: 'stripe-api-key'
  stripeWebhook: 'stripe-webhook-secret'
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-tally-${token}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-tally-${token}'
    appInsightsName: 'appi-tally-${token}'
    location: location
    tags: tags
    dailyQuotaGb: logAnalyticsDailyQuotaGb
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv-${token}'
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    secretNames: secretNames
    stripeApiKey: stripeApiKey
    stripeWebhookSecret: stripeWebhookSecret
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${token}'
    location: location
    tags: tags
    skuName: storageSku
    containerName: lakeContainer
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    name: 'psql-tally-${token}'
    location: location
    tags: tags
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    storageSizeGB: postgresStorageSizeGB
    version: postgresVersion
    administratorPrincipalId: identity.outputs.principalId
    administratorPrincipalName: identity.outputs.name
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    name: 'crtally${token}'
    location: location
    tags: tags
    skuName: registrySku
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    registryName: registry.outputs.name
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module app 'modules/containerapp.bicep' = {
  name: 'containerapp'
  params: {
    environmentName: 'cae-tally-${token}'
    appName: 'ca-tally-${token}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    identityName: identity.outputs.name
    registryLoginServer: registry.outputs.loginServer
    image: image
    exists: tallyExists
    cpu: containerCpu
    memory: containerMemory
    minReplicas: minReplicas
    maxReplicas: maxReplicas
    keyVaultUri: keyVault.outputs.uri
    secretNames: secretNames
    stripeApiKeyConfigured: !empty(stripeApiKey)
    stripeWebhookConfigured: !empty(stripeWebhookSecret)
    postgresHost: postgres.outputs.fqdn
    databaseName: postgres.outputs.databaseName
    storageAccountName: storage.outputs.name
    lakeUrl: 'az://${lakeContainer}/${lakePrefix}'
  }
  // The identity must hold AcrPull and Key Vault Secrets User before the app
  // pulls its image and resolves its secrets.
  dependsOn: [
    roles
  ]
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

// Read by azd into .azure/<env>/.env after provisioning.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_ENVIRONMENT_NAME string = app.outputs.environmentName
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_IDENTITY_NAME string = identity.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output POSTGRES_HOST string = postgres.outputs.fqdn
output TALLY_LAKE_URL string = 'az://${lakeContainer}/${lakePrefix}'
output SERVICE_TALLY_NAME string = app.outputs.name
output SERVICE_TALLY_URI string = app.outputs.uri
