"""The README's run command: its report must agree with what both sandboxes recorded."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_run_command_completes_and_its_report_matches_the_sandboxes(tmp_path):
    report_file = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "scripts.run_e2e", "--timeout", "150", "--report-json",
                             str(report_file)], cwd=ROOT, capture_output=True, text=True, timeout=420,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "\nOperator console: http://127.0.0.1:" in result.stdout and "/api/manage/console" in result.stdout
    report = json.loads(report_file.read_text())
    recorded = report["recorded"]

    # 24 seeded approved invoices (3 credit notes among them) post; 4 broken + 1 duplicate fail
    assert len(report["posted"]) == 24 == recorded["basware_successful_transfer_responses"] == recorded["bc_posts"]
    assert len(report["failed"]) == 5 == recorded["basware_failed_transfer_responses"]
    assert all(r["transferResponses"] == 1 for r in report["posted"] + report["failed"])
    assert sum(r["bcNumber"].startswith("PCM-") for r in report["posted"]) == 3
    assert len({r["bcNumber"] for r in report["posted"]}) == 24
    # no draft left behind: every draft created was posted or deleted
    assert recorded["bc_drafts_created"] - recorded["bc_drafts_deleted"] == recorded["bc_posts"]
    assert report["bc_drafts_left"] == 0

    reasons = " | ".join(r["reason"] for r in report["failed"])
    for problem in ("vendor V99999 does not exist", "account 6900", "NOPE", "already exists for this vendor",
                    "DEPARTMENT must be IT for vendor V10380"):
        assert problem in reasons

    assert len(report["payments"]) == 5 == recorded["basware_payment_responses"]
    assert report["masterdata"]["vendors"] == 50 and report["masterdata"]["projects"] == 10

    # every posted invoice carries its image in BC (and its delivery note); confidential files stay in Basware
    assert all(r["image"] == f"{r['invoiceNumber']}.pdf" for r in report["posted"])
    assert any(f.startswith("delivery-note-") for r in report["posted"] for f in r["bcAttachments"])
    assert not any(f.startswith("contract-") for r in report["posted"] for f in r["bcAttachments"])
    assert any(f.startswith("contract-") for r in report["posted"] for f in r["leftInBasware"])
    assert recorded["bc_attachment_contents"] >= sum(len(r["bcAttachments"]) for r in report["posted"])
    assert "Posted in Business Central (24; 24 with the invoice image attached in BC)" in result.stdout

    # the printed report says the same and names where each audit trail is
    for row in report["posted"]:
        assert row["bcNumber"] in result.stdout
    assert "Failed, with the reason Basware was sent (5)" in result.stdout
    trails = list((ROOT / ".run" / "audit").glob("BRK-UNKNOWN-VENDOR-*.json"))
    # The failure response is in the trail. It need not be the last row: the poll and the webhook may
    # both deliver the invoice, and the later copy re-reads the document after the job finished.
    trail = json.loads(trails[0].read_text()) if trails else []
    assert any(r["step"] == "respond" and r["outcome"] == "sent" for r in trail), [(r["step"], r["outcome"])
                                                                                   for r in trail]
