"""The invoice flow, Basware -> BC: the poll and the transfer job.

    webhook / poll / replay -> invoice-transfers -> transfer_invoice():
        claim job -> GET document -> acknowledge -> map + validate -> find or create the draft
        -> check totals -> post -> read posted number -> queue the transfer response
    basware-callbacks -> shared/flows/invoices/responses.py sends it (fresh externalCode, re-read first
    after an unclear outcome).

Exactly once: one job row per invoice (`job_id("invoice", invoiceId)`), a lease so one worker
works it at a time, and every step recorded on the row before the next may depend on it: the
intent to acknowledge before acknowledging, the BC id right after the draft exists, the
response before it is queued. A resumed job re-reads what it recorded instead of repeating it.

BC commits requests after the client gave up (it queues beyond 5 concurrent and has no idempotency
key): a create or post is sent once per late-commit window (BC_LATE_COMMIT_WINDOW_SECONDS), recorded
on the row before it is sent; after an unclear outcome the job looks for its own document (its
marker on every line, ownership.py) or reads the posted state before anything else, and otherwise
comes back when the window is over. Documents without its marker are never touched. Dimensions:
dimensions.py. The lease is kept by a heartbeat while the job runs (lease.py).

Job states: received -> acknowledged -> draft_created -> responding -> done, or rejecting ->
failed (a failure response was sent), or dead_lettered. A round is one offer of the document by
Basware; a document re-offered after a failure (the user re-transferred it) starts a new round.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from shared.clients.bc import CREDIT_MEMOS, INVOICES, LINES
from shared.core.errors import ConflictError, ConnectorError, DocumentError, JobBusy, PermanentError, TransientError
from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, Job, JobConflict, job_id
from shared.store.syncstate import PostedIndex
from shared.flows.invoices.attachments import attach_images
from shared.flows.invoices import dimensions, ownership
from shared.flows.invoices.lease import LeaseKeeper
from shared.flows.invoices.ledger import ledger_cache
from shared.flows.invoices.mapping import MappedDocument, MappingRules, clerk_message, map_document, totals_problem
from shared.models.basware import (TRANSFER_FAILED, TRANSFER_IN_PROGRESS, TRANSFERRED, WAITING_FOR_TRANSFER,
                             AccountingDocument)

PAID = "Paid"  # after a payment response: transferred, and more
from shared.models.bc import PurchaseDocument
from shared.models.messages import CallbackMessage, InvoiceTransferMessage
from shared.store.storage import BASWARE_CALLBACKS, INVOICE_TRANSFERS

log = logging.getLogger("ml_connector.invoices")

KIND = "invoice"
LEASE_SECONDS = 30.0
RECEIVED = "received"
ACKNOWLEDGED = "acknowledged"
DRAFT_CREATED = "draft_created"
RESPONDING = "responding"
REJECTING = "rejecting"
ANSWERING = frozenset({RESPONDING, REJECTING})
POLL_REQUEUE_AFTER = timedelta(minutes=10)
ENTITY_NOUN = {INVOICES: "purchase invoice", CREDIT_MEMOS: "purchase credit memo"}
MAX_UNCLEAR_WAITS = 5  # then the job is retried by the queue (and dead-lettered in the end) instead


def invoice_job_id(invoice_id: str) -> str:
    return job_id(KIND, invoice_id)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def phase_of(job: Job) -> str:
    """The state to resume from: a dead-lettered job continues where it stopped."""
    if job.state == DEAD_LETTERED:
        return job.get("previous_state") or RECEIVED
    return job.state


def defer(rt, queue: str, message: Any, job: Job) -> int:
    """Another worker holds the lease: try again once it has expired (the holder's own message
    is redelivered if it crashed; this copy only makes sure nothing waits for the dequeue limit)."""
    now = utcnow()
    wait = (job.lease_until - now).total_seconds() if job.lease_until else LEASE_SECONDS
    delay = int(min(max(wait, 0) + 2, LEASE_SECONDS * 2))
    rt.storage.enqueue(queue, message, delay_seconds=delay)
    return delay


class Audit:
    """Audit rows of one invoice job, with both sides' ids filled in."""

    def __init__(self, rt, job: Job) -> None:
        self.rt = rt
        self.job = job

    def __call__(self, step: str, outcome: str, message: str = "", *, exc: ConnectorError | None = None,
                 http_status: int | None = None, **extra: Any) -> None:
        if exc is not None:
            http_status = http_status or exc.status
            extra.setdefault("correlation_id", exc.correlation_id)
            extra.setdefault("error_code", exc.code)
        try:
            self.rt.audit.record(self.job.id, step, outcome, message, kind=KIND, http_status=http_status,
                                 basware_id=self.job.get("invoice_id"), bc_id=self.job.get("bc_id") or None,
                                 **extra)
        except Exception:  # noqa: BLE001 - the audit trail must never turn a success into a retry
            log.exception("event=audit.failed job=%s step=%s", self.job.id, step)


