"""Triggers of the payments flow: BC notifications, payment checks and poll, BC subscriptions, PO sync.

Thin: parse the trigger input, call the plain function in shared/, shape the answer.
"""
import logging

import azure.functions as func

from shared import notifications
from shared.jobs import utcnow
from shared.settings import timer_schedule
from shared.storage import PAYMENT_CHECKS, POISON_SUFFIX
from shared.telemetry import run_context, trigger_context

bp = func.Blueprint()
log = logging.getLogger("ml_connector.functions.payments")
CONNECTION = "AzureWebJobsStorage"


def _runtime():
    from shared.runtime import runtime
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


@bp.function_name("payment_checks")
@bp.queue_trigger(arg_name="msg", queue_name=PAYMENT_CHECKS, connection=CONNECTION)
def payment_checks(msg: func.QueueMessage) -> None:
    from pydantic import ValidationError

    from shared.models.messages import PaymentCheckMessage
    from shared.payments import check_payment

    raw = msg.get_body().decode("utf-8", errors="replace")
    rt = _runtime()
    with trigger_context(msg, PAYMENT_CHECKS):
        try:
            message = PaymentCheckMessage.model_validate_json(raw)
        except ValidationError as exc:  # retrying cannot fix it: straight to the dead letters
            from shared.deadletter import dead_letter
            dead_letter(rt, PAYMENT_CHECKS, raw, f"unreadable payment-checks message: {exc.errors()[0]['msg']}")
            return
        outcome = check_payment(rt, message)
        log.info("event=payments.check outcome=%s", outcome)


@bp.function_name("payment_checks_poison")
@bp.queue_trigger(arg_name="msg", queue_name=PAYMENT_CHECKS + POISON_SUFFIX, connection=CONNECTION)
def payment_checks_poison(msg: func.QueueMessage) -> None:
    from shared.deadletter import dead_letter

    with trigger_context(msg, PAYMENT_CHECKS):
        dead_letter(_runtime(), PAYMENT_CHECKS, msg.get_body().decode("utf-8", errors="replace"),
                    "retries exhausted: the payment check kept failing")


@bp.function_name("payment_poll")
@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("PAYMENT_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def payment_poll(timer: func.TimerRequest) -> None:
    from shared.payments import poll_payments

    with run_context("payment_poll"):
        poll_payments(_runtime(), utcnow())


@bp.function_name("bc_subscriptions")
@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("SUBSCRIPTION_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def bc_subscriptions(timer: func.TimerRequest) -> None:
    from shared.subscriptions import ensure_subscriptions

    with run_context("bc_subscriptions"):
        ensure_subscriptions(_runtime(), utcnow())


@bp.function_name("purchase_order_sync")
@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("PO_SYNC_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def purchase_order_sync(timer: func.TimerRequest) -> None:
    from shared.purchase_orders import sync_purchase_orders

    with run_context("purchase_order_sync"):
        sync_purchase_orders(_runtime(), utcnow())
