"""Infrastructure (infra/*.bicep) checked against what the code needs, without a Bicep compiler.

A small Bicep reader (comments and string contents masked, brackets matched) finds declarations
and object members. The names come from the code itself: `shared.core.settings.SETTING_NAMES` /
`SECRET_SETTINGS`, `shared.store.storage.QUEUES` / `TABLES`. If those cannot be imported, the tests fail.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
API = INFRA / "app" / "api.bicep"
RBAC = INFRA / "app" / "rbac.bicep"


# ---------------------------------------------------------------- a small Bicep reader ----------

class BicepSyntaxError(AssertionError):
    pass


def mask(text: str, strings: bool = True) -> str:
    """`text` with comments and (unless `strings` is False) string contents blanked.

    Same length, newlines kept. Quotes and `${...}` interpolations stay, so brackets can be
    matched on the result.
    """
    out = list(text)
    n = len(text)

    def blank(a: int, b: int, is_string: bool = True) -> None:
        if is_string and not strings:
            return
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    def line_of(i: int) -> int:
        return text.count("\n", 0, i) + 1

    def string(i: int) -> int:
        if text.startswith("'''", i):  # multi-line string: no escapes, no interpolation
            end = text.find("'''", i + 3)
            if end < 0:
                raise BicepSyntaxError(f"unterminated ''' string at line {line_of(i)}")
            blank(i + 3, end)
            return end + 3
        j = seg = i + 1
        while j < n:
            c = text[j]
            if c == "\\":
                j += 2
                continue
            if c == "'":
                blank(seg, j)
                return j + 1
            if text.startswith("${", j):
                blank(seg, j)
                j = code(j + 2, stop="}") + 1
                seg = j
                continue
            if c == "\n":
                break
            j += 1
        raise BicepSyntaxError(f"unterminated string at line {line_of(i)}")

    def code(i: int, stop: str | None = None) -> int:
        depth = 0
        while i < n:
            if text.startswith("//", i):
                end = text.find("\n", i)
                end = n if end < 0 else end
                blank(i, end, is_string=False)
                i = end
                continue
            if text.startswith("/*", i):
                end = text.find("*/", i + 2)
                if end < 0:
                    raise BicepSyntaxError(f"unterminated comment at line {line_of(i)}")
                blank(i, end + 2, is_string=False)
                i = end + 2
                continue
            c = text[i]
            if c == "'":
                i = string(i)
                continue
            if stop and depth == 0 and c == stop:
                return i
            depth += c in "{[("
            depth -= c in "}])"
            i += 1
        if stop:
            raise BicepSyntaxError("unterminated ${...} interpolation")
        return i

    code(0)
    return "".join(out)


PAIRS = {"}": "{", "]": "[", ")": "("}


def bracket_errors(text: str, masked: str) -> list[str]:
    stack: list[tuple[str, int]] = []
    errors = []
    for i, c in enumerate(masked):
        if c in "{[(":
            stack.append((c, i))
        elif c in PAIRS:
            if not stack or stack[-1][0] != PAIRS[c]:
                errors.append(f"unexpected {c!r} at line {text.count(chr(10), 0, i) + 1}")
            else:
                stack.pop()
    errors += [f"unclosed {c!r} from line {text.count(chr(10), 0, i) + 1}" for c, i in stack]
    return errors


@dataclass(frozen=True)
class Span:
    """A piece of a Bicep file: an expression, an object literal, a declaration body."""

    file: "BicepFile"
    start: int
    end: int

    @property
    def text(self) -> str:
        """The source without comments."""
        return self.file.code[self.start:self.end].strip()

    @property
    def masked(self) -> str:
        return self.file.masked[self.start:self.end]

    def _inside(self, open_: str) -> tuple[int, int]:
        m = self.masked
        first = len(m) - len(m.lstrip())
        if m[first:first + 1] != open_:
            raise AssertionError(f"expected {open_!r} literal, got: {self.text[:80]!r}")
        close = self.file.match(self.start + first)
        return self.start + first + 1, close

    def _segments(self, open_: str) -> list[Span]:
        """The comma- or newline-separated members of an object or array literal."""
        a, b = self._inside(open_)
        parts, depth, seg = [], 0, a
        for i in range(a, b):
            c = self.file.masked[i]
            depth += c in "{[("
            depth -= c in "}])"
            if depth == 0 and c in "\n,":
                parts.append(Span(self.file, seg, i))
                seg = i + 1
        parts.append(Span(self.file, seg, b))
        return [p for p in parts if p.masked.strip()]

    def members(self) -> dict[str, Span]:
        out = {}
        for seg in self._segments("{"):
            m = re.match(r"\s*(\w+|'[^']*')\s*:", seg.file.code[seg.start:seg.end])
            if not m:
                raise AssertionError(f"not an object member: {seg.text!r}")
            out[m.group(1).strip("'")] = Span(self.file, seg.start + m.end(), seg.end)
        return out

    def items(self) -> list[Span]:
        return self._segments("[")

    def __getitem__(self, key: str) -> Span:
        return self.members()[key]

    def get(self, key: str) -> Span | None:
        return self.members().get(key)

    def literal(self) -> object:
        """A plain literal (string, number, bool): its Python value."""
        t = self.text
        if re.fullmatch(r"'(?:[^'\\$]|\\.)*'", t):
            return t[1:-1].replace("\\'", "'")
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if t in ("true", "false"):
            return t == "true"
        raise AssertionError(f"not a plain literal: {t!r}")

    def objects(self) -> list[Span]:
        """Every object literal anywhere inside this span."""
        return [Span(self.file, i, self.file.match(i) + 1)
                for i in range(self.start, self.end) if self.file.masked[i] == "{"]


@dataclass(frozen=True)
class Decl:
    kind: str          # resource, module, param, var, output
    name: str
    head: str          # resource type@version, module path, param/output type
    body: Span         # resource/module body object; var/param default/output value expression
    decorators: str
    conditional: bool = False  # `= if (...)`
    existing: bool = False     # `resource x '...' existing = {...}`


class BicepFile:
    def __init__(self, path: Path):
        self.path = path
        self.text = path.read_text(encoding="utf-8")
        self.masked = mask(self.text)
        self.code = mask(self.text, strings=False)
        errors = bracket_errors(self.text, self.masked)
        if errors:
            raise BicepSyntaxError(f"{path.name}: {'; '.join(errors)}")

    @cached_property
    def _matches(self) -> dict[int, int]:
        stack, pairs = [], {}
        for i, c in enumerate(self.masked):
            if c in "{[(":
                stack.append(i)
            elif c in "}])" and stack:
                pairs[stack.pop()] = i
        return pairs

    def match(self, i: int) -> int:
        return self._matches[i]

    def _expression(self, i: int) -> Span:
        """From `i` to the end of the line, continuing while brackets are open."""
        depth, j = 0, i
        while j < len(self.masked):
            c = self.masked[j]
            if c == "\n" and depth == 0:
                break
            depth += c in "{[("
            depth -= c in "}])"
            j += 1
        return Span(self, i, j)

    @cached_property
    def decls(self) -> list[Decl]:
        out = []
        for m in re.finditer(r"^(resource|module|param|var|output)[ \t]+(\w+)", self.masked, re.M):
            kind, name = m.groups()
            rest = self.text[m.end():]
            above = self.text[:m.start()].rstrip("\n").split("\n")
            decorators = []
            while above and above[-1].lstrip().startswith("@"):
                decorators.insert(0, above.pop().strip())
            if kind in ("resource", "module"):
                h = re.match(r"\s*'([^']*)'\s*(existing\s*)?=\s*(if\s*\()?", rest)
                assert h, f"{self.path.name}: cannot read {kind} {name}"
                brace = self.masked.index("{", m.end() + h.end())
                out.append(Decl(kind, name, h.group(1), Span(self, brace, self.match(brace) + 1),
                                "\n".join(decorators), bool(h.group(3)), bool(h.group(2))))
            elif kind == "var":
                h = re.match(r"\s*=\s*", rest)
                out.append(Decl(kind, name, "", self._expression(m.end() + h.end()), "\n".join(decorators)))
            else:  # param / output: `<name> <type> [= <expr>]`
                h = re.match(r"[ \t]+(\w+)[ \t]*(=[ \t]*)?", rest)
                assert h, f"{self.path.name}: cannot read {kind} {name}"
                start = m.end() + h.end()
                body = self._expression(start) if h.group(2) else Span(self, start, start)
                out.append(Decl(kind, name, h.group(1), body, "\n".join(decorators)))
        return out

    def find(self, kind: str, name: str | None = None, head: str | None = None) -> list[Decl]:
        return [d for d in self.decls if d.kind == kind and (name is None or d.name == name)
                and (head is None or d.head.split("@")[0] == head)]

    def one(self, kind: str, name: str | None = None, head: str | None = None) -> Decl:
        found = self.find(kind, name, head)
        assert len(found) == 1, f"{self.path.name}: expected one {kind} {name or head}, found {len(found)}"
        return found[0]


@lru_cache(maxsize=None)
def bicep(path: Path) -> BicepFile:
    return BicepFile(path)


def all_bicep() -> list[BicepFile]:
    return [bicep(p) for p in sorted(INFRA.rglob("*.bicep"))]


def code_contract(module: str, *names: str):
    """Names the code exports; a missing module or name fails the test (never skips it)."""
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"cannot import {module} ({type(exc).__name__}: {exc}); infra tests need it")
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        pytest.fail(f"{module} does not export {', '.join(missing)}; infra tests need them")
    return [getattr(mod, n) for n in names]


def kebab(name: str) -> str:
    (fn,) = code_contract("shared.core.secrets", "kebab")
    return fn(name)


# ------------------------------------------------------------------ app settings in Bicep -------

# Read by the platform or an SDK rather than by our code, so not in SETTING_NAMES.
PLATFORM_SETTINGS = {
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # Functions host: Entra-authenticated ingestion
    "AZURE_CLIENT_ID",  # azure-identity: which user-assigned identity DefaultAzureCredential uses
    "FUNCTIONS_EXTENSION_VERSION",
    "AzureFunctionsWebHost__hostid",
}
STORAGE_IDENTITY_SETTINGS = {
    "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__tableServiceUri",
}
MAY_BE_CONDITIONAL = {"BASWARE_API_URL", "BASWARE_TOKEN_URL", "BC_NOTIFICATION_URL"}


def app_settings() -> tuple[dict[str, Span], dict[str, Span]]:
    """(always set, set only under a condition), as the app's `sites/config` resource applies them."""
    api = bicep(API)
    configs = [d for f in all_bicep() for d in f.find("resource", head="Microsoft.Web/sites/config")
               if d.body["name"].literal() != "authsettingsV2"]  # sign-in settings, not app settings
    assert len(configs) == 1 and configs[0].body["name"].literal() == "appsettings", \
        "exactly one Microsoft.Web/sites/config 'appsettings' resource (in app/api.bicep) sets app settings"
    assert configs[0].body["properties"].text == "union(appSettings, optionalAppSettings)"
    always = api.one("var", "appSettings").body.members()
    optional: dict[str, Span] = {}
    for obj in api.one("var", "optionalAppSettings").body.objects():
        optional.update(obj.members())
    site = api.one("resource", head="Microsoft.Web/sites").body
    assert "appSettings" not in site["properties"]["siteConfig"].members(), \
        "a second app settings list in siteConfig would escape these checks"
    return always, optional


