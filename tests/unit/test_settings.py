"""Settings: validated once, defaults applied, one clear message per bad setting, secrets never shown."""
from __future__ import annotations

import json
import logging
import traceback

import pytest

from shared.core.errors import SettingsError
from shared.core.secrets import Secret
from shared.core.settings import SECRET_SETTINGS, SETTING_NAMES, load_settings

COMPANY = "5d0c7a1e-0000-4000-8000-00000000c001"
BASE = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "BASWARE_CLIENT_ID": "client-1",
    "BASWARE_CLIENT_SECRET": "bw-secret-value-123",
    "BASWARE_WEBHOOK_SECRET": "hook-secret-value-456",
    "BC_TENANT_ID": "tenant-1",
    "BC_ENVIRONMENT": "Production",
    "BC_COMPANY_ID": COMPANY,
    "BC_CLIENT_ID": "bc-client",
    "BC_CLIENT_SECRET": "bc-secret-value-789",
}


def test_defaults_follow_the_spec():
    s = load_settings(BASE)
    assert s.basware_region == "EU"
    assert s.basware_api_url == "https://api.basware.com"
    assert s.basware_token_url == "https://api.basware.com/v1/tokens"
    assert s.bc_api_url == "https://api.businesscentral.dynamics.com"
    assert s.bc_authority_url == "https://login.microsoftonline.com"
    assert s.post_mode == "post"
    assert str(s.total_tolerance) == "0.01"
    assert s.schedules["POLL_SCHEDULE"] == "0 */5 * * * *"
    assert s.schedules["MASTERDATA_SCHEDULE"] == "0 0 * * * *"
    assert s.schedules["PAYMENT_SCHEDULE"] == "0 */15 * * * *"
    assert s.schedules["SUBSCRIPTION_SCHEDULE"] == "0 0 */12 * * *"
    assert s.bc_company_for("ANY") == COMPANY  # all Basware companies -> BC_COMPANY_ID
    assert s.tax_code("S25") == "S25"  # identity without a map
    assert s.retention_days == 400
    assert s.bc_max_concurrent_requests == 10


def test_maps_are_parsed():
    env = dict(BASE, COMPANY_MAP=json.dumps({"NWM01": COMPANY}), TAX_CODE_MAP='{"S25": "STANDARD"}',
               DIMENSION_MAP=json.dumps([{"dimension": "AREA", "basware_field": "dimCode1",
                                          "target": "list:ACC_LIST_1"}]), POST_MODE="draft")
    s = load_settings(env)
    assert s.bc_company_for("NWM01") == COMPANY and s.bc_company_for("OTHER") is None
    assert s.tax_code("S25") == "STANDARD"
    assert s.dimension_map[0].list_key == "ACC_LIST_1"
    assert s.post_mode == "draft"


@pytest.mark.parametrize("name, value, fragment", [
    ("BASWARE_CLIENT_ID", "", "BASWARE_CLIENT_ID is missing"),
    ("BC_COMPANY_ID", "not-a-guid", "BC_COMPANY_ID must be a company GUID"),
    ("BASWARE_REGION", "MARS", "BASWARE_REGION must be one of"),
    ("COMPANY_MAP", "{broken", "COMPANY_MAP is not valid JSON"),
    ("COMPANY_MAP", '{"NWM01": "x"}', "COMPANY_MAP must be a JSON object"),
    ("DIMENSION_MAP", '[{"dimension": "AREA", "basware_field": "dimCode1", "target": "list:NOPE"}]',
     "DIMENSION_MAP entry is invalid"),
    ("TAX_CODE_MAP", "[1]", "TAX_CODE_MAP must be a JSON object"),
    ("POST_MODE", "maybe", "POST_MODE must be 'post' or 'draft'"),
    ("TOTAL_TOLERANCE", "abc", "TOTAL_TOLERANCE must be a decimal"),
    ("POLL_SCHEDULE", "*/5 * * * *", "POLL_SCHEDULE must be a six-field NCRONTAB"),
    ("RETENTION_DAYS", "-3", "RETENTION_DAYS must be a positive"),
    ("BC_MAX_CONCURRENT_REQUESTS", "2.5", "BC_MAX_CONCURRENT_REQUESTS must be a whole number"),
    ("BC_MAX_CONCURRENT_REQUESTS", "101", "must be at most 100: BC answers 429 past 100 connections"),
    ("BC_CLIENT_SECRET", "", "BC_CLIENT_SECRET is missing"),
    ("AzureWebJobsStorage", "", "AzureWebJobsStorage is missing"),
])
def test_a_bad_setting_stops_with_one_message_naming_it(name, value, fragment):
    with pytest.raises(SettingsError) as err:
        load_settings(dict(BASE, **{name: value}))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_regions_without_a_known_host_need_an_explicit_url():
    with pytest.raises(SettingsError, match="BASWARE_API_URL is missing: no built-in Basware host is known for region US"):
        load_settings(dict(BASE, BASWARE_REGION="US"))
    s = load_settings(dict(BASE, BASWARE_REGION="US", BASWARE_API_URL="https://us.example.test/"))
    assert s.basware_token_url == "https://us.example.test/v1/tokens"


def test_client_state_is_required_only_with_a_notification_url():
    with pytest.raises(SettingsError, match="BC_CLIENT_STATE is missing"):
        load_settings(dict(BASE, BC_NOTIFICATION_URL="https://app.example/api/bc/notifications"))


def test_secrets_come_from_key_vault_when_configured():
    vault = {"basware-client-secret": "from-vault-1", "basware-webhook-secret": "from-vault-2",
             "bc-client-secret": "from-vault-3"}
    asked = []

    def source(name):
        asked.append(name)
        return vault.get(name)

    env = {k: v for k, v in BASE.items() if "SECRET" not in k}
    s = load_settings(dict(env, KEY_VAULT_URL="https://kv.example.vault.azure.net"), secret_source=source)
    assert s.basware_client_secret.reveal() == "from-vault-1"
    assert s.bc_client_secret.reveal() == "from-vault-3"
    assert "basware-client-secret" in asked


def test_unresolved_key_vault_reference_is_named():
    with pytest.raises(SettingsError, match="BC_CLIENT_SECRET is an unresolved Key Vault reference"):
        load_settings(dict(BASE, BC_CLIENT_SECRET="@Microsoft.KeyVault(VaultName=kv;SecretName=bc-client-secret)"))


def test_secret_values_never_show_in_reprs_dumps_logs_or_exceptions(caplog):
    s = load_settings(BASE)
    secrets = ["bw-secret-value-123", "hook-secret-value-456", "bc-secret-value-789"]
    rendered = [repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(mode="json")), f"{s.bc_client_secret}"]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("settings loaded: %s", s)
    rendered.append(caplog.text)
    try:
        raise RuntimeError(f"failed with {s.basware_client_secret!r}")
    except RuntimeError:
        rendered.append(traceback.format_exc())
    for text in rendered:
        for value in secrets:
            assert value not in text
    assert s.bc_client_secret.reveal() == "bc-secret-value-789"


def test_secret_type_refuses_pickling():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))


def test_setting_names_cover_every_secret():
    assert set(SECRET_SETTINGS) <= set(SETTING_NAMES)
