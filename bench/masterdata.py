"""Benchmark: BC -> Basware master-data import. Prints figures; asserts nothing.

    python -m bench.masterdata                       # 10,000 vendors, 5,000 accounts, 20,000 dimension values
    python -m bench.masterdata --vendors 2000 --accounts 1000 --dimension-values 3000
    python -m bench.masterdata --small               # a few seconds, for the test suite

Starts its own Azurite and both sandboxes in this process (real HTTP on 127.0.0.1), seeds BC in
bulk, then measures:
1. the initial import: records per second, requests per endpoint, requestStatus reads;
2. a run with no change in BC: its requests (goal: 0);
3. the same import with the hash rows in a dict, to show how much of the time is Azurite's;
4. peak memory of another initial import (fresh Azurite and Basware) under tracemalloc, and the
   process's ru_maxrss. The sandboxes live in this process too, so the traced peak includes their
   stores; "retained" is what is still allocated after the run (mostly the Basware sandbox's
   copies of every record), and "transient" = peak - retained approximates the connector's own
   working set (one BC page, one batch, the externalCode -> hash map of one entity).
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine, machine_line, mb, proc_cpu_seconds  # noqa: E402
from sandbox import seed  # noqa: E402
from sandbox.basware import BaswareSandbox  # noqa: E402
from sandbox.bc import BcSandbox  # noqa: E402
from sandbox.common import SandboxServer  # noqa: E402
from scripts.azurite import start_azurite  # noqa: E402
from scripts.local_env import connector_env  # noqa: E402
from shared.flows.masterdata import sync as masterdata  # noqa: E402
from shared.flows.masterdata.sync import SyncOptions  # noqa: E402
from shared.store.syncstate import HashStore  # noqa: E402
from shared.core.runtime import build_runtime  # noqa: E402
from shared.core.settings import load_settings  # noqa: E402

MASTERDATA_PATHS = ("/v1/vendors", "/v1/accounts", "/v1/costCenters", "/v2/projects", "/v1/lists/")
_STATE: "_StateWriteClock"
SMALL = {"vendors": 250, "accounts": 100, "dimension_values": 150}
FULL = {"vendors": 10_000, "accounts": 5_000, "dimension_values": 20_000}


def _mb(n: float) -> str:
    return mb(n)


def _maxrss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class _Env:
    """Azurite + the Basware sandbox (+ a runtime) around a shared BC sandbox."""

    def __init__(self, bc: BcSandbox) -> None:
        self.bc = bc
        self.azurite = start_azurite(in_memory=True)
        self.basware = BaswareSandbox(seed_documents=False)
        self.basware.calls.keep_bodies = False
        self._server = SandboxServer(self.basware).start()
        self.basware.base_url = self._server.base_url
        env = connector_env(self.azurite.connection_string, self.basware.base_url, bc.base_url)
        self.rt = build_runtime(load_settings(env))
        self.cpu = (0.0, 0.0)

    @staticmethod
    def last_seq(sandbox) -> int:
        calls = sandbox.calls.since(0)
        return calls[-1].seq if calls else 0

    def close(self) -> None:
        self.rt.close()
        self._server.stop()
        self.azurite.stop()


class _StateWriteClock:
    """Time spent committing hash rows to Table Storage (Azurite here), measured around the store."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.transactions = 0
        self._original = HashStore._submit
        clock = self

        def timed(store, ops):
            started = time.perf_counter()
            try:
                return clock._original(store, ops)
            finally:
                clock.seconds += time.perf_counter() - started
                clock.transactions += -(-len(ops) // 100)

        HashStore._submit = timed

    def reset(self) -> None:
        self.seconds, self.transactions = 0.0, 0

    def close(self) -> None:
        HashStore._submit = self._original


class _MemoryHashStore(HashStore):
    """Hash rows in a dict instead of Table Storage: only to show how much of the initial import's
    time is Azurite's (the product always uses `syncstate`)."""

    rows: dict = {}

    def load(self):
        from shared.store.syncstate import Stored
        return {k: Stored(v["hash"], v["active"], v.get("refused", "")) for k, v in
                self.rows.get(self.partition, {}).items()}

    def body(self, external_code):
        return self.rows.get(self.partition, {}).get(external_code, {}).get("body")

    def save(self, items):
        part = self.rows.setdefault(self.partition, {})
        for p in items:
            part[p.external_code] = {"hash": p.hash, "active": p.active, "body": p.record}
        return len(part)

    def mark_refused(self, items):
        for p in items:
            self.rows.setdefault(self.partition, {}).setdefault(p.external_code, {"hash": "", "active": True})[
                "refused"] = p.hash


def _cpu(env: _Env) -> tuple[float, float]:
    """CPU seconds so far: (Azurite, this process = connector + both sandboxes)."""
    return proc_cpu_seconds(env.azurite.process.pid) or 0.0, time.process_time()


def _timed_sync(env: _Env, options: SyncOptions, **kwargs):
    _STATE.reset()
    seq, bc_seq = env.last_seq(env.basware), env.last_seq(env.bc)
    cpu = _cpu(env)
    started = time.perf_counter()
    summary = masterdata.sync_all(env.rt, options=options, **kwargs)
    elapsed = time.perf_counter() - started
    env.cpu = tuple(b - a for a, b in zip(cpu, _cpu(env)))
    calls = env.basware.calls.since(seq)
    posts = [c for c in calls if c.method == "POST" and c.path.startswith(MASTERDATA_PATHS)]
    status_reads = sum(1 for c in calls if c.method == "GET" and c.path.startswith("/v1/requestStatus"))
    bc_pages = sum(1 for c in env.bc.calls.since(bc_seq) if c.method == "GET" and "/companies(" in c.path)
    return summary, elapsed, posts, status_reads, bc_pages


def run(vendors: int, accounts: int, dimension_values: int, *, page_size: int = 1000, memory: bool = True,
        out=print) -> dict:
    """Run the benchmark; returns the figures it printed."""
    global _STATE
    _STATE = _StateWriteClock()
    try:
        return _run(vendors, accounts, dimension_values, page_size=page_size, memory=memory, out=out)
    finally:
        _STATE.close()


def _run(vendors: int, accounts: int, dimension_values: int, *, page_size: int, memory: bool, out) -> dict:
    info = machine()
    out(machine_line(info))
    bc = BcSandbox(vendor_count=min(vendors, 50), seed_purchase_orders=False)
    bc.calls.keep_bodies = False
    bc_server = SandboxServer(bc).start()
    bc.base_url = bc_server.base_url
    started = time.perf_counter()
    bc.seed_bulk(vendors=max(0, vendors - 50), accounts=max(0, accounts - len(seed.accounts())),
                 dimension_values=max(0, dimension_values - sum(len(v) for v in seed.DIMENSIONS.values())))
    company = bc.company
    n_vendors, n_accounts, n_values = (len(company.vendors), len(company.accounts), len(company.dimension_values))
    n_posting = sum(1 for a in company.accounts.values() if a["accountType"] == "Posting")
    out(f"BC seeded in {time.perf_counter() - started:.1f}s: {n_vendors} vendors, {n_accounts} accounts "
        f"({n_posting} Posting), {n_values} dimension values over {len(company.dimensions)} mapped dimensions")
    options = SyncOptions(page_size=page_size, status_first_poll=0.01)
    figures: dict = {"vendors": n_vendors, "accounts": n_posting, "dimension_values": n_values, "machine": info}
    env = _Env(bc)
    try:
        # 1. initial import
        summary, elapsed, posts, status_reads, bc_pages = _timed_sync(env, options)
        records = summary.totals.sent
        per_path = Counter("/v1/lists/*" if c.path.startswith("/v1/lists/") else c.path for c in posts)
        figures.update(initial_seconds=round(elapsed, 2), initial_records=records,
                       initial_records_per_second=round(records / elapsed) if elapsed else None,
                       initial_requests=len(posts), initial_status_reads=status_reads, bc_pages=bc_pages,
                       initial_status=summary.status)
        out(f"initial import: {records} records in {elapsed:.1f}s = {records / elapsed:,.0f} records/s; "
            f"status {summary.status}, failed {summary.totals.failed}")
        figures.update(initial_state_write_seconds=round(_STATE.seconds, 1),
                       initial_state_transactions=_STATE.transactions)
        figures.update(initial_cpu_azurite_seconds=round(env.cpu[0], 1), initial_cpu_python_seconds=round(env.cpu[1], 1))
        out(f"  CPU: Azurite {env.cpu[0]:.1f}s, this process (connector + both sandboxes) {env.cpu[1]:.1f}s")
        out(f"  syncstate: {_STATE.transactions} table transactions of <= 100 hash rows took {_STATE.seconds:.1f}s "
            f"(on a background writer, overlapping the requests)")
        out(f"  master-data POSTs: {len(posts)} ({', '.join(f'{p} {n}' for p, n in sorted(per_path.items()))}); "
            f"requestStatus GETs: {status_reads}; BC pages read: {bc_pages} (maxpagesize {page_size})")
        # 2. nothing changed in BC
        summary, elapsed, posts, status_reads, bc_pages = _timed_sync(env, options)
        figures.update(nochange_seconds=round(elapsed, 2), nochange_requests=len(posts),
                       nochange_skipped=summary.totals.skipped)
        out(f"no-change run: {len(posts)} master-data requests (goal 0), {summary.totals.skipped} records "
            f"skipped, {elapsed:.1f}s ({summary.totals.read / elapsed:,.0f} BC records/s compared)")
        # one changed vendor
        some_vendor = next(iter(company.vendor_by_number))
        bc.set_vendor(some_vendor, displayName="Renamed for the benchmark")
        summary, elapsed, posts, _, _ = _timed_sync(env, options)
        figures.update(one_change_requests=len(posts), one_change_sent=summary.totals.sent)
        out(f"one vendor renamed: {len(posts)} request(s), {summary.totals.sent} record(s) sent, {elapsed:.1f}s")
    finally:
        env.close()
    # 3. the same initial import with the hash rows in a dict: the connector and sandboxes alone
    env = _Env(bc)
    masterdata.HashStore = _MemoryHashStore
    try:
        summary, elapsed, posts, _, _ = _timed_sync(env, options)
        figures.update(initial_without_azurite_state_records_per_second=round(summary.totals.sent / elapsed))
        out(f"same initial import with syncstate in a dict (isolates Azurite's share): {summary.totals.sent} records "
            f"in {elapsed:.1f}s = {summary.totals.sent / elapsed:,.0f} records/s, {len(posts)} requests")
    finally:
        masterdata.HashStore = HashStore
        _MemoryHashStore.rows = {}
        env.close()
    if memory:
        # 4. memory of an initial import, on fresh storage and a fresh Basware
        env = _Env(bc)
        try:
            gc.collect()
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
            summary, elapsed, posts, _, _ = _timed_sync(env, options)
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            figures.update(memory_peak_bytes=peak - baseline, memory_retained_bytes=current - baseline,
                           memory_transient_bytes=peak - current, maxrss_bytes=_maxrss(),
                           traced_seconds=round(elapsed, 2))
            out(f"memory (initial import under tracemalloc, {elapsed:.1f}s): peak {_mb(peak - baseline)} above "
                f"baseline, retained after the run {_mb(current - baseline)} (sandbox stores), "
                f"transient {_mb(peak - current)} (connector working set, approx.)")
            out(f"  process ru_maxrss {_mb(_maxrss())} (sandboxes, Azurite clients and BC data included)")
        finally:
            env.close()
    bc_server.stop()
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendors", type=int, default=FULL["vendors"])
    parser.add_argument("--accounts", type=int, default=FULL["accounts"])
    parser.add_argument("--dimension-values", type=int, default=FULL["dimension_values"])
    parser.add_argument("--page-size", type=int, default=1000, help="BC page size (Prefer: odata.maxpagesize)")
    parser.add_argument("--small", action="store_true", help=f"quick run: {SMALL}")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run")
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else {"vendors": args.vendors, "accounts": args.accounts,
                                      "dimension_values": args.dimension_values}
    return run(**sizes, page_size=args.page_size, memory=not args.no_memory)


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop Azurite and the servers on the way out
    main()
