"""Tables and queues on real Azurite: job claims under concurrency, append-only audit, queue encoding."""
from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.queue import QueueClient

from shared.core.secrets import Scrubber
from shared.store.audit import AuditLog
from shared.store.jobs import DONE, JobConflict, JobStore, job_id
from shared.models.messages import InvoiceTransferMessage
from shared.store.storage import Storage


@pytest.fixture(scope="module")
def storage(storage_connection_string):
    return Storage(storage_connection_string)


def test_job_ids_are_stable_and_distinct_per_flow():
    assert job_id("invoice", "abc") == job_id("invoice", "abc")
    assert job_id("invoice", "abc") != job_id("payment", "abc")
    assert job_id("invoice", "abc") != job_id("invoice", "abd")
    uuid.UUID(job_id("invoice", "abc"))  # safe as a Table RowKey


def test_exactly_one_of_many_concurrent_claimers_wins(storage):
    jobs = JobStore(storage)
    jid = job_id("invoice", uuid.uuid4().hex)
    results, barrier = [], threading.Barrier(12)

    def claimer(n):
        barrier.wait()
        results.append(jobs.claim("invoice", jid, worker=f"worker-{n}", lease_seconds=60))

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [c for c in results if c.won]
    assert len(winners) == 1
    assert {c.reason for c in results if not c.won} == {"busy"}
    assert jobs.get("invoice", jid).lease_owner == winners[0].job.lease_owner


def test_two_messages_in_one_host_exclude_each_other_like_two_hosts(storage):
    jobs = JobStore(storage)
    jid = job_id("payment", uuid.uuid4().hex)
    first = jobs.claim("payment", jid, worker="host-1", lease_seconds=60)
    second = jobs.claim("payment", jid, worker="host-1", lease_seconds=60)  # same process, another invocation
    assert first.won and (second.won, second.reason) == (False, "busy")
    assert first.job.lease_owner.startswith("host-1/")


def test_an_expired_lease_can_be_taken_over_and_a_finished_job_is_not_claimed(storage):
    now = [datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)]
    jobs = JobStore(storage, clock=lambda: now[0])
    jid = job_id("invoice", uuid.uuid4().hex)
    first = jobs.claim("invoice", jid, worker="a", lease_seconds=30)
    assert first.won and first.reason == "new"
    assert jobs.claim("invoice", jid, worker="b", lease_seconds=30).reason == "busy"
    now[0] += timedelta(seconds=31)  # worker "a" crashed and its lease ran out
    second = jobs.claim("invoice", jid, worker="b", lease_seconds=30)
    assert second.won and second.reason == "resumed" and second.job.attempts == 2
    jobs.release(second.job, state=DONE)
    again = jobs.claim("invoice", jid, worker="c")
    assert not again.won and again.reason == "finished"


def test_updates_are_etag_conditional(storage):
    jobs = JobStore(storage)
    jid = job_id("invoice", uuid.uuid4().hex)
    job = jobs.claim("invoice", jid, worker="a").job
    fresh = jobs.update(job, state="draft_created", bc_id="123")
    with pytest.raises(JobConflict):
        jobs.update(job, state="posted")  # stale copy: someone else wrote meanwhile
    assert jobs.get("invoice", jid).get("bc_id") == "123"
    assert jobs.update(fresh, state="posted").state == "posted"


def test_jobs_are_listed_by_flow_and_state(storage):
    jobs = JobStore(storage)
    kind = "test" + uuid.uuid4().hex[:8]
    for n, state in enumerate(["failed", "done", "failed"]):
        jobs.create(kind, f"job-{n}", state)
    assert sorted(j.id for j in jobs.list(kind, "failed")) == ["job-0", "job-2"]
    assert len(jobs.list(kind)) == 3


def test_audit_rows_append_in_order_and_scrub_secrets(storage):
    audit = AuditLog(storage, Scrubber(["s3cr3t-value"]))
    jid = job_id("invoice", uuid.uuid4().hex)
    audit.record(jid, "read", "ok", "read document", http_status=200, basware_id="B1")
    audit.record(jid, "post", "error", "BC said: token s3cr3t-value; Authorization: Bearer eyJhbGciOi.abc.def",
                 http_status=400, correlation_id="corr-1")
    audit.record(jid, "respond", "ok", "sent client_secret=abc123&x=1")
    trail = audit.trail(jid)
    assert [r["step"] for r in trail] == ["read", "post", "respond"]
    assert trail[1]["http_status"] == 400 and trail[1]["correlation_id"] == "corr-1"
    text = json.dumps(trail, default=str)
    assert "s3cr3t-value" not in text and "eyJhbGciOi" not in text and "abc123" not in text


def test_queue_messages_are_base64_json_like_the_functions_trigger_expects(storage, storage_connection_string):
    name = "q" + uuid.uuid4().hex[:10]
    storage.enqueue(name, InvoiceTransferMessage(invoice_id="inv-1", source="webhook"))
    raw = QueueClient.from_connection_string(storage_connection_string, name).receive_message()
    body = json.loads(base64.b64decode(raw.content))
    assert body["invoice_id"] == "inv-1" and body["source"] == "webhook"
