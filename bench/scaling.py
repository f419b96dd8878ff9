"""Benchmark: how time and memory grow with the number of invoices. Prints figures; asserts nothing.

    python -m bench.scaling                         # 100, 1,000, 10,000 invoices (10,000 bounded, see below)
    python -m bench.scaling --max 1000              # 100 and 1,000
    python -m bench.scaling --sizes 100 2000 --budget-seconds 600

For each size, a fresh stack: Azurite, the sandboxes in this process, and function_app.py under
devhost (one worker process, BC unthrottled). N approved invoices are put in Basware and announced
by signed webhooks (delivered in the background while the worker runs), and the run ends when all
are Transferred. Reported per size: time per invoice, and per tenth of the run (does an invoice get
slower as the tables fill?), the worker process's RSS at each tenth and its peak (VmHWM), and CPU
per invoice of the worker, Azurite, and this process (sandboxes + webhook sender).

Webhooks are paced so that at most `--backlog` (default 200) announced invoices wait on the queue,
as a steady stream of approvals would: Azurite's queue receive grows with the queue's depth (a probe
on this machine: receive p50 16 ms at 100 messages, 30 ms at 1,000, 340 ms at 10,000; table inserts
stay at ~3 ms up to 60,000 rows), which Azure Queue storage does not, so an unpaced 10,000-message
backlog measures the emulator, not the connector. `--backlog 0` delivers everything at once.

Bounded: a size that is not done within `--budget-seconds` (default 1800 s) is stopped and reported
as such, with the figures of the part that finished. At ~10 invoices/s on a 2-core machine,
10,000 invoices take about 25 minutes.
"""
from __future__ import annotations

import argparse
import time

from bench.common import Stack, cpu_line, header, mb, proc_memory

from sandbox import seed  # noqa: E402

SIZES = (100, 1_000, 10_000)


def measure(size: int, budget: float, out=print, backlog: int = 200) -> dict:
    docs = seed.approved_invoices(size)
    ids = [d["invoiceId"] for d in docs]
    # documents are valid (tests check the seed against Basware's schema); skip re-validating 10,000
    with Stack(name=f"scaling-{size}", basware_config={"validate_documents": False}) as stack:
        stack.basware.add_documents(docs)
        pid = stack.app_pid
        rss_start = proc_memory(pid).get("VmRSS")
        cpu = stack.cpu_meter()
        marks = [max(1, round(size * k / 10)) for k in range(1, 11)]
        reached: list[tuple[int, float, int | None]] = []  # (done, seconds, rss)
        started = time.perf_counter()
        progress = [0]  # transferred so far, read by the paced sender
        sender = stack.deliver_in_background(ids, backlog=backlog, done=progress)
        pending = list(ids)
        done = 0
        while pending and time.perf_counter() - started < budget:
            time.sleep(0.5)
            pending = [i for i in pending if stack.basware.document_status(i) != "Transferred"]
            done = progress[0] = size - len(pending)
            while marks and done >= marks[0]:
                reached.append((marks.pop(0), time.perf_counter() - started, proc_memory(pid).get("VmRSS")))
        elapsed = time.perf_counter() - started
        cpu_ms = cpu.per_item_ms(max(done, 1))
        peak = proc_memory(pid).get("VmHWM")
        stop_delivery = not sender.is_alive()
    finished = not pending
    row = {"size": size, "done": done, "finished": finished, "seconds": round(elapsed, 1),
           "ms_per_invoice": round(elapsed * 1000 / max(done, 1), 1), "peak_rss_bytes": peak,
           "rss_at_start_bytes": rss_start, "cpu_ms_per_invoice": cpu_ms,
           "tenths": [{"done": d, "seconds": round(s, 1), "rss_bytes": r} for d, s, r in reached]}
    status = "" if finished else f" (STOPPED at the {budget:.0f}s budget: {done} of {size} done)"
    out(f"  {size:>6} invoices: {elapsed:7.1f}s, {row['ms_per_invoice']:.0f} ms per invoice "
        f"({done / elapsed * 60:.0f}/min){status}; worker peak RSS {mb(peak)} (at start {mb(rss_start)})")
    out(f"         {cpu_line(cpu_ms, 'invoice')}")
    if reached:
        previous_done, previous_t = 0, 0.0
        parts = []
        for d, s, r in reached:
            per = (s - previous_t) * 1000 / max(d - previous_done, 1)
            parts.append(f"{per:.0f}")
            previous_done, previous_t = d, s
        out(f"         ms per invoice in each tenth: {' '.join(parts)}")
        out(f"         worker RSS at each tenth: {' '.join(f'{(r or 0) / 1_048_576:.0f}' for _, _, r in reached)} MB")
    if not stop_delivery:
        out("         (webhooks were still being delivered when the run ended)")
    return row


def run(sizes=SIZES, budget: float = 1800.0, out=print, backlog: int = 200) -> dict:
    info = header("scaling: time and memory from 100 to 10,000 invoices", out)
    out(f"one worker process (function_app.py under devhost, host.json batchSize 4 / newBatchThreshold 2), "
        f"BC unthrottled, fresh Azurite per size; webhooks at most {backlog or 'unlimited'} ahead of the "
        f"transfers; budget {budget:.0f}s per size")
    rows = [measure(size, budget, out, backlog) for size in sizes]
    complete = [r for r in rows if r["done"]]
    if len(complete) > 1:
        first, last = complete[0], complete[-1]
        out(f"  per-invoice time {first['ms_per_invoice']:.0f} ms at {first['done']} -> {last['ms_per_invoice']:.0f} ms "
            f"at {last['done']} (x{last['ms_per_invoice'] / first['ms_per_invoice']:.2f}; 1.00 = linear); "
            f"peak RSS {mb(first['peak_rss_bytes'])} -> {mb(last['peak_rss_bytes'])}")
    return {"machine": info, "budget_seconds": budget, "backlog": backlog, "sizes": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=10_000, help="largest size from 100, 1000, 10000 (default 10000)")
    parser.add_argument("--sizes", type=int, nargs="*", help="explicit sizes (overrides --max)")
    parser.add_argument("--budget-seconds", type=float, default=1800.0, help="stop a size after this long")
    parser.add_argument("--backlog", type=int, default=200,
                        help="announced invoices allowed to wait on the queue (0 = deliver all at once)")
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes) if args.sizes else tuple(s for s in SIZES if s <= args.max)
    return run(sizes, args.budget_seconds, backlog=args.backlog)


if __name__ == "__main__":
    main()
