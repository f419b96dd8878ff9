"""Mapping a Basware accounting document to a BC deep-insert body: pure, table-driven."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from sandbox import seed
from shared.flows.invoices.mapping import (CLERK_MESSAGE_MAX, Ledger, MappingRules, as_date, clerk_message, map_document,
                            totals_problem)
from shared.models.basware import AccountingDocument
from shared.models.bc import Account, Vendor
from shared.core.settings import DimensionMapping


def _ledger() -> Ledger:
    values: dict[str, set[str]] = {}
    dims = {d["id"]: d["code"] for d in seed.dimensions()}
    for value in seed.dimension_values():
        values.setdefault(dims[value["dimensionId"]], set()).add(value["code"])
    return Ledger(
        lcy=seed.LCY,
        vendors={v["number"]: Vendor.model_validate(v) for v in seed.vendors()},
        accounts={a["number"]: Account.model_validate(a) for a in seed.accounts()},
        dimension_values={k: frozenset(v) for k, v in values.items()},
    )


LEDGER = _ledger()
RULES = MappingRules(tuple(DimensionMapping(**d) for d in seed.DIMENSION_MAP), seed.TAX_CODE_MAP)


def _doc(vendor="V10010", number="INV-1", rows=None, **overrides) -> AccountingDocument:
    rows = rows if rows is not None else [seed.coding_row(1, "6200", seed.money("100.00"), invoice_key="k")]
    raw = seed.accounting_document(1, vendor, number, rows)
    raw.update(overrides)
    # through JSON like the client: numbers become Decimal, never float
    return AccountingDocument.model_validate(json.loads(json.dumps(raw, default=str), parse_float=Decimal))


def test_an_invoice_becomes_one_purchase_invoice_deep_insert():
    rows = [seed.coding_row(1, "6200", seed.money("100.00"), "S25", "PROD", "P-1001", "NORTH", invoice_key="k"),
            seed.coding_row(3, "5130", seed.money("40.50"), "R12", "ADM", None, None, invoice_key="k")]
    mapped = map_document(_doc(rows=rows, dueDate="2026-12-02T00:00:00Z", voucherDate=None), LEDGER, RULES)
    assert mapped.ok, mapped.problems
    assert mapped.entity == "purchaseInvoices"
    body = mapped.body
    assert body["vendorNumber"] == "V10010"
    assert body["vendorInvoiceNumber"] == "INV-1"
    assert body["invoiceDate"] == body["postingDate"] == "2026-11-03"
    assert body["dueDate"] == "2026-12-02"
    assert "currencyCode" not in body  # LCY is blank in BC
    first, second = body["purchaseInvoiceLines"]
    assert first == {"sequence": 10000, "lineType": "Account", "lineObjectNumber": "6200",
                     "description": "Invoice INV-1 from V10010", "quantity": Decimal(1),
                     "unitCost": Decimal("100.00"), "taxCode": "STANDARD",
                     "dimensionSetLines": [{"code": "DEPARTMENT", "valueCode": "PROD"},
                                           {"code": "PROJECT", "valueCode": "P-1001"},
                                           {"code": "AREA", "valueCode": "NORTH"}]}
    assert second["lineObjectNumber"] == "5130" and second["taxCode"] == "REDUCED"
    assert second["unitCost"] == Decimal("40.50")
    assert second["dimensionSetLines"] == [{"code": "DEPARTMENT", "valueCode": "ADM"}]
    assert mapped.gross == Decimal("125.00") + Decimal("45.36")
    assert mapped.tax == Decimal("25.00") + Decimal("4.86")


def test_a_credit_note_becomes_a_purchase_credit_memo_with_positive_amounts():
    rows = [seed.coding_row(1, "6200", seed.money("-80.00"), invoice_key="c")]
    mapped = map_document(_doc(number="CN-7", rows=rows), LEDGER, RULES)
    assert mapped.ok and mapped.is_credit_memo
    assert mapped.entity == "purchaseCreditMemos"
    assert mapped.body["vendorCreditMemoNumber"] == "CN-7"
    assert "vendorInvoiceNumber" not in mapped.body
    assert mapped.body["creditMemoDate"] == "2026-11-03"
    (line,) = mapped.body["purchaseCreditMemoLines"]
    assert line["unitCost"] == Decimal("80.00") and line["quantity"] == 1
    assert mapped.gross == Decimal("100.00") and mapped.tax == Decimal("20.00")


def test_foreign_currency_is_sent_and_the_voucher_date_is_the_posting_date():
    mapped = map_document(_doc(currencyCode="usd", voucherDate="2026-11-20T00:00:00Z"), LEDGER, RULES)
    assert mapped.body["currencyCode"] == "USD"
    assert mapped.body["postingDate"] == "2026-11-20"


def test_unmapped_tax_codes_pass_through_and_rows_without_tax_code_send_none():
    rows = [seed.coding_row(1, "6200", seed.money("10.00"), invoice_key="t")]
    rows[0]["taxCode"] = "EXEMPT"
    rows.append(dict(seed.coding_row(2, "6210", seed.money("5.00"), invoice_key="t"), taxCode=None))
    lines = map_document(_doc(rows=rows), LEDGER, RULES).body["purchaseInvoiceLines"]
    assert lines[0]["taxCode"] == "EXEMPT"
    assert "taxCode" not in lines[1]


def test_long_descriptions_are_shortened_to_100_characters():
    mapped = map_document(_doc(description="x" * 300), LEDGER, RULES)
    assert len(mapped.body["purchaseInvoiceLines"][0]["description"]) == 100


def _row(**kw):
    base = dict(index=1, account="6200", net=seed.money("100.00"), invoice_key="p")
    base.update(kw)
    return seed.coding_row(base.pop("index"), base.pop("account"), base.pop("net"), **base)


# (case, document overrides, expected problem texts, master-data problem?)
PROBLEMS = [
    ("unknown vendor", dict(vendor="V99999"), ["vendor V99999 does not exist"], True),
    ("vendor blocked All", dict(vendor=seed.BLOCKED_VENDOR), [f"vendor {seed.BLOCKED_VENDOR} is blocked"], True),
    ("no supplier code", dict(supplierCode=""), ["the invoice has no supplier code"], False),
    ("unknown account", dict(rows=[_row(account="6999")]), ["account 6999 does not exist"], True),
    ("blocked account", dict(rows=[_row(account=seed.BLOCKED_ACCOUNT)]), ["account 6900 is blocked"], True),
    ("heading account", dict(rows=[_row(account=seed.HEADING_ACCOUNT)]),
     ["account 6000 is not a posting account", "account 6000 does not allow direct posting"], True),
    ("no direct posting", dict(rows=[_row(account=seed.NON_DIRECT_ACCOUNT)]),
     ["account 2000 does not allow direct posting"], True),
    ("row without account", dict(rows=[dict(_row(), accountCode=None)]), ["row 1 has no account"], False),
    ("row without amount", dict(codingRows=[dict(_row(), netTotal=None)]), ["row 1 has no net amount"], False),
    ("unknown dimension value", dict(rows=[_row(department="NOPE")]), ["DEPARTMENT value NOPE does not exist"],
     True),
    ("no coding rows", dict(rows=[]), ["the invoice has no coding rows"], False),
    ("no invoice number", dict(invoiceNumber=""), ["the invoice has no invoice number"], False),
    ("invoice number over 35", dict(number="N" * 36),
     [f"invoice number {'N' * 20}\u2026 has 36 characters, BC allows 35"], False),
    ("no invoice date", dict(invoiceDate=None), ["the invoice date is missing or not a date"], False),
    ("invoice date not a date", dict(invoiceDate="soon"), ["the invoice date is missing or not a date"], False),
    ("no gross total", dict(grossSum=None), ["the invoice has no gross total"], False),
]


@pytest.mark.parametrize("case, overrides, expected, master_data", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_each_problem_is_named_for_the_clerk(case, overrides, expected, master_data):
    kw = {k: overrides.pop(k) for k in ("vendor", "number", "rows") if k in overrides}
    mapped = map_document(_doc(**kw, **overrides), LEDGER, RULES)
    assert not mapped.ok
    assert [p.text for p in mapped.problems] == expected
    assert mapped.master_data_problem is master_data
    message = mapped.clerk_message()
    assert message.startswith("Not transferred to Business Central: ")
    assert message.endswith("Fix in BC or recode, then re-transfer.")
    assert len(message) <= CLERK_MESSAGE_MAX
    assert expected[0] in message


def test_all_problems_of_a_document_come_in_one_message():
    rows = [_row(account="6900", department="NOPE"), _row(index=2, account="6999")]
    mapped = map_document(_doc(vendor="V99999", rows=rows), LEDGER, RULES)
    assert mapped.clerk_message() == (
        "Not transferred to Business Central: vendor V99999 does not exist; account 6900 is blocked; "
        "DEPARTMENT value NOPE does not exist; account 6999 does not exist. Fix in BC or recode, then re-transfer.")


def test_a_dimension_missing_in_bc_is_named():
    rules = MappingRules((DimensionMapping(dimension="REGION", basware_field="dimCode1", target="list:ACC_LIST_1"),))
    mapped = map_document(_doc(), LEDGER, rules)
    assert [p.text for p in mapped.problems] == ["dimension REGION does not exist"]


def test_codes_compare_case_insensitively_like_bc_code_fields():
    rows = [_row(department="prod", area="north")]
    assert map_document(_doc(vendor="v10010", rows=rows), LEDGER, RULES).ok


@pytest.mark.parametrize("problems, expect_in, expect_more", [
    ([f"account {6000 + i} does not exist" for i in range(30)], "account 6000 does not exist", "more problems"),
    (["x" * 400], "x" * 50, None),
    ([], "unknown problem", None),
    (["a", "a", "b"], "a; b.", None),
])
def test_clerk_message_is_at_most_250_characters(problems, expect_in, expect_more):
    message = clerk_message(problems)
    assert len(message) <= 250
    assert expect_in in message
    assert message.endswith("Fix in BC or recode, then re-transfer.")
    if expect_more:
        assert expect_more in message


@pytest.mark.parametrize("value, expected", [
    ("2026-11-02T00:00:00Z", "2026-11-02"), ("2026-11-02", "2026-11-02"), ("2026-11-02T23:59:59+05:00", "2026-11-02"),
    (None, None), ("", None), ("02/11/2026", None), ("2026-13-01", None),
])
def test_dates(value, expected):
    assert as_date(value) == expected


@pytest.mark.parametrize("bc_gross, bc_tax, ok", [
    (Decimal("125.00"), Decimal("25.00"), True),
    (Decimal("125.01"), Decimal("25.00"), True),     # within the 0.01 tolerance
    (Decimal("125.02"), Decimal("25.00"), False),
    (Decimal("125.00"), Decimal("24.90"), False),
    (Decimal("-125.00"), Decimal("-25.00"), True),   # credit memos compare absolute values
    (None, None, False),
])
def test_totals_check_names_both_totals(bc_gross, bc_tax, ok):
    mapped = map_document(_doc(), LEDGER, RULES)
    problem = totals_problem(mapped, bc_gross, bc_tax, Decimal("0.01"))
    assert (problem is None) is ok
    if not ok:
        assert "125.00" in problem and "Basware has gross 125.00 (VAT 25.00)" in problem


def test_unknown_fields_and_statuses_are_tolerated():
    doc = _doc(processingStatus="SomethingNew", brandNewField={"x": 1})
    assert doc.processing_status == "SomethingNew"
    assert map_document(doc, LEDGER, RULES).ok
