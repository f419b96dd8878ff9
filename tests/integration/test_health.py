"""`GET /api/health`: storage, both tokens and every mapped BC company, each with its latency; 200
when all pass, 503 naming what failed, within a few seconds even when a system is down, and no
secret in the answer."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandbox import seed
from scripts.local_env import connector_env
from shared.ops.health import check_health
from shared.clients.http import RetryConfig
from shared.core.runtime import build_runtime
from shared.core.settings import load_settings

COMPANY_CHECK = f"bc_company:{seed.COMPANY_ID}"
ROOT = Path(__file__).resolve().parents[2]
SECRETS = (seed.BASWARE_CLIENT_SECRET, seed.BC_CLIENT_SECRET, seed.WEBHOOK_SECRET, seed.BC_CLIENT_STATE)


class BcProcess:
    """The BC sandbox in its own process (`python -m sandbox.bc`): stopping it closes every
    connection, as a BC outage does (an in-process server keeps its keep-alive connections)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "sandbox.bc", "--port", str(self.port)], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the BC sandbox process did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)


@pytest.fixture
def bc_server():
    server = BcProcess()
    yield server
    server.stop()


@pytest.fixture
def health_env(fresh_azurite, basware_sandbox, bc_server) -> dict[str, str]:
    return connector_env(fresh_azurite.connection_string, basware_sandbox.base_url, bc_server.base_url)


def runtime_for(env: dict[str, str], **overrides: str):
    return build_runtime(load_settings({**env, **overrides}), retry=RetryConfig(max_attempts=2, backoff_base=0.02))


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_health_through_the_app_is_200_when_all_is_up_and_503_naming_bc_once_bc_stops(health_env, bc_server,
                                                                                        app_process):
    app = app_process({**health_env, "DEVHOST_FUNCTION_KEY": "health-key"}, "--no-timers", "--no-queues")
    url = f"{app.base_url}/api/health"
    assert httpx.get(url, timeout=10).status_code == 401  # function auth level

    up = httpx.get(url, headers={"x-functions-key": "health-key"}, timeout=10)
    body = up.json()
    assert up.status_code == 200, up.text
    assert body["status"] == "ok" and body["failed"] == []
    assert set(body["checks"]) == {"storage", "basware_token", "bc_token", COMPANY_CHECK}
    for check in body["checks"].values():
        assert check["ok"] is True and isinstance(check["ms"], int) and "error" not in check
    assert body["checks"][COMPANY_CHECK]["name"] == seed.COMPANY_NAME

    bc_server.stop()
    started = time.monotonic()
    down = httpx.get(url, headers={"x-functions-key": "health-key"}, timeout=15)
    elapsed = time.monotonic() - started
    body = down.json()
    assert down.status_code == 503, down.text
    assert body["status"] == "unhealthy" and COMPANY_CHECK in body["failed"]
    assert all(name.startswith("bc_") for name in body["failed"])  # storage and Basware still pass
    assert body["checks"]["storage"]["ok"] and body["checks"]["basware_token"]["ok"]
    assert body["checks"][COMPANY_CHECK]["error"].startswith("bc")  # which system, then why
    assert elapsed < 6, f"health took {elapsed:.1f}s with BC down"
    assert_no_secret(down.text)


def test_every_check_reports_its_failure_without_secrets(health_env, fresh_azurite):
    wrong = runtime_for(health_env, BC_CLIENT_SECRET="rotated-but-not-updated", BASWARE_CLIENT_SECRET="old-secret")
    try:
        report = check_health(wrong)
    finally:
        wrong.close()
    assert report["status"] == "unhealthy"
    assert set(report["failed"]) == {"basware_token", "bc_token", COMPANY_CHECK}
    assert "BASWARE_CLIENT_SECRET" in report["checks"]["basware_token"]["error"]
    assert "BC_CLIENT_SECRET" in report["checks"]["bc_token"]["error"]
    text = json.dumps(report)
    assert "rotated-but-not-updated" not in text and "old-secret" not in text
    assert_no_secret(text)

    unknown = runtime_for(health_env, COMPANY_MAP=json.dumps({"XX": "0b0b0b0b-0000-4000-8000-000000000000"}))
    try:
        report = check_health(unknown)
    finally:
        unknown.close()
    assert report["failed"] == ["bc_company:0b0b0b0b-0000-4000-8000-000000000000"]
    assert "COMPANY_MAP" in report["checks"]["bc_company:0b0b0b0b-0000-4000-8000-000000000000"]["error"]


def test_health_answers_in_seconds_when_storage_is_down(health_env, fresh_azurite):
    rt = runtime_for(health_env)
    try:
        fresh_azurite.stop()
        started = time.monotonic()
        report = check_health(rt, timeout=2.0)
        elapsed = time.monotonic() - started
    finally:
        rt.close()
    assert report["failed"] == ["storage"]
    assert report["checks"]["storage"]["ok"] is False and report["checks"]["storage"]["error"]
    assert elapsed < 3.5, f"health took {elapsed:.1f}s with storage down"
    assert_no_secret(json.dumps(report))
