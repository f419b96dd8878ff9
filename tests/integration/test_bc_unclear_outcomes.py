"""Unclear outcomes, foreign documents and leases, over real HTTP: BC commits requests after the
client gave up (sandbox/bc/latecommit.py), AP clerks type drafts by hand, workers lose their lease."""
from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from sandbox import seed
from shared.flows.invoices import ownership
from shared.flows.invoices.transfer import KIND, invoice_job_id, transfer_invoice
from shared.core.errors import JobBusy
from shared.models.messages import InvoiceTransferMessage
from tests.integration.test_invoice_flow import (LATE_COMMIT_WINDOW, CrashingTransport, SimulatedCrash,  # noqa: F401
                                                 Worker, assert_matches, assert_posted_once, bc_documents, env,
                                                 new_runtime, only, pump, settled, steps, transfer_responses,
                                                 webhook)

CREATE = r"/purchase(Invoices|CreditMemos)$"
POST = r"/Microsoft\.NAV\.post$"


def one_invoice(number: str = "UNCLEAR-1", vendor: str = "V10010") -> dict:
    return seed.accounting_document(850, vendor, number, [
        seed.coding_row(1, "6200", seed.money("120.00"), invoice_key=number)])


def run(rt, doc: dict, timeout: float = 60) -> None:
    webhook(rt, doc["invoiceId"])
    pump(Worker(rt), until=settled(rt, [doc["invoiceId"]]), timeout=timeout)


# -- creates and posts that BC commits after the client gave up ---------------------------------------------
def test_a_create_committed_after_the_timeout_makes_one_draft_not_two(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [one_invoice()])
    bc_sandbox.late_commits.add(CREATE, count=1, delay=0.2, commit_after=1.5)
    run(rt, doc)
    posted = assert_posted_once(basware_sandbox, bc_sandbox, doc)
    assert_matches(posted, doc)
    assert len(bc_sandbox.calls.find("POST", CREATE)) == 1  # never created again
    assert bc_sandbox.late_commits.committed[0][2] == 201
    trail = steps(rt, doc["invoiceId"])
    assert ("create_draft", "unclear") in trail and ("create_draft", "waiting") in trail
    assert ("find_document", "reuse") in trail
    assert len(transfer_responses(basware_sandbox, doc["invoiceId"])) == 1


def test_a_create_that_never_commits_is_made_again_once_the_window_is_over(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [one_invoice("LOST-1")])
    bc_sandbox.faults.add(CREATE, count=1, kind="drop", method="POST")  # dropped before BC saw it
    run(rt, doc)
    assert_posted_once(basware_sandbox, bc_sandbox, doc)
    creates = bc_sandbox.calls.find("POST", CREATE)
    assert [c.status for c in creates] == [0, 201]
    waited = [r for r in rt.audit.trail(invoice_job_id(doc["invoiceId"]))
              if (r["step"], r["outcome"]) == ("create_draft", "waiting")]
    assert waited and all(re.search(r"again in \d+s", r["message"]) for r in waited)


def test_a_post_committed_after_the_timeout_is_read_back_not_sent_again(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [one_invoice("LATEPOST-1")])
    bc_sandbox.late_commits.add(POST, count=1, delay=0.2, commit_after=1.5)
    run(rt, doc)
    posted = assert_posted_once(basware_sandbox, bc_sandbox, doc)
    assert len(bc_sandbox.calls.find("POST", POST)) == 1  # the late one only: no second post
    (ok,) = transfer_responses(basware_sandbox, doc["invoiceId"])
    assert ok["success"] is True and ok["voucherNumber1"] == posted.number
    trail = steps(rt, doc["invoiceId"])
    assert ("post", "unclear") in trail and ("find_document", "posted") in trail, trail


def test_a_post_refused_with_429_is_sent_again_without_waiting_out_the_late_commit_window(rt, basware_sandbox,
                                                                                          bc_sandbox):
    """BC's 429 comes before the request runs: nothing can commit later, even when BC also refuses
    the reads that follow (a throttled tenant refuses everything for a while)."""
    (doc,) = only(basware_sandbox, [one_invoice("THROTTLED-POST-1")])
    bc_sandbox.faults.add(POST, count=5, status=429, method="POST", retry_after=0)
    bc_sandbox.faults.add(r"/purchaseInvoices\([^)]*\)$", count=5, status=429, method="GET", retry_after=0)
    run(rt, doc)
    assert_posted_once(basware_sandbox, bc_sandbox, doc)
    trail = steps(rt, doc["invoiceId"])
    assert ("post", "waiting") not in trail and ("post", "unclear") not in trail, trail


