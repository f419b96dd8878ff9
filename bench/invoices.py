"""Benchmark: the invoice flow, Basware -> BC. Prints figures; asserts nothing.

    python -m bench.invoices                    # 100 steady-state invoices; 600 throttled on 1, then 2 instances
    python -m bench.invoices --steady 50 --throttled 400 --window-seconds 20 --service-ms 150 --instances 2

The real function_app.py under devhost (`python -m devhost --no-timers`, its own process: HTTP
webhook, `invoice-transfers` and `basware-callbacks` queue triggers with host.json's batchSize 4 /
newBatchThreshold 2, so up to 6 transfers and 6 callbacks at once), a fresh Azurite, the Basware and
BC sandboxes in this process. Invoices are seeded approved invoices (1-4 coding rows, every tenth a
credit note), each announced by Basware's signed webhook.

1. Requests per invoice in steady state: after a warm-up batch (which loads the ledger cache and
   both tokens), a batch of invoices is transferred with BC unthrottled; every HTTP request the two
   sandboxes saw is counted by endpoint and divided by the batch size. Token requests and
   master-data reads are shown apart (they do not grow with the invoice count).
2. Throughput against BC's limits (Microsoft Learn, "Working with API limits in Dynamics 365 Business Central"): the BC sandbox's throttle is set to
   BC's per-principal limits, 5 concurrent requests (extra ones wait in BC's queue of 95) and a
   sliding window of 20 requests per second, and every BC request is given a service time
   (`processing_delay_ms`, default 150 ms, spent inside the concurrency slot). The window is 6,000
   requests per 300 s in BC; by default it is scaled to 600 per 30 s (same rate, 1/10 the
   length) so that the window limit binds within a bounded run: the burst-then-stall pattern a
   backlog produces is then 10x shorter than in BC (`--window-seconds 300` runs the real thing and
   takes well over 10 minutes). Ceiling = min(rate, 5 / service time) / BC requests per invoice
   (from 1.); throughput is counted over whole windows from the first BC request.
   Afterwards every invoice is checked: posted exactly once in BC, one successful transfer
   response, no draft left, no dead-lettered job; 429s returned by BC are counted.
   The throttled run is repeated with the app scaled out (`--instances`, default 1 then 2 app
   processes on the same queues, as the Functions platform adds instances for a queue backlog): one
   instance's own concurrency (6 transfers at a time) can be below what BC's limits allow.
"""
from __future__ import annotations

import argparse
import os
import re
import time
from collections import Counter

from bench.common import Stack, Timer, api_calls, cpu_line, header, last_seq, mb

from sandbox import seed  # noqa: E402

BC_RATE = 6000 / 300  # requests per second per principal (Microsoft Learn, "Working with API limits in Dynamics 365 Business Central")
BC_CONCURRENT = 5
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def endpoint(call) -> str:
    """`METHOD /path` with ids replaced, the BC prefix (/v2.0/{tenant}/{env}/api/v2.0) dropped."""
    path = call.path
    if path.startswith("/_presigned/"):
        return "GET /_presigned/{object} (redirect target)"
    path = re.sub(r"^/v2\.0/[^/]+/[^/]+/api/v2\.0", "", path)
    path = GUID.sub("{id}", path)
    path = re.sub(r"^/v1/accountingDocuments/[^/]+", "/v1/accountingDocuments/{invoiceId}", path)
    path = re.sub(r"^/[^/]+/oauth2/v2\.0/token$", "/{tenant}/oauth2/v2.0/token", path)
    return f"{call.method} {path}"


DOCUMENT_ID = re.compile(r"/purchase(?:Invoices|CreditMemos)\(([0-9a-fA-F-]{36})\)")
TOKEN_ENDPOINTS = {"POST /v1/tokens", "POST /{tenant}/oauth2/v2.0/token"}
MASTER_DATA = re.compile(r"/(vendors|accounts|dimensions|dimensionValues|companyInformation)$")


