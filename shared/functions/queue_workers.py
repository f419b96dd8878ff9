"""One way to register a queue worker together with its `-poison` twin, for every blueprint.

The Functions runtime moves a message to `<queue>-poison` after `maxDequeueCount` deliveries
(Microsoft Learn, "Azure Queue storage trigger for Azure Functions", poison messages). Every
worker treats its queue the same way: a message its model cannot read is dead-lettered at once
(no retry can fix it), a readable one goes to the flow's plain function, and whatever lands on the
poison queue becomes a dead-lettered job an operator can find and replay.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable

import azure.functions as func
from pydantic import BaseModel, ValidationError

from shared.core.runtime import runtime
from shared.functions.trigger_context import trigger_context
from shared.store.deadletter import dead_letter
from shared.store.storage import POISON_SUFFIX

CONNECTION = "AzureWebJobsStorage"
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"


@functools.cache
def max_dequeue_count() -> int:
    """host.json's extensions.queues.maxDequeueCount (the runtime's default, 5, if unset)."""
    try:
        return int(json.loads(HOST_JSON.read_text())["extensions"]["queues"]["maxDequeueCount"])
    except (OSError, ValueError, KeyError, TypeError):
        return 5


def dequeue_count(msg: func.QueueMessage) -> int:
    return int(getattr(msg, "dequeue_count", None) or 1)


def register_queue_worker(bp: func.Blueprint, *, name: str, queue: str,
                          read: Callable[[str], Any] | type[BaseModel],
                          handle: Callable[[Any, Any, func.QueueMessage], None],
                          poison_reason: str | None = None,
                          dead_letter_ids: Callable[[str], dict] = lambda raw: {}) -> tuple[Any, Any]:
    """Register `name` on `queue` and `name_poison` on `queue-poison`.

    `read` turns the raw body into the flow's message (a pydantic model class, or a function that
    returns None or raises ValueError for a body it cannot read). `handle(rt, message, msg)` does
    the work; raising lets the runtime redeliver. `dead_letter_ids(raw)` names the job a dead
    letter belongs to where the body alone does not say.
    """

    def parse(raw: str) -> Any:
        if isinstance(read, type) and issubclass(read, BaseModel):
            return read.model_validate_json(raw)
        message = read(raw)
        if message is None:
            raise ValueError("no job can be derived from it")
        return message

    def worker(msg: func.QueueMessage) -> None:
        raw = msg.get_body().decode("utf-8", errors="replace")
        rt = runtime()
        with trigger_context(msg, queue):
            try:
                message = parse(raw)
            except (ValidationError, ValueError) as exc:  # can never succeed: dead-letter at once
                why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                dead_letter(rt, queue, raw, f"malformed {queue} message: {why}", **dead_letter_ids(raw))
                return
            handle(rt, message, msg)

    def poison(msg: func.QueueMessage) -> None:
        raw = msg.get_body().decode("utf-8", errors="replace")
        with trigger_context(msg, queue):
            dead_letter(runtime(), queue, raw,
                        poison_reason or f"retries exhausted after {max_dequeue_count()} deliveries",
                        **dead_letter_ids(raw))

    worker.__name__, poison.__name__ = name, f"{name}_poison"
    return (bp.function_name(name)(bp.queue_trigger(arg_name="msg", queue_name=queue, connection=CONNECTION)(worker)),
            bp.function_name(f"{name}_poison")(
                bp.queue_trigger(arg_name="msg", queue_name=queue + POISON_SUFFIX, connection=CONNECTION)(poison)))
