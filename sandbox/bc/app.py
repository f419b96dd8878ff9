"""`BcSandbox`: the Business Central API v2.0 sandbox (see sandbox/bc/__init__.py for the map)."""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, fields as dc_fields
from typing import Any
from urllib.parse import quote, unquote, urlencode

from sandbox import seed
from sandbox.common import Request, Response, SandboxApp

from . import attachments
from . import defaults
from . import errors as E
from .latecommit import LateCommits
from .auth import TokenIssuer
from .control import register_control_routes
from .documents import DOC_TYPES, DocType, Document, dim_kind, document_kind, line_kind
from .masterdata import (account_kind, company_kind, create_vendor, currency_kind, delete_vendor, dimension_kind,
                         dimension_value_kind, patch_vendor, vendor_kind)
from .odata import Options, encode_token, max_page_size
from .payments import PaymentLedger
from .orders import add_purchase_order, order_kind, order_line_kind, seed_orders, set_purchase_order
from .resources import Kind, collection, shape
from .rules import DocumentService, PostingRules
from .store import Clock, Company, etag_of, iso, public
from .subscriptions import SubscriptionConfig, Subscriptions

TOKEN_PATH = re.compile(r"^/[^/]+/oauth2/v2\.0/token$")
_SEGMENT = re.compile(r"^([A-Za-z_$][\w.$]*)(?:\((.*)\))?$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CODE_MAP = {"NotFound": "BadRequest_NotFound", "MethodNotAllowed": "BadRequest_MethodNotAllowed",
             "TooManyRequests": "Application_TooManyRequests", "InternalError": "Internal_ServerError"}
MASTER_SETS = {"vendors", "accounts", "dimensions", "dimensionValues", "currencies"}


@dataclass
class BcConfig:
    """Knobs beyond common.py's (latency, throttle): set in the constructor or POST /_sandbox/config."""

    page_size: int = 20000  # BC online's fixed maximum (Microsoft Learn, administration/operational-limits-online)
    processing_delay_ms: float = 0.0  # time spent inside the throttle's concurrency slot
    post_requires_if_match: bool = False  # not documented either way: accept both by default
    deep_insert_returns_lines: bool = True  # OData v4 (Part 1, 11.4.2.2): a deep insert's answer includes the inserted lines
    max_attachment_bytes: int = attachments.MAX_BODY_BYTES  # attachmentContent PATCH bodies above: 413
    analytics: bool = False  # serve the analytics vendorLedgerEntries API (not every tenant has it: Microsoft Learn, analytics APIs)


