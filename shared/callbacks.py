"""The `basware-callbacks` worker: one queue for every response the connector owes Basware.

`transfer` -> shared/transfer_responses.py; `payment` -> shared.payments.send_payment_response
(the payments flow; imported when first needed so that each flow loads on its own).
"""
from __future__ import annotations

from .models.messages import CallbackMessage
from .transfer_responses import SENDER_LEASE_SECONDS, send_transfer_response


def handle_callback(rt, message: CallbackMessage, dequeue_count: int = 1, max_dequeue_count: int = 5, *,
                    lease_seconds: float = SENDER_LEASE_SECONDS) -> str:
    if message.kind == "transfer":
        return send_transfer_response(rt, message, dequeue_count, max_dequeue_count, lease_seconds=lease_seconds)
    if message.kind == "payment":
        from .payments import send_payment_response

        return send_payment_response(rt, message)
    raise ValueError(f"unknown callback kind {message.kind!r}")  # unreachable: the model allows two kinds
