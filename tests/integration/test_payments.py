"""Payments, BC -> Basware: one payment response when an invoice this connector posted is Paid."""
from __future__ import annotations

import json
from pathlib import Path
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from shared.clients.bc import CREDIT_MEMOS, INVOICES
from shared.models.basware import PaymentResponse
from shared.models.bc import PurchaseDocument
from shared.flows.payments.respond import (PostedDocument, build_payment_response, facts_from_ledger, facts_without_ledger,
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
    from sandbox import openapi

    body = build_payment_response("code-1", POSTED, facts_without_ledger(_doc(), DETECTED_AT))
    wire = json.loads(json.dumps(body.model_dump(), default=float))
    assert openapi.validate("PaymentResponseEntity", wire) == []


def test_payment_response_model_refuses_values_basware_would_refuse():
    with pytest.raises(ValueError):
        PaymentResponse(externalCode="x" * 37)


# -- against the sandboxes (real HTTP) and a fresh Azurite -----------------------------------------------
import re  # noqa: E402

import httpx  # noqa: E402

from sandbox import seed  # noqa: E402
from shared.clients.http import RetryConfig  # noqa: E402
from shared.store.jobs import DONE, job_id  # noqa: E402
from shared.models.messages import CallbackMessage, InvoiceTransferMessage, PaymentCheckMessage  # noqa: E402
from shared.flows.payments.respond import KIND, check_payment, poll_payments, send_payment_response  # noqa: E402
from shared.core.runtime import build_runtime  # noqa: E402
from shared.core.settings import load_settings  # noqa: E402
from shared.store.storage import BASWARE_CALLBACKS, INVOICE_TRANSFERS, PAYMENT_CHECKS  # noqa: E402
from shared.flows.payments.subscriptions import ensure_subscriptions  # noqa: E402
from tests.integration.test_notifications import NotificationReceiver  # noqa: E402

FAST_RETRY = RetryConfig(max_attempts=4, backoff_base=0.02, backoff_max=0.2, max_inline_wait=2)
FULL_FIELD_SET = {"externalCode", "success", "paymentBlock", "paymentDate", "paidTotal", "paymentMethod",
                  "paymentTermCode", "cashDiscount", "checkNumber", "paymentMessage", "paymentNumber",
                  "paymentDocument", "paymentReversalDocument", "responseMessage", "sourceSystem"}


def runtime_for(env, transport=None, **overrides):
    return build_runtime(load_settings({**env, **overrides}), transport=transport, retry=FAST_RETRY)


def drain(rt, rounds: int = 40) -> None:
    """Play the host's queue triggers until every queue is empty (errors propagate: none expected)."""
    from shared.flows.callbacks import handle_callback
    from shared.flows.invoices.transfer import transfer_invoice

    handlers = {
        INVOICE_TRANSFERS: lambda body: transfer_invoice(rt, InvoiceTransferMessage.model_validate_json(body)),
        BASWARE_CALLBACKS: lambda body: handle_callback(rt, CallbackMessage.model_validate_json(body)),
        PAYMENT_CHECKS: lambda body: check_payment(rt, PaymentCheckMessage.model_validate_json(body)),
    }
    for _ in range(rounds):
        worked = 0
        for queue, handler in handlers.items():
            client = rt.storage.queue(queue)
            for msg in client.receive_messages(max_messages=16, visibility_timeout=30):
                handler(msg.content)
                client.delete_message(msg)
                worked += 1
        if not worked:
            return
    raise AssertionError("queues did not drain")


def post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox, credit: bool = False) -> tuple[dict, object]:
    """A Basware invoice transferred by this connector: (Basware document, posted BC document)."""
    doc = next(d for d in basware_sandbox.documents.values()
               if d["processingStatus"] == "WaitingForTransfer" and (d["grossSum"] < 0) == credit)
    rt.storage.enqueue(INVOICE_TRANSFERS, InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
    drain(rt)
    assert basware_sandbox.document_status(doc["invoiceId"]) == "Transferred"
    from shared.flows.invoices.transfer import invoice_job_id
    job = rt.jobs.get("invoice", invoice_job_id(doc["invoiceId"]))
    assert job.state == DONE
    return doc, bc_sandbox.documents[job.get("bc_id")]


def post_outside_the_connector(rt, bc_sandbox, vendor_invoice_number: str = "MANUAL-4711") -> object:
    """An invoice someone keyed into BC by hand: never transferred by this connector."""
    from shared.clients.bc import INVOICES

    body = {"vendorNumber": "V10010", "vendorInvoiceNumber": vendor_invoice_number, "postingDate": "2026-11-10",
            "purchaseInvoiceLines": [{"lineType": "Account", "lineObjectNumber": "6200", "quantity": 1,
                                      "unitCost": 100, "taxCode": "STANDARD"}]}
    draft = rt.bc.create_document(seed.COMPANY_ID, INVOICES, body)
    rt.bc.post_document(seed.COMPANY_ID, INVOICES, draft.id)
    return bc_sandbox.documents[draft.id]


def payment_responses(basware_sandbox, invoice_id: str) -> list[dict]:
    return basware_sandbox.document(invoice_id)["paymentResponses"]


def payment_posts(basware_sandbox) -> list:
    return basware_sandbox.calls.find(method="POST", path=r"/paymentResponses$")


def assert_one_valid_payment_response(rt, basware_sandbox, doc: dict, bc_doc) -> dict:
    from sandbox import openapi

    (response,) = payment_responses(basware_sandbox, doc["invoiceId"])
    assert set(response) == FULL_FIELD_SET  # nulls sent explicitly: nothing left out to be cleared
    wire = json.loads(json.dumps(response, default=float))
    assert openapi.validate("PaymentResponseEntity", wire) == []
    assert response["success"] is True and response["paymentBlock"] is False
    sign = -1 if doc["grossSum"] < 0 else 1
    assert Decimal(str(response["paidTotal"])) == sign * Decimal(str(bc_doc["totalAmountIncludingTax"]))
    assert response["paymentDate"] and response["sourceSystem"] == "Business Central"
    assert basware_sandbox.document_status(doc["invoiceId"]) == "Paid"
    job = rt.jobs.get(KIND, job_id(KIND, bc_doc.id))
    assert job.state == DONE and job.get("external_code") == response["externalCode"]
    assert job.get("basware_id") == doc["invoiceId"] and job.get("bc_number") == bc_doc.number
    return response


@pytest.fixture
def receiver():
    holder = NotificationReceiver(lambda: holder.rt).start()
    yield holder
    holder.stop()


@pytest.fixture
def subscribed_rt(env, bc_sandbox, receiver):
    """The connector with a live BC subscription whose notifications reach the endpoint logic."""
    rt = runtime_for(env, BC_NOTIFICATION_URL=receiver.url)
    receiver.rt = rt
    assert ensure_subscriptions(rt, bc_sandbox.clock.now()) == {seed.COMPANY_ID: "created"}
    yield rt
    rt.close()


def test_a_paid_invoice_found_by_notification_gets_exactly_one_valid_payment_response(subscribed_rt, basware_sandbox,
                                                                                    bc_sandbox, receiver):
    rt = subscribed_rt
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    assert bc_sandbox.flush_notifications()
    drain(rt)

    response = assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    delivered = [b for m, q, b, s in receiver.requests if m == "POST" and b and bc_doc.id in b.decode()]
    assert delivered, "the payment was found through a BC notification"
    job = rt.jobs.get(KIND, job_id(KIND, bc_doc.id))
    assert job.get("detected_by") == "notification"
    # this tenant has no analytics API: the audit row says where the date came from
    (detected,) = [r for r in rt.audit.trail(job.id) if r["step"] == "detected"]
    assert "paymentDate is the time the connector saw" in detected["message"]
    assert response["paymentDocument"] is None


def test_a_collection_notification_triggers_a_filtered_re_read(subscribed_rt, basware_sandbox, bc_sandbox, receiver):
    rt = subscribed_rt
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.configure({"notification_threshold": 0})  # BC: "more than 1,000 changes" -> one collection item
    bc_sandbox.mark_paid(bc_doc.id)
    assert bc_sandbox.flush_notifications()
    last = json.loads(receiver.requests[-1][2])["value"]
    assert [i["changeType"] for i in last] == ["collection"]
    drain(rt)
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)


