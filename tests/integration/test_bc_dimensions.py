"""The invoice flow against BC's default dimensions and gross-price vendors, over real HTTP (the BC
sandbox models BC's inheritance, clashes and posting rules: sandbox/bc/defaults.py)."""
from __future__ import annotations

from decimal import Decimal

from sandbox import seed
from tests.integration.test_invoice_flow import (Worker, api_calls, assert_matches, assert_posted_once,  # noqa: F401
                                                 bc_documents, env, is_draft_index_read, only, pump, settled,
                                                 steps, transfer_responses, webhook)

CREATE = r"/purchase(Invoices|CreditMemos)$"


def invoice(seq: int, vendor: str, number: str, rows: list[dict]) -> dict:
    return seed.accounting_document(seq, vendor, number, rows)


def row(index: int, account: str, net: str, key: str, **dims) -> dict:
    return seed.coding_row(index, account, seed.money(net), invoice_key=key, **dims)


def run(rt, basware, docs: list[dict]) -> None:
    for doc in docs:
        webhook(rt, doc["invoiceId"])
        pump(Worker(rt), until=settled(rt, [doc["invoiceId"]]))


def document_calls(bc, since: int) -> list:
    return [c for c in api_calls(bc, since) if "/purchase" in c.path and not is_draft_index_read(c)]


def line_dims(posted) -> list[dict[str, str]]:
    return [{code: e.value_code for code, e in ln.dims.items()} for ln in sorted(posted.lines, key=lambda ln: ln.sequence)]


def test_coding_that_agrees_with_the_vendor_default_costs_no_extra_request(rt, basware_sandbox, bc_sandbox):
    assert seed.VENDOR_DEFAULT_DIMENSIONS["V10030"] == [("DEPARTMENT", "ADM", " ")]
    warm = invoice(800, "V10010", "WARM-1", [row(1, "6200", "10.00", "warm")])
    agrees = invoice(801, "V10030", "AGREE-1", [row(1, "6200", "100.00", "agree", department="ADM", area="WEST"),
                                                row(2, "6300", "50.00", "agree", department=None, area="EAST")])
    only(basware_sandbox, [warm, agrees])
    run(rt, basware_sandbox, [warm])
    mark = bc_sandbox.calls.since(0)[-1].seq
    run(rt, basware_sandbox, [agrees])
    calls = document_calls(bc_sandbox, mark)
    assert [(c.method, c.path.rsplit("/", 1)[-1].split("(")[0]) for c in calls] == [
        ("POST", "purchaseInvoices"), ("POST", "Microsoft.NAV.post"), ("GET", "purchaseInvoices")]
    sent = calls[0].body["purchaseInvoiceLines"]
    assert [[d["code"] for d in ln.get("dimensionSetLines", [])] for ln in sent] == [["AREA"], ["AREA"]]
    assert sent[0]["description2"].startswith("mlc:")  # the connector's marker
    posted = assert_posted_once(basware_sandbox, bc_sandbox, agrees)
    # the row that coded no department carries the inherited ADM: the coding did not touch it
    assert line_dims(posted) == [{"DEPARTMENT": "ADM", "AREA": "WEST"}, {"DEPARTMENT": "ADM", "AREA": "EAST"}]


def test_a_value_that_differs_from_the_vendor_default_costs_one_patch_per_line(rt, basware_sandbox, bc_sandbox):
    doc = invoice(802, "V10030", "DIFFER-1", [row(1, "6200", "100.00", "differ", department="PROD"),
                                              row(2, "6300", "20.00", "differ", department="PROD"),
                                              row(3, "6310", "30.00", "differ", department="ADM")])
    only(basware_sandbox, [doc])
    run(rt, basware_sandbox, [doc])
    posted = assert_posted_once(basware_sandbox, bc_sandbox, doc)
    assert_matches(posted, doc)
    patches = bc_sandbox.calls.find("PATCH", r"/dimensionSetLines\(")
    assert len(patches) == 2 and all(p.body == {"valueCode": "PROD"} for p in patches)
    assert not bc_sandbox.calls.find("POST", r"/dimensionSetLines$")
    assert ("dimensions", "corrected") in steps(rt, doc["invoiceId"])


