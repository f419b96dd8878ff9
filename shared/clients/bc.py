"""Business Central API v2.0 client (Microsoft Learn, "Business Central API (v2.0)").

Facts this code relies on:
- URL: {BC_API_URL}/v2.0/{tenant}/{environment}/api/v2.0/companies({id})/... (Microsoft Learn, webservices/api-endpoint-structure);
- deep insert of lines and dimensionSetLines in one POST, atomic (Microsoft Learn,
  api/dynamics_purchaseInvoiceLine_create; microsoft/ALAppExtensions PR #11158);
- `Microsoft.NAV.post` answers 204 and the document keeps its id; GET it again for the posted
  number and status (AL: APIV2PurchaseInvoices.Page.al; codeunit 5529 Purch. Inv. Aggregator);
- PATCH and DELETE need If-Match (Microsoft Learn, api-reference/v2.0 PATCH and DELETE pages); errors are {"error":{"code","message"}} with a
  correlation id at the end of the message (Microsoft Learn, webservices/use-odata-batch;
  microsoft/ALAppExtensions issue #16868);
- paging with `Prefer: odata.maxpagesize` and `@odata.nextLink` (Microsoft Learn, webservices/Server-Driven-Paging-in-OData-Web-Services);
- subscriptions sit at the API root, keyed in single quotes (Microsoft Learn, api-reference/v2.0/dynamics-subscriptions);
- document attachments in two calls: POST `documentAttachments` {fileName, parentType, parentId},
  then PATCH `documentAttachments({id})/attachmentContent` with the raw bytes and If-Match
  (API page 30080 `APIV2DocumentAttachments.Page.al`); a request body may be at most 350 MB
  (Microsoft Learn, administration/operational-limits-online, "Max body size").
"""
from __future__ import annotations

import json
import logging
import re
import time
from decimal import Decimal
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

import httpx

from shared.clients.http import NETWORK_ERRORS, ApiClient, CallSummary
from shared.core.errors import TransientError
from shared.models.attachments import DocumentAttachment
from shared.models.bc import PurchaseDocument

log = logging.getLogger("ml_connector.http")

_CORRELATION = re.compile(r"CorrelationId:\s*([0-9A-Za-z-]+)")

INVOICES = "purchaseInvoices"
CREDIT_MEMOS = "purchaseCreditMemos"
LINES = {INVOICES: "purchaseInvoiceLines", CREDIT_MEMOS: "purchaseCreditMemoLines"}
VENDOR_DOC_NUMBER = {INVOICES: "vendorInvoiceNumber", CREDIT_MEMOS: "vendorCreditMemoNumber"}
ATTACHMENT_PARENT_TYPE = {INVOICES: "Purchase Invoice", CREDIT_MEMOS: "Purchase Credit Memo"}
MAX_BODY_BYTES = 350 * 1024 * 1024  # BC online's maximum request body (operational-limits-online)


def odata_literal(value: str) -> str:
    """A quoted OData string literal ('' escapes a quote)."""
    return "'" + str(value).replace("'", "''") + "'"


def _parse(response: httpx.Response) -> Any:
    return json.loads(response.content or b"null", parse_float=Decimal)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, default=lambda v: float(v) if isinstance(v, Decimal) else str(v),
                      separators=(",", ":")).encode()


