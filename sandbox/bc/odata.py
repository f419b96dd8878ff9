"""The OData query subset BC's API v2.0 answers (Microsoft Learn, "Using filtering in API calls" and "Server-Driven Paging in OData Web Services").

- `$filter`: eq ne gt ge lt le, and, not, parentheses, startswith/endswith/contains; literals:
  'strings' ('' escapes a quote), numbers, true/false, null, bare GUIDs, bare dates and datetimes
  (`lastModifiedDateTime gt 2026-11-20T10:00:00Z`). `or` is allowed only on one field, as in BC
  ("The 'OR' operator is not supported on distinct fields").
- Code fields (numbers, codes) are upper-case in BC, so they compare case-insensitively.
- `$expand` with nested options (`purchaseInvoiceLines($expand=dimensionSetLines)`), `$select`,
  `$top`, `$skip`.
- Server-driven paging: key-based `$skiptoken`, page size from `Prefer: odata.maxpagesize`.
"""
from __future__ import annotations

import base64
import bisect
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from .errors import BcError, bad_request

CODE_FIELDS = {
    "number", "vendorNumber", "vendorInvoiceNumber", "vendorCreditMemoNumber", "code", "valueCode",
    "currencyCode", "taxCode", "lineObjectNumber", "payToVendorNumber", "shortcutDimension1Code",
    "shortcutDimension2Code", "orderNumber", "invoiceNumber", "unitOfMeasureCode", "purchaser",
}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-]))
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)[mMdDfFlL]?
  | (?P<lp>\() | (?P<rp>\)) | (?P<comma>,)
  | (?P<ident>[A-Za-z_$@][\w./@$]*)
