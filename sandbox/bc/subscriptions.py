"""Webhook subscriptions and notification delivery (Microsoft Learn, "Working with webhooks in Dynamics 365 Business Central").

- `POST api/v2.0/subscriptions` {notificationUrl, resource, clientState}: BC first POSTs to
  `notificationUrl?validationToken=<token>` and needs 200 with exactly the token as body within
  5 s (kauffmann.nl, "How to test Business Central webhooks"), else nothing is created. Renewal
  (PATCH with If-Match) repeats the handshake.
- A subscription expires after 3 days (configurable) and then disappears (checked lazily).
- Notifications: `{"value":[{subscriptionId, clientState, expirationDateTime, resource,
  changeType, lastModifiedDateTime}]}`. BC waits 30 s after the first change (here
  `notification_delay`, default 0 = at once) and sends one item per changed record, or a single
  `collection` item with a `$filter` on lastModifiedDateTime when more than
  `notification_threshold` records changed.
- Receiver answers 2xx: done; 408, 429, 5xx or no answer: retried; anything else: the
  subscription is deleted.
"""
from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable
from urllib.parse import quote, urlsplit

import httpx

from sandbox import seed

from . import errors as E
from .store import Clock, iso, next_version

SUBSCRIBABLE = {"vendors", "accounts", "dimensions", "purchaseInvoices", "currencies"}
_RESOURCE = re.compile(r"^(?:.*?/)?(api/v2\.0/companies\(([0-9a-fA-F-]{36})\)/([A-Za-z]+))/?$")


@dataclass
class SubscriptionConfig:
    lifetime: float = 3 * 24 * 3600.0
    handshake_timeout: float = 5.0
    notification_delay: float = 0.0
    notification_threshold: int = 1000
    notification_retries: int = 3
    notification_retry_delay: float = 0.5
    delivery_timeout: float = 10.0
    max_subscriptions: int = 200


