"""Plumbing shared by the Basware and BC sandboxes.

A sandbox is a `SandboxApp` (routes + state) served by a `SandboxServer` (a threaded stdlib HTTP
server, real sockets). Every sandbox has the same operator surface under `/_sandbox/`:

- `GET  /_sandbox/calls?since=N`   the call log (method, path, query, status, principal, body)
- `POST /_sandbox/calls/clear`
- `POST /_sandbox/faults`          `{"path": regex, "method": "POST"|null, "count": n,
                                    "kind": "status"|"timeout"|"drop", "status": 503,
                                    "delay": seconds, "retry_after": seconds|null}`
- `DELETE /_sandbox/faults`
- `POST /_sandbox/config`          `{"latency_ms": n, "throttle": {"max_requests": n,
                                    "window_seconds": s, "max_concurrent": n, "max_queue": n,
                                    "retry_after": s|null}}`
- `GET  /_sandbox/health`

Tests that run a sandbox in-process can use the same objects directly (`app.faults.add(...)`).
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


class CaseInsensitiveDict(dict):
    def __init__(self, items=()):
        super().__init__()
        for k, v in items:
            self[k] = v

    def __setitem__(self, key, value):
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)

    def __contains__(self, key):
        return super().__contains__(key.lower())


def _json_default(value):
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: CaseInsensitiveDict
    body: bytes
    base_url: str
    params: dict[str, str] = field(default_factory=dict)  # route params
    principal: str | None = None

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"), parse_float=Decimal) if self.body else None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        h = {"Content-Type": "application/json; charset=utf-8"}
        h.update(headers or {})
        return cls(status, dumps(value), h)

    @classmethod
    def text(cls, value: str, status: int = 200, headers: dict[str, str] | None = None) -> "Response":
        h = {"Content-Type": "text/plain; charset=utf-8"}
        h.update(headers or {})
        return cls(status, value.encode(), h)

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> "Response":
        return cls(status, b"", dict(headers or {}))


class DropConnection(Exception):
    """Raised to close the socket without an HTTP response."""


@dataclass
class Fault:
    path: str
    count: int
    kind: str = "status"  # status | timeout | drop
    status: int = 503
    method: str | None = None
    delay: float = 30.0
    retry_after: float | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None


class FaultInjector:
    """The next N calls matching a path regex fail the chosen way."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.random_rules: list[dict] = []  # {"path", "method", "kind", "status", "rate"}
        self._rng = None

    def add(self, path: str, count: int = 1, kind: str = "status", status: int = 503,
            method: str | None = None, delay: float = 30.0, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.append(Fault(path, count, kind, status, method, delay, retry_after))

    def add_random(self, path: str, rate: float, kind: str = "status", status: int = 503,
                   method: str | None = None, seed: int | None = None, retry_after: float | None = None,
                   delay: float = 30.0) -> None:
        """Fail a fraction `rate` of matching calls at random (chaos testing)."""
        import random

        with self._lock:
            if self._rng is None or seed is not None:
                self._rng = random.Random(seed)
            self.random_rules.append(dict(path=path, rate=rate, kind=kind, status=status, method=method,
                                          retry_after=retry_after, delay=delay))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.random_rules.clear()

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and fault.matches(method, path):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
            for rule in self.random_rules:
                f = Fault(rule["path"], 1, rule["kind"], rule["status"], rule["method"], rule["delay"],
                          rule["retry_after"])
                if f.matches(method, path) and self._rng.random() < rule["rate"]:
                    return f
        return None


class Throttle:
    """Per-principal sliding window plus a concurrency cap with a bounded wait queue.

    Mirrors BC's documented per-user limits (6,000 requests / 5 minutes, 5 concurrent, queue of 95),
    scaled by configuration. Disabled when `max_requests` and `max_concurrent` are None.
    """

    def __init__(self) -> None:
        self.max_requests: int | None = None
        self.window_seconds: float = 300.0
        self.max_concurrent: int | None = None
        self.max_queue: int = 95
        self.queue_wait: float = 30.0
        self.retry_after: float | None = 1.0
        self._lock = threading.Condition()
        self._windows: dict[str, deque] = {}
        self._inflight: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self.rejections = 0
        self.peak_connections = 0  # most requests of one principal at once, processing + queued

    def configure(self, **cfg) -> None:
        with self._lock:
            for key in ("max_requests", "window_seconds", "max_concurrent", "max_queue", "queue_wait",
                        "retry_after"):
                if key in cfg:
                    setattr(self, key, cfg[key])

    def enter(self, principal: str) -> tuple[bool, float | None]:
        """Returns (admitted, retry_after). Call `leave` after an admitted request."""
        now = time.monotonic()
        with self._lock:
            if self.max_requests is not None:
                window = self._windows.setdefault(principal, deque())
                while window and now - window[0] > self.window_seconds:
                    window.popleft()
                if len(window) >= self.max_requests:
                    self.rejections += 1
                    return False, self.retry_after
                window.append(now)
            if self.max_concurrent is not None:
                self.peak_connections = max(self.peak_connections, self._inflight.get(principal, 0)
                                            + self._waiting.get(principal, 0) + 1)
                if self._inflight.get(principal, 0) >= self.max_concurrent:
                    if self._waiting.get(principal, 0) >= self.max_queue:
                        self.rejections += 1
                        return False, self.retry_after
                    self._waiting[principal] = self._waiting.get(principal, 0) + 1
                    deadline = now + self.queue_wait
                    try:
                        while self._inflight.get(principal, 0) >= self.max_concurrent:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                self.rejections += 1
                                return False, self.retry_after
                            self._lock.wait(left)
                    finally:
                        self._waiting[principal] -= 1
                self._inflight[principal] = self._inflight.get(principal, 0) + 1
            return True, None

    def leave(self, principal: str) -> None:
        if self.max_concurrent is None:
            return
        with self._lock:
            self._inflight[principal] = max(0, self._inflight.get(principal, 0) - 1)
            self._lock.notify_all()


@dataclass
class Call:
    seq: int
    time: float
    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    principal: str | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "seq": self.seq, "time": self.time, "method": self.method, "path": self.path,
            "query": self.query, "status": self.status, "principal": self.principal,
            "body": self.body, "headers": self.headers,
        }


