"""Timer of the purchase-order flow (BC -> Basware matching orders).

Polling only: BC's webhook subscriptions do not cover purchase orders (Microsoft Learn,
"Working with webhooks in Dynamics 365 Business Central", supported entities).
"""
import azure.functions as func

from shared.flows.purchase_orders.sync import sync_purchase_orders
from shared.functions.timers import register_timer

bp = func.Blueprint()
purchase_order_sync = register_timer(bp, name="purchase_order_sync", schedule_setting="PO_SYNC_SCHEDULE",
                                     run=sync_purchase_orders)
