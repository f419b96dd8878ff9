"""Triggers of the operator console: the page, its assets, and the data routes it reads.

- `GET /api/manage/console` and `GET /api/manage/console/assets/{name}` (anonymous): the page and
  its script and style sheet from shared/ops/console_static/, shipped in the package (no CDN). They
  hold no data: a browser cannot send a header when it navigates, and a key in the URL (`?code=`)
  would land in logs and history. In Azure, App Service authentication (Entra ID) guards them
  (infra/app/api.bicep, docs/deploy.md).
- `GET /api/manage/console/api/overview[?fresh=true]` (function key): counts per flow and state (reused
  for 60 s unless `fresh`), health, last runs.
- `GET /api/manage/console/api/records?kind=&state=&time=&q=&limit=&next=` (function key): one page.
- `GET /api/manage/console/api/records/{kind}/{id}` (function key): one record with its trail and links.

The page sends the key as `x-functions-key` on every call; replay and "sync master data now" are the
records API's POST routes (shared/functions/operations.py, shared/functions/masterdata.py), so they
follow the same rules as the CLI. Thin: the logic is in shared/ops/console.py.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import azure.functions as func
from shared.core.runtime import Runtime

bp = func.Blueprint()
log = logging.getLogger("ml_connector.functions.console")

STATIC = Path(__file__).resolve().parent.parent / "ops" / "console_static"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css", "favicon.svg": "image/svg+xml"}
# No inline script or style, nothing from another origin, never inside another site's frame
# (a framed console could be clicked into a replay: clickjacking).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_company_names: dict[str, str | None] = {}
_counts = None  # the overview's CountCache, one per process
_names_lock = threading.Lock()


def _runtime():
    from shared.core.runtime import runtime
    return runtime()


def _json(body, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@bp.function_name("console_page")
@bp.route(route="manage/console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse((STATIC / "index.html").read_bytes(), status_code=200, mimetype="text/html",
                             charset="utf-8", headers=PAGE_HEADERS)


@bp.function_name("console_asset")
@bp.route(route="manage/console/assets/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_asset(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name", "")
    if name not in ASSETS:  # a fixed list: no path from the URL ever reaches the file system
        return func.HttpResponse("not found", status_code=404, mimetype="text/plain")
    return func.HttpResponse((STATIC / name).read_bytes(), status_code=200, mimetype=ASSETS[name],
                             charset="utf-8", headers=PAGE_HEADERS)


@bp.function_name("console_overview")
@bp.route(route="manage/console/api/overview", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_overview(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops.console import overview
    from shared.ops.health import check_health
    from shared.ops.console import CountCache
    from shared.store.runs import last_runs

    global _counts
    if _counts is None:
        _counts = CountCache()
    rt = _runtime()
    fresh = (req.params.get("fresh") or "").lower() in ("1", "true")
    return _json(overview(rt.storage, check_health(rt), last_runs(rt.storage), cache=_counts, fresh=fresh))


@bp.function_name("console_records")
@bp.route(route="manage/console/api/records", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_records(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops.console import BadQuery, search_records

    raw_limit = req.params.get("limit") or "50"
    if not raw_limit.isdigit():
        return _json({"error": "limit must be a whole number from 1 to 200"}, 400)
    rt = _runtime()
    try:
        page = search_records(rt.storage, kind=req.params.get("kind") or None, state=req.params.get("state") or None,
                              window=req.params.get("time") or None, search=req.params.get("q"),
                              limit=int(raw_limit), token=req.params.get("next"), scrub=_scrubber(rt))
    except BadQuery as exc:
        return _json({"error": str(exc)}, 400)
    return _json(page)


@bp.function_name("console_record")
@bp.route(route="manage/console/api/records/{kind}/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_record(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops.console import record_view

    rt = _runtime()
    kind, id = req.route_params.get("kind", ""), req.route_params.get("id", "")
    record = record_view(rt.jobs, rt.audit, kind, id, scrub=_scrubber(rt), bc_tenant=rt.settings.bc_tenant_id,
                         bc_environment=rt.settings.bc_environment, company_name=lambda cid: _company_name(rt, cid))
    if record is None:
        return _json({"error": f"no {kind} record with id {id}"}, 404)
    return _json(record)


def _company_name(rt: Runtime, company_id: str) -> str | None:
    """The BC company's name for the web client link, read once per process (`GET companies(id)`)."""
    with _names_lock:
        if company_id in _company_names:
            return _company_names[company_id]
    try:
        response = rt.bc.request("GET", f"/companies({company_id})", ok=(404,), timeout=3, max_attempts=1)
        name = (response.json() or {}).get("name") if response.status_code == 200 else None
    except Exception:  # noqa: BLE001 - a link is a convenience; the page works without it
        log.info("event=console.company_name_unavailable company=%s", company_id)
        return None
    with _names_lock:
        _company_names[company_id] = name
    return name


def _scrubber(rt: Runtime):
    from shared.store.audit import Scrubber
    return Scrubber(rt.settings.secret_values())
