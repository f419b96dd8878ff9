"""Pure BC -> Basware master-data mapping: records, canonical JSON, content hashes and batches.

Nothing here does I/O. `shared/flows/masterdata/sync.py` streams BC pages through these functions.

Facts this relies on (Basware's P2P OpenAPI: the vendors, accounts, costCenters, projects and lists schemas):
- POST fully overwrites the record with the same `externalCode`, which must stay stable (<= 36
  chars); codes (vendorCode, accountCode, ...) are <= 25 chars;
- name arrays always carry an `en-US` entry (translation 2..2000 chars);
- soft delete = `companies[].active=false`; vendors have no such flag and use
  `processingStatus {active, paymentDenied}` instead (INFERRED);
- an identical resend is skipped by Basware (`NotProcessed`); canonical JSON (sorted keys, no
  nulls, stable numbers) makes our own skip and Basware's predictable;
- limits: 200 vendors or 500 other records per request, and 6 MB per request.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable

from shared.core.settings import DimensionMapping

EN_US = "en-US"
# Basware's limit is "6 MB"; whether that is 10^6 or 2^20 bytes is not stated, so stay under the smaller.
MAX_BATCH_BYTES = 6_000_000
# BC gives projects no validity period; Basware's /v2/projects requires one.
PROJECT_VALID_FROM = "2000-01-01T00:00:00Z"
PROJECT_VALID_UNTIL = "2099-12-31T00:00:00Z"
# Assumptions about the tenant's P2P configuration, named so an operator can find them:
TAX_ID_SCHEME = "VAT"             # identifier key for the vendor's tax registration number
PAYMENT_MEANS_CODE = "DEFAULT"    # payment-means block that carries the vendor's default currency

EXTERNAL_CODE_MAX = 36
_SAFE = re.compile(r"^[A-Za-z0-9._ -]+$")  # also a valid Table Storage RowKey (no / \ # ? or controls)


# -- canonical JSON and hashes -------------------------------------------------------------------
def canonical(value: Any) -> Any:
    """Sorted keys, no nulls, integral numbers as ints, other numbers as their shortest float form."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value) if value[k] is not None}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        number = Decimal(str(value))
        if number == number.to_integral_value():
            return int(number)
        return float(number)
    return str(value)


