"""One HTTP base for both API clients.

Retry policy lives in one table (`POLICY`): what to do with each status class. Transient failures
are retried with jittered exponential backoff that honours `Retry-After`; a 401 refreshes the
token once; other 4xx are permanent. Concurrency per client is bounded (BC allows 5 concurrent
requests per principal). Log lines carry method, path, status and timing, never headers, bodies
or query strings (which may hold tokens).
"""
from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from shared.core.errors import AuthError, PermanentError, TransientError

log = logging.getLogger("ml_connector.http")


class Action(str, Enum):
    OK = "ok"
    RETRY = "retry"            # transient: back off and try again
    REFRESH_AUTH = "refresh"   # refresh the token once, then try again
    FAIL = "fail"              # permanent: the request itself is wrong


def classify(status: int) -> Action:
    """The retry table. Status classes map to actions; nothing else decides retries."""
    if status < 400:
        return Action.OK
    if status == 401:
        return Action.REFRESH_AUTH
    if status in (408, 429) or status >= 500:
        return Action.RETRY
    return Action.FAIL


POLICY = {  # documentation of `classify`, asserted by tests
    "2xx/3xx": Action.OK, "401": Action.REFRESH_AUTH, "408": Action.RETRY, "429": Action.RETRY,
    "5xx": Action.RETRY, "other 4xx": Action.FAIL,
}
NETWORK_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class TokenProvider(Protocol):
    def token(self) -> str: ...
    def invalidate(self, token: str) -> None: ...


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


@dataclass
class RetryConfig:
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    # A Retry-After longer than this is not slept inline: the job is retried later by the queue.
    max_inline_wait: float = 30.0


