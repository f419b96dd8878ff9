// Log alerts over the app's structured log lines (`event=<name> key=value ...`, shared/core/telemetry.py)
// as they land in Application Insights `traces`.
param location string
param tags object = {}
param appInsightsName string
@description('Receives the alerts by e-mail. Empty: no action group; alerts still show in Azure Monitor.')
param alertEmail string = ''
param namePrefix string
@description('429 responses (from BC or Basware) in 15 minutes that count as "repeated".')
@minValue(1)
param throttledThreshold int = 20

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${namePrefix}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'mlconnector'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actionGroupIds = empty(alertEmail) ? [] : [resourceId('Microsoft.Insights/actionGroups', 'ag-${namePrefix}')]

var rules = [
  {
    name: 'dead-lettered-jobs'
    displayName: 'ml-connector: job dead-lettered'
    description: 'A job exhausted its retries and was dead-lettered (shared/store/deadletter.py). Find it with GET /api/manage/records?status=dead_lettered, fix the cause, then replay it.'
    severity: 1
    query: 'traces\n| where message contains "event=job.dead_lettered"'
    threshold: 0
  }
  {
    name: 'failed-transfers'
    displayName: 'ml-connector: invoice transfer failed'
    description: 'An invoice could not be booked in Business Central and a failure transfer response went to Basware. The AP clerk sees the reason in Basware; check GET /api/manage/records?kind=invoice&status=failed.'
    severity: 2
    query: 'traces\n| where message contains "event=transfer.failed"'
    threshold: 0
  }
  {
    name: 'repeated-throttling'
    displayName: 'ml-connector: repeated 429 throttling'
    description: 'BC or Basware answered 429 more than ${throttledThreshold} times in 15 minutes: the connector is at the API limits (BC: 5 concurrent, 6,000 per 5 minutes per principal). The message names the system and path.'
    severity: 2
    query: 'traces\n| where message contains "event=http.throttled"'
    threshold: throttledThreshold
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: 'alert-${namePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  // The rules name the action group by id, not by symbol, so the order is explicit.
  dependsOn: [actionGroup]
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}]
