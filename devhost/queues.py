"""Queue triggers: poll Storage queues and settle each message the way the Functions runtime does.

- Fetch up to `batchSize` messages, and fetch again once the in-flight count drops to
  `newBatchThreshold` (so up to batchSize + newBatchThreshold run at once, as in the runtime).
- Each fetched message is leased for the in-flight visibility (10 minutes by default), renewed
  every half lease while its handler runs; if the host dies, the message reappears when the lease ends.
- Success deletes the message. Failure makes it visible again after `visibilityTimeout`; the
  failure at `dequeue_count >= maxDequeueCount` moves it, unchanged, to `<queue>-poison`.
- An empty queue backs the polling off from 100 ms to `maxPollingInterval`.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueMessage as StorageMessage

from devhost.app_loader import QueueFunction
from devhost.host_config import QueueOptions

log = logging.getLogger("devhost.queues")

POISON_SUFFIX = "-poison"
_MIN_POLL = 0.1


class TriggerQueueMessage(func.QueueMessage):
    """func.QueueMessage with the metadata the runtime fills in (the public class leaves it None)."""

    def __init__(self, *, id: str, body: bytes, pop_receipt: str, dequeue_count: int,
                 insertion_time: Optional[datetime.datetime], expiration_time: Optional[datetime.datetime],
                 time_next_visible: Optional[datetime.datetime]) -> None:
        super().__init__(id=id, body=body, pop_receipt=pop_receipt)
        self._dequeue_count = dequeue_count
        self._insertion_time = insertion_time
        self._expiration_time = expiration_time
        self._time_next_visible = time_next_visible

    dequeue_count = property(lambda self: self._dequeue_count)
    insertion_time = property(lambda self: self._insertion_time)
    expiration_time = property(lambda self: self._expiration_time)
    time_next_visible = property(lambda self: self._time_next_visible)


def ensure_queue(client: QueueClient) -> None:
    try:  # fail fast at start-up when the storage is not there
        client.create_queue(retry_total=1, connection_timeout=5)
    except ResourceExistsError:
        pass


class _Lease:
    """A received message and its current pop receipt; `lock` orders renewals against settling."""

    __slots__ = ("message", "pop_receipt", "lock", "done")

    def __init__(self, message: StorageMessage) -> None:
        self.message = message
        self.pop_receipt = message.pop_receipt
        self.lock = threading.Lock()
        self.done = False


class QueueListener:
    def __init__(self, function: QueueFunction, queue: QueueClient, poison: QueueClient,
                 options: QueueOptions, inflight_seconds: int) -> None:
        self.function = function
        self.queue, self.poison = queue, poison
        self._options = options
        self._inflight = max(1, int(inflight_seconds))
        self._leases: dict[str, _Lease] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._renew_stop = threading.Event()
        self._pool = ThreadPoolExecutor(options.max_in_flight, thread_name_prefix=f"devhost-{function.name}")
        self._threads = [threading.Thread(target=self._poll_loop, name=f"devhost-poll-{function.name}", daemon=True),
                         threading.Thread(target=self._renew_loop, name=f"devhost-lease-{function.name}",
                                          daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def request_stop(self) -> None:
        """Stop fetching; running handlers go on."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait for running handlers (up to `timeout`); True if all finished and were settled."""
        deadline = time.monotonic() + timeout
        self._threads[0].join(timeout)
        with self._changed:
            while self._leases and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            finished = not self._leases
        self._renew_stop.set()
        self._pool.shutdown(wait=finished)
        return finished

    # -- fetching ----------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        options, delay, failures = self._options, 0.0, 0
        while not self._stop.is_set():
            with self._changed:
                while len(self._leases) > options.new_batch_threshold and not self._stop.is_set():
                    self._changed.wait()
            if self._stop.is_set():
                break
            try:
                batch = self._fetch()
                failures = 0
            except Exception as exc:  # storage down: keep polling, say so now and then
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("queue %s: polling failed (%s); retrying", self.function.queue_name, exc)
                batch = []
            if batch:
                delay = 0.0
                for message in batch:
                    self._dispatch(message)
                continue
            delay = min(options.max_polling_interval, delay * 2 if delay else _MIN_POLL)
            self._stop.wait(delay)

    def _fetch(self) -> list[StorageMessage]:
        pages = self.queue.receive_messages(messages_per_page=self._options.batch_size,
                                             visibility_timeout=self._inflight).by_page()
        page = next(pages, None)
        return list(page) if page is not None else []

    def _dispatch(self, message: StorageMessage) -> None:
        lease = _Lease(message)
        with self._changed:
            self._leases[message.id] = lease
        self._pool.submit(self._process, lease)

    # -- one message -------------------------------------------------------------------------------
    def _process(self, lease: _Lease) -> None:
        message, name, limit = lease.message, self.function.name, self._options.max_dequeue_count
        succeeded, started = False, time.perf_counter()
        try:
            if message.dequeue_count > limit:  # e.g. its handler kept killing the host
                log.warning("%s: message %s dequeued %d times (max %d); moving it to poison without running",
                            name, message.id, message.dequeue_count, limit)
            else:
                log.info("Executing '%s' (queue=%s, id=%s, dequeue_count=%d)", name, self.function.queue_name,
                         message.id, message.dequeue_count)
                self.function.invoke(self._trigger_message(lease))
                succeeded = True
                log.info("Executed '%s' (Succeeded, id=%s, %.0f ms)", name, message.id,
                         (time.perf_counter() - started) * 1000)
        except Exception:
            log.exception("Executed '%s' (Failed, id=%s, attempt %d of %d)", name, message.id,
                          message.dequeue_count, limit)
        finally:
            self._settle(lease, succeeded)

    def _trigger_message(self, lease: _Lease) -> TriggerQueueMessage:
        message = lease.message
        return TriggerQueueMessage(id=message.id, body=self._decode(message.content), pop_receipt=lease.pop_receipt,
                                   dequeue_count=message.dequeue_count, insertion_time=message.inserted_on,
                                   expiration_time=message.expires_on, time_next_visible=message.next_visible_on)

    def _decode(self, content: str) -> bytes:
        if self._options.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"message on {self.function.queue_name!r} is not base64 "
                             "(host.json messageEncoding is base64; producers must encode)") from None

    def _settle(self, lease: _Lease, succeeded: bool) -> None:
        message = lease.message
        with lease.lock:
            lease.done = True
            receipt = lease.pop_receipt
        try:
            if succeeded:
                self.queue.delete_message(message.id, receipt)
            elif message.dequeue_count >= self._options.max_dequeue_count:
                self.poison.send_message(message.content)  # the stored text: same encoding
                self.queue.delete_message(message.id, receipt)
                log.warning("%s: message %s moved to %s after %d attempts", self.function.name, message.id,
                            self.poison.queue_name, message.dequeue_count)
            else:
                self.queue.update_message(message.id, receipt,
                                           visibility_timeout=math.ceil(self._options.visibility_timeout))
        except Exception as exc:
            log.warning("%s: could not settle message %s (%s); it reappears when its lease ends",
                        self.function.name, message.id, exc)
        finally:
            with self._changed:
                self._leases.pop(message.id, None)
                self._changed.notify_all()

    # -- leases ------------------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        interval = self._inflight / 2
        while not self._renew_stop.wait(interval):
            with self._changed:
                leases = list(self._leases.values())
            for lease in leases:
                with lease.lock:
                    if lease.done:
                        continue
                    try:
                        updated = self.queue.update_message(lease.message.id, lease.pop_receipt,
                                                             visibility_timeout=self._inflight)
                        lease.pop_receipt = updated.pop_receipt
                    except Exception as exc:
                        log.warning("%s: could not extend the lease of message %s (%s)",
                                    self.function.name, lease.message.id, exc)
