"""`documentAttachments`: the files a user sees in the Attachments factbox of a purchase invoice or
credit memo (API page 30080 "APIV2 - Document Attachments", `microsoft/ALAppExtensions`
`Apps/W1/APIV2/app/src/pages/APIV2DocumentAttachments.Page.al`; Microsoft Learn
`api-reference/v2.0/resources/dynamics_documentattachment`).

Two calls, as the page works:
1. `POST companies({c})/documentAttachments` `{"fileName", "parentType", "parentId"}` -> 201 with
   `id` and `byteSize` 0 (the record exists, still without a file);
2. `PATCH companies({c})/documentAttachments({id})/attachmentContent` with the raw bytes and
   `If-Match` -> 204; `GET .../attachmentContent` reads them back.

Harder-case choices, each with the public fact behind it:
- the insert does not refuse a second record with the same file name on the same parent (the
  Document Attachment table's key is its own `ID`, not the name), so a client that retries a POST
  blindly makes two; look first with `$filter=parentId eq ...`;
- a body larger than BC online's documented maximum request size (350 MB, Microsoft Learn
  `administration/operational-limits-online`, "Max body size") is refused with 413;
- posting copies a draft's attachments to the posted document and deletes the draft's (Document
  Attachment Mgmt, codeunit 1173, subscriber on Purch.-Post `OnBeforeDeleteAfterPosting`): the
  posted records are new rows, so their `id`s differ from the draft's, while `parentId` stays the
  same because a posted invoice keeps the draft's API id (codeunit 5529, "Draft Invoice SystemId");
- deleting a draft deletes its attachments (the same codeunit's delete subscriber).
"""
from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

from sandbox.common import Request, Response

from . import errors as E
from .odata import Options
from .resources import Kind
from .store import Clock, etag_of, iso, next_version

FIELDS = ["id", "fileName", "byteSize", "attachmentContent", "parentType", "parentId", "lineNumber",
          "documentFlowSales", "documentFlowPurchase", "lastModifiedDateTime"]
WRITABLE = {"fileName", "parentType", "parentId", "lineNumber", "documentFlowSales", "documentFlowPurchase"}
# enum "Attachment Entity Buffer Document Type" values the page accepts; this sandbox resolves the
# purchase documents it models and refuses the others as unknown parents
PARENT_TYPES = {"Journal", "Sales Order", "Sales Quote", "Sales Credit Memo", "Sales Invoice", "Purchase Order",
                "Purchase Credit Memo", "Purchase Invoice", "Employee", "Customer", "Vendor", "Item", "Job"}
MAX_BODY_BYTES = 350 * 1024 * 1024  # BC online "Max body size" (operational-limits-online)
_seq = itertools.count(1)


@dataclass
class Attachment:
    id: str
    company_id: str
    file_name: str
    parent_type: str
    parent_id: str
    line_number: int = 0
    flow_sales: bool = False
    flow_purchase: bool = False
    content: bytes = b""
    version: int = field(default_factory=next_version)
    last_modified: str = ""
    seq: int = field(default_factory=lambda: next(_seq))  # creation order: the paging key

    def to_json(self, base: str = "") -> dict:
        out = {"@odata.etag": etag_of(self.version), "id": self.id, "fileName": self.file_name,
               "byteSize": len(self.content), "parentType": self.parent_type, "parentId": self.parent_id,
               "lineNumber": self.line_number, "documentFlowSales": self.flow_sales,
               "documentFlowPurchase": self.flow_purchase, "lastModifiedDateTime": self.last_modified}
        if base:
            out["attachmentContent@odata.mediaReadLink"] = f"{base}({self.id})/attachmentContent"
        return out


