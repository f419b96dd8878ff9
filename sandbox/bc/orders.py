"""Purchase orders (read through the API; created and changed through the control surface).

v2.0 `purchaseOrders.status` is the enum `Purchase Order Entity Buffer Status`: Draft, In Review,
Open. A BC order that is *Released* shows as `Open`; an *Open* (not released) one shows as `Draft`.
Order lines carry `directUnitCost` (invoice lines say `unitCost`).
"""
from __future__ import annotations

from decimal import Decimal

from sandbox import seed

from .documents import BUY_FROM, PAY_TO, SHIP_TO, money
from .resources import Kind
from .store import EMPTY_GUID, LCY, Company, iso, next_version, public

ORDER_FIELDS = ["id", "number", "orderDate", "postingDate", "vendorId", "vendorNumber", "vendorName", "payToName",
                "payToVendorId", "payToVendorNumber", "shipToName", "shipToContact", *BUY_FROM, *PAY_TO, *SHIP_TO,
                "shortcutDimension1Code", "shortcutDimension2Code", "currencyId", "currencyCode", "pricesIncludeTax",
                "paymentTermsId", "shipmentMethodId", "purchaser", "requestedReceiptDate", "discountAmount",
                "discountAppliedBeforeTax", "totalAmountExcludingTax", "totalTaxAmount", "totalAmountIncludingTax",
                "fullyReceived", "status", "lastModifiedDateTime"]
ORDER_LINE_FIELDS = ["id", "documentId", "sequence", "itemId", "accountId", "lineType", "lineObjectNumber",
                     "description", "description2", "unitOfMeasureId", "unitOfMeasureCode", "quantity",
                     "directUnitCost", "discountAmount", "discountPercent", "discountAppliedBeforeTax",
                     "amountExcludingTax", "taxCode", "taxPercent", "totalTaxAmount", "amountIncludingTax",
                     "invoiceDiscountAllocation", "netAmount", "netTaxAmount", "netAmountIncludingTax",
                     "expectedReceiptDate", "receivedQuantity", "invoicedQuantity", "invoiceQuantity",
                     "receiveQuantity", "itemVariantId", "locationId"]
ORDER_STATUSES = {"Draft", "In Review", "Open"}

_SEED_ORDERS = [
    ("V10000", "Open", "2026-11-02", [("Item", "ITM-1001", "Steel sheet 2mm", 400, "12.50"),
                                      ("Item", "ITM-1002", "Steel rod 10mm", 250, "4.20"),
                                      ("Account", "5130", "Freight in", 1, "180.00")]),
    ("V10010", "Open", "2026-11-05", [("Item", "ITM-2001", "Ball bearing 6204", 1000, "1.85"),
                                      ("Item", "ITM-2002", "Roller bearing 32008", 120, "14.40")]),
    ("V10020", "Draft", "2026-11-10", [("Item", "ITM-3001", "Cast housing A", 60, "88.00")]),
    ("V10030", "In Review", "2026-11-12", [("Account", "6230", "Server maintenance", 1, "1450.00"),
                                           ("Account", "6220", "Licence renewal", 5, "99.00")]),
]


def add_purchase_order(company: Company, vendor_number: str, lines: list[dict], *, status: str = "Open",
                       order_date: str | None = None, number: str | None = None, order_id: str | None = None,
                       stamp: str | None = None) -> dict:
    """Add an order. Each line: {lineType ("Item"|"Account"), lineObjectNumber, description, quantity,
    directUnitCost, taxCode?, receivedQuantity?, invoicedQuantity?}."""
    if status not in ORDER_STATUSES:
        raise ValueError(f"status must be one of {sorted(ORDER_STATUSES)}")
    vendor = company.vendor_by_number[vendor_number]
    if number is None:
        number = str(company.series["order"])
        company.series["order"] += 1
    order_date = order_date or company.clock.now().date().isoformat()
    order_id = order_id or seed.stable_uuid("purchaseOrder", company.id, number)
    stamp = stamp or iso(company.clock.stamp())
    currency = vendor.get("currencyCode") or LCY
    order = {"id": order_id, "number": number, "orderDate": order_date, "postingDate": order_date,
             "vendorId": vendor["id"], "vendorNumber": vendor["number"], "vendorName": vendor["displayName"],
             "payToName": vendor["displayName"], "payToVendorId": vendor["id"], "payToVendorNumber": vendor["number"],
             "shipToName": company.name, "shipToContact": "", "currencyCode": currency,
             "currencyId": vendor.get("currencyId", EMPTY_GUID), "pricesIncludeTax": False,
             "paymentTermsId": EMPTY_GUID, "shipmentMethodId": EMPTY_GUID, "purchaser": "",
             "requestedReceiptDate": order_date, "discountAmount": 0, "discountAppliedBeforeTax": False,
             "fullyReceived": False, "status": status, "shortcutDimension1Code": "", "shortcutDimension2Code": "",
             "lastModifiedDateTime": stamp, "_v": next_version(), "_lines": []}
    for prefix in ("buyFrom", "payTo"):
        order.update({f"{prefix}AddressLine1": vendor.get("addressLine1", ""),
                      f"{prefix}AddressLine2": vendor.get("addressLine2", ""), f"{prefix}City": vendor.get("city", ""),
                      f"{prefix}Country": vendor.get("country", ""), f"{prefix}State": vendor.get("state", ""),
                      f"{prefix}PostCode": vendor.get("postalCode", "")})
    order.update({f: "" for f in SHIP_TO})
    for i, spec in enumerate(lines):
        order["_lines"].append(_line(company, order, (i + 1) * 10000, spec))
    _totals(order)
    company.orders[order_id] = order
    return order