def classify(calls) -> tuple[Counter, Counter, Counter]:
    """(per-invoice endpoints, token endpoints, master-data reads)."""
    per_invoice, tokens, master = Counter(), Counter(), Counter()
    for call in calls:
        name = endpoint(call)
        if name in TOKEN_ENDPOINTS:
            tokens[name] += 1
        elif MASTER_DATA.search(name):
            master[name] += 1
        else:
            per_invoice[name] += 1
    return per_invoice, tokens, master


def documents(count: int, offset: int = 0, images: bool = False) -> list[dict]:
    """Seeded approved invoices number `offset` .. `offset + count - 1` (distinct ids and numbers);
    `images`: each lists its invoice image (and some a delivery note or a confidential file)."""
    return seed.approved_invoices(offset + count, images=images)[offset:]


def transfer(stack: Stack, docs: list[dict], timeout: float, out=print) -> tuple[bool, float]:
    stack.basware.add_documents(docs)
    ids = [d["invoiceId"] for d in docs]
    with Timer() as t:
        delivery = stack.deliver_in_background(ids)
        done, _ = stack.wait_transferred(ids, timeout)
        delivery.join(30)
    if not done:
        out(f"  NOT FINISHED within {timeout:.0f}s: {stack.statuses(ids)}")
    return done, t.seconds


def check_outcome(stack: Stack, docs: list[dict]) -> dict:
    """Posted exactly once, one successful transfer response, no drafts; dead-lettered jobs."""
    from shared.store.jobs import DEAD_LETTERED, JobStore
    from shared.store.storage import Storage

    by_number: dict[str, list] = {}
    for doc in stack.bc.documents.values():
        by_number.setdefault(doc.vendor_document_number, []).append(doc)
    posted_once = wrong = 0
    for doc in docs:
        found = by_number.get(doc["invoiceNumber"].upper(), [])
        if len(found) == 1 and found[0].posted:
            posted_once += 1
        else:
            wrong += 1
    drafts = sum(1 for d in stack.bc.documents.values() if not d.posted)
    one_success = sum(1 for doc in docs
                      if [r["success"] for r in stack.basware.document(doc["invoiceId"])["transferResponses"]] == [True])
    jobs = JobStore(Storage(stack.azurite.connection_string))
    dead = sum(1 for _ in jobs.iter("invoice", DEAD_LETTERED))
    return {"invoices": len(docs), "posted_exactly_once": posted_once, "not_posted_once": wrong,
            "drafts_left": drafts, "one_successful_response": one_success, "dead_lettered": dead}


def steady_state(stack: Stack, count: int, warmup: int, out=print) -> dict:
    out(f"1. requests per invoice in steady state ({count} invoices after {warmup} warm-up; BC unthrottled)")
    transfer(stack, documents(warmup), 120, out)
    bc_mark, bw_mark = last_seq(stack.bc), last_seq(stack.basware)
    docs = documents(count, warmup)
    cpu = stack.cpu_meter()
    done, seconds = transfer(stack, docs, max(120, count * 2), out)
    cpu_ms = cpu.per_item_ms(count)
    bc_inv, bc_tok, bc_md = classify(api_calls(stack.bc, bc_mark))
    bw_inv, bw_tok, bw_md = classify(api_calls(stack.basware, bw_mark))
    bc_per = sum(bc_inv.values()) / count
    bw_per = sum(bw_inv.values()) / count
    redirect = sum(n for name, n in bw_inv.items() if name.startswith("GET /_presigned/"))
    bw_api_per = (sum(bw_inv.values()) - redirect) / count
    out(f"   {count} invoices transferred in {seconds:.1f}s ({count / seconds * 60:.0f} invoices/min unthrottled, "
        f"{'all' if done else 'NOT all'} Transferred)")
    out(f"   {cpu_line(cpu_ms, 'invoice')} ({sum(cpu_ms.values()) * count / 1000 / seconds:.2f} of "
        f"{os.cpu_count()} CPUs busy)")
    out(f"   BC: {bc_per:.2f} requests per invoice (goal <= 3)")
    for name, n in sorted(bc_inv.items(), key=lambda kv: -kv[1]):
        out(f"      {n / count:5.2f}  {name}")
    out(f"   Basware: {bw_api_per:.2f} API requests per invoice (goal <= 3), plus {redirect / count:.2f} GET of the "
        f"pre-signed redirect target (S3, not the API): {bw_per:.2f} HTTP requests in all")
    for name, n in sorted(bw_inv.items(), key=lambda kv: -kv[1]):
        out(f"      {n / count:5.2f}  {name}")
    out(f"   apart: token requests BC {sum(bc_tok.values())}, Basware {sum(bw_tok.values())}; BC master-data reads "
        f"{sum(bc_md.values())} (ledger cache, loaded in the warm-up; TTL 5 min)")
    dims = default_dimension_figures(stack, docs, bc_mark, out)
    return {"default_dimensions": dims, "invoices": count, "seconds": round(seconds, 2), "bc_per_invoice": round(bc_per, 3),
            "basware_api_per_invoice": round(bw_api_per, 3), "basware_http_per_invoice": round(bw_per, 3),
            "bc_endpoints": dict(bc_inv), "basware_endpoints": dict(bw_inv),
            "tokens": {"bc": sum(bc_tok.values()), "basware": sum(bw_tok.values())},
            "bc_master_data_reads": sum(bc_md.values()), "cpu_ms_per_invoice": cpu_ms}


