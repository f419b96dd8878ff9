"""BC-specific control routes under `/_sandbox/` (common.py adds calls, faults, config, health).

| route | effect |
|---|---|
| `POST /_sandbox/purchaseInvoices/{id}/pay` (and `purchaseCreditMemos`) `{amount?}` | apply a payment (default: the rest); Paid and notified once fully paid |
| `POST /_sandbox/purchaseInvoices/{id}/unapply` `{paymentNo?}` | unapply a payment (the latest); a Paid invoice is Open again, notified |
| `GET  /_sandbox/documents` | every draft and posted document (JSON with lines) |
| `POST /_sandbox/vendors/{number}` `{field: value}` / `DELETE` | create/change/delete a vendor "in BC" |
| `POST /_sandbox/accounts/{number}` `{field: value}` / `DELETE` | same for G/L accounts |
| `POST /_sandbox/dimensionValues/{dimension}/{code}` `{displayName?, blocked?}` / `DELETE` | same for dimension values |
| `POST /_sandbox/purchaseOrders` `{vendorNumber, lines, status?, orderDate?, number?}` | add an order |
| `POST /_sandbox/purchaseOrders/{id or number}` `{field: value, lines?}` | change an order |
| `GET  /_sandbox/subscriptions` | subscriptions, handshakes and notification deliveries |
| `POST /_sandbox/subscriptions/{id}/drop` | BC loses the subscription |
| `POST /_sandbox/notifications/flush` | wait until queued notifications are delivered |
| `POST /_sandbox/seed` `{vendors, accounts, dimension_values, dimension?}` | bulk data |
| `POST /_sandbox/clock` `{"advance": seconds}` | move the sandbox clock (token and subscription expiry) |
| `POST /_sandbox/tokens/revoke` | every issued token becomes invalid |
| `GET  /_sandbox/stats` | tokens issued, documents, subscriptions, deliveries |
| `POST /_sandbox/defaultDimensions/{Vendor or GLAccount}/{number}/{dimension}` `{valueCode, postingValidation}` / `DELETE` | a default dimension "in BC" |
| `POST /_sandbox/late-commits` `{path, method?, count? or rate?, seed?, delay, commit_after}` / `DELETE` | requests answered by a dropped connection, committed later (latecommit.py) |
"""
from __future__ import annotations

import functools
from typing import Callable

from sandbox.common import Request, Response, SandboxApp

from . import errors as E


