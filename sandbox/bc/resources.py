"""Entity kinds and their OData rendering: one `Kind` per entity type says which fields it has,
how records sort (the paging key), how a record becomes JSON and which navigation properties
`$expand` can follow."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .odata import Options, apply_select, evaluate, parse_filter, select_page


@dataclass
class Kind:
    type_name: str
    fields: list[str]
    key: Callable[[Any], Any]
    to_json: Callable[[Any], dict]
    view: Callable[[Any], dict] | None = None  # what $filter sees; default: to_json
    navigation: dict[str, Callable[[Any], tuple["Kind", list]]] = field(default_factory=dict)

    def filter_view(self, record) -> dict:
        return (self.view or self.to_json)(record)

    def check(self, opts: Options) -> Any:
        opts.check(set(self.fields), set(self.navigation), self.type_name)
        return parse_filter(opts.filter, set(self.fields), self.type_name) if opts.filter else None


def shape(kind: Kind, record, opts: Options) -> dict:
    """One entity as JSON with its `$expand`ed navigation properties and `$select` applied."""
    out = kind.to_json(record)
    for name, sub in opts.expand.items():
        child_kind, children = kind.navigation[name](record)
        node = child_kind.check(sub)
        rows = sorted((c for c in children if node is None or evaluate(node, child_kind.filter_view(c))),
                      key=child_kind.key)
        if sub.skip:
            rows = rows[sub.skip:]
        if sub.top is not None:
            rows = rows[:sub.top]
        out[name] = [shape(child_kind, c, sub) for c in rows]
    return apply_select(out, opts.select, set(opts.expand))


def collection(kind: Kind, records: list, opts: Options, skiptoken: str | None, size: int) -> tuple[list, Any]:
    """One page of a collection: (entities as JSON, paging key of the last one if more follow)."""
    node = kind.check(opts)
    matches = (lambda r: True) if node is None else (lambda r: evaluate(node, kind.filter_view(r)))
    page, last_key, _ = select_page(records, kind.key, opts, matches, skiptoken, size)
    return [shape(kind, r, opts) for r in page], last_key
