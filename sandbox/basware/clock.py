"""A wall clock tests can move forward (token expiry, pre-signed URL expiry, requestStatus delay)."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()
        self._last = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), timezone.utc)

    def stamp(self) -> datetime:
        """Like now(), but strictly increasing (so `lastUpdated > x` filters never lose a change)."""
        with self._lock:
            value = max(self.time(), self._last + 0.001)
            self._last = value
        return datetime.fromtimestamp(value, timezone.utc)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += seconds


def iso(dt: datetime) -> str:
    """Basware's date-time form: `2026-11-20T08:00:00.123Z`."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_datetime(value: str) -> datetime:
    """ISO 8601 date or date-time; naive values are UTC. Raises ValueError."""
    text = value.strip()
    if not text:
        raise ValueError("empty date-time")
    parsed = datetime.fromisoformat(text.replace("z", "Z"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def after(seconds: float, clock: Clock) -> str:
    return iso(clock.now() + timedelta(seconds=seconds))
