"""End to end: the real function_app under the local Functions host (`python -m devhost`), signed
webhooks over HTTP from the Basware sandbox, results read back from the sandboxes."""
from __future__ import annotations

import json
import socket
import time
from decimal import Decimal

import httpx

from sandbox import seed
from sandbox.basware import sign
from scripts.azurite import connection_string
from shared.flows.invoices.transfer import KIND, invoice_job_id
from shared.store.jobs import JobStore
from shared.store.storage import Storage

QUIET = {name: "0 0 0 1 1 *" for name in ("POLL_SCHEDULE", "MASTERDATA_SCHEDULE", "PAYMENT_SCHEDULE",
                                          "PO_SYNC_SCHEDULE", "SUBSCRIPTION_SCHEDULE", "RETENTION_SCHEDULE")}


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def only(basware, docs: list[dict]) -> list[dict]:
    basware.remove_documents()
    return basware.add_documents(docs)


def transferred(basware, docs) -> bool:
    return all(basware.document_status(d["invoiceId"]) in ("Transferred", "TransferFailed") for d in docs)


def assert_posted_once(basware, bc, doc: dict):
    found = [d for d in bc.documents.values() if d.vendor_document_number == doc["invoiceNumber"].upper()]
    assert [d.status for d in found] == ["Open"], [(d.number, d.status) for d in found]
    responses = basware.document(doc["invoiceId"])["transferResponses"]
    assert [(r["success"], r.get("voucherNumber1")) for r in responses] == [(True, found[0].number)]
    return found[0]


def webhook_url(app) -> str:
    return f"{app.base_url}/api/basware/webhook"


def test_twenty_signed_webhooks_become_twenty_posted_invoices(env, app_process, basware_sandbox, bc_sandbox):
    docs = only(basware_sandbox, [d for d in seed.approved_invoices(24) if d["grossSum"] > 0][:20])
    app = app_process({**env, **QUIET}, "--no-timers")
    for i, doc in enumerate(docs):
        (delivery,) = basware_sandbox.notify(doc["invoiceId"], url=webhook_url(app),
                                             encoding=("hex", "base64", "sha256=")[i % 3])
        assert delivery["status"] == 200, delivery
    wait_for(lambda: transferred(basware_sandbox, docs), 60, "20 transfer responses")
    for doc in docs:
        posted = assert_posted_once(basware_sandbox, bc_sandbox, doc)
        assert posted["vendorNumber"] == doc["supplierCode"]
        lines = sorted(posted.lines, key=lambda ln: ln.sequence)
        rows = sorted(doc["codingRows"], key=lambda r: r["rowIndex"])
        assert [ln.data["lineObjectNumber"] for ln in lines] == [r["accountCode"] for r in rows]
        assert [Decimal(str(ln.data["unitCost"])) for ln in lines] == [Decimal(str(r["netTotal"])) for r in rows]
        assert [ln.dims["DEPARTMENT"].value_code for ln in lines] == [r["costCenterCode"] for r in rows]
    print("BC requests per invoice (documents):",
          len([c for c in bc_sandbox.calls.since(0) if "/purchase" in c.path]) / 20,
          "Basware API calls per invoice:",
          len([c for c in basware_sandbox.calls.since(0) if c.path.startswith("/v1/accountingDocuments")]) / 20)


def test_duplicates_from_webhooks_poll_and_two_hosts_make_one_invoice(env, app_process, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, seed.approved_invoices(1))
    first = app_process({**env, **QUIET})
    second = app_process({**env, **QUIET})
    deliveries = basware_sandbox.notify(doc["invoiceId"], url=webhook_url(first), copies=3, concurrent=True)
    deliveries += basware_sandbox.notify(doc["invoiceId"], url=webhook_url(second), copies=2, concurrent=True)
    assert [d["status"] for d in deliveries] == [200] * 5
    assert httpx.post(f"{second.base_url}/admin/functions/invoice_poll").status_code == 202
    wait_for(lambda: transferred(basware_sandbox, [doc]), 30, "the transfer response")
    time.sleep(2)  # let the remaining copies run against the finished job
    assert_posted_once(basware_sandbox, bc_sandbox, doc)
    assert len(bc_sandbox.documents) == 1


def test_a_missed_webhook_is_transferred_by_the_poll_timer(env, app_process, basware_sandbox, bc_sandbox):
    docs = only(basware_sandbox, seed.approved_invoices(2))
    app_process({**env, **QUIET, "POLL_SCHEDULE": "*/2 * * * * *"})  # no webhook is ever sent
    wait_for(lambda: transferred(basware_sandbox, docs), 30, "the poll to transfer both")
    for doc in docs:
        assert_posted_once(basware_sandbox, bc_sandbox, doc)


