"""Payments, BC -> Basware: payment responses for documents this connector posted.

Path: detection (BC notification or the `PAYMENT_SCHEDULE` poll) -> `payment-checks` ->
`check_payment` (is it ours? re-read it in BC: something to report? -> payment job with its response
body and a fresh externalCode, persisted) -> `basware-callbacks` -> `send_payment_response` (POST
once) -> audit.

What is reported:
- by default (BC's `purchaseInvoices` says only `status = Paid`, Microsoft Learn, purchaseInvoice resource type): one
  payment response when the document is Paid;
- with `BC_PARTIAL_PAYMENTS` (the tenant offers the analytics `vendorLedgerEntries` API, Microsoft
  Learn, vendorLedgerEntry resource type of the analytics APIs): one response per change of the paid amount, with the cumulative `paidTotal`
  Basware expects (PaymentResponseEntity in Basware's P2P OpenAPI) and a fresh externalCode each; a paid
  amount that goes down (a payment unapplied in BC; Paid -> Open) is reported with
  `paymentReversalDocument`. A partial payment leaves the invoice Open and changes nothing in
  `purchaseInvoices` (its status turns Paid only when the vendor ledger entry closes), so the poll also reads the ledger's new `Application` entries.

Why it is safe to detect twice, crash, or be redelivered: the payment job (`job_id("payment",
bc_document_id)`) is claimed with a lease owned by one invocation; the lease is shorter than the
queue's redelivery cycle (`PAYMENT_LEASE_SECONDS` against host.json), so a worker killed while
holding it is taken over by a redelivery before the message is poisoned, and a worker that fails
releases it at once. A stored response is replaced only after it was sent, so every response goes
out once: the externalCode is stored before anything is sent, and after an unclear outcome
(timeout, crash) the sender re-reads the invoice's `paymentResponses[]` in Basware first.

Paid before done: a payment found while the invoice job is not finished (a prepayment pays the
invoice at posting; a Basware outage keeps the transfer response pending) is deferred, the check
coming back on the queue with a growing delay, until the invoice job is done (then reported) or
failed (then no payment response: Basware was told the transfer failed).
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any


from shared.clients.bc import CREDIT_MEMOS, INVOICES, odata_literal
from shared.core.errors import JobBusy, PermanentError, TransientError
from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, Job, job_id, utcnow
from shared.store.syncstate import PostedIndex, Watermarks
from shared.models.basware import PaymentResponse
from shared.models.bc import PurchaseDocument
from shared.models.messages import CallbackMessage, PaymentCheckMessage
from shared.store.storage import BASWARE_CALLBACKS, JOBS, PAYMENT_CHECKS
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.payments")

KIND = "payment"
INVOICE_KIND = "invoice"
DETECTED = "detected"      # BC says Paid; the response body and its externalCode are stored
RESPONDING = "responding"  # the send is queued on basware-callbacks
PAID = "Paid"
SOURCE_SYSTEM = "Business Central"

POLL_LOOKBACK = timedelta(days=7)   # first poll of a company: how far back to look
POLL_OVERLAP = timedelta(minutes=5)  # re-read a little before the watermark: late commits are not lost
STALE_RESPONDING = timedelta(minutes=30)  # a queued send not done by then is queued again
ENTITIES = (INVOICES, CREDIT_MEMOS)
# Shorter than the queue's redelivery cycle (host.json: visibilityTimeout 20 s x maxDequeueCount 5):
# the lease of a killed worker has expired by the third delivery, long before the message is poisoned.
PAYMENT_LEASE_SECONDS = 30.0
DEFER_MIN = timedelta(seconds=15)   # paid before the invoice job is done: first retry after this ...
DEFER_MAX = timedelta(minutes=15)   # ... then the check's age, up to this


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
    reversal_document: str | None = None  # the payment BC unapplied (the paid amount went down)
    fully_paid: bool = True               # False: a partial payment (or a reversal), the invoice is Open


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


def ledger_state(rows: list[dict], fully_paid: bool, previous: Decimal | None) -> PaymentFacts:
    """What the analytics rows of one invoice say now: the cumulative paid amount (the sum of its
    `Application` entries: a payment applied is positive on the invoice's vendor ledger entry, an
    unapplication posts it again negated), the latest payment, and whether the latest change took
    a payment back (an unapplication, or simply less paid than reported before)."""
    applications = sorted((r for r in rows if str(r.get("dvleEntryType") or "") == "Application"),
                          key=lambda r: (str(r.get("dvlePostingDate") or ""), int(r.get("dvleEntryNo") or 0)))
    paid = sum((_decimal(r.get("dvleAmount", r.get("dvleAmountLCY"))) or Decimal(0) for r in applications),
               Decimal(0))
    paid = max(paid, Decimal(0))
    live: dict[str, Decimal] = {}
    for r in applications:
        no = str(r.get("dvleDocumentNo") or "")
        live[no] = live.get(no, Decimal(0)) + (_decimal(r.get("dvleAmount", r.get("dvleAmountLCY"))) or Decimal(0))
    applied = [str(r.get("dvleDocumentNo") or "") for r in applications
               if (_decimal(r.get("dvleAmount")) or Decimal(0)) > 0 and live.get(str(r.get("dvleDocumentNo") or ""), 0) > 0]
    latest = applications[-1] if applications else None
    reversal = None
    if latest is not None and (_decimal(latest.get("dvleAmount")) or Decimal(0)) < 0:
        reversal = str(latest.get("dvleDocumentNo") or "") or None
    elif previous is not None and paid < previous:
        reversal = "unknown"
    date = _date_time(latest.get("dvlePostingDate")) if latest is not None else None
    document = applied[-1] if applied else None
    what = ("reversed" if reversal else "paid in full" if fully_paid else "partly paid")
    return PaymentFacts(paid, date or iso_z(utcnow()), document, "vendorLedgerEntries",
                        f"BC vendorLedgerEntries: {what}, paid so far {paid} (latest payment {document or 'none'})",
                        reversal_document=reversal, fully_paid=fully_paid)


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
    if facts.reversal_document:
        done = (f"payment {facts.reversal_document} reversed in Business Central, paid so far {paid}"
                if facts.reversal_document != "unknown" else
                f"payment reversed in Business Central, paid so far {paid}")
    elif not facts.fully_paid:
        done = f"partly paid in Business Central, paid so far {paid}"
    else:
        done = "paid in Business Central"
    message = f"{what} {posted.number or ''} {done}".replace("  ", " ")
    if facts.source != "vendorLedgerEntries":
        message += " (payment date = date the connector detected it)"
    reversal = facts.reversal_document if facts.reversal_document != "unknown" else None
    return PaymentResponse(
        externalCode=external_code, success=True, paymentBlock=False, paymentDate=facts.payment_date,
        paidTotal=paid, paymentMethod=None, paymentTermCode=None, cashDiscount=None, checkNumber=None,
        paymentMessage=None, paymentNumber=None, paymentDocument=facts.payment_document,
        paymentReversalDocument=reversal[:250] if reversal else None, responseMessage=message[:250],
        sourceSystem=SOURCE_SYSTEM)


def new_external_code() -> str:
    return uuid.uuid4().hex  # 32 chars, within Basware's 36


# -- which documents are ours ------------------------------------------------------------------------
def lease_owner(rt: Runtime) -> str:
    """One lease owner per invocation: the host runs several messages of a process at once
    (batchSize), and two of them for the same job must exclude each other like two processes do."""
    return f"{rt.worker_id}/{uuid.uuid4().hex[:8]}"


def posted_document(job: Job) -> PostedDocument | None:
    basware_id = job.get("invoice_id") or job.get("basware_id")
    if not job.get("bc_id") or not basware_id:
        return None
    return PostedDocument(job.id, str(basware_id), str(job.get("bc_company_id") or ""),
                          str(job.get("bc_entity") or INVOICES), job.get("bc_number"))


def invoice_outcome(job: Job) -> str:
    """`done` (Basware was told it is posted: payments may be reported), `failed` (Basware was told
    the transfer failed, or the draft is gone: never a payment response) or `pending`."""
    if job.get("draft_deleted") or job.get("response_success") is False:
        return "failed" if job.finished else "pending"
    if job.state == DONE:
        return "done"
    if job.state == FAILED:
        return "failed"
    return "pending"  # posting, responding, or dead-lettered (an operator's replay finishes it)


def _scan_invoice_jobs(rt: Runtime, bc_document_id: str) -> str | None:
    """Invoice jobs posted before the index existed: a scan, done once per document (then cached)."""
    jobs_table = rt.storage.table(JOBS)
    for candidate in {bc_document_id, bc_document_id.lower()}:
        for entity in jobs_table.query_entities("PartitionKey eq @kind and bc_id eq @id",
                                                parameters={"kind": INVOICE_KIND, "id": candidate},
                                                select=["RowKey"]):
            return entity["RowKey"]
    return None


def find_invoice_job(rt: Runtime, bc_document_id: str) -> Job | None:
    """The invoice job that posted this BC document (whatever its state), or None if not ours.

    One point read of the index (`store/syncstate.PostedIndex`, written by the invoice flow before
    it posts); a "not ours" answer is cached there for a day, so documents keyed into BC by hand
    cost one read each, not a scan of 400 days of invoice jobs.
    """
    index = PostedIndex(rt.storage)
    key = bc_document_id.lower()
    jid = index.lookup(key)
    if jid == "":
        return None
    if jid is None:
        jid = _scan_invoice_jobs(rt, bc_document_id)
        if jid is not None:
            index.remember(key, jid)
        else:
            jid = index.remember_not_ours(key)  # the invoice flow's row, if it got there first
            if jid is None:
                return None
    job = rt.jobs.get(INVOICE_KIND, jid)
    # the same invoice job may have moved on to another BC document (a re-transferred invoice)
    if job is None or str(job.get("bc_id") or "").lower() != key:
        return None
    return job


def find_posted_document(rt: Runtime, bc_document_id: str) -> PostedDocument | None:
    """The document's invoice job, if this connector posted it and told Basware so."""
    job = find_invoice_job(rt, bc_document_id)
    return posted_document(job) if job is not None and invoice_outcome(job) == "done" else None


