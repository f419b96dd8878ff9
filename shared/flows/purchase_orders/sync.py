"""Purchase orders, BC -> Basware matching orders (Basware P2P API: POST /v1/matchingOrders and
/v1/matchingOrderLines, read back through GET /v1/requestStatus/{requestId}).

BC's webhook subscriptions do not cover purchase orders (Microsoft Learn, "Working with webhooks in
Dynamics 365 Business Central": the supported entities list has no purchaseOrders), so the
`PO_SYNC_SCHEDULE` timer reads, per mapped company, the released orders (`status eq 'Open'` in
API v2.0) changed since the watermark, with their lines, and imports them:

- headers -> `POST /v1/matchingOrders` (500 per request), lines -> `POST /v1/matchingOrderLines`
  (100 per request), headers first (Basware needs the header before its lines);
- external codes are BC's ids (order id, line id): stable across edits, unique per tenant;
- only changed records are sent: a content hash per record in `syncstate`
  (`hash-matchingOrder-<company>`, `hash-matchingOrderLine-<company>`), saved after Basware took the
  batch and its requestStatus showed no error for the record; a line that disappeared from BC is
  sent once more with `isDeleted: true`;
- the watermark (BC's `lastModifiedDateTime`) moves only after the orders were imported, and
  not past an order Basware rejected, so that one is read again next time.

Orders that are reopened in BC (status back to `Draft`) keep their last imported state in
Basware until they are released again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterable

from shared.clients.basware_imports import Posted, classify, post_batch, wait_for_status
from shared.core.errors import ConnectorError, PermanentError
from shared.store.jobs import job_id, utcnow
from shared.flows.payments.respond import iso_ms, parse_time
from shared.store.syncstate import RecordRows, Watermarks
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.purchase_orders")

KIND = "purchaseorder"
SOURCE_SYSTEM = "Business Central"
ORDERS_PATH, ORDER_BATCH = "/v1/matchingOrders", 500
LINES_PATH, LINE_BATCH = "/v1/matchingOrderLines", 100
CHUNK = 100  # orders read and imported together
OVERLAP = timedelta(minutes=5)
ORDER_HASHES = "hash-matchingOrder-{company}"
LINE_HASHES = "hash-matchingOrderLine-{company}"


# -- pure mapping ------------------------------------------------------------------------------------
def _text(value: Any, limit: int) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text[:limit] or None


def _num(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _date(value: Any) -> str | None:
    text = str(value or "")[:10]
    return None if not text or text.startswith("0001") else text


def map_order(order: dict, company_code: str) -> dict:
    """BC purchaseOrder -> Basware OrderEntity (the schema's required fields and what BC knows)."""
    supplier = order.get("vendorNumber")
    pay_to = order.get("payToVendorNumber")
    return {
        "externalCode": str(order["id"]).lower(),
        "orderNumber": _text(order.get("number"), 100),
        "sourceSystem": SOURCE_SYSTEM,
        "companyCode": company_code,
        "organizationElementCode": company_code,
        "currencyCode": _text(order.get("currencyCode"), 3),
        "supplierCode": _text(supplier, 25),
        "supplierName": _text(order.get("vendorName"), 250),
        "invoicingSupplierCode": _text(pay_to, 25) if pay_to and pay_to != supplier else None,
        "invoicingSupplierName": _text(order.get("payToName"), 250) if pay_to and pay_to != supplier else None,
        "created": _date(order.get("orderDate")),
        "requestedDeliveryDate": _date(order.get("requestedReceiptDate")),
        "isClosed": False,
        "isDelivered": bool(order.get("fullyReceived")),
    }


def map_line(line: dict, order: dict) -> dict | None:
    """BC purchaseOrderLine -> Basware OrderLineEntity; None for lines Basware cannot match
    (comments, zero or negative quantities)."""
    quantity = _num(line.get("quantity"))
    if line.get("lineType") == "Comment" or quantity is None or quantity <= 0:
        return None
    uom = _text(line.get("unitOfMeasureCode"), 25)
    return {
        "externalCode": str(line["id"]).lower(),
        "orderExternalCode": str(order["id"]).lower(),
        "lineNumber": str(line.get("sequence")),
        "sortNumber": int(line.get("sequence") or 0),
        "matchingMode": "Standard",
        "quantity": quantity,
        "netPrice": _num(line.get("directUnitCost")),
        "netSum": _num(line.get("amountExcludingTax")),
        "grossSum": _num(line.get("amountIncludingTax")),
        "taxSum": _num(line.get("totalTaxAmount")),
        "taxPercent": _num(line.get("taxPercent")),
        "taxCode": _text(line.get("taxCode"), 25),
        "currencyCode": _text(order.get("currencyCode"), 3),
        "uom": uom,
        "priceUnit": uom,
        "productCode": _text(line.get("lineObjectNumber"), 250),
        "description": _text(line.get("description"), 1000),
        "requestedDeliveryDate": _date(line.get("expectedReceiptDate")),
        "isReceiptRequired": False,
        "isReceiptBasedMatching": False,
        "isClosed": False,
        "isDeleted": False,
    }


def deleted_line(previous: dict) -> dict:
    """A line gone from BC, sent once more as deleted (Basware keeps lines; best-fit needs isDeleted)."""
    return {"externalCode": previous["RowKey"], "orderExternalCode": previous["order"],
            "lineNumber": previous["line_number"], "matchingMode": "Standard",
            "quantity": Decimal(str(previous["quantity"])), "isDeleted": True}


def content_hash(record: dict) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"),
                           default=lambda v: format(v.normalize(), "f") if isinstance(v, Decimal) else str(v))
    return hashlib.sha256(canonical.encode()).hexdigest()


