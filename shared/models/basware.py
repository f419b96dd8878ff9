"""Basware P2P API payloads (Basware's P2P OpenAPI, api.basware.com/swagger).

Tolerant by design: Basware adds fields and status values over time and says clients must accept
them, so unknown fields are kept, `processingStatus` is an open string, and money is Decimal
(the client parses JSON numbers with parse_float=Decimal, never through float).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

WAITING_FOR_TRANSFER = "WaitingForTransfer"
TRANSFER_IN_PROGRESS = "TransferInProgress"
TRANSFERRED = "Transferred"
TRANSFER_FAILED = "TransferFailed"


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class CodingRow(_Tolerant):
    external_code: str = Field(alias="externalCode")
    row_index: int | None = Field(None, alias="rowIndex")
    account_code: str | None = Field(None, alias="accountCode")
    account_name: str | None = Field(None, alias="accountName")
    net_total: Decimal | None = Field(None, alias="netTotal")
    gross_total: Decimal | None = Field(None, alias="grossTotal")
    tax_sum: Decimal | None = Field(None, alias="taxSum")
    tax_code: str | None = Field(None, alias="taxCode")
    tax_percent: Decimal | None = Field(None, alias="taxPercent")

    def field(self, name: str) -> Any:
        """A coding field by its Basware name (costCenterCode, projectCode, dimCode1, ...)."""
        if name in type(self).model_fields:
            return getattr(self, name)
        for fname, info in type(self).model_fields.items():
            if info.alias == name:
                return getattr(self, fname)
        return (self.model_extra or {}).get(name)


class TransferResponseRecord(_Tolerant):
    external_code: str | None = Field(None, alias="externalCode")
    success: bool | None = None
    response_message: str | None = Field(None, alias="responseMessage")
    voucher_number1: str | None = Field(None, alias="voucherNumber1")


class AccountingDocument(_Tolerant):
    invoice_id: str = Field(alias="invoiceId")
    company_code: str | None = Field(None, alias="companyCode")
    currency_code: str | None = Field(None, alias="currencyCode")
    supplier_code: str | None = Field(None, alias="supplierCode")
    supplier_name: str | None = Field(None, alias="supplierName")
    invoice_number: str | None = Field(None, alias="invoiceNumber")
    invoice_date: str | None = Field(None, alias="invoiceDate")
    due_date: str | None = Field(None, alias="dueDate")
    voucher_date: str | None = Field(None, alias="voucherDate")
    net_sum: Decimal | None = Field(None, alias="netSum")
    gross_sum: Decimal | None = Field(None, alias="grossSum")
    tax_sum1: Decimal | None = Field(None, alias="taxSum1")
    payment_block: bool | None = Field(None, alias="paymentBlock")
    processing_status: str | None = Field(None, alias="processingStatus")
    description: str | None = None
    last_updated: str | None = Field(None, alias="lastUpdated")
    coding_rows: list[CodingRow] = Field(default_factory=list, alias="codingRows")
    transfer_responses: list[TransferResponseRecord] = Field(default_factory=list, alias="transferResponses")
    payment_responses: list[dict[str, Any]] = Field(default_factory=list, alias="paymentResponses")


class TransferResponse(BaseModel):
    """POST .../transferResponses body (TransferResponseEntity)."""

    externalCode: str = Field(max_length=36)
    success: bool
    responseMessage: str = Field(max_length=250)
    paymentBlock: bool = False
    voucherNumber1: str | None = Field(None, max_length=25)
    voucherNumber2: str | None = Field(None, max_length=25)
    transferDate: str | None = None
    sourceSystem: str | None = Field("Business Central", max_length=32)


class PaymentResponse(BaseModel):
    """POST .../paymentResponses body (PaymentResponseEntity). Always the full field set:
    fields left out are cleared on the invoice (PaymentResponseEntity in Basware's P2P OpenAPI)."""

    externalCode: str = Field(max_length=36)
    success: bool = True
    paymentBlock: bool = False
    paymentDate: str | None = None
    paidTotal: Decimal | None = None
    paymentMethod: str | None = Field(None, max_length=25)
    paymentTermCode: str | None = Field(None, max_length=25)
    cashDiscount: Decimal | None = None
    checkNumber: str | None = Field(None, max_length=25)
    paymentMessage: str | None = Field(None, max_length=100)
    paymentNumber: str | None = Field(None, max_length=250)
    paymentDocument: str | None = Field(None, max_length=250)
    paymentReversalDocument: str | None = Field(None, max_length=250)
    responseMessage: str | None = Field(None, max_length=250)
    sourceSystem: str | None = Field("Business Central", max_length=32)


class WebhookTask(_Tolerant):
    """The push notification Basware POSTs: a hint to fetch `documentId`, never the invoice itself."""

    task_id: str | None = Field(None, alias="taskId")
    task_status: str | None = Field(None, alias="taskStatus")
    task_type: str | None = Field(None, alias="taskType")
    task_sub_type: str | None = Field(None, alias="taskSubType")
    document_id: str | None = Field(None, alias="documentId")
    expiration_time: str | None = Field(None, alias="expirationTime")


class RequestStatusItem(_Tolerant):
    external_code: str | None = Field(None, alias="externalCode")
    status: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


class RequestStatus(_Tolerant):
    request_id: str | None = Field(None, alias="requestId")
    entity_type: str | None = Field(None, alias="entityType")
    request_status: str | None = Field(None, alias="requestStatus")
    items: list[RequestStatusItem] = Field(default_factory=list)

    @classmethod
    def from_response(cls, body: dict) -> "RequestStatus | None":
        entries = (body or {}).get("requestStatus") or []
        if not entries:
            return None
        entry = entries[0]
        items = [item for system in entry.get("systems") or [] for item in system.get("items") or []]
        return cls.model_validate({**entry, "items": items})
