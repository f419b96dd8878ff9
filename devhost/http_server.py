"""HTTP-triggered functions on a threaded stdlib server, under the host.json route prefix.

Per request: match the route, check the function key, build `func.HttpRequest`, call the function
in the connection's thread, write the `func.HttpResponse` back. Nothing heavier, so the webhook
intake stays fast. Keep-alive (HTTP/1.1) and TCP_NODELAY avoid the 40 ms Nagle/delayed-ACK stall.
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devhost.app_loader import HttpFunction
from devhost.routes import RouteTable, compile_route

log = logging.getLogger("devhost.http")

MAX_BODY = 100 * 1024 * 1024  # the Functions host's request size limit
_KEYED_LEVELS = ("function", "admin")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/problem+json")


class _Reply:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.status, self.body = status, body
        self.headers = headers or {"Content-Type": "text/plain; charset=utf-8"}


def _plain(status: int, text: str, **headers: str) -> _Reply:
    return _Reply(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **headers})


class HttpFrontend:
    def __init__(self, functions: list[HttpFunction], *, route_prefix: str = "api", function_key: str | None = None,
                 bind: str = "127.0.0.1", port: int = 0,
                 admin_invoke: Callable[[str, bytes], bool] | None = None) -> None:
        self.table = RouteTable([compile_route(f.route, f) for f in functions])
        self.prefix = "/" + route_prefix.strip("/") if route_prefix.strip("/") else ""
        self._key = function_key.encode() if function_key else None
        self._admin_invoke = admin_invoke
        self._active = 0
        self._idle = threading.Condition()
        self.stopping = False
        self.server = ThreadingHTTPServer((bind, port), _handler_class(self), bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256  # the default backlog of 5 drops connections under bursts
        self.server.allow_reuse_address = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.server.server_bind()
        self.server.server_activate()
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="devhost-http", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop accepting, let running requests finish (up to `timeout`), close the socket."""
        self.stopping = True
        if self._thread:
            self.server.shutdown()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            finished = not self._active
        self.server.server_close()
        return finished

    # -- one request -------------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler) -> None:
        started = time.perf_counter()
        with self._idle:
            self._active += 1
        try:
            reply, name = self._reply(request)
            _write(request, reply)
            log.info("%s %s -> %d %s(%.1f ms)", request.command, request.path, reply.status,
                     f"[{name}] " if name else "", (time.perf_counter() - started) * 1000)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _reply(self, request: BaseHTTPRequestHandler) -> tuple[_Reply, str | None]:
        try:
            body = _read_body(request)
        except _BodyError as exc:
            request.close_connection = True
            return _plain(exc.status, exc.message), None
        if self.stopping:
            request.close_connection = True
            return _plain(503, "The host is stopping."), None
        url = urlsplit(request.path)
        path = url.path
        if path.lower().startswith("/admin/functions/") and request.command == "POST":
            return self._admin(request, path.rsplit("/", 1)[-1], body), None
        if self.prefix:
            if not (path.lower() == self.prefix.lower() or path.lower().startswith(self.prefix.lower() + "/")):
                return _plain(404, "Not Found"), None
            path = path[len(self.prefix):]
        matches = self.table.find(path)
        if not matches:
            return _plain(404, "Not Found"), None
        for route, route_params in matches:
            function = route.target
            if function.methods is None or request.command in function.methods:
                break
        else:
            allowed = sorted({m for route, _ in matches for m in route.target.methods or ()})
            return _plain(405, "Method Not Allowed", Allow=", ".join(allowed)), None
        params = dict(parse_qsl(url.query, keep_blank_values=True)[::-1])  # first value wins
        if function.auth_level in _KEYED_LEVELS and not self._key_ok(request, params):
            return _plain(401, "Unauthorized"), function.name
        http_request = func.HttpRequest(
            request.command, f"http://{request.headers.get('Host') or self._address()}{request.path}",
            headers=_headers(request), params=params, route_params=route_params, body=body)
        try:
            result = function.invoke(http_request)
            return _to_reply(result), function.name
        except Exception:
            log.exception("function %s failed", function.name)
            return _plain(500, "Internal Server Error"), function.name

    def _key_ok(self, request: BaseHTTPRequestHandler, params: dict[str, str]) -> bool:
        if self._key is None:  # no key configured: allow, as Core Tools does locally
            return True
        given = request.headers.get("x-functions-key") or params.get("code") or ""
        return hmac.compare_digest(given.encode(), self._key)

    def _admin(self, request: BaseHTTPRequestHandler, name: str, body: bytes) -> _Reply:
        """`POST /admin/functions/<name>`: run a non-HTTP function now, like the runtime's admin API."""
        if not self._key_ok(request, {}):
            return _plain(401, "Unauthorized")
        if self._admin_invoke and self._admin_invoke(name, body):
            return _plain(202, "Accepted")
        return _plain(404, f"No timer function named {name!r}")

    def _address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        return _read_chunked(request)
    length_text = request.headers.get("Content-Length")
    if not length_text:
        return b""
    try:
        length = int(length_text)
    except ValueError:
        raise _BodyError(400, "Bad Content-Length") from None
    if length < 0:
        raise _BodyError(400, "Bad Content-Length")
    if length > MAX_BODY:
        raise _BodyError(413, "Payload Too Large")
    return request.rfile.read(length)


def _read_chunked(request: BaseHTTPRequestHandler) -> bytes:
    chunks, total = [], 0
    while True:
        line = request.rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BodyError(400, "Bad chunked body") from None
        if size == 0:
            while request.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise _BodyError(413, "Payload Too Large")
        chunks.append(request.rfile.read(size))
        request.rfile.readline(1024)


def _headers(request: BaseHTTPRequestHandler) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _to_reply(result: object) -> _Reply:
    if isinstance(result, func.HttpResponse):
        headers = dict(result.headers.items())
        if not any(k.lower() == "content-type" for k in headers):
            mimetype = result.mimetype
            text = mimetype.startswith(_TEXT_TYPES) and "charset" not in mimetype
            headers["Content-Type"] = f"{mimetype}; charset={result.charset}" if text else mimetype
        return _Reply(result.status_code, result.get_body(), headers)
    if result is None:
        return _Reply(204, b"", {})
    if isinstance(result, (str, bytes, bytearray)):
        body = result.encode() if isinstance(result, str) else bytes(result)
        return _Reply(200, body)
    raise TypeError(f"an HTTP function returned {type(result).__name__}, not func.HttpResponse")


def _write(request: BaseHTTPRequestHandler, reply: _Reply) -> None:
    request.send_response(reply.status)
    for name, value in reply.headers.items():
        if name.lower() not in ("content-length", "transfer-encoding", "connection"):
            request.send_header(name, value)
    request.send_header("Content-Length", str(len(reply.body)))
    if request.close_connection:
        request.send_header("Connection", "close")
    request.end_headers()
    if request.command != "HEAD" and reply.body:
        request.wfile.write(reply.body)


def _handler_class(frontend: HttpFrontend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "devhost"
        timeout = 120  # reap idle keep-alive connections

        def _dispatch(self) -> None:
            frontend.handle(self)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass  # access lines come from HttpFrontend.handle

    return Handler
