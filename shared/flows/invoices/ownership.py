"""Which BC purchase documents this connector made: a marker the create writes, and the comparison
of vendor document numbers as BC makes it.

BC has no idempotency key and a deep insert can commit after the client gave up (Microsoft Learn,
administration/operational-limits-online: requests queue behind 5 concurrent and run up to the
8-minute operation timeout). Vendor + vendor invoice number alone cannot tell the connector's draft
from one an AP clerk typed in by hand, so every line the connector creates carries its marker in
`description2` (Purchase Line "Description 2", Text[50], writable on APIV2 - Purchase Invoice Lines
page 30047): `mlc:<job id>:<round>`. A document is the connector's own only if its lines carry the
marker of this job; any other document with the same vendor + number is foreign and never adopted,
posted, changed or deleted.
"""
from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from shared.clients.bc import INVOICES, LINES
from shared.models.bc import PurchaseDocument

MARKER_FIELD = "description2"
MARKER_PREFIX = "mlc:"


def code_upper(value: str) -> str:
    """AL's upper-casing of a Code field (Vendor Invoice No. is Code[35]): .NET's per-character case
    mapping, so 'é' -> 'É' but 'ß' has no one-character capital and stays 'ß' ('Straße' is stored
    'STRAßE' and is a different number from 'STRASSE'). Python's str.upper() would give 'SS'."""
    return "".join(ch.upper() if len(ch.upper()) == 1 else ch for ch in value or "")


def same_number(a: str | None, b: str | None) -> bool:
    return code_upper((a or "").strip()) == code_upper((b or "").strip())


def marker(job_id: str, round_: int) -> str:
    return f"{MARKER_PREFIX}{job_id}:{round_}"


def add_marker(body: dict, entity: str, value: str) -> dict:
    return {**body, LINES[entity]: [{**line, MARKER_FIELD: value} for line in body.get(LINES[entity], [])]}


def expand_for_marker(entity: str) -> str:
    return f"{LINES[entity]}($select=id,sequence,{MARKER_FIELD})"


@dataclass(frozen=True)
class Found:
    document: PurchaseDocument
    round: int | None  # the round of our marker; None: foreign (not made by this job)

    @property
    def ours(self) -> bool:
        return self.round is not None


def round_of(document: PurchaseDocument, entity: str, job_id: str) -> int | None:
    """The round whose marker every line of the document carries; None if it is not this job's."""
    lines = (document.model_extra or {}).get(LINES[entity])
    if not lines:
        return None
    rounds = set()
    for line in lines:
        text = str(line.get(MARKER_FIELD) or "")
        prefix = f"{MARKER_PREFIX}{job_id}:"
        if not text.startswith(prefix) or not text[len(prefix):].isdigit():
            return None
        rounds.add(int(text[len(prefix):]))
    return rounds.pop() if len(rounds) == 1 else None


def classify(documents: list[PurchaseDocument], entity: str, job_id: str, vendor_doc_number: str) -> list[Found]:
    out = []
    for doc in documents:
        number = doc.vendor_invoice_number if entity == INVOICES else doc.vendor_credit_memo_number
        if not same_number(number, vendor_doc_number):
            continue  # BC's filter may be looser than AL's Code comparison (e.g. 'SS' vs 'ß')
        out.append(Found(doc, round_of(doc, entity, job_id)))
    return out


def describe(document: PurchaseDocument, noun: str) -> str:
    state = "draft" if document.is_draft else "posted"
    return f"{state} {noun} {document.number or document.id}"


# -- drafts already in BC, known without a request per invoice ------------------------------------------
DRAFT_INDEX_TTL = 60.0


class DraftIndex:
    """The vendor + number of every draft in a company, read once per `ttl` (one GET per entity set).

    Before creating, the flow asks the index whether a draft with the invoice's vendor + number may
    exist; only then does it read those documents (with their markers) and decide whether one is its
    own or foreign. So the steady state costs no lookup request. A draft typed in by hand in the last
    `ttl` seconds is not seen before the create: the connector then posts its own document and leaves
    the other untouched (BC refuses that one at posting as a duplicate). Posted documents are not
    indexed: BC refuses to post a second one for the vendor ("already exists for this vendor"), and
    the flow then names the posted document for the clerk.
    """

    def __init__(self, bc, ttl: float = DRAFT_INDEX_TTL, clock=time.monotonic) -> None:
        self._bc = bc
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, frozenset[tuple[str, str]]]] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def may_hold(self, company: str, entity: str, vendor: str, number: str) -> bool:
        key = (company, entity)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._clock() - entry[0] >= self.ttl:
                entry = (self._clock(), self._load(company, entity))
                self._entries[key] = entry
                self.loads += 1
        return (code_upper(vendor), code_upper(number)) in entry[1]

    def _load(self, company: str, entity: str) -> frozenset[tuple[str, str]]:
        field = "vendorInvoiceNumber" if entity == INVOICES else "vendorCreditMemoNumber"
        rows = self._bc.iterate(self._bc.company_path(company, entity), filter="status eq 'Draft'",
                                select=f"id,vendorNumber,{field}", page_size=5000)
        return frozenset((code_upper(str(r.get("vendorNumber") or "")), code_upper(str(r.get(field) or "")))
                         for r in rows)


_indexes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_indexes_lock = threading.Lock()


def draft_index(bc) -> DraftIndex:
    """The process-wide index for one BC client (one per runtime)."""
    with _indexes_lock:
        index = _indexes.get(bc)
        if index is None:
            index = _indexes[bc] = DraftIndex(bc)
        return index