@dataclass
class CallSummary:
    """What one logical request did, for audit rows and counters."""

    method: str
    path: str
    status: int | None = None
    attempts: int = 0
    retries: int = 0
    throttled: int = 0
    elapsed_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class ApiClient:
    """httpx-based client with the retry table, token handling and bounded concurrency.

    Subclasses override `parse_error` (each system's error body) and add the API's calls.
    """

    system = "api"

    def __init__(self, base_url: str, tokens: TokenProvider | None = None, *,
                 transport: httpx.BaseTransport | None = None, timeout: float = 30.0,
                 retry: RetryConfig | None = None, max_concurrency: int = 5,
                 sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random,
                 on_call: Callable[[CallSummary], None] | None = None,
                 default_headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.retry = retry or RetryConfig()
        self._sleep = sleep
        self._rng = rng
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._on_call = on_call
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False,
                                  headers=default_headers or {})
        self.counters = {"requests": 0, "retries": 0, "throttled": 0, "token_refreshes": 0}
        self._counter_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    # -- hooks ---------------------------------------------------------------------------------
    def parse_error(self, response: httpx.Response) -> tuple[str | None, str, str | None]:
        """(code, message, correlation id) from an error response."""
        return None, (response.text or response.reason_phrase)[:500], None

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    # -- the request loop ------------------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                params: dict | None = None, headers: dict[str, str] | None = None,
                ok: tuple[int, ...] = (), redirect_without_auth: bool = False,
                timeout: float | None = None, max_attempts: int | None = None) -> httpx.Response:
        """Send with retries. Returns the response when it is 2xx/3xx or its status is in `ok`.

        Raises TransientError after the last retry, AuthError after a refused token refresh,
        PermanentError for other 4xx. `max_attempts=1` turns inline retries off for requests that
        are not safe to repeat blindly (a lost answer may hide a success): the caller checks first.
        """
        attempts_allowed = max_attempts or self.retry.max_attempts
        url = self.url(path)
        summary = CallSummary(method, urlsplit(url).path)
        started = time.monotonic()
        refreshed = False
        attempt = 0
        try:
            while True:
                attempt += 1
                summary.attempts = attempt
                response = None
                used_token = ""
                error: Exception | None = None
                try:
                    response, used_token = self._send(method, url, json=json, content=content, params=params,
                                          headers=headers, redirect_without_auth=redirect_without_auth,
                                          timeout=timeout)
                except NETWORK_ERRORS as exc:
                    error = exc
                if response is not None:
                    summary.status = response.status_code
                    if response.status_code in ok:
                        return response
                    action = classify(response.status_code)
                    if action is Action.OK:
                        return response
                    if action is Action.REFRESH_AUTH and self.tokens is not None:
                        if refreshed:
                            code, message, corr = self.parse_error(response)
                            raise AuthError(f"{self.system} refused the credentials after a token refresh: {message}",
                                            status=401, code=code, correlation_id=corr, system=self.system)
                        refreshed = True
                        self._count("token_refreshes")
                        self.tokens.invalidate(used_token)
                        continue  # an auth refresh does not count against the retry budget
                    if action in (Action.FAIL, Action.REFRESH_AUTH):
                        code, message, corr = self.parse_error(response)
                        raise PermanentError(message, status=response.status_code, code=code, correlation_id=corr,
                                             system=self.system)
                    if response.status_code == 429:
                        summary.throttled += 1
                        self._count("throttled")
                        log.warning("event=http.throttled system=%s path=%s", self.system, summary.path)
                wait = self._backoff(attempt, response)
                if attempt >= attempts_allowed or wait is None:
                    raise self._transient(response, error, wait)
                summary.retries += 1
                self._count("retries")
                log.info("event=http.retry system=%s %s %s status=%s attempt=%d wait=%.2fs", self.system, method,
                         summary.path, response.status_code if response is not None else type(error).__name__,
                         attempt, wait)
                self._sleep(wait)
        finally:
            summary.elapsed_ms = (time.monotonic() - started) * 1000
            log.info("event=http.call system=%s %s %s status=%s attempts=%d ms=%.0f", self.system, method,
                     summary.path, summary.status, summary.attempts, summary.elapsed_ms)
            if self._on_call:
                self._on_call(summary)

    def _send(self, method, url, *, json, content, params, headers, redirect_without_auth, timeout):
        hdrs = dict(headers or {})
        token = ""
        if self.tokens is not None:
            token = self.tokens.token()
            hdrs["Authorization"] = f"Bearer {token}"
        kwargs = {"timeout": timeout} if timeout is not None else {}
        with self._slots:
            self._count("requests")
            response = self._http.request(method, url, json=json, content=content, params=params, headers=hdrs,
                                          **kwargs)
            hops = 0
            first = response
            while redirect_without_auth and response.status_code in (301, 302, 303, 307, 308) and hops < 5:
                # Basware's pre-signed redirect target refuses an Authorization header
                # (reference/basware-api.md section 2): follow it bare; httpx sets Host.
                location = urljoin(str(response.url), response.headers["location"])
                response.close()
                bare = {k: v for k, v in hdrs.items() if k.lower() not in ("authorization", "content-type")}
                self._count("requests")
                response = self._http.request("GET", location, headers=bare, **kwargs)
                response.redirected_from = first  # type: ignore[attr-defined]
                hops += 1
        return response, token

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before the next attempt; None when the wait is too long to sleep inline."""
        retry_after = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
        jitter = self._rng() * min(self.retry.backoff_max, self.retry.backoff_base * (2 ** (attempt - 1)))
        if retry_after is not None:
            if retry_after > self.retry.max_inline_wait:
                return None
            return retry_after + jitter * 0.1
        return jitter

    def _transient(self, response: httpx.Response | None, error: Exception | None, wait: float | None):
        if response is not None:
            code, message, corr = self.parse_error(response)
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return TransientError(message, status=response.status_code, code=code, correlation_id=corr,
                                  retry_after=retry_after, system=self.system)
        return TransientError(f"{self.system} did not answer ({type(error).__name__})", system=self.system)

    def _count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] = self.counters.get(name, 0) + n
