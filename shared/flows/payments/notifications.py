"""The BC change-notification endpoint (`GET|POST /api/bc/notifications`, Microsoft Learn: "Working with webhooks in Dynamics 365 Business Central").

BC deletes a subscription when its notification URL answers any 4xx other than 408/429 (7.5),
so this endpoint answers only 200 (handshake), 202 (accepted, or ignored with an audit row) and
503 (try again: storage is down). The handshake is answered before anything else is touched,
not even settings, because BC gives it 5 seconds (7.2).

A notification carries no data, only `resource` (`api/v2.0/companies(<id>)/purchaseInvoices(<id>)`)
and `changeType`; each item's `clientState` must match `BC_CLIENT_STATE` (constant-time compare).
Accepted items become `payment-checks` messages; the worker re-reads the document in BC.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from shared.clients.bc import INVOICES
from shared.store.jobs import job_id
from shared.models.messages import PaymentCheckMessage
from shared.store.storage import PAYMENT_CHECKS

log = logging.getLogger("ml_connector.notifications")

KIND = "notification"
IGNORED = "ignored"
# Fail fast when storage is down and answer 503 (BC retries); the SDK's own retries take 15 s+.
ENQUEUE_OPTIONS = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 5}
MAX_BODY = 4 * 1024 * 1024  # BC batches up to 1,000 items per POST; anything far larger is not BC
_RESOURCE = re.compile(r"^/?(?:.*?/)?api/v2\.0/companies\(([0-9a-fA-F-]{36})\)/([A-Za-z]+)"
                       r"(?:\(([0-9a-fA-F-]{36})\))?/?$")


@dataclass(frozen=True)
class Answer:
    status: int
    body: str = ""
    mimetype: str = "text/plain"


@dataclass(frozen=True)
class Resource:
    company_id: str
    entity_set: str
    document_id: str | None
    filter: str | None


def handshake(query: Mapping[str, str]) -> Answer | None:
    """BC's validation call: echo `validationToken` as text/plain 200 (no other work)."""
    token = query.get("validationToken")
    if token is None:
        return None
    return Answer(200, token, "text/plain")


def parse_resource(resource: Any) -> Resource | None:
    """`api/v2.0/companies(<id>)/<set>(<id>)` or, for `collection`, `.../<set>?$filter=...`."""
    if not isinstance(resource, str):
        return None
    parts = urlsplit(resource.strip())
    match = _RESOURCE.match(parts.path)
    if not match:
        return None
    flt = None
    if parts.query:
        values = parse_qs(parts.query, keep_blank_values=True).get("$filter")
        flt = values[0] if values else unquote(parts.query).removeprefix("$filter=") or None
    return Resource(match.group(1).lower(), match.group(2), match.group(3).lower() if match.group(3) else None, flt)


def client_state_matches(received: Any, expected: str | None) -> bool:
    if expected is None or not isinstance(received, str):
        return False
    return hmac.compare_digest(received.encode("utf-8"), expected.encode("utf-8"))


def checks_for(items: list, expected_state: str | None, companies: set[str]) -> tuple[list[PaymentCheckMessage], list[str]]:
    """(messages to enqueue, reasons items were ignored). Pure: no I/O."""
    messages: dict[tuple, PaymentCheckMessage] = {}
    ignored: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            ignored.append("an item is not an object")
            continue
        sub = str(item.get("subscriptionId") or "?")[:64]
        if not client_state_matches(item.get("clientState"), expected_state):
            ignored.append(f"clientState does not match (subscription {sub})")
            continue
        change = item.get("changeType")
        resource = parse_resource(item.get("resource"))
        if resource is None:
            ignored.append(f"unreadable resource (subscription {sub})")
            continue
        if resource.company_id not in companies:
            ignored.append(f"company {resource.company_id} is not mapped (subscription {sub})")
            continue
        if resource.entity_set != INVOICES:
            continue  # only purchase invoices matter here (payments)
        if change in ("created", "updated") and resource.document_id:
            key = (resource.company_id, resource.document_id)
            messages[key] = PaymentCheckMessage(company_id=resource.company_id, document_id=resource.document_id,
                                                resource=INVOICES, source="notification")
        elif change == "collection":
            key = (resource.company_id, "collection", resource.filter)
            messages[key] = PaymentCheckMessage(company_id=resource.company_id, collection_filter=resource.filter or "",
                                                resource=INVOICES, source="notification")
        # `deleted`: a deleted draft cannot be paid
    return list(messages.values()), ignored


def _record_ignored(rt, reason: str, detail: str = "") -> None:
    """An audit row (and a job row operators can list) for notifications that were not acted on."""
    jid = job_id(KIND, "ignored", reason.split(" (")[0])
    rt.jobs.force(KIND, jid, state=IGNORED, last_error=(reason + (f": {detail}" if detail else ""))[:1000])
    rt.audit.record(jid, "notification", IGNORED, reason + (f": {detail}" if detail else ""), kind=KIND)


def handle_notification(get_runtime: Callable[[], Any], query: Mapping[str, str], body: bytes) -> Answer:
    """Everything after the handshake. Never raises; never answers a 4xx."""
    answer = handshake(query)
    if answer is not None:
        return answer
    if not body:
        return Answer(202)
    try:
        rt = get_runtime()
    except Exception as exc:  # noqa: BLE001 - settings or storage not ready: BC retries on 503
        log.error("event=bc.notification.unavailable error=%s", type(exc).__name__)
        return Answer(503, "temporarily unavailable")
    try:
        if len(body) > MAX_BODY:
            _record_ignored(rt, "notification body too large", f"{len(body)} bytes")
            return Answer(202)
        try:
            payload = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # not JSON BC would send: no retry
            _record_ignored(rt, "notification body is not JSON", str(exc)[:200])
            return Answer(202)
        items = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            _record_ignored(rt, "notification body has no value list")
            return Answer(202)
        state = rt.settings.bc_client_state.reveal() if rt.settings.bc_client_state else None
        messages, ignored = checks_for(items, state, set(c.lower() for c in rt.settings.bc_companies()))
        for message in messages:
            rt.storage.enqueue(PAYMENT_CHECKS, message, **ENQUEUE_OPTIONS)
        for reason in sorted(set(ignored)):
            _record_ignored(rt, reason, f"{ignored.count(reason)} item(s)")
        log.info("event=bc.notification items=%d enqueued=%d ignored=%d", len(items), len(messages), len(ignored))
        return Answer(202)
    except Exception as exc:  # noqa: BLE001 - queue or table down: 503 makes BC retry, never delete
        log.error("event=bc.notification.failed error=%s", type(exc).__name__)
        return Answer(503, "temporarily unavailable")