def _guarded(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
    @functools.wraps(fn)
    def wrapper(req: Request) -> Response:
        try:
            return fn(req)
        except E.BcError as exc:
            return Response.json(E.error_body(exc.code, exc.message), exc.status)
        except KeyError as exc:
            return Response.json({"error": {"code": "NotFound", "message": str(exc.args[0] if exc.args else exc)}},
                                 404)
        except (ValueError, TypeError) as exc:
            return Response.json({"error": {"code": "BadRequest", "message": str(exc)}}, 400)

    return wrapper


def register_control_routes(app: SandboxApp) -> None:
    """Adds the routes to `app`, a `sandbox.bc.app.BcSandbox` (typed by its base so this module does
    not import the app that imports it)."""
    def route(method: str, pattern: str):
        def register(fn):
            app.add_route(method, pattern, _guarded(fn))
            return fn
        return register

    def doc_json(doc) -> dict:
        out = doc.to_json()
        out["draftNumber"] = doc.draft_number
        out["lines"] = [dict(doc.line_json(ln), dimensionSetLines=[doc.dim_json(e, ln.id, "line")
                                                                   for e in ln.dims.values()]) for ln in doc.lines]
        out["dimensionSetLines"] = [doc.dim_json(e, doc.id, "header") for e in doc.dims.values()]
        out["entitySet"] = doc.type.entity_set
        return out

    for entity_set in ("purchaseInvoices", "purchaseCreditMemos"):
        @route("POST", f"/_sandbox/{entity_set}/{{id}}/pay")
        def _pay(req):
            return Response.json(doc_json(app.pay(req.params["id"], (req.json() or {}).get("amount"))))

    @route("POST", "/_sandbox/purchaseInvoices/{id}/unapply")
    def _unapply(req):
        return Response.json(doc_json(app.unapply(req.params["id"], (req.json() or {}).get("paymentNo"))))

    @route("GET", "/_sandbox/documents")
    def _documents(req):
        with app.lock:
            return Response.json({"value": [doc_json(d) for d in app.documents.values()]})

    @route("POST", "/_sandbox/vendors/{number}")
    def _set_vendor(req):
        return Response.json(_strip(app.set_vendor(req.params["number"], **(req.json() or {}))))

    @route("DELETE", "/_sandbox/vendors/{number}")
    def _delete_vendor(req):
        app.delete_vendor(req.params["number"])
        return Response.empty()

    @route("POST", "/_sandbox/accounts/{number}")
    def _set_account(req):
        return Response.json(_strip(app.set_account(req.params["number"], **(req.json() or {}))))

    @route("DELETE", "/_sandbox/accounts/{number}")
    def _delete_account(req):
        app.delete_account(req.params["number"])
        return Response.empty()

    @route("POST", "/_sandbox/dimensionValues/{dimension}/{code}")
    def _set_value(req):
        return Response.json(_strip(app.set_dimension_value(req.params["dimension"], req.params["code"],
                                                            **(req.json() or {}))))

    @route("DELETE", "/_sandbox/dimensionValues/{dimension}/{code}")
    def _delete_value(req):
        app.delete_dimension_value(req.params["dimension"], req.params["code"])
        return Response.empty()

    @route("POST", "/_sandbox/purchaseOrders")
    def _add_order(req):
        body = dict(req.json() or {})
        vendor = body.pop("vendorNumber")
        lines = body.pop("lines", [])
        kwargs = {"status": body.get("status", "Open"), "order_date": body.get("orderDate"),
                  "number": body.get("number")}
        return Response.json(app.add_purchase_order(vendor, lines, **kwargs), 201)

    @route("POST", "/_sandbox/purchaseOrders/{key}")
    def _set_order(req):
        return Response.json(app.set_purchase_order(req.params["key"], **(req.json() or {})))

    @route("GET", "/_sandbox/subscriptions")
    def _subscriptions(req):
        subs = app.subscriptions
        return Response.json({"value": [_strip(s) for s in subs.list()], "handshakes": list(subs.handshakes),
                              "deliveries": list(subs.deliveries)})

    @route("POST", "/_sandbox/subscriptions/{id}/drop")
    def _drop(req):
        app.drop_subscription(req.params["id"])
        return Response.empty()

    @route("POST", "/_sandbox/notifications/flush")
    def _flush(req):
        timeout = float(req.q("timeout", "10"))
        return Response.json({"idle": app.flush_notifications(timeout)})

    @route("POST", "/_sandbox/seed")
    def _seed(req):
        body = req.json() or {}
        app.seed_bulk(int(body.get("vendors", 0)), int(body.get("accounts", 0)),
                      int(body.get("dimension_values", 0)), body.get("dimension"))
        return Response.empty()

    @route("POST", "/_sandbox/clock")
    def _clock(req):
        app.clock.advance(float((req.json() or {}).get("advance", 0)))
        return Response.json({"now": app.clock.now().isoformat()})

    @route("POST", "/_sandbox/defaultDimensions/{parent}/{number}/{dimension}")
    def _set_default(req):
        body = req.json() or {}
        parent = "G/L Account" if req.params["parent"] in ("GLAccount", "G/L Account", "account") else "Vendor"
        rec = app.set_default_dimension(parent, req.params["number"], req.params["dimension"],
                                        body.get("valueCode"), body.get("postingValidation", " "))
        return Response.json(_strip(rec))

    @route("DELETE", "/_sandbox/defaultDimensions/{parent}/{number}/{dimension}")
    def _delete_default(req):
        parent = "G/L Account" if req.params["parent"] in ("GLAccount", "G/L Account", "account") else "Vendor"
        app.delete_default_dimension(parent, req.params["number"], req.params["dimension"])
        return Response.empty()

    @route("POST", "/_sandbox/late-commits")
    def _late(req):
        body = req.json() or {}
        app.late_commits.add(body["path"], method=body.get("method", "POST"),
                             count=None if "rate" in body else int(body.get("count", 1)),
                             rate=float(body.get("rate", 1.0)), delay=float(body.get("delay", 0.5)),
                             commit_after=float(body.get("commit_after", 2.0)), seed=body.get("seed"))
        return Response.empty()

    @route("DELETE", "/_sandbox/late-commits")
    def _late_clear(req):
        app.late_commits.clear()
        return Response.empty()

    @route("POST", "/_sandbox/tokens/revoke")
    def _revoke(req):
        app.revoke_tokens()
        return Response.empty()

    @route("GET", "/_sandbox/stats")
    def _stats(req):
        docs = app.documents.values()
        return Response.json({"tokens_issued": app.tokens_issued,
                              "documents": {"draft": sum(not d.posted for d in docs),
                                            "posted": sum(d.posted for d in docs)},
                              "subscriptions": len(app.subscriptions.list()),
                              "deliveries": len(app.subscriptions.deliveries),
                              "throttle_rejections": app.throttle.rejections})


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}
