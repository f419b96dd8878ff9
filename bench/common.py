"""What every benchmark shares: the machine it ran on, timers, percentiles, and the stack under test.

`Stack` starts a fresh Azurite, the Basware and BC sandboxes in this process (real HTTP on
127.0.0.1) and the real `function_app.py` under the project's local Functions host
(`python -m devhost`, its own process, so its CPU time and memory are its own and the load
generator does not share its interpreter). Webhooks are delivered the way Basware delivers them:
signed POSTs to `/api/basware/webhook` (the Basware sandbox's emitter).
"""
from __future__ import annotations

import os
import platform
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"  # app logs of each run (git-ignored)


# -- the machine -------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def _memory_total() -> int | None:
    try:
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def machine() -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu_model": _cpu_model(), "cpus": os.cpu_count(), "cpus_usable": usable,
            "memory_bytes": _memory_total(), "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": platform.platform(), "load_1min": round(load[0], 2) if load else None}


def machine_line(info: dict | None = None) -> str:
    m = info or machine()
    mem = f", {m['memory_bytes'] / 2**30:.0f} GiB RAM" if m.get("memory_bytes") else ""
    load = f"; load average {m['load_1min']:.2f} at start (other work on the machine skews figures)" \
        if m.get("load_1min") is not None else ""
    return (f"machine: {m['cpu_model']}, {m['cpus']} CPUs ({m['cpus_usable']} usable){mem}; "
            f"{m['python']}; {m['platform']}{load}")


# -- numbers -----------------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear interpolation between closest ranks; values need not be sorted."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(values_ms: Sequence[float]) -> dict:
    if not values_ms:
        return {"count": 0}
    return {"count": len(values_ms), "p50_ms": round(percentile(values_ms, 50), 2),
            "p90_ms": round(percentile(values_ms, 90), 2), "p99_ms": round(percentile(values_ms, 99), 2),
            "max_ms": round(max(values_ms), 2), "mean_ms": round(sum(values_ms) / len(values_ms), 2)}


class Timer:
    """`with Timer() as t: ...` then `t.seconds` (perf_counter)."""

    def __enter__(self) -> "Timer":
        self.started = time.perf_counter()
        self.ended: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        self.ended = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self.ended or time.perf_counter()) - self.started


def mb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1_048_576:.1f} MB"


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak resident set) of a process, in bytes (Linux /proc)."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for key in ("VmRSS", "VmHWM"):
        match = re.search(rf"^{key}:\s*(\d+) kB", text, re.MULTILINE)
        if match:
            out[key] = int(match.group(1)) * 1024
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used per process (name -> pid) between readings."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.start = self.read()

    def read(self) -> dict[str, float]:
        return {name: sum(proc_cpu_seconds(pid) or 0.0 for pid in pids) for name, pids in self.pids.items()}

    def used(self) -> dict[str, float]:
        """Seconds since the last call (or creation), per process; resets the mark."""
        now = self.read()
        used = {name: now[name] - self.start[name] for name in now}
        self.start = now
        return used

    def per_item_ms(self, items: int) -> dict[str, float]:
        return {name: round(s * 1000 / max(items, 1), 2) for name, s in self.used().items()}


def cpu_line(per_item_ms: dict[str, float], what: str = "request") -> str:
    return f"CPU per {what}: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in per_item_ms.items())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the stack under test -------------------------------------------------------------------------------
