"""BC's rules for purchase documents: validation on create and change, totals, posting.

What BC does and this module copies (Microsoft Learn resource types and BaseApp posting codeunits):
- a deep insert (header + lines + dimensionSetLines on both) is atomic: it is validated in full
  before anything is stored (Microsoft Learn, api/dynamics_purchaseInvoiceLine_create); lines
  inherit the header's dimensions (microsoft/ALAppExtensions PR #11158);
- vendor must exist and not be blocked `All` (BaseApp Vendor table); each Account line's G/L
  account must exist, be of type Posting, not blocked, direct posting (BaseApp purchase line,
  `CheckGLAcc`); dimension values must exist; the vendor document number is Code[35] (BaseApp
  Purchase Header, field 68) and, being a Code, upper-cased; taxCode is a VAT product posting
  group (AL: APIV2PurchaseInvoiceLines.Page.al); currencyCode is blank, the LCY code, or a known
  currency (AL: APIV2PurchaseInvoices.Page.al);
- BC computes amounts, VAT (rounded to 0.01 per line) and header totals (codeunit 5529
  Purch. Inv. Aggregator, through `Document Totals`);
- `Microsoft.NAV.post` only on drafts (AL: APIV2PurchaseInvoices.Page.al), keeps the id and gives
  a posted number and status Open (codeunit 5529 Purch. Inv. Aggregator); a posted document with
  the same vendor + vendor document number is refused at posting (codeunit 90 Purch.-Post,
  `PurchaseAlreadyExistsErr`); posted documents cannot be changed (codeunit 5529's labels);
  vendor, accounts and dimension values are checked again at posting (Microsoft Learn,
  api-reference/v2.0/resources/dynamics_defaultdimension; BaseApp `CheckGLAcc`).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from . import defaults
from . import errors as E
from .documents import (DIM_FIELDS, DIM_WRITABLE, HEADER_FIELDS, HEADER_WRITABLE, LINE_FIELDS, LINE_TYPES,
                        LINE_WRITABLE, ZERO, DimEntry, DocType, Document, Line, OTHER_TABLES, code_upper, convert,
                        money)
from .store import EMPTY_GUID, LCY, Clock, Company, iso, next_version


@dataclass
class PostingRules:
    """Company setup that decides what posting checks (Purchases & Payables Setup "Ext. Doc. No.
    Mandatory"; the allowed posting dates of General Ledger Setup and User Setup)."""

    ext_doc_no_mandatory: bool = True
    allowed_posting_dates: tuple[str, str] | None = None


class DocumentService:
    """Validation and state changes for one company's purchase documents. The caller holds the lock."""

    def __init__(self, company: Company, clock: Clock, rules: PostingRules) -> None:
        self.company = company
        self.clock = clock
        self.rules = rules
        self.global_dims = ("DEPARTMENT", "PROJECT")

    # -- create / change ------------------------------------------------------------------------------
    def create(self, doc_type: DocType, body: dict) -> Document:
        if not isinstance(body, dict):
            raise E.bad_request("Invalid Request Body")
        doc = Document(doc_type, self.company.id)
        values = convert(body, HEADER_FIELDS[doc_type], HEADER_WRITABLE[doc_type],
                         {doc_type.lines, "dimensionSetLines"}, doc_type.type_name)
        self._apply_header(doc, values, creating=True)
        # the vendor's default dimensions are on the header before any nested dimension set line is
        # inserted; a nested line for a code already there fails the whole deep insert (production
        # facts: APIV2DimensionSetLines.Page.al OnInsertRecord)
        doc.dims = defaults.inherited_entries(self.company, defaults.VENDOR, doc.header.get("vendorId"),
                                              self._dim_entry)
        for item in _as_list(body.get("dimensionSetLines"), "dimensionSetLines"):
            self._add_dim(doc.dims, item)
        self._apply_shortcut_dims(doc, values)
        for item in _as_list(body.get(doc_type.lines), doc_type.lines):
            doc.lines.append(self._build_line(doc, item))
        self._recalc(doc)
        counter = f"draft:{doc_type.entity_set}"
        number = self.company.series.setdefault(counter, doc_type.draft_start)
        self.company.series[counter] = number + 1
        doc.number = doc.draft_number = f"{doc_type.draft_prefix}{number}"
        doc.last_modified = iso(self.clock.stamp())
        self.company.documents[doc.id] = doc
        return doc

    def patch(self, doc: Document, body: dict) -> None:
        self._ensure_draft(doc)
        if isinstance(body, dict) and (doc.type.lines in body or "dimensionSetLines" in body):
            raise E.bad_request("Deep update is not supported. Send one request per nested entity.")
        values = convert(body, HEADER_FIELDS[doc.type], HEADER_WRITABLE[doc.type], set(), doc.type.type_name)
        self._apply_header(doc, values, creating=False)
        self._apply_shortcut_dims(doc, values)
        self._recalc(doc)
        self.touch(doc)

    def delete(self, doc: Document) -> None:
        if doc.posted:
            raise E.dialog(f"The {doc.type.noun} has been posted and can no longer be deleted.")
        del self.company.documents[doc.id]

    def touch(self, doc: Document) -> None:
        doc.version = next_version()
        doc.last_modified = iso(self.clock.stamp())

    def _ensure_draft(self, doc: Document) -> None:
        if doc.posted:
            raise E.dialog(f"The {doc.type.noun} has been posted and can no longer be modified.")

    def _vendor(self, values: dict, id_field: str, number_field: str) -> dict | None:
        vendor = None
        if values.get(id_field) not in (None, EMPTY_GUID):
            vendor = self.company.vendors.get(values[id_field])
            if vendor is None:
                raise E.dialog("The vendor cannot be found.")
        if values.get(number_field):
            by_number = self.company.vendor_by_number.get(values[number_field])
            if by_number is None:
                raise E.dialog("The vendor cannot be found.")
            if vendor is not None and vendor is not by_number:
                raise E.dialog(f'The "{id_field}" and "{number_field}" do not refer to the same vendor.')
            vendor = by_number
        return vendor

    def _apply_header(self, doc: Document, values: dict, creating: bool) -> None:
        h = doc.header
        vendor = self._vendor(values, "vendorId", "vendorNumber")
        if vendor is None and creating:
            raise E.dialog('A "vendorNumber" or a "vendorID" must be provided.')
        if vendor is not None:
            if vendor.get("blocked") == "All":
                raise E.dialog(f"You cannot create this type of document when Vendor {vendor['number']} "
                               "is blocked with type All")
            h.update(vendorId=vendor["id"], vendorNumber=vendor["number"], vendorName=vendor["displayName"],
                     payToVendorId=vendor["id"], payToVendorNumber=vendor["number"], payToName=vendor["displayName"])
            for prefix in ("buyFrom", "payTo"):
                h.update({f"{prefix}AddressLine1": vendor.get("addressLine1", ""),
                          f"{prefix}AddressLine2": vendor.get("addressLine2", ""),
                          f"{prefix}City": vendor.get("city", ""), f"{prefix}Country": vendor.get("country", ""),
                          f"{prefix}State": vendor.get("state", ""), f"{prefix}PostCode": vendor.get("postalCode", "")})
            if "currencyCode" not in values and "currencyId" not in values:
                code = vendor.get("currencyCode") or ""
                h["currencyCode"] = "" if code == LCY else code
                h["currencyId"] = vendor.get("currencyId", EMPTY_GUID)
        pay_to = self._vendor(values, "payToVendorId", "payToVendorNumber")
        if pay_to is not None:
            h.update(payToVendorId=pay_to["id"], payToVendorNumber=pay_to["number"], payToName=pay_to["displayName"])
        if "currencyId" in values and values["currencyId"] != EMPTY_GUID:
            found = next((c for c in self.company.currencies.values() if c["id"] == values["currencyId"]), None)
            if found is None:
                raise E.dialog('The "currencyId" does not match to a Currency.')
            h.update(currencyCode=found["code"], currencyId=found["id"])
        elif "currencyId" in values:
            h.update(currencyCode="", currencyId=EMPTY_GUID)
        if "currencyCode" in values:
            code = values["currencyCode"]
            if code in ("", LCY):
                h.update(currencyCode="", currencyId=EMPTY_GUID)
            elif code in self.company.currencies:
                h.update(currencyCode=code, currencyId=self.company.currencies[code]["id"])
            else:
                raise E.dialog('The "currencyCode" does not match to a Currency.')
        skip = {"vendorId", "vendorNumber", "payToVendorId", "payToVendorNumber", "currencyId", "currencyCode",
                "shortcutDimension1Code", "shortcutDimension2Code"}
        h.update({k: v for k, v in values.items() if k not in skip})
        doc_date_field = doc.type.date_field
        today = self.clock.now().date().isoformat()
        if creating:
            h.setdefault("postingDate", today)
            h.setdefault(doc_date_field, h["postingDate"])
        if "dueDate" not in values and (creating or doc_date_field in values):
            h["dueDate"] = (date.fromisoformat(h[doc_date_field]) + timedelta(days=30)).isoformat()
        if creating:
            # "Prices Including VAT" comes from the vendor unless the request sends pricesIncludeTax
            # (APIV2PurchaseInvoices.Page.al; Purchase Header validates Buy-from Vendor No.)
            h.setdefault("pricesIncludeTax", bool(vendor.get("_pricesIncludeTax")) if vendor else False)
            h.setdefault("discountAmount", ZERO)

    def _apply_shortcut_dims(self, doc: Document, values: dict) -> None:
        for name, dim_code in zip(("shortcutDimension1Code", "shortcutDimension2Code"), self.global_dims):
            if name in values:
                if values[name]:
                    doc.dims.pop(dim_code, None)
                    self._add_dim(doc.dims, {"code": dim_code, "valueCode": values[name]}, in_deep_insert=True)
                else:
                    doc.dims.pop(dim_code, None)

    # -- dimension set lines ------------------------------------------------------------------------------
    def _dim_entry(self, item: dict) -> DimEntry:
        values = convert(item, DIM_FIELDS, DIM_WRITABLE, set(), "dimensionSetLine")
        dim = None
        if values.get("id"):
            dim = self.company.dimensions.get(values["id"])
            if dim is None:
                raise E.missing_related("Dimension", f"Id='{values['id']}'")
        if values.get("code"):
            dim = self.company.dimension_by_code.get(values["code"])
            if dim is None:
                raise E.missing_related("Dimension", f"Code='{values['code']}'")
        if dim is None:
            raise E.dialog('The "id" or "code" of the dimension must be specified.')
        value = None
        if values.get("valueId"):
            value = self.company.dimension_values.get(values["valueId"])
            if value is None or value["dimensionId"] != dim["id"]:
                raise E.missing_related("Dimension Value", f"Dimension Code='{dim['code']}',Id='{values['valueId']}'")
        if values.get("valueCode"):
            value = self.company.value_by_key.get((dim["code"], values["valueCode"]))
            if value is None:
                raise E.missing_related("Dimension Value",
                                        f"Dimension Code='{dim['code']}',Code='{values['valueCode']}'")
        if value is None:
            raise E.dialog('The "valueId" or "valueCode" of the dimension value must be specified.')
        return DimEntry(dim["id"], dim["code"], dim["displayName"], value["id"], value["code"], value["displayName"])

    def _add_dim(self, dims: dict[str, DimEntry], item: dict, in_deep_insert: bool = False) -> DimEntry:
        entry = self._dim_entry(item)
        if entry.code in dims and not in_deep_insert:
            raise E.dialog("The dimension set line already exists. Check existing dimension set lines and the "
                           "default dimension set lines on the parent.")
        dims[entry.code] = entry
        return entry

    def add_dim(self, doc: Document, line: Line | None, body: dict) -> DimEntry:
        self._ensure_draft(doc)
        entry = self._add_dim(line.dims if line else doc.dims, body)
        if line:
            line.version = next_version()
        self.touch(doc)
        return entry

    def patch_dim(self, doc: Document, line: Line | None, dim_id: str, body: dict) -> DimEntry:
        self._ensure_draft(doc)
        dims = line.dims if line else doc.dims
        current = next(e for e in dims.values() if e.dimension_id == dim_id)
        if not isinstance(body, dict):
            raise E.bad_request("Invalid Request Body")
        if (body.get("id") and str(body["id"]).lower() != dim_id) or \
                (body.get("code") and str(body["code"]).upper() != current.code):
            raise E.dialog('The "id" and "code" fields cannot be modified.')
        entry = self._dim_entry({**{k: v for k, v in body.items() if k in ("valueId", "valueCode")},
                                 "code": current.code})
        dims[current.code] = entry
        if line:
            line.version = next_version()
        self.touch(doc)
        return entry

    def delete_dim(self, doc: Document, line: Line | None, dim_id: str) -> None:
        self._ensure_draft(doc)
        dims = line.dims if line else doc.dims
        code = next(c for c, e in dims.items() if e.dimension_id == dim_id)
        del dims[code]
        if line:
            line.version = next_version()
        self.touch(doc)

    # -- lines -------------------------------------------------------------------------------------------
    def _build_line(self, doc: Document, item: dict, existing: Line | None = None) -> Line:
        values = convert(item, LINE_FIELDS, LINE_WRITABLE, {"dimensionSetLines"}, doc.type.line_type_name)
        if existing is not None:
            for key in ("sequence", "lineObjectNumber", "lineType"):
                if key in values and values[key] != existing.data.get(key, existing.sequence if key == "sequence"
                                                                       else None):
                    raise E.dialog(f'The "{key}" cannot be changed. Delete the line and create a new one.')
            values = {**existing.data, **values}
        if values.get("documentId") not in (None, doc.id):
            raise E.dialog('The "documentId" cannot be changed.')
        if values.get("itemId", EMPTY_GUID) != EMPTY_GUID and values.get("accountId", EMPTY_GUID) != EMPTY_GUID:
            raise E.dialog('Both "itemId" and "accountId" are specified.')
        if existing is not None:
            sequence = existing.sequence
        else:
            sequence = values.get("sequence") or (max((ln.sequence for ln in doc.lines), default=0) + 10000)
            if any(ln.sequence == sequence for ln in doc.lines):
                raise E.dialog("You cannot insert a line with a duplicate sequence number.")
        line_type = values.get("lineType") or ("Account" if values.get("accountId", EMPTY_GUID) != EMPTY_GUID else
                                               "Item" if values.get("itemId", EMPTY_GUID) != EMPTY_GUID or
                                               values.get("lineObjectNumber") else "Comment")
        if line_type not in LINE_TYPES:
            raise E.cannot_convert(line_type, "Microsoft.NAV.invoiceLineAggLineType")
        values["lineType"] = line_type
        if line_type == "Account":
            account = self._posting_account(values)
            values.update(accountId=account["id"], lineObjectNumber=account["number"])
            values.setdefault("description", account["displayName"][:100])
            values.setdefault("taxCode", account.get("_vatGroup", "STANDARD"))
        elif line_type != "Comment":
            raise E.missing_related(OTHER_TABLES[line_type], f"No.='{values.get('lineObjectNumber', '')}'")
        if values.get("taxCode") and values["taxCode"] not in self.company.vat_rates:
            raise E.missing_related("VAT Product Posting Group", f"Code='{values['taxCode']}'")
        # lines inherit the header (microsoft/ALAppExtensions PR #11158)
        dims = dict(existing.dims) if existing is not None else dict(doc.dims)
        if existing is None and line_type == "Account":  # then the account's defaults, which win
            dims.update(defaults.inherited_entries(self.company, defaults.ACCOUNT, values["accountId"],
                                                   self._dim_entry))
        for dim_item in _as_list(item.get("dimensionSetLines") if existing is None else None, "dimensionSetLines"):
            entry = self._dim_entry(dim_item)
            if entry.code in dims:  # inherited from the header (vendor) or the account, or sent twice
                raise E.dialog("The dimension set line already exists. Check existing dimension set lines and the "
                               "default dimension set lines on the parent.")
            dims[entry.code] = entry
        return Line(existing.id if existing else str(uuid.uuid4()), sequence, values, dims)

    def _posting_account(self, values: dict) -> dict:
        account = None
        if values.get("accountId", EMPTY_GUID) != EMPTY_GUID:
            account = self.company.accounts.get(values["accountId"])
            if account is None:
                raise E.missing_related("G/L Account", f"Id='{values['accountId']}'")
        if values.get("lineObjectNumber"):
            by_number = self.company.account_by_number.get(values["lineObjectNumber"])
            if by_number is None:
                raise E.missing_related("G/L Account", f"No.='{values['lineObjectNumber']}'")
            account = by_number
        if account is None:
            raise E.dialog('You must specify a "lineObjectNumber" or an "accountId" for an Account line.')
        check_account(account)
        return account

    def add_line(self, doc: Document, body: dict) -> Line:
        self._ensure_draft(doc)
        line = self._build_line(doc, body)
        doc.lines.append(line)
        doc.lines.sort(key=lambda ln: ln.sequence)
        self._recalc(doc)
        self.touch(doc)
        return line

    def patch_line(self, doc: Document, line: Line, body: dict) -> Line:
        self._ensure_draft(doc)
        if isinstance(body, dict) and "dimensionSetLines" in body:
            raise E.bad_request("Deep update is not supported. Send one request per nested entity.")
        new = self._build_line(doc, body, existing=line)
        new.version = next_version()
        doc.lines[doc.lines.index(line)] = new
        self._recalc(doc)
        self.touch(doc)
        return new

    def delete_line(self, doc: Document, line: Line) -> None:
        self._ensure_draft(doc)
        doc.lines.remove(line)
        self._recalc(doc)
        self.touch(doc)

    # -- amounts -------------------------------------------------------------------------------------------
    def _recalc(self, doc: Document) -> None:
        incl_prices = bool(doc.header.get("pricesIncludeTax"))
        totals = {"totalAmountExcludingTax": ZERO, "totalTaxAmount": ZERO, "totalAmountIncludingTax": ZERO}
        for line in doc.lines:
            d = line.data
            if d["lineType"] == "Comment":
                line.amounts = {k: 0 for k in ("amountExcludingTax", "taxPercent", "totalTaxAmount",
                                               "amountIncludingTax", "netAmount", "netTaxAmount",
                                               "netAmountIncludingTax", "invoiceDiscountAllocation")}
                continue
            qty, cost = d.get("quantity", ZERO), d.get("unitCost", ZERO)
            gross = money(qty * cost)
            if "discountAmount" in d:
                discount = money(d["discountAmount"])
            else:
                discount = money(gross * d.get("discountPercent", ZERO) / 100)
            percent = (discount / gross * 100).quantize(Decimal("0.00001")) if gross else ZERO
            amount = gross - discount
            rate = self.company.vat_rates.get(d.get("taxCode", ""), ZERO)
            if incl_prices:
                incl = amount
                excl = money(incl / (1 + rate / 100))
                tax = incl - excl
            else:
                excl = amount
                tax = money(excl * rate / 100)
                incl = excl + tax
            line.amounts = {"discountAmount": discount, "discountPercent": percent, "amountExcludingTax": excl,
                            "taxPercent": rate, "totalTaxAmount": tax, "amountIncludingTax": incl,
                            "invoiceDiscountAllocation": 0, "netAmount": excl, "netTaxAmount": tax,
                            "netAmountIncludingTax": incl}
            totals["totalAmountExcludingTax"] += excl
            totals["totalTaxAmount"] += tax
            totals["totalAmountIncludingTax"] += incl
        doc.totals = totals

    # -- posting ---------------------------------------------------------------------------------------------
    def post(self, doc: Document) -> None:
        dt = doc.type
        if doc.posted:
            raise E.dialog(f"The action can be applied to a draft {dt.noun} only.")
        vendor = self.company.vendors.get(doc.header.get("vendorId"))
        if vendor is None:
            raise E.dialog("The vendor cannot be found.")
        if vendor.get("blocked") == "All":
            raise E.dialog(f"You cannot post this type of document when Vendor {vendor['number']} is blocked "
                           "with type All")
        doc_no = doc.vendor_document_number
        if self.rules.ext_doc_no_mandatory and not doc_no:
            raise E.dialog("You need to enter the document number of the document from the vendor in the "
                           f"{dt.vendor_doc_caption} field, so that this document stays linked to the original.")
        if self.rules.allowed_posting_dates:
            low, high = self.rules.allowed_posting_dates
            if not (low <= doc.header["postingDate"] <= high):
                raise E.dialog("Posting Date is not within your range of allowed posting dates.")
        if not any(ln.data["lineType"] != "Comment" and ln.data.get("quantity", ZERO) != 0 for ln in doc.lines):
            raise E.dialog("There is nothing to post.")
        for line in doc.lines:
            if line.data["lineType"] == "Account":
                account = self.company.accounts.get(line.data["accountId"])
                if account is None:
                    raise E.missing_related("G/L Account", f"No.='{line.data['lineObjectNumber']}'")
                check_account(account)
        for dims in [doc.dims, *(ln.dims for ln in doc.lines)]:
            for entry in dims.values():
                value = self.company.value_by_key.get((entry.code, entry.value_code))
                problem = "is missing" if value is None else "is blocked" if value.get("_blocked") else None
                if problem:
                    raise E.dialog(f"The dimensions used in {dt.parent_type} {doc.number} are invalid. "
                                   f"Dimension Value {entry.code} - {entry.value_code} {problem}.")
        defaults.check_posting(self.company, doc)
        if doc.totals["totalAmountIncludingTax"] < 0:
            raise E.dialog(f"The total amount for the {dt.noun} must be 0 or greater.")
        for other in self.company.documents.values():
            if other is not doc and other.type is dt and other.posted and \
                    other.header.get("vendorId") == vendor["id"] and \
                    code_upper(other.vendor_document_number) == code_upper(doc_no) and doc_no:
                raise E.dialog(f"Purchase {dt.label} {doc_no} already exists for this vendor.")
        counter = f"posted:{dt.entity_set}"
        number = self.company.series.setdefault(counter, dt.posted_start)
        self.company.series[counter] = number + 1
        doc.number = f"{dt.posted_prefix}{number}"
        doc.status = "Open"
        self.touch(doc)

    def mark_paid(self, doc: Document) -> None:
        if doc.status not in ("Open", "Paid"):
            raise E.dialog(f"Only a posted {doc.type.noun} can be paid (status is {doc.status}).")
        doc.status = "Paid"
        self.touch(doc)


def check_account(account: dict) -> None:
    """CheckGLAcc + Direct Posting (BaseApp purchase line), worded like BC's TestField errors."""
    key = f"No.={account['number']}"
    if account.get("blocked"):
        raise E.field_must_be("Blocked", "No", "G/L Account", key, "Yes")
    if account.get("accountType") != "Posting":
        raise E.field_must_be("Account Type", "Posting", "G/L Account", key, account.get("accountType", ""))
    if not account.get("directPosting"):
        raise E.field_must_be("Direct Posting", "Yes", "G/L Account", key, "No")


def _as_list(value, name: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise E.bad_request(f"The property '{name}' must be a collection.")
    return value
