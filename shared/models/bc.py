"""Business Central API v2.0 payloads (Microsoft Learn resource types). Unknown fields are kept."""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class _Entity(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    etag: str | None = Field(None, alias="@odata.etag")
    last_modified: str | None = Field(None, alias="lastModifiedDateTime")


class Vendor(_Entity):
    number: str
    display_name: str | None = Field(None, alias="displayName")
    blocked: str | None = None
    currency_code: str | None = Field(None, alias="currencyCode")


class Account(_Entity):
    number: str
    display_name: str | None = Field(None, alias="displayName")
    account_type: str | None = Field(None, alias="accountType")
    blocked: bool = False
    direct_posting: bool = Field(True, alias="directPosting")


class DimensionValue(_Entity):
    code: str
    dimension_id: str | None = Field(None, alias="dimensionId")
    display_name: str | None = Field(None, alias="displayName")


class PurchaseDocument(_Entity):
    """A purchase invoice or credit memo: draft, then posted under the same id."""

    number: str | None = None
    status: str | None = None
    vendor_number: str | None = Field(None, alias="vendorNumber")
    vendor_invoice_number: str | None = Field(None, alias="vendorInvoiceNumber")
    vendor_credit_memo_number: str | None = Field(None, alias="vendorCreditMemoNumber")
    total_excluding_tax: Decimal | None = Field(None, alias="totalAmountExcludingTax")
    total_tax: Decimal | None = Field(None, alias="totalTaxAmount")
    total_including_tax: Decimal | None = Field(None, alias="totalAmountIncludingTax")
    posting_date: str | None = Field(None, alias="postingDate")
    due_date: str | None = Field(None, alias="dueDate")

    @property
    def is_draft(self) -> bool:
        return self.status == "Draft"
