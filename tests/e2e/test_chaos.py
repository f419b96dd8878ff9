"""Chaos: hundreds of approved invoices through the real app while things go wrong at random.

The real function_app.py runs under the local Functions host (`python -m devhost`, its own process,
host.json's batch sizes, poison queues, the poll timer every 2 minutes), on Azurite, against the Basware
and BC sandboxes over real HTTP. Basware announces every invoice with a signed webhook, spread over
about two minutes (as invoices get approved, ~3.8 per second). Meanwhile:

- duplicate webhooks: 20% of the invoices are announced twice (half as two simultaneous copies of
  one notification, half as a second notification up to 30 s later);
- BC answers 10% of API requests with 429 (Retry-After: 1) and 5% with 503, unprocessed
  (`faults.add_random`), and 2% of its successful writes are processed but answered 502 (a gateway
  that lost BC's answer: the draft or posting exists, the connector is not told);
- Basware answers 5% of transfer responses with a 5xx: half refused (503), half processed but
  answered 502 (the response is on the invoice; the connector is not told);
- the worker process is killed (SIGKILL of the devhost process group) between creating and posting
  for 2% of the invoices: half the moment BC has created the draft (before its answer leaves), half
  the moment their post reaches BC (before it is processed). Whatever else was in flight dies with
  it. The host is started again on the same port; the queue redelivers the dead host's messages after
  the in-flight visibility (DEVHOST_INFLIGHT_VISIBILITY_SECONDS=5); webhooks that found it down are
  delivered again, as Basware retries;
- tokens expire every minute: both sandboxes issue 60-second tokens and their clocks run 30 s ahead
  every 5 s, so every token dies ~10 s after issue while the connector expects to use it for 30 s;
- a BC outage for two documents: their drafts are refused (503) until their jobs are dead-lettered
  (5 deliveries), which the operator sees in the admin API's list and replays through it (or, so
  that the test stays bounded, until OUTAGE_MAX_SECONDS have passed). Any job dead-lettered by the
  other faults is listed and replayed the same way.

Then: every invoice posted exactly once in BC; no draft left; exactly one (successful) transfer
response per invoice, carrying the BC number; no job lost (each is done, or dead-lettered, listed by
the admin API and replayed through it, and then done); the audit trail of each invoice tells its
story in order, from reading the document to the answer Basware got.

BC as it really is (a separate block of faults below, BC_REALISM): 5% of the draft creates and 5% of
the posts are committed by BC after the client gave up on them (the connection is dropped after
LATE_DELAY s, BC commits at LATE_COMMIT_AFTER s; the connector waits out BC_LATE_COMMIT_WINDOW_SECONDS,
shortened to LATE_COMMIT_WINDOW); the seeded invoices include vendors and a G/L account with default
dimensions (about 10% of the invoices, half of their rows coded differently from the default) and
gross-price vendors (about 6%). Afterwards every posted line also carries exactly the coded
dimension values.

CHAOS_INVOICES (default 500) scales the run; CHAOS_SEED picks which invoices are duplicated or
killed and seeds the fault draws (thread timing still varies from run to run). About 3.5 minutes for
500 invoices on a 2-core machine (most of it is the invoices arriving and the outage's 5 deliveries).
"""
from __future__ import annotations

import heapq
import itertools
import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from sandbox import seed
from sandbox.basware import BaswareSandbox
from sandbox.bc import BcSandbox
from sandbox.common import DropConnection, SandboxServer
from scripts.local_env import connector_env
from shared.store.audit import AuditLog
from shared.flows.invoices.transfer import KIND, invoice_job_id
from shared.store.jobs import DONE, JobStore
from shared.store.storage import BASWARE_CALLBACKS, INVOICE_TRANSFERS, POISON_SUFFIX, Storage