def _inherited(vendor: str, account: str) -> dict[str, str]:
    """BC's default dimensions on a new line: the vendor's, then the G/L account's over them."""
    out = {dim: value for dim, value, _ in seed.VENDOR_DEFAULT_DIMENSIONS.get(vendor, []) if value}
    out.update({dim: value for dim, value, _ in seed.ACCOUNT_DEFAULT_DIMENSIONS.get(account, []) if value})
    return out


def differing_dimensions(doc: dict) -> tuple[bool, int]:
    """(touches a default, number of line dimensions coded differently from what BC inherits)."""
    fields = {m["dimension"]: m["basware_field"] for m in seed.DIMENSION_MAP}
    touches, differing = False, 0
    for row in doc["codingRows"]:
        for dim, value in _inherited(doc["supplierCode"], row["accountCode"]).items():
            coded = row.get(fields[dim])
            if coded:
                touches = True
                differing += coded != value
    return touches, differing


def default_dimension_figures(stack: Stack, docs: list[dict], bc_mark: int, out=print) -> dict:
    """BC requests per invoice where the coding agrees with the default dimensions BC inherits, and
    per line dimension coded differently (each costs a PATCH of the line's dimension set line)."""
    by_number = {d["invoiceNumber"].upper(): d for d in docs}
    per_doc: Counter = Counter()
    creates_ok = clashes = index_reads = 0
    for call in api_calls(stack.bc, bc_mark):
        if "/purchase" not in call.path:
            continue
        if call.method == "GET" and call.query.get("$filter") == ["status eq 'Draft'"]:
            index_reads += 1
            continue
        if call.method == "POST" and re.search(r"/purchase(Invoices|CreditMemos)$", call.path):
            creates_ok += call.status == 201
            clashes += call.status == 400
            continue
        found = DOCUMENT_ID.search(call.path)
        doc = stack.bc.documents.get(found.group(1).lower()) if found else None
        if doc is not None and doc.vendor_document_number in by_number:
            per_doc[doc.vendor_document_number] += 1
    agree = [n for n, d in by_number.items() if differing_dimensions(d) == (True, 0)]
    differ = [(n, differing_dimensions(d)[1]) for n, d in by_number.items() if differing_dimensions(d)[1]]
    agree_per = (sum(per_doc[n] for n in agree) + len(agree)) / len(agree) if agree else None  # + its create
    extra = sum(per_doc[n] + 1 - 3 for n, _ in differ)
    differing_total = sum(k for _, k in differ)
    per_dim = extra / differing_total if differing_total else None
    out(f"   default dimensions: {len(agree)} invoices coded as BC inherits: "
        f"{agree_per:.2f} BC requests each (goal <= 3)" if agree_per is not None else
        "   default dimensions: no invoice coded as BC inherits in this batch")
    if per_dim is not None:
        out(f"   {len(differ)} invoices with {differing_total} line dimensions coded differently from the default: "
            f"{per_dim:.2f} more BC requests per differing line dimension (goal <= 1)")
    out(f"   apart: {clashes} deep inserts refused for a clash with a G/L account default not learned yet "
        f"(learned once per process), {index_reads} reads of the drafts index (once a minute)")
    return {"agree_invoices": len(agree), "bc_per_agreeing_invoice": agree_per, "differ_invoices": len(differ),
            "differing_line_dimensions": differing_total, "bc_extra_per_differing_dimension": per_dim,
            "clashes": clashes, "draft_index_reads": index_reads, "creates": creates_ok}


