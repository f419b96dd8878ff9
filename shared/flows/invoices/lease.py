"""Keeping a job's lease while one step runs longer than the lease.

One step of the invoice job can take far longer than its 30 s lease: a ledger reload (several paged
reads), a request retried with `Retry-After` waits, or a request waiting in BC's queue behind 5
concurrent ones (up to 8 minutes, Microsoft Learn administration/operational-limits-online). A
second worker would then claim the job mid-step. So while a job runs, a heartbeat renews the lease
every third of its length, through the same ETag-conditional job write the flow uses (JobStore.
update): a renewal that conflicts means another owner has the job, and from then on the flow
must not post or delete anything (`lost`). The flow also renews right before each write to BC
that cannot be undone (post, delete), so ownership is proven at that moment, and nobody else can
claim it for one more lease length.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from shared.store.jobs import JobConflict

log = logging.getLogger("ml_connector.invoices")


class LeaseKeeper:
    """Calls `renew()` every `interval` seconds until stopped; `renew` raises JobConflict when the job
    has another owner, and returns False when there is nothing held to renew."""

    def __init__(self, renew: Callable[[], bool], interval: float) -> None:
        self._renew = renew
        self.interval = max(0.05, interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self.renewals = 0

    def __enter__(self) -> "LeaseKeeper":
        self._thread = threading.Thread(target=self._run, daemon=True, name="invoice-lease")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self._renew():  # nothing held any more (released): stop quietly
                    return
                self.renewals += 1
            except JobConflict:  # another owner has the job
                self.lost = True
                log.warning("event=lease.lost")
                return
            except Exception:  # noqa: BLE001 - storage hiccup: try again at the next beat
                log.exception("event=lease.renew_failed")
