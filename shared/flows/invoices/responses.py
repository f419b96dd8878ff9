"""Transfer responses to Basware: exactly one successful answer per invoice.

Basware has no idempotency key; each response needs a new `externalCode` and a second success
would show twice on the invoice (Basware P2P API, POST /v1/accountingDocuments/{invoiceId}/transferResponses). So the code is
persisted on the job BEFORE the POST, the POST is never retried blindly, and after an unclear
outcome (timeout, 5xx, a redelivered message) the document's `transferResponses[]` is re-read:
if our code is there, or Basware has already finished the document, nothing is sent again.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from shared.core.errors import ConfigError, PermanentError, TransientError
from shared.flows.invoices.transfer import ANSWERING, KIND, LEASE_SECONDS, PAID, Audit, defer, phase_of, utcnow
from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, Job
from shared.flows.invoices.mapping import CLERK_MESSAGE_MAX
from shared.models.basware import TRANSFER_FAILED, TRANSFERRED, WAITING_FOR_TRANSFER, TransferResponse
from shared.models.messages import CallbackMessage, InvoiceTransferMessage
from shared.store.storage import BASWARE_CALLBACKS, INVOICE_TRANSFERS

log = logging.getLogger("ml_connector.invoices")

SEND_ATTEMPTS = 3
# Longer than one send can take (the client's 30 s timeout, no inline retries): a worker that takes
# the job over must never do so while an earlier send is still in flight.
SENDER_LEASE_SECONDS = 2 * LEASE_SECONDS + 15


def send_transfer_response(rt, message: CallbackMessage, dequeue_count: int = 1, max_dequeue_count: int = 5,
                           *, lease_seconds: float = SENDER_LEASE_SECONDS) -> str:
    job = rt.jobs.get(KIND, message.job_id)
    if job is None:
        log.warning("event=transfer_response.no_job job=%s", message.job_id)
        return "no_job"
    if job.state in (DONE, FAILED):
        Audit(rt, job)("respond", "skipped", "already answered")
        return "already_answered"
    claim = rt.jobs.claim(KIND, job.id, rt.worker_id, lease_seconds, allow_finished=True)
    if not claim.won:
        if claim.reason == "finished":
            return "already_answered"
        delay = defer(rt, BASWARE_CALLBACKS, message, claim.job)
        Audit(rt, claim.job)("respond", "deferred", f"another worker holds the job; retry in {delay}s")
        return "busy"
    sender = _Sender(rt, claim.job, message, lease_seconds)
    try:
        return sender.run()
    except Exception as exc:
        sender.note_retry(exc, last=dequeue_count >= max_dequeue_count)
        raise


class _Sender:
    def __init__(self, rt, job: Job, message: CallbackMessage, lease_seconds: float) -> None:
        self.rt = rt
        self.job = job
        self.invoice_id = message.invoice_id or job.get("invoice_id")
        self.lease_seconds = lease_seconds
        self.audit = Audit(rt, job)

    def update(self, **fields) -> None:
        self.job = self.rt.jobs.update(self.job, lease_until=utcnow() + timedelta(seconds=self.lease_seconds),
                                       **fields)
        self.audit.job = self.job

    def release(self, **fields) -> None:
        self.job = self.rt.jobs.release(self.job, **fields)
        self.audit.job = self.job

    def note_retry(self, exc: Exception, last: bool) -> None:
        summary = exc.summary() if hasattr(exc, "summary") else f"{type(exc).__name__}: {exc}"
        try:
            self.release(last_error=summary[:1000])
        except Exception:  # noqa: BLE001 - the row moved on: nothing to release
            pass
        self.audit("respond", "last_attempt_failed" if last else "retry", summary,
                   exc=exc if isinstance(exc, (TransientError, PermanentError)) else None)

    @property
    def success(self) -> bool:
        return bool(self.job.get("response_success"))

    def finish(self, how: str, note: str) -> str:
        # The row first: a crash between the two leaves the job unfinished (redelivered, told "landed"),
        # never finished without the row that says how (found by tests/e2e/test_chaos.py).
        self.audit("respond", how, note)
        state = DONE if self.success else FAILED
        self.release(state=state, responded_at=utcnow(), last_error="" if self.success else
                     self.job.get("last_error") or self.job.get("response_message") or "")
        return how

    def run(self) -> str:
        phase = phase_of(self.job)
        if phase not in ANSWERING:
            self.release()
            self.audit("respond", "skipped", f"job is {phase}: nothing to answer yet")
            return "nothing_to_send"
        if self.job.state == DEAD_LETTERED:
            self.update(state=phase)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            if self.job.get("response_code"):  # an earlier send may have landed: look before sending again
                settled = self.settled()
                if settled is not None:
                    return settled
            code = str(uuid.uuid4())
            codes = ",".join(c for c in [self.job.get("response_codes") or "", code] if c)
            self.update(response_code=code, response_codes=codes)
            try:
                self.rt.basware.send_transfer_response(self.invoice_id, self.body(code), max_attempts=1)
            except TransientError as exc:
                self.audit("respond", "unclear", f"outcome unknown ({exc.summary()}); re-reading before "
                           "sending again", exc=exc)
                if attempt >= SEND_ATTEMPTS or not self.rt.basware.wait_before_retry(attempt, exc):
                    raise
                continue
            except PermanentError as exc:
                if isinstance(exc, ConfigError):
                    raise
                settled = self.settled()  # e.g. refused because the document is already Transferred
                if settled is not None:
                    return settled
                raise
            kind = "success" if self.success else "failure"
            return self.finish("sent", f"{kind} response sent (externalCode {code}): "
                                       f"{self.job.get('response_message')}")
        raise TransientError("transfer response not sent", system="basware")  # not reached

    def settled(self) -> str | None:
        """Re-read the document: has an earlier response landed, or is the document finished?"""
        doc = self.rt.basware.get_document(self.invoice_id)
        if doc is None:
            return self.finish("gone", "the document no longer exists in Basware")
        ours = set(filter(None, (self.job.get("response_codes") or "").split(",")))
        if any(r.external_code in ours for r in doc.transfer_responses):
            return self.finish("landed", "an earlier transfer response had reached Basware; not sent again")
        if doc.processing_status in (TRANSFERRED, PAID):
            self.audit("respond", "reconciled", "Basware already shows Transferred; not sent again")
            self.release(state=DONE, responded_at=utcnow())
            return "reconciled"
        if doc.processing_status == TRANSFER_FAILED:
            self.audit("respond", "reconciled", "Basware already shows TransferFailed; not sent again")
            self.release(state=FAILED, responded_at=utcnow())
            return "reconciled"
        if doc.processing_status == WAITING_FOR_TRANSFER:
            # re-offered (user re-transferred): a response needs a fresh acknowledge, i.e. a new round
            self.release()
            self.rt.storage.enqueue(INVOICE_TRANSFERS, InvoiceTransferMessage(invoice_id=self.invoice_id,
                                                                              source="replay"))
            self.audit("respond", "handed_back", "document offered again; handed back to the transfer job")
            return "handed_back"
        return None

    def body(self, code: str) -> TransferResponse:
        text = (self.job.get("response_message") or "")[:CLERK_MESSAGE_MAX]
        if self.success:
            return TransferResponse(externalCode=code, success=True, responseMessage=text or "Transferred.",
                                    voucherNumber1=(self.job.get("response_voucher") or None),
                                    transferDate=utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"), paymentBlock=False)
        return TransferResponse(externalCode=code, success=False, responseMessage=text or "Not transferred.",
                                paymentBlock=False)

