"""Payments, BC -> Basware: one payment response when a document this connector posted is Paid.

Path: detection (BC notification or the `PAYMENT_SCHEDULE` poll) -> `payment-checks` ->
`check_payment` (is it ours? re-read it in BC: Paid? -> payment job with its response body and a
fresh externalCode, persisted) -> `basware-callbacks` -> `send_payment_response` (POST once) -> audit.

Why it is safe to detect twice: the payment job (`job_id("payment", bc_document_id)`) is claimed
with a lease and only ever moves forward (detected -> responding -> done), so a notification, a
poll and queue redeliveries for the same invoice end in one response. The externalCode is stored
before anything is sent; after an unclear outcome (timeout, crash) the sender re-reads the
invoice's `paymentResponses[]` in Basware before it sends again.

Facts (Microsoft Learn, purchaseInvoice resource type): BC's `purchaseInvoices` says only `status = Paid`; the payment date,
amount and reference exist only in the analytics `vendorLedgerEntries` API (Microsoft Learn, vendorLedgerEntry resource type, analytics APIs), which not every
tenant offers. Without it the payment date is the time the connector saw the invoice Paid and
`paidTotal` is the document's total, and the audit row says so.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.clients.bc import CREDIT_MEMOS, INVOICES, odata_literal
from shared.core.errors import JobBusy, PermanentError, TransientError
from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, Job, job_id, utcnow
from shared.models.basware import PaymentResponse
from shared.models.bc import PurchaseDocument
from shared.models.messages import CallbackMessage, PaymentCheckMessage
from shared.store.storage import BASWARE_CALLBACKS, JOBS, PAYMENT_CHECKS, SYNCSTATE

log = logging.getLogger("ml_connector.payments")

KIND = "payment"
INVOICE_KIND = "invoice"
DETECTED = "detected"      # BC says Paid; the response body and its externalCode are stored
RESPONDING = "responding"  # the send is queued on basware-callbacks
PAID = "Paid"
SOURCE_SYSTEM = "Business Central"

POSTED_SCOPE = "posted"        # syncstate: BC document id -> the invoice job that posted it
WATERMARK_SCOPE = "watermark"  # syncstate: payments-<company>-<entity> -> lastModifiedDateTime seen
POLL_LOOKBACK = timedelta(days=7)   # first poll of a company: how far back to look
POLL_OVERLAP = timedelta(minutes=5)  # re-read a little before the watermark: late commits are not lost
STALE_RESPONDING = timedelta(minutes=30)  # a queued send not done by then is queued again
ENTITIES = (INVOICES, CREDIT_MEMOS)


# -- pure parts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PostedDocument:
    """A BC document this connector posted, as its invoice job recorded it."""

    invoice_job_id: str
    basware_id: str
    company_id: str
    entity: str
    number: str | None


@dataclass(frozen=True)
class PaymentFacts:
    paid_total: Decimal | None
    payment_date: str
    payment_document: str | None
    source: str  # "vendorLedgerEntries" or "detection time"
    note: str


def iso_z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _date_time(value: Any) -> str | None:
    """A BC date (`2026-11-20`) or datetime as Basware's date-time."""
    if not value:
        return None
    text = str(value)
    if len(text) == 10:
        return f"{text}T00:00:00Z"
    moment = parse_time(text)
    return iso_z(moment) if moment else None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def facts_from_ledger(rows: list[dict]) -> PaymentFacts | None:
    """Payment date, amount and reference from analytics `vendorLedgerEntries` rows of one invoice.

    The analytics entity is vendor ledger entries joined with their detailed entries: the
    `Application` rows are what settled the invoice (payments, usually). None when nothing applied.
    """
    applications = [r for r in rows if str(r.get("dvleEntryType") or "") == "Application"]
    if not applications:
        return None
    amounts = [_decimal(r.get("dvleAmount", r.get("dvleAmountLCY"))) for r in applications]
    paid = abs(sum((a for a in amounts if a is not None), Decimal(0))) if any(a is not None for a in amounts) else None
    latest = max(applications, key=lambda r: str(r.get("dvlePostingDate") or ""))
    payments = [r for r in applications if str(r.get("dvleDocumentType") or "") == "Payment"]
    reference = max(payments, key=lambda r: str(r.get("dvlePostingDate") or "")) if payments else latest
    closed = next((r.get("vleClosedAtDate") for r in rows if r.get("vleClosedAtDate")
                   and not str(r.get("vleClosedAtDate")).startswith("0001")), None)
    date = _date_time(closed) or _date_time(latest.get("dvlePostingDate"))
    if date is None:
        return None
    document = str(reference.get("dvleDocumentNo") or "") or None
    return PaymentFacts(paid, date, document, "vendorLedgerEntries",
                        f"payment date and amount from BC vendorLedgerEntries (payment {document or 'unknown'})")


