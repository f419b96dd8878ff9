"""Job rows: one per record and flow, holding its state machine and both sides' ids.

Concurrency: a job is claimed with a lease. A new job is inserted (insert fails with 409 if another
worker got there first); an existing one is taken over with an ETag-conditional update. Exactly
one claimer wins; the others see `won=False` and why.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.store.storage import JOBS, Storage

_NAMESPACE = uuid.UUID("6f0b5f6e-3c1d-4e52-9a57-1f0c3b7d2a10")

# states every flow shares; flows add their own intermediate ones
DONE = "done"                   # finished successfully; never done again
FAILED = "failed"               # finished with a permanent failure that was reported
DEAD_LETTERED = "dead_lettered"  # retries exhausted; visible to operators, replayable
TERMINAL = frozenset({DONE, FAILED, DEAD_LETTERED})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def job_id(kind: str, *parts: str) -> str:
    """A stable id: the same record and flow always give the same job id."""
    return str(uuid.uuid5(_NAMESPACE, "|".join([kind, *map(str, parts)])))


@dataclass
class Job:
    kind: str
    id: str
    state: str
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    created: datetime | None = None
    updated: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)
    etag: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


_CORE = {"PartitionKey", "RowKey", "state", "attempts", "lease_owner", "lease_until", "last_error", "created",
         "updated"}


def _to_job(entity: Any) -> Job:
    return Job(
        kind=entity["PartitionKey"], id=entity["RowKey"], state=entity.get("state", ""),
        attempts=int(entity.get("attempts", 0) or 0), lease_owner=entity.get("lease_owner") or None,
        lease_until=entity.get("lease_until"), last_error=entity.get("last_error"),
        created=entity.get("created"), updated=entity.get("updated"),
        data={k: v for k, v in entity.items() if k not in _CORE},
        etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
    )


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Table Storage takes str/int/float/bool/datetime; other values are stored as text."""
    out = {}
    for k, v in fields.items():
        if v is None or isinstance(v, (str, bool, int, float, datetime)):
            out[k] = v
        else:
            out[k] = str(v)
    return out


@dataclass
class Claim:
    job: Job
    won: bool
    reason: str = ""  # "new", "resumed", "finished", "busy"


class JobConflict(Exception):
    """The row changed since it was read (another worker wrote it)."""


