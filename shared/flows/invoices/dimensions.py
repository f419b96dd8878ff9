"""Line dimensions against BC's default dimensions: predict what BC inherits, nest only the rest,
correct what differs, learn what cannot be read.

What BC does (public sources):
- a purchase header copies the vendor's default dimensions; a line of type Account starts from the
  header's set and takes the G/L account's defaults over it (codeunit 408 DimensionManagement
  `GetDefaultDimID`);
- a nested dimension set line whose code is already on its parent fails the whole deep insert with
  "The dimension set line already exists. ..." (`APIV2 - Dimension Set Lines`, page 30022,
  microsoft/ALAppExtensions `APIV2DimensionSetLines.Page.al`);
- vendor defaults are readable (`defaultDimensions`, page 30026, parentType enum 352: Customer,
  Item, Vendor, Employee); G/L account defaults are not readable through API v2.0 at all;
- an existing dimension set line is changed with PATCH + If-Match, a missing one added with POST
  (the public integrator hotgluexyz/target-dynamics-bc does the same after reading lines back).

The design, and why:
1. Nest a coded dimension only where BC is not predicted to inherit that code: the vendor's defaults
   (read once per ledger load, so free per invoice) and the accounts' defaults learned so far. A
   coding that agrees with, or does not touch, the defaults then costs no request beyond the create.
2. The create's answer carries the lines with their dimension set lines (asked for with `$expand`);
   each coded value that BC inherited differently is corrected with one PATCH, a coded code BC lacks
   with one POST. Where BC answers without lines (Microsoft Learn's
   api/dynamics_purchaseInvoiceLine_create does not say whether the 201 carries them) and something
   was left to inheritance, one GET reads them back.
3. G/L account defaults are learned from those answers: a code on a line that neither the header
   nor the request put there came from the account. They are remembered per company and account,
   so the next invoice on the account nests correctly and never clashes.
4. A clash (an account default not learned yet, or a vendor default added since the ledger was
   read) costs one refused POST: the create is repeated without nested dimensions on the lines of
   accounts not learned yet, which cannot clash, and step 2 corrects those lines.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping

CLASH_TEXT = "dimension set line already exists"


def normalise_rule(value: str | None) -> str:
    """'Code Mandatory' / 'Same Code' / 'No Code' / '' from BC's JSON (`Code_x0020_Mandatory`,
    `Code_Mandatory` in some docs, or with spaces)."""
    text = (value or "").replace("_x0020_", " ").replace("_", " ").strip()
    return text


@dataclass(frozen=True)
class DefaultDimension:
    """One default dimension of a vendor: code, value ('' = none), posting validation rule."""

    code: str
    value: str
    rule: str = ""


def vendor_defaults_from(records: Iterable[dict], vendor_numbers_by_id: Mapping[str, str]
                         ) -> dict[str, tuple[DefaultDimension, ...]]:
    """`defaultDimensions` records -> {vendor number: defaults}."""
    out: dict[str, list[DefaultDimension]] = {}
    for rec in records:
        if str(rec.get("parentType") or "") != "Vendor":
            continue
        number = vendor_numbers_by_id.get(str(rec.get("parentId") or "").lower())
        if number is None:
            continue
        out.setdefault(number.upper(), []).append(DefaultDimension(
            str(rec.get("dimensionCode") or "").upper(), str(rec.get("dimensionValueCode") or "").upper(),
            normalise_rule(rec.get("postingValidation"))))
    return {k: tuple(v) for k, v in out.items()}


# -- the vendor's posting rules, checked before anything is written ---------------------------------------
def vendor_rule_problems(vendor: str, defaults: Iterable[DefaultDimension], rows: list[tuple[str, dict[str, str]]],
                         mapped_codes: set[str]) -> list[str]:
    """Clerk-readable breaches of the vendor's Code Mandatory / Same Code / No Code rules.

    `rows`: (row label, {dimension code: coded value}) per coding row. A row that does not code a
    dimension inherits the vendor's default value (BC copies it). BC checks these rules at posting
    (Purch.-Post, CheckDimValuePosting); checked here the clerk gets the row, dimension and value.
    """
    problems = []
    for default in defaults:
        if default.rule not in ("Code Mandatory", "Same Code", "No Code"):
            continue
        if default.code not in mapped_codes:
            if default.rule == "Code Mandatory" and not default.value:
                problems.append(f"vendor {vendor} requires a {default.code} value, which Basware does not code "
                                f"(give the vendor a default {default.code} in BC)")
            continue
        for label, coded in rows:
            value = coded.get(default.code) or default.value
            if default.rule == "Code Mandatory" and not value:
                problems.append(f"{label}: {default.code} is mandatory for vendor {vendor}; code a value")
            elif default.rule == "Same Code" and value != default.value:
                want = default.value or "empty"
                problems.append(f"{label}: {default.code} must be {want} for vendor {vendor}, coded {value}")
            elif default.rule == "No Code" and value:
                problems.append(f"{label}: {default.code} must be empty for vendor {vendor}, coded {value}")
    return problems


# -- what BC will inherit, learned per company and G/L account ---------------------------------------------
class AccountDefaults:
    """G/L account defaults seen in BC's answers: {(company, account): {code: value}}. An account
    whose lines were seen is known (possibly with no defaults); an unseen one is unknown."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, company: str, account: str) -> dict[str, str] | None:
        with self._lock:
            found = self._known.get((company, account.upper()))
            return dict(found) if found is not None else None

    def learn(self, company: str, account: str, codes: Mapping[str, str]) -> None:
        with self._lock:
            self._known[(company, account.upper())] = dict(codes)

    def forget(self, company: str, accounts: Iterable[str]) -> None:
        with self._lock:
            for account in accounts:
                self._known.pop((company, account.upper()), None)