# -- detection: poll -------------------------------------------------------------------------------------
def _watermark_value(rt: Runtime, key: str) -> str | None:
    return Watermarks(rt.storage).get(key)


def _watermark(rt: Runtime, key: str) -> datetime | None:
    return parse_time(_watermark_value(rt, key))


def _set_watermark(rt: Runtime, key: str, value: datetime | str) -> None:
    Watermarks(rt.storage).set(key, value if isinstance(value, str) else iso_ms(value))


def iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def poll_payments(rt: Runtime, now: datetime | None = None) -> dict[str, int]:
    """Backstop for missed notifications: enqueue a check for every document BC reports Paid since
    the watermark. The watermark (newest `lastModifiedDateTime` seen, BC's clock) moves only after
    every document read was enqueued; reads start `POLL_OVERLAP` before it. With
    `BC_PARTIAL_PAYMENTS`, also every invoice with new ledger applications (`poll_ledger`)."""
    now = now or utcnow()
    partial = rt.settings.bc_partial_payments
    enqueued = {}
    for company_id in rt.settings.bc_companies():
        for entity in ENTITIES:
            key = f"payments-{company_id}-{entity}"
            mark = _watermark(rt, key)
            since = (mark or now - POLL_LOOKBACK) - POLL_OVERLAP
            flt = f"status eq '{PAID}' and lastModifiedDateTime gt {iso_ms(since)}"
            newest, count = mark, 0
            for document in rt.bc.list_documents(company_id, entity, flt):
                if _worth_a_check(rt, document, partial):
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
        if partial:
            enqueued[f"payments-{company_id}-ledger"] = poll_ledger(rt, company_id, now)
    return enqueued