def test_a_missed_notification_is_caught_by_the_poll(env, basware_sandbox, bc_sandbox):
    rt = runtime_for(env)  # no subscription: every notification is "missed"
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    drain(rt)
    assert payment_responses(basware_sandbox, doc["invoiceId"]) == []

    poll_payments(rt)
    drain(rt)
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    assert rt.jobs.get(KIND, job_id(KIND, bc_doc.id)).get("detected_by") == "poll"
    poll_payments(rt)  # the next poll (watermark overlap) finds nothing new to send
    drain(rt)
    assert len(payment_posts(basware_sandbox)) == 1


def test_notification_poll_and_redeliveries_together_still_send_one_response(subscribed_rt, basware_sandbox,
                                                                             bc_sandbox):
    rt = subscribed_rt
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    assert bc_sandbox.flush_notifications()  # the notification's check is queued ...
    poll_payments(rt)                        # ... and so is the poll's
    rt.storage.enqueue(PAYMENT_CHECKS, PaymentCheckMessage(company_id=seed.COMPANY_ID, document_id=bc_doc.id,
                                                           source="notification"))  # a BC retry
    drain(rt)
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    # a redelivered send and a later poll change nothing
    pid = job_id(KIND, bc_doc.id)
    assert send_payment_response(rt, CallbackMessage(kind="payment", job_id=pid,
                                                     invoice_id=doc["invoiceId"])) == "already_sent"
    poll_payments(rt)
    drain(rt)
    assert len(payment_posts(basware_sandbox)) == 1


