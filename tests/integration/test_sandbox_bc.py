"""The BC sandbox behaves like Business Central API v2.0 (Microsoft Learn's API v2.0 reference), over real HTTP."""
from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandbox import seed
from sandbox.bc import BcSandbox
from sandbox.common import SandboxServer

API = f"/v2.0/{seed.TENANT_ID}/{seed.ENVIRONMENT}/api/v2.0"
CO = f"{API}/companies({seed.COMPANY_ID})"
SCOPE = "https://api.businesscentral.dynamics.com/.default"
CORRELATION = re.compile(r"  CorrelationId:  [0-9a-f-]{36}\.$")


def serve(app: BcSandbox):
    server = SandboxServer(app).start()
    app.base_url = server.base_url
    return server


def stop(app: BcSandbox, server: SandboxServer) -> None:
    """Stop without waiting for the accept loop's 0.5 s poll (keeps the file fast)."""
    app.close()
    threading.Thread(target=server.stop, daemon=True).start()


@pytest.fixture
def bc():
    app = BcSandbox()
    server = serve(app)
    yield app
    stop(app, server)


def get_token(base: str, client_id: str = seed.BC_CLIENT_ID, secret: str = seed.BC_CLIENT_SECRET,
              scope: str = SCOPE) -> httpx.Response:
    return httpx.post(f"{base}/{seed.TENANT_ID}/oauth2/v2.0/token",
                      data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
                            "scope": scope})


