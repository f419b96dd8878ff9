"""BC -> Basware master-data import (Basware P2P API: POST /v1/vendors, /v1/accounts, /v1/costCenters, /v2/projects, /v1/lists/{key}).

Per BC company in COMPANY_MAP and per entity (vendors, Posting G/L accounts, each mapped
dimension) the data flows one way, one page at a time:

    BC page -> map -> canonical JSON + sha256 -> compare with the hash of the last SUCCESSFUL
    import -> batch (count and byte limits) -> POST -> requestStatus -> advance confirmed hashes

Only the stored hashes of one entity (externalCode -> hash) are held for the whole stream; BC
records and Basware bodies live for one page or one batch. After the stream, hash rows whose
record was not seen (deleted in BC, or no longer a Posting account) are sent inactive, built from
the stored body. A hash advances only when requestStatus says Success, NotProcessed or Warning
for that record, so anything refused, unsent or unconfirmed is simply sent again next run.

Requests go out one at a time per company (Basware documents no rate limit; one in flight per
endpoint is the safe reading); a request's requestStatus is read after the next one is posted,
polling while InProgress up to `status_wait`. Confirmed hashes are written by one background
writer with a bounded backlog, so Table Storage latency overlaps the requests without letting
batches pile up. A record P2P refused is resent with a fresh `lastUpdated`, because Basware keeps
it in its API layer and would otherwise skip the resend as identical.

One job (kind `masterdata`) per company and run, with its counts on the job row and its requests
and record-level errors in the audit trail. The run returns a `SyncSummary`.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Literal

from pydantic import BaseModel

from shared.clients.basware import LIST_LIMIT, MASTERDATA_ENDPOINTS
from shared.clients.basware_imports import classify, post_batch, wait_for_status
from shared.clients.bc import odata_literal
from shared.core.errors import AuthError, ConfigError, ConnectorError, PermanentError, TransientError
from shared.store.jobs import DONE, FAILED, job_id, utcnow
from shared.flows.masterdata.mapping import (MAX_BATCH_BYTES, Batch, Batcher, CompanyContext, EntitySpec, Pending,
                                 RecordTooLarge, entity_specs, inactivate, pending, restamped)
from shared.store.syncstate import CompanyLease, HashStore, Stored
from shared.models.basware import RequestStatus
from shared.models.messages import MasterdataImportMessage
from shared.store.storage import MASTERDATA_IMPORTS
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.masterdata")

KIND = "masterdata"
VENDOR_SELECT = ("number,displayName,addressLine1,addressLine2,city,state,country,postalCode,phoneNumber,email,"
                 "website,taxRegistrationNumber,currencyCode,blocked")
ACCOUNT_SELECT = "number,displayName,accountType,blocked,directPosting"
VALUE_SELECT = "code,displayName"


# -- the summary (what the HTTP route answers, what the job row keeps) --------------------------------
class Counts(BaseModel):
    read: int = 0          # records read from BC
    changed: int = 0       # new, changed, newly blocked or gone since the last successful import
    sent: int = 0          # records in requests Basware accepted (HTTP 200)
    skipped: int = 0       # unchanged, not sent
    identical: int = 0     # sent although unchanged (force): Basware skips these as NotProcessed
    failed: int = 0        # refused by Basware (request or record error) or never sent; retried next run
    inactivated: int = 0   # sent inactive: gone from BC or newly blocked
    unconfirmed: int = 0   # no final requestStatus within the wait; retried next run
    requests: int = 0      # master-data POSTs

    def add(self, other: "Counts") -> None:
        for name in Counts.model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class EntitySummary(Counts):
    company_id: str
    entity: str
    path: str
    status: Literal["ok", "partial", "failed", "not_run"] = "ok"
    error: str | None = None


class SyncSummary(BaseModel):
    run_id: str
    force: bool = False
    status: Literal["ok", "partial", "failed", "busy", "skipped", "already_done"] = "ok"
    jobs: list[str] = []
    totals: Counts = Counts()
    identical: int = 0     # force: how many records Basware will skip as identical
    entities: list[EntitySummary] = []
    errors: list[str] = []
    retryable: bool = False
    duration_ms: int = 0

    @classmethod
    def combine(cls, run_id: str, force: bool, parts: list["SyncSummary"]) -> "SyncSummary":
        out = cls(run_id=run_id, force=force)
        for part in parts:
            out.jobs += part.jobs
            out.entities += part.entities
            out.errors += part.errors
            out.totals.add(part.totals)
            out.retryable = out.retryable or part.retryable
            out.duration_ms += part.duration_ms
        out.identical = out.totals.identical
        order = ["ok", "already_done", "skipped", "partial", "busy", "failed"]
        out.status = max((p.status for p in parts), key=order.index, default="ok")
        return out


@dataclass
class SyncOptions:
    page_size: int = 1000                  # BC page (Prefer: odata.maxpagesize)
    max_bytes: int = MAX_BATCH_BYTES       # per request, measured on the serialized body
    status_wait: float = 30.0              # longest wait for one request's final requestStatus
    status_first_poll: float = 0.25
    window: int = 1                        # requests posted before the oldest one's status is read
    max_consecutive_failures: int = 2      # Basware is down: stop the run, the queue retries it
    max_record_audits: int = 200           # record-level audit rows per run; the rest are summed up
    state_writers: int = 1                 # threads writing confirmed hashes while the next batch goes out
    max_pending_writes: int = 4            # confirmed batches waiting for their hash write, at most
    lease_seconds: float = 900.0
    sleep: Callable[[float], None] = time.sleep


# -- one run of one company ---------------------------------------------------------------------------
class _Abort(Exception):
    """Stop the run: Basware refuses the credentials, or keeps failing."""


_SEEN = Stored("", True)


@dataclass
class _Sent:
    batch: Batch
    request_id: str | None


@dataclass
class _Run:
    rt: Any
    job_id: str
    force: bool
    options: SyncOptions
    stamp: str  # lastUpdated for records P2P refused before (see masterdata_mapping.restamped)
    consecutive_failures: int = 0
    record_audits: int = 0
    suppressed_audits: int = 0
    aborted: str | None = None
    retryable: bool = False
    writer: ThreadPoolExecutor | None = None

    def write_state(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Hash rows are written off the request path (the slowest part on Table Storage)."""
        if self.writer is None:
            self.writer = ThreadPoolExecutor(self.options.state_writers, thread_name_prefix="masterdata-state")
        return self.writer.submit(fn, *args)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.shutdown(wait=True)

    def audit(self, step: str, outcome: str, message: str = "", **extra: Any) -> None:
        self.rt.audit.record(self.job_id, step, outcome, message, kind=KIND, **extra)

    def audit_record(self, step: str, message: str, *, basware_id: str, bc_id: str | None = None) -> None:
        if self.record_audits >= self.options.max_record_audits:
            self.suppressed_audits += 1
            return
        self.record_audits += 1
        self.audit(step, "error", message, basware_id=basware_id, bc_id=bc_id)