class CallLog:
    def __init__(self, keep_bodies: bool = True, limit: int = 200_000) -> None:
        self._calls: deque[Call] = deque(maxlen=limit)
        self._seq = 0
        self._lock = threading.Lock()
        self.keep_bodies = keep_bodies
        self.max_concurrent_seen = 0
        self._inflight = 0

    def record(self, method, path, query, status, principal, body, headers) -> None:
        with self._lock:
            self._seq += 1
            self._calls.append(Call(self._seq, time.time(), method, path, query, status, principal,
                                    body if self.keep_bodies else None, headers))

    def enter(self) -> None:
        with self._lock:
            self._inflight += 1
            self.max_concurrent_seen = max(self.max_concurrent_seen, self._inflight)

    def leave(self) -> None:
        with self._lock:
            self._inflight -= 1

    def since(self, seq: int = 0) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.seq > seq]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self.max_concurrent_seen = 0

    def find(self, method: str | None = None, path: str | None = None, status: int | None = None) -> list[Call]:
        out = []
        for c in self.since(0):
            if method and c.method != method:
                continue
            if path and re.search(path, c.path) is None:
                continue
            if status is not None and c.status != status:
                continue
            out.append(c)
        return out


Handler = Callable[[Request], Response]


class SandboxApp:
    """Routing, faults, throttling, latency and the call log. Subclasses add routes and state."""

    name = "sandbox"

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        self.faults = FaultInjector()
        self.throttle = Throttle()
        self.calls = CallLog()
        self.latency_ms = 0.0
        self.lock = threading.RLock()  # guards the sandbox's business state
        self._register_control_routes()

    # -- routing -----------------------------------------------------------------------------
    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

        def register(fn: Handler) -> Handler:
            self._routes.append((method.upper(), regex, fn))
            return fn

        return register

    def add_route(self, method: str, pattern: str, fn: Handler) -> None:
        self.route(method, pattern)(fn)

    # -- hooks for subclasses -----------------------------------------------------------------
    def error_response(self, status: int, code: str, message: str, headers: dict | None = None) -> Response:
        return Response.json({"error": {"code": code, "message": message}}, status, headers)

    def authenticate(self, req: Request) -> Response | None:
        """Set req.principal or return an error response. Control and token routes skip this."""
        return None

    def is_public(self, req: Request) -> bool:
        return False

    # -- dispatch --------------------------------------------------------------------------------
    def dispatch(self, req: Request) -> Response:
        if req.path.startswith("/_sandbox/"):
            return self._match(req)
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)
        if not self.is_public(req):
            denied = self.authenticate(req)
            if denied is not None:
                return denied
        fault = self.faults.take(req.method, req.path)
        if fault is not None:
            if fault.kind == "drop":
                raise DropConnection()
            if fault.kind == "timeout":
                time.sleep(fault.delay)
                return self.error_response(504, "GatewayTimeout", "injected timeout")
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(int(fault.retry_after)) if float(fault.retry_after).is_integer() \
                    else str(fault.retry_after)
            return self.error_response(fault.status, "InjectedFault", f"injected {fault.status}", headers)
        principal = req.principal or "anonymous"
        admitted, retry_after = self.throttle.enter(principal)
        if not admitted:
            headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
            return self.error_response(429, "TooManyRequests", "Too many requests; retry later.", headers)
        try:
            return self._match(req)
        finally:
            self.throttle.leave(principal)

    def _match(self, req: Request) -> Response:
        path_matched = False
        for method, regex, fn in self._routes:
            m = regex.match(req.path)
            if not m:
                continue
            path_matched = True
            if method != req.method:
                continue
            req.params = m.groupdict()
            try:
                return fn(req)
            except json.JSONDecodeError as exc:
                return self.error_response(400, "BadRequest", f"Invalid JSON body: {exc.msg}")
        if path_matched:
            return self.error_response(405, "MethodNotAllowed", f"{req.method} is not allowed on {req.path}")
        return self.error_response(404, "NotFound", f"No resource at {req.path}")

    # -- control surface ------------------------------------------------------------------------
    def _register_control_routes(self) -> None:
        @self.route("GET", "/_sandbox/health")
        def _health(req):
            return Response.json({"status": "ok", "sandbox": self.name})

        @self.route("GET", "/_sandbox/calls")
        def _calls(req):
            since = int(req.q("since", "0"))
            return Response.json({"calls": [c.as_dict() for c in self.calls.since(since)],
                                  "max_concurrent_seen": self.calls.max_concurrent_seen,
                                  "throttle_rejections": self.throttle.rejections})

        @self.route("POST", "/_sandbox/calls/clear")
        def _clear(req):
            self.calls.clear()
            return Response.empty()

        @self.route("POST", "/_sandbox/faults")
        def _fault(req):
            body = req.json() or {}
            if "rate" in body:
                self.faults.add_random(body["path"], float(body["rate"]), body.get("kind", "status"),
                                       int(body.get("status", 503)), body.get("method"), body.get("seed"),
                                       body.get("retry_after"), float(body.get("delay", 30)))
            else:
                self.faults.add(body["path"], int(body.get("count", 1)), body.get("kind", "status"),
                                int(body.get("status", 503)), body.get("method"), float(body.get("delay", 30)),
                                body.get("retry_after"))
            return Response.empty()

        @self.route("DELETE", "/_sandbox/faults")
        def _clear_faults(req):
            self.faults.clear()
            return Response.empty()

        @self.route("POST", "/_sandbox/config")
        def _config(req):
            body = req.json() or {}
            if "latency_ms" in body:
                self.latency_ms = float(body["latency_ms"])
            if "throttle" in body:
                self.throttle.configure(**body["throttle"])
            if "keep_bodies" in body:
                self.calls.keep_bodies = bool(body["keep_bodies"])
            self.configure(body)
            return Response.empty()

    def configure(self, body: dict) -> None:
        """Subclasses take their own settings from POST /_sandbox/config."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sandbox/1.0"

    def log_message(self, format, *args):  # noqa: A002 - quiet by default
        return

    def _serve(self) -> None:
        app: SandboxApp = self.server.app  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = CaseInsensitiveDict(self.headers.items())
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        req = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True), headers, body,
                      f"http://{host}")
        app.calls.enter()
        try:
            try:
                resp = app.dispatch(req)
            except DropConnection:
                app.calls.record(req.method, req.path, req.query, 0, req.principal, None, {})
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            except Exception as exc:  # a sandbox bug must look like a server error, not a hang
                import traceback

                traceback.print_exc()
                resp = app.error_response(500, "InternalError", f"sandbox error: {type(exc).__name__}")
        finally:
            app.calls.leave()
        if not req.path.startswith("/_sandbox/"):
            logged_body = None
            if req.method in ("POST", "PATCH", "PUT") and req.body:
                try:
                    logged_body = req.json()
                except ValueError:
                    logged_body = req.body[:2000].decode("utf-8", "replace")
            app.calls.record(req.method, req.path, req.query, resp.status, req.principal, logged_body,
                             {k: v for k, v in resp.headers.items() if k.lower() != "content-type"})
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if resp.body and self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class SandboxServer:
    """Serves a SandboxApp on 127.0.0.1 in a background thread."""

    def __init__(self, app: SandboxApp, port: int = 0, host: str = "127.0.0.1") -> None:
        self.app = app
        self._server = _Server((host, port), _Handler)
        self._server.app = app  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "SandboxServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{self.app.name}-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()


def serve_in_foreground(server: "SandboxServer", app: SandboxApp, title: str, rows: list[tuple[str, str]]) -> None:
    """`python -m sandbox.<name>`: say where everything is, then serve until Ctrl+C."""
    width = max(len(label) for label, _ in rows) + 2
    print(title, flush=True)
    for label, value in rows:
        print(f"  {label.ljust(width)}{value}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