@dataclass
class Stack:
    """Azurite + both sandboxes (in this process) + function_app.py under devhost (own process).

        with Stack(bc_config={"processing_delay_ms": 150}) as stack:
            stack.basware.add_documents(docs); stack.deliver([d["invoiceId"] for d in docs])
    """

    bc_config: dict = field(default_factory=dict)
    basware_config: dict = field(default_factory=dict)
    env_overrides: dict = field(default_factory=dict)
    app_args: Sequence[str] = ("--no-timers",)
    start_app: bool = True
    name: str = "bench"
    instances: int = 1  # app processes on the same queues, as the platform scales a function app out

    def __post_init__(self) -> None:
        self.azurite = self.basware = self.bc = self.app = None
        self.apps: list = []
        self._servers: list = []

    def __enter__(self) -> "Stack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Stack":
        from sandbox.basware import BaswareSandbox
        from sandbox.bc import BcSandbox
        from sandbox.common import SandboxServer
        from scripts.azurite import start_azurite
        from scripts.local_env import connector_env

        self.azurite = start_azurite(in_memory=True)
        self.basware = BaswareSandbox(seed_documents=False, **self.basware_config)
        self.basware.calls.keep_bodies = False
        self.bc = BcSandbox(seed_purchase_orders=False, **self.bc_config)
        self.bc.calls.keep_bodies = False
        for sandbox in (self.basware, self.bc):
            server = SandboxServer(sandbox).start()
            sandbox.base_url = server.base_url
            self._servers.append(server)
        self.env = connector_env(self.azurite.connection_string, self.basware.base_url, self.bc.base_url,
                                 **self.env_overrides)
        if self.start_app:
            self.start_host()
        return self

    def start_host(self) -> None:
        from devhost import HostProcess

        OUT.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        for n in range(self.instances):
            log = OUT / f"{self.name}-app{n if n else ''}.log"
            log.unlink(missing_ok=True)
            self.apps.append(HostProcess(ROOT, env, args=list(self.app_args), log_path=log).start(timeout=60))
        self.app = self.apps[0]

    @property
    def app_url(self) -> str:
        return self.app.base_url

    @property
    def webhook_url(self) -> str:
        return f"{self.app.base_url}/api/basware/webhook"

    @property
    def app_pid(self) -> int:
        return self.app.process.pid

    def cpu_meter(self) -> CpuMeter:
        """CPU of the app (devhost), Azurite, and this process (sandboxes + load generator)."""
        pids = {"app": [a.process.pid for a in self.apps], "azurite": [self.azurite.process.pid],
                "sandboxes+bench": [os.getpid()]}
        return CpuMeter(pids)

    def app_peak_rss(self) -> list[int | None]:
        return [proc_memory(a.process.pid).get("VmHWM") for a in self.apps]

    def deliver(self, invoice_ids: Iterable[str], *, workers: int = 4, copies: int = 1) -> list[int | None]:
        """Basware's signed webhook for each invoice (its emitter, over real HTTP); the HTTP statuses."""
        ids = list(invoice_ids)

        def one(invoice_id: str) -> int | None:
            deliveries = self.basware.notify(invoice_id, copies=copies, url=self.webhook_url)
            return deliveries[-1]["status"] if deliveries else None

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, ids))

    def deliver_in_background(self, invoice_ids: Iterable[str], *, workers: int = 4, backlog: int = 0,
                              done: list[int] | None = None, chunk: int = 50) -> threading.Thread:
        """`deliver` on a thread. With `backlog` (and `done`, a one-item list the caller keeps at the
        number transferred), never more than `backlog` invoices ahead of the transfers."""
        ids = list(invoice_ids)

        def run() -> None:
            if not backlog or done is None:
                self.deliver(ids, workers=workers)
                return
            sent = 0
            for start in range(0, len(ids), chunk):
                while sent - done[0] > backlog:
                    time.sleep(0.1)
                part = ids[start:start + chunk]
                self.deliver(part, workers=workers)
                sent += len(part)

        thread = threading.Thread(target=run, daemon=True, name="bench-webhooks")
        thread.start()
        return thread

    def statuses(self, invoice_ids: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for invoice_id in invoice_ids:
            status = self.basware.document_status(invoice_id) or "missing"
            counts[status] = counts.get(status, 0) + 1
        return counts

    def wait_transferred(self, invoice_ids: Sequence[str], timeout: float,
                         on_tick: Callable[[int], None] | None = None, poll: float = 0.25) -> tuple[bool, float]:
        """Wait until every invoice is Transferred in Basware; (all done?, seconds waited)."""
        started = time.perf_counter()
        deadline = started + timeout
        pending = list(invoice_ids)
        while time.perf_counter() < deadline:
            pending = [i for i in pending if self.basware.document_status(i) != "Transferred"]
            if on_tick:
                on_tick(len(invoice_ids) - len(pending))
            if not pending:
                return True, time.perf_counter() - started
            time.sleep(poll)
        return False, time.perf_counter() - started

    def stop(self) -> None:
        for app in self.apps:
            app.stop(timeout=20)
        for server in self._servers:
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        for sandbox in (self.basware, self.bc):
            if sandbox is not None:
                try:
                    sandbox.close()
                except Exception:  # noqa: BLE001
                    pass
        if self.azurite is not None:
            self.azurite.stop()


def api_calls(sandbox, since: int = 0) -> list:
    """The sandbox's call log without its own control surface."""
    return [c for c in sandbox.calls.since(since) if not c.path.startswith("/_sandbox/")]


def last_seq(sandbox) -> int:
    calls = sandbox.calls.since(0)
    return calls[-1].seq if calls else 0


def header(title: str, out=print) -> dict:
    info = machine()
    out(f"== {title}")
    out(machine_line(info))
    return info
