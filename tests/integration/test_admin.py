"""The operators' records API and CLI: list jobs by flow and state, read one with its whole audit
trail, replay failed and dead-lettered ones, safely. Real Azurite, the sandboxes over real HTTP; the
invoice flow's own functions do the work a replay asks for."""
from __future__ import annotations

import io
import json
import threading
import time

import httpx

from sandbox import seed
from shared.ops.admin import list_records, lookup_record, replay_record, show_record
from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, job_id
from shared.models.messages import CallbackMessage, InvoiceTransferMessage
from shared.store.storage import BASWARE_CALLBACKS, INVOICE_TRANSFERS, POISON_SUFFIX

from shared.flows import callbacks  # noqa: E402

from shared.store import deadletter  # noqa: E402

from shared.flows.invoices import transfer as invoice_flow  # noqa: E402
MAX_DEQUEUE = 5


# -- the host's queue loop, played by the test ---------------------------------------------------------------
def queued(rt, queue: str) -> int:
    return rt.storage.queue(queue).get_queue_properties().approximate_message_count


def drain(rt, timeout: float = 30.0, max_dequeue: int = MAX_DEQUEUE) -> None:
    """Work both invoice queues like the Functions host until they are empty (poison -> dead letter)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for queue in (INVOICE_TRANSFERS, BASWARE_CALLBACKS):
            client = rt.storage.queue(queue)
            for msg in client.receive_messages(max_messages=16, visibility_timeout=1):
                busy = True
                try:
                    if queue == INVOICE_TRANSFERS:
                        invoice_flow.transfer_invoice(rt, InvoiceTransferMessage.model_validate_json(msg.content),
                                                      msg.dequeue_count, max_dequeue)
                    else:
                        callbacks.handle_callback(rt, CallbackMessage.model_validate_json(msg.content),
                                                  msg.dequeue_count, max_dequeue)
                except Exception:  # noqa: BLE001 - redelivered after the visibility timeout, then poison
                    if msg.dequeue_count >= max_dequeue:
                        client.delete_message(msg)
                        deadletter.dead_letter(rt, queue + POISON_SUFFIX, msg.content, "retries exhausted")
                    continue
                client.delete_message(msg)
        if not busy:
            if queued(rt, INVOICE_TRANSFERS) == 0 and queued(rt, BASWARE_CALLBACKS) == 0:
                return
            time.sleep(0.2)
    raise AssertionError("the invoice queues did not drain in time")


def only(basware, docs: list[dict]) -> list[dict]:
    basware.remove_documents()
    return basware.add_documents(docs)


def transfer(rt, *docs: dict) -> None:
    for doc in docs:
        rt.storage.enqueue(INVOICE_TRANSFERS, InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
    drain(rt)


def poison(rt, invoice_id: str):
    """A message that exhausted its deliveries, handed to the dead-letter function as the runtime would."""
    body = InvoiceTransferMessage(invoice_id=invoice_id).model_dump_json()
    return deadletter.dead_letter(rt, INVOICE_TRANSFERS + POISON_SUFFIX, body, "retries exhausted after 5 deliveries")


def invoice_id_of(doc: dict) -> str:
    return job_id("invoice", doc["invoiceId"])


def unknown_vendor_invoice() -> dict:
    return next(d for d in seed.broken_invoices() if d["invoiceNumber"] == "BRK-UNKNOWN-VENDOR")


# -- list and show ----------------------------------------------------------------------------------------------
def test_operators_list_jobs_by_flow_and_state_and_read_a_whole_trail(rt, basware_sandbox, bc_sandbox):
    good, waiting = seed.approved_invoices(2)
    broken = unknown_vendor_invoice()
    only(basware_sandbox, [good, broken, waiting])
    transfer(rt, good, broken)
    poison(rt, waiting["invoiceId"])

    everything = list_records(rt.jobs, "invoice")
    assert {r["id"] for r in everything} == {invoice_id_of(d) for d in (good, broken, waiting)}
    assert list_records(rt.jobs, "payment") == []

    (failed,) = list_records(rt.jobs, "invoice", "failed")
    assert failed["id"] == invoice_id_of(broken) and failed["basware_id"] == broken["invoiceId"]
    assert "V99999" in failed["last_error"] and failed["attempts"] >= 1 and failed["updated"]
    (dead,) = list_records(rt.jobs, status="dead-lettered")  # either spelling, any flow
    assert dead["id"] == invoice_id_of(waiting) and dead["state"] == DEAD_LETTERED
    assert "retries exhausted" in dead["last_error"]
    (done,) = list_records(rt.jobs, "invoice", "done")
    bc_doc = next(d for d in bc_sandbox.documents.values() if d.vendor_document_number == good["invoiceNumber"].upper())
    assert (done["basware_id"], done["bc_id"], done["bc_number"]) == (good["invoiceId"], bc_doc.id, bc_doc.number)

    record = show_record(rt.jobs, rt.audit, "invoice", invoice_id_of(good))
    assert record["state"] == DONE and record["fields"]["queue"] == INVOICE_TRANSFERS
    steps = [(row["step"], row["outcome"]) for row in record["trail"]]
    assert steps[0] == ("read_document", "ok") and ("post", "ok") in steps and steps[-1] == ("respond", "sent")
    assert [row["time"] for row in record["trail"]] == sorted(row["time"] for row in record["trail"])
    post = next(row for row in record["trail"] if row["step"] == "post")
    assert post["http_status"] == 204 and post["bc_id"] == bc_doc.id and post["basware_id"] == good["invoiceId"]
    json.dumps(record)  # every value is plain JSON

    assert show_record(rt.jobs, rt.audit, "invoice", "no-such-id") is None

    # a failed record can be replayed too: Basware already holds its failure response, so the flow
    # reconciles and sends nothing twice
    outcome = replay_record(rt, "invoice", invoice_id_of(broken))
    assert outcome.status == "enqueued" and outcome.job["state"] == FAILED
    drain(rt)
    assert len(basware_sandbox.document(broken["invoiceId"])["transferResponses"]) == 1


# -- replay -----------------------------------------------------------------------------------------------------
def test_a_dead_lettered_invoice_is_replayed_once_however_often_replay_is_pressed(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, seed.approved_invoices(1))
    jid = poison(rt, doc["invoiceId"]).id

    first = replay_record(rt, "invoice", jid)
    assert (first.status, first.http_status) == ("enqueued", 202)
    assert first.enqueued["source"] == "replay" and first.enqueued["invoice_id"] == doc["invoiceId"]
    second = replay_record(rt, "invoice", jid)
    assert (second.status, second.http_status) == ("already_pending", 200)
    assert "pending" in second.message
    assert queued(rt, INVOICE_TRANSFERS) == 1  # one message, not two
    (message,) = rt.storage.queue(INVOICE_TRANSFERS).peek_messages()
    assert InvoiceTransferMessage.model_validate_json(message.content).source == "replay"

    drain(rt)
    assert rt.jobs.get("invoice", jid).state == DONE
    posted = [d for d in bc_sandbox.documents.values() if d.vendor_document_number == doc["invoiceNumber"].upper()]
    assert [d.status for d in posted] == ["Open"]
    assert [r["success"] for r in basware_sandbox.document(doc["invoiceId"])["transferResponses"]] == [True]

    third = replay_record(rt, "invoice", jid)
    assert (third.status, third.http_status) == ("already_done", 409) and "already done" in third.message
    assert queued(rt, INVOICE_TRANSFERS) == 0
    trail = [(r["step"], r["outcome"]) for r in rt.audit.trail(jid)]
    assert trail[:2] == [("dead_letter", "dead_lettered"), ("replay", "requested")]
    assert trail.count(("replay", "requested")) == 1 and ("post", "ok") in trail


def test_a_replay_that_a_worker_has_taken_up_may_be_requested_again(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, seed.approved_invoices(1))
    jid = poison(rt, doc["invoiceId"]).id
    bc_sandbox.faults.add(r"/companies\(", count=10_000, status=503)
    assert replay_record(rt, "invoice", jid).status == "enqueued"
    drain(rt, timeout=60, max_dequeue=2)  # BC still down: the replay runs out of retries, dead-lettered again
    job = rt.jobs.get("invoice", jid)
    assert job.state == DEAD_LETTERED and "503" in job.last_error
    bc_sandbox.faults.clear()
    assert replay_record(rt, "invoice", jid).status == "enqueued"  # not "already pending"
    drain(rt)
    assert rt.jobs.get("invoice", jid).state == DONE


def test_refused_replays_say_why_and_concurrent_replays_enqueue_one_message(rt):
    assert replay_record(rt, "invoice", "unknown").http_status == 404
    working = rt.jobs.claim("invoice", "inv-working", "worker-1", 60, queue=INVOICE_TRANSFERS,
                            message=InvoiceTransferMessage(invoice_id="x").model_dump_json()).job
    busy = replay_record(rt, "invoice", working.id)
    assert (busy.status, busy.http_status) == ("busy", 409)
    rt.jobs.release(working)
    outcome = replay_record(rt, "invoice", working.id)
    assert (outcome.status, outcome.http_status) == ("not_replayable", 409) and "received" in outcome.message
    garbage = deadletter.dead_letter(rt, INVOICE_TRANSFERS, b"\x00not json", "retries exhausted")
    unreadable = replay_record(rt, garbage.kind, garbage.id)
    assert (unreadable.status, unreadable.http_status) == ("unreadable", 422)
    assert queued(rt, INVOICE_TRANSFERS) == 0

    # six operators press replay at once on a dead-lettered record: exactly one message
    jid = poison(rt, "inv-concurrent").id
    results: list[str] = []
    barrier = threading.Barrier(6)

    def press() -> None:
        barrier.wait()
        results.append(replay_record(rt, "invoice", jid).status)

    threads = [threading.Thread(target=press) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["already_pending"] * 5 + ["enqueued"]
    assert queued(rt, INVOICE_TRANSFERS) == 1


# -- by the ids people hold --------------------------------------------------------------------------------------
def test_a_record_opens_by_every_id_an_operator_or_clerk_holds(env, rt, basware_sandbox, bc_sandbox):
    good = seed.approved_invoices(1)[0]
    twin = dict(good, invoiceId=seed.stable_uuid("admin-twin", good["invoiceId"]), transferResponses=[])
    twin.pop("voucherNumber1", None)  # the same invoice number again: BC refuses to post it twice
    broken = unknown_vendor_invoice()
    only(basware_sandbox, [good, broken])
    transfer(rt, good, broken)
    basware_sandbox.add_document(twin)
    transfer(rt, twin)
    bc_doc = next(d for d in bc_sandbox.documents.values() if d.vendor_document_number == good["invoiceNumber"].upper()
                  and d.posted)

    for ref in (invoice_id_of(good), good["invoiceId"], bc_doc.number, bc_doc.id):
        status, record = lookup_record(rt.jobs, rt.audit, "invoice", ref)
        assert status == 200 and record["id"] == invoice_id_of(good), (ref, status, record.get("error"))
        assert record["trail"] and record.get("found_by", ref) == ref
    status, record = lookup_record(rt.jobs, rt.audit, "invoice", broken["invoiceNumber"])
    assert status == 200 and record["id"] == invoice_id_of(broken)

    # an invoice number two Basware documents carry: both are listed, neither is picked
    status, answer = lookup_record(rt.jobs, rt.audit, "invoice", good["invoiceNumber"])
    assert status == 300 and {m["id"] for m in answer["matches"]} == {invoice_id_of(good), invoice_id_of(twin)}
    outcome = replay_record(rt, "invoice", good["invoiceNumber"])
    assert (outcome.status, outcome.http_status) == ("ambiguous", 300) and queued(rt, INVOICE_TRANSFERS) == 0
    # ... and the failed one replays by its Basware id, as a clerk would give it
    assert replay_record(rt, "invoice", twin["invoiceId"]).status == "enqueued"

    for ref in ("no-such-id", "../../x", "a/b", "inv#1", ""):
        assert lookup_record(rt.jobs, rt.audit, "invoice", ref)[0] == 404
    code, out = cli(env, "records", "show", "invoice", good["invoiceNumber"])
    assert code == 1 and "2 invoice records match" in out and invoice_id_of(twin) in out
    code, out = cli(env, "--json", "records", "show", "invoice", bc_doc.number)
    assert code == 0 and json.loads(out)["id"] == invoice_id_of(good)


# -- the CLI ------------------------------------------------------------------------------------------------------
def cli(env: dict, *args: str) -> tuple[int, str]:
    from shared.ops.cli import main

    out = io.StringIO()
    code = main(list(args), environ=env, out=out)
    return code, out.getvalue()


def test_the_cli_lists_shows_replays_and_syncs_directly_against_storage(env, rt, basware_sandbox, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local.settings.json yet: settings come from the environment only
    jid = poison(rt, "inv-cli").id

    code, out = cli(env, "records", "list", "--kind", "invoice", "--status", "dead-lettered")
    assert code == 0 and jid in out and "dead_lettered" in out and "1 record(s)" in out
    code, out = cli(env, "records", "list", "--kind", "invoice", "--status", "failed")
    assert (code, out.strip()) == (0, "no records")
    code, out = cli(env, "--json", "records", "show", "invoice", jid)
    assert code == 0 and json.loads(out)["trail"][0]["step"] == "dead_letter"
    code, out = cli(env, "records", "show", "invoice", jid)
    assert "audit trail (1 rows, oldest first)" in out and "dead_letter/dead_lettered" in out

    assert cli(env, "records", "replay", "invoice", jid)[1].startswith("enqueued:")
    code, out = cli(env, "records", "replay", "invoice", jid)
    assert code == 0 and out.startswith("already_pending:")
    assert cli(env, "records", "replay", "invoice", "nope")[0] == 1
    assert queued(rt, INVOICE_TRANSFERS) == 1

    # settings from local.settings.json where the environment has none
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": env}))
    code, out = cli({}, "records", "list", "--status", "dead_lettered")
    assert code == 0 and "1 record(s)" in out
    assert cli({}, "--settings", str(tmp_path / "missing.json"), "records", "list")[0] == 1

    # the master-data import, run now from the command line
    code, out = cli(env, "masterdata", "sync", "--force")
    summary = json.loads(out)
    assert code == 0 and summary["status"] == "ok" and summary["force"] is True, out[:2000]
    assert basware_sandbox.request_ids  # the import reached Basware


# -- over HTTP, through the real function_app under the local host -------------------------------------------------
def test_the_records_routes_and_the_cli_against_a_running_app(env, rt, app_process, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, seed.approved_invoices(1))
    jid = invoice_id_of(doc)
    app = app_process({**env, "DEVHOST_FUNCTION_KEY": "ops-key"}, "--no-timers")
    api = httpx.Client(base_url=f"{app.base_url}/api", headers={"x-functions-key": "ops-key"}, timeout=30)
    assert httpx.get(f"{app.base_url}/api/admin/records").status_code == 401  # function key required

    # a message the runtime gave up on lands on the poison queue; the app's poison trigger makes it a job
    rt.storage.enqueue(INVOICE_TRANSFERS + POISON_SUFFIX, InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
    deadline = time.monotonic() + 20
    listed = None
    while time.monotonic() < deadline:
        listed = api.get("/admin/records", params={"kind": "invoice", "status": "dead-lettered"})
        if listed.json()["records"]:
            break
        time.sleep(0.2)
    assert listed.status_code == 200 and [r["id"] for r in listed.json()["records"]] == [jid]
    # the dead letter writes the job row, then its audit row: the trail may trail the list by a moment
    while True:
        shown = api.get(f"/admin/records/invoice/{jid}")
        if shown.json().get("trail") or time.monotonic() > deadline + 10:
            break
        time.sleep(0.2)
    assert shown.status_code == 200 and shown.json()["trail"][0]["step"] == "dead_letter"
    # the same record under manage/, the prefix the Azure host allows (it refuses routes starting with admin)
    assert api.get(f"/manage/records/invoice/{jid}").json() == shown.json()
    assert api.get("/admin/records/invoice/nope").status_code == 404

    first = api.post(f"/admin/records/invoice/{jid}/replay")
    second = api.post(f"/admin/records/invoice/{jid}/replay")
    assert first.status_code in (200, 202), first.text
    # the running app works the queue itself: the second press finds the replay pending or already done
    assert (second.status_code, second.json()["status"]) in ((200, "already_pending"), (409, "already_done"))
    deadline = time.monotonic() + 30
    while rt.jobs.get("invoice", jid).state != DONE and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rt.jobs.get("invoice", jid).state == DONE
    done = api.post(f"/admin/records/invoice/{jid}/replay")
    assert (done.status_code, done.json()["status"]) == (409, "already_done")

    code, out = cli({}, "--url", app.base_url, "--key", "ops-key", "records", "list", "--status", "done")
    assert code == 0 and jid in out
    assert cli({}, "--url", app.base_url, "--key", "wrong", "records", "list")[0] == 1
