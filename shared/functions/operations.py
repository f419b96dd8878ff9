"""Triggers of operations: health, the admin records API and the retention timer (issue 7).

- `GET /api/health` (function key): 200 when every check passes, 503 naming what failed (plus this
  instance's counters: posted, failed, dead_lettered, done, retries, throttled).
- `GET /api/admin/records?kind=&status=&limit=` (function key): jobs by flow and state.
- `GET /api/admin/records/{kind}/{id}` (function key): one job with its whole audit trail.
- `POST /api/admin/records/{kind}/{id}/replay` (function key): re-enqueue a failed or
  dead-lettered job; 202 enqueued, 200 a replay is already pending, 409 done/busy/in progress,
  404 unknown, 422 nothing readable to replay.
- timer `%RETENTION_SCHEDULE%`: removes finished jobs and audit rows older than RETENTION_DAYS.

Thin: the logic is in shared/admin.py, shared/health.py and shared/retention.py.
"""
import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("ml_connector.functions.operations")

RECORDS = "admin/records"  # spec.md section 3; shared/cli.py builds its URLs from the same names


def _runtime():
    from shared.runtime import runtime
    return runtime()


def _json(body, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared.health import check_health

    report = check_health(_runtime())
    return _json(report, 200 if report["status"] == "ok" else 503)


@bp.function_name("admin_records_list")
@bp.route(route=RECORDS, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def admin_records_list(req: func.HttpRequest) -> func.HttpResponse:
    from shared.admin import list_records

    raw_limit = req.params.get("limit") or "200"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 5000:
        return _json({"error": "limit must be a whole number from 1 to 5000"}, 400)
    kind, status = req.params.get("kind") or None, req.params.get("status") or None
    records = list_records(_runtime().jobs, kind, status, int(raw_limit))
    return _json({"kind": kind, "status": status, "count": len(records), "records": records})


@bp.function_name("admin_record_show")
@bp.route(route=RECORDS + "/{kind}/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def admin_record_show(req: func.HttpRequest) -> func.HttpResponse:
    from shared.admin import show_record

    rt = _runtime()
    kind, id = req.route_params.get("kind", ""), req.route_params.get("id", "")
    record = show_record(rt.jobs, rt.audit, kind, id, scrub=_scrubber(rt))
    if record is None:
        return _json({"error": f"no {kind} record with id {id}"}, 404)
    return _json(record)


@bp.function_name("admin_record_replay")
@bp.route(route=RECORDS + "/{kind}/{id}/replay", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def admin_record_replay(req: func.HttpRequest) -> func.HttpResponse:
    from shared.admin import replay_record

    outcome = replay_record(_runtime(), req.route_params.get("kind", ""), req.route_params.get("id", ""),
                            requested_by="operator (HTTP)")
    return _json(outcome.as_dict(), outcome.http_status)


@bp.function_name("retention")
@bp.timer_trigger(arg_name="timer", schedule="%RETENTION_SCHEDULE%", run_on_startup=False, use_monitor=True)
def retention(timer: func.TimerRequest) -> None:
    from shared.retention import purge

    purge(_runtime())


def _scrubber(rt):
    from shared.audit import Scrubber
    return Scrubber(rt.settings.secret_values())
