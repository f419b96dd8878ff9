"""Settings: every app setting the connector reads, read and validated once.

`load_settings(environ)` returns a frozen `Settings` or raises `SettingsError` with one message
that names the offending setting. Secrets are `Secret` values: read from Key Vault when
`KEY_VAULT_URL` is set (by kebab-case name), otherwise from the settings themselves.
"""
from __future__ import annotations

import json
import os
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.core.errors import SettingsError
from shared.core.secrets import Secret, kebab, key_vault_source

# Basware documents only the EU production host (api.basware.com in its OpenAPI servers list; US/AU/CA
# hosts are UNKNOWN), so other regions must name BASWARE_API_URL explicitly.
BASWARE_REGION_HOSTS: dict[str, str | None] = {
    "EU": "https://api.basware.com",
    "US": None,
    "AU": None,
    "CA": None,
}
BASWARE_DEFAULT_SCOPES = (
    "accountingDocuments.read accountingDocuments.write vendors.write accounts.write costCenters.write "
    "lists.write projects.write matchingOrders.write matchingOrderLines.write requestStatus.read "
    "subscriptions.read subscriptions.write"
)

SECRET_SETTINGS = ("BASWARE_CLIENT_SECRET", "BASWARE_WEBHOOK_SECRET", "BC_CLIENT_SECRET", "BC_CLIENT_STATE")

DEFAULT_SCHEDULES = {
    "POLL_SCHEDULE": "0 */5 * * * *",
    "MASTERDATA_SCHEDULE": "0 0 * * * *",
    "PAYMENT_SCHEDULE": "0 */15 * * * *",
    "PO_SYNC_SCHEDULE": "0 30 * * * *",
    "SUBSCRIPTION_SCHEDULE": "0 0 */12 * * *",
    "RETENTION_SCHEDULE": "0 15 3 * * *",
}

# Every setting the code reads (infra tests check the Bicep sets each one, and nothing stale).
SETTING_NAMES = (
    "AzureWebJobsStorage", "KEY_VAULT_URL",
    "BASWARE_REGION", "BASWARE_API_URL", "BASWARE_TOKEN_URL", "BASWARE_CLIENT_ID", "BASWARE_CLIENT_SECRET",
    "BASWARE_WEBHOOK_SECRET", "BASWARE_SCOPES",
    "BC_TENANT_ID", "BC_ENVIRONMENT", "BC_COMPANY_ID", "BC_CLIENT_ID", "BC_CLIENT_SECRET", "BC_API_URL",
    "BC_AUTHORITY_URL", "BC_NOTIFICATION_URL", "BC_CLIENT_STATE",
    "COMPANY_MAP", "DIMENSION_MAP", "TAX_CODE_MAP", "POST_MODE", "TOTAL_TOLERANCE", "BC_PARTIAL_PAYMENTS",
    "BC_LATE_COMMIT_WINDOW_SECONDS", "BC_MAX_CONCURRENT_REQUESTS",
    *DEFAULT_SCHEDULES, "RETENTION_DAYS", "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "ATTACHMENT_CATEGORIES", "ATTACHMENT_REQUIRED",
)

# Basware attachment categories (P2P OpenAPI schema `Attachment.category`); CONFIDENTIAL is not a
# category but says that attachments marked `isConfidential` are copied as well.
ATTACHMENT_CATEGORY_NAMES = ("ORIGINALIMAGE", "ATTACHMENT", "EXPORTEDEMAIL")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_LIST_TARGET = re.compile(r"^list:(ACC_LIST_([1-9]|[12][0-9]|3[0-5])|INV_LIST_([1-9]|1[0-9]|20)|CUST_RESOLVER_[1-5])$")
_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


