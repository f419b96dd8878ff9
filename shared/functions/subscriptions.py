"""Timer that keeps the BC webhook subscriptions alive (they expire after three days).

Microsoft Learn, "Working with webhooks in Dynamics 365 Business Central": a subscription
expires after three days unless renewed with a PATCH, and BC deletes it after failed deliveries.
"""
import azure.functions as func

from shared.core.runtime import runtime
from shared.core.telemetry import run_context
from shared.store.jobs import utcnow
from shared.core.settings import timer_schedule

bp = func.Blueprint()


@bp.function_name("bc_subscriptions")
@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("SUBSCRIPTION_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def bc_subscriptions(timer: func.TimerRequest) -> None:
    from shared.flows.payments.subscriptions import ensure_subscriptions

    with run_context("bc_subscriptions"):
        ensure_subscriptions(runtime(), utcnow())
