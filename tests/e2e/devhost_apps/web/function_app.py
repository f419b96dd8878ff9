"""HTTP fixture app: route parameters, query, body, function keys, failures, settings."""
import json
import os

import azure.functions as func

bp = func.Blueprint()


@bp.route(route="items/{kind}/{id?}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    payload = {"method": req.method, "url": req.url, "route": dict(req.route_params), "query": dict(req.params),
               "body": req.get_body().decode(), "x_test": req.headers.get("X-Test")}
    return func.HttpResponse(json.dumps(payload), status_code=201 if req.method == "POST" else 200,
                             mimetype="application/json", headers={"X-Echo": "yes"})


@bp.route(route="items/special/{id:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def special(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"special {req.route_params['id']}")


@bp.route(route="secret", methods=["GET"])  # no auth_level: the app's FUNCTION level applies
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("the secret")


@bp.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("database password is hunter2")


@bp.route(route="settings", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def settings(req: func.HttpRequest) -> func.HttpResponse:
    names = ("GREETING", "OVERRIDDEN", "ONLY_IN_ENV")
    return func.HttpResponse(json.dumps({name: os.environ.get(name) for name in names}), mimetype="application/json")


app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)
