"""Timer that keeps the BC webhook subscriptions alive (they expire after three days).

Microsoft Learn, "Working with webhooks in Dynamics 365 Business Central": a subscription
expires after three days unless renewed with a PATCH, and BC deletes it after failed deliveries.
"""
import azure.functions as func

from shared.flows.payments.subscriptions import ensure_subscriptions
from shared.functions.timers import register_timer

bp = func.Blueprint()
bc_subscriptions = register_timer(bp, name="bc_subscriptions", schedule_setting="SUBSCRIPTION_SCHEDULE",
                                  run=ensure_subscriptions)
