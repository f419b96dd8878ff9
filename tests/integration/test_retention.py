"""Retention: finished jobs and audit rows older than RETENTION_DAYS go; unfinished and dead-lettered
jobs stay with their whole trails. Real Azurite; old rows are written through an injected clock."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from azure.functions.timer import TimerRequest
import pytest

from shared.store.audit import AuditLog
from shared.functions import operations
from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, JobStore
from shared.ops.retention import purge
from shared.core.settings import load_settings, timer_schedule
from shared.core.runtime import build_runtime

NOW = datetime.now(timezone.utc)


@pytest.fixture
def store(fresh_azurite, env):
    rt = build_runtime(load_settings({**env, "RETENTION_DAYS": "400"}))
    yield rt
    rt.close()


def write_job(rt, kind: str, id: str, state: str, age_days: float, audit_rows: int = 2) -> None:
    """A job and its audit rows as they would have been written `age_days` ago."""
    then = NOW - timedelta(days=age_days)
    old_jobs = JobStore(rt.storage, clock=lambda: then)
    old_audit = AuditLog(rt.storage, clock=lambda: then)
    old_jobs.create(kind, id, state, invoice_id=f"basware-{id}")
    for n in range(audit_rows):
        old_audit.record(id, f"step{n}", "ok", f"row {n} of {id}", kind=kind)


def trail(rt, id: str) -> list[str]:
    return [row["step"] for row in rt.audit.trail(id)]


def test_old_finished_jobs_and_their_trails_go_while_unfinished_and_dead_lettered_ones_stay(store):
    rt = store
    write_job(rt, "invoice", "old-done", DONE, 401)
    write_job(rt, "invoice", "old-failed", FAILED, 500)
    write_job(rt, "payment", "old-payment-done", DONE, 420)
    write_job(rt, "invoice", "old-dead", DEAD_LETTERED, 900)
    write_job(rt, "invoice", "old-unfinished", "draft_created", 450)
    write_job(rt, "masterdata", "old-running", "running", 401)
    write_job(rt, "invoice", "recent-done", DONE, 399)
    write_job(rt, "invoice", "new-done", DONE, 0)
    AuditLog(rt.storage, clock=lambda: NOW - timedelta(days=600)).record("gone-long-ago", "receive", "ok", "orphan")
    # a job that finished recently keeps its whole trail, including rows from before the cutoff
    AuditLog(rt.storage, clock=lambda: NOW - timedelta(days=410)).record("recent-done", "early", "ok", "first try")

    report = purge(rt, now=lambda: NOW)

    remaining = {(j.kind, j.id) for j in rt.jobs.iter()}
    assert remaining == {("invoice", "old-dead"), ("invoice", "old-unfinished"), ("masterdata", "old-running"),
                         ("invoice", "recent-done"), ("invoice", "new-done")}
    assert report.jobs_deleted == 3 and report.deleted_by_kind == {"invoice": 2, "payment": 1}
    for gone in ("old-done", "old-failed", "old-payment-done", "gone-long-ago"):
        assert trail(rt, gone) == []
    for kept in ("old-dead", "old-unfinished", "old-running", "new-done"):
        assert trail(rt, kept) == ["step0", "step1"]
    assert trail(rt, "recent-done") == ["early", "step0", "step1"]  # oldest first
    assert report.audit_rows_deleted == 3 * 2 + 1
    assert report.cutoff == NOW - timedelta(days=400)

    again = purge(rt, now=lambda: NOW)  # idempotent
    assert (again.jobs_deleted, again.audit_rows_deleted) == (0, 0)


def test_a_job_touched_during_the_run_is_not_deleted(store, monkeypatch):
    rt = store
    write_job(rt, "invoice", "replayed", FAILED, 500)
    read_all = rt.jobs.iter

    def racing_iter(*args, **kwargs):  # an operator's replay lands between retention's read and its delete
        for job in read_all(*args, **kwargs):
            rt.jobs.force(job.kind, job.id, replay="pending")
            yield job

    monkeypatch.setattr(rt.jobs, "iter", racing_iter)
    report = purge(rt, now=lambda: NOW)
    assert report.jobs_deleted == 0 and report.skipped_changed == 1
    assert rt.jobs.get("invoice", "replayed") is not None and trail(rt, "replayed") == ["step0", "step1"]


def test_the_retention_timer_runs_on_its_schedule_setting_and_keeps_retention_days(fresh_azurite, env,
                                                                                      monkeypatch):
    timer = next(f for f in operations.bp._function_builders if f._function.get_function_name() == "retention")
    (trigger,) = [b for b in timer._function.get_bindings() if b.type == "timerTrigger"]
    assert trigger.schedule == timer_schedule("RETENTION_SCHEDULE")  # the setting, else the default

    rt = build_runtime(load_settings({**env, "RETENTION_DAYS": "30"}))
    try:
        write_job(rt, "invoice", "month-old", DONE, 31)
        write_job(rt, "invoice", "fresh", FAILED, 29)
        monkeypatch.setattr("shared.core.runtime._runtime", rt)  # what runtime() hands the trigger
        operations.retention(TimerRequest(past_due=False))
    finally:
        rt.close()
    assert rt.jobs.get("invoice", "month-old") is None and trail(rt, "month-old") == []
    assert rt.jobs.get("invoice", "fresh") is not None and trail(rt, "fresh") == ["step0", "step1"]
