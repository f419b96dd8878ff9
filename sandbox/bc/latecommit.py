"""Late commits: a request that the client gives up on, and that BC commits afterwards.

BC queues requests beyond 5 concurrent per user (up to 95 more) and runs a request for up to its
8-minute operation timeout; the HTTP client's timeout cancels neither, and BC has no idempotency
key (Microsoft Learn: administration/operational-limits-online, api-reference/v2.0/
dynamics-rate-limits). So a deep insert or a post that "timed out" can commit seconds or minutes
later. A rule here picks matching requests (the next `count`, or a random `rate` of them); each is
answered by dropping the connection after `delay` seconds, as a client timeout looks to the
client, and processed in full `commit_after` seconds after it arrived (past the answer; a
`commit_after` shorter than `delay` is a processed request whose answer is lost).

    app.late_commits.add(r"/purchaseInvoices$", method="POST", count=1, delay=0.2, commit_after=1.5)
    POST /_sandbox/late-commits {"path", "method", "count" | "rate", "seed", "delay", "commit_after"}
"""
from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

from sandbox.common import DropConnection, Request, Response


@dataclass
class LateCommitRule:
    path: str
    method: str | None = "POST"
    count: int | None = 1  # None: every match drawn with `rate`
    rate: float = 1.0
    delay: float = 0.5
    commit_after: float = 2.0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None


class LateCommits:
    def __init__(self) -> None:
        self._rules: list[LateCommitRule] = []
        self._lock = threading.Lock()
        self._rng = random.Random()
        self.committed: list[tuple[str, str, int]] = []  # (method, path, status) of each late commit
        self.pending = 0

    def add(self, path: str, *, method: str | None = "POST", count: int | None = 1, rate: float = 1.0,
            delay: float = 0.5, commit_after: float = 2.0, seed: int | None = None) -> None:
        with self._lock:
            if seed is not None:
                self._rng = random.Random(seed)
            self._rules.append(LateCommitRule(path, method, count, rate, delay, commit_after))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> LateCommitRule | None:
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                    return rule
                if self._rng.random() < rule.rate:
                    return rule
        return None

    def hold(self, req: Request, rule: LateCommitRule, process: Callable[[Request], Response]) -> Response:
        """Drop the client's connection after `delay`; run the request at `commit_after`."""
        with self._lock:
            self.pending += 1

        def commit() -> None:
            try:
                time.sleep(rule.commit_after)
                response = process(req)
                with self._lock:
                    self.committed.append((req.method, req.path, response.status))
            finally:
                with self._lock:
                    self.pending -= 1

        threading.Thread(target=commit, daemon=True, name="bc-late-commit").start()
        time.sleep(rule.delay)
        raise DropConnection()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.pending == 0:
                    return True
            time.sleep(0.05)
        return False