def test_no_payment_response_for_an_invoice_this_connector_did_not_post(subscribed_rt, basware_sandbox, bc_sandbox):
    rt = subscribed_rt
    manual = post_outside_the_connector(rt, bc_sandbox)
    bc_sandbox.mark_paid(manual.id)
    assert bc_sandbox.flush_notifications()
    poll_payments(rt)
    drain(rt)
    assert payment_posts(basware_sandbox) == []
    assert rt.jobs.get(KIND, job_id(KIND, manual.id)) is None


def test_a_paid_credit_memo_is_found_by_the_poll_and_reported_negative(env, basware_sandbox, bc_sandbox):
    rt = runtime_for(env)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox, credit=True)
    assert bc_doc.type.entity_set == "purchaseCreditMemos"
    bc_sandbox.mark_paid(bc_doc.id)
    poll_payments(rt)
    drain(rt)
    response = assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    assert Decimal(str(response["paidTotal"])) < 0


def test_the_analytics_ledger_gives_payment_date_amount_and_reference_where_the_tenant_has_it(env, basware_sandbox,
                                                                                             bc_sandbox):
    from sandbox.bc.analytics import enable_analytics, payment_number

    enable_analytics(bc_sandbox)
    rt = runtime_for(env)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    poll_payments(rt)
    drain(rt)
    response = assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    assert response["paymentDocument"] == payment_number(bc_doc, bc_sandbox.payment_ledger)
    assert response["paymentDate"] == bc_doc.last_modified[:10] + "T00:00:00Z"
    job = rt.jobs.get(KIND, job_id(KIND, bc_doc.id))
    assert job.get("payment_date_source") == "vendorLedgerEntries"


