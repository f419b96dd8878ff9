"""Master data BC -> Basware, against both sandboxes over real HTTP and a fresh Azurite.

What an operator or AP clerk would notice: Basware offers exactly the ledger's vendors, posting
accounts and dimension values; nothing is re-sent without a change; deletions and blocks show as
inactive; a Basware outage loses nothing.
"""
from __future__ import annotations

import json

import pytest

from sandbox import openapi, seed
from sandbox.common import Fault
from shared.flows.masterdata import sync as masterdata
from shared.flows.masterdata.sync import SyncOptions
from shared.store.storage import MASTERDATA_IMPORTS, SYNCSTATE

MASTERDATA_PATHS = ("/v1/vendors", "/v1/accounts", "/v1/costCenters", "/v2/projects", "/v1/lists/")
FAST = SyncOptions(status_first_poll=0.02, status_wait=2.0)
POSTING = [a["number"] for a in seed.accounts() if a["accountType"] == "Posting"]
ALL_VALUES = sum(len(v) for v in seed.DIMENSIONS.values())


def imports(sandbox, since: int = 0) -> list:
    """Master-data POSTs the connector made (each attempt), oldest first."""
    return [c for c in sandbox.calls.since(since) if c.method == "POST" and c.path.startswith(MASTERDATA_PATHS)]


def codes(calls) -> list[str]:
    return [r["externalCode"] for c in calls for r in c.body]


def last_seq(sandbox) -> int:
    calls = sandbox.calls.since(0)
    return calls[-1].seq if calls else 0


def sync(rt, **kwargs):
    return masterdata.sync_all(rt, options=FAST, **kwargs)


def ext(letter: str, *parts: str) -> str:
    return "-".join([f"BC-{seed.COMPANY_ID[:8]}-{letter}", *parts])


# -- first and second sync -----------------------------------------------------------------------------
def test_first_sync_imports_every_vendor_posting_account_and_dimension_value_with_valid_bodies(
        rt, basware_sandbox, bc_sandbox):
    summary = sync(rt)

    assert summary.status == "ok", summary.errors
    assert set(basware_sandbox.vendors) == {ext("V", v["number"]) for v in seed.vendors()}
    assert set(basware_sandbox.accounts) == {ext("A", n) for n in POSTING}
    assert {r["costCenterCode"] for r in basware_sandbox.cost_centers.values()} == {
        c for c, _ in seed.DIMENSIONS["DEPARTMENT"]}
    assert {r["projectCode"] for r in basware_sandbox.projects.values()} == {c for c, _ in seed.DIMENSIONS["PROJECT"]}
    assert {r["text_1"] for r in basware_sandbox.lists["ACC_LIST_1"].values()} == {
        c for c, _ in seed.DIMENSIONS["AREA"]}
    calls = imports(basware_sandbox)
    assert len(calls) == 5 and all(c.status == 200 for c in calls)
    for call in calls:  # every request body is valid against Basware's OpenAPI schema
        assert openapi.validate(f"POST {call.path}", call.body) == [], call.path
    for entity, records in (("vendors", basware_sandbox.vendors), ("accounts", basware_sandbox.accounts)):
        assert {basware_sandbox.item_status(entity, e) for e in records} == {"Success"}
    # blocked in BC -> inactive in Basware, from the first import on
    assert basware_sandbox.vendors[ext("V", seed.BLOCKED_VENDOR)]["processingStatus"] == {
        "active": False, "paymentDenied": True}
    assert basware_sandbox.vendors[ext("V", seed.PAYMENT_BLOCKED_VENDOR)]["processingStatus"] == {
        "active": True, "paymentDenied": True}
    assert basware_sandbox.accounts[ext("A", seed.BLOCKED_ACCOUNT)]["companies"][0]["active"] is False
    assert basware_sandbox.accounts[ext("A", seed.NON_DIRECT_ACCOUNT)]["companies"][0]["active"] is False
    assert ext("A", seed.HEADING_ACCOUNT) not in basware_sandbox.accounts

    total = len(seed.vendors()) + len(POSTING) + ALL_VALUES
    assert summary.totals.changed == summary.totals.sent == total
    assert summary.totals.read == len(seed.vendors()) + len(seed.accounts()) + ALL_VALUES
    assert summary.totals.requests == 5 and summary.totals.failed == 0
    job = rt.jobs.get("masterdata", summary.jobs[0])
    assert job.state == "done" and job.get("sent") == total and job.get("requests") == 5
    trail = rt.audit.trail(summary.jobs[0])
    request_ids = {c.headers.get("x-amzn-RequestId") for c in calls}
    assert request_ids <= {r.get("correlation_id") for r in trail if r["step"] == "import"}


