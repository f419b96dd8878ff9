"""Triggers of the invoice flow: parse the input, call the plain function, shape the response."""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import azure.functions as func
from pydantic import ValidationError

from shared.callbacks import handle_callback
from shared.deadletter import dead_letter
from shared.invoice_flow import poll_invoices, transfer_invoice
from shared.models.messages import CallbackMessage, InvoiceTransferMessage
from shared.runtime import runtime
from shared.settings import timer_schedule
from shared.storage import BASWARE_CALLBACKS, INVOICE_TRANSFERS, POISON_SUFFIX
from shared.telemetry import run_context, trigger_context
from shared.webhook import handle_webhook

bp = func.Blueprint()
log = logging.getLogger("ml_connector.invoices")
CONNECTION = "AzureWebJobsStorage"
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"
# The webhook answers fast or not at all: no SDK retries (their backoff is 15 s+), Basware redelivers.
WEBHOOK_ENQUEUE_OPTIONS = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 5}


@functools.cache
def max_dequeue_count() -> int:
    """host.json's extensions.queues.maxDequeueCount (the runtime's default, 5, if unset)."""
    try:
        return int(json.loads(HOST_JSON.read_text())["extensions"]["queues"]["maxDequeueCount"])
    except (OSError, ValueError, KeyError, TypeError):
        return 5


def _dequeue_count(msg: func.QueueMessage) -> int:
    return int(getattr(msg, "dequeue_count", None) or 1)


@bp.route(route="basware/webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def basware_webhook(req: func.HttpRequest) -> func.HttpResponse:
    rt = runtime()
    with run_context("basware_webhook"):
        status, body = handle_webhook(
            req.get_body() or b"", req.headers, rt.settings.basware_webhook_secret,
            lambda message: rt.storage.enqueue(INVOICE_TRANSFERS, message, **WEBHOOK_ENQUEUE_OPTIONS))
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("POLL_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def invoice_poll(timer: func.TimerRequest) -> None:
    with run_context("invoice_poll"):
        poll_invoices(runtime())


@bp.queue_trigger(arg_name="msg", queue_name=INVOICE_TRANSFERS, connection=CONNECTION)
def invoice_transfer(msg: func.QueueMessage) -> None:
    rt = runtime()
    with trigger_context(msg, INVOICE_TRANSFERS):
        try:
            message = InvoiceTransferMessage.model_validate_json(msg.get_body())
        except ValidationError as exc:  # can never succeed: dead-letter at once instead of five retries
            dead_letter(rt, INVOICE_TRANSFERS, msg.get_body(), f"malformed message: {exc.errors()[0]['msg']}")
            return
        transfer_invoice(rt, message, _dequeue_count(msg), max_dequeue_count())


@bp.queue_trigger(arg_name="msg", queue_name=BASWARE_CALLBACKS, connection=CONNECTION)
def basware_callback(msg: func.QueueMessage) -> None:
    rt = runtime()
    with trigger_context(msg, BASWARE_CALLBACKS):
        try:
            message = CallbackMessage.model_validate_json(msg.get_body())
        except ValidationError as exc:
            dead_letter(rt, BASWARE_CALLBACKS, msg.get_body(), f"malformed message: {exc.errors()[0]['msg']}")
            return
        handle_callback(rt, message, _dequeue_count(msg), max_dequeue_count())


@bp.queue_trigger(arg_name="msg", queue_name=INVOICE_TRANSFERS + POISON_SUFFIX, connection=CONNECTION)
def invoice_transfer_poison(msg: func.QueueMessage) -> None:
    with trigger_context(msg, INVOICE_TRANSFERS):
        dead_letter(runtime(), INVOICE_TRANSFERS, msg.get_body(),
                    f"retries exhausted after {max_dequeue_count()} deliveries")


@bp.queue_trigger(arg_name="msg", queue_name=BASWARE_CALLBACKS + POISON_SUFFIX, connection=CONNECTION)
def basware_callback_poison(msg: func.QueueMessage) -> None:
    with trigger_context(msg, BASWARE_CALLBACKS):
        dead_letter(runtime(), BASWARE_CALLBACKS, msg.get_body(),
                    f"retries exhausted after {max_dequeue_count()} deliveries")