def _code(record: dict) -> str | None:
    for key in ("vendorCode", "accountCode", "costCenterCode", "projectCode", "text_1"):
        if key in record:
            return str(record[key])
    return None


class _EntityRun:
    """Streams one entity of one company through hash compare, batching, import and status read-back."""

    def __init__(self, run: _Run, spec: EntitySpec, company: CompanyContext) -> None:
        self.run = run
        self.spec = spec
        self.company = company
        self.store = HashStore(run.rt.storage, spec.key, company.company_id)
        self.summary = EntitySummary(company_id=company.company_id, entity=spec.key, path=spec.path)
        self.batcher = Batcher(spec.limit, run.options.max_bytes)
        self.inflight: deque[_Sent] = deque()
        self.writes: deque[tuple[Future, int]] = deque()  # (hash write, records it confirms)

    # -- stream ----------------------------------------------------------------------------------
    def execute(self, records: Iterable[dict]) -> EntitySummary:
        s = self.summary
        stored = self.store.load()
        complete = False
        try:
            for bc_record in records:
                s.read += 1
                record = self.spec.mapper(bc_record, self.company)
                if record is not None:
                    self._consider(pending(record, "new"), stored)
            complete = True
        except ConnectorError as exc:  # BC could not be read: what was read still goes out
            if isinstance(exc, AuthError):
                self.run.aborted = self.run.aborted or exc.summary()
            s.status, s.error = "failed", f"reading BC failed: {exc.summary()}"
            self.run.retryable = self.run.retryable or isinstance(exc, TransientError)
        except _Abort:
            pass
        try:
            if complete:  # only a full read tells what is gone
                self._send_gone(stored)
            del stored
            batch = self.batcher.flush()
            if batch:
                self._send(batch)
        except _Abort:
            pass
        while self.inflight:
            self._resolve(self.inflight.popleft())
        self._collect_writes(keep=0)
        if self.run.aborted and s.status == "ok":
            s.status, s.error = "failed", f"run stopped: {self.run.aborted}"
        if s.status == "ok" and (s.failed or s.unconfirmed):
            s.status = "partial"
        return s

    def _consider(self, p: Pending, stored: dict[str, Stored]) -> None:
        s = self.summary
        stored_row = stored.get(p.external_code)
        if stored_row is _SEEN:
            log.warning("event=masterdata.duplicate entity=%s externalCode=%s", self.spec.key, p.external_code)
            return
        stored[p.external_code] = _SEEN
        prev = stored_row if stored_row is not None and stored_row.hash else None  # last successful import
        if prev is not None and prev.hash == p.hash:
            if not self.run.force:
                s.skipped += 1
                return
            p.change = "identical"
            s.identical += 1
        else:
            p.change = "changed" if prev is not None else "new"
            s.changed += 1
            if prev is not None and prev.active and not p.active:
                s.inactivated += 1
            if stored_row is not None and stored_row.refused == p.hash:
                p = restamped(p, self.run.stamp)
        self._queue(p)

    def _send_gone(self, stored: dict[str, Stored]) -> None:
        """Records with a hash row but not in BC any more: send them inactive, never delete."""
        s = self.summary
        for external_code, prev in stored.items():
            if prev is _SEEN or not prev.hash or (not prev.active and not self.run.force):
                continue  # seen this run, never imported, or already inactive in Basware
            body = self.store.body(external_code)
            if body is None:
                s.failed += 1
                self.run.audit_record("inactivate", "gone from BC but its last import is not stored",
                                      basware_id=external_code)
                continue
            p = pending(inactivate(body), "gone")
            if p.hash == prev.hash:
                if not self.run.force:
                    continue
                p.change = "identical"
                s.identical += 1
            else:
                s.changed += 1
                s.inactivated += 1
                if prev.refused == p.hash:
                    p = restamped(p, self.run.stamp)
            self._queue(p)

    def _queue(self, p: Pending) -> None:
        try:
            full = self.batcher.add(p)
        except RecordTooLarge as exc:
            self.summary.failed += 1
            self.run.audit_record("map", str(exc), basware_id=p.external_code, bc_id=_code(p.record))
            return
        if full is not None:
            self._send(full)

    # -- import ----------------------------------------------------------------------------------
    def _send(self, batch: Batch) -> None:
        s, run = self.summary, self.run
        n = len(batch.items)
        if run.aborted:
            s.failed += n
            raise _Abort()
        s.requests += 1
        try:
            result = post_batch(run.rt.basware, self.spec.path, batch.records())
        except (TransientError, PermanentError) as exc:
            s.failed += n
            s.error = f"POST {self.spec.path} failed: {exc.summary()}"
            run.audit("import", "failed", f"{self.spec.path}: {n} records not imported: {exc.summary()}",
                      http_status=exc.status, correlation_id=exc.correlation_id)
            run.consecutive_failures += 1
            if isinstance(exc, (AuthError, ConfigError)) or (
                    isinstance(exc, TransientError) and run.consecutive_failures >= run.options.max_consecutive_failures):
                run.aborted = exc.summary()
                run.retryable = isinstance(exc, TransientError)
                raise _Abort() from exc
            run.retryable = run.retryable or isinstance(exc, TransientError)
            return
        if result.errors is not None:  # 400/409: the whole request was refused
            s.failed += n
            s.error = f"POST {self.spec.path} refused ({result.status}): {result.errors[0].get('message') or ''}"[:500]
            run.audit("import", "failed", f"{self.spec.path}: {n} records refused ({len(result.errors)} errors)",
                      http_status=result.status, correlation_id=result.request_id)
            codes = {p.external_code: p for p in batch.items}
            for error in result.errors:
                ext = error.get("externalCode") or ""
                message = f"{error.get('code') or error.get('type') or 'error'}: {error.get('message') or ''}"
                self.run.audit_record("import", message[:500], basware_id=ext,
                                      bc_id=_code(codes[ext].record) if ext in codes else None)
            return
        run.consecutive_failures = 0
        s.sent += n
        self.inflight.append(_Sent(batch, result.request_id))
        while len(self.inflight) > run.options.window:
            self._resolve(self.inflight.popleft())

    def _resolve(self, sent: _Sent) -> None:
        """Read the request's outcome; advance the hashes of the records Basware confirmed."""
        s, run = self.summary, self.run
        items = sent.batch.items
        opts = run.options
        status = wait_for_status(run.rt.basware, sent.request_id, wait=opts.status_wait,
                                 first_poll=opts.status_first_poll, sleep=opts.sleep) if sent.request_id else None
        ok, failed, waiting = classify_outcome(status, items)
        if ok:
            self.writes.append((self.run.write_state(self.store.save, ok), len(ok)))
        if failed:
            self.writes.append((self.run.write_state(self.store.mark_refused, [p for p, _ in failed]), 0))
        self._collect_writes(keep=self.run.options.max_pending_writes)
        s.failed += len(failed)
        s.unconfirmed += len(waiting)
        for p, errors in failed:
            text = "; ".join(f"{e.get('category') or e.get('type') or 'Error'}: {e.get('message') or ''}"
                             for e in errors) or "Error"
            run.audit_record("record", text[:500], basware_id=p.external_code, bc_id=_code(p.record))
        outcome = "ok" if not failed and not waiting else "partial"
        state = status.request_status if status else ("no request id" if not sent.request_id else "no status")
        run.audit("import", outcome, f"{self.spec.path}: {len(items)} records, {len(ok)} confirmed, "
                                     f"{len(failed)} errors, {len(waiting)} unconfirmed (requestStatus {state})",
                  http_status=200, correlation_id=sent.request_id)

    def _collect_writes(self, keep: int) -> None:
        """Wait for hash writes until at most `keep` are pending: a slow store must not let
        confirmed batches pile up in memory."""
        s = self.summary
        while self.writes and (len(self.writes) > keep or self.writes[0][0].done()):
            write, confirmed = self.writes.popleft()
            try:
                write.result()
            except Exception as exc:  # noqa: BLE001 - Basware has the records; only our note of it is lost
                log.error("event=masterdata.state_write_failed entity=%s records=%d error=%s", self.spec.key,
                          confirmed, type(exc).__name__)
                s.unconfirmed += confirmed  # resent next run, where Basware answers NotProcessed
                s.error = f"could not record imports in syncstate ({type(exc).__name__})"


