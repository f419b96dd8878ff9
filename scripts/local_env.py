"""App settings that point the connector at local storage and the sandboxes (tests, run command, benches)."""
from __future__ import annotations

import json

from sandbox import seed
from shared.core.settings import DEFAULT_SCHEDULES


def connector_env(storage_connection: str, basware_url: str, bc_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "AzureWebJobsStorage": storage_connection,
        "BASWARE_REGION": "EU",
        "BASWARE_API_URL": basware_url,
        "BASWARE_CLIENT_ID": seed.BASWARE_CLIENT_ID,
        "BASWARE_CLIENT_SECRET": seed.BASWARE_CLIENT_SECRET,
        "BASWARE_WEBHOOK_SECRET": seed.WEBHOOK_SECRET,
        "BC_TENANT_ID": seed.TENANT_ID,
        "BC_ENVIRONMENT": seed.ENVIRONMENT,
        "BC_COMPANY_ID": seed.COMPANY_ID,
        "BC_CLIENT_ID": seed.BC_CLIENT_ID,
        "BC_CLIENT_SECRET": seed.BC_CLIENT_SECRET,
        "BC_API_URL": bc_url,
        "BC_AUTHORITY_URL": bc_url,
        "BC_CLIENT_STATE": seed.BC_CLIENT_STATE,
        "COMPANY_MAP": json.dumps({seed.COMPANY_CODE: seed.COMPANY_ID}),
        "DIMENSION_MAP": json.dumps(seed.DIMENSION_MAP),
        "TAX_CODE_MAP": json.dumps(seed.TAX_CODE_MAP),
        **DEFAULT_SCHEDULES,  # explicit here; unset, each timer falls back to the same default
    }
    env.update(overrides)
    return env