def test_every_setting_the_code_reads_is_set():
    setting_names, secret_settings = code_contract("shared.core.settings", "SETTING_NAMES", "SECRET_SETTINGS")
    always, optional = app_settings()
    overlap = sorted(always.keys() & optional.keys())
    assert not overlap, f"conditionally overridden settings: {overlap}"
    assert optional.keys() <= MAY_BE_CONDITIONAL, f"only {sorted(MAY_BE_CONDITIONAL)} may be conditional"
    missing = []
    for name in setting_names:
        if name == "AzureWebJobsStorage":  # identity form: the __ settings, never a connection string
            assert "AzureWebJobsStorage" not in always and "AzureWebJobsStorage" not in optional
            missing += sorted(STORAGE_IDENTITY_SETTINGS - always.keys())
        elif name in always:
            continue
        elif name in optional and name in MAY_BE_CONDITIONAL:
            continue
        else:
            missing.append(name + (" (only conditionally)" if name in optional else ""))
    assert not missing, f"app settings the code reads but infra/app/api.bicep does not set: {missing}"
    assert always["AzureWebJobsStorage__credential"].literal() == "managedidentity"
    assert set(secret_settings) <= set(setting_names)


def test_no_stale_app_settings():
    (setting_names,) = code_contract("shared.core.settings", "SETTING_NAMES")
    always, optional = app_settings()
    stale = [n for n in [*always, *optional]
             if n not in setting_names and n not in PLATFORM_SETTINGS and not n.startswith("AzureWebJobsStorage__")]
    assert not stale, f"app settings no code reads (remove them, or add them to SETTING_NAMES): {stale}"