def test_a_second_draft_of_the_connector_is_removed_and_one_kept(env, rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [one_invoice("TWICE-1")])
    crashing = new_runtime(env, "doomed", transport=CrashingTransport("POST", CREATE, after_response=True))
    try:
        with pytest.raises(SimulatedCrash):
            transfer_invoice(crashing, InvoiceTransferMessage(invoice_id=doc["invoiceId"]), lease_seconds=1)
    finally:
        crashing.close()
    (create,) = bc_sandbox.calls.find("POST", CREATE)
    rt.bc.create_document(seed.COMPANY_ID, "purchaseInvoices", create.body)  # the same request, committed twice
    assert len(bc_documents(bc_sandbox, "TWICE-1")) == 2
    time.sleep(1.1)  # the dead worker's lease runs out
    run(rt, doc)
    posted = assert_posted_once(basware_sandbox, bc_sandbox, doc)  # one posted, no draft left
    assert_matches(posted, doc)
    assert ("delete_draft", "ok") in steps(rt, doc["invoiceId"])


# -- documents the connector did not make ----------------------------------------------------------------------
def clerk_draft(api, vendor: str, number: str) -> dict:
    body = {"vendorNumber": vendor, "vendorInvoiceNumber": number, "invoiceDate": "2026-11-20",
            "purchaseInvoiceLines": [{"lineType": "Account", "lineObjectNumber": "6130", "quantity": 3,
                                      "unitCost": 19.99, "description": "typed in by hand"}]}
    response = api.post(f"{rt_company_path()}/purchaseInvoices", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def rt_company_path() -> str:
    return f"/v2.0/{seed.TENANT_ID}/{seed.ENVIRONMENT}/api/v2.0/companies({seed.COMPANY_ID})"


@pytest.fixture
def clerk(bc_sandbox):
    token = httpx.post(f"{bc_sandbox.base_url}/{seed.TENANT_ID}/oauth2/v2.0/token",
                       data={"grant_type": "client_credentials", "client_id": seed.BC_CLIENT_ID,
                             "client_secret": seed.BC_CLIENT_SECRET,
                             "scope": "https://api.businesscentral.dynamics.com/.default"}).json()["access_token"]
    with httpx.Client(base_url=bc_sandbox.base_url, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.mark.parametrize("typed", ["FOREIGN-1", "foreign-1"])
def test_a_draft_typed_in_by_hand_is_never_adopted_posted_changed_or_deleted(rt, basware_sandbox, bc_sandbox,
                                                                            clerk, typed):
    theirs = clerk_draft(clerk, "V10010", typed)
    before = bc_sandbox.documents[theirs["id"]]["@odata.etag"]
    (doc,) = only(basware_sandbox, [one_invoice("FOREIGN-1")])
    mark = bc_sandbox.calls.since(0)[-1].seq
    run(rt, doc)
    (response,) = transfer_responses(basware_sandbox, doc["invoiceId"])
    assert response["success"] is False
    assert f"already on BC draft purchase invoice {theirs['number']}, not created by this connector" \
        in response["responseMessage"]
    (still,) = bc_documents(bc_sandbox, "FOREIGN-1")
    assert still.id == theirs["id"] and still.status == "Draft" and still["@odata.etag"] == before
    writes = [c for c in bc_sandbox.calls.since(mark) if c.method in ("POST", "PATCH", "DELETE")
              and "/api/v2.0/" in c.path]
    assert writes == []  # nothing else happened in BC
    assert ("find_document", "foreign") in steps(rt, doc["invoiceId"])


def test_a_document_posted_by_hand_fails_the_invoice_naming_it(rt, basware_sandbox, bc_sandbox, clerk):
    theirs = clerk_draft(clerk, "V10010", "HANDPOSTED-1")
    assert clerk.post(f"{rt_company_path()}/purchaseInvoices({theirs['id']})/Microsoft.NAV.post").status_code == 204
    number = bc_sandbox.documents[theirs["id"]].number
    (doc,) = only(basware_sandbox, [one_invoice("handposted-1")])
    run(rt, doc)
    (response,) = transfer_responses(basware_sandbox, doc["invoiceId"])
    assert response["success"] is False and f"posted purchase invoice {number}" in response["responseMessage"]
    assert [d.id for d in bc_documents(bc_sandbox, "HANDPOSTED-1")] == [theirs["id"]]  # ours was removed
    assert bc_sandbox.documents[theirs["id"]].status == "Open"


def test_vendor_invoice_numbers_compare_as_bc_compares_codes(rt, basware_sandbox, bc_sandbox, clerk):
    # AL upper-cases Code fields per character: 'straße' is stored 'STRAßE', a different number from
    # 'STRASSE'; 'é' and 'É' are the same letter
    assert ownership.same_number("straße-7", "STRAßE-7") and ownership.same_number("café-1", "CAFÉ-1")
    assert not ownership.same_number("straße-7", "STRASSE-7")
    theirs = clerk_draft(clerk, "V10010", "STRASSE-7")
    other = clerk_draft(clerk, "V10010", "café-9")  # typed in before the connector's index was read
    (doc,) = only(basware_sandbox, [one_invoice("Straße-7")])
    run(rt, doc)
    (ok,) = transfer_responses(basware_sandbox, doc["invoiceId"])
    assert ok["success"] is True  # not the clerk's number: posted, and the clerk's draft left alone
    assert bc_sandbox.documents[theirs["id"]].status == "Draft"

    (doc2,) = only(basware_sandbox, [one_invoice("CAFÉ-9")])
    run(rt, doc2)
    (refused,) = transfer_responses(basware_sandbox, doc2["invoiceId"])
    assert refused["success"] is False and other["number"] in refused["responseMessage"]


# -- leases ----------------------------------------------------------------------------------------------------
class HookedTransport(httpx.HTTPTransport):
    """Runs `hook()` once, just before the first request matching method + path is sent."""

    def __init__(self, method: str, path: str, hook) -> None:
        super().__init__()
        self.method, self.path, self.hook, self.fired = method, re.compile(path), hook, False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.fired and request.method == self.method and self.path.search(request.url.path):
            self.fired = True
            self.hook()
        return super().handle_request(request)


def test_the_lease_outlives_a_step_longer_than_the_lease(env, rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [one_invoice("LONGSTEP-1")])
    job_id = invoice_job_id(doc["invoiceId"])
    tries: list[bool] = []

    def slow_bc() -> None:  # the create waits 2.5 s (e.g. in BC's queue) with a 1-second lease
        for _ in range(5):
            time.sleep(0.5)
            tries.append(rt.jobs.claim(KIND, job_id, "another-worker", 1.0, allow_finished=True).won)

    slow = new_runtime(env, "slow-worker", transport=HookedTransport("POST", CREATE, slow_bc))
    try:
        assert transfer_invoice(slow, InvoiceTransferMessage(invoice_id=doc["invoiceId"]), lease_seconds=1) == "posted"
    finally:
        slow.close()
    assert tries == [False] * 5  # the heartbeat kept it: nobody took over mid-step
    pump(Worker(rt), until=settled(rt, [doc["invoiceId"]]))
    assert_posted_once(basware_sandbox, bc_sandbox, doc)


def test_a_worker_that_lost_its_lease_neither_posts_nor_deletes_the_draft(env, rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [one_invoice("LOSTLEASE-1")])
    job_id = invoice_job_id(doc["invoiceId"])

    def taken_over() -> None:  # while the create is on its way, another owner takes the job
        from datetime import datetime, timedelta, timezone
        rt.jobs.force(KIND, job_id, lease_owner="the-new-owner",
                      lease_until=datetime.now(timezone.utc) + timedelta(seconds=2))

    loser = new_runtime(env, "losing-worker", transport=HookedTransport("POST", CREATE, taken_over))
    try:
        with pytest.raises(JobBusy):
            transfer_invoice(loser, InvoiceTransferMessage(invoice_id=doc["invoiceId"]), lease_seconds=5)
    finally:
        loser.close()
    (draft,) = bc_documents(bc_sandbox, "LOSTLEASE-1")
    assert draft.status == "Draft"  # created, then left alone: not posted, not deleted
    assert not bc_sandbox.calls.find("DELETE") and not bc_sandbox.calls.find("POST", POST)
    time.sleep(2.1)  # the new owner's lease runs out (it died too); the queue delivers the message again
    run(rt, doc)
    posted = assert_posted_once(basware_sandbox, bc_sandbox, doc)
    assert posted.id == draft.id  # the draft was found by its marker and kept
    assert ("find_document", "reuse") in steps(rt, doc["invoiceId"])