N = int(os.environ.get("CHAOS_INVOICES", "500"))
SEED = int(os.environ.get("CHAOS_SEED", "20261123"))
DUPLICATE_RATE = 0.20
BC_429_RATE, BC_5XX_RATE, BC_LOST_ANSWER_RATE = 0.10, 0.05, 0.02
BASWARE_RESPONSE_5XX_RATE = 0.05  # half refused, half processed with the answer lost
KILL_RATE = 0.02
OUTAGE_INVOICES = 2  # refused by BC until dead-lettered, then replayed through the admin API
OUTAGE_MAX_SECONDS = 170  # ... or until this long after they arrive, whichever comes first
WEBHOOK_SECONDS = N * 0.26  # Basware announces the invoices over this long (~3.8 per second)
TOKEN_LIFETIME, CLOCK_STEP, CLOCK_EVERY = 60, 30, 5.0
# -- BC_REALISM: late commits (sandbox/bc/latecommit.py); default dimensions and gross-price vendors
#    come with the seed (sandbox/seed.py VENDOR_DEFAULT_DIMENSIONS, PRICES_INCLUDING_VAT_VENDORS)
BC_LATE_CREATE_RATE, BC_LATE_POST_RATE = 0.05, 0.05
LATE_DELAY, LATE_COMMIT_AFTER = 0.5, 2.0
LATE_COMMIT_WINDOW = "8"  # BC's is 16 minutes; the sandbox commits within seconds
FUNCTION_KEY = "chaos-function-key"
MAIN_PHASE_SECONDS = float(os.environ.get("CHAOS_TIMEOUT", str(max(240, N * 0.6))))
API_PATH = r"/api/v2\.0/"
QUIET = {name: "0 0 0 1 1 *" for name in ("MASTERDATA_SCHEDULE", "PAYMENT_SCHEDULE", "PO_SYNC_SCHEDULE",
                                          "SUBSCRIPTION_SCHEDULE", "RETENTION_SCHEDULE")}
_POST = re.compile(r"/(purchaseInvoices|purchaseCreditMemos)\(([0-9a-fA-F-]{36})\)/Microsoft\.NAV\.post$")
_CREATE = re.compile(r"/companies\([^)]*\)/(purchaseInvoices|purchaseCreditMemos)$")


# -- sandboxes that misbehave on purpose ------------------------------------------------------------
class ChaosBc(BcSandbox):
    """BC that loses answers to successful writes, and kills the worker between create and post."""

    def __init__(self, rng: random.Random, kill_after_create: set[str], kill_before_post: set[str], **kw) -> None:
        super().__init__(**kw)
        self.rng = rng
        self.kill_after_create = kill_after_create
        self.kill_before_post = kill_before_post
        self.killed: list[str] = []
        self.outage: set[str] = set()  # vendor invoice numbers whose drafts BC refuses (503) for now
        self.lost_answers = 0
        self.on_kill = lambda why: None
        self._chaos_lock = threading.Lock()

    def _should_kill(self, number: str, wanted: set[str], why: str) -> bool:
        with self._chaos_lock:
            if number not in wanted:
                return False
            wanted.discard(number)  # once per invoice: the redelivery must get through
            self.killed.append(f"{why} {number}")
        self.on_kill(f"{why} {number}")
        return True

    def dispatch(self, req):
        if req.method == "POST" and _CREATE.search(req.path) and self.outage:
            body = req.json() or {}
            if str(body.get("vendorInvoiceNumber") or body.get("vendorCreditMemoNumber") or "").upper() in self.outage:
                return self.error_response(503, "Internal_TenantUnavailable", "The tenant is unavailable (chaos).",
                                           {"Retry-After": "1"})
        post = _POST.search(req.path) if req.method == "POST" else None
        if post:
            doc = self.documents.get(post.group(2).lower()) or self.documents.get(post.group(2))
            number = doc.vendor_document_number.upper() if doc is not None else ""
            # An invoice to be killed after its create, whose create BC committed late (the connector
            # found the draft, no 201 went out), is killed before its post instead.
            wanted = self.kill_before_post if number in self.kill_before_post else self.kill_after_create
            if doc is not None and self._should_kill(number, wanted, "before posting"):
                raise DropConnection()
        response = super().dispatch(req)
        if req.method == "POST" and response.status == 201 and _CREATE.search(req.path):
            body = req.json() or {}
            number = str(body.get("vendorInvoiceNumber") or body.get("vendorCreditMemoNumber") or "").upper()
            if self._should_kill(number, self.kill_after_create, "after creating the draft of"):
                raise DropConnection()
        if (req.method in ("POST", "PATCH", "DELETE") and 200 <= response.status < 300
                and re.search(API_PATH, req.path) and self.rng.random() < BC_LOST_ANSWER_RATE):
            with self._chaos_lock:
                self.lost_answers += 1
            return self.error_response(502, "BadGateway", "The gateway lost the answer (chaos).")
        return response


