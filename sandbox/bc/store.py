"""State of one BC environment: the clock, ETags, companies and their master data.

Master-data records are plain dicts holding the API fields; keys starting with `_` are internal
(`_v` = the row version behind the ETag, `_blocked` = hidden flags that v2.0 does not expose).
"""
from __future__ import annotations

import base64
import itertools
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable

from sandbox import seed

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
LCY = seed.LCY


class Clock:
    """UTC wall clock that tests can move forward. `stamp()` never returns the same millisecond
    twice, so `lastModifiedDateTime gt <watermark>` polls never lose a change."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=self.offset)

    def stamp(self) -> datetime:
        with self._lock:
            now = self.now()
            now = now.replace(microsecond=now.microsecond // 1000 * 1000)
            if self._last is not None and now <= self._last:
                now = self._last + timedelta(milliseconds=1)
            self._last = now
            return now

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def iso(dt: datetime) -> str:
    """BC's datetime format: `2026-11-20T10:00:00.123Z`."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_versions = itertools.count(1_000_000)


def next_version() -> int:
    return next(_versions)


def etag_of(version: int) -> str:
    """A weak ETag in BC's form (base64 of `'<len>;<rowversion>;00;'`)."""
    raw = f"'{len(str(version))};{version};00;'".encode()
    return 'W/"' + base64.b64encode(raw).decode() + '"'


def public(record: dict) -> dict:
    out = {"@odata.etag": etag_of(record["_v"])}
    out.update((k, v) for k, v in record.items() if not k.startswith("_"))
    return out


def touch(record: dict, clock: Clock) -> None:
    record["_v"] = next_version()
    record["lastModifiedDateTime"] = iso(clock.stamp())


# -- generated bulk data (same shapes as seed.py) --------------------------------------------------
def bulk_accounts(count: int) -> list[dict]:
    """Many direct-posting G/L accounts (numbers 100000..), for benchmarks."""
    return [{"id": seed.stable_uuid("bulkaccount", str(100000 + i)), "number": str(100000 + i),
             "displayName": f"Bulk Expense {i}", "category": "Expense", "subCategory": "", "blocked": False,
             "accountType": "Posting", "directPosting": True, "netChange": 0} for i in range(count)]


def bulk_dimension_values(count: int, dimension_codes: list[str]) -> list[tuple[str, dict]]:
    """(dimension code, value) pairs spread round-robin over the given dimensions."""
    out = []
    for i in range(count):
        dim = dimension_codes[i % len(dimension_codes)]
        code = f"B{i:06d}"
        out.append((dim, {"id": seed.stable_uuid("bulkdimensionValue", dim, code), "code": code,
                          "displayName": f"Bulk {dim.title()} {i}"}))
    return out


