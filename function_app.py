"""ml-connector's Azure Functions entry point (v2 programming model): wiring only.

Settings are validated here, once, so a missing or malformed setting stops start-up with one
message naming it. Each flow's triggers live in a blueprint under shared/functions/.
"""
import logging

import azure.functions as func

from shared.core.settings import load_settings
from shared.core.telemetry import configure_logging

configure_logging()
try:
    load_settings()
except Exception as exc:  # SettingsError: one line naming the setting, never a value
    logging.getLogger("ml_connector").critical("event=startup.failed %s", exc)
    raise SystemExit(f"ml-connector cannot start: {exc}") from None

from shared.functions import (callbacks, invoices, masterdata, operations, payments,  # noqa: E402
                              purchase_orders, subscriptions)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (invoices.bp, callbacks.bp, masterdata.bp, payments.bp, subscriptions.bp, purchase_orders.bp,
                  operations.bp):
    app.register_functions(blueprint)
from shared.functions.console import bp as console_bp  # noqa: E402 - the operator console
app.register_functions(console_bp)
