"""`BaswareSandbox`: the Basware P2P API sandbox (see sandbox/basware/__init__.py for the map)."""
from __future__ import annotations

import copy
import threading
import uuid
from dataclasses import asdict, dataclass, field, fields as dc_fields
from typing import Any, Iterable

from sandbox import seed
from sandbox.common import Request, Response, SandboxApp

from . import errors as E
from .attachments import AttachmentApi, AttachmentStore
from .auth import TokenIssuer, basic_credentials, required_scope, token_endpoint
from .clock import Clock, iso
from .documents import DocumentApi, DocumentStore, loads_documents, public, summary
from .masterdata import ENTITIES, ImportStore, MasterDataApi
from .subscriptions import ENCODINGS, PushApi, PushStore

PUSH_PREFIXES = ("/v1/subscriptions", "/v1/tasks")
DEFAULT_CURRENCIES = ("EUR", "USD", "GBP", "SEK", "NOK", "DKK", "PLN", "CHF")


@dataclass
class BaswareConfig:
    """Knobs beyond common.py's (latency, throttle, faults): constructor kwargs or POST /_sandbox/config."""

    token_lifetime: int = 3600  # seconds; `expires_in` (Basware authentication OpenAPI, POST /v1/tokens example)
    presigned_ttl: int = 900  # the pre-signed redirect target is valid 15 minutes
    presigned_auth_status: int = 403  # refusal of a redirected GET carrying Authorization (real S3: 400)
    continuation_ttl: int = 3600
    page_row_budget: int = 1000  # coding rows per page before a page is cut short (P2P OpenAPI, pageSize)
    request_status_delay: float = 0.0  # seconds a requestStatus stays InProgress
    max_request_bytes: int = 6 * 1024 * 1024  # "each incoming request is limited to 6mb"
    signature_encoding: str = "hex"  # X-BWAPI-Signature-256 encoding (undocumented): hex | base64 | sha256=
    webhook_timeout: float = 10.0
    task_expiry: int = 86400  # seconds until a notification's expirationTime
    auto_notify: bool = False  # notify subscribers when a document becomes WaitingForTransfer
    enforce_scopes: bool = True  # a token only opens the APIs its scopes name
    validate_documents: bool = True  # documents added must be valid AccountingDocumentEntity
    companies: list = field(default_factory=lambda: [seed.COMPANY_CODE])  # company codes P2P knows
    active_currencies: list = field(default_factory=lambda: list(DEFAULT_CURRENCIES))
    # tenant setting OpenApi.SendInvoiceAttachments: off -> the attachment download answers 404
    send_invoice_attachments: bool = True


