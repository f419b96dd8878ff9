"""Attachments at the edges: Basware's `attachments[]` entries (P2P OpenAPI schema `Attachment`) and
BC's `documentAttachment` entity (API v2.0 page 30080)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BaswareAttachment(BaseModel):
    """One entry of an accounting document's `attachments[]`; every field is nullable in the schema."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    external_code: str | None = Field(None, alias="externalCode")
    category: str | None = None  # ORIGINALIMAGE | ATTACHMENT | EXPORTEDEMAIL
    filename: str | None = None
    is_confidential: bool | None = Field(None, alias="isConfidential")
    creation_time: str | None = Field(None, alias="creationTime")


class DocumentAttachment(BaseModel):
    """A BC document attachment; `byte_size` 0 means the record exists without its file yet."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    file_name: str = Field("", alias="fileName")
    byte_size: int = Field(0, alias="byteSize")
    parent_type: str | None = Field(None, alias="parentType")
    parent_id: str | None = Field(None, alias="parentId")
    etag: str | None = Field(None, alias="@odata.etag")


def attachments_of(document) -> list[BaswareAttachment]:
    """The `attachments[]` of an AccountingDocument (kept as an extra field by its tolerant model)."""
    raw = (getattr(document, "model_extra", None) or {}).get("attachments") or []
    return [BaswareAttachment.model_validate(a) for a in raw if isinstance(a, dict)]
