"""Accounting documents: list and single GET through a pre-signed redirect, paging, acknowledge,
transfer and payment responses (Basware P2P OpenAPI: accountingDocuments, transferResponses, paymentResponses, paging).

State machine (Standard mode): WaitingForTransfer --acknowledge--> TransferInProgress
--transferResponse success--> Transferred --paymentResponse success--> Paid; a failed transfer
response -> TransferFailed (a P2P user would re-transfer it: `set_status(id, "WaitingForTransfer")`).
Prebook mode: WaitingForPrebook --acknowledge--> PrebookInProgress.

Paging: the continuation token is a key cursor (the last document's position), not an offset, so
acknowledging page 1 while reading page 2 skips nothing.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from sandbox import openapi
from sandbox.common import Request, Response, dumps

from . import errors as E
from .clock import Clock, iso, parse_datetime

PROCESSING_STATUSES = (
    "WaitingForPrebook PrebookInProgress Prebooked PrebookFailed WaitingForTransfer TransferInProgress Transferred "
    "TransferFailed WaitingForPrebookCancelation PrebookCancelationInProgress PrebookCanceled PrebookCancelFailed "
    "WaitingToBeRemoved Removed RemoveFailed WaitingToBeReturned Returned ReturnFailed WaitingToBeCompleted "
    "CompletionInProgress Completed CompletionFailed Paid New WaitingForEnrichmentTransfer "
    "EnrichmentTransferInProgress EnrichmentTransferred EnrichmentTransferFailed InDocumentFilter "
    "DocumentFilterReleased").split()
ENRICHMENT_STATUSES = {s for s in PROCESSING_STATUSES if "Enrichment" in s}
ACKNOWLEDGE = {"WaitingForTransfer": "TransferInProgress", "WaitingForPrebook": "PrebookInProgress"}
KEEP_RESPONSES = 100  # "Only latest 100 responses will be saved per invoice"
# Filled from a successful payment response; a field left out is cleared (Basware P2P OpenAPI,
# PaymentResponseEntity).
PAYMENT_FIELDS = ("paymentMethod", "paymentTermCode", "paymentMessage")
QUERY_PARAMS = ("ProcessingStatus", "pageSize", "companyCode", "lastUpdated", "p2pProcessingMode")


def to_decimal(value: Any) -> Any:
    """Money stays Decimal in memory: floats handed in by Python callers become Decimals."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: to_decimal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_decimal(v) for v in value]
    return value


def public(doc: dict) -> dict:
    """The API view of a stored document (internal `_` keys dropped)."""
    return copy.deepcopy({k: v for k, v in doc.items() if not k.startswith("_")})


@dataclass
class Presigned:
    body: bytes
    headers: dict[str, str]
    expires_at: float
    principal: str | None
    signature: str


@dataclass
class Cursor:
    key: tuple
    after: int
    expires_at: float


@dataclass
class DocumentStore:
    clock: Clock
    docs: dict[str, dict] = field(default_factory=dict)
    presigned: dict[str, Presigned] = field(default_factory=dict)
    cursors: dict[str, Cursor] = field(default_factory=dict)
    presign_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _seq: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def add(self, doc: dict, validate: bool = True) -> dict:
        doc = to_decimal(doc)  # rebuilds every dict and list: the caller's object is not kept
        for key in ("transferResponses", "paymentResponses"):
            doc.setdefault(key, [])
        doc.setdefault("lastUpdated", iso(self.clock.stamp()))
        if validate:
            problems = openapi.validate("AccountingDocumentEntity", public(doc))
            if problems:
                raise ValueError(f"document {doc.get('invoiceId')!r} is not a valid AccountingDocumentEntity: "
                                 + "; ".join(problems))
        with self._lock:
            self._seq += 1
            doc["_seq"] = self._seq
            doc["_transfer_codes"] = {r.get("externalCode") for r in doc["transferResponses"]}
            doc["_payment_codes"] = {r.get("externalCode") for r in doc["paymentResponses"]}
            self.docs[doc["invoiceId"]] = doc
        return doc

    def touch(self, doc: dict) -> None:
        doc["lastUpdated"] = iso(self.clock.stamp())