class LostReplyTransport(httpx.HTTPTransport):
    """The payment response reaches Basware, but its answer never comes back (a read timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and re.search(r"/paymentResponses$", request.url.path) and not self.lost:
            response.read()
            self.lost += 1
            raise httpx.ReadTimeout("the reply was lost", request=request)
        return response


def test_after_a_lost_reply_basware_is_asked_before_anything_is_sent_again(env, basware_sandbox, bc_sandbox):
    transport = LostReplyTransport()
    rt = runtime_for(env, transport=transport)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    poll_payments(rt)
    with pytest.raises(Exception):  # the queue would redeliver the callback
        drain(rt)
    assert transport.lost == 1
    pid = job_id(KIND, bc_doc.id)
    message = CallbackMessage(kind="payment", job_id=pid, invoice_id=doc["invoiceId"])
    assert send_payment_response(rt, message) == "already_recorded"
    assert len(payment_posts(basware_sandbox)) == 1
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    trail = [(r["step"], r["outcome"]) for r in rt.audit.trail(pid)]
    assert ("send", "retry") in trail and trail[-1] == ("send", "ok")


def _wait(condition, timeout: float = 45.0, what: str = "condition") -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_function_app_reports_a_payment_bc_notifies_end_to_end(env, app_process, basware_sandbox, bc_sandbox):
    """function_app.py under the local host: BC's handshake and notification reach the HTTP route,
    the queue triggers post the invoice, check the payment and send the one response."""
    app = app_process(env, "--no-timers")
    rt = runtime_for(env, BC_NOTIFICATION_URL=f"{app.base_url}/api/bc/notifications")
    assert ensure_subscriptions(rt, bc_sandbox.clock.now()) == {seed.COMPANY_ID: "created"}
    doc = next(d for d in basware_sandbox.documents.values()
               if d["processingStatus"] == "WaitingForTransfer" and d["grossSum"] > 0)
    rt.storage.enqueue(INVOICE_TRANSFERS, InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
    _wait(lambda: basware_sandbox.document_status(doc["invoiceId"]) == "Transferred", what="the transfer")
    from shared.flows.invoices.transfer import invoice_job_id
    bc_doc = bc_sandbox.documents[rt.jobs.get("invoice", invoice_job_id(doc["invoiceId"])).get("bc_id")]

    bc_sandbox.mark_paid(bc_doc.id)
    _wait(lambda: payment_responses(basware_sandbox, doc["invoiceId"]), what="the payment response")
    _wait(lambda: getattr(rt.jobs.get(KIND, job_id(KIND, bc_doc.id)), "state", None) == DONE, what="the job")
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    assert any(d["outcome"] == "delivered" and bc_doc.id in json.dumps(d["body"])
               for d in bc_sandbox.subscriptions.deliveries)
    rt.close()


def test_a_dead_lettered_send_is_replayed_by_an_operator_and_still_sent_once(env, basware_sandbox, bc_sandbox):
    from shared.ops.admin import replay_record
    from shared.store.deadletter import dead_letter
    from shared.store.jobs import DEAD_LETTERED

    rt = runtime_for(env)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    poll_payments(rt)
    basware_sandbox.faults.add(r"/paymentResponses$", count=100, status=503)  # Basware down for a while
    with pytest.raises(Exception):
        drain(rt)
    pid = job_id(KIND, bc_doc.id)
    callback = CallbackMessage(kind="payment", job_id=pid, invoice_id=doc["invoiceId"]).model_dump_json()
    dead_letter(rt, BASWARE_CALLBACKS, callback, "retries exhausted after 5 deliveries")  # the poison trigger
    assert rt.jobs.get(KIND, pid).state == DEAD_LETTERED
    assert payment_responses(basware_sandbox, doc["invoiceId"]) == []

    basware_sandbox.faults.clear()
    for q in (BASWARE_CALLBACKS,):  # the host had moved the message to the poison queue
        rt.storage.queue(q).clear_messages()
    assert replay_record(rt, KIND, pid).status == "enqueued"
    assert replay_record(rt, KIND, pid).status == "already_pending"  # safe to call twice
    drain(rt)
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    assert replay_record(rt, KIND, pid).status == "already_done"


def test_the_poll_watermark_moves_only_after_everything_read_was_enqueued(env, bc_sandbox, monkeypatch):
    from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError

    from shared.store.storage import SYNCSTATE

    rt = runtime_for(env)
    first = post_outside_the_connector(rt, bc_sandbox, "MANUAL-4711")
    second = post_outside_the_connector(rt, bc_sandbox, "MANUAL-4712")
    bc_sandbox.mark_paid(first.id)
    bc_sandbox.mark_paid(second.id)
    key = f"payments-{seed.COMPANY_ID}-purchaseInvoices"
    real_enqueue, sent = rt.storage.enqueue, []

    def flaky(queue, message, **kw):
        if sent:
            raise ServiceRequestError("queue unreachable")
        sent.append(message)
        real_enqueue(queue, message, **kw)

    monkeypatch.setattr(rt.storage, "enqueue", flaky)
    with pytest.raises(ServiceRequestError):
        poll_payments(rt)
    with pytest.raises(ResourceNotFoundError):
        rt.storage.table(SYNCSTATE).get_entity("watermark", key)  # not moved: the next poll reads both again
    monkeypatch.setattr(rt.storage, "enqueue", real_enqueue)
    assert poll_payments(rt)[key] == 2
    mark = rt.storage.table(SYNCSTATE).get_entity("watermark", key)["value"]
    assert mark == max(first.last_modified, second.last_modified)


# -- crash safety, paid before done, the index, partial payments --------------------------------------------
import time  # noqa: E402
from datetime import timedelta  # noqa: E402

from shared.core.errors import JobBusy  # noqa: E402
from shared.flows.payments.respond import PAYMENT_LEASE_SECONDS  # noqa: E402
from shared.store.storage import SYNCSTATE  # noqa: E402

QUICK = timedelta(seconds=1)  # deferred checks come back after a second here (15 s and more in production)


class Killed(BaseException):
    """The worker process dies here: nothing after this point runs (no except, no finally cleanup
    of ours catches a BaseException), so whatever it held stays held, as after a SIGKILL."""


def test_the_payment_lease_expires_well_before_the_queue_gives_up_on_a_message():
    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())["extensions"]["queues"]
    h, m, s = (int(x) for x in host["visibilityTimeout"].split(":"))
    visibility = h * 3600 + m * 60 + s
    # a killed worker's message is redelivered every `visibility` seconds; the lease must have
    # expired before the last delivery, or the message is poisoned while the job is still held
    assert PAYMENT_LEASE_SECONDS < visibility * (host["maxDequeueCount"] - 1)


def work(rt, *queues, rounds: int = 40, **check_options) -> list[str]:
    """Like `drain`, for the named queues only, passing options to check_payment; returns outcomes."""
    from shared.flows.callbacks import handle_callback
    from shared.flows.invoices.transfer import transfer_invoice

    handlers = {
        INVOICE_TRANSFERS: lambda body: transfer_invoice(rt, InvoiceTransferMessage.model_validate_json(body)),
        BASWARE_CALLBACKS: lambda body: handle_callback(rt, CallbackMessage.model_validate_json(body)),
        PAYMENT_CHECKS: lambda body: check_payment(rt, PaymentCheckMessage.model_validate_json(body),
                                                   **check_options),
    }
    outcomes = []
    for _ in range(rounds):
        worked = 0
        for queue in queues or tuple(handlers):
            client = rt.storage.queue(queue)
            for msg in client.receive_messages(max_messages=16, visibility_timeout=30):
                outcomes.append(handlers[queue](msg.content))
                client.delete_message(msg)
                worked += 1
        if not worked:
            return outcomes
    raise AssertionError("queues did not drain")


def transfer_only(rt, basware_sandbox) -> tuple[dict, str]:
    """Post an invoice in BC and queue its transfer response, but do not send it yet."""
    from shared.flows.invoices.transfer import invoice_job_id

    doc = next(d for d in basware_sandbox.documents.values()
               if d["processingStatus"] == "WaitingForTransfer" and d["grossSum"] > 0)
    rt.storage.enqueue(INVOICE_TRANSFERS, InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
    work(rt, INVOICE_TRANSFERS)
    job = rt.jobs.get("invoice", invoice_job_id(doc["invoiceId"]))
    assert job.state == "responding" and job.get("bc_id")  # posted; Basware not told yet
    return doc, job.get("bc_id")


def test_the_invoice_flow_indexes_the_bc_document_before_posting_so_a_check_is_a_point_read(env, basware_sandbox,
                                                                                           bc_sandbox):
    from shared.flows.invoices.transfer import invoice_job_id

    rt = runtime_for(env)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    row = rt.storage.table(SYNCSTATE).get_entity("posted", bc_doc.id.lower())
    assert row["invoice_job_id"] == invoice_job_id(doc["invoiceId"])

    manual = post_outside_the_connector(rt, bc_sandbox)
    bc_sandbox.mark_paid(manual.id)
    check = PaymentCheckMessage(company_id=seed.COMPANY_ID, document_id=manual.id, source="notification")
    assert check_payment(rt, check) == "not_ours"
    cached = rt.storage.table(SYNCSTATE).get_entity("posted", manual.id.lower())
    assert cached["invoice_job_id"] == ""  # "not ours", remembered: the next check is one read
    assert check_payment(rt, check) == "not_ours"
    assert payment_posts(basware_sandbox) == []


def test_paid_by_a_prepayment_before_basware_heard_of_the_posting_is_reported_once_the_job_is_done(
        subscribed_rt, basware_sandbox, bc_sandbox):
    rt = subscribed_rt
    doc, bc_id = transfer_only(rt, basware_sandbox)
    bc_sandbox.mark_paid(bc_id)  # a prepayment applied at posting: Paid at once
    assert bc_sandbox.flush_notifications()
    # one check per notification BC sent for it (created, updated, paid): each is deferred, none dropped
    assert set(work(rt, PAYMENT_CHECKS, defer_min=QUICK)) == {"deferred"}
    assert payment_posts(basware_sandbox) == [] and rt.jobs.get(KIND, job_id(KIND, bc_id)) is None

    work(rt, BASWARE_CALLBACKS)  # the transfer response: the invoice job is done
    assert basware_sandbox.document_status(doc["invoiceId"]) == "Transferred"
    time.sleep(QUICK.total_seconds() + 0.5)  # the deferred check becomes visible again
    drain(rt)
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_sandbox.documents[bc_id])


def test_paid_during_a_basware_outage_is_deferred_through_dead_letter_and_replay_and_reported_once(
        env, basware_sandbox, bc_sandbox):
    from shared.ops.admin import replay_record
    from shared.store.deadletter import dead_letter
    from shared.flows.invoices.transfer import invoice_job_id

    rt = runtime_for(env)
    doc, bc_id = transfer_only(rt, basware_sandbox)
    basware_sandbox.faults.add(r"/transferResponses$", count=1000, status=503)  # Basware is down
    callbacks = rt.storage.queue(BASWARE_CALLBACKS)
    (msg,) = callbacks.receive_messages(max_messages=1, visibility_timeout=30)
    with pytest.raises(Exception):
        handle = __import__("shared.flows.callbacks", fromlist=["handle_callback"]).handle_callback
        handle(rt, CallbackMessage.model_validate_json(msg.content))
    bc_sandbox.mark_paid(bc_id)
    poll_payments(rt)
    assert work(rt, PAYMENT_CHECKS, defer_min=QUICK) == ["deferred"]
    dead_letter(rt, BASWARE_CALLBACKS, msg.content, "retries exhausted after 5 deliveries")  # the poison trigger
    callbacks.delete_message(msg)
    assert rt.jobs.get("invoice", invoice_job_id(doc["invoiceId"])).state == "dead_lettered"
    time.sleep(QUICK.total_seconds() + 0.5)
    assert work(rt, PAYMENT_CHECKS, defer_min=QUICK) == ["deferred"]  # still waiting, still not dropped
    assert payment_posts(basware_sandbox) == []

    basware_sandbox.faults.clear()
    assert replay_record(rt, "invoice", invoice_job_id(doc["invoiceId"])).status == "enqueued"
    work(rt, BASWARE_CALLBACKS)
    assert basware_sandbox.document_status(doc["invoiceId"]) == "Transferred"
    time.sleep(QUICK.total_seconds() + 0.5)
    drain(rt)
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_sandbox.documents[bc_id])


def test_paid_before_done_then_the_transfer_failed_gets_no_payment_response(env, basware_sandbox, bc_sandbox):
    from shared.flows.invoices.transfer import invoice_job_id

    rt = runtime_for(env)
    doc, bc_id = transfer_only(rt, basware_sandbox)
    bc_sandbox.mark_paid(bc_id)
    poll_payments(rt)
    assert work(rt, PAYMENT_CHECKS, defer_min=QUICK) == ["deferred"]
    basware_sandbox.set_status(doc["invoiceId"], "TransferFailed")  # Basware's Transfer Recovery gave up
    work(rt, BASWARE_CALLBACKS)
    assert rt.jobs.get("invoice", invoice_job_id(doc["invoiceId"])).state == "failed"
    time.sleep(QUICK.total_seconds() + 0.5)
    assert work(rt, PAYMENT_CHECKS, defer_min=QUICK) == ["invoice_failed"]
    assert payment_posts(basware_sandbox) == [] and rt.jobs.get(KIND, job_id(KIND, bc_id)) is None


def test_a_worker_killed_between_detection_and_send_is_taken_over_and_the_response_goes_out_once(
        env, basware_sandbox, bc_sandbox, monkeypatch):
    rt = runtime_for(env)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    check = PaymentCheckMessage(company_id=seed.COMPANY_ID, document_id=bc_doc.id, source="notification")
    real_enqueue = rt.storage.enqueue

    def dies_before_the_send_is_queued(queue, message, **kw):
        if queue == BASWARE_CALLBACKS:
            raise Killed()
        real_enqueue(queue, message, **kw)

    monkeypatch.setattr(rt.storage, "enqueue", dies_before_the_send_is_queued)
    with pytest.raises(Killed):
        check_payment(rt, check, lease_seconds=1)
    monkeypatch.setattr(rt.storage, "enqueue", real_enqueue)
    pid = job_id(KIND, bc_doc.id)
    stored = rt.jobs.get(KIND, pid)
    assert stored.state == "detected" and stored.lease_owner  # the dead worker still holds it
    with pytest.raises(JobBusy):
        check_payment(rt, check)  # a redelivery at once meets the lease ...
    time.sleep(1.2)
    assert check_payment(rt, check) == "queued"  # ... and after it expired takes over
    drain(rt)
    response = assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    assert response["externalCode"] == stored.get("external_code")  # the stored response, not a new one
    assert len(payment_posts(basware_sandbox)) == 1


class KilledAfterTheReply(httpx.HTTPTransport):
    """Basware takes the payment response and answers 200; the worker dies before it records that."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and re.search(r"/paymentResponses$", request.url.path) and self.armed:
            response.read()
            self.armed = False
            raise Killed()
        return response


