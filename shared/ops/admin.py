"""Operators' view of the jobs: list them, read one with its whole audit trail, replay it.

Plain functions over the job store, the audit log and storage; the HTTP routes
(shared/functions/operations.py) and the CLI (shared/ops/cli.py) both call them.

Replay (docs/design.md, "Jobs, replay and dead letters"): every job row keeps the `queue` that
works it and the `message` that started it. A replay marks the job `replay=pending` with an
ETag-conditional update (two concurrent replays: one wins, the other sees the mark), writes an
audit row, and only then puts the stored message back on its queue with `source="replay"`. The
job keeps its state (failed or dead_lettered): the flows resume from there when the message
arrives. A replay counts as pending until a worker claims the job (its attempts move on), the
job is dead-lettered again, or `PENDING_FOR` has passed (a lost message must not block forever).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, Job, JobConflict, JobStore, job_id
from shared.core.telemetry import log_context, log_event
from shared.models.messages import parse_message
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.admin")

PENDING_FOR = timedelta(minutes=15)
REPLAYABLE = frozenset({FAILED, DEAD_LETTERED})
_SUMMARY_IDS = (
    # (output name, job fields that may hold it, first present wins)
    ("basware_id", ("basware_id", "invoice_id")),
    ("bc_id", ("bc_id",)),
    ("bc_number", ("bc_number",)),
    ("bc_company_id", ("bc_company_id", "company_id")),
)
_HIDDEN = {"lease_owner"}  # internal: which worker process holds the lease


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def normalise_state(status: str | None) -> str | None:
    """`dead-lettered`, `Dead_Lettered` and `dead_lettered` name the same state."""
    if not status:
        return None
    return status.strip().lower().replace("-", "_") or None


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return value


def summarise(job: Job) -> dict[str, Any]:
    """One line of the list: what an operator scans for."""
    out: dict[str, Any] = {"kind": job.kind, "id": job.id, "state": job.state}
    for name, sources in _SUMMARY_IDS:
        out[name] = next((job.get(s) for s in sources if job.get(s)), None)
    out.update(attempts=job.attempts, last_error=job.last_error or None, created=_json_value(job.created),
               updated=_json_value(job.updated))
    if job.get("replay") == "pending":
        out["replay_requested_at"] = _json_value(job.get("replay_requested_at"))
    return out


def list_records(jobs: JobStore, kind: str | None = None, status: str | None = None,
                 limit: int = 200) -> list[dict[str, Any]]:
    """Jobs by flow and state, most recently updated first."""
    found = [summarise(j) for j in jobs.iter(kind or None, normalise_state(status))]
    found.sort(key=lambda r: r["updated"] or "", reverse=True)
    return found[:limit]


def show_record(jobs: JobStore, audit, kind: str, id: str,
                scrub: Callable[[str], str] = lambda text: text) -> dict[str, Any] | None:
    """The job with every stored field and its audit trail, oldest first; None if unknown."""
    job = jobs.get(kind, id)
    if job is None:
        return None
    record = summarise(job)
    record["fields"] = {k: _clean(v, scrub) for k, v in sorted(job.data.items()) if k not in _HIDDEN}
    record["lease_until"] = _json_value(job.lease_until) if job.lease_owner else None
    trail = []
    for row in audit.trail(job.id):
        entry = {"time": _json_value(row.get("time")), "step": row.get("step"), "outcome": row.get("outcome"),
                 "message": _clean(row.get("message"), scrub)}
        for key, value in row.items():
            if key not in entry and key not in ("RowKey", "time"):
                entry[key] = _clean(value, scrub)
        trail.append(entry)
    record["trail"] = trail
    return record


# -- finding a record by the ids people hold -------------------------------------------------------
# What an AP clerk or operator has in hand: Basware's invoice id or invoice number, the BC document
# number or id. Job ids derive from the source id, so the Basware invoice id (invoice jobs) and the
# BC document id (payment jobs) are one point read; the rest is a filter over the flow's partition.
LOOKUP_FIELDS = ("invoice_id", "basware_id", "invoice_number", "vendor_document_number", "bc_number", "bc_id")
_DERIVED = {"invoice", "payment"}  # kinds whose job id is job_id(kind, <source id>)
_KEY_FORBIDDEN = set('/\\#?') | {chr(c) for c in range(32)}  # not allowed in a Table key


def find_records(jobs: JobStore, kind: str, ref: str, limit: int = 20) -> list[Job]:
    """The job `ref` names: its job id, its source id, or an id or number stored on it (all matches)."""
    ref = (ref or "").strip()
    if not ref or len(ref) > 256:
        return []
    if not _KEY_FORBIDDEN & set(ref):
        for candidate in (ref, job_id(kind, ref) if kind in _DERIVED else None):
            job = jobs.get(kind, candidate) if candidate else None
            if job is not None:
                return [job]
    return jobs.find(kind, LOOKUP_FIELDS, ref, limit)


def lookup_record(jobs: JobStore, audit, kind: str, ref: str,
                  scrub: Callable[[str], str] = lambda text: text) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for `records/{kind}/{ref}`: 200 the record, 300 the matches when `ref` (an
    invoice number, say) names several, 404 when it names none."""
    found = find_records(jobs, kind, ref)
    if not found:
        return 404, {"error": f"no {kind} record with job id, source id, invoice number or BC number {ref!r}"}
    if len(found) > 1:
        return 300, {"error": f"{len(found)} {kind} records match {ref!r}: open one by its job id",
                     "matches": [summarise(j) for j in found]}
    record = show_record(jobs, audit, kind, found[0].id, scrub)
    if found[0].id != ref:
        record["found_by"] = ref
    return 200, record