class BaswareSandbox(SandboxApp):
    """Basware P2P API + token API + push notifications, seeded with seed.approved_invoices()."""

    name = "basware"

    def __init__(self, *, seed_documents: bool = True, seed_broken: bool = False, invoice_count: int = 24,
                 seed_images: bool = False, documents: Iterable[dict] | None = None, throttle: dict | None = None,
                 webhook_secret: str = seed.WEBHOOK_SECRET, **config: Any) -> None:
        super().__init__()
        self.base_url: str | None = None  # set by whoever serves it (tests, __main__)
        self.webhook_secret = webhook_secret
        self.config = BaswareConfig()
        self.clock = Clock()
        self.tokens = TokenIssuer(self.clock, self.config.token_lifetime)
        self._docs = DocumentStore(self.clock)
        self._imports = ImportStore(self.clock)
        self._push = PushStore(self.clock)
        self._files = AttachmentStore()
        unknown = self.configure(config)
        if unknown:
            raise TypeError(f"unknown BaswareSandbox settings: {sorted(unknown)}")
        self._ctx = threading.local()
        self._documents_api = DocumentApi(self, self._docs)
        self._masterdata_api = MasterDataApi(self, self._imports)
        self._push_api = PushApi(self, self._push)
        self._attachments_api = AttachmentApi(self, self._docs, self._files)
        self._seed_args = (seed_documents, seed_broken, invoice_count, seed_images)
        # vendors P2P already holds (the invoices are coded against them), besides imported ones
        self.seed_vendor_codes = frozenset(v["number"] for v in seed.vendors())
        if throttle:
            self.throttle.configure(**throttle)
        self._register_routes()
        self._seed(*self._seed_args)
        for doc in documents or ():
            self.add_document(doc)

    def _seed(self, seed_documents: bool, seed_broken: bool, invoice_count: int, seed_images: bool = False) -> None:
        if seed_documents:
            for doc in seed.approved_invoices(invoice_count, images=seed_images):
                self._docs.add(doc, validate=False)
        if seed_broken:
            for doc in seed.broken_invoices():
                self._docs.add(doc, validate=False)

    def close(self) -> None:
        self._push_api.close()

    # == in-process API =============================================================================
    def add_document(self, doc: dict) -> dict:
        """Add (or replace, by invoiceId) an accounting document; returns its API view.
        Raises ValueError when it is not a valid AccountingDocumentEntity (config.validate_documents)."""
        with self.lock:
            stored = self._docs.add(doc, validate=self.config.validate_documents)
            view = public(stored)
        if self.config.auto_notify and view.get("processingStatus") == "WaitingForTransfer":
            self._notify_later(view["invoiceId"])
        return view

    def add_documents(self, docs: Iterable[dict]) -> list[dict]:
        return [self.add_document(d) for d in docs]

    def document(self, invoice_id: str) -> dict | None:
        """The document as the API serves it (a copy), or None."""
        with self.lock:
            doc = self._docs.docs.get(invoice_id)
            return public(doc) if doc else None

    @property
    def documents(self) -> dict[str, dict]:
        """Every document by invoiceId (copies)."""
        with self.lock:
            return {k: public(d) for k, d in self._docs.docs.items()}

    def document_status(self, invoice_id: str) -> str | None:
        with self.lock:
            doc = self._docs.docs.get(invoice_id)
            return doc["processingStatus"] if doc else None

    def set_status(self, invoice_id: str, status: str) -> dict:
        """What a P2P user does, e.g. re-transfer a TransferFailed invoice (-> WaitingForTransfer)."""
        with self.lock:
            doc = self._docs.docs[invoice_id]
            doc["processingStatus"] = status
            self._docs.touch(doc)
            view = public(doc)
        if self.config.auto_notify and status == "WaitingForTransfer":
            self._notify_later(invoice_id)
        return view

    def set_attachment_content(self, invoice_id: str, external_code: str, data: bytes) -> None:
        """The file behind one of a document's `attachments[]` entries (default: a generated PDF)."""
        with self.lock:
            doc = self._docs.docs.get(invoice_id)
            if doc is None or not any(a.get("externalCode") == external_code for a in doc.get("attachments") or []):
                raise KeyError(f"document {invoice_id} lists no attachment {external_code}")
            self._files.files[(invoice_id, external_code)] = bytes(data)

    def attachment_content(self, invoice_id: str, external_code: str) -> bytes | None:
        """The bytes the download serves for an attachment (None: the document does not list it)."""
        return self._attachments_api.content(invoice_id, external_code)

    def remove_documents(self) -> None:
        with self.lock:
            self._docs.docs.clear()

    def notify(self, invoice_id: str, copies: int = 1, url: str | None = None, secret: str | None = None,
               encoding: str | None = None, concurrent: bool = False, task_sub_type: str | None = None,
               task_type: str = "AccountingDocuments") -> list[dict]:
        """POST a signed notification about `invoice_id` to every matching webhook subscription
        (and to `url`); returns the deliveries with the HTTP status each endpoint answered."""
        if encoding is not None and encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}")
        return [d.as_dict() for d in self._push_api.notify(
            invoice_id, copies=copies, url=url, secret=secret, encoding=encoding, concurrent=concurrent,
            task_sub_type=task_sub_type, task_type=task_type)]

    def _notify_later(self, invoice_id: str) -> None:
        threading.Thread(target=self.notify, args=(invoice_id,), daemon=True, name="basware-notify").start()

    @property
    def deliveries(self) -> list[dict]:
        with self._push._lock:
            return [d.as_dict() for d in self._push.deliveries]

    @property
    def subscriptions(self) -> list[dict]:
        with self._push._lock:
            return copy.deepcopy(self._push.subscriptions)

    # master data as stored in the API layer: externalCode -> record as posted
    def _records(self, key: str) -> dict[str, dict]:
        with self.lock:
            return copy.deepcopy(self._imports.records.get(key, {}))

    @property
    def vendors(self) -> dict[str, dict]:
        return self._records("vendors")

    @property
    def accounts(self) -> dict[str, dict]:
        return self._records("accounts")

    @property
    def cost_centers(self) -> dict[str, dict]:
        return self._records("costCenters")

    @property
    def projects(self) -> dict[str, dict]:
        return self._records("projects")

    @property
    def matching_orders(self) -> dict[str, dict]:
        return self._records("matchingOrders")

    @property
    def matching_order_lines(self) -> dict[str, dict]:
        return self._records("matchingOrderLines")

    @property
    def lists(self) -> dict[str, dict[str, dict]]:
        """listKey -> externalCode -> record."""
        with self.lock:
            return {k.split(":", 1)[1]: copy.deepcopy(v) for k, v in self._imports.records.items()
                    if k.startswith("lists:")}

    def item_status(self, entity: str, external_code: str, list_key: str | None = None) -> str | None:
        """The last requestStatus item status of a record (`Success`, `Error`, ...)."""
        key = f"lists:{list_key}" if list_key else entity
        with self.lock:
            return self._imports.statuses.get(key, {}).get(external_code)

    def request_status(self, request_id: str) -> dict | None:
        """The requestStatus entry as GET /v1/requestStatus/{id} serves it."""
        with self._imports._lock:
            entry = self._imports.requests.get(request_id)
        return self._masterdata_api.view(entry) if entry else None

    @property
    def request_ids(self) -> list[str]:
        with self._imports._lock:
            return list(self._imports.requests)

    def fail_next_import(self, records: int, message: str | None = None) -> None:
        """The first `records` records of the next import (not skipped as unchanged) come back `Error`."""
        with self.lock:
            self._imports.pending_errors = int(records)
            if message:
                self._imports.pending_error_message = message

    @property
    def tokens_issued(self) -> int:
        return self.tokens.issued

    def revoke_tokens(self) -> int:
        """Invalidate every access token (the next API call answers 401)."""
        return self.tokens.revoke_all()

    def add_client(self, client_id: str, secret: str, scopes: Iterable[str] | None = None) -> None:
        """Another API client; `scopes` limits what it may ask for (default: every scope)."""
        self.tokens.add_client(client_id, secret, scopes)

    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def reset(self) -> None:
        """Back to the seeded state: documents, master data, requests, subscriptions, deliveries, tasks."""
        with self.lock:
            self._docs.docs.clear()
            self._docs.presigned.clear()
            self._docs.cursors.clear()
            self._files.files.clear()
            self._imports.records.clear()
            self._imports.hashes.clear()
            self._imports.statuses.clear()
            self._imports.requests.clear()
            self._imports.code_index.clear()
            self._imports.pending_errors = 0
            with self._push._lock:
                self._push.subscriptions.clear()
                self._push.deliveries.clear()
                self._push.tasks.clear()
            self._seed(*self._seed_args)

    def record_response_status(self, entity_type: str, external_code: str, invoice_id: str) -> None:
        """Transfer/payment responses are also processed asynchronously (entityType in requestStatus)."""
        rid = self.request_id()
        now = iso(self.clock.stamp())
        item = {"externalCode": external_code, "parentExternalCode": invoice_id, "status": "Success", "errors": []}
        entry = {"requestId": rid, "entityType": entity_type, "entityVersion": "v1", "requestStatus": "Success",
                 "changedBy": None, "operationType": "POST", "genericListKey": None, "lastUpdated": now,
                 "systems": [{"system": "P2P", "module": None, "systemStatus": "Success", "lastUpdated": now,
                              "items": [item]}], "_created": self.clock.time()}
        with self._imports._lock:
            self._imports.requests[rid] = entry

    # == plumbing hooks ===============================================================================
    def request_id(self) -> str:
        rid = getattr(self._ctx, "request_id", None)
        if rid is None:
            rid = self._ctx.request_id = str(uuid.uuid4())
        return rid

    def dispatch(self, req: Request) -> Response:
        if req.path.startswith("/_sandbox/"):
            return super().dispatch(req)
        self._ctx.request_id = str(uuid.uuid4())
        self._ctx.path = req.path
        try:
            response = super().dispatch(req)
        finally:
            self._ctx.path = None
        if not req.path.startswith("/_presigned/") and not any(k.lower() == "x-amzn-requestid"
                                                               for k in response.headers):
            response.headers["x-amzn-RequestId"] = self._ctx.request_id
        self._ctx.request_id = None
        return response

    def error_response(self, status: int, code: str, message: str, headers: dict | None = None) -> Response:
        """Errors raised by the shared plumbing (routing, faults, throttle) in the surface's own shape."""
        path = getattr(self._ctx, "path", None) or ""
        if path == "/v1/tokens":
            return E.token_error(status, E.TOKEN_ERRORS.get(status, "server_error"), message, headers)
        if path.startswith(PUSH_PREFIXES):
            return E.push_message(status, message, headers)
        if path.startswith("/_presigned/"):
            s3_code = {503: "SlowDown", 500: "InternalError", 429: "SlowDown", 404: "NoSuchKey"}.get(status, code)
            response = E.s3_error(status, s3_code, message, self.request_id())
            response.headers.update(headers or {})
            return response
        return E.generic(status, code, message, self.request_id(), headers)

    def is_public(self, req: Request) -> bool:
        if req.path == "/v1/tokens":
            return True
        if req.path.startswith("/_presigned/"):
            # authorised by its signed URL; the throttle counts it against the client that asked
            req.principal = self._documents_api.principal_of(req)
            return True
        return False

    def authenticate(self, req: Request) -> Response | None:
        push = req.path.startswith(PUSH_PREFIXES)
        header = req.headers.get("authorization") or ""
        scopes: frozenset[str] | None = None
        if header[:7].lower() == "bearer ":
            grant, reason = self.tokens.lookup(header[7:].strip())
            if grant is None:
                return self._unauthorised(push, reason)
            req.principal, scopes = grant.client_id, grant.scopes
        elif header[:6].lower() == "basic ":
            # the P2P spec also accepts HTTP Basic with the API credentials (securitySchemes "Bearer")
            creds = basic_credentials(header)
            if creds is None or not self.tokens.check_client(*creds):
                return self._unauthorised(push, "The credentials are not valid.", code="CREDENTIAL_VALIDATION_ERROR")
            req.principal = creds[0]
            scopes = frozenset(self.tokens.client_scopes.get(creds[0], self.tokens.scopes))
        else:
            return self._unauthorised(push, "Authorization header is missing; send 'Bearer <access token>'.")
        needed = required_scope(req.method, req.path)
        if self.config.enforce_scopes and needed and scopes is not None and needed not in scopes:
            message = f"The access token does not grant scope '{needed}' required by {req.method} {req.path}."
            if push:
                return E.push_message(403, message)
            return E.entity_list(403, "ACCESS_TOKEN_VALIDATION_ERROR", message, self.request_id())
        return None

    def _unauthorised(self, push: bool, message: str, code: str = "ACCESS_TOKEN_VALIDATION_ERROR") -> Response:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if push:
            return E.push_message(401, "Unauthorized", headers)
        return E.entity_list(401, code, message, self.request_id(), headers=headers)

    def configure(self, body: dict) -> set[str]:
        """Apply BaswareConfig keys (and `import_errors`); returns the keys it did not know."""
        names = {f.name for f in dc_fields(BaswareConfig)}
        unknown = set()
        for key, value in body.items():
            if key in names:
                if key == "signature_encoding" and value not in ENCODINGS:
                    raise ValueError(f"signature_encoding must be one of {ENCODINGS}")
                setattr(self.config, key, value)
                if key == "token_lifetime":
                    self.tokens.lifetime = value
            elif key == "import_errors":
                self.fail_next_import(int(value), body.get("import_error_message"))
            elif key not in ("latency_ms", "throttle", "keep_bodies", "import_error_message"):
                unknown.add(key)
        return unknown

    # == routes =========================================================================================
    def _register_routes(self) -> None:
        self.add_route("POST", "/v1/tokens", lambda req: token_endpoint(self.tokens, req))
        self._documents_api.register()
        self._attachments_api.register()
        self._masterdata_api.register()
        self._push_api.register()
        self._register_control()

    def _register_control(self) -> None:
        route = self.route

        @route("GET", "/_sandbox/documents")
        def _documents(req):
            status = req.q("status")
            full = (req.q("full") or "").lower() in ("1", "true")
            with self.lock:
                docs = [d for d in sorted(self._docs.docs.values(), key=lambda d: d["_seq"])
                        if not status or d["processingStatus"] == status]
                out = [public(d) if full else summary(d) for d in docs]
            return Response.json({"documents": out})

        @route("POST", "/_sandbox/documents")
        def _add_documents(req):
            try:
                docs = loads_documents(req.body)
                added = [self.add_document(d)["invoiceId"] for d in docs]
            except ValueError as exc:
                return Response.json({"error": str(exc)}, 400)
            return Response.json({"added": added})

        @route("GET", "/_sandbox/documents/{invoiceId}")
        def _document(req):
            doc = self.document(req.params["invoiceId"])
            return Response.json(doc) if doc else Response.json({"error": "no such document"}, 404)

        @route("POST", "/_sandbox/documents/{invoiceId}/status")
        def _set_status(req):
            body = req.json() or {}
            try:
                return Response.json(self.set_status(req.params["invoiceId"], body["processingStatus"]))
            except KeyError:
                return Response.json({"error": "unknown document, or no processingStatus given"}, 404)

        @route("POST", "/_sandbox/notify")
        def _notify(req):
            body = req.json() or {}
            if not body.get("invoiceId"):
                return Response.json({"error": "invoiceId is required"}, 400)
            try:
                deliveries = self.notify(body["invoiceId"], int(body.get("copies", 1)), body.get("url"),
                                         body.get("secret"), body.get("encoding"), bool(body.get("concurrent")),
                                         body.get("taskSubType"), body.get("taskType", "AccountingDocuments"))
            except ValueError as exc:
                return Response.json({"error": str(exc)}, 400)
            return Response.json({"deliveries": deliveries})

        @route("GET", "/_sandbox/deliveries")
        def _deliveries(req):
            since = int(req.q("since", "0"))
            return Response.json({"deliveries": [d for d in self.deliveries if d["seq"] > since]})

        @route("GET", "/_sandbox/masterdata")
        def _masterdata(req):
            entity = req.q("entity")
            with self.lock:
                out: dict[str, Any] = {name: copy.deepcopy(self._imports.records.get(name, {}))
                                       for name in ENTITIES if name != "lists"}
                out["lists"] = self.lists
            if entity:
                if entity not in out:
                    return Response.json({"error": f"entity must be one of {sorted(out)}"}, 400)
                out = {entity: out[entity]}
            return Response.json(out)

        @route("GET", "/_sandbox/requests")
        def _requests(req):
            return Response.json({"requestStatus": [self.request_status(r) for r in self.request_ids]})

        @route("GET", "/_sandbox/subscriptions")
        def _subscriptions(req):
            return Response.json({"subscriptions": self.subscriptions})

        @route("GET", "/_sandbox/stats")
        def _stats(req):
            with self.lock:
                by_status: dict[str, int] = {}
                for d in self._docs.docs.values():
                    by_status[d["processingStatus"]] = by_status.get(d["processingStatus"], 0) + 1
                records = {k: len(v) for k, v in self._imports.records.items()}
            return Response.json({"tokens_issued": self.tokens.issued, "tokens_active": self.tokens.active,
                                  "documents": by_status, "masterdata": records,
                                  "requests": len(self.request_ids), "deliveries": len(self.deliveries),
                                  "subscriptions": len(self.subscriptions), "config": asdict(self.config)})

        @route("POST", "/_sandbox/tokens/revoke")
        def _revoke(req):
            return Response.json({"revoked": self.revoke_tokens()})

        @route("POST", "/_sandbox/clock")
        def _clock(req):
            self.advance_clock(float((req.json() or {}).get("advance", 0)))
            return Response.json({"now": iso(self.clock.now())})

        @route("POST", "/_sandbox/reset")
        def _reset(req):
            self.reset()
            return Response.empty()
