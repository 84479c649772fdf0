// Container Apps environment (logs to Log Analytics through Azure Monitor
// diagnostic settings: no workspace key is handed over) and the tally app.
//
// One ingress port: tally serves OTLP/gRPC (h2c), OTLP/HTTP and its API on
// 8080 (TALLY_LISTEN_ADDR). Ingress transport is http2 so gRPC works end to
// end; HTTP/1.1 clients are still served (the edge speaks both to them).

@description('Name of the Container Apps environment.')
param environmentName string

@description('Name of the container app.')
param appName string

@description('Region.')
param location string

@description('Tags for the resources (the app also gets azd-service-name: tally).')
param tags object = {}

@description('Log Analytics workspace that receives the environment\'s console and system logs.')
param logAnalyticsWorkspaceId string

@description('Resource id of tally\'s user-assigned identity.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID: picks it for tokens).')
param identityClientId string

@description('Name of that identity: tally\'s PostgreSQL role.')
param identityName string

@description('Login server of the registry the image comes from.')
param registryLoginServer string

@description('Image to run. Empty: the image the app runs now (when it exists) or a placeholder until `azd deploy` pushes tally\'s.')
param image string = ''

@description('Whether the app exists already (azd: SERVICE_TALLY_RESOURCE_EXISTS).')
param exists bool = false

@description('vCPU per replica: 0.25, 0.5, 0.75, 1, ... (memory must be 2 GiB per vCPU on the consumption plan).')
param cpu string = '0.5'

@description('Memory per replica, e.g. 1Gi for 0.5 vCPU.')
param memory string = '1Gi'

@description('Replicas always running. At least 1: alert evaluation, Stripe sync and the usage export run in the background.')
@minValue(1)
param minReplicas int = 1

@description('Most replicas under load.')
@minValue(1)
param maxReplicas int = 3

@description('Requests in flight per replica before another is added.')
@minValue(1)
param concurrentRequests int = 50

@description('Key Vault URI (https://<vault>.vault.azure.net/).')
param keyVaultUri string

@description('Names of the vault secrets: { appInsights, stripeApiKey, stripeWebhook }.')
param secretNames object

@description('Whether the vault holds a Stripe API key.')
param stripeApiKeyConfigured bool = false

@description('Whether the vault holds a Stripe webhook secret.')
param stripeWebhookConfigured bool = false

@description('Host name of the PostgreSQL server.')
param postgresHost string

@description('Database name.')
param databaseName string = 'tally'

@description('Storage account of the lake.')
param storageAccountName string

@description('Lake URL, az://<container>/<prefix>.')
param lakeUrl string

@description('Most bytes of finished Parquet files waiting for upload on the replica\'s disk (lake.max_spool_bytes). Keep it under the replica\'s ephemeral storage: 1 GiB at 0.25 vCPU, 2 GiB at 0.5, 4 GiB at 1.')
param lakeMaxSpoolBytes int = 1073741824

var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'

module currentImage 'fetch-image.bicep' = {
  name: '${deployment().name}-current-image'
  params: {
    name: appName
    exists: exists
  }
}

var resolvedImage = !empty(image) ? image : (exists ? currentImage.outputs.image : placeholderImage)

// Secrets are Key Vault references read with the user-assigned identity;
// their values never pass through this template.
var appInsightsSecret = {
  name: 'appinsights-connection-string'
  keyVaultUrl: '${keyVaultUri}secrets/${secretNames.appInsights}'
  identity: identityId
}
var stripeApiKeySecret = {
  name: 'stripe-api-key'
  keyVaultUrl: '${keyVaultUri}secrets/${secretNames.stripeApiKey}'
  identity: identityId
}
var stripeWebhookSecret = {
  name: 'stripe-webhook-secret'
  keyVaultUrl: '${keyVaultUri}secrets/${secretNames.stripeWebhook}'
  identity: identityId
}
var secrets = concat(
  [
    appInsightsSecret
  ],
  stripeApiKeyConfigured ? [stripeApiKeySecret] : [],
  stripeWebhookConfigured ? [stripeWebhookSecret] : []
)

var plainEnv = [
  {
    name: 'TALLY_LISTEN_ADDR'
    value: '0.0.0.0:8080'
  }
  {
    name: 'TALLY_DATA_DIR'
    value: '/var/lib/tally'
  }
  {
    name: 'TALLY_LOG_FORMAT'
    value: 'json'
  }
  {
    // No password in the URL: the password is an Entra token of the identity.
    name: 'TALLY_DATABASE_URL'
    value: 'postgres://${identityName}@${postgresHost}:5432/${databaseName}?sslmode=require'
  }
  {
    name: 'TALLY_DATABASE_AUTH'
    value: 'azure'
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'TALLY_LAKE_URL'
    value: lakeUrl
  }
  {
    name: 'AZURE_STORAGE_ACCOUNT_NAME'
    value: storageAccountName
  }
  {
    name: 'TALLY_LAKE_MAX_SPOOL_BYTES'
    value: string(lakeMaxSpoolBytes)
  }
]
var appInsightsEnv = {
  name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
  secretRef: appInsightsSecret.name
}
var stripeApiKeyEnv = {
  name: 'STRIPE_API_KEY'
  secretRef: stripeApiKeySecret.name
}
var stripeWebhookEnv = {
  name: 'STRIPE_WEBHOOK_SECRET'
  secretRef: stripeWebhookSecret.name
}
var containerEnv = concat(
  plainEnv,
  [
    appInsightsEnv
  ],
  stripeApiKeyConfigured ? [stripeApiKeyEnv] : [],
  stripeWebhookConfigured ? [stripeWebhookEnv] : []
)

resource managedEnv 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
    zoneRedundant: false
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'logs-to-workspace'
  scope: managedEnv
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'ContainerAppConsoleLogs'
        enabled: true
      }
      {
        category: 'ContainerAppSystemLogs'
        enabled: true
      }
    ]
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: appName
  location: location
  tags: union(tags, {
    'azd-service-name': 'tally'
  })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: managedEnv.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 8080
        transport: 'http2'
        allowInsecure: false
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
      }
      registries: [
        {
          server: registryLoginServer
          identity: identityId
        }
      ]
      secrets: secrets
    }
    template: {
      containers: [
        {
          name: 'tally'
          image: resolvedImage
          env: containerEnv
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          probes: [
            {
              // Up to 10 s + 10 x 10 s for the first start (migrations).
              type: 'Startup'
              httpGet: {
                path: '/healthz'
                port: 8080
                scheme: 'HTTP'
              }
              initialDelaySeconds: 10
              periodSeconds: 10
              timeoutSeconds: 5
              failureThreshold: 10
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: 8080
                scheme: 'HTTP'
              }
              periodSeconds: 30
              timeoutSeconds: 5
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: 8080
                scheme: 'HTTP'
              }
              periodSeconds: 10
              timeoutSeconds: 5
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'http-concurrency'
            http: {
              metadata: {
                concurrentRequests: string(concurrentRequests)
              }
            }
          }
        ]
      }
    }
  }
}

output name string = app.name
output id string = app.id
output fqdn string = app.properties.configuration.ingress.fqdn
output uri string = 'https://${app.properties.configuration.ingress.fqdn}'
output environmentName string = managedEnv.name
output environmentId string = managedEnv.id
