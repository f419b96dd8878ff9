"""The operator console in a real browser: Debian's Chromium driven by Playwright, against the real
function_app under the local host, Azurite and both sandboxes over HTTP.

One stack for the module (`make run`-style traffic: good and broken invoices by signed webhook, a
master-data import, one message the runtime gave up on), then each scenario in its own browser
page. A screenshot of every page goes to the test's output folder (`CONSOLE_SCREENSHOTS`, else a
pytest tmp folder; the path is printed).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from sandbox import seed
from sandbox.basware import BaswareSandbox
from sandbox.bc import BcSandbox
from sandbox.common import SandboxServer
from scripts.local_env import connector_env
from shared.flows.invoices.transfer import invoice_job_id
from shared.models.messages import InvoiceTransferMessage
from shared.store.jobs import DONE, JobStore
from shared.store.storage import INVOICE_TRANSFERS, POISON_SUFFIX, Storage
from tests.conftest import AppProcess

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")

KEY = "console-test-key"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
QUIET = {name: "0 0 0 1 1 *" for name in ("POLL_SCHEDULE", "MASTERDATA_SCHEDULE", "PAYMENT_SCHEDULE",
                                          "PO_SYNC_SCHEDULE", "SUBSCRIPTION_SCHEDULE", "RETENTION_SCHEDULE")}
FINAL = ("Transferred", "TransferFailed")
WAIT_MS = 20_000


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Stack:
    def __init__(self, basware, bc, app, storage, documents):
        self.basware, self.bc, self.app, self.storage, self.documents = basware, bc, app, storage, documents
        self.jobs = JobStore(storage)

    @property
    def console(self) -> str:
        return f"{self.app.base_url}/api/manage/console"

    def status(self, invoice_id: str) -> str:
        return self.basware.document_status(invoice_id)


@pytest.fixture(scope="module")
def stack(_azurite_for_tests):
    if not CHROMIUM:
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium)")
    azurite = _azurite_for_tests.fresh()
    basware = BaswareSandbox(seed_broken=True, invoice_count=6)
    bc = BcSandbox()
    bw_server, bc_server = SandboxServer(basware).start(), SandboxServer(bc).start()
    basware.base_url, bc.base_url = bw_server.base_url, bc_server.base_url
    app = AppProcess({**connector_env(azurite.connection_string, bw_server.base_url, bc_server.base_url),
                      **QUIET, "DEVHOST_FUNCTION_KEY": KEY}).start()  # timers on schedules that never come
    try:
        api = httpx.Client(base_url=f"{app.base_url}/api", headers={"x-functions-key": KEY}, timeout=120)
        assert api.post("/manage/masterdata/sync").status_code == 200
        documents = list(basware.documents)
        # the messages of two invoices end on the poison queue instead (retries exhausted)
        dead, delivered = documents[:2], documents[2:]
        for invoice_id in delivered:
            basware.notify(invoice_id, url=f"{app.base_url}/api/basware/webhook")
        storage = Storage(azurite.connection_string)
        for invoice_id in dead:
            storage.enqueue(INVOICE_TRANSFERS + POISON_SUFFIX, InvoiceTransferMessage(invoice_id=invoice_id))
        s = Stack(basware, bc, app, storage, documents)
        wait_for(lambda: all(s.status(i) in FINAL for i in delivered), 90, "every delivered invoice to finish")
        wait_for(lambda: all((j := s.jobs.get("invoice", invoice_job_id(i))) and j.finished and not j.lease_owner
                             for i in documents), 30, "every invoice job to finish")
        # the scheduled jobs' last runs: invoked once as the runtime's admin API would
        for name in ("invoice_poll", "payment_poll"):
            assert httpx.post(f"{app.base_url}/admin/functions/{name}", headers={"x-functions-key": KEY}).status_code == 202
        wait_for(lambda: len(list(storage.table("syncstate").query_entities("PartitionKey eq 'lastrun'"))) >= 3,
                 20, "the last-run rows")
        yield s
    finally:
        app.stop()
        bw_server.stop()
        bc_server.stop()
        bc.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ["CONSOLE_SCREENSHOTS"]) if os.environ.get("CONSOLE_SCREENSHOTS") else \
        tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


def open_console(browser, stack, key: str = KEY, hash: str = "", width: int = 1280):
    context = browser.new_context(viewport={"width": width, "height": 900}, timezone_id="Europe/Helsinki",
                                  locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(stack.console + hash)
    page.get_by_label("Function key", exact=True).fill(key)
    page.get_by_role("button", name="Continue").click()
    return page


def jobs_by_bucket(stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in stack.jobs.iter("invoice"):
        counts[job.state] = counts.get(job.state, 0) + 1
    return counts


def test_the_overview_counts_what_the_run_did(browser, stack, shots):
    posted = sum(stack.status(i) == "Transferred" for i in stack.documents)
    failed = sum(stack.status(i) == "TransferFailed" for i in stack.documents)
    assert posted and failed  # the seed has both; the page must tell them apart
    page = open_console(browser, stack)
    counts = page.locator("#counts")
    row = counts.locator("tr[data-flow=invoice]")
    playwright_api.expect(row.locator("td[data-state=done]")).to_have_text(str(posted))
    playwright_api.expect(row.locator("td[data-state=failed]")).to_have_text(str(failed))
    playwright_api.expect(row.locator("td[data-state=dead_lettered]")).to_have_text("2")
    playwright_api.expect(row.locator("td[data-state=in_progress]")).to_have_text("0")
    assert jobs_by_bucket(stack) == {"done": posted, "failed": failed, "dead_lettered": 2}
    playwright_api.expect(page.locator("#health")).to_contain_text("storage")
    playwright_api.expect(page.get_by_text("all checks pass")).to_be_visible()
    runs = page.locator("#runs")
    playwright_api.expect(runs.locator("tr[data-run=masterdata_import]")).to_contain_text("ok")
    playwright_api.expect(runs.locator("tr[data-run=invoice_poll]")).to_contain_text("seen=")
    playwright_api.expect(runs.locator("tr[data-run=purchase_order_sync]")).to_contain_text("not run yet")
    # times are the operator's: Helsinki in this browser
    playwright_api.expect(page.locator("#tz")).to_have_text("Times in Europe/Helsinki")
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    # "sync master data now": confirmed first, then enqueued for the one mapped company
    page.get_by_role("button", name="Sync master data now").click()
    page.get_by_role("dialog").get_by_role("button", name="Sync now").click()
    playwright_api.expect(page.locator("#sync-result")).to_contain_text("Started for 1 company")
    wait_for(lambda: sum(1 for _ in stack.jobs.iter("masterdata")) == 2, 30, "the second master-data run")
    # 7 days holds the same records; a count is a link to exactly those records
    page.get_by_role("button", name="Last 7 days").click()
    playwright_api.expect(row.locator("td[data-state=failed]")).to_have_text(str(failed))
    row.locator("td[data-state=failed] a").click()
    playwright_api.expect(page.locator("#records tbody tr")).to_have_count(failed)
    page.screenshot(path=str(shots / "records-failed.png"), full_page=True)
    page.set_viewport_size({"width": 800, "height": 1000})  # a tablet
    page.screenshot(path=str(shots / "records-failed-tablet.png"), full_page=True)
    page.context.close()


def test_search_finds_an_invoice_by_its_basware_number(browser, stack, shots):
    invoice_id = next(i for i in stack.documents if stack.status(i) == "Transferred")
    voucher = stack.basware.document(invoice_id)["voucherNumber1"]
    page = open_console(browser, stack, hash="#/records")
    page.get_by_label("Search").fill(invoice_id)
    page.get_by_label("Search").press("Enter")  # the keyboard is enough
    rows = page.locator("#records tbody tr")
    playwright_api.expect(rows).to_have_count(1)
    playwright_api.expect(rows).to_contain_text(voucher)
    page.screenshot(path=str(shots / "records-search.png"), full_page=True)
    # the start of the id is enough, and so is the BC document number
    page.get_by_label("Search").fill(voucher)
    page.get_by_role("button", name="Show").click()
    playwright_api.expect(rows).to_have_count(1)
    rows.get_by_role("link").click()
    ids = page.locator("#ids")
    playwright_api.expect(ids).to_contain_text(invoice_id)
    playwright_api.expect(ids).to_contain_text(voucher)
    link = ids.get_by_role("link", name="open in Business Central")
    assert re.search(r"businesscentral\.dynamics\.com/.+page=138.+" + re.escape(voucher), link.get_attribute("href"))
    playwright_api.expect(page.locator("#replay-panel")).to_contain_text("Only failed and dead-lettered")
    page.screenshot(path=str(shots / "record-posted.png"), full_page=True)
    page.context.close()


def test_a_failed_invoice_shows_its_clerk_message_and_trail(browser, stack, shots):
    invoice_id = next(i for i in stack.documents if stack.status(i) == "TransferFailed")
    sent = stack.basware.document(invoice_id)["transferResponses"][-1]["responseMessage"]
    page = open_console(browser, stack, hash=f"#/record/invoice/{invoice_job_id(invoice_id)}")
    playwright_api.expect(page.locator("#clerk-message")).to_have_text(sent)
    steps = page.locator("#trail > li .t-step")
    playwright_api.expect(steps.first).to_have_text("read_document")  # oldest first
    texts = steps.all_inner_texts()
    assert "read_document" in texts and texts.index("read_document") < texts.index("validate"), texts
    playwright_api.expect(page.locator("#trail")).to_contain_text("rejected")
    playwright_api.expect(page.locator("#trail")).to_contain_text("HTTP 200")
    page.screenshot(path=str(shots / "record-failed.png"), full_page=True)
    page.context.close()


def test_replaying_a_dead_lettered_invoice_turns_it_done(browser, stack, shots):
    invoice_id = stack.documents[0]
    jid = invoice_job_id(invoice_id)
    assert stack.jobs.get("invoice", jid).state == "dead_lettered"
    page = open_console(browser, stack, hash="#/records?state=dead_lettered")
    page.locator(f"#records tbody tr[data-id='{jid}']").get_by_role("link").click()
    playwright_api.expect(page.locator("#ids")).to_contain_text("Dead-lettered")
    page.screenshot(path=str(shots / "record-dead-lettered.png"), full_page=True)
    page.get_by_role("button", name="Replay this record").click()
    dialog = page.get_by_role("dialog")
    playwright_api.expect(dialog).to_contain_text("Pressing it twice is safe")
    page.screenshot(path=str(shots / "replay-confirm.png"))
    dialog.get_by_role("button", name="Cancel").click()  # cancelled: nothing is enqueued
    assert stack.jobs.get("invoice", jid).get("replays") is None
    page.get_by_role("button", name="Replay this record").click()
    dialog.get_by_role("button", name="Replay").click()
    playwright_api.expect(page.locator("#replay-result")).to_have_text(
        "Replayed: the record is now Done.", timeout=60_000)
    playwright_api.expect(page.locator("#ids")).to_contain_text("Done")
    assert stack.jobs.get("invoice", jid).state == DONE and stack.status(invoice_id) == "Transferred"
    playwright_api.expect(page.locator("#trail")).to_contain_text("replay")
    playwright_api.expect(page.locator("#replay-panel")).to_contain_text("Only failed and dead-lettered")
    page.screenshot(path=str(shots / "record-replayed.png"), full_page=True)
    page.context.close()


def test_a_wrong_key_is_refused_with_a_clear_message(browser, stack, shots):
    page = open_console(browser, stack, key="not-the-key")
    alert = page.locator("#key-error")
    playwright_api.expect(alert).to_have_text(
        "The function key was not accepted (HTTP 401). Check the key and enter it again.")
    playwright_api.expect(page.locator("#counts")).to_have_count(0)
    # the key never travels in a URL, and a wrong one is not kept
    assert "not-the-key" not in page.url
    assert page.evaluate("sessionStorage.length") == 0
    page.screenshot(path=str(shots / "wrong-key.png"), full_page=True)
    # the right key afterwards works, and the page's data routes refuse requests without one
    page.get_by_label("Function key", exact=True).fill(KEY)
    page.get_by_label("Function key", exact=True).press("Enter")
    playwright_api.expect(page.locator("#counts")).to_be_visible()
    assert httpx.get(f"{stack.console}/api/overview").status_code == 401
    assert httpx.get(f"{stack.console}/api/records").status_code == 401
    page.context.close()


def test_replay_pressed_in_two_tabs_enqueues_once(browser, stack, shots):
    invoice_id = stack.documents[1]
    jid = invoice_job_id(invoice_id)
    assert stack.jobs.get("invoice", jid).state == "dead_lettered"
    first = open_console(browser, stack, hash=f"#/record/invoice/{jid}")
    second = open_console(browser, stack, hash=f"#/record/invoice/{jid}")  # opened before either pressed
    for page in (first, second):
        playwright_api.expect(page.get_by_role("button", name="Replay this record")).to_be_enabled()
    for page in (first, second):
        page.get_by_role("button", name="Replay this record").click()
        page.get_by_role("dialog").get_by_role("button", name="Replay").click()
    # the second press is refused by the records API's rules and says why
    playwright_api.expect(second.locator("#replay-result")).to_contain_text(
        re.compile(r"still pending; not enqueued again|already done; nothing to replay|Replayed: the record is now Done"))
    playwright_api.expect(first.locator("#replay-result")).to_have_text(
        "Replayed: the record is now Done.", timeout=60_000)
    second.screenshot(path=str(shots / "replay-second-tab.png"), full_page=True)
    job = stack.jobs.get("invoice", jid)
    assert job.state == DONE and job.get("replays") == 1
    responses = stack.basware.document(invoice_id)["transferResponses"]
    assert [r["success"] for r in responses] == [True]  # posted once, answered once
    for page in (first, second):
        page.context.close()
