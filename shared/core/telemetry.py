"""Logging: structured `event=<name> key=value` lines, job context on every line, a secret scrubber,
and Application Insights export when configured.

- `log_context(job_id=..., invoice_id=...)` binds correlation ids for the code inside the `with`
  (a contextvar, so concurrent jobs on other threads keep their own); every log record created
  meanwhile carries them, appended to its message as `key=value` (and, on the Application Insights
  handler, as record attributes, which it exports as custom dimensions).
- A safety net: every record's text is scrubbed of the configured secret values (`protect`) and of
  bearer/basic credentials before any handler sees it. It is installed as the log-record factory,
  so it covers every logger and every handler (the Functions worker's, pytest's, OpenTelemetry's).
- `configure_logging()` (called by function_app.py) exports the `ml_connector` loggers to
  Application Insights through azure-monitor-opentelemetry when APPLICATIONINSIGHTS_CONNECTION_STRING
  is set and the package is installed; otherwise it logs one line saying why not.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import threading
import traceback
import uuid
from typing import Any, Iterable, Iterator

from shared.core.secrets import credential_patterns, mask

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("ml_connector_log_context", default={})
_configured = False
_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole
_installed = False

# Log lines use `code=...` for error codes, so the log filter masks fewer `key=` names than the
# audit's Scrubber does.
_CREDENTIALS = credential_patterns()
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_BARE = re.compile(r"^[^\s=\"]+$")


# -- structured lines ----------------------------------------------------------------------------
def kv(**fields: Any) -> str:
    """`key=value` pairs; values with spaces or quotes are JSON-quoted; None is left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        parts.append(f"{key}={text if text and _BARE.match(text) else _quote(text)}")
    return " ".join(parts)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line: `event=<event> key=value ...` (plus the bound context)."""
    if logger.isEnabledFor(level):
        rest = kv(**fields)
        logger.log(level, "event=%s%s", event, f" {rest}" if rest else "")


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, str]]:
    """Bind correlation ids (job_id, invoice_id, bc_id, ...) to every log line inside the block."""
    merged = {**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None and v != ""}}
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)


def current_context() -> dict[str, str]:
    return dict(_context.get())


def run_context(trigger: str) -> contextlib.AbstractContextManager:
    """`log_context` for one timer or HTTP invocation: its name and a run id on every line."""
    return log_context(trigger=trigger, run_id=uuid.uuid4().hex[:12])


# -- the scrubbing safety net ---------------------------------------------------------------------
def protect(values: Iterable[str | None]) -> None:
    """Register secret values that must never reach a log handler (and install the hook)."""
    global _secrets
    with _lock:
        merged = set(_secrets) | {v for v in values if v and len(v) >= 4}
        _secrets = tuple(sorted(merged, key=len, reverse=True))
    install_log_hook()


def scrub(text: str) -> str:
    return mask(text, _secrets, _CREDENTIALS)


class ScrubFilter(logging.Filter):
    """Adds the bound context and masks secrets in place; never drops a record.

    Used by the record factory below, and usable as a handler filter on its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            _prepare(record)
        except Exception:  # noqa: BLE001 - logging must never fail because of the safety net
            pass
        return True


def _prepare(record: logging.LogRecord) -> None:
    context = _context.get()
    try:
        original = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: let the handler report it
        return
    text = original
    if context:
        extra = {k: v for k, v in context.items() if not re.search(rf"(?<![\w.]){re.escape(k)}=", text)}
        if extra:
            text = f"{text} {kv(**extra)}"
    text = scrub(text)
    if text != original:
        record.msg, record.args = text, None
    if record.exc_info and record.exc_info[0] is not None:
        formatted = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        clean = scrub(formatted)
        if clean != formatted:  # the exception itself holds a secret: handlers get the clean text only
            record.exc_text, record.exc_info = clean, None


_filter = ScrubFilter()


class ContextAttributes(logging.Filter):
    """Copies the bound context onto the record as attributes (custom dimensions in Application
    Insights). A handler filter, not part of the record factory: `extra=` of the same name must win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if key not in _RESERVED and not hasattr(record, key):
                setattr(record, key, scrub(value))
        return True


def install_log_hook() -> None:
    """Wrap the log-record factory once, so every record of every logger passes the filter."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _filter.filter(record)
            return record

        logging.setLogRecordFactory(factory)


# -- set-up ---------------------------------------------------------------------------------------
def configure_logging(level: int = logging.INFO, *, connection_string: str | None = None) -> None:
    """Once per process: quiet SDK loggers, install the hook, export to Application Insights if set."""
    global _configured
    if _configured:
        return
    _configured = True
    install_log_hook()
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log request headers at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)  # httpx logs full URLs
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    connection_string = connection_string or os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if connection_string:
        protect([connection_string])
        enable_azure_monitor(connection_string)


def enable_azure_monitor(connection_string: str) -> bool:
    """Export `ml_connector` logs and metrics to Application Insights (optional dependency)."""
    log = logging.getLogger("ml_connector.telemetry")
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError:
        log.warning("event=telemetry.disabled reason=\"azure-monitor-opentelemetry is not installed\"")
        return False
    try:
        # APPLICATIONINSIGHTS_AUTHENTICATION_STRING (Entra ingestion) is read by the exporter itself.
        configure_azure_monitor(connection_string=connection_string, logger_name="ml_connector")
    except Exception as exc:  # noqa: BLE001 - telemetry must never stop the app
        log.warning("event=telemetry.disabled reason=%s", _quote(f"{type(exc).__name__}: {exc}"))
        return False
    for handler in logging.getLogger("ml_connector").handlers:
        handler.addFilter(ContextAttributes())
    log.info("event=telemetry.enabled exporter=azure-monitor")
    return True