def test_an_account_default_is_learned_from_one_clash_and_never_clashes_again(rt, basware_sandbox, bc_sandbox):
    assert seed.ACCOUNT_DEFAULT_DIMENSIONS["6120"] == [("AREA", "SOUTH", " ")]  # not readable in API v2.0
    first = invoice(803, "V10010", "LEARN-1", [row(1, "6120", "80.00", "learn1", department="PROD", area="NORTH"),
                                               row(2, "6200", "10.00", "learn1", department="FIN", area="WEST")])
    second = invoice(804, "V10020", "LEARN-2", [row(1, "6120", "90.00", "learn2", department="ADM", area="EAST")])
    only(basware_sandbox, [first, second])
    run(rt, basware_sandbox, [first])
    posted = assert_posted_once(basware_sandbox, bc_sandbox, first)
    assert_matches(posted, first)
    creates = bc_sandbox.calls.find("POST", CREATE)
    assert [c.status for c in creates] == [400, 201]  # one clash, nothing stored by it
    assert ("create_draft", "clash") in steps(rt, first["invoiceId"])

    mark = bc_sandbox.calls.since(0)[-1].seq
    run(rt, basware_sandbox, [second])
    posted = assert_posted_once(basware_sandbox, bc_sandbox, second)
    assert_matches(posted, second)
    calls = document_calls(bc_sandbox, mark)
    assert [c.status for c in calls if c.method == "POST" and c.path.endswith("purchaseInvoices")] == [201]
    nested = calls[0].body["purchaseInvoiceLines"][0]["dimensionSetLines"]
    assert [d["code"] for d in nested] == ["DEPARTMENT"]  # AREA left to the account's learned default ...
    assert [c.body for c in calls if c.method == "PATCH"] == [{"valueCode": "EAST"}]  # ... and corrected
    assert len(calls) == 4


def test_a_breach_of_the_vendor_dimension_rule_fails_before_anything_is_written(rt, basware_sandbox, bc_sandbox):
    doc = next(d for d in seed.broken_invoices() if d["invoiceNumber"] == "BRK-SAME-CODE")
    only(basware_sandbox, [doc])
    run(rt, basware_sandbox, [doc])
    (response,) = transfer_responses(basware_sandbox, doc["invoiceId"])
    assert response["success"] is False
    assert "row 1: DEPARTMENT must be IT for vendor V10380, coded FIN" in response["responseMessage"]
    assert not bc_sandbox.calls.find("POST", CREATE) and bc_documents(bc_sandbox) == []


def test_a_posting_refusal_for_an_account_rule_names_the_row_and_leaves_no_draft(rt, basware_sandbox, bc_sandbox):
    bc_sandbox.set_default_dimension("G/L Account", "6200", "PROJECT", None, "Code Mandatory")
    doc = invoice(805, "V10010", "MANDATORY-1", [row(1, "6300", "10.00", "mand", project="P-1001"),
                                                 row(2, "6200", "20.00", "mand")])
    only(basware_sandbox, [doc])
    run(rt, basware_sandbox, [doc])
    (response,) = transfer_responses(basware_sandbox, doc["invoiceId"])
    assert response["success"] is False
    assert "row 2 (account 6200): a PROJECT value is mandatory for G/L account 6200" in response["responseMessage"]
    assert bc_documents(bc_sandbox) == []
    assert ("post", "refused") in steps(rt, doc["invoiceId"]) and ("delete_draft", "ok") in steps(rt, doc["invoiceId"])


def test_a_gross_price_vendor_gets_net_amounts_posted_with_basware_totals(rt, basware_sandbox, bc_sandbox):
    assert "V10060" in seed.PRICES_INCLUDING_VAT_VENDORS
    doc = invoice(806, "V10060", "GROSS-1", [row(1, "6200", "100.00", "gross", tax_code="S25"),
                                             row(2, "6300", "40.00", "gross", tax_code="R12")])
    only(basware_sandbox, [doc])
    run(rt, basware_sandbox, [doc])
    posted = assert_posted_once(basware_sandbox, bc_sandbox, doc)
    assert_matches(posted, doc)
    assert posted["pricesIncludeTax"] is False
    assert Decimal(str(posted["totalAmountIncludingTax"])) == Decimal("169.80")  # 125.00 + 44.80
    (create,) = bc_sandbox.calls.find("POST", CREATE)
    assert create.body["pricesIncludeTax"] is False


def test_a_correction_whose_answer_is_lost_is_read_back_not_sent_twice(rt, basware_sandbox, bc_sandbox):
    doc = invoice(807, "V10030", "LOSTFIX-1", [row(1, "6200", "100.00", "lostfix", department="PROD")])
    only(basware_sandbox, [doc])
    # BC applies the PATCH, the answer never arrives
    bc_sandbox.late_commits.add(r"/dimensionSetLines\(", method="PATCH", count=1, delay=0.3, commit_after=0.0)
    run(rt, basware_sandbox, [doc])
    posted = assert_posted_once(basware_sandbox, bc_sandbox, doc)
    assert_matches(posted, doc)
    assert [c.status for c in bc_sandbox.calls.find("PATCH", r"/dimensionSetLines\(")] == [0]
    assert ("dimensions", "unclear") in steps(rt, doc["invoiceId"])