def _clean(value: Any, scrub: Callable[[str], str]) -> Any:
    value = _json_value(value)
    return scrub(value) if isinstance(value, str) else value


# -- replay ------------------------------------------------------------------------------------------
@dataclass
class ReplayOutcome:
    status: str  # enqueued | already_pending | already_done | busy | not_replayable | unreadable | not_found | ambiguous
    message: str
    job: dict[str, Any] | None = None
    enqueued: dict[str, Any] | None = field(default=None, repr=False)

    HTTP = {"enqueued": 202, "already_pending": 200, "already_done": 409, "busy": 409,
            "not_replayable": 409, "unreadable": 422, "not_found": 404, "ambiguous": 300}

    @property
    def http_status(self) -> int:
        return self.HTTP[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "record": self.job}


def replay_pending(job: Job, now: datetime) -> bool:
    if job.get("replay") != "pending":
        return False
    requested = job.get("replay_requested_at")
    if not isinstance(requested, datetime) or now - requested > PENDING_FOR:
        return False
    if job.attempts != int(job.get("replay_attempts") or 0):
        return False  # a worker has claimed the job since
    dead = job.get("dead_lettered_at")
    return not (isinstance(dead, datetime) and dead > requested)


def replay_record(rt: Runtime, kind: str, id: str, *, requested_by: str = "operator",
                  now: Callable[[], datetime] = _utcnow) -> ReplayOutcome:
    """Re-enqueue a failed or dead-lettered job's stored message. Safe to call twice. `id` may be
    any id `find_records` understands; one that names several records replays none."""
    found = find_records(rt.jobs, kind, id)
    if len(found) > 1:
        return ReplayOutcome("ambiguous", f"{len(found)} {kind} records match {id!r}; replay one by its job id: "
                             + ", ".join(j.id for j in found[:10]))
    id = found[0].id if found else id
    with log_context(job_id=id, kind=kind):
        outcome = _replay(rt, kind, id, requested_by, now)
        log_event(log, "admin.replay", status=outcome.status, by=requested_by)
        return outcome


def _replay(rt: Runtime, kind: str, id: str, requested_by: str, now: Callable[[], datetime]) -> ReplayOutcome:
    jobs: JobStore = rt.jobs
    for _ in range(5):
        job = jobs.get(kind, id)
        if job is None:
            return ReplayOutcome("not_found", f"no {kind} record with id {id}")
        when = now()
        if job.state == DONE:
            return ReplayOutcome("already_done", f"{kind} record {id} is already done; nothing to replay",
                                 summarise(job))
        if replay_pending(job, when):
            return ReplayOutcome("already_pending", f"a replay requested at {_json_value(job.get('replay_requested_at'))} "
                                 "is still pending; not enqueued again", summarise(job))
        if job.state not in REPLAYABLE:
            if job.lease_owner and job.lease_until and job.lease_until > when:
                return ReplayOutcome("busy", f"{kind} record {id} is being worked right now (state {job.state})",
                                     summarise(job))
            return ReplayOutcome("not_replayable", f"{kind} record {id} is in progress (state {job.state}); only "
                                 "failed or dead-lettered records are replayed", summarise(job))
        queue, message = job.get("queue"), parse_message(job.get("message"))
        if not queue or message is None:
            return ReplayOutcome("unreadable", f"{kind} record {id} has no readable stored message to replay; "
                                 "it can only be re-sent from the source system", summarise(job))
        try:
            marked = jobs.update(job, replay="pending", replay_requested_at=when, replay_attempts=job.attempts,
                                 replay_from_state=job.state, replays=int(job.get("replays") or 0) + 1)
        except JobConflict:
            continue  # another replay or a worker wrote the row meanwhile: look again
        rt.audit.record(id, "replay", "requested", f"{requested_by} replay of a {job.state} record: "
                        f"message re-enqueued on {queue}", kind=kind, basware_id=_first(job, "basware_id", "invoice_id"),
                        bc_id=job.get("bc_id") or None, queue=queue)
        payload = {**message, "source": "replay"}
        try:
            rt.storage.enqueue(queue, payload)
        except Exception as exc:
            jobs.force(kind, id, replay="enqueue_failed")
            rt.audit.record(id, "replay", "failed", f"could not enqueue on {queue}: {type(exc).__name__}", kind=kind)
            raise
        return ReplayOutcome("enqueued", f"{kind} record {id} ({job.state}) re-enqueued on {queue}",
                             summarise(marked), payload)
    raise JobConflict(f"job {kind}/{id} kept changing while a replay was requested")


def _first(job: Job, *names: str) -> str | None:
    return next((job.get(n) for n in names if job.get(n)), None)
