"""The invoice image travels with the invoice: Basware attachments onto the BC purchase invoice.

Over real HTTP: the Basware sandbox's attachment download (302 to a pre-signed URL that refuses an
Authorization header), the BC sandbox's documentAttachments, real Azurite for jobs and audit rows;
the invoice flow's plain functions worked by the same small host stand-in test_invoice_flow uses."""
from __future__ import annotations

import re
import time

import httpx
import pytest

from sandbox import seed
from shared.flows.invoices.transfer import transfer_invoice
from shared.models.messages import InvoiceTransferMessage
from shared.store.jobs import FAILED
from tests.integration.test_invoice_flow import (CrashingTransport, SimulatedCrash, Worker, bc_documents,
                                                 new_runtime, only, pump, settled, state, steps, successes,
                                                 transfer_responses)
# the invoice flow's `env`: BC's late-commit window shortened to the sandbox's seconds
from tests.integration.test_invoice_flow import env  # noqa: F401,E402

ATTACHMENT_API = re.compile(r"/documentAttachments")


def with_image(doc: dict, *extra: dict) -> dict:
    return {**doc, "attachments": [seed.attachment_entry(doc["invoiceId"], f"{doc['invoiceNumber']}.pdf"), *extra]}


def first_invoice(positive: bool = True) -> dict:
    return next(d for d in seed.approved_invoices(24) if (d["grossSum"] > 0) == positive)


def transfer(rt, doc: dict) -> None:
    rt.storage.enqueue("invoice-transfers", InvoiceTransferMessage(invoice_id=doc["invoiceId"]))
    pump(Worker(rt), until=settled(rt, [doc["invoiceId"]]))


def posted_document(bc, doc: dict):
    (found,) = bc_documents(bc, doc["invoiceNumber"])
    return found


def audit_rows(rt, doc: dict, step: str = "attach") -> list[tuple[str, str]]:
    from shared.flows.invoices.transfer import invoice_job_id
    return [(r["outcome"], r.get("message", "")) for r in rt.audit.trail(invoice_job_id(doc["invoiceId"]))
            if r["step"] == step]