class AttachmentStore:
    """Every company's document attachments, by id (guarded by the sandbox's lock)."""

    def __init__(self, clock: Clock, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.records: dict[str, Attachment] = {}

    def of_parent(self, company_id: str, parent_id: str) -> list[Attachment]:
        return sorted((a for a in self.records.values() if a.company_id == company_id and a.parent_id == parent_id),
                      key=lambda a: a.seq)

    def touch(self, record: Attachment) -> None:
        record.version = next_version()
        record.last_modified = iso(self.clock.stamp())

    # -- hooks called by the document routes ----------------------------------------------------------
    def carry_to_posted(self, company_id: str, document_id: str) -> None:
        """Posting: the draft's attachments become new records on the posted document."""
        for old in self.of_parent(company_id, document_id):
            del self.records[old.id]
            new = Attachment(str(uuid.uuid4()), company_id, old.file_name, old.parent_type, old.parent_id,
                             old.line_number, old.flow_sales, old.flow_purchase, old.content)
            self.touch(new)
            self.records[new.id] = new

    def drop_parent(self, company_id: str, document_id: str) -> None:
        for old in self.of_parent(company_id, document_id):
            del self.records[old.id]


def kind(base: str = "") -> Kind:
    def view(a: Attachment) -> dict:
        return a.to_json()
    return Kind("documentAttachment", FIELDS, key=lambda a: (a.seq,), to_json=lambda a: a.to_json(base), view=view)


def handle(app, req: Request, company, key: str | None, rest, ctx: str) -> Response:
    """`companies({c})/documentAttachments[({id})[/attachmentContent]]` (under the sandbox's lock)."""
    store: AttachmentStore = app.attachments
    base = f"{req.base_url}{req.path.split('/documentAttachments')[0]}/documentAttachments"
    k = kind(base)
    if key is None:
        if rest:
            raise E.no_resource(req.path)
        if req.method == "POST":
            record = _create(app, company, req.json())
            store.records[record.id] = record
            return app._one(req, k, record, ctx + "/$entity", 201,
                            {"Location": f"{base}({record.id})"}, opts=Options())
        app._only(req, "GET", "documentAttachments")
        mine = [a for a in store.records.values() if a.company_id == company.id]
        return app._list(req, k, mine, ctx)
    record = store.records.get(key.lower())
    if record is None or record.company_id != company.id:
        raise E.record_not_found("Document Attachment", f"Id='{key}'")
    if not rest:
        if req.method == "GET":
            return app._one(req, k, record, ctx + "/$entity")
        if req.method == "DELETE":
            app._if_match(req, etag_of(record.version))
            del store.records[record.id]
            return Response.empty(204)
        raise E.method_not_allowed(req.method, "documentAttachments")
    if rest[0] != ("attachmentContent", None) or len(rest) > 1:
        raise E.no_resource(req.path)
    if req.method == "GET":
        return Response(200, record.content, {"Content-Type": "application/octet-stream",
                                              "ETag": etag_of(record.version)})
    if req.method != "PATCH":
        raise E.method_not_allowed(req.method, "attachmentContent")
    app._if_match(req, etag_of(record.version))
    if len(req.body) > store.max_body_bytes:
        raise E.BcError(413, "Request_EntityTooLarge",
                        f"The request body is {len(req.body)} bytes; the maximum is {store.max_body_bytes} bytes.")
    record.content = bytes(req.body)
    store.touch(record)
    return Response.empty(204, {"ETag": etag_of(record.version)})


def _create(app, company, body) -> Attachment:
    if not isinstance(body, dict):
        raise E.bad_request("Invalid Request Body")
    for name in body:
        if name.startswith("@odata"):
            continue
        if name not in FIELDS:
            raise E.unknown_property(name, "documentAttachment")
        if name not in WRITABLE:
            raise E.read_only(name)
    file_name = body.get("fileName")
    if not isinstance(file_name, str) or not file_name.strip():
        raise E.dialog("You must specify a file name.")
    if len(file_name) > 250:
        raise E.string_too_long(file_name, 250)
    parent_type = body.get("parentType")
    if parent_type not in PARENT_TYPES:
        raise E.bad_request(f"Cannot convert the literal '{parent_type}' to the expected type "
                            "'Microsoft.NAV.attachmentEntityBufferDocumentType'.")
    try:
        parent_id = str(uuid.UUID(str(body.get("parentId"))))
    except ValueError:
        raise E.cannot_convert(body.get("parentId"), "Edm.Guid") from None
    doc = company.documents.get(parent_id)
    if doc is None or doc.type.parent_type != parent_type:
        raise E.dialog(f"The {parent_type} with the ID {parent_id} does not exist.")
    for flag in ("documentFlowSales", "documentFlowPurchase"):
        if flag in body and not isinstance(body[flag], bool):
            raise E.cannot_convert(body[flag], "Edm.Boolean")
    record = Attachment(str(uuid.uuid4()), company.id, file_name, parent_type, parent_id,
                        int(body.get("lineNumber") or 0), bool(body.get("documentFlowSales")),
                        bool(body.get("documentFlowPurchase")))
    app.attachments.touch(record)
    return record
