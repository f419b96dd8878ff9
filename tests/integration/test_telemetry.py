"""Telemetry: `event=... key=value` lines with the job's ids on every line, secrets masked on every
record, counters that follow what the flows do, and export to Application Insights when configured."""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sandbox import seed
from shared.core import metrics
from shared.core import telemetry
from shared.store.jobs import job_id
from shared.models.messages import InvoiceTransferMessage
from shared.core.telemetry import kv, log_context, log_event
from shared.functions.trigger_context import message_context
from tests.integration.test_admin import drain, only, poison, unknown_vendor_invoice

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lines():
    """Every record any logger emits, formatted as the host would, as text lines."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    telemetry.install_log_hook()
    yield lambda: buffer.getvalue().splitlines()
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_every_line_logged_while_a_job_runs_carries_its_ids(rt, basware_sandbox, bc_sandbox, lines):
    (doc,) = only(basware_sandbox, seed.approved_invoices(1))
    jid = job_id("invoice", doc["invoiceId"])
    rt.storage.enqueue("invoice-transfers", InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
    with log_context(job_id=jid, invoice_id=doc["invoiceId"]):
        drain(rt)
        log_event(logging.getLogger("ml_connector.test"), "invoice.checked", bc_number="PI 1")
    logging.getLogger("ml_connector.test").info("event=after.the.job")

    ours = [line for line in lines() if " ml_connector." in line]
    during, after = ours[:-1], ours[-1]
    assert any("event=http.call" in line for line in during)  # the HTTP base's lines are among them
    assert all(f"job_id={jid}" in line and f"invoice_id={doc['invoiceId']}" in line for line in during), during
    assert during[-1].endswith(f'event=invoice.checked bc_number="PI 1" job_id={jid} invoice_id={doc["invoiceId"]}')
    assert "job_id" not in after


def test_contexts_nest_and_stay_with_their_own_thread(lines):
    log = logging.getLogger("ml_connector.test")
    seen: dict[str, str] = {}

    def other_job() -> None:
        with log_context(job_id="job-B"):
            log.info("event=b.step")
            seen["b"] = telemetry.current_context()["job_id"]

    with log_context(job_id="job-A", invoice_id="inv-1"):
        with log_context(bc_id="bc-7"):
            thread = threading.Thread(target=other_job)
            thread.start()
            thread.join()
            log.info("event=a.step job_id=job-A")  # already named: not repeated
        log.info("event=a.done")
    text = lines()
    assert "INFO ml_connector.test event=b.step job_id=job-B" in text
    assert "INFO ml_connector.test event=a.step job_id=job-A invoice_id=inv-1 bc_id=bc-7" in text
    assert "INFO ml_connector.test event=a.done job_id=job-A invoice_id=inv-1" in text
    assert seen == {"b": "job-B"}
    assert kv(a=1, b="two words", c=None, d='say "hi"') == 'a=1 b="two words" d="say \\"hi\\""'


def test_a_queue_message_binds_the_ids_of_the_job_it_works(lines):
    from shared.models.messages import PaymentCheckMessage

    log = logging.getLogger("ml_connector.test")
    body = InvoiceTransferMessage(invoice_id="inv-42", source="replay").model_dump_json().encode()
    with message_context("invoice-transfers", body, dequeue_count=2):
        log.info("event=working")
    check = PaymentCheckMessage(company_id=seed.COMPANY_ID, document_id="bc-doc-1").model_dump_json()
    with message_context("payment-checks", check):
        log.info("event=checking")
    text = lines()
    assert (f"INFO ml_connector.test event=working job_id={job_id('invoice', 'inv-42')} kind=invoice "
            "queue=invoice-transfers invoice_id=inv-42 source=replay dequeue_count=2") in text
    assert (f"INFO ml_connector.test event=checking job_id={job_id('payment', 'bc-doc-1')} kind=payment "
            f"queue=payment-checks bc_id=bc-doc-1 bc_company_id={seed.COMPANY_ID} source=poll") in text


def test_secret_values_are_masked_wherever_they_appear_in_a_record(lines):
    telemetry.protect(["s3cret-for-telemetry-test"])
    log = logging.getLogger("azure.some.sdk")  # not only our own loggers
    log.warning("header was %s", "Authorization: Bearer eyJhbGciOi.abc.def")
    log.warning("configured value %s leaked", "s3cret-for-telemetry-test")
    log.warning({"client_secret": "s3cret-for-telemetry-test"})
    try:
        raise RuntimeError("token request failed: client_secret=s3cret-for-telemetry-test")
    except RuntimeError:
        logging.getLogger("ml_connector.test").exception("event=call.failed")
    text = "\n".join(lines())
    assert "s3cret-for-telemetry-test" not in text and "eyJhbGciOi" not in text
    assert "Bearer ***" in text and "configured value *** leaked" in text
    assert "RuntimeError: token request failed: client_secret=***" in text  # the traceback, cleaned


def test_counters_follow_posted_failed_dead_lettered_retries_and_429s(rt, basware_sandbox, bc_sandbox):
    before = metrics.REGISTRY.snapshot()
    basware_429 = metrics.REGISTRY.value(metrics.THROTTLED, system="basware")
    good = seed.approved_invoices(1)[0]
    broken = unknown_vendor_invoice()
    only(basware_sandbox, [good, broken])
    basware_sandbox.faults.add(r"^/v1/accountingDocuments/[^/]+$", count=1, status=429, method="GET", retry_after=0.05)
    for doc in (good, broken):
        rt.storage.enqueue("invoice-transfers", InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
    drain(rt)
    poison(rt, "inv-never-worked")

    after = metrics.REGISTRY.snapshot()
    delta = {name: after[name] - before[name] for name in after}
    assert delta[metrics.POSTED] == 1
    assert delta[metrics.FAILED] == 1
    assert delta[metrics.DEAD_LETTERED] == 1
    assert delta[metrics.THROTTLED] >= 1 and metrics.REGISTRY.value(metrics.THROTTLED, system="basware") > basware_429
    assert delta[metrics.RETRIES] >= 1


class _Ingestion(BaseHTTPRequestHandler):
    """Application Insights' ingestion endpoint, as far as the exporter can tell."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        _Ingestion.received.extend(json.loads(body))
        answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        return


