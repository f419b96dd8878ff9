"""`make run`: the connector end to end against the sandboxes, then a report.

Starts Azurite, the Basware and BC sandboxes (in this process, on free ports) and the app
(`python -m devhost`, the same function_app.py `func start` runs); registers the Basware webhook;
imports master data; delivers the seeded approved invoices by signed webhook (a few deliberately
broken; each with its invoice image, a generated PDF, some with a delivery note or a confidential
attachment); lets BC pay some posted invoices; prints what happened as both sandboxes recorded it,
and the operator console's URL. Exits 1 if a flow did not complete. Stops everything it started,
also on Ctrl+C; with `--keep` (`make run KEEP=1`) it first keeps the stack up until Ctrl+C, so a
person can look at the console.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import seed  # noqa: E402
from sandbox.basware import BaswareSandbox  # noqa: E402
from sandbox.bc import BcSandbox  # noqa: E402
from sandbox.common import SandboxServer  # noqa: E402
from scripts.azurite import free_port, start_azurite  # noqa: E402
from scripts.local_env import connector_env  # noqa: E402

FINAL = ("Transferred", "TransferFailed", "Paid")


def say(text: str) -> None:
    print(text, flush=True)


def progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    bar = f"  {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
    if sys.stdout.isatty():
        sys.stdout.write("\r" + bar + ("\n" if done >= total else ""))
    else:
        sys.stdout.write(bar + "\n")
    sys.stdout.flush()


def wait_until(check, timeout: float, label: str, total: int) -> bool:
    """Poll `check()` (how many are done) until all are, showing progress when it changes."""
    deadline = time.monotonic() + timeout
    shown = -1
    while time.monotonic() < deadline:
        done = check()
        if done != shown:
            progress(label, done, total)
            shown = done
        if done >= total:
            return True
        time.sleep(0.25)
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    return False


class App:
    """function_app.py under the local host, in its own process group."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        log.parent.mkdir(exist_ok=True)
        self._out = open(log, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port)], cwd=ROOT,
                                        env={**os.environ, **env, "PORT": str(port)}, stdout=self._out,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with code {self.process.returncode}; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.3):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the app did not start within {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._out.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=24, help="approved invoices to seed (default 24)")
    parser.add_argument("--pay", type=int, default=5, help="posted invoices BC pays (default 5)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds to wait for each flow")
    parser.add_argument("--report-json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--keep", action="store_true",
                        help="keep Azurite, the sandboxes and the app running until Ctrl+C (make run KEEP=1)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    with ExitStack() as stack:
        say("ml-connector: end-to-end run against the sandboxes")
        say("1/7 Starting Azurite, the Basware and BC sandboxes")
        azurite = start_azurite()
        stack.callback(azurite.stop)
        basware = BaswareSandbox(seed_broken=True, invoice_count=args.invoices, seed_images=True)
        bc = BcSandbox()
        bw_server = SandboxServer(basware).start()
        bc_server = SandboxServer(bc).start()
        basware.base_url, bc.base_url = bw_server.base_url, bc_server.base_url
        stack.callback(bw_server.stop)
        stack.callback(bc_server.stop)
        stack.callback(bc.close)
        say(f"    Azurite queue/table ports {azurite.queue_port}/{azurite.table_port}, "
            f"Basware {bw_server.base_url}, BC {bc_server.base_url}")

        say("2/7 Starting the app (function_app.py under the local Functions host)")
        port = free_port()
        key = secrets.token_urlsafe(16)
        env = connector_env(
            azurite.connection_string, bw_server.base_url, bc_server.base_url,
            BC_NOTIFICATION_URL=f"http://127.0.0.1:{port}/api/bc/notifications",
            DEVHOST_FUNCTION_KEY=key,
            ATTACHMENT_CATEGORIES="ORIGINALIMAGE,ATTACHMENT",  # delivery notes too; confidential ones stay
            POLL_SCHEDULE="*/20 * * * * *", PAYMENT_SCHEDULE="*/10 * * * * *",
            SUBSCRIPTION_SCHEDULE="*/15 * * * * *", PO_SYNC_SCHEDULE="0 */30 * * * *",
            MASTERDATA_SCHEDULE="0 0 * * * *", RETENTION_SCHEDULE="0 15 3 * * *")
        log = ROOT / ".run" / "app.log"
        app = App(env, port, log)
        stack.callback(app.stop)
        app.wait_listening()
        client = httpx.Client(base_url=app.url, headers={"x-functions-key": key}, timeout=120)
        stack.callback(client.close)
        health = client.get("/api/health")
        checks = ", ".join(f"{name}: {'ok' if check.get('ok') else 'FAILED'}"
                           for name, check in health.json().get("checks", {}).items())
        say(f"    {app.url} is up; GET /api/health -> {health.status_code} ({checks})")

        say("3/7 Registering the Basware webhook (Basware sends a signed ConnectionTest first)")
        from shared.clients.basware import BaswareClient
        from shared.core.secrets import Secret
        from shared.clients.tokens import BaswareTokenProvider

        bw_client = BaswareClient(bw_server.base_url, BaswareTokenProvider(
            f"{bw_server.base_url}/v1/tokens", seed.BASWARE_CLIENT_ID, Secret(seed.BASWARE_CLIENT_SECRET),
            "subscriptions.read subscriptions.write"))
        stack.callback(bw_client.close)
        bw_client.create_subscription(f"{app.url}/api/basware/webhook", seed.WEBHOOK_SECRET)
        say("    subscribed: AccountingDocuments / WaitingForTransfer")

        say("4/7 Importing master data from BC into Basware")
        md = client.post("/api/manage/masterdata/sync")
        md_summary = md.json() if md.headers.get("content-type", "").startswith("application/json") else {}
        imported = {"vendors": len(basware.vendors), "accounts": len(basware.accounts),
                    "costCenters": len(basware.cost_centers), "projects": len(basware.projects),
                    **{f"lists/{k}": len(v) for k, v in basware.lists.items()}}
        say(f"    -> HTTP {md.status_code}; Basware now holds " + ", ".join(f"{v} {k}" for k, v in imported.items()))

        say("5/7 Delivering approved invoices by signed webhook")
        originals = list(basware.documents)
        for invoice_id in originals:
            basware.notify(invoice_id)
        ok = wait_until(lambda: sum(basware.document_status(i) in FINAL for i in originals), args.timeout,
                        "transferred", len(originals))

        # A second document with the number of one already posted: BC refuses to post it twice.
        first = basware.document(originals[0])
        duplicate = dict(first, invoiceId=seed.stable_uuid("run-duplicate", first["invoiceId"]),
                         processingStatus="WaitingForTransfer", transferResponses=[], paymentResponses=[])
        duplicate.pop("voucherNumber1", None)
        basware.add_document(duplicate)
        basware.notify(duplicate["invoiceId"])
        all_ids = originals + [duplicate["invoiceId"]]
        ok = wait_until(lambda: sum(basware.document_status(i) in FINAL for i in all_ids), args.timeout,
                        "with the duplicate", len(all_ids)) and ok

        say(f"6/7 BC pays {args.pay} posted invoices (BC notifies the app; the payment poll is the backstop)")
        posted = [d for d in bc.documents.values() if d.status == "Open" and d.type.entity_set == "purchaseInvoices"]
        paid_ids = [d.id for d in posted[: args.pay]]
        for doc_id in paid_ids:
            bc.mark_paid(doc_id)
        voucher_to_invoice = {basware.document(i).get("voucherNumber1"): i for i in all_ids}
        paid_invoices = [voucher_to_invoice.get(bc.documents[d].number) for d in paid_ids]
        paid_ok = wait_until(lambda: sum(bool(i and basware.document(i).get("paymentResponses")) for i in paid_invoices),
                             args.timeout, "payments sent back", len(paid_invoices))

        say("7/7 Report (as the sandboxes recorded it)")
        report = build_report(basware, bc, all_ids, imported, app.url)
        report["recorded"] = recorded_calls(basware, bc)
        report["audit_folder"] = str(save_audit_trails(azurite.connection_string, report))
        print_report(report)
        report.update(completed=bool(ok and paid_ok), seconds=round(time.monotonic() - started, 1),
                      masterdata_response=md_summary)
        if args.report_json:
            args.report_json.write_text(json.dumps(report, indent=2, default=str))
        if not (ok and paid_ok):
            say(f"\nNOT COMPLETE: some flows did not finish within {args.timeout:.0f}s; the app's log is {log}")
        else:
            say(f"\nAll flows completed in {time.monotonic() - started:.0f}s. The app's log: {log}")
        console = f"{app.url}/api/manage/console"
        if args.keep:
            # the key of this local run only (a fresh random one each run), needed to sign in to the console
            say(f"\nOperator console: {console}\n  function key for this run: {key}\n"
                "  The stack stays up until Ctrl+C.")
            keep_running()
        else:
            say(f"\nOperator console: {console} (this run has stopped; `make run KEEP=1` keeps it up to look)")
        return 0 if ok and paid_ok else 1


def keep_running() -> None:
    """Block until Ctrl+C or SIGTERM; the caller's ExitStack then stops everything."""
    stop = {"now": False}

    def on_signal(signum, frame) -> None:
        stop["now"] = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        say("Stopping.")


def save_audit_trails(connection_string: str, report: dict) -> Path:
    """Each invoice's audit trail as a JSON file, so it can be read after the run's storage is gone."""
    from shared.store.audit import AuditLog
    from shared.store.jobs import JobStore
    from shared.store.storage import Storage

    folder = ROOT / ".run" / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    storage = Storage(connection_string)
    audit, jobs = AuditLog(storage), JobStore(storage)
    rows = report["posted"] + report["failed"]
    # Basware shows the transfer response as soon as it is sent; the app writes its own `respond` row
    # and finishes the job a moment later. Wait for that (bounded) so the saved trail is complete.
    wait_until(lambda: sum(bool((j := jobs.get("invoice", r["jobId"])) and j.finished)
                           for r in rows), 20, "audit trails complete", len(rows))
    for row in rows:
        trail = audit.trail(row["jobId"])
        name = f"{row['invoiceNumber']}-{row['invoiceId'][:8]}.json"
        (folder / name).write_text(json.dumps(trail, indent=2, default=str))
    return folder


def recorded_calls(basware, bc) -> dict:
    """What the sandboxes' call logs saw, independently of document state (the tests cross-check)."""
    def count(app, method, path, status=None, body=None):
        calls = app.calls.find(method=method, path=path, status=status)
        return sum(1 for c in calls if body is None or (isinstance(c.body, dict) and body(c.body)))

    return {
        "basware_successful_transfer_responses": count(basware, "POST", r"/transferResponses$", 200,
                                                       lambda b: b.get("success") is True),
        "basware_failed_transfer_responses": count(basware, "POST", r"/transferResponses$", 200,
                                                   lambda b: b.get("success") is False),
        "basware_payment_responses": count(basware, "POST", r"/paymentResponses$", 200),
        "bc_posts": count(bc, "POST", r"Microsoft\.NAV\.post$", 204),
        "bc_drafts_created": count(bc, "POST", r"/purchase(Invoices|CreditMemos)$", 201),
        "bc_drafts_deleted": count(bc, "DELETE", r"/purchase(Invoices|CreditMemos)\(", 204),
        "basware_attachment_downloads": count(basware, "GET", r"/attachments/[^/]+$", 302),
        "bc_attachments_created": count(bc, "POST", r"/documentAttachments$", 201),
        "bc_attachment_contents": count(bc, "PATCH", r"/attachmentContent$", 204),
    }


def build_report(basware, bc, invoice_ids: list[str], imported: dict, app_url: str) -> dict:
    from shared.store.jobs import job_id

    posted, failed, payments = [], [], []
    by_number = {d.number: d for d in bc.documents.values()}
    for invoice_id in invoice_ids:
        doc = basware.document(invoice_id)
        responses = doc.get("transferResponses") or []
        last = responses[-1] if responses else {}
        row = {"invoiceId": invoice_id, "invoiceNumber": doc.get("invoiceNumber"), "supplier": doc.get("supplierCode"),
               "gross": str(doc.get("grossSum")), "status": doc.get("processingStatus"),
               "transferResponses": len(responses)}
        row["jobId"] = job_id("invoice", invoice_id)
        if last.get("success"):
            bc_doc = by_number.get(last.get("voucherNumber1"))
            # what the clerk sees on the posted BC document (its Attachments factbox), by file name
            files = sorted(a.file_name for a in bc.attachments_of(bc_doc.id)) if bc_doc is not None else []
            listed = doc.get("attachments") or []
            image = next((a["filename"] for a in listed if a.get("category") == "ORIGINALIMAGE"), None)
            posted.append({**row, "bcNumber": last.get("voucherNumber1"), "bcAttachments": files,
                           "image": image if image in files else None,
                           "leftInBasware": sorted(a["filename"] for a in listed if a["filename"] not in files)})
        else:
            failed.append({**row, "reason": last.get("responseMessage", "(no transfer response)")})
        for p in doc.get("paymentResponses") or []:
            payments.append({"invoiceNumber": doc.get("invoiceNumber"), "paidTotal": str(p.get("paidTotal")),
                             "paymentDate": p.get("paymentDate")})
    bc_posted = [d for d in bc.documents.values() if d.status in ("Open", "Paid")]
    drafts = [d for d in bc.documents.values() if d.status == "Draft"]
    return {"posted": posted, "failed": failed, "payments": payments, "masterdata": imported,
            "bc_posted_documents": len(bc_posted), "bc_drafts_left": len(drafts),
            "audit_hint": (f"GET {app_url}/api/manage/records/invoice/<jobId> (function key), e.g. "
                           f"{app_url}/api/manage/records/invoice/{(failed or posted)[0]['jobId']}; or against "
                           "storage: python -m shared.ops.cli records show invoice <jobId>") if (failed or posted) else ""}


def print_report(report: dict) -> None:
    with_image = [r for r in report["posted"] if r.get("image")]
    say(f"\n  Posted in Business Central ({len(report['posted'])}; {len(with_image)} with the invoice image "
        f"attached in BC):")
    for r in report["posted"]:
        image = f"image {r['image']}" if r.get("image") else "NO IMAGE"
        extra = [f for f in r.get("bcAttachments", []) if f != r.get("image")]
        left = f"; not copied: {', '.join(r['leftInBasware'])}" if r.get("leftInBasware") else ""
        say(f"    {r['invoiceNumber']:<22} {r['supplier']:<8} {r['gross']:>12}  ->  BC {r['bcNumber']:<10} {image}"
            + (f" + {', '.join(extra)}" if extra else "") + left)
    say(f"\n  Failed, with the reason Basware was sent ({len(report['failed'])}):")
    for r in report["failed"]:
        say(f"    {r['invoiceNumber']:<22} {r['supplier']:<8} {r['reason']}")
    say(f"\n  Payments sent back to Basware ({len(report['payments'])}):")
    for p in report["payments"]:
        say(f"    {p['invoiceNumber']:<22} paid {p['paidTotal']:>12} on {p['paymentDate']}")
    say("\n  Master data imported into Basware: " + ", ".join(f"{v} {k}" for k, v in report["masterdata"].items()))
    say(f"  BC: {report['bc_posted_documents']} posted documents, {report['bc_drafts_left']} drafts left behind")
    say(f"  Each record's audit trail: {report['audit_folder']}/<invoice number>-<id>.json (oldest step first);")
    say(f"    while the app runs: {report['audit_hint']}")


if __name__ == "__main__":
    sys.exit(main())
