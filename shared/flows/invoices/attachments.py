"""The invoice image travels with the invoice: Basware attachments onto the BC draft, before posting.

    for each attachment ATTACHMENT_CATEGORIES chooses (confidential ones only with CONFIDENTIAL):
        open the Basware download (302 -> pre-signed URL, fetched without the bearer token)
        -> the BC record (POST documentAttachments, unless the draft already has it by file name)
        -> PATCH its attachmentContent with the bytes as they arrive

Facts this relies on:
- Basware: `attachments[]` on the accounting document; the download answers 404 for an unknown
  code and wherever the tenant has not enabled `OpenApi.SendInvoiceAttachments` (P2P OpenAPI,
  `GET /v1/accountingDocuments/{invoiceId}/attachments/{attachmentExternalCode}`). The operation
  declares no media type, so the BC file keeps Basware's `filename` (and its extension).
- BC: attachments on a draft are copied to the posted invoice or credit memo by Document
  Attachment Mgmt (codeunit 1173) when it is posted, so attaching to the draft is enough; BC's
  insert does not refuse a second record with the same name, so idempotency is ours: the draft's
  attachments are listed first (`$filter=parentId eq ...`) unless this very attempt created the
  draft, and a record left without its file (`byteSize` 0, a crash between the two calls) is
  completed instead of added again (API page 30080 `APIV2DocumentAttachments.Page.al`).
- BC refuses request bodies over 350 MB (Microsoft Learn, operational-limits-online): such a file
  is not sent; the audit row says so.

Failure policy: a 404 never blocks posting (the audit row says the image was not available),
unless ATTACHMENT_REQUIRED is on and it is the original image: then the transfer fails with a
clerk message. Transient failures are retried here (the download and upload together, since a
stream cannot be replayed), then by the queue like every other step.
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from shared.clients.bc import MAX_BODY_BYTES
from shared.core.errors import ConfigError, PermanentError, TooLargeError, TransientError
from shared.flows.invoices.mapping import clerk_message
from shared.models.attachments import BaswareAttachment, DocumentAttachment, attachments_of
from shared.models.basware import AccountingDocument

log = logging.getLogger("ml_connector.invoices")

ORIGINAL_IMAGE = "ORIGINALIMAGE"
SPOOL_IN_MEMORY = 1024 * 1024  # a download without Content-Length is spooled to disk beyond this
REQUIRED_SUFFIX = " Enable OpenApi.SendInvoiceAttachments or attach the image in Basware, then re-transfer."


@dataclass
class AttachResult:
    attached: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failure: str | None = None  # a clerk message: the transfer must fail (ATTACHMENT_REQUIRED)


def chosen_attachments(doc: AccountingDocument, settings) -> tuple[list[BaswareAttachment], list[BaswareAttachment]]:
    """(to copy, left out because confidential) per ATTACHMENT_CATEGORIES."""
    wanted = set(settings.attachment_categories)
    chosen, confidential = [], []
    for att in attachments_of(doc):
        if (att.category or "").upper() not in wanted or not att.external_code:
            continue
        if att.is_confidential and not settings.attachment_confidential:
            confidential.append(att)
        else:
            chosen.append(att)
    return chosen, confidential


def bc_file_names(attachments: list[BaswareAttachment]) -> list[str]:
    """Basware's file names, made unique per invoice (idempotency goes by name)."""
    names: list[str] = []
    seen: set[str] = set()
    for att in attachments:
        name = (att.filename or "").strip() or f"attachment-{att.external_code}"
        base, dot, ext = name.rpartition(".")
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{base} ({n}).{ext}" if dot and base else f"{name} ({n})"
        seen.add(candidate.lower())
        names.append(candidate)
    return names


def attach_images(rt, doc: AccountingDocument, company: str, entity: str, draft_id: str, audit, *,
                  fresh: bool, renew: Callable[[], object] = lambda: None) -> AttachResult:
    """Copy the chosen attachments onto the draft. `fresh`: this attempt created the draft (it has
    none of ours yet, so BC is not asked). `renew` keeps the job's lease between files."""
    settings = rt.settings
    result = AttachResult()
    chosen, confidential = chosen_attachments(doc, settings)
    for att in confidential:
        audit("attach", "skipped", f"{att.filename} is confidential in Basware; not copied "
                                   "(ATTACHMENT_CATEGORIES does not include CONFIDENTIAL)")
    if settings.attachment_required and not any((a.category or "").upper() == ORIGINAL_IMAGE for a in chosen):
        audit("attach", "missing", "Basware lists no original image for this invoice (ATTACHMENT_REQUIRED)")
        result.failure = clerk_message(["Basware lists no invoice image (ORIGINALIMAGE) and ATTACHMENT_REQUIRED "
                                        "is on"], suffix=REQUIRED_SUFFIX)
        return result
    if not chosen:
        return result
    on_draft: dict[str, DocumentAttachment] = {}
    if not fresh:
        on_draft = {a.file_name.lower(): a for a in rt.bc.list_attachments(company, draft_id)}
    for att, name in zip(chosen, bc_file_names(chosen)):
        present = on_draft.get(name.lower())
        if present is not None and present.byte_size > 0:
            result.already.append(name)
            audit("attach", "already", f"{name} is already on the BC document ({present.byte_size} bytes)")
            continue
        outcome = _copy_with_retries(rt, doc.invoice_id, att, name, company, entity, draft_id, present, audit)
        getattr(result, outcome).append(name)
        renew()
        if outcome in ("unavailable", "refused") and settings.attachment_required and \
                (att.category or "").upper() == ORIGINAL_IMAGE:
            why = "is not available from Basware" if outcome == "unavailable" else "is larger than BC accepts"
            result.failure = clerk_message([f"the invoice image {name} {why} and ATTACHMENT_REQUIRED is on"],
                                           suffix=REQUIRED_SUFFIX)
            return result
    return result


