"""Timer triggers: fire each function at the next occurrence of its NCRONTAB schedule (UTC).

One thread per timer runs its invocations itself, so a timer never overlaps its own running
invocation; occurrences missed while it ran are skipped, and the next one is computed from now.
`past_due` is true when an invocation starts more than a second after its scheduled time.
A failed run is logged and not retried until the next occurrence, as in the runtime.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from azure.functions.timer import TimerRequest  # the concrete class; func.TimerRequest is abstract

from devhost.app_loader import TimerFunction

log = logging.getLogger("devhost.timers")

_PAST_DUE_AFTER = timedelta(seconds=1)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class TimerRunner:
    def __init__(self, function: TimerFunction, clock: Callable[[], datetime] = utcnow) -> None:
        self.function = function
        self._clock = clock
        self._stop = threading.Event()
        self._run_lock = threading.Lock()  # also taken by manual runs (admin endpoint)
        self._last: datetime | None = None
        self._thread = threading.Thread(target=self._loop, name=f"devhost-timer-{function.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def next_occurrence(self) -> datetime:
        return self.function.schedule.next_after(self._clock())

    def run_now(self) -> None:
        """Fire once outside the schedule (admin endpoint); waits for a running invocation first."""
        threading.Thread(target=self._fire, args=(self._clock(), False, "manual"), daemon=True).start()

    def _loop(self) -> None:
        if self.function.run_on_startup:
            self._fire(self._clock(), False, "startup")
        while not self._stop.is_set():
            due = self.function.schedule.next_after(max(self._clock(), self._last or self._clock()))
            if not self._sleep_until(due):
                return
            late = self._clock() - due
            self._fire(due, late > _PAST_DUE_AFTER, "schedule")

    def _sleep_until(self, due: datetime) -> bool:
        """Wait for `due` by the wall clock (never early); False if stopped meanwhile."""
        while True:
            remaining = (due - self._clock()).total_seconds()
            if remaining <= 0:
                return not self._stop.is_set()
            if self._stop.wait(min(remaining, 60.0)):
                return False

    def _fire(self, scheduled: datetime, past_due: bool, reason: str) -> None:
        with self._run_lock:
            name, started = self.function.name, time.perf_counter()
            log.info("Executing '%s' (Reason='%s', scheduled %s%s)", name, reason,
                     scheduled.strftime("%H:%M:%S"), ", past due" if past_due else "")
            try:
                status = {"Last": (self._last or scheduled).isoformat(),
                          "Next": self.function.schedule.next_after(scheduled).isoformat(),
                          "LastUpdated": self._clock().isoformat()}
                self.function.invoke(TimerRequest(past_due=past_due, schedule_status=status,
                                                  schedule={"AdjustForDST": False}))
                log.info("Executed '%s' (Succeeded, %.0f ms)", name, (time.perf_counter() - started) * 1000)
            except Exception:
                log.exception("Executed '%s' (Failed); the next run is at its next occurrence", name)
            if reason == "schedule":
                self._last = scheduled
