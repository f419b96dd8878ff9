"""Logging setup: structured `key=value` lines; Application Insights when configured."""
from __future__ import annotations

import logging
import os

_configured = False


def configure_logging(level: int = logging.INFO) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log request headers at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)  # httpx logs full URLs
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        try:
            from azure.monitor.opentelemetry import configure_azure_monitor  # optional dependency
        except ImportError:
            logging.getLogger("ml_connector").warning(
                "event=telemetry.disabled reason=azure-monitor-opentelemetry not installed")
        else:
            configure_azure_monitor(logger_name="ml_connector")
