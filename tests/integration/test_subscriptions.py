"""BC webhook subscriptions: created when missing, renewed before they expire, re-created when BC drops them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.flows.payments.subscriptions import needs_renewal, ours, resource_for

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


# -- against the BC sandbox and Azurite ------------------------------------------------------------------
import pytest  # noqa: E402

from sandbox import seed  # noqa: E402
from scripts.local_env import connector_env  # noqa: E402
from shared.store.audit import AuditLog  # noqa: E402
from shared.store.storage import SYNCSTATE  # noqa: E402
from shared.flows.payments.subscriptions import ensure_subscriptions  # noqa: E402
from tests.integration.test_notifications import NotificationReceiver  # noqa: E402

UNUSED_BASWARE = "http://127.0.0.1:9"  # these tests never call Basware


@pytest.fixture
def receiver():
    holder = NotificationReceiver(lambda: holder.rt).start()
    yield holder
    holder.stop()


def _runtime(storage, bc_url, **overrides):
    from shared.clients.http import RetryConfig
    from shared.core.runtime import build_runtime
    from shared.core.settings import load_settings

    env = connector_env(storage, UNUSED_BASWARE, bc_url, **overrides)
    return build_runtime(load_settings(env), retry=RetryConfig(max_attempts=3, backoff_base=0.02, backoff_max=0.1))


@pytest.fixture
def sub_rt(fresh_azurite, bc_sandbox, receiver):
    rt = _runtime(fresh_azurite.connection_string, bc_sandbox.base_url, BC_NOTIFICATION_URL=receiver.url)
    receiver.rt = rt
    yield rt
    rt.close()


def _bc_now(bc_sandbox):
    return bc_sandbox.clock.now()


def _stored(rt):
    return rt.storage.table(SYNCSTATE).get_entity("subscription", seed.COMPANY_ID)


def test_without_a_notification_url_nothing_is_subscribed(fresh_azurite, bc_sandbox):
    rt = _runtime(fresh_azurite.connection_string, bc_sandbox.base_url)
    try:
        bc_sandbox.calls.clear()
        assert ensure_subscriptions(rt, _bc_now(bc_sandbox)) == {}
        assert bc_sandbox.subscriptions.list() == []
        assert bc_sandbox.calls.find(path="subscriptions") == []
    finally:
        rt.close()


def test_a_missing_subscription_is_created_after_the_handshake_and_remembered(sub_rt, bc_sandbox, receiver):
    assert ensure_subscriptions(sub_rt, _bc_now(bc_sandbox)) == {seed.COMPANY_ID: "created"}
    [sub] = bc_sandbox.subscriptions.list()
    assert sub["notificationUrl"] == receiver.url
    assert sub["resource"] == f"/api/v2.0/companies({seed.COMPANY_ID})/purchaseInvoices"
    assert sub["clientState"] == seed.BC_CLIENT_STATE
    assert [h["ok"] for h in bc_sandbox.subscriptions.handshakes] == [True]  # our endpoint echoed the token
    assert _stored(sub_rt)["subscription_id"] == sub["subscriptionId"]
    # a second run finds it healthy and leaves it alone
    assert ensure_subscriptions(sub_rt, _bc_now(bc_sandbox)) == {seed.COMPANY_ID: "ok"}
    assert len(bc_sandbox.subscriptions.list()) == 1


def test_a_subscription_near_expiry_is_renewed(sub_rt, bc_sandbox):
    ensure_subscriptions(sub_rt, _bc_now(bc_sandbox))
    [before] = bc_sandbox.subscriptions.list()
    old_expiry = before["expirationDateTime"]
    bc_sandbox.clock.advance(2.5 * 24 * 3600)  # half a day left of BC's 3
    assert ensure_subscriptions(sub_rt, _bc_now(bc_sandbox)) == {seed.COMPANY_ID: "renewed"}
    [after] = bc_sandbox.subscriptions.list()
    assert after["subscriptionId"] == before["subscriptionId"]
    assert after["expirationDateTime"] > old_expiry
    assert len(bc_sandbox.calls.find(method="PATCH", path="subscriptions")) == 1
    assert _stored(sub_rt)["expiration"] == after["expirationDateTime"]


def test_a_subscription_bc_dropped_is_recreated(sub_rt, bc_sandbox):
    ensure_subscriptions(sub_rt, _bc_now(bc_sandbox))
    [first] = bc_sandbox.subscriptions.list()
    bc_sandbox.drop_subscription(first["subscriptionId"])
    assert ensure_subscriptions(sub_rt, _bc_now(bc_sandbox)) == {seed.COMPANY_ID: "recreated"}
    [second] = bc_sandbox.subscriptions.list()
    assert second["subscriptionId"] != first["subscriptionId"]
    assert _stored(sub_rt)["subscription_id"] == second["subscriptionId"]
    from shared.store.jobs import job_id
    trail = AuditLog(sub_rt.storage).trail(job_id("subscription", seed.COMPANY_ID))
    assert trail[-1]["outcome"] == "recreated" and first["subscriptionId"] in trail[-1]["message"]
