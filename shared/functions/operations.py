"""Triggers of operations: health, the admin records API and the retention timer.

- `GET /api/health` (function key): 200 when every check passes, 503 naming what failed (plus this
  instance's counters: posted, failed, dead_lettered, done, retries, throttled).
- `GET /api/manage/records?kind=&status=&limit=` (function key): jobs by flow and state.
- `GET /api/manage/records/{kind}/{id}` (function key): one job with its whole audit trail.
- `POST /api/manage/records/{kind}/{id}/replay` (function key): re-enqueue a failed or
  dead-lettered job; 202 enqueued, 200 a replay is already pending, 409 done/busy/in progress,
  404 unknown, 422 nothing readable to replay.
- The same three under `/api/admin/records...`, the paths the product contract names. The Azure
  Functions host refuses HTTP routes and function names that start with `admin`, even under the
  `/api` prefix (azure-functions-host issues #1781 and #7634), so in Azure only the `manage/` routes
  come up (the host lists the `admin/` ones as "functions in error"); the local host serves both.
- timer on RETENTION_SCHEDULE: removes finished jobs and audit rows older than RETENTION_DAYS.

Thin: the logic is in shared/ops/admin.py, shared/ops/health.py and shared/ops/retention.py.
"""
import json
import logging

import azure.functions as func

from shared.core.settings import timer_schedule
from shared.core.runtime import Runtime

bp = func.Blueprint()
log = logging.getLogger("ml_connector.functions.operations")

# prefix -> function-name prefix; shared/ops/cli.py uses "manage", which works on every host
ROUTE_PREFIXES = {"manage": "manage", "admin": "spec_admin"}


def _runtime():
    from shared.core.runtime import runtime
    return runtime()


def _json(body, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops.health import check_health

    report = check_health(_runtime())
    return _json(report, 200 if report["status"] == "ok" else 503)


def records_list(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops.admin import list_records

    raw_limit = req.params.get("limit") or "200"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 5000:
        return _json({"error": "limit must be a whole number from 1 to 5000"}, 400)
    kind, status = req.params.get("kind") or None, req.params.get("status") or None
    records = list_records(_runtime().jobs, kind, status, int(raw_limit))
    return _json({"kind": kind, "status": status, "count": len(records), "records": records})


def record_show(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops.admin import lookup_record

    rt = _runtime()
    kind, id = req.route_params.get("kind", ""), req.route_params.get("id", "")
    status, body = lookup_record(rt.jobs, rt.audit, kind, id, scrub=_scrubber(rt))
    return _json(body, status)


def record_replay(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops.admin import replay_record

    outcome = replay_record(_runtime(), req.route_params.get("kind", ""), req.route_params.get("id", ""),
                            requested_by="operator (HTTP)")
    return _json(outcome.as_dict(), outcome.http_status)


for _prefix, _name in ROUTE_PREFIXES.items():
    for _suffix, _methods, _handler in (("records", ["GET"], records_list),
                                        ("records/{kind}/{id}", ["GET"], record_show),
                                        ("records/{kind}/{id}/replay", ["POST"], record_replay)):
        bp.function_name(f"{_name}_{_handler.__name__}")(
            bp.route(route=f"{_prefix}/{_suffix}", methods=_methods, auth_level=func.AuthLevel.FUNCTION)(_handler))


@bp.function_name("retention")
@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("RETENTION_SCHEDULE"), run_on_startup=False,
                  use_monitor=True)
def retention(timer: func.TimerRequest) -> None:
    from shared.ops.retention import purge
    from shared.core.telemetry import run_context

    with run_context("retention"):
        purge(_runtime())


def _scrubber(rt: Runtime):
    from shared.core.secrets import Scrubber
    return Scrubber(rt.settings.secret_values())
