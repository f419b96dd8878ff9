"""Default dimensions: the `defaultDimensions` entity, inheritance onto purchase documents, and the
posting-validation rules checked at `Microsoft.NAV.post`.

Public facts modelled here:
- `APIV2 - Default Dimensions` (microsoft/ALAppExtensions `Apps/W1/APIV2/app/src/pages/
  APIV2DefaultDimensions.Page.al`): fields `id`, `parentType`, `parentId`, `dimensionId`,
  `dimensionCode`, `dimensionValueId`, `dimensionValueCode`, `postingValidation`; reachable as
  `companies({id})/defaultDimensions` and `vendors({id})/defaultDimensions` (Microsoft Learn,
  api-reference/v2.0/api/dynamics_defaultdimension_get). `parentType` is enum 352 "Default Dimension
  Parent Type" (Customer, Item, Vendor, Employee): a G/L account's default dimensions exist in BC
  (Default Dimension table 352, Table ID 15) but are NOT readable through API v2.0. The sandbox keeps
  them hidden the same way; a connector learns them only from BC's answers.
- Enum values with spaces go over OData as `Code_x0020_Mandatory` (OData's encoding of AL enum
  member names); the sandbox answers in that form and accepts either form.
- A purchase header copies the buy-from vendor's defaults when the vendor is validated; a line of
  type Account starts from the header's dimension set and then takes the G/L account's defaults,
  which win for a code both have (codeunit 408 DimensionManagement `GetDefaultDimID`: the
  inherited set is the header's, the line's own sources are applied over it).
- Posting (codeunit 90 Purch.-Post, `CheckDimValuePosting`) checks the header's dimension set
  against the vendor's rules and each line's set against its G/L account's rules. Whether the
  vendor's rules also reach the lines depends on the build's `CheckDimValuePosting` table list; the
  sandbox models the harder case and checks every line against the vendor's rules too.
"""
from __future__ import annotations

from . import errors as E
from .resources import Kind
from .store import EMPTY_GUID, Company, next_version, public, iso
from sandbox import seed

FIELDS = ["id", "parentType", "parentId", "dimensionId", "dimensionCode", "dimensionValueId",
          "dimensionValueCode", "postingValidation"]
VALIDATIONS = {" ": " ", "": " ", "Code Mandatory": "Code_x0020_Mandatory", "Same Code": "Same_x0020_Code",
               "No Code": "No_x0020_Code"}
API_PARENT_TYPES = {"Vendor"}  # of enum 352, the parents this sandbox has; "G/L Account" is not in it
VENDOR, ACCOUNT = "Vendor", "G/L Account"


def seed_defaults(company: Company) -> None:
    """The seeded vendors' and accounts' default dimensions (called once a company is seeded)."""
    for parent, rules_by_number in (("Vendor", seed.VENDOR_DEFAULT_DIMENSIONS),
                                    ("G/L Account", seed.ACCOUNT_DEFAULT_DIMENSIONS)):
        for number, rules in rules_by_number.items():
            if number in company.vendor_by_number or number in company.account_by_number:
                for dimension, value, validation in rules:
                    set_default(company, parent, number, dimension, value, validation)


def normalise_validation(value: str | None) -> str:
    """' ', 'Code Mandatory', 'Same Code' or 'No Code' from any of the spellings in use."""
    text = (value or " ").replace("_x0020_", " ").replace("_", " ").strip()
    if text not in VALIDATIONS:
        raise E.cannot_convert(value, "Microsoft.NAV.defaultDimensionValuePostingType")
    return text or " "


def table(company: Company) -> dict[tuple[str, str], dict[str, dict]]:
    """(parent table, parent id) -> {dimension code: default dimension record}."""
    return company.default_dimensions


