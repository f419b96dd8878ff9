"""Queue messages. Each queue carries one model; unknown fields are ignored so old messages still parse."""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InvoiceTransferMessage(Message):
    """`invoice-transfers`: transfer one Basware accounting document to BC."""

    invoice_id: str
    source: Literal["webhook", "poll", "replay"] = "webhook"
    task_id: str | None = None
    company_code: str | None = None
    enqueued_at: datetime = Field(default_factory=_now)


class CallbackMessage(Message):
    """`basware-callbacks`: send one transfer or payment response to Basware."""

    kind: Literal["transfer", "payment"]
    job_id: str
    invoice_id: str
    enqueued_at: datetime = Field(default_factory=_now)


class PaymentCheckMessage(Message):
    """`payment-checks`: re-read a BC purchase invoice (or a filtered set) and report payment."""

    company_id: str
    document_id: str | None = None  # one BC purchase invoice / credit memo id
    collection_filter: str | None = None  # a `collection` notification's $filter
    resource: Literal["purchaseInvoices", "purchaseCreditMemos"] = "purchaseInvoices"
    source: Literal["notification", "poll", "replay"] = "poll"
    enqueued_at: datetime = Field(default_factory=_now)


class MasterdataImportMessage(Message):
    """`masterdata-imports`: import BC master data of one company into Basware."""

    company_id: str
    force: bool = False
    entities: list[str] | None = None  # None = all
    enqueued_at: datetime = Field(default_factory=_now)


def parse_message(text: str | None) -> dict | None:
    """The stored queue message as a dict: JSON, or base64 of JSON as a host may hand it over."""
    if not text:
        return None
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except ValueError:
        pass
    try:
        value = json.loads(base64.b64decode(text, validate=True).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
