"""Purchase invoices and purchase credit memos as data: field tables (Microsoft Learn,
api-reference/v2.0/resources/dynamics_purchaseinvoice, dynamics_purchaseinvoiceline,
dynamics_dimensionsetline), the request-body check BC's OData layer does, and the JSON of headers,
lines and dimension set lines. The business rules (validation, totals, posting) are in rules.py."""
from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from . import errors as E
from .odata import check_decimal, code_upper
from .resources import Kind
from .store import EMPTY_GUID, LCY, etag_of, next_version

TWO = Decimal("0.01")
ZERO = Decimal("0")


def money(value: Decimal) -> Decimal:
    return value.quantize(TWO, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class DocType:
    entity_set: str
    lines: str
    type_name: str
    line_type_name: str
    vendor_doc_field: str
    vendor_doc_caption: str  # BC's field caption, for posting messages
    date_field: str
    label: str  # "Purchase %1 %2 already exists for this vendor."
    noun: str
    parent_type: str  # dimensionSetLines.parentType of the header
    table: str
    draft_prefix: str
    draft_start: int
    posted_prefix: str
    posted_start: int


INVOICE = DocType("purchaseInvoices", "purchaseInvoiceLines", "purchaseInvoice", "purchaseInvoiceLine",
                  "vendorInvoiceNumber", "Vendor Invoice No.", "invoiceDate", "Invoice", "invoice",
                  "Purchase Invoice", "Purch. Inv. Entity Aggregate", "", 1001, "PI-", 108001)
CREDIT_MEMO = DocType("purchaseCreditMemos", "purchaseCreditMemoLines", "purchaseCreditMemo",
                      "purchaseCreditMemoLine", "vendorCreditMemoNumber", "Vendor Cr. Memo No.", "creditMemoDate",
                      "Credit Memo", "credit memo", "Purchase Credit Memo", "Purch. Cr. Memo Entity Buffer",
                      "CM", 1001, "PCM-", 109001)
DOC_TYPES = {t.entity_set: t for t in (INVOICE, CREDIT_MEMO)}

_ADDR = ["AddressLine1", "AddressLine2", "City", "Country", "State", "PostCode"]
BUY_FROM = ["buyFrom" + a for a in _ADDR]
SHIP_TO = ["shipTo" + a for a in _ADDR]
PAY_TO = ["payTo" + a for a in _ADDR]

HEADER_FIELDS = {
    INVOICE: ["id", "number", "invoiceDate", "postingDate", "dueDate", "vendorInvoiceNumber", "vendorId",
              "vendorNumber", "vendorName", "payToName", "payToContact", "payToVendorId", "payToVendorNumber",
              "shipToName", "shipToContact", *BUY_FROM, *SHIP_TO, *PAY_TO, "shortcutDimension1Code",
              "shortcutDimension2Code", "currencyId", "currencyCode", "orderId", "orderNumber", "purchaser",
              "pricesIncludeTax", "discountAmount", "discountAppliedBeforeTax", "totalAmountExcludingTax",
              "totalTaxAmount", "totalAmountIncludingTax", "status", "lastModifiedDateTime"],
    CREDIT_MEMO: ["id", "number", "creditMemoDate", "postingDate", "dueDate", "vendorId", "vendorNumber",
                  "vendorName", "payToVendorId", "payToVendorNumber", "payToName", *BUY_FROM, *PAY_TO,
                  "shortcutDimension1Code", "shortcutDimension2Code", "currencyId", "currencyCode",
                  "paymentTermsId", "shipmentMethodId", "purchaser", "pricesIncludeTax", "discountAmount",
                  "discountAppliedBeforeTax", "totalAmountExcludingTax", "totalTaxAmount",
                  "totalAmountIncludingTax", "status", "invoiceId", "invoiceNumber", "vendorCreditMemoNumber",
                  "lastModifiedDateTime"],
}
HEADER_WRITABLE = {
    INVOICE: {"invoiceDate", "postingDate", "dueDate", "vendorInvoiceNumber", "vendorId", "vendorNumber",
              "payToVendorId", "payToVendorNumber", "shipToName", "shipToContact", *BUY_FROM, *SHIP_TO,
              "shortcutDimension1Code", "shortcutDimension2Code", "currencyId", "currencyCode", "purchaser",
              "pricesIncludeTax", "discountAmount", "discountAppliedBeforeTax"},
    CREDIT_MEMO: {"creditMemoDate", "postingDate", "dueDate", "vendorId", "vendorNumber", "payToVendorId",
                  "payToVendorNumber", *BUY_FROM, "shortcutDimension1Code", "shortcutDimension2Code",
                  "currencyId", "currencyCode", "paymentTermsId", "shipmentMethodId", "purchaser",
                  "pricesIncludeTax", "discountAmount", "discountAppliedBeforeTax", "invoiceId", "invoiceNumber",
                  "vendorCreditMemoNumber"},
}
LINE_FIELDS = ["id", "documentId", "sequence", "itemId", "accountId", "lineType", "lineObjectNumber",
               "description", "description2", "unitOfMeasureId", "unitOfMeasureCode", "quantity", "unitCost",
               "discountAmount", "discountPercent", "discountAppliedBeforeTax", "amountExcludingTax", "taxCode",
               "taxPercent", "totalTaxAmount", "amountIncludingTax", "invoiceDiscountAllocation", "netAmount",
               "netTaxAmount", "netAmountIncludingTax", "expectedReceiptDate", "itemVariantId", "locationId"]
LINE_WRITABLE = {"documentId", "sequence", "itemId", "accountId", "lineType", "lineObjectNumber", "description",
                 "description2", "unitOfMeasureId", "unitOfMeasureCode", "quantity", "unitCost", "discountAmount",
                 "discountPercent", "discountAppliedBeforeTax", "taxCode", "expectedReceiptDate", "itemVariantId",
                 "locationId"}
DIM_FIELDS = ["id", "code", "parentId", "parentType", "displayName", "valueId", "valueCode", "valueDisplayName"]
DIM_WRITABLE = {"id", "code", "valueId", "valueCode"}

LINE_TYPES = {"Comment", "Account", "Item", "Resource", "Fixed Asset", "Charge", "Allocation Account"}
OTHER_TABLES = {"Item": "Item", "Resource": "Resource", "Fixed Asset": "Fixed Asset", "Charge": "Item Charge",
                 "Allocation Account": "Allocation Account"}
DATE_FIELDS = {"invoiceDate", "creditMemoDate", "postingDate", "dueDate", "expectedReceiptDate"}
DECIMAL_FIELDS = {"quantity", "unitCost", "discountAmount", "discountPercent"}
BOOL_FIELDS = {"pricesIncludeTax", "discountAppliedBeforeTax"}
GUID_FIELDS = {"id", "vendorId", "payToVendorId", "currencyId", "orderId", "itemId", "accountId", "unitOfMeasureId",
               "itemVariantId", "locationId", "documentId", "paymentTermsId", "shipmentMethodId", "invoiceId",
               "valueId"}
MAX_LENGTH = {"vendorInvoiceNumber": 35, "vendorCreditMemoNumber": 35, "vendorNumber": 20, "payToVendorNumber": 20,
              "description": 100, "description2": 50, "lineObjectNumber": 20, "taxCode": 20, "purchaser": 20,
              "shipToName": 100, "shipToContact": 100, "invoiceNumber": 20, "currencyCode": 10,
              **{f: 100 for f in BUY_FROM + SHIP_TO if f.endswith(("Line1", "Line2"))},
              **{f: 30 for f in BUY_FROM + SHIP_TO if f.endswith(("City", "State"))},
              **{f: 20 for f in BUY_FROM + SHIP_TO if f.endswith("PostCode")},
              **{f: 10 for f in BUY_FROM + SHIP_TO if f.endswith("Country")}}
UPPER_FIELDS = {"vendorInvoiceNumber", "vendorCreditMemoNumber", "vendorNumber", "payToVendorNumber", "taxCode",
                "lineObjectNumber", "currencyCode", "purchaser", "valueCode", "code", "unitOfMeasureCode"}


def _is_guid(value) -> bool:
    try:
        uuid.UUID(str(value))
        return len(str(value)) == 36
    except ValueError:
        return False


def convert(body: dict, fields: list[str], writable: set[str], navigation: set[str], type_name: str,
            bools: frozenset = frozenset()) -> dict:
    """Check a request body's properties like BC's OData layer: unknown -> BadRequest, read-only ->
    BadRequest_InvalidOperation, wrong JSON types -> BadRequest; then lengths and upper-casing."""
    if not isinstance(body, dict):
        raise E.bad_request("Invalid Request Body")
    out = {}
    for key, value in body.items():
        if key.startswith("@odata") or key in navigation:
            continue
        if key not in fields:
            raise E.unknown_property(key, type_name)
        if key not in writable:
            raise E.read_only(key)
        if key in DATE_FIELDS:
            try:
                value = date.fromisoformat(value).isoformat() if isinstance(value, str) and len(value) == 10 else None
            except ValueError:
                value = None
            if value is None:
                raise E.cannot_convert(body[key], "Edm.Date")
        elif key in DECIMAL_FIELDS:
            value = check_decimal(value, key)
        elif key in BOOL_FIELDS or key in bools:
            if not isinstance(value, bool):
                raise E.cannot_convert(value, "Edm.Boolean")
        elif key in GUID_FIELDS:
            if not _is_guid(value):
                raise E.cannot_convert(value, "Edm.Guid")
            value = str(value).lower()
        elif key == "sequence":
            if isinstance(value, bool) or not isinstance(value, int):
                raise E.cannot_convert(value, "Edm.Int32")
        else:
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise E.cannot_convert(value, "Edm.String")
            limit = MAX_LENGTH.get(key)
            if limit is not None and len(value) > limit:
                raise E.string_too_long(value, limit)
            if key in UPPER_FIELDS:
                value = code_upper(value)
        out[key] = value
    return out


_doc_seq = itertools.count(1)


@dataclass
class DimEntry:
    dimension_id: str
    code: str
    dimension_name: str
    value_id: str
    value_code: str
    value_name: str
    version: int = field(default_factory=next_version)


@dataclass
class Line:
    id: str
    sequence: int
    data: dict  # the accepted writable fields
    dims: dict[str, DimEntry]
    version: int = field(default_factory=next_version)
    amounts: dict = field(default_factory=dict)


class Document:
    """A purchase invoice or credit memo. `number`/`status` change at posting; the id never does."""

    def __init__(self, doc_type: DocType, company_id: str, doc_id: str | None = None) -> None:
        self.type = doc_type
        self.company_id = company_id
        self.id = doc_id or str(uuid.uuid4())
        self.header: dict = {}
        self.lines: list[Line] = []
        self.dims: dict[str, DimEntry] = {}
        self.number = ""
        self.draft_number = ""
        self.status = "Draft"
        self.seq = next(_doc_seq)
        self.version = next_version()
        self.last_modified = ""
        self.totals = {"totalAmountExcludingTax": ZERO, "totalTaxAmount": ZERO, "totalAmountIncludingTax": ZERO}

    # conveniences for tests
    @property
    def posted(self) -> bool:
        return self.status != "Draft"

    @property
    def vendor_document_number(self) -> str:
        return self.header.get(self.type.vendor_doc_field, "")

    def __getitem__(self, key):
        return self.to_json()[key]

    def line(self, line_id: str) -> Line | None:
        return next((ln for ln in self.lines if ln.id == line_id), None)

    # -- JSON -------------------------------------------------------------------------------------
    def to_json(self, global_dims: tuple[str, str] = ("DEPARTMENT", "PROJECT")) -> dict:
        h = self.header
        values = {
            "id": self.id, "number": self.number, "status": self.status, "lastModifiedDateTime": self.last_modified,
            "shortcutDimension1Code": self.dims[global_dims[0]].value_code if global_dims[0] in self.dims else "",
            "shortcutDimension2Code": self.dims[global_dims[1]].value_code if global_dims[1] in self.dims else "",
            "currencyCode": h.get("currencyCode") or LCY, **self.totals,
        }
        out = {"@odata.etag": etag_of(self.version)}
        for name in HEADER_FIELDS[self.type]:
            if name in values:
                out[name] = values[name]
            elif name in h:
                out[name] = h[name]
            else:
                out[name] = _default(name)
        return out

    def line_json(self, line: Line) -> dict:
        values = {"id": line.id, "documentId": self.id, "sequence": line.sequence, **line.amounts}
        out = {"@odata.etag": etag_of(line.version)}
        for name in LINE_FIELDS:
            out[name] = values[name] if name in values else line.data.get(name, _default(name))
        return out

    def dim_json(self, entry: DimEntry, parent_id: str, parent_type: str) -> dict:
        return {"@odata.etag": etag_of(entry.version), "id": entry.dimension_id, "code": entry.code,
                "parentId": parent_id, "parentType": parent_type, "displayName": entry.dimension_name,
                "valueId": entry.value_id, "valueCode": entry.value_code, "valueDisplayName": entry.value_name}


def _default(name: str):
    if name in GUID_FIELDS:
        return EMPTY_GUID
    if name in DECIMAL_FIELDS or name.startswith(("total", "amount", "net")) or name in (
            "taxPercent", "invoiceDiscountAllocation"):
        return 0
    if name in BOOL_FIELDS:
        return False
    if name in DATE_FIELDS:
        return "0001-01-01"
    return ""


# -- API kinds ------------------------------------------------------------------------------------------
def document_kind(dt: DocType) -> Kind:
    return Kind(dt.type_name, HEADER_FIELDS[dt], key=lambda d: (d.seq,), to_json=lambda d: d.to_json(),
                navigation={dt.lines: lambda d: (line_kind(d), list(d.lines)),
                            "dimensionSetLines": lambda d: (dim_kind(d, None), list(d.dims.values()))})


def line_kind(doc: Document) -> Kind:
    return Kind(doc.type.line_type_name, LINE_FIELDS, key=lambda ln: (ln.sequence,), to_json=doc.line_json,
                navigation={"dimensionSetLines": lambda ln: (dim_kind(doc, ln), list(ln.dims.values()))})


def dim_kind(doc: Document, line: Line | None) -> Kind:
    parent_id = line.id if line else doc.id
    parent_type = doc.type.parent_type + (" Line" if line else "")
    return Kind("dimensionSetLine", DIM_FIELDS, key=lambda e: (e.code,),
                to_json=lambda e: doc.dim_json(e, parent_id, parent_type))