# -- the happy path -----------------------------------------------------------------------------------
def test_the_image_is_on_the_posted_invoice_byte_for_byte_under_its_basware_name(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    image = seed.pdf(["Acme Steel Supply", "a scanned invoice"]) + bytes(range(256)) * 50  # binary-safe
    basware_sandbox.set_attachment_content(doc["invoiceId"], doc["attachments"][0]["externalCode"], image)
    transfer(rt, doc)

    posted = posted_document(bc_sandbox, doc)
    assert posted.status == "Open"
    (att,) = bc_sandbox.attachments_of(posted.id)
    assert att.file_name == f"{doc['invoiceNumber']}.pdf" and att.parent_type == "Purchase Invoice"
    # read back through BC's API, as a user's client would
    (listed,) = rt.bc.list_attachments(seed.COMPANY_ID, posted.id)
    assert listed.byte_size == len(image)
    assert rt.bc.attachment_content(seed.COMPANY_ID, listed.id) == image
    assert ("ok", f"{doc['invoiceNumber']}.pdf ({len(image)} bytes, ORIGINALIMAGE) attached to the BC document") \
        in audit_rows(rt, doc)
    # the pre-signed URL refuses a bearer token, so this download proves it never received one
    presigned = [c for c in basware_sandbox.calls.since(0) if c.path.startswith("/_presigned/")]
    assert presigned and all(c.status == 200 for c in presigned)


def test_the_image_on_the_draft_is_carried_to_the_posted_invoice(env, basware_sandbox, bc_sandbox):
    draft_rt = new_runtime(env, "draft-worker", POST_MODE="draft")
    try:
        (doc,) = only(basware_sandbox, [with_image(first_invoice())])
        transfer(draft_rt, doc)
        draft = posted_document(bc_sandbox, doc)
        assert draft.status == "Draft"
        (on_draft,) = draft_rt.bc.list_attachments(seed.COMPANY_ID, draft.id)
        expected = basware_sandbox.attachment_content(doc["invoiceId"], doc["attachments"][0]["externalCode"])
        assert expected.startswith(b"%PDF-1.4") and expected.rstrip().endswith(b"%%EOF")
        assert draft_rt.bc.attachment_content(seed.COMPANY_ID, on_draft.id) == expected

        draft_rt.bc.post_document(seed.COMPANY_ID, "purchaseInvoices", draft.id)  # a user posts it in BC
        (on_posted,) = draft_rt.bc.list_attachments(seed.COMPANY_ID, draft.id)  # same document id (codeunit 5529)
        assert on_posted.id != on_draft.id  # BC copies the record to the posted invoice
        assert draft_rt.bc.attachment_content(seed.COMPANY_ID, on_posted.id) == expected
    finally:
        draft_rt.close()


def test_a_credit_memo_carries_its_image(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [with_image(first_invoice(positive=False))])
    transfer(rt, doc)
    posted = posted_document(bc_sandbox, doc)
    assert posted.type.entity_set == "purchaseCreditMemos" and posted.status == "Open"
    (att,) = bc_sandbox.attachments_of(posted.id)
    assert att.parent_type == "Purchase Credit Memo"
    assert att.content == basware_sandbox.attachment_content(doc["invoiceId"], doc["attachments"][0]["externalCode"])


def test_only_the_chosen_categories_travel_and_confidential_ones_only_when_asked(env, basware_sandbox, bc_sandbox):
    base = first_invoice()
    note = seed.attachment_entry(base["invoiceId"], "delivery-note.pdf", "ATTACHMENT")
    secret = seed.attachment_entry(base["invoiceId"], "salary-annex.pdf", "ATTACHMENT", confidential=True)
    mail = seed.attachment_entry(base["invoiceId"], "mail.eml", "EXPORTEDEMAIL")
    (doc,) = only(basware_sandbox, [with_image(base, note, secret, mail)])

    rt = new_runtime(env, "w1", ATTACHMENT_CATEGORIES="ORIGINALIMAGE,ATTACHMENT")
    try:
        transfer(rt, doc)
        names = sorted(a.file_name for a in bc_sandbox.attachments_of(posted_document(bc_sandbox, doc).id))
        assert names == sorted([f"{doc['invoiceNumber']}.pdf", "delivery-note.pdf"])
        assert any(o == "skipped" and "salary-annex.pdf is confidential" in m for o, m in audit_rows(rt, doc))
    finally:
        rt.close()

    second = with_image({**first_invoice(), "invoiceId": seed.stable_uuid("conf"), "invoiceNumber": "INV-CONF-1"})
    second["attachments"].append(seed.attachment_entry(second["invoiceId"], "salary-annex.pdf", "ATTACHMENT", True))
    only(basware_sandbox, [second])
    rt = new_runtime(env, "w2", ATTACHMENT_CATEGORIES="ORIGINALIMAGE,ATTACHMENT,CONFIDENTIAL")
    try:
        transfer(rt, second)
        names = sorted(a.file_name for a in bc_sandbox.attachments_of(posted_document(bc_sandbox, second).id))
        assert names == ["INV-CONF-1.pdf", "salary-annex.pdf"]
    finally:
        rt.close()


def test_an_invoice_without_attachments_costs_no_attachment_request(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [first_invoice()])
    transfer(rt, doc)
    assert posted_document(bc_sandbox, doc).status == "Open"
    assert not [c for c in bc_sandbox.calls.since(0) if ATTACHMENT_API.search(c.path)]
    assert not [c for c in basware_sandbox.calls.since(0) if "/attachments/" in c.path]


def test_an_image_costs_two_bc_requests_and_two_basware_requests(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    transfer(rt, doc)
    bc_calls = [f"{c.method} {c.path.rsplit('/', 1)[-1]}" for c in bc_sandbox.calls.since(0)
                if ATTACHMENT_API.search(c.path)]
    assert [re.sub(r"\(.*\)", "(id)", c) for c in bc_calls] == ["POST documentAttachments",
                                                                "PATCH attachmentContent"]
    downloads = [c for c in basware_sandbox.calls.since(0) if "/attachments/" in c.path or
                 c.path.startswith("/_presigned/")]
    assert [c.status for c in downloads if "/attachments/" in c.path] == [302]


# -- failure policy -----------------------------------------------------------------------------------
def test_without_the_tenant_setting_the_invoice_is_posted_and_the_audit_says_the_image_was_not_available(
        rt, basware_sandbox, bc_sandbox):
    basware_sandbox.configure({"send_invoice_attachments": False})
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    transfer(rt, doc)
    posted = posted_document(bc_sandbox, doc)
    assert posted.status == "Open" and successes(basware_sandbox, doc["invoiceId"])
    assert bc_sandbox.attachments_of(posted.id) == []
    ((outcome, message),) = audit_rows(rt, doc)
    assert outcome == "not_available" and "OpenApi.SendInvoiceAttachments" in message


def test_required_mode_fails_the_transfer_with_a_clerk_message_and_leaves_nothing_in_bc(env, basware_sandbox,
                                                                                      bc_sandbox):
    basware_sandbox.configure({"send_invoice_attachments": False})
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    rt = new_runtime(env, "strict", ATTACHMENT_REQUIRED="true")
    try:
        transfer(rt, doc)
        assert state(rt, doc["invoiceId"]) == FAILED
        (response,) = transfer_responses(basware_sandbox, doc["invoiceId"])
        assert response["success"] is False
        assert "invoice image" in response["responseMessage"] and "ATTACHMENT_REQUIRED" in response["responseMessage"]
        assert len(response["responseMessage"]) <= 250
        assert basware_sandbox.document_status(doc["invoiceId"]) == "TransferFailed"
        assert bc_documents(bc_sandbox, doc["invoiceNumber"]) == []  # the draft was removed
        assert not bc_sandbox.calls.find("POST", r"Microsoft\.NAV\.post$")

        # an invoice Basware lists no image for fails the same way, before anything is downloaded
        other = {**first_invoice(), "invoiceId": seed.stable_uuid("no-image"), "invoiceNumber": "INV-NOIMG-1"}
        only(basware_sandbox, [other])
        transfer(rt, other)
        (response,) = transfer_responses(basware_sandbox, other["invoiceId"])
        assert response["success"] is False and "ORIGINALIMAGE" in response["responseMessage"]
    finally:
        rt.close()


def test_required_mode_posts_when_the_image_is_there(env, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    rt = new_runtime(env, "strict", ATTACHMENT_REQUIRED="true")
    try:
        transfer(rt, doc)
        assert len(bc_sandbox.attachments_of(posted_document(bc_sandbox, doc).id)) == 1
    finally:
        rt.close()


def test_transient_download_failures_are_retried(rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    basware_sandbox.faults.add(r"/attachments/", count=2, status=503)
    transfer(rt, doc)
    (att,) = bc_sandbox.attachments_of(posted_document(bc_sandbox, doc).id)
    assert att.content == basware_sandbox.attachment_content(doc["invoiceId"], doc["attachments"][0]["externalCode"])
    assert [o for o, _ in audit_rows(rt, doc)] == ["retry", "retry", "ok"]


@pytest.mark.parametrize("status", [403, 500])
def test_a_refused_pre_signed_url_is_retryable_and_its_error_never_carries_the_signature(rt, basware_sandbox, status):
    from shared.core.errors import TransientError

    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    code = doc["attachments"][0]["externalCode"]
    basware_sandbox.faults.add(r"^/_presigned/", count=1, status=status)  # e.g. 403: the URL expired
    with pytest.raises(TransientError) as caught:
        with rt.basware.open_attachment(doc["invoiceId"], code):
            pass
    assert f"pre-signed attachment URL answered {status}" in caught.value.summary()
    assert "Signature" not in caught.value.summary() and "X-Amz" not in caught.value.summary()
    with rt.basware.open_attachment(doc["invoiceId"], code) as download:  # asked again: a new URL
        assert b"".join(download.chunks()) == basware_sandbox.attachment_content(doc["invoiceId"], code)


def test_a_file_larger_than_bc_accepts_is_refused_with_an_audit_row_and_the_invoice_posted(rt, basware_sandbox,
                                                                                       bc_sandbox):
    bc_sandbox.configure({"max_attachment_bytes": 4096})  # BC's 350 MB, scaled down
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    basware_sandbox.set_attachment_content(doc["invoiceId"], doc["attachments"][0]["externalCode"], b"x" * 10_000)
    transfer(rt, doc)
    posted = posted_document(bc_sandbox, doc)
    assert posted.status == "Open"
    assert [a.byte_size for a in rt.bc.list_attachments(seed.COMPANY_ID, posted.id)] == [0]  # record, no file
    assert any(o == "refused" and "more than BC accepts" in m for o, m in audit_rows(rt, doc))


# -- exactly one copy ----------------------------------------------------------------------------------
class LosingTransport(httpx.HTTPTransport):
    """BC does the request, its answer is lost on the way back (a timeout to the client)."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__()
        self.method, self.path, self.fired = method, re.compile(path), False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not self.fired and request.method == self.method and self.path.search(request.url.path):
            self.fired = True
            response.read()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


# a lost PATCH answer: the content is sent again (it replaces); a lost POST answer: BC is asked first
@pytest.mark.parametrize("method,path,sent", [("PATCH", r"/attachmentContent$", 2), ("POST", r"/documentAttachments$", 1)])
def test_a_lost_answer_leaves_exactly_one_attachment(env, basware_sandbox, bc_sandbox, method, path, sent):
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    rt = new_runtime(env, "lossy", transport=LosingTransport(method, path))
    try:
        transfer(rt, doc)
        assert rt.bc.counters["requests"]  # sanity: this runtime did the work
        (att,) = bc_sandbox.attachments_of(posted_document(bc_sandbox, doc).id)
        assert att.content == basware_sandbox.attachment_content(doc["invoiceId"],
                                                                 doc["attachments"][0]["externalCode"])
        assert len(bc_sandbox.calls.find(method, path)) == sent
    finally:
        rt.close()


def test_a_crash_between_the_record_and_its_content_then_redelivery_leaves_one_complete_attachment(
        env, rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    crashing = new_runtime(env, "doomed", transport=CrashingTransport("PATCH", r"/attachmentContent$",
                                                                      after_response=False))
    try:
        with pytest.raises(SimulatedCrash):
            transfer_invoice(crashing, InvoiceTransferMessage(invoice_id=doc["invoiceId"]), lease_seconds=1)
    finally:
        crashing.close()
    (draft,) = bc_documents(bc_sandbox, doc["invoiceNumber"])
    assert [a.byte_size for a in rt.bc.list_attachments(seed.COMPANY_ID, draft.id)] == [0]  # the record, no file
    time.sleep(1.1)  # the dead worker's lease runs out; its message is delivered again
    transfer(rt, doc)
    (att,) = bc_sandbox.attachments_of(posted_document(bc_sandbox, doc).id)
    assert att.content == basware_sandbox.attachment_content(doc["invoiceId"], doc["attachments"][0]["externalCode"])
    assert ("find_document", "reuse") in steps(rt, doc["invoiceId"])
    assert len(bc_sandbox.calls.find("POST", r"/documentAttachments$")) == 1


def test_a_replay_of_a_job_that_attached_but_did_not_post_adds_nothing(env, rt, basware_sandbox, bc_sandbox):
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    crashing = new_runtime(env, "doomed", transport=CrashingTransport("POST", r"/Microsoft\.NAV\.post$",
                                                                      after_response=False))
    try:
        with pytest.raises(SimulatedCrash):
            transfer_invoice(crashing, InvoiceTransferMessage(invoice_id=doc["invoiceId"]), lease_seconds=1)
    finally:
        crashing.close()
    time.sleep(1.1)
    transfer(rt, doc)
    assert len(bc_sandbox.attachments_of(posted_document(bc_sandbox, doc).id)) == 1
    assert any(o == "already" for o, _ in audit_rows(rt, doc))
    assert len(bc_sandbox.calls.find("POST", r"/documentAttachments$")) == 1


# -- the sandboxes themselves ------------------------------------------------------------------------------
def basware_token(basware) -> str:
    response = httpx.post(f"{basware.base_url}/v1/tokens", auth=(seed.BASWARE_CLIENT_ID, seed.BASWARE_CLIENT_SECRET),
                          data={"grant_type": "client_credentials", "scope": "accountingDocuments.read"})
    return response.json()["access_token"]


def test_basware_download_redirects_to_a_url_that_refuses_the_bearer_token(basware_sandbox):
    (doc,) = only(basware_sandbox, [with_image(first_invoice())])
    code = doc["attachments"][0]["externalCode"]
    auth = {"Authorization": f"Bearer {basware_token(basware_sandbox)}"}
    url = f"{basware_sandbox.base_url}/v1/accountingDocuments/{doc['invoiceId']}/attachments/{code}"
    assert httpx.get(url).status_code == 401
    first = httpx.get(url, headers=auth)
    assert first.status_code == 302
    location = first.headers["location"]
    refused = httpx.get(location, headers=auth)
    assert refused.status_code in (400, 403) and b"Only one auth mechanism allowed" in refused.content
    served = httpx.get(location)
    assert served.status_code == 200 and served.content.startswith(b"%PDF")
    assert served.headers["content-type"] == "application/octet-stream"  # the type is in the file name only
    assert httpx.get(url.replace(code, "0" * 32), headers=auth).status_code == 404
    basware_sandbox.advance_clock(901)
    assert httpx.get(location).status_code == 403  # valid 15 minutes
    basware_sandbox.configure({"send_invoice_attachments": False})
    assert httpx.get(url, headers=auth).status_code == 404


def test_bc_document_attachments_need_if_match_limit_size_and_follow_the_document(rt, bc_sandbox):
    company = seed.COMPANY_ID
    vendor = next(iter(bc_sandbox.company.vendor_by_number))
    base = f"{rt.bc.base_url}/companies({company})"
    token = {"Authorization": f"Bearer {rt.bc.tokens.token()}"}
    created = httpx.post(f"{base}/purchaseInvoices", headers=token,
                         json={"vendorNumber": vendor, "vendorInvoiceNumber": "ATT-1", "invoiceDate": "2026-11-02"})
    assert created.status_code == 201, created.text
    draft_id = created.json()["id"]
    bad = httpx.post(f"{base}/documentAttachments", headers=token,
                     json={"fileName": "x.pdf", "parentType": "Purchase Invoice", "parentId": seed.stable_uuid("none")})
    assert bad.status_code == 400
    record = httpx.post(f"{base}/documentAttachments", headers=token,
                        json={"fileName": "x.pdf", "parentType": "Purchase Invoice", "parentId": draft_id})
    assert record.status_code == 201 and record.json()["byteSize"] == 0
    content_url = f"{base}/documentAttachments({record.json()['id']})/attachmentContent"
    no_etag = httpx.patch(content_url, headers=token, content=b"%PDF-1.4 tiny")
    assert no_etag.status_code == 400 and no_etag.json()["error"]["code"] == "BadRequest_InvalidToken"
    ok = httpx.patch(content_url, headers={**token, "If-Match": "*"}, content=b"%PDF-1.4 tiny")
    assert ok.status_code == 204
    assert httpx.get(content_url, headers=token).content == b"%PDF-1.4 tiny"
    bc_sandbox.configure({"max_attachment_bytes": 10})
    assert httpx.patch(content_url, headers={**token, "If-Match": "*"}, content=b"y" * 11).status_code == 413
    # deleting the draft deletes its attachments
    etag = httpx.get(f"{base}/purchaseInvoices({draft_id})", headers=token).json()["@odata.etag"]
    assert httpx.delete(f"{base}/purchaseInvoices({draft_id})", headers={**token, "If-Match": etag}).status_code == 204
    assert bc_sandbox.attachments_of(draft_id) == []
