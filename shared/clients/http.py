"""One HTTP base for both API clients.

Retry policy lives in one table (`POLICY`): what each status (and, for BC, error-code family)
resolves to, and so which error class a caller sees. Transient failures are retried with jittered
exponential backoff that honours `Retry-After` (`backoff`, the one formula, which flows that retry
a step themselves use too); a 401 refreshes the token once; other 4xx are permanent. Concurrency per client is bounded (BC allows 5 concurrent
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

from shared.clients.budget import LocalGate
from shared.core.errors import (AuthError, ConfigError, ConflictError, ConnectorError, DocumentError, PermanentError,
                                TooLargeError, TransientError)

log = logging.getLogger("ml_connector.http")


class Action(str, Enum):
    OK = "ok"
    RETRY = "retry"            # transient: back off and try again
    REFRESH_AUTH = "refresh"   # refresh the token once, then try again
    DOCUMENT = "document"      # permanent: the record's data is refused; its owner must change it
    CONFLICT = "conflict"      # permanent as sent: the record changed since it was read (stale ETag)
    CONFIG = "config"          # permanent: our own setup (permissions, company) is refused
    TOO_LARGE = "too_large"    # permanent: the body is over the server's size limit
    FAIL = "fail"              # permanent: the request itself is wrong


@dataclass(frozen=True)
class Rule:
    action: Action
    first: int                 # status range, inclusive
    last: int
    code: str | None = None    # error-code prefix the body must carry (BC: "Application_...")
    no_code: bool = False      # only when the body carries no error code
    system: str | None = None  # "bc" or "basware"; None for both
    unprocessed: bool = False  # refused before it ran: resending cannot duplicate anything
    why: str = ""

    def matches(self, status: int, code: str | None, system: str | None) -> bool:
        return (self.first <= status <= self.last and (self.system is None or self.system == system)
                and (self.code is None or (code or "").startswith(self.code)) and not (self.no_code and code))


# The retry policy: the first rule that matches a response decides. Nothing else in the connector
# looks at raw statuses or error codes to decide a retry; flows catch the error class it yields.
POLICY: tuple[Rule, ...] = (
    Rule(Action.OK, 200, 399),
    Rule(Action.REFRESH_AUTH, 401, 401, why="the token expired or was revoked: fetch a new one, once"),
    Rule(Action.RETRY, 429, 429, unprocessed=True,
         why="over the rate or connection limit, refused before it ran (Microsoft Learn: 'Working with API "
             "limits in Dynamics 365 Business Central'); Basware's gateway throttles the same way"),
    Rule(Action.RETRY, 503, 503, system="bc", unprocessed=True,
         why="a request queued behind BC's 5 concurrent ones for 8 minutes, or a tenant that is unavailable, "
             "is answered 503 before it runs (Microsoft Learn, 'Operational limits for Business Central Online')"),
    Rule(Action.RETRY, 408, 408, why="the server gave up waiting for the request; it may have run"),
    Rule(Action.RETRY, 500, 599, why="server or gateway trouble (BC: 502/503/504 while a tenant is busy)"),
    Rule(Action.CONFIG, 403, 403, why="the app registration lacks a permission, or the company is not ours"),
    Rule(Action.TOO_LARGE, 413, 413, why="over the request body limit (Microsoft Learn, 'Operational limits for "
                                         "Business Central Online': 350 MB)"),
    Rule(Action.DOCUMENT, 400, 499, code="Application_", system="bc",
         why="BC business-logic errors, most posting and validation refusals (Microsoft Learn: "
             "'Troubleshooting API errors', error codes Application_*)"),
    Rule(Action.CONFLICT, 400, 499, code="BadRequest_InvalidToken", system="bc",
         why="'Could not validate the client concurrency token': the ETag sent is stale"),
    Rule(Action.CONFLICT, 409, 409, why="BC Request_EntityChanged: another user changed the record"),
    Rule(Action.CONFLICT, 412, 412, why="If-Match did not match the record's ETag"),
    Rule(Action.DOCUMENT, 400, 499, code="BadRequest", system="bc",
         why="the body BC refuses as sent (a value it cannot convert, a field it does not have)"),
    Rule(Action.DOCUMENT, 400, 400, no_code=True, system="bc"),
    Rule(Action.DOCUMENT, 422, 422, no_code=True, system="bc"),
    Rule(Action.FAIL, 400, 499, why="any other client error: the request is wrong and resending cannot help"),
)
_FALLBACK = Rule(Action.FAIL, 0, 999)
ERRORS = {Action.DOCUMENT: DocumentError, Action.CONFLICT: ConflictError, Action.CONFIG: ConfigError,
          Action.TOO_LARGE: TooLargeError,
          Action.FAIL: PermanentError, Action.REFRESH_AUTH: PermanentError}


def resolve(status: int, code: str | None = None, system: str | None = None) -> Rule:
    return next((rule for rule in POLICY if rule.matches(status, code, system)), _FALLBACK)


def classify(status: int, code: str | None = None, system: str | None = None) -> Action:
    return resolve(status, code, system).action


NETWORK_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port or ''}"


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
                 retry: RetryConfig | None = None, max_concurrency: int = 5, gate: LocalGate | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.time,
                 on_call: Callable[[CallSummary], None] | None = None,
                 default_headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.retry = retry or RetryConfig()
        self._sleep = sleep
        self._rng = rng
        self._clock = clock
        self._slots = gate or LocalGate(max_concurrency)  # shared/clients/budget.py
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
                rule = None
                if response is not None:
                    summary.status = response.status_code
                    if response.status_code in ok:
                        return response
                    code = self.parse_error(response)[0] if response.status_code >= 400 else None
                    rule = resolve(response.status_code, code, self.system)
                    if rule.action is Action.OK:
                        return response
                    if rule.action is Action.REFRESH_AUTH and self.tokens is not None:
                        if refreshed:
                            code, message, corr = self.parse_error(response)
                            raise AuthError(f"{self.system} refused the credentials after a token refresh: {message}",
                                            status=401, code=code, correlation_id=corr, system=self.system)
                        refreshed = True
                        self._count("token_refreshes")
                        self.tokens.invalidate(used_token)
                        continue  # an auth refresh does not count against the retry budget
                    if rule.action is not Action.RETRY:
                        code, message, corr = self.parse_error(response)
                        raise ERRORS[rule.action](message, status=response.status_code, code=code,
                                                  correlation_id=corr, system=self.system)
                    if response.status_code == 429:
                        summary.throttled += 1
                        self._count("throttled")
                        log.warning("event=http.throttled system=%s path=%s", self.system, summary.path)
                retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock) if response is not None else None
                wait = self.backoff(attempt, retry_after)
                if attempt >= attempts_allowed or wait is None:
                    raise self._transient(response, error, bool(rule and rule.unprocessed))
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
        if self.tokens is not None and _origin(url) != _origin(self.base_url):
            # An @odata.nextLink or a Location comes from the server's answer: the bearer token goes
            # only to the configured host, never to wherever an answer points.
            raise PermanentError(f"{self.system}: refusing to send credentials to {_origin(url)}, which is not the "
                                 f"configured {_origin(self.base_url)}", system=self.system)
        if self.tokens is not None:
            token = self.tokens.token()
            hdrs["Authorization"] = f"Bearer {token}"
        kwargs = {"timeout": timeout} if timeout is not None else {}
        with self._slots.hold():
            self._count("requests")
            response = self._http.request(method, url, json=json, content=content, params=params, headers=hdrs,
                                          **kwargs)
            hops = 0
            first = response
            while redirect_without_auth and response.status_code in (301, 302, 303, 307, 308) and hops < 5:
                # Basware's pre-signed redirect target refuses an Authorization header
                # (Amazon S3 pre-signed URLs allow one auth mechanism only): follow it bare; httpx sets Host.
                location = urljoin(str(response.url), response.headers["location"])
                response.close()
                bare = {k: v for k, v in hdrs.items() if k.lower() not in ("authorization", "content-type")}
                self._count("requests")
                response = self._http.request("GET", location, headers=bare, **kwargs)
                response.redirected_from = first  # type: ignore[attr-defined]
                hops += 1
        return response, token

    # -- backoff: the one formula -----------------------------------------------------------------
    def backoff(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`: `Retry-After` when the server sent one (plus
        a little jitter, so waiting workers do not return in step), else full-jitter exponential
        backoff. None when the server asks for longer than `max_inline_wait`: the caller should give
        the work back to its queue rather than hold a worker."""
        jitter = self._rng() * min(self.retry.backoff_max, self.retry.backoff_base * (2 ** (attempt - 1)))
        if retry_after is not None:
            if retry_after > self.retry.max_inline_wait:
                return None
            return retry_after + jitter * 0.1
        return jitter

    def wait_before_retry(self, attempt: int, exc: ConnectorError) -> bool:
        """For flows that retry a step themselves: sleep the backoff after failed attempt `attempt`
        (with the client's own sleep and random source); False when the wait is too long to sleep."""
        wait = self.backoff(attempt, exc.retry_after)
        if wait is None:
            return False
        self._sleep(wait)
        return True

    def error_for(self, response: httpx.Response) -> ConnectorError | None:
        """The error the policy table makes of a response, for calls that bypass `request` (a
        streamed upload); None for a success. A 401 is a TransientError here: no refresh inline."""
        code = self.parse_error(response)[0] if response.status_code >= 400 else None
        rule = resolve(response.status_code, code, self.system)
        if rule.action is Action.OK:
            return None
        if rule.action in (Action.RETRY, Action.REFRESH_AUTH):
            return self._transient(response, None, rule.unprocessed)
        code, message, corr = self.parse_error(response)
        return ERRORS[rule.action](message, status=response.status_code, code=code, correlation_id=corr,
                                   system=self.system)

    def _transient(self, response: httpx.Response | None, error: Exception | None, unprocessed: bool):
        if response is not None:
            code, message, corr = self.parse_error(response)
            retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock)
            return TransientError(message, status=response.status_code, code=code, correlation_id=corr,
                                  retry_after=retry_after, system=self.system, unprocessed=unprocessed)
        return TransientError(f"{self.system} did not answer ({type(error).__name__})", system=self.system)

    def _count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] = self.counters.get(name, 0) + n
