"""Retention: remove finished jobs and audit rows older than RETENTION_DAYS (default 400).

What goes:
- job rows in state `done` or `failed` last updated before the cutoff (deleted with their ETag, so
  a job that a replay or a worker touched meanwhile stays);
- audit rows written before the cutoff, except those of jobs that remain: an unfinished or
  dead-lettered job keeps its whole trail, and so does any job still in the table (its trail
  stays whole as long as the job can be looked at), and audit rows of jobs that no longer exist.

What never goes: unfinished jobs, dead-lettered jobs (they wait for an operator), `syncstate`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.store.jobs import DONE, FAILED, JobStore, utcnow
from shared.store.storage import JOBS
from shared.core.telemetry import log_event
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.retention")

REMOVABLE = frozenset({DONE, FAILED})


@dataclass
class RetentionReport:
    cutoff: datetime
    jobs_deleted: int = 0
    audit_rows_deleted: int = 0
    jobs_kept: int = 0
    skipped_changed: int = 0
    deleted_by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"cutoff": self.cutoff.isoformat(), "jobs_deleted": self.jobs_deleted,
                "audit_rows_deleted": self.audit_rows_deleted, "jobs_kept": self.jobs_kept,
                "skipped_changed": self.skipped_changed, "deleted_by_kind": dict(self.deleted_by_kind)}


def purge(rt: Runtime, *, now: Callable[[], datetime] = utcnow, days: int | None = None) -> RetentionReport:
    """One retention run. `now` is injectable (tests); `days` defaults to RETENTION_DAYS."""
    days = days if days is not None else rt.settings.retention_days
    cutoff = now() - timedelta(days=days)
    report = RetentionReport(cutoff)
    jobs: JobStore = rt.jobs
    table = rt.storage.table(JOBS)
    kept: set[str] = set()
    for job in jobs.iter():
        updated = job.updated or job.created
        if job.state not in REMOVABLE or updated is None or updated >= cutoff:
            kept.add(job.id)
            continue
        try:
            table.delete_entity(job.kind, job.id, etag=job.etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:  # replayed or resumed since we read it: it stays
            kept.add(job.id)
            report.skipped_changed += 1
            continue
        except ResourceNotFoundError:
            pass
        report.jobs_deleted += 1
        report.deleted_by_kind[job.kind] = report.deleted_by_kind.get(job.kind, 0) + 1
    report.jobs_kept = len(kept)
    report.audit_rows_deleted = rt.audit.delete_older_than(cutoff, keep=lambda job_id: job_id in kept)
    log_event(log, "retention.done", days=days, cutoff=cutoff.isoformat(), jobs_deleted=report.jobs_deleted,
              audit_rows_deleted=report.audit_rows_deleted, jobs_kept=report.jobs_kept)
    return report