def _worth_a_check(rt: Runtime, document: PurchaseDocument, partial: bool) -> bool:
    """A Paid document the poll reads again (the overlap) is checked only if something may be
    missing: not a document known not to be ours, not one whose payment in full was reported."""
    job = rt.jobs.get(KIND, job_id(KIND, document.id))
    if job is None:
        return PostedIndex(rt.storage).lookup(document.id) != ""
    if job.state != DONE:
        return True
    if not partial:
        return False
    reported = _decimal(job.get("target_total"))
    if reported is None:
        reported = _decimal(job.get("paid_total"))
    total = document.total_including_tax
    return reported is None or total is None or abs(reported) != abs(total)


def poll_ledger(rt: Runtime, company_id: str, now: datetime) -> int:
    """Partial payments and unapplications change nothing in `purchaseInvoices` (the status
    turns Paid only when the vendor ledger entry closes), so read the analytics ledger's `Application` entries newer than the highest entry number
    seen (BC's entry numbers only grow) and check each invoice they belong to."""
    key = f"payments-{company_id}-ledger"
    mark = _watermark_value(rt, key)
    flt = "dvleEntryType eq 'Application'"
    if mark and mark.isdigit():
        flt += f" and dvleEntryNo gt {int(mark)}"
    else:  # the first poll looks back as far as the status poll does
        flt += f" and dvlePostingDate ge {(now - POLL_LOOKBACK).date().isoformat()}"
    rows = rt.bc.vendor_ledger_entries(company_id, flt)
    if rows is None:
        log.warning("event=payments.ledger_unavailable company=%s: BC_PARTIAL_PAYMENTS is on but the tenant "
                    "offers no analytics vendorLedgerEntries API", company_id)
        return 0
    numbers = sorted({str(r.get("purchInvHeaderDocumentNo")) for r in rows if r.get("purchInvHeaderDocumentNo")})
    count = 0
    for number in numbers:
        for document in rt.bc.list_documents(company_id, INVOICES, f"number eq {odata_literal(number)}"):
            rt.storage.enqueue(PAYMENT_CHECKS, PaymentCheckMessage(
                company_id=company_id, document_id=document.id, resource=INVOICES, source="poll"))
            count += 1
    newest = max((int(r.get("dvleEntryNo") or 0) for r in rows), default=int(mark) if mark and mark.isdigit() else 0)
    if newest and str(newest) != mark:
        _set_watermark(rt, key, str(newest))
    log.info("event=payments.poll_ledger company=%s entries=%d enqueued=%d", company_id, len(rows), count)
    return count