def test_second_sync_without_bc_change_sends_no_request(rt, basware_sandbox, bc_sandbox):
    sync(rt)
    before = last_seq(basware_sandbox)

    summary = sync(rt)

    assert imports(basware_sandbox, before) == []
    assert summary.status == "ok"
    assert summary.totals.sent == summary.totals.changed == summary.totals.requests == 0
    assert summary.totals.skipped == len(seed.vendors()) + len(POSTING) + ALL_VALUES


# -- changes in BC ------------------------------------------------------------------------------------
def test_changing_one_vendor_name_sends_exactly_that_vendor(rt, basware_sandbox, bc_sandbox):
    sync(rt)
    bc_sandbox.set_vendor("V10020", displayName="Cobalt Castings GmbH")
    before = last_seq(basware_sandbox)

    summary = sync(rt)

    calls = imports(basware_sandbox, before)
    assert [c.path for c in calls] == ["/v1/vendors"]
    assert codes(calls) == [ext("V", "V10020")]
    assert basware_sandbox.vendors[ext("V", "V10020")]["name"] == "Cobalt Castings GmbH"
    assert summary.totals.changed == summary.totals.sent == 1


def test_blocking_an_account_sends_it_inactive(rt, basware_sandbox, bc_sandbox):
    sync(rt)
    bc_sandbox.set_account("6200", blocked=True)
    before = last_seq(basware_sandbox)

    summary = sync(rt)

    calls = imports(basware_sandbox, before)
    assert codes(calls) == [ext("A", "6200")]
    assert calls[0].body[0]["companies"] == [{"companyCode": seed.COMPANY_CODE, "inherit": False, "active": False}]
    assert basware_sandbox.item_status("accounts", ext("A", "6200")) == "Success"
    assert summary.totals.inactivated == 1


def test_deleting_a_dimension_value_or_a_vendor_sends_it_inactive_once(rt, basware_sandbox, bc_sandbox):
    sync(rt)
    bc_sandbox.delete_dimension_value("DEPARTMENT", "IT")
    bc_sandbox.delete_vendor("V10030")
    before = last_seq(basware_sandbox)

    summary = sync(rt)

    calls = imports(basware_sandbox, before)
    assert sorted(codes(calls)) == sorted([ext("D", "DEPARTMENT", "IT"), ext("V", "V10030")])
    cost_center = basware_sandbox.cost_centers[ext("D", "DEPARTMENT", "IT")]
    assert cost_center["costCenterCode"] == "IT" and cost_center["costCenterNames"][0]["translation"] == "IT"
    assert cost_center["companies"] == [{"companyCode": seed.COMPANY_CODE, "active": False}]
    assert basware_sandbox.vendors[ext("V", "V10030")]["processingStatus"]["active"] is False
    assert summary.totals.inactivated == 2
    # never deleted, and not sent again while it stays gone
    before = last_seq(basware_sandbox)
    assert sync(rt).totals.requests == 0 and imports(basware_sandbox, before) == []
    assert not [c for c in basware_sandbox.calls.since(0) if c.method == "DELETE"]