class ChaosBasware(BaswareSandbox):
    """Basware that processes some transfer responses and then loses the answer."""

    def __init__(self, rng: random.Random, **kw) -> None:
        super().__init__(**kw)
        self.rng = rng
        self.lost_answers = 0
        self._chaos_lock = threading.Lock()

    def dispatch(self, req):
        response = super().dispatch(req)
        if (req.method == "POST" and req.path.endswith("/transferResponses") and response.status == 200
                and self.rng.random() < BASWARE_RESPONSE_5XX_RATE / 2):
            with self._chaos_lock:
                self.lost_answers += 1
            return self.error_response(502, "BadGateway", "The gateway lost the answer (chaos).")
        return response


def serve(app):
    server = SandboxServer(app).start()
    app.base_url = server.base_url
    return server


# -- the story an invoice's audit trail must tell, in this order ---------------------------------------
MILESTONES = [
    ("read the document", {("read_document", "ok")}),
    ("acknowledged it", {("acknowledge", "ok"), ("acknowledge", "already")}),
    ("mapped it", {("map", "ok")}),
    ("has a draft", {("create_draft", "ok"), ("create_draft", "recovered"), ("find_document", "reuse")}),
    ("posted it", {("post", "ok"), ("post", "already"), ("find_document", "posted")}),
    ("queued the answer", {("respond", "queued"), ("respond", "requeued")}),
    ("Basware has the answer", {("respond", "sent"), ("respond", "landed"), ("respond", "reconciled"),
                                ("reconcile", "done")}),
]


def story_problem(trail: list[dict], invoice_id: str) -> str | None:
    steps = [(r.get("step"), r.get("outcome")) for r in trail]
    times = [r["RowKey"] for r in trail]
    if times != sorted(times):
        return "rows out of order"
    if any(r.get("basware_id") not in (None, invoice_id) for r in trail):
        return "a row names another Basware invoice"
    position = 0
    for name, accepted in MILESTONES:
        while position < len(steps) and steps[position] not in accepted:
            position += 1
        if position == len(steps):
            return f"never {name}: {steps}"
        position += 1
    return None


