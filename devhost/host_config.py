"""The parts of host.json that devhost honours: `extensions.http.routePrefix` and `extensions.queues`.

Defaults are the runtime's (for `maxPollingInterval`, its local-development value of 2 s).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from devhost.errors import HostError

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 2.0
    message_encoding: str = "base64"

    @property
    def max_in_flight(self) -> int:
        """What the runtime lets run at once per function: a batch, plus the next one fetched at the threshold."""
        return self.batch_size + self.new_batch_threshold


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)


def parse_timespan(text: str, what: str = "TimeSpan") -> float:
    """`[d.]hh:mm:ss[.fffffff]` (the .NET TimeSpan form host.json uses) -> seconds."""
    match = _TIMESPAN.match(str(text).strip())
    if not match:
        raise HostError(f"{what}: {text!r} is not a TimeSpan like 00:00:30")
    days, hours, minutes, seconds, fraction = match.groups()
    return (int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            + (float(f"0.{fraction}") if fraction else 0.0))


def load_host_config(app_dir: str | Path) -> HostConfig:
    path = Path(app_dir) / "host.json"
    if not path.exists():
        return HostConfig()
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise HostError(f"{path}: not readable JSON ({exc})") from None
    return host_config_from_dict(data, str(path))


def host_config_from_dict(data: dict, source: str = "host.json") -> HostConfig:
    extensions = data.get("extensions") or {}
    prefix = (extensions.get("http") or {}).get("routePrefix", "api")
    return HostConfig(route_prefix=str(prefix).strip("/"),
                      queues=_queue_options(extensions.get("queues") or {}, source))


def _queue_options(raw: dict, source: str) -> QueueOptions:
    where = f"{source} extensions.queues"
    batch = _int(raw, "batchSize", 16, where)
    if not 1 <= batch <= 32:
        raise HostError(f"{where}.batchSize must be between 1 and 32, got {batch}")
    threshold = _int(raw, "newBatchThreshold", batch // 2, where)
    dequeue = _int(raw, "maxDequeueCount", 5, where)
    if threshold < 0 or dequeue < 1:
        raise HostError(f"{where}: newBatchThreshold must be >= 0 and maxDequeueCount >= 1")
    visibility = parse_timespan(raw.get("visibilityTimeout", "00:00:00"), f"{where}.visibilityTimeout")
    polling = parse_timespan(raw.get("maxPollingInterval", "00:00:02"), f"{where}.maxPollingInterval")
    if polling < 0.1:
        raise HostError(f"{where}.maxPollingInterval must be at least 00:00:00.1")
    encoding = str(raw.get("messageEncoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise HostError(f"{where}.messageEncoding must be 'base64' or 'none', got {encoding!r}")
    return QueueOptions(batch, threshold, dequeue, visibility, polling, encoding)


def _int(raw: dict, name: str, default: int, where: str) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HostError(f"{where}.{name} must be an integer, got {value!r}")
    return value
