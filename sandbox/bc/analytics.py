"""The analytics `vendorLedgerEntries` API (Microsoft Learn, vendorLedgerEntry resource type, analytics APIs), which not every tenant offers.

Off unless the sandbox's `analytics` setting is on (`enable_analytics(app)`, or POST /_sandbox/config
{"analytics": true}): like a tenant without it, the sandbox then answers 404. When on, `GET /v2.0/{tenant}/{env}/api/microsoft/analytics/v1.0/companies({id})/vendorLedgerEntries`
serves one row per detailed vendor ledger entry of each posted purchase invoice, joined with its
vendor ledger entry (the entity's shape): the initial entry, and an `Application` row per payment
applied or unapplied (payments.py).
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


def payment_number(doc, ledger=None) -> str | None:
    """The document number of the latest payment applied to `doc` (None if none)."""
    applications = ledger.applications(doc) if ledger is not None else []
    return applications[-1].payment_no if applications else None


def rows_for(doc, ledger) -> list[dict]:
    """The ledger rows of one posted purchase invoice (none for drafts): payments.py keeps them."""
    if doc.type.entity_set != "purchaseInvoices" or not doc.posted:
        return []
    return ledger.rows(doc, abs(Decimal(str(doc.totals["totalAmountIncludingTax"]))))


def enable_analytics(app) -> None:
    """Offer the analytics API on this sandbox (a tenant that has it); same as config `analytics`."""
    app.config.analytics = True


def register_analytics(app) -> None:
    """The route; it answers like a missing API (404) while the `analytics` setting is off."""

    def handle(req: Request) -> Response:
        try:
            if not app.config.analytics:
                raise E.BcError(404, "BadRequest_NotFound",
                                "No HTTP resource was found that matches the request URI.")
            if req.method != "GET":
                raise E.method_not_allowed(req.method, "vendorLedgerEntries")
            if req.params["tenant"].lower() != app.tenant_id.lower() or req.params["environment"] != app.environment:
                raise E.BcError(404, "BadRequest_ResourceNotFound", "The environment was not found.")
            with app.lock:
                company = app._company(req.params["company"])
                rows = [row for doc in company.documents.values() for row in rows_for(doc, app.payment_ledger)]
                context = f"{req.base_url}{req.path}"
                return app._list(req, _KIND, rows, context)
        except E.BcError as exc:
            return app._error(exc)

    app.add_route("GET", ROUTE, handle)