EXPORTING_APP = r"""
import logging, sys
from shared.core import metrics                  # counters exist before the exporter is configured
from shared.core.telemetry import configure_logging, log_context, log_event, protect
configure_logging(connection_string=sys.argv[1])
protect(["top-secret-value"])
log = logging.getLogger("ml_connector.invoices")
with log_context(job_id="job-123", invoice_id="inv-9"):
    log_event(log, "invoice.posted", bc_number="PI-1")
    log.warning("event=oops value=%s", "top-secret-value")
metrics.REGISTRY.add(metrics.POSTED, kind="invoice")
from opentelemetry._logs import get_logger_provider
from opentelemetry.metrics import get_meter_provider
get_logger_provider().force_flush()
get_meter_provider().force_flush()
"""


def test_logs_and_counters_reach_application_insights_when_its_connection_string_is_set():
    import azure.monitor.opentelemetry  # noqa: F401 - in requirements.txt: its absence is a failure

    _Ingestion.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ingestion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}/"
    connection = f"InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint={endpoint}"
    try:
        run = subprocess.run([sys.executable, "-c", EXPORTING_APP, connection], cwd=ROOT, capture_output=True,
                             text=True, timeout=60,
                             env={**os.environ, "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"})
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr[-2000:]
    messages = [e["data"]["baseData"] for e in _Ingestion.received if e["data"]["baseType"] == "MessageData"]
    posted = next(m for m in messages if m["message"].startswith("event=invoice.posted"))
    assert posted["message"] == "event=invoice.posted bc_number=PI-1 job_id=job-123 invoice_id=inv-9"
    assert posted["properties"]["job_id"] == "job-123" and posted["properties"]["invoice_id"] == "inv-9"
    metric_names = {m["name"] for e in _Ingestion.received if e["data"]["baseType"] == "MetricData"
                    for m in e["data"]["baseData"]["metrics"]}
    assert "ml_connector.invoices.posted" in metric_names
    exported = json.dumps(_Ingestion.received)
    assert "top-secret-value" not in exported and "event=oops value=***" in exported


def test_the_app_under_the_local_host_logs_each_triggers_ids_on_every_line(env, app_process, basware_sandbox,
                                                                          bc_sandbox):
    """Not a hand-bound context: the triggers of function_app.py bind it themselves."""
    from tests.e2e.test_invoice_e2e import QUIET, wait_for, webhook_url

    (doc,) = only(basware_sandbox, seed.approved_invoices(1))
    app = app_process({**env, **QUIET}, "--no-timers")
    start = app.log.stat().st_size if app.log.exists() else 0
    (delivery,) = basware_sandbox.notify(doc["invoiceId"], url=webhook_url(app))
    assert delivery["status"] == 200
    wait_for(lambda: basware_sandbox.document_status(doc["invoiceId"]) == "Transferred", 60, "the transfer")
    jid = job_id("invoice", doc["invoiceId"])
    wait_for(lambda: "queue=basware-callbacks" in app.log.read_text()[start:], 10, "the callback's lines")

    ours = [line for line in app.log.read_text()[start:].splitlines() if " ml_connector." in line]
    webhook = [line for line in ours if "trigger=basware_webhook" in line]
    queued = [line for line in ours if "queue=invoice-transfers" in line or "queue=basware-callbacks" in line]
    assert webhook and all("run_id=" in line for line in webhook), ours
    assert any("event=http.call" in line for line in queued)  # the HTTP base's lines are among them
    assert all(f"job_id={jid}" in line and f"invoice_id={doc['invoiceId']}" in line for line in queued), queued
    unbound = [line for line in ours if line not in webhook and line not in queued and "event=devhost" not in line]
    assert not unbound, unbound