def expand_collection(rt: Runtime, message: PaymentCheckMessage) -> int:
    """A `collection` notification (many changes at once): re-read the changed documents (all of
    them with partial payments, where an Open one may have been unapplied; else the Paid ones)."""
    status = "" if rt.settings.bc_partial_payments else f"status eq '{PAID}'"
    parts = [p for p in (status, f"({message.collection_filter})" if message.collection_filter else "") if p]
    flt = " and ".join(parts) or None
    count = 0
    for document in rt.bc.list_documents(message.company_id, message.resource, flt):
        rt.storage.enqueue(PAYMENT_CHECKS, PaymentCheckMessage(
            company_id=message.company_id, document_id=document.id, resource=message.resource,
            source=message.source))
        count += 1
    return count


# -- the payment-checks worker ----------------------------------------------------------------------------
def payment_facts(rt: Runtime, posted: PostedDocument, document: PurchaseDocument, now: datetime) -> PaymentFacts:
    rows = None
    if posted.entity == INVOICES and document.number:
        rows = rt.bc.vendor_ledger_entries(posted.company_id,
                                           f"purchInvHeaderDocumentNo eq {odata_literal(document.number)}")
    facts = facts_from_ledger(rows) if rows else None
    if facts is not None and facts.paid_total is None:
        facts = PaymentFacts(facts_without_ledger(document, now).paid_total, facts.payment_date,
                             facts.payment_document, facts.source, facts.note)
    return facts or facts_without_ledger(document, now)


