"""No secret reaches a log line, an audit row, a job row or an operator's answer.

A realistic workload runs against real Azurite and both sandboxes while every log record of every
logger (root at DEBUG, the Azure SDK, httpx and httpcore included) is captured. Then the captured
text, every table row and the admin/health answers are scanned for the configured secret values
(Basware client secret, webhook secret, BC client secret, BC clientState, a wrong secret someone
configured), the Basic credential built from one, and every bearer token the systems issued.
"""
from __future__ import annotations

import base64
import io
import json
import logging

import pytest

from sandbox import seed
from sandbox.basware import sign
from shared.ops.admin import list_records, replay_record, show_record
from shared.core.errors import AuthError, ConfigError
from shared.ops.health import check_health
from shared.store.jobs import job_id
from shared.clients.http import RetryConfig
from shared.core.runtime import build_runtime
from shared.core.settings import load_settings
from shared.store.storage import AUDIT, INVOICE_TRANSFERS, JOBS, SYNCSTATE
from tests.integration.test_admin import drain, only, poison, unknown_vendor_invoice

WRONG_SECRET = "wrong-bc-secret-someone-pasted"
LOUD = ("azure", "httpx", "httpcore", "urllib3", "ml_connector")


@pytest.fixture
def captured():
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    saved = (root.level, {name: logging.getLogger(name).level for name in LOUD})
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in LOUD:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(saved[0])
    for name, level in saved[1].items():
        logging.getLogger(name).setLevel(level)


def record_tokens(rt, issued: list[str]) -> None:
    """Remember every bearer token the connector is handed (the providers are the real ones)."""
    for provider in (rt.basware.tokens, rt.bc.tokens):
        fetch = provider.token

        def token(fetch=fetch) -> str:
            value = fetch()
            if value not in issued:
                issued.append(value)
            return value

        provider.token = token


def webhook(rt, invoice_id: str) -> int:
    from shared.flows.invoices.intake import handle_webhook

    body = json.dumps({"taskId": f"t-{invoice_id}", "taskType": "AccountingDocuments",
                       "taskSubType": "WaitingForTransfer", "documentId": invoice_id}).encode()
    status, _ = handle_webhook(body, {"X-BWAPI-Signature-256": sign(body, seed.WEBHOOK_SECRET, "hex")},
                               rt.settings.basware_webhook_secret, lambda m: rt.storage.enqueue(INVOICE_TRANSFERS, m))
    return status


def bc_notification(rt, client_state: str) -> None:
    from shared.flows.payments.notifications import handle_notification

    body = json.dumps({"value": [{
        "subscriptionId": "sub-1", "clientState": client_state, "changeType": "updated", "lastModifiedDateTime":
        "2026-01-01T00:00:00Z", "resource": f"api/v2.0/companies({seed.COMPANY_ID})/purchaseInvoices"
                                            f"(0b0b0b0b-0000-4000-8000-000000000001)"}]}).encode()
    handle_notification(lambda: rt, {}, body)


def table_text(rt) -> str:
    rows = [dict(e) for name in (AUDIT, JOBS, SYNCSTATE) for e in rt.storage.table(name).list_entities()]
    return json.dumps(rows, default=str)


def test_no_secret_or_token_appears_in_logs_audit_rows_or_answers(env, basware_sandbox, bc_sandbox, captured):
    rt = build_runtime(load_settings(env), retry=RetryConfig(max_attempts=3, backoff_base=0.02, backoff_max=0.1))
    wrong = build_runtime(load_settings({**env, "BC_CLIENT_SECRET": WRONG_SECRET}))
    issued: list[str] = []
    record_tokens(rt, issued)
    answers: list[str] = []
    log = logging.getLogger("ml_connector.test")
    try:
        # tokens for both systems
        rt.basware.tokens.token()
        rt.bc.tokens.token()
        # a call that keeps failing with 401 (one refresh, then AuthError), logged with its traceback
        bc_sandbox.faults.add(r"/companies$", count=2, status=401)
        with pytest.raises(AuthError):
            rt.bc.companies()
        try:
            rt.bc.companies()
        except Exception:  # noqa: BLE001 - the fault is used up: this one succeeds
            log.exception("event=test.unexpected")
        basware_sandbox.revoke_tokens()  # Basware answers 401 to the cached token: refresh and carry on
        # credentials refused at the token endpoint, logged as an error with its traceback
        try:
            wrong.bc.companies()
        except ConfigError:
            logging.getLogger("ml_connector.test").exception("event=token.refused")
        # the flows: master data, webhooks, invoices posted, refused, dead-lettered and replayed, a BC notification
        try:
            from shared.flows.masterdata.sync import sync_all
        except ImportError:
            sync_all = None
        if sync_all is not None:
            answers.append(sync_all(rt).model_dump_json())
        good, later = seed.approved_invoices(2)
        broken = unknown_vendor_invoice()
        only(basware_sandbox, [good, broken, later])
        for doc in (good, broken):
            assert webhook(rt, doc["invoiceId"]) == 200
        drain(rt)
        dead = poison(rt, later["invoiceId"])
        answers.append(json.dumps(replay_record(rt, "invoice", dead.id).as_dict(), default=str))
        drain(rt)
        bc_notification(rt, seed.BC_CLIENT_STATE)
        bc_notification(rt, "not-the-client-state")
        # what operators read
        answers.append(json.dumps(check_health(rt)))
        answers.append(json.dumps(check_health(wrong)))
        answers.append(json.dumps(list_records(rt.jobs)))
        for doc in (good, broken, later):
            answers.append(json.dumps(show_record(rt.jobs, rt.audit, "invoice", job_id("invoice", doc["invoiceId"]))))
        tables = table_text(rt)
    finally:
        rt.close()
        wrong.close()

    logs = captured.getvalue()
    # the capture really saw the noisy loggers and the flows
    assert "httpcore" in logs and " azure." in logs and "event=http.call" in logs
    assert "event=token.refused" in logs and "Traceback" in logs
    assert '"step": "post"' in tables and '"step": "replay"' in tables and '"outcome": "rejected"' in tables
    assert len(issued) >= 3, "expected a token per system plus refreshed ones"
    assert basware_sandbox.tokens_issued >= 2  # the revoked token was replaced

    basic = base64.b64encode(f"{seed.BASWARE_CLIENT_ID}:{seed.BASWARE_CLIENT_SECRET}".encode()).decode()
    forbidden = {"Basware client secret": seed.BASWARE_CLIENT_SECRET, "webhook secret": seed.WEBHOOK_SECRET,
                 "BC client secret": seed.BC_CLIENT_SECRET, "BC clientState": seed.BC_CLIENT_STATE,
                 "a wrong BC secret": WRONG_SECRET, "Basware Basic credentials": basic}
    forbidden.update({f"bearer token #{n}": token for n, token in enumerate(issued, 1)})
    for where, text in (("log output", logs), ("tables", tables), ("operator answers", "\n".join(answers))):
        leaks = [name for name, value in forbidden.items() if value in text]
        assert not leaks, f"{where} contain: {', '.join(leaks)}"