def test_a_killed_host_after_the_draft_and_after_posting_then_redelivery_posts_each_once(
        env, app_process, basware_sandbox, bc_sandbox, fresh_azurite):
    drafted, posted = only(basware_sandbox, seed.approved_invoices(2))
    # a post that was in flight when the host died may still be committed by BC: the new host reads the
    # draft, then waits out the late-commit window (BC: 16 minutes; shortened here) before posting again
    crash_env = {**env, **QUIET, "DEVHOST_INFLIGHT_VISIBILITY_SECONDS": "3", "BC_LATE_COMMIT_WINDOW_SECONDS": "5"}
    jobs = JobStore(Storage(fresh_azurite.connection_string))
    app = app_process(crash_env, "--no-timers")

    # 1) `drafted` hangs in its post: the draft exists and is recorded, nothing posted
    bc_sandbox.faults.add(r"/Microsoft\.NAV\.post$", count=1, kind="timeout", delay=15, method="POST")
    basware_sandbox.notify(drafted["invoiceId"], url=webhook_url(app))
    wait_for(lambda: (jobs.get(KIND, invoice_job_id(drafted["invoiceId"])) or None) and
             jobs.get(KIND, invoice_job_id(drafted["invoiceId"])).state == "draft_created", 20, "the draft")
    # 2) `posted` is posted, then hangs reading its posted number back
    bc_sandbox.faults.add(r"/purchaseInvoices\([0-9a-f-]+\)$", count=1, kind="timeout", delay=15, method="GET")
    basware_sandbox.notify(posted["invoiceId"], url=webhook_url(app))
    wait_for(lambda: any(d.status == "Open" for d in bc_sandbox.documents.values()), 20, "the posting")
    time.sleep(0.3)
    app.kill()  # SIGKILL: nothing finishes, both messages are still on the queue

    states = {d.status for d in bc_sandbox.documents.values()}
    assert states == {"Draft", "Open"}
    assert basware_sandbox.document(drafted["invoiceId"])["transferResponses"] == []
    assert basware_sandbox.document(posted["invoiceId"])["transferResponses"] == []

    app_process(crash_env, "--no-timers")  # a new host; the dead one's messages come back
    wait_for(lambda: transferred(basware_sandbox, [drafted, posted]), 60, "both transfer responses")
    assert_posted_once(basware_sandbox, bc_sandbox, drafted)
    assert_posted_once(basware_sandbox, bc_sandbox, posted)
    assert len(bc_sandbox.documents) == 2


# -- the webhook route over HTTP ---------------------------------------------------------------------------
def test_the_webhook_route_over_http(env, app_process, basware_sandbox, rt):
    only(basware_sandbox, [])
    app = app_process({**env, **QUIET}, "--no-timers", "--no-queues")
    url = webhook_url(app)
    body = json.dumps({"taskId": "t1", "taskStatus": "New", "taskType": "AccountingDocuments",
                       "taskSubType": "WaitingForTransfer", "documentId": "inv-http"}).encode()
    with httpx.Client(timeout=10) as client:
        def post(content: bytes, signature: str | None):
            headers = {"Content-Type": "application/json"}
            if signature is not None:
                headers["X-BWAPI-Signature-256"] = signature
            return client.post(url, content=content, headers=headers)

        assert post(body, None).status_code == 401
        assert post(body, sign(b"{}", seed.WEBHOOK_SECRET)).status_code == 401
        assert post(b"x" * (1024 * 1024 + 1), None).status_code == 413
        assert post(b"{oops", sign(b"{oops", seed.WEBHOOK_SECRET)).status_code == 400
        for encoding in ("hex", "base64", "sha256="):
            assert post(body, sign(body, seed.WEBHOOK_SECRET, encoding)).status_code == 200
        assert client.get(url).status_code in (404, 405)
    queued = list(rt.storage.queue("invoice-transfers").peek_messages(max_messages=32))
    assert [json.loads(m.content)["invoice_id"] for m in queued] == ["inv-http"] * 3  # bad input enqueued nothing

    # Basware validates a new subscription with a signed ConnectionTest that must get 200
    created = rt.basware.create_subscription(url, seed.WEBHOOK_SECRET)
    assert created and created[0]["notificationWebhookURL"] == url
    assert basware_sandbox.deliveries[-1]["taskType"] == "ConnectionTest"
    assert basware_sandbox.deliveries[-1]["status"] == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_webhook_answers_503_when_storage_is_down(env, app_process):
    port = _closed_port()
    down = connection_string(port, port, port)  # nothing listens there
    app = app_process({**env, **QUIET, "AzureWebJobsStorage": down}, "--no-timers", "--no-queues")
    body = b'{"taskId":"t","taskStatus":"New","taskType":"AccountingDocuments","documentId":"inv-1"}'
    started = time.monotonic()
    response = httpx.post(webhook_url(app), content=body,
                          headers={"X-BWAPI-Signature-256": sign(body, seed.WEBHOOK_SECRET)}, timeout=30)
    assert response.status_code == 503
    assert time.monotonic() - started < 5
    bad = httpx.post(webhook_url(app), content=body, headers={"X-BWAPI-Signature-256": "0" * 64}, timeout=30)
    assert bad.status_code == 401  # bad input is still 4xx, storage or not
