"""POST /api/basware/webhook: verify, then hand the invoice id to `invoice-transfers`. Nothing else.

Order matters: the size and the signature are checked on the raw bytes before anything is parsed,
so a wrongly signed or oversized body never reaches the JSON parser, and nothing is enqueued without
a valid signature. One exception, from the Basware API manual's push notifications ("answer ConnectionTest
with 200, and with a valid signature check if one is present"): a body with *no* signature header is
parsed only to see whether it is Basware's ConnectionTest, which gets 200 and causes no work.
The only I/O is the single enqueue; no storage reads, so answers stay fast.
Notifications are hints (they carry only the document id, Basware's callback schema of POST /v1/subscriptions): the worker re-reads the invoice.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from typing import Any, Callable, Mapping

from shared.models.basware import WebhookTask, is_invoice_id
from shared.models.messages import InvoiceTransferMessage
from shared.core.secrets import Secret

log = logging.getLogger("ml_connector.webhook")

SIGNATURE_HEADER = "X-BWAPI-Signature-256"
MAX_BODY_BYTES = 1024 * 1024
# Anything far longer than a Basware id cannot be one, and would not fit a queue message (64 KB).
MAX_DOCUMENT_ID = 256
# Basware's subscription OpenAPI example misspells the task type (POST /v1/subscriptions, taskType).
ACCOUNTING_DOCUMENT_TASKS = frozenset({"accountingdocuments", "accoutingdocuments"})
TRANSFER_SUBTYPES = frozenset({"waitingfortransfer", "all", ""})
CONNECTION_TEST = "connectiontest"  # Basware's endpoint check when a subscription is created

Enqueue = Callable[[InvoiceTransferMessage], None]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify_signature(body: bytes, signature: str | None, secret: str) -> str | None:
    """The encoding that matched ('hex' or 'base64'), or None when the signature is missing or wrong.

    HMAC-SHA256 over the raw body, keyed with the UTF-8 bytes of the webhook secret. How Basware
    encodes the digest (hex or base64, with or without a `sha256=` prefix, key encoding) is UNKNOWN
    in Basware's public documentation (the push-notification manual names the header only), so every plausible
    form is accepted and the match is logged; drop the fallbacks once a real request settles it.
    Comparison is on the decoded digest bytes with `hmac.compare_digest` (constant time).
    """
    if not signature or not secret:
        return None
    value = signature.strip()
    if value[:7].lower() == "sha256=":
        value = value[7:].strip()
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    candidates: list[tuple[str, bytes]] = []
    if len(value) == 64:  # hex, either case
        try:
            candidates.append(("hex", bytes.fromhex(value)))
        except ValueError:
            pass
    if len(value) in (43, 44):  # base64 of 32 bytes, padded or not, standard or URL alphabet
        padded = value + "=" * (-len(value) % 4)
        for name, decode in (("base64", base64.b64decode), ("base64url", base64.urlsafe_b64decode)):
            try:
                candidates.append((name, decode(padded.encode("ascii"))))
            except (binascii.Error, ValueError, UnicodeEncodeError):
                pass
    matched = None
    for name, digest in candidates:  # compare every candidate: timing does not depend on which matched
        if len(digest) == len(expected) and hmac.compare_digest(digest, expected) and matched is None:
            matched = name
    return matched


def _plausible_id(value: str | None) -> bool:
    """Short printable text (no lone surrogates, no control characters): what a Basware id can be."""
    return bool(value) and len(value) <= MAX_DOCUMENT_ID and value.isprintable()


def _is_connection_test(body: bytes) -> bool:
    """An unsigned body that is nothing but Basware's endpoint check (nothing is done with it)."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    task_type = payload.get("taskType") if isinstance(payload, dict) else None
    return isinstance(task_type, str) and task_type.strip().lower() == CONNECTION_TEST


def handle_webhook(body: bytes, headers: Mapping[str, str], secret: Secret | str,
                   enqueue: Enqueue) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body). 4xx for every kind of bad input; 503 only when the queue is down."""
    if len(body) > MAX_BODY_BYTES:
        log.warning("event=webhook.rejected reason=too_large bytes=%d", len(body))
        return 413, {"error": "body larger than 1 MB"}
    key = secret.reveal() if isinstance(secret, Secret) else secret
    signature = _header(headers, SIGNATURE_HEADER)
    encoding = verify_signature(body, signature, key)
    if encoding is None:
        present = signature is not None
        if not present and _is_connection_test(body):
            # Whether Basware signs the ConnectionTest it sends when a subscription is created is
            # UNKNOWN; refusing it would refuse the subscription. It does no work, so answer 200.
            log.info("event=webhook.connection_test signed=false")
            return 200, {"status": "ok"}
        log.warning("event=webhook.rejected reason=bad_signature present=%s", present)
        return 401, {"error": "missing or invalid signature"}
    log.info("event=webhook.signature_ok encoding=%s", encoding)

    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # nested too deep is bad input too
        return 400, {"error": "body is not valid JSON"}
    if not isinstance(payload, dict):
        return 400, {"error": "body must be a JSON object"}
    try:
        task = WebhookTask.model_validate(payload)
    except Exception:  # noqa: BLE001 - wrong types in the notification: bad input, never 5xx
        return 400, {"error": "not a Basware notification"}

    task_type = str(task.task_type or "").strip().lower()
    if task_type == CONNECTION_TEST:
        log.info("event=webhook.connection_test")
        return 200, {"status": "ok"}
    document_id = task.document_id.strip() if isinstance(task.document_id, str) else ""
    if not document_id:
        return 400, {"error": "documentId is missing"}
    if not task_type:
        return 400, {"error": "taskType is missing"}
    if task_type not in ACCOUNTING_DOCUMENT_TASKS:
        log.info("event=webhook.ignored task_type=%s", task.task_type)
        return 200, {"status": "ignored", "reason": f"taskType {task.task_type!r} is not handled"}
    if str(task.task_sub_type or "").strip().lower() not in TRANSFER_SUBTYPES:
        log.info("event=webhook.ignored task_sub_type=%s", task.task_sub_type)
        return 200, {"status": "ignored", "reason": f"taskSubType {task.task_sub_type!r} is not handled"}

    if not is_invoice_id(document_id):  # it goes into URLs and keys: never `/`, `?`, `#` or `..`
        return 400, {"error": "documentId is not a Basware invoice id (1-36 letters, digits or hyphens)"}
    task_id = task.task_id if _plausible_id(task.task_id) else None  # informational only
    message = InvoiceTransferMessage(invoice_id=document_id, source="webhook", task_id=task_id)
    try:
        enqueue(message)
    except Exception as exc:  # noqa: BLE001 - storage down: 503 so that Basware delivers again
        log.error("event=webhook.enqueue_failed error=%s", type(exc).__name__)
        return 503, {"error": "queue unavailable, retry later"}
    log.info("event=webhook.accepted invoice_id=%s task_id=%s", document_id, task.task_id)
    # 200, not 202: the callback of POST /v1/subscriptions in Basware's push-notification OpenAPI
    # documents 200 ("Successful Response") and 422 only.
    return 200, {"status": "accepted", "invoiceId": document_id}