def classify_outcome(status: RequestStatus | None, items: list[Pending]
                     ) -> tuple[list[Pending], list[tuple[Pending, list[dict]]], list[Pending]]:
    """(confirmed, refused with Basware's errors, not known yet) for one request's records."""
    by_code = {p.external_code: p for p in items}
    outcome = classify(status, by_code)
    return ([by_code[c] for c in outcome.confirmed], [(by_code[c], e) for c, e in outcome.refused.items()],
            [by_code[c] for c in outcome.waiting])


# -- reading BC ------------------------------------------------------------------------------------------
def read_bc(bc, company_id: str, spec: EntitySpec, page_size: int) -> Iterator[dict]:
    """The BC records behind one entity, page by page."""
    if spec.source == "vendors":
        yield from bc.iterate(bc.company_path(company_id, "vendors"), page_size=page_size, select=VENDOR_SELECT)
    elif spec.source == "accounts":
        yield from bc.iterate(bc.company_path(company_id, "accounts"), page_size=page_size, select=ACCOUNT_SELECT)
    else:
        code = spec.source.split(":", 1)[1]
        dims = list(bc.iterate(bc.company_path(company_id, "dimensions"), filter=f"code eq {odata_literal(code)}",
                               page_size=None))
        if not dims:
            raise PermanentError(f"BC company {company_id} has no dimension {code} (named in DIMENSION_MAP)",
                                 system="bc")
        yield from bc.iterate(f"{bc.company_path(company_id, 'dimensions')}({dims[0]['id']})/dimensionValues",
                              page_size=page_size, select=VALUE_SELECT)