# -- failures ----------------------------------------------------------------------------------------------
def test_basware_500_mid_run_loses_nothing(rt, basware_sandbox, bc_sandbox):
    bc_sandbox.seed_bulk(vendors=400)  # 450 vendors: requests of 200, 200 and 50
    attempts = rt.basware.retry.max_attempts
    seen = {"n": 0}
    take = basware_sandbox.faults.take

    def second_vendor_post_fails(method: str, path: str):
        if method == "POST" and path == "/v1/vendors":
            seen["n"] += 1
            if 2 <= seen["n"] <= 1 + attempts:  # the 2nd request and each of its retries
                return Fault(path, 1, "status", 500)
        return take(method, path)

    basware_sandbox.faults.take = second_vendor_post_fails
    first = sync(rt)
    basware_sandbox.faults.take = take

    failed_batch = imports(basware_sandbox)[1].body
    assert first.status == "partial" and first.retryable
    assert first.totals.failed == len(failed_batch) == 200
    assert len(basware_sandbox.vendors) == 250  # the 1st and 3rd requests went through
    before = last_seq(basware_sandbox)

    second = sync(rt)

    calls = imports(basware_sandbox, before)
    assert [c.path for c in calls] == ["/v1/vendors"]
    assert sorted(codes(calls)) == sorted(r["externalCode"] for r in failed_batch)
    assert len(basware_sandbox.vendors) == 450 and second.status == "ok"
    before = last_seq(basware_sandbox)
    assert sync(rt).totals.requests == 0 and imports(basware_sandbox, before) == []


def test_a_record_p2p_refused_is_retried_next_run_and_not_skipped_as_identical(rt, basware_sandbox, bc_sandbox):
    basware_sandbox.fail_next_import(2, "Vendor payment terms NET45 do not exist in P2P")
    first = sync(rt, entities=["vendors"])

    refused = sorted(e for e in basware_sandbox.vendors if basware_sandbox.item_status("vendors", e) == "Error")
    assert len(refused) == 2 and first.totals.failed == 2 and first.status == "partial"
    errors = [r for r in rt.audit.trail(first.jobs[0]) if r["step"] == "record"]
    assert sorted(r["basware_id"] for r in errors) == refused
    assert all("NET45" in r["message"] for r in errors)
    before = last_seq(basware_sandbox)

    second = sync(rt, entities=["vendors"])

    # resent with a new lastUpdated: Basware keeps refused records and would skip an identical copy
    calls = imports(basware_sandbox, before)
    assert sorted(codes(calls)) == refused and all("lastUpdated" in r for r in calls[0].body)
    assert {basware_sandbox.item_status("vendors", e) for e in refused} == {"Success"}
    assert second.status == "ok"
    before = last_seq(basware_sandbox)
    assert sync(rt, entities=["vendors"]).totals.requests == 0 and imports(basware_sandbox, before) == []


def test_request_status_in_progress_is_polled_then_left_for_the_next_run(rt, basware_sandbox, bc_sandbox):
    basware_sandbox.configure({"request_status_delay": 0.3})
    waited = masterdata.sync_all(rt, entities=["accounts"], options=SyncOptions(status_first_poll=0.05,
                                                                                status_wait=3.0))
    assert waited.status == "ok" and waited.totals.sent == len(POSTING)

    bc_sandbox.set_account("6210", displayName="Phone and Internet")
    impatient = masterdata.sync_all(rt, entities=["accounts"], options=SyncOptions(status_first_poll=0.05,
                                                                                   status_wait=0.1))
    assert impatient.status == "partial" and impatient.totals.unconfirmed == 1
    basware_sandbox.configure({"request_status_delay": 0.0})

    again = sync(rt, entities=["accounts"])  # resent; Basware answers NotProcessed: now confirmed
    assert again.totals.sent == 1 and again.status == "ok"
    assert sync(rt, entities=["accounts"]).totals.requests == 0


# -- volume and force ------------------------------------------------------------------------------------
def test_2000_vendors_go_in_10_requests_of_at_most_200(rt, basware_sandbox, bc_sandbox):
    bc_sandbox.seed_bulk(vendors=2000 - len(seed.vendors()))

    summary = sync(rt, entities=["vendors"])

    calls = imports(basware_sandbox)
    assert [c.path for c in calls] == ["/v1/vendors"] * 10
    assert [len(c.body) for c in calls] == [200] * 10
    assert len(set(codes(calls))) == 2000 == len(basware_sandbox.vendors)
    assert all(len(json.dumps(c.body).encode()) < 6_000_000 for c in calls)
    assert summary.totals.requests == 10 and summary.totals.sent == 2000


