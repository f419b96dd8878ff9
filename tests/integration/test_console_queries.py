"""The console's queries against real Azurite: counts by window, paging with continuation tokens,
search by each id an operator may hold, the last runs of the scheduled jobs."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.ops.console import BadQuery, count_jobs, decode_token, record_view, search_records
from shared.store.audit import AuditLog
from shared.store.jobs import JobStore, job_id
from shared.store.runs import last_runs, recorded
from shared.store.storage import Storage

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def storage(fresh_azurite):
    return Storage(fresh_azurite.connection_string)


def jobs_at(storage, when: datetime) -> JobStore:
    return JobStore(storage, clock=lambda: when)


def test_counts_per_flow_and_state_follow_the_last_change(storage):
    jobs_at(storage, NOW - timedelta(hours=1)).create("invoice", "a", "done")
    jobs_at(storage, NOW - timedelta(hours=2)).create("invoice", "b", "failed")
    jobs_at(storage, NOW - timedelta(days=3)).create("invoice", "c", "dead_lettered")
    jobs_at(storage, NOW - timedelta(days=3)).create("invoice", "d", "draft_created")
    jobs_at(storage, NOW - timedelta(days=20)).create("payment", "e", "done")
    jobs_at(storage, NOW - timedelta(days=40)).create("invoice", "old", "failed")  # outside every window
    jobs_at(storage, NOW).create("notification", "n", "ignored")  # not a flow the overview counts
    counts = count_jobs(storage, NOW)
    assert counts["24h"]["invoice"] == {"done": 1, "failed": 1, "dead_lettered": 0, "in_progress": 0}
    assert counts["7d"]["invoice"] == {"done": 1, "failed": 1, "dead_lettered": 1, "in_progress": 1}
    assert counts["30d"]["invoice"]["failed"] == 1 and counts["30d"]["payment"]["done"] == 1
    assert counts["7d"]["payment"]["done"] == 0
    assert set(counts["24h"]) == {"invoice", "payment", "masterdata", "purchaseorder"}


def test_pages_follow_continuation_tokens_and_never_repeat_or_skip(storage):
    jobs = jobs_at(storage, NOW)
    for n in range(130):
        jobs.create("invoice", f"job-{n:04d}", "failed" if n % 2 else "done", invoice_id=f"inv-{n:04d}")
    seen, token, sizes = [], None, []
    while True:
        page = search_records(storage, kind="invoice", limit=50, token=token, now=lambda: NOW)
        sizes.append(page["count"])
        seen += [r["id"] for r in page["records"]]
        token = page["next"]
        if not token:
            break
    assert sizes == [50, 50, 30]
    assert sorted(seen) == [f"job-{n:04d}" for n in range(130)] and len(set(seen)) == 130
    # a filtered list pages the same way, on the server's filter
    failed, token = [], None
    while True:
        page = search_records(storage, state="failed", limit=40, token=token, now=lambda: NOW)
        failed += page["records"]
        token = page["next"]
        if not token:
            break
    assert len(failed) == 65 and {r["state"] for r in failed} == {"failed"}


def test_search_matches_the_start_of_each_id_an_operator_holds(storage):
    jobs = jobs_at(storage, NOW)
    jobs.create("invoice", job_id("invoice", "00fe5922-aaaa"), "done", invoice_id="00fe5922-aaaa",
                invoice_number="INV-2026-001", supplier_code="S100", vendor_number="V10000", bc_number="PPI-108001")
    jobs.create("invoice", job_id("invoice", "11aa0000-bbbb"), "failed", invoice_id="11aa0000-bbbb",
                invoice_number="INV-2026-002", supplier_code="S200")
    jobs.create("payment", "p1", "done", basware_id="00fe5922-aaaa", bc_number="PPI-108001")

    def found(q, **filters):
        return sorted((r["kind"], r["invoice_number"] or r["bc_number"])
                      for r in search_records(storage, search=q, now=lambda: NOW, **filters)["records"])

    assert found("00fe5922-aaaa") == [("invoice", "INV-2026-001"), ("payment", "PPI-108001")]
    assert found("00fe5922", kind="invoice") == [("invoice", "INV-2026-001")]
    assert found("INV-2026-002") == [("invoice", "INV-2026-002")]
    assert found("INV-2026") == [("invoice", "INV-2026-001"), ("invoice", "INV-2026-002")]
    assert found("V10000") == found("S100") == [("invoice", "INV-2026-001")]
    assert found("PPI-108001", kind="payment") == [("payment", "PPI-108001")]
    assert found("nothing-like-it") == []
    assert found("INV-2026", state="failed") == [("invoice", "INV-2026-002")]
    assert found("INV-2026", window="24h") == found("INV-2026")


def test_bad_filters_and_tokens_are_refused_with_what_is_accepted(storage):
    with pytest.raises(BadQuery, match="state must be one of done, failed, dead_lettered, in_progress"):
        search_records(storage, state="broken")
    with pytest.raises(BadQuery, match="time must be one of 24h, 7d, 30d"):
        search_records(storage, window="1y")
    with pytest.raises(BadQuery, match="start again from the first page"):
        search_records(storage, token="not-a-token")
    with pytest.raises(BadQuery, match="limit must be from 1 to 200"):
        search_records(storage, limit=5000)
    assert decode_token(None) is None


def test_the_record_view_finds_an_invoice_by_its_basware_id_and_links_to_bc(storage):
    jobs, audit = jobs_at(storage, NOW), AuditLog(storage)
    jid = job_id("invoice", "inv-42")
    jobs.create("invoice", jid, "done", invoice_id="inv-42", bc_number="PPI-1", bc_company_id="c-1",
                bc_entity="purchaseInvoices", bc_status="Open")
    audit.record(jid, "post", "ok", "posted", kind="invoice", http_status=204)
    view = record_view(jobs, audit, "invoice", "inv-42", bc_tenant="contoso.onmicrosoft.com",
                       bc_environment="Production", company_name={"c-1": "CRONUS Oy"}.get)["view"]
    assert view["bc_url"] == ("https://businesscentral.dynamics.com/contoso.onmicrosoft.com/Production/"
                              "?company=CRONUS%20Oy&page=138&filter=%27No.%27%20IS%20%27PPI-1%27")
    assert view["replayable"] is False and view["clerk_message"] is None
    unnamed = record_view(jobs, audit, "invoice", jid, bc_tenant="t", bc_environment="e")["view"]
    assert unnamed["bc_url"] is None  # without the company's name BC would open another company
    assert record_view(jobs, audit, "invoice", "unknown") is None


def test_each_scheduled_job_keeps_its_last_run(storage):
    assert recorded(storage, "invoice_poll", lambda: {"seen": 4, "queued": 1}) == {"seen": 4, "queued": 1}
    with pytest.raises(RuntimeError):
        recorded(storage, "payment_poll", lambda: (_ for _ in ()).throw(RuntimeError("BC down")))
    recorded(storage, "invoice_poll", lambda: {"seen": 0, "queued": 0})
    runs = last_runs(storage)
    assert runs["invoice_poll"]["outcome"] == "ok" and runs["invoice_poll"]["summary"] == "seen=0; queued=0"
    assert runs["payment_poll"]["outcome"] == "failed" and runs["payment_poll"]["summary"] == "RuntimeError"
    assert runs["invoice_poll"]["finished"] >= runs["invoice_poll"]["started"]


def test_overview_counts_are_reused_for_a_minute_unless_asked_fresh(storage):
    from shared.ops.console import CountCache, overview

    cache = CountCache(timedelta(seconds=60))
    jobs_at(storage, NOW).create("invoice", "a", "failed")
    first = overview(storage, {"status": "ok"}, {}, now=lambda: NOW, cache=cache)
    jobs_at(storage, NOW).create("invoice", "b", "failed")
    later = NOW + timedelta(seconds=30)
    again = overview(storage, {"status": "ok"}, {}, now=lambda: later, cache=cache)
    assert again["counts"]["24h"]["invoice"]["failed"] == 1 and again["counted"] == first["counted"]
    fresh = overview(storage, {"status": "ok"}, {}, now=lambda: later, cache=cache, fresh=True)
    assert fresh["counts"]["24h"]["invoice"]["failed"] == 2 and fresh["counted"] == later.isoformat()
    expired = overview(storage, {"status": "ok"}, {}, now=lambda: later + timedelta(seconds=61), cache=cache)
    assert expired["counted"] == (later + timedelta(seconds=61)).isoformat()
