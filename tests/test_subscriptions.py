"""BC webhook subscriptions: created when missing, renewed before they expire, re-created when BC drops them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.subscriptions import needs_renewal, ours, resource_for

COMPANY = "5d0c7a1e-0000-4000-8000-00000000c001"
URL = "https://connector.example/api/bc/notifications"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


def _sub(expires: datetime, url=URL, resource=None):
    return {"subscriptionId": "s1", "notificationUrl": url, "resource": resource or resource_for(COMPANY),
            "expirationDateTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_the_resource_is_the_company_purchase_invoices():
    assert resource_for(COMPANY) == f"/api/v2.0/companies({COMPANY})/purchaseInvoices"


def test_only_subscriptions_for_our_url_and_the_company_invoices_are_ours():
    assert ours(_sub(NOW), COMPANY, URL)
    assert ours(_sub(NOW, url=URL + "/"), COMPANY, URL)
    assert not ours(_sub(NOW, url="https://someone-else.example/hook"), COMPANY, URL)
    assert not ours(_sub(NOW, resource=f"/api/v2.0/companies({COMPANY})/vendors"), COMPANY, URL)
    other = "9d0c7a1e-0000-4000-8000-00000000c009"
    assert not ours(_sub(NOW, resource=resource_for(other)), COMPANY, URL)


def test_a_subscription_expiring_within_a_day_needs_renewal():
    assert needs_renewal(_sub(NOW + timedelta(hours=23)), NOW)
    assert needs_renewal(_sub(NOW - timedelta(hours=1)), NOW)
    assert not needs_renewal(_sub(NOW + timedelta(days=2)), NOW)
    assert needs_renewal({"subscriptionId": "s1"}, NOW)  # no expiry known: renew to be safe
