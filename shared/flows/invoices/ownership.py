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
