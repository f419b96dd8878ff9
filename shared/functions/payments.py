"""Triggers of the payments flow (BC -> Basware): BC notifications, the payment-checks worker, the poll.

Thin: parse the trigger input, call the plain function in shared/, shape the answer.
"""
import logging

import azure.functions as func

from shared.flows.payments import notifications
from shared.flows.payments.respond import poll_payments
from shared.core.telemetry import run_context
from shared.functions.queue_workers import register_queue_worker
from shared.models.messages import PaymentCheckMessage
from shared.store.storage import PAYMENT_CHECKS
from shared.functions.timers import register_timer
from shared.core.runtime import Runtime

bp = func.Blueprint()
log = logging.getLogger("ml_connector.functions.payments")


def _runtime():
    from shared.core.runtime import runtime
    return runtime()


@bp.function_name("bc_notifications")
@bp.route(route="bc/notifications", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def bc_notifications(req: func.HttpRequest) -> func.HttpResponse:
    # The handshake first, before settings or storage are touched: BC allows 5 seconds.
    token = req.params.get("validationToken")
    if token is not None:
        return func.HttpResponse(token, status_code=200, mimetype="text/plain")
    with run_context("bc_notifications"):
        answer = notifications.handle_notification(_runtime, req.params, req.get_body() or b"")
    return func.HttpResponse(answer.body, status_code=answer.status, mimetype=answer.mimetype)


def _check(rt: Runtime, message, msg) -> None:
    from shared.flows.payments.respond import check_payment

    log.info("event=payments.check outcome=%s", check_payment(rt, message))


payment_checks, payment_checks_poison = register_queue_worker(
    bp, name="payment_checks", queue=PAYMENT_CHECKS, read=PaymentCheckMessage, handle=_check,
    poison_reason="retries exhausted: the payment check kept failing")


payment_poll = register_timer(bp, name="payment_poll", schedule_setting="PAYMENT_SCHEDULE", run=poll_payments)
