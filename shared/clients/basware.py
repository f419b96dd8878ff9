"""Basware P2P API client (Basware's P2P OpenAPI, api.basware.com/swagger; copies in sandbox/basware/openapi/).

Facts this code relies on:
- list and single GETs of accountingDocuments may answer 302 to a pre-signed URL that must be
  fetched WITHOUT the Authorization header (P2P OpenAPI, GET /v1/accountingDocuments);
- paging: response header `X-amz-meta-continuationToken`, sent back as REQUEST header
  `x-amz-meta-continuationtoken` with the same query parameters; it may sit on the 302 or on the
  final response, so both are read (P2P OpenAPI parameter descriptions); 404 means "no (more) records";
- acknowledge twice answers 405 (already acknowledged), which is not a failure (P2P OpenAPI,
  POST /v1/accountingDocuments/{invoiceId}/acknowledge; Basware P2P FAQ);
- every transfer/payment response needs a fresh externalCode (P2P OpenAPI, TransferResponseEntity,
  PaymentResponseEntity);
- master-data POSTs answer with header `x-amzn-RequestId`, read back at /v1/requestStatus (P2P OpenAPI,
  GET /v1/requestStatus/{requestId});
- an attachment download (`GET /v1/accountingDocuments/{invoiceId}/attachments/{attachmentExternalCode}`)
  answers 302 to a pre-signed URL valid 15 minutes, fetched WITHOUT the Authorization header; 404 =
  no such attachment, or the tenant setting `OpenApi.SendInvoiceAttachments` is off (P2P OpenAPI).
"""
from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Iterator
from urllib.parse import quote, urljoin, urlsplit

import httpx

from shared.clients.http import NETWORK_ERRORS, ApiClient
from shared.core.errors import AuthError, TransientError
from shared.models.basware import AccountingDocument, PaymentResponse, RequestStatus, TransferResponse

CONTINUATION_REQUEST_HEADER = "x-amz-meta-continuationtoken"
CONTINUATION_RESPONSE_HEADER = "x-amz-meta-continuationtoken"  # httpx headers are case-insensitive

# endpoint -> (path, max records per request) from the operations' notes in Basware's P2P OpenAPI
MASTERDATA_ENDPOINTS = {
    "vendors": ("/v1/vendors", 200),
    "accounts": ("/v1/accounts", 500),
    "costCenters": ("/v1/costCenters", 500),
    "projects": ("/v2/projects", 500),
    "matchingOrders": ("/v1/matchingOrders", 500),
    "matchingOrderLines": ("/v1/matchingOrderLines", 100),
}
LIST_LIMIT = 500
MAX_REQUEST_BYTES = 6 * 1024 * 1024
DOWNLOAD_CHUNK = 64 * 1024
REDIRECTS = (301, 302, 303, 307, 308)

log = logging.getLogger("ml_connector.http")