class JobStore:
    def __init__(self, storage: Storage, clock: Callable[[], datetime] = utcnow, *,
                 on_state: Callable[[str, str, str | None, str], None] | None = None) -> None:
        """`on_state(kind, id, old_state, new_state)` is told of every state written (metrics)."""
        self._storage = storage
        self._clock = clock
        self._on_state = on_state

    def _notify(self, kind: str, id: str, old: str | None, new: Any) -> None:
        if self._on_state is not None and isinstance(new, str) and new != old:
            try:
                self._on_state(kind, id, old, new)
            except Exception:  # noqa: BLE001 - an observer never fails a state change
                pass

    @property
    def _table(self):
        return self._storage.table(JOBS)

    def get(self, kind: str, id: str) -> Job | None:
        try:
            return _to_job(self._table.get_entity(kind, id))
        except ResourceNotFoundError:
            return None

    def create(self, kind: str, id: str, state: str, **data: Any) -> Job | None:
        """Insert a new job; None if it already exists."""
        now = self._clock()
        entity = {"PartitionKey": kind, "RowKey": id, "state": state, "attempts": 0, "created": now,
                  "updated": now, **_clean(data)}
        try:
            meta = self._table.create_entity(entity)
        except ResourceExistsError:
            return None
        job = _to_job(_Entity(entity, meta))
        return job

    def claim(self, kind: str, id: str, worker: str, lease_seconds: float = 120.0, *,
              initial_state: str = "received", allow_finished: bool = False, **data: Any) -> Claim:
        """Take the job's lease. Exactly one of several concurrent claimers wins.

        The lease owner is `worker` (the process) plus a fresh suffix per claim: one owner per
        invocation. A host runs several messages at once (host.json `batchSize`), and two of them for
        the same job must exclude each other exactly as two processes do."""
        owner = f"{worker}/{uuid.uuid4().hex[:8]}"
        for _ in range(8):
            now = self._clock()
            until = now + timedelta(seconds=lease_seconds)
            job = self.get(kind, id)
            if job is None:
                entity = {"PartitionKey": kind, "RowKey": id, "state": initial_state, "attempts": 1,
                          "lease_owner": owner, "lease_until": until, "created": now, "updated": now,
                          **_clean(data)}
                try:
                    meta = self._table.create_entity(entity)
                except ResourceExistsError:
                    continue
                return Claim(_to_job(_Entity(entity, meta)), True, "new")
            if job.finished and not allow_finished:
                return Claim(job, False, "finished")
            if job.lease_owner and job.lease_owner != owner and job.lease_until and job.lease_until > now:
                return Claim(job, False, "busy")
            try:
                job = self.update(job, lease_owner=owner, lease_until=until, attempts=job.attempts + 1, **data)
            except JobConflict:
                continue
            return Claim(job, True, "resumed")
        raise JobConflict(f"job {kind}/{id} kept changing while being claimed")

    def update(self, job: Job, **fields: Any) -> Job:
        """ETag-conditional merge of `fields`; raises JobConflict if the row changed meanwhile."""
        now = self._clock()
        changes = _clean({**fields, "updated": now})
        entity = {"PartitionKey": job.kind, "RowKey": job.id, **changes}
        try:
            meta = self._table.update_entity(entity, mode=UpdateMode.MERGE, etag=job.etag,
                                             match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise JobConflict(f"job {job.kind}/{job.id} changed since it was read") from exc
        core = {k: v for k, v in changes.items() if k in _CORE}
        data = {**job.data, **{k: v for k, v in changes.items() if k not in _CORE}}
        self._notify(job.kind, job.id, job.state, fields.get("state"))
        return replace(job, **core, data=data, etag=meta.get("etag"))

    def release(self, job: Job, **fields: Any) -> Job:
        """Give the lease back, usually together with the new state."""
        return self.update(job, lease_owner="", lease_until=None, **fields)

    def force(self, kind: str, id: str, **fields: Any) -> None:
        """Unconditional merge (operators' replay, dead-lettering): last writer wins by design."""
        now = self._clock()
        entity = {"PartitionKey": kind, "RowKey": id, "updated": now, **_clean(fields)}
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)
        self._notify(kind, id, None, fields.get("state"))

    def list(self, kind: str | None = None, state: str | None = None, limit: int = 500) -> list[Job]:
        return list(self.iter(kind, state, limit))

    def iter(self, kind: str | None = None, state: str | None = None, limit: int | None = None) -> Iterator[Job]:
        clauses, params = [], {}
        if kind:
            clauses.append("PartitionKey eq @kind")
            params["kind"] = kind
        if state:
            clauses.append("state eq @state")
            params["state"] = state
        query = " and ".join(clauses)
        entities = (self._table.query_entities(query, parameters=params) if query
                    else self._table.list_entities())
        for n, entity in enumerate(entities):
            if limit is not None and n >= limit:
                return
            yield _to_job(entity)

    def find(self, kind: str, fields: tuple[str, ...], value: str, limit: int = 20) -> list[Job]:
        """Jobs of `kind` where any of `fields` equals `value` (a filter over one partition, for
        operators' look-ups: Table Storage indexes only the keys)."""
        clause = " or ".join(f"{name} eq @value" for name in fields)
        # the SDK substitutes `@name` only between spaces, so the parentheses stand apart
        rows = self._table.query_entities(f"PartitionKey eq @kind and ( {clause} )",
                                          parameters={"kind": kind, "value": value}, results_per_page=limit)
        found = []
        for row in rows:
            found.append(_to_job(row))
            if len(found) >= limit:
                break
        return found

    def delete(self, job: Job) -> None:
        self._table.delete_entity(job.kind, job.id)


class _Entity(dict):
    """A dict with `.metadata` like the SDK's TableEntity, for rows we just wrote."""

    def __init__(self, values: dict, metadata: dict) -> None:
        super().__init__(values)
        self.metadata = metadata
