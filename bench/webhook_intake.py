"""Benchmark: `POST /api/basware/webhook` intake latency and throughput. Prints figures; asserts nothing.

    python -m bench.webhook_intake                       # 1, 10, 50, 100 clients; 50..200 req/s fixed rates
    python -m bench.webhook_intake --concurrency 1 10 --seconds 5 --rates 200 --rate-seconds 10

The real function_app.py under devhost (`python -m devhost --no-timers --no-queues`, its own
process) with a fresh Azurite: each request carries a validly signed `AccountingDocuments` task
(HMAC-SHA256, hex) for a distinct document id, so each is verified, parsed and enqueued on
`invoice-transfers` (one Azurite round trip) and answered 200. Queue triggers are off so that the
figures are the intake's alone (in Azure the workers would not share the HTTP instance's CPU
either). Each load level gets a fresh Azurite and app, so that none inherits the queue the previous
levels filled (Azurite slows down with a queue's depth, Azure does not, and in Azure the workers
would be draining it); the level's accepted messages are counted on the queue afterwards.

Clients are threads in this process, each with its own keep-alive connection:
- closed loop: N clients send back to back for `--seconds`; latency = send to full answer;
- open loop: requests are started at a fixed rate by a pool of clients; latency is measured from the
  moment each request was *due*, so a stalled server shows up as latency (no coordinated omission);
- baseline: the storage SDK's `send_message` against the same Azurite with no app in between, to
  show what the emulator itself allows on this machine.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import threading
import time
import uuid

from bench.common import Stack, Timer, cpu_line, header, latency_summary

from sandbox import seed  # noqa: E402
from sandbox.basware import SIGNATURE_HEADER, sign  # noqa: E402

GOAL_P99_MS = 50.0


def signed_task(n: int, run: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"taskId": str(uuid.uuid4()), "taskStatus": "New", "taskType": "AccountingDocuments",
                       "taskSubType": "WaitingForTransfer", "documentId": f"bench-{run}-{n:07d}",
                       "expirationTime": "2026-12-31T00:00:00.000Z"}, separators=(",", ":")).encode()
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, seed.WEBHOOK_SECRET, "hex")}


class Client:
    """One keep-alive connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request("POST", "/api/basware/webhook", body=body, headers=headers)
                response = self.conn.getresponse()
                response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    return 0
        return 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Load:
    def __init__(self, base_url: str, run: str) -> None:
        hostport = base_url.split("//", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.run = run
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def next_request(self) -> tuple[bytes, dict[str, str]]:
        with self._lock:
            n = next(self._numbers)
        return signed_task(n, self.run)

    def closed_loop(self, clients: int, seconds: float) -> dict:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        stop = time.perf_counter() + seconds

        def worker() -> None:
            client = Client(self.host, self.port)
            mine, codes = [], {}
            while time.perf_counter() < stop:
                body, headers = self.next_request()
                started = time.perf_counter()
                status = client.post(body, headers)
                mine.append((time.perf_counter() - started) * 1000)
                codes[status] = codes.get(status, 0) + 1
            client.close()
            with lock:
                latencies.extend(mine)
                for k, v in codes.items():
                    statuses[k] = statuses.get(k, 0) + v

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
        with Timer() as t:
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        return {"clients": clients, "seconds": round(t.seconds, 2), "throughput_rps": round(len(latencies) / t.seconds, 1),
                "statuses": statuses, **latency_summary(latencies)}

    def open_loop(self, rate: float, seconds: float, clients: int = 64) -> dict:
        total = int(rate * seconds)
        due_latencies: list[float] = []
        service_latencies: list[float] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        index = itertools.count()
        start = time.perf_counter() + 0.2

        def worker() -> None:
            client = Client(self.host, self.port)
            mine_due, mine_service, codes = [], [], {}
            while True:
                i = next(index)
                if i >= total:
                    break
                due = start + i / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                body, headers = self.next_request()
                sent = time.perf_counter()
                status = client.post(body, headers)
                done = time.perf_counter()
                mine_due.append((done - due) * 1000)
                mine_service.append((done - sent) * 1000)
                codes[status] = codes.get(status, 0) + 1
            client.close()
            with lock:
                due_latencies.extend(mine_due)
                service_latencies.extend(mine_service)
                for k, v in codes.items():
                    statuses[k] = statuses.get(k, 0) + v

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - start
        return {"rate_target": rate, "requests": total, "seconds": round(elapsed, 2),
                "throughput_rps": round(total / elapsed, 1), "statuses": statuses,
                "from_due": latency_summary(due_latencies), "from_send": latency_summary(service_latencies)}


def queue_length(connection_string: str) -> int:
    from azure.storage.queue import QueueClient

    from shared.store.storage import INVOICE_TRANSFERS

    queue = QueueClient.from_connection_string(connection_string, INVOICE_TRANSFERS)
    return queue.get_queue_properties().approximate_message_count


def azurite_baseline(connection_string: str, seconds: float) -> list[dict]:
    """What the storage emulator gives without the app: the SDK's send_message, back to back."""
    from azure.storage.queue import QueueClient

    queue = QueueClient.from_connection_string(connection_string, "bench-baseline")
    queue.create_queue()
    rows = []
    for threads in (1, 10):
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.perf_counter() + seconds

        def worker() -> None:
            mine = []
            while time.perf_counter() < stop:
                started = time.perf_counter()
                queue.send_message("x" * 200)
                mine.append((time.perf_counter() - started) * 1000)
            with lock:
                latencies.extend(mine)

        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        with Timer() as t:
            for th in pool:
                th.start()
            for th in pool:
                th.join()
        rows.append({"threads": threads, "throughput_rps": round(len(latencies) / t.seconds, 1),
                     **latency_summary(latencies)})
    queue.delete_queue()
    return rows


def _fmt(row: dict) -> str:
    return (f"p50 {row['p50_ms']:.1f} ms, p90 {row['p90_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
            f"max {row['max_ms']:.1f} ms")


def _level(measure) -> dict:
    """One load level on a fresh stack (Azurite + the app), so that no level inherits the queue the
    previous ones filled: Azurite slows down with a queue's depth and Azure does not, and in Azure
    the workers would be draining it. Returns the level's row with its CPU and queue counts."""
    with Stack(app_args=("--no-timers", "--no-queues"), name="webhook_intake") as stack:
        load = Load(stack.app_url, uuid.uuid4().hex[:8])
        load.closed_loop(4, 1.0)  # warm-up: the app builds its runtime and queue client on first use
        time.sleep(0.3)
        before = queue_length(stack.azurite.connection_string)
        cpu = stack.cpu_meter()
        row = measure(load)
        row["cpu_ms_per_request"] = cpu.per_item_ms(row.get("count") or row.get("requests") or 1)
        time.sleep(0.5)
        row["queued"] = queue_length(stack.azurite.connection_string) - before
    return row


def _queue_line(row: dict) -> str:
    accepted, queued = row["statuses"].get(200, 0), row["queued"]
    if queued == accepted:
        return f"{queued} messages queued for {accepted} answers 200"
    unavailable = row["statuses"].get(503, 0)
    return (f"{queued} messages queued for {accepted} answers 200 and {unavailable} answers 503 (a 503 whose "
            "enqueue landed after its timeout leaves a message too; Basware redelivers, the job id dedupes)")


def run(concurrency=(1, 10, 50, 100), seconds: float = 6.0, rates=(50, 100, 150, 200), rate_seconds: float = 10.0,
        out=print) -> dict:
    info = header("webhook intake: POST /api/basware/webhook (valid signatures)", out)
    figures: dict = {"machine": info, "closed_loop": [], "open_loop": []}
    out("app: function_app.py under devhost (queue triggers and timers off), a fresh Azurite and app per level; "
        "clients: threads in this process, keep-alive connections")
    for clients in concurrency:
        row = _level(lambda load: load.closed_loop(clients, seconds))
        figures["closed_loop"].append(row)
        out(f"  {clients:>3} concurrent clients: {row['throughput_rps']:>6.1f} req/s over {row['seconds']:.1f}s "
            f"({row['count']} requests, statuses {row['statuses']}); {_fmt(row)}")
        out(f"      {cpu_line(row['cpu_ms_per_request'])}; {_queue_line(row)}")
    for rate in rates:
        row = _level(lambda load: load.open_loop(rate, rate_seconds))
        figures["open_loop"].append(row)
        due, send = row["from_due"], row["from_send"]
        verdict = "within" if due["p99_ms"] < GOAL_P99_MS else "over"
        out(f"  fixed rate {rate:>4.0f} req/s for {rate_seconds:.0f}s: achieved {row['throughput_rps']:.1f} req/s "
            f"({row['requests']} requests, statuses {row['statuses']}); p99 {verdict} {GOAL_P99_MS:.0f} ms")
        out(f"      latency from due time: {_fmt(due)}")
        out(f"      latency from send:     {_fmt(send)}")
        out(f"      {cpu_line(row['cpu_ms_per_request'])}; {_queue_line(row)}")
    with Stack(app_args=("--no-timers", "--no-queues"), name="webhook_intake") as stack:
        figures["baseline"] = baseline = azurite_baseline(stack.azurite.connection_string, rate_seconds / 2)
    for row in baseline:
        out(f"  baseline, Azurite alone: {row['threads']:>2} thread(s) in this process calling QueueClient.send_message "
            f"back to back: {row['throughput_rps']:.0f} msg/s, {_fmt(row)}")
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 10, 50, 100],
                        help="closed-loop client counts (default 1 10 50 100)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per closed-loop level")
    parser.add_argument("--rates", type=float, nargs="*", default=[50, 100, 150, 200],
                        help="open-loop fixed rates in requests per second (default 50 100 150 200)")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="seconds of each open-loop run")
    args = parser.parse_args(argv)
    return run(tuple(args.concurrency), args.seconds, tuple(args.rates), args.rate_seconds)


if __name__ == "__main__":
    main()