class Subscriptions:
    def __init__(self, clock: Clock, config: SubscriptionConfig, company_exists: Callable[[str], bool]) -> None:
        self.clock = clock
        self.config = config
        self.company_exists = company_exists
        self.items: dict[str, dict] = {}
        self.deliveries: list[dict] = []  # every notification POST: url, body, status, attempts
        self.handshakes: list[dict] = []
        self._lock = threading.RLock()
        self._pending: dict[str, dict[str, dict]] = {}  # subscription id -> resource -> item
        self._first_change: dict[str, float] = {}
        self._cond = threading.Condition(self._lock)
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------
    def purge_expired(self) -> None:
        now = self.clock.now()
        with self._lock:
            for sub_id in [s for s, rec in self.items.items() if rec["_expires"] <= now]:
                self._remove(sub_id)

    def _remove(self, sub_id: str) -> None:
        self.items.pop(sub_id, None)
        self._pending.pop(sub_id, None)
        self._first_change.pop(sub_id, None)

    def get(self, sub_id: str) -> dict | None:
        self.purge_expired()
        with self._lock:
            return self.items.get(sub_id)

    def list(self) -> list[dict]:
        self.purge_expired()
        with self._lock:
            return list(self.items.values())

    def create(self, body, principal: str) -> dict:
        if not isinstance(body, dict):
            raise E.bad_request("Invalid Request Body")
        for key in body:
            if key not in ("notificationUrl", "resource", "clientState") and not key.startswith("@odata"):
                if key in ("subscriptionId", "userId", "expirationDateTime", "lastModifiedDateTime"):
                    raise E.read_only(key)
                raise E.unknown_property(key, "subscription")
        url = _check_url(body.get("notificationUrl"))
        resource = str(body.get("resource") or "")
        m = _RESOURCE.match(resource.strip())
        if not m:
            raise E.bad_request(f"The resource '{resource}' is not valid. Use "
                                "'api/v2.0/companies(<company id>)/<entity set>'.")
        company_id, entity_set = m.group(2).lower(), m.group(3)
        if not self.company_exists(company_id):
            raise E.BcError(404, "Internal_CompanyNotFound", f"The company '{company_id}' does not exist.")
        if entity_set not in SUBSCRIBABLE:
            raise E.bad_request(f"The resource '{resource}' is not supported for webhook subscriptions. "
                                f"Entity set '{entity_set}' does not support change notifications.")
        client_state = str(body.get("clientState") or "")
        if len(client_state) > 2048:
            raise E.string_too_long(client_state, 2048)
        with self._lock:
            if len(self.items) >= self.config.max_subscriptions:
                raise E.dialog(f"The maximum number of subscriptions ({self.config.max_subscriptions}) "
                               "has been reached.")
        self._handshake(url)  # outside the lock: the receiver may call back
        now = self.clock.stamp()
        sub_id = uuid.uuid4().hex
        user = seed.stable_uuid("bc-user", principal)
        rec = {"subscriptionId": sub_id, "notificationUrl": url, "resource": resource, "userId": user,
               "lastModifiedDateTime": iso(now), "clientState": client_state,
               "expirationDateTime": iso(now + timedelta(seconds=self.config.lifetime)),
               "systemCreatedAt": iso(now), "systemCreatedBy": user, "systemModifiedAt": iso(now),
               "systemModifiedBy": user, "_v": next_version(), "_company": company_id, "_set": entity_set,
               "_expires": now + timedelta(seconds=self.config.lifetime)}
        with self._lock:
            self.items[sub_id] = rec
        return rec

    def renew(self, rec: dict, body) -> dict:
        if body is not None and not isinstance(body, dict):
            raise E.bad_request("Invalid Request Body")
        body = body or {}
        for key in body:
            if key not in ("notificationUrl", "clientState") and not key.startswith("@odata"):
                if key in ("subscriptionId", "resource", "userId", "expirationDateTime", "lastModifiedDateTime"):
                    raise E.read_only(key)
                raise E.unknown_property(key, "subscription")
        url = _check_url(body["notificationUrl"]) if "notificationUrl" in body else rec["notificationUrl"]
        self._handshake(url)
        now = self.clock.stamp()
        with self._lock:
            if rec["subscriptionId"] not in self.items:
                raise E.record_not_found("API Webhook Subscription", f"Subscription Id='{rec['subscriptionId']}'")
            rec["notificationUrl"] = url
            if "clientState" in body:
                rec["clientState"] = str(body["clientState"] or "")
            rec["_expires"] = now + timedelta(seconds=self.config.lifetime)
            rec["expirationDateTime"] = iso(rec["_expires"])
            rec["lastModifiedDateTime"] = rec["systemModifiedAt"] = iso(now)
            rec["_v"] = next_version()
        return rec

    def delete(self, sub_id: str) -> None:
        with self._lock:
            self._remove(sub_id)

    def _handshake(self, url: str) -> None:
        token = secrets.token_urlsafe(24)
        target = url + ("&" if urlsplit(url).query else "?") + "validationToken=" + quote(token)
        entry = {"url": url, "token": token, "status": None, "ok": False}
        self.handshakes.append(entry)
        try:
            with httpx.Client(timeout=self.config.handshake_timeout) as client:
                response = client.post(target)
        except httpx.TimeoutException:
            raise E.bad_request(f"The notification URL {url} did not answer the validation request within "
                                f"{self.config.handshake_timeout:g} seconds.") from None
        except httpx.HTTPError as exc:
            raise E.bad_request(f"The notification URL {url} could not be reached: {type(exc).__name__}.") from None
        entry["status"] = response.status_code
        if response.status_code != 200:
            raise E.bad_request(f"The notification URL {url} answered the validation request with "
                                f"{response.status_code}; 200 with the validationToken was expected.")
        if response.text != token:
            raise E.bad_request(f"The notification URL {url} did not return the validationToken in the "
                                "response body.")
        entry["ok"] = True

    # -- notifications ----------------------------------------------------------------------------
    def emit(self, company_id: str, entity_set: str, entity_id: str, change_type: str, last_modified: str) -> None:
        self.purge_expired()
        resource = f"api/v2.0/companies({company_id})/{entity_set}({entity_id})"
        with self._lock:
            for sub_id, rec in self.items.items():
                if rec["_company"] != company_id or rec["_set"] != entity_set:
                    continue
                pending = self._pending.setdefault(sub_id, {})
                previous = pending.get(resource)
                kind = change_type
                if previous is not None and previous["changeType"] == "created" and change_type == "updated":
                    kind = "created"
                pending[resource] = {"resource": resource, "changeType": kind, "lastModifiedDateTime": last_modified}
                self._first_change.setdefault(sub_id, time.monotonic())
            if self._pending:
                self._start()
                self._cond.notify_all()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="bc-notifier", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every pending notification was delivered (or given up). True if idle."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                due = [s for s, t in self._first_change.items() if t + self.config.notification_delay <= now]
                if not due:
                    waits = [t + self.config.notification_delay - now for t in self._first_change.values()]
                    self._cond.wait(min(waits) if waits else 1.0)
                    continue
                batches: dict[str, list[dict]] = {}
                subs_by_url: dict[str, list[str]] = {}
                for sub_id in due:
                    items = self._pending.pop(sub_id, {})
                    self._first_change.pop(sub_id, None)
                    rec = self.items.get(sub_id)
                    if rec is None or not items:
                        continue
                    batches.setdefault(rec["notificationUrl"], []).extend(self._items_for(rec, list(items.values())))
                    subs_by_url.setdefault(rec["notificationUrl"], []).append(sub_id)
                for url, items in batches.items():
                    self._inflight += 1
                    threading.Thread(target=self._deliver, args=(url, items, subs_by_url[url]), daemon=True,
                                     name="bc-notify").start()
                self._cond.notify_all()

    def _items_for(self, rec: dict, changes: list[dict]) -> list[dict]:
        base = {"subscriptionId": rec["subscriptionId"], "clientState": rec["clientState"],
                "expirationDateTime": rec["expirationDateTime"]}
        if len(changes) > self.config.notification_threshold:
            first = min(datetime.fromisoformat(c["lastModifiedDateTime"].replace("Z", "+00:00")) for c in changes)
            since = iso(first - timedelta(milliseconds=1))
            last = max(c["lastModifiedDateTime"] for c in changes)
            resource = (f"api/v2.0/companies({rec['_company']})/{rec['_set']}"
                        f"?$filter=lastModifiedDateTime%20gt%20{since}")
            return [dict(base, resource=resource, changeType="collection", lastModifiedDateTime=last)]
        return [dict(base, **c) for c in changes]

    def _deliver(self, url: str, items: list[dict], sub_ids: list[str]) -> None:
        entry = {"url": url, "body": {"value": items}, "status": None, "attempts": 0, "outcome": None}
        try:
            with httpx.Client(timeout=self.config.delivery_timeout) as client:
                for attempt in range(self.config.notification_retries + 1):
                    entry["attempts"] = attempt + 1
                    try:
                        status = client.post(url, json={"value": items}).status_code
                    except httpx.HTTPError:
                        status = None
                    entry["status"] = status
                    if status is not None and 200 <= status < 300:
                        entry["outcome"] = "delivered"
                        return
                    if status is not None and status not in (408, 429) and status < 500:
                        entry["outcome"] = "subscription deleted"
                        with self._lock:
                            for sub_id in sub_ids:
                                self._remove(sub_id)
                        return
                    if attempt < self.config.notification_retries:
                        time.sleep(self.config.notification_retry_delay * (2 ** attempt))
                entry["outcome"] = "gave up"
        finally:
            with self._lock:
                self.deliveries.append(entry)
                self._inflight -= 1
                self._cond.notify_all()


def _check_url(value) -> str:
    url = str(value or "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise E.bad_request(f"The notificationUrl '{url}' is not a valid absolute URL.")
    return url
