"""Poison messages become dead-lettered jobs: visible to operators (admin records) and replayable.

The Functions runtime moves a message to `<queue>-poison` after `maxDequeueCount` deliveries.
Each flow's blueprint registers a trigger on its poison queue that calls `dead_letter`, which
finds the job the message was working (from the message itself), marks it `dead_lettered` with
the last error the handler recorded, keeps the state it stopped in (a replay resumes from there),
stores the queue and message for replay, and writes an audit row. A job that meanwhile finished,
or that a worker holds right now, is not overwritten: the poison copy is only audited.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from typing import Any

from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, Job, JobConflict, job_id, utcnow
from shared.store.storage import BASWARE_CALLBACKS, INVOICE_TRANSFERS, MASTERDATA_IMPORTS, PAYMENT_CHECKS, POISON_SUFFIX
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.deadletter")

QUEUE_KINDS = {INVOICE_TRANSFERS: "invoice", BASWARE_CALLBACKS: "invoice", PAYMENT_CHECKS: "payment",
               MASTERDATA_IMPORTS: "masterdata"}
CONFLICT_ROUNDS = 5  # re-reads after a conditional write lost to another writer


def _text(raw_body: str | bytes) -> str:
    if isinstance(raw_body, bytes):
        return raw_body.decode("utf-8", errors="replace")
    return raw_body


def _parse(text: str) -> dict | None:
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except ValueError:
        pass
    try:  # a host that hands over the queue's base64 text as is
        value = json.loads(base64.b64decode(text, validate=True).decode("utf-8"))
        return value if isinstance(value, dict) else None
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def job_for_message(queue: str, message: dict | None, text: str) -> tuple[str, str]:
    """(kind, job id) of the job a message was working."""
    m = message or {}
    if queue == INVOICE_TRANSFERS and m.get("invoice_id"):
        return "invoice", job_id("invoice", str(m["invoice_id"]))
    if queue == BASWARE_CALLBACKS and m.get("job_id"):
        return ("payment" if m.get("kind") == "payment" else "invoice"), str(m["job_id"])
    if queue == PAYMENT_CHECKS and m.get("document_id"):
        return "payment", job_id("payment", str(m["document_id"]))
    kind = QUEUE_KINDS.get(queue, queue)
    if m.get("job_id"):
        return kind, str(m["job_id"])
    return kind, job_id("poison", queue, hashlib.sha256(text.encode("utf-8")).hexdigest())


def dead_letter(rt: Runtime, queue: str, raw_body: str | bytes, reason: str = "", *, kind: str | None = None,
                job: str | None = None) -> Job | None:
    """Turn one poison message into a dead-lettered job (or an audit note, see the module doc)."""
    if queue.endswith(POISON_SUFFIX):
        queue = queue[: -len(POISON_SUFFIX)]
    text = _text(raw_body)
    message = _parse(text)
    derived_kind, derived_id = job_for_message(queue, message, text)
    kind, jid = kind or derived_kind, job or derived_id
    invoice_id = (message or {}).get("invoice_id")
    existing: Job | None = None

    def audit(outcome: str, note: str) -> None:
        rt.audit.record(jid, "dead_letter", outcome, note, kind=kind, basware_id=invoice_id,
                        bc_id=(existing.get("bc_id") if existing else None) or None, queue=queue)

    # The write is conditional on what was read (ETag, or insert-only for a job not there yet): a
    # job that finished or was claimed between the read and the write is re-read and judged again,
    # never overwritten by a stale copy.
    for _ in range(CONFLICT_ROUNDS):
        existing = rt.jobs.get(kind, jid)
        now = utcnow()
        if existing is not None and existing.state in (DONE, FAILED):
            audit("ignored", f"poison message from {queue} for a job already {existing.state}")
            return existing
        if (existing is not None and existing.lease_owner and existing.lease_until is not None
                and existing.lease_until > now):
            audit("ignored", f"poison message from {queue} while a worker holds the job")
            return existing

        why = (existing.last_error if existing is not None and existing.last_error else "") or reason or \
            "retries exhausted"
        if message is None:
            why = f"unreadable message: {why}"
        previous = (existing.get("previous_state") if existing is not None and existing.state == DEAD_LETTERED
                    else existing.state if existing is not None else "")
        fields: dict[str, Any] = {
            "state": DEAD_LETTERED, "previous_state": previous or "", "last_error": why[:1000], "queue": queue,
            "message": text[:30000], "dead_lettered_at": now, "dead_letter_reason": (reason or why)[:1000],
            "lease_owner": "", "lease_until": None,
        }
        try:
            if existing is None:
                # insert-only, then the state change through update (so metrics hear of it)
                existing = rt.jobs.create(kind, jid, "", **({"invoice_id": invoice_id} if invoice_id else {}))
                if existing is None:
                    continue  # created meanwhile: judge the row that is there now
            rt.jobs.update(existing, **fields)
        except JobConflict:
            continue  # changed meanwhile (finished, claimed, progressed): read it again
        break
    else:
        audit("ignored", f"poison message from {queue}: the job kept changing, left as it is")
        return rt.jobs.get(kind, jid)
    log.error("event=job.dead_lettered kind=%s job=%s queue=%s", kind, jid, queue)
    audit("dead_lettered", f"{queue}: {why}")
    return rt.jobs.get(kind, jid)