# -- the transfer job ------------------------------------------------------------------------------
def transfer_invoice(rt, message: InvoiceTransferMessage, dequeue_count: int = 1, max_dequeue_count: int = 5,
                     *, lease_seconds: float = LEASE_SECONDS) -> str:
    """Work one `invoice-transfers` message. Returns an outcome word; raises to have it retried."""
    jid = invoice_job_id(message.invoice_id)
    existing = rt.jobs.get(KIND, jid)
    if existing is not None and existing.state == DONE:
        Audit(rt, existing)("receive", "skipped", f"already transferred ({message.source} message)")
        return "already_done"
    claim = rt.jobs.claim(KIND, jid, rt.worker_id, lease_seconds, allow_finished=True,
                          queue=INVOICE_TRANSFERS, message=message.model_dump_json(), invoice_id=message.invoice_id)
    if not claim.won:
        delay = defer(rt, INVOICE_TRANSFERS, message, claim.job)
        Audit(rt, claim.job)("receive", "deferred", f"another worker holds the job; retry in {delay}s")
        return "busy"
    transfer = _Transfer(rt, claim.job, message, lease_seconds)
    if claim.job.state == DONE:  # finished between our read and the claim
        transfer.release()
        return "already_done"
    try:
        with LeaseKeeper(transfer.renew_lease, lease_seconds / 3) as keeper:
            transfer.keeper = keeper
            return transfer.run()
    except Exception as exc:
        transfer.note_retry(exc, last=dequeue_count >= max_dequeue_count)
        raise


@dataclass
class _Ids:
    company: str
    entity: str