def test_secrets_are_key_vault_references_through_the_app_identity():
    (secret_settings,) = code_contract("shared.core.settings", "SECRET_SETTINGS")
    always, optional = app_settings()
    for name in secret_settings:
        assert name in always, f"{name} must always be set (as a Key Vault reference)"
        assert always[name].text == f"'@Microsoft.KeyVault(VaultName=${{keyVaultName}};SecretName={kebab(name)})'"
    refs = [n for n, v in {**always, **optional}.items() if "@Microsoft.KeyVault" in v.text]
    assert sorted(refs) == sorted(secret_settings), "only the secret settings are Key Vault references"
    assert always["KEY_VAULT_URL"].text == "vault.properties.vaultUri"
    # The user-assigned identity resolves references and is the one DefaultAzureCredential uses.
    site = bicep(API).one("resource", head="Microsoft.Web/sites").body
    assert site["identity"]["type"].literal() == "UserAssigned"
    assert site["properties"]["keyVaultReferenceIdentity"].text == "identityId"
    assert always["AZURE_CLIENT_ID"].text == "identityClientId"
    assert always["AzureWebJobsStorage__clientId"].text == "identityClientId"
    assert always["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].text == "'ClientId=${identityClientId};Authorization=AAD'"


def test_the_bicep_settings_are_enough_for_the_app_to_start():
    """Feed the always-set names (with values of the right shape) to the app's own loader."""
    (load_settings,) = code_contract("shared.core.settings", "load_settings")
    (secret_settings,) = code_contract("shared.core.settings", "SECRET_SETTINGS")
    always, _ = app_settings()
    samples = {
        "BC_COMPANY_ID": "5d0c7a1e-0000-4000-8000-00000000c001",
        "COMPANY_MAP": '{"*": "5d0c7a1e-0000-4000-8000-00000000c001"}',
        "DIMENSION_MAP": "[]", "TAX_CODE_MAP": "{}", "RETENTION_DAYS": "400", "TOTAL_TOLERANCE": "0.01",
        "BC_LATE_COMMIT_WINDOW_SECONDS": "960", "BC_MAX_CONCURRENT_REQUESTS": "10",
        "POST_MODE": "post", "BASWARE_REGION": "EU", "KEY_VAULT_URL": "https://kv.vault.azure.net/",
        "ATTACHMENT_CATEGORIES": "ORIGINALIMAGE", "ATTACHMENT_REQUIRED": "False",  # Bicep's string(false)
        "BC_PARTIAL_PAYMENTS": "false",
        **{n: d for n, d in bicep_default_schedules().items()},
    }
    environ = {}
    for name, value in always.items():
        if name in secret_settings:
            continue  # Key Vault references: resolved by the platform, or read through KEY_VAULT_URL
        try:
            environ[name] = str(value.literal())
        except AssertionError:
            environ[name] = samples.get(name, "https://example.invalid/" + name)
    settings = load_settings(environ, secret_source=lambda secret_name: f"value-of-{secret_name}")
    assert settings.storage_connection_string is None  # identity, not a connection string
    assert settings.storage_queue_uri and settings.storage_table_uri and settings.storage_client_id
    assert settings.bc_notification_url and settings.bc_client_state  # BC subscriptions are on


# --------------------------------------------------------------- schedules and defaults ---------

def bicep_default_schedules() -> dict[str, str]:
    return {k: v.literal() for k, v in bicep(MAIN).one("var", "defaultSchedules").body.members().items()}


def test_timers_run_on_their_setting_or_the_documented_default():
    """No timer takes a `%SETTING%` placeholder: the host cannot index one whose setting is unset."""
    (default_schedules,) = code_contract("shared.core.settings", "DEFAULT_SCHEDULES")
    code = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "shared" / "functions").glob("*.py"))
    schedules = re.findall(r"schedule=([^,)]*\)?)", code)
    assert schedules, "expected timer triggers in shared/functions"
    assert not [x for x in schedules if "%" in x], f"placeholders the host may not resolve: {schedules}"
    direct = re.findall(r'schedule=timer_schedule\("(\w+)"\)', code)
    via_helper = re.findall(r'schedule_setting="(\w+)"', code)  # shared/functions/timers.py register_timer
    generic = [x for x in schedules if x == "timer_schedule(schedule_setting)"]
    used = direct + via_helper
    assert len(direct) + len(generic) == len(schedules) and sorted(used) == sorted(default_schedules), used
    always, _ = app_settings()
    assert set(default_schedules) <= always.keys(), "Bicep still sets each schedule (the operator's value)"


