"""Payments, BC -> Basware: one payment response when an invoice this connector posted is Paid."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from shared.bc_client import CREDIT_MEMOS, INVOICES
from shared.models.basware import PaymentResponse
from shared.models.bc import PurchaseDocument
from shared.payments import (PostedDocument, build_payment_response, facts_from_ledger, facts_without_ledger,
                             new_external_code)

POSTED = PostedDocument("job-1", "basware-invoice-1", "company-1", INVOICES, "108001")
DETECTED_AT = datetime(2026, 11, 21, 9, 30, tzinfo=timezone.utc)


def _doc(total="1250.00", number="108001") -> PurchaseDocument:
    return PurchaseDocument.model_validate({"id": "d1", "number": number, "status": "Paid",
                                            "totalAmountIncludingTax": Decimal(total)})


# -- pure parts -----------------------------------------------------------------------------------
def test_every_field_is_sent_even_when_empty_because_basware_clears_fields_left_out():
    body = build_payment_response("code-1", POSTED, facts_without_ledger(_doc(), DETECTED_AT))
    sent = body.model_dump()  # what BaswareClient.send_payment_response puts on the wire
    schema_fields = {"externalCode", "success", "paymentBlock", "paymentDate", "paidTotal", "paymentMethod",
                     "paymentTermCode", "cashDiscount", "checkNumber", "paymentMessage", "paymentNumber",
                     "paymentDocument", "paymentReversalDocument", "responseMessage", "sourceSystem"}
    assert set(sent) == schema_fields
    assert sent["success"] is True and sent["paymentBlock"] is False
    assert sent["paymentMethod"] is None and sent["paymentReversalDocument"] is None


def test_without_vendor_ledger_entries_the_detection_time_and_document_total_are_used_and_said():
    facts = facts_without_ledger(_doc("1250.00"), DETECTED_AT)
    body = build_payment_response("code-1", POSTED, facts)
    assert body.paidTotal == Decimal("1250.00")
    assert body.paymentDate == "2026-11-21T09:30:00Z"
    assert body.paymentDocument is None
    assert facts.source == "detection time" and "paymentDate is the time the connector saw" in facts.note
    assert "detected" in body.responseMessage


def test_vendor_ledger_entries_give_payment_date_amount_and_reference():
    rows = [
        {"vleEntryNo": 7, "vleOpen": False, "vleClosedAtDate": "2026-11-25", "dvleEntryType": "Initial Entry",
         "dvleDocumentType": "Invoice", "dvleDocumentNo": "108001", "dvlePostingDate": "2026-11-02",
         "dvleAmount": Decimal("-1250.00")},
        {"vleEntryNo": 7, "vleOpen": False, "vleClosedAtDate": "2026-11-25", "dvleEntryType": "Application",
         "dvleDocumentType": "Payment", "dvleDocumentNo": "PMT-0042", "dvlePostingDate": "2026-11-20",
         "dvleAmount": Decimal("1000.00")},
        {"vleEntryNo": 7, "vleOpen": False, "vleClosedAtDate": "2026-11-25", "dvleEntryType": "Application",
         "dvleDocumentType": "Payment", "dvleDocumentNo": "PMT-0057", "dvlePostingDate": "2026-11-25",
         "dvleAmount": Decimal("250.00")},
    ]
    facts = facts_from_ledger(rows)
    assert facts is not None and facts.source == "vendorLedgerEntries"
    assert facts.paid_total == Decimal("1250.00")
    assert facts.payment_date == "2026-11-25T00:00:00Z"
    assert facts.payment_document == "PMT-0057"
    body = build_payment_response("code-1", POSTED, facts)
    assert body.paymentDocument == "PMT-0057" and "detected" not in body.responseMessage


def test_ledger_rows_without_an_application_give_no_facts():
    assert facts_from_ledger([{"dvleEntryType": "Initial Entry", "dvlePostingDate": "2026-11-02"}]) is None
    assert facts_from_ledger([]) is None


def test_a_paid_credit_memo_reports_a_negative_total_like_the_basware_credit_note():
    posted = PostedDocument("job-2", "basware-cn-1", "company-1", CREDIT_MEMOS, "109001")
    body = build_payment_response("code-2", posted, facts_without_ledger(_doc("80.00", "109001"), DETECTED_AT))
    assert body.paidTotal == Decimal("-80.00")
    assert body.responseMessage.startswith("Credit memo 109001")


def test_external_codes_are_fresh_and_fit_basware():
    codes = {new_external_code() for _ in range(100)}
    assert len(codes) == 100 and all(1 <= len(c) <= 36 for c in codes)


def test_the_response_is_valid_against_basware_schema():
    openapi = pytest.importorskip("sandbox.openapi")
    body = build_payment_response("code-1", POSTED, facts_without_ledger(_doc(), DETECTED_AT))
    wire = json.loads(json.dumps(body.model_dump(), default=float))
    assert openapi.validate("PaymentResponseEntity", wire) == []


def test_payment_response_model_refuses_values_basware_would_refuse():
    with pytest.raises(ValueError):
        PaymentResponse(externalCode="x" * 37)
