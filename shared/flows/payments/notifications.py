"""The BC change-notification endpoint (`GET|POST /api/bc/notifications`, Microsoft Learn: "Working with webhooks in Dynamics 365 Business Central").

BC deletes a subscription when its notification URL answers any 4xx other than 408/429 (same page),
so this endpoint answers only 200 (handshake), 202 (accepted, or ignored with an audit row) and
503 (try again: storage is down). The handshake is answered before anything else is touched,
not even settings, because BC gives it 5 seconds (kauffmann.nl, "How to test Business Central webhooks").

A notification carries no data, only `resource` (`api/v2.0/companies(<id>)/purchaseInvoices(<id>)`)
and `changeType`; each item's `clientState` must match `BC_CLIENT_STATE` (constant-time compare).
Accepted items become `payment-checks` messages; the worker re-reads the document in BC.

The route is anonymous (BC sends no credential but the clientState), so the work any request can
cause is bounded: at most `MAX_ITEMS` items are read (BC sends at most 1,000 per POST), and items
that are not acted on cost no storage write each. They are counted, and one summary (a job row
operators can list and one audit row) is written per `IGNORED_NOTE_INTERVAL` at most, carrying
the counts since the last one; the warning log is rate-limited the same way.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from shared.clients.bc import INVOICES
from shared.store.jobs import job_id
from shared.models.messages import PaymentCheckMessage
from shared.store.storage import PAYMENT_CHECKS
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.notifications")

KIND = "notification"
IGNORED = "ignored"
# Fail fast when storage is down and answer 503 (BC retries); the SDK's own retries take 15 s+.
ENQUEUE_OPTIONS = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 5}
MAX_BODY = 4 * 1024 * 1024  # BC batches up to 1,000 items per POST; anything far larger is not BC
MAX_ITEMS = 1000  # BC's own batch limit (Microsoft Learn, "Working with webhooks in Dynamics 365 Business Central": up to 1,000 per request): items beyond it are not read
IGNORED_NOTE_INTERVAL = 60.0  # seconds between summaries of ignored notifications (per process)
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


# Reasons are fixed texts: nothing the sender chose (subscription ids, companies) makes them distinct.
WRONG_STATE = "clientState does not match"
UNREADABLE_RESOURCE = "unreadable resource"
UNMAPPED_COMPANY = "company is not mapped"
OVER_CAP = f"more than {MAX_ITEMS} items in one request"
TOO_LARGE = "notification body too large"
NOT_JSON = "notification body is not JSON"
NO_VALUE = "notification body has no value list"


def checks_for(items: list, expected_state: str | None, companies: set[str]) -> tuple[list[PaymentCheckMessage], list[str]]:
    """(messages to enqueue, reasons items were ignored). Pure: no I/O."""
    messages: dict[tuple, PaymentCheckMessage] = {}
    ignored: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            ignored.append("an item is not an object")
            continue
        if not client_state_matches(item.get("clientState"), expected_state):
            ignored.append(WRONG_STATE)
            continue
        change = item.get("changeType")
        resource = parse_resource(item.get("resource"))
        if resource is None:
            ignored.append(UNREADABLE_RESOURCE)
            continue
        if resource.company_id not in companies:
            ignored.append(UNMAPPED_COMPANY)  # only items with the right clientState get this far
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


class IgnoredNotes:
    """Counts notifications that were not acted on; writes a summary at most once per `interval`.

    The summary is one job row per reason (state `ignored`, listed by the admin API) and one audit
    row, both for the most frequent reason of the window, the message naming every count.
    """

    def __init__(self, interval: float = IGNORED_NOTE_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._requests = 0
        self._last: float | None = None
        self.total: Counter[str] = Counter()  # since start (health pages, tests)

    def note(self, rt: Runtime, reasons: Counter[str]) -> bool:
        """Count one request's ignored items; True if a summary was written now."""
        if not reasons:
            return False
        with self._lock:
            self._pending.update(reasons)
            self.total.update(reasons)
            self._requests += 1
            now = self._clock()
            if self._last is not None and now - self._last < self.interval:
                return False
            pending, requests = self._pending, self._requests
            self._pending, self._requests, self._last = Counter(), 0, now
        main = pending.most_common(1)[0][0]
        text = "; ".join(f"{reason}: {n} item(s)" for reason, n in pending.most_common())
        text = f"{text} (in {requests} request(s))"[:1000]
        jid = job_id(KIND, "ignored", main)
        try:
            rt.jobs.force(KIND, jid, state=IGNORED, last_error=text)
            rt.audit.record(jid, "notification", IGNORED, text, kind=KIND)
        except Exception:  # the counts stay pending: they go out with the next summary
            with self._lock:
                self._pending.update(pending)
                self._requests += requests
                self._last = None
            raise
        log.warning("event=bc.notification.ignored %s", text.replace(" ", "_")[:300])
        return True


IGNORED_NOTES = IgnoredNotes()


def _note(notes: IgnoredNotes, rt, reasons: Counter[str]) -> None:
    try:
        notes.note(rt, reasons)
    except Exception as exc:  # noqa: BLE001 - ignored input is no reason for a 503 (BC would resend it)
        log.error("event=bc.notification.note_failed error=%s", type(exc).__name__)


def handle_notification(get_runtime: Callable[[], Any], query: Mapping[str, str], body: bytes,
                        notes: IgnoredNotes = IGNORED_NOTES) -> Answer:
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
            _note(notes, rt, Counter({TOO_LARGE: 1}))
            return Answer(202)
        try:
            payload = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # not JSON BC would send: no retry
            _note(notes, rt, Counter({NOT_JSON: 1}))
            return Answer(202)
        items = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            _note(notes, rt, Counter({NO_VALUE: 1}))
            return Answer(202)
        over = max(len(items) - MAX_ITEMS, 0)
        state = rt.settings.bc_client_state.reveal() if rt.settings.bc_client_state else None
        messages, ignored = checks_for(items[:MAX_ITEMS], state, set(c.lower() for c in rt.settings.bc_companies()))
        for message in messages:
            rt.storage.enqueue(PAYMENT_CHECKS, message, **ENQUEUE_OPTIONS)
        reasons = Counter(ignored)
        if over:
            reasons[OVER_CAP] += over
        _note(notes, rt, reasons)
        log.info("event=bc.notification items=%d enqueued=%d ignored=%d", len(items), len(messages),
                 sum(reasons.values()))
        return Answer(202)
    except Exception as exc:  # noqa: BLE001 - queue or table down: 503 makes BC retry, never delete
        log.error("event=bc.notification.failed error=%s", type(exc).__name__)
        return Answer(503, "temporarily unavailable")