def payment_target(rt: Runtime, posted: PostedDocument, document: PurchaseDocument, job: Job | None,
                   now: datetime) -> PaymentFacts | None:
    """What Basware should hold now, or None when there is nothing (new) to report."""
    partial = rt.settings.bc_partial_payments and posted.entity == INVOICES and document.number
    if partial:
        rows = rt.bc.vendor_ledger_entries(posted.company_id,
                                           f"purchInvHeaderDocumentNo eq {odata_literal(document.number)}")
        if rows is not None:
            reported = _decimal(job.get("target_total")) if job is not None else None
            if reported is None and job is not None and job.state == DONE:
                reported = _decimal(job.get("paid_total"))  # a job from before partial payments were on
            facts = ledger_state(rows, document.status == PAID, reported)
            if facts.paid_total == (reported if reported is not None else Decimal(0)):
                return None  # unchanged (or never paid)
            return facts
        log.warning("event=payments.ledger_unavailable bc_id=%s: BC_PARTIAL_PAYMENTS is on but the tenant "
                    "offers no analytics vendorLedgerEntries API; reporting Paid only", document.id)
    if document.status != PAID or (job is not None and job.state == DONE):
        return None
    return payment_facts(rt, posted, document, now)


def defer_check(rt: Runtime, message: PaymentCheckMessage, now: datetime, defer_min: timedelta = DEFER_MIN) -> int:
    """Put the check back on the queue, later: the delay grows with the check's age (the copy keeps
    `enqueued_at`), from `defer_min` to `DEFER_MAX`. Queue messages can wait up to 7 days each and
    are copied on, so the check never expires while the invoice job is unfinished."""
    age = now - message.enqueued_at
    delay = min(max(age, defer_min), DEFER_MAX)
    rt.storage.enqueue(PAYMENT_CHECKS, message, delay_seconds=max(1, int(delay.total_seconds())))
    return int(delay.total_seconds())


def check_payment(rt: Runtime, message: PaymentCheckMessage, now: datetime | None = None, *, owner: str | None = None,
                  lease_seconds: float = PAYMENT_LEASE_SECONDS, defer_min: timedelta = DEFER_MIN) -> str:
    """Work one `payment-checks` message. Returns what happened (for logs and tests)."""
    now = now or utcnow()
    if message.collection_filter is not None or not message.document_id:
        return f"expanded:{expand_collection(rt, message)}"
    document_id = message.document_id
    replay = message.source == "replay"
    invoice_job = find_invoice_job(rt, document_id)
    posted = posted_document(invoice_job) if invoice_job is not None else None
    if posted is None:
        log.info("event=payments.not_ours bc_id=%s", document_id)
        return "not_ours"
    if not posted.company_id:  # an invoice job from before the company was recorded
        posted = replace(posted, company_id=message.company_id)
    partial = rt.settings.bc_partial_payments
    pid = job_id(KIND, document_id)
    job = rt.jobs.get(KIND, pid)
    resume = False
    if job is not None:
        if job.state == DONE and not partial:
            return "already_sent"
        if job.state in (FAILED, DEAD_LETTERED) and not replay:
            return "finished"
        if job.state == RESPONDING and not replay and _queued_recently(job, now):
            return "already_queued"  # the sender checks again after it sent (partial payments)
        resume = _resumable(job)
    document = None
    if not resume:
        document = rt.bc.get_document(posted.company_id, posted.entity, document_id)
        target = payment_target(rt, posted, document, job, now) if document is not None else None
        if target is None:
            log.info("event=payments.nothing_new bc_id=%s status=%s", document_id,
                     document.status if document else None)
            return "not_paid"
        outcome = invoice_outcome(invoice_job)
        if outcome == "failed":
            log.info("event=payments.invoice_failed bc_id=%s invoice_job=%s", document_id, invoice_job.id)
            return "invoice_failed"
        if outcome == "pending":
            delay = defer_check(rt, message, now, defer_min)
            log.info("event=payments.deferred bc_id=%s invoice_job=%s state=%s delay=%d", document_id,
                     invoice_job.id, invoice_job.state, delay)
            return "deferred"
    ids = dict(bc_id=document_id, bc_company_id=posted.company_id, bc_entity=posted.entity,
               bc_number=(document.number if document is not None else None) or posted.number,
               basware_id=posted.basware_id, invoice_job_id=posted.invoice_job_id)
    job = _claim(rt, pid, owner or lease_owner(rt), lease_seconds, allow_finished=replay or partial,
                 reopen=partial, initial_state=DETECTED, **ids)
    if job is None:
        return "already_sent"
    try:
        return _store_and_queue(rt, job, posted, document, message, now)
    except Exception:
        _release_quietly(rt, pid, job)  # a redelivery may take over at once
        raise