@dataclass
class LinePlan:
    sequence: int
    account: str
    coded: dict[str, str]                              # what Basware coded: what the posted line must carry
    nested: dict[str, str] = field(default_factory=dict)  # sent in the deep insert


@dataclass
class DimensionPlan:
    lines: list[LinePlan]
    header: dict[str, str]  # predicted header dimensions (the vendor's defaults with a value)

    @property
    def relies_on_inheritance(self) -> bool:
        return any(set(ln.coded) - set(ln.nested) for ln in self.lines)


def plan(body: dict, lines_key: str, vendor_defaults: Iterable[DefaultDimension], company: str,
         learned: AccountDefaults, *, strip_unknown: bool = False) -> tuple[dict, DimensionPlan]:
    """The deep-insert body with only the nested dimensions BC will not inherit, and the plan.

    `strip_unknown`: after a clash, nest nothing on lines whose account is not learned yet."""
    header = {d.code: d.value for d in vendor_defaults if d.value}
    out_lines, plans = [], []
    for line in body.get(lines_key, []):
        coded = {str(d["code"]).upper(): str(d["valueCode"]).upper() for d in line.get("dimensionSetLines", [])}
        account = str(line.get("lineObjectNumber") or "")
        known = learned.get(company, account)
        inherited = dict(header)
        inherited.update(known or {})
        if strip_unknown and known is None:
            nested = {}
        else:
            nested = {code: value for code, value in coded.items() if code not in inherited}
        new_line = {k: v for k, v in line.items() if k != "dimensionSetLines"}
        if nested:
            new_line["dimensionSetLines"] = [{"code": c, "valueCode": v} for c, v in nested.items()]
        out_lines.append(new_line)
        plans.append(LinePlan(int(line.get("sequence") or 0), account, coded, nested))
    return {**body, lines_key: out_lines}, DimensionPlan(plans, header)


@dataclass(frozen=True)
class Correction:
    line_id: str
    code: str
    value: str
    dimension_id: str | None  # set: PATCH this dimension set line; None: POST a new one
    etag: str | None = None


def _dims_of(line: dict) -> dict[str, dict]:
    return {str(d.get("code") or "").upper(): d for d in line.get("dimensionSetLines") or []}


def reconcile(created_lines: list[dict], plan_: DimensionPlan, header_dims: Mapping[str, str] | None,
              company: str, learned: AccountDefaults) -> list[Correction]:
    """Compare BC's lines with the coding; learn the accounts' defaults; the corrections to make."""
    header = dict(plan_.header if header_dims is None else header_dims)
    by_sequence = {int(ln.get("sequence") or 0): ln for ln in created_lines}
    corrections = []
    for lp in plan_.lines:
        line = by_sequence.get(lp.sequence)
        if line is None:
            continue
        have = _dims_of(line)
        from_account = {code: str(d.get("valueCode") or "").upper() for code, d in have.items()
                        if code not in lp.nested and (code not in header or header[code] !=
                                                      str(d.get("valueCode") or "").upper())}
        learned.learn(company, lp.account, from_account)
        for code, value in lp.coded.items():
            entry = have.get(code)
            if entry is None:
                corrections.append(Correction(str(line["id"]), code, value, None))
            elif str(entry.get("valueCode") or "").upper() != value:
                corrections.append(Correction(str(line["id"]), code, value, str(entry.get("id")),
                                              entry.get("@odata.etag")))
    return corrections


def is_clash(message: str | None) -> bool:
    return CLASH_TEXT in (message or "").lower()


# -- a posting refusal for a dimension rule, said for the clerk ---------------------------------------------
_RULE_PATTERNS = [
    (re.compile(r"Select a Dimension Value Code for the Dimension Code (?P<code>\S+) for (?P<parent>G/L Account|Vendor) "
                r"(?P<number>[^\s.]+)"), "a {code} value is mandatory for {parent} {number}"),
    (re.compile(r"Select Dimension Value Code (?P<want>\S+) for the Dimension Code (?P<code>\S+) for "
                r"(?P<parent>G/L Account|Vendor) (?P<number>[^\s.]+)\.(?: Currently it's (?P<have>[^.]+))?"),
     "{code} must be {want} for {parent} {number}{coded}"),
    (re.compile(r"Dimension Code (?P<code>\S+) must be blank for (?P<parent>G/L Account|Vendor) (?P<number>[^\s.]+)"
                r"\.(?: Currently it's (?P<have>[^.]+))?"), "{code} must be empty for {parent} {number}{coded}"),
]


def explain_posting_refusal(message: str, rows: list[tuple[str, str]]) -> str | None:
    """BC's dimension-rule posting error -> 'row 1 (account 6200): PROJECT must be ...'; None if
    the message is not one. `rows`: (row label, account number) per line."""
    for pattern, template in _RULE_PATTERNS:
        match = pattern.search(message or "")
        if not match:
            continue
        parts = match.groupdict()
        parent = "G/L account" if parts["parent"] == "G/L Account" else "vendor"
        have = (parts.get("have") or "").strip()
        text = template.format(code=parts["code"], want=parts.get("want") or "", parent=parent,
                               number=parts["number"], coded=f", coded {have}" if have else "")
        if parts["parent"] == "G/L Account":
            labels = [label for label, account in rows if account.upper() == parts["number"].upper()]
            if labels:
                return f"{', '.join(labels)} (account {parts['number']}): {text}"
        return text
    return None
