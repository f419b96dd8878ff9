"""The `syncstate` table, and the one module that reads and writes it.

- Hash rows (`HashStore`, master data): PartitionKey `hash-<entity>-<BC company id>`, RowKey = the
  record's externalCode, with `hash` (sha256 of the canonical JSON last imported SUCCESSFULLY),
  `active`, and `body` (that JSON, so a record that disappears from BC can still be sent inactive
  with all its required fields).
- Record rows (`RecordRows`, purchase orders): PartitionKey `hash-matchingOrder[Line]-<company>`,
  RowKey = externalCode, with the hash and the few fields the next run compares.
- Watermarks (`Watermarks`): PartitionKey `watermark`, RowKey = `<flow>-<company>[-<entity>]`,
  `value` = the newest BC `lastModifiedDateTime` handled (ISO 8601 text).
- The index of the BC documents the invoice flow posted (`PostedIndex`, read by the payments
  flow before it reports a payment).
- BC webhook subscriptions (`SubscriptionRows`): PartitionKey `subscription`, RowKey = BC company id.
- The last run of each scheduled job (`LastRuns`, for the console): PartitionKey `lastrun`.
- The master-data company lease (`CompanyLease`): PartitionKey `lease`.
- The BC request slots every instance shares (`RequestSlots`, for shared/clients/budget.py):
  PartitionKey `slots-bc`, RowKey `00`, `01`, ...: a row exists while its slot is held, with `owner`
  and `until` (epoch seconds, when the lease runs out).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError,
                                   ServiceRequestError, ServiceResponseError)
from azure.data.tables import UpdateMode

from shared.store.storage import SYNCSTATE, Storage

TRANSACTION_SIZE = 100          # Table Storage's limit per entity-group transaction
SUBMIT_ATTEMPTS = 3
MAX_BODY_CHARS = 30_000         # a string property holds 64 KiB of UTF-16


class Hashed(Protocol):
    """A record on its way to Basware (the master-data flow's `Pending`)."""
    external_code: str
    record: dict
    hash: str
    active: bool


@dataclass(frozen=True)
class Stored:
    hash: str             # of the last successful import ("" if none yet)
    active: bool
    refused: str = ""     # hash of content P2P refused last time (Basware now holds it in its API layer)


def hash_partition(entity: str, company_id: str) -> str:
    return f"hash-{entity}-{company_id}"


class HashStore:
    """The hashes of one entity in one company."""

    def __init__(self, storage: Storage, entity: str, company_id: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._storage = storage
        self.partition = hash_partition(entity, company_id)
        self._clock = clock

    @property
    def _table(self):
        return self._storage.table(SYNCSTATE)

    def load(self) -> dict[str, Stored]:
        """externalCode -> (hash, active): small values only, never the bodies."""
        rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": self.partition},
                                          select=["RowKey", "hash", "active", "refused"], results_per_page=1000)
        return {r["RowKey"]: Stored(r.get("hash") or "", r.get("active") is not False, r.get("refused") or "")
                for r in rows}

    def body(self, external_code: str) -> dict | None:
        try:
            row = self._table.get_entity(self.partition, external_code, select=["body"])
        except ResourceNotFoundError:
            return None
        raw = row.get("body")
        return json.loads(raw) if raw else None

    def save(self, items: Iterable[Hashed]) -> int:
        """Advance the hashes of records Basware confirmed (upserts, 100 per transaction)."""
        now = self._clock()
        ops = []
        for p in items:
            content = {k: v for k, v in p.record.items() if k != "lastUpdated"}  # see restamped()
            body = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
            ops.append(("upsert", {"PartitionKey": self.partition, "RowKey": p.external_code, "hash": p.hash,
                                   "active": p.active, "body": body if len(body) <= MAX_BODY_CHARS else "",
                                   "updated": now}, {"mode": UpdateMode.REPLACE}))
        self._submit(ops)
        return len(ops)

    def mark_refused(self, items: Iterable[Hashed]) -> None:
        """Remember content P2P refused (the last good hash and body stay as they are)."""
        self._submit([("upsert", {"PartitionKey": self.partition, "RowKey": p.external_code, "refused": p.hash,
                                  "refused_at": self._clock()}, {"mode": UpdateMode.MERGE}) for p in items])

    def _submit(self, ops: list) -> None:
        for start in range(0, len(ops), TRANSACTION_SIZE):
            chunk = ops[start:start + TRANSACTION_SIZE]
            for attempt in range(1, SUBMIT_ATTEMPTS + 1):
                try:
                    self._table.submit_transaction(chunk)
                    break
                except (ServiceRequestError, ServiceResponseError):
                    # a lost answer: upserts are idempotent, so sending the transaction again is safe
                    if attempt == SUBMIT_ATTEMPTS:
                        raise
                    time.sleep(0.2 * attempt)


class RecordRows:
    """Rows of one partition, keyed by externalCode, read whole and upserted in transactions."""

    def __init__(self, storage: Storage, partition: str) -> None:
        self._storage = storage
        self.partition = partition

    def load(self) -> dict[str, dict]:
        rows = self._storage.table(SYNCSTATE).query_entities("PartitionKey eq @p", parameters={"p": self.partition})
        return {row["RowKey"]: dict(row) for row in rows}

    def save(self, rows: list[dict]) -> None:
        """Upsert rows (each with its `RowKey`), up to 100 per table transaction."""
        ops = [("upsert", {**row, "PartitionKey": self.partition}) for row in rows]
        for start in range(0, len(ops), TRANSACTION_SIZE):
            self._storage.table(SYNCSTATE).submit_transaction(ops[start:start + TRANSACTION_SIZE])


class _Scope:
    """The rows of one PartitionKey (`SCOPE`), read and written one at a time."""

    SCOPE = ""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def _row(self, key: str) -> dict | None:
        try:
            return dict(self._storage.table(SYNCSTATE).get_entity(self.SCOPE, key))
        except ResourceNotFoundError:
            return None

    def _put(self, key: str, mode: UpdateMode = UpdateMode.MERGE, **fields) -> None:
        self._storage.table(SYNCSTATE).upsert_entity({"PartitionKey": self.SCOPE, "RowKey": key, **fields},
                                                     mode=mode)

    def _all(self) -> dict[str, dict]:
        rows = self._storage.table(SYNCSTATE).query_entities("PartitionKey eq @pk", parameters={"pk": self.SCOPE})
        return {r["RowKey"]: dict(r) for r in rows}


class Watermarks(_Scope):
    """The newest `lastModifiedDateTime` each polling flow has handled, per key."""

    SCOPE = "watermark"

    def get(self, key: str) -> str | None:
        row = self._row(key)
        return row.get("value") if row else None

    def set(self, key: str, value: str) -> None:
        self._put(key, value=value)


class SubscriptionRows(_Scope):
    """BC webhook subscriptions this connector made, one row per BC company."""

    SCOPE = "subscription"

    def get(self, company_id: str) -> dict | None:
        return self._row(company_id)

    def save(self, company_id: str, **fields) -> None:
        self._put(company_id, **fields)


class LastRuns(_Scope):
    """One row per scheduled job name, overwritten by each run (shared/store/runs.py writes them)."""

    SCOPE = "lastrun"

    def save(self, name: str, **fields) -> None:
        self._put(name, UpdateMode.REPLACE, **fields)

    def all(self) -> dict[str, dict]:
        return self._all()


class CompanyLease:
    """One master-data run per BC company at a time (timer, HTTP and queue can overlap).

    A run that overlaps would only resend what the other sends (imports are idempotent), so the
    lease saves work rather than guarding correctness; it expires on its own after a crash.
    """

    def __init__(self, storage: Storage, company_id: str, owner: str, seconds: float = 900.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._storage = storage
        self._key = ("lease", f"masterdata-{company_id}")
        self._owner = owner
        self._seconds = seconds
        self._clock = clock
        self._etag: str | None = None

    @property
    def _table(self):
        return self._storage.table(SYNCSTATE)

    def acquire(self) -> bool:
        now = self._clock()
        entity = {"PartitionKey": self._key[0], "RowKey": self._key[1], "owner": self._owner,
                  "until": now + timedelta(seconds=self._seconds)}
        try:
            current = self._table.get_entity(*self._key)
        except ResourceNotFoundError:
            try:
                self._etag = self._table.create_entity(entity).get("etag")
                return True
            except ResourceExistsError:
                return False
        until = current.get("until")
        if until is not None and until > now and current.get("owner") != self._owner:
            return False
        try:
            self._etag = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                                   match_condition=MatchConditions.IfNotModified).get("etag")
            return True
        except (ResourceModifiedError, ResourceNotFoundError):
            return False

    def release(self) -> None:
        if self._etag is None:
            return
        entity = {"PartitionKey": self._key[0], "RowKey": self._key[1], "owner": "", "until": self._clock()}
        try:
            self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=self._etag,
                                      match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass  # taken over after expiry: theirs now
        self._etag = None


@dataclass(frozen=True)
class Slot:
    key: str
    etag: str
    until: float  # epoch seconds


class RequestSlots:
    """`size` leases, one per BC request in flight from any instance (shared/clients/budget.py).

    A slot is held while its row exists: taking one is an insert, which Table Storage refuses with
    409 when the row is there, so of two instances after the same slot exactly one gets it; giving
    it back is an ETag-conditional delete. One round trip before a request and one after, while
    slots are free. A row whose lease ran out (its holder crashed) is found by reading the
    partition once every slot tried was taken, and deleted, ETag-conditionally, before reuse."""

    PARTITION = "slots-bc"
    TRIES = 3  # random slots tried by insert before the partition is read
    unavailable = (ServiceRequestError, ServiceResponseError)

    def __init__(self, storage: Storage, size: int, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self._storage = storage
        self.size = size
        self._clock = clock
        self._rng = rng or random.Random()
        self._keys = [f"{i:02d}" for i in range(size)]

    @property
    def _table(self):
        return self._storage.table(SYNCSTATE)

    def take(self, owner: str, seconds: float) -> Slot | None:
        keys = self._rng.sample(self._keys, len(self._keys))  # instances asking at once try different slots
        for key in keys[:self.TRIES]:
            slot = self._insert(key, owner, seconds)
            if slot is not None:
                return slot
        now = self._clock()
        rows = {e["RowKey"]: e for e in self._table.query_entities(
            "PartitionKey eq @p", parameters={"p": self.PARTITION}, select=["RowKey", "until"])}
        for key in keys:
            row = rows.get(key)
            if row is not None:
                if float(row.get("until") or 0) > now:
                    continue
                try:  # its holder never gave it back: clear it, unless someone else just did
                    self._table.delete_entity(self.PARTITION, key, etag=row.metadata["etag"],
                                              match_condition=MatchConditions.IfNotModified)
                except ResourceModifiedError:
                    continue  # renewed by its holder, or taken again
                except ResourceNotFoundError:
                    pass      # given back meanwhile: free
            slot = self._insert(key, owner, seconds)
            if slot is not None:
                return slot
        return None

    def _insert(self, key: str, owner: str, seconds: float) -> Slot | None:
        until = self._clock() + seconds
        try:
            etag = self._table.create_entity({"PartitionKey": self.PARTITION, "RowKey": key, "owner": owner,
                                              "until": until})["etag"]
        except ResourceExistsError:
            return None  # held
        return Slot(key, etag, until)

    def renew(self, slot: Slot, seconds: float) -> Slot | None:
        until = self._clock() + seconds
        try:
            etag = self._table.update_entity({"PartitionKey": self.PARTITION, "RowKey": slot.key, "until": until},
                                             mode=UpdateMode.MERGE, etag=slot.etag,
                                             match_condition=MatchConditions.IfNotModified)["etag"]
        except (ResourceModifiedError, ResourceNotFoundError):
            return None  # it ran out and another instance holds it now
        return Slot(slot.key, etag, until)

    def give_back(self, slot: Slot) -> None:
        try:
            self._table.delete_entity(self.PARTITION, slot.key, etag=slot.etag,
                                      match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass  # it ran out and another instance holds it now: theirs

    def holders(self) -> dict[str, str]:
        """Slot -> owner, for the slots leased now (tests and the console)."""
        now = self._clock()
        return {e["RowKey"]: e.get("owner", "") for e in self._table.query_entities(
            "PartitionKey eq @p", parameters={"p": self.PARTITION}) if float(e.get("until") or 0) > now}


POSTED_SCOPE = "posted"  # BC document id -> the invoice job that posted it (or "" = not ours, cached)
NOT_OURS_TTL = timedelta(hours=24)


class PostedIndex:
    """Which invoice job posted a BC document: one point read instead of a scan of the invoice jobs.

    Rows: PartitionKey `posted`, RowKey = the BC document id (lower case), `invoice_job_id`. The
    invoice flow writes the row before it asks BC to post (a document cannot be paid before it is
    posted, so no payment is detected before its row exists). A row with an empty `invoice_job_id`
    is a cached "not ours" (`checked_at`), inserted only where no row is (insert-only), so it can
    never overwrite the invoice flow's row; the invoice flow's upsert replaces it.
    """

    def __init__(self, storage: Storage, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 not_ours_ttl: timedelta = NOT_OURS_TTL) -> None:
        self._storage = storage
        self._clock = clock
        self.not_ours_ttl = not_ours_ttl

    @property
    def _table(self):
        return self._storage.table(SYNCSTATE)

    def remember(self, bc_document_id: str, invoice_job_id: str) -> None:
        """The invoice flow: this BC document is (about to be) posted by this invoice job."""
        self._table.upsert_entity({"PartitionKey": POSTED_SCOPE, "RowKey": bc_document_id.lower(),
                                   "invoice_job_id": invoice_job_id, "checked_at": self._clock()},
                                  mode=UpdateMode.REPLACE)

    def lookup(self, bc_document_id: str) -> str | None:
        """The invoice job id; "" for a cached "not ours" still fresh; None when nothing is known."""
        try:
            row = self._table.get_entity(POSTED_SCOPE, bc_document_id.lower())
        except ResourceNotFoundError:
            return None
        job = row.get("invoice_job_id") or ""
        if job:
            return job
        checked = row.get("checked_at")
        return "" if checked is not None and self._clock() - checked < self.not_ours_ttl else None

    def remember_not_ours(self, bc_document_id: str) -> str | None:
        """Cache "not ours"; returns the invoice job id if the invoice flow's row got there first."""
        entity = {"PartitionKey": POSTED_SCOPE, "RowKey": bc_document_id.lower(), "invoice_job_id": "",
                  "checked_at": self._clock()}
        try:
            self._table.create_entity(entity)
            return None
        except ResourceExistsError:
            pass
        try:
            current = self._table.get_entity(POSTED_SCOPE, bc_document_id.lower())
        except ResourceNotFoundError:
            return None
        if current.get("invoice_job_id"):
            return current["invoice_job_id"]
        try:  # an expired "not ours": renew it, unless the invoice flow wrote meanwhile
            self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                      match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return self.lookup(bc_document_id) or None
        return None