def test_defaults_in_bicep_are_the_apps_defaults():
    default_schedules, default_scopes = code_contract("shared.core.settings", "DEFAULT_SCHEDULES", "BASWARE_DEFAULT_SCOPES")
    main = bicep(MAIN)
    assert bicep_default_schedules() == dict(default_schedules)
    assert main.one("var", "defaultBaswareScopes").body.literal() == default_scopes
    # Empty parameters fall back to those defaults, so a blank azd variable never blanks a schedule.
    api_params = main.one("module", "api").body["params"]
    for setting in default_schedules:
        param = re.sub(r"_(\w)", lambda m: m.group(1).upper(), setting.lower())  # POLL_SCHEDULE -> pollSchedule
        expr = api_params[param].text
        assert expr == f"empty({param}) ? defaultSchedules.{setting} : {param}", expr
    assert main.one("param", "retentionDays").body.literal() == 400


# --------------------------------------------------------------------- queues and tables --------

def test_every_queue_and_table_the_code_uses_is_provisioned():
    queues, tables, poison = code_contract("shared.store.storage", "QUEUES", "TABLES", "POISON_SUFFIX")
    main = bicep(MAIN)
    provisioned_queues = [i.literal() for i in main.one("var", "appQueues").body.items()]
    provisioned_tables = [i.literal() for i in main.one("var", "appTables").body.items()]
    expected_queues = {*queues, *(q + poison for q in queues)}
    assert set(provisioned_queues) == expected_queues, "queues (with their poison queues) differ from shared.store.storage"
    assert set(provisioned_tables) == set(tables), "tables differ from shared.store.storage.TABLES"
    params = main.one("module", "storage").body["params"]
    assert params["queueNames"].text == "appQueues" and params["tableNames"].text == "appTables"
    storage = bicep(INFRA / "app" / "storage.bicep")
    for kind, param in (("queueServices/queues", "queueNames"), ("tableServices/tables", "tableNames")):
        res = storage.one("resource", head=f"Microsoft.Storage/storageAccounts/{kind}")
        loop = storage.text[res.body.start - 60:res.body.start]
        assert re.search(rf"\[for (\w+) in {param}:\s*$", loop), f"{kind} must be created for every name in {param}"


# ---------------------------------------------------------------- secrets and shared keys -------

FORBIDDEN = [
    (re.compile(r"AccountKey\s*=", re.I), "storage account key"),
    (re.compile(r"\blist(Keys|ConnectionStrings|Secrets|AccountSas|ServiceSas)\s*\(", re.I), "key listing"),
    (re.compile(r"allowSharedKeyAccess\s*:\s*true", re.I), "shared key access"),
    (re.compile(r"SharedAccessSignature|\bsig=", re.I), "SAS token"),
    (re.compile(r"InstrumentationKey\s*=", re.I), "instrumentation key"),
    (re.compile(r"Microsoft\.KeyVault/vaults/secrets", re.I), "secret created by the template"),
]
BASE64ISH = re.compile(r"[A-Za-z0-9+/_\-]{40,}={0,2}")


def secret_findings(path: Path, text: str) -> list[str]:
    found = [f"{path.name}: {why}" for rx, why in FORBIDDEN if rx.search(text)]
    for m in BASE64ISH.finditer(text):
        token = m.group(0)
        # Names and paths are short words joined by '-', '/' or '_'; keys are long dense mixed runs.
        longest = max(len(part) for part in re.split(r"[-/_]", token))
        if longest >= 24 and re.search(r"[A-Z]", token) and re.search(r"[a-z]", token) and re.search(r"\d", token):
            found.append(f"{path.name}: secret-looking literal {token[:6]}...")
    if path.suffix == ".bicep":
        for d in bicep(path).find("param"):
            if "@secure()" in d.decorators and d.body.text:
                found.append(f"{path.name}: secure parameter {d.name} has a default value")
    return found


def test_secret_scanner_catches_planted_values(tmp_path):
    planted = {
        "a.bicep": "var c = 'DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abc'\n",
        "b.bicep": "var k = st.listKeys().keys[0].value\n",
        "c.bicep": "resource s 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  properties: {\n"
                   "    allowSharedKeyAccess: true\n  }\n}\n",
        "d.json": '{"p": {"value": "q8F3kZr7Lm2Xw9Vt4Bn6Yh1Jc5Gd0Sa8Pe3Ui7Oo2Kx4"}}',
        "e.bicep": "@secure()\nparam p string = 'hunter2'\n",
    }
    for name, text in planted.items():
        path = tmp_path / name
        path.write_text(text)
        assert secret_findings(path, text), f"scanner missed the planted value in {name}"


