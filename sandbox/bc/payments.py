"""Payments applied to posted purchase invoices, as BC's vendor ledger records them.

BC keeps a payment as detailed vendor ledger entries of type `Application` on the invoice's
vendor ledger entry; `purchaseInvoices.status` turns `Paid` only when that entry is closed, i.e.
fully applied (Microsoft Learn, purchaseInvoice resource type: status Open or Paid only; a partial payment leaves it Open).
Unapplying a payment (the Unapply Entries action of the Detailed Vendor Ledg. Entry page,
Microsoft Learn "Unapply vendor ledger entries") posts the same application again with the
opposite sign and reopens the entry: Paid -> Open.

What the sandbox models, taking the harder case where the public facts do not decide:
- a partial payment changes neither `status` nor `lastModifiedDateTime` of the purchase invoice and
  sends no webhook notification (the API entity is an aggregate that BC refreshes on document and
  status changes; nothing documents a refresh on a partial application), so only the ledger shows it;
- the payment that closes the entry, and an unapply that reopens it, change `status`: the invoice
  is touched and an `updated` notification goes out, as with any status change (codeunit 5529
  Purch. Inv. Aggregator);
- detailed entry numbers only grow (BC's `Entry No.` is sequential), so a reader can page on them.

The ledger rows are served by the analytics `vendorLedgerEntries` endpoint (analytics.py), which
is off unless the sandbox's `analytics` setting is on (not every tenant offers that API).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from . import errors as E
from .documents import Document


@dataclass(frozen=True)
class Application:
    entry_no: int        # detailed vendor ledger entry number
    amount: Decimal      # > 0 a payment applied, < 0 an unapplication of one
    posting_date: str    # YYYY-MM-DD
    payment_no: str      # the payment's document number
    unapplied: bool = False


@dataclass
class PaymentLedger:
    """Applications per posted purchase invoice (by document id)."""

    entries: dict[str, list[Application]] = field(default_factory=dict)
    next_entry: int = 1_000_001
    payments: int = 0

    def applications(self, doc: Document) -> list[Application]:
        return self.entries.get(doc.id, [])

    def paid(self, doc: Document) -> Decimal:
        return sum((a.amount for a in self.applications(doc)), Decimal(0))

    def _add(self, doc: Document, amount: Decimal, date: str, payment_no: str, unapplied: bool) -> Application:
        entry = Application(self.next_entry, amount, date, payment_no, unapplied)
        self.next_entry += 1
        self.entries.setdefault(doc.id, []).append(entry)
        return entry

    def apply(self, doc: Document, amount: Decimal, total: Decimal, date: str) -> Application:
        if amount <= 0:
            raise E.bad_request("A payment must be a positive amount.")
        if self.paid(doc) + amount > total:
            raise E.dialog(f"The payment of {amount} exceeds the remaining amount "
                           f"{total - self.paid(doc)} of {doc.type.noun} {doc.number}.")
        self.payments += 1
        return self._add(doc, amount, date, f"PMT{self.payments:05d}", False)

    def unapply(self, doc: Document, date: str, payment_no: str | None = None) -> Application:
        """Unapply one payment (the latest still applied, unless named)."""
        applied = {}
        for a in self.applications(doc):
            applied[a.payment_no] = applied.get(a.payment_no, Decimal(0)) + a.amount
        live = [no for no, amount in applied.items() if amount > 0]
        if payment_no is None and live:
            payment_no = live[-1]
        if payment_no not in live:
            raise E.dialog(f"There is no applied payment {payment_no or ''} to unapply on {doc.type.noun} "
                           f"{doc.number}.".replace("  ", " "))
        return self._add(doc, -applied[payment_no], date, payment_no, True)

    def rows(self, doc: Document, total: Decimal) -> list[dict]:
        """The analytics rows of one posted invoice: its initial entry and every application, each
        joined with the vendor ledger entry (open, closed-at date) as the analytics entity is."""
        posting = str(doc.header.get("postingDate") or "")[:10]
        applications = self.applications(doc)
        closed = self.paid(doc) >= total and applications
        vle = {"vleEntryNo": doc.seq, "vleDueDate": str(doc.header.get("dueDate") or "")[:10] or None,
               "vleOpen": not closed, "vlePostingDate": posting, "vleDocumentDate": posting,
               "vleClosedAtDate": applications[-1].posting_date if closed else "0001-01-01",
               "purchInvHeaderDocumentNo": doc.number}
        out = [dict(vle, dvleEntryNo=doc.seq * 10, dvlePostingDate=posting, dvleEntryType="Initial Entry",
                    dvleDocumentType="Invoice", dvleDocumentNo=doc.number, dvleAmount=-total, dvleAmountLCY=-total,
                    dvleAppliedVendLedgerEntryNo=0)]
        for a in applications:
            out.append(dict(vle, dvleEntryNo=a.entry_no, dvlePostingDate=a.posting_date, dvleEntryType="Application",
                            dvleDocumentType="Payment", dvleDocumentNo=a.payment_no, dvleAmount=a.amount,
                            dvleAmountLCY=a.amount, dvleAppliedVendLedgerEntryNo=doc.seq))
        return out
