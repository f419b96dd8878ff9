"""Timer of the purchase-order flow (BC -> Basware matching orders).

Polling only: BC's webhook subscriptions do not cover purchase orders (Microsoft Learn,
"Working with webhooks in Dynamics 365 Business Central", supported entities).
"""
import azure.functions as func

from shared.core.runtime import runtime
from shared.core.telemetry import run_context
from shared.store.jobs import utcnow
from shared.core.settings import timer_schedule

bp = func.Blueprint()


@bp.function_name("purchase_order_sync")
@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("PO_SYNC_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def purchase_order_sync(timer: func.TimerRequest) -> None:
    from shared.flows.purchase_orders.sync import sync_purchase_orders

    with run_context("purchase_order_sync"):
        sync_purchase_orders(runtime(), utcnow())
