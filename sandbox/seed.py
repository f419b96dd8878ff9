"""Seed data shared by both sandboxes: one mid-sized manufacturer, seen from both sides.

Business Central holds the ledger (vendors, chart of accounts, dimensions, VAT groups); Basware
holds approved invoices coded against exactly those values. Everything is deterministic, so
tests can name a vendor or an account and get the same one every run.
"""
from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

TENANT_ID = "7f1a2b3c-0000-4000-8000-00000000a001"
ENVIRONMENT = "Production"
COMPANY_ID = "5d0c7a1e-0000-4000-8000-00000000c001"
COMPANY_NAME = "Northwind Manufacturing Ltd."
COMPANY_CODE = "NWM01"  # the Basware companyCode of the same legal entity
LCY = "EUR"

# Credentials the sandboxes accept (test-only values, not secrets of any real system).
BASWARE_CLIENT_ID = "sandbox-basware-client"
BASWARE_CLIENT_SECRET = "sandbox-basware-secret-value"
BC_CLIENT_ID = "sandbox-bc-client"
BC_CLIENT_SECRET = "sandbox-bc-secret-value"
WEBHOOK_SECRET = "sandbox-webhook-signing-token"
BC_CLIENT_STATE = "sandbox-bc-client-state"

# Basware tax code -> BC VAT product posting group, and the rates BC applies.
TAX_CODE_MAP = {"S25": "STANDARD", "R12": "REDUCED", "Z0": "ZERO"}
VAT_RATES = {"STANDARD": Decimal("25"), "REDUCED": Decimal("12"), "ZERO": Decimal("0")}

DIMENSION_MAP = [
    {"dimension": "DEPARTMENT", "basware_field": "costCenterCode", "target": "costCenter"},
    {"dimension": "PROJECT", "basware_field": "projectCode", "target": "project"},
    {"dimension": "AREA", "basware_field": "dimCode1", "target": "list:ACC_LIST_1"},
]

TWO = Decimal("0.01")


def money(value) -> Decimal:
    return Decimal(value).quantize(TWO, rounding=ROUND_HALF_UP)


def stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "ml-connector-sandbox:" + ":".join(parts)))


_VENDOR_NAMES = [
    "Acme Steel Supply", "Baltic Bearings", "Cobalt Castings", "Delta Fasteners", "Euro Packaging",
    "Fjord Logistics", "Granite Tooling", "Helix Hydraulics", "Iberia Plastics", "Jura Electronics",
    "Kestrel Office Supplies", "Lumen Lighting", "Meridian Chemicals", "Nordic Timber", "Orion Machine Parts",
    "Pioneer Paints", "Quartz Labs", "Rhine Freight", "Summit Safety Gear", "Titan Compressors",
    "Umbra IT Services", "Vega Cleaning Services", "Westwind Energy", "Xenon Gas Supply", "Yarrow Catering",
    "Zenith Consulting", "Atlas Cranes", "Boreal Insulation", "Cascade Pumps", "Dune Abrasives",
    "Ember Welding", "Falcon Couriers", "Glacier Cooling", "Harbor Shipping", "Ivory Printing",
    "Jade Software", "Keystone Security", "Lattice Engineering", "Mosaic Facilities", "Nimbus Cloud Hosting",
    "Onyx Lubricants", "Prism Optics", "Quill Legal Services", "Ridge Telecom", "Sierra Rentals",
    "Tundra Refrigeration", "Unity Recruitment", "Vertex Calibration", "Willow Landscaping", "Yukon Metals",
]
_CITIES = [("Hamburg", "DE", "20095"), ("Rotterdam", "NL", "3011"), ("Lyon", "FR", "69001"),
           ("Turku", "FI", "20100"), ("Gdansk", "PL", "80-001"), ("Bilbao", "ES", "48001"),
           ("Aarhus", "DK", "8000"), ("Graz", "AT", "8010")]

