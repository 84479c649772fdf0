// The Azure Monitor workbook for tally, shown under the Application Insights
// component (Workbooks). Its content is dashboards/workbooks/tally.workbook.json.

@description('Region.')
param location string

@description('Tags for the resource.')
param tags object = {}

@description('Resource id of the Application Insights component the workbook opens on.')
param appInsightsId string

@description('Title shown in the portal.')
param displayName string = 'tally'

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsightsId, 'tally-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    version: 'Notebook/1.0'
    serializedData: loadTextContent('../../../dashboards/workbooks/tally.workbook.json')
    sourceId: appInsightsId
  }
}

output id string = workbook.id