def _line(company: Company, order: dict, sequence: int, spec: dict) -> dict:
    qty = Decimal(str(spec.get("quantity", 1)))
    cost = Decimal(str(spec.get("directUnitCost", 0)))
    tax_code = spec.get("taxCode", "STANDARD")
    rate = company.vat_rates.get(tax_code, Decimal(0))
    excl = money(qty * cost)
    tax = money(excl * rate / 100)
    line_type = spec.get("lineType", "Item")
    number = spec.get("lineObjectNumber", "")
    account = company.account_by_number.get(number) if line_type == "Account" else None
    received = Decimal(str(spec.get("receivedQuantity", 0)))
    invoiced = Decimal(str(spec.get("invoicedQuantity", 0)))
    return {"id": spec.get("id") or seed.stable_uuid("purchaseOrderLine", order["id"], str(sequence)),
            "documentId": order["id"], "sequence": sequence,
            "itemId": seed.stable_uuid("item", number) if line_type == "Item" else EMPTY_GUID,
            "accountId": account["id"] if account else EMPTY_GUID, "lineType": line_type, "lineObjectNumber": number,
            "description": spec.get("description", account["displayName"] if account else number),
            "description2": "", "unitOfMeasureId": EMPTY_GUID,
            "unitOfMeasureCode": spec.get("unitOfMeasureCode", "PCS" if line_type == "Item" else ""),
            "quantity": qty, "directUnitCost": cost, "discountAmount": 0, "discountPercent": 0,
            "discountAppliedBeforeTax": False, "amountExcludingTax": excl, "taxCode": tax_code, "taxPercent": rate,
            "totalTaxAmount": tax, "amountIncludingTax": excl + tax, "invoiceDiscountAllocation": 0,
            "netAmount": excl, "netTaxAmount": tax, "netAmountIncludingTax": excl + tax,
            "expectedReceiptDate": order["requestedReceiptDate"], "receivedQuantity": received,
            "invoicedQuantity": invoiced, "invoiceQuantity": received - invoiced, "receiveQuantity": qty - received,
            "itemVariantId": EMPTY_GUID, "locationId": EMPTY_GUID, "_v": next_version()}


def _totals(order: dict) -> None:
    lines = order["_lines"]
    order["totalAmountExcludingTax"] = sum((ln["amountExcludingTax"] for ln in lines), Decimal(0))
    order["totalTaxAmount"] = sum((ln["totalTaxAmount"] for ln in lines), Decimal(0))
    order["totalAmountIncludingTax"] = sum((ln["amountIncludingTax"] for ln in lines), Decimal(0))
    order["fullyReceived"] = bool(lines) and all(ln["receivedQuantity"] >= ln["quantity"] for ln in lines)


def set_purchase_order(company: Company, order: dict, **fields) -> dict:
    """Change an order "in BC": header fields (e.g. status) and/or `lines` (replaces them)."""
    if "status" in fields and fields["status"] not in ORDER_STATUSES:
        raise ValueError(f"status must be one of {sorted(ORDER_STATUSES)}")
    lines = fields.pop("lines", None)
    for key in ("id", "number", "_lines", "_v"):
        fields.pop(key, None)
    order.update(fields)
    if lines is not None:
        order["_lines"] = [_line(company, order, (i + 1) * 10000, dict(spec, id=None)) for i, spec in enumerate(lines)]
    _totals(order)
    order["_v"] = next_version()
    order["lastModifiedDateTime"] = iso(company.clock.stamp())
    return order


def seed_orders(company: Company) -> None:
    stamp = iso(company.clock.stamp())
    for vendor, status, order_date, lines in _SEED_ORDERS:
        add_purchase_order(company, vendor, [
            {"lineType": t, "lineObjectNumber": n, "description": d, "quantity": q, "directUnitCost": c}
            for t, n, d, q, c in lines], status=status, order_date=order_date, stamp=stamp)


def order_line_kind() -> Kind:
    return Kind("purchaseOrderLine", ORDER_LINE_FIELDS, key=lambda ln: (ln["sequence"],), to_json=public,
                view=lambda ln: ln)


def order_kind() -> Kind:
    return Kind("purchaseOrder", ORDER_FIELDS, key=lambda o: (o["number"], o["id"]), to_json=public,
                view=lambda o: o, navigation={"purchaseOrderLines": lambda o: (order_line_kind(), list(o["_lines"]))})
