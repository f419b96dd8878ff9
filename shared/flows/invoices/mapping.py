"""Basware accounting document -> BC purchase invoice / credit memo: pure mapping and validation.

No I/O here. The caller hands in a `Ledger` (what BC holds for the company: vendors, G/L accounts,
dimension values, the local currency) and the mapping rules (`MappingRules`, from settings); the
result is either one deep-insert body or the complete list of problems, phrased for the AP clerk
who has to fix them (Microsoft Learn: purchaseInvoice, purchaseInvoiceLine and dimensionSetLine resource types).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Mapping

from shared.clients.bc import CREDIT_MEMOS, INVOICES, LINES, VENDOR_DOC_NUMBER
from shared.flows.invoices.dimensions import DefaultDimension, vendor_rule_problems
from shared.models.basware import AccountingDocument, CodingRow
from shared.models.bc import Account, Vendor
from shared.core.settings import DimensionMapping, Settings

VENDOR_DOC_NUMBER_MAX = 35   # Purchase Header "Vendor Invoice No." / "Vendor Cr. Memo No.": Code[35]
DESCRIPTION_MAX = 100        # Purchase Line Description: Text[100] (BaseApp table 39 "Purchase Line"; Microsoft Learn: Application_StringExceededLength)
CLERK_MESSAGE_MAX = 250      # TransferResponseEntity.responseMessage
LINE_SEQUENCE_STEP = 10000   # BC's own line numbering
DOCUMENT_DATE_FIELD = {INVOICES: "invoiceDate", CREDIT_MEMOS: "creditMemoDate"}

PREFIX = "Not transferred to Business Central: "
SUFFIX = " Fix in BC or recode, then re-transfer."


@dataclass(frozen=True)
class Ledger:
    """What BC holds for one company, as validation needs it. Keys are upper-case (BC Code fields)."""

    lcy: str
    vendors: Mapping[str, Vendor]
    accounts: Mapping[str, Account]
    dimension_values: Mapping[str, frozenset[str]]  # dimension code -> value codes
    vendor_defaults: Mapping[str, tuple[DefaultDimension, ...]] = field(default_factory=dict)  # by vendor number


@dataclass(frozen=True)
class MappingRules:
    dimension_map: tuple[DimensionMapping, ...] = ()
    tax_code_map: Mapping[str, str] = field(default_factory=dict)  # unmapped codes pass through unchanged

    @classmethod
    def from_settings(cls, settings: Settings) -> "MappingRules":
        return cls(settings.dimension_map, dict(settings.tax_code_map))

    def tax_code(self, basware_code: str | None) -> str | None:
        if not basware_code:
            return None
        return self.tax_code_map.get(basware_code, basware_code)


@dataclass(frozen=True)
class Problem:
    text: str
    master_data: bool = False  # a code not found / blocked in BC: worth one ledger refresh before failing


@dataclass
class MappedDocument:
    """A deep-insert body for BC, or the reasons there can be none."""

    entity: str = INVOICES                  # purchaseInvoices | purchaseCreditMemos
    vendor_number: str = ""
    vendor_document_number: str = ""
    body: dict = field(default_factory=dict)
    gross: Decimal | None = None            # what BC's totalAmountIncludingTax must come to (absolute)
    tax: Decimal | None = None              # what BC's totalTaxAmount must come to (absolute)
    problems: list[Problem] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)  # (clerk's row label, account) per line

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def is_credit_memo(self) -> bool:
        return self.entity == CREDIT_MEMOS

    @property
    def master_data_problem(self) -> bool:
        return any(p.master_data for p in self.problems)

    def clerk_message(self) -> str:
        return clerk_message([p.text for p in self.problems])


def clerk_message(problems: list[str], *, suffix: str = SUFFIX) -> str:
    """One message for Basware's action log (<= 250 chars) naming as many problems as fit."""
    unique = list(dict.fromkeys(p.strip().rstrip(".") for p in problems if p and p.strip()))
    if not unique:
        unique = ["unknown problem"]
    for shown in range(len(unique), 0, -1):
        listed = "; ".join(unique[:shown])
        rest = len(unique) - shown
        text = PREFIX + listed + (f"; and {rest} more problem{'s' if rest > 1 else ''}" if rest else "") + "." + suffix
        if len(text) <= CLERK_MESSAGE_MAX:
            return text
    # a single problem too long to fit: shorten it, never the instruction at the end
    room = CLERK_MESSAGE_MAX - len(PREFIX) - len(suffix) - 2
    return PREFIX + unique[0][:room - 1].rstrip() + "\u2026." + suffix