def test_a_worker_killed_between_send_and_record_never_sends_twice(env, basware_sandbox, bc_sandbox):
    transport = KilledAfterTheReply()
    rt = runtime_for(env, transport=transport)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    check = PaymentCheckMessage(company_id=seed.COMPANY_ID, document_id=bc_doc.id, source="poll")
    assert check_payment(rt, check) == "queued"
    pid = job_id(KIND, bc_doc.id)
    callback = CallbackMessage(kind="payment", job_id=pid, invoice_id=doc["invoiceId"])
    with pytest.raises(Killed):
        send_payment_response(rt, callback, lease_seconds=1)
    assert len(payment_posts(basware_sandbox)) == 1
    held = rt.jobs.get(KIND, pid)
    assert held.state == "responding" and held.get("send_started") and held.lease_owner
    with pytest.raises(JobBusy):
        send_payment_response(rt, callback)  # the redelivery meets the dead worker's lease
    time.sleep(1.2)
    assert send_payment_response(rt, callback) == "already_recorded"
    assert check_payment(rt, check) == "already_sent"
    assert len(payment_posts(basware_sandbox)) == 1
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)


def test_a_poison_copy_does_not_overwrite_a_job_that_finished_after_it_was_read(env, basware_sandbox, bc_sandbox):
    """dead_letter reads the job, then writes: a send that finishes in between must win."""
    from shared.store import deadletter
    from shared.store.jobs import JobStore

    rt = runtime_for(env)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    poll_payments(rt)
    work(rt, PAYMENT_CHECKS)
    pid = job_id(KIND, bc_doc.id)
    callback = CallbackMessage(kind="payment", job_id=pid, invoice_id=doc["invoiceId"])

    class SendsWhileDeadLettering(JobStore):
        """The jobs table as dead_letter sees it: right after its first read, a worker sends."""

        reads = 0

        def get(self, kind, id):
            job = super().get(kind, id)
            SendsWhileDeadLettering.reads += 1
            if SendsWhileDeadLettering.reads == 1:
                assert send_payment_response(rt, callback) == "sent"
            return job

    class Rt:
        jobs = SendsWhileDeadLettering(rt.storage)
        audit = rt.audit

    deadletter.dead_letter(Rt(), BASWARE_CALLBACKS, callback.model_dump_json(), "retries exhausted")
    job = rt.jobs.get(KIND, pid)
    assert job.state == DONE  # not dead_lettered by the stale copy
    trail = [(r["step"], r["outcome"]) for r in rt.audit.trail(pid)]
    assert trail[-1] == ("dead_letter", "ignored")
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)


