"""The last run of each scheduled job (invoice poll, payment poll, master-data import, PO sync,
BC subscriptions): when it started and finished, how it ended and what it did, one row per job name.

Rows live in the `syncstate` table (`syncstate.LastRuns`), one per job name, overwritten by every run: the operator console shows them ("when did the poll last run, and what
did it find?"). Logs hold the history; this row only answers "last".
"""
from __future__ import annotations

import logging
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from shared.store.storage import Storage
from shared.store.syncstate import LastRuns

log = logging.getLogger("ml_connector.runs")

MAX_SUMMARY = 500


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def describe(result: Any) -> str:
    """A one-line account of what a run returned: `seen=3, queued=1`, `status=ok, read=106, sent=100`.

    Numbers and words only, one level deep, zeros of nested counts left out (a master-data
    summary has dozens); ids, lists and timings are in the log, not here."""
    if result is None:
        return ""
    if hasattr(result, "model_dump"):
        result = result.model_dump()
    elif is_dataclass(result) and not isinstance(result, type):
        result = asdict(result)
    if not isinstance(result, dict):
        return str(result)[:MAX_SUMMARY]
    parts = []
    for key, value in result.items():
        if key in _SKIP or isinstance(value, list):
            continue
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        if isinstance(value, dict):
            inner = [f"{k}={v}" for k, v in value.items()
                     if isinstance(v, (str, int, float)) and not isinstance(v, bool) and v not in (0, "")]
            parts.append(f"{key}: {', '.join(inner) or 'nothing'}")
        elif not isinstance(value, bool):
            parts.append(f"{key}={value}")
    return "; ".join(parts)[:MAX_SUMMARY]


_SKIP = {"run_id", "duration_ms", "force", "retryable"}


def record_run(storage: Storage, name: str, started: datetime, outcome: str, summary: str,
               clock: Callable[[], datetime] = _utcnow) -> None:
    """Never raises: a run that did its work must not fail (and be retried) for want of this row."""
    try:
        LastRuns(storage).save(name, started=started, finished=clock(), outcome=outcome,
                               summary=summary[:MAX_SUMMARY])
    except Exception:  # noqa: BLE001
        log.warning("event=run.record_failed name=%s", name, exc_info=True)


def recorded(storage: Storage, name: str, run: Callable[[], Any], clock: Callable[[], datetime] = _utcnow) -> Any:
    """Call `run()` and record how it went; its result or exception passes through unchanged."""
    started = clock()
    try:
        result = run()
    except Exception as exc:
        summary = exc.summary() if hasattr(exc, "summary") else type(exc).__name__
        record_run(storage, name, started, "failed", str(summary), clock)
        raise
    status = getattr(result, "status", None)
    record_run(storage, name, started, status if isinstance(status, str) else "ok", describe(result), clock)
    return result


def last_runs(storage: Storage) -> dict[str, dict[str, Any]]:
    """name -> {started, finished, outcome, summary}, for every job that has run."""
    return {name: {"started": r.get("started"), "finished": r.get("finished"), "outcome": r.get("outcome"),
                   "summary": r.get("summary") or ""} for name, r in LastRuns(storage).all().items()}