def facts_without_ledger(document: PurchaseDocument, detected_at: datetime) -> PaymentFacts:
    return PaymentFacts(
        abs(document.total_including_tax) if document.total_including_tax is not None else None,
        iso_z(detected_at), None, "detection time",
        "BC offers no vendorLedgerEntries API here: paymentDate is the time the connector saw the "
        "document Paid and paidTotal is its total including tax")


def build_payment_response(external_code: str, posted: PostedDocument, facts: PaymentFacts) -> PaymentResponse:
    """The full PaymentResponseEntity: every field, nulls included (fields left out are cleared)."""
    paid = facts.paid_total
    if paid is not None and posted.entity == CREDIT_MEMOS:
        paid = -paid  # a credit note is negative in Basware
    what = "Credit memo" if posted.entity == CREDIT_MEMOS else "Invoice"
    message = f"{what} {posted.number or ''} paid in Business Central".replace("  ", " ")
    if facts.source != "vendorLedgerEntries":
        message += " (payment date = date the connector detected it)"
    return PaymentResponse(
        externalCode=external_code, success=True, paymentBlock=False, paymentDate=facts.payment_date,
        paidTotal=paid, paymentMethod=None, paymentTermCode=None, cashDiscount=None, checkNumber=None,
        paymentMessage=None, paymentNumber=None, paymentDocument=facts.payment_document,
        paymentReversalDocument=None, responseMessage=message[:250], sourceSystem=SOURCE_SYSTEM)


def new_external_code() -> str:
    return uuid.uuid4().hex  # 32 chars, within Basware's 36


# -- which documents are ours ------------------------------------------------------------------------
def _posted_from_job(job: Job) -> PostedDocument | None:
    """Ours only if the invoice flow finished with a success transfer response for this BC document
    (shared/flows/invoices/transfer.py: state done, response_success, its draft not deleted)."""
    basware_id = job.get("invoice_id") or job.get("basware_id")
    if (job.state != DONE or not job.get("bc_id") or not basware_id or job.get("response_success") is False
            or job.get("draft_deleted")):
        return None
    return PostedDocument(job.id, str(basware_id), str(job.get("bc_company_id") or ""),
                          str(job.get("bc_entity") or INVOICES), job.get("bc_number"))


def find_posted_document(rt, bc_document_id: str) -> PostedDocument | None:
    """The document's invoice job, if this connector posted it (and told Basware so).

    The invoice flow keys its jobs by Basware invoiceId, so a BC id is looked up once by scanning
    the invoice jobs and then remembered in `syncstate` (`posted`/<bc id>).
    """
    table = rt.storage.table(SYNCSTATE)
    key = bc_document_id.lower()
    try:
        row = table.get_entity(POSTED_SCOPE, key)
    except ResourceNotFoundError:
        row = None
    if row is not None:
        job = rt.jobs.get(INVOICE_KIND, row["invoice_job_id"])
        # the same invoice job may have moved on to another BC document (a re-transferred invoice)
        if job is not None and str(job.get("bc_id") or "").lower() == key:
            return _posted_from_job(job)
    jobs_table = rt.storage.table(JOBS)
    for candidate in {bc_document_id, key}:
        for entity in jobs_table.query_entities("PartitionKey eq @kind and bc_id eq @id",
                                                parameters={"kind": INVOICE_KIND, "id": candidate},
                                                select=["RowKey"]):
            job = rt.jobs.get(INVOICE_KIND, entity["RowKey"])
            posted = _posted_from_job(job) if job else None
            if posted:
                table.upsert_entity({"PartitionKey": POSTED_SCOPE, "RowKey": key, "invoice_job_id": job.id})
                return posted
    return None


# -- detection: poll -------------------------------------------------------------------------------------
def _watermark(rt, key: str) -> datetime | None:
    try:
        return parse_time(rt.storage.table(SYNCSTATE).get_entity(WATERMARK_SCOPE, key).get("value"))
    except ResourceNotFoundError:
        return None


def _set_watermark(rt, key: str, value: datetime) -> None:
    rt.storage.table(SYNCSTATE).upsert_entity({"PartitionKey": WATERMARK_SCOPE, "RowKey": key,
                                               "value": iso_ms(value)})


def iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def poll_payments(rt, now: datetime | None = None) -> dict[str, int]:
    """Backstop for missed notifications: enqueue a check for every document BC reports Paid since
    the watermark. The watermark (newest `lastModifiedDateTime` seen, BC's clock) moves only after
    every document read was enqueued; reads start `POLL_OVERLAP` before it."""
    now = now or utcnow()
    enqueued = {}
    for company_id in rt.settings.bc_companies():
        for entity in ENTITIES:
            key = f"payments-{company_id}-{entity}"
            mark = _watermark(rt, key)
            since = (mark or now - POLL_LOOKBACK) - POLL_OVERLAP
            flt = f"status eq '{PAID}' and lastModifiedDateTime gt {iso_ms(since)}"
            newest, count = mark, 0
            for document in rt.bc.list_documents(company_id, entity, flt):
                job = rt.jobs.get(KIND, job_id(KIND, document.id))
                if job is None or job.state != DONE:
                    rt.storage.enqueue(PAYMENT_CHECKS, PaymentCheckMessage(
                        company_id=company_id, document_id=document.id, resource=entity, source="poll"))
                    count += 1
                seen = parse_time(document.last_modified)
                if seen and (newest is None or seen > newest):
                    newest = seen
            if newest and newest != mark:
                _set_watermark(rt, key, newest)
            enqueued[key] = count
            log.info("event=payments.poll company=%s entity=%s since=%s enqueued=%d", company_id, entity,
                     iso_ms(since), count)
    return enqueued


def expand_collection(rt, message: PaymentCheckMessage) -> int:
    """A `collection` notification (many changes at once): re-read the changed Paid documents."""
    flt = f"status eq '{PAID}' and ({message.collection_filter})" if message.collection_filter else \
        f"status eq '{PAID}'"
    count = 0
    for document in rt.bc.list_documents(message.company_id, message.resource, flt):
        rt.storage.enqueue(PAYMENT_CHECKS, PaymentCheckMessage(
            company_id=message.company_id, document_id=document.id, resource=message.resource,
            source=message.source))
        count += 1
    return count


# -- the payment-checks worker ----------------------------------------------------------------------------
def payment_facts(rt, posted: PostedDocument, document: PurchaseDocument, now: datetime) -> PaymentFacts:
    rows = None
    if posted.entity == INVOICES and document.number:
        rows = rt.bc.vendor_ledger_entries(posted.company_id,
                                           f"purchInvHeaderDocumentNo eq {odata_literal(document.number)}")
    facts = facts_from_ledger(rows) if rows else None
    if facts is not None and facts.paid_total is None:
        facts = PaymentFacts(facts_without_ledger(document, now).paid_total, facts.payment_date,
                             facts.payment_document, facts.source, facts.note)
    return facts or facts_without_ledger(document, now)


def check_payment(rt, message: PaymentCheckMessage, now: datetime | None = None) -> str:
    """Work one `payment-checks` message. Returns what happened (for logs and tests)."""
    now = now or utcnow()
    if message.collection_filter is not None or not message.document_id:
        return f"expanded:{expand_collection(rt, message)}"
    document_id = message.document_id
    replay = message.source == "replay"
    posted = find_posted_document(rt, document_id)
    if posted is None:
        log.info("event=payments.not_ours bc_id=%s", document_id)
        return "not_ours"
    pid = job_id(KIND, document_id)
    job = rt.jobs.get(KIND, pid)
    if job is not None:
        if job.state == DONE:
            return "already_sent"
        if job.state in (FAILED, DEAD_LETTERED) and not replay:
            return "finished"
        if job.state == RESPONDING and not replay and (job.updated is None or now - job.updated < STALE_RESPONDING):
            return "already_queued"
    document = rt.bc.get_document(posted.company_id or message.company_id, posted.entity, document_id)
    if document is None or document.status != PAID:
        log.info("event=payments.not_paid bc_id=%s status=%s", document_id, document.status if document else None)
        return "not_paid"
    ids = dict(bc_id=document_id, bc_company_id=posted.company_id, bc_entity=posted.entity,
               bc_number=document.number, basware_id=posted.basware_id, invoice_job_id=posted.invoice_job_id)
    job = _claim(rt, pid, replay, initial_state=DETECTED, **ids)
    if job is None:
        return "already_sent"

    check = PaymentCheckMessage(company_id=posted.company_id, document_id=document_id, resource=posted.entity,
                                source="replay")
    if job.get("response") and job.state != FAILED:
        # A response was built before (this is a resumed or replayed job): the same content and the
        # same externalCode, so a send whose reply was lost is recognised in paymentResponses[].
        body = PaymentResponse.model_validate_json(job.get("response"))
        note = f"resuming payment response {body.externalCode}"
        job = rt.jobs.update(job, state=DETECTED, last_error="", queue=PAYMENT_CHECKS, message=check.model_dump_json())
    else:
        facts = payment_facts(rt, posted, document, now)
        body = build_payment_response(new_external_code(), posted, facts)
        note = f"{facts.note}; externalCode {body.externalCode}"
        job = rt.jobs.update(job, state=DETECTED, external_code=body.externalCode, response=body.model_dump_json(),
                             paid_total=str(body.paidTotal) if body.paidTotal is not None else None,
                             payment_date=facts.payment_date, payment_date_source=facts.source,
                             detected_by=message.source, last_error="", queue=PAYMENT_CHECKS,
                             message=check.model_dump_json(), send_started=False)
    rt.audit.record(pid, "detected", "ok", f"BC {posted.entity} {document.number} is Paid (found by "
                    f"{message.source}); {note}", kind=KIND, basware_id=posted.basware_id, bc_id=document_id,
                    payment_date_source=job.get("payment_date_source"))
    rt.storage.enqueue(BASWARE_CALLBACKS, CallbackMessage(kind="payment", job_id=pid, invoice_id=posted.basware_id))
    rt.jobs.release(job, state=RESPONDING)
    return "queued"