def test_force_resends_everything_and_says_how_many_basware_skips_as_identical(rt, basware_sandbox, bc_sandbox):
    sync(rt)
    bc_sandbox.set_vendor("V10040", displayName="Euro Packaging B.V.")
    before = last_seq(basware_sandbox)

    summary = sync(rt, force=True)

    total = len(seed.vendors()) + len(POSTING) + ALL_VALUES
    assert len(codes(imports(basware_sandbox, before))) == total == summary.totals.sent
    assert summary.identical == total - 1 and summary.totals.changed == 1
    statuses = [i["status"] for rid in basware_sandbox.request_ids[-5:]
                for s in basware_sandbox.request_status(rid)["systems"] for i in s["items"]]
    assert statuses.count("NotProcessed") == total - 1 and statuses.count("Success") == 1


# -- triggers -------------------------------------------------------------------------------------------
def test_http_route_runs_the_sync_and_answers_the_summary(rt, basware_sandbox, bc_sandbox, monkeypatch):
    import azure.functions as func

    import shared.core.runtime
    from shared.functions import masterdata as functions

    monkeypatch.setattr(shared.core.runtime, "_runtime", rt)
    route = functions.masterdata_sync  # the plain handler both routes (manage/, admin/) wrap
    request = lambda query: func.HttpRequest("POST", "/api/admin/masterdata/sync", params=query, body=b"")  # noqa: E731

    first = route(request({"force": "false"}))
    assert first.status_code == 200 and first.mimetype == "application/json"
    body = json.loads(first.get_body())
    assert body["status"] == "ok" and body["totals"]["requests"] == 5 and body["identical"] == 0

    forced = json.loads(route(request({"force": "true"})).get_body())
    assert forced["identical"] == forced["totals"]["sent"] == body["totals"]["sent"]

    assert route(request({"force": "maybe"})).status_code == 400
    queued = route(request({"force": "true", "async": "true"}))
    assert queued.status_code == 202
    assert [e["company_id"] for e in json.loads(queued.get_body())["enqueued"]] == [seed.COMPANY_ID]


def test_queued_run_is_one_job_and_a_poison_message_becomes_a_dead_lettered_job(rt, basware_sandbox, bc_sandbox):
    [entry] = masterdata.enqueue_sync(rt)
    [message] = rt.storage.queue(MASTERDATA_IMPORTS).receive_messages()
    raw = message.content

    summary = masterdata.handle_import_message(rt, raw, options=FAST)
    assert summary.jobs == [entry["job_id"]] and summary.status == "ok"
    job = rt.jobs.get("masterdata", entry["job_id"])
    assert job.state == "done" and json.loads(job.get("message"))["company_id"] == seed.COMPANY_ID
    assert masterdata.handle_import_message(rt, raw, options=FAST).status == "already_done"  # redelivery

    # Basware down: the run raises so the queue retries; after the last try it is dead-lettered
    basware_sandbox.faults.add("^/v1/", count=1000, status=503)
    bc_sandbox.set_vendor("V10010", displayName="Acme Steel Supply Ltd")
    [entry] = masterdata.enqueue_sync(rt)
    raw = [m for m in rt.storage.queue(MASTERDATA_IMPORTS).receive_messages()][-1].content
    with pytest.raises(masterdata.TransientError):
        masterdata.handle_import_message(rt, raw, options=FAST)
    assert rt.jobs.get("masterdata", entry["job_id"]).state == "retrying"
    from shared.functions import masterdata as functions

    import shared.core.runtime
    shared.core.runtime._runtime = rt
    try:
        poison = functions.masterdata_imports_poison._function.get_user_function()
        poison(_QueueMessage(raw))
    finally:
        shared.core.runtime._runtime = None
    job = rt.jobs.get("masterdata", entry["job_id"])
    assert job.state == "dead_lettered" and "503" in (job.last_error or "")


class _QueueMessage:
    def __init__(self, body: str) -> None:
        self._body = body.encode()
        self.dequeue_count = 5

    def get_body(self) -> bytes:
        return self._body


