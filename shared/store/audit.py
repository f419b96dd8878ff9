"""The audit trail: append-only rows per job, oldest first.

Rows carry what an operator or AP lead needs (time, step, outcome, HTTP status, ids on both sides,
correlation ids, a short message) and never a secret: every message goes through `scrub`, which
masks the configured secret values and anything shaped like a credential.
"""
from __future__ import annotations

import itertools
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from shared.core.secrets import Scrubber
from shared.store.storage import AUDIT, Storage

MAX_MESSAGE = 4000
_counter = itertools.count()
_counter_lock = threading.Lock()


def _row_key(now: datetime) -> str:
    # Sorts oldest first; the counter keeps rows written in the same millisecond in order.
    with _counter_lock:
        n = next(_counter) % 1_000_000
    return f"{int(now.timestamp() * 1000):014d}-{n:06d}-{uuid.uuid4().hex[:6]}"


class AuditLog:
    def __init__(self, storage: Storage, scrub: Callable[[str], str] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), *,
                 on_record: Callable[[dict], None] | None = None) -> None:
        """`on_record(row)` is told of every row written (metrics)."""
        self._storage = storage
        self._scrub = scrub or Scrubber()
        self._clock = clock
        self._on_record = on_record

    def record(self, job_id: str, step: str, outcome: str, message: str = "", *, kind: str | None = None,
               http_status: int | None = None, correlation_id: str | None = None,
               basware_id: str | None = None, bc_id: str | None = None, **extra: Any) -> dict:
        now = self._clock()
        row: dict[str, Any] = {
            "PartitionKey": job_id,
            "RowKey": _row_key(now),
            "time": now,
            "kind": kind or "",
            "step": step,
            "outcome": outcome,
            "message": self._scrub(str(message))[:MAX_MESSAGE],
        }
        for key, value in (("http_status", http_status), ("correlation_id", correlation_id),
                           ("basware_id", basware_id), ("bc_id", bc_id), *extra.items()):
            if value is None:
                continue
            row[key] = value if isinstance(value, (int, float, bool, datetime)) else self._scrub(str(value))[:1000]
        self._storage.table(AUDIT).create_entity(row)
        if self._on_record is not None:
            try:
                self._on_record(row)
            except Exception:  # noqa: BLE001 - an observer never fails the audit write
                pass
        return row

    def trail(self, job_id: str) -> list[dict]:
        rows = self._storage.table(AUDIT).query_entities("PartitionKey eq @id", parameters={"id": job_id})
        out = [{k: v for k, v in r.items() if k not in ("PartitionKey",)} for r in rows]
        out.sort(key=lambda r: r["RowKey"])
        return out

    def delete_older_than(self, cutoff: datetime, keep: Callable[[str], bool] = lambda job_id: False) -> int:
        """Retention: remove rows older than `cutoff`, except for jobs `keep` protects."""
        table = self._storage.table(AUDIT)
        key = f"{int(cutoff.timestamp() * 1000):014d}"
        removed = 0
        for row in table.query_entities("RowKey lt @key", parameters={"key": key}, select=["PartitionKey", "RowKey"]):
            if keep(row["PartitionKey"]):
                continue
            table.delete_entity(row["PartitionKey"], row["RowKey"])
            removed += 1
        return removed
