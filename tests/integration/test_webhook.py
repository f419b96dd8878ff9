"""POST /api/basware/webhook, as the plain function, enqueueing on a real Azurite queue."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid

import pytest

from sandbox import seed
from shared.models.messages import InvoiceTransferMessage
from shared.core.secrets import Secret
from shared.store.storage import INVOICE_TRANSFERS, Storage
from shared.flows.invoices.intake import MAX_BODY_BYTES, handle_webhook, verify_signature

SECRET = Secret(seed.WEBHOOK_SECRET)
FAST = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 5}


def digest(body: bytes, secret: str = seed.WEBHOOK_SECRET) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


ENCODINGS = {
    "hex": lambda d: d.hex(),
    "HEX": lambda d: d.hex().upper(),
    "base64": lambda d: base64.b64encode(d).decode(),
    "base64 unpadded": lambda d: base64.b64encode(d).decode().rstrip("="),
    "sha256=hex": lambda d: "sha256=" + d.hex(),
    "SHA256=HEX": lambda d: "SHA256=" + d.hex().upper(),
    "sha256=base64": lambda d: "sha256=" + base64.b64encode(d).decode(),
}


def task(document_id: str | None = "inv-1", task_type: str = "AccountingDocuments", **extra) -> bytes:
    body = {"taskId": str(uuid.uuid4()), "taskStatus": "New", "taskType": task_type,
            "taskSubType": "WaitingForTransfer", "expirationTime": None, **extra}
    if document_id is not None:
        body["documentId"] = document_id
    return json.dumps(body).encode()


def signed(body: bytes, encoding: str = "hex") -> dict[str, str]:
    return {"X-BWAPI-Signature-256": ENCODINGS[encoding](digest(body)), "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def module_storage(azurite):
    return Storage(azurite.connection_string)


@pytest.fixture
def storage(module_storage):
    module_storage.queue(INVOICE_TRANSFERS).clear_messages()
    return module_storage


@pytest.fixture
def queue(storage):
    """(enqueue callable like the trigger's, reader of what landed on invoice-transfers)."""
    def enqueue(message):
        storage.enqueue(INVOICE_TRANSFERS, message, **FAST)

    def messages():
        q = storage.queue(INVOICE_TRANSFERS)
        return [InvoiceTransferMessage.model_validate_json(m.content) for m in q.peek_messages(max_messages=32)]

    return enqueue, messages


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_each_accepted_signature_encoding_enqueues_one_message(queue, encoding):
    enqueue, messages = queue
    invoice_id = "inv-" + "".join(c if c.isalnum() else "-" for c in encoding)
    body = task(invoice_id)
    status, answer = handle_webhook(body, signed(body, encoding), SECRET, enqueue)
    assert status == 200 and answer["status"] == "accepted", answer
    (message,) = messages()
    assert message.invoice_id == invoice_id
    assert message.source == "webhook"


def test_the_header_name_is_case_insensitive(queue):
    enqueue, messages = queue
    body = task()
    headers = {"x-bwapi-signature-256": digest(body).hex()}
    assert handle_webhook(body, headers, SECRET, enqueue)[0] == 200
    assert len(messages()) == 1


BAD_SIGNATURES = {
    "missing": None,
    "empty": "",
    "wrong secret": hmac.new(b"another-secret", task(), hashlib.sha256).hexdigest(),
    "of another body": hmac.new(seed.WEBHOOK_SECRET.encode(), b"{}", hashlib.sha256).hexdigest(),
    "garbage": "not-a-signature",
    "truncated hex": "sha256=" + digest(task()).hex()[:60],
    "sha1 length": hashlib.sha1(task()).hexdigest(),
    "prefix only": "sha256=",
}


@pytest.mark.parametrize("case", list(BAD_SIGNATURES))
def test_a_missing_or_bad_signature_is_401_and_nothing_is_enqueued(queue, case):
    enqueue, messages = queue
    body = task()
    value = BAD_SIGNATURES[case]
    headers = {} if value is None else {"X-BWAPI-Signature-256": value}
    status, answer = handle_webhook(body, headers, SECRET, enqueue)
    assert status == 401, answer
    assert messages() == []


def test_a_tampered_body_is_401(queue):
    enqueue, messages = queue
    body = task("inv-1")
    headers = signed(body)
    assert handle_webhook(task("inv-2"), headers, SECRET, enqueue)[0] == 401
    assert messages() == []


def test_a_body_over_1_mb_is_413_before_the_signature_is_checked(queue):
    enqueue, messages = queue
    body = task(padding="x" * MAX_BODY_BYTES)
    assert len(body) > MAX_BODY_BYTES
    assert handle_webhook(body, signed(body), SECRET, enqueue)[0] == 413
    assert handle_webhook(body, {}, SECRET, enqueue)[0] == 413
    assert messages() == []


@pytest.mark.parametrize("body, why", [
    (b"{not json", "invalid JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[1, 2]", "not an object"),
    (b"", "empty"),
    (task(None), "no documentId"),
    (task(""), "empty documentId"),
    (task(12345), "documentId not a string"),
    (task("inv-1", task_type=""), "no taskType"),
    (task("../../accountingDocuments"), "path traversal"),
    (task("inv-1/transferResponses"), "a slash"),
    (task("inv-1?ProcessingStatus=Transferred"), "a query"),
    (task("inv-1#x"), "a fragment"),
    (task("inv%2F1"), "an encoded slash"),
    (task("a" * 37), "longer than Basware's 36"),
    (task("inv 1"), "a space"),
])
def test_bad_input_with_a_valid_signature_is_400_and_nothing_is_enqueued(queue, body, why):
    enqueue, messages = queue
    status, answer = handle_webhook(body, signed(body), SECRET, enqueue)
    assert status == 400, (why, answer)
    assert messages() == []


def test_connection_test_is_200_and_enqueues_nothing(queue):
    enqueue, messages = queue
    body = task(None, task_type="ConnectionTest")
    assert handle_webhook(body, signed(body), SECRET, enqueue) == (200, {"status": "ok"})
    assert messages() == []


def test_an_unsigned_connection_test_is_200_but_a_wrongly_signed_one_is_401(queue):
    """Whether Basware signs its ConnectionTest is unknown: without a signature header it is answered
    (it causes no work); with a signature, the signature must be valid."""
    enqueue, messages = queue
    body = task(None, task_type="ConnectionTest")
    assert handle_webhook(body, {}, SECRET, enqueue) == (200, {"status": "ok"})
    wrong = {"X-BWAPI-Signature-256": hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()}
    assert handle_webhook(body, wrong, SECRET, enqueue)[0] == 401
    unsigned_task = task("inv-1")
    assert handle_webhook(unsigned_task, {}, SECRET, enqueue)[0] == 401
    assert messages() == []


def test_the_specs_misspelled_task_type_is_accepted(queue):
    enqueue, messages = queue
    body = task("inv-typo", task_type="AccoutingDocuments")
    assert handle_webhook(body, signed(body), SECRET, enqueue)[0] == 200
    assert [m.invoice_id for m in messages()] == ["inv-typo"]


@pytest.mark.parametrize("task_type, sub_type", [("RequestStatus", "Error"),
                                                 ("AccountingDocuments", "WaitingForPrebook")])
def test_other_notifications_are_acknowledged_and_ignored(queue, task_type, sub_type):
    enqueue, messages = queue
    body = task("inv-1", task_type=task_type, taskSubType=sub_type)
    status, answer = handle_webhook(body, signed(body), SECRET, enqueue)
    assert status == 200 and answer["status"] == "ignored"
    assert messages() == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_storage_down_is_503_quickly():
    port = _closed_port()
    down = Storage(f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                   f"AccountKey={base64.b64encode(b'k' * 32).decode()};"
                   f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
                   f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1")
    body = task()
    started = time.monotonic()
    status, _ = handle_webhook(body, signed(body), SECRET, lambda m: down.enqueue(INVOICE_TRANSFERS, m, **FAST))
    assert status == 503
    assert time.monotonic() - started < 3


def test_a_bad_signature_never_reaches_the_queue_even_when_storage_is_down():
    def explode(message):
        raise AssertionError("enqueue must not be called")

    assert handle_webhook(task(), {"X-BWAPI-Signature-256": "00" * 32}, SECRET, explode)[0] == 401
    assert handle_webhook(b"{", {}, SECRET, explode)[0] == 401


def test_verify_signature_reports_the_matching_encoding():
    body = b'{"documentId":"x"}'
    d = digest(body)
    assert verify_signature(body, d.hex(), seed.WEBHOOK_SECRET) == "hex"
    assert verify_signature(body, base64.b64encode(d).decode(), seed.WEBHOOK_SECRET) == "base64"
    assert verify_signature(body, base64.urlsafe_b64encode(d).decode(), seed.WEBHOOK_SECRET) in ("base64",
                                                                                                 "base64url")
    assert verify_signature(body, d.hex(), "") is None