class Company:
    """One company: master data indexed by id and by number/code; documents live in documents.py."""

    def __init__(self, company_id: str, name: str, clock: Clock) -> None:
        self.id = company_id
        self.name = name
        self.clock = clock
        self.created = iso(clock.stamp())
        self.vendors: dict[str, dict] = {}
        self.vendor_by_number: dict[str, dict] = {}
        self.accounts: dict[str, dict] = {}
        self.account_by_number: dict[str, dict] = {}
        self.dimensions: dict[str, dict] = {}
        self.dimension_by_code: dict[str, dict] = {}
        self.dimension_values: dict[str, dict] = {}
        self.value_by_key: dict[tuple[str, str], dict] = {}
        self.currencies: dict[str, dict] = {}
        self.vat_rates: dict[str, Decimal] = dict(seed.VAT_RATES)
        self.documents: dict[str, Any] = {}  # id -> documents.Document
        self.orders: dict[str, dict] = {}  # id -> purchase order record (with "_lines")
        self.default_dimensions: dict[tuple[str, str], dict[str, dict]] = {}  # see defaults.py
        self.series = {"vendor": 90000, "order": 106001}

    def as_entity(self) -> dict:
        return {"id": self.id, "systemVersion": "27.0.38460.0", "timestamp": 0, "name": self.name,
                "displayName": self.name, "businessProfileId": "", "systemCreatedAt": self.created,
                "systemCreatedBy": EMPTY_GUID, "systemModifiedAt": self.created, "systemModifiedBy": EMPTY_GUID}

    # -- seeding -----------------------------------------------------------------------------------
    def seed_standard(self, vendor_count: int = 50) -> None:
        stamp = iso(self.clock.stamp())
        self.add_currency("USD", "US dollar", "$", stamp)
        for rec in seed.vendors(min(vendor_count, 50)):
            self._put_vendor(rec, stamp)
        if vendor_count > 50:
            self.seed_bulk(vendors=vendor_count - 50)
        for rec in seed.accounts():
            self._put_account(rec, stamp)
        for rec in seed.dimensions():
            self._put_dimension(rec, stamp)
        for rec in seed.dimension_values():
            dim = self.dimensions[rec["dimensionId"]]
            self._put_dimension_value(dim["code"], rec, stamp)
        for number in seed.PRICES_INCLUDING_VAT_VENDORS:
            if number in self.vendor_by_number:
                self.vendor_by_number[number]["_pricesIncludeTax"] = True  # not a field of APIV2 - Vendors

    def seed_bulk(self, vendors: int = 0, accounts: int = 0, dimension_values: int = 0,
                  dimension: str | None = None) -> None:
        """Add many generated records fast (one timestamp for the whole batch)."""
        stamp = iso(self.clock.stamp())
        for rec in seed.bulk_vendors(vendors) if vendors else []:
            self._put_vendor(rec, stamp)
        for rec in bulk_accounts(accounts) if accounts else []:
            self._put_account(rec, stamp)
        if dimension_values:
            codes = [dimension] if dimension else sorted(self.dimension_by_code)
            for dim_code, rec in bulk_dimension_values(dimension_values, codes):
                self._put_dimension_value(dim_code, rec, stamp)

    def add_currency(self, code: str, name: str, symbol: str, stamp: str | None = None) -> dict:
        rec = {"id": seed.stable_uuid("currency", code), "code": code, "displayName": name, "symbol": symbol,
               "amountDecimalPlaces": "2:2", "amountRoundingPrecision": 0.01,
               "lastModifiedDateTime": stamp or iso(self.clock.stamp()), "_v": next_version()}
        self.currencies[code] = rec
        return rec

    def _put_vendor(self, rec: dict, stamp: str) -> dict:
        rec = dict(rec)
        code = (rec.get("currencyCode") or "").upper()
        rec["currencyCode"] = code or LCY  # the API shows the LCY code for blank, as the v2.0 pages do
        rec["currencyId"] = self.currencies[code]["id"] if code and code in self.currencies else EMPTY_GUID
        rec.setdefault("irs1099Code", "")
        rec.setdefault("paymentTermsId", EMPTY_GUID)
        rec.setdefault("paymentMethodId", EMPTY_GUID)
        rec["lastModifiedDateTime"] = stamp
        rec["_v"] = next_version()
        old = self.vendors.get(rec["id"])
        if old is not None:
            self.vendor_by_number.pop(old["number"], None)
        self.vendors[rec["id"]] = rec
        self.vendor_by_number[rec["number"]] = rec
        return rec

    def _put_account(self, rec: dict, stamp: str) -> dict:
        rec = dict(rec)
        rec.setdefault("consolidationTranslationMethod", "Average Rate (Manual)")
        rec.setdefault("excludeFromConsolidation", False)
        rec["lastModifiedDateTime"] = stamp
        rec["_v"] = next_version()
        self.accounts[rec["id"]] = rec
        self.account_by_number[rec["number"]] = rec
        return rec

    def _put_dimension(self, rec: dict, stamp: str) -> dict:
        rec = dict(rec, consolidationCode="", lastModifiedDateTime=stamp, _v=next_version())
        self.dimensions[rec["id"]] = rec
        self.dimension_by_code[rec["code"]] = rec
        return rec

    def _put_dimension_value(self, dimension_code: str, rec: dict, stamp: str) -> dict:
        dim = self.dimension_by_code[dimension_code]
        rec = dict(rec, dimensionId=dim["id"], lastModifiedDateTime=stamp, _v=next_version())
        rec.setdefault("consolidationCode", "")
        rec.setdefault("_blocked", False)
        rec["_dimension"] = dimension_code
        self.dimension_values[rec["id"]] = rec
        self.value_by_key[(dimension_code, rec["code"])] = rec
        return rec

    # -- master-data changes made "in BC" (control surface) ------------------------------------------
    def set_vendor(self, number: str, **fields) -> dict:
        rec = self.vendor_by_number.get(number)
        if rec is None:
            base = {k: "" for k in ("displayName", "addressLine1", "addressLine2", "city", "state", "country",
                                    "postalCode", "phoneNumber", "email", "website", "taxRegistrationNumber",
                                    "currencyCode")}
            rec = self._put_vendor(dict(base, id=seed.stable_uuid("vendor", number), number=number,
                                        taxLiable=True, blocked=" ", balance=0), iso(self.clock.stamp()))
        fields.pop("id", None)
        if "currencyCode" in fields:
            code = (fields["currencyCode"] or "").upper()
            fields["currencyCode"] = code or LCY
            fields["currencyId"] = self.currencies[code]["id"] if code in self.currencies else EMPTY_GUID
        if "number" in fields and fields["number"] != number:
            self.vendor_by_number.pop(number, None)
            self.vendor_by_number[fields["number"]] = rec
        rec.update(fields)
        touch(rec, self.clock)
        return rec

    def delete_vendor(self, number: str) -> dict:
        rec = self.vendor_by_number.pop(number)
        del self.vendors[rec["id"]]
        return rec

    def set_account(self, number: str, **fields) -> dict:
        rec = self.account_by_number.get(number)
        if rec is None:
            rec = self._put_account({"id": seed.stable_uuid("account", number), "number": number,
                                     "displayName": fields.get("displayName", f"Account {number}"),
                                     "category": "Expense", "subCategory": "", "blocked": False,
                                     "accountType": "Posting", "directPosting": True, "netChange": 0},
                                    iso(self.clock.stamp()))
        fields.pop("id", None)
        fields.pop("number", None)
        rec.update(fields)
        touch(rec, self.clock)
        return rec

    def delete_account(self, number: str) -> dict:
        rec = self.account_by_number.pop(number)
        del self.accounts[rec["id"]]
        return rec

    def set_dimension_value(self, dimension: str, code: str, **fields) -> dict:
        """Create or change a dimension value. `blocked=True` is kept but not exposed by the API
        (AL: APIV2DimensionValuesEntity.Page.al has no `blocked`): such values are accepted on drafts
        and refused at posting."""
        if dimension not in self.dimension_by_code:
            self._put_dimension({"id": seed.stable_uuid("dimension", dimension), "code": dimension,
                                 "displayName": dimension.title()}, iso(self.clock.stamp()))
        rec = self.value_by_key.get((dimension, code))
        if rec is None:
            rec = self._put_dimension_value(dimension, {"id": seed.stable_uuid("dimensionValue", dimension, code),
                                                        "code": code, "displayName": code.title()},
                                            iso(self.clock.stamp()))
        if "blocked" in fields:
            rec["_blocked"] = bool(fields.pop("blocked"))
        fields.pop("id", None)
        fields.pop("code", None)
        rec.update(fields)
        touch(rec, self.clock)
        return rec

    def delete_dimension_value(self, dimension: str, code: str) -> dict:
        rec = self.value_by_key.pop((dimension, code))
        del self.dimension_values[rec["id"]]
        return rec

    # -- lookups -------------------------------------------------------------------------------------
    def currencies_by_id(self) -> dict[str, dict]:
        return {c["id"]: c for c in self.currencies.values()}

    def dimension_values_of(self, dimension_id: str) -> Iterable[dict]:
        return (v for v in self.dimension_values.values() if v["dimensionId"] == dimension_id)
