"""Purchase orders, BC -> Basware matching orders: stable codes, only changes, batch limits."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from shared.purchase_orders import batches, content_hash, deleted_line, map_line, map_order

ORDER = {"id": "AAAAAAAA-0000-4000-8000-000000000001", "number": "106001", "orderDate": "2026-11-02",
         "vendorNumber": "V10000", "vendorName": "Acme Steel Supply", "payToVendorNumber": "V10000",
         "payToName": "Acme Steel Supply", "currencyCode": "EUR", "requestedReceiptDate": "2026-11-09",
         "fullyReceived": False, "status": "Open", "lastModifiedDateTime": "2026-11-20T10:00:00.000Z"}
LINE = {"id": "BBBBBBBB-0000-4000-8000-000000000001", "sequence": 10000, "lineType": "Item",
        "lineObjectNumber": "ITM-1001", "description": "Steel sheet 2mm", "unitOfMeasureCode": "PCS",
        "quantity": Decimal("400"), "directUnitCost": Decimal("12.5"), "amountExcludingTax": Decimal("5000"),
        "totalTaxAmount": Decimal("1250"), "amountIncludingTax": Decimal("6250"), "taxCode": "STANDARD",
        "taxPercent": Decimal("25"), "expectedReceiptDate": "2026-11-09"}
ORDER_REQUIRED = {"externalCode", "orderNumber", "companyCode", "currencyCode", "supplierCode", "sourceSystem",
                  "organizationElementCode"}
LINE_REQUIRED = {"externalCode", "orderExternalCode", "lineNumber", "matchingMode", "quantity"}


def _wire(records):
    return json.loads(json.dumps(records, default=float))


def test_an_order_maps_to_a_matching_order_with_every_required_field():
    record = map_order(ORDER, "NWM01")
    assert ORDER_REQUIRED <= {k for k, v in record.items() if v is not None}
    assert record["externalCode"] == ORDER["id"].lower()  # BC's id: stable across edits
    assert (record["orderNumber"], record["supplierCode"], record["companyCode"],
            record["organizationElementCode"], record["currencyCode"]) == ("106001", "V10000", "NWM01", "NWM01", "EUR")
    assert record["invoicingSupplierCode"] is None  # same as the supplier
    assert record["created"] == "2026-11-02"


def test_a_line_maps_to_a_matching_order_line_with_quantities_and_prices():
    record = map_line(LINE, ORDER)
    assert LINE_REQUIRED <= set(record)
    assert record["externalCode"] == LINE["id"].lower()
    assert record["orderExternalCode"] == ORDER["id"].lower()
    assert (record["lineNumber"], record["matchingMode"], record["quantity"], record["netPrice"],
            record["netSum"], record["grossSum"]) == ("10000", "Standard", Decimal("400"), Decimal("12.5"),
                                                      Decimal("5000"), Decimal("6250"))


def test_comment_lines_and_lines_without_quantity_are_not_sent():
    assert map_line({**LINE, "lineType": "Comment", "quantity": 0}, ORDER) is None
    assert map_line({**LINE, "quantity": Decimal("0")}, ORDER) is None


def test_records_are_valid_against_basware_schema():
    openapi = pytest.importorskip("sandbox.openapi")
    assert openapi.validate("POST /v1/matchingOrders", _wire([map_order(ORDER, "NWM01")])) == []
    gone = deleted_line({"RowKey": "line-1", "order": "order-1", "line_number": "20000", "quantity": "3"})
    assert openapi.validate("POST /v1/matchingOrderLines", _wire([map_line(LINE, ORDER), gone])) == []


def test_the_content_hash_ignores_key_order_and_number_spelling_but_not_content():
    record = map_line(LINE, ORDER)
    shuffled = dict(reversed(list(record.items())))
    assert content_hash(record) == content_hash(shuffled)
    assert content_hash({**record, "quantity": Decimal("400.00")}) == content_hash(record)
    assert content_hash({**record, "quantity": Decimal("401")}) != content_hash(record)


def test_batches_respect_the_limit():
    assert [len(b) for b in batches(list(range(250)), 100)] == [100, 100, 50]
    assert list(batches([], 100)) == []