class DocumentApi:
    """Route handlers; `app` supplies config, request ids, principals and notification hooks."""

    def __init__(self, app, store: DocumentStore) -> None:
        self.app = app
        self.store = store

    def register(self) -> None:
        route = self.app.add_route
        route("GET", "/v1/accountingDocuments", self.list_documents)
        route("GET", "/v1/accountingDocuments/{invoiceId}", self.get_document)
        route("POST", "/v1/accountingDocuments/{invoiceId}/acknowledge", self.acknowledge)
        route("POST", "/v1/accountingDocuments/{invoiceId}/transferResponses", self.transfer_response)
        route("POST", "/v1/accountingDocuments/{invoiceId}/paymentResponses", self.payment_response)
        route("GET", "/_presigned/{objectId}", self.presigned_get)

    # -- helpers ---------------------------------------------------------------------------------
    def _fail(self, status: int, code: str, messages, external_codes=None, info=None) -> Response:
        return E.entity_list(status, code, messages, self.app.request_id(), external_codes, info)

    def _query(self, req: Request) -> dict[str, str]:
        """Known query parameters, matched case-insensitively (ASP.NET Core binds them so; the P2P
        OpenAPI does not say whether they are case-sensitive). Anything else, e.g. a continuation
        token sent as a query parameter, is ignored like the real API ignores it."""
        out = {}
        for name, values in req.query.items():
            canonical = next((p for p in QUERY_PARAMS if p.lower() == name.lower()), None)
            if canonical and values:
                out[canonical] = values[0]
        return out

    def _redirect(self, req: Request, payload: dict, headers: dict[str, str] | None = None) -> Response:
        """302 to a pre-signed, S3-like URL that serves `payload` for `presigned_ttl` seconds."""
        cfg = self.app.config
        object_id = uuid.uuid4().hex
        now = self.store.clock.now()
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        ttl = int(cfg.presigned_ttl)
        signature = hmac.new(self.store.presign_key, f"{object_id}:{amz_date}:{ttl}".encode(),
                             hashlib.sha256).hexdigest()
        with self.store._lock:
            if len(self.store.presigned) > 2000:
                t = self.store.clock.time()
                self.store.presigned = {k: v for k, v in self.store.presigned.items() if v.expires_at > t}
            self.store.presigned[object_id] = Presigned(dumps(payload), dict(headers or {}),
                                                        self.store.clock.time() + ttl, req.principal, signature)
        query = urlencode({
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"SANDBOX/{now:%Y%m%d}/eu-west-1/s3/aws4_request",
            "X-Amz-Date": amz_date, "X-Amz-Expires": str(ttl), "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": signature})
        location = f"{req.base_url}/_presigned/{object_id}?{query}"
        return Response(302, b"", {"Location": location})

    def principal_of(self, req: Request) -> str | None:
        object_id = req.path.rsplit("/", 1)[-1]
        with self.store._lock:
            found = self.store.presigned.get(object_id)
        return found.principal if found else None

    # -- GET (list) --------------------------------------------------------------------------------
    def list_documents(self, req: Request) -> Response:
        cfg = self.app.config
        q = self._query(req)
        status = q.get("ProcessingStatus")
        if status is not None and status not in PROCESSING_STATUSES:
            return self._fail(400, "PARAMETER_VALIDATION_ERROR",
                              f"ProcessingStatus '{status}' is not valid; use one of {', '.join(PROCESSING_STATUSES)}")
        mode = q.get("p2pProcessingMode", "Standard")
        if mode not in ("Standard", "InvoiceEnrichment"):
            return self._fail(400, "PARAMETER_VALIDATION_ERROR",
                              f"p2pProcessingMode '{mode}' is not valid; use Standard or InvoiceEnrichment")
        try:
            page_size = int(q.get("pageSize", "100"))
        except ValueError:
            page_size = 0
        if not 1 <= page_size <= 100:
            return self._fail(400, "PARAMETER_VALIDATION_ERROR",
                              f"pageSize must be an integer between 1 and 100 (got {q.get('pageSize')!r})")
        since = None
        if "lastUpdated" in q:
            try:
                since = parse_datetime(q["lastUpdated"])
            except ValueError:
                return self._fail(400, "PARAMETER_VALIDATION_ERROR",
                                  f"lastUpdated '{q['lastUpdated']}' is not a valid date-time")
        company = q.get("companyCode") or None
        key = (status, page_size, company, q.get("lastUpdated"), mode)
        after = 0
        token = req.headers.get("x-amz-meta-continuationtoken")
        now = self.store.clock.time()
        if token:
            with self.store._lock:
                cursor = self.store.cursors.get(token)
            if cursor is None or cursor.expires_at <= now:
                return self._fail(400, "PARAMETER_VALIDATION_ERROR",
                                  "x-amz-meta-continuationtoken is unknown or expired; start again from the first page")
            if cursor.key != key:
                return self._fail(400, "PARAMETER_VALIDATION_ERROR",
                                  "x-amz-meta-continuationtoken was issued for other query parameters; the next page "
                                  "must repeat the query parameters of the first page")
            after = cursor.after

        def matches(doc: dict) -> bool:
            doc_status = doc.get("processingStatus")
            if status is not None and doc_status != status:
                return False
            if (doc.get("p2pProcessingMode") or "Standard") != mode:
                return False
            if mode == "Standard" and doc_status in ENRICHMENT_STATUSES:
                return False  # "no results" unless p2pProcessingMode=InvoiceEnrichment
            if company is not None and doc.get("companyCode") != company:
                return False
            if since is not None:
                try:
                    if parse_datetime(str(doc.get("lastUpdated"))) <= since:
                        return False
                except ValueError:
                    return False
            return True

        with self.app.lock:
            candidates = [d for d in sorted(self.store.docs.values(), key=lambda d: d["_seq"])
                          if d["_seq"] > after and matches(d)]
            page: list[dict] = []
            rows = 0
            for doc in candidates:
                doc_rows = len(doc.get("codingRows") or []) + len(doc.get("invoiceLines") or [])
                # "With many coding rows, fewer invoices than pageSize are returned" (Basware P2P
                # OpenAPI, GET /v1/accountingDocuments)
                if len(page) >= page_size or (page and rows + doc_rows > cfg.page_row_budget):
                    break
                page.append(public(doc))
                rows += doc_rows
            more = len(candidates) > len(page)
            last_seq = candidates[len(page) - 1]["_seq"] if page else after
        if not page:
            return self._fail(404, "ENTITY_NOT_FOUND", "Request was successful and no records were found.")
        headers = {}
        if more:
            next_token = str(uuid.uuid4())
            with self.store._lock:
                self.store.cursors = {k: c for k, c in self.store.cursors.items() if c.expires_at > now}
                self.store.cursors[next_token] = Cursor(key, last_seq, now + cfg.continuation_ttl)
            headers["X-amz-meta-continuationToken"] = next_token
        return self._redirect(req, {"accountingDocuments": page}, headers)

    # -- GET (one) ---------------------------------------------------------------------------------
    def get_document(self, req: Request) -> Response:
        invoice_id = req.params["invoiceId"]
        # the status lookup "returns nothing until Basware enables it" (Basware P2P OpenAPI,
        # GET /v1/accountingDocuments/status)
        if invoice_id == "status":
            return self._fail(404, "ENTITY_NOT_FOUND", "Request was successful and no records were found.")
        with self.app.lock:
            doc = self.store.docs.get(invoice_id)
            view = public(doc) if doc else None
        if view is None:
            return self._fail(404, "ENTITY_NOT_FOUND", f"Accounting document {invoice_id} was not found.")
        return self._redirect(req, {"accountingDocuments": [view]})

    # -- the redirect target -------------------------------------------------------------------------
    def presigned_get(self, req: Request) -> Response:
        cfg = self.app.config
        rid = self.app.request_id()
        if req.headers.get("authorization") is not None:
            # Basware: "'Authorization' header must not be included in the redirected request".
            # S3 refuses a request that carries two auth mechanisms.
            return E.s3_error(cfg.presigned_auth_status, "InvalidArgument" if cfg.presigned_auth_status == 400
                              else "AccessDenied",
                              "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                              "Signature query string parameter or the Authorization header should be specified",
                              rid, {"ArgumentName": "Authorization"})
        if "host" not in req.headers:
            return E.s3_error(400, "InvalidRequest", "Missing required header for this request: Host", rid)
        with self.store._lock:
            found = self.store.presigned.get(req.params["objectId"])
        if found is None or req.q("X-Amz-Signature") != found.signature:
            return E.s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match "
                              "the signature you provided.", rid)
        if self.store.clock.time() >= found.expires_at:
            return E.s3_error(403, "AccessDenied", "Request has expired", rid,
                              {"X-Amz-Expires": req.q("X-Amz-Expires", "")})
        headers = {"Content-Type": "application/json", "x-amz-request-id": rid,
                   "ETag": '"' + hashlib.md5(found.body).hexdigest() + '"'}
        headers.update(found.headers)
        return Response(200, found.body, headers)

    # -- acknowledge ---------------------------------------------------------------------------------
    def acknowledge(self, req: Request) -> Response:
        invoice_id = req.params["invoiceId"]
        with self.app.lock:
            doc = self.store.docs.get(invoice_id)
            if doc is None:
                return self._fail(404, "ENTITY_NOT_FOUND", f"Accounting document {invoice_id} to acknowledge was "
                                                            "not found.")
            current = doc["processingStatus"]
            if current not in ACKNOWLEDGE:
                return self._fail(405, "METHOD_NOT_ALLOWED",
                                  f"Accounting document {invoice_id} is in status {current}; only documents waiting "
                                  "for transfer or prebook can be acknowledged (an invoice is acknowledged once, "
                                  "unless P2P re-transfers it).")
            doc["processingStatus"] = ACKNOWLEDGE[current]
            self.store.touch(doc)
        return Response.json("Success")

    # -- transfer responses --------------------------------------------------------------------------
    def _response_body(self, req: Request, schema: str) -> tuple[dict | None, Response | None]:
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return None, self._fail(400, "SCHEMA_VALIDATION_ERROR", f"Request body is not valid JSON: {exc}")
        problems = openapi.validate(schema, body)
        if problems:
            ext = body.get("externalCode") if isinstance(body, dict) and isinstance(body.get("externalCode"),
                                                                                     str) else None
            return None, self._fail(400, "SCHEMA_VALIDATION_ERROR", problems, [ext] * len(problems))
        return body, None

    def transfer_response(self, req: Request) -> Response:
        invoice_id = req.params["invoiceId"]
        body, error = self._response_body(req, "TransferResponseEntity")
        if error is not None:
            return error
        ext = body["externalCode"]
        with self.app.lock:
            doc = self.store.docs.get(invoice_id)
            if doc is None:
                return self._fail(404, "ENTITY_NOT_FOUND", f"Accounting document {invoice_id} was not found.", [ext])
            if ext in doc["_transfer_codes"]:
                return self._fail(409, "CONFLICT_IN_POST",
                                  f"A transfer response with externalCode {ext} already exists on accounting document "
                                  f"{invoice_id}; every response needs a new externalCode.", [ext])
            status = doc["processingStatus"]
            if status == "Transferred":
                return self._fail(400, "DATA_VALIDATION_FAILED",
                                  f"Accounting document {invoice_id} is already Transferred; transfer responses for "
                                  "transferred invoices are not allowed.", [ext])
            if status != "TransferInProgress":
                hint = (" Acknowledge it first." if status == "WaitingForTransfer" else
                        " A P2P user must re-transfer it first." if status == "TransferFailed" else "")
                return self._fail(400, "DATA_VALIDATION_FAILED",
                                  f"Accounting document {invoice_id} is in status {status}; a transfer response is "
                                  f"accepted only in TransferInProgress.{hint}", [ext])
            if body["success"]:
                doc["processingStatus"] = "Transferred"
                for key in ("voucherNumber1", "voucherNumber2"):
                    if body.get(key):
                        doc[key] = body[key]
                doc["paymentBlock"] = body["paymentBlock"]
            else:
                doc["processingStatus"] = "TransferFailed"
            doc["transferResponses"] = (doc["transferResponses"] + [copy.deepcopy(body)])[-KEEP_RESPONSES:]
            doc["_transfer_codes"].add(ext)
            self.store.touch(doc)
        self.app.record_response_status("TransferResponse", ext, invoice_id)
        return Response.json(body)

    # -- payment responses ---------------------------------------------------------------------------
    def payment_response(self, req: Request) -> Response:
        invoice_id = req.params["invoiceId"]
        body, error = self._response_body(req, "PaymentResponseEntity")
        if error is not None:
            return error
        ext = body["externalCode"]
        with self.app.lock:
            doc = self.store.docs.get(invoice_id)
            if doc is None:
                return self._fail(404, "ENTITY_NOT_FOUND", f"Accounting document {invoice_id} was not found.", [ext])
            if ext in doc["_payment_codes"]:
                return self._fail(409, "CONFLICT_IN_POST",
                                  f"A payment response with externalCode {ext} already exists on accounting document "
                                  f"{invoice_id}; every payment response needs a new externalCode.", [ext])
            status = doc["processingStatus"]
            if status not in ("Transferred", "Paid"):
                return self._fail(400, "DATA_VALIDATION_FAILED",
                                  f"Accounting document {invoice_id} is in status {status}; payment responses are "
                                  "accepted once it is Transferred.", [ext])
            if body["success"]:
                # "Fields not included on the payment response will be cleared"
                for key in PAYMENT_FIELDS:
                    doc[key] = body.get(key)
                doc["paymentBlock"] = body["paymentBlock"]
                doc["processingStatus"] = "Paid"
            doc["paymentResponses"] = (doc["paymentResponses"] + [copy.deepcopy(body)])[-KEEP_RESPONSES:]
            doc["_payment_codes"].add(ext)
            self.store.touch(doc)
        self.app.record_response_status("PaymentResponse", ext, invoice_id)
        return Response.json(body)


def summary(doc: dict) -> dict:
    keys = ("invoiceId", "invoiceNumber", "companyCode", "supplierCode", "currencyCode", "grossSum",
            "processingStatus", "voucherNumber1", "paymentBlock", "lastUpdated")
    out = {k: doc.get(k) for k in keys}
    out["transferResponses"] = copy.deepcopy(doc.get("transferResponses") or [])
    out["paymentResponses"] = copy.deepcopy(doc.get("paymentResponses") or [])
    return out


def loads_documents(raw: bytes) -> list[dict]:
    value = json.loads(raw.decode("utf-8"), parse_float=Decimal) if raw else []
    if isinstance(value, dict):
        value = value.get("accountingDocuments", [value]) if "invoiceId" not in value else [value]
    if not isinstance(value, list):
        raise ValueError("expected a JSON list of accounting documents")
    return value