def as_date(value: str | None) -> str | None:
    """'2026-11-02T00:00:00Z' or '2026-11-02' -> '2026-11-02'; None if absent or not a date."""
    if not value or not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        return None


def _key(code: str | None) -> str:
    return (code or "").strip().upper()


def _row_label(row: CodingRow, position: int) -> str:
    return f"row {row.row_index if row.row_index is not None else position}"


def _check_vendor(doc: AccountingDocument, ledger: Ledger, problems: list[Problem]) -> str:
    code = (doc.supplier_code or "").strip()
    if not code:
        problems.append(Problem("the invoice has no supplier code"))
        return ""
    vendor = ledger.vendors.get(_key(code))
    if vendor is None:
        problems.append(Problem(f"vendor {code} does not exist", master_data=True))
    elif (vendor.blocked or "").strip() == "All":
        problems.append(Problem(f"vendor {code} is blocked", master_data=True))
    return vendor.number if vendor is not None else code


def _check_account(code: str, ledger: Ledger, problems: list[Problem]) -> None:
    account = ledger.accounts.get(_key(code))
    if account is None:
        problems.append(Problem(f"account {code} does not exist", master_data=True))
        return
    if account.account_type != "Posting":
        problems.append(Problem(f"account {code} is not a posting account", master_data=True))
    if account.blocked:
        problems.append(Problem(f"account {code} is blocked", master_data=True))
    if not account.direct_posting:
        problems.append(Problem(f"account {code} does not allow direct posting", master_data=True))


def _dimension_lines(row: CodingRow, rules: MappingRules, ledger: Ledger, problems: list[Problem]) -> list[dict]:
    lines = []
    for mapping in rules.dimension_map:
        value = row.field(mapping.basware_field)
        if value is None or str(value).strip() == "":
            continue
        value = str(value).strip()
        known = ledger.dimension_values.get(_key(mapping.dimension))
        if known is None:
            problems.append(Problem(f"dimension {mapping.dimension} does not exist", master_data=True))
        elif _key(value) not in known:
            problems.append(Problem(f"{mapping.dimension} value {value} does not exist", master_data=True))
        lines.append({"code": mapping.dimension, "valueCode": value})
    return lines


def _line(row: CodingRow, position: int, sign: int, description: str, rules: MappingRules, ledger: Ledger,
          problems: list[Problem]) -> dict:
    label = _row_label(row, position)
    account = (row.account_code or "").strip()
    if not account:
        problems.append(Problem(f"{label} has no account"))
    else:
        _check_account(account, ledger, problems)
    if row.net_total is None:
        problems.append(Problem(f"{label} has no net amount"))
    line: dict = {
        "sequence": LINE_SEQUENCE_STEP * position,
        "lineType": "Account",
        "lineObjectNumber": account,
        "description": description,
        # quantity 1 x net amount: zero-quantity G/L lines fail posting on older builds (BaseApp codeunit 90 "Purch.-Post" skips them).
        # Credit memos carry positive amounts in BC, so a credit note's (negative) rows flip sign.
        "quantity": Decimal(1),
        "unitCost": (row.net_total or Decimal(0)) * sign,
    }
    tax_code = rules.tax_code(row.tax_code)
    if tax_code:
        line["taxCode"] = tax_code
    dims = _dimension_lines(row, rules, ledger, problems)
    if dims:
        line["dimensionSetLines"] = dims
    return line