class Download:
    """An attachment being read from its pre-signed URL: `size` (Content-Length, None if absent)
    and `chunks()`; nothing is held beyond one chunk."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        length = response.headers.get("content-length")
        self.size = int(length) if length and length.isdigit() else None
        self.content_type = response.headers.get("content-type")

    def chunks(self, size: int = DOWNLOAD_CHUNK) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes(size)
        except NETWORK_ERRORS as exc:
            raise TransientError(f"basware: the attachment download broke off ({type(exc).__name__})",
                                 system="basware") from None


def parse_json(response: httpx.Response) -> Any:
    """JSON with numbers as Decimal: Basware declares amounts as doubles, money must not be floats."""
    return json.loads(response.content or b"null", parse_float=Decimal)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; Decimals go out as numbers (the shortest float repr keeps 2-decimal money exact)."""
    return json.dumps(value, default=lambda v: float(v) if isinstance(v, Decimal) else str(v),
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class BaswareClient(ApiClient):
    system = "basware"

    def parse_error(self, response: httpx.Response) -> tuple[str | None, str, str | None]:
        try:
            body = response.json()
        except ValueError:
            return None, (response.text or response.reason_phrase)[:500], None
        request_id = response.headers.get("x-amzn-requestid")
        if isinstance(body, dict):
            errors = body.get("errors") or body.get("errorMessages") or []
            if errors and isinstance(errors, list):
                first = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
                messages = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors[:5])
                return first.get("code"), messages[:500], body.get("requestId") or request_id
            if "error" in body:  # token endpoint shape
                return str(body["error"]), str(body.get("error_description") or body["error"])[:500], request_id
            if "detail" in body:  # FastAPI shape on push-notification APIs
                return "VALIDATION", str(body["detail"])[:500], request_id
            if "message" in body:
                return None, str(body["message"])[:500], request_id
        return None, str(body)[:500], request_id

    # -- accounting documents --------------------------------------------------------------------
    def list_documents(self, status: str, *, company_code: str | None = None, page_size: int = 100,
                       last_updated: str | None = None) -> Iterator[AccountingDocument]:
        """Every document in `status`, page by page (continuation header, redirects, 404 = none)."""
        params = {"ProcessingStatus": status, "pageSize": str(page_size)}
        if company_code:
            params["companyCode"] = company_code
        if last_updated:
            params["lastUpdated"] = last_updated
        token: str | None = None
        while True:
            headers = {CONTINUATION_REQUEST_HEADER: token} if token else None
            response = self.request("GET", "/v1/accountingDocuments", params=params, headers=headers, ok=(404,),
                                    redirect_without_auth=True)
            if response.status_code == 404:
                return
            for doc in parse_json(response).get("accountingDocuments") or []:
                yield AccountingDocument.model_validate(doc)
            first = getattr(response, "redirected_from", None)
            token = response.headers.get(CONTINUATION_RESPONSE_HEADER) or (
                first.headers.get(CONTINUATION_RESPONSE_HEADER) if first is not None else None)
            if not token:
                return

    def get_document(self, invoice_id: str) -> AccountingDocument | None:
        response = self.request("GET", f"/v1/accountingDocuments/{invoice_id}", ok=(404,),
                                redirect_without_auth=True)
        if response.status_code == 404:
            return None
        docs = parse_json(response).get("accountingDocuments") or []
        return AccountingDocument.model_validate(docs[0]) if docs else None

    def acknowledge(self, invoice_id: str) -> bool:
        """True if acknowledged now, False if it already was (405)."""
        response = self.request("POST", f"/v1/accountingDocuments/{invoice_id}/acknowledge", content=b"",
                                headers={"Content-Type": "application/json"}, ok=(405,))
        return response.status_code != 405

    def send_transfer_response(self, invoice_id: str, body: TransferResponse, *,
                               max_attempts: int | None = None) -> dict:
        response = self.request("POST", f"/v1/accountingDocuments/{invoice_id}/transferResponses",
                                content=dumps(body.model_dump(exclude_none=True)),
                                headers={"Content-Type": "application/json"}, max_attempts=max_attempts)
        return parse_json(response) if response.content else {}

    def send_payment_response(self, invoice_id: str, body: PaymentResponse, *,
                              max_attempts: int | None = None) -> dict:
        # Fields left out are cleared on the invoice, so nulls are sent explicitly (full field set).
        response = self.request("POST", f"/v1/accountingDocuments/{invoice_id}/paymentResponses",
                                content=dumps(body.model_dump()), headers={"Content-Type": "application/json"},
                                max_attempts=max_attempts)
        return parse_json(response) if response.content else {}

    # -- attachments -------------------------------------------------------------------------------
    @contextmanager
    def open_attachment(self, invoice_id: str, external_code: str) -> Iterator[Download | None]:
        """Stream one attachment: `with client.open_attachment(i, c) as download:` (None on 404).

        One try: a failure raises TransientError (429, 5xx, network, a refused or expired
        pre-signed URL) or PermanentError (other 4xx); the caller retries the download together
        with whatever consumes it, since a stream cannot be replayed.
        """
        path = f"/v1/accountingDocuments/{quote(invoice_id, safe='')}/attachments/{quote(external_code, safe='')}"
        response = self._open(self.url(path), authorised=True)
        try:
            if response.status_code == 404:
                yield None
                return
            hops = 0
            while response.status_code in REDIRECTS and hops < 5:
                location = urljoin(str(response.url), response.headers.get("location", ""))
                response.close()
                # the pre-signed target refuses (and must never see) the bearer token
                response = self._open(location, authorised=False)
                hops += 1
            if response.status_code >= 300:
                response.read()
                if hops:
                    # S3's error bodies can echo the signature (SignatureProvided, StringToSign): keep
                    # only its <Code>; an expired or refused pre-signed URL is asked for again
                    match = re.search(rb"<Code>([A-Za-z]+)</Code>", response.content or b"")
                    code = match.group(1).decode() if match else None
                    message = f"the pre-signed attachment URL answered {response.status_code} ({code or 'no code'})"
                    raise TransientError(message, status=response.status_code, code=code, system=self.system)
                if response.status_code in REDIRECTS:  # more hops than followed: ask again later
                    raise self._transient(response, None, False)
                raise self.error_for(response)
            yield Download(response)
        finally:
            response.close()

    def _open(self, url: str, *, authorised: bool) -> httpx.Response:
        """One streamed GET (headers read, body not); a 401 refreshes the token once."""
        refreshed = False
        while True:
            headers, token = {}, ""
            if authorised and self.tokens is not None:
                token = self.tokens.token()
                headers["Authorization"] = f"Bearer {token}"
            started = time.monotonic()
            self._count("requests")
            try:
                response = self._http.send(self._http.build_request("GET", url, headers=headers), stream=True)
            except NETWORK_ERRORS as exc:
                raise TransientError(f"basware did not answer ({type(exc).__name__})", system=self.system) from None
            log.info("event=http.call system=%s GET %s status=%s attempts=1 ms=%.0f", self.system,
                     urlsplit(url).path, response.status_code, (time.monotonic() - started) * 1000)
            if response.status_code == 401 and authorised and self.tokens is not None:
                response.read()
                response.close()
                if refreshed:
                    raise AuthError("basware refused the credentials after a token refresh", status=401,
                                    system=self.system)
                refreshed = True
                self._count("token_refreshes")
                self.tokens.invalidate(token)
                continue
            return response

    # -- master data -------------------------------------------------------------------------------
    def import_records(self, path: str, records: list[dict]) -> str | None:
        """POST one batch of master-data records; returns the request id for requestStatus."""
        body = dumps(records)
        if len(body) > MAX_REQUEST_BYTES:
            raise ValueError(f"batch of {len(records)} records is {len(body)} bytes, over Basware's 6 MB limit")
        response = self.request("POST", path, content=body, headers={"Content-Type": "application/json"})
        return response.headers.get("x-amzn-requestid")

    def request_status(self, request_id: str) -> RequestStatus | None:
        response = self.request("GET", f"/v1/requestStatus/{request_id}", ok=(404,))
        if response.status_code == 404:
            return None
        return RequestStatus.from_response(parse_json(response))

    # -- push-notification subscriptions -------------------------------------------------------------
    def list_subscriptions(self) -> list[dict]:
        response = self.request("GET", "/v1/subscriptions", ok=(404,))
        if response.status_code == 404:
            return []
        body = parse_json(response)
        return body.get("subscriptions", []) if isinstance(body, dict) else body

    def create_subscription(self, url: str, secret: str, task_type: str = "AccountingDocuments",
                            sub_type: str = "WaitingForTransfer") -> list[dict]:
        payload = [{"taskType": task_type, "taskSubType": sub_type, "subscriptionType": "Webhook",
                    "notificationWebhookURL": url, "webhookAuthenticationToken": secret}]
        response = self.request("POST", "/v1/subscriptions", content=dumps(payload),
                                headers={"Content-Type": "application/json"})
        return parse_json(response)
