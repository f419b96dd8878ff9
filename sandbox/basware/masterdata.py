"""Master-data imports and requestStatus (Basware P2P OpenAPI: the master-data POSTs and GET /v1/requestStatus).

Two steps, like the real API: the POST validates the body against Basware's OpenAPI schema (a
synchronous 400 listing the problems) and answers 200 with the array echoed and the request id in
`x-amzn-RequestId`; what "P2P" made of each record is read back at `GET /v1/requestStatus/{id}`.

Item statuses: `NotProcessed` when the record is identical to the one stored under its
externalCode (canonical JSON; a null counts as "not sent", as the API treats it), else `Success`,
or `Error` (category DataValidation) for the business rules below. Records are stored in the
API layer even when P2P refused them, so an unchanged resend of a refused record is
`NotProcessed`, the trap the FAQ describes.

Business rules modelled (each from the Basware P2P OpenAPI or the Basware P2P FAQ): company codes
must exist in P2P; vendor currencies must be active; a vendor's bank accounts must be unique;
record codes are unique per company across externalCodes; generic lists have list-specific columns
and text lengths; a matching order's supplier must exist in P2P; an order line needs its order
header first.
"""
from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sandbox import openapi
from sandbox.common import Request, Response

from . import errors as E
from .clock import Clock, iso, parse_datetime


@dataclass(frozen=True)
class Entity:
    name: str  # attribute / store name
    path: str  # route pattern
    limit: int  # records per request (spec info block and operation notes)
    entity_type: str  # requestStatus entityType
    code_field: str | None  # record code unique per company
    version: str = "v1"


ENTITIES = {e.name: e for e in [
    Entity("vendors", "/v1/vendors", 200, "Vendor", "vendorCode"),
    Entity("accounts", "/v1/accounts", 500, "Account", "accountCode"),
    Entity("costCenters", "/v1/costCenters", 500, "CostCenter", "costCenterCode"),
    Entity("lists", "/v1/lists/{listKey}", 500, "GenericList", None),
    Entity("projects", "/v2/projects", 500, "Project", "projectCode", "v2"),
    Entity("matchingOrders", "/v1/matchingOrders", 500, "MatchingOrder", None),
    Entity("matchingOrderLines", "/v1/matchingOrderLines", 100, "MatchingOrderLine", None),
]}


def _list_keys() -> dict[str, tuple[int, int, int, int]]:
    """listKey -> (text columns, text length, number columns, date columns), from the POST lists notes."""
    out = {}
    for i in range(1, 36):
        out[f"ACC_LIST_{i}"] = ((5, 250, 3, 0) if i <= 10 else (5, 50, 3, 0) if i <= 20 else
                                (10, 250, 5, 5) if i <= 30 else (25, 250, 10, 10))
    for i in range(1, 21):
        out[f"INV_LIST_{i}"] = (5, 250, 0, 0) if i <= 10 else (10, 250, 5, 5)
    for i in range(1, 6):
        out[f"CUST_RESOLVER_{i}"] = (15, 250, 15, 15)
    return out


LIST_KEYS = _list_keys()
_COLUMN = re.compile(r"^(text|number|dateValue)_(\d+)$")