class DimensionMapping(BaseModel):
    """One BC dimension that Basware codes: where its value travels on invoices, where it is imported."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dimension: str = Field(min_length=1, max_length=20)
    basware_field: str = Field(min_length=1)
    target: str

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if value in ("costCenter", "project") or _LIST_TARGET.match(value):
            return value
        raise ValueError("target must be costCenter, project or list:<ACC_LIST_n|INV_LIST_n|CUST_RESOLVER_n>")

    @property
    def list_key(self) -> str | None:
        return self.target.split(":", 1)[1] if self.target.startswith("list:") else None


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    # storage: a connection string locally, identity-based (AzureWebJobsStorage__*) in Azure
    storage_connection_string: str | None = None
    storage_account_name: str | None = None
    storage_queue_uri: str | None = None
    storage_table_uri: str | None = None
    storage_client_id: str | None = None
    key_vault_url: str | None = None

    basware_region: Literal["EU", "US", "AU", "CA"] = "EU"
    basware_api_url: str
    basware_token_url: str
    basware_client_id: str
    basware_client_secret: Secret
    basware_webhook_secret: Secret
    basware_scopes: str = BASWARE_DEFAULT_SCOPES

    bc_tenant_id: str
    bc_environment: str
    bc_company_id: str
    bc_client_id: str
    bc_client_secret: Secret
    bc_api_url: str = "https://api.businesscentral.dynamics.com"
    bc_authority_url: str = "https://login.microsoftonline.com"
    bc_notification_url: str | None = None
    bc_client_state: Secret | None = None

    company_map: dict[str, str]
    dimension_map: tuple[DimensionMapping, ...] = ()
    tax_code_map: dict[str, str] = Field(default_factory=dict)
    post_mode: Literal["post", "draft"] = "post"
    total_tolerance: Decimal = Decimal("0.01")
    bc_partial_payments: bool = False  # report partial payments and reversals (BC analytics vendorLedgerEntries)
    # How long BC may still commit a request the client gave up on: a request waits up to 8 minutes
    # in BC's queue (beyond 5 concurrent) and then runs up to the 8-minute operation timeout
    # (Microsoft Learn, administration/operational-limits-online). Before creating or posting again
    # after an unclear outcome the connector waits this long, so the first request cannot land after.
    bc_late_commit_window: float = 960.0
    # BC requests in flight at once from every instance together (shared/clients/budget.py says why
    # 10); 0 leaves only the per-instance cap of 5.
    bc_max_concurrent_requests: int = Field(10, ge=0, le=100)
    schedules: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SCHEDULES))
    retention_days: int = Field(400, ge=1)
    appinsights_connection_string: Secret | None = None
    attachment_categories: tuple[str, ...] = ("ORIGINALIMAGE",)
    attachment_confidential: bool = False
    attachment_required: bool = False

    def bc_company_for(self, basware_company_code: str | None) -> str | None:
        """The BC company id a Basware companyCode maps to (None: not mapped)."""
        if basware_company_code is None:
            return self.bc_company_id
        return self.company_map.get(basware_company_code, self.company_map.get("*"))

    def basware_companies_for(self, bc_company_id: str) -> list[str]:
        return sorted(code for code, cid in self.company_map.items() if cid == bc_company_id and code != "*")

    def bc_companies(self) -> list[str]:
        return sorted(set(self.company_map.values()))

    def tax_code(self, basware_code: str | None) -> str | None:
        if basware_code is None:
            return None
        return self.tax_code_map.get(basware_code, basware_code)

    def secret_values(self) -> list[str]:
        """Every configured secret value, for scrubbing logs and audit rows."""
        values = [self.basware_client_secret, self.basware_webhook_secret, self.bc_client_secret,
                  self.bc_client_state, self.appinsights_connection_string]
        return [v.reveal() for v in values if v]


def _fail(name: str, problem: str) -> SettingsError:
    return SettingsError(f"Setting {name} {problem}")


def _json(environ: Mapping[str, str], name: str, default: Any) -> Any:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _fail(name, f"is not valid JSON ({exc.msg} at position {exc.pos})") from None


def _validate_cron(name: str, value: str) -> str:
    fields = value.split()
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise _fail(name, f"must be a six-field NCRONTAB expression such as '0 */5 * * * *', got {value!r}")
    return value


def _attachment_categories(raw: str | None) -> tuple[tuple[str, ...], bool]:
    """ATTACHMENT_CATEGORIES: comma-separated categories, NONE for none, plus CONFIDENTIAL to include
    attachments Basware marks confidential. Unset: the original image only."""
    if raw is None:
        return ("ORIGINALIMAGE",), False
    words = [w.strip().upper() for w in raw.split(",") if w.strip()]
    unknown = [w for w in words if w not in (*ATTACHMENT_CATEGORY_NAMES, "CONFIDENTIAL", "NONE")]
    if unknown or ("NONE" in words and len(words) > 1):
        raise _fail("ATTACHMENT_CATEGORIES", "must be a comma-separated list of " + ", ".join(ATTACHMENT_CATEGORY_NAMES)
                    + " (optionally with CONFIDENTIAL), or NONE; got " + repr(raw))
    return tuple(w for w in ATTACHMENT_CATEGORY_NAMES if w in words), "CONFIDENTIAL" in words


def timer_schedule(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The NCRONTAB expression timer `name` runs on: its setting, else the documented default.

    Timer decorators take this literal instead of a `%NAME%` placeholder: the Functions host
    cannot index a timer whose placeholder names an unset app setting, so a default documented
    here would not be real. Read at import, as the host does with app settings; a change of
    app setting restarts the app in Azure.
    """
    env = os.environ if environ is None else environ
    return _validate_cron(name, (env.get(name) or "").strip() or DEFAULT_SCHEDULES[name])