class _Transfer:
    def __init__(self, rt, job: Job, message: InvoiceTransferMessage, lease_seconds: float) -> None:
        self.rt = rt
        self.job = job
        self.message = message
        self.lease_seconds = lease_seconds
        self.invoice_id = message.invoice_id
        self.audit = Audit(rt, job)
        self.round = int(job.get("round") or 1)
        self.keeper: LeaseKeeper | None = None
        self.mapped: MappedDocument | None = None
        self._row_lock = threading.RLock()  # the heartbeat and the steps write the same row
        self._renewed_at = time.monotonic()

    # -- job row helpers (every write renews the lease) -------------------------------------------
    def update(self, **fields: Any) -> Job:
        with self._row_lock:
            until = utcnow() + timedelta(seconds=self.lease_seconds)
            self.job = self.rt.jobs.update(self.job, lease_until=until, **fields)
            self._renewed_at = time.monotonic()
            self.audit.job = self.job
            return self.job

    def release(self, **fields: Any) -> Job:
        with self._row_lock:
            self.job = self.rt.jobs.release(self.job, **fields)
            self.audit.job = self.job
            return self.job

    def renew_lease(self) -> bool:
        """The heartbeat (lease.py): extend the lease while a step runs; False once released."""
        with self._row_lock:
            if not self.job.lease_owner:
                return False
            self.update()
            return True

    def guard(self, action: str, **fields: Any) -> None:
        """Before a write to BC that cannot be undone (create, post, delete): still the owner? The
        conditional row write proves it, and gives the step a whole lease from now."""
        if self.keeper is not None and self.keeper.lost:
            raise JobBusy(f"the lease was lost: another worker has the job; not going to {action}")
        if fields or time.monotonic() - self._renewed_at > self.lease_seconds / 3:
            try:
                self.update(**fields)
            except JobConflict:
                raise JobBusy(f"another worker took the job over; not going to {action}") from None

    def wait_for_bc(self, seconds: float, step: str, why: str) -> str:
        """Give the job back and come back once BC can no longer commit what it may still hold. After
        MAX_UNCLEAR_WAITS in a row BC is treated as failing: the queue's retries (then the dead letter)
        take over, so an operator sees it."""
        waits = int(self.job.get("unclear_waits") or 0) + 1
        if waits > MAX_UNCLEAR_WAITS:
            self.update(unclear_waits=0)
            raise TransientError(f"BC left {MAX_UNCLEAR_WAITS} requests unanswered in a row ({why})", system="bc")
        self.update(unclear_waits=waits)
        delay = int(math.ceil(max(seconds, 0.0))) + 1
        self.rt.storage.enqueue(INVOICE_TRANSFERS, self.message, delay_seconds=delay)
        self.release()
        self.audit(step, "waiting", f"{why}; looking again in {delay}s")
        return "waiting"

    def window_left(self, since_field: str) -> float:
        """Seconds until BC can no longer commit a request sent at the time recorded in `since_field`."""
        since = self.job.get(since_field)
        if not isinstance(since, datetime) or int(self.job.get(since_field + "_round") or 0) != self.round:
            return 0.0
        return (since + timedelta(seconds=self.rt.settings.bc_late_commit_window) - utcnow()).total_seconds()

    def note_retry(self, exc: Exception, last: bool) -> None:
        """A transient failure: give the lease back and say why (the dead-letter row shows it)."""
        summary = exc.summary() if isinstance(exc, ConnectorError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, JobBusy):
            self.audit("transfer", "abandoned", summary)
            return
        try:
            self.release(last_error=summary[:1000])
        except Exception:  # noqa: BLE001 - the row moved on (another worker): nothing to release
            pass
        self.audit("transfer", "retry" if not last else "last_attempt_failed", summary,
                   exc=exc if isinstance(exc, ConnectorError) else None)

    # -- the steps -----------------------------------------------------------------------------------
    def run(self) -> str:
        doc = self.rt.basware.get_document(self.invoice_id)
        if doc is None:
            self.release(state=FAILED, last_error="the document does not exist in Basware")
            self.audit("read_document", "not_found", "Basware has no such accounting document", http_status=404)
            return "not_found"
        status = doc.processing_status or ""
        self.audit("read_document", "ok", f"status {status}", http_status=200)
        phase = phase_of(self.job)
        acknowledged_by_us = self.job.get("ack_round") == self.round

        if status in (TRANSFERRED, PAID):
            return self.reconcile_transferred(doc)
        if status == TRANSFER_FAILED:
            return self.reconcile_failed(doc, phase)
        if status == WAITING_FOR_TRANSFER:
            # offered again after this connector had got further than acknowledging: the user
            # re-transferred it in Basware (an interrupted acknowledge just continues the round)
            if phase in (FAILED, DONE) or (acknowledged_by_us and phase not in (RECEIVED, ACKNOWLEDGED)):
                self.new_round()
        elif status == TRANSFER_IN_PROGRESS:
            if not acknowledged_by_us:
                self.release(**({"state": FAILED, "last_error": "acknowledged by another system"}
                                if phase == RECEIVED and not self.job.get("bc_id") else {}))
                self.audit("read_document", "skipped", "TransferInProgress, but not acknowledged by this connector")
                return "not_ours"
            if phase == FAILED:
                self.release()
                self.audit("read_document", "skipped", "failure response already sent; Basware is processing it")
                return "already_failed"
            if phase in ANSWERING:
                return self.resume_answer(phase)
        else:
            self.release()
            self.audit("read_document", "skipped", f"status {status} is not for transfer")
            return "ignored"

        company = self.rt.settings.bc_company_for(doc.company_code)
        if company is None:
            self.release(state=FAILED, last_error=f"companyCode {doc.company_code} is not in COMPANY_MAP")
            self.audit("read_document", "skipped", f"companyCode {doc.company_code} is not mapped to a BC company")
            return "unmapped_company"
        # invoice number and supplier on the row from the first read: operators search by them, also
        # for an invoice rejected before a BC draft (and its vendor_document_number) existed
        seen = {"bc_company_id": company, "company_code": doc.company_code or "",
                "invoice_number": doc.invoice_number or "", "supplier_code": doc.supplier_code or ""}
        if any((self.job.get(k) or "") != v for k, v in seen.items()):
            self.update(**seen)

        ledger_cache(self.rt.bc).get(company)  # BC unreachable or refusing us: stop before acknowledging
        resumed = self.job.get("create_round") == self.round  # a draft of ours may exist from an earlier try
        self.acknowledge()

        existing = self.existing_draft_or_posted(company)
        if existing is not None and not existing.is_draft:
            return self.respond_posted(company, self.job.get("bc_entity") or INVOICES, existing)

        mapped = self.map(doc, company)
        if not mapped.ok:
            return self.reject(mapped.clerk_message(), "; ".join(p.text for p in mapped.problems), company,
                               mapped.entity, existing)
        ids = _Ids(company, mapped.entity)
        if existing is None and (resumed or ownership.draft_index(self.rt.bc).may_hold(
                company, ids.entity, mapped.vendor_number, mapped.vendor_document_number)):
            existing = self.lookup(ids, mapped)
            if isinstance(existing, str):  # a foreign document: rejected
                return existing
            if existing is not None and not existing.is_draft:  # ours, posted by an earlier try
                return self.respond(ids.entity, existing, posted=True)
        elif existing is not None:
            existing = self.correct_dimensions(ids, mapped, existing, None)
        draft = existing if existing is not None else self.create_draft(ids, mapped)
        if isinstance(draft, str):  # refused by BC (already rejected), or waiting for BC
            return draft

        problem = self.check_totals(ids, mapped, draft)
        if problem is not None:
            return self.reject(clerk_message([problem]), problem, company, mapped.entity, draft)
        images = attach_images(self.rt, doc, company, mapped.entity, draft.id, self.audit, fresh=existing is None,
                               renew=self.update)
        if images.failure:  # ATTACHMENT_REQUIRED and no original image
            return self.reject(images.failure, images.failure, company, mapped.entity, draft)
        if self.rt.settings.post_mode == "draft":
            return self.respond(ids.entity, draft, posted=False)
        return self.post(ids, draft)

    def new_round(self) -> None:
        previous = self.round
        self.round = previous + 1
        self.update(state=RECEIVED, round=self.round, response_success=None, response_message="",
                    response_voucher="", response_code="", draft_deleted=False, last_error="")
        self.audit("read_document", "new_round", f"document offered again by Basware (round {self.round})")

    def acknowledge(self) -> None:
        if self.job.get("ack_round") == self.round and phase_of(self.job) not in (RECEIVED, ACKNOWLEDGED):
            return
        if self.job.get("ack_round") != self.round:
            # Intent first: a TransferInProgress document is then known to be ours; and from here on
            # an interrupted try may leave a draft, so a resumed job looks for one before creating.
            self.update(state=ACKNOWLEDGED, ack_round=self.round, create_round=self.round)
        acknowledged = self.rt.basware.acknowledge(self.invoice_id)
        if acknowledged:
            self.audit("acknowledge", "ok", "acknowledged in Basware", http_status=200)
        else:
            self.audit("acknowledge", "already", "already acknowledged (405): continuing", http_status=405)

    def map(self, doc: AccountingDocument, company: str) -> MappedDocument:
        cache = ledger_cache(self.rt.bc)
        rules = MappingRules.from_settings(self.rt.settings)
        mapped = self.mapped = map_document(doc, cache.get(company), rules)
        if mapped.master_data_problem:  # a code BC may have gained since the cache was filled
            ledger, reloaded = cache.refresh(company)
            if reloaded:
                mapped = self.mapped = map_document(doc, ledger, rules)
        if mapped.ok:
            self.audit("map", "ok", f"{ENTITY_NOUN[mapped.entity]} for vendor {mapped.vendor_number}, "
                                    f"{len(doc.coding_rows)} line(s), gross {mapped.gross}")
        else:
            self.audit("map", "invalid", mapped.clerk_message())
        return mapped

    def existing_draft_or_posted(self, company: str) -> PurchaseDocument | None:
        """The BC document this job recorded, if it still exists: posted (answer), or a draft
        of this round (reuse). A draft left from an earlier round is stale (recoded): deleted."""
        bc_id = self.job.get("bc_id")
        if not bc_id:
            return None
        entity = self.job.get("bc_entity") or INVOICES
        current = self.rt.bc.get_document(company, entity, bc_id)
        if current is None:
            self.update(bc_id="", draft_deleted=False)
            self.audit("find_document", "gone", "the recorded BC document no longer exists")
            return None
        if not current.is_draft:
            self.audit("find_document", "posted", f"already posted as {current.number}", bc_number=current.number)
            return current
        if int(self.job.get("bc_round") or 0) != self.round:
            self.delete_draft(company, entity, current, reason="draft from an earlier round")
            return None
        self.audit("find_document", "reuse", f"reusing draft {current.number}")
        return current

    def lookup(self, ids: _Ids, mapped: MappedDocument) -> PurchaseDocument | str | None:
        """An earlier try may have created (or posted) a document and died before recording it, or BC
        may have committed a create the connector gave up on. Only documents carrying this job's
        marker are ours (ownership.py); any other with the same vendor + number is foreign: the
        invoice fails naming it, and nothing in BC is touched."""
        found = ownership.classify(
            self.rt.bc.find_documents(ids.company, ids.entity, mapped.vendor_number,
                                      ownership.code_upper(mapped.vendor_document_number),
                                      expand=ownership.expand_for_marker(ids.entity)),
            ids.entity, self.job.id, mapped.vendor_document_number)
        foreign = [f.document for f in found if not f.ours]
        if foreign:
            return self.reject_foreign(ids, mapped, foreign[0])
        ours = [f for f in found if f.ours]
        posted = [f.document for f in ours if not f.document.is_draft]
        current = [f.document for f in ours if f.document.is_draft and f.round == self.round]
        stale = [f.document for f in ours if f.document.is_draft and f.round != self.round]
        keep = posted[0] if posted else next((d for d in current if d.id == self.job.get("bc_id")),
                                             current[0] if current else None)
        for extra in stale + [d for d in current if d is not keep]:
            self.delete_draft(ids.company, ids.entity, extra, reason="a second draft of this connector's (BC "
                              "committed a request late)" if extra in current else "draft from an earlier round")
        if keep is None:
            self.audit("find_document", "none", "no earlier draft in BC")
            return None
        self.update(state=DRAFT_CREATED, bc_id=keep.id, bc_entity=ids.entity, bc_round=self.round,
                    bc_etag=keep.etag or "", bc_number=keep.number or "", draft_deleted=False,
                    vendor_number=mapped.vendor_number, vendor_document_number=mapped.vendor_document_number)
        if not keep.is_draft:
            self.audit("find_document", "posted", f"already posted as {keep.number}", bc_number=keep.number)
            return keep
        self.audit("find_document", "reuse", f"reusing draft {keep.number} from an earlier attempt")
        return self.correct_dimensions(ids, mapped, keep, None)

    def reject_foreign(self, ids: _Ids, mapped: MappedDocument, document: PurchaseDocument) -> str:
        noun = ENTITY_NOUN[ids.entity]
        where = ownership.describe(document, noun)
        self.audit("find_document", "foreign", f"{where} has the same vendor and number and was not made by "
                   "this connector: left untouched", bc_number=document.number)
        text = (f"invoice number {mapped.vendor_document_number} of vendor {mapped.vendor_number} is already on "
                f"BC {where}, not created by this connector (post or delete it in BC, or correct the number)")
        return self.reject(clerk_message([text], suffix=" Then re-transfer."), f"foreign BC document {where}",
                           ids.company, ids.entity, None)

    def create_draft(self, ids: _Ids, mapped: MappedDocument) -> PurchaseDocument | str:
        """One deep-insert POST, never repeated blindly: BC may commit a request after the client
        gave up on it (Microsoft Learn, administration/operational-limits-online). After an unclear
        outcome the draft is looked for by this job's marker; if it is not there, the job waits out
        BC's late-commit window before creating again.
        Nested dimensions are only those BC will not inherit (dimensions.py); a clash costs one
        refused POST and is created again without nested dimensions on the unknown accounts."""
        left = self.window_left("create_sent_at")
        if left > 0:
            return self.wait_for_bc(left, "create_draft", "an earlier create may still be committed by BC")
        cache = ledger_cache(self.rt.bc)
        lines_key = LINES[ids.entity]
        marked = ownership.add_marker(mapped.body, ids.entity, ownership.marker(self.job.id, self.round))
        vendor_defaults = cache.get(ids.company).vendor_defaults.get(mapped.vendor_number.upper(), ())
        body, plan = dimensions.plan(marked, lines_key, vendor_defaults, ids.company, cache.account_defaults)
        expand = f"{lines_key}($expand=dimensionSetLines),dimensionSetLines"
        retry = self.rt.bc.retry
        attempt = 0
        clashed = False
        while True:
            attempt += 1
            self.guard("create a draft", create_sent_at=utcnow(), create_sent_at_round=self.round)
            try:
                draft = self.rt.bc.create_document(ids.company, ids.entity, body, max_attempts=1, expand=expand)
                break
            except DocumentError as exc:
                if dimensions.is_clash(exc.message) and not clashed:
                    # an account default not learned yet (or a vendor default newer than the ledger):
                    # BC stored nothing; again without nested dimensions on the lines it may concern
                    clashed = True
                    accounts = [ln.account for ln in plan.lines if ln.nested]
                    if all(cache.account_defaults.get(ids.company, a) is not None for a in accounts):
                        cache.account_defaults.forget(ids.company, accounts)
                    body, plan = dimensions.plan(marked, lines_key, vendor_defaults, ids.company,
                                                 cache.account_defaults, strip_unknown=True)
                    self.audit("create_draft", "clash", "BC inherits a dimension the draft also sent; creating "
                               "it again without those and correcting the lines after", exc=exc)
                    self.update(create_sent_at_round=0)  # refused: nothing of it can commit later
                    continue
                self.audit("create_draft", "refused", exc.message, exc=exc)
                return self.reject(clerk_message([f"BC refused the {ENTITY_NOUN[ids.entity]}: {exc.message}"]),
                                   exc.summary(), ids.company, ids.entity, None, exc=exc)
            except TransientError as exc:
                if not exc.unprocessed:  # it may have landed, or may yet
                    return self.unclear_create(ids, mapped, exc)
                self.update(create_sent_at_round=0)
                if attempt >= retry.max_attempts:
                    raise
                self.audit("create_draft", "retry", exc.summary(), exc=exc)
                if not self.rt.bc.wait_before_retry(attempt, exc):
                    raise  # BC asks for a longer pause than a worker should hold: the queue retries
        try:
            self.update(state=DRAFT_CREATED, bc_id=draft.id, bc_entity=ids.entity, bc_round=self.round,
                        bc_etag=draft.etag or "", bc_number=draft.number or "", draft_deleted=False,
                        vendor_number=mapped.vendor_number, create_sent_at_round=0, unclear_waits=0,
                        vendor_document_number=mapped.vendor_document_number)
        except JobConflict:
            # another worker took the job over while BC was slow. The draft carries this job's
            # marker: the new owner finds and keeps it (ownership.py); deleting it here could remove
            # the draft the new owner is about to post.
            raise JobBusy("another worker took over the job while the draft was being created") from None
        self.audit("create_draft", "ok", f"draft {ENTITY_NOUN[ids.entity]} {draft.number} created", http_status=201,
                   bc_number=draft.number)
        return self.correct_dimensions(ids, mapped, draft, plan)

    def unclear_create(self, ids: _Ids, mapped: MappedDocument, exc: TransientError) -> PurchaseDocument | str:
        self.audit("create_draft", "unclear", exc.summary(), exc=exc)
        landed = self.lookup(ids, mapped)
        if isinstance(landed, str):
            return landed
        if landed is not None:  # ours (a posted one is answered by the post step's "already posted")
            self.audit("create_draft", "recovered", "the draft was created although BC's answer was lost")
            return landed
        return self.wait_for_bc(self.window_left("create_sent_at"), "create_draft",
                                "BC did not answer the create and may still commit it")

    def correct_dimensions(self, ids: _Ids, mapped: MappedDocument, draft: PurchaseDocument,
                           plan: "dimensions.DimensionPlan | None") -> PurchaseDocument | str:
        """Make every line carry exactly the coded values: PATCH an inherited value that differs, POST
        a coded code BC lacks. Lines come from the create's answer where BC returned them."""
        cache = ledger_cache(self.rt.bc)
        lines_key = LINES[ids.entity]
        learn = plan is not None
        if plan is None:  # a draft from an earlier try: compare it with the coding as it is
            vendor_defaults = cache.get(ids.company).vendor_defaults.get(mapped.vendor_number.upper(), ())
            _, plan = dimensions.plan(mapped.body, lines_key, vendor_defaults, ids.company, dimensions.AccountDefaults())
        lines = (draft.model_extra or {}).get(lines_key)
        header = (draft.model_extra or {}).get("dimensionSetLines")
        if lines is None or any("dimensionSetLines" not in ln for ln in lines):
            if learn and not plan.relies_on_inheritance:
                return draft  # everything coded was nested and BC accepted it: nothing to check
            full = self.rt.bc.get_document(ids.company, ids.entity, draft.id,
                                           expand=f"{lines_key}($expand=dimensionSetLines),dimensionSetLines")
            if full is None:
                raise TransientError("the draft just created cannot be read back", system="bc")
            lines = (full.model_extra or {}).get(lines_key) or []
            header = (full.model_extra or {}).get("dimensionSetLines")
        header_dims = None if header is None else {str(d.get("code") or "").upper(): str(d.get("valueCode") or "").upper()
                                                   for d in header}
        learned = cache.account_defaults if learn else dimensions.AccountDefaults()
        corrections = dimensions.reconcile(lines, plan, header_dims, ids.company, learned)
        done: list = []
        for attempt in (1, 2):
            unclear: ConnectorError | None = None
            for fix in corrections:
                try:  # once each: a lost answer is settled by reading the lines again, not by resending
                    self.rt.bc.set_line_dimension(ids.company, ids.entity, draft.id, fix.line_id, fix.code,
                                                  fix.value, dimension_id=fix.dimension_id, etag=fix.etag,
                                                  max_attempts=1)
                    done.append(fix)
                except TransientError as exc:
                    unclear = exc
                    break
                except PermanentError as exc:
                    if isinstance(exc, ConflictError) or dimensions.is_clash(exc.message):
                        unclear = exc  # an earlier, unanswered try had landed: the line changed under us
                        break
                    if not isinstance(exc, DocumentError):
                        raise
                    self.audit("dimensions", "refused", exc.message, exc=exc)
                    return self.reject(clerk_message([f"BC refused {fix.code} {fix.value}: {exc.message}"]),
                                       exc.summary(), ids.company, ids.entity, draft, exc=exc)
            if unclear is None:
                break
            if attempt == 2:
                raise TransientError(f"the draft's dimensions could not be corrected: {unclear.message}",
                                     system="bc")
            self.audit("dimensions", "unclear", unclear.summary(), exc=unclear)
            full = self.rt.bc.get_document(ids.company, ids.entity, draft.id,
                                           expand=f"{lines_key}($expand=dimensionSetLines),dimensionSetLines")
            if full is None:
                raise TransientError("the draft cannot be read back", system="bc")
            corrections = dimensions.reconcile((full.model_extra or {}).get(lines_key) or [], plan, header_dims,
                                               ids.company, dimensions.AccountDefaults())
        corrections = done
        if corrections:
            self.audit("dimensions", "corrected", "; ".join(
                f"{fix.code} {'set to' if fix.dimension_id else 'added as'} {fix.value}" for fix in corrections)[:900])
        return draft

    def check_totals(self, ids: _Ids, mapped: MappedDocument, draft: PurchaseDocument) -> str | None:
        if draft.total_including_tax is None or (not draft.total_including_tax and mapped.gross):
            draft = self.rt.bc.get_document(ids.company, ids.entity, draft.id) or draft  # totals not in the answer
        problem = totals_problem(mapped, draft.total_including_tax, draft.total_tax,
                                 Decimal(self.rt.settings.total_tolerance))
        self.audit("check_totals", "mismatch" if problem else "ok", problem or
                   f"gross {draft.total_including_tax}, VAT {draft.total_tax} match Basware")
        return problem

    def post(self, ids: _Ids, draft: PurchaseDocument) -> str:
        PostedIndex(self.rt.storage).remember(draft.id, self.job.id)  # before BC can pay it (payments flow)
        """`Microsoft.NAV.post`, sent once per late-commit window: after an unclear outcome the document
        is read before anything else; still a draft, it is posted again only once BC can no longer
        commit the first request (Microsoft Learn, administration/operational-limits-online)."""
        if self.window_left("post_sent_at") > 0 or self.job.get("post_sent_at_round") == self.round:
            current = self.rt.bc.get_document(ids.company, ids.entity, draft.id)
            if current is not None and not current.is_draft:
                self.audit("post", "already", "an earlier post was committed by BC")
                return self.respond(ids.entity, current, posted=True)
            left = self.window_left("post_sent_at")
            if left > 0:
                return self.wait_for_bc(left, "post", "an earlier post may still be committed by BC")
        retry = self.rt.bc.retry
        attempt = 0
        while True:
            attempt += 1
            self.guard("post the draft", post_sent_at=utcnow(), post_sent_at_round=self.round)
            try:
                self.rt.bc.post_document(ids.company, ids.entity, draft.id, max_attempts=1)
            except DocumentError as exc:
                current = self.rt.bc.get_document(ids.company, ids.entity, draft.id)
                if current is None or current.is_draft:  # really refused (duplicate number, dates, dimensions...)
                    self.update(post_sent_at_round=0)
                    self.audit("post", "refused", exc.message, exc=exc)
                    return self.reject(clerk_message([self.posting_refusal(ids, exc.message)]), exc.summary(),
                                       ids.company, ids.entity, current or draft, exc=exc)
                self.audit("post", "already", "an earlier attempt had posted it", exc=exc)
            except TransientError as exc:
                if exc.unprocessed:
                    # refused before it ran (a 429): nothing of it can commit later, so the marker goes
                    # at once; a read here could itself be refused and leave the job waiting out the
                    # late-commit window for a post BC never ran
                    self.update(post_sent_at_round=0)
                else:
                    current = self.rt.bc.get_document(ids.company, ids.entity, draft.id)  # read before anything else
                    if current is not None and not current.is_draft:
                        self.audit("post", "already", "posted although BC's answer was lost", exc=exc)
                        break
                    self.audit("post", "unclear", exc.summary(), exc=exc)
                    return self.wait_for_bc(self.window_left("post_sent_at"), "post",
                                            "BC did not answer the post and may still commit it")
                if attempt >= retry.max_attempts or not self.rt.bc.wait_before_retry(attempt, exc):
                    raise
                continue
            else:
                self.audit("post", "ok", "posted", http_status=204)
            break
        posted = self.rt.bc.get_document(ids.company, ids.entity, draft.id)
        if posted is None or posted.is_draft:
            # e.g. "post with job queue": BC has queued the posting; read it again on the retry
            raise TransientError("BC accepted the post action but the document is not posted yet", system="bc")
        return self.respond(ids.entity, posted, posted=True)

    def posting_refusal(self, ids: _Ids, message: str) -> str:
        """BC's posting error for the clerk: dimension rules name the rows; a duplicate names the document."""
        mapped = self.mapped
        explained = dimensions.explain_posting_refusal(message, mapped.rows if mapped else [])
        if explained:
            return f"BC refused to post: {explained}"
        if "already exists for this vendor" in message and mapped is not None:
            found = ownership.classify(
                self.rt.bc.find_documents(ids.company, ids.entity, mapped.vendor_number,
                                          ownership.code_upper(mapped.vendor_document_number),
                                          expand=ownership.expand_for_marker(ids.entity)),
                ids.entity, self.job.id, mapped.vendor_document_number)
            other = next((f.document for f in found if not f.document.is_draft), None)
            if other is not None:
                return (f"BC refused to post: invoice number {mapped.vendor_document_number} of vendor "
                        f"{mapped.vendor_number} already exists for this vendor, as "
                        f"{ownership.describe(other, ENTITY_NOUN[ids.entity])}")
        return f"BC refused to post: {message}"

    def respond_posted(self, company: str, entity: str, posted: PurchaseDocument) -> str:
        return self.respond(entity, posted, posted=True)

    def respond(self, entity: str, document: PurchaseDocument, *, posted: bool) -> str:
        number = document.number or ""
        noun = ENTITY_NOUN[entity]
        text = (f"Posted in Business Central as {noun} {number}." if posted else
                f"Created in Business Central as draft {noun} {number}; not posted (POST_MODE=draft).")
        self.release(state=RESPONDING, bc_number=number, bc_status=document.status or "", response_success=True,
                     response_message=text, response_voucher=number, response_round=self.round, last_error="")
        self.audit("respond", "queued", text, bc_number=number)  # before: a crash after the enqueue keeps the row
        self.queue_answer()
        return "posted" if posted else "draft"

    def reject(self, clerk_text: str, detail: str, company: str, entity: str,
               draft: PurchaseDocument | None, exc: ConnectorError | None = None) -> str:
        """A permanent failure: no draft of ours stays in BC, Basware hears why."""
        self.update(state=REJECTING, response_success=False, response_message=clerk_text,
                    response_round=self.round, last_error=detail[:1000])
        self.audit("validate", "rejected", clerk_text, exc=exc)
        self.remove_own_draft(company, entity, draft)
        self.release()
        self.queue_answer()
        return "rejected"

    def remove_own_draft(self, company: str, entity: str, draft: PurchaseDocument | None) -> None:
        bc_id = self.job.get("bc_id")
        if not bc_id or int(self.job.get("bc_round") or 0) != self.round or self.job.get("draft_deleted"):
            return
        entity = self.job.get("bc_entity") or entity
        if draft is None or draft.id != bc_id:
            draft = self.rt.bc.get_document(company, entity, bc_id)
        if draft is None:
            self.update(draft_deleted=True)
            return
        if not draft.is_draft:  # never delete a posted document
            return
        self.delete_draft(company, entity, draft, reason="the invoice was rejected")

    def delete_draft(self, company: str, entity: str, draft: PurchaseDocument, *, reason: str) -> None:
        self.guard("delete a draft")
        try:
            self.rt.bc.delete_document(company, entity, draft.id, draft.etag)
        except ConflictError:
            self.rt.bc.delete_document(company, entity, draft.id, None)  # the ETag moved on: If-Match *
        self.update(draft_deleted=True)
        self.audit("delete_draft", "ok", f"deleted draft {draft.number}: {reason}", bc_number=draft.number)

    def resume_answer(self, phase: str) -> str:
        """The job had decided its answer before it was interrupted: finish and queue it again."""
        if phase == REJECTING and not self.job.get("draft_deleted") and self.job.get("bc_company_id"):
            self.remove_own_draft(self.job.get("bc_company_id"), self.job.get("bc_entity") or INVOICES, None)
        self.release(**({"state": phase} if self.job.state == DEAD_LETTERED else {}))
        self.queue_answer()
        self.audit("respond", "requeued", "transfer response queued again")
        return "requeued"

    def queue_answer(self) -> None:
        self.rt.storage.enqueue(BASWARE_CALLBACKS, CallbackMessage(kind="transfer", job_id=self.job.id,
                                                                   invoice_id=self.invoice_id))

    # -- reconciliation with a document Basware has finished --------------------------------------------
    def reconcile_transferred(self, doc: AccountingDocument) -> str:
        ours = self.job.get("response_code")
        landed = any(r.external_code == ours for r in doc.transfer_responses) if ours else False
        if phase_of(self.job) != RESPONDING and self.job.get("bc_company_id"):  # someone else transferred it
            self.remove_own_draft(self.job.get("bc_company_id"), self.job.get("bc_entity") or INVOICES, None)
        self.audit("reconcile", "done", "Basware shows the document as Transferred"
                   + (" with our transfer response" if landed else ""))
        self.release(state=DONE, last_error="")  # after the row: never done without it
        return "reconciled"

    def reconcile_failed(self, doc: AccountingDocument, phase: str) -> str:
        if phase == FAILED:
            self.release()
            return "already_failed"
        ours = self.job.get("response_code")
        landed = ours and any(r.external_code == ours for r in doc.transfer_responses)
        if not landed and self.job.get("bc_company_id"):
            self.remove_own_draft(self.job.get("bc_company_id"), self.job.get("bc_entity") or INVOICES, None)
        reason = ("our failure response was processed" if landed else
                  "Basware marked the document TransferFailed before our response (transfer recovery timeout?)")
        self.release(state=FAILED, last_error="" if landed else reason)
        self.audit("reconcile", "failed", reason)
        return "reconciled_failed"


