"""Companies, vendors, G/L accounts, dimensions, dimension values and currencies as API entities.

accounts, dimensions, dimensionValues and currencies are GET-only in v2.0 (Microsoft Learn,
api-reference/v2.0/resources/dynamics_account, dynamics_dimension, dynamics_dimensionvalue);
vendors allow POST, PATCH and DELETE (resources/dynamics_vendor). Changes "made in BC" go through
`store.Company`.
"""
from __future__ import annotations

import uuid

from . import errors as E
from .documents import convert
from .resources import Kind
from .store import EMPTY_GUID, LCY, Company, iso, next_version, public, touch

VENDOR_FIELDS = ["id", "number", "displayName", "addressLine1", "addressLine2", "city", "state", "country",
                 "postalCode", "phoneNumber", "email", "website", "taxRegistrationNumber", "currencyId",
                 "currencyCode", "irs1099Code", "paymentTermsId", "paymentMethodId", "taxLiable", "blocked",
                 "balance", "lastModifiedDateTime"]
VENDOR_WRITABLE = set(VENDOR_FIELDS) - {"id", "balance", "lastModifiedDateTime"}
VENDOR_BLOCKED = {" ", "Payment", "All"}
ACCOUNT_FIELDS = ["id", "number", "displayName", "category", "subCategory", "blocked", "accountType",
                  "directPosting", "netChange", "consolidationTranslationMethod", "excludeFromConsolidation",
                  "lastModifiedDateTime"]
DIMENSION_FIELDS = ["id", "code", "displayName", "consolidationCode", "lastModifiedDateTime"]
DIMENSION_VALUE_FIELDS = ["id", "code", "dimensionId", "displayName", "consolidationCode", "lastModifiedDateTime"]
CURRENCY_FIELDS = ["id", "code", "displayName", "symbol", "amountDecimalPlaces", "amountRoundingPrecision",
                   "lastModifiedDateTime"]
COMPANY_FIELDS = ["id", "systemVersion", "timestamp", "name", "displayName", "businessProfileId", "systemCreatedAt",
                  "systemCreatedBy", "systemModifiedAt", "systemModifiedBy"]


def company_kind() -> Kind:
    return Kind("company", COMPANY_FIELDS, key=lambda c: c.id, to_json=lambda c: c.as_entity())


def vendor_kind() -> Kind:
    return Kind("vendor", VENDOR_FIELDS, key=lambda r: (r["number"], r["id"]), to_json=public, view=lambda r: r)


def account_kind() -> Kind:
    return Kind("account", ACCOUNT_FIELDS, key=lambda r: (r["number"], r["id"]), to_json=public, view=lambda r: r)


def dimension_value_kind() -> Kind:
    return Kind("dimensionValue", DIMENSION_VALUE_FIELDS, key=lambda r: (r["_dimension"], r["code"]),
                to_json=public, view=lambda r: r)


def dimension_kind(company: Company) -> Kind:
    return Kind("dimension", DIMENSION_FIELDS, key=lambda r: (r["code"],), to_json=public, view=lambda r: r,
                navigation={"dimensionValues": lambda r: (dimension_value_kind(),
                                                          list(company.dimension_values_of(r["id"])))})


def currency_kind() -> Kind:
    return Kind("currency", CURRENCY_FIELDS, key=lambda r: (r["code"],), to_json=public, view=lambda r: r)


# -- vendor writes through the API -----------------------------------------------------------------
_VENDOR_LENGTHS = {"number": 20, "displayName": 100, "addressLine1": 100, "addressLine2": 50, "city": 30,
                   "state": 30, "country": 10, "postalCode": 20, "phoneNumber": 30, "email": 80, "website": 80,
                   "taxRegistrationNumber": 20, "currencyCode": 10, "irs1099Code": 10}


def _vendor_values(company: Company, body) -> dict:
    values = convert(body, VENDOR_FIELDS, VENDOR_WRITABLE, set(), "vendor", bools=frozenset({"taxLiable"}))
    for key, value in values.items():
        if isinstance(value, str) and key in _VENDOR_LENGTHS and len(value) > _VENDOR_LENGTHS[key]:
            raise E.string_too_long(value, _VENDOR_LENGTHS[key])
    if "number" in values:
        values["number"] = values["number"].upper()
    if "blocked" in values and values["blocked"] not in VENDOR_BLOCKED:
        raise E.cannot_convert(values["blocked"], "Microsoft.NAV.vendorBlocked")
    if "currencyCode" in values:
        code = values["currencyCode"].upper()
        if code not in ("", LCY) and code not in company.currencies:
            raise E.dialog('The "currencyCode" does not match to a Currency.')
        values["currencyCode"] = code or LCY
        values["currencyId"] = company.currencies[code]["id"] if code in company.currencies else EMPTY_GUID
    return values


def create_vendor(company: Company, body) -> dict:
    values = _vendor_values(company, body)
    number = values.get("number")
    if not number:
        number = f"V{company.series['vendor']}"
        company.series["vendor"] += 1
    if number in company.vendor_by_number:
        raise E.BcError(400, "Internal_EntityWithSameKeyExists",
                        f"The record in table Vendor already exists. Identification fields and values: No.='{number}'")
    rec = {name: "" for name in VENDOR_FIELDS}
    rec.update(id=str(uuid.uuid4()), currencyCode=LCY, currencyId=EMPTY_GUID, paymentTermsId=EMPTY_GUID,
               paymentMethodId=EMPTY_GUID, taxLiable=False, blocked=" ", balance=0)
    rec.update(values, number=number)
    rec["lastModifiedDateTime"] = iso(company.clock.stamp())
    rec["_v"] = next_version()
    company.vendors[rec["id"]] = rec
    company.vendor_by_number[number] = rec
    return rec


def patch_vendor(company: Company, rec: dict, body) -> dict:
    values = _vendor_values(company, body)
    new_number = values.get("number")
    if new_number and new_number != rec["number"]:
        if new_number in company.vendor_by_number:
            raise E.BcError(400, "Internal_EntityWithSameKeyExists",
                            "The record in table Vendor already exists. Identification fields and values: "
                            f"No.='{new_number}'")
        company.vendor_by_number.pop(rec["number"], None)
        company.vendor_by_number[new_number] = rec
    rec.update(values)
    touch(rec, company.clock)
    return rec


def delete_vendor(company: Company, rec: dict) -> None:
    for doc in company.documents.values():
        if doc.header.get("vendorId") == rec["id"] and not doc.posted:
            raise E.dialog(f"You cannot delete Vendor {rec['number']} because there is at least one outstanding "
                           f"Purchase {doc.type.label} for this vendor.")
    company.delete_vendor(rec["number"])