class BcSandbox(SandboxApp):
    """Business Central API v2.0 with its Entra token endpoint, seeded with seed.py's company."""

    name = "bc"

    def __init__(self, vendor_count: int = 50, *, seed_purchase_orders: bool = True, tenant_id: str = seed.TENANT_ID,
                 environment: str = seed.ENVIRONMENT, **config: Any) -> None:
        """`config`: any key of POST /_sandbox/config, e.g. `throttle={"max_requests": 3}`,
        `token_lifetime=60`, `notification_delay=30`, `page_size=1000` (see `configure`)."""
        super().__init__()
        self.tenant_id = tenant_id
        self.environment = environment
        self.base_url: str | None = None  # set by whoever serves it (tests, __main__)
        self.clock = Clock()
        self.config = BcConfig()
        self.rules = PostingRules()
        self.tokens = TokenIssuer(self.clock, tenant_id)
        self.subscriptions = Subscriptions(self.clock, SubscriptionConfig(), lambda cid: cid in self.companies)
        self.companies: dict[str, Company] = {}
        self.attachments = attachments.AttachmentStore(self.clock)
        self.payment_ledger = PaymentLedger()
        # BC's per-user limits: 5 requests processed at once, up to 95 more queued, a queued request
        # given up after 8 minutes (operational-limits-online.md); requests beyond are 429
        self.throttle.configure(max_concurrent=5, max_queue=95, queue_wait=480.0)
        self.late_commits = LateCommits()
        self.processing = {"now": 0, "peak": 0}  # requests inside BC's 5 processing slots
        self._processing_lock = threading.Lock()
        company = self.add_company(seed.COMPANY_ID, seed.COMPANY_NAME, vendor_count=vendor_count)
        if seed_purchase_orders:
            seed_orders(company)
        unknown = self.configure(config)
        if unknown:
            raise TypeError(f"unknown BcSandbox settings: {sorted(unknown)}")
        self._register_routes()

    # == in-process API =============================================================================
    @property
    def company(self) -> Company:
        """The seeded company (seed.COMPANY_ID)."""
        return self.companies[seed.COMPANY_ID]

    @property
    def documents(self) -> dict[str, Document]:
        """Every purchase invoice and credit memo, draft and posted, by id."""
        with self.lock:
            return {d.id: d for c in self.companies.values() for d in c.documents.values()}

    @property
    def tokens_issued(self) -> int:
        return self.tokens.issued

    def add_company(self, company_id: str, name: str, *, vendor_count: int = 50, seed_data: bool = True) -> Company:
        with self.lock:
            company = Company(company_id.lower(), name, self.clock)
            if seed_data:
                company.seed_standard(vendor_count)
                defaults.seed_defaults(company)
            self.companies[company.id] = company
            return company

    def add_client(self, client_id: str, secret: str) -> None:
        """Another Entra app (a second throttling principal)."""
        self.tokens.add_client(client_id, secret)

    def seed_bulk(self, vendors: int = 0, accounts: int = 0, dimension_values: int = 0,
                  dimension: str | None = None) -> None:
        with self.lock:
            self.company.seed_bulk(vendors, accounts, dimension_values, dimension)

    def _svc(self, company: Company) -> DocumentService:
        return DocumentService(company, self.clock, self.rules)

    def _notify(self, company: Company, entity_set: str, entity_id: str, change: str, stamp: str) -> None:
        self.subscriptions.emit(company.id, entity_set, entity_id, change, stamp)

    def _find_document(self, document_id: str) -> tuple[Company, Document]:
        for company in self.companies.values():
            if document_id in company.documents:
                return company, company.documents[document_id]
        raise KeyError(f"no purchase document {document_id}")

    def mark_paid(self, document_id: str) -> Document:
        """A posted invoice becomes Paid (its vendor ledger entry closed): status, lastModifiedDateTime
        and an `updated` notification, as BC's aggregator does (BaseApp codeunit 5529 Purch. Inv. Aggregator)."""
        return self.pay(document_id)

    def pay(self, document_id: str, amount=None) -> Document:
        """Apply a payment of `amount` (default: what remains) to a posted document; see payments.py.
        Only the payment that closes it changes its status (and notifies)."""
        from decimal import Decimal

        with self.lock:
            company, doc = self._find_document(document_id)
            if doc.status not in ("Open", "Paid") or not doc.posted:
                self._svc(company).mark_paid(doc)  # raises BC's dialog error for drafts and the like
            total = abs(Decimal(str(doc.totals["totalAmountIncludingTax"])))
            remaining = total - self.payment_ledger.paid(doc)
            if remaining > 0 or doc.status != "Paid":
                amount = remaining if amount is None else Decimal(str(amount))
                self.payment_ledger.apply(doc, amount, total, self.clock.stamp().date().isoformat())
            if self.payment_ledger.paid(doc) >= total and doc.status != "Paid":
                self._svc(company).mark_paid(doc)
                self._notify(company, doc.type.entity_set, doc.id, "updated", doc.last_modified)
            return doc

    def unapply(self, document_id: str, payment_no: str | None = None) -> Document:
        """Unapply a payment: the paid amount goes down; a Paid document is Open again (and notifies)."""
        with self.lock:
            company, doc = self._find_document(document_id)
            self.payment_ledger.unapply(doc, self.clock.stamp().date().isoformat(), payment_no)
            if doc.status == "Paid":
                doc.status = "Open"
                self._svc(company).touch(doc)
                self._notify(company, doc.type.entity_set, doc.id, "updated", doc.last_modified)
            return doc

    def set_vendor(self, number: str, **fields) -> dict:
        """Create or change a vendor "in BC" (e.g. blocked="All")."""
        with self.lock:
            rec = self.company.set_vendor(number, **fields)
            self._notify(self.company, "vendors", rec["id"], "updated", rec["lastModifiedDateTime"])
            return rec

    def delete_vendor(self, number: str) -> None:
        with self.lock:
            rec = self.company.delete_vendor(number)
            self._notify(self.company, "vendors", rec["id"], "deleted", iso(self.clock.stamp()))

    def set_account(self, number: str, **fields) -> dict:
        """Create or change a G/L account (e.g. blocked=True, directPosting=False)."""
        with self.lock:
            rec = self.company.set_account(number, **fields)
            self._notify(self.company, "accounts", rec["id"], "updated", rec["lastModifiedDateTime"])
            return rec

    def delete_account(self, number: str) -> None:
        with self.lock:
            rec = self.company.delete_account(number)
            self._notify(self.company, "accounts", rec["id"], "deleted", iso(self.clock.stamp()))

    def set_default_dimension(self, parent: str, number: str, dimension: str, value: str | None,
                              posting_validation: str = " ") -> dict:
        """A default dimension on a vendor (`parent="Vendor"`, readable through the API) or a G/L account
        (`parent="G/L Account"`, not readable: defaults.py); `posting_validation` ' ', 'Code Mandatory',
        'Same Code' or 'No Code'."""
        with self.lock:
            return defaults.set_default(self.company, parent, number, dimension, value, posting_validation)

    def delete_default_dimension(self, parent: str, number: str, dimension: str) -> None:
        with self.lock:
            defaults.delete_default(self.company, parent, number, dimension)

    def dispatch(self, req: Request) -> Response:
        """A request picked by a late-commit rule is answered with a dropped connection after the
        rule's `delay` (the client gave up) and processed `commit_after` seconds after it arrived
        (BC keeps working: Microsoft Learn, administration/operational-limits-online). Everything else
        as usual."""
        rule = None if req.path.startswith("/_sandbox/") else self.late_commits.take(req.method, req.path)
        if rule is None:
            return super().dispatch(req)
        return self.late_commits.hold(req, rule, super().dispatch)

    def set_dimension_value(self, dimension: str, code: str, **fields) -> dict:
        """Create or change a dimension value; `blocked=True` is hidden from the API (AL:
        APIV2DimensionValuesEntity.Page.al has no `blocked`)."""
        with self.lock:
            return self.company.set_dimension_value(dimension, code, **fields)

    def delete_dimension_value(self, dimension: str, code: str) -> None:
        with self.lock:
            self.company.delete_dimension_value(dimension, code)

    def add_purchase_order(self, vendor_number: str, lines: list[dict], **kwargs) -> dict:
        with self.lock:
            return public(add_purchase_order(self.company, vendor_number, lines, **kwargs))

    def set_purchase_order(self, order_id_or_number: str, **fields) -> dict:
        with self.lock:
            order = self._order(order_id_or_number)
            return public(set_purchase_order(self.company, order, **fields))

    def _order(self, key: str) -> dict:
        order = self.company.orders.get(key) or next(
            (o for o in self.company.orders.values() if o["number"] == key), None)
        if order is None:
            raise KeyError(f"no purchase order {key}")
        return order

    def drop_subscription(self, subscription_id: str) -> None:
        """BC loses a subscription on its own (the connector must notice and re-create it)."""
        self.subscriptions.delete(subscription_id)

    def flush_notifications(self, timeout: float = 10.0) -> bool:
        return self.subscriptions.flush(timeout)

    def revoke_tokens(self) -> None:
        self.tokens.revoke_all()

    def attachments_of(self, document_id: str) -> list[attachments.Attachment]:
        """The document attachments on a purchase invoice or credit memo (draft or posted)."""
        with self.lock:
            return [a for a in self.attachments.records.values() if a.parent_id == document_id]

    def close(self) -> None:
        self.subscriptions.close()

    # == configuration ================================================================================
    def configure(self, body: dict) -> set[str]:
        """Apply settings from a dict (POST /_sandbox/config calls this too); returns unknown keys.

        common.py: latency_ms, throttle {max_requests, window_seconds, max_concurrent, max_queue,
        queue_wait, retry_after}, keep_bodies. BC: token_lifetime, subscription_lifetime,
        handshake_timeout, notification_delay, notification_threshold, notification_retries,
        notification_retry_delay, delivery_timeout, max_subscriptions, page_size,
        processing_delay_ms, post_requires_if_match, deep_insert_returns_lines,
        analytics, ext_doc_no_mandatory, allowed_posting_dates ["from", "to"] or null.
        """
        unknown = set()
        sub_keys = {"subscription_lifetime": "lifetime", **{f.name: f.name for f in dc_fields(SubscriptionConfig)}}
        for key, value in body.items():
            if key == "latency_ms":
                self.latency_ms = float(value)
            elif key == "throttle":
                self.throttle.configure(**value)
            elif key == "keep_bodies":
                self.calls.keep_bodies = bool(value)
            elif key == "token_lifetime":
                self.tokens.lifetime = float(value)
            elif key in sub_keys:
                current = getattr(self.subscriptions.config, sub_keys[key])
                setattr(self.subscriptions.config, sub_keys[key], type(current)(value))
            elif key in {f.name for f in dc_fields(BcConfig)}:
                setattr(self.config, key, type(getattr(self.config, key))(value))
                self.attachments.max_body_bytes = self.config.max_attachment_bytes
            elif key == "ext_doc_no_mandatory":
                self.rules.ext_doc_no_mandatory = bool(value)
            elif key == "allowed_posting_dates":
                self.rules.allowed_posting_dates = tuple(value) if value else None
            else:
                unknown.add(key)
        return unknown

    # == HTTP plumbing ================================================================================
    def error_response(self, status: int, code: str, message: str, headers: dict | None = None) -> Response:
        code = _CODE_MAP.get(code, code)
        if status == 429 and code == "Application_TooManyRequests":
            message = "Too many requests reached. Retry the request later."
        return Response.json(E.error_body(code, message), status, headers)

    def _error(self, exc: E.BcError) -> Response:
        return self.error_response(exc.status, exc.code, exc.message, exc.headers)

    def is_public(self, req: Request) -> bool:
        return TOKEN_PATH.match(req.path) is not None

    def authenticate(self, req: Request) -> Response | None:
        header = req.headers.get("Authorization") or ""
        principal = self.tokens.principal(header[7:].strip()) if header.lower().startswith("bearer ") else None
        if principal is None:
            return self.error_response(401, "Authentication_InvalidCredentials",
                                       "The server has rejected the client credentials.",
                                       {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline'
                                                            '.com/common/oauth2/authorize", error="invalid_token"'})
        req.principal = principal
        return None

    def _register_routes(self) -> None:
        self.add_route("POST", "/{tenant}/oauth2/v2\\.0/token", self.tokens.handle)
        for pattern in (r"/v2\.0/{tenant}/{environment}/api/v2\.0(?P<rest>/.*)?",
                        r"/v2\.0/{environment}/api/v2\.0(?P<rest>/.*)?"):
            for method in ("GET", "POST", "PATCH", "DELETE"):
                self.add_route(method, pattern, self._api)
        register_control_routes(self)
        from .analytics import register_analytics

        register_analytics(self)

    # == the API ======================================================================================
    def _api(self, req: Request) -> Response:
        with self._processing_lock:
            self.processing["now"] += 1
            self.processing["peak"] = max(self.processing["peak"], self.processing["now"])
        try:
            return self._api_in_slot(req)
        finally:
            with self._processing_lock:
                self.processing["now"] -= 1

    def _api_in_slot(self, req: Request) -> Response:
        try:
            if self.config.processing_delay_ms:
                time.sleep(self.config.processing_delay_ms / 1000.0)
            tenant = req.params.get("tenant") or self.tenant_id
            environment = req.params["environment"]
            if tenant.lower() != self.tenant_id.lower():
                raise E.BcError(404, "BadRequest_ResourceNotFound", f"The tenant '{tenant}' was not found.")
            if environment != self.environment:
                raise E.BcError(404, "BadRequest_ResourceNotFound",
                                f"The environment '{environment}' was not found for tenant '{tenant}'.")
            rest = req.params.get("rest") or ""
            prefix = req.path[:len(req.path) - len(rest)]
            ctx = f"{req.base_url}{prefix}/$metadata#"
            segments = _segments(req.path, rest)
            if segments and segments[0][0] == "subscriptions":
                return self._subscriptions(req, segments, ctx)  # handshakes run outside the lock
            with self.lock:
                return self._route(req, segments, ctx)
        except E.BcError as exc:
            return self._error(exc)

    def _route(self, req: Request, segs: list[tuple[str, str | None]], ctx: str) -> Response:
        if not segs:
            names = ["companies", "subscriptions"]
            return Response.json({"@odata.context": ctx.rstrip("#"),
                                  "value": [{"name": n, "kind": "EntitySet", "url": n} for n in names]})
        name, key = segs[0]
        if name == "companies":
            if key is None:
                if len(segs) > 1:
                    raise E.no_resource(req.path)
                self._only(req, "GET", "companies")
                return self._list(req, company_kind(), list(self.companies.values()), ctx + "companies")
            company = self._company(key)
            if len(segs) == 1:
                self._only(req, "GET", "companies")
                return self._one(req, company_kind(), company, ctx + "companies/$entity")
            return self._in_company(req, company, segs[1:], f"{ctx}companies({company.id})/")
        # `?company=<id>` instead of companies(<id>)/ (Microsoft Learn, webservices/api-endpoint-structure)
        if req.q("company"):
            company = self._company(req.q("company"))
            return self._in_company(req, company, segs, f"{ctx}companies({company.id})/")
        raise E.no_resource(req.path)

    def _company(self, key: str) -> Company:
        company = self.companies.get(key.lower())
        if company is None:
            raise E.BcError(404, "Internal_CompanyNotFound", f"The company '{key}' does not exist.")
        return company

    def _in_company(self, req: Request, company: Company, segs, ctx: str) -> Response:
        name, key = segs[0]
        rest = segs[1:]
        if name in DOC_TYPES:
            return self._documents(req, company, DOC_TYPES[name], key, rest, ctx + name)
        if name == "documentAttachments":
            return attachments.handle(self, req, company, key, rest, ctx + name)
        if name == "purchaseOrders":
            return self._orders(req, company, key, rest, ctx + name)
        if name in MASTER_SETS:
            return self._master(req, company, name, key, rest, ctx + name)
        if name == "defaultDimensions":
            if rest:
                raise E.no_resource(req.path)
            return self._default_dimensions(req, defaults.readable(company), key, ctx + name)
        if name == "companyInformation" and not rest:
            return self._company_information(req, company, key, ctx + name)
        raise E.no_resource(req.path)

    def _company_information(self, req: Request, company: Company, key, ctx: str) -> Response:
        """GET companyInformation: one record; `currencyCode` is the company's LCY (the invoice flow
        sends that currency as blank; AL: APIV2PurchaseInvoices.Page.al). Read-only here (BC allows
        PATCH)."""
        self._only(req, "GET", "companyInformation")
        info = {"@odata.etag": etag_of(1), "id": company.id, "displayName": company.name, "addressLine1": "",
                "addressLine2": "", "city": "", "state": "", "country": "", "postalCode": "", "phoneNumber": "",
                "faxNumber": "", "email": "", "website": "", "taxRegistrationNumber": "",
                "currencyCode": seed.LCY, "currentFiscalYearStartDate": "2026-01-01", "industry": "",
                "lastModifiedDateTime": "2026-01-01T00:00:00Z"}
        if key is not None:
            if key.lower() != company.id:
                raise E.record_not_found("Company Information", f"Id='{key}'")
            return Response.json({"@odata.context": ctx + "/$entity", **info})
        return Response.json({"@odata.context": ctx, "value": [info]})

    # -- generic responses -------------------------------------------------------------------------------
    @staticmethod
    def _only(req: Request, method: str, entity_set: str) -> None:
        if req.method != method:
            raise E.method_not_allowed(req.method, entity_set)

    @staticmethod
    def _options(req: Request) -> Options:
        return Options.parse({k: v[0] for k, v in req.query.items() if k.startswith("$")})

    def _list(self, req: Request, kind: Kind, records: list, context: str) -> Response:
        prefer = req.headers.get("Prefer")
        size = max_page_size(prefer, self.config.page_size)
        values, last_key = collection(kind, records, self._options(req), req.q("$skiptoken"), size)
        body: dict[str, Any] = {"@odata.context": context, "value": values}
        if last_key is not None:
            params = [(k, v[0]) for k, v in req.query.items() if k != "$skiptoken"]
            params.append(("$skiptoken", encode_token(last_key)))
            body["@odata.nextLink"] = f"{req.base_url}{req.path}?{urlencode(params, quote_via=quote, safe='$,')}"
        headers = {"Preference-Applied": f"odata.maxpagesize={size}"} if prefer and "maxpagesize" in prefer else {}
        return Response.json(body, headers=headers)

    def _one(self, req: Request, kind: Kind, record, context: str, status: int = 200,
             headers: dict | None = None, opts: Options | None = None) -> Response:
        opts = opts or self._options(req)
        kind.check(opts)
        entity = shape(kind, record, opts)
        out = {"@odata.context": context, **entity}
        h = dict(headers or {})
        if "@odata.etag" in entity:
            h["ETag"] = entity["@odata.etag"]
        return Response.json(out, status, h)

    @staticmethod
    def _if_match(req: Request, current: str, required: bool = True) -> None:
        given = (req.headers.get("If-Match") or "").strip()
        if not given:
            if required:
                raise E.etag_required()
            return
        if given == "*":
            return
        if not (given.startswith('W/"') or given.startswith('"')):
            raise E.etag_required()
        if given != current:
            raise E.entity_changed()

    # -- master data -------------------------------------------------------------------------------------
    def _master(self, req: Request, company: Company, name: str, key, rest, ctx: str) -> Response:
        kinds: dict[str, tuple[Kind, dict]] = {
            "vendors": (vendor_kind(), company.vendors), "accounts": (account_kind(), company.accounts),
            "dimensions": (dimension_kind(company), company.dimensions),
            "dimensionValues": (dimension_value_kind(), company.dimension_values),
            "currencies": (currency_kind(), company.currencies_by_id()),
        }
        kind, table = kinds[name]
        if key is None:
            if rest:
                raise E.no_resource(req.path)
            if req.method == "POST" and name == "vendors":
                rec = create_vendor(company, req.json())
                self._notify(company, "vendors", rec["id"], "created", rec["lastModifiedDateTime"])
                return self._one(req, kind, rec, ctx + "/$entity", 201,
                                 {"Location": f"{req.base_url}{req.path}({rec['id']})"})
            self._only(req, "GET", name)
            return self._list(req, kind, list(table.values()), ctx)
        rec = table.get(key)
        if rec is None:
            raise E.record_not_found({"vendors": "Vendor", "accounts": "G/L Account", "dimensions": "Dimension",
                                      "dimensionValues": "Dimension Value", "currencies": "Currency"}[name],
                                     f"Id='{key}'")
        if rest:
            if name == "vendors" and rest[0][0] == "defaultDimensions" and len(rest) == 1:
                return self._default_dimensions(req, list(defaults.defaults_of(company, defaults.VENDOR,
                                                                                rec["id"]).values()),
                                                rest[0][1], f"{ctx}({key})/defaultDimensions")
            if name == "dimensions" and rest[0][0] == "dimensionValues" and len(rest) == 1:
                self._only(req, "GET", "dimensionValues")
                values = {v["id"]: v for v in company.dimension_values_of(rec["id"])}
                if rest[0][1] is None:
                    return self._list(req, dimension_value_kind(), list(values.values()),
                                      f"{ctx}({key})/dimensionValues")
                value = values.get(rest[0][1])
                if value is None:
                    raise E.record_not_found("Dimension Value", f"Id='{rest[0][1]}'")
                return self._one(req, dimension_value_kind(), value, f"{ctx}({key})/dimensionValues/$entity")
            raise E.no_resource(req.path)
        if req.method == "GET":
            return self._one(req, kind, rec, ctx + "/$entity")
        if name != "vendors":
            raise E.method_not_allowed(req.method, name)
        self._if_match(req, etag_of(rec["_v"]))
        if req.method == "PATCH":
            patch_vendor(company, rec, req.json())
            self._notify(company, "vendors", rec["id"], "updated", rec["lastModifiedDateTime"])
            return self._one(req, kind, rec, ctx + "/$entity", opts=Options())
        if req.method == "DELETE":
            delete_vendor(company, rec)
            self._notify(company, "vendors", rec["id"], "deleted", iso(self.clock.stamp()))
            return Response.empty(204)
        raise E.method_not_allowed(req.method, name)

    def _default_dimensions(self, req: Request, records: list[dict], key, ctx: str) -> Response:
        """GET only here (BC also allows POST/PATCH/DELETE: the connector never writes master data)."""
        self._only(req, "GET", "defaultDimensions")
        if key is None:
            return self._list(req, defaults.kind(), records, ctx)
        found = next((r for r in records if r["id"] == key), None)
        if found is None:
            raise E.record_not_found("Default Dimension", f"Id='{key}'")
        return self._one(req, defaults.kind(), found, ctx + "/$entity")

    # -- purchase invoices / credit memos ------------------------------------------------------------------
    def _documents(self, req: Request, company: Company, dt: DocType, key, rest, ctx: str) -> Response:
        svc = self._svc(company)
        kind = document_kind(dt)
        docs = {d.id: d for d in company.documents.values() if d.type is dt}
        if key is None:
            if rest:
                raise E.no_resource(req.path)
            if req.method == "POST":
                doc = svc.create(dt, req.json())
                self._notify(company, dt.entity_set, doc.id, "created", doc.last_modified)
                opts = self._options(req)
                if self.config.deep_insert_returns_lines and not opts.expand:
                    body = req.json()
                    for nav in (dt.lines, "dimensionSetLines"):
                        if nav in body:
                            opts.expand[nav] = Options(expand={"dimensionSetLines": Options()}
                                                       if nav == dt.lines else {})
                return self._one(req, kind, doc, ctx + "/$entity", 201,
                                 {"Location": f"{req.base_url}{req.path}({doc.id})"}, opts=opts)
            self._only(req, "GET", dt.entity_set)
            return self._list(req, kind, list(docs.values()), ctx)
        doc = docs.get(key)
        if doc is None:
            raise E.record_not_found(dt.table, f"Id='{key}'")
        here = f"{ctx}({doc.id})"
        if not rest:
            if req.method == "GET":
                return self._one(req, kind, doc, ctx + "/$entity")
            self._if_match(req, etag_of(doc.version))
            if req.method == "PATCH":
                svc.patch(doc, req.json())
                self._notify(company, dt.entity_set, doc.id, "updated", doc.last_modified)
                return self._one(req, kind, doc, ctx + "/$entity", opts=Options())
            if req.method == "DELETE":
                svc.delete(doc)
                self.attachments.drop_parent(company.id, doc.id)
                self._notify(company, dt.entity_set, doc.id, "deleted", iso(self.clock.stamp()))
                return Response.empty(204)
            raise E.method_not_allowed(req.method, dt.entity_set)
        nav, nav_key = rest[0]
        if nav == "Microsoft.NAV.post" and nav_key is None and len(rest) == 1:
            self._only(req, "POST", "Microsoft.NAV.post")
            self._if_match(req, etag_of(doc.version), required=self.config.post_requires_if_match)
            svc.post(doc)
            self.attachments.carry_to_posted(company.id, doc.id)
            self._notify(company, dt.entity_set, doc.id, "updated", doc.last_modified)
            return Response.empty(204)
        if nav == "vendor" and nav_key is None and len(rest) == 1:
            self._only(req, "GET", "vendor")
            vendor = company.vendors.get(doc.header.get("vendorId"))
            if vendor is None:
                raise E.record_not_found("Vendor", f"Id='{doc.header.get('vendorId')}'")
            return self._one(req, vendor_kind(), vendor, f"{here}/vendor/$entity")
        if nav == "dimensionSetLines":
            return self._dims(req, company, svc, doc, None, nav_key, rest[1:], f"{here}/dimensionSetLines")
        if nav != dt.lines:
            raise E.no_resource(req.path)
        lkind = line_kind(doc)
        if nav_key is None:
            if len(rest) > 1:
                raise E.no_resource(req.path)
            if req.method == "POST":
                line = svc.add_line(doc, req.json())
                self._notify(company, dt.entity_set, doc.id, "updated", doc.last_modified)
                return self._one(req, lkind, line, f"{here}/{nav}/$entity", 201)
            self._only(req, "GET", nav)
            return self._list(req, lkind, list(doc.lines), f"{here}/{nav}")
        line = doc.line(nav_key)
        if line is None:
            raise E.record_not_found("Purch. Inv. Line Aggregate" if dt.entity_set == "purchaseInvoices"
                                     else "Purch. Cr. Memo Line Buffer", f"Id='{nav_key}'")
        if len(rest) > 1:
            if rest[1][0] != "dimensionSetLines" or len(rest) > 2:
                raise E.no_resource(req.path)
            return self._dims(req, company, svc, doc, line, rest[1][1], [],
                              f"{here}/{nav}({line.id})/dimensionSetLines")
        if req.method == "GET":
            return self._one(req, lkind, line, f"{here}/{nav}/$entity")
        self._if_match(req, etag_of(line.version))
        if req.method == "PATCH":
            line = svc.patch_line(doc, line, req.json())
            result = self._one(req, lkind, line, f"{here}/{nav}/$entity", opts=Options())
        elif req.method == "DELETE":
            svc.delete_line(doc, line)
            result = Response.empty(204)
        else:
            raise E.method_not_allowed(req.method, nav)
        self._notify(company, dt.entity_set, doc.id, "updated", doc.last_modified)
        return result

    def _dims(self, req: Request, company: Company, svc: DocumentService, doc: Document, line, key, rest,
              ctx: str) -> Response:
        if rest:
            raise E.no_resource(req.path)
        kind = dim_kind(doc, line)
        dims = line.dims if line else doc.dims
        if key is None:
            if req.method == "POST":
                entry = svc.add_dim(doc, line, req.json())
                self._notify(company, doc.type.entity_set, doc.id, "updated", doc.last_modified)
                return self._one(req, kind, entry, ctx + "/$entity", 201)
            self._only(req, "GET", "dimensionSetLines")
            return self._list(req, kind, list(dims.values()), ctx)
        entry = next((e for e in dims.values() if e.dimension_id == key.lower()), None)
        if entry is None:
            raise E.record_not_found("Dimension Set Entry", f"Dimension Id='{key}'")
        if req.method == "GET":
            return self._one(req, kind, entry, ctx + "/$entity")
        self._if_match(req, etag_of(entry.version))
        if req.method == "PATCH":
            entry = svc.patch_dim(doc, line, entry.dimension_id, req.json())
            result = self._one(req, kind, entry, ctx + "/$entity", opts=Options())
        elif req.method == "DELETE":
            svc.delete_dim(doc, line, entry.dimension_id)
            result = Response.empty(204)
        else:
            raise E.method_not_allowed(req.method, "dimensionSetLines")
        self._notify(company, doc.type.entity_set, doc.id, "updated", doc.last_modified)
        return result

    # -- purchase orders (read-only here) -------------------------------------------------------------------
    def _orders(self, req: Request, company: Company, key, rest, ctx: str) -> Response:
        self._only(req, "GET", "purchaseOrders")
        if key is None:
            if rest:
                raise E.no_resource(req.path)
            return self._list(req, order_kind(), list(company.orders.values()), ctx)
        order = company.orders.get(key)
        if order is None:
            raise E.record_not_found("Purchase Order Entity Buffer", f"Id='{key}'")
        if not rest:
            return self._one(req, order_kind(), order, ctx + "/$entity")
        if rest[0][0] != "purchaseOrderLines" or len(rest) > 1:
            raise E.no_resource(req.path)
        here = f"{ctx}({order['id']})/purchaseOrderLines"
        if rest[0][1] is None:
            return self._list(req, order_line_kind(), list(order["_lines"]), here)
        line = next((ln for ln in order["_lines"] if ln["id"] == rest[0][1]), None)
        if line is None:
            raise E.record_not_found("Purch. Order Line", f"Id='{rest[0][1]}'")
        return self._one(req, order_line_kind(), line, here + "/$entity")

    # -- subscriptions (API root) ---------------------------------------------------------------------------
    def _subscriptions(self, req: Request, segs, ctx: str) -> Response:
        if len(segs) > 1:
            raise E.no_resource(req.path)
        kind = Kind("subscription", ["subscriptionId", "notificationUrl", "resource", "userId",
                                     "lastModifiedDateTime", "clientState", "expirationDateTime", "systemCreatedAt",
                                     "systemCreatedBy", "systemModifiedAt", "systemModifiedBy"],
                    key=lambda r: (r["subscriptionId"],), to_json=public, view=lambda r: r)
        key = segs[0][1]
        if key is None:
            if req.method == "POST":
                rec = self.subscriptions.create(req.json(), req.principal or "anonymous")
                return self._one(req, kind, rec, ctx + "subscriptions/$entity", 201,
                                 {"Location": f"{req.base_url}{req.path}('{rec['subscriptionId']}')"})
            self._only(req, "GET", "subscriptions")
            return self._list(req, kind, self.subscriptions.list(), ctx + "subscriptions")
        rec = self.subscriptions.get(key)
        if rec is None:
            raise E.record_not_found("API Webhook Subscription", f"Subscription Id='{key}'")
        if req.method == "GET":
            return self._one(req, kind, rec, ctx + "subscriptions/$entity")
        self._if_match(req, etag_of(rec["_v"]))
        if req.method == "PATCH":
            self.subscriptions.renew(rec, req.json())
            return self._one(req, kind, rec, ctx + "subscriptions/$entity", opts=Options())
        if req.method == "DELETE":
            self.subscriptions.delete(key)
            return Response.empty(204)
        raise E.method_not_allowed(req.method, "subscriptions")


def _segments(path: str, rest: str) -> list[tuple[str, str | None]]:
    """`/companies(<id>)/purchaseInvoices(<id>)/Microsoft.NAV.post` -> [(name, key), ...]."""
    out = []
    for raw in rest.strip("/").split("/"):
        if not raw:
            continue
        m = _SEGMENT.match(unquote(raw))
        if not m:
            raise E.no_resource(path)
        name, key = m.group(1), m.group(2)
        if key is not None:
            key = key.strip()
            if len(key) >= 2 and key[0] == key[-1] == "'":
                key = key[1:-1].replace("''", "'")
            elif _GUID.match(key):
                key = key.lower()
            else:
                raise E.bad_request("Bad Request - Error in query syntax.")
        out.append((name, key))
    return out