def _claim(rt, pid: str, allow_finished: bool, **fields) -> Job | None:
    """The payment job, claimed by this worker; None when it is already sent. Raises JobBusy."""
    claim = rt.jobs.claim(KIND, pid, rt.worker_id, allow_finished=allow_finished, **fields)
    if not claim.won:
        if claim.reason == "finished":
            return None
        raise JobBusy(f"payment job {pid} is being worked by another worker")
    if claim.job.state == DONE:  # finished between the caller's read and the claim
        rt.jobs.release(claim.job)
        return None
    return claim.job


# -- the basware-callbacks sender (dispatched by shared/flows/callbacks.py) --------------------------------------
def _recorded_by_basware(rt, job: Job) -> bool:
    document = rt.basware.get_document(str(job.get("basware_id")))
    code = job.get("external_code")
    return bool(document and any(r.get("externalCode") == code for r in document.payment_responses))


def send_payment_response(rt, message: CallbackMessage) -> str:
    """Send the payment job's stored response once. Raises TransientError to have the queue retry."""
    job = rt.jobs.get(KIND, message.job_id)
    if job is None:
        log.warning("event=payments.send.unknown_job job=%s", message.job_id)
        return "unknown_job"
    # An operator's replay of a dead-lettered or failed send (admin marks it `replay=pending`) resumes it.
    replay = job.state in (FAILED, DEAD_LETTERED) and job.get("replay") == "pending" and bool(job.get("response"))
    if job.finished and not replay:
        return "already_sent" if job.state == DONE else "finished"
    job = _claim(rt, job.id, replay)
    if job is None:
        return "already_sent"
    if replay:
        job = rt.jobs.update(job, replay="claimed")  # a stale copy of the message cannot resume it again
    invoice_id = str(job.get("basware_id"))
    audit = dict(kind=KIND, basware_id=invoice_id, bc_id=job.get("bc_id"))
    body = PaymentResponse.model_validate_json(job.get("response"))
    try:
        if job.get("send_started") and _recorded_by_basware(rt, job):
            rt.jobs.release(job, state=DONE, send_started=False, last_error="")
            rt.audit.record(job.id, "send", "ok", f"Basware already holds payment response {body.externalCode} "
                            "(an earlier send's reply was lost); not sent again", **audit)
            return "already_recorded"
        job = rt.jobs.update(job, send_started=True)  # from here on, an unclear outcome is possible
        # No blind inline retry: every retry comes back through the queue and the re-read above.
        rt.basware.send_payment_response(invoice_id, body, max_attempts=1)
    except PermanentError as exc:
        try:
            recorded = _recorded_by_basware(rt, job)
        except TransientError:
            recorded = False
        if recorded:
            rt.jobs.release(job, state=DONE, send_started=False, last_error="")
            rt.audit.record(job.id, "send", "ok", f"Basware already holds payment response {body.externalCode}",
                            http_status=exc.status, **audit)
            return "already_recorded"
        rt.jobs.release(job, state=FAILED, send_started=False, last_error=exc.summary()[:1000])
        rt.audit.record(job.id, "send", "failed", f"Basware refused the payment response: {exc.summary()}",
                        http_status=exc.status, correlation_id=exc.correlation_id, **audit)
        return "failed"
    except TransientError as exc:
        rt.jobs.release(job, last_error=exc.summary()[:1000])
        rt.audit.record(job.id, "send", "retry", f"payment response not confirmed, will retry: {exc.summary()}",
                        http_status=exc.status, correlation_id=exc.correlation_id, **audit)
        raise
    rt.jobs.release(job, state=DONE, send_started=False, last_error="", sent_at=utcnow())
    rt.audit.record(job.id, "send", "ok", f"payment response {body.externalCode} sent: paidTotal {body.paidTotal}, "
                    f"paymentDate {body.paymentDate}", http_status=200, **audit)
    return "sent"


def response_fields(job: Job) -> dict:
    """The stored response body of a payment job (admin views, tests)."""
    return json.loads(job.get("response") or "{}")
