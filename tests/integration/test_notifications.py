"""The BC notification endpoint: handshake, clientState, enqueue, and never a status that makes BC
delete the subscription."""
from __future__ import annotations

import json

from shared.flows.payments.notifications import (MAX_ITEMS, IgnoredNotes, checks_for, handle_notification, handshake,
                                                 parse_resource)

COMPANY = "5d0c7a1e-0000-4000-8000-00000000c001"
DOC = "0b7f8a52-1111-4000-8000-000000000001"
STATE = "the-client-state"


def _item(change="updated", state=STATE, resource=None, sub="sub-1"):
    return {"subscriptionId": sub, "clientState": state, "expirationDateTime": "2026-11-24T10:00:00Z",
            "resource": resource or f"api/v2.0/companies({COMPANY})/purchaseInvoices({DOC})",
            "changeType": change, "lastModifiedDateTime": "2026-11-21T10:00:00Z"}


# -- pure parts -----------------------------------------------------------------------------------
def test_handshake_echoes_the_token_as_text():
    answer = handshake({"validationToken": "abc-123"})
    assert (answer.status, answer.body, answer.mimetype) == (200, "abc-123", "text/plain")
    assert handshake({}) is None


def test_handshake_is_answered_before_any_runtime_is_built():
    def no_runtime():
        raise AssertionError("the handshake must not need settings or storage")

    answer = handle_notification(no_runtime, {"validationToken": "tok"}, b"")
    assert (answer.status, answer.body) == (200, "tok")


def test_resources_of_single_records_and_collections_are_read():
    one = parse_resource(f"api/v2.0/companies({COMPANY})/purchaseInvoices({DOC})")
    assert (one.company_id, one.entity_set, one.document_id, one.filter) == (COMPANY, "purchaseInvoices", DOC, None)
    many = parse_resource(f"api/v2.0/companies({COMPANY})/purchaseInvoices"
                          "?$filter=lastModifiedDateTime%20gt%202026-11-21T10:00:00.000Z")
    assert many.document_id is None
    assert many.filter == "lastModifiedDateTime gt 2026-11-21T10:00:00.000Z"
    assert parse_resource("https://evil.example/whatever") is None
    assert parse_resource(None) is None


def test_updates_become_one_check_per_document_and_collections_a_filtered_reread():
    items = [_item("updated"), _item("created"), _item("deleted"),
             _item("collection", resource=f"api/v2.0/companies({COMPANY})/purchaseInvoices"
                                          "?$filter=lastModifiedDateTime%20gt%202026-11-21T10:00:00Z")]
    messages, ignored = checks_for(items, STATE, {COMPANY})
    assert ignored == []
    singles = [m for m in messages if m.document_id]
    assert [(m.document_id, m.source) for m in singles] == [(DOC, "notification")]
    collections = [m for m in messages if m.collection_filter is not None]
    assert [m.collection_filter for m in collections] == ["lastModifiedDateTime gt 2026-11-21T10:00:00Z"]


def test_items_with_a_wrong_or_missing_client_state_are_ignored():
    messages, ignored = checks_for([_item(state="guess"), _item(state=None), _item(state=STATE.upper())],
                                   STATE, {COMPANY})
    assert messages == [] and len(ignored) == 3
    messages, ignored = checks_for([_item()], None, {COMPANY})  # no BC_CLIENT_STATE: nothing is trusted
    assert messages == [] and ignored


def test_items_of_unmapped_companies_are_ignored():
    other = "9d0c7a1e-0000-4000-8000-00000000c009"
    messages, ignored = checks_for([_item(resource=f"api/v2.0/companies({other})/purchaseInvoices({DOC})")],
                                   STATE, {COMPANY})
    assert messages == [] and "not mapped" in ignored[0]


class _CountingStorage:
    def __init__(self):
        self.enqueued = []

    def enqueue(self, queue, message, **kwargs):
        self.enqueued.append(message)


class _CountingJobs:
    def __init__(self):
        self.writes = []

    def force(self, kind, id, **fields):
        self.writes.append((kind, id, fields))


class _CountingAudit:
    def __init__(self):
        self.rows = []

    def record(self, job_id, step, outcome, message="", **fields):
        self.rows.append((job_id, step, outcome, message))


class _CountingRt:
    def __init__(self):
        self.settings = _Settings()
        self.storage = _CountingStorage()
        self.jobs = _CountingJobs()
        self.audit = _CountingAudit()


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_wrong_client_states_cost_one_summary_per_interval_whatever_the_subscription_ids():
    rt, clock = _CountingRt(), _Clock()
    notes = IgnoredNotes(interval=60, clock=clock)
    flood = json.dumps({"value": [_item(state="guess", sub=f"sub-{n}") for n in range(5000)]}).encode()
    for _ in range(3):
        assert handle_notification(lambda: rt, {}, flood, notes).status == 202
    assert rt.storage.enqueued == []
    assert len(rt.audit.rows) == 1 and len(rt.jobs.writes) == 1  # one summary, not one row per item
    (_, _, outcome, message), = rt.audit.rows
    assert outcome == "ignored" and "clientState does not match" in message and "sub-" not in message
    clock.now += 61  # the next window's summary carries the counts gathered meanwhile
    assert handle_notification(lambda: rt, {}, flood, notes).status == 202
    assert len(rt.audit.rows) == 2
    # the two requests held back in the first window, and this one
    assert f"clientState does not match: {MAX_ITEMS * 3} item(s)" in rt.audit.rows[1][3]
    assert "(in 3 request(s))" in rt.audit.rows[1][3]
    assert notes.total["clientState does not match"] == MAX_ITEMS * 4


