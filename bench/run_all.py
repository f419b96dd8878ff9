"""Run every benchmark, one after the other, bounded to about 10 minutes on a 2-core machine.

    python -m bench.run_all                 # what `make bench` runs
    python -m bench.run_all --only invoices webhook_intake
    python -m bench.run_all --full          # each benchmark at its own defaults (much longer: 30+ minutes)

Sizes in the bounded run (each benchmark's own defaults are larger; see `python -m bench.<name> -h`):
- webhook_intake: 1, 10, 50, 100 clients for 6 s each; 50, 100, 150, 200 req/s for 10 s each;
- invoices: 100 invoices for requests per invoice; 400 invoices under BC's limits with a 20 s
  window (the rate of 6,000 per 300 s), on one and then two app instances;
- invoice_images: 50 invoices without and 50 with their image, one 20 MB image, 200 + 200 under
  BC's limits (20 s window);
- scaling: 100 and 1,000 invoices (`--scaling-max 10000` adds the 10,000 run, about 25 min, bounded to 30);
- masterdata: 1,000 vendors, 500 accounts, 2,000 dimension values (the issue's sizes, 10,000 /
  5,000 / 20,000, take about 10 minutes alone: `python -m bench.masterdata`);
- console: 5,000 jobs, each query 3 times (`python -m bench.console` fills 10,000).
Each prints its figures and the machine it ran on; nothing is asserted.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench.common import machine_line

ORDER = ("webhook_intake", "invoices", "invoice_images", "scaling", "masterdata", "console")


def bounded_args(args: argparse.Namespace) -> dict[str, list[str]]:
    return {
        "webhook_intake": ["--seconds", "6", "--rate-seconds", "10"],
        "invoices": ["--steady", "100", "--throttled", "400", "--window-seconds", "20", "--instances", "1", "2"],
        "invoice_images": ["--count", "50", "--big-mb", "20", "--throttled", "200", "--window-seconds", "20"],
        "scaling": ["--max", str(args.scaling_max)],
        "masterdata": ["--vendors", "1000", "--accounts", "500", "--dimension-values", "2000"],
        "console": ["--jobs", "5000", "--repeat", "3"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=ORDER, help="run only these")
    parser.add_argument("--full", action="store_true", help="each benchmark at its own (larger) defaults")
    parser.add_argument("--scaling-max", type=int, default=1000, help="largest scaling size (default 1000)")
    args = parser.parse_args(argv)
    plan = bounded_args(args)
    names = [n for n in ORDER if not args.only or n in args.only]
    print(f"bench.run_all: {', '.join(names)} ({'full' if args.full else 'bounded'} sizes)")
    print(machine_line())
    timings: dict[str, float] = {}
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        bench_argv = [] if args.full else plan[name]
        print(f"\n$ python -m bench.{name} {' '.join(bench_argv)}", flush=True)
        t = time.perf_counter()
        try:
            importlib.import_module(f"bench.{name}").main(bench_argv)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"bench.{name} failed: {type(exc).__name__}: {exc}", flush=True)
        timings[name] = time.perf_counter() - t
        sys.stdout.flush()
    total = time.perf_counter() - started
    print("\nbench.run_all: " + ", ".join(f"{n} {s:.0f}s" for n, s in timings.items()) + f"; total {total:.0f}s")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