def canonical_bytes(record: dict) -> bytes:
    """The exact bytes sent (the client's `dumps` gives the same for an already-canonical dict)."""
    return json.dumps(canonical(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def content_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


# -- external codes --------------------------------------------------------------------------------
def company_tag(company_id: str) -> str:
    return company_id.replace("-", "")[:8].lower()


def external_code(company_id: str, letter: str, *parts: str) -> str:
    """`BC-<company8>-<letter>-<part>[-<part>]` when it fits 36 chars and is unambiguous;
    otherwise `BC-<company8>-<letter>~<hash>`: stable either way, and always a valid RowKey."""
    head = f"BC-{company_tag(company_id)}-{letter}"
    natural = "-".join([head, *parts])
    ambiguous = any("-" in p for p in parts[:-1])  # "A-B"+"C" must not meet "A"+"B-C"
    if len(natural) <= EXTERNAL_CODE_MAX and not ambiguous and all(_SAFE.match(p) for p in parts):
        return natural
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"{head}~{digest[:EXTERNAL_CODE_MAX - len(head) - 1]}"


# -- small helpers ----------------------------------------------------------------------------------
def _text(value: Any, limit: int) -> str | None:
    text = (str(value) if value is not None else "").strip()
    return text[:limit] if text else None


def _name(value: Any, fallback: str, limit: int, minimum: int = 1) -> str:
    text = _text(value, limit)
    if text is None or len(text) < minimum:
        text = _text(f"{fallback} {text or ''}", limit) or fallback
    return text if len(text) >= minimum else text.ljust(minimum, "_")


def _names(value: Any, fallback: str) -> list[dict]:
    return [{"language": EN_US, "translation": _name(value, fallback, 2000, minimum=2)}]


def _compact(record: dict) -> dict:
    return {k: v for k, v in record.items() if v not in (None, "", [], {})}


@dataclass(frozen=True)
class CompanyContext:
    """One BC company and the Basware companyCodes that stand for it (COMPANY_MAP)."""

    company_id: str
    company_codes: tuple[str, ...]


# -- mappers: one BC record -> one Basware record (None: not imported) -----------------------------
def map_vendor(vendor: dict, ctx: CompanyContext) -> dict:
    number = str(vendor["number"])
    blocked = (vendor.get("blocked") or " ").strip()
    country = (vendor.get("country") or "").strip().upper()
    address = _compact({
        "addressLine1": _text(vendor.get("addressLine1"), 200),
        "addressLine2": _text(vendor.get("addressLine2"), 200),
        "streetName": _text(vendor.get("addressLine1"), 50),
        "cityName": _text(vendor.get("city"), 50),
        "postalZone": _text(vendor.get("postalCode"), 50),
        "countrySubEntity": _text(vendor.get("state"), 50),
        "countryId": country if re.fullmatch(r"[A-Z]{2}", country) else None,
    })
    contact = _compact({
        "email": _text(vendor.get("email"), 200),
        "telephone": _text(vendor.get("phoneNumber"), 50),
        "website": _text(vendor.get("website"), 200),
    })
    tax_id = _text(vendor.get("taxRegistrationNumber"), 36)
    currency = (vendor.get("currencyCode") or "").strip().upper()
    return _compact({
        "externalCode": external_code(ctx.company_id, "V", number),
        "vendorCode": number[:25],
        "name": _name(vendor.get("displayName"), number, 250),
        "addresses": [{"externalCode": "POSTAL", "name": "Postal address", "addressType": "PostalAddress",
                       "default": True, **address}] if address else None,
        "contacts": [{"name": "Accounts payable", "role": "PrimaryContact", **contact}] if contact else None,
        "identifiers": [{"schemeId": TAX_ID_SCHEME, "id": tax_id}] if tax_id else None,
        "paymentMeans": ([{"paymentMeansCode": PAYMENT_MEANS_CODE, "currencyCode": currency, "default": True}]
                         if re.fullmatch(r"[A-Z]{3}", currency) else None),
        "processingStatus": {"active": blocked != "All", "paymentDenied": blocked in ("All", "Payment")},
        "companies": [{"companyCode": code, "inheritToChildUnits": True} for code in ctx.company_codes],
    })


def map_account(account: dict, ctx: CompanyContext) -> dict | None:
    """Only `Posting` accounts; usable for coding only when not blocked and open to direct posting."""
    if account.get("accountType") != "Posting":
        return None
    number = str(account["number"])
    usable = not account.get("blocked") and bool(account.get("directPosting"))
    return {
        "externalCode": external_code(ctx.company_id, "A", number),
        "accountCode": number[:25],
        "accountNames": _names(account.get("displayName"), f"Account {number}"),
        "companies": [{"companyCode": code, "inherit": False, "active": usable} for code in ctx.company_codes],
    }


def map_dimension_value(value: dict, ctx: CompanyContext, dimension: DimensionMapping) -> dict:
    code = str(value["code"])
    ext = external_code(ctx.company_id, "D", dimension.dimension, code)
    companies = [{"companyCode": c, "active": True} for c in ctx.company_codes]
    name = value.get("displayName")
    if dimension.target == "costCenter":
        return {"externalCode": ext, "costCenterCode": code[:25],
                "costCenterNames": _names(name, code), "companies": companies}
    if dimension.target == "project":
        return {"externalCode": ext, "projectCode": code[:25], "projectName": _name(name, code, 100),
                "validFrom": PROJECT_VALID_FROM, "validUntil": PROJECT_VALID_UNTIL, "companies": companies}
    # generic list: text_1 = code, text_2 = name (ACC_LIST_11..20 hold 50 chars; BC names are <= 50)
    return {"externalCode": ext, "text_1": code, "text_2": _name(name, code, 50), "companies": companies}


def inactivate(record: dict) -> dict:
    """The same record, hidden in Basware: never deleted (DELETE is for one-time clean-ups)."""
    out = dict(record)
    if "vendorCode" in out:
        out["processingStatus"] = {**(out.get("processingStatus") or {}), "active": False}
    else:
        out["companies"] = [{**c, "active": False} for c in out.get("companies") or []]
    return out


def is_active(record: dict) -> bool:
    if "vendorCode" in record:
        return (record.get("processingStatus") or {}).get("active") is not False
    return any(c.get("active") for c in record.get("companies") or [])


# -- entities ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntitySpec:
    """One stream of records: where it is read in BC, how it maps, where it goes in Basware."""

    key: str                     # stable name in syncstate, e.g. "vendor", "costCenter.DEPARTMENT"
    path: str                    # Basware endpoint
    limit: int                   # records per request
    entity_type: str             # Basware requestStatus entityType
    mapper: Callable[[dict, CompanyContext], dict | None]
    source: str                  # "vendors", "accounts" or "dimension:<code>"
    dimension: DimensionMapping | None = None


def _safe_key(text: str) -> str:
    return text if _SAFE.match(text) and " " not in text else "h" + hashlib.sha256(text.encode()).hexdigest()[:16]


def entity_specs(dimension_map: Iterable[DimensionMapping], endpoints: dict[str, tuple[str, int]],
                 list_limit: int) -> list[EntitySpec]:
    specs = [
        EntitySpec("vendor", endpoints["vendors"][0], endpoints["vendors"][1], "Vendor", map_vendor, "vendors"),
        EntitySpec("account", endpoints["accounts"][0], endpoints["accounts"][1], "Account", map_account,
                   "accounts"),
    ]
    for dim in dimension_map:
        mapper = (lambda d: lambda value, ctx: map_dimension_value(value, ctx, d))(dim)
        if dim.target == "costCenter":
            path, limit, etype = *endpoints["costCenters"], "CostCenter"
        elif dim.target == "project":
            path, limit, etype = *endpoints["projects"], "Project"
        else:
            path, limit, etype = f"/v1/lists/{dim.list_key}", list_limit, "GenericList"
        target = dim.target.replace(":", ".")
        specs.append(EntitySpec(f"{target}.{_safe_key(dim.dimension)}", path, limit, etype, mapper,
                                f"dimension:{dim.dimension}", dim))
    return specs


# -- batching ------------------------------------------------------------------------------------------
@dataclass
class Pending:
    """One record on its way to Basware, with what is needed to advance its hash afterwards."""

    external_code: str
    record: dict
    size: int
    hash: str
    active: bool
    change: str  # new | changed | gone | identical


@dataclass
class Batch:
    items: list[Pending] = field(default_factory=list)
    size: int = 2  # "[" and "]"

    def would_fit(self, item: Pending, max_records: int, max_bytes: int) -> bool:
        extra = item.size + (1 if self.items else 0)
        return len(self.items) < max_records and self.size + extra <= max_bytes

    def add(self, item: Pending) -> None:
        self.size += item.size + (1 if self.items else 0)
        self.items.append(item)

    def records(self) -> list[dict]:
        return [p.record for p in self.items]


class RecordTooLarge(ValueError):
    def __init__(self, item: Pending, max_bytes: int) -> None:
        super().__init__(f"record {item.external_code} is {item.size} bytes, over the {max_bytes}-byte request limit")
        self.item = item


class Batcher:
    """Groups records into requests under a record count and a serialized byte size."""

    def __init__(self, max_records: int, max_bytes: int = MAX_BATCH_BYTES) -> None:
        if max_records < 1 or max_bytes < 3:
            raise ValueError("a batch must hold at least one record")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._batch = Batch()

    def add(self, item: Pending) -> Batch | None:
        """Add a record; returns the previous batch when this record did not fit in it."""
        if 2 + item.size > self.max_bytes:
            raise RecordTooLarge(item, self.max_bytes)
        full = None
        if not self._batch.would_fit(item, self.max_records, self.max_bytes):
            full, self._batch = self._batch, Batch()
        self._batch.add(item)
        return full

    def flush(self) -> Batch | None:
        batch, self._batch = self._batch, Batch()
        return batch if batch.items else None


def pending(record: dict, change: str) -> Pending:
    record = canonical(record)
    body = canonical_bytes(record)
    return Pending(record["externalCode"], record, len(body), content_hash(body), is_active(record), change)


def restamped(p: Pending, stamp: str) -> Pending:
    """The same content with `lastUpdated` set, so Basware processes it again.

    Basware keeps a record in its API layer even when P2P refused it, and then skips an identical
    resend as NotProcessed although P2P never got it (Basware P2P FAQ: "modify the record
    slightly"; P2P OpenAPI, ProcessedItem). `lastUpdated` is a field every master-data schema
    has and nothing in P2P shows. The hash stays that of the content without it, so the next
    unchanged run skips the record again."""
    record = canonical({**p.record, "lastUpdated": stamp})
    return Pending(p.external_code, record, len(canonical_bytes(record)), p.hash, p.active, p.change)
