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

A slot is leased for 20 seconds and renewed by the process while it holds it, so a crashed
instance's slots come back 20 seconds after it died, while a request that takes minutes (BC runs a
request for up to 8 minutes) keeps its slot to the end. A process that finishes a
request keeps the slot for half a second: the job's next BC request (an invoice is a create, a post
and a read back in a row) or another waiting request of the process takes it without a storage
round trip; then it goes back for the other instances. A slot held for 5 seconds goes back when
it is freed whatever the demand, so a busy instance cannot keep slots from the others. A request that finds every slot taken waits
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

LEASE_SECONDS = 20.0  # a slot's lease, renewed while held: a crashed instance's slots come back after this
KEEP_SECONDS = 0.5    # a freed slot waits this long for this process's next request
TURN_SECONDS = 5.0    # a slot held this long goes back when freed: other instances get their turn


class Slot(Protocol):
    key: str
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
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._slots:
            yield


class SharedGate(LocalGate):
    """The local cap, and one of the slots every instance shares (module docstring)."""

    def __init__(self, store: SlotStore, owner: str, *, limit: int = 5, wait_limit: float = 120.0,
                 keep: float = KEEP_SECONDS, lease: float = LEASE_SECONDS, turn: float = TURN_SECONDS, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random) -> None:
        super().__init__(limit)
        self._store = store
        self._owner = owner
        self._wait_limit = wait_limit
        self._keep = keep
        self._lease = lease
        self._turn = turn
        self._clock = clock
        self._rng = rng
        self._held: dict[str, Slot] = {}           # every slot this process holds, its newest lease
        self._idle: list[tuple[str, float]] = []   # (slot, when freed): held, free for our next request
        self._taken_at: dict[str, float] = {}       # when each held slot came from storage
        self._returning: list[Slot] = []            # held long enough: back to the other instances
        self._keeper: threading.Thread | None = None
        self._freed = threading.Condition()

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._slots:
            key = self._acquire()
            try:
                yield
            finally:
                self._release(key)

    def _acquire(self) -> str | None:
        deadline = time.monotonic() + self._wait_limit
        attempt = 0
        while True:
            with self._freed:
                if self._idle:
                    return self._idle.pop()[0]
            try:
                slot = self._store.take(self._owner, self._lease)
            except self._store.unavailable as exc:
                log.warning("event=bc.budget.unavailable error=%s: the local cap alone bounds this request",
                            type(exc).__name__)
                return None
            if slot is not None:
                with self._freed:
                    self._held[slot.key] = slot
                    self._taken_at[slot.key] = time.monotonic()
                    self._start_keeper()
                return slot.key
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

    def _release(self, key: str | None) -> None:
        """Keep the slot for `keep` seconds: the next request of the same job (create, post, read
        back) or a waiting request of this process takes it without a storage round trip."""
        with self._freed:
            if key not in self._held:
                return
            now = time.monotonic()
            if now - self._taken_at.get(key, now) >= self._turn:
                # held for its turn: give it back, so a busy instance cannot keep slots to itself
                self._returning.append(self._held.pop(key))
            else:
                self._idle.append((key, now))
                self._freed.notify()

    def _start_keeper(self) -> None:
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep_leases, name="bc-budget-keeper", daemon=True)
            self._keeper.start()

    def _keep_leases(self) -> None:
        """While this process holds slots: renew their leases (a third of the lease before they run
        out), and give back those unused for `keep` seconds. The only thread that renews or gives
        back, so a lease's newest ETag is always the one in `_held`. Ends when nothing is held."""
        renew_before = self._lease * 2 / 3
        while True:
            now, mono = self._clock(), time.monotonic()
            with self._freed:
                if not self._held and not self._returning:
                    self._keeper = None
                    return
                stale = [k for k, freed in self._idle if mono - freed >= self._keep]
                self._idle = [(k, freed) for k, freed in self._idle if mono - freed < self._keep]
                returned = [self._held.pop(k) for k in stale] + self._returning
                self._returning = []
                due = [slot for slot in self._held.values() if slot.until - now < renew_before]
            for slot in returned:
                try:
                    self._store.give_back(slot)
                except self._store.unavailable:
                    pass  # the lease runs out on its own
            for slot in due:
                try:
                    renewed = self._store.renew(slot, self._lease)
                except self._store.unavailable:
                    continue  # try again next round; the lease has a third left
                with self._freed:
                    if renewed is None:  # it ran out (a stalled process) and another instance has it
                        log.warning("event=bc.budget.lease_lost slot=%s", slot.key)
                        self._held.pop(slot.key, None)
                        self._idle = [(k, f) for k, f in self._idle if k != slot.key]
                    elif slot.key in self._held:
                        self._held[slot.key] = renewed
                    else:  # freed for good while renewed: give back the newest lease
                        self._returning = [renewed if r.key == slot.key else r for r in self._returning]
            time.sleep(min(self._keep, self._lease / 6))
