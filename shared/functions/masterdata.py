"""Triggers of the master-data flow (BC -> Basware).

- timer `%MASTERDATA_SCHEDULE%`: enqueues one `masterdata-imports` message per BC company and
  returns at once; the queue worker does the import, with the queue's retries and dead letters.
- `POST /api/admin/masterdata/sync?force=true|false[&async=true]` (function key): by default runs
  the import synchronously, every company in turn, and answers the run's summary as JSON
  (200 ok/partial, 409 another run busy, 502 the run failed). With `async=true` it enqueues like
  the timer and answers 202 with the job ids: use that where a first import takes longer than an
  HTTP request may (about 230 s behind Azure's front end; see bench/masterdata.py for rates).
- queue `masterdata-imports`: one company's run; raises when a retry can help.
- queue `masterdata-imports-poison`: the run becomes a dead-lettered job, replayable.
"""
import json
import logging

import azure.functions as func

from shared.core.telemetry import run_context
from shared.functions.queue_workers import register_queue_worker
from shared.store.storage import MASTERDATA_IMPORTS
from shared.core.settings import timer_schedule
from shared.core.runtime import Runtime

bp = func.Blueprint()
log = logging.getLogger("ml_connector.functions.masterdata")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _runtime():
    from shared.core.runtime import runtime
    return runtime()


def _flag(value: str | None) -> bool | None:
    text = (value or "").strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _json(body: dict, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def masterdata_sync(req: func.HttpRequest) -> func.HttpResponse:
    from shared.flows.masterdata import sync as masterdata

    force, run_async = _flag(req.params.get("force")), _flag(req.params.get("async"))
    if force is None or run_async is None:
        return _json({"error": "force and async take true or false"}, 400)
    rt = _runtime()
    if run_async:
        enqueued = masterdata.enqueue_sync(rt, force=force)
        return _json({"status": "accepted", "force": force, "enqueued": enqueued}, 202)
    with run_context("masterdata_sync"):
        from shared.store.runs import recorded

        summary = recorded(rt.storage, "masterdata_import", lambda: masterdata.sync_all(rt, force=force))
    status = {"busy": 409, "failed": 502}.get(summary.status, 200)
    return func.HttpResponse(summary.model_dump_json(), status_code=status, mimetype="application/json")


# `admin/...` is the original path (README, HTTP routes); the Azure Functions host
# refuses routes starting with admin (see shared/functions/operations.py), so `manage/...` serves
# the same function there.
for _prefix, _name in (("manage", "manage_masterdata_sync"), ("admin", "spec_admin_masterdata_sync")):
    bp.function_name(_name)(bp.route(route=f"{_prefix}/masterdata/sync", methods=["POST"],
                                     auth_level=func.AuthLevel.FUNCTION)(masterdata_sync))


@bp.function_name("masterdata_timer")
@bp.timer_trigger(arg_name="timer", schedule=timer_schedule("MASTERDATA_SCHEDULE"), run_on_startup=False, use_monitor=True)
def masterdata_timer(timer: func.TimerRequest) -> None:
    from shared.flows.masterdata.sync import enqueue_sync

    with run_context("masterdata_timer"):
        enqueued = enqueue_sync(_runtime())
        log.info("event=masterdata.scheduled companies=%d", len(enqueued))


def _import(rt: Runtime, raw: str, msg) -> None:
    from shared.flows.masterdata import sync as masterdata

    from shared.store.runs import recorded

    summary = recorded(rt.storage, "masterdata_import", lambda: masterdata.handle_import_message(rt, raw))
    log.info("event=masterdata.run status=%s jobs=%s", summary.status, ",".join(summary.jobs))


def _readable(raw: str) -> str | None:
    from shared.flows.masterdata import sync as masterdata

    return raw if masterdata.job_for_message(raw) is not None else None


def _dead_letter_ids(raw: str) -> dict:
    from shared.flows.masterdata import sync as masterdata

    return {"kind": masterdata.KIND, "job": masterdata.job_for_message(raw)}


masterdata_imports, masterdata_imports_poison = register_queue_worker(
    bp, name="masterdata_imports", queue=MASTERDATA_IMPORTS, read=_readable, handle=_import,
    poison_reason="retries exhausted: the master-data import kept failing",
    dead_letter_ids=_dead_letter_ids)