def test_no_secret_values_or_shared_keys_in_infra():
    findings = []
    for path in sorted(INFRA.rglob("*")):
        if path.is_file():
            findings += secret_findings(path, path.read_text(encoding="utf-8"))
    assert not findings, findings


# ----------------------------------------------------------------------------- RBAC -------------

ROLES = {  # the built-in role names of Microsoft Learn, "Azure built-in roles"
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
}
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "f25e0fa2-a7c8-4377-a976-54943a77a395": "Key Vault Contributor",
}
SCOPE_TYPES = {
    "Microsoft.Storage/storageAccounts": "storage",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "container",
    "Microsoft.KeyVault/vaults": "vault",
    "Microsoft.Insights/components": "appinsights",
}


def role_assignments() -> list[tuple[str, str, str, bool]]:
    """(scope kind, role name, principal parameter, conditional) for each assignment in rbac.bicep."""
    rbac = bicep(RBAC)
    guids = {d.name: d.body.literal() for d in rbac.find("var")}
    scopes = {d.name: d.head.split("@")[0] for d in rbac.find("resource") if d.existing}
    out = []
    for d in rbac.find("resource", head="Microsoft.Authorization/roleAssignments"):
        props = d.body["properties"]
        role = re.fullmatch(r"subscriptionResourceId\('Microsoft\.Authorization/roleDefinitions', (\w+)\)",
                            props["roleDefinitionId"].text)
        assert role, f"{d.name}: roleDefinitionId must name a role variable"
        guid = guids[role.group(1)]
        assert guid not in BROAD_ROLES, f"{d.name} grants {BROAD_ROLES[guid]}"
        assert guid in ROLES, f"{d.name} grants an unexpected role {guid}"
        scope = d.body.get("scope")
        target = re.sub(r"\[i\]$", "", scope.text) if scope is not None else None  # one per loop item
        assert target in scopes, f"{d.name} must be scoped to one resource, not the group"
        assert props.get("principalType") is not None, f"{d.name}: principalType avoids replication-delay failures"
        assert d.body["name"].text.startswith(f"guid({scope.text}.id, "), f"{d.name}: stable, scope-unique name"
        out.append((SCOPE_TYPES[scopes[target]], ROLES[guid], props["principalId"].text, d.conditional))
    return out


def test_role_assignments_live_only_in_rbac_bicep():
    elsewhere = [f.path.name for f in all_bicep() if f.path != RBAC
                 and f.find("resource", head="Microsoft.Authorization/roleAssignments")]
    assert not elsewhere, f"role assignments outside app/rbac.bicep: {elsewhere}"


def test_app_identity_has_exactly_the_roles_it_needs():
    app = sorted((scope, role) for scope, role, principal, cond in role_assignments() if principal == "appPrincipalId")
    assert app == sorted([
        ("container", "Storage Blob Data Contributor"),
        ("storage", "Storage Queue Data Contributor"),
        ("storage", "Storage Table Data Contributor"),
        ("vault", "Key Vault Secrets User"),
        ("appinsights", "Monitoring Metrics Publisher"),
    ])
    others = [(s, r, p, c) for s, r, p, c in role_assignments() if p != "appPrincipalId"]
    # the only other grant: the optional deployer may write the vault's secrets, nothing else
    assert others == [("vault", "Key Vault Secrets Officer", "deployerPrincipalId", True)]
    assert bicep(MAIN).one("module", "rbac").body["params"]["appPrincipalId"].text == "appIdentity.properties.principalId"


def test_blob_access_is_per_container_never_account_wide():
    """A token of the app's identity cannot read or replace blobs outside the three containers it needs."""
    blob_roles = [(scope, role) for scope, role, _, _ in role_assignments() if "Blob" in role]
    assert blob_roles and all(scope == "container" for scope, _ in blob_roles), blob_roles
    assert not [r for _, r in blob_roles if r == "Storage Blob Data Owner"], "no Blob Data Owner anywhere"
    rbac, main = bicep(RBAC), bicep(MAIN)
    containers = rbac.one("resource", "blobContainers")
    assert containers.existing and re.search(r"\[for containerName in blobContainerNames:\s*$",
                                             rbac.text[containers.body.start - 60:containers.body.start])
    granted = [i.text for i in main.one("var", "appBlobContainers").body.items()]
    # the deployment package and the Functions host's own containers, nothing else
    assert granted == ["deploymentContainerName", "'azure-webjobs-hosts'", "'azure-webjobs-secrets'"]
    assert main.one("module", "rbac").body["params"]["blobContainerNames"].text == "appBlobContainers"
    assert main.one("module", "storage").body["params"]["blobContainerNames"].text == "appBlobContainers"
    created = bicep(INFRA / "app" / "storage.bicep").one("resource",
                                                          head="Microsoft.Storage/storageAccounts/blobServices/containers")
    assert re.search(r"\[for containerName in blobContainerNames:\s*$",
                     created.body.file.text[created.body.start - 60:created.body.start]), "every granted container exists"
    assert api_deployment_container() == "deploymentContainerName"


def api_deployment_container() -> str:
    value = bicep(API).one("resource", head="Microsoft.Web/sites").body["properties"]["functionAppConfig"][
        "deployment"]["storage"]["value"].text
    found = re.fullmatch(r"'\$\{storage\.properties\.primaryEndpoints\.blob\}\$\{(\w+)\}'", value)
    assert found, value
    assert bicep(MAIN).one("module", "api").body["params"][found.group(1)].text == "deploymentContainerName"
    return found.group(1)