# -- the poll --------------------------------------------------------------------------------------
def poll_invoices(rt, *, requeue_after: timedelta = POLL_REQUEUE_AFTER, page_size: int = 100) -> dict[str, int]:
    """Enqueue what the webhook may have missed: WaitingForTransfer documents, and TransferInProgress
    ones this connector acknowledged and never answered. Skips documents queued within
    `requeue_after` (the worker is idempotent anyway; this only saves work)."""
    counts = {"seen": 0, "queued": 0, "skipped": 0}
    codes = sorted(c for c in rt.settings.company_map if c != "*")
    scopes: list[str | None] = [None] if "*" in rt.settings.company_map else codes
    now = utcnow()
    for code in scopes:
        for status in (WAITING_FOR_TRANSFER, TRANSFER_IN_PROGRESS):
            for doc in rt.basware.list_documents(status, company_code=code, page_size=page_size):
                counts["seen"] += 1
                if _poll_one(rt, doc, status, now, requeue_after):
                    counts["queued"] += 1
                else:
                    counts["skipped"] += 1
    log.info("event=invoices.poll seen=%d queued=%d skipped=%d", counts["seen"], counts["queued"],
             counts["skipped"])
    return counts


def _poll_one(rt, doc: AccountingDocument, status: str, now: datetime, requeue_after: timedelta) -> bool:
    jid = invoice_job_id(doc.invoice_id)
    job = rt.jobs.get(KIND, jid)
    if status == TRANSFER_IN_PROGRESS:
        if job is None or job.get("ack_round") != int(job.get("round") or 1) or job.state in (DONE, FAILED):
            return False  # not acknowledged by us, or already answered
    elif job is not None and job.state in (DONE, DEAD_LETTERED):
        return False  # done is final; dead-lettered waits for an operator's replay
    queued_at = job.get("queued_at") if job is not None else None
    in_flight = job is not None and job.state not in (FAILED,)
    if in_flight and isinstance(queued_at, datetime) and now - queued_at < requeue_after:
        return False
    if job is not None and job.lease_owner and job.lease_until and job.lease_until > now:
        return False  # a worker has it right now
    message = InvoiceTransferMessage(invoice_id=doc.invoice_id, source="poll", company_code=doc.company_code)
    if job is None:
        job = rt.jobs.create(KIND, jid, RECEIVED, invoice_id=doc.invoice_id, queue=INVOICE_TRANSFERS,
                             message=message.model_dump_json(), queued_at=now, round=1)
        if job is None:  # created by a worker a moment ago
            return False
    else:
        try:
            rt.jobs.update(job, queued_at=now)
        except JobConflict:
            return False
    rt.storage.enqueue(INVOICE_TRANSFERS, message)
    Audit(rt, job)("poll", "queued", f"found {status} by the poll")
    return True