def test_hash_rows_live_in_syncstate_keyed_by_entity_company_and_external_code(rt, basware_sandbox, bc_sandbox):
    sync(rt, entities=["vendors"])
    rows = list(rt.storage.table(SYNCSTATE).query_entities(
        "PartitionKey eq @pk", parameters={"pk": f"hash-vendor-{seed.COMPANY_ID}"}))
    assert {r["RowKey"] for r in rows} == set(basware_sandbox.vendors)
    row = next(r for r in rows if r["RowKey"] == ext("V", "V10010"))
    assert len(row["hash"]) == 64 and row["active"] is True
    assert json.loads(row["body"]) == basware_sandbox.vendors[ext("V", "V10010")]


def test_basware_down_stops_the_run_after_two_failed_requests_and_the_next_run_sends_everything(
        rt, basware_sandbox, bc_sandbox):
    basware_sandbox.faults.add("^/v1/(vendors|accounts)$", count=1000, status=503)

    down = sync(rt)

    assert down.status == "failed" and down.retryable
    assert down.totals.requests == 2  # vendors, then accounts: not every batch of every entity
    assert [e.status for e in down.entities] == ["partial", "failed", "not_run", "not_run", "not_run"]
    assert basware_sandbox.vendors == {}
    basware_sandbox.faults.clear()

    up = sync(rt)

    assert up.status == "ok" and up.totals.sent == len(seed.vendors()) + len(POSTING) + ALL_VALUES


def test_a_bc_company_without_a_basware_company_code_is_skipped_with_a_reason(env, basware_sandbox, bc_sandbox):
    from shared.core.runtime import build_runtime
    from shared.core.settings import load_settings

    unmapped = {k: v for k, v in env.items() if k != "COMPANY_MAP"}  # default: {"*": BC_COMPANY_ID}
    runtime = build_runtime(load_settings(unmapped))
    try:
        summary = masterdata.sync_all(runtime, options=FAST)
    finally:
        runtime.close()
    assert summary.status == "skipped" and "COMPANY_MAP" in summary.errors[0]
    assert imports(basware_sandbox) == []


def test_one_run_per_company_at_a_time(storage_connection_string):
    from shared.store.syncstate import CompanyLease
    from shared.store.storage import Storage

    storage = Storage(storage_connection_string)
    first = CompanyLease(storage, "lease-test-company", "worker-a", seconds=60)
    second = CompanyLease(storage, "lease-test-company", "worker-b", seconds=60)
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_benchmark_small_mode_prints_its_figures(capsys):
    from bench.masterdata import main

    figures = main(["--small", "--no-memory"])

    printed = capsys.readouterr().out
    assert "records/s" in printed and "no-change run: 0 master-data requests" in printed
    assert figures["nochange_requests"] == 0 and figures["one_change_sent"] == 1
    assert figures["initial_records"] == figures["vendors"] + figures["accounts"] + figures["dimension_values"]


def test_the_route_through_the_real_function_app_with_a_function_key(env, rt, app_process, basware_sandbox,
                                                                     bc_sandbox):
    import time

    import httpx

    app = app_process({**env, "DEVHOST_FUNCTION_KEY": "md-key"}, "--no-timers")
    api = httpx.Client(base_url=f"{app.base_url}/api", headers={"x-functions-key": "md-key"}, timeout=60)
    try:
        assert httpx.post(f"{app.base_url}/api/admin/masterdata/sync").status_code == 401
        now = api.post("/admin/masterdata/sync", params={"force": "false"})
        assert now.status_code == 200 and now.json()["totals"]["requests"] == 5

        bc_sandbox.set_vendor("V10050", displayName="Fjord Logistics AS")
        queued = api.post("/admin/masterdata/sync", params={"async": "true"})
        assert queued.status_code == 202
        [entry] = queued.json()["enqueued"]
        deadline = time.monotonic() + 30  # the app's queue worker runs the import
        while (job := rt.jobs.get("masterdata", entry["job_id"])) is None or job.state != "done":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job.get("sent") == 1 and basware_sandbox.vendors[ext("V", "V10050")]["name"] == "Fjord Logistics AS"
    finally:
        api.close()