def test_every_role_assignment_says_why():
    rbac = bicep(RBAC)
    for d in rbac.find("resource", head="Microsoft.Authorization/roleAssignments"):
        above = rbac.text[:rbac.text.index(f"resource {d.name} ")].rstrip().split("\n")[-1]
        assert above.startswith("//"), f"{d.name}: a comment above the assignment says why it is needed"


# ------------------------------------------------------------- resource security settings -------

def test_storage_is_identity_only_and_tls12():
    storage = bicep(INFRA / "app" / "storage.bicep")
    props = storage.one("resource", head="Microsoft.Storage/storageAccounts").body["properties"]
    assert props["allowSharedKeyAccess"].literal() is False
    assert props["minimumTlsVersion"].literal() == "TLS1_2"
    assert props["allowBlobPublicAccess"].literal() is False
    assert props["supportsHttpsTrafficOnly"].literal() is True
    container = storage.one("resource", head="Microsoft.Storage/storageAccounts/blobServices/containers").body
    assert container["properties"]["publicAccess"].literal() == "None"


def test_key_vault_is_rbac_with_soft_delete_and_purge_protection():
    vault = bicep(INFRA / "app" / "keyvault.bicep").one("resource", head="Microsoft.KeyVault/vaults").body
    props = vault["properties"]
    assert props["enableRbacAuthorization"].literal() is True
    assert props["enableSoftDelete"].literal() is True
    assert props["enablePurgeProtection"].literal() is True
    assert 7 <= props["softDeleteRetentionInDays"].literal() <= 90
    assert "accessPolicies" not in props.members()


NETWORK = INFRA / "app" / "network.bicep"
PRIVATE_ACCESS = "vnetEnabled ? 'Disabled' : 'Enabled'"


@pytest.mark.parametrize("module, path, head", [
    ("storage", INFRA / "app" / "storage.bicep", "Microsoft.Storage/storageAccounts"),
    ("keyVault", INFRA / "app" / "keyvault.bicep", "Microsoft.KeyVault/vaults"),
])
def test_storage_and_key_vault_refuse_public_network_access_by_default(module, path, head):
    f = bicep(path)
    props = f.one("resource", head=head).body["properties"]
    assert props["publicNetworkAccess"].text == PRIVATE_ACCESS
    private_acls = props["networkAcls"].objects()[0]
    assert private_acls["defaultAction"].literal() == "Deny" and private_acls["bypass"].literal() == "None"
    assert f.one("param", "vnetEnabled").body.literal() is True
    main = bicep(MAIN)
    assert main.one("param", "vnetEnabled").body.literal() is True, "private is the default"
    assert main.one("module", module).body["params"]["vnetEnabled"].text == "vnetEnabled"


