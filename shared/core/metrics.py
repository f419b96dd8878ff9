"""Counters an operator watches: invoices posted, jobs failed and dead-lettered, HTTP retries and 429s.

In-process counters (always; `snapshot()` for health pages and tests) plus an OpenTelemetry meter
when `opentelemetry` is installed: once `configure_azure_monitor` has set the meter provider, the
same increments reach Application Insights as custom metrics.

Nothing in the flows calls this module. The counters are derived where the facts are recorded:
- `observe_call`: the ApiClient `on_call` hook (each logical request's retries and 429s);
- `observe_state`: the JobStore hook on state changes (failed, dead_lettered, done per job kind);
- `observe_audit`: the AuditLog hook (an invoice `post` step that succeeded = posted).
shared/core/runtime.py wires the hooks.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Callable

log = logging.getLogger("ml_connector.metrics")

POSTED = "posted"
FAILED = "failed"
DEAD_LETTERED = "dead_lettered"
DONE = "done"
RETRIES = "retries"
THROTTLED = "throttled"  # HTTP 429 answers
COUNTERS = {
    POSTED: ("ml_connector.invoices.posted", "BC documents posted for Basware invoices"),
    FAILED: ("ml_connector.jobs.failed", "jobs finished with a permanent failure"),
    DEAD_LETTERED: ("ml_connector.jobs.dead_lettered", "jobs whose retries ran out"),
    DONE: ("ml_connector.jobs.done", "jobs finished successfully"),
    RETRIES: ("ml_connector.http.retries", "HTTP requests retried after a transient failure"),
    THROTTLED: ("ml_connector.http.throttled", "HTTP 429 answers received"),
}


class Metrics:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._lock = threading.Lock()
        self._instruments: dict[str, Any] = {}
        try:
            from opentelemetry import metrics as otel_metrics
        except ImportError:  # optional: counters stay in-process
            return
        # get_meter returns a proxy until a provider is set, so instruments made now export later.
        meter = otel_metrics.get_meter("ml_connector")
        for name, (otel_name, description) in COUNTERS.items():
            self._instruments[name] = meter.create_counter(otel_name, unit="1", description=description)

    def add(self, name: str, n: int = 1, **labels: Any) -> None:
        if n <= 0:
            return
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items() if v is not None)))
        with self._lock:
            self._counts[key] += n
        instrument = self._instruments.get(name)
        if instrument is not None:
            try:
                instrument.add(n, dict(key[1]))
            except Exception:  # noqa: BLE001 - metrics never break a flow
                log.debug("event=metrics.export_failed name=%s", name, exc_info=True)

    def value(self, name: str, **labels: Any) -> int:
        """The count of `name` over every label set that includes `labels`."""
        wanted = {(k, str(v)) for k, v in labels.items()}
        with self._lock:
            return sum(n for (counter, lbls), n in self._counts.items() if counter == name and wanted <= set(lbls))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            totals: Counter[str] = Counter()
            for (name, _), n in self._counts.items():
                totals[name] += n
        return {name: totals.get(name, 0) for name in COUNTERS}

    # -- hooks ---------------------------------------------------------------------------------------
    def call_observer(self, system: str) -> Callable[[Any], None]:
        """An ApiClient `on_call` hook for one system."""
        def observe(summary: Any) -> None:
            self.add(RETRIES, int(getattr(summary, "retries", 0) or 0), system=system)
            self.add(THROTTLED, int(getattr(summary, "throttled", 0) or 0), system=system)
        return observe

    def observe_state(self, kind: str, job_id: str, old: str | None, new: str) -> None:
        if new == old:
            return
        if new in (FAILED, DEAD_LETTERED, DONE):
            self.add(new, kind=kind)
        if kind == "invoice" and new == FAILED:
            # infra/app/alerts.bicep alerts on this line ("failed transfers")
            log.warning("event=transfer.failed job=%s", job_id)

    def observe_audit(self, row: dict) -> None:
        if row.get("kind") == "invoice" and row.get("step") == "post" and row.get("outcome") == "ok":
            self.add(POSTED, kind="invoice")


REGISTRY = Metrics()