def client_for(app: BcSandbox, client_id: str = seed.BC_CLIENT_ID, secret: str = seed.BC_CLIENT_SECRET):
    token = get_token(app.base_url, client_id, secret).json()["access_token"]
    return httpx.Client(base_url=app.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.fixture
def api(bc):
    with client_for(bc) as client:
        yield client


def assert_bc_error(response: httpx.Response, status: int, code_prefix: str, text: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert error["code"].startswith(code_prefix), error
    assert CORRELATION.search(error["message"]), error["message"]
    if text:
        assert text in error["message"], error["message"]
    return error["message"]


def line(account: str, quantity, unit_cost, tax: str = "STANDARD", **extra) -> dict:
    return {"lineType": "Account", "lineObjectNumber": account, "quantity": quantity, "unitCost": unit_cost,
            "taxCode": tax, **extra}


def invoice(vendor: str = "V10010", number: str = "INV-1001", lines: list | None = None, **extra) -> dict:
    return {"vendorNumber": vendor, "vendorInvoiceNumber": number, "invoiceDate": "2026-11-20",
            "postingDate": "2026-11-20", "purchaseInvoiceLines": lines or [line("6200", 1, 100)], **extra}


def create(api, body: dict, entity_set: str = "purchaseInvoices") -> httpx.Response:
    return api.post(f"{CO}/{entity_set}", json=body)


# -- Entra token endpoint and bearer checks ---------------------------------------------------------
def test_token_flow_wrong_secret_wrong_scope_and_expiry(bc):
    ok = get_token(bc.base_url)
    assert ok.status_code == 200
    body = ok.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == body["ext_expires_in"] > 3000
    assert bc.tokens_issued == 1

    bad_secret = get_token(bc.base_url, secret="not-the-secret")
    assert bad_secret.status_code == 401
    assert bad_secret.json()["error"] == "invalid_client"
    assert bad_secret.json()["error_description"].startswith("AADSTS7000215:")

    bad_scope = get_token(bc.base_url, scope="https://graph.microsoft.com/User.Read")
    assert bad_scope.status_code == 400 and bad_scope.json()["error"] == "invalid_scope"
    assert bc.tokens_issued == 1

    token = body["access_token"]
    companies = httpx.get(f"{bc.base_url}{API}/companies", headers={"Authorization": f"Bearer {token}"})
    assert companies.status_code == 200
    assert [c["id"] for c in companies.json()["value"]] == [seed.COMPANY_ID]
    assert_bc_error(httpx.get(f"{bc.base_url}{API}/companies"), 401, "Authentication_InvalidCredentials")

    bc.clock.advance(body["expires_in"] + 1)  # the token runs out
    expired = httpx.get(f"{bc.base_url}{API}/companies", headers={"Authorization": f"Bearer {token}"})
    assert_bc_error(expired, 401, "Authentication_InvalidCredentials")


def test_token_lifetime_is_configurable(bc):
    httpx.post(f"{bc.base_url}/_sandbox/config", json={"token_lifetime": 120})
    assert get_token(bc.base_url).json()["expires_in"] == 120


def test_unknown_company_environment_and_path_answer_bc_errors(bc, api):
    assert_bc_error(api.get(f"{API}/companies(11111111-2222-4333-8444-555555555555)/vendors"), 404,
                    "Internal_CompanyNotFound")
    assert_bc_error(api.get(f"/v2.0/{seed.TENANT_ID}/Sandbox/api/v2.0/companies"), 404, "BadRequest_")
    assert_bc_error(api.get(f"{CO}/nosuchEntities"), 404, "BadRequest_NotFound")
    assert_bc_error(api.get(f"{CO}/purchaseInvoices(11111111-2222-4333-8444-555555555555)"), 404,
                    "Internal_RecordNotFound")
    assert_bc_error(api.post(f"{CO}/accounts", json={}), 405, "BadRequest_MethodNotAllowed")


# -- deep insert and BC's validation ----------------------------------------------------------------
def test_deep_insert_with_three_lines_and_dimensions_creates_a_draft_with_bc_totals(api):
    body = invoice(lines=[
        line("6200", 2, 60.00, "STANDARD", dimensionSetLines=[{"code": "PROJECT", "valueCode": "P-1001"}]),
        line("6230", 1, 1000, "REDUCED", description="IT support November"),
        line("5130", 3, 33.33, "ZERO", dimensionSetLines=[{"code": "PROJECT", "valueCode": "P-1002"}]),
    ], dimensionSetLines=[{"code": "DEPARTMENT", "valueCode": "PROD"}, {"code": "AREA", "valueCode": "NORTH"}])
    created = create(api, body)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["status"] == "Draft" and doc["number"] == "1001"
    assert doc["vendorName"] == "Baltic Bearings" and doc["currencyCode"] == "EUR"
    assert Decimal(str(doc["totalAmountExcludingTax"])) == Decimal("1219.99")
    assert Decimal(str(doc["totalTaxAmount"])) == Decimal("150.00")
    assert Decimal(str(doc["totalAmountIncludingTax"])) == Decimal("1369.99")
    assert doc["@odata.etag"].startswith('W/"') and doc["lastModifiedDateTime"].endswith("Z")
    assert doc["shortcutDimension1Code"] == "PROD"

    again = api.get(f"{CO}/purchaseInvoices({doc['id']})",
                    params={"$expand": "purchaseInvoiceLines($expand=dimensionSetLines),dimensionSetLines"}).json()
    lines = again["purchaseInvoiceLines"]
    assert [ln["sequence"] for ln in lines] == [10000, 20000, 30000]
    assert [Decimal(str(ln["totalTaxAmount"])) for ln in lines] == [Decimal("30.00"), Decimal("120.00"), 0]
    assert lines[1]["description"] == "IT support November" and lines[0]["description"] == "Office Supplies"
    dims = [{d["code"]: d["valueCode"] for d in ln["dimensionSetLines"]} for ln in lines]
    assert dims[0] == {"DEPARTMENT": "PROD", "AREA": "NORTH", "PROJECT": "P-1001"}  # inherits the header's
    assert dims[2] == {"DEPARTMENT": "PROD", "AREA": "NORTH", "PROJECT": "P-1002"}
    assert {d["code"] for d in again["dimensionSetLines"]} == {"DEPARTMENT", "AREA"}


def test_blocked_account_refuses_the_whole_deep_insert_and_stores_nothing(bc, api):
    body = invoice(lines=[line("6200", 1, 10), line(seed.BLOCKED_ACCOUNT, 1, 10)],
                   dimensionSetLines=[{"code": "DEPARTMENT", "valueCode": "PROD"}])
    message = assert_bc_error(create(api, body), 400, "Application_", "6900")
    assert "Blocked must be equal to 'No'" in message
    assert bc.documents == {}
    assert api.get(f"{CO}/purchaseInvoices").json()["value"] == []


def test_blocked_vendor_is_refused(api):
    assert_bc_error(create(api, invoice(vendor=seed.BLOCKED_VENDOR)), 400, "Application_",
                    "You cannot create this type of document when Vendor V10490 is blocked with type All")


def test_unknown_dimension_value_is_refused_naming_the_value(bc, api):
    body = invoice(lines=[line("6200", 1, 10, dimensionSetLines=[{"code": "DEPARTMENT", "valueCode": "NOPE"}])])
    assert_bc_error(create(api, body), 400, "Application_", "NOPE")
    assert bc.documents == {}


def test_vendor_invoice_number_over_35_characters_is_refused(api):
    assert_bc_error(create(api, invoice(number="X" * 36)), 400, "Application_StringExceededLength")
    assert create(api, invoice(number="X" * 35)).status_code == 201


@pytest.mark.parametrize("field", ["number", "status", "totalAmountIncludingTax", "vendorName", "id"])
def test_read_only_fields_in_the_body_are_refused(api, field):
    body = invoice()
    body[field] = "11111111-2222-4333-8444-555555555555" if field == "id" else 1 if field.startswith("total") else "X"
    assert_bc_error(create(api, body), 400, "BadRequest_InvalidOperation", field)


@pytest.mark.parametrize("body_change, code, text", [
    ({"currencyCode": "XYZ"}, "Application_", 'The "currencyCode" does not match to a Currency.'),
    ({"vendorNumber": "V99999"}, "Application_", "The vendor cannot be found."),
    ({"lines": [line("6200", 1, 10, "NOTAX")]}, "Application_", "NOTAX"),
    ({"lines": [line(seed.NON_DIRECT_ACCOUNT, 1, 10)]}, "Application_", "Direct Posting must be equal to 'Yes'"),
    ({"lines": [line(seed.HEADING_ACCOUNT, 1, 10)]}, "Application_", "Account Type must be equal to 'Posting'"),
    ({"lines": [line("9999", 1, 10)]}, "Application_", "9999"),
    ({"lines": [line("6200", "1", 10)]}, "BadRequest", "Edm.Decimal"),
    ({"lines": [{"lineType": "Item", "lineObjectNumber": "1000", "quantity": 1, "unitCost": 1}]},
     "Application_", "Item"),
    ({"unknownField": 1}, "BadRequest", "unknownField"),
])
def test_other_bc_validations(bc, api, body_change, code, text):
    changes = dict(body_change)
    body = invoice(lines=changes.pop("lines", None), **{k: v for k, v in changes.items() if k != "vendorNumber"})
    if "vendorNumber" in changes:
        body["vendorNumber"] = changes["vendorNumber"]
    assert_bc_error(create(api, body), 400, code, text)
    assert bc.documents == {}


def test_foreign_currency_and_lcy_code(api):
    assert create(api, invoice(currencyCode="USD")).json()["currencyCode"] == "USD"
    assert create(api, invoice(number="INV-2", currencyCode="EUR")).json()["currencyCode"] == "EUR"


# -- concurrency tokens --------------------------------------------------------------------------------
def test_patch_needs_if_match_stale_etag_conflicts_current_etag_updates(api):
    doc = create(api, invoice()).json()
    url = f"{CO}/purchaseInvoices({doc['id']})"
    assert_bc_error(api.patch(url, json={"dueDate": "2026-12-31"}), 400, "BadRequest_",
                    "Could not validate the client concurrency token")
    current = api.patch(url, json={"dueDate": "2026-12-31"}, headers={"If-Match": doc["@odata.etag"]})
    assert current.status_code == 200, current.text
    updated = current.json()
    assert updated["dueDate"] == "2026-12-31"
    assert updated["@odata.etag"] != doc["@odata.etag"]
    assert updated["lastModifiedDateTime"] > doc["lastModifiedDateTime"]
    stale = api.patch(url, json={"dueDate": "2027-01-31"}, headers={"If-Match": doc["@odata.etag"]})
    assert_bc_error(stale, 409, "Request_EntityChanged")
    assert api.patch(url, json={"dueDate": "2027-01-31"}, headers={"If-Match": "*"}).status_code == 200


def test_line_changes_recompute_header_totals_and_change_its_etag(api):
    doc = create(api, invoice()).json()
    lines_url = f"{CO}/purchaseInvoices({doc['id']})/purchaseInvoiceLines"
    added = api.post(lines_url, json=line("6300", 1, 50))
    assert added.status_code == 201 and added.json()["sequence"] == 20000
    header = api.get(f"{CO}/purchaseInvoices({doc['id']})").json()
    assert Decimal(str(header["totalAmountIncludingTax"])) == Decimal("187.50")
    assert header["@odata.etag"] != doc["@odata.etag"]
    first = api.get(lines_url).json()["value"][0]
    assert api.delete(f"{lines_url}({first['id']})", headers={"If-Match": first["@odata.etag"]}).status_code == 204
    assert api.get(f"{CO}/purchaseInvoices({doc['id']})").json()["totalAmountExcludingTax"] == 50


# -- posting ----------------------------------------------------------------------------------------------
def test_post_keeps_the_id_gives_a_posted_number_and_refuses_duplicates_and_reposting(bc, api):
    doc = create(api, invoice(vendor="V10020", number="inv-dup-1")).json()
    assert doc["vendorInvoiceNumber"] == "INV-DUP-1"  # Code[35]: BC upper-cases it
    post_url = f"{CO}/purchaseInvoices({doc['id']})/Microsoft.NAV.post"
    posted = api.post(post_url)
    assert posted.status_code == 204 and posted.content == b""
    after = api.get(f"{CO}/purchaseInvoices({doc['id']})").json()
    assert after["id"] == doc["id"] and after["number"] == "PI-108001" and after["status"] == "Open"
    assert bc.documents[doc["id"]].draft_number == "1001"

    second = create(api, invoice(vendor="V10020", number="INV-DUP-1"))
    assert second.status_code == 201  # two drafts may share the number; posting decides
    refused = api.post(f"{CO}/purchaseInvoices({second.json()['id']})/Microsoft.NAV.post")
    assert_bc_error(refused, 400, "Application_DialogException",
                    "Purchase Invoice INV-DUP-1 already exists for this vendor.")
    assert bc.documents[second.json()["id"]].status == "Draft"

    assert_bc_error(api.post(post_url), 400, "Application_", "The action can be applied to a draft invoice only.")
    modified = api.patch(f"{CO}/purchaseInvoices({doc['id']})", json={"dueDate": "2027-01-01"},
                         headers={"If-Match": "*"})
    assert_bc_error(modified, 400, "Application_", "The invoice has been posted and can no longer be modified.")
    assert_bc_error(api.delete(f"{CO}/purchaseInvoices({doc['id']})", headers={"If-Match": "*"}), 400,
                    "Application_")
    # with If-Match the post works too (Microsoft Learn does not say whether BC needs it)
    third = create(api, invoice(vendor="V10030", number="INV-3")).json()
    assert api.post(f"{CO}/purchaseInvoices({third['id']})/Microsoft.NAV.post",
                    headers={"If-Match": third["@odata.etag"]}).status_code == 204


def test_credit_memo_deep_insert_and_post(api):
    body = {"vendorNumber": "V10040", "vendorCreditMemoNumber": "CN-77", "creditMemoDate": "2026-11-21",
            "purchaseCreditMemoLines": [line("6200", 1, 40)]}
    created = create(api, body, "purchaseCreditMemos")
    assert created.status_code == 201, created.text
    memo = created.json()
    assert memo["number"] == "CM1001" and memo["totalAmountIncludingTax"] == 50
    assert api.post(f"{CO}/purchaseCreditMemos({memo['id']})/Microsoft.NAV.post").status_code == 204
    after = api.get(f"{CO}/purchaseCreditMemos({memo['id']})").json()
    assert (after["number"], after["status"]) == ("PCM-109001", "Open")


def test_filter_by_vendor_and_invoice_number_finds_drafts_and_posted(api):
    posted = create(api, invoice(vendor="V10050", number="O'Brien-1")).json()
    api.post(f"{CO}/purchaseInvoices({posted['id']})/Microsoft.NAV.post")
    draft = create(api, invoice(vendor="V10050", number="O'Brien-1")).json()
    create(api, invoice(vendor="V10060", number="O'Brien-1"))
    found = api.get(f"{CO}/purchaseInvoices",
                    params={"$filter": "vendorNumber eq 'V10050' and vendorInvoiceNumber eq 'o''brien-1'"}).json()
    assert {d["id"]: d["status"] for d in found["value"]} == {posted["id"]: "Open", draft["id"]: "Draft"}
    open_only = api.get(f"{CO}/purchaseInvoices", params={"$filter": "status eq 'Open'"}).json()["value"]
    assert [d["id"] for d in open_only] == [posted["id"]]
    since = api.get(f"{CO}/purchaseInvoices",
                    params={"$filter": f"lastModifiedDateTime gt {draft['lastModifiedDateTime']}"}).json()["value"]
    assert draft["id"] not in [d["id"] for d in since] and len(since) == 1
    assert_bc_error(api.get(f"{CO}/purchaseInvoices",
                            params={"$filter": "vendorNumber eq 'V10050' or vendorInvoiceNumber eq 'X'"}),
                    400, "BadRequest", "The 'OR' operator is not supported on distinct fields")
    same_field = api.get(f"{CO}/vendors", params={"$filter": "number eq 'V10000' or number eq 'V10010'"})
    assert len(same_field.json()["value"]) == 2
    numbers = api.get(f"{CO}/accounts", params={
        "$filter": "accountType eq 'Posting' and blocked eq false and directPosting eq true"}).json()["value"]
    assert sorted(a["number"] for a in numbers) == sorted(seed.posting_accounts())


# -- paging ---------------------------------------------------------------------------------------------
def test_paging_with_maxpagesize_follows_next_links_over_2500_vendors():
    app = BcSandbox(vendor_count=2500)
    server = serve(app)
    try:
        with client_for(app) as api:
            url, pages, numbers = f"{CO}/vendors", 0, []
            while url:
                response = api.get(url, headers={"Prefer": "odata.maxpagesize=1000"})
                assert response.status_code == 200
                assert response.headers["Preference-Applied"] == "odata.maxpagesize=1000"
                body = response.json()
                assert body["@odata.context"].endswith("/vendors")
                numbers += [v["number"] for v in body["value"]]
                pages += 1
                url = body.get("@odata.nextLink")
                if url:
                    assert url.startswith(app.base_url) and "$skiptoken=" in url
            assert pages == 3 and len(numbers) == len(set(numbers)) == 2500
            everything = api.get(f"{CO}/vendors").json()
            assert len(everything["value"]) == 2500 and "@odata.nextLink" not in everything
    finally:
        stop(app, server)


# -- throttling -----------------------------------------------------------------------------------------
def test_requests_past_the_window_get_429_in_bc_shape_per_principal(bc, api):
    bc.add_client("second-app", "second-secret")
    httpx.post(f"{bc.base_url}/_sandbox/config",
               json={"throttle": {"max_requests": 3, "window_seconds": 60, "retry_after": 1}})
    assert [api.get(f"{CO}/vendors", params={"$top": 1}).status_code for _ in range(3)] == [200] * 3
    rejected = api.get(f"{CO}/vendors")
    assert_bc_error(rejected, 429, "Application_TooManyRequests")
    assert rejected.headers["Retry-After"] == "1"
    with client_for(bc, "second-app", "second-secret") as other:
        assert other.get(f"{CO}/vendors", params={"$top": 1}).status_code == 200  # its own budget
    httpx.post(f"{bc.base_url}/_sandbox/config", json={"throttle": {"retry_after": None}})
    assert "Retry-After" not in api.get(f"{CO}/vendors").headers


def test_concurrency_cap_rejects_requests_beyond_the_queue(bc, api):
    httpx.post(f"{bc.base_url}/_sandbox/config",
               json={"processing_delay_ms": 400, "throttle": {"max_concurrent": 1, "max_queue": 0}})
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(api.get(f"{CO}/vendors").status_code))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 429]