def test_private_endpoints_and_dns_zones_for_blob_queue_table_and_vault():
    net = bicep(NETWORK)
    endpoints = {e["groupId"].literal(): e for e in net.one("var", "endpoints").body.items()}
    assert set(endpoints) == {"blob", "queue", "table", "vault"}
    for group in ("blob", "queue", "table"):
        assert endpoints[group]["serviceId"].text == "storageAccount.id"
        assert endpoints[group]["zone"].text == f"'privatelink.{group}.${{environment().suffixes.storage}}'"
    assert endpoints["vault"]["serviceId"].text == "vault.id"
    assert endpoints["vault"]["zone"].literal() == "privatelink.vaultcore.azure.net"
    for head in ("Microsoft.Network/privateDnsZones", "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
                 "Microsoft.Network/privateEndpoints", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"):
        res = net.one("resource", head=head)
        assert re.search(r"\[for \(?endpoint", net.text[res.body.start - 60:res.body.start]), f"{head}: one per endpoint"
    pe = net.one("resource", head="Microsoft.Network/privateEndpoints").body["properties"]
    connection = pe["privateLinkServiceConnections"].items()[0]["properties"]
    assert connection["privateLinkServiceId"].text == "endpoint.serviceId"
    subnets = {sn["name"].text: sn for sn in net.one("resource", head="Microsoft.Network/virtualNetworks")
               .body["properties"]["subnets"].items()}
    delegation = subnets["appSubnetName"]["properties"]["delegations"].items()[0]
    assert delegation["properties"]["serviceName"].literal() == "Microsoft.App/environments"  # Flex VNet integration
    main = bicep(MAIN)
    network = main.one("module", "network")
    assert network.conditional and "if (vnetEnabled)" in main.text[network.body.start - 30:network.body.start]
    assert main.one("module", "api").body["params"]["virtualNetworkSubnetId"].text == \
        "vnetEnabled ? network.outputs.appSubnetId : ''"
    site = bicep(API).one("resource", head="Microsoft.Web/sites").body["properties"]
    assert site["virtualNetworkSubnetId"].text == "empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId"


def test_no_basic_auth_publishing_https_only_and_tls12():
    api = bicep(API)
    policies = {d.body["name"].literal(): d.body for d in
                api.find("resource", head="Microsoft.Web/sites/basicPublishingCredentialsPolicies")}
    assert set(policies) == {"ftp", "scm"}
    assert all(p["properties"]["allow"].literal() is False and p["parent"].text == "functionApp"
               for p in policies.values())
    site = api.one("resource", head="Microsoft.Web/sites").body["properties"]
    assert site["httpsOnly"].literal() is True
    config = site["siteConfig"]
    assert config["minTlsVersion"].literal() == "1.2" and config["scmMinTlsVersion"].literal() == "1.2"
    assert config["ftpsState"].literal() == "Disabled"


def test_app_and_key_vault_logs_go_to_log_analytics():
    diag = bicep(INFRA / "app" / "diagnostics.bicep")
    settings = {d.body["scope"].text: d.body["properties"]
                for d in diag.find("resource", head="Microsoft.Insights/diagnosticSettings")}
    assert set(settings) == {"functionApp", "vault"}
    for props in settings.values():
        assert props["workspaceId"].text == "workspaceId"
        assert [log["categoryGroup"].literal() for log in props["logs"].items()] == ["allLogs"]
    params = bicep(MAIN).one("module", "diagnostics").body["params"]
    assert params["workspaceId"].text == "monitoring.outputs.workspaceId"
    assert params["functionAppName"].text == "api.outputs.name"


def test_app_insights_accepts_entra_ingestion_only():
    comp = bicep(INFRA / "app" / "monitoring.bicep").one("resource", head="Microsoft.Insights/components").body
    assert {k.lower(): v for k, v in comp["properties"].members().items()}["disablelocalauth"].literal() is True


# -------------------------------------------------------------------- the function app ----------

def test_function_app_runs_python_311_on_flex_consumption():
    api = bicep(API)
    plan = api.one("resource", head="Microsoft.Web/serverfarms").body
    assert plan["sku"]["name"].literal() == "FC1" and plan["sku"]["tier"].literal() == "FlexConsumption"
    site = api.one("resource", head="Microsoft.Web/sites").body
    assert site["kind"].literal() == "functionapp,linux"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"]["name"].literal() == "python"
    assert config["runtime"]["version"].literal() == "3.11"
    storage = config["deployment"]["storage"]
    assert storage["authentication"]["type"].literal() == "UserAssignedIdentity"
    assert config["scaleAndConcurrency"]["maximumInstanceCount"].text == "maximumInstanceCount"


def test_bc_budget_holds_across_instances_and_its_reasoning_agrees_with_the_code():
    """BC's per-principal limits are held by the shared slots, not by the instance count."""
    main, api = bicep(MAIN), bicep(API)
    (settings_cls, build_runtime) = code_contract("shared.core.settings", "Settings")[0], \
        code_contract("shared.core.runtime", "build_runtime")[0]
    # Flex refuses a maximumInstanceCount below 40 (learn.microsoft.com/azure/azure-functions/flex-consumption-plan)
    instances = main.one("param", "maximumInstanceCount")
    assert instances.body.literal() >= 40 and "@minValue(40)" in main.text
    shared = main.one("param", "bcMaxConcurrentRequests").body.literal()
    assert shared == settings_cls.model_fields["bc_max_concurrent_requests"].default
    assert 5 <= shared <= 100, "at least BC's 5 processing slots busy; never past its 100 connections"
    assert main.one("module", "api").body["params"]["bcMaxConcurrentRequests"].text == "bcMaxConcurrentRequests"
    assert app_settings()[0]["BC_MAX_CONCURRENT_REQUESTS"].text == "string(bcMaxConcurrentRequests)"
    cap = inspect.signature(build_runtime).parameters["bc_max_concurrency"].default
    assert cap <= 5, "BC processes 5 requests per principal at once; the per-instance cap must not exceed it"
    reasoning = (ROOT / "shared" / "clients" / "budget.py").read_text(encoding="utf-8")
    assert f"`BC_MAX_CONCURRENT_REQUESTS` (default {shared})" in reasoning and f"at most {cap} requests" in reasoning
    assert "shared/clients/budget.py" in api.text, "app/api.bicep points to where the reasoning lives"
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "## Concurrency budget" in doc and f"`BC_MAX_CONCURRENT_REQUESTS` (default {shared})" in doc
    assert "shared/clients/budget.py" in doc
    assert "FUNCTIONS_WORKER_PROCESS_COUNT" not in app_settings()[0], "one BC client per instance is assumed"


def test_outputs_are_the_urls_basware_and_bc_call():
    api, main = bicep(API), bicep(MAIN)
    routes = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "shared" / "functions").glob("*.py"))
    assert 'route="basware/webhook"' in routes and 'route="bc/notifications"' in routes
    assert api.one("var", "baswareWebhookUrl").body.text == "'${baseUrl}/api/basware/webhook'"
    assert api.one("var", "bcNotificationUrl").body.text == "'${baseUrl}/api/bc/notifications'"
    assert app_settings()[0]["BC_NOTIFICATION_URL"].text == "bcNotificationUrl"
    assert main.one("output", "BASWARE_WEBHOOK_URL").body.text == "api.outputs.baswareWebhookUrl"
    assert main.one("output", "BC_NOTIFICATION_URL").body.text == "api.outputs.bcNotificationUrl"


def test_alerts_watch_dead_letters_failed_transfers_and_throttling():
    alerts = bicep(INFRA / "app" / "alerts.bicep")
    rules = alerts.one("resource", head="Microsoft.Insights/scheduledQueryRules").body
    assert rules["properties"]["scopes"].items()[0].text == "appInsights.id"
    queries = [r["query"].literal() for r in alerts.one("var", "rules").body.items()]
    for event in ("event=job.dead_lettered", "event=transfer.failed", "event=http.throttled"):
        assert any(q.startswith("traces") and f'"{event}"' in q for q in queries), f"no alert on {event}"
    # the code really logs the events it can already emit
    code = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "shared").rglob("*.py"))
    assert "event=job.dead_lettered" in code and "event=http.throttled" in code