def _copy_with_retries(rt, invoice_id: str, att: BaswareAttachment, name: str, company: str, entity: str,
                       draft_id: str, present: DocumentAttachment | None, audit) -> str:
    retry = rt.bc.retry
    attempt = 0
    made = [present]  # the BC record once it exists: a retry after a lost PATCH answer fills it again
    while True:
        attempt += 1
        try:
            return _copy_once(rt, invoice_id, att, name, company, entity, draft_id, made, audit)
        except ConfigError:
            raise  # our credentials or setup: retry and dead-letter, never post as if the file were bad
        except PermanentError as exc:
            # a refusal of this one file (say a name BC will not take) must not hold the invoice back
            audit("attach", "failed", f"{name} was not attached: {exc.summary()}", exc=exc)
            return "refused"
        except TransientError as exc:
            if attempt >= retry.max_attempts:
                raise
            audit("attach", "retry", f"{name}: {exc.summary()}", exc=exc)
            if not rt.bc.wait_before_retry(attempt, exc):
                raise  # a longer pause than a worker should hold: the queue retries the invoice


def _copy_once(rt, invoice_id: str, att: BaswareAttachment, name: str, company: str, entity: str,
               draft_id: str, made: list[DocumentAttachment | None], audit) -> str:
    with rt.basware.open_attachment(invoice_id, att.external_code) as download:
        if download is None:
            audit("attach", "not_available", f"{name}: Basware answered 404 (no such attachment, or the tenant "
                                             "setting OpenApi.SendInvoiceAttachments is off); posting without it",
                  http_status=404)
            return "unavailable"
        if download.size is not None and download.size > MAX_BODY_BYTES:
            return _too_large(name, download.size, audit)
        with _sized(download) as (size, chunks):
            if size > MAX_BODY_BYTES:
                return _too_large(name, size, audit)
            if made[0] is None:
                made[0] = _create_record(rt, company, entity, draft_id, name)
            try:
                rt.bc.upload_attachment_content(company, made[0].id, chunks, size)
            except TooLargeError as exc:
                return _too_large(name, size, audit, exc)
            except PermanentError as exc:
                if exc.status == 404:  # the record went away (deleted in BC): make it again next try
                    made[0] = None
                    raise TransientError(f"the attachment record of {name} disappeared", status=404,
                                         system="bc") from None
                raise
    audit("attach", "ok", f"{name} ({size} bytes, {att.category}) attached to the BC document", http_status=204)
    return "attached"


def _create_record(rt, company: str, entity: str, draft_id: str, name: str) -> DocumentAttachment:
    """POST once; after an unclear outcome, look before trying again (a lost 201 must not make two)."""
    try:
        return rt.bc.create_attachment(company, entity, draft_id, name, max_attempts=1)
    except TransientError as exc:
        if exc.unprocessed:  # refused before it ran: nothing can have landed
            raise
        landed = [a for a in rt.bc.list_attachments(company, draft_id) if a.file_name.lower() == name.lower()]
        if landed:
            return landed[0]
        raise


def _too_large(name: str, size: int, audit, exc: PermanentError | None = None) -> str:
    audit("attach", "refused", f"{name} is {size / 1048576:.1f} MB, more than BC accepts "
                               f"({MAX_BODY_BYTES // 1048576} MB per request); not attached", exc=exc)
    return "refused"


@contextmanager
def _sized(download) -> Iterator[tuple[int, Iterator[bytes]]]:
    """(size, chunks) of a download: straight through when Content-Length is known, else spooled
    (memory up to SPOOL_IN_MEMORY, then a temporary file) to learn the length BC needs up front."""
    if download.size is not None:
        yield download.size, _exactly(download.chunks(), download.size)
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        size = 0
        for chunk in download.chunks():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                break
            spool.write(chunk)
        spool.seek(0)

        def replay() -> Iterator[bytes]:
            while chunk := spool.read(64 * 1024):
                yield chunk
        yield size, replay()


def _exactly(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The chunks, failing (retryably) when the download ends short of its Content-Length."""
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        yield chunk
    if sent != size:
        raise TransientError(f"basware: the attachment download ended after {sent} of {size} bytes",
                             system="basware")

