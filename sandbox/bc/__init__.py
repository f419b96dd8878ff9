"""Business Central API v2.0 sandbox (Microsoft Learn, "Business Central API (v2.0)"), served by sandbox.common.

    python -m sandbox.bc [--port N]                      # standalone, prints URLs and credentials
    app = BcSandbox(); server = SandboxServer(app).start()  # in-process

Routes (tenant = seed.TENANT_ID, environment = seed.ENVIRONMENT):
- `POST /{tenant}/oauth2/v2.0/token`: Entra client credentials (auth.py);
- `/v2.0/{tenant}/{environment}/api/v2.0/...` (also `/v2.0/{environment}/api/v2.0/...`):
  `companies`, and under `companies({id})/`: `vendors` (CRUD), `accounts`, `dimensions`
  (+ `dimensions({id})/dimensionValues`), `dimensionValues`, `currencies` (GET),
  `purchaseInvoices` / `purchaseCreditMemos` (CRUD, deep insert, nested lines and
  dimensionSetLines, `Microsoft.NAV.post`), `purchaseOrders` (+ `purchaseOrderLines`, GET);
  `subscriptions` at the API root (keys in single quotes);
- `/v2.0/{tenant}/{environment}/api/microsoft/analytics/v1.0/companies({id})/vendorLedgerEntries`
  when the `analytics` setting is on (analytics.py; 404 otherwise, like a tenant without it);
- `/_sandbox/...`: common.py's operator surface plus control.py's.

Modules: app.py (routing), auth.py (tokens), store.py (clock, ETags, master data),
documents.py (drafts, validation, posting), orders.py, subscriptions.py (handshake,
notifications), odata.py ($filter, $expand, paging), resources.py (entity kinds), control.py,
payments.py (payments applied to and unapplied from posted invoices), analytics.py.
"""
from .app import BcConfig, BcSandbox

__all__ = ["BcSandbox", "BcConfig"]
