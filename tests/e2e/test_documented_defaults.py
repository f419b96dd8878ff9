"""Every setting the README gives a default may be left unset: the app still starts, with that default.

The app is served by the local Functions host in its own process (`python -m devhost`), as the
devhost process tests do, against Azurite. Basware and BC are never called at start-up, so their
URLs point nowhere.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from devhost import HostProcess
from scripts.local_env import connector_env
from shared.core.settings import DEFAULT_SCHEDULES, timer_schedule

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"

# The README's settings table: each of these has a default, so none is needed to start.
DEFAULTED = ("BASWARE_REGION", "BASWARE_API_URL", "BASWARE_TOKEN_URL", "BASWARE_SCOPES", "BC_API_URL", "BC_AUTHORITY_URL",
             "BC_NOTIFICATION_URL", "BC_CLIENT_STATE", "COMPANY_MAP", "DIMENSION_MAP", "TAX_CODE_MAP", "POST_MODE",
             "TOTAL_TOLERANCE", "BC_LATE_COMMIT_WINDOW_SECONDS", "BC_MAX_CONCURRENT_REQUESTS", "ATTACHMENT_CATEGORIES",
             "ATTACHMENT_REQUIRED", "BC_PARTIAL_PAYMENTS", *DEFAULT_SCHEDULES, "RETENTION_DAYS",
             "APPLICATIONINSIGHTS_CONNECTION_STRING", "KEY_VAULT_URL")

# Which timer runs on which schedule setting (function names as the host lists them).
TIMERS = {
    "POLL_SCHEDULE": "invoice_poll",
    "MASTERDATA_SCHEDULE": "masterdata_timer",
    "PAYMENT_SCHEDULE": "payment_poll",
    "PO_SYNC_SCHEDULE": "purchase_order_sync",
    "SUBSCRIPTION_SCHEDULE": "bc_subscriptions",
    "RETENTION_SCHEDULE": "retention",
}


def readme_defaults() -> set[str]:
    """The settings whose row in the README's settings table has something in its Default column."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| setting | meaning | default |"):].split("\n\n", 1)[0].splitlines()[2:]
    names: set[str] = set()
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[-1]:
            names.update(re.findall(r"`([A-Za-z_]+)`", cells[0]))
    return names


def test_the_list_of_defaulted_settings_is_the_readmes():
    assert readme_defaults() <= set(DEFAULTED), "a setting the README gives a default is not tested unset"


def start_app(azurite, tmp_path, **changes: str | None) -> HostProcess:
    """The real function_app.py; a change of None removes the setting from the environment."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTED}
    env.update(connector_env(azurite.connection_string, NOWHERE, NOWHERE, BC_API_URL=NOWHERE))
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return HostProcess(ROOT, env=env, log_path=tmp_path / "app.log").start(timeout=60)


def timer_lines(proc: HostProcess) -> dict[str, str]:
    """function name -> its `timerTrigger '<expression>' ...` line from the host's start-up listing."""
    lines = [line.strip() for line in proc.output().splitlines() if ": timerTrigger " in line]
    return {line.split(":", 1)[0]: line for line in lines}


def test_the_app_starts_with_every_defaulted_setting_unset_and_each_timer_on_its_default(azurite, tmp_path):
    proc = start_app(azurite, tmp_path, **{name: None for name in DEFAULTED})
    try:
        listed = timer_lines(proc)
        for setting, function in TIMERS.items():
            assert f"timerTrigger '{DEFAULT_SCHEDULES[setting]}'" in listed.get(function, ""), \
                f"{function} should run on the default {setting}: {listed.get(function)}"
    finally:
        assert proc.stop() == 0, proc.output()


@pytest.mark.parametrize("unset", sorted(DEFAULT_SCHEDULES))
def test_each_schedule_alone_may_be_unset(azurite, tmp_path, unset):
    quiet = {name: "0 0 0 1 1 *" for name in DEFAULT_SCHEDULES}
    proc = start_app(azurite, tmp_path, **{**quiet, unset: None})
    try:
        listed = timer_lines(proc)
        assert f"timerTrigger '{DEFAULT_SCHEDULES[unset]}'" in listed[TIMERS[unset]]
        others = [f for s, f in TIMERS.items() if s != unset]
        assert all("timerTrigger '0 0 0 1 1 *'" in listed[f] for f in others), "a set schedule still wins"
    finally:
        assert proc.stop() == 0, proc.output()


def test_a_schedule_setting_that_is_not_ncrontab_is_refused_naming_it():
    with pytest.raises(Exception, match="POLL_SCHEDULE must be a six-field NCRONTAB"):
        timer_schedule("POLL_SCHEDULE", {"POLL_SCHEDULE": "*/5 * * * *"})
    assert timer_schedule("POLL_SCHEDULE", {"POLL_SCHEDULE": "  "}) == DEFAULT_SCHEDULES["POLL_SCHEDULE"]
