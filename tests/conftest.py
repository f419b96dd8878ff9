"""Shared fixtures: real Azurite for storage, the sandboxes over real HTTP."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.azurite import start_azurite  # noqa: E402


@pytest.fixture(scope="session")
def azurite():
    """One Azurite per test session, on free ports, in a temporary folder."""
    handle = start_azurite()
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def storage_connection_string(azurite) -> str:
    return azurite.connection_string


# -- the connector against the sandboxes ---------------------------------------------------------
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from sandbox import seed  # noqa: E402,F401
from scripts.local_env import connector_env  # noqa: E402,F401


class _AzuriteForTests:
    """One Azurite process reused test after test, wiped before each; restarted if a test stopped it."""

    def __init__(self) -> None:
        self.handle = None

    def fresh(self):
        if self.handle is None or self.handle.process.poll() is not None:
            self.handle = start_azurite()
            return self.handle
        from azure.data.tables import TableServiceClient
        from azure.storage.queue import QueueServiceClient

        tables = TableServiceClient.from_connection_string(self.handle.connection_string)
        queues = QueueServiceClient.from_connection_string(self.handle.connection_string)
        for table in tables.list_tables():
            tables.delete_table(table.name)
        for queue in queues.list_queues():
            queues.delete_queue(queue.name)
        return self.handle

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()


@pytest.fixture(scope="session")
def _azurite_for_tests():
    holder = _AzuriteForTests()
    yield holder
    holder.stop()


@pytest.fixture
def fresh_azurite(_azurite_for_tests):
    """Empty storage for one test (flows keep state such as jobs and hashes keyed by stable ids).

    Wiping one long-lived Azurite is ~50 ms against ~1 s for a new process; a test may still call
    `.stop()` to take storage down, and the next test gets a new process.
    """
    return _azurite_for_tests.fresh()


@pytest.fixture
def basware_sandbox():
    from sandbox.basware import BaswareSandbox
    from sandbox.common import SandboxServer

    app = BaswareSandbox()
    server = SandboxServer(app).start()
    app.base_url = server.base_url
    yield app
    server.stop()


@pytest.fixture
def bc_sandbox():
    from sandbox.bc import BcSandbox
    from sandbox.common import SandboxServer

    app = BcSandbox()
    server = SandboxServer(app).start()
    app.base_url = server.base_url
    yield app
    server.stop()


@pytest.fixture
def env(fresh_azurite, basware_sandbox, bc_sandbox) -> dict[str, str]:
    return connector_env(fresh_azurite.connection_string, basware_sandbox.base_url, bc_sandbox.base_url)


@pytest.fixture
def rt(env):
    """The connector's collaborators, built from settings like in production, with short backoffs."""
    from shared.clients.http import RetryConfig
    from shared.core.runtime import build_runtime
    from shared.core.settings import load_settings

    runtime = build_runtime(load_settings(env), retry=RetryConfig(max_attempts=5, backoff_base=0.02,
                                                                  backoff_max=0.2, max_inline_wait=2))
    yield runtime
    runtime.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """function_app.py served by the local host (`python -m devhost`) in its own process."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = _free_port()
        self.env = {**os.environ, **env, "PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        self.args = args
        self.process: subprocess.Popen | None = None
        self.log = ROOT / ".run" / f"app-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "AppProcess":
        self.log.parent.mkdir(exist_ok=True)
        out = open(self.log, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(self.port), *self.args],
                                        cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"app did not listen on {self.port}; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: a crash, nothing finishes."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def app_process():
    """Factory: `app_process(env, "--no-timers")` starts the app; all are stopped after the test."""
    started: list[AppProcess] = []

    def start(env: dict[str, str], *args: str) -> AppProcess:
        proc = AppProcess(env, *args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier from its folder; a test that starts the real app is e2e wherever it lives."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(tier)
        if tier != "e2e" and "app_process" in getattr(item, "fixturenames", ()):
            item.add_marker("e2e")
