"""Fuzz: random and mutated bodies and headers at the two anonymous endpoints, over real HTTP.

The real function_app.py under devhost (queue triggers off, so every message stays countable) on
Azurite. Seeded (FUZZ_SEED), a few hundred cases, well under a minute. What must hold, whatever
arrives:
- `POST /api/basware/webhook`: never a 5xx; a message lands on `invoice-transfers` only for a body
  whose signature is valid (checked by this test's own oracle, not by the product's
  code), exactly one per accepted 200, none for any other answer;
- `GET|POST /api/bc/notifications`: never a 5xx and never a 4xx (BC deletes a subscription on any
  4xx other than 408/429; Microsoft Learn, "Working with webhooks in Dynamics 365 Business Central"); the handshake echoes `validationToken`; a
  message lands on `payment-checks` only for items carrying the right clientState.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import string
import uuid

import pytest

from sandbox import seed
from scripts.local_env import connector_env
from shared.store.storage import INVOICE_TRANSFERS, PAYMENT_CHECKS, Storage
from urllib.parse import urlencode

SEED = int(os.environ.get("FUZZ_SEED", "1123"))
WEBHOOK_CASES = int(os.environ.get("FUZZ_WEBHOOK_CASES", "260"))
NOTIFICATION_CASES = int(os.environ.get("FUZZ_NOTIFICATION_CASES", "160"))
SECRET = seed.WEBHOOK_SECRET
HEADER = "X-BWAPI-Signature-256"
MB = 1024 * 1024


# -- the signature oracle: Basware's push notifications (encoding not documented publicly: hex or base64,
# optional sha256= prefix); independent of shared/flows/invoices/intake.py on purpose -------------------------------
def signature_is_valid(body: bytes, value: str | None) -> bool:
    if value is None:
        return False
    text = value.strip()
    if text[:7].lower() == "sha256=":
        text = text[7:].strip()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    forms = {digest.hex(), base64.b64encode(digest).decode(), base64.b64encode(digest).decode().rstrip("="),
             base64.urlsafe_b64encode(digest).decode(), base64.urlsafe_b64encode(digest).decode().rstrip("=")}
    return text.lower() == digest.hex() or text in forms


def sign(body: bytes, form: str = "hex") -> str:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return {"hex": digest.hex(), "HEX": digest.hex().upper(), "base64": base64.b64encode(digest).decode(),
            "base64-nopad": base64.b64encode(digest).decode().rstrip("="),
            "base64url": base64.urlsafe_b64encode(digest).decode().rstrip("="),
            "sha256=": "sha256=" + digest.hex(), "SHA256=": "SHA256=" + digest.hex(),
            "spaced": "  " + digest.hex() + " "}[form]


# -- generators --------------------------------------------------------------------------------------
def random_text(rng: random.Random, n: int) -> str:
    alphabet = string.printable + "äöüßéñ€漢字\u0000\u202e\ud7ff"
    return "".join(rng.choice(alphabet) for _ in range(n))


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 10**400 if rng.random() < 0.2 else 1.5, float("inf"), float("nan")])
    if kind in (3, 4):
        return random_text(rng, rng.randrange(0, 40))
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["taskId", "taskType", "taskSubType", "documentId", "taskStatus", "expirationTime", "x", ""]
    return {rng.choice(keys) if rng.random() < 0.7 else random_text(rng, 6): random_json(rng, depth + 1)
            for _ in range(rng.randrange(6))}


def task(rng: random.Random, **overrides) -> dict:
    body = {"taskId": str(uuid.UUID(int=rng.getrandbits(128))), "taskStatus": "New",
            "taskType": "AccountingDocuments", "taskSubType": "WaitingForTransfer",
            "documentId": str(uuid.UUID(int=rng.getrandbits(128))), "expirationTime": "2026-12-31T00:00:00.000Z"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=True).encode()


def webhook_case(rng: random.Random) -> tuple[str, bytes, list[tuple[str, str | bytes]]]:
    """(what, body, headers) -- a signed task, mutated in one of many ways."""
    choice = rng.randrange(16)
    body = dumps(task(rng))
    form = rng.choice(["hex", "HEX", "base64", "base64-nopad", "base64url", "sha256=", "SHA256=", "spaced"])
    headers: list[tuple[str, str | bytes]] = [("Content-Type", "application/json")]
    if choice == 0:
        return f"valid task, {form}", body, headers + [(HEADER, sign(body, form))]
    if choice == 1:
        name = rng.choice(["x-bwapi-signature-256", "X-BWAPI-SIGNATURE-256", "x-BwApi-Signature-256"])
        return "header name in another case", body, headers + [(name, sign(body))]
    if choice == 2:
        return "no signature", body, headers
    if choice == 3:
        value = rng.choice(["", " ", "sha256=", "0" * 64, "z" * 64, "A" * 44, "=" * 44, "sha256=" + "g" * 64,
                            sign(body)[:-1], sign(body) + "0", sign(body)[::-1], "x" * 9000,
                            sign(body, "base64")[:-2]])
        return "malformed signature", body, headers + [(HEADER, value)]
    if choice == 4:
        signed = sign(body)
        mutated = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        return "body changed after signing", bytes(mutated), headers + [(HEADER, signed)]
    if choice == 5:
        signed = sign(body)
        cut = body[: rng.randrange(len(body))] if rng.random() < 0.5 else body + rng.choice([b" ", b"\n", b"{}"])
        return "body truncated or extended after signing", cut, headers + [(HEADER, signed)]
    if choice == 6:
        return "signed with another secret", body, headers + [
            (HEADER, hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest())]
    if choice == 7:
        return "two signature headers", body, headers + [(HEADER, sign(body)), (HEADER, sign(body))]
    if choice == 8:
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 600)))
        return "random bytes, signed", junk, headers + [(HEADER, sign(junk))]
    if choice == 9:
        value = dumps(random_json(rng))
        return "random JSON, signed", value, headers + [(HEADER, sign(value, form))]
    if choice == 10:
        value = dumps(random_json(rng))
        return "random JSON, unsigned", value, headers + ([(HEADER, sign(body))] if rng.random() < 0.5 else [])
    if choice == 11:
        odd = rng.choice([
            {"documentId": None}, {"documentId": 12345}, {"documentId": ["a"]}, {"documentId": {"id": 1}},
            {"documentId": ""}, {"documentId": "   "}, {"documentId": "\ud800"}, {"documentId": "a\u0000b"},
            {"documentId": "x" * 70_000}, {"documentId": "../../etc/passwd"}, {"documentId": "é" * 200},
            {"taskType": None}, {"taskType": 7}, {"taskType": "ConnectionTest"}, {"taskType": "RequestStatus"},
            {"taskSubType": "Error"}, {"taskSubType": ["WaitingForTransfer"]}, {"taskId": {"nested": True}},
            {"documentId": ...}, {"taskType": ...}])
        value = dumps(task(rng, **odd))
        return f"signed task with {sorted(odd)[0]} = {str(next(iter(odd.values())))[:20]!r}", value, headers + [
            (HEADER, sign(value))]
    if choice == 12:
        depth = rng.choice([200, 5_000, 100_000])
        value = (b"[" * depth + b"]" * depth) if rng.random() < 0.5 else (b'{"a":' * depth + b"1" + b"}" * depth)
        return f"nesting {depth} deep, signed", value, headers + [(HEADER, sign(value))]
    if choice == 13:
        size = rng.choice([MB - 10, MB, MB + 1, 2 * MB])
        value = dumps(task(rng, padding="p" * max(0, size - len(body) - 14)))[:size]
        signed = rng.random() < 0.5
        return f"{len(value)} bytes, {'signed' if signed else 'unsigned'}", value, headers + (
            [(HEADER, sign(value))] if signed else [])
    if choice == 14:
        ctype = rng.choice(["text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin-1",
                            "multipart/form-data; boundary=x"])
        return f"content type {ctype!r}", body, [("Content-Type", ctype), (HEADER, sign(body))]
    value = rng.choice([b"\xff\xfe" + body, body.decode().encode("utf-16"), b"\xef\xbb\xbf" + body])
    return "other encodings, signed", value, headers + [(HEADER, sign(value))]


def notification_case(rng: random.Random, company: str) -> tuple[str, str, dict, bytes, bool]:
    """(what, method, query, body, carries an item with the right clientState for a purchase invoice)."""
    resource = f"api/v2.0/companies({company})/purchaseInvoices({uuid.UUID(int=rng.getrandbits(128))})"

    def item(**over):
        base = {"subscriptionId": "sub-1", "clientState": seed.BC_CLIENT_STATE, "expirationDateTime":
                "2026-12-01T00:00:00Z", "resource": resource, "changeType": "updated",
                "lastModifiedDateTime": "2026-11-23T10:00:00Z"}
        base.update(over)
        return base

    choice = rng.randrange(10)
    if choice == 0:
        token = rng.choice([random_text(rng, rng.randrange(1, 60)), "", "a" * 4000, str(uuid.uuid4())])
        return "handshake", rng.choice(["GET", "POST"]), {"validationToken": token}, b"", False
    if choice == 1:
        return "valid notification", "POST", {}, dumps({"value": [item()]}), True
    if choice == 2:
        state = rng.choice(["", "wrong", seed.BC_CLIENT_STATE.upper(), seed.BC_CLIENT_STATE + " ", None, 5, ["x"]])
        return "wrong clientState", "POST", {}, dumps({"value": [item(clientState=state)]}), False
    if choice == 3:
        bad = rng.choice(["", "api/v2.0/companies(x)/purchaseInvoices(y)", resource.replace("purchaseInvoices", "vendors"),
                          None, 12, {"r": 1}, resource + "/../../x", "companies(" * 1000])
        return "odd resource", "POST", {}, dumps({"value": [item(resource=bad)]}), False
    if choice == 4:
        return "random JSON", "POST", {}, dumps(random_json(rng)), False
    if choice == 5:
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
        return "random bytes", "POST", {}, junk, False
    if choice == 6:
        items = [item(changeType=rng.choice(["created", "updated", "deleted", "collection", "bogus", None]))
                 for _ in range(rng.randrange(1, 30))]
        valid = any(i["changeType"] in ("created", "updated") for i in items)
        return "many items", "POST", {}, dumps({"value": items}), valid
    if choice == 7:
        depth = rng.choice([500, 100_000])
        return f"nesting {depth} deep", "POST", {}, b'{"value":' + b"[" * depth + b"]" * depth + b"}", False
    if choice == 8:
        return "value is not a list", "POST", {}, dumps({"value": rng.choice([None, {}, "x", 3])}), False
    return "empty body", rng.choice(["GET", "POST"]), {}, b"", False


# -- the app -------------------------------------------------------------------------------------------
@pytest.fixture
def app(fresh_azurite, app_process):
    env = connector_env(fresh_azurite.connection_string, "http://127.0.0.1:9", "http://127.0.0.1:9")
    return app_process(env, "--no-timers", "--no-queues")


class Raw:
    """http.client, so that headers go out as given: odd whitespace, repeated names, any bytes."""

    def __init__(self, base_url: str) -> None:
        self.host, port = base_url.split("//", 1)[1].rsplit(":", 1)
        self.port = int(port)
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes, headers: list[tuple[str, str | bytes]]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.putrequest(method, path, skip_accept_encoding=True)
                for name, value in headers:
                    self.conn.putheader(name, value)
                self.conn.putheader("Content-Length", str(len(body)))
                self.conn.endheaders(body)
                response = self.conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def queue_length(storage: Storage, name: str) -> int:
    return storage.queue(name).get_queue_properties().approximate_message_count


def test_fuzzed_webhooks_never_5xx_and_never_enqueue_without_a_valid_signature(app, fresh_azurite):
    rng = random.Random(SEED)
    storage = Storage(fresh_azurite.connection_string)
    problems = []
    before = queue_length(storage, INVOICE_TRANSFERS)
    accepted = 0
    client = Raw(app.base_url)
    try:
        for n in range(WEBHOOK_CASES):
            what, body, headers = webhook_case(rng)
            status, text = client.request("POST", "/api/basware/webhook", body, headers)
            after = queue_length(storage, INVOICE_TRANSFERS)
            grew, before = after - before, after
            signatures = [v for k, v in headers if k.lower() == HEADER.lower()]
            signed = len(signatures) == 1 and signature_is_valid(body, signatures[0])
            took = status == 200 and b'"accepted"' in text  # Basware's callback spec: 200, not 202
            accepted += took
            if status >= 500:
                problems.append(f"case {n} ({what}): {status} {text[:120]!r}")
            elif grew and not signed:
                problems.append(f"case {n} ({what}): enqueued without a valid signature ({status})")
            elif grew != (1 if took else 0):
                problems.append(f"case {n} ({what}): answered {status} and enqueued {grew}")
            elif not signed and status not in (401, 413) and not (status == 200 and not signatures
                                                                  and b"ConnectionTest" in body):
                problems.append(f"case {n} ({what}): unsigned body answered {status}")
    finally:
        client.close()
    assert problems == [], "\n".join(problems)
    assert accepted > WEBHOOK_CASES // 20  # the generator does produce valid tasks


def test_fuzzed_bc_notifications_never_answer_a_status_that_deletes_the_subscription(app, fresh_azurite):
    rng = random.Random(SEED + 1)
    storage = Storage(fresh_azurite.connection_string)
    problems = []
    before = queue_length(storage, PAYMENT_CHECKS)
    client = Raw(app.base_url)
    try:
        for n in range(NOTIFICATION_CASES):
            what, method, query, body, valid = notification_case(rng, seed.COMPANY_ID)
            path = "/api/bc/notifications" + (f"?{urlencode(query)}" if query else "")
            status, text = client.request(method, path, body, [("Content-Type", "application/json")])
            after = queue_length(storage, PAYMENT_CHECKS)
            grew, before = after - before, after
            echoed = text.decode("utf-8", "replace")
            if status >= 500 or (400 <= status < 500 and status not in (408, 429)):
                problems.append(f"case {n} ({what}): {status} {text[:120]!r}")
            elif "validationToken" in query and (status != 200 or echoed != query["validationToken"]):
                problems.append(f"case {n} ({what}): handshake answered {status} {echoed[:40]!r}")
            elif grew and not valid:
                problems.append(f"case {n} ({what}): enqueued {grew} without the right clientState")
            elif valid and not grew:
                problems.append(f"case {n} ({what}): a valid notification enqueued nothing ({status})")
    finally:
        client.close()
    assert problems == [], "\n".join(problems)


def _wrong_state_flood(count: int) -> bytes:
    """`count` items with a wrong clientState and distinct subscription ids (what a guesser sends)."""
    items = ",".join(f'{{"subscriptionId":"{n:x}","clientState":"x"}}' for n in range(count))
    return ('{"value":[' + items + "]}").encode()


def audit_rows(storage: Storage) -> int:
    return sum(1 for _ in storage.table("audit").list_entities(select=["RowKey"]))


def test_a_flood_of_wrong_client_state_items_costs_one_audit_row_and_keeps_the_subscription(app, fresh_azurite):
    """~4 MB of 100k items, each with a wrong clientState and its own subscription id: no per-item
    write, at most one audit row for the whole flood, and an answer BC's client waits for."""
    storage = Storage(fresh_azurite.connection_string)
    before_rows = audit_rows(storage)
    under_cap = _wrong_state_flood(90_000)   # just under the 4 MiB body cap: every item is looked at
    over_cap = _wrong_state_flood(100_000)   # over it: refused unread
    assert 3.5 * MB < len(under_cap) < 4 * MB < len(over_cap)
    client = Raw(app.base_url)
    try:
        for body in (under_cap, over_cap, under_cap):
            client.conn = http.client.HTTPConnection(client.host, client.port, timeout=5)  # BC's 5 s
            status, text = client.request("POST", "/api/bc/notifications", body,
                                          [("Content-Type", "application/json")])
            assert status == 202, text[:200]  # never a 4xx: BC would delete the real subscription
    finally:
        client.close()
    assert queue_length(storage, PAYMENT_CHECKS) == 0
    assert audit_rows(storage) - before_rows <= 1
    jobs = list(storage.table("jobs").query_entities("PartitionKey eq 'notification'"))
    assert len(jobs) <= 1
    # a valid notification right after the flood is still enqueued as before
    item = {"subscriptionId": "sub-1", "clientState": seed.BC_CLIENT_STATE, "changeType": "updated",
            "resource": f"api/v2.0/companies({seed.COMPANY_ID})/purchaseInvoices({uuid.uuid4()})"}
    status, _ = Raw(app.base_url).request("POST", "/api/bc/notifications", dumps({"value": [item]}),
                                          [("Content-Type", "application/json")])
    assert status == 202 and queue_length(storage, PAYMENT_CHECKS) == 1
