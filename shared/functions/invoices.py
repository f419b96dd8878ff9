"""Triggers of the invoice flow (Basware -> BC): the signed webhook, the poll timer, the transfer worker.

The transfer response goes out through shared/functions/callbacks.py."""
from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.core.runtime import runtime
from shared.core.telemetry import run_context
from shared.flows.invoices.intake import handle_webhook
from shared.flows.invoices.transfer import poll_invoices, transfer_invoice
from shared.functions.queue_workers import dequeue_count, max_dequeue_count, register_queue_worker
from shared.models.messages import InvoiceTransferMessage
from shared.store.storage import INVOICE_TRANSFERS
from shared.core.settings import timer_schedule

bp = func.Blueprint()
log = logging.getLogger("ml_connector.invoices")
# The webhook answers fast or not at all: no SDK retries (their backoff is 15 s+), Basware redelivers.
WEBHOOK_ENQUEUE_OPTIONS = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 5}


@bp.route(route="basware/webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def basware_webhook(req: func.HttpRequest) -> func.HttpResponse:
    rt = runtime()
    with run_context("basware_webhook"):
        status, body = handle_webhook(
            req.get_body() or b"", req.headers, rt.settings.basware_webhook_secret,
            lambda message: rt.storage.enqueue(INVOICE_TRANSFERS, message, **WEBHOOK_ENQUEUE_OPTIONS))
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("POLL_SCHEDULE"), run_on_startup=False, use_monitor=True)
def invoice_poll(timer: func.TimerRequest) -> None:
    from shared.store.runs import recorded

    with run_context("invoice_poll"):
        rt = runtime()
        recorded(rt.storage, "invoice_poll", lambda: poll_invoices(rt))  # the console shows the last run


invoice_transfer, invoice_transfer_poison = register_queue_worker(
    bp, name="invoice_transfer", queue=INVOICE_TRANSFERS, read=InvoiceTransferMessage,
    handle=lambda rt, message, msg: transfer_invoice(rt, message, dequeue_count(msg), max_dequeue_count()))
