"""Pure parts of the dimension handling: what is nested, what is corrected, what is learned, and the
clerk's wording of vendor rules and BC's posting refusals."""
from __future__ import annotations

from shared.flows.invoices.dimensions import (AccountDefaults, DefaultDimension, explain_posting_refusal,
                                              normalise_rule, plan, reconcile, vendor_defaults_from,
                                              vendor_rule_problems)
from shared.flows.invoices.ownership import code_upper, same_number

LINES = "purchaseInvoiceLines"


def body(*lines: tuple[str, dict[str, str]]) -> dict:
    return {"vendorNumber": "V1", LINES: [
        {"sequence": 10000 * i, "lineObjectNumber": account,
         "dimensionSetLines": [{"code": c, "valueCode": v} for c, v in dims.items()]}
        for i, (account, dims) in enumerate(lines, start=1)]}


def test_rules_are_read_in_every_spelling_bc_uses():
    assert normalise_rule("Code_x0020_Mandatory") == normalise_rule("Code_Mandatory") == "Code Mandatory"
    assert normalise_rule(" ") == "" and normalise_rule(None) == ""
    found = vendor_defaults_from([{"parentType": "Vendor", "parentId": "ABC", "dimensionCode": "dept",
                                   "dimensionValueCode": "adm", "postingValidation": "Same_x0020_Code"},
                                  {"parentType": "Customer", "parentId": "abc", "dimensionCode": "X"}],
                                 {"abc": "v1"})
    assert found == {"V1": (DefaultDimension("DEPT", "ADM", "Same Code"),)}


def test_only_codes_bc_will_not_inherit_are_nested():
    learned = AccountDefaults()
    learned.learn("c", "6120", {"AREA": "SOUTH"})
    sent, p = plan(body(("6200", {"DEPARTMENT": "ADM", "AREA": "NORTH"}), ("6120", {"AREA": "NORTH"}),
                        ("6300", {"PROJECT": "P1"})),
                   LINES, [DefaultDimension("DEPARTMENT", "ADM")], "c", learned)
    nested = [[d["code"] for d in ln.get("dimensionSetLines", [])] for ln in sent[LINES]]
    assert nested == [["AREA"], [], ["PROJECT"]]
    assert p.relies_on_inheritance
    stripped, _ = plan(body(("6300", {"PROJECT": "P1"}), ("6120", {"AREA": "NORTH"})), LINES, [], "c", learned,
                       strip_unknown=True)
    assert [ln.get("dimensionSetLines") for ln in stripped[LINES]] == [None, None]  # 6300 unknown, 6120 inherited


def test_differences_become_patches_missing_codes_posts_and_account_defaults_are_learned():
    learned = AccountDefaults()
    _, p = plan(body(("6120", {"DEPARTMENT": "PROD", "AREA": "NORTH"})), LINES,
                [DefaultDimension("DEPARTMENT", "ADM")], "c", learned, strip_unknown=True)
    bc_lines = [{"id": "L1", "sequence": 10000, "dimensionSetLines": [
        {"id": "D1", "code": "DEPARTMENT", "valueCode": "ADM", "@odata.etag": "e1"},
        {"id": "D2", "code": "AREA", "valueCode": "SOUTH", "@odata.etag": "e2"}]}]
    fixes = reconcile(bc_lines, p, {"DEPARTMENT": "ADM"}, "c", learned)
    assert [(f.code, f.value, f.dimension_id, f.etag) for f in fixes] == [("DEPARTMENT", "PROD", "D1", "e1"),
                                                                        ("AREA", "NORTH", "D2", "e2")]
    assert learned.get("c", "6120") == {"AREA": "SOUTH"}  # not DEPARTMENT: that came from the header
    assert learned.get("other", "6120") is None


def test_vendor_rules_name_row_dimension_and_value():
    defaults = [DefaultDimension("DEPARTMENT", "IT", "Same Code"), DefaultDimension("AREA", "", "Code Mandatory"),
                DefaultDimension("PROJECT", "", "No Code"), DefaultDimension("COSTTYPE", "", "Code Mandatory")]
    rows = [("row 1", {"DEPARTMENT": "FIN", "AREA": "NORTH"}), ("row 2", {"PROJECT": "P1"})]
    assert vendor_rule_problems("V9", defaults, rows, {"DEPARTMENT", "AREA", "PROJECT"}) == [
        "row 1: DEPARTMENT must be IT for vendor V9, coded FIN",
        "row 2: AREA is mandatory for vendor V9; code a value",
        "row 2: PROJECT must be empty for vendor V9, coded P1",
        "vendor V9 requires a COSTTYPE value, which Basware does not code (give the vendor a default COSTTYPE in BC)"]
    assert vendor_rule_problems("V9", [DefaultDimension("DEPARTMENT", "IT", "Same Code")],
                                [("row 1", {})], {"DEPARTMENT"}) == []  # inherits IT


def test_bc_posting_refusals_are_said_with_the_rows_of_the_account():
    rows = [("row 1", "6300"), ("row 2", "6200"), ("row 3", "6200")]
    assert explain_posting_refusal("Select a Dimension Value Code for the Dimension Code PROJECT for G/L Account "
                                   "6200.", rows) == \
        "row 2, row 3 (account 6200): a PROJECT value is mandatory for G/L account 6200"
    assert explain_posting_refusal("Select Dimension Value Code IT for the Dimension Code DEPARTMENT for Vendor "
                                   "V1. Currently it's FIN.", rows) == "DEPARTMENT must be IT for vendor V1, coded FIN"
    assert explain_posting_refusal("Posting Date is not within your range of allowed posting dates.", rows) is None


def test_vendor_invoice_numbers_compare_like_al_code_fields():
    assert code_upper("Straße-1") == "STRAßE-1" and code_upper("café") == "CAFÉ"
    assert same_number(" inv-1 ", "INV-1") and not same_number("STRASSE", "straße")
