"""BC's request budget across instances: slots leased in real Azurite, requests to the BC sandbox.

Several runtimes in one test stand for several Flex instances: each has its own BC client and its
own local cap of 5, and they share only the storage account, as instances do.
"""
from __future__ import annotations

import threading
import time

import pytest

from shared.clients.budget import SharedGate
from shared.clients.http import RetryConfig
from shared.core.errors import TransientError
from shared.core.runtime import build_runtime
from shared.core.settings import load_settings
from shared.store.storage import Storage
from shared.store.syncstate import RequestSlots

pytestmark = pytest.mark.integration

RETRY = RetryConfig(max_attempts=3, backoff_base=0.02, backoff_max=0.1)


def _instances(env: dict, count: int, budget: str) -> list:
    settings = load_settings({**env, "BC_MAX_CONCURRENT_REQUESTS": budget})
    return [build_runtime(settings, retry=RETRY) for _ in range(count)]


def _burst(runtimes: list, per_instance: int) -> list:
    """`per_instance` threads on each runtime, all asking BC at once; returns their errors."""
    errors: list = []
    start = threading.Barrier(len(runtimes) * per_instance)

    def call(rt):
        start.wait()
        try:
            rt.bc.companies()
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(rt,)) for rt in runtimes for _ in range(per_instance)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _peak_at_bc(env: dict, bc_sandbox, budget: str) -> int:
    """3 instances x 6 requests at once (BC taking 150 ms each): the most BC had at once, processing
    or queued (BC counts both as connections)."""
    bc_sandbox.configure({"processing_delay_ms": 150})
    runtimes = _instances(env, 3, budget)
    try:
        assert _burst(runtimes, 6) == []
    finally:
        for rt in runtimes:
            rt.close()
    return bc_sandbox.throttle.peak_connections


def test_instances_together_never_have_more_requests_at_bc_than_the_budget(env, bc_sandbox):
    # 18 requests from 3 instances, each allowed 5 at once by its own cap: 4 at BC at a time
    peak = _peak_at_bc(env, bc_sandbox, "4")
    assert peak <= 4
    assert peak >= 3  # and the budget is used, not just respected


def test_without_the_shared_budget_instances_add_up_past_it(env, bc_sandbox):
    """The control for the test above: the per-instance cap alone lets 3 instances have 15 at BC."""
    assert _peak_at_bc(env, bc_sandbox, "0") > 5   # BC's 5 in processing, the rest in its queue


def test_a_slot_of_a_crashed_instance_comes_back_when_its_lease_runs_out(fresh_azurite):
    now = [1_000.0]
    slots = RequestSlots(Storage(fresh_azurite.connection_string), 2, clock=lambda: now[0])
    assert slots.take("crashed", 60) and slots.take("crashed", 60)
    assert slots.take("alive", 60) is None           # both held
    now[0] += 61                                      # the crashed instance never gave them back
    taken = slots.take("alive", 60)
    assert taken is not None
    assert set(slots.holders().values()) == {"alive"}
    slots.give_back(taken)
    assert slots.holders() == {}


def test_of_two_instances_taking_the_last_slot_exactly_one_gets_it(fresh_azurite):
    storage = Storage(fresh_azurite.connection_string)
    slots = [RequestSlots(storage, 1) for _ in range(8)]
    got, start = [], threading.Barrier(8)

    def take(n):
        start.wait()
        got.append(slots[n].take(f"instance-{n}", 60))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([s for s in got if s is not None]) == 1


def test_a_request_that_waits_too_long_for_a_slot_is_given_back_unsent(env, bc_sandbox, fresh_azurite):
    slots = RequestSlots(Storage(fresh_azurite.connection_string), 1)
    assert slots.take("another-instance", 60)
    gate = SharedGate(slots, "this-instance", wait_limit=0.5)
    ran = []
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        with gate.hold():
            ran.append(True)
    assert ran == []                                   # nothing was sent
    assert caught.value.unprocessed                    # so a retry cannot duplicate anything
    assert "BC_MAX_CONCURRENT_REQUESTS" in str(caught.value)
    assert 0.5 <= time.monotonic() - started < 5


class CountedSlots(RequestSlots):
    """The real slots, counting the round trips that take one from storage."""

    takes = 0

    def take(self, owner, seconds):
        self.takes += 1
        return super().take(owner, seconds)


def _given_back(slots: RequestSlots, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if slots.holders() == {}:
            return True
        time.sleep(0.05)
    return False


def test_with_one_slot_a_second_request_waits_for_the_first(fresh_azurite):
    slots = RequestSlots(Storage(fresh_azurite.connection_string), 1)
    gate = SharedGate(slots, "this-instance", wait_limit=10)
    order: list[str] = []
    first_in = threading.Event()

    def first():
        with gate.hold():
            order.append("first")
            first_in.set()
            time.sleep(0.3)

    def second():
        first_in.wait()
        with gate.hold():
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order == ["first", "second"]
    assert _given_back(slots)                          # and the slot goes back once nobody uses it


def test_a_jobs_requests_in_a_row_take_one_slot_and_give_it_back_for_the_others(fresh_azurite):
    storage = Storage(fresh_azurite.connection_string)
    slots = CountedSlots(storage, 1)
    gate = SharedGate(slots, "this-instance", keep=0.3)
    for _ in range(5):                                  # create, post, read back, ...
        with gate.hold():
            pass
    assert slots.takes == 1
    assert _given_back(slots)
    other = SharedGate(RequestSlots(storage, 1), "another-instance", wait_limit=2)
    with other.hold():                               # another instance gets the one slot now
        assert set(slots.holders().values()) == {"another-instance"}


def test_a_request_longer_than_the_lease_keeps_its_slot_to_the_end(fresh_azurite):
    """BC may run a request for minutes; the holder renews its lease, nobody else gets the slot."""
    storage = Storage(fresh_azurite.connection_string)
    slow = SharedGate(RequestSlots(storage, 1), "slow-instance", lease=1.2, keep=0.2)
    other = SharedGate(RequestSlots(storage, 1), "another-instance", wait_limit=2.5)
    with slow.hold():
        with pytest.raises(TransientError):
            with other.hold():                            # 2.5 s: two leases' worth
                pass
    with other.hold():                                    # and it is free once the request is done
        pass


def test_a_busy_instance_gives_its_slot_its_turn_to_the_others(fresh_azurite):
    storage = Storage(fresh_azurite.connection_string)
    busy = SharedGate(RequestSlots(storage, 1), "busy-instance", turn=0.5)
    other = SharedGate(RequestSlots(storage, 1), "another-instance", wait_limit=4)
    stop = threading.Event()

    def hammer():
        while not stop.is_set():       # one BC request after the other, never idle
            with busy.hold():
                time.sleep(0.02)

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        time.sleep(0.2)
        with other.hold():             # gets the slot within its wait, though the busy one never pauses
            got = True
    finally:
        stop.set()
        worker.join()
    assert got


def test_bc_stays_reachable_when_storage_is_down(env, bc_sandbox, fresh_azurite):
    """No queue trigger runs without storage; this instance's own routes still reach BC (health)."""
    rt = _instances(env, 1, "4")[0]
    try:
        fresh_azurite.stop()
        assert rt.bc.companies()
    finally:
        rt.close()