# -- partial payments and reversals (BC_PARTIAL_PAYMENTS, the analytics ledger) -------------------------------
def partial_rt(env, bc_sandbox, **overrides):
    from sandbox.bc.analytics import enable_analytics

    enable_analytics(bc_sandbox)
    return runtime_for(env, BC_PARTIAL_PAYMENTS="true", **overrides)


def paid_totals(basware_sandbox, invoice_id: str) -> list[Decimal]:
    return [Decimal(str(r["paidTotal"])) for r in payment_responses(basware_sandbox, invoice_id)]


def assert_valid_responses(basware_sandbox, invoice_id: str) -> list[dict]:
    from sandbox import openapi

    responses = payment_responses(basware_sandbox, invoice_id)
    for response in responses:
        assert set(response) == FULL_FIELD_SET
        assert openapi.validate("PaymentResponseEntity", json.loads(json.dumps(response, default=float))) == []
    assert len({r["externalCode"] for r in responses}) == len(responses)  # a fresh externalCode each
    return responses


def test_with_partial_payments_on_one_full_payment_is_still_one_response(env, basware_sandbox, bc_sandbox):
    rt = partial_rt(env, bc_sandbox)
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    bc_sandbox.mark_paid(bc_doc.id)
    poll_payments(rt)
    drain(rt)
    poll_payments(rt)  # nothing new: the ledger watermark and the job's reported total agree
    drain(rt)
    response = assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)
    assert response["paymentReversalDocument"] is None and "paid in Business Central" in response["responseMessage"]


