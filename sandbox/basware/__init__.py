"""Basware P2P API sandbox (Basware's OpenAPI in sandbox/basware/openapi/),
served by sandbox.common.

    python -m sandbox.basware [--port N] [--with-broken]      # standalone, prints URLs and credentials
    app = BaswareSandbox(); server = SandboxServer(app).start()  # in-process

API routes (bearer token from /v1/tokens, or HTTP Basic with the client credentials):
- `POST /v1/tokens`: client credentials, HTTP Basic + form `grant_type`, `scope` (auth.py);
- `GET /v1/accountingDocuments` (`ProcessingStatus`, `pageSize`, `companyCode`, `lastUpdated`,
  `p2pProcessingMode`; request header `x-amz-meta-continuationtoken`) and
  `GET /v1/accountingDocuments/{invoiceId}`: 302 to `/_presigned/<id>?X-Amz-...` (15 minutes,
  refuses an `Authorization` header), which serves the page and `X-amz-meta-continuationToken`;
  `POST .../{invoiceId}/acknowledge`, `.../transferResponses`, `.../paymentResponses` (documents.py);
- `GET /v1/accountingDocuments/{invoiceId}/attachments/{attachmentExternalCode}`: 302 to a pre-signed
  URL serving the file as application/octet-stream; 404 for an unknown code and whenever
  `send_invoice_attachments` (the tenant setting OpenApi.SendInvoiceAttachments) is off (attachments.py);
- `POST /v1/vendors`, `/v1/accounts`, `/v1/costCenters`, `/v1/lists/{listKey}`, `/v2/projects`,
  `/v1/matchingOrders`, `/v1/matchingOrderLines`; `GET /v1/requestStatus/{requestId}`,
  `GET /v1/requestStatus`, `POST /v1/requestStatus/acknowledge` (masterdata.py);
- `POST|GET|DELETE /v1/subscriptions`, `GET /v1/tasks[/{taskId}]`, and the signed webhook
  emitter (subscriptions.py).

Control (`/_sandbox/`, besides common.py's calls/faults/config/health): `documents` (GET, POST),
`documents/{id}` (GET), `documents/{id}/attachments/{code}` (PUT: the file's bytes), `documents/{id}/status` (POST), `notify`, `deliveries`, `masterdata`,
`requests`, `subscriptions`, `stats`, `tokens/revoke`, `clock`, `reset`. `config` also takes every
`BaswareConfig` field and `import_errors`.

Modules: app.py (routing, auth, error shapes, in-process API, control), auth.py (tokens),
documents.py, attachments.py, masterdata.py, subscriptions.py, errors.py (each surface's error body), clock.py.
"""
from .app import BaswareConfig, BaswareSandbox
from .subscriptions import SIGNATURE_HEADER, sign

__all__ = ["BaswareSandbox", "BaswareConfig", "SIGNATURE_HEADER", "sign"]
