"""The operator console's queries: the overview, the paged and searchable record list, one record.

Plain functions over storage (and the records API in shared/ops/admin.py, whose `show_record` and
`replay_record` the console reuses unchanged); the HTTP routes are in shared/functions/console.py,
the page in shared/ops/console_static/.

Table Storage has no secondary indexes and no COUNT, so:
- the overview streams only `PartitionKey, state, updated` of the jobs updated in the last 30 days
  (one query per flow, `updated ge ...`), counting as it goes: nothing is held but the counts;
- the list is one server-side filtered query per page (`$top` = the page size) with the service's
  continuation token handed to the browser as an opaque `next` token, so a page of 50 never reads
  more than 50 jobs' rows whatever the table holds. Rows come in key order (flow, then job id),
  not newest first: sorting would mean reading every matching row (Microsoft Learn, "Table service
  data model": entities are sorted by PartitionKey, then RowKey; "Query timeout and pagination").
- search matches the start of a value (a `ge`/`lt` range, the prefix query Table Storage offers)
  in each id field an operator may hold: Basware invoice id, invoice number, vendor (BC vendor
  number or Basware supplier code), BC document number, or the job id. Case as typed.
"""
from __future__ import annotations

import base64
import binascii
import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable
from urllib.parse import quote

from shared.store.jobs import DEAD_LETTERED, DONE, FAILED, job_id
from shared.store.storage import JOBS

FLOWS = ("invoice", "payment", "masterdata", "purchaseorder")
FLOW_NAMES = {"invoice": "Invoices", "payment": "Payments", "masterdata": "Master data",
              "purchaseorder": "Purchase orders"}
IN_PROGRESS = "in_progress"
STATES = (DONE, FAILED, DEAD_LETTERED, IN_PROGRESS)
OTHER = "ignored"  # BC notifications the connector had no business with: not work in progress
WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_PAGE = 200
SEARCH_FIELDS = ("invoice_id", "basware_id", "invoice_number", "vendor_document_number", "supplier_code",
                 "vendor_number", "bc_number")
# Only what a list line needs: the stored queue message and response bodies stay on the server.
LIST_FIELDS = ["PartitionKey", "RowKey", "state", "attempts", "last_error", "created", "updated", "invoice_id",
               "basware_id", "invoice_number", "vendor_document_number", "supplier_code", "vendor_number",
               "bc_number", "bc_id", "replay", "replay_requested_at"]
RUN_NAMES = {"invoice_poll": "Invoice poll", "masterdata_import": "Master-data import",
             "payment_poll": "Payment poll", "purchase_order_sync": "Purchase-order sync",
             "bc_subscriptions": "BC subscriptions"}


class BadQuery(ValueError):
    """A filter or token the list cannot use; the message says which and what is accepted."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: Any) -> Any:
    return value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) else value


def bucket(state: str | None) -> str | None:
    """done / failed / dead_lettered / in_progress; None for states that are not work (ignored)."""
    if state in (DONE, FAILED, DEAD_LETTERED):
        return state
    if state == OTHER:
        return None
    return IN_PROGRESS


# -- overview ------------------------------------------------------------------------------------------
def count_jobs(storage, now: datetime, flows: Iterable[str] = FLOWS) -> dict[str, dict[str, dict[str, int]]]:
    """`{window: {flow: {state: n}}}` by the time each job last changed."""
    longest = max(WINDOWS.values())
    out = {w: {f: dict.fromkeys(STATES, 0) for f in flows} for w in WINDOWS}
    table = storage.table(JOBS)
    for flow in flows:
        rows = table.query_entities("PartitionKey eq @kind and updated ge @since",
                                    parameters={"kind": flow, "since": now - longest},
                                    select=["state", "updated"], results_per_page=1000)
        for row in rows:
            state, updated = bucket(row.get("state")), row.get("updated")
            if state is None or not isinstance(updated, datetime):
                continue
            for window, span in WINDOWS.items():
                if updated >= now - span:
                    out[window][flow][state] += 1
    return out


class CountCache:
    """The last counts, reused for `ttl`: counting reads every job changed in 30 days (bench.console:
    about 11 s for 7,400 rows on Azurite), and several operators' pages refresh the same numbers."""

    def __init__(self, ttl: timedelta = timedelta(seconds=60)) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: tuple[datetime, dict] | None = None

    def get(self, storage, when: datetime, fresh: bool = False) -> tuple[datetime, dict]:
        with self._lock:
            if not fresh and self._value is not None and when - self._value[0] < self.ttl:
                return self._value
            self._value = (when, count_jobs(storage, when))
            return self._value


