"""Purchase orders, BC -> Basware matching orders: stable codes, only changes, batch limits."""
from __future__ import annotations

import json
from decimal import Decimal


from shared.flows.purchase_orders.sync import batches, content_hash, deleted_line, map_line, map_order

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
    from sandbox import openapi

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


# -- against the sandboxes (real HTTP) and a fresh Azurite -----------------------------------------------
from sandbox import seed  # noqa: E402
from shared.store.jobs import job_id  # noqa: E402
from shared.flows.purchase_orders.sync import sync_purchase_orders  # noqa: E402


def _open_orders(bc_sandbox) -> dict[str, dict]:
    return {o["id"]: o for o in bc_sandbox.company.orders.values() if o["status"] == "Open"}


def _line(number: str, quantity, cost, line_type="Account", description=None) -> dict:
    return {"lineType": line_type, "lineObjectNumber": number, "description": description or f"{number} service",
            "quantity": quantity, "directUnitCost": cost}


def test_released_bc_orders_and_their_lines_appear_in_basware_matching_orders(rt, basware_sandbox, bc_sandbox):
    result = sync_purchase_orders(rt)[seed.COMPANY_ID]
    orders = basware_sandbox.matching_orders
    assert set(orders) == set(_open_orders(bc_sandbox))  # Draft and In Review orders are not offered
    for order_id, bc_order in _open_orders(bc_sandbox).items():
        record = orders[order_id]
        assert (record["orderNumber"], record["supplierCode"], record["companyCode"], record["currencyCode"]) == \
            (bc_order["number"], bc_order["vendorNumber"], seed.COMPANY_CODE, "EUR")
        assert basware_sandbox.item_status("matchingOrders", order_id) == "Success"
        lines = [ln for ln in basware_sandbox.matching_order_lines.values() if ln["orderExternalCode"] == order_id]
        assert sorted((ln["lineNumber"], Decimal(str(ln["quantity"]))) for ln in lines) == \
            sorted((str(ln["sequence"]), Decimal(str(ln["quantity"]))) for ln in bc_order["_lines"])
    assert result.rejected == []

    new = bc_sandbox.add_purchase_order("V10040", [_line("6130", 1, "820.00"), _line("6230", 3, "150.00")])
    sync_purchase_orders(rt)
    assert basware_sandbox.matching_orders[new["id"]]["orderNumber"] == new["number"]
    new_lines = [ln for ln in basware_sandbox.matching_order_lines.values() if ln["orderExternalCode"] == new["id"]]
    assert sorted(Decimal(str(ln["netSum"])) for ln in new_lines) == [Decimal("450.00"), Decimal("820.00")]


def test_an_unchanged_order_is_not_sent_again(rt, basware_sandbox, bc_sandbox):
    sync_purchase_orders(rt)
    before = len(basware_sandbox.calls.since(0))
    bc_sandbox.clock.advance(60)
    sync_purchase_orders(rt)                  # nothing changed since the watermark
    sync_purchase_orders(rt, full_scan=True)  # every order read again: the hashes still say unchanged
    posts = [c for c in basware_sandbox.calls.since(0)[before:] if c.method == "POST" and "matching" in c.path]
    assert posts == []


def test_a_changed_order_sends_only_what_changed_and_a_removed_line_as_deleted(rt, basware_sandbox, bc_sandbox):
    order = bc_sandbox.add_purchase_order("V10050", [_line("6130", 1, "100.00"), _line("6200", 2, "10.00"),
                                                     _line("6210", 1, "55.00")])
    sync_purchase_orders(rt)
    mark = basware_sandbox.calls.since(0)[-1].seq
    kept = [{**_line("6130", 1, "100.00")}, {**_line("6200", 5, "10.00")}]  # qty 2 -> 5, the third line removed
    bc_sandbox.set_purchase_order(order["id"], lines=kept)
    sync_purchase_orders(rt)
    calls = [c for c in basware_sandbox.calls.since(mark) if c.method == "POST" and "matching" in c.path]
    assert [c.path for c in calls] == ["/v1/matchingOrderLines"]  # the header did not change
    sent = {(r["lineNumber"], r.get("isDeleted")) for r in calls[0].body}
    assert sent == {("20000", False), ("30000", True)}
    line_20000 = next(ln for ln in basware_sandbox.matching_order_lines.values()
                      if ln["orderExternalCode"] == order["id"] and ln["lineNumber"] == "20000")
    assert Decimal(str(line_20000["quantity"])) == 5


def test_lines_go_in_batches_of_at_most_100(rt, basware_sandbox, bc_sandbox):
    sync_purchase_orders(rt)  # the seeded orders first
    mark = basware_sandbox.calls.since(0)[-1].seq
    order = bc_sandbox.add_purchase_order("V10060", [_line("6200", 1 + i % 3, "2.50") for i in range(250)])
    sync_purchase_orders(rt)
    sizes = [len(c.body) for c in basware_sandbox.calls.find(method="POST", path="/v1/matchingOrderLines$")
             if c.seq > mark]
    assert sizes == [100, 100, 50]
    assert sum(1 for ln in basware_sandbox.matching_order_lines.values() if ln["orderExternalCode"] == order["id"]) \
        == 250


def test_an_order_basware_refuses_is_reported_and_tried_again_next_run(rt, basware_sandbox, bc_sandbox):
    bc_sandbox.set_vendor("V77777", displayName="Newcomer Tools")  # in BC, not yet in Basware
    order = bc_sandbox.add_purchase_order("V77777", [_line("6200", 1, "99.00")])
    result = sync_purchase_orders(rt)[seed.COMPANY_ID]
    assert result.rejected == [order["number"]]
    assert basware_sandbox.item_status("matchingOrders", order["id"]) == "Error"
    trail = rt.audit.trail(job_id("purchaseorder", seed.COMPANY_ID))
    assert any(r["outcome"] == "rejected" and "V77777" in r["message"] for r in trail)
    # the vendor reaches Basware (master data), and the next run sends the order again on its own
    basware_sandbox.seed_vendor_codes = basware_sandbox.seed_vendor_codes | {"V77777"}
    result = sync_purchase_orders(rt)[seed.COMPANY_ID]
    assert result.rejected == []
    assert basware_sandbox.item_status("matchingOrders", order["id"]) == "Success"
    assert any(ln["orderExternalCode"] == order["id"] for ln in basware_sandbox.matching_order_lines.values())