def canonical(value: Any) -> str:
    """Canonical JSON for the "identical record" check: sorted keys, nulls dropped, numbers normalised."""
    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: norm(x) for k, x in sorted(v.items()) if x is not None}
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float, Decimal)):
            d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
            return {"#n": format(d.normalize(), "f")}
        return v
    return json.dumps(norm(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class ImportStore:
    clock: Clock
    records: dict[str, dict[str, dict]] = field(default_factory=dict)  # entity (or list key) -> extCode -> record
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    statuses: dict[str, dict[str, str]] = field(default_factory=dict)  # last P2P item status per record
    requests: dict[str, dict] = field(default_factory=dict)  # requestId -> requestStatus entry (+ _created)
    code_index: dict[str, dict[tuple, str]] = field(default_factory=dict)  # entity -> (company, code) -> extCode
    pending_errors: int = 0  # fault knob: N records of the next import come back Error
    pending_error_message: str = "Injected error: record could not be saved in P2P"
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def bucket(self, store_key: str) -> dict[str, dict]:
        return self.records.setdefault(store_key, {})


def _companies(record: dict) -> list[str]:
    codes = [c.get("companyCode") for c in (record.get("companies") or []) if isinstance(c, dict)]
    if isinstance(record.get("companyCode"), str):
        codes.append(record["companyCode"])
    return [c for c in codes if c]


class MasterDataApi:
    def __init__(self, app, store: ImportStore) -> None:
        self.app = app
        self.store = store

    def register(self) -> None:
        for entity in ENTITIES.values():
            self.app.add_route("POST", entity.path, lambda req, e=entity: self.import_records(req, e))
        self.app.add_route("GET", "/v1/requestStatus/{requestId}", self.get_request_status)
        self.app.add_route("GET", "/v1/requestStatus", self.list_request_status)
        self.app.add_route("POST", "/v1/requestStatus/acknowledge", self.acknowledge_request_status)

    def _fail(self, status, code, messages, external_codes=None) -> Response:
        return E.entity_list(status, code, messages, self.app.request_id(), external_codes)

    # -- POST ------------------------------------------------------------------------------------------
    def import_records(self, req: Request, entity: Entity) -> Response:
        cfg = self.app.config
        if len(req.body) > cfg.max_request_bytes:
            return self._fail(413, "PARAMETER_VALIDATION_ERROR",
                              f"Request is {len(req.body)} bytes; each request is limited to 6 MB "
                              f"({cfg.max_request_bytes} bytes). Split the records over several requests.")
        list_key = req.params.get("listKey")
        if list_key is not None and list_key not in LIST_KEYS:
            return self._fail(400, "PARAMETER_VALIDATION_ERROR",
                              f"listKey '{list_key}' is not valid; use ACC_LIST_1..35, INV_LIST_1..20 or "
                              "CUST_RESOLVER_1..5")
        try:
            records = req.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return self._fail(400, "SCHEMA_VALIDATION_ERROR", f"Request body is not valid JSON: {exc}")
        if not isinstance(records, list):
            return self._fail(400, "SCHEMA_VALIDATION_ERROR", "Request body must be a JSON array of records.")
        if not records:
            return self._fail(400, "SCHEMA_VALIDATION_ERROR", "Request body contains no records.")
        if len(records) > entity.limit:
            return self._fail(400, "SCHEMA_VALIDATION_ERROR",
                              f"{len(records)} records sent; at most {entity.limit} {entity.name} records can be "
                              "sent in one request.")
        problems = openapi.validate(f"POST {entity.path}", records)
        if problems:
            return self._fail(400, "SCHEMA_VALIDATION_ERROR", problems,
                              [self._external_code(records, p) for p in problems])
        seen: dict[str, int] = {}
        duplicates = []
        for record in records:
            ext = record["externalCode"]
            seen[ext] = seen.get(ext, 0) + 1
            if seen[ext] == 2:
                duplicates.append(ext)
        if duplicates:
            return self._fail(400, "SCHEMA_VALIDATION_ERROR",
                              [f"externalCode {ext} appears {seen[ext]} times in the request; externalCode must be "
                               "unique" for ext in duplicates], duplicates)
        request_id = self.app.request_id()
        items = self._store(entity, list_key, records)
        now = iso(self.store.clock.stamp())
        entry = {"requestId": request_id, "entityType": entity.entity_type, "entityVersion": entity.version,
                 "requestStatus": "Error" if any(i["status"] == "Error" for i in items) else "Success",
                 "changedBy": req.principal, "operationType": "POST", "genericListKey": list_key,
                 "lastUpdated": now,
                 "systems": [{"system": "P2P", "module": None, "lastUpdated": now, "items": items}],
                 "_created": self.store.clock.time()}
        entry["systems"][0]["systemStatus"] = entry["requestStatus"]
        with self.store._lock:
            self.store.requests[request_id] = entry
        return Response.json(records, headers={"x-amzn-RequestId": request_id})

    @staticmethod
    def _external_code(records: list, problem: str) -> str | None:
        m = re.match(r"^\[(\d+)\]", problem)
        if m and int(m.group(1)) < len(records) and isinstance(records[int(m.group(1))], dict):
            ext = records[int(m.group(1))].get("externalCode")
            return ext if isinstance(ext, str) else None
        return None

    def _store(self, entity: Entity, list_key: str | None, records: list[dict]) -> list[dict]:
        store_key = f"lists:{list_key}" if list_key else entity.name
        items = []
        with self.app.lock:
            bucket = self.store.bucket(store_key)
            hashes = self.store.hashes.setdefault(store_key, {})
            statuses = self.store.statuses.setdefault(store_key, {})
            inject, self.store.pending_errors = self.store.pending_errors, 0  # applies to this import only
            for record in records:
                ext = record["externalCode"]
                digest = canonical(record)
                if hashes.get(ext) == digest:
                    items.append({"externalCode": ext, "parentExternalCode": None, "status": "NotProcessed",
                                  "errors": []})
                    continue
                errors = self._business_errors(entity, list_key, record)
                if inject > 0:
                    inject -= 1
                    errors = errors + [self.store.pending_error_message]
                status = "Error" if errors else "Success"
                if entity.code_field:
                    self._reindex(entity, bucket.get(ext), record if status != "Error" else None, ext)
                bucket[ext] = copy.deepcopy(record)
                hashes[ext] = digest
                statuses[ext] = status
                items.append({"externalCode": ext, "parentExternalCode": record.get("orderExternalCode"),
                              "status": status,
                              "errors": [{"type": "Error", "message": m, "category": "DataValidation"}
                                         for m in errors]})
        return items

    def _reindex(self, entity: Entity, old: dict | None, new: dict | None, ext: str) -> None:
        """(company, record code) -> externalCode of the record P2P holds, for the uniqueness rule."""
        index = self.store.code_index.setdefault(entity.name, {})
        if old is not None:
            for company in _companies(old):
                if index.get((company, old.get(entity.code_field))) == ext:
                    del index[(company, old.get(entity.code_field))]
        if new is not None:
            for company in _companies(new):
                index.setdefault((company, new.get(entity.code_field)), ext)

    # -- business rules (what P2P refuses after the API layer accepted the record) ----------------------
    def _business_errors(self, entity: Entity, list_key: str | None, record: dict) -> list[str]:
        cfg = self.app.config
        errors = []
        known_companies = set(cfg.companies)
        for company in _companies(record):
            if company not in known_companies:
                errors.append(f"Record skipped due to wrong or missing CompanyCode: company {company} does not "
                              "exist in P2P")
        if entity.code_field:
            code = record.get(entity.code_field)
            index = self.store.code_index.get(entity.name, {})
            for company in sorted(set(_companies(record))):
                other_ext = index.get((company, code))
                if other_ext is not None and other_ext != record["externalCode"]:
                    errors.append(f"{entity.code_field} {code} already exists in company {company} under "
                                  f"externalCode {other_ext}; record codes must be unique within a company")
                    break
        if entity.name == "vendors":
            errors += self._vendor_errors(record)
        elif entity.name == "lists":
            errors += self._list_errors(list_key, record)
        elif entity.name == "matchingOrders":
            supplier = record["supplierCode"]
            imported = (record["companyCode"], supplier) in self.store.code_index.get("vendors", {})
            if supplier not in self.app.seed_vendor_codes and not imported:
                errors.append(f"Vendor {supplier} not found in P2P company {record['companyCode']}; import the "
                              "vendor before its orders")
        elif entity.name == "matchingOrderLines":
            order_status = self.store.statuses.get("matchingOrders", {}).get(record["orderExternalCode"])
            if order_status in (None, "Error"):  # P2P holds no such order
                errors.append(f"Order header {record['orderExternalCode']} not found; POST it to matchingOrders "
                              "before its lines")
        return errors

    def _vendor_errors(self, record: dict) -> list[str]:
        active = set(self.app.config.active_currencies)
        errors = []
        currencies = []
        accounts = []
        for means in record.get("paymentMeans") or []:
            if means.get("currencyCode"):
                currencies.append(means["currencyCode"])
            for fin in means.get("financialAccounts") or []:
                for ident in fin.get("financialAccountIdentifiers") or []:
                    if ident.get("currencyCode"):
                        currencies.append(ident["currencyCode"])
                    if ident.get("id"):
                        accounts.append(re.sub(r"\s+", "", ident["id"]).upper())
        for currency in sorted(set(currencies)):
            if currency not in active:
                errors.append(f"Currency {currency} is not active in P2P")
        dupes = sorted({a for a in accounts if accounts.count(a) > 1})
        if dupes:
            errors.append(f"Bank account {dupes[0]} appears more than once on the vendor; each bank account must "
                          "be unique")
        return errors

    @staticmethod
    def _list_errors(list_key: str, record: dict) -> list[str]:
        texts, text_len, numbers, dates = LIST_KEYS[list_key]
        limits = {"text": texts, "number": numbers, "dateValue": dates}
        errors = []
        for key, value in record.items():
            m = _COLUMN.match(key)
            if not m or value is None:
                continue
            kind, index = m.group(1), int(m.group(2))
            if index > limits[kind]:
                errors.append(f"{list_key} has no column {key} (it has text_1..{texts}"
                              + (f", number_1..{numbers}" if numbers else "")
                              + (f", dateValue_1..{dates}" if dates else "") + ")")
            elif kind == "text" and len(value) > text_len:
                errors.append(f"{key} is {len(value)} characters; {list_key} allows {text_len}")
        return errors

    # -- requestStatus ---------------------------------------------------------------------------------
    def view(self, entry: dict, system: str | None = None, ignore_successful: bool = False) -> dict:
        cfg = self.app.config
        out = copy.deepcopy({k: v for k, v in entry.items() if not k.startswith("_")})
        if self.store.clock.time() - entry["_created"] < cfg.request_status_delay:
            out["requestStatus"] = "InProgress"
            for sys_ in out["systems"]:
                sys_["systemStatus"] = "InProgress"
                for item in sys_["items"]:
                    item["status"], item["errors"] = "InProgress", []
        if system:
            out["systems"] = [s for s in out["systems"] if (s.get("system") or "").lower() == system.lower()]
        if ignore_successful:
            for sys_ in out["systems"]:
                sys_["items"] = [i for i in sys_["items"] if i["status"] != "Success"]
        return out

    def get_request_status(self, req: Request) -> Response:
        with self.store._lock:
            entry = self.store.requests.get(req.params["requestId"])
        if entry is None:
            return self._fail(404, "ENTITY_NOT_FOUND", f"Request {req.params['requestId']} was not found.")
        ignore = (req.q("ignoreSuccessfulItems") or req.q("ignoreSuccessfullItems") or "").lower() == "true"
        return Response.json({"requestStatus": [self.view(entry, req.q("system"), ignore)]})

    def list_request_status(self, req: Request) -> Response:
        entity_type, system = req.q("entityType"), req.q("system")
        status = req.q("status") or (None if entity_type or system else "Error")
        try:
            page_size = int(req.q("pageSize", "500"))
        except ValueError:
            page_size = 0
        if not 1 <= page_size <= 500:
            return self._fail(400, "PARAMETER_VALIDATION_ERROR", "pageSize must be an integer between 1 and 500")
        since = None
        if req.q("lastUpdated"):
            try:
                since = parse_datetime(req.q("lastUpdated"))
            except ValueError:
                return self._fail(400, "PARAMETER_VALIDATION_ERROR", "lastUpdated is not a valid date-time")
        ignore = (req.q("ignoreSuccessfullItems") or req.q("ignoreSuccessfulItems") or "").lower() == "true"
        with self.store._lock:
            entries = list(self.store.requests.values())
        out = []
        for entry in entries:
            view = self.view(entry, system, ignore)
            if status and view["requestStatus"] != status:
                continue
            if entity_type and view["entityType"] != entity_type:
                continue
            if system and not view["systems"]:
                continue
            if since and parse_datetime(view["lastUpdated"]) <= since:
                continue
            out.append(view)
        if not out:
            return self._fail(404, "ENTITY_NOT_FOUND", "Request was successful and no records were found.")
        return Response.json({"requestStatus": out[:page_size]})

    def acknowledge_request_status(self, req: Request) -> Response:
        body = req.json()
        problems = openapi.validate("ProcessingStatusGetBatchRequest", body)
        if problems:
            return self._fail(400, "SCHEMA_VALIDATION_ERROR", problems)
        ids = body.get("requestIds") or []
        with self.store._lock:
            missing = [i for i in ids if i not in self.store.requests]
            if missing:
                return self._fail(404, "ENTITY_NOT_FOUND", [f"Request {i} was not found." for i in missing])
            done = [i for i in ids if self.store.requests[i]["requestStatus"].startswith("Acknowledged")]
            if done:
                return self._fail(405, "METHOD_NOT_ALLOWED", [f"Request {i} is already acknowledged." for i in done])
            for i in ids:
                entry = self.store.requests[i]
                entry["requestStatus"] = "Acknowledged" + entry["requestStatus"]
                for sys_ in entry["systems"]:
                    sys_["systemStatus"] = entry["requestStatus"]
        return Response.json("Success")
