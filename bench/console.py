"""The operator console's queries over a large jobs table: how long a page, a search and the
overview take, and how much the process holds while doing them.

    python -m bench.console [--jobs 10000] [--repeat 5]

Fills a fresh Azurite (in memory) with `--jobs` invoice jobs (70 % done, 20 % failed, 5 %
dead-lettered, 5 % in progress, spread over 40 days, with invoice numbers, vendors and BC
numbers like the transfer flow writes), then times, each `--repeat` times:
- the first page of the list (50) unfiltered, and filtered by state;
- walking every page of the failed records (continuation tokens);
- a search by invoice number (one match), and by the start of an invoice number (about 1 %);
- the overview's counts (24 h / 7 d / 30 d per flow and state).
Prints the figures (median and worst, ms) and the rows held per call; nothing is asserted.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header  # noqa: E402
from scripts.azurite import start_azurite  # noqa: E402
from shared.ops.console import count_jobs, search_records  # noqa: E402
from shared.store.jobs import job_id  # noqa: E402
from shared.store.storage import JOBS, Storage  # noqa: E402

STATES = ["done"] * 70 + ["failed"] * 20 + ["dead_lettered"] * 5 + ["draft_created"] * 5


def fill(storage: Storage, count: int, now: datetime) -> None:
    rng = random.Random(18)
    table = storage.table(JOBS)
    batch = []
    for n in range(count):
        invoice_id = f"{rng.getrandbits(128):032x}"
        when = now - timedelta(seconds=rng.uniform(0, 40 * 86400))
        batch.append(("upsert", {
            "PartitionKey": "invoice", "RowKey": job_id("invoice", invoice_id), "state": rng.choice(STATES),
            "attempts": 1, "created": when, "updated": when, "invoice_id": invoice_id,
            "invoice_number": f"INV-{n:06d}", "supplier_code": f"S{n % 300:04d}", "vendor_number": f"V{n % 300:05d}",
            "bc_number": f"PPI-{100000 + n}", "message": "x" * 300, "last_error": ""}))
        if len(batch) == 100:  # one entity-group transaction per partition and 100 rows
            table.submit_transaction(batch)
            batch = []
    if batch:
        table.submit_transaction(batch)


def timed(fn, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def walk(storage: Storage, **filters) -> tuple[int, int]:
    rows, pages, token = 0, 0, None
    while True:
        page = search_records(storage, limit=50, token=token, **filters)
        rows, pages, token = rows + page["count"], pages + 1, page["next"]
        if not token:
            return rows, pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    header(f"bench.console: {args.jobs} invoice jobs")
    azurite = start_azurite(in_memory=True)
    try:
        storage = Storage(azurite.connection_string)
        now = datetime.now(timezone.utc)
        started = time.perf_counter()
        fill(storage, args.jobs, now)
        print(f"filled {args.jobs} jobs in {time.perf_counter() - started:.1f} s")
        cases = {
            "first page, unfiltered (50)": lambda: search_records(storage, limit=50),
            "first page, state=failed (50)": lambda: search_records(storage, state="failed", limit=50),
            "first page, failed in 24 h (50)": lambda: search_records(storage, state="failed", window="24h", limit=50),
            "search: one invoice number": lambda: search_records(storage, search=f"INV-{args.jobs // 2:06d}"),
            "search: invoice-number prefix (~1 %)": lambda: search_records(storage, search=f"INV-{args.jobs // 200:04d}"),
            "all failed pages (walk)": lambda: walk(storage, state="failed"),
            "overview counts (24 h/7 d/30 d)": lambda: count_jobs(storage, now),
        }
        print(f"{'query':<40} {'median ms':>10} {'worst ms':>10} {'peak MiB':>9}  result")
        for name, fn in cases.items():
            fn()  # warm the connection
            tracemalloc.start()
            times, result = timed(fn, args.repeat)
            peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
            tracemalloc.stop()
            if isinstance(result, dict) and "records" in result:
                what = f"{result['count']} row(s){', more pages' if result['next'] else ''}"
            elif isinstance(result, tuple):
                what = f"{result[0]} row(s) in {result[1]} page(s)"
            else:
                what = "invoice 30d: " + ", ".join(f"{k}={v}" for k, v in result["30d"]["invoice"].items())
            print(f"{name:<40} {statistics.median(times):>10.0f} {max(times):>10.0f} {peak:>9.1f}  {what}")
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