# -- the run -----------------------------------------------------------------------------------------
class Webhooks:
    """Basware's side: deliver each notification until the app takes it (Basware retries)."""

    def __init__(self, basware: BaswareSandbox, url: str, rng: random.Random) -> None:
        self.basware, self.url, self.rng = basware, url, rng
        self.delivered = Counter()
        self.refused = 0
        self.pending = 0
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(6, thread_name_prefix="chaos-webhooks")
        self.stop = threading.Event()
        self._due: list = []
        self._order = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._scheduler = threading.Thread(target=self._schedule, daemon=True, name="chaos-webhook-schedule")
        self._scheduler.start()

    def send(self, invoice_id: str, copies: int = 1, delay: float = 0.0) -> None:
        """Deliver `delay` seconds from now (one scheduler thread; delivery threads only when due)."""
        with self._lock:
            self.pending += 1
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), invoice_id, copies))
            self._wake.notify()

    def _schedule(self) -> None:
        with self._lock:
            while not self.stop.is_set():
                if not self._due:
                    self._wake.wait(0.5)
                    continue
                due, _, invoice_id, copies = self._due[0]
                if due > time.monotonic():
                    self._wake.wait(min(0.5, due - time.monotonic()))
                    continue
                heapq.heappop(self._due)
                self.pool.submit(self._send, invoice_id, copies)

    @property
    def idle(self) -> bool:
        with self._lock:
            return self.pending == 0

    def _send(self, invoice_id: str, copies: int) -> None:
        try:
            self._deliver(invoice_id, copies)
        finally:
            with self._lock:
                self.pending -= 1

    def _deliver(self, invoice_id: str, copies: int) -> None:
        for _ in range(120):
            # a re-delivery of the original notification: still WaitingForTransfer, whatever happened since
            deliveries = self.basware.notify(invoice_id, copies=copies, url=self.url, concurrent=copies > 1,
                                             task_sub_type="WaitingForTransfer")
            accepted = sum(1 for d in deliveries if d["status"] and 200 <= d["status"] < 300)
            with self._lock:
                self.delivered[invoice_id] += accepted
                self.refused += len(deliveries) - accepted
            if accepted:
                return
            if self.stop.wait(1.0):  # the host is down (killed, restarting): try again
                return

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            self._wake.notify()
        self._scheduler.join(5)
        self.pool.shutdown(wait=True)


