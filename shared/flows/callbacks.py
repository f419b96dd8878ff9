"""The `basware-callbacks` worker: one queue for every response the connector owes Basware.

`transfer` -> shared/flows/invoices/responses.py; `payment` -> shared.flows.payments.respond.send_payment_response
(the payments flow; imported when first needed so that each flow loads on its own).
"""
from __future__ import annotations

from shared.models.messages import CallbackMessage
from shared.flows.invoices.responses import SENDER_LEASE_SECONDS, send_transfer_response
from shared.core.runtime import Runtime


def handle_callback(rt: Runtime, message: CallbackMessage, dequeue_count: int = 1, max_dequeue_count: int = 5, *,
                    lease_seconds: float = SENDER_LEASE_SECONDS) -> str:
    if message.kind == "transfer":
        return send_transfer_response(rt, message, dequeue_count, max_dequeue_count, lease_seconds=lease_seconds)
    if message.kind == "payment":
        from shared.flows.payments.respond import send_payment_response

        return send_payment_response(rt, message)
    raise ValueError(f"unknown callback kind {message.kind!r}")  # unreachable: the model allows two kinds
