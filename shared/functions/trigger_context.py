"""Log context for one queue message: the job it works (as the dead letters derive it) and the ids it
carries, bound on every log line of the trigger (see `shared.core.telemetry.log_context`).

It lives with the triggers, above the store: it maps a message to its job through
`shared.store.deadletter.job_for_message`, the one place that does.
"""
from __future__ import annotations

import contextlib
from typing import Any

from shared.core.telemetry import log_context
from shared.models.messages import parse_message
from shared.store.deadletter import job_for_message


_MESSAGE_IDS = (("invoice_id", "invoice_id"), ("document_id", "bc_id"), ("company_id", "bc_company_id"),
                ("task_id", "task_id"), ("source", "source"))


def message_context(queue: str, body: str | bytes, **extra: Any) -> contextlib.AbstractContextManager:
    """`log_context` for one queue message: its job id (as the dead letters derive it) and the ids it
    carries. For queue triggers: `with message_context(INVOICE_TRANSFERS, msg.get_body()): ...`."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    message = parse_message(text)
    kind, job = job_for_message(queue, message, text)
    fields = {"job_id": job, "kind": kind, "queue": queue}
    for key, name in _MESSAGE_IDS:
        if message and message.get(key):
            fields[name] = str(message[key])
    return log_context(**fields, **extra)


def trigger_context(msg: Any, queue: str) -> contextlib.AbstractContextManager:
    """`message_context` for a queue trigger's `func.QueueMessage` (its id and dequeue count too).
    Never raises: a body it cannot read still gets the queue and message id on every line."""
    fields = {"message_id": getattr(msg, "id", None), "dequeue_count": getattr(msg, "dequeue_count", None)}
    try:
        return message_context(queue, msg.get_body(), **fields)
    except Exception:  # noqa: BLE001 - context is a courtesy; the trigger must still run
        return log_context(queue=queue, **fields)
