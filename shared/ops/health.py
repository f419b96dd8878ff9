"""The connectivity check behind `GET /api/health`.

Checks, run concurrently, each within `timeout` seconds (a system that hangs is reported as not
answering, so the whole check answers within a few seconds even when something is down):

- `storage`: one table query against the jobs table;
- `basware_token`, `bc_token`: the cached token providers hand out a token, fetching one when the
  cached token is near expiry (`fetched` says whether this check went to the token endpoint;
  a cached token proves the credentials worked within the last hour, not that the endpoint is up);
- `bc_company:<id>`: `GET companies(<id>)` for every mapped BC company, with the BC token: the
  environment is reachable, the app registration is allowed in, and the company exists.

Errors are one-line summaries (ConnectorError messages are written to be shown to operators)
passed through the secret scrubber: never a token, a secret or a response body.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from shared.core import metrics
from shared.core.secrets import Scrubber
from shared.core.errors import ConnectorError
from shared.core.telemetry import log_event, scrub as scrub_log
from shared.core.runtime import Runtime

log = logging.getLogger("ml_connector.health")

DEFAULT_TIMEOUT = 3.0


@dataclass
class CheckResult:
    ok: bool
    ms: int
    error: str | None = None
    detail: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "ms": self.ms}
        if self.error:
            out["error"] = self.error
        if self.detail:
            out.update(self.detail)
        return out


def summarise_error(exc: BaseException, scrub: Callable[[str], str]) -> str:
    if isinstance(exc, ConnectorError):
        text = exc.summary()
    else:
        text = f"{type(exc).__name__}: {exc}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return scrub_log(scrub(first_line))[:600]


def _run(checks: dict[str, Callable[[], dict | None]], timeout: float,
         scrub: Callable[[str], str]) -> dict[str, CheckResult]:
    results: dict[str, CheckResult] = {}
    lock = threading.Lock()

    def work(name: str, check: Callable[[], dict | None]) -> None:
        started = time.monotonic()
        try:
            detail = check()
            result = CheckResult(True, _ms(started), detail=detail or None)
        except Exception as exc:  # noqa: BLE001 - every failure is a result, never a 500
            result = CheckResult(False, _ms(started), summarise_error(exc, scrub))
        with lock:
            results.setdefault(name, result)

    # Daemon threads: a check that hangs past the deadline is abandoned, never waited for.
    threads = {name: threading.Thread(target=work, args=(name, check), name=f"health-{name}", daemon=True)
               for name, check in checks.items()}
    started = time.monotonic()
    for thread in threads.values():
        thread.start()
    for thread in threads.values():
        thread.join(max(0.0, timeout - (time.monotonic() - started)))
    with lock:
        for name in checks:
            results.setdefault(name, CheckResult(False, _ms(started), f"no answer within {timeout:g} s"))
        return {name: results[name] for name in checks}


def _ms(started: float) -> int:
    return int(round((time.monotonic() - started) * 1000))


def _token_check(provider) -> Callable[[], dict]:
    def check() -> dict:
        before = getattr(provider, "fetches", 0)
        provider.token()
        return {"fetched": getattr(provider, "fetches", 0) != before}
    return check


def _company_check(bc, company_id: str, timeout: float) -> Callable[[], dict]:
    def check() -> dict:
        response = bc.request("GET", f"/companies({company_id})", ok=(404,), timeout=timeout, max_attempts=1)
        if response.status_code == 404:
            raise LookupError(f"BC has no company {company_id} in this environment (check COMPANY_MAP)")
        name = (response.json() or {}).get("name")
        return {"name": name} if name else {}
    return check


def check_health(rt: Runtime, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """`{status, failed, checks: {name: {ok, ms, error?}}, ms, counters}`; status "ok" or "unhealthy"."""
    started = time.monotonic()
    checks: dict[str, Callable[[], dict | None]] = {
        "storage": lambda: rt.storage.ping(),
        "basware_token": _token_check(rt.basware.tokens),
        "bc_token": _token_check(rt.bc.tokens),
    }
    for company_id in rt.settings.bc_companies():
        checks[f"bc_company:{company_id}"] = _company_check(rt.bc, company_id, timeout)
    results = _run(checks, timeout, Scrubber(rt.settings.secret_values()))
    failed = [name for name, result in results.items() if not result.ok]
    report = {"status": "unhealthy" if failed else "ok", "failed": failed,
              "checks": {name: result.as_dict() for name, result in results.items()}, "ms": _ms(started),
              "counters": metrics.REGISTRY.snapshot()}  # this instance, since it started
    if failed:
        log_event(log, "health.failed", logging.WARNING, failed=",".join(failed))
    return report