def test_two_partial_payments_then_the_rest_give_three_responses_with_cumulative_totals(
        subscribed_rt, env, basware_sandbox, bc_sandbox, receiver):
    rt = partial_rt(env, bc_sandbox, BC_NOTIFICATION_URL=receiver.url)
    receiver.rt = rt
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    total = Decimal(str(bc_doc.totals["totalAmountIncludingTax"]))
    first, second = (total * Decimal("0.3")).quantize(Decimal("0.01")), (total * Decimal("0.25")).quantize(Decimal("0.01"))

    bc_sandbox.pay(bc_doc.id, first)
    assert bc_sandbox.documents[bc_doc.id].status == "Open"  # a partial payment leaves it Open (codeunit 5529) ...
    assert bc_sandbox.flush_notifications()
    drain(rt)
    assert payment_responses(basware_sandbox, doc["invoiceId"]) == []  # ... and BC sends no notification
    poll_payments(rt)  # the ledger poll sees the application
    drain(rt)
    assert paid_totals(basware_sandbox, doc["invoiceId"]) == [first]

    bc_sandbox.pay(bc_doc.id, second)
    poll_payments(rt)
    drain(rt)
    assert paid_totals(basware_sandbox, doc["invoiceId"]) == [first, first + second]

    bc_sandbox.pay(bc_doc.id)  # the rest: Paid, notified
    assert bc_sandbox.flush_notifications()
    drain(rt)
    poll_payments(rt)
    drain(rt)
    responses = assert_valid_responses(basware_sandbox, doc["invoiceId"])
    assert paid_totals(basware_sandbox, doc["invoiceId"]) == [first, first + second, total]
    assert [("partly paid" in r["responseMessage"]) for r in responses] == [True, True, False]
    payments = [a.payment_no for a in bc_sandbox.payment_ledger.applications(bc_sandbox.documents[bc_doc.id])]
    assert [r["paymentDocument"] for r in responses] == payments
    assert all(r["paymentReversalDocument"] is None for r in responses)