def map_document(doc: AccountingDocument, ledger: Ledger, rules: MappingRules) -> MappedDocument:
    """Validate everything and build the deep-insert body. Collects ALL problems, stops at none."""
    problems: list[Problem] = []
    if doc.gross_sum is None:
        problems.append(Problem("the invoice has no gross total"))
    credit = doc.gross_sum is not None and doc.gross_sum < 0
    entity = CREDIT_MEMOS if credit else INVOICES
    sign = -1 if credit else 1

    vendor_number = _check_vendor(doc, ledger, problems)

    number = (doc.invoice_number or "").strip()
    if not number:
        problems.append(Problem("the invoice has no invoice number"))
    elif len(number) > VENDOR_DOC_NUMBER_MAX:
        # never truncate: a cut number could collide with another invoice's and hides the original
        problems.append(Problem(f"invoice number {number[:20]}\u2026 has {len(number)} characters, "
                                f"BC allows {VENDOR_DOC_NUMBER_MAX}"))

    invoice_date = as_date(doc.invoice_date)
    if invoice_date is None:
        problems.append(Problem("the invoice date is missing or not a date"))
    posting_date = as_date(doc.voucher_date) or invoice_date
    due_date = as_date(doc.due_date)

    if not doc.coding_rows:
        problems.append(Problem("the invoice has no coding rows"))
    description = (doc.description or f"Invoice {number} {doc.supplier_name or ''}").strip()
    if len(description) > DESCRIPTION_MAX:  # a description may be shortened; identifiers never are
        description = description[:DESCRIPTION_MAX - 1].rstrip() + "\u2026"
    rows = sorted(doc.coding_rows, key=lambda r: (r.row_index is None, r.row_index or 0))
    lines = [_line(row, i, sign, description, rules, ledger, problems) for i, row in enumerate(rows, start=1)]
    coded = [(_row_label(row, i), {str(d["code"]).upper(): str(d["valueCode"]).upper()
                                   for d in line.get("dimensionSetLines", [])})
             for i, (row, line) in enumerate(zip(rows, lines), start=1)]
    problems.extend(Problem(text, master_data=True) for text in vendor_rule_problems(
        vendor_number, ledger.vendor_defaults.get(_key(vendor_number), ()), coded,
        {m.dimension.upper() for m in rules.dimension_map}))

    # unitCost is net: say so, or a vendor with "Prices Including VAT" makes every amount gross
    # (pricesIncludeTax is editable on APIV2 - Purchase Invoices, page 30042, and defaults from the vendor)
    body: dict = {"vendorNumber": vendor_number, VENDOR_DOC_NUMBER[entity]: number, "pricesIncludeTax": False}
    if invoice_date:
        body[DOCUMENT_DATE_FIELD[entity]] = invoice_date
    if posting_date:
        body["postingDate"] = posting_date
    if due_date:
        body["dueDate"] = due_date
    currency = _key(doc.currency_code)
    # the company's own currency is blank in BC (AL: APIV2PurchaseInvoices.Page.al)
    if currency and currency != _key(ledger.lcy):
        body["currencyCode"] = currency
    body[LINES[entity]] = lines

    return MappedDocument(
        entity=entity, vendor_number=vendor_number, vendor_document_number=number, body=body,
        gross=abs(doc.gross_sum) if doc.gross_sum is not None else None,
        tax=abs(doc.tax_sum1) if doc.tax_sum1 is not None else None,
        problems=problems,
        rows=[(_row_label(row, i), (row.account_code or "").strip()) for i, row in enumerate(rows, start=1)],
    )


def totals_problem(mapped: MappedDocument, bc_gross: Decimal | None, bc_tax: Decimal | None,
                   tolerance: Decimal) -> str | None:
    """None if BC's totals match Basware's within the tolerance, else a message naming both."""
    gross_off = mapped.gross is not None and (bc_gross is None or abs(abs(bc_gross) - mapped.gross) > tolerance)
    tax_off = mapped.tax is not None and (bc_tax is None or abs(abs(bc_tax) - mapped.tax) > tolerance)
    if not (gross_off or tax_off):
        return None

    def fmt(value: Decimal | None) -> str:
        return "?" if value is None else f"{abs(value):,.2f}"

    return (f"BC calculates gross {fmt(bc_gross)} (VAT {fmt(bc_tax)}) but Basware has gross "
            f"{fmt(mapped.gross)} (VAT {fmt(mapped.tax)}); check tax codes and amounts")