def test_chaos_every_invoice_is_posted_once_and_answered_once(fresh_azurite, app_process):
    rng = random.Random(SEED)
    docs = seed.approved_invoices(N, seed=SEED)
    numbers = [d["invoiceNumber"].upper() for d in docs]
    killed = rng.sample(numbers, max(1, round(N * KILL_RATE)))
    kill_after_create, kill_before_post = set(killed[::2]), set(killed[1::2])
    # a BC outage for a few documents, until their jobs are dead-lettered: the operators' replay path
    stubborn = [d for d in docs if d["invoiceNumber"].upper() not in killed][:OUTAGE_INVOICES]
    duplicated = set(rng.sample([d["invoiceId"] for d in docs if d not in stubborn], round(N * DUPLICATE_RATE)))

    basware = ChaosBasware(random.Random(SEED + 1), seed_documents=False, token_lifetime=TOKEN_LIFETIME,
                           validate_documents=False)
    bc = ChaosBc(random.Random(SEED + 2), set(kill_after_create), set(kill_before_post),
                 seed_purchase_orders=False, token_lifetime=TOKEN_LIFETIME)
    for sandbox in (basware, bc):
        sandbox.calls.keep_bodies = False
    bc.outage.update(d["invoiceNumber"].upper() for d in stubborn)
    servers = [serve(basware), serve(bc)]
    basware.add_documents(docs)
    bc.faults.add_random(API_PATH, BC_429_RATE, status=429, retry_after=1, seed=SEED + 3)
    bc.faults.add_random(API_PATH, BC_5XX_RATE, status=503, retry_after=1)
    basware.faults.add_random(r"/transferResponses$", BASWARE_RESPONSE_5XX_RATE / 2, status=503, method="POST",
                              seed=SEED + 4)
    # BC_REALISM: creates and posts that BC commits after the client gave up
    bc.late_commits.add(_CREATE.pattern, method="POST", count=None, rate=BC_LATE_CREATE_RATE, delay=LATE_DELAY,
                        commit_after=LATE_COMMIT_AFTER, seed=SEED + 5)
    bc.late_commits.add(_POST.pattern, method="POST", count=None, rate=BC_LATE_POST_RATE, delay=LATE_DELAY,
                        commit_after=LATE_COMMIT_AFTER)

    env = connector_env(fresh_azurite.connection_string, basware.base_url, bc.base_url, **QUIET,
                        POLL_SCHEDULE="0 */5 * * * *", DEVHOST_INFLIGHT_VISIBILITY_SECONDS="5",
                        DEVHOST_FUNCTION_KEY=FUNCTION_KEY, BC_LATE_COMMIT_WINDOW_SECONDS=LATE_COMMIT_WINDOW)
    app = app_process(env)
    restarts = 0
    bc.on_kill = lambda why: app.kill()

    stop_clock = threading.Event()

    def tokens_expire() -> None:  # sandbox time runs 30 s ahead every 5 s: 60-second tokens die after ~10 s
        while not stop_clock.wait(CLOCK_EVERY):
            basware.advance_clock(CLOCK_STEP)
            bc.clock.advance(CLOCK_STEP)

    ticker = threading.Thread(target=tokens_expire, daemon=True)
    ticker.start()
    webhooks = Webhooks(basware, f"{app.base_url}/api/basware/webhook", rng)
    storage = Storage(fresh_azurite.connection_string)
    jobs = JobStore(storage)
    admin = httpx.Client(base_url=f"{app.base_url}/api/admin", headers={"x-functions-key": FUNCTION_KEY},
                         timeout=30)
    started = time.monotonic()
    try:
        # invoices are approved over time (WEBHOOK_SECONDS in all), not all at once: the queue holds no
        # long backlog, so a failing message comes round again after the visibility timeout
        # The kills come in the first quarter of the run, the outage documents right after them:
        # a kill while an outage job runs leaves the dead worker's lease, the next copy defers as a new
        # message, and its delivery count starts again (see the report); so the two are kept apart.
        rest = [d for d in docs if d not in stubborn]
        rng.shuffle(rest)
        early = [d for d in rest if d["invoiceNumber"].upper() in killed]
        rest = [d for d in rest if d["invoiceNumber"].upper() not in killed]
        quarter = max(len(early), N // 4)
        first = rest[:quarter - len(early)] + early
        rng.shuffle(first)
        order = first + stubborn + rest[quarter - len(early):]
        spacing = WEBHOOK_SECONDS / N
        for n, doc in enumerate(order):
            invoice_id, at = doc["invoiceId"], n * spacing
            if invoice_id in duplicated and rng.random() < 0.5:
                webhooks.send(invoice_id, copies=2, delay=at)  # the same notification twice, at once
            else:
                webhooks.send(invoice_id, delay=at)
                if invoice_id in duplicated:
                    webhooks.send(invoice_id, delay=at + rng.uniform(1, 30))  # and again later

        def ensure_up() -> None:
            nonlocal restarts
            if app.process.poll() is not None:  # killed by the chaos: a new host on the same port
                app.start()
                restarts += 1

        def call_admin(method: str, path: str, **kwargs) -> httpx.Response:
            for _ in range(20):
                ensure_up()
                try:
                    return admin.request(method, path, **kwargs)
                except httpx.TransportError:  # killed under the call: once more on the new host
                    time.sleep(0.5)
            raise AssertionError(f"the admin API did not answer {method} {path}")

        dead_lettered: dict[str, list[int]] = {}  # job id -> the admin API's answers to its replays

        def replay_dead_letters() -> None:
            """The operator: list the dead-lettered invoice jobs (admin API), end their BC outage, replay."""
            listed = call_admin("GET", "/records", params={"kind": KIND, "status": "dead_lettered", "limit": 5000})
            assert listed.status_code == 200, listed.text
            for record in listed.json()["records"]:
                invoice_id = record.get("basware_id")
                bc.outage.discard(next((d["invoiceNumber"].upper() for d in docs if d["invoiceId"] == invoice_id), ""))
                reply = call_admin("POST", f"/records/{KIND}/{record['id']}/replay")
                assert reply.status_code in (202, 200, 409), reply.text  # 200: pending; 409: a worker has it
                dead_lettered.setdefault(record["id"], []).append(reply.status_code)

        outage_ends = started + WEBHOOK_SECONDS * 0.25 + OUTAGE_MAX_SECONDS

        def supervise(until, timeout: float, what: str) -> None:
            deadline = time.monotonic() + timeout
            last_look = 0.0
            while time.monotonic() < deadline:
                ensure_up()
                if time.monotonic() - last_look > 3:
                    replay_dead_letters()
                    last_look = time.monotonic()
                if bc.outage and time.monotonic() > outage_ends:  # not dead-lettered in time: BC is back
                    bc.outage.clear()
                if until():
                    return
                time.sleep(0.5)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; "
                                 f"{diagnose(docs, basware, jobs)}")

        # 1) everything runs until each invoice is transferred; what is dead-lettered meanwhile is seen
        #    in the admin API's list and replayed through it (no job lost)
        supervise(lambda: all(basware.document_status(d["invoiceId"]) == "Transferred" for d in docs),
                  MAIN_PHASE_SECONDS, "every invoice to be transferred")
        main_phase = time.monotonic() - started

        # 2) the leftovers (late duplicate webhooks, deferred and redelivered copies) meet finished jobs
        supervise(lambda: webhooks.idle, 90, "the late duplicate webhooks")
        supervise(lambda: queues_idle(storage), 150, "the queues to drain")
        elapsed = time.monotonic() - started
    finally:
        webhooks.close()
        stop_clock.set()
        ticker.join(10)
        admin.close()
        app.stop()
        for server in servers:
            server.stop()
        basware.close()
        bc.close()

    # -- what happened (printed first, so that a failure below shows it too) -----------------------------
    bc_calls = [c for c in bc.calls.since(0) if re.search(API_PATH, c.path)]
    statuses = Counter(c.status for c in bc_calls)
    basware_401 = sum(1 for c in basware.calls.since(0) if c.status == 401)
    bc_401 = statuses.get(401, 0)
    outage_dead = sum(1 for d in stubborn if invoice_job_id(d["invoiceId"]) in dead_lettered)
    late_creates = sum(1 for m, p, st in bc.late_commits.committed if _CREATE.search(p) and st == 201)
    late_posts = sum(1 for m, p, st in bc.late_commits.committed if _POST.search(p) and st == 204)
    with_defaults = sum(1 for d in docs if has_defaults(d))
    gross_price = sum(1 for d in docs if d["supplierCode"] in seed.PRICES_INCLUDING_VAT_VENDORS)
    summary = (f"chaos: {N} invoices in {elapsed:.0f}s (main phase {main_phase:.0f}s); {len(bc.killed)} kills, "
               f"{restarts} restarts; {sum(1 for v in webhooks.delivered.values() if v > 1)} invoices announced "
               f"more than once, {webhooks.refused} webhook deliveries refused while the host was down; BC "
               f"{statuses.get(429, 0)} x 429, {statuses.get(503, 0)} x 503, {bc.lost_answers} lost answers, "
               f"{bc_401} x 401; Basware {basware.lost_answers} lost transfer-response answers, "
               f"{sum(1 for c in basware.calls.since(0) if c.status == 503)} x 503, {basware_401} x 401; "
               f"{len(dead_lettered)} jobs dead-lettered ({outage_dead} of the {OUTAGE_INVOICES} in a BC outage), "
               f"{sum(202 in a for a in dead_lettered.values())} replays accepted by the admin API; BC committed "
               f"{late_creates} creates and {late_posts} posts late; {with_defaults} invoices with default "
               f"dimensions, {gross_price} for gross-price vendors")
    print(summary)
    if outage_dead < OUTAGE_INVOICES:
        print("note: an outage job was not dead-lettered within OUTAGE_MAX_SECONDS (its BC outage ended then)")
    # -- every invoice posted exactly once, answered exactly once ------------------------------------
    by_number: dict[str, list] = {}
    for document in bc.documents.values():
        by_number.setdefault(document.vendor_document_number.upper(), []).append(document)
    drafts = [(d.number, d.vendor_document_number) for d in bc.documents.values() if not d.posted]
    assert drafts == [], f"drafts left behind in BC: {drafts}"
    wrong = {n: [(d.number, d.status) for d in by_number.get(n, [])] for n in numbers
             if len(by_number.get(n, [])) != 1}
    assert wrong == {}, f"invoices not posted exactly once: {wrong}"
    assert len(bc.documents) == N
    for doc in docs:
        posted = by_number[doc["invoiceNumber"].upper()][0]
        current = basware.document(doc["invoiceId"])
        answers = [(r["success"], r.get("voucherNumber1")) for r in current["transferResponses"]]
        assert answers == [(True, posted.number)], f"{doc['invoiceId']}: transfer responses {answers}"
        assert current["processingStatus"] == "Transferred"

    # -- BC_REALISM: every posted line carries exactly the dimension values Basware coded ------------------
    fields = {m["basware_field"]: m["dimension"] for m in seed.DIMENSION_MAP}
    miscoded = {}
    for doc in docs:
        posted = by_number[doc["invoiceNumber"].upper()][0]
        rows = sorted(doc["codingRows"], key=lambda r: r["rowIndex"])
        for line, row in zip(sorted(posted.lines, key=lambda ln: ln.sequence), rows):
            coded = {dim: row[f].upper() for f, dim in fields.items() if row.get(f)}
            carried = {code: entry.value_code for code, entry in line.dims.items() if code in coded}
            if carried != coded:
                miscoded[doc["invoiceNumber"]] = (coded, carried)
    assert miscoded == {}, f"posted lines without the coded dimensions: {dict(list(miscoded.items())[:5])}"

    # -- no job lost; each trail tells the story ---------------------------------------------------------
    states = Counter(j.state for j in jobs.iter(KIND))
    assert states == Counter({DONE: N}), states
    audit = AuditLog(storage)
    untold = {}
    for doc in docs:
        problem = story_problem(audit.trail(invoice_job_id(doc["invoiceId"])), doc["invoiceId"])
        if problem:
            untold[doc["invoiceId"]] = problem
    assert untold == {}, f"audit trails that do not tell the story: {dict(list(untold.items())[:5])}"
    for job_id, answers in dead_lettered.items():  # each is done now (above); its trail says how
        steps = [(r["step"], r["outcome"]) for r in audit.trail(job_id)]
        assert ("dead_letter", "dead_lettered") in steps, steps
        assert 202 not in answers or ("replay", "requested") in steps, steps

    # -- the chaos really happened ------------------------------------------------------------------------
    assert len(bc.killed) == len(killed), f"kills planned {killed}, done {bc.killed}"
    assert restarts >= len(killed)
    assert statuses.get(429, 0) and statuses.get(503, 0) and (bc_401 or basware_401), summary
    assert late_creates and late_posts and with_defaults and gross_price, summary


def has_defaults(doc: dict) -> bool:
    return doc["supplierCode"] in seed.VENDOR_DEFAULT_DIMENSIONS or any(
        r["accountCode"] in seed.ACCOUNT_DEFAULT_DIMENSIONS for r in doc["codingRows"])


def queues_idle(storage: Storage) -> bool:
    for name in (INVOICE_TRANSFERS, BASWARE_CALLBACKS):
        for queue in (name, name + POISON_SUFFIX):
            if storage.queue(queue).get_queue_properties().approximate_message_count:
                return False
    return True


def diagnose(docs, basware, jobs: JobStore) -> str:
    waiting = [d["invoiceId"] for d in docs if basware.document_status(d["invoiceId"]) != "Transferred"]
    rows = []
    for invoice_id in waiting[:8]:
        job = jobs.get(KIND, invoice_job_id(invoice_id))
        rows.append(f"{invoice_id}: Basware {basware.document_status(invoice_id)}, job "
                    f"{job.state if job else None} ({(job.last_error or '')[:160] if job else ''})")
    return f"{len(waiting)} not transferred; " + "; ".join(rows)
