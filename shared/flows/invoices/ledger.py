"""Per-company BC master data for validating invoices, cached so that steady state costs no reads.

Vendors (with their default dimensions: `defaultDimensions`, readable for vendors only), G/L
accounts, dimension values and the company's local currency are loaded once per
company and kept for `ttl` seconds. When an invoice names a code the cache does not know (or knows
as blocked), the flow asks for one refresh before failing the invoice, so a vendor created in BC a
minute ago is found; refreshes are at most one per `min_refresh_interval` per company, so a burst of
broken invoices does not reload the ledger once each. BC enforces the same rules at insert and
posting time (Microsoft Learn, purchaseInvoiceLine and purchaseInvoice resource types), so a stale cache can cost a failed attempt, never a wrong
posting.
"""
from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable

from shared.clients.bc import BcClient
from shared.flows.invoices.dimensions import AccountDefaults, vendor_defaults_from
from shared.flows.invoices.mapping import Ledger
from shared.models.bc import Account, Vendor

DEFAULT_TTL = 300.0
DEFAULT_MIN_REFRESH_INTERVAL = 5.0


@dataclass
class _Entry:
    ledger: Ledger
    loaded_at: float


def load_ledger(bc: BcClient, company_id: str) -> Ledger:
    """Read the company's ledger master data from BC (a handful of paged GETs)."""
    path = bc.company_path
    vendors = {}
    for raw in bc.iterate(path(company_id, "vendors")):
        vendor = Vendor.model_validate(raw)
        vendors[vendor.number.upper()] = vendor
    accounts = {}
    for raw in bc.iterate(path(company_id, "accounts")):
        account = Account.model_validate(raw)
        accounts[account.number.upper()] = account
    values = bc.dimension_values(company_id)
    by_id = {v.id.lower(): v.number for v in vendors.values()}
    vendor_defaults = vendor_defaults_from(bc.vendor_default_dimensions(company_id), by_id)
    info = next(iter(bc.iterate(path(company_id, "companyInformation"), page_size=None)), {}) or {}
    return Ledger(
        lcy=str(info.get("currencyCode") or "").upper(),
        vendors=vendors,
        accounts=accounts,
        dimension_values={code.upper(): frozenset(v.upper() for v in codes) for code, codes in values.items()},
        vendor_defaults=vendor_defaults,
    )


class LedgerCache:
    def __init__(self, bc: BcClient, *, ttl: float = DEFAULT_TTL,
                 min_refresh_interval: float = DEFAULT_MIN_REFRESH_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 loader: Callable[[BcClient, str], Ledger] = load_ledger) -> None:
        self._bc = bc
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._loader = loader
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.loads = 0
        self.account_defaults = AccountDefaults()  # learned from BC's answers (dimensions.py)

    def _lock(self, company_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(company_id, threading.Lock())

    def get(self, company_id: str) -> Ledger:
        entry = self._entries.get(company_id)
        if entry is not None and self._clock() - entry.loaded_at < self.ttl:
            return entry.ledger
        with self._lock(company_id):  # single flight per company
            entry = self._entries.get(company_id)
            if entry is not None and self._clock() - entry.loaded_at < self.ttl:
                return entry.ledger
            return self._load(company_id)

    def refresh(self, company_id: str) -> tuple[Ledger, bool]:
        """Reload unless it was loaded within `min_refresh_interval`; (ledger, reloaded)."""
        with self._lock(company_id):
            entry = self._entries.get(company_id)
            if entry is not None and self._clock() - entry.loaded_at < self.min_refresh_interval:
                return entry.ledger, False
            return self._load(company_id), True

    def invalidate(self, company_id: str | None = None) -> None:
        if company_id is None:
            self._entries.clear()
        else:
            self._entries.pop(company_id, None)

    def _load(self, company_id: str) -> Ledger:
        ledger = self._loader(self._bc, company_id)
        self.loads += 1
        self._entries[company_id] = _Entry(ledger, self._clock())
        return ledger


_caches: "weakref.WeakKeyDictionary[BcClient, LedgerCache]" = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def ledger_cache(bc: BcClient) -> LedgerCache:
    """The process-wide cache for one BC client (one per runtime)."""
    with _caches_lock:
        cache = _caches.get(bc)
        if cache is None:
            cache = _caches[bc] = LedgerCache(bc)
        return cache
