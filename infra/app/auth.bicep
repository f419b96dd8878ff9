// Entra ID sign-in (App Service authentication, "Easy Auth") in front of the operator routes.
// Deployed by main.bicep when consoleClientId names an Entra app registration (docs/deploy.md,
// "Operator sign-in"). The platform checks the sign-in before a request reaches the Functions
// host, so every route needs it except the paths listed in excludedPaths:
// - /api/basware/webhook and /api/bc/notifications: Basware and BC call them with no Entra token
//   (they check their own HMAC signature and clientState);
// - /api/health: monitoring probes carry no Entra token; it still needs the function key and
//   returns check results only, no AP data.
// The function key stays required on the records and console data routes as well: sign-in says
// who the operator is, the key keeps those routes closed if this configuration is ever removed.
// https://learn.microsoft.com/azure/app-service/configure-authentication-file-based
// https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad

param functionAppName string
@description('Application (client) id of the Entra app registration operators sign in to.')
param clientId string
@description('Entra tenant of the operators.')
param tenantId string
@description('Object id of the Entra group whose members may sign in; empty: anyone the app registration allows (assign users to it).')
param allowedGroupId string = ''

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: [
        '/api/basware/webhook'
        '/api/bc/notifications'
        '/api/health'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: clientId
          // No client secret: sign-in uses the ID token the authorize endpoint returns (enable
          // "ID tokens" on the registration), so no secret has to be created, stored or rotated.
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            clientId
            'api://${clientId}'
          ]
          defaultAuthorizationPolicy: {
            allowedPrincipals: empty(allowedGroupId) ? {} : {
              groups: [
                allowedGroupId
              ]
            }
          }
        }
      }
    }
    login: {
      // The session lives in the platform's encrypted cookie; the token store would need a blob
      // SAS URL (a shared key), and this app calls no API on the operator's behalf.
      tokenStore: {
        enabled: false
      }
      cookieExpiration: {
        convention: 'FixedTime'
        timeToExpiration: '08:00:00'
      }
    }
  }
}