def _queued_recently(job: Job, now: datetime) -> bool:
    queued = job.get("queued_at") or job.updated
    return queued is None or now - queued < STALE_RESPONDING


def _resumable(job: Job) -> bool:
    """A response was built and not (known to be) sent: it goes out as it is, never replaced."""
    return job.state in (DETECTED, RESPONDING, DEAD_LETTERED) and bool(job.get("response"))


def _store_and_queue(rt: Runtime, job: Job, posted: PostedDocument, document: PurchaseDocument | None,
                     message: PaymentCheckMessage, now: datetime) -> str:
    """With the claim held, judge the job as it is now (another worker may have written it since
    the caller read it): resume its unsent response, or build the next one, or nothing."""
    pid = job.id
    if job.state == RESPONDING and message.source != "replay" and _queued_recently(job, now):
        rt.jobs.release(job)
        return "already_queued"
    check = PaymentCheckMessage(company_id=posted.company_id, document_id=job.get("bc_id"), resource=posted.entity,
                                source="replay")
    if _resumable(job):
        # The same content and the same externalCode, so a send whose reply was lost is
        # recognised in paymentResponses[].
        body = PaymentResponse.model_validate_json(job.get("response"))
        note = f"resuming payment response {body.externalCode}"
        job = rt.jobs.update(job, state=DETECTED, last_error="", queue=PAYMENT_CHECKS, message=check.model_dump_json())
    else:
        if document is None:
            document = rt.bc.get_document(posted.company_id, posted.entity, job.get("bc_id"))
        facts = payment_target(rt, posted, document, job, now) if document is not None else None
        if facts is None:  # nothing new since the job was read (another worker reported it)
            rt.jobs.release(job)
            return "not_paid"
        body = build_payment_response(new_external_code(), posted, facts)
        note = f"{facts.note}; externalCode {body.externalCode}"
        job = rt.jobs.update(job, state=DETECTED, external_code=body.externalCode, response=body.model_dump_json(),
                             paid_total=str(body.paidTotal) if body.paidTotal is not None else None,
                             target_total=str(facts.paid_total) if facts.paid_total is not None else None,
                             responses=int(job.get("responses") or 0) + 1,
                             payment_date=facts.payment_date, payment_date_source=facts.source,
                             detected_by=message.source, last_error="", queue=PAYMENT_CHECKS,
                             message=check.model_dump_json(), send_started=False)
    status = document.status if document is not None else "unchanged"
    rt.audit.record(pid, "detected", "ok", f"BC {posted.entity} {job.get('bc_number')} is {status} (found by "
                    f"{message.source}); {note}", kind=KIND, basware_id=posted.basware_id, bc_id=job.get("bc_id"),
                    payment_date_source=job.get("payment_date_source"))
    rt.storage.enqueue(BASWARE_CALLBACKS, CallbackMessage(kind="payment", job_id=pid, invoice_id=posted.basware_id))
    rt.jobs.release(job, state=RESPONDING, queued_at=utcnow())
    return "queued"


def _release_quietly(rt: Runtime, pid: str, job: Job) -> None:
    """Give the lease back after a failure (the state stays); whoever wrote the row meanwhile wins."""
    current = rt.jobs.get(KIND, pid)
    if current is None or current.lease_owner != job.lease_owner:
        return
    try:
        rt.jobs.release(current)
    except Exception:  # noqa: BLE001 - the lease then expires on its own
        log.warning("event=payments.release_failed job=%s", pid)


def _claim(rt: Runtime, pid: str, owner: str, lease_seconds: float, allow_finished: bool, *, reopen: bool = False,
           **fields) -> Job | None:
    """The payment job, claimed by this invocation; None when it is already sent. Raises JobBusy.
    `reopen`: a job whose last response was sent may take the next one (partial payments)."""
    claim = rt.jobs.claim(KIND, pid, owner, lease_seconds, allow_finished=allow_finished, **fields)
    if not claim.won:
        if claim.reason == "finished":
            return None
        raise JobBusy(f"payment job {pid} is being worked by another worker")
    if claim.job.state == DONE and not reopen:  # finished between the caller's read and the claim
        rt.jobs.release(claim.job)
        return None
    return claim.job