""", re.X)

OPS = {"eq", "ne", "gt", "ge", "lt", "le"}
FUNCS = {"startswith", "endswith", "contains"}
_FLIP = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
_OP_KIND = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual", "lt": "LessThan",
            "le": "LessThanOrEqual"}


def _syntax(text: str) -> BcError:
    return bad_request(f"Syntax error in the $filter expression '{text}'.")


def _tokens(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise _syntax(text)
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group(m.lastgroup)))
    return out


def _literal(kind: str, raw: str) -> tuple[str, Any]:
    if kind == "str":
        return "str", raw[1:-1].replace("''", "'")
    if kind == "num":
        return "num", Decimal(raw)
    if kind == "guid":
        return "guid", raw.lower()
    if kind == "datetime":
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return "datetime", value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if kind == "date":
        return "date", date.fromisoformat(raw)
    raise ValueError(kind)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _syntax(self.text)
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "ident" and tok[1].lower() == word:
            self.i += 1
            return True
        return False

    def parse(self):
        node = self.or_()
        if self.peek() is not None:
            raise _syntax(self.text)
        return node

    def or_(self):
        node = self.and_()
        while self.keyword("or"):
            node = ("or", node, self.and_())
        return node

    def and_(self):
        node = self.unary()
        while self.keyword("and"):
            node = ("and", node, self.unary())
        return node

    def unary(self):
        if self.keyword("not"):
            return ("not", self.unary())
        return self.primary()

    def operand(self):
        kind, raw = self.take()
        if kind == "ident":
            low = raw.lower()
            if low in ("true", "false"):
                return ("lit", ("bool", low == "true"))
            if low == "null":
                return ("lit", ("null", None))
            return ("field", raw)
        if kind in ("str", "num", "guid", "datetime", "date"):
            return ("lit", _literal(kind, raw))
        raise _syntax(self.text)

    def primary(self):
        tok = self.peek()
        if tok and tok[0] == "lp":
            self.take()
            node = self.or_()
            if self.take()[0] != "rp":
                raise _syntax(self.text)
            return node
        if tok and tok[0] == "ident" and tok[1].lower() in FUNCS and self.i + 1 < len(self.toks) \
                and self.toks[self.i + 1][0] == "lp":
            name = self.take()[1].lower()
            self.take()
            target = self.operand()
            if self.take()[0] != "comma":
                raise _syntax(self.text)
            arg = self.operand()
            if self.take()[0] != "rp" or target[0] != "field" or arg[0] != "lit":
                raise _syntax(self.text)
            return ("func", name, target[1], arg[1])
        left = self.operand()
        nxt = self.peek()
        if nxt is None or nxt[0] != "ident" or nxt[1].lower() not in OPS:
            if left[0] == "field":  # a bare boolean field
                return ("cmp", left[1], "eq", ("bool", True))
            raise _syntax(self.text)
        op = self.take()[1].lower()
        right = self.operand()
        if left[0] == "field" and right[0] == "lit":
            return ("cmp", left[1], op, right[1])
        if left[0] == "lit" and right[0] == "field":
            return ("cmp", right[1], _FLIP[op], left[1])
        raise _syntax(self.text)


def _fields(node) -> set[str]:
    kind = node[0]
    if kind in ("and", "or"):
        return _fields(node[1]) | _fields(node[2])
    if kind == "not":
        return _fields(node[1])
    return {node[2] if kind == "func" else node[1]}


def parse_filter(text: str, known_fields: set[str] | None = None, type_name: str = "entity"):
    node = _Parser(text).parse()
    _check(node, known_fields, type_name)
    return node


def _check(node, known_fields, type_name) -> None:
    kind = node[0]
    if kind == "or" and len(_fields(node)) > 1:
        raise bad_request("An error occurred while processing this request. "
                          "The 'OR' operator is not supported on distinct fields on an OData filter.")
    if kind in ("and", "or"):
        _check(node[1], known_fields, type_name)
        _check(node[2], known_fields, type_name)
    elif kind == "not":
        _check(node[1], known_fields, type_name)
    elif known_fields is not None:
        name = node[2] if kind == "func" else node[1]
        if name not in known_fields:
            raise bad_request(f"Could not find a property named '{name}' on type 'Microsoft.NAV.{type_name}'.")


def _edm(value) -> str:
    if isinstance(value, bool):
        return "Edm.Boolean"
    if isinstance(value, (int, float, Decimal)):
        return "Edm.Decimal"
    return "Edm.String"


def _incompatible(value, lit_kind: str, op: str) -> BcError:
    lit_edm = {"str": "Edm.String", "num": "Edm.Decimal", "bool": "Edm.Boolean", "guid": "Edm.Guid",
               "datetime": "Edm.DateTimeOffset", "date": "Edm.Date"}.get(lit_kind, "Edm.String")
    return bad_request("A binary operator with incompatible types was detected. Found operand types "
                       f"'{_edm(value)}' and '{lit_edm}' for operator kind '{_OP_KIND.get(op, op)}'.")


def _as_datetime(value) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _cmp(a, op: str, b) -> bool:
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if op == "gt":
        return a > b
    if op == "ge":
        return a >= b
    if op == "lt":
        return a < b
    return a <= b


def _compare(name: str, value, op: str, lit: tuple[str, Any]) -> bool:
    kind, lv = lit
    if kind == "null":
        return (value is None) == (op == "eq")
    if value is None:
        return op == "ne"
    if kind == "str":
        if not isinstance(value, str):
            raise _incompatible(value, kind, op)
        if name in CODE_FIELDS:  # AL Code semantics ('ß' stays 'ß')
            return _cmp(code_upper(value), op, code_upper(lv))
        return _cmp(value, op, lv)
    if kind == "num":
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            raise _incompatible(value, kind, op)
        return _cmp(Decimal(str(value)), op, lv)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _incompatible(value, kind, op)
        return _cmp(value, op, lv)
    if kind == "guid":
        return _cmp(str(value).lower(), op, lv)
    if kind == "datetime":
        parsed = _as_datetime(value)
        if parsed is None:
            raise _incompatible(value, kind, op)
        if len(str(value)) == 10:  # a date field compared with a datetime: compare the dates
            return _cmp(parsed.date(), op, lv.date())
        return _cmp(parsed, op, lv)
    if kind == "date":
        try:
            return _cmp(date.fromisoformat(str(value)[:10]), op, lv)
        except ValueError:
            raise _incompatible(value, kind, op) from None
    raise _incompatible(value, kind, op)


def evaluate(node, record: dict) -> bool:
    kind = node[0]
    if kind == "and":
        return evaluate(node[1], record) and evaluate(node[2], record)
    if kind == "or":
        return evaluate(node[1], record) or evaluate(node[2], record)
    if kind == "not":
        return not evaluate(node[1], record)
    if kind == "func":
        _, name, fld, (lit_kind, lv) = node
        value = record.get(fld)
        if not isinstance(value, str) or lit_kind != "str":
            return False
        a, b = (value.upper(), lv.upper()) if fld in CODE_FIELDS else (value, lv)
        return a.startswith(b) if name == "startswith" else a.endswith(b) if name == "endswith" else b in a
    _, fld, op, lit = node
    return _compare(fld, record.get(fld), op, lit)


# -- $expand / $select ---------------------------------------------------------------------------
def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


@dataclass
class Options:
    """Query options for one level: the request's, or those nested in an `$expand` item."""

    filter: str | None = None
    expand: dict[str, "Options"] = field(default_factory=dict)
    select: list[str] | None = None
    top: int | None = None
    skip: int | None = None

    @classmethod
    def parse(cls, raw: dict[str, str]) -> "Options":
        opts = cls(filter=raw.get("$filter") or None)
        if raw.get("$expand"):
            for item in _split_top(raw["$expand"], ","):
                m = re.fullmatch(r"([\w.]+)\s*(?:\((.*)\))?", item, re.S)
                if not m:
                    raise bad_request(f"Syntax error in the $expand expression '{raw['$expand']}'.")
                nested: dict[str, str] = {}
                for part in _split_top(m.group(2) or "", ";"):
                    key, _, value = part.partition("=")
                    nested[key.strip()] = value.strip()
                opts.expand[m.group(1)] = cls.parse(nested)
        if raw.get("$select"):
            opts.select = [s.strip() for s in raw["$select"].split(",") if s.strip()]
        for name in ("$top", "$skip"):
            if raw.get(name) not in (None, ""):
                try:
                    value = int(raw[name])
                except ValueError:
                    raise bad_request(f"Invalid value '{raw[name]}' for {name}.") from None
                if value < 0:
                    raise bad_request(f"Invalid value '{raw[name]}' for {name}.")
                setattr(opts, name[1:], value)
        return opts

    def check(self, fields: set[str], navigation: set[str], type_name: str) -> None:
        for name in self.expand:
            if name not in navigation:
                raise bad_request(f"Could not find a property named '{name}' on type 'Microsoft.NAV.{type_name}'.")
        for name in self.select or []:
            if name not in fields and name not in navigation:
                raise bad_request(f"Could not find a property named '{name}' on type 'Microsoft.NAV.{type_name}'.")