def overview(storage, health: dict[str, Any], runs: dict[str, dict[str, Any]],
             now: Callable[[], datetime] = _utcnow, cache: CountCache | None = None,
             fresh: bool = False) -> dict[str, Any]:
    """Counts per flow and state for 24 h / 7 d / 30 d, the health checks, the scheduled jobs' last runs.
    With a `cache`, counts younger than its ttl are reused unless `fresh`; `counted` says when they were."""
    when = now()
    counted, counts = cache.get(storage, when, fresh) if cache is not None else (when, count_jobs(storage, when))
    return {
        "now": _iso(when),
        "counted": _iso(counted),
        "flows": [{"kind": f, "name": FLOW_NAMES[f]} for f in FLOWS],
        "states": list(STATES),
        "counts": counts,
        "health": {"status": health.get("status"), "failed": health.get("failed", []),
                   "checks": health.get("checks", {})},
        "runs": [{"name": name, "title": title, **{k: _iso(v) for k, v in runs.get(name, {}).items()},
                  "ran": name in runs} for name, title in RUN_NAMES.items()],
    }


# -- the list ------------------------------------------------------------------------------------------
def encode_token(token: dict | None) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadQuery("the page token is not one this console handed out; start again from the first page")
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadQuery("the page token is not one this console handed out; start again from the first page")
    return value


def _prefix_end(text: str) -> str:
    """The smallest string greater than every string starting with `text`."""
    return text[:-1] + chr(ord(text[-1]) + 1)


def build_filter(kind: str | None, state: str | None, since: datetime | None,
                 search: str | None) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    if kind:
        clauses.append("PartitionKey eq @kind")
        params["kind"] = kind
    if state:
        if state == IN_PROGRESS:
            clauses.append("state ne @done and state ne @failed and state ne @dead and state ne @other")
            params.update(done=DONE, failed=FAILED, dead=DEAD_LETTERED, other=OTHER)
        elif state in (DONE, FAILED, DEAD_LETTERED):
            clauses.append("state eq @state")
            params["state"] = state
        else:
            raise BadQuery(f"state must be one of {', '.join(STATES)}")
    if since is not None:
        clauses.append("updated ge @since")
        params["since"] = since
    if search:
        params["q"], params["q_end"] = search, _prefix_end(search)
        # (a space before each ")": the SDK substitutes @names split on whitespace)
        ors = [f"({f} ge @q and {f} lt @q_end )" for f in SEARCH_FIELDS]
        ors.append("RowKey eq @q")
        if kind in (None, "invoice"):  # the invoice job's id derives from the Basware invoice id
            params["q_job"] = job_id("invoice", search)
            ors.append("RowKey eq @q_job")
        clauses.append("(" + " or ".join(ors) + " )")
    return " and ".join(clauses), params


def list_line(row: dict) -> dict[str, Any]:
    """One line of the list: both sides' ids and where the record stands."""
    return {
        "kind": row["PartitionKey"], "id": row["RowKey"], "state": row.get("state"),
        "bucket": bucket(row.get("state")) or row.get("state"),
        "basware_id": row.get("invoice_id") or row.get("basware_id") or None,
        "invoice_number": row.get("invoice_number") or row.get("vendor_document_number") or None,
        "vendor": row.get("vendor_number") or row.get("supplier_code") or None,
        "bc_number": row.get("bc_number") or None,
        "attempts": row.get("attempts") or 0, "last_error": row.get("last_error") or None,
        "created": _iso(row.get("created")), "updated": _iso(row.get("updated")),
        "replay_pending": row.get("replay") == "pending",
    }