# Default dimensions "in BC" (Default Dimension table): vendors' are readable through API v2.0
# (`defaultDimensions`), G/L accounts' are not (sandbox/bc/defaults.py). (parent, number) ->
# [(dimension, value or None, posting validation)]. Together about 10% of the seeded invoices.
VENDOR_DEFAULT_DIMENSIONS = {
    "V10030": [("DEPARTMENT", "ADM", " ")],
    "V10110": [("DEPARTMENT", "SALES", " ")],
    "V10210": [("AREA", "EAST", "Code Mandatory")],
    "V10290": [("DEPARTMENT", "FIN", " ")],
    "V10380": [("DEPARTMENT", "IT", "Same Code")],  # every invoice of it must carry IT
}
ACCOUNT_DEFAULT_DIMENSIONS = {
    "6120": [("AREA", "SOUTH", " ")],  # Cleaning: inherited on the line, invisible to the API
}
# Vendors with "Prices Including VAT": a draft inherits pricesIncludeTax = true unless the request
# says otherwise (APIV2PurchaseInvoices.Page.al). About 6% of the seeded invoices.
PRICES_INCLUDING_VAT_VENDORS = frozenset({"V10060", "V10300", "V10410"})

BLOCKED_VENDOR = "V10490"  # blocked "All": no documents may be created for it
PAYMENT_BLOCKED_VENDOR = "V10480"  # blocked "Payment": invoices post, payments are held


def vendors(count: int = 50) -> list[dict]:
    out = []
    for i in range(count):
        number = f"V{10000 + i * 10}"
        name = _VENDOR_NAMES[i % len(_VENDOR_NAMES)] + ("" if i < len(_VENDOR_NAMES) else f" {i // len(_VENDOR_NAMES)}")
        city, country, postcode = _CITIES[i % len(_CITIES)]
        blocked = "All" if number == BLOCKED_VENDOR else "Payment" if number == PAYMENT_BLOCKED_VENDOR else " "
        out.append({
            "id": stable_uuid("vendor", number),
            "number": number,
            "displayName": name,
            "addressLine1": f"{10 + i} Industrial Road",
            "addressLine2": "",
            "city": city,
            "state": "",
            "country": country,
            "postalCode": postcode,
            "phoneNumber": f"+49 40 5550{i:03d}",
            "email": f"ap@{name.split()[0].lower()}.example",
            "website": "",
            "taxRegistrationNumber": f"{country}{100000000 + i * 7919}",
            "currencyCode": "USD" if i == 7 else "",
            "taxLiable": True,
            "blocked": blocked,
            "balance": 0,
        })
    return out


# (number, name, accountType, directPosting, blocked, category)
_ACCOUNTS = [
    ("1000", "BALANCE SHEET", "Heading", False, False, "Assets"),
    ("1100", "Fixed Assets", "Begin Total", False, False, "Assets"),
    ("1110", "Machinery and Equipment", "Posting", True, False, "Assets"),
    ("1120", "Office Equipment", "Posting", True, False, "Assets"),
    ("1190", "Fixed Assets, Total", "End Total", False, False, "Assets"),
    ("2000", "Inventory", "Posting", False, False, "Assets"),  # not direct posting: fed by items only
    ("2310", "Vendors, Domestic", "Posting", False, False, "Liabilities"),
    ("2320", "Vendors, Foreign", "Posting", False, False, "Liabilities"),
    ("2510", "Purchase VAT 25%", "Posting", False, False, "Assets"),
    ("5000", "INCOME STATEMENT", "Heading", False, False, "Income"),
    ("5100", "Raw Materials", "Posting", True, False, "Cost of Goods Sold"),
    ("5110", "Components", "Posting", True, False, "Cost of Goods Sold"),
    ("5120", "Packaging Materials", "Posting", True, False, "Cost of Goods Sold"),
    ("5130", "Freight In", "Posting", True, False, "Cost of Goods Sold"),
    ("5140", "Subcontracted Work", "Posting", True, False, "Cost of Goods Sold"),
    ("6000", "OPERATING EXPENSES", "Heading", False, False, "Expense"),
    ("6100", "Rent and Leases", "Posting", True, False, "Expense"),
    ("6110", "Electricity and Heating", "Posting", True, False, "Expense"),
    ("6120", "Cleaning", "Posting", True, False, "Expense"),
    ("6130", "Repairs and Maintenance", "Posting", True, False, "Expense"),
    ("6200", "Office Supplies", "Posting", True, False, "Expense"),
    ("6210", "Telephone and Internet", "Posting", True, False, "Expense"),
    ("6220", "Software Subscriptions", "Posting", True, False, "Expense"),
    ("6230", "IT Services", "Posting", True, False, "Expense"),
    ("6300", "Travel", "Posting", True, False, "Expense"),
    ("6310", "Meals and Entertainment", "Posting", True, False, "Expense"),
    ("6400", "Legal and Consulting Fees", "Posting", True, False, "Expense"),
    ("6410", "Audit Fees", "Posting", True, False, "Expense"),
    ("6500", "Insurance", "Posting", True, False, "Expense"),
    ("6600", "Vehicle Expenses", "Posting", True, False, "Expense"),
    ("6700", "Training", "Posting", True, False, "Expense"),
    ("6710", "Recruitment", "Posting", True, False, "Expense"),
    ("6800", "Safety Equipment", "Posting", True, False, "Expense"),
    ("6900", "Old Marketing Expenses", "Posting", True, True, "Expense"),  # blocked
    ("6990", "Operating Expenses, Total", "Total", False, False, "Expense"),
]
BLOCKED_ACCOUNT = "6900"
NON_DIRECT_ACCOUNT = "2000"
HEADING_ACCOUNT = "6000"