def test_items_beyond_the_cap_are_not_read_and_valid_ones_within_it_are_enqueued():
    rt = _CountingRt()
    notes = IgnoredNotes(interval=60, clock=_Clock())
    docs = [f"0b7f8a52-1111-4000-8000-{n:012d}" for n in range(MAX_ITEMS + 50)]
    items = [_item(resource=f"api/v2.0/companies({COMPANY})/purchaseInvoices({d})") for d in docs]
    assert handle_notification(lambda: rt, {}, json.dumps({"value": items}).encode(), notes).status == 202
    assert [m.document_id for m in rt.storage.enqueued] == docs[:MAX_ITEMS]
    assert f"more than {MAX_ITEMS} items in one request: 50 item(s)" in rt.audit.rows[0][3]


class _BrokenStorage:
    def enqueue(self, *args, **kwargs):
        from azure.core.exceptions import ServiceRequestError
        raise ServiceRequestError("queue unreachable")


class _Settings:
    def __init__(self):
        from shared.core.secrets import Secret
        self.bc_client_state = Secret(STATE)

    def bc_companies(self):
        return [COMPANY]


class _Rt:
    settings = _Settings()
    storage = _BrokenStorage()


def test_a_queue_outage_answers_503_so_bc_retries_and_keeps_the_subscription():
    answer = handle_notification(lambda: _Rt(), {}, json.dumps({"value": [_item()]}).encode())
    assert answer.status == 503


def test_settings_or_storage_not_ready_answers_503():
    def broken():
        raise RuntimeError("storage not configured")

    assert handle_notification(broken, {}, b'{"value": []}').status == 503


# -- the endpoint over real HTTP (stands in for the host where a test does not start the app) --------------
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402


class NotificationReceiver:
    """`/api/bc/notifications` served by `handle_notification` on a local port, as the function does."""

    def __init__(self, get_runtime, notes=None) -> None:
        receiver = self
        self.get_runtime = get_runtime
        self.notes = notes
        self.requests: list[tuple[str, dict, bytes, int]] = []

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = receiver.handle(query, body)
                receiver.requests.append((self.command, query, body, answer.status))
                receiver.handled(self.command, query, body)
                data = answer.body.encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.mimetype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def handle(self, query: dict, body: bytes):
        if self.notes is None:
            return handle_notification(self.get_runtime, query, body)
        return handle_notification(self.get_runtime, query, body, self.notes)

    def handled(self, command: str, query: dict, body: bytes) -> None:
        """After each answer (a subclass may deliver again, as BC's retries do)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/bc/notifications"

    def start(self) -> "NotificationReceiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the real function_app under the local host (python -m devhost) ---------------------------------------
import httpx  # noqa: E402

from sandbox import seed as _seed  # noqa: E402


def test_the_app_answers_the_handshake_with_the_token_at_once(env, app_process):
    app = app_process(env, "--no-timers", "--no-queues")
    for method in ("GET", "POST"):
        response = httpx.request(method, f"{app.base_url}/api/bc/notifications",
                                 params={"validationToken": "Validation token: 4a7f-è+/="}, timeout=5)
        assert response.status_code == 200
        assert response.text == "Validation token: 4a7f-è+/="
        assert response.headers["content-type"].startswith("text/plain")
        assert response.elapsed.total_seconds() < 5  # BC allows 5 seconds


def test_the_app_ignores_a_wrong_client_state_with_an_audit_row_and_still_answers_202(env, app_process, rt):
    app = app_process(env, "--no-timers", "--no-queues")
    body = {"value": [{"subscriptionId": "sub-x", "clientState": "not-the-secret", "changeType": "updated",
                       "resource": f"api/v2.0/companies({_seed.COMPANY_ID})/purchaseInvoices({DOC})",
                       "expirationDateTime": "2026-11-24T10:00:00Z", "lastModifiedDateTime": "2026-11-21T10:00:00Z"}]}
    response = httpx.post(f"{app.base_url}/api/bc/notifications", json=body, timeout=10)
    assert response.status_code == 202
    assert rt.storage.queue("payment-checks").peek_messages(max_messages=5) == []
    ignored = rt.jobs.list("notification", "ignored")
    assert len(ignored) == 1 and "clientState does not match" in ignored[0].last_error
    trail = rt.audit.trail(ignored[0].id)
    assert trail and trail[-1]["outcome"] == "ignored"
    assert "not-the-secret" not in json.dumps([dict(r) for r in trail], default=str)


def test_the_app_answers_202_not_400_to_a_body_that_is_not_json(env, app_process, rt):
    app = app_process(env, "--no-timers", "--no-queues")
    response = httpx.post(f"{app.base_url}/api/bc/notifications", content=b"{not json",
                          headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 202  # a 400 would make BC delete the subscription
    assert any("not JSON" in (j.last_error or "") for j in rt.jobs.list("notification", "ignored"))


def test_a_valid_notification_enqueues_one_payment_check_per_document(env, app_process, rt):
    app = app_process(env, "--no-timers", "--no-queues")
    item = {"subscriptionId": "sub-1", "clientState": _seed.BC_CLIENT_STATE, "changeType": "updated",
            "resource": f"api/v2.0/companies({_seed.COMPANY_ID})/purchaseInvoices({DOC})",
            "expirationDateTime": "2026-11-24T10:00:00Z", "lastModifiedDateTime": "2026-11-21T10:00:00Z"}
    response = httpx.post(f"{app.base_url}/api/bc/notifications", json={"value": [item, dict(item)]}, timeout=10)
    assert response.status_code == 202
    [queued] = rt.storage.queue("payment-checks").peek_messages(max_messages=5)
    message = json.loads(queued.content)
    assert (message["document_id"], message["company_id"], message["source"]) == (DOC, _seed.COMPANY_ID,
                                                                                  "notification")
