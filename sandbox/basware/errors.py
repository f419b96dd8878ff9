"""Error bodies in the shape of each Basware surface (the error schemas of Basware's P2P OpenAPI).

- P2P API (`/v1/...`, `/v2/...`): `ResponseEntityList {requestId, hasErrors, errors:[{externalCode,
  type, code, message, info}]}` with Basware's `type` and `code` enums.
- Token API (`/v1/tokens`, FastAPI): `{error, error_description}`; 422 `{detail:[{loc, msg, type}]}`.
- Push-notification API (`/v1/subscriptions`, `/v1/tasks`, FastAPI): 400 `{requestId, hasError,
  errorMessages:[{type, code, message}]}`, other errors `{message}`, 404 `{detail}`.
- The pre-signed redirect target (S3-like): an XML `<Error>` document.
"""
from __future__ import annotations

from typing import Iterable
from xml.sax.saxutils import escape

from sandbox.common import Response

# ErrorEntity.code -> ErrorEntity.type
CODE_TYPES = {
    "SCHEMA_VALIDATION_ERROR": "VALIDATION",
    "PARAMETER_VALIDATION_ERROR": "VALIDATION",
    "EXTERNAL_CODE_MISMATCH": "VALIDATION",
    "ACCESS_TOKEN_VALIDATION_ERROR": "SECURITY",
    "CREDENTIAL_VALIDATION_ERROR": "SECURITY",
    "DATA_ORIGIN_VALIDATION_ERROR": "SECURITY",
    "CONFLICT_IN_POST": "BUSINESS",
    "METHOD_NOT_ALLOWED": "BUSINESS",
    "ENTITY_NOT_FOUND": "BUSINESS",
    "DATA_VALIDATION_FAILED": "BUSINESS",
    "UNEXPECTED_ERROR": "TECHNICAL",
    "SNS_PUBLISH_ERROR": "TECHNICAL",
    "SQS_PUBLISH_ERROR": "TECHNICAL",
}

# codes used by sandbox/common.py's generic paths (routing, faults, throttle) -> Basware codes
GENERIC_CODES = {
    "NotFound": "ENTITY_NOT_FOUND",
    "MethodNotAllowed": "METHOD_NOT_ALLOWED",
    "BadRequest": "SCHEMA_VALIDATION_ERROR",
}

TOKEN_ERRORS = {400: "invalid_request", 401: "invalid_client", 403: "access_denied", 429: "too_many_requests",
                503: "temporarily_unavailable"}


def entity_list(status: int, code: str, messages: str | Iterable[str], request_id: str | None,
                external_codes: Iterable[str | None] | None = None, info: str | None = None,
                headers: dict | None = None, type_: str | None = None) -> Response:
    """A ResponseEntityList with one error per message."""
    if isinstance(messages, str):
        messages = [messages]
    messages = list(messages)
    codes = list(external_codes) if external_codes is not None else [None] * len(messages)
    kind = type_ or CODE_TYPES.get(code, "TECHNICAL")
    errors = [{"externalCode": ext, "type": kind, "code": code, "message": message, "info": info}
              for message, ext in zip(messages, codes)]
    return Response.json({"requestId": request_id, "hasErrors": True, "errors": errors}, status, headers)


def generic(status: int, code: str, message: str, request_id: str | None, headers: dict | None = None) -> Response:
    """A ResponseEntityList for an error raised by the shared plumbing (faults, throttle, routing)."""
    basware_code = GENERIC_CODES.get(code)
    if basware_code is None:
        basware_code = code if code in CODE_TYPES else "UNEXPECTED_ERROR"
    info = None if basware_code == code else code
    return entity_list(status, basware_code, message, request_id, info=info, headers=headers)


def token_error(status: int, error: str, description: str | None = None, headers: dict | None = None) -> Response:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return Response.json(body, status, headers)


def fastapi_422(loc: list, msg: str, type_: str = "value_error.missing", headers: dict | None = None) -> Response:
    return Response.json({"detail": [{"loc": loc, "msg": msg, "type": type_}]}, 422, headers)


def push_validation(messages: Iterable[str], request_id: str | None) -> Response:
    """400 of the push-notification API (ValidationErrorResponse)."""
    return Response.json({"requestId": request_id, "hasError": True,
                          "errorMessages": [{"type": "VALIDATION", "code": "SCHEMA_VALIDATION_ERROR", "message": m}
                                            for m in messages]}, 400)


def push_message(status: int, message: str, headers: dict | None = None) -> Response:
    return Response.json({"message": message}, status, headers)


def s3_error(status: int, code: str, message: str, request_id: str, extra: dict | None = None) -> Response:
    parts = [f"<Code>{escape(code)}</Code>", f"<Message>{escape(message)}</Message>"]
    for key, value in (extra or {}).items():
        parts.append(f"<{key}>{escape(str(value))}</{key}>")
    parts.append(f"<RequestId>{escape(request_id)}</RequestId>")
    body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + "".join(parts) + "</Error>"
    return Response(status, body.encode(), {"Content-Type": "application/xml", "x-amz-request-id": request_id})