def accounts() -> list[dict]:
    return [{
        "id": stable_uuid("account", number),
        "number": number,
        "displayName": name,
        "category": category,
        "subCategory": "",
        "blocked": blocked,
        "accountType": account_type,
        "directPosting": direct,
        "netChange": 0,
    } for number, name, account_type, direct, blocked, category in _ACCOUNTS]


def posting_accounts() -> list[str]:
    """Accounts an invoice line may use: Posting, direct posting, not blocked."""
    return [n for n, _, t, d, b, _c in _ACCOUNTS if t == "Posting" and d and not b]


DIMENSIONS = {
    "DEPARTMENT": [("ADM", "Administration"), ("SALES", "Sales"), ("PROD", "Production"),
                   ("PURCH", "Purchasing"), ("IT", "IT"), ("FIN", "Finance")],
    "PROJECT": [(f"P-{1001 + i}", f"Project {name}") for i, name in enumerate(
        ["Line 4 Upgrade", "ERP Rollout", "Warehouse Expansion", "Solar Roof", "Safety Audit",
         "Packaging Redesign", "Export Launch", "Robot Cell", "Quality Lab", "Canteen Refit"])],
    "AREA": [("NORTH", "North"), ("SOUTH", "South"), ("EAST", "East"), ("WEST", "West"), ("EXPORT", "Export")],
}


def dimensions() -> list[dict]:
    return [{"id": stable_uuid("dimension", code), "code": code, "displayName": code.title()}
            for code in DIMENSIONS]


def dimension_values() -> list[dict]:
    out = []
    for code, values in DIMENSIONS.items():
        for value, name in values:
            out.append({"id": stable_uuid("dimensionValue", code, value), "code": value,
                        "dimensionId": stable_uuid("dimension", code), "displayName": name})
    return out


def _iso(d: date) -> str:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def coding_row(index: int, account: str, net: Decimal, tax_code: str = "S25", department: str | None = "PROD",
               project: str | None = None, area: str | None = "NORTH", invoice_key: str = "") -> dict:
    rate = VAT_RATES[TAX_CODE_MAP[tax_code]]
    tax = money(net * rate / 100)
    name = next(n for num, n, *_ in _ACCOUNTS if num == account) if account in dict(
        (a[0], a) for a in _ACCOUNTS) else "Unknown account"
    row = {
        "externalCode": stable_uuid("coding", invoice_key, str(index)),
        "rowIndex": index,
        "accountCode": account,
        "accountName": name,
        "netTotal": net,
        "grossTotal": net + tax,
        "taxSum": tax,
        "taxCode": tax_code,
        "taxPercent": rate,
    }
    if department:
        row["costCenterCode"] = department
    if project:
        row["projectCode"] = project
    if area:
        row["dimCode1"] = area
    return row


