"""Payment chaos: many posted invoices paid in BC in full, in parts and reversed, while workers die.

Real Azurite, the Basware and BC sandboxes over real HTTP (BC with its analytics ledger on, the
connector with `BC_PARTIAL_PAYMENTS`), a live BC webhook subscription whose notifications reach
the endpoint logic over HTTP, and three worker threads that play the Functions host's queue
triggers (visibility timeout, dequeue count, `-poison` -> dead letter). Meanwhile:

- 5% of the payment flow's critical moments kill the worker: when a detected response is about to
  be queued for sending (between detection and send), right before its POST reaches Basware, and
  right after Basware answered (between send and record). A killed worker leaves its lease and
  its message behind, as a SIGKILLed process does; the message comes back after the visibility
  timeout and the lease expires before the dequeue limit (the lease is 3 s, deliveries 2 s apart);
- 20% of BC's notifications are delivered twice (BC retries a delivery it thinks failed);
- the poll runs every couple of seconds (it is the only way partial payments are seen: `status` stays
  Open until the vendor ledger entry is closed, codeunit 5529 Purch. Inv. Aggregator).

The plan, per 200 invoices posted (PAYMENT_CHAOS_INVOICES, default 60 here for CI; 200 is the
full size, same proportions): 100 paid in full, 30 paid in two parts and then the rest, 5 paid
and then unapplied; plus a few invoices keyed into BC by hand and paid. Afterwards: per invoice,
exactly the expected sequence of payment responses with the right cumulative totals (a reversal
carrying `paymentReversalDocument`), a fresh externalCode each, none for the invoices the
connector did not post, and no job stuck (every payment job done, no lease held, queues empty;
any dead-lettered job is replayed through the admin function, as an operator would).
"""
from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError

from sandbox import seed
from sandbox.basware import BaswareSandbox
from sandbox.bc import BcSandbox
from sandbox.common import SandboxServer
from scripts.local_env import connector_env
from shared.clients.http import RetryConfig
from shared.core.runtime import build_runtime
from shared.core.settings import load_settings
from shared.flows.callbacks import handle_callback
from shared.flows.invoices.transfer import invoice_job_id, transfer_invoice
from shared.flows.payments.notifications import IgnoredNotes
from shared.flows.payments.respond import KIND, check_payment, poll_payments, send_payment_response
from shared.flows.payments.subscriptions import ensure_subscriptions
from shared.models.messages import CallbackMessage, InvoiceTransferMessage, PaymentCheckMessage
from shared.ops.admin import replay_record
from shared.store.deadletter import dead_letter
from shared.store.jobs import DEAD_LETTERED, DONE, job_id
from shared.store.storage import BASWARE_CALLBACKS, INVOICE_TRANSFERS, PAYMENT_CHECKS, Storage
from tests.integration.test_notifications import NotificationReceiver

pytestmark = pytest.mark.e2e

N = int(os.environ.get("PAYMENT_CHAOS_INVOICES", "60"))
SEED = int(os.environ.get("PAYMENT_CHAOS_SEED", "16"))
KILL_RATE = 0.05
DUPLICATE_RATE = 0.20
VISIBILITY = 2          # seconds a delivered message stays invisible (host.json: visibilityTimeout)
MAX_DEQUEUE = 5         # host.json: maxDequeueCount
LEASE = 3.0             # the payment lease here: shorter than VISIBILITY * (MAX_DEQUEUE - 1), as in production
WORKERS = 3
MANUAL = 4              # invoices keyed into BC by hand (and paid): never reported
ROUND_SECONDS = int(os.environ.get("PAYMENT_CHAOS_ROUND_SECONDS", "90"))  # unsettled by then: fail, with a diagnosis
FAST_RETRY = RetryConfig(max_attempts=4, backoff_base=0.02, backoff_max=0.2, max_inline_wait=2)


class Killed(BaseException):
    """The worker dies here: no `except Exception` (ours or a library's) runs, the lease stays held."""


class Dice:
    def __init__(self, seed_: int) -> None:
        self._rng = random.Random(seed_)
        self._lock = threading.Lock()
        self.kills: dict[str, int] = {}

    def roll(self, rate: float) -> bool:
        with self._lock:
            return self._rng.random() < rate

    def kill(self, where: str, rate: float) -> None:
        if self.roll(rate):
            with self._lock:
                self.kills[where] = self.kills.get(where, 0) + 1
            raise Killed(where)