# -- webhooks -------------------------------------------------------------------------------------------
class Receiver:
    """A tiny notification endpoint: echoes (or not) the validation token, records notifications."""

    def __init__(self, echo: bool = True, notify_statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.echo = echo
        self.delay = delay
        self.notify_statuses = list(notify_statuses or [])
        self.handshakes: list[dict] = []
        self.notifications: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return

            def do_POST(self):
                query = parse_qs(urlsplit(self.path).query)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    receiver.handshakes.append({"method": self.command, "token": token})
                    time.sleep(receiver.delay)
                    self._answer(200, token if receiver.echo else "not-the-token")
                    return
                receiver.notifications.append(json.loads(body))
                self._answer(receiver.notify_statuses.pop(0) if receiver.notify_statuses else 202, "")

            def _answer(self, status, text):
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/bc/notifications"

    def items(self) -> list[dict]:
        return [item for n in self.notifications for item in n["value"]]

    def close(self) -> None:
        threading.Thread(target=self.server.shutdown, daemon=True).start()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def subscribe(api, url: str, entity_set: str = "purchaseInvoices") -> httpx.Response:
    return api.post(f"{API}/subscriptions", json={
        "notificationUrl": url, "resource": f"/api/v2.0/companies({seed.COMPANY_ID})/{entity_set}",
        "clientState": seed.BC_CLIENT_STATE})


def test_subscription_needs_the_handshake(api, receiver):
    good = receiver()
    created = subscribe(api, good.url)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert good.handshakes and good.handshakes[0]["method"] == "POST"
    assert sub["clientState"] == seed.BC_CLIENT_STATE and sub["expirationDateTime"] > sub["lastModifiedDateTime"]
    listed = api.get(f"{API}/subscriptions").json()["value"]
    assert [s["subscriptionId"] for s in listed] == [sub["subscriptionId"]]

    bad = receiver(echo=False)
    assert_bc_error(subscribe(api, bad.url), 400, "BadRequest", "validationToken")
    assert len(bad.handshakes) == 1
    assert len(api.get(f"{API}/subscriptions").json()["value"]) == 1


def test_handshake_must_answer_within_the_timeout(bc, api, receiver):
    httpx.post(f"{bc.base_url}/_sandbox/config", json={"handshake_timeout": 0.3})
    assert_bc_error(subscribe(api, receiver(delay=1.0).url), 400, "BadRequest", "did not answer")
    assert api.get(f"{API}/subscriptions").json()["value"] == []


def test_subscription_renewal_repeats_the_handshake_and_expiry_removes_it(bc, api, receiver):
    httpx.post(f"{bc.base_url}/_sandbox/config", json={"subscription_lifetime": 600})
    hook = receiver()
    sub = subscribe(api, hook.url).json()
    url = f"{API}/subscriptions('{sub['subscriptionId']}')"
    bc.clock.advance(300)
    assert_bc_error(api.patch(url, json={}), 400, "BadRequest_")
    renewed = api.patch(url, json={}, headers={"If-Match": sub["@odata.etag"]})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["expirationDateTime"] > sub["expirationDateTime"]
    assert len(hook.handshakes) == 2
    bc.clock.advance(601)
    assert api.get(f"{API}/subscriptions").json()["value"] == []
    assert_bc_error(api.get(url), 404, "Internal_RecordNotFound")


def test_default_subscription_lifetime_is_three_days(bc, api, receiver):
    sub = subscribe(api, receiver().url).json()
    created = sub["lastModifiedDateTime"].replace("Z", "+00:00")
    expires = sub["expirationDateTime"].replace("Z", "+00:00")
    assert (datetime.fromisoformat(expires) - datetime.fromisoformat(created)).total_seconds() == 3 * 24 * 3600


def test_mark_paid_notifies_the_subscriber_with_its_client_state(bc, api, receiver):
    hook = receiver()
    sub = subscribe(api, hook.url).json()
    doc = create(api, invoice()).json()
    api.post(f"{CO}/purchaseInvoices({doc['id']})/Microsoft.NAV.post")
    assert bc.flush_notifications()
    hook.notifications.clear()
    paid = httpx.post(f"{bc.base_url}/_sandbox/purchaseInvoices/{doc['id']}/pay")
    assert paid.status_code == 200 and paid.json()["status"] == "Paid"
    assert bc.flush_notifications()
    [item] = hook.items()
    assert item["subscriptionId"] == sub["subscriptionId"] and item["clientState"] == seed.BC_CLIENT_STATE
    assert item["changeType"] == "updated"
    assert item["resource"] == f"api/v2.0/companies({seed.COMPANY_ID})/purchaseInvoices({doc['id']})"
    assert item["lastModifiedDateTime"] == api.get(f"{CO}/purchaseInvoices({doc['id']})").json()[
        "lastModifiedDateTime"]
    paid_since = api.get(f"{CO}/purchaseInvoices", params={"$filter": "status eq 'Paid'"}).json()["value"]
    assert [d["id"] for d in paid_since] == [doc["id"]]


def test_receiver_answering_400_loses_the_subscription_and_503_is_retried(bc, api, receiver):
    httpx.post(f"{bc.base_url}/_sandbox/config", json={"notification_retry_delay": 0.01})
    flaky = receiver(notify_statuses=[503, 200])
    create_and_flush = lambda n: (create(api, invoice(number=n)), bc.flush_notifications())  # noqa: E731
    subscribe(api, flaky.url)
    create_and_flush("INV-R1")
    assert len(flaky.notifications) == 2 and len(api.get(f"{API}/subscriptions").json()["value"]) == 1
    assert flaky.items()[0]["changeType"] == "created"

    bc.drop_subscription(api.get(f"{API}/subscriptions").json()["value"][0]["subscriptionId"])
    assert api.get(f"{API}/subscriptions").json()["value"] == []
    rude = receiver(notify_statuses=[400])
    subscribe(api, rude.url)
    create_and_flush("INV-R2")
    assert len(rude.notifications) == 1
    assert api.get(f"{API}/subscriptions").json()["value"] == []


def test_many_changes_make_one_collection_notification(bc, api, receiver):
    httpx.post(f"{bc.base_url}/_sandbox/config", json={"notification_threshold": 2, "notification_delay": 0.3})
    hook = receiver()
    subscribe(api, hook.url)
    for n in range(3):
        create(api, invoice(number=f"INV-C{n}"))
    time.sleep(0.35)
    assert bc.flush_notifications()
    [item] = hook.items()
    assert item["changeType"] == "collection"
    assert "?$filter=lastModifiedDateTime%20gt%20" in item["resource"]


@pytest.mark.parametrize("entity_set", ["purchaseOrders", "dimensionValues"])
def test_unsupported_resources_cannot_be_subscribed(api, receiver, entity_set):
    hook = receiver()
    assert_bc_error(subscribe(api, hook.url, entity_set), 400, "BadRequest", "not supported")
    assert hook.handshakes == []


# -- purchase orders and master data ---------------------------------------------------------------------
def test_purchase_orders_list_with_expanded_lines(bc, api):
    added = httpx.post(f"{bc.base_url}/_sandbox/purchaseOrders", json={
        "vendorNumber": "V10100", "status": "Open",
        "lines": [{"lineType": "Item", "lineObjectNumber": "ITM-9", "quantity": 5, "directUnitCost": 10}]})
    assert added.status_code == 201
    orders = api.get(f"{CO}/purchaseOrders", params={"$expand": "purchaseOrderLines"}).json()["value"]
    assert len(orders) == 5 and {o["status"] for o in orders} == {"Open", "Draft", "In Review"}
    assert all(o["purchaseOrderLines"] and o["lastModifiedDateTime"] for o in orders)
    new = next(o for o in orders if o["vendorNumber"] == "V10100")
    assert new["totalAmountIncludingTax"] == 62.5 and new["purchaseOrderLines"][0]["directUnitCost"] == 10
    open_orders = api.get(f"{CO}/purchaseOrders", params={"$filter": "status eq 'Open'"}).json()["value"]
    assert len(open_orders) == 3
    assert_bc_error(api.post(f"{CO}/purchaseOrders", json={}), 405, "BadRequest_MethodNotAllowed")


def test_master_data_changes_in_bc_move_last_modified(bc, api):
    before = api.get(f"{CO}/vendors", params={"$filter": "number eq 'V10000'"}).json()["value"][0]
    changed = httpx.post(f"{bc.base_url}/_sandbox/vendors/V10000", json={"blocked": "All"}).json()
    after = api.get(f"{CO}/vendors({before['id']})").json()
    assert after["blocked"] == "All" and after["lastModifiedDateTime"] == changed["lastModifiedDateTime"]
    assert after["lastModifiedDateTime"] > before["lastModifiedDateTime"]
    since = api.get(f"{CO}/vendors",
                    params={"$filter": f"lastModifiedDateTime gt {before['lastModifiedDateTime']}"}).json()["value"]
    assert [v["number"] for v in since] == ["V10000"]
    assert_bc_error(create(api, invoice(vendor="V10000")), 400, "Application_", "blocked with type All")

    bc.delete_dimension_value("DEPARTMENT", "IT")
    dims = api.get(f"{CO}/dimensions", params={"$filter": "code eq 'DEPARTMENT'",
                                                 "$expand": "dimensionValues"}).json()["value"][0]
    assert "IT" not in {v["code"] for v in dims["dimensionValues"]}
    bc.set_account("6200", blocked=True)
    assert api.get(f"{CO}/accounts", params={"$filter": "number eq '6200'"}).json()["value"][0]["blocked"] is True


def test_posting_rechecks_master_data_changed_after_the_draft(bc, api):
    body = invoice(lines=[line("6300", 1, 10, dimensionSetLines=[{"code": "DEPARTMENT", "valueCode": "FIN"}])])
    doc = create(api, body).json()
    # not visible through v2.0 (AL: APIV2DimensionValuesEntity.Page.al has no `blocked`)
    bc.set_dimension_value("DEPARTMENT", "FIN", blocked=True)
    refused = api.post(f"{CO}/purchaseInvoices({doc['id']})/Microsoft.NAV.post")
    assert_bc_error(refused, 400, "Application_", "Dimension Value DEPARTMENT - FIN is blocked")


def test_bulk_seed_is_fast_and_pageable(bc, api):
    started = time.monotonic()
    bc.seed_bulk(vendors=10000, accounts=5000, dimension_values=20000)
    assert time.monotonic() - started < 5
    page = api.get(f"{CO}/dimensionValues", headers={"Prefer": "odata.maxpagesize=5000"}).json()
    assert len(page["value"]) == 5000 and "@odata.nextLink" in page
    assert len(api.get(f"{CO}/vendors", params={"$filter": "startswith(number,'B')"}).json()["value"]) == 10000


# -- default dimensions, gross-price vendors, late commits, queueing ------------------------------------------
def vendor_id(number: str) -> str:
    return seed.stable_uuid("vendor", number)


def test_vendor_default_dimensions_are_readable_and_account_defaults_are_not(api):
    (rule,) = api.get(f"{CO}/vendors({vendor_id('V10030')})/defaultDimensions").json()["value"]
    assert rule["parentType"] == "Vendor" and rule["parentId"] == vendor_id("V10030")
    assert (rule["dimensionCode"], rule["dimensionValueCode"], rule["postingValidation"]) == ("DEPARTMENT", "ADM", " ")
    everything = api.get(f"{CO}/defaultDimensions").json()["value"]
    assert {r["parentType"] for r in everything} == {"Vendor"}  # enum 352 has no G/L Account
    same_code = api.get(f"{CO}/defaultDimensions",
                        params={"$filter": "postingValidation eq 'Same_x0020_Code'"}).json()["value"]
    assert [(r["parentId"], r["dimensionValueCode"]) for r in same_code] == [(vendor_id("V10380"), "IT")]
    account = seed.stable_uuid("account", "6120")
    assert all(r["parentId"] != account for r in everything)
    assert_bc_error(api.get(f"{CO}/accounts({account})/defaultDimensions"), 404, "BadRequest_NotFound")


def test_vendor_and_account_defaults_are_inherited_and_a_nested_clash_stores_nothing(bc, api):
    created = create(api, invoice(vendor="V10030", lines=[line("6120", 1, 100), line("6200", 1, 50)]))
    assert created.status_code == 201, created.text
    doc = api.get(f"{CO}/purchaseInvoices({created.json()['id']})",
                  params={"$expand": "dimensionSetLines,purchaseInvoiceLines($expand=dimensionSetLines)"}).json()
    assert {d["code"]: d["valueCode"] for d in doc["dimensionSetLines"]} == {"DEPARTMENT": "ADM"}
    lines = [{d["code"]: d["valueCode"] for d in ln["dimensionSetLines"]} for ln in doc["purchaseInvoiceLines"]]
    assert lines == [{"DEPARTMENT": "ADM", "AREA": "SOUTH"}, {"DEPARTMENT": "ADM"}]  # the account's AREA too

    before = set(bc.documents)
    for clash in (invoice(vendor="V10030", number="CLASH-1", lines=[
                      line("6200", 1, 10), line("6200", 1, 10, dimensionSetLines=[{"code": "DEPARTMENT",
                                                                                  "valueCode": "PROD"}])]),
                  invoice(vendor="V10010", number="CLASH-2", lines=[
                      line("6120", 1, 10, dimensionSetLines=[{"code": "AREA", "valueCode": "NORTH"}])]),
                  invoice(vendor="V10030", number="CLASH-3",
                          dimensionSetLines=[{"code": "DEPARTMENT", "valueCode": "PROD"}])):
        assert_bc_error(create(api, clash), 400, "Application_DialogException",
                        "The dimension set line already exists. Check existing dimension set lines and the "
                        "default dimension set lines on the parent.")
    assert set(bc.documents) == before  # a failed deep insert leaves nothing


def test_line_dimension_set_lines_are_patched_with_if_match_and_added_with_post(api):
    doc = create(api, invoice(vendor="V10030", lines=[line("6120", 1, 100)])).json()
    lines_url = f"{CO}/purchaseInvoices({doc['id']})/purchaseInvoiceLines"
    (ln,) = api.get(lines_url).json()["value"]
    dims_url = f"{lines_url}({ln['id']})/dimensionSetLines"
    department = next(d for d in api.get(dims_url).json()["value"] if d["code"] == "DEPARTMENT")
    one = f"{dims_url}({department['id']})"
    assert_bc_error(api.patch(one, json={"valueCode": "PROD"}), 400, "BadRequest_InvalidToken")
    patched = api.patch(one, json={"valueCode": "PROD"}, headers={"If-Match": department["@odata.etag"]})
    assert patched.status_code == 200 and patched.json()["valueCode"] == "PROD"
    assert_bc_error(api.patch(one, json={"valueCode": "FIN"}, headers={"If-Match": department["@odata.etag"]}),
                    409, "Request_EntityChanged")
    added = api.post(dims_url, json={"code": "PROJECT", "valueCode": "P-1003"})
    assert added.status_code == 201 and added.json()["parentType"] == "Purchase Invoice Line"
    assert_bc_error(api.post(dims_url, json={"code": "AREA", "valueCode": "NORTH"}), 400,
                    "Application_DialogException", "The dimension set line already exists")
    got = {d["code"]: d["valueCode"] for d in api.get(dims_url).json()["value"]}
    assert got == {"DEPARTMENT": "PROD", "AREA": "SOUTH", "PROJECT": "P-1003"}


def post_action(api, doc_id: str) -> httpx.Response:
    return api.post(f"{CO}/purchaseInvoices({doc_id})/Microsoft.NAV.post")


def test_posting_enforces_vendor_and_account_dimension_rules(bc, api):
    # Same Code on the vendor: V10380 requires DEPARTMENT IT; a line coded FIN is refused at posting
    doc = create(api, invoice(vendor="V10380", number="SAME-1", lines=[line("6200", 1, 10)])).json()
    (ln,) = api.get(f"{CO}/purchaseInvoices({doc['id']})/purchaseInvoiceLines").json()["value"]
    dims_url = f"{CO}/purchaseInvoices({doc['id']})/purchaseInvoiceLines({ln['id']})/dimensionSetLines"
    (dept,) = api.get(dims_url).json()["value"]
    api.patch(f"{dims_url}({dept['id']})", json={"valueCode": "FIN"}, headers={"If-Match": "*"})
    assert_bc_error(post_action(api, doc["id"]), 400, "Application_DialogException",
                    "Select Dimension Value Code IT for the Dimension Code DEPARTMENT for Vendor V10380. "
                    "Currently it's FIN.")
    assert bc.documents[doc["id"]].status == "Draft"

    # Code Mandatory on an account (invisible to the API), then No Code
    bc.set_default_dimension("G/L Account", "6200", "PROJECT", None, "Code Mandatory")
    other = create(api, invoice(vendor="V10010", number="MAND-1", lines=[line("6200", 1, 10)])).json()
    assert_bc_error(post_action(api, other["id"]), 400, "Application_DialogException",
                    "Select a Dimension Value Code for the Dimension Code PROJECT for G/L Account 6200.")
    bc.set_default_dimension("G/L Account", "6200", "PROJECT", None, "No Code")
    coded = create(api, invoice(vendor="V10010", number="NOCODE-1", lines=[
        line("6200", 1, 10, dimensionSetLines=[{"code": "PROJECT", "valueCode": "P-1001"}])])).json()
    assert_bc_error(post_action(api, coded["id"]), 400, "Application_DialogException",
                    "Dimension Code PROJECT must be blank for G/L Account 6200. Currently it's P-1001.")
    assert post_action(api, other["id"]).status_code == 204  # no value: fine under No Code


def test_a_prices_including_vat_vendor_makes_gross_drafts_unless_told_otherwise(api):
    assert "V10060" in seed.PRICES_INCLUDING_VAT_VENDORS
    gross = create(api, invoice(vendor="V10060", number="GROSS-1", lines=[line("6200", 1, 125)])).json()
    assert gross["pricesIncludeTax"] is True
    assert Decimal(str(gross["totalAmountIncludingTax"])) == Decimal("125.00")
    assert Decimal(str(gross["totalTaxAmount"])) == Decimal("25.00")
    net = create(api, invoice(vendor="V10060", number="NET-1", pricesIncludeTax=False,
                              lines=[line("6200", 1, 125)])).json()
    assert net["pricesIncludeTax"] is False
    assert Decimal(str(net["totalAmountIncludingTax"])) == Decimal("156.25")


def test_a_late_commit_drops_the_answer_and_commits_afterwards(bc, api):
    bc.late_commits.add(r"/purchaseInvoices$", method="POST", count=1, delay=0.1, commit_after=1.0)
    with pytest.raises(httpx.TransportError):
        create(api, invoice(number="LATE-1"))
    assert api.get(f"{CO}/purchaseInvoices").json()["value"] == []  # not there yet ...
    assert bc.late_commits.wait_idle(10)
    (doc,) = api.get(f"{CO}/purchaseInvoices").json()["value"]  # ... and then it is
    assert doc["vendorInvoiceNumber"] == "LATE-1" and doc["status"] == "Draft"

    httpx.post(f"{bc.base_url}/_sandbox/late-commits",
               json={"path": r"Microsoft\.NAV\.post$", "count": 1, "delay": 0.1, "commit_after": 1.0})
    with pytest.raises(httpx.TransportError):
        post_action(api, doc["id"])
    assert api.get(f"{CO}/purchaseInvoices({doc['id']})").json()["status"] == "Draft"
    assert bc.late_commits.wait_idle(10)
    assert api.get(f"{CO}/purchaseInvoices({doc['id']})").json()["status"] == "Open"
    assert bc.late_commits.committed == [("POST", f"{CO}/purchaseInvoices", 201),
                                         ("POST", f"{CO}/purchaseInvoices({doc['id']})/Microsoft.NAV.post", 204)]


def test_requests_beyond_five_concurrent_wait_in_bc_queue_and_all_succeed(bc):
    bc.configure({"processing_delay_ms": 300})
    with client_for(bc) as client:
        client.get(f"{CO}/vendors", params={"$top": 1})
        with __import__("concurrent.futures").futures.ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda _: client.get(f"{CO}/vendors", params={"$top": 1}).status_code,
                                     range(12)))
    assert statuses == [200] * 12  # queued (BC queues up to 95), not refused
    assert bc.processing["peak"] == 5
    assert bc.throttle.rejections == 0