def accounting_document(seq: int, vendor: str, invoice_number: str, rows: list[dict],
                        status: str = "WaitingForTransfer", currency: str = LCY,
                        invoice_date: date | None = None, invoice_id: str | None = None) -> dict:
    """A Basware accounting document (AccountingDocumentEntity) built from its coding rows."""
    invoice_date = invoice_date or date(2026, 11, 2) + timedelta(days=seq % 20)
    net = sum((r["netTotal"] for r in rows), Decimal("0"))
    tax = sum((r["taxSum"] for r in rows), Decimal("0"))
    vendor_row = next((v for v in vendors() if v["number"] == vendor), None)
    invoice_id = invoice_id or stable_uuid("invoice", str(seq), invoice_number)
    return {
        "invoiceId": invoice_id,
        "bumid": stable_uuid("bum", invoice_id),
        "companyCode": COMPANY_CODE,
        "companyName": COMPANY_NAME,
        "organizationCode": COMPANY_CODE,
        "currencyCode": currency,
        "supplierCode": vendor,
        "supplierName": vendor_row["displayName"] if vendor_row else "Unknown Supplier Ltd",
        "invoiceNumber": invoice_number,
        "invoiceDate": _iso(invoice_date),
        "dueDate": _iso(invoice_date + timedelta(days=30)),
        "netSum": net,
        "taxSum1": tax,
        "grossSum": net + tax,
        "paymentBlock": False,
        "processingStatus": status,
        "invoiceTypeCode": "CreditNote" if net < 0 else "Invoice",
        "description": f"Invoice {invoice_number} from {vendor}",
        "lastUpdated": "2026-11-20T08:00:00Z",
        "codingRows": rows,
        "invoiceLines": [],
        "transferParameters": [],
        "transferResponses": [],
        "paymentResponses": [],
    }


def approved_invoices(count: int = 24, seed: int = 7, images: bool = False) -> list[dict]:
    """Approved invoices waiting for transfer: 1-4 coding rows each, the 4th one a credit note.
    `images`: each also lists its attachments (`with_attachments`), as P2P shows them after transfer."""
    rng = random.Random(seed)
    ok_vendors = [v["number"] for v in vendors() if v["blocked"] == " "]
    accounts_ok = posting_accounts()
    depts = [c for c, _ in DIMENSIONS["DEPARTMENT"]]
    projects = [c for c, _ in DIMENSIONS["PROJECT"]]
    areas = [c for c, _ in DIMENSIONS["AREA"]]
    docs = []
    for seq in range(count):
        vendor = ok_vendors[seq % len(ok_vendors)]
        number = f"INV-{2026}{seq + 1:05d}"
        key = f"{vendor}:{number}"
        rows = []
        credit = seq % 10 == 3
        defaults = {dim: (value, rule) for dim, value, rule in VENDOR_DEFAULT_DIMENSIONS.get(vendor, [])}
        for idx in range(1 + rng.randrange(4)):
            net = money(rng.uniform(40, 4000))
            if credit:
                net = -net
            row = coding_row(
                idx * 10 + 1,  # rowIndex may have gaps
                rng.choice(accounts_ok), net, rng.choice(["S25", "S25", "R12", "Z0"]),
                rng.choice(depts), rng.choice(projects) if rng.random() < 0.5 else None,
                rng.choice(areas), invoice_key=key)
            field = {"DEPARTMENT": "costCenterCode", "AREA": "dimCode1"}
            for dim, (value, rule) in defaults.items():
                # a vendor's default: half of the rows coded as the default, half differently,
                # except where the vendor's rule demands the default (Same Code)
                if rule == "Same Code" or (idx + seq) % 2 == 0:
                    row[field[dim]] = value
                elif row[field[dim]] == value:
                    choices = depts if dim == "DEPARTMENT" else areas
                    row[field[dim]] = choices[(choices.index(value) + 1) % len(choices)]
            rows.append(row)
        if credit:
            number = f"CN-{2026}{seq + 1:05d}"
        doc = accounting_document(seq, vendor, number, rows)
        docs.append(with_attachments(doc, seq) if images else doc)
    return docs


