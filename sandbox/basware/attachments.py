"""Invoice attachments: `GET /v1/accountingDocuments/{invoiceId}/attachments/{attachmentExternalCode}`
(Basware P2P OpenAPI, tag AccountingDocuments).

What the operation documents, and how the sandbox models it:
- the file is not in the answer: it "redirects to a pre-signed URL ... valid for 15min"; the target
  is the same S3-like `/_presigned/` route the document GETs use, so it refuses a request that
  carries `Authorization` (Basware: the header "must not be included in the redirected request");
- "This API is enabled manually through CMN_TENANT_SETTINGS parameter 'OpenApi.SendInvoiceAttachments'":
  with `send_invoice_attachments` off, every download answers 404, as for an unknown code;
- 404 "No attachment found by given attachmentExternalCode";
- the operation declares no media type for the file, so the redirect target serves
  `application/octet-stream` and the type must be taken from `filename` in `attachments[]`.

The bytes: set with `BaswareSandbox.set_attachment_content` (or `PUT /_sandbox/documents/{id}/
attachments/{code}`); an attachment listed on a document without stored bytes is served as a small
PDF generated from the document (sandbox/seed.py), as every seeded invoice's image is.
"""
from __future__ import annotations

import hashlib
import hmac
import uuid
from urllib.parse import urlencode

from sandbox import seed
from sandbox.common import Request, Response

from .documents import DocumentStore, Presigned


class AttachmentStore:
    """Explicitly stored file bytes, by (invoiceId, externalCode)."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}


class AttachmentApi:
    def __init__(self, app, docs: DocumentStore, store: AttachmentStore) -> None:
        self.app = app
        self.docs = docs
        self.store = store

    def register(self) -> None:
        self.app.add_route("GET", "/v1/accountingDocuments/{invoiceId}/attachments/{externalCode}", self.download)
        self.app.add_route("PUT", "/_sandbox/documents/{invoiceId}/attachments/{externalCode}", self.put_content)

    def content(self, invoice_id: str, external_code: str) -> bytes | None:
        """The file behind an attachment entry, or None when the document does not list it."""
        with self.app.lock:
            doc = self.docs.docs.get(invoice_id)
            entry = next((a for a in (doc or {}).get("attachments") or [] if a.get("externalCode") == external_code),
                         None)
            if entry is None:
                return None
            stored = self.store.files.get((invoice_id, external_code))
            return stored if stored is not None else seed.attachment_pdf(doc, entry)

    def download(self, req: Request) -> Response:
        invoice_id, code = req.params["invoiceId"], req.params["externalCode"]
        fail = self.app._documents_api._fail
        if not self.app.config.send_invoice_attachments:
            # the tenant has not enabled OpenApi.SendInvoiceAttachments: the API behaves as if absent
            return fail(404, "ENTITY_NOT_FOUND", "Request was successful and no records were found.")
        data = self.content(invoice_id, code)
        if data is None:
            return fail(404, "ENTITY_NOT_FOUND", f"No attachment found by given attachmentExternalCode {code} on "
                                                 f"accounting document {invoice_id}.")
        return self._redirect(req, data)

    def _redirect(self, req: Request, data: bytes) -> Response:
        """302 to a pre-signed URL serving the file (the document GETs' scheme, with bytes)."""
        cfg = self.app.config
        object_id = uuid.uuid4().hex
        now = self.docs.clock.now()
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        ttl = int(cfg.presigned_ttl)
        signature = hmac.new(self.docs.presign_key, f"{object_id}:{amz_date}:{ttl}".encode(),
                             hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/octet-stream"}
        with self.docs._lock:
            self.docs.presigned[object_id] = Presigned(data, headers, self.docs.clock.time() + ttl, req.principal,
                                                       signature)
        query = urlencode({
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"SANDBOX/{now:%Y%m%d}/eu-west-1/s3/aws4_request",
            "X-Amz-Date": amz_date, "X-Amz-Expires": str(ttl), "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": signature})
        return Response(302, b"", {"Location": f"{req.base_url}/_presigned/{object_id}?{query}"})

    def put_content(self, req: Request) -> Response:
        invoice_id, code = req.params["invoiceId"], req.params["externalCode"]
        try:
            self.app.set_attachment_content(invoice_id, code, req.body)
        except KeyError as exc:
            return Response.json({"error": str(exc.args[0])}, 404)
        return Response.empty()
