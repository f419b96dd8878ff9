"""Validate JSON against the schemas of an OpenAPI 3.0 document (Basware publishes its APIs as such).

OpenAPI 3.0 schemas are almost JSON Schema; the differences handled here are `nullable: true`
(becomes a `"null"` type), boolean `exclusiveMinimum`/`exclusiveMaximum`, and OpenAPI-only
keywords (`example`, `xml`, `discriminator`, ...), which are dropped. `$ref`s stay references into
the converted document, registered once per spec, so a 1.3 MB spec is converted once and each
validator is compiled once and cached (the master-data bench sends 35k records).

    from sandbox import openapi
    openapi.validate("TransferResponseEntity", body)            # -> ["responseMessage: ...", ...]
    openapi.validate("POST /v1/vendors", records)               # an operation's request body
    openapi.request_body_schema("/v1/lists/ACC_LIST_1", "post")  # path templates are matched
    openapi.validate("Subscription-Input", sub, spec="push-notification")

Errors are short readable strings, `<where>: <what>`, where `<where>` is a path such as
`[3].companies[0].companyCode` (`(root)` for the instance itself).

Formats: `date-time`/`date` (ISO 8601, as .NET and pydantic parse them) and `uri` are checked;
numeric formats (`double`, `int32`) are not, as Basware declares amounts as doubles.
"""
from __future__ import annotations

import json
import os
import re
import threading
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# Basware's published OpenAPI files, vendored next to the Basware sandbox (copied unchanged from the
# files Basware publishes). BASWARE_OPENAPI_DIR points elsewhere, e.g. at a newer
# download of https://api.basware.com/p2pOpenApiSwagger/p2popenapi.json.
BASWARE_OPENAPI_DIR = Path(__file__).resolve().parent / "basware" / "openapi"
BASWARE_SPECS = {
    "p2p": "basware-p2p-openapi.json",
    "authentication": "basware-authentication-openapi.json",
    "push-notification": "basware-push-notification-openapi.json",
}
MAX_ERRORS = 50

_DROP = {"example", "examples", "nullable", "xml", "externalDocs", "discriminator", "deprecated"}
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
_SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SCHEMA_ONE = {"items", "not", "additionalProperties", "contains", "propertyNames", "if", "then", "else"}


def to_json_schema(node: Any, base_uri: str = "") -> Any:
    """One OpenAPI 3.0 schema object -> JSON Schema 2020-12; local `$ref`s are prefixed with `base_uri`."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key.startswith("x-"):
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = base_uri + value if value.startswith("#") else value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: to_json_schema(v, base_uri) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [to_json_schema(v, base_uri) for v in value]
        elif key in _SCHEMA_ONE:
            out[key] = to_json_schema(value, base_uri) if isinstance(value, dict) else value
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value and bound in node:
                out[key] = node[bound]
        elif key in ("minimum", "maximum") and node.get("exclusive" + key.title()) is True:
            continue  # became exclusiveMinimum/Maximum above
        else:
            out[key] = value
    if node.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = kind + ["null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = list(out["enum"]) + [None]
        if "type" not in out:  # a $ref or a composition: null is one more alternative
            out = {"anyOf": [out, {"type": "null"}]}
    return out


# -- formats and types ----------------------------------------------------------------------------
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    datetime.fromisoformat(value.replace("z", "Z"))  # 3.11: accepts 'Z', offsets, fractions, date only
    return True


@_FORMATS.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    date.fromisoformat(value)
    return True


@_FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc) and not any(c.isspace() for c in value)


def _is_integer(checker, instance) -> bool:
    if isinstance(instance, bool):
        return False
    if isinstance(instance, Decimal):  # JSON parsed with parse_float=Decimal: 5.0 is an integer
        return instance.is_finite() and instance == instance.to_integral_value()
    return Draft202012Validator.TYPE_CHECKER.is_type(instance, "integer")


_Validator = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


# -- error messages -------------------------------------------------------------------------------
def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_JSON_TYPES = ((bool, "boolean"), (str, "string"), (int, "integer"), (float, "number"), (Decimal, "number"),
               (list, "array"), (dict, "object"), (type(None), "null"))


def _json_type(value: Any) -> str:
    return next((name for cls, name in _JSON_TYPES if isinstance(value, cls)), type(value).__name__)


def _leaves(error: ValidationError) -> list[ValidationError]:
    """For `anyOf: [X, null]` (a nullable $ref) report what is wrong against X, not 'no branch matched'."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches = error.validator_value
        non_null = [i for i, b in enumerate(branches) if b != {"type": "null"}]
        if len(non_null) == 1 and len(branches) == 2:
            inner = [e for e in error.context if e.schema_path and e.schema_path[0] == non_null[0]]
            if inner:
                return [leaf for e in inner for leaf in _leaves(e)]
    return [error]