def batches(records: list[dict], size: int) -> Iterable[list[dict]]:
    for start in range(0, len(records), size):
        yield records[start:start + size]


# -- the sync ------------------------------------------------------------------------------------------------
@dataclass
class CompanyResult:
    orders_read: int = 0
    orders_sent: int = 0
    lines_sent: int = 0
    rejected: list[str] = field(default_factory=list)


def import_batch(rt: Runtime, path: str, records: list[dict], jid: str, *, stamp: str, status_wait: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> set[str]:
    """POST one batch; the externalCodes not confirmed: refused (the whole request, or the record in
    requestStatus) or still unknown when `status_wait` ran out. Those keep no hash: sent again.

    Every record goes out with `lastUpdated` = this run's time: Basware keeps a record it refused and
    skips an identical resend as NotProcessed (Basware P2P FAQ; P2P OpenAPI, ProcessedItem), so a
    retry must differ. Only changed records are sent at all (our hashes leave `lastUpdated` out), so
    nothing else is resent."""
    codes = [r["externalCode"] for r in records]
    try:
        posted = post_batch(rt.basware, path, [{**r, "lastUpdated": stamp} for r in records])
    except PermanentError as exc:
        posted = Posted(exc.correlation_id, exc.status or 400, [{"message": exc.summary()}])
    if posted.errors is not None:  # one bad batch must not stop the others
        rt.audit.record(jid, "import", "rejected", f"Basware refused {len(records)} record(s) at {path}: "
                        + "; ".join(str(e.get("message")) for e in posted.errors[:5])[:1000], kind=KIND,
                        http_status=posted.status, correlation_id=posted.request_id)
        return set(codes)
    if not posted.request_id:
        return set()
    status = wait_for_status(rt.basware, posted.request_id, wait=status_wait, first_poll=0.1, max_poll=1.0,
                             sleep=sleep)
    if status is None:
        rt.audit.record(jid, "import", "unconfirmed", f"requestStatus {posted.request_id} could not be read; the "
                        f"{len(records)} record(s) at {path} are sent again next run", kind=KIND,
                        correlation_id=posted.request_id)
        return set(codes)
    outcome = classify(status, codes)
    if outcome.refused:
        errors = [f"{c}: " + "; ".join(str(e.get("message")) for e in errs)[:300]
                  for c, errs in sorted(outcome.refused.items())]
        rt.audit.record(jid, "import", "rejected", f"Basware refused {len(outcome.refused)} of {len(records)} "
                        f"record(s) at {path} (request {posted.request_id}): " + " | ".join(errors[:10]), kind=KIND,
                        correlation_id=posted.request_id)
    if outcome.waiting:
        rt.audit.record(jid, "import", "unconfirmed", f"{len(outcome.waiting)} record(s) at {path} not confirmed "
                        f"yet (requestStatus {status.request_status}); they are sent again next run", kind=KIND,
                        correlation_id=posted.request_id)
    return set(outcome.refused) | set(outcome.waiting)


def sync_purchase_orders(rt: Runtime, now: datetime | None = None, *, full_scan: bool = False,
                         status_wait: float = 5.0) -> dict[str, CompanyResult]:
    """Per mapped company: import released orders changed since the watermark (`full_scan`: read
    every released order; unchanged ones are still not sent)."""
    now = now or utcnow()
    results: dict[str, CompanyResult] = {}
    for company_id in rt.settings.bc_companies():
        jid = job_id(KIND, company_id)
        codes = rt.settings.basware_companies_for(company_id)
        if not codes:
            rt.audit.record(jid, "sync", "skipped", f"no Basware companyCode maps to BC company {company_id} "
                            "(COMPANY_MAP): purchase orders not imported", kind=KIND)
            continue
        try:
            results[company_id] = _sync_company(rt, company_id, codes[0], jid, full_scan, status_wait, iso_ms(now))
        except ConnectorError as exc:
            rt.audit.record(jid, "sync", "failed", f"purchase-order sync stopped: {exc.summary()}", kind=KIND,
                            http_status=exc.status, correlation_id=exc.correlation_id)
            raise
    return results


def _sync_company(rt: Runtime, company_id: str, company_code: str, jid: str, full_scan: bool,
                  status_wait: float, stamp: str) -> CompanyResult:
    result = CompanyResult()
    key = f"purchaseorders-{company_id}"
    watermarks = Watermarks(rt.storage)
    mark = None if full_scan else parse_time(watermarks.get(key))
    flt = "status eq 'Open'" + (f" and lastModifiedDateTime gt {iso_ms(mark - OVERLAP)}" if mark else "")
    order_hashes = RecordRows(rt.storage, ORDER_HASHES.format(company=company_id)).load()
    line_hashes = RecordRows(rt.storage, LINE_HASHES.format(company=company_id)).load()
    lines_by_order: dict[str, dict[str, dict]] = {}
    for row in line_hashes.values():
        lines_by_order.setdefault(row.get("order", ""), {})[row["RowKey"]] = row

    newest, oldest_rejected = mark, None
    chunk: list[dict] = []
    orders = rt.bc.iterate(rt.bc.company_path(company_id, "purchaseOrders"), filter=flt,
                           expand="purchaseOrderLines", page_size=CHUNK)
    for order in [*orders, None]:
        if order is not None:
            result.orders_read += 1
            chunk.append(order)
            seen = parse_time(order.get("lastModifiedDateTime"))
            if seen and (newest is None or seen > newest):
                newest = seen
            if len(chunk) < CHUNK:
                continue
        if chunk:
            for rejected in _import_chunk(rt, company_id, company_code, chunk, order_hashes, lines_by_order,
                                          jid, result, status_wait, stamp):
                seen = parse_time(rejected.get("lastModifiedDateTime"))
                if seen and (oldest_rejected is None or seen < oldest_rejected):
                    oldest_rejected = seen
            chunk = []
    if oldest_rejected is not None:
        newest = min(newest, oldest_rejected - timedelta(milliseconds=1)) if newest else None
    if newest and newest != mark:
        watermarks.set(key, iso_ms(newest))
    if result.orders_sent or result.lines_sent or result.rejected:
        rt.audit.record(jid, "sync", "ok" if not result.rejected else "partial",
                        f"{result.orders_read} order(s) read, {result.orders_sent} header(s) and "
                        f"{result.lines_sent} line(s) imported into Basware as {company_code}"
                        + (f"; rejected: {', '.join(result.rejected[:20])}" if result.rejected else ""), kind=KIND)
    log.info("event=purchaseorders.sync company=%s read=%d orders=%d lines=%d rejected=%d", company_id,
             result.orders_read, result.orders_sent, result.lines_sent, len(result.rejected))
    return result


def _import_chunk(rt: Runtime, company_id: str, company_code: str, orders: list[dict], order_hashes: dict[str, dict],
                  lines_by_order: dict[str, dict[str, dict]], jid: str, result: CompanyResult,
                  status_wait: float, stamp: str) -> list[dict]:
    """Import what changed in these orders; returns the orders Basware rejected (header or a line)."""
    headers: list[tuple[dict, str, dict]] = []          # (record, hash, bc order)
    lines: list[tuple[dict, str, dict, dict]] = []      # (record, hash, bc order, stored row fields)
    for order in orders:
        record = map_order(order, company_code)
        digest = content_hash(record)
        if order_hashes.get(record["externalCode"], {}).get("hash") != digest:
            headers.append((record, digest, order))
        current = set()
        known = lines_by_order.get(record["externalCode"], {})
        for line in order.get("purchaseOrderLines") or []:
            mapped = map_line(line, order)
            if mapped is None:
                continue
            current.add(mapped["externalCode"])
            line_digest = content_hash(mapped)
            previous = known.get(mapped["externalCode"])
            if previous is None or previous.get("hash") != line_digest:
                lines.append((mapped, line_digest, order, {"order": record["externalCode"],
                                                           "line_number": mapped["lineNumber"],
                                                           "quantity": str(mapped["quantity"])}))
        for previous in known.values():
            if previous["RowKey"] not in current and not previous.get("deleted"):
                gone = deleted_line(previous)
                lines.append((gone, content_hash(gone), order, {"order": previous["order"],
                                                                "line_number": previous["line_number"],
                                                                "quantity": previous["quantity"],
                                                                "deleted": True}))
    bad_orders: set[str] = set()
    for batch in batches(headers, ORDER_BATCH):
        rejected = import_batch(rt, ORDERS_PATH, [r for r, _, _ in batch], jid, stamp=stamp,
                                status_wait=status_wait)
        rows = []
        for record, digest, _ in batch:
            if record["externalCode"] in rejected:
                bad_orders.add(record["externalCode"])
                continue
            rows.append({"PartitionKey": ORDER_HASHES.format(company=company_id), "RowKey": record["externalCode"],
                         "hash": digest, "order_number": record["orderNumber"]})
        RecordRows(rt.storage, ORDER_HASHES.format(company=company_id)).save(rows)
        order_hashes.update((row["RowKey"], row) for row in rows)
        result.orders_sent += len(rows)
    sendable = [entry for entry in lines if entry[0]["orderExternalCode"] not in bad_orders]
    for batch in batches(sendable, LINE_BATCH):
        rejected = import_batch(rt, LINES_PATH, [r for r, _, _, _ in batch], jid, stamp=stamp,
                                status_wait=status_wait)
        rows = []
        for record, digest, order, fields in batch:
            if record["externalCode"] in rejected:
                bad_orders.add(record["orderExternalCode"])
                continue
            rows.append({"PartitionKey": LINE_HASHES.format(company=company_id), "RowKey": record["externalCode"],
                         "hash": digest, "deleted": bool(fields.get("deleted")), **fields})
        RecordRows(rt.storage, LINE_HASHES.format(company=company_id)).save(rows)
        for row in rows:
            lines_by_order.setdefault(row["order"], {})[row["RowKey"]] = row
        result.lines_sent += len(rows)
    rejected_orders = [o for o in orders if str(o["id"]).lower() in bad_orders]
    result.rejected.extend(str(o.get("number")) for o in rejected_orders)
    return rejected_orders
