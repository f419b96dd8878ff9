"""Trigger of the `basware-callbacks` queue: transfer and payment responses to Basware."""
from __future__ import annotations

import azure.functions as func

from shared.flows.callbacks import handle_callback
from shared.functions.queue_workers import dequeue_count, max_dequeue_count, register_queue_worker
from shared.models.messages import CallbackMessage
from shared.store.storage import BASWARE_CALLBACKS

bp = func.Blueprint()

basware_callback, basware_callback_poison = register_queue_worker(
    bp, name="basware_callback", queue=BASWARE_CALLBACKS, read=CallbackMessage,
    handle=lambda rt, message, msg: handle_callback(rt, message, dequeue_count(msg), max_dequeue_count()))