def _wanted(spec: EntitySpec, entities: list[str] | None) -> bool:
    if not entities:
        return True
    names = {spec.key, spec.source}
    if spec.dimension is not None:
        names |= {"dimensions", spec.dimension.dimension}
    return bool(names & set(entities))


# -- entry points -----------------------------------------------------------------------------------------
def _stamp(when: datetime | None = None) -> str:
    return (when or utcnow()).astimezone(timezone.utc).isoformat(timespec="microseconds")


RUNNING = "running"
RETRYING = "retrying"  # a queued run that the queue will deliver again (not terminal)


def sync_company(rt: Runtime, company_id: str, *, force: bool = False, entities: list[str] | None = None,
                 run_stamp: str | None = None, message: MasterdataImportMessage | None = None,
                 options: SyncOptions | None = None, queued: bool = False, replay: bool = False) -> SyncSummary:
    """Import one BC company's master data into Basware: one job, one run.

    `queued`: the queue retries this run, so a retryable failure leaves the job open (`retrying`)
    for the redelivery or, at the end, the dead letters. `replay`: an operator's replay re-runs a
    finished job."""
    options = options or SyncOptions()
    started = time.monotonic()
    run_stamp = run_stamp or _stamp()
    jid = job_id(KIND, company_id, run_stamp)
    summary = SyncSummary(run_id=run_stamp, force=force, jobs=[jid])
    codes = tuple(rt.settings.basware_companies_for(company_id))
    if not codes:
        summary.status = "skipped"
        summary.errors.append(f"COMPANY_MAP names no Basware companyCode for BC company {company_id}")
        return summary
    lease = CompanyLease(rt.storage, company_id, f"{rt.worker_id}:{jid}", options.lease_seconds)
    run: _Run | None = None
    if not lease.acquire():
        summary.status, summary.retryable = "busy", True
        summary.errors.append(f"another master-data run for BC company {company_id} is in progress")
        return summary
    try:
        # the job keeps the message that reproduces this very run (same job id), for the operators' replay
        message = message or MasterdataImportMessage(company_id=company_id, force=force, entities=entities,
                                                     enqueued_at=datetime.fromisoformat(run_stamp))
        claim = rt.jobs.claim(KIND, jid, rt.worker_id, options.lease_seconds, initial_state=RUNNING,
                              allow_finished=replay, queue=MASTERDATA_IMPORTS, message=message.model_dump_json(),
                              company_id=company_id, bc_id=company_id, force=force)
        if not claim.won:
            summary.status = "already_done" if claim.reason == "finished" else "busy"
            summary.retryable = claim.reason == "busy"
            return summary
        run = _Run(rt, jid, force, options, stamp=run_stamp)
        run.audit("start", "ok", f"company {company_id} -> {', '.join(codes)}; force={force}", bc_id=company_id)
        company = CompanyContext(company_id, codes)
        try:
            for spec in entity_specs(rt.settings.dimension_map, MASTERDATA_ENDPOINTS, LIST_LIMIT):
                if not _wanted(spec, entities):
                    continue
                if run.aborted:
                    summary.entities.append(EntitySummary(company_id=company_id, entity=spec.key, path=spec.path,
                                                          status="not_run", error=f"run stopped: {run.aborted}"))
                    continue
                part = _EntityRun(run, spec, company).execute(read_bc(rt.bc, company_id, spec, options.page_size))
                summary.entities.append(part)
                summary.totals.add(part)
                if part.error:
                    summary.errors.append(f"{spec.key}: {part.error}")
                run.audit("entity", part.status, _counts_text(part), http_status=None)
        except Exception as exc:
            rt.jobs.release(claim.job, state=RETRYING if queued else FAILED,
                            last_error=f"{type(exc).__name__}: {exc}"[:1000])
            run.audit("finish", "failed", f"unexpected {type(exc).__name__}: {exc}")
            raise
        if run.suppressed_audits:
            run.audit("record", "error", f"{run.suppressed_audits} more record errors not itemised")
        summary.identical = summary.totals.identical
        summary.retryable = run.retryable
        statuses = {e.status for e in summary.entities}
        summary.status = ("failed" if statuses & {"failed", "not_run"} else
                          "partial" if "partial" in statuses else "ok")
        summary.duration_ms = int((time.monotonic() - started) * 1000)
        last_error = "; ".join(summary.errors)[:1000] or (
            f"{summary.totals.failed} records failed, {summary.totals.unconfirmed} unconfirmed"
            if summary.status != "ok" else None)
        state = DONE if summary.status == "ok" else RETRYING if (queued and summary.retryable) else FAILED
        rt.jobs.release(claim.job, state=state, last_error=last_error,
                        summary=summary.model_dump_json()[:30000],
                        **summary.totals.model_dump())
        run.audit("finish", summary.status, _counts_text(summary.totals))
        log.info("event=masterdata.finished company=%s status=%s %s", company_id, summary.status,
                 _counts_text(summary.totals))
        return summary
    finally:
        if run is not None:
            run.close()
        lease.release()