def test_operator_sign_in_guards_every_route_but_the_webhooks_and_health():
    """Entra ID sign-in (App Service authentication) in front of the console and the records routes;
    the routes Basware and BC call, which carry no Entra token, are left to their own checks."""
    main = bicep(MAIN)
    module = main.one("module", "auth")
    assert module.head == "app/auth.bicep" and module.conditional
    assert "module auth 'app/auth.bicep' = if (!empty(consoleClientId))" in main.text
    given = module.body["params"]
    assert given["clientId"].text == "consoleClientId" and given["tenantId"].text == "tenant().tenantId"
    assert given["functionAppName"].text == "api.outputs.name"
    auth = bicep(INFRA / "app" / "auth.bicep").one("resource", head="Microsoft.Web/sites/config").body
    assert auth["name"].literal() == "authsettingsV2" and auth["parent"].text == "functionApp"
    props = auth["properties"]
    assert props["platform"]["enabled"].literal() is True
    validation = props["globalValidation"]
    assert validation["requireAuthentication"].literal() is True
    assert validation["unauthenticatedClientAction"].literal() == "RedirectToLoginPage"
    excluded = {item.literal() for item in validation["excludedPaths"].items()}
    # the anonymous routes of the code: the webhooks, and the console's page shell (data-free; it
    # must stay behind sign-in, its data routes need the function key as well)
    code = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "shared" / "functions").glob("*.py"))
    anonymous = set(re.findall(r'route="([^"]+)"[^)]*auth_level=func\.AuthLevel\.ANONYMOUS', code))
    assert anonymous == {"basware/webhook", "bc/notifications", "manage/console", "manage/console/assets/{name}"}
    assert excluded == {"/api/basware/webhook", "/api/bc/notifications", "/api/health"}
    assert not any(path.startswith("/api/manage") for path in excluded)
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"].literal() is True and aad["registration"]["clientId"].text == "clientId"
    assert "tenantId" in aad["registration"]["openIdIssuer"].text
    assert "clientSecretSettingName" not in aad["registration"].members(), "no secret to store or rotate"
    assert props["httpSettings"]["requireHttps"].literal() is True
    params = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert params["consoleClientId"]["value"] == "${CONSOLE_CLIENT_ID}"
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "## Operator sign-in" in doc and "/.auth/login/aad/callback" in doc and "CONSOLE_CLIENT_ID" in doc

# ------------------------------------------------------------ files hang together ---------------

def test_templates_are_well_formed():
    for f in all_bicep():  # reading a file checks its strings, comments and brackets
        for d in f.find("resource"):
            assert re.fullmatch(r"[\w.]+/[\w/]+@\d{4}-\d{2}-\d{2}(-preview)?", d.head), f"{f.path.name}: {d.head}"
        for d in f.find("module"):
            assert not d.head.startswith("br"), f"{f.path.name}: modules are local files ({d.head})"
            assert (f.path.parent / d.head).is_file(), f"{f.path.name}: module path {d.head} does not exist"
    used = {(MAIN.parent / d.head).resolve() for d in bicep(MAIN).find("module")}
    orphans = [p.name for p in (INFRA / "app").glob("*.bicep") if p.resolve() not in used]
    assert not orphans, f"modules main.bicep never deploys: {orphans}"


def test_bracket_check_and_reader_catch_broken_bicep(tmp_path):
    broken = tmp_path / "broken.bicep"
    broken.write_text("var a = {\n  b: [1, 2\n}\n")
    with pytest.raises(BicepSyntaxError, match="unclosed"):
        BicepFile(broken)
    with pytest.raises(BicepSyntaxError):
        mask("var s = 'unterminated\n")
    fine = "var s = 'a { in a string ${x[0]} }' // and } in a comment\n"
    assert not bracket_errors(fine, mask(fine))


def test_parameters_file_matches_main_bicep():
    doc = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    given = doc["parameters"]
    declared = {d.name: d for d in bicep(MAIN).find("param")}
    assert not set(given) - set(declared), f"parameters main.bicep does not declare: {set(given) - set(declared)}"
    required = {n for n, d in declared.items() if not d.body.text}
    assert not required - set(given), f"required parameters missing from main.parameters.json: {required - set(given)}"
    for name, entry in given.items():
        value = entry["value"]
        if isinstance(value, str):
            assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", value), f"{name}: use an azd ${{VAR}} placeholder"
    assert "@allowed(['EU', 'US', 'AU', 'CA'])" in declared["baswareRegion"].decorators


def test_azure_yaml_deploys_the_app_with_azd():
    text = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    service = re.search(r"^services:\n  api:\n((?:    .*\n)+)", text, re.M)
    assert service, "azure.yaml defines service 'api'"
    fields = dict(re.findall(r"^    (\w+): (\S+)", service.group(1), re.M))
    assert fields == {"project": ".", "language": "python", "host": "function"}


def test_deploy_doc_sets_every_secret_the_app_references():
    (secret_settings,) = code_contract("shared.core.settings", "SECRET_SETTINGS")
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for name in secret_settings:
        assert re.search(rf"az keyvault secret set[^\n]*--name {kebab(name)}\b", doc), f"docs/deploy.md: {kebab(name)}"
    for fact in ("/v1/subscriptions", "AccountingDocuments", "WaitingForTransfer", "notificationWebhookURL",
                 "webhookAuthenticationToken", "API.ReadWrite.All", "Microsoft Entra Applications", "SUPER"):
        assert fact in doc, f"docs/deploy.md does not mention {fact}"