class BcClient(ApiClient):
    system = "bc"

    def __init__(self, api_url: str, tenant_id: str, environment: str, tokens, **kwargs) -> None:
        headers = {"Accept-Language": "en-US", "Accept": "application/json"}  # stable error texts (Microsoft Learn, developer/devenv-connect-apps-tips)
        super().__init__(f"{api_url.rstrip('/')}/v2.0/{tenant_id}/{environment}/api/v2.0", tokens,
                         default_headers=headers, **kwargs)
        self.api_root = f"{api_url.rstrip('/')}/v2.0/{tenant_id}/{environment}/api"

    def parse_error(self, response: httpx.Response) -> tuple[str | None, str, str | None]:
        try:
            body = response.json()
            error = body.get("error") or {}
            message = str(error.get("message") or response.reason_phrase)
            code = error.get("code")
        except (ValueError, AttributeError):
            return None, (response.text or response.reason_phrase)[:500], None
        match = _CORRELATION.search(message)
        clean = _CORRELATION.sub("", message).strip().rstrip(".").strip()
        return code, clean[:500], match.group(1) if match else None

    # -- generic -----------------------------------------------------------------------------------
    def company_path(self, company_id: str, entity: str) -> str:
        return f"/companies({company_id})/{entity}"

    def iterate(self, path: str, *, filter: str | None = None, expand: str | None = None,
                page_size: int | None = 1000, select: str | None = None) -> Iterator[dict]:
        """Every entity of a collection, following @odata.nextLink, one page in memory at a time."""
        params = {}
        if filter:
            params["$filter"] = filter
        if expand:
            params["$expand"] = expand
        if select:
            params["$select"] = select
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else None
        url: str | None = path
        while url:
            response = self.request("GET", url, params=params if url == path else None, headers=headers)
            body = _parse(response)
            yield from body.get("value", [])
            url = body.get("@odata.nextLink")

    def get(self, path: str, *, expand: str | None = None) -> dict | None:
        response = self.request("GET", path, params={"$expand": expand} if expand else None, ok=(404,))
        if response.status_code == 404:
            return None
        return _parse(response)

    def companies(self) -> list[dict]:
        return list(self.iterate("/companies", page_size=None))

    # -- purchase documents ---------------------------------------------------------------------------
    def find_documents(self, company_id: str, entity: str, vendor_number: str, vendor_doc_number: str,
                       expand: str | None = None) -> list[PurchaseDocument]:
        """Drafts and posted documents of this vendor with this vendor invoice / credit memo number.
        BC compares Code fields case-insensitively (they are stored upper-case); callers compare again."""
        field = VENDOR_DOC_NUMBER[entity]
        flt = f"vendorNumber eq {odata_literal(vendor_number)} and {field} eq {odata_literal(vendor_doc_number)}"
        return [PurchaseDocument.model_validate(d)
                for d in self.iterate(self.company_path(company_id, entity), filter=flt, page_size=None,
                                      expand=expand)]

    def get_document(self, company_id: str, entity: str, document_id: str,
                     expand: str | None = None) -> PurchaseDocument | None:
        body = self.get(f"{self.company_path(company_id, entity)}({document_id})", expand=expand)
        return PurchaseDocument.model_validate(body) if body else None

    def create_document(self, company_id: str, entity: str, body: dict, *, max_attempts: int | None = None,
                        expand: str | None = None) -> PurchaseDocument:
        response = self.request("POST", self.company_path(company_id, entity), content=_dumps(body),
                                params={"$expand": expand} if expand else None,
                                headers={"Content-Type": "application/json"}, max_attempts=max_attempts)
        return PurchaseDocument.model_validate(_parse(response))

    def post_document(self, company_id: str, entity: str, document_id: str, *,
                      max_attempts: int | None = None) -> None:
        self.request("POST", f"{self.company_path(company_id, entity)}({document_id})/Microsoft.NAV.post",
                     content=b"", headers={"Content-Type": "application/json"}, max_attempts=max_attempts)

    def line_dimensions_path(self, company_id: str, entity: str, document_id: str, line_id: str) -> str:
        return f"{self.company_path(company_id, entity)}({document_id})/{LINES[entity]}({line_id})/dimensionSetLines"

    def set_line_dimension(self, company_id: str, entity: str, document_id: str, line_id: str, code: str,
                           value_code: str, *, dimension_id: str | None = None, etag: str | None = None,
                           max_attempts: int | None = None) -> dict:
        """PATCH an inherited line dimension (If-Match) or POST a missing one (Microsoft Learn,
        api-reference/v2.0/resources/dynamics_dimensionsetline; AL: APIV2DimensionSetLines.Page.al)."""
        path = self.line_dimensions_path(company_id, entity, document_id, line_id)
        if dimension_id:
            response = self.request("PATCH", f"{path}({dimension_id})", content=_dumps({"valueCode": value_code}),
                                    headers={"Content-Type": "application/json", "If-Match": etag or "*"},
                                    max_attempts=max_attempts)
        else:
            response = self.request("POST", path, content=_dumps({"code": code, "valueCode": value_code}),
                                    headers={"Content-Type": "application/json"}, max_attempts=max_attempts)
        return _parse(response)

    def vendor_default_dimensions(self, company_id: str) -> list[dict]:
        """Every vendor's default dimensions (`defaultDimensions`; G/L accounts' are not exposed)."""
        return list(self.iterate(self.company_path(company_id, "defaultDimensions"),
                                 filter="parentType eq 'Vendor'"))

    def delete_document(self, company_id: str, entity: str, document_id: str, etag: str | None = None) -> bool:
        """Delete a draft. False if it was already gone."""
        response = self.request("DELETE", f"{self.company_path(company_id, entity)}({document_id})",
                                headers={"If-Match": etag or "*"}, ok=(404,))
        return response.status_code != 404

    def list_documents(self, company_id: str, entity: str, filter: str, page_size: int = 500) -> Iterator[PurchaseDocument]:
        for body in self.iterate(self.company_path(company_id, entity), filter=filter, page_size=page_size):
            yield PurchaseDocument.model_validate(body)

    # -- document attachments ------------------------------------------------------------------------
    def list_attachments(self, company_id: str, parent_id: str) -> list[DocumentAttachment]:
        """The attachments on one purchase invoice or credit memo (draft or posted)."""
        return [DocumentAttachment.model_validate(a)
                for a in self.iterate(self.company_path(company_id, "documentAttachments"),
                                      filter=f"parentId eq {parent_id}", page_size=None)]

    def create_attachment(self, company_id: str, entity: str, parent_id: str, file_name: str, *,
                          max_attempts: int | None = None) -> DocumentAttachment:
        """The attachment record, still without its file (byteSize 0)."""
        body = {"fileName": file_name, "parentType": ATTACHMENT_PARENT_TYPE[entity], "parentId": parent_id}
        response = self.request("POST", self.company_path(company_id, "documentAttachments"), content=_dumps(body),
                                headers={"Content-Type": "application/json"}, max_attempts=max_attempts)
        return DocumentAttachment.model_validate(_parse(response))

    def upload_attachment_content(self, company_id: str, attachment_id: str, chunks: Iterable[bytes],
                                  size: int) -> None:
        """PATCH the file's bytes as they arrive (`Content-Length: size`, never all in memory).

        One try: a stream cannot be sent twice, so a failure raises (TransientError for 401, 408,
        429, 5xx and network errors, after invalidating a refused token; PermanentError for other
        4xx) and the caller starts the download again."""
        path = f"{self.company_path(company_id, 'documentAttachments')}({attachment_id})/attachmentContent"
        url = self.url(path)
        token = self.tokens.token() if self.tokens is not None else ""
        headers = {"Content-Type": "application/octet-stream", "If-Match": "*", "Content-Length": str(size)}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        summary = CallSummary("PATCH", urlsplit(url).path, attempts=1)
        started = time.monotonic()
        try:
            with self._slots.hold():
                self._count("requests")
                try:
                    response = self._http.request("PATCH", url, content=chunks, headers=headers, timeout=300)
                except (*NETWORK_ERRORS, httpx.LocalProtocolError) as exc:  # Local: the stream fell short
                    raise TransientError(f"bc did not answer the attachment upload ({type(exc).__name__})",
                                         system=self.system) from None
            summary.status = response.status_code
            if response.status_code == 401 and self.tokens is not None:
                self.tokens.invalidate(token)
                raise TransientError("bc refused the token during the attachment upload; refreshed for the retry",
                                     status=401, system=self.system)
            error = self.error_for(response)
            if error is not None:
                raise error
        finally:
            summary.elapsed_ms = (time.monotonic() - started) * 1000
            log.info("event=http.call system=%s PATCH %s status=%s attempts=1 ms=%.0f", self.system, summary.path,
                     summary.status, summary.elapsed_ms)
            if self._on_call:
                self._on_call(summary)

    def attachment_content(self, company_id: str, attachment_id: str) -> bytes:
        """The stored file (tests and tools; the flow never reads it back)."""
        path = f"{self.company_path(company_id, 'documentAttachments')}({attachment_id})/attachmentContent"
        return self.request("GET", path, headers={"Accept": "application/octet-stream"}).content

    # -- master data ---------------------------------------------------------------------------------
    def vendor(self, company_id: str, number: str) -> dict | None:
        found = list(self.iterate(self.company_path(company_id, "vendors"),
                                  filter=f"number eq {odata_literal(number)}", page_size=None))
        return found[0] if found else None

    def accounts(self, company_id: str, numbers: list[str]) -> dict[str, dict]:
        """The named G/L accounts, by number (one request for a handful of numbers)."""
        out: dict[str, dict] = {}
        for number in sorted(set(numbers)):
            for acc in self.iterate(self.company_path(company_id, "accounts"),
                                    filter=f"number eq {odata_literal(number)}", page_size=None):
                out[acc["number"]] = acc
        return out

    def dimension_values(self, company_id: str) -> dict[str, set[str]]:
        """{dimension code: {value codes}} for the whole company."""
        dims = {d["id"]: d["code"] for d in self.iterate(self.company_path(company_id, "dimensions"))}
        out: dict[str, set[str]] = {code: set() for code in dims.values()}
        for value in self.iterate(self.company_path(company_id, "dimensionValues")):
            code = dims.get(value.get("dimensionId"))
            if code is not None:
                out[code].add(value["code"])
        return out

    # -- subscriptions (API root, not under a company) ------------------------------------------------
    def list_subscriptions(self) -> list[dict]:
        return list(self.iterate("/subscriptions", page_size=None))

    def create_subscription(self, notification_url: str, resource: str, client_state: str) -> dict:
        body = {"notificationUrl": notification_url, "resource": resource, "clientState": client_state}
        response = self.request("POST", "/subscriptions", content=_dumps(body),
                                headers={"Content-Type": "application/json"}, timeout=60)
        return _parse(response)

    def renew_subscription(self, subscription_id: str, etag: str | None) -> dict:
        response = self.request("PATCH", f"/subscriptions('{subscription_id}')", content=b"{}",
                                headers={"Content-Type": "application/json", "If-Match": etag or "*"}, timeout=60)
        return _parse(response)

    def delete_subscription(self, subscription_id: str, etag: str | None = None) -> None:
        self.request("DELETE", f"/subscriptions('{subscription_id}')", headers={"If-Match": etag or "*"}, ok=(404,))

    # -- analytics API (optional in a tenant) --------------------------------------------------------
    def vendor_ledger_entries(self, company_id: str, filter: str) -> list[dict] | None:
        """Analytics `vendorLedgerEntries` (Microsoft Learn, vendorLedgerEntry resource type, analytics APIs); None where the tenant lacks it."""
        url = f"{self.api_root}/microsoft/analytics/v1.0/companies({company_id})/vendorLedgerEntries"
        response = self.request("GET", url, params={"$filter": filter}, ok=(404, 400))
        if response.status_code in (404, 400):
            return None
        body = _parse(response)
        rows = list(body.get("value", []))
        while body.get("@odata.nextLink"):  # server-driven paging: a busy ledger spans pages
            body = _parse(self.request("GET", body["@odata.nextLink"]))
            rows.extend(body.get("value", []))
        return rows
