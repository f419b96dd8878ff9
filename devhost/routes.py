"""Function route templates (`admin/records/{kind}/{id}`), matched like the Functions host does.

Supported: literal segments (case-insensitive), `{name}`, optional `{name?}`, defaults
`{name=value}`, constraints `{name:int}` (`int`, `long`, `alpha`, `bool`, `guid`; others are
accepted and not enforced), and a trailing catch-all `{*rest}`. When several templates match,
literal segments win over parameters, constrained over plain, plain over optional and catch-all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

_TOKEN = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+", "long": r"-?\d+", "alpha": r"[A-Za-z]+", "bool": r"(?:true|false)",
    "guid": r"\{?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}\}?",
}
# precedence of one segment, lower wins
_LITERAL, _MIXED, _CONSTRAINED, _PARAM, _OPTIONAL, _CATCH_ALL = range(6)


@dataclass(frozen=True)
class _Param:
    name: str
    pattern: str
    optional: bool
    default: str | None
    catch_all: bool

    @classmethod
    def parse(cls, spec: str, template: str) -> "_Param":
        catch_all = spec.startswith("*")
        spec = spec.lstrip("*")
        default = None
        if "=" in spec:
            spec, default = spec.split("=", 1)
        optional = spec.endswith("?")
        spec = spec.rstrip("?")
        name, _, constraint = spec.partition(":")
        constraint = constraint.rstrip("?").split("(")[0].lower()
        if not name:
            raise ValueError(f"route {template!r}: empty parameter name")
        pattern = ".*" if catch_all else _CONSTRAINTS.get(constraint, "[^/]+")
        return cls(name, pattern, optional or default is not None or catch_all, default, catch_all)


@dataclass
class Route(Generic[T]):
    template: str
    target: T
    regex: re.Pattern
    params: list[_Param]
    precedence: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if not found:
            return None
        values: dict[str, str] = {}
        for index, param in enumerate(self.params):
            value = found.group(f"p{index}")
            if value is None or value == "":
                if param.default is not None:
                    values[param.name] = param.default
                continue
            values[param.name] = unquote(value)
        return values


def compile_route(template: str, target: T) -> Route[T]:
    segments = template.strip("/").split("/") if template.strip("/") else []
    params: list[_Param] = []
    parts: list[str] = []
    precedence: list[int] = []
    for position, segment in enumerate(segments):
        slash = "/" if position else ""
        whole = _TOKEN.fullmatch(segment)
        if whole:
            param = _Param.parse(whole.group(1), template)
            group = f"(?P<p{len(params)}>{param.pattern})"
            params.append(param)
            if param.catch_all:
                if position != len(segments) - 1:
                    raise ValueError(f"route {template!r}: a catch-all parameter must be last")
                parts.append(f"(?:{slash}{group})?")
                precedence.append(_CATCH_ALL)
            elif param.optional:
                parts.append(f"(?:{slash}{group})?")
                precedence.append(_OPTIONAL)
            else:
                parts.append(slash + group)
                precedence.append(_PARAM if param.pattern == "[^/]+" else _CONSTRAINED)
            continue
        regex, cursor = slash, 0
        for token in _TOKEN.finditer(segment):
            param = _Param.parse(token.group(1), template)
            regex += re.escape(segment[cursor:token.start()]) + f"(?P<p{len(params)}>{param.pattern})"
            params.append(param)
            cursor = token.end()
        parts.append(regex + re.escape(segment[cursor:]))
        precedence.append(_MIXED if cursor else _LITERAL)
    regex = re.compile("^" + "".join(parts) + "$", re.IGNORECASE)
    return Route(template, target, regex, params, tuple(precedence))


class RouteTable(Generic[T]):
    """Routes in precedence order; `find` returns every match so the caller can check methods."""

    def __init__(self, routes: list[Route[T]]) -> None:
        self.routes = sorted(routes, key=lambda r: r.precedence)

    def find(self, path: str) -> list[tuple[Route[T], dict[str, str]]]:
        path = path.strip("/")
        matches = []
        for route in self.routes:
            values = route.match(path)
            if values is not None:
                matches.append((route, values))
        return matches
