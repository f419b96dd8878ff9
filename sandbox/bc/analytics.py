"""The analytics `vendorLedgerEntries` API (Microsoft Learn, vendorLedgerEntry resource type, analytics APIs), which not every tenant offers.

Off unless `enable_analytics(app)` is called: like a tenant without it, the sandbox then answers
404. When on, `GET /v2.0/{tenant}/{env}/api/microsoft/analytics/v1.0/companies({id})/vendorLedgerEntries`
serves one row per detailed vendor ledger entry of each posted purchase invoice, joined with its
vendor ledger entry (the entity's shape): the initial entry, and for a Paid invoice the
`Application` of a payment (posted the day the invoice was marked paid, document `PMT<n>`).
`$filter`, `$select`, `$top` and paging work as on the v2.0 API.
"""
from __future__ import annotations

from decimal import Decimal

from sandbox.common import Request, Response

from . import errors as E
from .resources import Kind

FIELDS = ["vleEntryNo", "vleDueDate", "vleOpen", "vlePostingDate", "vleDocumentDate", "vleClosedAtDate",
          "dvleEntryNo", "dvlePostingDate", "dvleEntryType", "dvleDocumentType", "dvleDocumentNo", "dvleAmount",
          "dvleAmountLCY", "dvleAppliedVendLedgerEntryNo", "purchInvHeaderDocumentNo"]
ROUTE = (r"/v2\.0/{tenant}/{environment}/api/microsoft/analytics/v1\.0/companies\((?P<company>[^)]+)\)"
         r"/vendorLedgerEntries")
_KIND = Kind("vendorLedgerEntry", FIELDS, key=lambda r: (r["dvleEntryNo"],), to_json=dict)


def payment_number(doc) -> str:
    return f"PMT{doc.seq:05d}"


def rows_for(doc) -> list[dict]:
    """The ledger rows of one posted purchase invoice (none for drafts)."""
    if doc.type.entity_set != "purchaseInvoices" or not doc.posted:
        return []
    total = Decimal(str(doc.totals["totalAmountIncludingTax"]))
    posting = str(doc.header.get("postingDate") or "")[:10]
    paid_on = doc.last_modified[:10] if doc.status == "Paid" else None
    vle = {"vleEntryNo": doc.seq, "vleDueDate": str(doc.header.get("dueDate") or "")[:10] or None,
           "vleOpen": paid_on is None, "vlePostingDate": posting, "vleDocumentDate": posting,
           "vleClosedAtDate": paid_on or "0001-01-01", "purchInvHeaderDocumentNo": doc.number}
    rows = [dict(vle, dvleEntryNo=doc.seq * 10, dvlePostingDate=posting, dvleEntryType="Initial Entry",
                 dvleDocumentType="Invoice", dvleDocumentNo=doc.number, dvleAmount=-total, dvleAmountLCY=-total,
                 dvleAppliedVendLedgerEntryNo=0)]
    if paid_on:
        rows.append(dict(vle, dvleEntryNo=doc.seq * 10 + 1, dvlePostingDate=paid_on, dvleEntryType="Application",
                         dvleDocumentType="Payment", dvleDocumentNo=payment_number(doc), dvleAmount=total,
                         dvleAmountLCY=total, dvleAppliedVendLedgerEntryNo=doc.seq))
    return rows


def enable_analytics(app) -> None:
    """Offer the analytics API on this sandbox (a tenant that has it)."""

    def handle(req: Request) -> Response:
        try:
            if req.method != "GET":
                raise E.method_not_allowed(req.method, "vendorLedgerEntries")
            if req.params["tenant"].lower() != app.tenant_id.lower() or req.params["environment"] != app.environment:
                raise E.BcError(404, "BadRequest_ResourceNotFound", "The environment was not found.")
            with app.lock:
                company = app._company(req.params["company"])
                rows = [row for doc in company.documents.values() for row in rows_for(doc)]
                context = f"{req.base_url}{req.path}"
                return app._list(req, _KIND, rows, context)
        except E.BcError as exc:
            return app._error(exc)

    app.add_route("GET", ROUTE, handle)