class KillingStorage(Storage):
    """Dies when a detected payment response is about to be queued for its send."""

    def __init__(self, connection_string: str, dice: Dice) -> None:
        super().__init__(connection_string)
        self.dice = dice

    def enqueue(self, queue, message, **kw):
        if queue == BASWARE_CALLBACKS and getattr(message, "kind", None) == "payment":
            self.dice.kill("between detection and send", KILL_RATE / 2)
        return super().enqueue(queue, message, **kw)


class KillingTransport(httpx.HTTPTransport):
    """Dies right before a payment response reaches Basware, or right after Basware answered it."""

    def __init__(self, dice: Dice) -> None:
        super().__init__()
        self.dice = dice

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        payment = request.method == "POST" and re.search(r"/paymentResponses$", request.url.path)
        if payment:
            self.dice.kill("before the send", KILL_RATE / 4)
        response = super().handle_request(request)
        if payment and response.status_code < 300:
            response.read()
            self.dice.kill("between send and record", KILL_RATE / 4)
        return response


class DuplicatingReceiver(NotificationReceiver):
    """`/api/bc/notifications` over HTTP; 20% of the items are delivered twice, as a BC retry would."""

    def __init__(self, get_runtime, dice: Dice) -> None:
        super().__init__(get_runtime, IgnoredNotes())
        self.dice = dice
        self.duplicated = 0
        self.start()

    def handled(self, command: str, query: dict, body: bytes) -> None:
        if command == "POST" and body:
            # BC batches items per POST: a fifth of the items come again, in a POST of their own
            items = [i for i in json.loads(body).get("value", []) if self.dice.roll(DUPLICATE_RATE)]
            if items:
                self.duplicated += len(items)
                self.handle(query, json.dumps({"value": items}).encode())


