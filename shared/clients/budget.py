"""How many requests the app has at Business Central at once: per instance, and across all of them.

This module is where the reasoning lives; infra/app/api.bicep and docs/deploy.md point here.

BC's limits are per principal (one app registration = one user), over every instance of the app
(Microsoft Learn, administration/operational-limits-online, OData limits):
- 5 requests are processed at a time; up to 95 more wait in BC's queue (100 connections);
- past 100 connections BC answers 429, and a request queued for 8 minutes gets a 503;
- a queued request the client gave up on may still run and commit later.

Flex Consumption scales each queue and timer function on its own instances, the HTTP routes as one
group, each up to `maximumInstanceCount`, whose lowest allowed value is 40
(learn.microsoft.com/azure/azure-functions/flex-consumption-plan). So an instance
count cannot be the bound: 40 instances of one function with 5 requests each is already 200
connections. Two gates hold the budget instead:

1. `LocalGate`: one BC client per worker process (shared/core/runtime.py) lets at most 5 requests
   through at once, BC's processing limit: one instance alone can keep BC busy.
2. `SharedGate`: a request also holds one of `BC_MAX_CONCURRENT_REQUESTS` (default 10) slots leased
   in Table Storage (shared/store/syncstate.py `RequestSlots`), shared by every instance and every
   function. At most that many requests are at BC at once, whatever the instance count: 5 in
   processing and 5 ready in BC's queue, so BC never idles between requests and no request waits
   long enough in BC's queue to be given up on and commit late. 10 leaves 90 of the 100
   connections to anything else that signs in with the same app registration.

A slot is leased for the request's own timeout plus a margin, so a crashed instance gives its slots
back by expiry, and the lease outlives every request that holds it. A process that finishes a
request keeps the slot for half a second: the job's next BC request (an invoice is a create, a post
and a read back in a row) or another waiting request of the process takes it without a storage
round trip; then it goes back for the other instances. A request that finds every slot taken waits
with jittered backoff (woken early when its own process frees one) and, after `wait_limit` seconds,
raises TransientError: the job goes back to its queue unsent. When Table Storage cannot be reached,
the gate lets the request through on the local cap alone: no queue trigger fires without storage,
so the only BC callers left are this instance's HTTP routes, and refusing BC would only make the
health check report BC down when it is not.

bench/invoices.py (`--instances`) measures what the budget costs in throughput (bench/RESULTS.md).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

from shared.core.errors import TransientError

log = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 30.0  # a slot's lease outlives the request's own timeout by this much
KEEP_SECONDS = 0.5           # a freed slot waits this long for this process's next request


class Slot(Protocol):
    until: float  # epoch seconds: when the lease runs out


class SlotStore(Protocol):
    """The shared slots (shared/store/syncstate.py `RequestSlots`). Errors: see `unavailable`."""

    size: int
    unavailable: tuple[type[BaseException], ...]

    def take(self, owner: str, seconds: float) -> Slot | None: ...
    def renew(self, slot: Slot, seconds: float) -> Slot | None: ...
    def give_back(self, slot: Slot) -> None: ...


class LocalGate:
    """At most `limit` requests of this process at once."""

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def hold(self, seconds: float) -> Iterator[None]:
        with self._slots:
            yield


class SharedGate(LocalGate):
    """The local cap, and one of the slots every instance shares (module docstring)."""

    def __init__(self, store: SlotStore, owner: str, *, limit: int = 5, wait_limit: float = 120.0,
                 keep: float = KEEP_SECONDS, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random) -> None:
        super().__init__(limit)
        self._store = store
        self._owner = owner
        self._wait_limit = wait_limit
        self._keep = keep
        self._clock = clock
        self._rng = rng
        self._idle: list[tuple[Slot, float]] = []  # (slot, when freed): leased by us, free for our next request
        self._reaper: threading.Thread | None = None
        self._freed = threading.Condition()

    @contextmanager
    def hold(self, seconds: float) -> Iterator[None]:
        with self._slots:
            slot = self._acquire(seconds + LEASE_MARGIN_SECONDS)
            try:
                yield
            finally:
                self._release(slot)

    def _acquire(self, lease: float) -> Slot | None:
        deadline = time.monotonic() + self._wait_limit
        attempt = 0
        while True:
            slot = self._from_idle(lease)
            if slot is not None:
                return slot
            try:
                slot = self._store.take(self._owner, lease)
            except self._store.unavailable as exc:
                log.warning("event=bc.budget.unavailable error=%s: the local cap alone bounds this request",
                            type(exc).__name__)
                return None
            if slot is not None:
                return slot
            attempt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransientError(f"bc: all {self._store.size} shared request slots stayed taken for "
                                     f"{self._wait_limit:.0f} s (BC_MAX_CONCURRENT_REQUESTS); not sent, "
                                     "retried later", unprocessed=True, system="bc")
            with self._freed:
                if not self._idle:
                    # full jitter, 50 ms doubling to 2 s, so instances that wait do not poll in step;
                    # woken at once when a request of this process frees its slot
                    self._freed.wait(min(left, self._rng() * min(2.0, 0.05 * 2 ** attempt)))

    def _from_idle(self, lease: float) -> Slot | None:
        with self._freed:
            slot = self._idle.pop()[0] if self._idle else None
        if slot is None or slot.until - self._clock() >= lease:
            return slot
        try:
            return self._store.renew(slot, lease)  # None: it ran out and another instance took it
        except self._store.unavailable:
            return slot

    def _release(self, slot: Slot | None) -> None:
        """Keep the slot for `keep` seconds: the next request of the same job (create, post, read
        back) or a waiting request of this process takes it without a storage round trip."""
        if slot is None:
            return
        with self._freed:
            self._idle.append((slot, time.monotonic()))
            self._freed.notify()
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._give_back_idle, name="bc-budget-reaper", daemon=True)
                self._reaper.start()

    def _give_back_idle(self) -> None:
        """Return slots unused for `keep` seconds to the other instances; ends when none is left."""
        while True:
            with self._freed:
                if not self._idle:
                    self._reaper = None
                    return
                now = time.monotonic()
                stale = [s for s, freed in self._idle if now - freed >= self._keep]
                self._idle = [(s, freed) for s, freed in self._idle if now - freed < self._keep]
                wait = self._keep if not self._idle else self._keep - (now - min(f for _, f in self._idle))
            for slot in stale:
                try:
                    self._store.give_back(slot)
                except self._store.unavailable:
                    pass  # the lease runs out on its own
            time.sleep(max(wait, 0.01))