def test_a_payment_unapplied_in_bc_is_reported_as_a_reversal(subscribed_rt, env, basware_sandbox, bc_sandbox,
                                                              receiver):
    rt = partial_rt(env, bc_sandbox, BC_NOTIFICATION_URL=receiver.url)
    receiver.rt = rt
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    total = Decimal(str(bc_doc.totals["totalAmountIncludingTax"]))
    bc_sandbox.mark_paid(bc_doc.id)
    assert bc_sandbox.flush_notifications()
    drain(rt)
    (payment,) = [a.payment_no for a in bc_sandbox.payment_ledger.applications(bc_sandbox.documents[bc_doc.id])]

    bc_sandbox.unapply(bc_doc.id)  # Paid -> Open, notified
    assert bc_sandbox.documents[bc_doc.id].status == "Open"
    assert bc_sandbox.flush_notifications()
    drain(rt)
    poll_payments(rt)
    drain(rt)
    responses = assert_valid_responses(basware_sandbox, doc["invoiceId"])
    assert paid_totals(basware_sandbox, doc["invoiceId"]) == [total, Decimal(0)]
    assert responses[1]["paymentReversalDocument"] == payment
    assert "reversed" in responses[1]["responseMessage"]

    bc_sandbox.mark_paid(bc_doc.id)  # paid again, with another payment
    poll_payments(rt)
    drain(rt)
    assert paid_totals(basware_sandbox, doc["invoiceId"]) == [total, Decimal(0), total]
    job = rt.jobs.get(KIND, job_id(KIND, bc_doc.id))
    assert job.state == DONE and job.get("responses") == 3


def test_partial_payments_on_where_the_tenant_has_no_analytics_api_report_paid_only(env, basware_sandbox,
                                                                                    bc_sandbox):
    rt = runtime_for(env, BC_PARTIAL_PAYMENTS="true")  # the sandbox's analytics API stays off
    doc, bc_doc = post_through_the_invoice_flow(rt, basware_sandbox, bc_sandbox)
    total = Decimal(str(bc_doc.totals["totalAmountIncludingTax"]))
    bc_sandbox.pay(bc_doc.id, (total / 2).quantize(Decimal("0.01")))
    poll_payments(rt)
    drain(rt)
    assert payment_responses(basware_sandbox, doc["invoiceId"]) == []
    bc_sandbox.pay(bc_doc.id)
    poll_payments(rt)
    drain(rt)
    assert_one_valid_payment_response(rt, basware_sandbox, doc, bc_doc)


def test_bc_partial_payments_is_off_unless_set_and_a_wrong_value_is_named(env):
    from shared.core.errors import SettingsError

    assert load_settings(env).bc_partial_payments is False
    assert load_settings({**env, "BC_PARTIAL_PAYMENTS": "TRUE"}).bc_partial_payments is True
    with pytest.raises(SettingsError, match="BC_PARTIAL_PAYMENTS must be true or false"):
        load_settings({**env, "BC_PARTIAL_PAYMENTS": "sometimes"})