class Host:
    """The queue triggers: deliver, delete on success, leave for redelivery on failure or death,
    dead-letter at the dequeue limit (Microsoft Learn, Azure Queue storage trigger: poison messages)."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self.stop = threading.Event()
        self.failures = 0
        self.killed = 0
        self.dead_lettered = 0
        self.outcomes = []
        self.handlers = {
            PAYMENT_CHECKS: lambda body: check_payment(rt, PaymentCheckMessage.model_validate_json(body),
                                                       lease_seconds=LEASE, defer_min=_SECOND),
            BASWARE_CALLBACKS: lambda body: self._callback(CallbackMessage.model_validate_json(body)),
            INVOICE_TRANSFERS: lambda body: transfer_invoice(rt, InvoiceTransferMessage.model_validate_json(body)),
        }
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(WORKERS)]

    def _callback(self, message: CallbackMessage):
        if message.kind == "payment":
            return send_payment_response(self.rt, message, lease_seconds=LEASE)
        return handle_callback(self.rt, message)

    def start(self) -> "Host":
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _work(self) -> None:
        while not self.stop.is_set():
            worked = 0
            for queue, handler in self.handlers.items():
                client = self.rt.storage.queue(queue)
                for msg in client.receive_messages(max_messages=4, messages_per_page=4, visibility_timeout=VISIBILITY):
                    worked += 1
                    try:
                        self.outcomes.append((queue, handler(msg.content)))
                    except Killed:
                        self.killed += 1
                        self._failed(queue, client, msg)
                    except Exception:  # noqa: BLE001 - the runtime redelivers
                        self.failures += 1
                        self._failed(queue, client, msg)
                    else:
                        _delete(client, msg)
            if not worked:
                self.stop.wait(0.1)

    def _failed(self, queue, client, msg) -> None:
        if msg.dequeue_count >= MAX_DEQUEUE:
            dead_letter(self.rt, queue, msg.content, f"retries exhausted after {MAX_DEQUEUE} deliveries")
            self.dead_lettered += 1
            _delete(client, msg)


def _delete(client, msg) -> None:
    """Delete as the Functions runtime does: a message whose invisibility ran out while it was handled
    has been received again (new pop receipt), so its delete answers 404 and the new delivery owns it."""
    try:
        client.delete_message(msg)
    except ResourceNotFoundError:
        pass


_SECOND = timedelta(seconds=1)  # a deferred check (paid before done) comes back after this here


def queues_empty(storage: Storage) -> bool:
    return all(storage.queue(q).get_queue_properties().approximate_message_count == 0
               for q in (PAYMENT_CHECKS, BASWARE_CALLBACKS, INVOICE_TRANSFERS))


def totals(basware, invoice_id: str) -> list[Decimal]:
    return [Decimal(str(r["paidTotal"])) for r in basware.document(invoice_id)["paymentResponses"]]


def test_payment_chaos_every_change_is_reported_once_in_order(fresh_azurite):
    dice = Dice(SEED)
    basware = BaswareSandbox(invoice_count=N)
    bc = BcSandbox(seed_purchase_orders=False, analytics=True)
    servers = []
    for app in (basware, bc):
        app.calls.keep_bodies = False
        server = SandboxServer(app).start()
        app.base_url = server.base_url
        servers.append(server)
    holder = {}
    receiver = DuplicatingReceiver(lambda: holder["rt"], dice)
    storage = KillingStorage(fresh_azurite.connection_string, dice)
    env = connector_env(fresh_azurite.connection_string, basware.base_url, bc.base_url,
                        BC_PARTIAL_PAYMENTS="true", BC_NOTIFICATION_URL=receiver.url)
    rt = build_runtime(load_settings(env), storage=storage, transport=KillingTransport(dice), retry=FAST_RETRY)
    holder["rt"] = rt
    host = Host(rt).start()
    try:
        # -- the invoices, posted through the invoice flow --------------------------------------------
        docs = [d for d in basware.documents.values() if d["processingStatus"] == "WaitingForTransfer"]
        for doc in docs:
            rt.storage.enqueue(INVOICE_TRANSFERS, InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
        settle(lambda: all(getattr(rt.jobs.get("invoice", invoice_job_id(d["invoiceId"])), "state", None) == DONE
                           for d in docs), storage, rt, "the invoices to be posted", poll=False)
        assert ensure_subscriptions(rt, bc.clock.now()) == {seed.COMPANY_ID: "created"}
        bc_of = {d["invoiceId"]: rt.jobs.get("invoice", invoice_job_id(d["invoiceId"])).get("bc_id") for d in docs}
        invoices = [d for d in docs if bc.documents[bc_of[d["invoiceId"]]].type.entity_set == "purchaseInvoices"]

        rng = random.Random(SEED + 1)
        rng.shuffle(invoices)
        n_full, n_partial, n_reversed = round(len(docs) * 0.5), round(len(docs) * 0.15), max(1, round(len(docs) * 0.025))
        full = invoices[:n_full]
        partial = invoices[n_full:n_full + n_partial]
        reversed_ = invoices[n_full + n_partial:n_full + n_partial + n_reversed]
        unpaid = invoices[n_full + n_partial + n_reversed:] + [d for d in docs if d not in invoices]
        manual = [post_by_hand(rt, f"HAND-{n}") for n in range(MANUAL)]
        total = {d["invoiceId"]: abs(Decimal(str(bc.documents[bc_of[d["invoiceId"]]].totals["totalAmountIncludingTax"])))
                 for d in docs}
        first = {d["invoiceId"]: (total[d["invoiceId"]] * Decimal("0.4")).quantize(Decimal("0.01")) for d in partial}
        second = {d["invoiceId"]: (total[d["invoiceId"]] * Decimal("0.35")).quantize(Decimal("0.01")) for d in partial}
        expected: dict[str, list[Decimal]] = {d["invoiceId"]: [] for d in docs}

        def expect_round(pairs):
            for doc, value in pairs:
                expected[doc["invoiceId"]].append(value)
            settle(lambda: all(totals(basware, i) == want for i, want in expected.items()), storage, rt,
                   "the payment responses of this round", diagnose=lambda: mismatches(basware, expected))

        # -- round 1: full payments, first partial payments, the payments that will be reversed ----------
        for doc in full + reversed_:
            bc.pay(bc_of[doc["invoiceId"]])
        for doc in partial:
            bc.pay(bc_of[doc["invoiceId"]], first[doc["invoiceId"]])
        for document in manual:
            bc.pay(document)
        expect_round([(d, total[d["invoiceId"]]) for d in full + reversed_] +
                     [(d, first[d["invoiceId"]]) for d in partial])
        # -- round 2: the second partial payments ---------------------------------------------------------
        for doc in partial:
            bc.pay(bc_of[doc["invoiceId"]], second[doc["invoiceId"]])
        expect_round([(d, first[d["invoiceId"]] + second[d["invoiceId"]]) for d in partial])
        # -- round 3: the rest of the partial ones; the reversals -----------------------------------------
        for doc in partial:
            bc.pay(bc_of[doc["invoiceId"]])
        for doc in reversed_:
            bc.unapply(bc_of[doc["invoiceId"]])
        expect_round([(d, total[d["invoiceId"]]) for d in partial] + [(d, Decimal(0)) for d in reversed_])

        # -- afterwards ------------------------------------------------------------------------------------
        settle(lambda: quiet(rt, storage), storage, rt, "every job to finish")
        problems = mismatches(basware, expected)
        for doc in docs:
            responses = basware.document(doc["invoiceId"])["paymentResponses"]
            codes = [r["externalCode"] for r in responses]
            if len(set(codes)) != len(codes):
                problems.append(f"{doc['invoiceId']}: an externalCode was used twice")
            for r in responses:
                if r["paidTotal"] is not None and Decimal(str(r["paidTotal"])) == 0 and not r["paymentReversalDocument"]:
                    problems.append(f"{doc['invoiceId']}: a reversal without paymentReversalDocument")
        for doc in partial:
            messages = [r["responseMessage"] for r in basware.document(doc["invoiceId"])["paymentResponses"]]
            if ["partly paid" in m for m in messages] != [True, True, False]:
                problems.append(f"{doc['invoiceId']}: partial payments not told as such: {messages}")
        for document in manual:
            if rt.jobs.get(KIND, job_id(KIND, document)) is not None:
                problems.append(f"a payment job for {document}, which the connector did not post")
        stuck = [j for j in rt.jobs.iter(KIND) if j.state != DONE or j.lease_owner]
        problems += [f"payment job {j.id} stuck in {j.state} (lease {j.lease_owner!r})" for j in stuck]
        assert problems == [], "\n".join(problems[:40])
        assert dice.kills, "the chaos killed no worker: the test proves nothing"
        assert receiver.duplicated, "no notification was delivered twice"
        assert all(totals(basware, d["invoiceId"]) == [] for d in unpaid)
    finally:
        host.close()
        receiver.stop()
        rt.close()
        for server in servers:
            server.stop()
        bc.close()


def post_by_hand(rt, vendor_invoice_number: str) -> str:
    from shared.clients.bc import INVOICES

    body = {"vendorNumber": "V10010", "vendorInvoiceNumber": vendor_invoice_number, "postingDate": "2026-11-10",
            "purchaseInvoiceLines": [{"lineType": "Account", "lineObjectNumber": "6200", "quantity": 1,
                                      "unitCost": 100, "taxCode": "STANDARD"}]}
    draft = rt.bc.create_document(seed.COMPANY_ID, INVOICES, body)
    rt.bc.post_document(seed.COMPANY_ID, INVOICES, draft.id)
    return draft.id


def mismatches(basware, expected: dict[str, list[Decimal]]) -> list[str]:
    return [f"{i}: payment responses {totals(basware, i)}, expected {want}" for i, want in expected.items()
            if totals(basware, i) != want]


def quiet(rt, storage) -> bool:
    return queues_empty(storage) and not any(j.lease_owner for j in rt.jobs.iter(KIND))


def settle(done, storage, rt, what: str, *, poll: bool = True, diagnose=lambda: []) -> None:
    """Wait for `done()`, polling BC every 2 s (the backstop) and replaying dead-lettered jobs as an
    operator would; fail with what is missing after ROUND_SECONDS."""
    deadline = time.monotonic() + ROUND_SECONDS
    last_poll = 0.0
    while time.monotonic() < deadline:
        if done() and queues_empty(storage):
            return
        if time.monotonic() - last_poll > 2:
            last_poll = time.monotonic()
            for job in list(rt.jobs.iter(state=DEAD_LETTERED)):
                replay_record(rt, job.kind, job.id, requested_by="chaos operator")
            if poll:
                poll_payments(rt)
        time.sleep(0.2)
    problems = diagnose()
    raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(problems[:30]))
