"""`Host`: one function app served in this process (HTTP, queue and timer triggers).

    host = Host("function_app:app", environ=os.environ, app_dir=".", port=7071).start()
    ...
    host.stop()

Discovery and every setting check happen in the constructor, so a bad configuration fails before
anything listens. The environment given is what `%SETTING%` references, queue connections and
the DEVHOST_* options are read from; the app itself reads os.environ as it would under func.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Mapping

import azure.functions as func
from azure.core.exceptions import AzureError

from devhost.app_loader import Discovered, discover, import_app
from devhost.connections import queue_service
from devhost.errors import HostError
from devhost.host_config import HostConfig, load_host_config
from devhost.http_server import HttpFrontend
from devhost.queues import POISON_SUFFIX, QueueListener, ensure_queue
from devhost.timers import TimerRunner

log = logging.getLogger("devhost")

FUNCTION_KEY = "DEVHOST_FUNCTION_KEY"
INFLIGHT_VISIBILITY = "DEVHOST_INFLIGHT_VISIBILITY_SECONDS"
DEFAULT_INFLIGHT_VISIBILITY = 600  # the storage default a crashed host leaves a message invisible for


class Host:
    def __init__(self, app: func.FunctionApp | str = "function_app:app", *, environ: Mapping[str, str] | None = None,
                 app_dir: str | Path = ".", port: int = 0, bind: str = "127.0.0.1", queues: bool = True,
                 timers: bool = True, config: HostConfig | None = None) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.environ = os.environ if environ is None else environ
        self.config = config or load_host_config(self.app_dir)
        self.inflight_seconds = _positive_int(self.environ, INFLIGHT_VISIBILITY, DEFAULT_INFLIGHT_VISIBILITY)
        if isinstance(app, str):
            app = import_app(app, self.app_dir)
        self.functions: Discovered = discover(app, self.environ, queues=queues, timers=timers,
                                              function_directory=str(self.app_dir))
        self._timers = [TimerRunner(t) for t in self.functions.timers]
        self._http = HttpFrontend(self.functions.http, route_prefix=self.config.route_prefix,
                                  function_key=self.environ.get(FUNCTION_KEY) or None, bind=bind, port=port,
                                  admin_invoke=self._run_timer_now)
        self._services: dict[str, object] = {}  # one QueueServiceClient per connection setting
        self._listeners = [self._listener(q) for q in self.functions.queues]
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "Host":
        """Create queues, start listening, polling and timers; returns once HTTP accepts connections."""
        for listener in self._listeners:
            for client in (listener.queue, listener.poison):
                try:
                    ensure_queue(client)
                except AzureError as exc:
                    raise HostError(f"function {listener.function.name!r}: cannot create queue "
                                    f"{client.queue_name!r} on connection {listener.function.connection!r} "
                                    f"(is the storage, e.g. Azurite, running?): {exc}") from None
        self._http.start()
        self._started = True
        for worker in [*self._listeners, *self._timers]:
            worker.start()
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop polling, timers and HTTP; wait for running invocations up to `timeout` in all.

        Returns False if some did not finish: their queue messages reappear after their lease."""
        if not self._started:
            return True
        self._started = False
        deadline = time.monotonic() + timeout
        for worker in [*self._listeners, *self._timers]:
            worker.request_stop()
        finished = self._http.stop(timeout)
        for worker in [*self._listeners, *self._timers]:
            finished = worker.join(max(0.0, deadline - time.monotonic())) and finished
        if not finished:
            log.warning("devhost stopped with invocations still running")
        return finished

    def __enter__(self) -> "Host":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- facts -------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        host = self._http.server.server_address[0]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def describe(self) -> list[str]:
        """One line per function, like `func start` prints them."""
        prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
        lines = []
        for f in self.functions.http:
            methods = ",".join(sorted(f.methods)) if f.methods else "ALL"
            lines.append(f"{f.name}: [{methods}] {self.base_url}{prefix}/{f.route} (auth: {f.auth_level})")
        for q in self.functions.queues:
            lines.append(f"{q.name}: queueTrigger {q.queue_name} (connection {q.connection})")
        for runner in self._timers:
            t = runner.function
            startup = ", runs on startup" if t.run_on_startup else ""
            lines.append(f"{t.name}: timerTrigger '{t.schedule}' next {runner.next_occurrence():%Y-%m-%dT%H:%M:%SZ}"
                         f"{startup}")
        lines.extend(f"{name}: not served, {why}" for name, why in self.functions.skipped)
        return lines

    # -- helpers -----------------------------------------------------------------------------------
    def _listener(self, function) -> QueueListener:
        service = self._services.get(function.connection)
        if service is None:
            service = self._services[function.connection] = queue_service(function.connection, self.environ)
        return QueueListener(function, service.get_queue_client(function.queue_name),
                             service.get_queue_client(function.queue_name + POISON_SUFFIX),
                             self.config.queues, self.inflight_seconds)

    def _run_timer_now(self, name: str, body: bytes) -> bool:
        for runner in self._timers:
            if runner.function.name.lower() == name.lower():
                runner.run_now()
                return True
        return False


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HostError(f"{name} must be a whole number of seconds, got {text!r}") from None
    if value < 1:
        raise HostError(f"{name} must be at least 1")
    return value
