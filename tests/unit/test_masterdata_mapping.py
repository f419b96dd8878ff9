"""The pure BC -> Basware master-data mappers, canonical JSON, hashes and the batcher."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from sandbox import openapi, seed
from shared.flows.masterdata.mapping import (Batcher, CompanyContext, RecordTooLarge, canonical, canonical_bytes,
                                       content_hash, entity_specs, external_code, inactivate, is_active,
                                       map_account, map_dimension_value, map_vendor, pending)
from shared.core.settings import DimensionMapping

CID = seed.COMPANY_ID
CTX = CompanyContext(CID, ("NWM01",))
TWO = CompanyContext(CID, ("NWM01", "NWM02"))
DEPT = DimensionMapping(dimension="DEPARTMENT", basware_field="costCenterCode", target="costCenter")
PROJ = DimensionMapping(dimension="PROJECT", basware_field="projectCode", target="project")
AREA = DimensionMapping(dimension="AREA", basware_field="dimCode1", target="list:ACC_LIST_1")


def vendor(**over) -> dict:
    base = {"number": "V10010", "displayName": "Baltic Bearings", "addressLine1": "11 Industrial Road",
            "addressLine2": "", "city": "Rotterdam", "state": "", "country": "NL", "postalCode": "3011",
            "phoneNumber": "+49 40 5550001", "email": "ap@baltic.example", "website": "",
            "taxRegistrationNumber": "NL100007919", "currencyCode": "EUR", "blocked": " "}
    return {**base, **over}


def account(**over) -> dict:
    return {"number": "6200", "displayName": "Office Supplies", "accountType": "Posting", "blocked": False,
            "directPosting": True, **over}


def assert_valid(path: str, records: list[dict]) -> None:
    errors = openapi.validate(f"POST {path}", records)
    assert errors == [], errors


# -- vendors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("blocked, active, payment_denied", [
    (" ", True, False), ("", True, False), ("Payment", True, True), ("All", False, True),
])
def test_vendor_blocked_maps_to_processing_status(blocked, active, payment_denied):
    record = map_vendor(vendor(blocked=blocked), CTX)
    assert record["processingStatus"] == {"active": active, "paymentDenied": payment_denied}
    assert is_active(record) is active


@pytest.mark.parametrize("over, check", [
    ({}, lambda r: r["externalCode"] == "BC-5d0c7a1e-V-V10010" and r["vendorCode"] == "V10010"),
    ({}, lambda r: r["name"] == "Baltic Bearings"),
    ({"displayName": ""}, lambda r: r["name"] == "V10010"),
    ({}, lambda r: r["identifiers"] == [{"schemeId": "VAT", "id": "NL100007919"}]),
    ({"taxRegistrationNumber": ""}, lambda r: "identifiers" not in r),
    ({}, lambda r: r["paymentMeans"][0]["currencyCode"] == "EUR" and r["paymentMeans"][0]["default"] is True),
    ({"currencyCode": ""}, lambda r: "paymentMeans" not in r),
    ({}, lambda r: r["addresses"][0]["cityName"] == "Rotterdam" and r["addresses"][0]["countryId"] == "NL"),
    ({}, lambda r: "addressLine2" not in r["addresses"][0]),
    ({"country": "NLD"}, lambda r: "countryId" not in r["addresses"][0]),
    ({"addressLine1": "", "city": "", "country": "", "postalCode": ""}, lambda r: "addresses" not in r),
    ({}, lambda r: r["contacts"][0]["email"] == "ap@baltic.example"),
    ({}, lambda r: r["companies"] == [{"companyCode": "NWM01", "inheritToChildUnits": True}]),
])
def test_vendor_fields(over, check):
    record = map_vendor(vendor(**over), CTX)
    assert check(record), record
    assert_valid("/v1/vendors", [record])


def test_vendor_goes_to_every_basware_company_of_its_bc_company():
    assert [c["companyCode"] for c in map_vendor(vendor(), TWO)["companies"]] == ["NWM01", "NWM02"]


def test_every_seed_vendor_is_schema_valid():
    assert_valid("/v1/vendors", [map_vendor(v, CTX) for v in seed.vendors()])


# -- accounts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("over, imported, active", [
    ({}, True, True),
    ({"blocked": True}, True, False),
    ({"directPosting": False}, True, False),
    ({"accountType": "Heading"}, False, None),
    ({"accountType": "Total"}, False, None),
    ({"accountType": "Begin Total"}, False, None),
    ({"accountType": "End Total"}, False, None),
])
def test_account_type_and_blocking(over, imported, active):
    record = map_account(account(**over), CTX)
    if not imported:
        assert record is None
        return
    assert record["companies"] == [{"companyCode": "NWM01", "inherit": False, "active": active}]
    assert record["accountNames"] == [{"language": "en-US", "translation": "Office Supplies"}]
    assert record["externalCode"] == "BC-5d0c7a1e-A-6200" and record["accountCode"] == "6200"
    assert_valid("/v1/accounts", [record])


@pytest.mark.parametrize("name, expected", [("", "Account 6200"), ("X", "Account 6200 X"), ("IT", "IT")])
def test_account_names_meet_the_two_character_minimum(name, expected):
    record = map_account(account(displayName=name), CTX)
    assert record["accountNames"][0]["translation"] == expected
    assert_valid("/v1/accounts", [record])


def test_every_seed_posting_account_is_schema_valid():
    records = [r for r in (map_account(a, CTX) for a in seed.accounts()) if r]
    assert len(records) == sum(1 for a in seed.accounts() if a["accountType"] == "Posting")
    assert_valid("/v1/accounts", records)


# -- dimension values ------------------------------------------------------------------------------
@pytest.mark.parametrize("dimension, path, fields", [
    (DEPT, "/v1/costCenters", {"costCenterCode": "PROD",
                               "costCenterNames": [{"language": "en-US", "translation": "Production"}]}),
    (PROJ, "/v2/projects", {"projectCode": "PROD", "projectName": "Production",
                            "validFrom": "2000-01-01T00:00:00Z", "validUntil": "2099-12-31T00:00:00Z"}),
    (AREA, "/v1/lists/ACC_LIST_1", {"text_1": "PROD", "text_2": "Production"}),
])
def test_dimension_value_goes_where_the_dimension_map_says(dimension, path, fields):
    record = map_dimension_value({"code": "PROD", "displayName": "Production"}, CTX, dimension)
    for key, value in fields.items():
        assert record[key] == value
    assert record["companies"] == [{"companyCode": "NWM01", "active": True}]
    assert record["externalCode"] == f"BC-5d0c7a1e-D-{dimension.dimension}-PROD"
    assert_valid(path, [record])
    assert not is_active(inactivate(record))


def test_entity_specs_follow_the_dimension_map_and_the_endpoint_limits():
    from shared.clients.basware import LIST_LIMIT, MASTERDATA_ENDPOINTS

    specs = entity_specs([DEPT, PROJ, AREA], MASTERDATA_ENDPOINTS, LIST_LIMIT)
    assert [(s.key, s.path, s.limit) for s in specs] == [
        ("vendor", "/v1/vendors", 200), ("account", "/v1/accounts", 500),
        ("costCenter.DEPARTMENT", "/v1/costCenters", 500), ("project.PROJECT", "/v2/projects", 500),
        ("list.ACC_LIST_1.AREA", "/v1/lists/ACC_LIST_1", 500)]


# -- external codes --------------------------------------------------------------------------------
@pytest.mark.parametrize("letter, parts, natural", [
    ("V", ("V10010",), True),
    ("V", ("A" * 20,), True),                      # BC numbers are <= 20: always natural
    ("D", ("DEPARTMENT", "PROD"), True),
    ("D", ("DEPARTMENT", "X" * 20), False),        # too long
    ("D", ("A-B", "C"), False),                    # ambiguous with ("A", "B-C")
    ("V", ("V/1",), False),                        # '/' is not allowed in a Table RowKey
    ("V", ("V#1",), False),
])
def test_external_codes_are_stable_short_and_safe_row_keys(letter, parts, natural):
    code = external_code(CID, letter, *parts)
    assert code == external_code(CID, letter, *parts)
    assert len(code) <= 36
    assert not any(c in code for c in "/\\#?")
    assert (code == "-".join([f"BC-5d0c7a1e-{letter}", *parts])) is natural


def test_external_codes_differ_per_company_and_never_collide_across_separators():
    assert external_code(CID, "V", "V1") != external_code("6e0c7a1e-0000-4000-8000-00000000c002", "V", "V1")
    assert external_code(CID, "D", "A-B", "C") != external_code(CID, "D", "A", "B-C")


# -- canonical JSON and hashes -----------------------------------------------------------------------
@pytest.mark.parametrize("a, b", [
    ({"b": 1, "a": 2}, {"a": 2, "b": 1}),
    ({"a": 1.0}, {"a": 1}),
    ({"a": Decimal("1.50")}, {"a": 1.5}),
    ({"a": 1, "n": None}, {"a": 1}),
    ({"x": [{"b": True, "a": "é"}]}, {"x": [{"a": "é", "b": True}]}),
])
def test_canonical_form_ignores_key_order_number_spelling_and_nulls(a, b):
    assert canonical_bytes(a) == canonical_bytes(b)
    assert content_hash(canonical_bytes(a)) == content_hash(canonical_bytes(b))


def test_canonical_bytes_are_what_the_client_sends():
    from shared.clients.basware import dumps

    record = canonical(map_vendor(vendor(displayName="Müller & Søn"), CTX))
    assert dumps([record]) == b"[" + canonical_bytes(record) + b"]"


def test_any_field_change_changes_the_hash():
    one = pending(map_vendor(vendor(), CTX), "new")
    assert pending(map_vendor(vendor(), CTX), "new").hash == one.hash
    assert pending(map_vendor(vendor(displayName="Baltic Bearings AB"), CTX), "new").hash != one.hash
    assert pending(map_vendor(vendor(blocked="All"), CTX), "new").hash != one.hash


# -- batcher ---------------------------------------------------------------------------------------
def _items(n: int, pad: int = 0):
    return [pending({"externalCode": f"E{i:05d}", "pad": "x" * pad}, "new") for i in range(n)]


def _batches(batcher: Batcher, items) -> list:
    out = [b for b in (batcher.add(i) for i in items) if b is not None]
    last = batcher.flush()
    return out + ([last] if last else [])


@pytest.mark.parametrize("count, limit, sizes", [
    (0, 200, []), (1, 200, [1]), (200, 200, [200]), (201, 200, [200, 1]), (2000, 200, [200] * 10),
    (1234, 500, [500, 500, 234]),
])
def test_batcher_respects_the_record_limit(count, limit, sizes):
    assert [len(b.items) for b in _batches(Batcher(limit), _items(count))] == sizes


def test_batcher_respects_the_byte_limit_measured_on_the_serialized_body():
    items = _items(50, pad=1000)
    one = items[0].size
    max_bytes = 2 + 10 * one + 9  # exactly ten records with their commas and brackets
    batches = _batches(Batcher(500, max_bytes), items)
    assert [len(b.items) for b in batches] == [10] * 5
    for b in batches:
        body = json.dumps(b.records(), separators=(",", ":"), ensure_ascii=False).encode()
        assert len(body) == b.size <= max_bytes


def test_batcher_six_megabytes_of_large_vendors():
    items = _items(400, pad=40_000)  # ~40 kB each: the byte limit bites before the count of 200
    batches = _batches(Batcher(200), items)
    assert all(b.size <= 6_000_000 for b in batches) and sum(len(b.items) for b in batches) == 400
    assert max(len(b.items) for b in batches) < 200


def test_a_record_larger_than_a_request_is_refused_alone():
    batcher = Batcher(200, max_bytes=100)
    with pytest.raises(RecordTooLarge):
        batcher.add(_items(1, pad=200)[0])
    assert batcher.flush() is None