def apply_select(entity: dict, select: list[str] | None, expanded: set[str]) -> dict:
    if not select:
        return entity
    keep = set(select) | expanded | {"@odata.etag"}
    return {k: v for k, v in entity.items() if k in keep}


# -- paging ----------------------------------------------------------------------------------------
def encode_token(key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode().rstrip("=")


def decode_token(token: str):
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        raise bad_request(f"The skip token '{token}' is not valid.") from None
    return tuple(value) if isinstance(value, list) else value


def max_page_size(prefer: str | None, server_max: int) -> int:
    """`Prefer: odata.maxpagesize=N` lowers the page; more than the server maximum is a 413
    (Microsoft Learn, webservices/Server-Driven-Paging-in-OData-Web-Services)."""
    if not prefer:
        return server_max
    m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
    if not m:
        return server_max
    size = int(m.group(1))
    if size > server_max:
        raise BcError(413, "BadRequest_RequestEntityTooLarge",
                      f"The requested page size {size} exceeds the maximum page size of {server_max}.")
    return max(1, size)


def select_page(records: list, key: Callable[[Any], Any], opts: Options, matches: Callable[[Any], bool],
                skiptoken: str | None, size: int) -> tuple[list, Any, int]:
    """Filter, order by key, then take one page. Returns (page, last key if more follow, rows left
    of $top after this page)."""
    rows = sorted((r for r in records if matches(r)), key=key)
    if opts.skip:
        rows = rows[opts.skip:]
    if opts.top is not None:
        rows = rows[:opts.top]
    start = 0
    if skiptoken:
        last = decode_token(skiptoken)
        keys = [key(r) for r in rows]
        try:
            start = bisect.bisect_right(keys, last)
        except TypeError:
            raise bad_request(f"The skip token '{skiptoken}' is not valid.") from None
    page = rows[start:start + size]
    more = start + size < len(rows)
    return page, (key(page[-1]) if more and page else None), len(rows) - start - len(page)


def check_decimal(value, name: str):
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)):
        raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.Decimal'.")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.Decimal'.") from None


def code_upper(value: str) -> str:
    """AL's upper-casing of a Code field: .NET's per-character (simple) case mapping, so letters
    without a one-character capital keep their form: 'ß' stays 'ß' ('Straße' -> 'STRAßE', which is
    not 'STRASSE'), while 'é' -> 'É'. Python's str.upper() would give 'SS'."""
    return "".join(ch.upper() if len(ch.upper()) == 1 else ch for ch in value)