class _Reader:
    """The raw app settings, with the helpers every section reads them through."""

    def __init__(self, env: dict[str, str], secret_source: Callable[[str], str | None] | None) -> None:
        self.env = env
        self.secret_source = secret_source

    def get(self, name: str) -> str | None:
        return (self.env.get(name) or "").strip() or None

    def required(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise _fail(name, "is missing")
        return value

    def flag(self, name: str) -> bool:
        value = (self.get(name) or "false").lower()
        if value not in _TRUE + _FALSE:
            raise _fail(name, f"must be true or false, got {value!r}")
        return value in _TRUE

    def number(self, name: str, default: str, parse: Callable[[str], Any], what: str) -> Any:
        """A non-negative number; `what` says the expected form in the error ("a decimal number such as 0.01")."""
        try:
            value = parse(self.get(name) or default)
        except (ValueError, InvalidOperation):
            raise _fail(name, f"must be {what}") from None
        if value < 0:
            raise _fail(name, "must not be negative")
        return value

    def secret(self, name: str, required: bool = True) -> Secret | None:
        value = None
        if self.secret_source is not None:
            try:
                value = self.secret_source(kebab(name))
            except Exception as exc:  # noqa: BLE001 - say which secret, never the value
                raise _fail(name, f"could not be read from Key Vault ({type(exc).__name__})") from None
        if value is None:
            value = self.get(name)
        if value and value.startswith("@Microsoft.KeyVault("):
            raise _fail(name, "is an unresolved Key Vault reference: grant the app's identity "
                              "'Key Vault Secrets User' on the vault")
        if not value:
            if required:
                where = f"Key Vault secret '{kebab(name)}' or app setting" if self.secret_source else "app setting"
                raise _fail(name, f"is missing: set the {where} {name}")
            return None
        return Secret(value)


def _basware(r: _Reader) -> dict[str, Any]:
    region = (r.get("BASWARE_REGION") or "EU").upper()
    if region not in BASWARE_REGION_HOSTS:
        raise _fail("BASWARE_REGION", f"must be one of EU, US, AU, CA, got {region!r}")
    api_url = r.get("BASWARE_API_URL") or BASWARE_REGION_HOSTS[region]
    if not api_url:
        raise _fail("BASWARE_API_URL", f"is missing: no built-in Basware host is known for region {region}; "
                                       "ask Basware for the regional API URL")
    api_url = api_url.rstrip("/")
    if not api_url.startswith(("https://", "http://")):
        raise _fail("BASWARE_API_URL", f"must be an http(s) URL, got {api_url!r}")
    return dict(basware_region=region, basware_api_url=api_url,
                basware_token_url=(r.get("BASWARE_TOKEN_URL") or f"{api_url}/v1/tokens"),
                basware_client_id=r.required("BASWARE_CLIENT_ID"),
                basware_client_secret=r.secret("BASWARE_CLIENT_SECRET"),
                basware_webhook_secret=r.secret("BASWARE_WEBHOOK_SECRET"),
                basware_scopes=r.get("BASWARE_SCOPES") or BASWARE_DEFAULT_SCOPES)


def _business_central(r: _Reader) -> dict[str, Any]:
    company_id = r.required("BC_COMPANY_ID")
    if not _GUID.match(company_id):
        raise _fail("BC_COMPANY_ID", "must be a company GUID (GET .../api/v2.0/companies lists them)")
    company_map = _json(r.env, "COMPANY_MAP", None)
    if company_map is None:
        company_map = {"*": company_id}
    if not isinstance(company_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _GUID.match(v) for k, v in company_map.items()):
        raise _fail("COMPANY_MAP", 'must be a JSON object {"<basware companyCode>": "<BC company GUID>"}')
    late_window = r.number("BC_LATE_COMMIT_WINDOW_SECONDS", "960", float, "a number of seconds such as 960")
    in_flight = r.number("BC_MAX_CONCURRENT_REQUESTS", "10", int, "a whole number of requests such as 10")
    if in_flight > 100:
        raise _fail("BC_MAX_CONCURRENT_REQUESTS", "must be at most 100: BC answers 429 past 100 connections "
                                                  "per user (Microsoft Learn, administration/operational-limits-online)")
    notification_url = r.get("BC_NOTIFICATION_URL")
    return dict(bc_tenant_id=r.required("BC_TENANT_ID"), bc_environment=r.required("BC_ENVIRONMENT"),
                bc_company_id=company_id, bc_client_id=r.required("BC_CLIENT_ID"),
                bc_client_secret=r.secret("BC_CLIENT_SECRET"),
                bc_api_url=(r.get("BC_API_URL") or "https://api.businesscentral.dynamics.com").rstrip("/"),
                bc_authority_url=(r.get("BC_AUTHORITY_URL") or "https://login.microsoftonline.com").rstrip("/"),
                bc_notification_url=notification_url,
                bc_client_state=r.secret("BC_CLIENT_STATE", required=bool(notification_url)),
                company_map=company_map, bc_late_commit_window=late_window, bc_max_concurrent_requests=in_flight,
                bc_partial_payments=r.flag("BC_PARTIAL_PAYMENTS"))


def _mapping(r: _Reader) -> dict[str, Any]:
    raw_dims = _json(r.env, "DIMENSION_MAP", [])
    if not isinstance(raw_dims, list):
        raise _fail("DIMENSION_MAP", "must be a JSON list of {dimension, basware_field, target} objects")
    try:
        dims = tuple(DimensionMapping.model_validate(d) for d in raw_dims)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _fail("DIMENSION_MAP", f"entry is invalid: {'.'.join(map(str, first['loc']))} {first['msg']}") from None
    if len({d.dimension for d in dims}) != len(dims):
        raise _fail("DIMENSION_MAP", "names the same BC dimension twice")
    tax_map = _json(r.env, "TAX_CODE_MAP", {})
    if not isinstance(tax_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tax_map.items()):
        raise _fail("TAX_CODE_MAP", 'must be a JSON object {"<basware taxCode>": "<BC tax code>"}')
    post_mode = (r.get("POST_MODE") or "post").lower()
    if post_mode not in ("post", "draft"):
        raise _fail("POST_MODE", f"must be 'post' or 'draft', got {post_mode!r}")
    tolerance = r.number("TOTAL_TOLERANCE", "0.01", Decimal, "a decimal number such as 0.01")
    categories, confidential = _attachment_categories(r.get("ATTACHMENT_CATEGORIES"))
    required_image = r.flag("ATTACHMENT_REQUIRED")
    if required_image and "ORIGINALIMAGE" not in categories:
        raise _fail("ATTACHMENT_REQUIRED", "is true, but ATTACHMENT_CATEGORIES does not copy ORIGINALIMAGE")
    return dict(dimension_map=dims, tax_code_map=tax_map, post_mode=post_mode, total_tolerance=tolerance,
                attachment_categories=categories, attachment_confidential=confidential,
                attachment_required=required_image)


def _operations(r: _Reader) -> dict[str, Any]:
    schedules = {name: _validate_cron(name, r.get(name) or default) for name, default in DEFAULT_SCHEDULES.items()}
    retention = r.get("RETENTION_DAYS") or "400"
    if not retention.isdigit() or int(retention) < 1:
        raise _fail("RETENTION_DAYS", f"must be a positive whole number of days, got {retention!r}")
    insights = r.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    return dict(schedules=schedules, retention_days=int(retention),
                appinsights_connection_string=Secret(insights) if insights else None)


def _storage(r: _Reader) -> dict[str, Any]:
    storage = r.get("AzureWebJobsStorage")
    account = r.get("AzureWebJobsStorage__accountName")
    queue_uri = r.get("AzureWebJobsStorage__queueServiceUri")
    table_uri = r.get("AzureWebJobsStorage__tableServiceUri")
    if not storage and not account and not (queue_uri and table_uri):
        raise _fail("AzureWebJobsStorage", "is missing: set a connection string (UseDevelopmentStorage=true "
                                           "locally) or AzureWebJobsStorage__accountName for managed identity")
    return dict(storage_connection_string=storage, storage_account_name=account, storage_queue_uri=queue_uri,
                storage_table_uri=table_uri, storage_client_id=r.get("AzureWebJobsStorage__clientId"))


def load_settings(environ: Mapping[str, str] | None = None,
                  secret_source: Callable[[str], str | None] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    vault_url = (env.get("KEY_VAULT_URL") or "").strip() or None
    if secret_source is None and vault_url:
        secret_source = key_vault_source(vault_url)
    r = _Reader(env, secret_source)
    # read in the order a person fixes them: a missing Basware setting is named before a BC one
    fields = {**_basware(r), **_business_central(r), **_mapping(r), **_operations(r), **_storage(r)}
    try:
        return Settings(key_vault_url=vault_url, **fields)
    except ValidationError as exc:  # a field the checks above did not cover
        first = exc.errors()[0]
        raise SettingsError(f"Setting {str(first['loc'][0]).upper()} is invalid: {first['msg']}") from None