# -- the basware-callbacks sender (dispatched by shared/flows/callbacks.py) --------------------------------------
def _recorded_by_basware(rt: Runtime, job: Job) -> bool:
    document = rt.basware.get_document(str(job.get("basware_id")))
    code = job.get("external_code")
    return bool(document and any(r.get("externalCode") == code for r in document.payment_responses))


def _finish(rt: Runtime, job: Job, **fields) -> Job:
    """Done with this response. With partial payments, first queue a check of the document: a change
    BC made while this response was on its way is reported next (queued before the state moves,
    so a crash in between leaves the job to a redelivery rather than losing the check)."""
    if rt.settings.bc_partial_payments:
        rt.storage.enqueue(PAYMENT_CHECKS, PaymentCheckMessage(
            company_id=str(job.get("bc_company_id") or rt.settings.bc_company_id), document_id=job.get("bc_id"),
            resource=job.get("bc_entity") or INVOICES, source="poll"))
    return rt.jobs.release(job, state=DONE, send_started=False, last_error="", **fields)


def send_payment_response(rt: Runtime, message: CallbackMessage, *, owner: str | None = None,
                          lease_seconds: float = PAYMENT_LEASE_SECONDS) -> str:
    """Send the payment job's stored response once. Raises TransientError to have the queue retry."""
    job = rt.jobs.get(KIND, message.job_id)
    if job is None:
        log.warning("event=payments.send.unknown_job job=%s", message.job_id)
        return "unknown_job"
    # An operator's replay of a dead-lettered or failed send (admin marks it `replay=pending`) resumes it.
    replay = job.state in (FAILED, DEAD_LETTERED) and job.get("replay") == "pending" and bool(job.get("response"))
    if job.finished and not replay:
        return "already_sent" if job.state == DONE else "finished"
    job = _claim(rt, job.id, owner or lease_owner(rt), lease_seconds, replay)
    if job is None:
        return "already_sent"
    try:
        return _send(rt, job, replay, lease_seconds)
    except TransientError:
        raise  # released with its audit row in _send
    except Exception:
        _release_quietly(rt, job.id, job)
        raise


def _send(rt: Runtime, job: Job, replay: bool, lease_seconds: float) -> str:
    if replay:
        job = rt.jobs.update(job, replay="claimed")  # a stale copy of the message cannot resume it again
    invoice_id = str(job.get("basware_id"))
    audit = dict(kind=KIND, basware_id=invoice_id, bc_id=job.get("bc_id"))
    body = PaymentResponse.model_validate_json(job.get("response"))
    try:
        if job.get("send_started") and _recorded_by_basware(rt, job):
            _finish(rt, job)
            rt.audit.record(job.id, "send", "ok", f"Basware already holds payment response {body.externalCode} "
                            "(an earlier send's reply was lost); not sent again", **audit)
            return "already_recorded"
        # from here on, an unclear outcome is possible; the lease is renewed for the send
        job = rt.jobs.update(job, send_started=True, lease_until=utcnow() + timedelta(seconds=lease_seconds))
        # No blind inline retry: every retry comes back through the queue and the re-read above.
        rt.basware.send_payment_response(invoice_id, body, max_attempts=1)
    except PermanentError as exc:
        try:
            recorded = _recorded_by_basware(rt, job)
        except TransientError:
            recorded = False
        if recorded:
            _finish(rt, job)
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
    _finish(rt, job, sent_at=utcnow())
    rt.audit.record(job.id, "send", "ok", f"payment response {body.externalCode} sent: paidTotal {body.paidTotal}, "
                    f"paymentDate {body.paymentDate}"
                    + (f", reversal of {body.paymentReversalDocument}" if body.paymentReversalDocument else ""),
                    http_status=200, **audit)
    return "sent"


def response_fields(job: Job) -> dict:
    """The stored response body of a payment job (admin views, tests)."""
    return json.loads(job.get("response") or "{}")