def set_default(company: Company, parent_table: str, parent_number: str, dimension: str, value: str | None,
                posting_validation: str = " ") -> dict:
    """Create or change a default dimension "in BC" (the control surface and seed use this)."""
    if parent_table == VENDOR:
        parent = company.vendor_by_number[parent_number]
    elif parent_table == ACCOUNT:
        parent = company.account_by_number[parent_number]
    else:
        raise KeyError(f"unknown parent table {parent_table}")
    dim = company.dimension_by_code[dimension]
    val = company.value_by_key[(dimension, value)] if value else None
    rules = table(company).setdefault((parent_table, parent["id"]), {})
    rec = {"id": seed.stable_uuid("defaultDimension", parent_table, parent["id"], dim["id"]),
           "parentType": parent_table, "parentId": parent["id"], "dimensionId": dim["id"],
           "dimensionCode": dim["code"], "dimensionValueId": val["id"] if val else EMPTY_GUID,
           "dimensionValueCode": val["code"] if val else "",
           "postingValidation": normalise_validation(posting_validation),
           "lastModifiedDateTime": iso(company.clock.stamp()), "_v": next_version(), "_number": parent_number}
    rules[dim["code"]] = rec
    return rec


def delete_default(company: Company, parent_table: str, parent_number: str, dimension: str) -> None:
    parent = (company.vendor_by_number if parent_table == VENDOR else company.account_by_number)[parent_number]
    table(company).get((parent_table, parent["id"]), {}).pop(dimension, None)


def defaults_of(company: Company, parent_table: str, parent_id: str | None) -> dict[str, dict]:
    return table(company).get((parent_table, parent_id or ""), {})


def readable(company: Company) -> list[dict]:
    """What `companies({id})/defaultDimensions` lists: parents of the API's enum only."""
    return [rec for (parent_table, _), rules in table(company).items() if parent_table in API_PARENT_TYPES
            for rec in rules.values()]


def to_json(rec: dict) -> dict:
    out = public(rec)
    out.pop("lastModifiedDateTime", None)  # not a field of page 30026
    out["postingValidation"] = VALIDATIONS[rec["postingValidation"]]
    return out


def kind() -> Kind:
    return Kind("defaultDimension", FIELDS, key=lambda r: (r["parentId"], r["dimensionCode"]), to_json=to_json,
                view=to_json)


def inherited_entries(company: Company, parent_table: str, parent_id: str | None, make_entry) -> dict:
    """{code: DimEntry} copied from a parent's defaults that carry a value (blank ones copy nothing)."""
    out = {}
    for code, rec in defaults_of(company, parent_table, parent_id).items():
        if rec["dimensionValueCode"]:
            out[code] = make_entry({"code": code, "valueCode": rec["dimensionValueCode"]})
    return out


# -- posting validation (Microsoft.NAV.post) --------------------------------------------------------------
def check_posting(company: Company, doc) -> None:
    """Raise BC's error for the first breach of a vendor or G/L account default-dimension rule."""
    vendor = company.vendors.get(doc.header.get("vendorId"))
    vendor_rules = defaults_of(company, VENDOR, vendor["id"] if vendor else None)
    sets = [(doc.dims, None)] + [(ln.dims, ln) for ln in doc.lines if ln.data.get("lineType") != "Comment"]
    for dims, line in sets:
        _check(dims, vendor_rules, "Vendor", vendor["number"] if vendor else "")
        if line is not None and line.data.get("lineType") == "Account":
            account = company.accounts.get(line.data.get("accountId"))
            if account is not None:
                _check(dims, defaults_of(company, ACCOUNT, account["id"]), "G/L Account", account["number"])


def _check(dims: dict, rules: dict[str, dict], parent_caption: str, parent_number: str) -> None:
    # Wording after codeunit 408 DimensionManagement's posting-check labels.
    for code, rec in sorted(rules.items()):
        rule = rec["postingValidation"]
        entry = dims.get(code)
        have = entry.value_code if entry is not None else ""
        if rule == "Code Mandatory" and not have:
            raise E.dialog(f"Select a Dimension Value Code for the Dimension Code {code} for "
                           f"{parent_caption} {parent_number}.")
        if rule == "Same Code" and have != rec["dimensionValueCode"]:
            if rec["dimensionValueCode"]:
                raise E.dialog(f"Select Dimension Value Code {rec['dimensionValueCode']} for the Dimension Code "
                               f"{code} for {parent_caption} {parent_number}. Currently it's {have or 'blank'}.")
            raise E.dialog(f"Dimension Code {code} must be blank for {parent_caption} {parent_number}. "
                           f"Currently it's {have}.")
        if rule == "No Code" and have:
            raise E.dialog(f"Dimension Code {code} must be blank for {parent_caption} {parent_number}. "
                           f"Currently it's {have}.")