def throttled(stack: Stack, count: int, offset: int, bc_per_invoice: float, window: float, service_ms: float,
              out=print, images: bool = False) -> dict:
    max_requests = int(round(BC_RATE * window))
    out(f"2. throughput with BC throttled: {BC_CONCURRENT} concurrent (queue 95), {max_requests} requests per "
        f"{window:.0f}s sliding window (= {BC_RATE:.0f}/s, BC: 6,000 per 300 s), {service_ms:.0f} ms service time per "
        f"BC request; {count} invoices")
    ceiling_rps = min(BC_RATE, BC_CONCURRENT / (service_ms / 1000.0))
    ceiling_per_min = ceiling_rps / bc_per_invoice * 60
    out(f"   ceiling = min({BC_RATE:.0f} req/s, {BC_CONCURRENT} / {service_ms / 1000:.3f} s = "
        f"{BC_CONCURRENT / (service_ms / 1000):.1f} req/s) / {bc_per_invoice:.2f} BC requests per invoice = "
        f"{ceiling_per_min:.0f} invoices/min")
    stack.bc.configure({"processing_delay_ms": service_ms})
    stack.bc.throttle.configure(max_requests=max_requests, window_seconds=window, max_concurrent=BC_CONCURRENT,
                                max_queue=95, retry_after=1)
    rejections_before = stack.bc.throttle.rejections
    stack.bc.throttle.peak_connections = 0
    bc_mark = last_seq(stack.bc)
    docs = documents(count, offset, images)
    expected = count * bc_per_invoice / ceiling_rps
    cpu = stack.cpu_meter()
    done, seconds = transfer(stack, docs, max(300.0, expected * 4), out)
    cpu_ms = cpu.per_item_ms(count)
    stack.bc.throttle.configure(max_requests=None, max_concurrent=None)
    stack.bc.configure({"processing_delay_ms": 0})

    calls = api_calls(stack.bc, bc_mark)
    flow = [c for c in calls if endpoint(c) not in TOKEN_ENDPOINTS]
    t0 = flow[0].time if flow else time.time()
    posts = sorted(c.time for c in flow if c.method == "POST" and c.path.endswith("/Microsoft.NAV.post")
                   and c.status == 204)
    admitted = [c.time for c in flow if c.status != 429]
    throttled_429 = sum(1 for c in calls if c.status == 429)
    windows = int((posts[-1] - t0) // window) if posts else 0
    figures = {"invoices": count, "window_seconds": window, "max_requests": max_requests, "service_ms": service_ms,
               "ceiling_invoices_per_min": round(ceiling_per_min, 1), "seconds": round(seconds, 2),
               "bc_429": throttled_429, "bc_requests": len(flow), "bc_admitted": len(admitted),
               "throttle_rejections": stack.bc.throttle.rejections - rejections_before,
               "bc_peak_connections": stack.bc.throttle.peak_connections}
    if windows >= 1:
        span = windows * window
        in_span = sum(1 for t in posts if t < t0 + span)
        per_min = in_span / span * 60
        admitted_rate = sum(1 for t in admitted if t < t0 + span) / span
        figures.update(measured_windows=windows, invoices_per_min=round(per_min, 1),
                       fraction_of_ceiling=round(per_min / ceiling_per_min, 3),
                       bc_admitted_per_second=round(admitted_rate, 2))
        out(f"   {per_min:.0f} invoices/min over {windows} whole window(s) ({span:.0f}s from the first BC request) = "
            f"{per_min / ceiling_per_min:.2f} of the ceiling (goal >= 0.9); BC admitted {admitted_rate:.1f} req/s")
    else:
        out("   the run was shorter than one window: no steady-state figure (raise --throttled)")
    whole = len(posts) / (posts[-1] - t0) * 60 if len(posts) > 1 else 0.0
    figures["invoices_per_min_whole_run"] = round(whole, 1)
    out(f"   whole run: {len(posts)} posted in {seconds:.1f}s from the first webhook ({whole:.0f} invoices/min from "
        f"the first BC request to the last post); BC requests {len(flow)} ({len(flow) / count:.2f} per invoice incl. "
        f"retries), 429s returned {throttled_429}; at most {stack.bc.throttle.peak_connections} requests at BC at once "
        f"(processing + queued; BC_MAX_CONCURRENT_REQUESTS={stack.env.get('BC_MAX_CONCURRENT_REQUESTS', '10')})")
    out(f"   {cpu_line(cpu_ms, 'invoice')} ({sum(cpu_ms.values()) * count / 1000 / seconds:.2f} of "
        f"{os.cpu_count()} CPUs busy)")
    figures["cpu_ms_per_invoice"] = cpu_ms
    outcome = check_outcome(stack, docs)
    figures["outcome"] = outcome
    handled = (outcome["posted_exactly_once"] == count and outcome["one_successful_response"] == count
               and not outcome["drafts_left"] and not outcome["dead_lettered"] and done)
    figures["all_429s_handled"] = handled
    out(f"   outcome: {outcome['posted_exactly_once']}/{count} posted exactly once, "
        f"{outcome['one_successful_response']}/{count} with exactly one (successful) transfer response, "
        f"{outcome['drafts_left']} drafts left, {outcome['dead_lettered']} dead-lettered jobs -> "
        f"{f'every invoice made it, {throttled_429} 429s handled' if handled else 'NOT every invoice made it'}")
    return figures


def run(steady: int = 100, throttled_count: int = 600, warmup: int = 6, window: float = 30.0,
        service_ms: float = 150.0, instances=(1, 2), out=print, budget: str | None = None) -> dict:
    info = header("invoices: Basware -> BC under devhost", out)
    figures: dict = {"machine": info, "throttled": {}}
    for n, count in enumerate(instances):
        overrides = {"BC_MAX_CONCURRENT_REQUESTS": budget} if budget is not None else {}
        with Stack(name="invoices", instances=count, env_overrides=overrides) as stack:
            out(f"app: function_app.py under devhost, {count} instance(s) (webhook; queue triggers with host.json "
                f"batchSize 4 / newBatchThreshold 2 = up to 6 transfers + 6 callbacks at once per instance; timers "
                f"off); fresh Azurite; sandboxes in this process")
            if n == 0:
                figures["steady"] = steady_state(stack, steady, warmup, out)
            else:
                transfer(stack, documents(warmup), 120, out)
            if throttled_count:
                figures["throttled"][count] = throttled(stack, throttled_count, warmup + steady,
                                                        figures["steady"]["bc_per_invoice"], window, service_ms, out)
            peaks = stack.app_peak_rss()
            out(f"   worker process(es): peak RSS {', '.join(mb(p) for p in peaks)}")
            figures.setdefault("worker_peak_rss_bytes", {})[count] = peaks
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=int, default=100, help="invoices counted for requests per invoice")
    parser.add_argument("--warmup", type=int, default=6, help="invoices transferred first (cache, tokens)")
    parser.add_argument("--throttled", type=int, default=600, help="invoices for the throttled run (0: skip)")
    parser.add_argument("--window-seconds", type=float, default=30.0,
                        help="sliding window length; requests per window = 20/s x this (BC: 300)")
    parser.add_argument("--service-ms", type=float, default=150.0, help="BC service time per request")
    parser.add_argument("--instances", type=int, nargs="*", default=[1, 2],
                        help="app processes on the same queues, one throttled run per value (default 1 2: one "
                             "instance, then the function app scaled out to two)")
    parser.add_argument("--budget", default=None,
                        help="BC_MAX_CONCURRENT_REQUESTS for the app (default: the app's default; 0: no shared budget)")
    args = parser.parse_args(argv)
    return run(args.steady, args.throttled, args.warmup, args.window_seconds, args.service_ms, tuple(args.instances),
               budget=args.budget)


if __name__ == "__main__":
    main()