# -- invoice images (Basware `attachments[]`, AccountingDocumentEntity) -----------------------------------
def attachment_entry(invoice_id: str, filename: str, category: str = "ORIGINALIMAGE",
                     confidential: bool = False) -> dict:
    """One `attachments[]` entry (Basware P2P OpenAPI schema `Attachment`), with a stable externalCode."""
    return {"externalCode": uuid.UUID(stable_uuid("attachment", invoice_id, filename)).hex, "category": category,
            "filename": filename, "isConfidential": confidential, "creationTime": "2026-11-19T09:28:19.093Z"}


def with_attachments(doc: dict, seq: int = 0) -> dict:
    """The document with its scanned original image; every third also with a delivery note (ATTACHMENT),
    every seventh also with a confidential attachment (a signed contract page)."""
    number, invoice_id = doc["invoiceNumber"], doc["invoiceId"]
    entries = [attachment_entry(invoice_id, f"{number}.pdf")]
    if seq % 3 == 1:
        entries.append(attachment_entry(invoice_id, f"delivery-note-{number}.pdf", "ATTACHMENT"))
    if seq % 7 == 5:
        entries.append(attachment_entry(invoice_id, f"contract-{number}.pdf", "ATTACHMENT", confidential=True))
    return {**doc, "attachments": entries}


def attachment_pdf(doc: dict, entry: dict) -> bytes:
    """The file behind a seeded attachment: a one-page PDF naming the document (generated here)."""
    kind = {"ORIGINALIMAGE": "Invoice", "ATTACHMENT": "Attachment", "EXPORTEDEMAIL": "E-mail"}.get(
        entry.get("category") or "", "Attachment")
    return pdf([f"{doc.get('supplierName') or ''}", f"{kind} {doc.get('invoiceNumber')}",
                f"Date {doc.get('invoiceDate')}   Due {doc.get('dueDate')}",
                f"Total {doc.get('grossSum')} {doc.get('currencyCode') or LCY}",
                f"File {entry.get('filename')}"])


def pdf(lines: list[str]) -> bytes:
    """A minimal, valid one-page PDF 1.4 (A4, Helvetica) showing `lines`; byte-for-byte deterministic."""
    def escape(text: str) -> str:
        text = text.encode("latin-1", "replace").decode("latin-1")
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 14 Tf 72 770 Td 18 TL " + " ".join(f"({escape(t)}) '" for t in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
        "/Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(stream.encode('latin-1'))} >>\nstream\n{stream}\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def broken_invoices() -> list[dict]:
    """Invoices that must fail with a reason an AP clerk can act on."""
    good_row = lambda key, acct="6200", **kw: coding_row(1, acct, money("120.00"), invoice_key=key, **kw)  # noqa: E731
    return [
        accounting_document(900, "V99999", "BRK-UNKNOWN-VENDOR", [good_row("unknown-vendor")]),
        accounting_document(901, "V10010", "BRK-BLOCKED-ACCOUNT", [good_row("blocked-account", BLOCKED_ACCOUNT)]),
        accounting_document(902, "V10020", "BRK-BAD-DIMENSION", [good_row("bad-dim", department="NOPE")]),
        # V10380's DEPARTMENT default is IT with "Same Code": coding FIN breaks the vendor's rule
        accounting_document(903, "V10380", "BRK-SAME-CODE", [good_row("same-code", department="FIN")]),
    ]


def bulk_vendors(count: int) -> list[dict]:
    """Many vendors for benchmarks (same shape as `vendors`)."""
    base = vendors(50)
    out = []
    for i in range(count):
        v = dict(base[i % 50])
        number = f"B{100000 + i}"
        v.update(id=stable_uuid("bulkvendor", number), number=number, displayName=f"{v['displayName']} #{i}",
                 blocked=" ")
        out.append(v)
    return out
