// The image the container app runs now, so that `azd provision` on an
// existing app keeps the image `azd deploy` put there instead of going back
// to the placeholder.

@description('Name of the container app.')
param name string

@description('Whether the app exists already (azd sets SERVICE_TALLY_RESOURCE_EXISTS).')
param exists bool

resource existingApp 'Microsoft.App/containerApps@2024-03-01' existing = if (exists) {
  name: name
}

output image string = exists ? existingApp.properties.template.containers[0].image : ''