def search_records(storage, *, kind: str | None = None, state: str | None = None, window: str | None = None,
                   search: str | None = None, limit: int = 50, token: str | None = None,
                   now: Callable[[], datetime] = _utcnow, scrub: Callable[[str], str] = lambda t: t) -> dict:
    """One page of jobs matching the filters, and the token of the next page (None at the end).

    A filtered query may come back with fewer rows than asked for and a continuation token (the
    service stops after 1,000 rows or 5 seconds of scanning, Microsoft Learn "Query timeout and
    pagination"), so this asks again for what is missing, with a fresh page size, until the page is
    full or the table is read to the end; each request still reads at most `limit` matching rows.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise BadQuery(f"limit must be from 1 to {MAX_PAGE}")
    if window and window not in WINDOWS:
        raise BadQuery(f"time must be one of {', '.join(WINDOWS)}")
    if kind is not None and (not kind or len(kind) > 40 or not kind.replace("_", "").isalnum()):
        raise BadQuery("kind names a flow, e.g. invoice, payment, masterdata")
    search = (search or "").strip() or None
    if search and len(search) > 100:
        raise BadQuery("search for at most 100 characters")
    since = now() - WINDOWS[window] if window else None
    query, params = build_filter(kind or None, state or None, since, search)
    table = storage.table(JOBS)
    found: list[dict] = []
    continuation = decode_token(token)
    requests = 0
    while True:
        requests += 1
        pages = (table.query_entities(query, parameters=params, select=LIST_FIELDS,
                                      results_per_page=limit - len(found)) if query else
                 table.list_entities(select=LIST_FIELDS, results_per_page=limit - len(found)))
        pager = pages.by_page(continuation_token=continuation)
        page = next(pager, None)
        for row in page or ():
            found.append(row)
        continuation = pager.continuation_token
        if len(found) >= limit or not continuation or requests >= 20:
            break
    lines = [list_line(r) for r in found]
    for line in lines:
        if line["last_error"]:
            line["last_error"] = scrub(line["last_error"])
    return {"records": lines, "count": len(lines), "next": encode_token(continuation),
            "filters": {"kind": kind or None, "state": state or None, "time": window or None, "q": search}}


# -- one record ----------------------------------------------------------------------------------------
BC_PAGES = {  # Business Central page ids (Microsoft Learn, "Purchase Invoice" page 51 etc. in the base app)
    ("purchaseInvoices", True): 138, ("purchaseInvoices", False): 51,
    ("purchaseCreditMemos", True): 140, ("purchaseCreditMemos", False): 52,
}


def bc_link(tenant: str, environment: str, company_name: str | None, entity: str | None, number: str | None,
            posted: bool) -> str | None:
    """The BC web client URL of a document: `https://businesscentral.dynamics.com/<tenant>/<environment>/
    ?company=<name>&page=<id>&filter='No.' IS '<number>'` (Microsoft Learn, "Web client URL").
    Without the company's name BC opens the user's last company, so no link is offered then."""
    page = BC_PAGES.get((entity or "purchaseInvoices", posted))
    if not (tenant and environment and company_name and number and page):
        return None
    flt = quote("'No.' IS '" + number + "'", safe="")
    return (f"https://businesscentral.dynamics.com/{quote(tenant, safe='')}/{quote(environment, safe='')}/"
            f"?company={quote(company_name, safe='')}&page={page}&filter={flt}")


def record_view(jobs, audit, kind: str, id: str, *, scrub: Callable[[str], str] = lambda t: t,
                bc_tenant: str = "", bc_environment: str = "",
                company_name: Callable[[str], str | None] = lambda cid: None,
                now: Callable[[], datetime] = _utcnow) -> dict | None:
    """The records API's record (shared/ops/admin.py `show_record`, unchanged) plus what the page
    shows at the top: both sides' ids, links, the message the clerk was sent, and whether the
    records API would replay it now (`replay_pending`, the same rule `replay_record` applies).
    `id` may be any id the records API resolves (`find_records`); the first match is shown."""
    from shared.ops.admin import REPLAYABLE, find_records, replay_pending, show_record

    found = find_records(jobs, kind, id)
    record = show_record(jobs, audit, kind, found[0].id, scrub=scrub) if found else None
    job = jobs.get(kind, record["id"]) if record is not None else None
    if record is None or job is None:
        return None
    fields = record.get("fields", {})
    posted = (fields.get("bc_status") or "") not in ("", "Draft") or record.get("state") == DONE
    company = fields.get("bc_company_id") or record.get("bc_company_id")
    name = company_name(company) if company else None
    number = fields.get("bc_number") or None
    clerk = fields.get("response_message") if fields.get("response_success") is False else None
    pending = replay_pending(job, now())
    record["view"] = {
        "flow": FLOW_NAMES.get(kind, kind),
        "bucket": bucket(record.get("state")) or record.get("state"),
        "basware_id": fields.get("invoice_id") or fields.get("basware_id") or None,
        "invoice_number": fields.get("invoice_number") or fields.get("vendor_document_number") or None,
        "vendor": fields.get("vendor_number") or fields.get("supplier_code") or None,
        "bc_number": number, "bc_id": fields.get("bc_id") or None, "bc_company": name or company,
        "bc_url": bc_link(bc_tenant, bc_environment, name, fields.get("bc_entity"), number, posted),
        # Basware P2P publishes no URL form for a document in its user interface (only the API's
        # /v1/accountingDocuments/{invoiceId}); the page shows the id to search for instead.
        "basware_url": None,
        "clerk_message": clerk or None,
        "last_error": record.get("last_error"),
        "replay_pending": pending,
        "replayable": record.get("state") in REPLAYABLE and not pending,
    }
    return record