def describe(error: ValidationError) -> str:
    where = _where(error.absolute_path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "maxLength" and isinstance(value, str):
        return f"{where}: is {len(value)} characters, longer than the maximum of {expected}"
    if kind == "minLength" and isinstance(value, str):
        return f"{where}: is {len(value)} characters, shorter than the minimum of {expected}"
    if kind == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where}: expected {wanted}, got {_json_type(value)} {_short(value, 40)}"
    if kind == "enum":
        return f"{where}: {_short(value, 40)} is not one of {_short(expected, 160)}"
    if kind == "format":
        return f"{where}: {_short(value, 60)} is not a valid {expected}"
    if kind in ("maxItems", "minItems") and isinstance(value, list):
        bound = "at most" if kind == "maxItems" else "at least"
        return f"{where}: has {len(value)} items, {bound} {expected} allowed"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern"):
        return f"{where}: {_short(value, 60)} fails {kind} {_short(expected, 80)}"
    message = error.message
    return f"{where}: {message if len(message) <= 300 else message[:297] + '...'}"


# -- specs ----------------------------------------------------------------------------------------
class OpenApiSpec:
    """One OpenAPI document: converted schemas, request-body lookup, cached compiled validators."""

    def __init__(self, document: dict, name: str = "spec") -> None:
        self.document = document
        self.name = name
        self.uri = f"urn:openapi:{re.sub(r'[^A-Za-z0-9.-]', '-', name)}"
        converted = {"components": {"schemas": {
            key: to_json_schema(value, self.uri)
            for key, value in (document.get("components", {}).get("schemas") or {}).items()}}}
        self._components = converted["components"]["schemas"]
        self._registry = Registry().with_resource(
            self.uri, Resource.from_contents(converted, default_specification=DRAFT202012))
        self._validators: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._templates = [(re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(p)) + "$"), p)
                           for p in document.get("paths", {})]

    @classmethod
    def from_file(cls, path: str | os.PathLike, name: str | None = None) -> "OpenApiSpec":
        with open(path, "rb") as fh:
            return cls(json.load(fh), name or Path(path).stem)

    # -- lookup ----------------------------------------------------------------------------------------
    def operation(self, path: str, method: str) -> tuple[str, dict] | None:
        """(path template, operation object) for a concrete path such as `/v1/lists/ACC_LIST_1`."""
        paths = self.document.get("paths", {})
        if path in paths and method.lower() in paths[path]:
            return path, paths[path][method.lower()]
        for regex, template in self._templates:
            if regex.match(path) and method.lower() in paths[template]:
                return template, paths[template][method.lower()]
        return None

    def request_body_pointer(self, path: str, method: str, content_type: str = "application/json") -> str | None:
        found = self.operation(path, method)
        if found is None:
            return None
        template, op = found
        content = (op.get("requestBody") or {}).get("content") or {}
        media = content_type if content_type in content else next(iter(content), None)
        if media is None or "schema" not in content[media]:
            return None
        return "#/paths/" + "/".join(_escape(p) for p in (template, method.lower(), "requestBody", "content",
                                                           media, "schema"))

    def request_body_schema(self, path: str, method: str, content_type: str = "application/json") -> dict | None:
        """The JSON Schema (converted; `$ref`s point into this spec) of an operation's request body."""
        pointer = self.request_body_pointer(path, method, content_type)
        return None if pointer is None else self.schema(pointer)

    def _pointer(self, ref: str) -> str:
        if ref.startswith("#/"):
            return ref
        if " " in ref:  # "POST /v1/vendors"
            method, _, path = ref.partition(" ")
            pointer = self.request_body_pointer(path.strip(), method)
            if pointer is None:
                raise KeyError(f"{self.name}: no request body for {ref}")
            return pointer
        return f"#/components/schemas/{_escape(ref)}"

    def schema(self, ref: str) -> dict:
        """A schema by component name, JSON pointer (`#/...`) or `"METHOD /path"` (its request body)."""
        pointer = self._pointer(ref)
        node: Any = self.document
        for part in pointer[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"{self.name}: no schema at {pointer}")
            node = node[part]
        return to_json_schema(node, self.uri)

    def _inline(self, node: Any, stack: tuple[str, ...]) -> Any:
        """Replace component `$ref`s by the components themselves (a third faster to validate);
        a recursive reference stays a `$ref`, resolved through the registry."""
        if isinstance(node, list):
            return [self._inline(v, stack) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        prefix = self.uri + "#/components/schemas/"
        if isinstance(ref, str) and ref.startswith(prefix) and len(node) == 1:
            name = ref[len(prefix):].replace("~1", "/").replace("~0", "~")
            if name in stack or name not in self._components:
                return node
            return self._inline(self._components[name], stack + (name,))
        return {k: (v if k in ("enum", "const", "required") else self._inline(v, stack)) for k, v in node.items()}

    def validator(self, ref: str):
        with self._lock:
            found = self._validators.get(ref)
        if found is None:
            found = _Validator(self._inline(self.schema(ref), ()), registry=self._registry,
                               format_checker=_FORMATS)
            with self._lock:
                self._validators[ref] = found
        return found

    def validate(self, ref: str, instance: Any, limit: int = MAX_ERRORS) -> list[str]:
        """Readable problems of `instance` against the schema `ref` (empty when valid)."""
        problems: list[str] = []
        for error in self.validator(ref).iter_errors(instance):
            problems.extend(describe(leaf) for leaf in _leaves(error))
            if len(problems) >= limit * 4:
                break
        unique = sorted(set(problems), key=_natural)
        if len(unique) > limit:
            unique = unique[:limit] + [f"... and {len(unique) - limit} more problems"]
        return unique

    def validate_request(self, path: str, method: str, instance: Any) -> list[str]:
        pointer = self.request_body_pointer(path, method)
        if pointer is None:
            raise KeyError(f"{self.name}: {method.upper()} {path} takes no request body")
        return self.validate(pointer, instance)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _natural(text: str):
    """Sort `[2]` before `[10]`."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


_SPEC_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _load(path: str, name: str) -> OpenApiSpec:
    return OpenApiSpec.from_file(path, name)


def basware_spec(name: str = "p2p") -> OpenApiSpec:
    """One of Basware's specs (`p2p`, `authentication`, `push-notification`), loaded once."""
    folder = Path(os.environ.get("BASWARE_OPENAPI_DIR") or BASWARE_OPENAPI_DIR)
    with _SPEC_LOCK:
        return _load(str(folder / BASWARE_SPECS[name]), f"basware-{name}")


def validate(schema_name_or_path: str, instance: Any, spec: str = "p2p") -> list[str]:
    """Readable problems of `instance` against a Basware schema: a component name
    (`TransferResponseEntity`), a JSON pointer (`#/components/schemas/...`) or an operation's request
    body (`"POST /v1/vendors"`). Empty when valid."""
    return basware_spec(spec).validate(schema_name_or_path, instance)


def request_body_schema(path: str, method: str, spec: str = "p2p") -> dict | None:
    """The request-body JSON Schema of a Basware operation; `path` may be concrete (`/v1/lists/ACC_LIST_1`)."""
    return basware_spec(spec).request_body_schema(path, method)