def _counts_text(c: Counts) -> str:
    return " ".join(f"{k}={v}" for k, v in c.model_dump().items() if k in Counts.model_fields)


def sync_all(rt: Runtime, *, force: bool = False, entities: list[str] | None = None,
             options: SyncOptions | None = None) -> SyncSummary:
    """Every mapped BC company, one after the other, in this process (the synchronous HTTP route)."""
    run_stamp = _stamp()
    parts = [sync_company(rt, cid, force=force, entities=entities, run_stamp=run_stamp, options=options)
             for cid in rt.settings.bc_companies()]
    return SyncSummary.combine(run_stamp, force, parts)


def enqueue_sync(rt: Runtime, *, force: bool = False, entities: list[str] | None = None) -> list[dict]:
    """One `masterdata-imports` message per company (timer, and the HTTP route with async=true)."""
    out = []
    for cid in rt.settings.bc_companies():
        message = MasterdataImportMessage(company_id=cid, force=force, entities=entities)
        rt.storage.enqueue(MASTERDATA_IMPORTS, message)
        out.append({"company_id": cid, "job_id": job_id(KIND, cid, _stamp(message.enqueued_at))})
    return out


def parse_import_message(raw: str) -> tuple[MasterdataImportMessage, dict]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a masterdata-imports message is a JSON object")
    return MasterdataImportMessage.model_validate(data), data


def job_for_message(raw: str) -> str | None:
    """The job a `masterdata-imports` message works (for the dead letters), None if unreadable."""
    try:
        message, _ = parse_import_message(raw)
    except ValueError:  # includes pydantic's ValidationError and JSONDecodeError
        return None
    return job_id(KIND, message.company_id, _stamp(message.enqueued_at))


def handle_import_message(rt: Runtime, raw: str, options: SyncOptions | None = None) -> SyncSummary:
    """The `masterdata-imports` worker. The job id comes from the message (company and
    enqueued_at), so a redelivery resumes the same job and an operator's replay
    (`source=replay`) re-runs it. Raises TransientError when a retry can help (Basware or BC
    down, another run busy), so the queue redelivers and, at the end, dead-letters."""
    message, data = parse_import_message(raw)
    summary = sync_company(rt, message.company_id, force=message.force, entities=message.entities,
                           run_stamp=_stamp(message.enqueued_at), message=message, options=options,
                           queued=True, replay=data.get("source") == "replay")
    if summary.retryable:
        raise TransientError(f"master-data run {summary.status}: {'; '.join(summary.errors)[:500]}",
                             system="masterdata")
    return summary
