"""BC webhook subscriptions on `purchaseInvoices`, one per mapped company (Microsoft Learn: "Working with webhooks in Dynamics 365 Business Central").

Run by the `SUBSCRIPTION_SCHEDULE` timer. Subscriptions expire after 3 days and BC deletes one
whenever the endpoint answered a 4xx, so each run, per company: create it when missing, re-create
it when BC dropped it (its id is in `syncstate` but BC no longer lists it), renew it when it
expires within a day (PATCH with If-Match; BC repeats the handshake), and remember its id and
expiry in `syncstate` (`subscription`/<company id>). Without `BC_NOTIFICATION_URL` it does nothing:
the payment poll carries the load.
"""
from __future__ import annotations

import hmac
import logging
import re
from datetime import datetime, timedelta


from shared.clients.bc import INVOICES
from shared.core.errors import ConnectorError, PermanentError
from shared.store.jobs import job_id, utcnow
from shared.flows.payments.respond import parse_time
from shared.store.syncstate import SubscriptionRows
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.subscriptions")

KIND = "subscription"
RENEW_WITHIN = timedelta(days=1)
_RESOURCE = re.compile(r"companies\(([0-9a-fA-F-]{36})\)/([A-Za-z]+)/?$")


def resource_for(company_id: str) -> str:
    return f"/api/v2.0/companies({company_id})/{INVOICES}"


def _same_url(a: str | None, b: str | None) -> bool:
    return (a or "").rstrip("/").lower() == (b or "").rstrip("/").lower()


def ours(subscription: dict, company_id: str, notification_url: str) -> bool:
    """A BC subscription this connector made for the company: our URL, that company's invoices."""
    match = _RESOURCE.search(str(subscription.get("resource") or ""))
    return bool(match and match.group(1).lower() == company_id.lower() and match.group(2) == INVOICES
                and _same_url(subscription.get("notificationUrl"), notification_url))


def needs_renewal(subscription: dict, now: datetime) -> bool:
    expires = parse_time(subscription.get("expirationDateTime"))
    return expires is None or expires - now <= RENEW_WITHIN


def _stored(rt: Runtime, company_id: str) -> dict | None:
    return SubscriptionRows(rt.storage).get(company_id)


def _store(rt: Runtime, company_id: str, subscription: dict, now: datetime) -> None:
    SubscriptionRows(rt.storage).save(
        company_id, subscription_id=subscription.get("subscriptionId"), expiration=subscription.get("expirationDateTime"),
        resource=subscription.get("resource"), notification_url=subscription.get("notificationUrl"), checked=now)


def ensure_subscriptions(rt: Runtime, now: datetime | None = None) -> dict[str, str]:
    """Per mapped company: what was done (`created`, `recreated`, `renewed`, `ok`, `failed: ...`)."""
    now = now or utcnow()
    settings = rt.settings
    url = settings.bc_notification_url
    if not url:
        log.info("event=subscriptions.skipped reason='BC_NOTIFICATION_URL is not set: no BC subscriptions, "
                 "the payment poll carries the load'")
        return {}
    client_state = settings.bc_client_state.reveal() if settings.bc_client_state else ""
    existing = rt.bc.list_subscriptions()
    outcome: dict[str, str] = {}
    for company_id in settings.bc_companies():
        jid = job_id(KIND, company_id)
        try:
            outcome[company_id] = _ensure_one(rt, company_id, url, client_state, existing, now, jid)
        except ConnectorError as exc:  # one company's trouble must not stop the others
            outcome[company_id] = f"failed: {exc.summary()}"
            rt.audit.record(jid, "subscription", "failed", f"could not ensure the BC subscription: {exc.summary()}",
                            kind=KIND, http_status=exc.status, correlation_id=exc.correlation_id)
    log.info("event=subscriptions.ensured %s", " ".join(f"{c}={o.split(':')[0]}" for c, o in outcome.items()))
    return outcome


def _ensure_one(rt: Runtime, company_id: str, url: str, client_state: str, existing: list[dict], now: datetime,
                jid: str) -> str:
    mine = [s for s in existing if ours(s, company_id, url)]
    # A subscription with another clientState (the secret was rotated) would have its notifications
    # ignored: replace it. Duplicates would double every notification: keep the longest-lived one.
    stale = [s for s in mine if s.get("clientState") is not None
             and not hmac.compare_digest(str(s["clientState"]).encode(), client_state.encode())]
    mine = [s for s in mine if s not in stale]
    mine.sort(key=lambda s: str(s.get("expirationDateTime") or ""), reverse=True)
    for extra in stale + mine[1:]:
        rt.bc.delete_subscription(extra["subscriptionId"], extra.get("@odata.etag"))
        rt.audit.record(jid, "subscription", "deleted", f"removed BC subscription {extra['subscriptionId']} "
                        f"({'other clientState' if extra in stale else 'duplicate'})", kind=KIND)
    current = mine[0] if mine else None
    if current is None:
        return _create(rt, company_id, url, client_state, now, jid, _stored(rt, company_id))
    if needs_renewal(current, now):
        try:
            renewed = rt.bc.renew_subscription(current["subscriptionId"], current.get("@odata.etag"))
        except PermanentError as exc:
            if exc.status != 404:
                raise
            return _create(rt, company_id, url, client_state, now, jid, current)  # expired meanwhile
        _store(rt, company_id, renewed, now)
        rt.audit.record(jid, "subscription", "renewed", f"BC subscription {current['subscriptionId']} renewed "
                        f"until {renewed.get('expirationDateTime')}", kind=KIND)
        return "renewed"
    _store(rt, company_id, current, now)
    return "ok"


def _create(rt: Runtime, company_id: str, url: str, client_state: str, now: datetime, jid: str, previous: dict | None) -> str:
    created = rt.bc.create_subscription(url, resource_for(company_id), client_state)
    _store(rt, company_id, created, now)
    dropped = (previous or {}).get("subscription_id") or (previous or {}).get("subscriptionId")
    what = "recreated" if dropped else "created"
    note = f" (BC no longer had {dropped})" if dropped else ""
    rt.audit.record(jid, "subscription", what, f"BC subscription {created.get('subscriptionId')} on "
                    f"{INVOICES} {what}{note}; expires {created.get('expirationDateTime')}", kind=KIND)
    return what
