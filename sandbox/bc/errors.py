"""Business Central error shapes (Microsoft Learn, "Troubleshooting API errors" and the API error codes).

Every API error is `{"error": {"code", "message"}}` with the message ending in
`  CorrelationId:  <guid>.`. Handlers raise `BcError`; the app turns it into a response.
Application_* errors (business rules) answer 400, Internal_RecordNotFound 404,
Request_EntityChanged 409.
"""
from __future__ import annotations

import uuid


class BcError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": f"{message}  CorrelationId:  {uuid.uuid4()}."}}


# -- the families named in Microsoft Learn, webservices/dynamics-error-codes ----------------------
def bad_request(message: str, code: str = "BadRequest") -> BcError:
    return BcError(400, code, message)


def dialog(message: str) -> BcError:
    """Application_DialogException: most posting and validation errors (AL `Error(...)`)."""
    return BcError(400, "Application_DialogException", message)


def record_not_found(table: str, fields: str) -> BcError:
    return BcError(404, "Internal_RecordNotFound",
                   f"The {table} does not exist. Identification fields and values: {fields}")


def missing_related(table: str, fields: str) -> BcError:
    """A referenced record (vendor, account, dimension value...) does not exist: a data error."""
    return dialog(f"The {table} does not exist. Identification fields and values: {fields}")


def field_must_be(field: str, expected: str, table: str, key: str, current: str) -> BcError:
    """A TestField failure, worded like BC (note BC's two spaces before 'in')."""
    return BcError(400, "Application_FieldValidationException",
                   f"{field} must be equal to '{expected}'  in {table}: {key}. Current value is '{current}'.")


def string_too_long(value: str, max_length: int) -> BcError:
    return BcError(400, "Application_StringExceededLength",
                   f"The length of the string is {len(value)}, but it must be less than or equal to "
                   f"{max_length} characters. Value: {value}")


def read_only(prop: str) -> BcError:
    return BcError(400, "BadRequest_InvalidOperation", f"Control '{prop}' is read-only.")


def unknown_property(prop: str, type_name: str) -> BcError:
    return bad_request(f"The property '{prop}' does not exist on type 'Microsoft.NAV.{type_name}'. "
                       "Make sure to only use property names that are defined by the type.")


def cannot_convert(value, edm_type: str) -> BcError:
    return bad_request(f"Cannot convert the literal '{value}' to the expected type '{edm_type}'.")


def method_not_allowed(method: str, entity_set: str) -> BcError:
    return BcError(405, "BadRequest_MethodNotAllowed",
                   f"'{method}' requests for '{entity_set}' of EdmType 'Entity' are not allowed within "
                   "Dynamics 365 Business Central OData web services.")


def no_resource(path: str) -> BcError:
    return BcError(404, "BadRequest_NotFound", f"No HTTP resource was found that matches the request URI '{path}'.")


# -- concurrency (Microsoft Learn, webservices/dynamics-error-codes) -------------------------------
def etag_required() -> BcError:
    return BcError(400, "BadRequest_InvalidToken",
                   "Could not validate the client concurrency token required by the service. "
                   "Please provide a valid token in the client request.")


def entity_changed() -> BcError:
    return BcError(409, "Request_EntityChanged", "Another user has already changed the record.")
